//! The knowledge base: the team's documents split into passages
//! (`ingest.rs`), a BM25 index over them (`index.rs`, tantivy), a router
//! trained on labelled example questions (`router.rs`, candle → ONNX →
//! ort), and their fusion into one ranking with a calibrated confidence
//! (`fuse.rs`), so that a question the documents do not answer is known as
//! such. A knowledge base is a folder, an artifact like a bundle:
//!
//! | file | content |
//! | --- | --- |
//! | `kb.json` | manifest: format version, sources with sha256, counts, settings |
//! | `passages.jsonl` | every passage: id, source, line, anchor, title path, text |
//! | `index/` | the BM25 index |
//! | `router.onnx`, `router.json` | the trained router (`kb train`) |
//! | `search.json` | fusion weights and calibration (`kb train`) |
//! | `expansions.json`, `index-expanded/` | the labelled questions per passage, and BM25 over passages and questions (`kb train`) |
//! | `negatives.json` | the texts the router learnt as "none of these" (`kb train`) |

mod analyze;
mod bench;
mod build;
mod eval;
mod fuse;
mod index;
mod ingest;
pub mod lexicon;
mod near_miss;
mod questions;
mod router;
mod search;
mod spell;
mod train;

pub(crate) use analyze::is_han;
pub use analyze::terms as analyze_terms;
pub use bench::{KbBenchReport, bench_kb};
pub use build::{BuildOptions, BuildReport, MANIFEST, Manifest, SourceEntry, build};
pub use eval::{EvalReport, Metrics, evaluate};
pub use fuse::{Calibration, Signals, Weights};
pub use ingest::{
    Kind, Passage, SPLIT_REVISION, SplitSettings, TITLE_SEP, Warning, plain_label,
    sentences as sentences_of,
};
pub use lexicon::Lexicon;
pub use near_miss::NEAR_MISS_REVISION;
pub use questions::{Labelled, read as read_questions, resolve};
pub use router::{LexiconInfo, RouterMeta, RouterSettings};
pub use search::{Hit, Kb, Query, Retrieval, SEARCH_JSON, SIGNALS_REVISION, SearchSettings};
pub use train::{TrainOptions, TrainReport, train};

/// The knowledge-base format this chatforge reads and writes.
pub const FORMAT: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A problem in a source file; `line` 0 means the whole file.
    #[error("{source_file}{}: {reason}", if *line > 0 { format!(":{line}") } else { String::new() })]
    Source {
        source_file: String,
        line: usize,
        reason: String,
    },
    #[error(
        "{file}:{line}: unknown label {label:?}: no passage has that id, and no title ends with it"
    )]
    UnknownLabel {
        file: String,
        line: usize,
        label: String,
    },
    #[error("no documents: {0}")]
    Empty(String),
    /// The folder is not a knowledge base this version reads.
    #[error("{0}")]
    Format(String),
    #[error("index: {0}")]
    Index(String),
    #[error("router: {0}")]
    Router(String),
    #[error(transparent)]
    Io(#[from] crate::fsio::IoError),
    #[error(transparent)]
    Write(#[from] crate::fsio::WriteError),
}

pub type Result<T> = std::result::Result<T, Error>;
