//! The stored form of an operator account (see [`crate::operators`] for
//! what uses it: hashing, one-time passwords, login with lockout).

use chrono::{DateTime, Utc};
use serde::Serialize;

/// One row of the `operators` table.
#[derive(Clone, PartialEq, Serialize)]
pub struct OperatorRow {
    pub id: String,
    pub name: String,
    /// argon2id PHC string; never the password.
    #[serde(skip)]
    pub password_hash: String,
    /// The password is a one-time one: it must be changed at login.
    pub must_change: bool,
    pub created_at: DateTime<Utc>,
    pub password_set_at: DateTime<Utc>,
    /// Failed logins since the last good one.
    pub failed_logins: u32,
    pub locked_until: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for OperatorRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorRow")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("password_hash", &"<argon2id>")
            .field("must_change", &self.must_change)
            .field("created_at", &self.created_at)
            .field("password_set_at", &self.password_set_at)
            .field("failed_logins", &self.failed_logins)
            .field("locked_until", &self.locked_until)
            .finish()
    }
}
