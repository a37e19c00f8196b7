//! Labelled data from CSV (plain or `.gz`): the generic
//! `text,label[,label2…]` layout and the two labelled sets recognised by
//! their headers (Davidson et al.'s English tweets, the Chinese COLD set,
//! as upstream or as vendored in `data/moderation/`), plus the split: a
//! file's `split` column where it has one, else the seeded hash.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Error, Result};

/// One text with a value per label of its [`Dataset`]; `None` where its
/// source says nothing about that label (COLD has no `hate` column).
#[derive(Debug, Clone)]
pub struct Example {
    pub text: String,
    pub labels: Vec<Option<bool>>,
    /// The part its file's `split` column puts it in (else the hash does).
    pub split: Option<Split>,
    /// Its file's `lang` column (else [`language_of`] the text).
    pub lang: Option<String>,
    /// From a `--clean` file: ordinary in-domain text, the rows the
    /// thresholds keep false positives low on.
    pub clean: bool,
}

impl Example {
    pub fn split(&self, by_hash: &SplitConfig) -> Split {
        self.split.unwrap_or_else(|| by_hash.of(&self.text))
    }

    pub fn language(&self) -> &str {
        self.lang
            .as_deref()
            .unwrap_or_else(|| language_of(&self.text))
    }
}

/// `zh` when the text has any CJK character, else `en`. Crude, but it is
/// what the two labelled sets need, and it never fails.
pub fn language_of(text: &str) -> &'static str {
    if text.chars().any(super::features::is_cjk) {
        "zh"
    } else {
        "en"
    }
}

/// Where a part of the data came from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SourceInfo {
    pub path: String,
    /// `davidson`, `cold` or `generic`.
    pub format: String,
    pub rows: usize,
    pub sha256: String,
}

#[derive(Debug, Clone, Default)]
pub struct Dataset {
    pub labels: Vec<String>,
    pub examples: Vec<Example>,
    pub sources: Vec<SourceInfo>,
}

/// Which part of the data a text belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Validation,
    Test,
}

/// The split is a function of the text alone (a seeded hash), so the same
/// text lands in the same part whatever the file order, duplicates never
/// straddle parts, and `moderation eval --heldout` can find the test part
/// again from `moderation.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitConfig {
    pub seed: u64,
    /// Used to calibrate scores and choose thresholds.
    pub validation_fraction: f64,
    /// Never seen by training, calibration or threshold choice.
    pub test_fraction: f64,
}

impl Default for SplitConfig {
    fn default() -> Self {
        Self {
            seed: 1337,
            validation_fraction: 0.1,
            test_fraction: 0.1,
        }
    }
}

impl SplitConfig {
    pub fn of(&self, text: &str) -> Split {
        let mut h = Sha256::new();
        h.update(self.seed.to_le_bytes());
        h.update(text.as_bytes());
        let d = h.finalize();
        let x = u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]);
        let u = (x >> 11) as f64 / (1u64 << 53) as f64;
        if u < self.test_fraction {
            Split::Test
        } else if u < self.test_fraction + self.validation_fraction {
            Split::Validation
        } else {
            Split::Train
        }
    }
}

