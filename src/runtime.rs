//! Inference through ONNX Runtime (ort, `load-dynamic`): loading the
//! library, choosing execution providers, the KV-cached decoder, sampling
//! and streaming generation.

mod batch;
mod decoder;
mod generate;
pub mod library;
mod providers;
pub(crate) mod sampling;

pub use batch::{BatchLimits, BatchRequest, Intake};
pub use decoder::{KvCache, Logits, OnnxDecoder};
pub use generate::{Generation, Generator, StopReason};
pub use library::{OrtLibrary, chatforge_home};
pub use providers::{
    LoadedSession, Provider, RuntimeConfig, open_file, open_memory, set_thread_nice,
};
pub use sampling::{Sampler, SamplingOverrides, SamplingParams};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The ONNX Runtime library could not be found or loaded.
    #[error("{0}")]
    Library(String),
    /// An execution provider could not start (with `strict`), or none did.
    #[error("execution provider: {0}")]
    Provider(String),
    /// The model file is missing, corrupt, or not the decoder of this bundle.
    #[error("model: {0}")]
    Model(String),
    /// Inputs the caller passed do not fit the model.
    #[error("invalid input: {0}")]
    Input(String),
    /// ONNX Runtime failed while running.
    #[error("inference failed: {0}")]
    Run(String),
    #[error(transparent)]
    Bundle(#[from] crate::bundle::Error),
    #[error(transparent)]
    Text(#[from] crate::text::Error),
}

pub type Result<T> = std::result::Result<T, Error>;
