//! Execution providers: chosen from config in order of preference, with the
//! one actually used reported. ONNX Runtime itself falls back to the CPU
//! silently when a provider fails; chatforge registers each provider with
//! `error_on_failure` so a failure is seen, logged, and (with `strict`)
//! returned as an error.

use std::path::Path;

use ort::ep::{self, ExecutionProvider};
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use serde::{Deserialize, Serialize};

use super::{Error, Result, library};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Tensorrt,
    Cuda,
    Cpu,
}

impl Provider {
    pub fn name(self) -> &'static str {
        match self {
            Provider::Tensorrt => "tensorrt",
            Provider::Cuda => "cuda",
            Provider::Cpu => "cpu",
        }
    }

    /// Whether the loaded ONNX Runtime build includes this provider (it may
    /// still fail to start, e.g. without a GPU or CUDA libraries).
    pub fn compiled_in(self) -> Result<bool> {
        library::load()?;
        let r = match self {
            Provider::Tensorrt => ep::TensorRT::is_available(),
            Provider::Cuda => ep::CUDA::is_available(),
            Provider::Cpu => ep::CPU::is_available(),
        };
        r.map_err(|e| Error::Provider(format!("cannot list providers: {e}")))
    }

    fn dispatch(self) -> ep::ExecutionProviderDispatch {
        match self {
            Provider::Tensorrt => ep::TensorRT::default().build(),
            Provider::Cuda => ep::CUDA::default().build(),
            Provider::Cpu => ep::CPU::default().build(),
        }
        .error_on_failure()
    }
}

/// `[runtime]` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Providers in order of preference; the first that starts is used.
    pub providers: Vec<Provider>,
    /// Fail instead of falling back when a listed provider cannot start.
    pub strict: bool,
    /// Threads inside one operator (0 = ONNX Runtime's default: all cores).
    pub intra_threads: usize,
    /// Whether idle intra-op threads spin waiting for the next operator
    /// (ONNX Runtime's default) instead of sleeping: faster for one busy
    /// session, but the spinning takes CPU that other threads (moderation,
    /// the async workers, other sessions) need on a small machine.
    pub spin: bool,
    /// Which graph of a bundle generation runs: `fp32` (`model.onnx`) or
    /// `int8` (`model.int8.onnx`, from `chatforge export --int8`).
    pub precision: crate::bundle::Precision,
    /// Nice value (0–19) of the generator threads and of the ONNX Runtime
    /// threads they start: the async workers that read requests, moderate
    /// and check replies then get a core at once when the model holds them
    /// all, instead of waiting for the scheduler's next turn. 0 leaves them
    /// at the process's priority.
    pub generator_nice: i32,
}

impl RuntimeConfig {
    /// Intra-op threads sessions run with: `intra_threads`, or ONNX
    /// Runtime's default of one per core.
    pub fn intra_threads_in_use(&self) -> usize {
        if self.intra_threads > 0 {
            return self.intra_threads;
        }
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    }
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            providers: vec![Provider::Cuda, Provider::Cpu],
            strict: false,
            intra_threads: 0,
            spin: true,
            precision: crate::bundle::Precision::Fp32,
            generator_nice: 10,
        }
    }
}

/// Lowers the calling thread's priority to nice value `nice`; on Linux it
/// is per thread, and threads it starts afterwards inherit it. A thread
/// already at that value or lower in priority is left alone (raising it
/// back needs privileges); a failure is logged and the thread runs on.
pub fn set_thread_nice(nice: i32) {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: these calls only read their integer arguments.
        let tid = unsafe { libc::gettid() } as libc::id_t;
        let current = unsafe { libc::getpriority(libc::PRIO_PROCESS, tid) };
        if current >= nice {
            return;
        }
        let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, nice) };
        if rc != 0 {
            tracing::warn!(nice, error = %std::io::Error::last_os_error(), "cannot set the thread's nice value");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}

/// A session and the provider it runs on.
pub struct LoadedSession {
    pub session: Session,
    pub provider: Provider,
}