fn data_err(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::Data {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

enum Layout {
    /// `class`: 0 hate, 1 offensive, 2 neither; text in `tweet` (upstream)
    /// or `text` (vendored).
    Davidson { text: usize, class: usize },
    /// `label` 1 = offensive; text in `TEXT`.
    Cold { text: usize, label: usize },
    /// `text` plus one 0/1 column per label (`label` alone means
    /// `offensive`, as in COLD and the insult-in-request set).
    Generic {
        text: usize,
        labels: Vec<(usize, String)>,
    },
}

/// Columns that describe a row rather than label it.
const META_COLUMNS: [&str; 3] = ["split", "lang", "topic"];

fn layout(path: &Path, header: &csv::StringRecord) -> Result<Layout> {
    let find = |name: &str| header.iter().position(|h| h.trim() == name);
    if let (Some(text), Some(class)) = (find("tweet").or(find("text")), find("class")) {
        return Ok(Layout::Davidson { text, class });
    }
    if let (Some(text), Some(label)) = (find("TEXT"), find("label")) {
        return Ok(Layout::Cold { text, label });
    }
    let text = header
        .iter()
        .position(|h| h.trim().eq_ignore_ascii_case("text"))
        .ok_or_else(|| {
            data_err(
                path,
                format!(
                    "no `text` column in the header ({}); expected `text,label[,label2…]`, or the Davidson (`tweet`,`class`) or COLD (`TEXT`,`label`) layout",
                    header.iter().collect::<Vec<_>>().join(",")
                ),
            )
        })?;
    let labels: Vec<(usize, String)> = header
        .iter()
        .enumerate()
        .filter(|(i, h)| *i != text && !h.trim().is_empty() && !META_COLUMNS.contains(&h.trim()))
        .map(|(i, h)| match h.trim() {
            "label" => (i, "offensive".to_string()),
            h => (i, h.to_string()),
        })
        .collect();
    if labels.is_empty() {
        return Err(data_err(
            path,
            "the header names no label columns after `text`",
        ));
    }
    Ok(Layout::Generic { text, labels })
}

/// A file's bytes (decompressed when it ends in `.gz`) and the sha256 of
/// the file as stored.
fn read_file(path: &Path) -> Result<(Vec<u8>, String)> {
    let bytes = std::fs::read(path).map_err(|e| data_err(path, e))?;
    let sha256 = format!("{:x}", Sha256::digest(&bytes));
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gz"))
    {
        let mut out = Vec::new();
        std::io::Read::read_to_end(
            &mut flate2::read::GzDecoder::new(bytes.as_slice()),
            &mut out,
        )
        .map_err(|e| data_err(path, format!("not a readable gzip file: {e}")))?;
        return Ok((out, sha256));
    }
    Ok((bytes, sha256))
}

/// Whether `path` names a CSV file, compressed or not.
fn is_csv(path: &Path) -> bool {
    let name = path.to_string_lossy().to_ascii_lowercase();
    name.ends_with(".csv") || name.ends_with(".csv.gz")
}

fn parse_split(v: &str) -> Option<Split> {
    match v {
        "train" => Some(Split::Train),
        "val" | "validation" | "dev" => Some(Split::Validation),
        "test" => Some(Split::Test),
        _ => None,
    }
}

/// Reads and merges CSV files; the label list is the union in order of
/// first appearance. `max_rows` caps the rows taken from each file.
pub fn read_datasets(paths: &[PathBuf], max_rows: Option<usize>) -> Result<Dataset> {
    let mut ds = Dataset::default();
    for path in paths {
        let (bytes, sha256) = read_file(path)?;
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .from_reader(bytes.as_slice());
        let header = reader.headers().map_err(|e| data_err(path, e))?.clone();
        let layout = layout(path, &header)?;
        // Upstream COLD's own `split` names the upstream file a row came
        // from, not chatforge's split: those rows split by the hash.
        let split_col = match layout {
            Layout::Cold { .. } => None,
            _ => header.iter().position(|h| h.trim() == "split"),
        };
        let lang_col = header.iter().position(|h| h.trim() == "lang");
        let (format, names): (&str, Vec<String>) = match &layout {
            Layout::Davidson { .. } => ("davidson", vec!["offensive".into(), "hate".into()]),
            Layout::Cold { .. } => ("cold", vec!["offensive".into()]),
            Layout::Generic { labels, .. } => {
                ("generic", labels.iter().map(|(_, n)| n.clone()).collect())
            }
        };
        let slots: Vec<usize> = names
            .iter()
            .map(|n| match ds.labels.iter().position(|l| l == n) {
                Some(i) => i,
                None => {
                    ds.labels.push(n.clone());
                    for ex in &mut ds.examples {
                        ex.labels.push(None);
                    }
                    ds.labels.len() - 1
                }
            })
            .collect();
        let mut rows = 0;
        for record in reader.records() {
            if max_rows.is_some_and(|m| rows >= m) {
                break;
            }
            let record = record.map_err(|e| {
                let line = e.position().map(|p| p.line()).unwrap_or(0);
                Error::Row {
                    path: path.display().to_string(),
                    line,
                    reason: match e.kind() {
                        csv::ErrorKind::UnequalLengths {
                            expected_len, len, ..
                        } => format!("{len} fields where the header has {expected_len}"),
                        _ => e.to_string(),
                    },
                }
            })?;
            let line = record.position().map(|p| p.line()).unwrap_or(0);
            let row_err = |reason: String| Error::Row {
                path: path.display().to_string(),
                line,
                reason,
            };
            let field = |i: usize| record.get(i).unwrap_or("").trim();
            let binary = |i: usize, name: &str| -> Result<bool> {
                match field(i) {
                    "0" => Ok(false),
                    "1" => Ok(true),
                    other => Err(row_err(format!(
                        "label `{name}` must be 0 or 1, got {other:?}"
                    ))),
                }
            };
            let (text, values): (&str, Vec<bool>) = match &layout {
                Layout::Davidson { text, class } => {
                    let c = field(*class);
                    let (off, hate) = match c {
                        "0" => (true, true),
                        "1" => (true, false),
                        "2" => (false, false),
                        other => {
                            return Err(row_err(format!(
                                "`class` must be 0 (hate), 1 (offensive) or 2 (neither), got {other:?}"
                            )));
                        }
                    };
                    (record.get(*text).unwrap_or(""), vec![off, hate])
                }
                Layout::Cold { text, label } => (
                    record.get(*text).unwrap_or(""),
                    vec![binary(*label, "label")?],
                ),
                Layout::Generic { text, labels } => (
                    record.get(*text).unwrap_or(""),
                    labels
                        .iter()
                        .map(|(i, n)| binary(*i, n))
                        .collect::<Result<Vec<_>>>()?,
                ),
            };
            let mut labels = vec![None; ds.labels.len()];
            for (slot, v) in slots.iter().zip(values) {
                labels[*slot] = Some(v);
            }
            let split = match split_col.map(field) {
                None => None,
                Some(v) => Some(parse_split(v).ok_or_else(|| {
                    row_err(format!("`split` must be train, val or test, got {v:?}"))
                })?),
            };
            ds.examples.push(Example {
                text: text.to_string(),
                labels,
                split,
                lang: lang_col
                    .map(field)
                    .filter(|l| !l.is_empty())
                    .map(str::to_string),
                clean: false,
            });
            rows += 1;
        }
        if rows == 0 {
            return Err(Error::Empty(format!("{} has no data rows", path.display())));
        }
        ds.sources.push(SourceInfo {
            path: path.display().to_string(),
            format: format.into(),
            rows,
            sha256,
        });
    }
    if ds.examples.is_empty() {
        return Err(Error::Empty("no CSV files given".into()));
    }
    Ok(ds)
}

/// Adds texts known to be clean (every label 0), such as in-domain support
/// questions: the labelled sets are tweets and forum posts, and without
/// such texts ordinary support messages score near the offensive base
/// rate. See [`read_clean_texts`] for the formats.
/// With `train_only`, the texts are never validation rows.
pub fn add_clean(
    ds: &mut Dataset,
    paths: &[PathBuf],
    max_rows: Option<usize>,
    train_only: bool,
) -> Result<()> {
    if paths.is_empty() {
        return Ok(());
    }
    if ds.labels.is_empty() {
        return Err(Error::Empty(
            "clean texts need labelled data beside them (no labels known)".into(),
        ));
    }
    for path in paths {
        let (mut texts, sha256) = read_clean_texts(path)?;
        texts.truncate(max_rows.unwrap_or(usize::MAX));
        if texts.is_empty() {
            return Err(Error::Empty(format!("{} has no texts", path.display())));
        }
        ds.sources.push(SourceInfo {
            path: path.display().to_string(),
            format: "clean".into(),
            rows: texts.len(),
            sha256,
        });
        let n = ds.labels.len();
        ds.examples.extend(texts.into_iter().map(|text| Example {
            text,
            labels: vec![Some(false); n],
            split: train_only.then_some(Split::Train),
            lang: None,
            clean: true,
        }));
    }
    Ok(())
}

/// Texts of a clean file and the file's sha256: a CSV (or `.csv.gz`) with
/// a `text` column (others are ignored), JSONL of dialogs (the customer's
/// turns) or of labelled questions (`question` or `text`), or one text per
/// non-empty line.
pub fn read_clean_texts(path: &Path) -> Result<(Vec<String>, String)> {
    let (bytes, sha256) = read_file(path)?;
    let mut texts = Vec::new();
    if is_csv(path) {
        let mut reader = csv::ReaderBuilder::new().from_reader(bytes.as_slice());
        let header = reader.headers().map_err(|e| data_err(path, e))?.clone();
        let col = header
            .iter()
            .position(|h| h.trim().eq_ignore_ascii_case("text"))
            .ok_or_else(|| data_err(path, "no `text` column in the header"))?;
        for record in reader.records() {
            let record = record.map_err(|e| Error::Row {
                path: path.display().to_string(),
                line: e.position().map(|p| p.line()).unwrap_or(0),
                reason: e.to_string(),
            })?;
            texts.push(record.get(col).unwrap_or("").to_string());
        }
    } else if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("jsonl"))
    {
        let text = String::from_utf8(bytes).map_err(|e| data_err(path, e))?;
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let row = |reason: String| Error::Row {
                path: path.display().to_string(),
                line: i as u64 + 1,
                reason,
            };
            let v: serde_json::Value =
                serde_json::from_str(line).map_err(|e| row(e.to_string()))?;
            if let Some(messages) = v.get("messages").and_then(|m| m.as_array()) {
                texts.extend(
                    messages
                        .iter()
                        .filter(|m| m.get("role").and_then(|r| r.as_str()) == Some("user"))
                        .filter_map(|m| m.get("content").and_then(|c| c.as_str()))
                        .map(str::to_string),
                );
            } else if let Some(t) = ["question", "text"]
                .iter()
                .find_map(|k| v.get(*k).and_then(|t| t.as_str()))
            {
                texts.push(t.to_string());
            } else {
                return Err(row(
                    "expected {\"messages\": [...]}, {\"question\": ...} or {\"text\": ...}".into(),
                ));
            }
        }
    } else {
        let text = String::from_utf8(bytes).map_err(|e| data_err(path, e))?;
        texts.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_string),
        );
    }
    Ok((texts, sha256))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_clean_texts_from_dialogs_questions_and_lines() {
        let dir = tempfile::tempdir().unwrap();
        let jsonl = dir.path().join("clean.jsonl");
        std::fs::write(
            &jsonl,
            concat!(
                r#"{"messages":[{"role":"user","content":"where is my order"},{"role":"assistant","content":"Let me check."}]}"#,
                "\n\n",
                r#"{"id":"q1","question":"can i swap boots","passages":["Returns"]}"#,
                "\n",
                r#"{"text":"tell me a joke"}"#,
                "\n"
            ),
        )
        .unwrap();
        let (texts, _) = read_clean_texts(&jsonl).unwrap();
        assert_eq!(
            texts,
            ["where is my order", "can i swap boots", "tell me a joke"]
        );
        std::fs::write(&jsonl, "{\"answer\":\"no text\"}\n").unwrap();
        let err = read_clean_texts(&jsonl).unwrap_err().to_string();
        assert!(err.contains("clean.jsonl") && err.contains('1'), "{err}");
        let txt = dir.path().join("clean.txt");
        std::fs::write(&txt, "  hello  \n\nthanks\n").unwrap();
        assert_eq!(read_clean_texts(&txt).unwrap().0, ["hello", "thanks"]);
    }
}
