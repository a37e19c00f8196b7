//! The moderation gate in front of and behind the model. It fails closed:
//! when the classifier is missing or errors, nothing it should have
//! checked goes out.

use std::sync::Arc;

use crate::moderation::{Moderator, Verdict};

pub enum Gate {
    /// Moderation switched off in the config (`[moderation] enabled = false`).
    Off,
    On(Arc<Moderator>),
    /// Moderation is required but the model could not be used; every check
    /// fails, so no reply is sent.
    Unavailable(String),
}

impl Gate {
    /// `Ok(None)` when moderation is off; `Err` when a required check
    /// cannot be made.
    pub fn check(&self, text: &str) -> Result<Option<Verdict>, String> {
        match self {
            Gate::Off => Ok(None),
            Gate::On(m) => m.check(text).map(Some).map_err(|e| e.to_string()),
            Gate::Unavailable(reason) => Err(reason.clone()),
        }
    }

    pub fn is_off(&self) -> bool {
        matches!(self, Gate::Off)
    }
}
