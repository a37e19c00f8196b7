//! Labelled questions: what the router trains on and `kb eval` measures
//! with. Three formats, by what a team is likely to have:
//!
//! - CSV `text,label` (banking77's `text,category` too): the label names a
//!   passage id, a title path (its last components are enough), or an
//!   intent entry;
//! - JSONL `{"question": …, "passages": [titles or ids], "history"?: […],
//!   "facts"?: […]}` (the held-out sets' format); `"passages": []` marks a
//!   question the knowledge base cannot answer;
//! - chat dialogs (`{"messages": […], "passages": [[…], …]}`, one list per
//!   assistant turn, as `data/support/generate.py` writes): each user turn
//!   before a reply that rests on passages asks for them.

use std::path::Path;

use serde::Deserialize;

use super::ingest::Passage;
use super::{Error, Result};
use crate::text::{Message, Role};

/// A question with the passages that answer it (empty: out of scope).
#[derive(Debug, Clone, PartialEq)]
pub struct Labelled {
    pub id: String,
    pub text: String,
    /// The user's turn before it, for follow-ups.
    pub previous: Option<String>,
    /// Positions of the passages that answer it.
    pub passages: Vec<usize>,
    /// Strings a correct answer states (held-out sets only).
    pub facts: Vec<String>,
    pub kind: String,
}

#[derive(Deserialize)]
struct QuestionLine {
    #[serde(default)]
    id: Option<String>,
    #[serde(alias = "text")]
    question: String,
    #[serde(default)]
    passages: Vec<String>,
    #[serde(default)]
    history: Vec<Message>,
    #[serde(default)]
    facts: Vec<String>,
    #[serde(default)]
    kind: Option<String>,
}

#[derive(Deserialize)]
struct DialogLine {
    messages: Vec<Message>,
    passages: Vec<Vec<String>>,
}

/// Resolves a label to passage positions: an id, or the passages whose
/// title path ends with the label's components (a split passage has
/// several parts under one title).
pub fn resolve(passages: &[Passage], label: &str) -> Vec<usize> {
    let by_id: Vec<usize> = passages
        .iter()
        .enumerate()
        .filter(|(_, p)| p.id == label)
        .map(|(i, _)| i)
        .collect();
    if !by_id.is_empty() {
        return by_id;
    }
    passages
        .iter()
        .enumerate()
        .filter(|(_, p)| p.answers_to(label))
        .map(|(i, _)| i)
        .collect()
}

fn resolve_all(
    passages: &[Passage],
    labels: &[String],
    file: &Path,
    line: usize,
) -> Result<Vec<usize>> {
    let mut out = Vec::new();
    for label in labels {
        let found = resolve(passages, label);
        if found.is_empty() {
            return Err(Error::UnknownLabel {
                file: file.display().to_string(),
                line,
                label: label.clone(),
            });
        }
        for i in found {
            if !out.contains(&i) {
                out.push(i);
            }
        }
    }
    Ok(out)
}

