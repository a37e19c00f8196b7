//! Stage 7 of a turn: everything that happened goes to the store, through
//! the writer's queue (which never waits on the database). The records are
//! built here, from the stages' results, so the stages stay unaware of the
//! store's shape.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use chatforge_channel::{Feedback, Platform, Rating};

use crate::moderation::{RuleHit, Verdict};
use crate::store::{
    ConversationUpdate, Handoff, MessageRecord, ModerationRecord, Record, Verdict as StoredVerdict,
    WriterHandle,
};
use crate::text::Role;

/// The store's name of a platform.
pub fn platform_name(p: Platform) -> &'static str {
    match p {
        Platform::Discord => "discord",
        Platform::Telegram => "telegram",
        Platform::Web => "web",
        Platform::Terminal => "terminal",
        Platform::Api => "api",
    }
}

/// The platform a stored conversation names (the inverse of
/// [`platform_name`]).
pub fn platform_from_name(name: &str) -> Option<Platform> {
    [
        Platform::Discord,
        Platform::Telegram,
        Platform::Web,
        Platform::Terminal,
        Platform::Api,
    ]
    .into_iter()
    .find(|&p| platform_name(p) == name)
}

/// What the pipeline knows about a reply it logs.
pub struct ReplyLog<'a> {
    pub conversation: &'a str,
    /// The text the user was sent (or, when it was replaced, what the model
    /// wrote: the logs keep what was blocked, marked as such).
    pub content: &'a str,
    pub model_version: &'a str,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub verdict: Option<(&'a Verdict, StoredVerdict)>,
    /// The check failed: blocked without a verdict.
    pub unchecked: bool,
    pub latency: Duration,
    pub grounding: Option<crate::store::Grounding>,
}

pub struct Recorder {
    store: WriterHandle,
}

impl Recorder {
    pub fn new(store: WriterHandle) -> Self {
        Self { store }
    }

    fn log(&self, record: Record) {
        let kind = record.kind();
        if let Err(e) = self.store.enqueue(record) {
            tracing::error!(kind, error = %e, "could not queue a record for the store");
        }
    }

    /// Opens a conversation in the store; returns its id.
    pub fn open(
        &self,
        platform: Platform,
        channel: &str,
        user: &str,
        topic: Option<&str>,
        style: Option<&str>,
    ) -> String {
        let mut c = self
            .store
            .new_conversation(platform_name(platform), channel, user);
        c.topic = topic.map(str::to_string);
        c.style = style.map(str::to_string);
        let id = c.id.clone();
        self.log(Record::Conversation(c));
        id
    }

    pub fn end(&self, conversation: &str) {
        let mut u = ConversationUpdate::new(conversation);
        u.ended = true;
        self.log(Record::Update(u));
    }

    pub fn handoff(&self, conversation: &str, state: Handoff) {
        let mut u = ConversationUpdate::new(conversation);
        u.handoff = Some(state);
        self.log(Record::Update(u));
    }

    /// Logs the user's message with its moderation verdict; returns the
    /// message id.
    pub fn user(
        &self,
        conversation: &str,
        text: &str,
        verdict: Option<(&Verdict, StoredVerdict)>,
    ) -> String {
        let mut m = MessageRecord::new(conversation, Role::User, text);
        if let Some((v, stored)) = verdict {
            apply_verdict(&mut m, v, stored);
        }
        let id = m.id.clone();
        self.log(Record::Message(m));
        id
    }

    /// Logs an operator's message to the customer; returns its id.
    pub fn operator(&self, conversation: &str, operator_id: &str, text: &str) -> String {
        let mut m = MessageRecord::new(conversation, Role::Assistant, text);
        m.operator_id = Some(operator_id.to_string());
        let id = m.id.clone();
        self.log(Record::Message(m));
        id
    }

    /// Logs the reply; returns its message id.
    pub fn reply(&self, r: &ReplyLog<'_>) -> String {
        let mut m = MessageRecord::new(r.conversation, Role::Assistant, r.content);
        m.model_version = (!r.model_version.is_empty()).then(|| r.model_version.to_string());
        m.prompt_tokens = Some(saturating_u32(r.prompt_tokens));
        m.completion_tokens = Some(saturating_u32(r.completion_tokens));
        m.latency_ms = Some(saturating_u32(r.latency.as_millis() as usize));
        if let Some((v, stored)) = r.verdict {
            apply_verdict(&mut m, v, stored);
        }
        if r.unchecked {
            m.verdict = Some(StoredVerdict::Block);
        }
        m.grounding.clone_from(&r.grounding);
        let id = m.id.clone();
        self.log(Record::Message(m));
        id
    }

