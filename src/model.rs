//! The GPT-2 decoder in candle, its configuration, and the HF-compatible
//! weight files (`config.json` + `model.safetensors`).

mod config;
mod gpt;
pub mod kernels;
mod weights;

pub use config::{Activation, GptConfig};
pub use gpt::{Dropout, Gpt};
pub use kernels::Kernels;
pub use weights::{Weights, init_weights, load_safetensors, parameter_shapes, save_safetensors};

/// Errors of the model stage.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid model config: {0}")]
    Config(String),
    #[error("weights file {path}: {reason}")]
    Weights { path: String, reason: String },
    #[error(transparent)]
    Io(#[from] crate::fsio::IoError),
    #[error(transparent)]
    Write(#[from] crate::fsio::WriteError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, Error>;
