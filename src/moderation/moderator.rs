//! The moderation gate the chat pipeline calls: classifier scores through
//! ONNX Runtime plus rules (blocklist, PII), one [`Verdict`] per text that
//! names what fired and with what score.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, TryLockError};

use ort::session::Session;
use serde::{Deserialize, Serialize};

use super::data::language_of;
use super::features::{Features, FeaturizerConfig, is_cjk};
use super::onnx::{ONNX_FILE, run_scores};
use super::train::{ModelMeta, max_per_text};
use super::{Error, Result};
use crate::runtime::{self, Provider, RuntimeConfig};
use crate::text::pii::{PiiCounts, Redactor};

/// What to do when a text holds personal data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum PiiAction {
    /// Do not look for it.
    Ignore,
    /// Flag the text.
    #[default]
    Flag,
    /// Do not flag; return a redacted copy of the text in the verdict.
    Redact,
}

/// Terms that flag a text on their own. An ASCII term matches whole words
/// (case-insensitive); a term in any other script, or with spaces or
/// punctuation, matches as a substring of the lower-cased text.
#[derive(Debug, Clone, Default)]
pub struct Blocklist {
    words: Vec<String>,
    substrings: Vec<String>,
}

impl Blocklist {
    pub fn new<S: AsRef<str>>(terms: impl IntoIterator<Item = S>) -> Self {
        let mut b = Self::default();
        for t in terms {
            let t = t.as_ref().trim().to_lowercase();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            if t.chars().all(|c| c.is_ascii_alphanumeric() || c == '\'') {
                b.words.push(t);
            } else {
                b.substrings.push(t);
            }
        }
        b
    }

    /// One term per line; empty lines and `#` comments are skipped.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Data {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Ok(Self::new(text.lines()))
    }

    pub fn len(&self) -> usize {
        self.words.len() + self.substrings.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The terms found in `text`, in list order.
    pub fn matches(&self, text: &str) -> Vec<String> {
        if self.is_empty() {
            return Vec::new();
        }
        let lower = text.to_lowercase();
        let words: std::collections::HashSet<&str> = lower
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '\'') || is_cjk(c))
            .filter(|w| !w.is_empty())
            .collect();
        self.words
            .iter()
            .filter(|w| words.contains(w.as_str()))
            .chain(
                self.substrings
                    .iter()
                    .filter(|s| lower.contains(s.as_str())),
            )
            .cloned()
            .collect()
    }
}

/// The rules beside the classifier.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    /// Empty by default: no word list ships with chatforge yet (pass one
    /// with `--blocklist`, e.g. an LDNOOBW list).
    pub blocklist: Blocklist,
    pub pii: PiiAction,
    pub redactor: Redactor,
}

/// A category's score against its threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CategoryVerdict {
    pub category: String,
    pub score: f32,
    pub threshold: f32,
    pub flagged: bool,
}

/// A rule that fired.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "lowercase")]
pub enum RuleHit {
    Blocklist {
        term: String,
    },
    /// `kind` is the placeholder label (`EMAIL`, `PHONE`, `CARD`, …).
    Pii {
        kind: String,
        count: usize,
    },
}

/// The moderation decision on one text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// Any category or flagging rule fired.
    pub flagged: bool,
    /// Every category, flagged or not.
    pub categories: Vec<CategoryVerdict>,
    /// Rules that fired (PII with `redact` is listed but does not flag).
    pub rules: Vec<RuleHit>,
    /// The text was longer than the model's window and only its start was
    /// scored by the classifier (rules saw all of it).
    pub truncated: bool,
    /// The text with PII replaced, when the PII action is `redact` and some was found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redacted: Option<String>,
}

impl Verdict {
    /// Names of what fired: categories, then `blocklist:<term>`, `pii:<KIND>`.
    pub fn reasons(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .categories
            .iter()
            .filter(|c| c.flagged)
            .map(|c| format!("{} {:.3} ≥ {:.3}", c.category, c.score, c.threshold))
            .collect();
        for r in &self.rules {
            out.push(match r {
                RuleHit::Blocklist { term } => format!("blocklist:{term}"),
                RuleHit::Pii { kind, count } => format!("pii:{kind}×{count}"),
            });
        }
        out
    }
}

/// A loaded moderation model with its rules. Safe to share between
/// threads: it holds one ONNX session per thread that may score at once,
/// each behind its own mutex.
pub struct Moderator {
    sessions: Vec<Mutex<Session>>,
    next: AtomicUsize,
    provider: Provider,
    meta: ModelMeta,
    rules: Rules,
}

impl Moderator {
    /// Opens `<dir>/moderation.json` and `<dir>/moderation.onnx`, checking
    /// that the ONNX file has the classifier's inputs and label count.
    pub fn open(dir: &Path, cfg: &RuntimeConfig) -> Result<Self> {
        Self::open_sessions(dir, cfg, 1)
    }

