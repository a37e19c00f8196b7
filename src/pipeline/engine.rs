//! The model behind the pipeline: worker threads that each own a
//! [`Backend`], fed from one queue, and swapped whole on reload so that
//! replies in flight finish on the bundle they started with.
//!
//! A backend that panics is caught: the reply fails (the user gets the
//! apology), the panic is logged, and the worker opens a fresh backend, so
//! one bad reply never takes the model offline.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::gate::panic_message;
use crate::runtime::{
    BatchLimits, BatchRequest, Generation, Generator, Intake, RuntimeConfig, SamplingParams,
};
use crate::text::Dialog;

/// Errors of the engine. Generation errors keep the runtime's message for
/// the logs; users only ever see the pipeline's apology.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot open the model bundle {dir}: {reason}")]
    Open { dir: String, reason: String },
    #[error("generation failed: {0}")]
    Generate(String),
    /// The queue in front of the workers is full.
    #[error("{0} replies are already waiting for the model")]
    Busy(usize),
    #[error("the model workers stopped")]
    Stopped,
}

/// What generates replies: the ONNX generator in production, a scripted
/// one in the pipeline's unit tests. One instance is used by one thread at
/// a time.
pub trait Backend: Send {
    /// The next assistant turn of `dialog`. `on_text` receives the reply's
    /// text as it becomes final; once `cancel` is set, generation stops at
    /// the next token.
    fn reply(
        &mut self,
        dialog: &Dialog,
        params: &SamplingParams,
        cancel: &AtomicBool,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<Generation, String>;

    /// The model's version, as the store records it.
    fn model_version(&self) -> String;

    /// The model's default sampling settings.
    fn default_params(&self) -> SamplingParams;

    /// The generator, when this backend can serve a continuous batch.
    fn batcher(&mut self) -> Option<&mut Generator> {
        None
    }
}

/// How a pool's workers take replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scheduler {
    /// Each worker generates one reply at a time.
    #[default]
    Pool,
    /// Each worker runs a continuous batch: replies join and leave between
    /// decode steps.
    Continuous(BatchLimits),
}

impl Backend for Generator {
    fn reply(
        &mut self,
        dialog: &Dialog,
        params: &SamplingParams,
        cancel: &AtomicBool,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<Generation, String> {
        self.reply_cancellable(dialog, params, cancel, &mut |_, piece| on_text(piece))
            .map_err(|e| e.to_string())
    }

    fn model_version(&self) -> String {
        self.bundle()
            .model_version()
            .unwrap_or("unversioned")
            .to_string()
    }

    fn default_params(&self) -> SamplingParams {
        Generator::default_params(self)
    }

    fn batcher(&mut self) -> Option<&mut Generator> {
        Some(self)
    }
}

/// Opens a backend for a bundle folder; called once per worker, and again
/// for a worker whose backend panicked.
pub type Opener = Arc<dyn Fn(&Path) -> Result<Box<dyn Backend>, String> + Send + Sync>;

/// The production opener: the bundle's ONNX model through ONNX Runtime.
pub fn onnx_opener(runtime: &RuntimeConfig) -> Opener {
    let runtime = runtime.clone();
    Arc::new(move |dir: &Path| {
        // Opened on the worker's own thread, before ONNX Runtime starts
        // the session's threads, so they inherit it.
        if runtime.generator_nice != 0 {
            crate::runtime::set_thread_nice(runtime.generator_nice);
        }
        Generator::open(dir, &runtime)
            .map(|g| Box::new(g) as Box<dyn Backend>)
            .map_err(|e| e.to_string())
    })
}

struct Job {
    dialog: Dialog,
    params: SamplingParams,
    cancel: Arc<AtomicBool>,
    deltas: mpsc::UnboundedSender<String>,
    done: oneshot::Sender<Result<Generation, EngineError>>,
}

/// Replies waiting for a pool's workers, by default, before
/// [`Pool::reply`] answers [`EngineError::Busy`] (`[model] queue`).
pub const DEFAULT_QUEUE: usize = 1024;

/// One loaded bundle and its workers. Dropping the last handle closes the
/// queue; workers finish what is queued and exit.
pub struct Pool {
    tx: mpsc::Sender<Job>,
    /// Replies that may wait for the workers.
    queue: usize,
    dir: PathBuf,
    model_version: String,
    defaults: SamplingParams,
    restarts: Arc<AtomicU64>,
}

impl Pool {
    /// Starts `workers` threads, each opening its own backend; returns once
    /// all are ready, or the first error.
    fn open(
        dir: &Path,
        opener: &Opener,
        workers: usize,
        scheduler: Scheduler,
        queue: usize,
    ) -> Result<Self, EngineError> {
        let open_err = |reason: String| EngineError::Open {
            dir: dir.display().to_string(),
            reason,
        };
        let queue = queue.max(1);
        let (tx, rx) = mpsc::channel::<Job>(queue);
        let rx = Arc::new(Mutex::new(rx));
        let restarts = Arc::new(AtomicU64::new(0));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        for i in 0..workers.max(1) {
            let worker = Worker {
                rx: Arc::clone(&rx),
                dir: dir.to_path_buf(),
                opener: Arc::clone(opener),
                restarts: Arc::clone(&restarts),
                scheduler,
            };
            let ready = ready_tx.clone();
            std::thread::Builder::new()
                .name(format!("chatforge-gen-{i}"))
                .spawn(move || match (worker.opener)(&worker.dir) {
                    Ok(b) => {
                        let _ = ready.send(Ok((b.model_version(), b.default_params())));
                        drop(ready);
                        worker.run(b);
                    }
                    Err(e) => {
                        let _ = ready.send(Err(e));
                    }
                })
                .map_err(|e| open_err(format!("cannot start a worker thread: {e}")))?;
        }
        drop(ready_tx);
        let mut info = None;
        for r in ready_rx.iter() {
            info = Some(r.map_err(open_err)?);
        }
        let (model_version, defaults) = info.ok_or_else(|| open_err("no worker started".into()))?;
        Ok(Self {
            tx,
            queue,
            dir: dir.to_path_buf(),
            model_version,
            defaults,
            restarts,
        })
    }