enum Model<'a> {
    File(&'a Path),
    Memory(&'a [u8]),
}

fn try_provider(cfg: &RuntimeConfig, provider: Provider, model: &Model<'_>) -> Result<Session> {
    let env = library::environment()?;
    let err = |e: String| Error::Provider(format!("{}: {e}", provider.name()));
    let mut builder = Session::builder(&env)
        .map_err(|e| err(e.to_string()))?
        .with_optimization_level(GraphOptimizationLevel::Level3)
        .map_err(|e| err(e.to_string()))?
        .with_execution_providers([provider.dispatch()])
        .map_err(|e| err(e.to_string()))?;
    if cfg.intra_threads > 0 {
        builder = builder
            .with_intra_threads(cfg.intra_threads)
            .map_err(|e| err(e.to_string()))?;
    }
    if !cfg.spin {
        builder = builder
            .with_intra_op_spinning(false)
            .map_err(|e| err(e.to_string()))?;
    }
    let session = match model {
        Model::File(p) => builder.commit_from_file(p),
        Model::Memory(b) => builder.commit_from_memory(b),
    };
    session.map_err(|e| Error::Model(e.to_string()))
}

fn open(cfg: &RuntimeConfig, model: Model<'_>, what: &str) -> Result<LoadedSession> {
    if cfg.providers.is_empty() {
        return Err(Error::Provider("no execution providers configured".into()));
    }
    let mut failures = Vec::new();
    for &provider in &cfg.providers {
        if provider != Provider::Cpu && !provider.compiled_in()? {
            let why = format!(
                "{} is not in this ONNX Runtime build (the GPU providers come with the onnxruntime-gpu wheel)",
                provider.name()
            );
            if cfg.strict {
                return Err(Error::Provider(format!(
                    "{what}: {why}, and runtime.strict is set"
                )));
            }
            tracing::debug!("{what}: {why}");
            continue;
        }
        match try_provider(cfg, provider, &model) {
            Ok(session) => {
                if !failures.is_empty() {
                    tracing::warn!(
                        "{what}: fell back to {} ({})",
                        provider.name(),
                        failures.join("; ")
                    );
                }
                tracing::info!(
                    "{what}: running on the {} execution provider",
                    provider.name()
                );
                return Ok(LoadedSession { session, provider });
            }
            // The CPU provider always starts, so a failure there is the model.
            Err(Error::Model(e)) if provider == Provider::Cpu => {
                return Err(Error::Model(format!("{what}: {e}")));
            }
            Err(e) => {
                if cfg.strict {
                    return Err(Error::Provider(format!(
                        "{what}: provider {} failed and runtime.strict is set: {e}",
                        provider.name()
                    )));
                }
                tracing::warn!("{what}: provider {} unavailable: {e}", provider.name());
                failures.push(e.to_string());
            }
        }
    }
    Err(Error::Provider(format!(
        "{what}: no configured provider could start: {}",
        failures.join("; ")
    )))
}

pub fn open_file(cfg: &RuntimeConfig, path: &Path) -> Result<LoadedSession> {
    if !path.is_file() {
        return Err(Error::Model(format!("{} does not exist", path.display())));
    }
    open(cfg, Model::File(path), &path.display().to_string())
}

pub fn open_memory(cfg: &RuntimeConfig, bytes: &[u8], what: &str) -> Result<LoadedSession> {
    open(cfg, Model::Memory(bytes), what)
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    fn nice_of_this_thread() -> i32 {
        // SAFETY: reads this thread's priority; no pointers.
        unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) }
    }

    /// The generator's nice value reaches the threads ONNX Runtime starts
    /// from it, and only those: the calling thread's others keep theirs.
    #[test]
    fn test_thread_nice_is_set_and_inherited_by_threads_it_starts() {
        let here = nice_of_this_thread();
        let want = (here + 3).min(19);
        let (set, child, kept) = std::thread::spawn(move || {
            super::set_thread_nice(want);
            let child = std::thread::spawn(nice_of_this_thread).join().unwrap();
            let set = nice_of_this_thread();
            // A higher priority than it has is not asked for.
            super::set_thread_nice(here);
            (set, child, nice_of_this_thread())
        })
        .join()
        .unwrap();
        assert_eq!((set, child, kept), (want, want, want));
        assert_eq!(nice_of_this_thread(), here);
    }
}
