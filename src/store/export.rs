//! Curated fine-tuning data from the logs: conversations passing the
//! filters, PII redacted, written as JSONL that `chatforge finetune` reads.
//!
//! * `openai`: `{"messages":[{"role":…,"content":…}],"topic"?,"style"?}`
//! * `sharegpt`: `{"id":…,"conversations":[{"from":"system|human|gpt","value":…}],"topic"?,"style"?}`
//!
//! A turn is one assistant message. A conversation that cannot train
//! anything after clean-up (no assistant reply left) is skipped and counted.
//! A conversation is exported only up to its first blocked message (a
//! refused user message, or a reply moderation replaced): the store keeps
//! the blocked text for review, and it must never become a training target.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

use super::backend::{StoredConversation, require_schema};
use super::{ConversationStore, Error, Result, ReviewDecision, Verdict};
use crate::fsio::{AtomicFile, WriteError};
use crate::text::pii::PiiCounts;
use crate::text::{Dialog, Message, Redactor, Role};

/// Which conversations to export. The default takes everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExportFilter {
    /// Conversations started at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Conversations started before this time.
    pub until: Option<DateTime<Utc>>,
    /// Only these platforms (empty: all).
    pub platforms: Vec<String>,
    /// Mean feedback rating (1–5) at least this; conversations without
    /// feedback are left out when set.
    pub min_rating: Option<f64>,
    /// Leave out conversations with a flagged or blocked message or a
    /// flag/block moderation event.
    pub exclude_flagged: bool,
    /// Leave out conversations a human took over.
    pub exclude_handoff: bool,
    /// At least this many assistant turns.
    pub min_turns: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    Openai,
    Sharegpt,
}

/// What an export wrote.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ExportReport {
    /// Conversations that passed the filters.
    pub matched: u64,
    /// Dialogs written.
    pub written: u64,
    /// Matched conversations left out because no assistant reply remained.
    pub skipped: u64,
    pub messages: u64,
    /// Placeholders written, by label (`EMAIL`, `PHONE`, …).
    pub redactions: PiiCounts,
}

/// Parses `2026-11-29` (midnight UTC) or an RFC 3339 time.
pub fn parse_time(s: &str) -> std::result::Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .ok_or_else(|| {
            format!("{s:?} is not a date (2026-11-29) or an RFC 3339 time (2026-11-29T08:00:00Z)")
        })
}

#[derive(Serialize)]
struct ShareGptTurn<'a> {
    from: &'static str,
    value: &'a str,
}

#[derive(Serialize)]
struct ShareGpt<'a> {
    id: &'a str,
    conversations: Vec<ShareGptTurn<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    topic: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    style: Option<&'a str>,
}

/// The training dialog of a conversation: redacted, empty turns and late
/// system messages dropped, operators' corrections in place of the replies
/// they correct, cut before the user turn that led to its first blocked or
/// rejected (uncorrected) reply; `None` when no assistant reply remains.
pub fn to_dialog(
    c: &StoredConversation,
    redactor: Option<&Redactor>,
    counts: &mut PiiCounts,
) -> Option<Dialog> {
    let mut messages = Vec::with_capacity(c.messages.len());
    // The passages each kept reply was generated with, so the loop
    // fine-tunes on the shape it serves (`finetune --kb` rebuilds them).
    let mut passages: Vec<Vec<String>> = Vec::new();
    for m in &c.messages {
        // An operator's correction is the training target in place of the
        // reply; a blocked or rejected reply is never one.
        let correction = m
            .review
            .as_ref()
            .filter(|r| r.decision == ReviewDecision::Corrected)
            .and_then(|r| r.correction.as_deref());
        let rejected = m
            .review
            .as_ref()
            .is_some_and(|r| r.decision == ReviewDecision::Rejected);
        if correction.is_none() && (m.verdict == Some(Verdict::Block) || rejected) {
            while messages
                .last()
                .is_some_and(|m: &Message| m.role == Role::User)
            {
                messages.pop();
            }
            break;
        }
        // Fine-tuning takes a system prompt only as the first message.
        if m.role == Role::System && !messages.is_empty() {
            continue;
        }
        let text = correction.unwrap_or(&m.content);
        let content = match redactor {
            Some(r) => r.redact_counting(text, counts),
            None => text.to_string(),
        };
        if content.trim().is_empty() {
            continue;
        }
        if m.role == Role::Assistant {
            passages.push(
                m.grounding
                    .as_ref()
                    .map(|g| g.passages.clone())
                    .unwrap_or_default(),
            );
        }
        messages.push(Message {
            role: m.role,
            content,
        });
    }
    // A reply cut off after a blocked message took its passages along.
    passages.truncate(
        messages
            .iter()
            .filter(|m| m.role == Role::Assistant)
            .count(),
    );
    if passages.iter().all(Vec::is_empty) {
        passages.clear();
    }
    let dialog = Dialog {
        messages,
        topic: c.record.topic.clone(),
        style: c.record.style.clone(),
        passages,
        ..Default::default()
    };
    dialog.validate().ok().map(|()| dialog)
}

