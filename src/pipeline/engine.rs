//! The model behind the pipeline: worker threads that each own a
//! [`Generator`], fed from one queue, and swapped whole on reload so that
//! replies in flight finish on the bundle they started with.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::{mpsc, oneshot};

use crate::runtime::{Generation, Generator, RuntimeConfig, SamplingParams};
use crate::text::Dialog;

/// Errors of the engine. Generation errors keep the runtime's message for
/// the logs; users only ever see the pipeline's apology.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot open the model bundle {dir}: {reason}")]
    Open { dir: String, reason: String },
    #[error("generation failed: {0}")]
    Generate(String),
    #[error("the model workers stopped")]
    Stopped,
}

struct Job {
    dialog: Dialog,
    params: SamplingParams,
    cancel: Arc<AtomicBool>,
    deltas: mpsc::UnboundedSender<String>,
    done: oneshot::Sender<Result<Generation, EngineError>>,
}

/// One loaded bundle and its workers. Dropping the last handle closes the
/// queue; workers finish what is queued and exit.
pub struct Pool {
    tx: mpsc::Sender<Job>,
    dir: PathBuf,
    model_version: String,
    defaults: SamplingParams,
}

impl Pool {
    /// Starts `workers` threads, each opening its own session of the bundle;
    /// returns once all are ready, or the first error.
    fn open(dir: &Path, runtime: &RuntimeConfig, workers: usize) -> Result<Self, EngineError> {
        let open_err = |reason: String| EngineError::Open {
            dir: dir.display().to_string(),
            reason,
        };
        let (tx, rx) = mpsc::channel::<Job>(1024);
        let rx = Arc::new(Mutex::new(rx));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        for i in 0..workers.max(1) {
            let rx = Arc::clone(&rx);
            let ready = ready_tx.clone();
            let dir = dir.to_path_buf();
            let runtime = runtime.clone();
            std::thread::Builder::new()
                .name(format!("chatforge-gen-{i}"))
                .spawn(move || match Generator::open(&dir, &runtime) {
                    Ok(g) => {
                        let info = (
                            g.bundle()
                                .model_version()
                                .unwrap_or("unversioned")
                                .to_string(),
                            g.default_params(),
                        );
                        let _ = ready.send(Ok(info));
                        drop(ready);
                        work(g, &rx);
                    }
                    Err(e) => {
                        let _ = ready.send(Err(e.to_string()));
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
            dir: dir.to_path_buf(),
            model_version,
            defaults,
        })
    }

    pub fn model_version(&self) -> &str {
        &self.model_version
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Sampling settings from the bundle's `generation.json`.
    pub fn defaults(&self) -> &SamplingParams {
        &self.defaults
    }

    /// Queues a reply; its text arrives on `deltas` as it becomes final.
    /// Setting `cancel` stops it at the next token.
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
        self.tx.send(job).await.map_err(|_| EngineError::Stopped)?;
        result.await.map_err(|_| EngineError::Stopped)?
    }
}

fn work(mut generator: Generator, rx: &Mutex<mpsc::Receiver<Job>>) {
    loop {
        // Workers take turns waiting on the shared queue.
        let job = match rx.lock() {
            Ok(mut rx) => rx.blocking_recv(),
            Err(_) => None,
        };
        let Some(job) = job else {
            return;
        };
        let result = generator
            .reply_cancellable(&job.dialog, &job.params, &job.cancel, &mut |_, piece| {
                let _ = job.deltas.send(piece.to_string());
            })
            .map_err(|e| EngineError::Generate(e.to_string()));
        let _ = job.done.send(result);
    }
}

/// The current pool; [`Engine::reload`] replaces it atomically.
pub struct Engine {
    current: RwLock<Arc<Pool>>,
    runtime: RuntimeConfig,
    workers: usize,
}

impl Engine {
    /// Opens the bundle in `dir` with `workers` generator threads. Blocks
    /// while the model loads.
    pub fn open(dir: &Path, runtime: &RuntimeConfig, workers: usize) -> Result<Self, EngineError> {
        let pool = Pool::open(dir, runtime, workers)?;
        tracing::info!(bundle = %dir.display(), version = pool.model_version(), workers, "model loaded");
        Ok(Self {
            current: RwLock::new(Arc::new(pool)),
            runtime: runtime.clone(),
            workers,
        })
    }

    /// The pool new replies go to. A reply keeps its pool until it is done.
    pub fn current(&self) -> Arc<Pool> {
        match self.current.read() {
            Ok(p) => Arc::clone(&p),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Loads the bundle in `dir` (the same folder re-exported, or another)
    /// and switches new replies to it; on error the old model stays. Blocks
    /// while the model loads. Returns the new model version.
    pub fn reload(&self, dir: &Path) -> Result<String, EngineError> {
        let pool = Pool::open(dir, &self.runtime, self.workers)?;
        let version = pool.model_version().to_string();
        let old = {
            let mut cur = match self.current.write() {
                Ok(c) => c,
                Err(poisoned) => poisoned.into_inner(),
            };
            std::mem::replace(&mut *cur, Arc::new(pool))
        };
        tracing::info!(bundle = %dir.display(), from = old.model_version(), to = %version, "model reloaded");
        Ok(version)
    }
}
