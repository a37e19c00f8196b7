//! `moderation eval`: ROC-AUC, recall at 2% false positives, precision,
//! recall, F1, accuracy and the confusion counts at the model's
//! thresholds, per category and language.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::data::{Split, language_of, read_clean_texts, read_datasets};
use super::metrics::{BinaryMetrics, recall_at_fpr, roc_auc};
use super::moderator::Moderator;
use super::{Error, Result};
use crate::runtime::RuntimeConfig;

/// One category on one language (`all` for every row) of one set.
#[derive(Debug, Clone, Serialize)]
pub struct MetricRow {
    /// The file's name.
    pub set: String,
    pub category: String,
    pub language: String,
    pub rows: usize,
    pub positives: usize,
    pub roc_auc: Option<f64>,
    /// Recall at the strictest cut that flags at most [`REPORTED_FPR`] of
    /// the set's negatives, whatever the model's threshold.
    pub recall_at_2pct_fpr: Option<f64>,
    /// The language's threshold (`all`: the model's default; each row is
    /// judged at its own language's threshold).
    pub threshold: f32,
    #[serde(flatten)]
    pub at_threshold: BinaryMetrics,
}

/// False positives on a set of clean texts.
#[derive(Debug, Clone, Serialize)]
pub struct CleanRow {
    pub set: String,
    pub language: String,
    pub rows: usize,
    /// Texts any category flagged.
    pub flagged: usize,
    pub false_positive_rate: f64,
}

/// What `moderation eval` scores.
#[derive(Debug, Clone, Default)]
pub struct EvalSets {
    /// Labelled files; with `heldout`, only their test rows (the `split`
    /// column, else the model's seeded split).
    pub labelled: Vec<PathBuf>,
    /// Labelled files the model never trained on, scored whole.
    pub unseen: Vec<PathBuf>,
    /// Clean texts (a `text` CSV, JSONL dialogs' customer turns, or lines).
    pub clean: Vec<PathBuf>,
    pub heldout: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub model: String,
    pub data: Vec<String>,
    /// Only rows of the test split of the `labelled` files were scored.
    pub heldout_only: bool,
    pub rows: usize,
    pub metrics: Vec<MetricRow>,
    pub clean: Vec<CleanRow>,
    pub elapsed_s: f64,
}