fn line(format: ExportFormat, id: &str, d: &Dialog) -> serde_json::Result<Vec<u8>> {
    match format {
        ExportFormat::Openai => serde_json::to_vec(d),
        ExportFormat::Sharegpt => serde_json::to_vec(&ShareGpt {
            id,
            conversations: d
                .messages
                .iter()
                .map(|m| ShareGptTurn {
                    from: match m.role {
                        Role::System => "system",
                        Role::User => "human",
                        Role::Assistant => "gpt",
                    },
                    value: &m.content,
                })
                .collect(),
            topic: d.topic.as_deref(),
            style: d.style.as_deref(),
        }),
    }
}

/// Conversations fetched per query.
const PAGE: u32 = 500;

/// Writes the export to `out` (atomically: a failed export leaves no
/// partial file). `redactor: None` exports the text as logged.
pub async fn export_jsonl(
    store: &dyn ConversationStore,
    filter: &ExportFilter,
    format: ExportFormat,
    redactor: Option<&Redactor>,
    out: &Path,
) -> Result<ExportReport> {
    require_schema(store).await?;
    let werr = |e: std::io::Error| Error::Write(WriteError::new(out, e));
    // Message text: only the owner may read it, as the database itself.
    let mut w = AtomicFile::create(out, true)?;
    let mut report = ExportReport::default();
    let mut counts = BTreeMap::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.select(filter, after.as_deref(), PAGE).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.record.id.clone());
        for c in &page {
            report.matched += 1;
            let Some(d) = to_dialog(c, redactor, &mut counts) else {
                report.skipped += 1;
                continue;
            };
            let mut bytes =
                line(format, &c.record.id, &d).map_err(|e| werr(std::io::Error::other(e)))?;
            bytes.push(b'\n');
            w.write_all(&bytes).map_err(werr)?;
            report.written += 1;
            report.messages += d.messages.len() as u64;
        }
        if page.len() < PAGE as usize {
            break;
        }
    }
    w.commit()?;
    report.redactions = counts;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{ConversationRecord, Handoff, MessageRecord, UserKey};

    #[test]
    fn test_export_stops_before_a_blocked_message() {
        let record = ConversationRecord::new("telegram", "1", UserKey::from_stored("k".into()));
        let msg = |role, text: &str, verdict| {
            let mut m = MessageRecord::new(&record.id, role, text);
            m.verdict = verdict;
            m
        };
        let c = StoredConversation {
            record: record.clone(),
            ended_at: None,
            handoff: Handoff::None,
            handoff_at: None,
            claimed_by: None,
            messages: vec![
                msg(Role::User, "hi", Some(Verdict::Allow)),
                msg(Role::Assistant, "hello!", Some(Verdict::Allow)),
                msg(Role::User, "tell me something bad", Some(Verdict::Allow)),
                msg(Role::Assistant, "something unsafe", Some(Verdict::Block)),
                msg(Role::User, "ok", Some(Verdict::Allow)),
                msg(Role::Assistant, "anything else?", Some(Verdict::Allow)),
            ],
        };
        let d = to_dialog(&c, None, &mut PiiCounts::new()).unwrap();
        let texts: Vec<&str> = d.messages.iter().map(|m| m.content.as_str()).collect();
        assert_eq!(texts, ["hi", "hello!"]);
        // Blocked before any reply: nothing to train on.
        let mut first = c.clone();
        first.messages[0].verdict = Some(Verdict::Block);
        assert!(to_dialog(&first, None, &mut PiiCounts::new()).is_none());
    }

    #[test]
    fn test_parse_time() {
        assert_eq!(
            parse_time("2026-11-29").unwrap().to_rfc3339(),
            "2026-11-29T00:00:00+00:00"
        );
        assert_eq!(
            parse_time("2026-11-29T10:00:00+02:00")
                .unwrap()
                .to_rfc3339(),
            "2026-11-29T08:00:00+00:00"
        );
        let err = parse_time("yesterday").unwrap_err();
        assert!(err.contains("\"yesterday\""), "{err}");
    }
}
