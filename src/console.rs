//! The operator console's work, behind its HTTP pages (`http/console.rs`):
//! the queue of conversations waiting for a human, claiming one (the
//! store's conditional update decides, so two operators never both hold
//! it), replying in the customer's own chat through the platform's
//! [`ChatOutbox`], resolving (back to the bot, the customer is told), the
//! review queue of bot replies, and the audit of who did what.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use chatforge_channel::{ChatOutbox, OutboxError, Platform};
use chrono::Utc;
use serde::Serialize;
use serde_json::json;

use crate::operators::Operator;
use crate::pipeline::{ChatRef, ConsoleEventKind, Pipeline, platform_from_name};
use crate::store::{
    self, AuditEvent, ConversationStore, Handoff, MessageRecord, Review, ReviewDecision,
    StoredConversation, WriterHandle,
};
use crate::text::{Redactor, Role};

/// Longest operator message or correction, in characters.
pub const MAX_TEXT_CHARS: usize = 4000;
/// Conversations the queue shows at most.
const QUEUE_LIMIT: u32 = 200;
/// Messages of each queued conversation shown in the queue.
const PREVIEW_MESSAGES: usize = 3;
/// Replies the review queue shows at a time, and the turns before each.
const REVIEW_LIMIT: u32 = 50;
const REVIEW_CONTEXT: usize = 6;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no conversation {0}")]
    NotFound(String),
    /// The action does not fit the conversation's state (another operator
    /// holds it, it is not waiting, …).
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    /// The customer's platform did not take the message.
    #[error("{0}")]
    Undelivered(String),
    #[error(transparent)]
    Store(#[from] store::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

/// A message as the console shows it.
#[derive(Debug, Clone, Serialize)]
pub struct MessageView {
    pub id: String,
    /// `user`, `assistant`, `operator` or `system`.
    pub role: &'static str,
    pub content: String,
    pub at: String,
    /// The operator who wrote an `operator` message.
    pub operator: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct QueueEntry {
    pub id: String,
    pub platform: String,
    pub topic: Option<String>,
    /// `requested` (waiting) or `active` (an operator holds it).
    pub state: &'static str,
    pub claimed_by: Option<String>,
    pub mine: bool,
    pub waiting_secs: i64,
    pub last_messages: Vec<MessageView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AuditView {
    pub at: String,
    pub actor: String,
    pub action: String,
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConversationView {
    pub id: String,
    pub platform: String,
    pub state: &'static str,
    pub claimed_by: Option<String>,
    pub mine: bool,
    pub messages: Vec<MessageView>,
    pub audit: Vec<AuditView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReviewView {
    pub message_id: String,
    pub conversation: String,
    pub platform: String,
    pub reason: String,
    pub reply: String,
    pub context: Vec<MessageView>,
}

/// What an operator decides about a reply in the review queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Approve,
    Reject,
    Correct(String),
}

pub struct Console {
    store: Arc<dyn ConversationStore>,
    writer: WriterHandle,
    pipeline: Arc<Pipeline>,
    outboxes: RwLock<HashMap<Platform, Arc<dyn ChatOutbox>>>,
    review_sample_every: u32,
    /// The export's redaction, for the console's "hide personal data" view.
    redactor: Redactor,
}

/// The text an operator typed, checked.
fn checked_text(text: &str) -> Result<&str> {
    let text = text.trim();
    if text.is_empty() {
        return Err(Error::Invalid("the message is empty".into()));
    }
    if text.chars().count() > MAX_TEXT_CHARS {
        return Err(Error::Invalid(format!(
            "the message is longer than {MAX_TEXT_CHARS} characters"
        )));
    }
    if text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(Error::Invalid(
            "the message holds control characters".into(),
        ));
    }
    Ok(text)
}

impl Console {
    pub fn new(
        store: Arc<dyn ConversationStore>,
        writer: WriterHandle,
        pipeline: Arc<Pipeline>,
        review_sample_every: u32,
    ) -> Self {
        Self {
            store,
            writer,
            pipeline,
            outboxes: RwLock::new(HashMap::new()),
            review_sample_every: review_sample_every.max(1),
            redactor: Redactor::new(),
        }
    }

    pub fn store(&self) -> &Arc<dyn ConversationStore> {
        &self.store
    }

    pub fn pipeline(&self) -> &Arc<Pipeline> {
        &self.pipeline
    }

    /// Operators' messages to `outbox.platform()` go through `outbox`.
    pub fn add_outbox(&self, outbox: Arc<dyn ChatOutbox>) {
        self.outboxes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(outbox.platform(), outbox);
    }

    fn outbox(&self, platform: Platform) -> Option<Arc<dyn ChatOutbox>> {
        self.outboxes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&platform)
            .cloned()
    }

    /// What the pipeline logged so far is in the store (the console reads
    /// and claims there).
    async fn settle(&self) -> Result<()> {
        let outcome = self.writer.flush().await?;
        if outcome.pending > 0 {
            return Err(Error::Store(store::Error::Unavailable {
                backend: self.store.backend().name(),
                reason: format!("{} records wait in the spill file", outcome.pending),
            }));
        }
        Ok(())
    }

    async fn operator_names(&self) -> Result<HashMap<String, String>> {
        Ok(self
            .store
            .operators(None)
            .await?
            .into_iter()
            .map(|o| (o.id, o.name))
            .collect())
    }

    fn view(
        &self,
        m: &MessageRecord,
        names: &HashMap<String, String>,
        redact: bool,
    ) -> MessageView {
        let role = match (m.role, &m.operator_id) {
            (_, Some(_)) => "operator",
            (Role::User, _) => "user",
            (Role::Assistant, _) => "assistant",
            (Role::System, _) => "system",
        };
        MessageView {
            id: m.id.clone(),
            role,
            content: if redact {
                self.redactor.redact(&m.content)
            } else {
                m.content.clone()
            },
            at: m.created_at.to_rfc3339(),
            operator: m
                .operator_id
                .as_ref()
                .map(|id| names.get(id).cloned().unwrap_or_else(|| id.clone())),
        }
    }

    /// Conversations waiting for or with a human, the longest waiting first.
    pub async fn queue(&self, me: &Operator, redact: bool) -> Result<Vec<QueueEntry>> {
        self.settle().await?;
        let names = self.operator_names().await?;
        let now = Utc::now();
        let mut out = Vec::new();
        for c in self.store.handoff_queue(QUEUE_LIMIT).await? {
            let messages = self
                .store
                .conversation(&c.record.id)
                .await?
                .map(|c| c.messages)
                .unwrap_or_default();
            let since = c.handoff_at.unwrap_or(c.record.started_at);
            let last = &messages[messages.len().saturating_sub(PREVIEW_MESSAGES)..];
            out.push(QueueEntry {
                id: c.record.id.clone(),
                platform: c.record.platform.clone(),
                topic: c.record.topic.clone(),
                state: c.handoff.as_str(),
                claimed_by: c.claimed_by.as_ref().map(|id| name_of(&names, id)),
                mine: c.claimed_by.as_deref() == Some(me.id.as_str()),
                waiting_secs: (now - since).num_seconds().max(0),
                last_messages: last.iter().map(|m| self.view(m, &names, redact)).collect(),
            });
        }
        Ok(out)
    }

    async fn stored(&self, id: &str) -> Result<StoredConversation> {
        self.store
            .conversation(id)
            .await?
            .ok_or_else(|| Error::NotFound(id.to_string()))
    }

    /// One conversation whole, with its audit trail.
    pub async fn conversation(
        &self,
        me: &Operator,
        id: &str,
        redact: bool,
    ) -> Result<ConversationView> {
        self.settle().await?;
        let c = self.stored(id).await?;
        let names = self.operator_names().await?;
        let audit = self
            .store
            .conversation_audit(id)
            .await?
            .into_iter()
            .map(|e| AuditView {
                at: e.created_at.to_rfc3339(),
                actor: e.actor,
                action: e.action,
                detail: e
                    .detail
                    .filter(|d| d.as_object().is_none_or(|o| !o.is_empty()))
                    .map(|d| d.to_string()),
            })
            .collect();
        Ok(ConversationView {
            id: c.record.id.clone(),
            platform: c.record.platform.clone(),
            state: c.handoff.as_str(),
            claimed_by: c.claimed_by.as_ref().map(|o| name_of(&names, o)),
            mine: c.claimed_by.as_deref() == Some(me.id.as_str()),
            messages: c
                .messages
                .iter()
                .map(|m| self.view(m, &names, redact))
                .collect(),
            audit,
        })
    }

    fn chat(c: &StoredConversation) -> Result<ChatRef> {
        let platform = platform_from_name(&c.record.platform)
            .ok_or_else(|| Error::Conflict(format!("unknown platform {:?}", c.record.platform)))?;
        Ok(ChatRef {
            conversation: c.record.id.clone(),
            platform,
            key: c.record.channel.clone(),
        })
    }

    async fn audit(
        &self,
        me: &Operator,
        action: &str,
        conversation: &str,
        detail: serde_json::Value,
    ) {
        let mut e = AuditEvent::new(&me.name, action, detail);
        e.conversation_id = Some(conversation.to_string());
        if let Err(err) = self.store.write_audit(&e).await {
            tracing::error!(error = %err, action, "could not store an audit event");
        }
        metrics::counter!(crate::http::metrics::CONSOLE_ACTIONS, "action" => action.replace(' ', "_"))
            .increment(1);
    }

    /// Takes a waiting conversation; refused when another operator has it.
    pub async fn claim(&self, me: &Operator, id: &str) -> Result<()> {
        self.settle().await?;
        if !self.store.claim(id, &me.id).await? {
            let c = self.stored(id).await?;
            let names = self.operator_names().await?;
            return Err(Error::Conflict(match (&c.claimed_by, c.handoff) {
                (Some(o), _) if *o == me.id => "you already hold this conversation".into(),
                (Some(o), _) => format!("{} already holds this conversation", name_of(&names, o)),
                (None, h) => format!(
                    "the conversation is not waiting for a human ({})",
                    h.as_str()
                ),
            }));
        }
        let c = self.stored(id).await?;
        self.pipeline
            .operator_claimed(&Self::chat(&c)?, &me.id)
            .await;
        tracing::info!(conversation = %id, operator = %me.name, "conversation claimed");
        self.audit(me, "claimed", id, json!({})).await;
        Ok(())
    }

    /// The conversation, when `me` holds it.
    async fn held(&self, me: &Operator, id: &str) -> Result<StoredConversation> {
        self.settle().await?;
        let c = self.stored(id).await?;
        if c.handoff != Handoff::Active || c.claimed_by.as_deref() != Some(me.id.as_str()) {
            return Err(Error::Conflict(
                "claim the conversation before answering or resolving it".into(),
            ));
        }
        Ok(c)
    }

    async fn deliver(&self, chat: &ChatRef, text: &str) -> Result<()> {
        let outbox = self.outbox(chat.platform).ok_or_else(|| {
            Error::Undelivered(format!(
                "this server has no {} adapter to reach the customer",
                crate::pipeline::platform_name(chat.platform)
            ))
        })?;
        outbox
            .send(&chat.key, text)
            .await
            .map_err(|e: OutboxError| Error::Undelivered(e.to_string()))
    }

    /// Sends `text` to the customer in their chat, then logs it as the
    /// operator's message.
    pub async fn reply(&self, me: &Operator, id: &str, text: &str) -> Result<()> {
        let text = checked_text(text)?;
        let c = self.held(me, id).await?;
        let chat = Self::chat(&c)?;
        self.deliver(&chat, text).await?;
        let message = self.pipeline.operator_said(&chat, &me.id, text).await;
        self.audit(me, "replied", id, json!({ "message_id": message }))
            .await;
        Ok(())
    }

    /// Hands the conversation back to the bot and tells the customer.
    pub async fn resolve(&self, me: &Operator, id: &str) -> Result<()> {
        let c = self.held(me, id).await?;
        let chat = Self::chat(&c)?;
        if !self.store.release(id).await? {
            return Err(Error::Conflict(
                "the conversation is no longer with a human".into(),
            ));
        }
        let notice = self.pipeline.operator_resolved(&chat).await;
        // Resolved either way; a customer who missed the notice gets the bot.
        if let Err(e) = self.deliver(&chat, &notice).await {
            tracing::warn!(conversation = %id, error = %e, "could not tell the customer the conversation was resolved");
        }
        self.audit(me, "resolved", id, json!({})).await;
        Ok(())
    }

    /// Replies waiting for review, each with the turns before it.
    pub async fn review_queue(&self) -> Result<Vec<ReviewView>> {
        self.settle().await?;
        let names = self.operator_names().await?;
        let items = self
            .store
            .review_queue(self.review_sample_every, REVIEW_LIMIT)
            .await?;
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let m = &item.message;
            let context = match self.store.conversation(&m.conversation_id).await? {
                Some(c) => {
                    let at = c.messages.iter().position(|x| x.id == m.id).unwrap_or(0);
                    c.messages[at.saturating_sub(REVIEW_CONTEXT)..at]
                        .iter()
                        .map(|x| self.view(x, &names, false))
                        .collect()
                }
                None => Vec::new(),
            };
            out.push(ReviewView {
                message_id: m.id.clone(),
                conversation: m.conversation_id.clone(),
                platform: item.platform.clone(),
                reason: item.reason.clone(),
                reply: m.content.clone(),
                context,
            });
        }
        Ok(out)
    }

    /// Stores an operator's review of a bot reply.
    pub async fn review(&self, me: &Operator, message_id: &str, verdict: Verdict) -> Result<()> {
        let (decision, correction) = match verdict {
            Verdict::Approve => (ReviewDecision::Approved, None),
            Verdict::Reject => (ReviewDecision::Rejected, None),
            Verdict::Correct(text) => (
                ReviewDecision::Corrected,
                Some(checked_text(&text)?.to_string()),
            ),
        };
        self.settle().await?;
        let conversation = self
            .store
            .message_conversation(message_id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("reply {message_id}")))?;
        let review = Review {
            message_id: message_id.to_string(),
            conversation_id: conversation.clone(),
            operator_id: me.id.clone(),
            decision,
            correction,
            created_at: Utc::now(),
        };
        self.store.write_review(&review).await?;
        metrics::counter!(crate::http::metrics::REVIEWS, "decision" => decision.as_str())
            .increment(1);
        self.audit(
            me,
            &format!("reply {}", decision.as_str()),
            &conversation,
            json!({ "message_id": message_id }),
        )
        .await;
        self.pipeline
            .announce(ConsoleEventKind::Reviewed, &conversation);
        Ok(())
    }
}

fn name_of(names: &HashMap<String, String>, id: &str) -> String {
    names.get(id).cloned().unwrap_or_else(|| id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_operator_text_is_checked() {
        assert_eq!(checked_text("  hello \n").unwrap(), "hello");
        assert!(checked_text("   ").is_err());
        assert!(checked_text("a\u{7}b").is_err());
        assert!(checked_text("line one\nline two\tend").is_ok());
        assert!(checked_text(&"x".repeat(MAX_TEXT_CHARS + 1)).is_err());
        assert!(checked_text(&"é".repeat(MAX_TEXT_CHARS)).is_ok());
    }
}
