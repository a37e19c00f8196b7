//! The records the pipeline logs. They travel through the writer's queue and
//! the spill file as they are (JSON), so they hold only pseudonymous user
//! keys, never a platform user id.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Error, Result, UserKey, new_id, now_ms};
use crate::text::{Redactor, Role};

/// The moderation outcome for a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Allow,
    Flag,
    Block,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Flag => "flag",
            Verdict::Block => "block",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "allow" => Some(Verdict::Allow),
            "flag" => Some(Verdict::Flag),
            "block" => Some(Verdict::Block),
            _ => None,
        }
    }
}

/// Whether a human took over the conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Handoff {
    #[default]
    None,
    Requested,
    Active,
    Resolved,
}

impl Handoff {
    pub fn as_str(self) -> &'static str {
        match self {
            Handoff::None => "none",
            Handoff::Requested => "requested",
            Handoff::Active => "active",
            Handoff::Resolved => "resolved",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "none" => Some(Handoff::None),
            "requested" => Some(Handoff::Requested),
            "active" => Some(Handoff::Active),
            "resolved" => Some(Handoff::Resolved),
            _ => None,
        }
    }
}

/// The store's role of a message: an operator's reply is `operator`.
pub(crate) fn role_str(m: &MessageRecord) -> &'static str {
    match m.role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant if m.operator_id.is_some() => "operator",
        Role::Assistant => "assistant",
    }
}

/// The turn's role (an operator's reply is an assistant turn written by a
/// person) and whether the store said `operator`.
pub(crate) fn parse_role(s: &str) -> Option<(Role, bool)> {
    match s {
        "system" => Some((Role::System, false)),
        "user" => Some((Role::User, false)),
        "assistant" => Some((Role::Assistant, false)),
        "operator" => Some((Role::Assistant, true)),
        _ => None,
    }
}

/// A conversation's opening: who, where, when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversationRecord {
    pub id: String,
    pub platform: String,
    pub channel: String,
    pub user_key: UserKey,
    pub started_at: DateTime<Utc>,
    pub topic: Option<String>,
    pub style: Option<String>,
}

/// A change to a conversation; `None` fields stay as they are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversationUpdate {
    /// Identifies the record in the queue and spill file.
    pub id: String,
    pub conversation_id: String,
    pub at: DateTime<Utc>,
    pub ended: bool,
    pub handoff: Option<Handoff>,
    pub topic: Option<String>,
    pub style: Option<String>,
}

/// One turn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageRecord {
    pub id: String,
    pub conversation_id: String,
    pub role: Role,
    pub content: String,
    pub created_at: DateTime<Utc>,
    /// The bundle's model version that wrote an assistant turn.
    pub model_version: Option<String>,
    pub latency_ms: Option<u32>,
    pub prompt_tokens: Option<u32>,
    pub completion_tokens: Option<u32>,
    pub verdict: Option<Verdict>,
    /// Classifier score per category.
    pub scores: BTreeMap<String, f64>,
    /// How a reply rested on the knowledge base (`None`: no knowledge base).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grounding: Option<Grounding>,
    /// Set on an operator's reply (stored with role `operator`): who wrote it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator_id: Option<String>,
    /// An operator's review of this reply, as read from the store (it is
    /// written on its own, never with the message).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review: Option<Review>,
}

/// What an operator decided about a bot reply in the review queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReviewDecision {
    /// Right as it is.
    Approved,
    /// Wrong, with no better reply given: never a training target.
    Rejected,
    /// Wrong: the correction is the training target instead.
    Corrected,
}

impl ReviewDecision {
    pub fn as_str(self) -> &'static str {
        match self {
            ReviewDecision::Approved => "approved",
            ReviewDecision::Rejected => "rejected",
            ReviewDecision::Corrected => "corrected",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "approved" => Some(ReviewDecision::Approved),
            "rejected" => Some(ReviewDecision::Rejected),
            "corrected" => Some(ReviewDecision::Corrected),
            _ => None,
        }
    }
}

/// An operator's review of one reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Review {
    pub message_id: String,
    pub conversation_id: String,
    pub operator_id: String,
    pub decision: ReviewDecision,
    /// The reply the bot should have given (`Corrected` only).
    pub correction: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// What the fact guard decided about a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplyKind {
    /// The model's words; every fact is in the passages or the conversation.
    Generated,
    /// The model claimed what the passages do not say: replaced by the
    /// passages' best sentences.
    Extracted,
    /// Retrieval was not confident: the handoff offer instead.
    Abstained,
}

impl ReplyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ReplyKind::Generated => "generated",
            ReplyKind::Extracted => "extracted",
            ReplyKind::Abstained => "abstained",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "generated" => Some(ReplyKind::Generated),
            "extracted" => Some(ReplyKind::Extracted),
            "abstained" => Some(ReplyKind::Abstained),
            _ => None,
        }
    }
}

