//! `moderation eval`: ROC-AUC, precision, recall, F1, accuracy and the
//! confusion counts at the model's thresholds, per category and language.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::data::{Split, read_datasets};
use super::features::is_cjk;
use super::metrics::{BinaryMetrics, roc_auc};
use super::moderator::Moderator;
use super::{Error, Result};
use crate::runtime::RuntimeConfig;

/// `zh` when the text has any CJK character, else `en`. Crude, but it is
/// what the two labelled sets need, and it never fails.
pub fn language_of(text: &str) -> &'static str {
    if text.chars().any(is_cjk) { "zh" } else { "en" }
}

/// One category on one language (`all` for every row).
#[derive(Debug, Clone, Serialize)]
pub struct MetricRow {
    pub category: String,
    pub language: String,
    pub rows: usize,
    pub positives: usize,
    pub roc_auc: Option<f64>,
    pub threshold: f32,
    #[serde(flatten)]
    pub at_threshold: BinaryMetrics,
}

#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub model: String,
    pub data: Vec<String>,
    /// Only rows of the model's test split were scored.
    pub heldout_only: bool,
    pub rows: usize,
    pub metrics: Vec<MetricRow>,
    pub elapsed_s: f64,
}

impl EvalReport {
    /// A fixed-width table for terminals.
    pub fn table(&self) -> String {
        let mut s = format!(
            "{:<12} {:<4} {:>6} {:>6} {:>7} {:>6} {:>6} {:>6} {:>6} {:>6}  confusion tp/fp/tn/fn\n",
            "category", "lang", "rows", "pos", "ROC-AUC", "thr", "prec", "recall", "F1", "acc"
        );
        for m in &self.metrics {
            let b = &m.at_threshold;
            s.push_str(&format!(
                "{:<12} {:<4} {:>6} {:>6} {:>7} {:>6.3} {:>6.3} {:>6.3} {:>6.3} {:>6.3}  {}/{}/{}/{}\n",
                m.category,
                m.language,
                m.rows,
                m.positives,
                m.roc_auc.map_or("-".to_string(), |a| format!("{a:.4}")),
                m.threshold,
                b.precision,
                b.recall,
                b.f1,
                b.accuracy,
                b.tp,
                b.fp,
                b.tn,
                b.fn_
            ));
        }
        s
    }
}

/// Scores `data` with the model in `dir`; with `heldout_only`, only the
/// rows that the model's seeded split put in its test part.
pub fn evaluate(
    dir: &Path,
    data: &[PathBuf],
    heldout_only: bool,
    cfg: &RuntimeConfig,
) -> Result<EvalReport> {
    let start = std::time::Instant::now();
    let moderator = Moderator::open(dir, cfg)?;
    let meta = moderator.meta().clone();
    let ds = read_datasets(data, None)?;
    let examples: Vec<_> = ds
        .examples
        .iter()
        .filter(|e| !heldout_only || meta.split.of(&e.text) == Split::Test)
        .collect();
    if examples.is_empty() {
        return Err(Error::Empty(
            "no rows to evaluate (with --heldout, none fell in the model's test split)".into(),
        ));
    }
    let texts: Vec<&str> = examples.iter().map(|e| e.text.as_str()).collect();
    let scores = moderator.score_batch(&texts)?;
    let mut metrics = Vec::new();
    for (l, label) in meta.labels.iter().enumerate() {
        let Some(col) = ds.labels.iter().position(|n| *n == label.name) else {
            continue;
        };
        for lang in ["all", "en", "zh"] {
            let (mut s, mut y) = (Vec::new(), Vec::new());
            for (e, sc) in examples.iter().zip(&scores) {
                if lang != "all" && language_of(&e.text) != lang {
                    continue;
                }
                if let Some(v) = e.labels[col] {
                    s.push(sc[l]);
                    y.push(v);
                }
            }
            if s.is_empty() {
                continue;
            }
            metrics.push(MetricRow {
                category: label.name.clone(),
                language: lang.into(),
                rows: s.len(),
                positives: y.iter().filter(|&&v| v).count(),
                roc_auc: roc_auc(&s, &y),
                threshold: label.threshold,
                at_threshold: BinaryMetrics::at(&s, &y, label.threshold),
            });
        }
    }
    if metrics.is_empty() {
        return Err(Error::Data {
            path: data
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            reason: format!(
                "none of the data's labels ({}) is a category of the model ({})",
                ds.labels.join(", "),
                meta.labels
                    .iter()
                    .map(|l| l.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    }
    Ok(EvalReport {
        model: dir.display().to_string(),
        data: ds.sources.iter().map(|s| s.path.clone()).collect(),
        heldout_only,
        rows: examples.len(),
        metrics,
        elapsed_s: start.elapsed().as_secs_f64(),
    })
}
