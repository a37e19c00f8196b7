//! The moderation gate in front of and behind the model. It fails closed:
//! when the classifier is missing or errors, nothing it should have checked
//! goes out.
//!
//! Checks run on the gate's own threads, never on the async workers: each
//! thread takes what is queued (up to [`MAX_BATCH`] texts) and checks it
//! as one batch, so many conversations share one classifier call instead of
//! queueing behind a lock.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

use crate::moderation::{Moderator, Verdict};

/// Texts one classifier call checks at most.
pub const MAX_BATCH: usize = 32;
/// Checks waiting for a gate thread before callers wait for a slot.
const QUEUE: usize = 4096;

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

type Reply = oneshot::Sender<Result<Verdict, String>>;

pub struct Gate {
    inner: Inner,
}

enum Inner {
    /// Moderation switched off in the config (`[moderation] enabled = false`).
    Off,
    On(mpsc::Sender<(String, Reply)>),
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

    /// Starts `threads` gate threads over `checker`. They stop when the gate
    /// is dropped.
    pub fn new(checker: Arc<dyn Checker>, threads: usize) -> Result<Self, String> {
        let (tx, rx) = mpsc::channel::<(String, Reply)>(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = Arc::clone(&rx);
            let checker = Arc::clone(&checker);
            std::thread::Builder::new()
                .name(format!("chatforge-moderation-{i}"))
                .spawn(move || work(&*checker, &rx))
                .map_err(|e| format!("cannot start a moderation thread: {e}"))?;
        }
        Ok(Self {
            inner: Inner::On(tx),
        })
    }

    /// `Ok(None)` when moderation is off; `Err` when a required check
    /// cannot be made.
    pub async fn check(&self, text: &str) -> Result<Option<Verdict>, String> {
        match &self.inner {
            Inner::Off => Ok(None),
            Inner::Unavailable(reason) => Err(reason.clone()),
            Inner::On(tx) => {
                let (reply, verdict) = oneshot::channel();
                tx.send((text.to_string(), reply))
                    .await
                    .map_err(|_| "the moderation threads stopped".to_string())?;
                verdict
                    .await
                    .map_err(|_| "the moderation threads stopped".to_string())?
                    .map(Some)
            }
        }
    }

    pub fn is_off(&self) -> bool {
        matches!(self.inner, Inner::Off)
    }
}

fn work(checker: &dyn Checker, rx: &Mutex<mpsc::Receiver<(String, Reply)>>) {
    loop {
        let mut batch = Vec::new();
        {
            // Threads take turns waiting on the queue; a poisoned lock only
            // means another thread panicked while holding it.
            let mut rx = rx.lock().unwrap_or_else(|p| p.into_inner());
            match rx.blocking_recv() {
                Some(first) => batch.push(first),
                None => return,
            }
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
        }
        let texts: Vec<&str> = batch.iter().map(|(t, _)| t.as_str()).collect();
        let result =
            catch_unwind(AssertUnwindSafe(|| checker.check_batch(&texts))).unwrap_or_else(|p| {
                tracing::error!(panic = %panic_message(&*p), "moderation panicked");
                Err("the moderation check crashed".into())
            });
        match result {
            Ok(verdicts) if verdicts.len() == batch.len() => {
                for ((_, reply), v) in batch.into_iter().zip(verdicts) {
                    let _ = reply.send(Ok(v));
                }
            }
            Ok(verdicts) => {
                let reason = format!(
                    "moderation returned {} verdicts for {} texts",
                    verdicts.len(),
                    batch.len()
                );
                for (_, reply) in batch {
                    let _ = reply.send(Err(reason.clone()));
                }
            }
            Err(reason) => {
                for (_, reply) in batch {
                    let _ = reply.send(Err(reason.clone()));
                }
            }
        }
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
        let gate = Gate::new(checker.clone(), 1).unwrap();
        assert!(!gate.check("hello").await.unwrap().unwrap().flagged);
        assert!(gate.check("oh darn").await.unwrap().unwrap().flagged);
        assert!(gate.check("please panic").await.is_err());
        // The thread survived its checker's panic: later checks still work.
        assert!(gate.check("oh darn again").await.unwrap().unwrap().flagged);
        assert!(gate.check("this will fail").await.is_err());
        assert!(!gate.check("fine").await.unwrap().unwrap().flagged);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn test_concurrent_checks_are_batched() {
        let checker = WordChecker::new("darn");
        let gate = Arc::new(Gate::new(checker.clone(), 1).unwrap());
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
        let calls = checker.calls.load(std::sync::atomic::Ordering::SeqCst);
        assert!(calls <= 200, "{calls}");
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
