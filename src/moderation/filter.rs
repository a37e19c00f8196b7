//! `data filter`: drops documents and dialog turns the moderation model
//! flags before they reach pretraining or fine-tuning.
//!
//! - Plain text (`.txt`, `.md`, …): a document is a paragraph (blank-line
//!   separated); flagged paragraphs are dropped.
//! - JSONL with `text`: flagged lines are dropped.
//! - JSONL with `messages` (or ShareGPT `conversations`): the dialog is cut
//!   before its first flagged turn, since later turns answer it; a dialog
//!   left without an assistant turn is dropped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::moderator::{Moderator, RuleHit, Verdict};
use super::{Error, Result};

/// What was flagged, for `--list`.
#[derive(Debug, Clone, Serialize)]
pub struct Flagged {
    pub path: String,
    /// 1-based line (JSONL) or paragraph (plain text).
    pub item: usize,
    /// Turn index inside a dialog.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub turn: Option<usize>,
    pub reasons: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct FileReport {
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub written: Option<String>,
    pub items: usize,
    pub items_removed: usize,
    /// Dialog turns cut (dialogs only).
    pub turns_removed: usize,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct FilterReport {
    pub files: Vec<FileReport>,
    /// Removed items by what fired (a category, `blocklist`, `pii:<KIND>`);
    /// an item where two fired counts under both.
    pub removed_by_reason: BTreeMap<String, usize>,
    pub flagged: Vec<Flagged>,
}

fn count_reasons(v: &Verdict, into: &mut BTreeMap<String, usize>) {
    for c in v.categories.iter().filter(|c| c.flagged) {
        *into.entry(c.category.clone()).or_default() += 1;
    }
    for r in &v.rules {
        let key = match r {
            RuleHit::Blocklist { .. } => "blocklist".to_string(),
            RuleHit::Pii { kind, .. } => format!("pii:{kind}"),
        };
        *into.entry(key).or_default() += 1;
    }
}

fn data_err(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::Data {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// Filters `inputs` (files) into `out` (a folder, same file names), or only
/// lists what would go when `out` is `None`.
pub fn filter_files(m: &Moderator, inputs: &[PathBuf], out: Option<&Path>) -> Result<FilterReport> {
    let mut report = FilterReport::default();
    let mut names = std::collections::HashSet::new();
    for path in inputs {
        let name = path
            .file_name()
            .ok_or_else(|| data_err(path, "not a file"))?
            .to_os_string();
        if out.is_some() && !names.insert(name.clone()) {
            return Err(data_err(
                path,
                "two inputs share this file name; the output folder would hold one",
            ));
        }
        let text = std::fs::read_to_string(path).map_err(|e| data_err(path, e))?;
        let jsonl = path.extension().is_some_and(|e| e == "jsonl");
        let (kept, file) = if jsonl {
            filter_jsonl(m, path, &text, &mut report)?
        } else {
            filter_text(m, path, &text, &mut report)?
        };
        let mut file = file;
        if let Some(dir) = out {
            std::fs::create_dir_all(dir).map_err(|e| data_err(dir, e))?;
            let dest = dir.join(&name);
            crate::fsio::write_atomic(&dest, kept.as_bytes())?;
            file.written = Some(dest.display().to_string());
        }
        report.files.push(file);
    }
    Ok(report)
}

fn filter_text(
    m: &Moderator,
    path: &Path,
    text: &str,
    report: &mut FilterReport,
) -> Result<(String, FileReport)> {
    let paragraphs: Vec<&str> = text
        .split("\n\n")
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    let verdicts = m.check_batch(&paragraphs)?;
    let mut kept = Vec::new();
    let mut file = FileReport {
        path: path.display().to_string(),
        items: paragraphs.len(),
        ..Default::default()
    };
    for (i, (p, v)) in paragraphs.iter().zip(&verdicts).enumerate() {
        if v.flagged {
            file.items_removed += 1;
            count_reasons(v, &mut report.removed_by_reason);
            report.flagged.push(Flagged {
                path: file.path.clone(),
                item: i + 1,
                turn: None,
                reasons: v.reasons(),
            });
        } else {
            kept.push(*p);
        }
    }
    let mut out = kept.join("\n\n");
    if !out.is_empty() {
        out.push('\n');
    }
    Ok((out, file))
}

fn filter_jsonl(
    m: &Moderator,
    path: &Path,
    text: &str,
    report: &mut FilterReport,
) -> Result<(String, FileReport)> {
    let mut file = FileReport {
        path: path.display().to_string(),
        ..Default::default()
    };
    let mut out = String::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let row_err = |reason: String| Error::Row {
            path: path.display().to_string(),
            line: i as u64 + 1,
            reason,
        };
        let mut value: serde_json::Value =
            serde_json::from_str(line).map_err(|e| row_err(e.to_string()))?;
        file.items += 1;
        if let Some(t) = value.get("text").and_then(|t| t.as_str()) {
            let v = m.check(t)?;
            if v.flagged {
                file.items_removed += 1;
                count_reasons(&v, &mut report.removed_by_reason);
                report.flagged.push(Flagged {
                    path: file.path.clone(),
                    item: i + 1,
                    turn: None,
                    reasons: v.reasons(),
                });
                continue;
            }
        } else {
            let key = if value.get("messages").is_some() {
                "messages"
            } else {
                "conversations"
            };
            let turns = value
                .get(key)
                .and_then(|t| t.as_array())
                .ok_or_else(|| row_err("expected a `text` string or a `messages` array".into()))?;
            let contents: Vec<&str> = turns
                .iter()
                .map(|t| {
                    t.get("content")
                        .or_else(|| t.get("value"))
                        .and_then(|c| c.as_str())
                        .ok_or_else(|| row_err("a turn has no `content` string".into()))
                })
                .collect::<Result<_>>()?;
            let verdicts = m.check_batch(&contents)?;
            if let Some(cut) = verdicts.iter().position(|v| v.flagged) {
                let v = &verdicts[cut];
                count_reasons(v, &mut report.removed_by_reason);
                report.flagged.push(Flagged {
                    path: file.path.clone(),
                    item: i + 1,
                    turn: Some(cut),
                    reasons: v.reasons(),
                });
                file.turns_removed += turns.len() - cut;
                let role = |t: &serde_json::Value| {
                    t.get("role")
                        .or_else(|| t.get("from"))
                        .and_then(|r| r.as_str())
                        .map(str::to_string)
                };
                let has_reply = turns[..cut]
                    .iter()
                    .any(|t| matches!(role(t).as_deref(), Some("assistant" | "gpt")));
                if !has_reply {
                    file.items_removed += 1;
                    continue;
                }
                if let Some(arr) = value.get_mut(key).and_then(|t| t.as_array_mut()) {
                    arr.truncate(cut);
                    // A dialog ends on the assistant's turn.
                    while arr
                        .last()
                        .is_some_and(|t| !matches!(role(t).as_deref(), Some("assistant" | "gpt")))
                    {
                        arr.pop();
                        file.turns_removed += 1;
                    }
                }
            }
        }
        out.push_str(&value.to_string());
        out.push('\n');
    }
    Ok((out, file))
}