    /// [`Self::open`] with `sessions` ONNX sessions, so that as many
    /// threads can score at once.
    /// Each session runs on the thread that calls it (one intra-op
    /// thread): the classifier is too small to gain from a thread pool,
    /// and idle pools spinning beside the generator's cost the CPU it needs.
    pub fn open_sessions(dir: &Path, cfg: &RuntimeConfig, sessions: usize) -> Result<Self> {
        let cfg = &RuntimeConfig {
            intra_threads: 1,
            ..cfg.clone()
        };
        let meta = ModelMeta::read(dir)?;
        let path = dir.join(ONNX_FILE);
        let model_err = |reason: String| Error::Model {
            path: path.display().to_string(),
            reason,
        };
        if !path.is_file() {
            return Err(model_err(
                "missing (train one with `chatforge moderation train`)".into(),
            ));
        }
        let loaded = runtime::open_file(cfg, &path)?;
        let inputs: Vec<&str> = loaded.session.inputs().iter().map(|o| o.name()).collect();
        let outputs: Vec<&str> = loaded.session.outputs().iter().map(|o| o.name()).collect();
        let mut sorted_inputs = inputs.clone();
        sorted_inputs.sort_unstable();
        if sorted_inputs != ["ids", "weights"] || outputs != ["scores"] {
            return Err(model_err(format!(
                "not a moderation classifier: inputs {inputs:?}, outputs {outputs:?}"
            )));
        }
        let width = loaded
            .session
            .outputs()
            .first()
            .and_then(|o| o.dtype().tensor_shape())
            .and_then(|s| s.last().copied());
        if let Some(w) = width
            && w >= 0
            && w as usize != meta.labels.len()
        {
            return Err(model_err(format!(
                "gives {w} scores per text but moderation.json lists {} labels",
                meta.labels.len()
            )));
        }
        let mut all = vec![Mutex::new(loaded.session)];
        for _ in 1..sessions.max(1) {
            all.push(Mutex::new(runtime::open_file(cfg, &path)?.session));
        }
        Ok(Self {
            sessions: all,
            next: AtomicUsize::new(0),
            provider: loaded.provider,
            meta,
            rules: Rules::default(),
        })
    }

    pub fn with_rules(mut self, rules: Rules) -> Self {
        self.rules = rules;
        self
    }

    pub fn meta(&self) -> &ModelMeta {
        &self.meta
    }

    pub fn provider(&self) -> Provider {
        self.provider
    }

    pub fn labels(&self) -> impl Iterator<Item = &str> {
        self.meta.labels.iter().map(|l| l.name.as_str())
    }

    pub fn featurizer(&self) -> &FeaturizerConfig {
        &self.meta.featurizer
    }

