//! Moderation: a multilingual multi-label text classifier (hashed char and
//! word n-grams → mean of learned embeddings → linear → calibrated sigmoid)
//! trained with candle, exported to ONNX with the project's graph writer,
//! and run through ONNX Runtime beside rule-based checks (a blocklist and
//! the PII detectors of [`crate::text::pii`]).
//!
//! The featurizer (normalising, n-gram hashing) runs in Rust both at
//! training and at inference; the ONNX graph holds only the numeric part,
//! so the two cannot drift apart.

mod bench;
mod data;
mod eval;
mod features;
mod filter;
mod metrics;
mod moderator;
mod onnx;
mod train;

pub use bench::{BenchReport, bench};
pub use data::{
    Dataset, Example, SourceInfo, Split, SplitConfig, add_clean, language_of, read_clean_texts,
    read_datasets,
};
pub use eval::{CleanRow, EvalReport, EvalSets, MetricRow, evaluate};
pub(crate) use features::pad;
pub use features::{Features, FeaturizerConfig};
pub use filter::{FileReport, FilterReport, Flagged, filter_files};
pub use metrics::{BinaryMetrics, choose_threshold, roc_auc};
pub use moderator::{Blocklist, CategoryVerdict, Moderator, PiiAction, RuleHit, Rules, Verdict};
pub(crate) use onnx::{LexiconPart, classifier_graph, run_scores_with};
pub use onnx::{ONNX_FILE, PARITY_TOLERANCE};
pub(crate) use train::{Classifier, SparseAdam, SparseBatch, batch_tensors, gathered_mean};
pub use train::{
    JSON_FILE, LabelModel, ModelMeta, Pooling, TrainJob, TrainReport, TrainSettings, train,
};

/// Errors of the moderation stage.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A data file is missing, unreadable or malformed.
    #[error("{path}: {reason}")]
    Data { path: String, reason: String },
    /// A malformed row; `line` is 1-based, as an editor shows it.
    #[error("{path}:{line}: {reason}")]
    Row {
        path: String,
        line: u64,
        reason: String,
    },
    #[error("no training data: {0}")]
    Empty(String),
    #[error("invalid setting: {0}")]
    Config(String),
    #[error("training: {0}")]
    Train(String),
    /// The model folder lacks a file or its files do not agree.
    #[error("moderation model {path}: {reason}")]
    Model { path: String, reason: String },
    #[error(
        "moderation export parity check failed: ONNX Runtime's scores differ from candle's by {0:e}, more than {PARITY_TOLERANCE:e}; nothing was written"
    )]
    Parity(f32),
    #[error(transparent)]
    Runtime(#[from] crate::runtime::Error),
    #[error("inference failed: {0}")]
    Run(String),
    #[error(transparent)]
    Write(#[from] crate::fsio::WriteError),
}

pub type Result<T> = std::result::Result<T, Error>;

fn candle_err(e: candle_core::Error) -> Error {
    Error::Train(e.to_string())
}