/// The knowledge-base side of a reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Grounding {
    pub kind: ReplyKind,
    /// Ids of the passages it was given (the first is the best).
    pub passages: Vec<String>,
    /// Calibrated retrieval confidence.
    pub confidence: f32,
}

/// A moderation decision (classifier, rule or user report).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModerationRecord {
    pub id: String,
    pub conversation_id: String,
    pub message_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub category: String,
    pub score: f64,
    pub verdict: Verdict,
    pub detail: Option<String>,
}

/// A user's rating, 1 (bad) to 5 (good).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeedbackRecord {
    pub id: String,
    pub conversation_id: String,
    pub message_id: Option<String>,
    pub rating: u8,
    pub comment: Option<String>,
    pub user_key: UserKey,
    pub created_at: DateTime<Utc>,
}

/// Anything the writer stores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    Conversation(ConversationRecord),
    Update(ConversationUpdate),
    Message(MessageRecord),
    Moderation(ModerationRecord),
    Feedback(FeedbackRecord),
}

impl Record {
    pub fn id(&self) -> &str {
        match self {
            Record::Conversation(r) => &r.id,
            Record::Update(r) => &r.id,
            Record::Message(r) => &r.id,
            Record::Moderation(r) => &r.id,
            Record::Feedback(r) => &r.id,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Record::Conversation(_) => "conversation",
            Record::Update(_) => "update",
            Record::Message(_) => "message",
            Record::Moderation(_) => "moderation",
            Record::Feedback(_) => "feedback",
        }
    }
}

impl ConversationRecord {
    /// A conversation starting now; `user_key` comes from a
    /// [`UserKeyHasher`](super::UserKeyHasher).
    pub fn new(platform: &str, channel: &str, user_key: UserKey) -> Self {
        Self {
            id: new_id(),
            platform: platform.to_string(),
            channel: channel.to_string(),
            user_key,
            started_at: now_ms(),
            topic: None,
            style: None,
        }
    }
}

impl ConversationUpdate {
    /// A change made now that changes nothing yet; set the fields to change.
    pub fn new(conversation_id: &str) -> Self {
        Self {
            id: new_id(),
            conversation_id: conversation_id.to_string(),
            at: now_ms(),
            ended: false,
            handoff: None,
            topic: None,
            style: None,
        }
    }
}

impl MessageRecord {
    /// A turn logged now, without metrics or moderation yet.
    pub fn new(conversation_id: &str, role: Role, content: impl Into<String>) -> Self {
        Self {
            id: new_id(),
            conversation_id: conversation_id.to_string(),
            role,
            content: content.into(),
            created_at: now_ms(),
            model_version: None,
            latency_ms: None,
            prompt_tokens: None,
            completion_tokens: None,
            verdict: None,
            scores: BTreeMap::new(),
            grounding: None,
            operator_id: None,
            review: None,
        }
    }
}

impl ModerationRecord {
    pub fn new(conversation_id: &str, category: &str, score: f64, verdict: Verdict) -> Self {
        Self {
            id: new_id(),
            conversation_id: conversation_id.to_string(),
            message_id: None,
            created_at: now_ms(),
            category: category.to_string(),
            score,
            verdict,
            detail: None,
        }
    }
}

impl FeedbackRecord {
    pub fn new(conversation_id: &str, rating: u8, user_key: UserKey) -> Self {
        Self {
            id: new_id(),
            conversation_id: conversation_id.to_string(),
            message_id: None,
            rating,
            comment: None,
            user_key,
            created_at: now_ms(),
        }
    }
}

/// Size limits checked before a record is queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Message content, in UTF-8 bytes.
    pub max_content_bytes: usize,
    /// Feedback comments and moderation details.
    pub max_comment_bytes: usize,
    /// Platform, channel, topic, style, model version, category.
    pub max_label_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_content_bytes: 1 << 20,
            max_comment_bytes: 64 << 10,
            max_label_bytes: 256,
        }
    }
}

/// Postgres `text` cannot hold NUL, so both backends store U+FFFD instead:
/// the rest of the text survives and the two backends agree.
fn clean(s: &mut String) {
    if s.contains('\0') {
        *s = s.replace('\0', "\u{FFFD}");
    }
}

fn check_len(field: &'static str, s: &str, max: usize) -> Result<()> {
    if s.len() > max {
        return Err(Error::Invalid {
            field,
            reason: format!("{} bytes; the limit is {max}", s.len()),
        });
    }
    Ok(())
}

fn label(field: &'static str, s: &mut String, limits: &Limits) -> Result<()> {
    clean(s);
    check_len(field, s, limits.max_label_bytes)
}

fn opt_label(field: &'static str, s: &mut Option<String>, limits: &Limits) -> Result<()> {
    match s {
        Some(v) => label(field, v, limits),
        None => Ok(()),
    }
}