    /// Calibrated classifier scores, `[texts][labels]`.
    pub fn score_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let windows: Vec<Vec<Features>> = texts
            .iter()
            .map(|t| self.meta.featurizer.windows(t))
            .collect();
        self.score_windows(&windows)
    }

    /// Each text's scores: the highest over its windows (the whole text,
    /// and its clauses when the model was trained on them).
    fn score_windows(&self, texts: &[Vec<Features>]) -> Result<Vec<Vec<f32>>> {
        let n = self.meta.labels.len();
        let mut session = self.session();
        let mut out = Vec::with_capacity(texts.len());
        // Bounded batches keep the padded input small whatever the caller passes.
        for chunk in texts.chunks(64) {
            let rows: Vec<&Features> = chunk.iter().flat_map(|w| w.iter()).collect();
            let mut flat = vec![0f32; rows.len() * n];
            for part in length_groups(&rows) {
                let picked: Vec<&Features> = part.iter().map(|&r| rows[r]).collect();
                let scores = run_scores(&mut session, &picked, n)?;
                for (&r, s) in part.iter().zip(scores.chunks(n)) {
                    flat[r * n..(r + 1) * n].copy_from_slice(s);
                }
            }
            let best = max_per_text(&flat, chunk.iter().map(Vec::len), n);
            out.extend(best.chunks(n).map(<[f32]>::to_vec));
        }
        Ok(out)
    }

    /// A free session if there is one, else the next in turn. A session
    /// whose lock was poisoned by a panic is still sound: ONNX Runtime
    /// keeps no state between runs.
    fn session(&self) -> std::sync::MutexGuard<'_, Session> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let k = self.sessions.len();
        for i in 0..k {
            match self.sessions[(start + i) % k].try_lock() {
                Ok(s) => return s,
                Err(TryLockError::Poisoned(p)) => return p.into_inner(),
                Err(TryLockError::WouldBlock) => {}
            }
        }
        self.sessions[start % k]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// A verdict per text, in input order.
    pub fn check_batch(&self, texts: &[&str]) -> Result<Vec<Verdict>> {
        let windows: Vec<Vec<Features>> = texts
            .iter()
            .map(|t| self.meta.featurizer.windows(t))
            .collect();
        let scores = self.score_windows(&windows)?;
        Ok(texts
            .iter()
            .zip(&windows)
            .zip(scores)
            .map(|((text, w), s)| {
                // The first window is the whole text.
                let truncated = w.first().is_some_and(|f| f.truncated);
                self.verdict(text, truncated, &s)
            })
            .collect())
    }

    pub fn check(&self, text: &str) -> Result<Verdict> {
        self.check_batch(&[text])?
            .pop()
            .ok_or_else(|| Error::Run("no verdict returned".into()))
    }

    fn verdict(&self, text: &str, truncated: bool, scores: &[f32]) -> Verdict {
        let categories: Vec<CategoryVerdict> = self
            .meta
            .labels
            .iter()
            .zip(scores)
            .map(|(l, &score)| {
                let threshold = l.threshold_for(language_of(text));
                CategoryVerdict {
                    category: l.name.clone(),
                    score,
                    threshold,
                    flagged: score >= threshold,
                }
            })
            .collect();
        let mut rules: Vec<RuleHit> = self
            .rules
            .blocklist
            .matches(text)
            .into_iter()
            .map(|term| RuleHit::Blocklist { term })
            .collect();
        let blocked = !rules.is_empty();
        let mut redacted = None;
        let mut pii_flag = false;
        if self.rules.pii != PiiAction::Ignore {
            let mut counts = PiiCounts::new();
            let red = self.rules.redactor.redact_counting(text, &mut counts);
            if !counts.is_empty() {
                rules.extend(
                    counts
                        .into_iter()
                        .map(|(kind, count)| RuleHit::Pii { kind, count }),
                );
                match self.rules.pii {
                    PiiAction::Flag => pii_flag = true,
                    PiiAction::Redact => redacted = Some(red),
                    PiiAction::Ignore => {}
                }
            }
        }
        Verdict {
            flagged: blocked || pii_flag || categories.iter().any(|c| c.flagged),
            categories,
            rules,
            truncated,
            redacted,
        }
    }
}

/// Groups of `rows` (indices) run through ONNX Runtime together, each
/// padded to its longest: a row joins the group of the rows just longer
/// than it while it is at least half as long as the group's longest, in
/// at most [`LENGTH_GROUPS`] groups. A text's clauses are a tenth of its
/// length or less; padded with the whole text into one input, a support
/// reply of a dozen clauses cost about ten times its own features, and the
/// HTTP bench's overhead with the knowledge base rose by 1.5 ms at p50.
fn length_groups(rows: &[&Features]) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by_key(|&r| std::cmp::Reverse(rows[r].ids.len()));
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for r in order {
        let len = rows[r].ids.len();
        let joins = groups.last().is_some_and(|g| {
            groups.len() == LENGTH_GROUPS || rows[g[0]].ids.len() <= 2 * len.max(1)
        });
        match groups.last_mut() {
            Some(g) if joins => g.push(r),
            _ => groups.push(vec![r]),
        }
    }
    groups
}

/// At most this many ONNX Runtime runs per batch of texts: each costs a
/// fixed few microseconds beside its rows.
const LENGTH_GROUPS: usize = 4;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_length_groups_keep_a_long_text_apart_from_its_clauses() {
        let f = |n: usize| Features {
            ids: (0..n as u32).collect(),
            weights: vec![1.0; n],
            truncated: false,
        };
        let rows = [f(40), f(1200), f(60), f(0), f(35), f(700), f(55)];
        let refs: Vec<&Features> = rows.iter().collect();
        let groups = length_groups(&refs);
        assert_eq!(groups, vec![vec![1, 5], vec![2, 6, 0, 4], vec![3]]);
        // Every row once, however many lengths there are.
        let many: Vec<Features> = (0..12).map(|i| f(1 << i)).collect();
        let refs: Vec<&Features> = many.iter().collect();
        let groups = length_groups(&refs);
        assert_eq!(groups.len(), LENGTH_GROUPS);
        let mut all: Vec<usize> = groups.concat();
        all.sort_unstable();
        assert_eq!(all, (0..12).collect::<Vec<_>>());
    }

    #[test]
    fn test_blocklist_words_and_substrings() {
        let b = Blocklist::new(["Darn", "# comment", "", "坏蛋", "foo bar"]);
        assert_eq!(b.len(), 3);
        assert_eq!(b.matches("oh DARN it"), vec!["darn"]);
        assert!(
            b.matches("darned").is_empty(),
            "ASCII terms match whole words"
        );
        assert_eq!(b.matches("你这个坏蛋！"), vec!["坏蛋"]);
        assert_eq!(b.matches("a FOO BAR b"), vec!["foo bar"]);
    }
}