    pub fn model_version(&self) -> &str {
        &self.model_version
    }

    /// Replies waiting for a worker now.
    pub fn waiting(&self) -> usize {
        self.queue.saturating_sub(self.tx.capacity())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Sampling settings from the bundle's `generation.json`.
    pub fn defaults(&self) -> &SamplingParams {
        &self.defaults
    }

    /// Backends reopened after a panic since the pool started.
    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }

    /// Queues a reply; its text arrives on `deltas` as it becomes final.
    /// Setting `cancel` stops it at the next token. A full queue answers
    /// [`EngineError::Busy`] at once rather than making the caller wait.
    pub async fn reply(
        &self,
        dialog: Dialog,
        params: SamplingParams,
        cancel: Arc<AtomicBool>,
        deltas: mpsc::UnboundedSender<String>,
    ) -> Result<Generation, EngineError> {
        let (done, result) = oneshot::channel();
        let job = Job {
            dialog,
            params,
            cancel,
            deltas,
            done,
        };
        self.tx.try_send(job).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => EngineError::Busy(self.queue),
            mpsc::error::TrySendError::Closed(_) => EngineError::Stopped,
        })?;
        metrics::gauge!(crate::http::metrics::REQUESTS_WAITING).increment(1.0);
        result.await.map_err(|_| EngineError::Stopped)?
    }
}

struct Worker {
    rx: Arc<Mutex<mpsc::Receiver<Job>>>,
    dir: PathBuf,
    opener: Opener,
    restarts: Arc<AtomicU64>,
    scheduler: Scheduler,
}

/// The worker's queue as a continuous batch's intake.
struct Queue<'a>(&'a Mutex<mpsc::Receiver<Job>>);