    /// One moderation event per category or rule that flagged `message`.
    pub fn flags(&self, conversation: &str, message: &str, v: &Verdict, direction: &str) {
        let mut events: Vec<(String, f64)> = v
            .categories
            .iter()
            .filter(|c| c.flagged)
            .map(|c| (c.category.clone(), f64::from(c.score)))
            .collect();
        if v.rules
            .iter()
            .any(|r| matches!(r, RuleHit::Blocklist { .. }))
        {
            events.push(("blocklist".into(), 1.0));
        }
        for (category, score) in events {
            let mut rec =
                ModerationRecord::new(conversation, &category, score, StoredVerdict::Block);
            rec.message_id = Some(message.to_string());
            rec.detail = Some(format!("{direction}: {}", v.reasons().join(", ")));
            self.log(Record::Moderation(rec));
        }
    }

    pub fn feedback(&self, conversation: &str, f: &Feedback) {
        let rating = match f.rating {
            Rating::Good => 5,
            Rating::Bad => 1,
        };
        let mut rec =
            self.store
                .new_feedback(conversation, platform_name(f.platform), &f.user_key, rating);
        rec.message_id = Some(f.message_id.clone());
        rec.comment.clone_from(&f.comment);
        self.log(Record::Feedback(rec));
    }
}

fn apply_verdict(rec: &mut MessageRecord, v: &Verdict, verdict: StoredVerdict) {
    rec.verdict = Some(verdict);
    rec.scores = v
        .categories
        .iter()
        .map(|c| (c.category.clone(), f64::from(c.score)))
        .collect();
}

fn saturating_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// What happened to an answered message: its times, for `bench pipeline`,
/// and its grounding, for `eval --questions`.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplyTrace {
    /// From the request to the final reply event.
    pub total: Duration,
    /// Waiting for the model (queue + generation).
    pub model: Duration,
    /// Retrieval plus the fact guard (zero without a knowledge base).
    pub grounding_time: Duration,
    /// The knowledge-base side of the reply, as stored.
    pub grounding: Option<crate::store::Grounding>,
    /// What the model wrote, before moderation and the fact guard (`None`
    /// for a reply made without the model): the evaluation shows what the
    /// guard replaced.
    pub draft: Option<String>,
    /// Drafts the model wrote (`[pipeline] drafts`); 0 for a reply made
    /// without the model.
    pub drafts: usize,
    /// The reply answered a greeting, thanks or goodbye.
    pub pleasantry: bool,
}

impl ReplyTrace {
    /// Everything but the model: the pipeline's own overhead.
    pub fn overhead(&self) -> Duration {
        self.total.saturating_sub(self.model)
    }
}

/// The most recent reply traces, at most `cap` (older ones are dropped),
/// kept only once switched on: a server nobody reads them from would hold
/// `cap` of them for nothing.
pub struct Traces {
    cap: usize,
    on: std::sync::atomic::AtomicBool,
    recent: Mutex<VecDeque<ReplyTrace>>,
}

impl Traces {
    pub fn new(cap: usize) -> Self {
        Self {
            cap: cap.max(1),
            on: std::sync::atomic::AtomicBool::new(false),
            recent: Mutex::new(VecDeque::new()),
        }
    }

    /// Keeps the traces pushed from now on.
    pub fn keep(&self) {
        self.on.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Traces are kept (what only a trace needs is not worth building
    /// otherwise).
    pub fn kept(&self) -> bool {
        self.on.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn push(&self, t: ReplyTrace) {
        if !self.kept() {
            return;
        }
        let mut r = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if r.len() == self.cap {
            r.pop_front();
        }
        r.push_back(t);
    }

    /// The traces since the last call.
    pub fn take(&self) -> Vec<ReplyTrace> {
        let mut r = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        r.drain(..).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_traces_are_capped() {
        let t = Traces::new(3);
        t.push(ReplyTrace {
            total: Duration::from_millis(99),
            model: Duration::ZERO,
            grounding_time: Duration::ZERO,
            grounding: None,
            draft: None,
            drafts: 1,
            pleasantry: false,
        });
        assert!(t.take().is_empty(), "kept before keep()");
        t.keep();
        for ms in 0..10 {
            t.push(ReplyTrace {
                total: Duration::from_millis(ms),
                model: Duration::ZERO,
                grounding_time: Duration::ZERO,
                grounding: None,
                draft: None,
                drafts: 1,
                pleasantry: false,
            });
        }
        let kept: Vec<u128> = t.take().iter().map(|t| t.total.as_millis()).collect();
        assert_eq!(kept, vec![7, 8, 9]);
        assert!(t.take().is_empty());
    }
}
