//! Evaluation: reference-matching metrics (corpus BLEU as sacreBLEU, ROUGE
//! as Google's rouge-score), diversity (distinct-n, reply length),
//! perplexity and bits per byte by teacher forcing, and the side-by-side
//! report of a bundle and a baseline on held-out dialogs.

pub mod bleu;
pub mod diversity;
pub mod grounded;
pub mod perplexity;
pub mod porter;
mod pytext;
pub mod report;
pub mod rouge;
mod run;

pub use bleu::{Bleu, BleuStats, Tokenize, corpus_bleu};
pub use diversity::{Diversity, diversity};
pub use grounded::{Answer, GroundedScores, evaluate_grounded};
pub use perplexity::{Perplexity, perplexity};
pub use report::{MetricRow, Report, write_report};
pub use rouge::{Prf, Rouge, RougeF};
pub use run::{
    EvalOptions, ModelEval, SAFETY_NOTE, Sample, SamplingSummary, TrainingSummary, evaluate_bundle,
};

use serde::{Deserialize, Serialize};

/// Errors of the evaluation stage.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{hyp_name} has {hyp} lines but {ref_name} has {refs}; the files must be line-aligned")]
    Misaligned {
        hyp_name: String,
        hyp: usize,
        ref_name: String,
        refs: usize,
    },
    #[error("{0}")]
    Input(String),
    #[error("cannot draw {path}: {reason}")]
    Plot { path: String, reason: String },
    #[error(transparent)]
    Io(#[from] crate::fsio::IoError),
    #[error(transparent)]
    Write(#[from] crate::fsio::WriteError),
    #[error(transparent)]
    Runtime(#[from] crate::runtime::Error),
    #[error(transparent)]
    Moderation(#[from] crate::moderation::Error),
    #[error(transparent)]
    Bundle(#[from] crate::bundle::Error),
    #[error(transparent)]
    Text(#[from] crate::text::Error),
    #[error(transparent)]
    Model(#[from] crate::model::Error),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

pub(crate) use crate::fsio::io_err;

/// Everything `chatforge score` reports for line-aligned hypotheses and
/// references.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    pub lines: usize,
    pub tokenize: Tokenize,
    /// sacreBLEU's signature of the BLEU settings.
    pub bleu_signature: String,
    /// Whether ROUGE stemmed its tokens (Porter).
    pub rouge_stemmer: bool,
    pub bleu: Bleu,
    /// Mean ROUGE F-measures over the lines.
    pub rouge: RougeF,
    /// Of the hypotheses.
    pub diversity: Diversity,
}

/// Scores hypotheses against references, line by line.
pub fn score<H: AsRef<str>, R: AsRef<str>>(
    hyps: &[H],
    refs: &[R],
    tok: Tokenize,
    stem: bool,
) -> Result<Scores> {
    if hyps.len() != refs.len() {
        return Err(Error::Misaligned {
            hyp_name: "hypotheses".into(),
            hyp: hyps.len(),
            ref_name: "references".into(),
            refs: refs.len(),
        });
    }
    Ok(Scores {
        lines: hyps.len(),
        tokenize: tok,
        bleu_signature: tok.signature(),
        rouge_stemmer: stem,
        bleu: corpus_bleu(hyps, refs, tok),
        rouge: rouge::mean_f(hyps, refs, stem),
        diversity: diversity(hyps, tok),
    })
}

/// The lines of a plain-text file (`\n` or `\r\n`; no extra empty line
/// after a final newline).
pub fn read_lines(path: &std::path::Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    Ok(text.lines().map(str::to_string).collect())
}