impl Intake for Queue<'_> {
    fn take(&mut self, wait: bool, room: usize) -> Option<Vec<BatchRequest>> {
        use crate::http::metrics::{REQUESTS_RUNNING, REQUESTS_WAITING};
        let mut rx = if wait {
            self.0.lock().unwrap_or_else(|p| p.into_inner())
        } else {
            match self.0.try_lock() {
                Ok(rx) => rx,
                // Another worker is idle, waiting on the queue with the
                // lock held: what arrives is its to take, and this batch
                // must not stall behind it.
                Err(std::sync::TryLockError::WouldBlock) => return Some(Vec::new()),
                Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            }
        };
        let mut jobs = Vec::new();
        if wait {
            jobs.push(rx.blocking_recv()?);
        }
        while jobs.len() < room {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) if jobs.is_empty() => return None,
                Err(mpsc::error::TryRecvError::Disconnected) => break,
            }
        }
        let n = jobs.len() as f64;
        metrics::gauge!(REQUESTS_WAITING).decrement(n);
        metrics::gauge!(REQUESTS_RUNNING).increment(n);
        Some(
            jobs.into_iter()
                .map(|job| {
                    let deltas = job.deltas;
                    let done = job.done;
                    BatchRequest {
                        dialog: job.dialog,
                        params: job.params,
                        cancel: job.cancel,
                        on_text: Box::new(move |piece| {
                            let _ = deltas.send(piece.to_string());
                        }),
                        done: Box::new(move |r| {
                            metrics::gauge!(REQUESTS_RUNNING).decrement(1.0);
                            let _ = done.send(r.map_err(|e| EngineError::Generate(e.to_string())));
                        }),
                    }
                })
                .collect(),
        )
    }
}

impl Worker {
    fn next_job(&self) -> Option<Job> {
        // Workers take turns waiting on the shared queue; a poisoned lock
        // only means another worker panicked while waiting.
        self.rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .blocking_recv()
    }

    fn run(&self, mut backend: Box<dyn Backend>) {
        if let Scheduler::Continuous(limits) = self.scheduler
            && backend.batcher().is_some()
        {
            return self.run_batched(backend, limits);
        }
        self.run_one_at_a_time(backend);
    }

    /// One continuous batch until the queue closes. A panic fails the
    /// replies in flight (their callers get the apology) and reopens the
    /// backend.
    fn run_batched(&self, mut backend: Box<dyn Backend>, limits: BatchLimits) {
        loop {
            let served = catch_unwind(AssertUnwindSafe(|| {
                if let Some(g) = backend.batcher() {
                    g.serve_continuous(&mut Queue(&self.rx), &limits);
                }
            }));
            match served {
                Ok(()) => return,
                Err(p) => {
                    let reason = panic_message(&*p);
                    tracing::error!(bundle = %self.dir.display(), panic = %reason, "the batch generator panicked; reopening it");
                    drop(backend);
                    match self.reopen() {
                        Some(b) => backend = b,
                        None => return,
                    }
                }
            }
        }
    }

    fn run_one_at_a_time(&self, mut backend: Box<dyn Backend>) {
        use crate::http::metrics::{REQUESTS_RUNNING, REQUESTS_WAITING};
        while let Some(job) = self.next_job() {
            metrics::gauge!(REQUESTS_WAITING).decrement(1.0);
            metrics::gauge!(REQUESTS_RUNNING).increment(1.0);
            let result = catch_unwind(AssertUnwindSafe(|| {
                backend.reply(&job.dialog, &job.params, &job.cancel, &mut |piece| {
                    let _ = job.deltas.send(piece.to_string());
                })
            }));
            metrics::gauge!(REQUESTS_RUNNING).decrement(1.0);
            match result {
                Ok(r) => {
                    let _ = job.done.send(r.map_err(EngineError::Generate));
                }
                Err(p) => {
                    let reason = panic_message(&*p);
                    tracing::error!(bundle = %self.dir.display(), panic = %reason, "the generator panicked; reopening it");
                    let _ = job
                        .done
                        .send(Err(EngineError::Generate(format!("panicked: {reason}"))));
                    // Its state may be broken half-way through a step.
                    drop(backend);
                    match self.reopen() {
                        Some(b) => backend = b,
                        None => return,
                    }
                }
            }
        }
    }

    /// A fresh backend, retrying while the bundle cannot be opened; `None`
    /// once the pool is gone (nobody is left to serve).
    fn reopen(&self) -> Option<Box<dyn Backend>> {
        let mut wait = Duration::from_millis(100);
        loop {
            match (self.opener)(&self.dir) {
                Ok(b) => {
                    self.restarts.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(bundle = %self.dir.display(), "generator reopened");
                    return Some(b);
                }
                Err(e) => {
                    tracing::error!(bundle = %self.dir.display(), error = %e, "cannot reopen the generator; retrying");
                }
            }
            let closed = self.rx.lock().map(|rx| rx.is_closed()).unwrap_or(true);
            if closed {
                return None;
            }
            std::thread::sleep(wait);
            wait = (wait * 2).min(Duration::from_secs(10));
        }
    }
}

