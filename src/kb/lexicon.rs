//! A pretrained static token embedding (the "lexicon") for the router:
//! word knowledge that 8,000 labelled questions cannot teach ("card"
//! near "debit", "lost" near "stolen"). The table is WordLlama's
//! `l2_supercat_256` (MIT; 32,000 Llama-2 tokens × 256, trained for
//! mean-pooled sentence embeddings), which ships inside the PyPI wheel
//! `wordllama` that `scripts/setup.sh` fetches; nothing is downloaded at
//! run time. A question's lexicon vector is the mean of its tokens'
//! rows, L2-normalised; the router adds a trained linear map of it to its
//! n-gram scores. The table is baked into `router.onnx`; the tokenizer is
//! copied into the knowledge base, so a served KB needs neither the cache
//! nor the wheel.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device};
use tokenizers::Tokenizer;

use super::{Error, Result};
use crate::moderation::Features;

/// The folder set-up writes, under `$CHATFORGE_HOME/lexicon/`.
pub const DEFAULT_LEXICON: &str = "wordllama-l2-supercat-256";
/// A lexicon folder's files (and the tokenizer's name inside a KB).
pub const TOKENIZER_FILE: &str = "tokenizer.json";
pub const TABLE_FILE: &str = "embedding.safetensors";
pub const KB_TOKENIZER_FILE: &str = "router.tokenizer.json";

/// Longest text the lexicon reads, in characters (as the n-gram
/// featurizer's `max_chars`, so a pasted essay costs a bounded lookup).
const MAX_CHARS: usize = 1000;

/// `$CHATFORGE_HOME/lexicon/wordllama-l2-supercat-256`.
pub fn default_dir() -> PathBuf {
    crate::runtime::chatforge_home()
        .join("lexicon")
        .join(DEFAULT_LEXICON)
}

/// The lexicon in `named`, else set-up's when it is there. Without one
/// (set-up not run) the router reads n-grams alone, with a warning.
pub fn resolve(named: Option<&Path>) -> Result<Option<Arc<Lexicon>>> {
    let dir = match named {
        Some(d) => d.to_path_buf(),
        None => {
            let d = default_dir();
            if !d.is_dir() {
                tracing::warn!(
                    lexicon = %d.display(),
                    "no lexicon: the router reads n-grams alone (run scripts/setup.sh to fetch it)"
                );
                return Ok(None);
            }
            d
        }
    };
    Ok(Some(Arc::new(Lexicon::load(&dir)?)))
}

/// The tokenizer alone: what serving needs.
pub struct LexiconTokenizer {
    tokenizer: Tokenizer,
    rows: usize,
}

impl LexiconTokenizer {
    pub fn open(path: &Path, rows: usize) -> Result<Self> {
        let tokenizer = Tokenizer::from_file(path).map_err(|e| {
            Error::Format(format!(
                "{}: not a readable tokenizer ({e}); retrain the router with `chatforge kb train`",
                path.display()
            ))
        })?;
        Ok(Self { tokenizer, rows })
    }

    /// Distinct token ids of `text` (sorted) with their counts as
    /// weights; ids outside the table are dropped.
    pub fn features(&self, text: &str) -> Features {
        let window: String = text.chars().take(MAX_CHARS).collect();
        let mut ids: Vec<u32> = match self.tokenizer.encode(window.as_str(), false) {
            Ok(enc) => enc.get_ids().to_vec(),
            // The tokenizer has no failing input we know of; a text it
            // cannot read simply brings no lexicon evidence.
            Err(_) => Vec::new(),
        };
        ids.retain(|&i| (i as usize) < self.rows);
        Features::counted(ids, text.chars().nth(MAX_CHARS).is_some())
    }
}

/// Tokenizer and table: what training needs.
pub struct Lexicon {
    pub name: String,
    pub dir: PathBuf,
    pub tokenizer: LexiconTokenizer,
    /// Row-major `[rows, dim]`.
    pub table: Vec<f32>,
    pub rows: usize,
    pub dim: usize,
}

impl Lexicon {
    pub fn load(dir: &Path) -> Result<Self> {
        let table_path = dir.join(TABLE_FILE);
        let bytes = std::fs::read(&table_path).map_err(crate::fsio::io_err(&table_path))?;
        let bad = |why: String| {
            Error::Format(format!(
                "{}: {why}; run `scripts/setup.sh --force` to fetch the lexicon again",
                table_path.display()
            ))
        };
        let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
            .map_err(|e| bad(format!("not a readable safetensors file ({e})")))?;
        if tensors.len() != 1 {
            return Err(bad(format!(
                "{} tensors, expected one table",
                tensors.len()
            )));
        }
        let Some(t) = tensors.into_values().next() else {
            return Err(bad("no table".into()));
        };
        let (rows, dim) = t.dims2().map_err(|_| {
            bad(format!(
                "table of shape {:?}, expected [rows, dim]",
                t.dims()
            ))
        })?;
        let table = t
            .to_dtype(DType::F32)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| bad(e.to_string()))?;
        if table.iter().any(|v| !v.is_finite()) {
            return Err(bad("the table holds a non-finite value".into()));
        }
        let tokenizer = LexiconTokenizer::open(&dir.join(TOKENIZER_FILE), rows)?;
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| DEFAULT_LEXICON.to_string());
        Ok(Self {
            name,
            dir: dir.to_path_buf(),
            tokenizer,
            table,
            rows,
            dim,
        })
    }
}

/// Count-weighted mean of `ids`' rows of `table`, L2-normalised, as the
/// exported graph computes it ([`NORM_FLOOR`] keeps an empty text at
/// zero). `ids` are rows of `table` ([`LexiconTokenizer::features`]).
pub(crate) fn pooled(table: &[f32], dim: usize, ids: &[u32], counts: &[f32]) -> Vec<f32> {
    let mut v = vec![0f32; dim];
    let total: f32 = counts.iter().sum::<f32>().max(1.0);
    for (&id, &c) in ids.iter().zip(counts) {
        let row = &table[id as usize * dim..(id as usize + 1) * dim];
        for (a, b) in v.iter_mut().zip(row) {
            *a += c * b / total;
        }
    }
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(NORM_FLOOR);
    v.iter_mut().for_each(|x| *x /= norm);
    v
}

/// Smallest norm divided by: a text without tokens stays the zero vector.
pub const NORM_FLOOR: f32 = 1e-6;