impl EvalReport {
    /// Fixed-width tables for terminals.
    pub fn table(&self) -> String {
        let mut s = format!(
            "{:<28} {:<10} {:<4} {:>6} {:>6} {:>7} {:>9} {:>6} {:>6} {:>6} {:>6} {:>6}  tp/fp/tn/fn\n",
            "set",
            "category",
            "lang",
            "rows",
            "pos",
            "ROC-AUC",
            "rec@2%FP",
            "thr",
            "prec",
            "recall",
            "F1",
            "acc"
        );
        for m in &self.metrics {
            let b = &m.at_threshold;
            s.push_str(&format!(
                "{:<28} {:<10} {:<4} {:>6} {:>6} {:>7} {:>9} {:>6.3} {:>6.3} {:>6.3} {:>6.3} {:>6.3}  {}/{}/{}/{}\n",
                m.set,
                m.category,
                m.language,
                m.rows,
                m.positives,
                m.roc_auc.map_or("-".to_string(), |a| format!("{a:.4}")),
                m.recall_at_2pct_fpr
                    .map_or("-".to_string(), |r| format!("{r:.3}")),
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
        if !self.clean.is_empty() {
            s.push_str(&format!(
                "\n{:<28} {:<4} {:>6} {:>7} {:>8}\n",
                "clean set", "lang", "rows", "flagged", "FP rate"
            ));
            for c in &self.clean {
                s.push_str(&format!(
                    "{:<28} {:<4} {:>6} {:>7} {:>7.2}%\n",
                    c.set,
                    c.language,
                    c.rows,
                    c.flagged,
                    100.0 * c.false_positive_rate
                ));
            }
        }
        s
    }
}

fn set_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

const LANGUAGES: [&str; 3] = ["all", "en", "zh"];

/// The false-positive budget of the `rec@2%FP` column: the insult-in-request
/// target's (recall 0.9 with at most 2% of its clean half flagged).
pub const REPORTED_FPR: f64 = 0.02;

/// Scores the sets with the model in `dir`.
pub fn evaluate(dir: &Path, sets: &EvalSets, cfg: &RuntimeConfig) -> Result<EvalReport> {
    let start = std::time::Instant::now();
    let moderator = Moderator::open(dir, cfg)?;
    let meta = moderator.meta().clone();
    let mut report = EvalReport {
        model: dir.display().to_string(),
        data: Vec::new(),
        heldout_only: sets.heldout,
        rows: 0,
        metrics: Vec::new(),
        clean: Vec::new(),
        elapsed_s: 0.0,
    };
    let files = sets
        .labelled
        .iter()
        .map(|p| (p, sets.heldout))
        .chain(sets.unseen.iter().map(|p| (p, false)));
    for (path, heldout) in files {
        let ds = read_datasets(std::slice::from_ref(path), None)?;
        let examples: Vec<_> = ds
            .examples
            .iter()
            .filter(|e| !heldout || e.split(&meta.split) == Split::Test)
            .collect();
        if examples.is_empty() {
            return Err(Error::Empty(format!(
                "{}: no rows to evaluate (with --heldout, none is in the test split)",
                path.display()
            )));
        }
        report
            .data
            .extend(ds.sources.iter().map(|s| s.path.clone()));
        report.rows += examples.len();
        let texts: Vec<&str> = examples.iter().map(|e| e.text.as_str()).collect();
        let scores = moderator.score_batch(&texts)?;
        let before = report.metrics.len();
        for (l, label) in meta.labels.iter().enumerate() {
            let Some(col) = ds.labels.iter().position(|n| *n == label.name) else {
                continue;
            };
            for lang in LANGUAGES {
                let (mut s, mut y, mut flags) = (Vec::new(), Vec::new(), Vec::new());
                for (e, sc) in examples.iter().zip(&scores) {
                    if lang != "all" && e.language() != lang {
                        continue;
                    }
                    if let Some(v) = e.labels[col] {
                        s.push(sc[l]);
                        y.push(v);
                        flags.push(sc[l] >= label.threshold_for(e.language()));
                    }
                }
                if s.is_empty() {
                    continue;
                }
                report.metrics.push(MetricRow {
                    set: set_name(path),
                    category: label.name.clone(),
                    language: lang.into(),
                    rows: s.len(),
                    positives: y.iter().filter(|&&v| v).count(),
                    roc_auc: roc_auc(&s, &y),
                    recall_at_2pct_fpr: recall_at_fpr(&s, &y, REPORTED_FPR),
                    threshold: label.threshold_for(lang),
                    at_threshold: BinaryMetrics::of(&flags, &y),
                });
            }
        }
        if report.metrics.len() == before {
            return Err(Error::Data {
                path: path.display().to_string(),
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
    }
    for path in &sets.clean {
        let (texts, _) = read_clean_texts(path)?;
        if texts.is_empty() {
            return Err(Error::Empty(format!("{} has no texts", path.display())));
        }
        report.data.push(path.display().to_string());
        report.rows += texts.len();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let scores = moderator.score_batch(&refs)?;
        for lang in LANGUAGES {
            let (mut rows, mut flagged) = (0, 0);
            for (t, sc) in texts.iter().zip(&scores) {
                let tl = language_of(t);
                if lang != "all" && tl != lang {
                    continue;
                }
                rows += 1;
                let hit = meta
                    .labels
                    .iter()
                    .zip(sc)
                    .any(|(l, &v)| v >= l.threshold_for(tl));
                flagged += usize::from(hit);
            }
            if rows > 0 {
                report.clean.push(CleanRow {
                    set: set_name(path),
                    language: lang.into(),
                    rows,
                    flagged,
                    false_positive_rate: flagged as f64 / rows as f64,
                });
            }
        }
    }
    if report.rows == 0 {
        return Err(Error::Empty("no data given to evaluate".into()));
    }
    report.elapsed_s = start.elapsed().as_secs_f64();
    Ok(report)
}