/// The current pool; [`Engine::reload`] replaces it atomically.
pub struct Engine {
    current: RwLock<Arc<Pool>>,
    opener: Opener,
    workers: usize,
    scheduler: Scheduler,
    queue: usize,
}

impl Engine {
    /// Opens the bundle in `dir` with `workers` ONNX generator threads.
    /// Blocks while the model loads.
    pub fn open(dir: &Path, runtime: &RuntimeConfig, workers: usize) -> Result<Self, EngineError> {
        Self::with_opener(dir, onnx_opener(runtime), workers)
    }

    /// [`Self::open`] with the workers scheduling as `scheduler` says, and
    /// at most `queue` replies waiting for them.
    pub fn open_scheduled(
        dir: &Path,
        runtime: &RuntimeConfig,
        workers: usize,
        scheduler: Scheduler,
        queue: usize,
    ) -> Result<Self, EngineError> {
        Self::with_opener_scheduled(dir, onnx_opener(runtime), workers, scheduler, queue)
    }

    /// [`Self::open`] with any backend.
    pub fn with_opener(dir: &Path, opener: Opener, workers: usize) -> Result<Self, EngineError> {
        Self::with_opener_scheduled(dir, opener, workers, Scheduler::Pool, DEFAULT_QUEUE)
    }

    /// [`Self::open_scheduled`] with any backend.
    pub fn with_opener_scheduled(
        dir: &Path,
        opener: Opener,
        workers: usize,
        scheduler: Scheduler,
        queue: usize,
    ) -> Result<Self, EngineError> {
        let pool = Pool::open(dir, &opener, workers, scheduler, queue)?;
        tracing::info!(bundle = %dir.display(), version = pool.model_version(), workers, ?scheduler, queue, "model loaded");
        Ok(Self {
            current: RwLock::new(Arc::new(pool)),
            opener,
            workers,
            scheduler,
            queue,
        })
    }

    /// The pool new replies go to. A reply keeps its pool until it is done.
    pub fn current(&self) -> Arc<Pool> {
        let p = self.current.read().unwrap_or_else(|p| p.into_inner());
        Arc::clone(&p)
    }