fn non_empty(field: &'static str, s: &str) -> Result<()> {
    if s.trim().is_empty() {
        return Err(Error::Invalid {
            field,
            reason: "empty".into(),
        });
    }
    Ok(())
}

impl Record {
    /// Replaces NUL characters and checks limits and ranges, so that what
    /// reaches the queue can be stored by both backends.
    /// Replaces what `redactor` finds in the free text a record carries
    /// (message content, feedback comment, moderation detail).
    pub fn redact(&mut self, redactor: &Redactor) {
        if redactor.is_empty() {
            return;
        }
        let text = match self {
            Record::Message(m) => Some(&mut m.content),
            Record::Feedback(f) => f.comment.as_mut(),
            Record::Moderation(e) => e.detail.as_mut(),
            Record::Conversation(_) | Record::Update(_) => None,
        };
        if let Some(t) = text {
            *t = redactor.redact(t);
        }
    }

    pub fn sanitize(&mut self, limits: &Limits) -> Result<()> {
        match self {
            Record::Conversation(c) => {
                label("platform", &mut c.platform, limits)?;
                non_empty("platform", &c.platform)?;
                label("channel", &mut c.channel, limits)?;
                opt_label("topic", &mut c.topic, limits)?;
                opt_label("style", &mut c.style, limits)?;
            }
            Record::Update(u) => {
                opt_label("topic", &mut u.topic, limits)?;
                opt_label("style", &mut u.style, limits)?;
            }
            Record::Message(m) => {
                clean(&mut m.content);
                check_len("message content", &m.content, limits.max_content_bytes)?;
                opt_label("model version", &mut m.model_version, limits)?;
                let mut scores = BTreeMap::new();
                for (mut k, v) in std::mem::take(&mut m.scores) {
                    label("moderation category", &mut k, limits)?;
                    if !v.is_finite() {
                        return Err(Error::Invalid {
                            field: "moderation score",
                            reason: format!("{k}: {v} is not a finite number"),
                        });
                    }
                    scores.insert(k, v);
                }
                m.scores = scores;
            }
            Record::Moderation(e) => {
                label("moderation category", &mut e.category, limits)?;
                non_empty("moderation category", &e.category)?;
                if !e.score.is_finite() {
                    return Err(Error::Invalid {
                        field: "moderation score",
                        reason: format!("{} is not a finite number", e.score),
                    });
                }
                if let Some(d) = &mut e.detail {
                    clean(d);
                    check_len("moderation detail", d, limits.max_comment_bytes)?;
                }
            }
            Record::Feedback(f) => {
                if !(1..=5).contains(&f.rating) {
                    return Err(Error::Invalid {
                        field: "feedback rating",
                        reason: format!("{} is outside 1..=5", f.rating),
                    });
                }
                if let Some(c) = &mut f.comment {
                    clean(c);
                    check_len("feedback comment", c, limits.max_comment_bytes)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::UserKeyHasher;

    fn message(content: &str) -> Record {
        Record::Message(MessageRecord::new(&new_id(), Role::User, content))
    }

    #[test]
    fn test_sanitize_nul_and_limits() {
        let mut r = message("a\0b");
        r.sanitize(&Limits::default()).unwrap();
        let Record::Message(m) = &r else { panic!() };
        assert_eq!(m.content, "a\u{FFFD}b");

        let mut big = message(&"x".repeat(100_000));
        big.sanitize(&Limits::default()).unwrap();
        let mut huge = message(&"x".repeat(2 << 20));
        let err = huge.sanitize(&Limits::default()).unwrap_err().to_string();
        assert!(
            err.contains("message content")
                && err.contains("2097152 bytes")
                && err.contains("1048576"),
            "{err}"
        );
    }

    #[test]
    fn test_sanitize_rejects_bad_numbers() {
        let mut r = message("x");
        if let Record::Message(m) = &mut r {
            m.scores.insert("toxic".into(), f64::NAN);
        }
        let err = r.sanitize(&Limits::default()).unwrap_err().to_string();
        assert!(err.contains("toxic"), "{err}");
        let mut f = Record::Feedback(FeedbackRecord {
            id: new_id(),
            conversation_id: new_id(),
            message_id: None,
            rating: 9,
            comment: None,
            user_key: UserKeyHasher::ephemeral().key("p", "u"),
            created_at: now_ms(),
        });
        let err = f.sanitize(&Limits::default()).unwrap_err().to_string();
        assert!(err.contains("9 is outside 1..=5"), "{err}");
    }

    #[test]
    fn test_records_roundtrip_as_json() {
        let r = message("SELECT 1; -- '\"");
        let line = serde_json::to_string(&r).unwrap();
        assert!(line.contains("\"kind\":\"message\""), "{line}");
        assert_eq!(serde_json::from_str::<Record>(&line).unwrap(), r);
    }
}
