//! The moderation gate in front of and behind the model. It fails closed:
//! when the classifier is missing or errors, nothing it should have
//! checked goes out.
//!
//! A check runs on the thread that asks for it, on one of the moderator's
//! ONNX Runtime sessions (`[moderation] workers` of them, each behind its
//! own lock): no lock is shared by all conversations, and a check is short
//! (the classifier reads at most `max_chars`, about 0.1–0.3 ms) and bounded.
//! Measured on 2 cores under 64 concurrent conversations (`bench pipeline
//! --via direct`, tiny model), pipeline overhead p50 / p99:
//! on the asking thread 0.13–0.16 / 0.35–1.0 ms; on moderation threads fed
//! by a queue that batches what waits 0.34–0.42 / 11–21 ms; in tokio's
//! `block_in_place` 0.26–0.29 / 18–290 ms. Handing a 0.1 ms check to
//! another thread costs more than the check: the thread must be woken and
//! scheduled while the generator holds the cores. A checker that panics
//! fails that check only.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use crate::moderation::{Moderator, Verdict};

/// What checks texts: the moderation model with its rules, or a scripted
/// checker in tests.
pub trait Checker: Send + Sync + 'static {
    /// One verdict per text, in order.
    fn check_batch(&self, texts: &[&str]) -> Result<Vec<Verdict>, String>;
}

impl Checker for Moderator {
    fn check_batch(&self, texts: &[&str]) -> Result<Vec<Verdict>, String> {
        Moderator::check_batch(self, texts).map_err(|e| e.to_string())
    }
}

pub struct Gate {
    inner: Inner,
}

enum Inner {
    /// Moderation switched off in the config (`[moderation] enabled = false`).
    Off,
    On(Arc<dyn Checker>),
    /// Moderation is required but the model could not be used; every check
    /// fails, so no reply is sent.
    Unavailable(String),
}

impl Gate {
    pub fn off() -> Self {
        Self { inner: Inner::Off }
    }

    pub fn unavailable(reason: impl Into<String>) -> Self {
        Self {
            inner: Inner::Unavailable(reason.into()),
        }
    }

    pub fn new(checker: Arc<dyn Checker>) -> Self {
        Self {
            inner: Inner::On(checker),
        }
    }

    /// `Ok(None)` when moderation is off; `Err` when a required check
    /// cannot be made.
    pub async fn check(&self, text: &str) -> Result<Option<Verdict>, String> {
        let checker = match &self.inner {
            Inner::Off => return Ok(None),
            Inner::Unavailable(reason) => return Err(reason.clone()),
            Inner::On(c) => c,
        };
        catch_unwind(AssertUnwindSafe(|| checker.check_batch(&[text])))
            .unwrap_or_else(|p| {
                tracing::error!(panic = %panic_message(&*p), "moderation panicked");
                Err("the moderation check crashed".into())
            })
            .and_then(|mut v| {
                v.pop()
                    .ok_or_else(|| "moderation returned no verdict".into())
            })
            .map(Some)
    }

    pub fn is_off(&self) -> bool {
        matches!(self.inner, Inner::Off)
    }
}

/// The message of a caught panic, for the log.
pub(crate) fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::moderation::CategoryVerdict;

    /// Flags texts that contain `word`; panics on texts containing
    /// `"panic"`, fails on texts containing `"fail"`. Counts the calls.
    pub struct WordChecker {
        pub word: String,
        pub calls: std::sync::atomic::AtomicUsize,
        pub checked_chars: std::sync::atomic::AtomicUsize,
    }

    impl WordChecker {
        pub fn new(word: &str) -> Arc<Self> {
            Arc::new(Self {
                word: word.to_string(),
                calls: Default::default(),
                checked_chars: Default::default(),
            })
        }
    }

    pub fn verdict(flagged: bool) -> Verdict {
        Verdict {
            flagged,
            categories: vec![CategoryVerdict {
                category: "offensive".into(),
                score: if flagged { 0.9 } else { 0.1 },
                threshold: 0.5,
                flagged,
            }],
            rules: Vec::new(),
            truncated: false,
            redacted: None,
        }
    }

    impl Checker for WordChecker {
        fn check_batch(&self, texts: &[&str]) -> Result<Vec<Verdict>, String> {
            use std::sync::atomic::Ordering;
            self.calls.fetch_add(1, Ordering::SeqCst);
            for t in texts {
                self.checked_chars
                    .fetch_add(t.chars().count(), Ordering::SeqCst);
                if t.contains("panic") {
                    panic!("scripted moderation panic");
                }
                if t.contains("fail") {
                    return Err("scripted moderation failure".into());
                }
            }
            Ok(texts
                .iter()
                .map(|t| verdict(t.contains(self.word.as_str())))
                .collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::WordChecker;
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn test_checks_run_and_a_panic_does_not_stop_the_gate() {
        let checker = WordChecker::new("darn");
        let gate = Gate::new(checker.clone());
        assert!(!gate.check("hello").await.unwrap().unwrap().flagged);
        assert!(gate.check("oh darn").await.unwrap().unwrap().flagged);
        assert!(gate.check("please panic").await.is_err());
        // The thread survived its checker's panic: later checks still work.
        assert!(gate.check("oh darn again").await.unwrap().unwrap().flagged);
        assert!(gate.check("this will fail").await.is_err());
        assert!(!gate.check("fine").await.unwrap().unwrap().flagged);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn test_concurrent_checks_all_get_their_own_verdict() {
        let checker = WordChecker::new("darn");
        let gate = Arc::new(Gate::new(checker.clone()));
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let gate = Arc::clone(&gate);
                tokio::spawn(async move {
                    let text = if i % 2 == 0 { "darn" } else { "ok" };
                    (i, gate.check(text).await)
                })
            })
            .collect();
        for t in tasks {
            let (i, v) = t.await.unwrap();
            assert_eq!(v.unwrap().unwrap().flagged, i % 2 == 0);
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn test_checks_work_on_a_current_thread_runtime() {
        let gate = Gate::new(WordChecker::new("darn"));
        assert!(gate.check("darn").await.unwrap().unwrap().flagged);
        assert!(gate.check("panic now").await.is_err());
    }

    #[tokio::test]
    async fn test_off_and_unavailable() {
        assert!(Gate::off().check("x").await.unwrap().is_none());
        assert_eq!(
            Gate::unavailable("no model").check("x").await.unwrap_err(),
            "no model"
        );
    }
}
