//! Pretraining and chat fine-tuning: corpora, batches, AdamW, the learning
//! rate schedule, checkpoints, metrics and the loop that ties them.

mod checkpoint;
mod config;
mod corpus;
mod data;
mod device;
mod jobs;
mod metrics;
mod optim;
mod raft;
mod trainer;

pub use checkpoint::{Checkpoint, CheckpointState};
pub use config::{ModelSection, TokenizerSection, TrainConfig, TrainSection};
pub use corpus::{CorpusFile, read_corpus};
pub use data::{Batch, Dataset, DialogData, PretrainData, training_examples};
pub use device::TrainDevice;
pub use jobs::{
    FinetuneJob, JobReport, PretrainJob, RaftJob, finetune, finetune_defaults, pretrain,
    read_train_section,
};
pub(crate) use metrics::register_font as register_chart_font;
pub use metrics::{MetricsLog, plot_loss_curve};
pub use optim::AdamW;
pub use raft::{RaftReport, RaftSettings, raft_examples};
pub use schedule::learning_rate;
pub use trainer::{
    Stage, TrainOutcome, TrainRun, batch_loss, snapshot, step_rng, token_nll, train_step, trainable,
};

mod schedule {
    use super::TrainSection;

    /// Linear warm-up, then cosine decay to `min_lr` over the decay horizon
    /// (nanoGPT's `get_lr`), a pure function of the step so resume is exact.
    pub fn learning_rate(cfg: &TrainSection, step: usize) -> f64 {
        let horizon = cfg.lr_decay_steps.unwrap_or(cfg.steps);
        if step < cfg.warmup_steps {
            return cfg.lr * (step + 1) as f64 / (cfg.warmup_steps + 1) as f64;
        }
        if step >= horizon {
            return cfg.min_lr;
        }
        let span = (horizon - cfg.warmup_steps).max(1) as f64;
        let ratio = (step - cfg.warmup_steps) as f64 / span;
        let coeff = 0.5 * (1.0 + (std::f64::consts::PI * ratio).cos());
        cfg.min_lr + coeff * (cfg.lr - cfg.min_lr)
    }
}

/// Errors of the training stage.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid training config: {0}")]
    Config(String),
    #[error("training data: {0}")]
    Data(String),
    #[error(
        "training diverged at step {step}: {what} is {value}; lower the learning rate or check the data"
    )]
    NonFinite {
        step: usize,
        what: &'static str,
        value: f32,
    },
    #[error("parameters received no gradient (the graph is cut): {}", .0.join(", "))]
    MissingGradient(Vec<String>),
    #[error("checkpoint {path}: {reason}")]
    Checkpoint { path: String, reason: String },
    #[error(transparent)]
    Io(#[from] crate::fsio::IoError),
    #[error(transparent)]
    Write(#[from] crate::fsio::WriteError),
    #[error(transparent)]
    Model(#[from] crate::model::Error),
    #[error(transparent)]
    Text(#[from] crate::text::Error),
    #[error(transparent)]
    Bundle(#[from] crate::bundle::Error),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

pub(crate) use crate::fsio::io_err;