    /// Loads the bundle in `dir` (the same folder re-exported, or another)
    /// and switches new replies to it; on error the old model stays. Blocks
    /// while the model loads. Returns the new model version.
    pub fn reload(&self, dir: &Path) -> Result<String, EngineError> {
        let pool = Pool::open(dir, &self.opener, self.workers, self.scheduler, self.queue)?;
        let version = pool.model_version().to_string();
        let old = {
            let mut cur = self.current.write().unwrap_or_else(|p| p.into_inner());
            std::mem::replace(&mut *cur, Arc::new(pool))
        };
        tracing::info!(bundle = %dir.display(), from = old.model_version(), to = %version, "model reloaded");
        Ok(version)
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::runtime::StopReason;

    /// A backend that answers from a script: `reply_for(last user text)`,
    /// streamed word by word. A user text containing `"panic!"` panics
    /// mid-reply; one containing `"error!"` fails; `"slow!"` sleeps 500 ms
    /// per word; `"again!"` gets an invented price in its first draft and
    /// the context's last line in every later one.
    pub struct Scripted {
        pub version: String,
        pub reply_for: fn(&str) -> String,
        /// Drafts written so far per user text.
        drafts: std::collections::HashMap<String, usize>,
    }

    pub fn opener(version: &str, reply_for: fn(&str) -> String) -> Opener {
        let version = version.to_string();
        Arc::new(move |_: &Path| {
            Ok(Box::new(Scripted {
                version: version.clone(),
                reply_for,
                drafts: Default::default(),
            }) as Box<dyn Backend>)
        })
    }

    impl Backend for Scripted {
        fn reply(
            &mut self,
            dialog: &Dialog,
            params: &SamplingParams,
            cancel: &AtomicBool,
            on_text: &mut dyn FnMut(&str),
        ) -> Result<Generation, String> {
            let last = dialog
                .messages
                .iter()
                .rev()
                .find(|m| m.role == crate::text::Role::User)
                .map(|m| m.content.clone())
                .unwrap_or_default();
            if last.contains("error!") {
                return Err("scripted failure".into());
            }
            let drafts = self.drafts.entry(last.clone()).or_default();
            *drafts += 1;
            // "quote!" answers with the first line of the context block
            // the pipeline gave the model.
            let text = match dialog.context.first() {
                Some(_) if last.contains("again!") && *drafts == 1 => {
                    "That costs $99.99.".to_string()
                }
                Some(c) if last.contains("quote!") || last.contains("again!") => {
                    c.lines().last().unwrap_or("").to_string()
                }
                // "openings!" says what it was told not to open with.
                _ if last.contains("openings!") => {
                    format!("avoided: {}", params.avoid_openings.join(" | "))
                }
                // "turns!" answers with the turns the model was given.
                _ if last.contains("turns!") => dialog
                    .messages
                    .iter()
                    .filter(|m| m.role != crate::text::Role::System)
                    .map(|m| m.content.as_str())
                    .collect::<Vec<_>>()
                    .join(" | "),
                _ => (self.reply_for)(&last),
            };
            let mut sent = String::new();
            let mut stop = StopReason::StopToken;
            for (i, word) in text.split_inclusive(' ').enumerate() {
                if cancel.load(Ordering::Relaxed) {
                    stop = StopReason::Cancelled;
                    break;
                }
                if i == 1 && last.contains("panic!") {
                    panic!("scripted generator panic");
                }
                if last.contains("slow!") {
                    std::thread::sleep(Duration::from_millis(500));
                }
                on_text(word);
                sent.push_str(word);
            }
            Ok(Generation {
                tokens: (0..sent.split_whitespace().count() as u32).collect(),
                text: sent,
                prompt_tokens: dialog.messages.len(),
                prompt_cut_tokens: 0,
                stop,
            })
        }

        fn model_version(&self) -> String {
            self.version.clone()
        }

        fn default_params(&self) -> SamplingParams {
            SamplingParams::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::{Message, Role};

    fn dialog(text: &str) -> Dialog {
        Dialog {
            messages: vec![Message {
                role: Role::User,
                content: text.into(),
            }],
            topic: None,
            style: None,
            ..Default::default()
        }
    }

    async fn ask(engine: &Engine, text: &str) -> Result<Generation, EngineError> {
        let (tx, _rx) = mpsc::unbounded_channel();
        engine
            .current()
            .reply(
                dialog(text),
                SamplingParams::default(),
                Arc::new(AtomicBool::new(false)),
                tx,
            )
            .await
    }

    #[tokio::test]
    async fn test_a_panicking_generator_is_reopened_and_serves_on() {
        let opener = testing::opener("v1", |q| format!("you said {q}"));
        let engine = Engine::with_opener(Path::new("scripted"), opener, 1).unwrap();
        assert_eq!(ask(&engine, "hi").await.unwrap().text, "you said hi");
        let err = ask(&engine, "please panic! now").await.unwrap_err();
        assert!(err.to_string().contains("panicked"), "{err}");
        // The only worker survived: the next reply works.
        assert_eq!(ask(&engine, "again").await.unwrap().text, "you said again");
        assert_eq!(engine.current().restarts(), 1);
        assert!(matches!(
            ask(&engine, "error!").await,
            Err(EngineError::Generate(_))
        ));
    }

    #[tokio::test]
    async fn test_reload_switches_version_and_failure_keeps_the_old() {
        let versions = Arc::new(Mutex::new(vec!["v2", "v1"]));
        let opener: Opener = {
            let versions = Arc::clone(&versions);
            Arc::new(move |dir: &Path| {
                if dir.ends_with("broken") {
                    return Err("no model.onnx".into());
                }
                let v = versions.lock().unwrap().pop().unwrap_or("v?");
                testing::opener(v, |_| "ok".into())(dir)
            })
        };
        let engine = Engine::with_opener(Path::new("a"), opener, 1).unwrap();
        assert_eq!(engine.current().model_version(), "v1");
        assert!(engine.reload(Path::new("broken")).is_err());
        assert_eq!(engine.current().model_version(), "v1");
        assert_eq!(engine.reload(Path::new("b")).unwrap(), "v2");
        assert_eq!(engine.current().dir(), Path::new("b"));
    }
}