/// Reads labelled questions from `file` (by extension and content).
pub fn read(file: &Path, passages: &[Passage]) -> Result<Vec<Labelled>> {
    let text = std::fs::read_to_string(file).map_err(crate::fsio::io_err(file))?;
    let ext = file
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    let source_err = |line: usize, reason: String| Error::Source {
        source_file: file.display().to_string(),
        line,
        reason,
    };
    let mut out = Vec::new();
    match ext.as_str() {
        "csv" => {
            let mut rdr = csv::Reader::from_reader(text.as_bytes());
            let headers: Vec<String> = rdr
                .headers()
                .map_err(|e| source_err(1, e.to_string()))?
                .iter()
                .map(|h| h.trim().to_ascii_lowercase())
                .collect();
            let col = |n: &str| headers.iter().position(|h| h == n);
            let (Some(t), Some(l)) = (
                col("text").or_else(|| col("question")),
                col("label")
                    .or_else(|| col("category"))
                    .or_else(|| col("intent")),
            ) else {
                return Err(source_err(
                    1,
                    format!("columns {headers:?}: expected text,label"),
                ));
            };
            for (i, rec) in rdr.records().enumerate() {
                let line = i + 2;
                let rec = rec.map_err(|e| source_err(line, e.to_string()))?;
                let (q, label) = (
                    rec.get(t).unwrap_or("").trim(),
                    rec.get(l).unwrap_or("").trim(),
                );
                if q.is_empty() {
                    continue;
                }
                out.push(Labelled {
                    id: format!("{}:{line}", file.display()),
                    text: q.to_string(),
                    previous: None,
                    passages: resolve_all(passages, &[label.to_string()], file, line)?,
                    facts: Vec::new(),
                    kind: String::new(),
                });
            }
        }
        "jsonl" | "json" => {
            let mut unlabelled = 0usize;
            for (i, l) in text.lines().enumerate() {
                let line = i + 1;
                if l.trim().is_empty() {
                    continue;
                }
                let v: serde_json::Value =
                    serde_json::from_str(l).map_err(|e| source_err(line, e.to_string()))?;
                if v.get("messages").is_some() {
                    // A dialog that records no passages (a logged
                    // conversation, a hand-written one) labels nothing.
                    if v.get("passages").is_none() {
                        unlabelled += 1;
                        continue;
                    }
                    let d: DialogLine = serde_json::from_value(v).map_err(|e| {
                        source_err(
                            line,
                            format!(
                                "{e} (a dialog needs \"passages\": one list per assistant turn)"
                            ),
                        )
                    })?;
                    out.extend(from_dialog(&d, passages, file, line)?);
                    continue;
                }
                let q: QuestionLine = serde_json::from_value(v).map_err(|e| {
                    source_err(
                        line,
                        format!("{e} (expected {{\"question\": …, \"passages\": […]}})"),
                    )
                })?;
                let previous = q
                    .history
                    .iter()
                    .rev()
                    .find(|m| m.role == Role::User)
                    .map(|m| m.content.clone());
                out.push(Labelled {
                    id: q.id.unwrap_or_else(|| format!("{}:{line}", file.display())),
                    text: q.question,
                    previous,
                    passages: resolve_all(passages, &q.passages, file, line)?,
                    facts: q.facts,
                    kind: q.kind.unwrap_or_default(),
                });
            }
            if unlabelled > 0 {
                tracing::warn!(
                    file = %file.display(),
                    "{unlabelled} dialogs record no \"passages\" and label no questions"
                );
            }
        }
        other => {
            return Err(source_err(
                0,
                format!("unsupported question file type {other:?}: use CSV (text,label) or JSONL"),
            ));
        }
    }
    if out.is_empty() {
        return Err(source_err(0, "no labelled questions in the file".into()));
    }
    Ok(out)
}

fn from_dialog(
    d: &DialogLine,
    passages: &[Passage],
    file: &Path,
    line: usize,
) -> Result<Vec<Labelled>> {
    let mut out = Vec::new();
    let mut turn = 0;
    let mut last_user: Option<&str> = None;
    let mut before: Option<&str> = None;
    for m in &d.messages {
        match m.role {
            Role::User => {
                before = last_user;
                last_user = Some(&m.content);
            }
            Role::Assistant => {
                let labels = d.passages.get(turn).cloned().unwrap_or_default();
                turn += 1;
                if let (Some(q), false) = (last_user, labels.is_empty()) {
                    out.push(Labelled {
                        id: format!("{}:{line}:{turn}", file.display()),
                        text: q.to_string(),
                        previous: before.map(str::to_string),
                        passages: resolve_all(passages, &labels, file, line)?,
                        facts: Vec::new(),
                        kind: "dialog".into(),
                    });
                }
            }
            Role::System => {}
        }
    }
    Ok(out)
}
