//! The chat pipeline: what happens between an adapter's [`ChatRequest`] and
//! the events it renders. Per conversation it keeps the turns within the
//! model's context, ends sessions after an idle time, applies the channel's
//! persona and control tags, rate-limits each user, moderates the user's
//! message and the reply (failing closed), answers the commands, hands
//! conversations to a human on `/human`, and logs every turn to the store.
//!
//! Reply text streams to the adapter only after moderation has checked it:
//! the text so far is checked each time a piece of at least
//! `stream_chunk_chars` ends at a sentence or line boundary.

mod config;
mod engine;
mod gate;
mod ratelimit;
mod session;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chatforge_channel::{
    COMMANDS, ChatEvent, ChatHandler, ChatRequest, Command, EventSink, Feedback, HandlerFuture,
    IncomingMessage, Platform, Rating,
};

pub use config::{ChannelProfile, PipelineConfig, Profile, RateLimitConfig};
pub use engine::{Engine, EngineError, Pool};
pub use gate::Gate;
pub use ratelimit::{Admit, RateLimiter};

use self::session::{ReplyIndex, Session, Sessions};
use crate::moderation::Verdict;
use crate::runtime::SamplingParams;
use crate::store::{
    ConversationUpdate, Handoff, MessageRecord, ModerationRecord, Record, Verdict as StoredVerdict,
    WriterHandle,
};
use crate::text::{Dialog, Message, Role};

/// Replies remembered for feedback after their session ended.
const REPLY_INDEX_CAP: usize = 100_000;
/// How often idle sessions and rate-limit buckets are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// Sent when the model produced nothing.
const EMPTY_REPLY: &str = "Sorry, I don't have an answer to that. Type /human to reach a person.";

/// The store's name of a platform.
pub fn platform_name(p: Platform) -> &'static str {
    match p {
        Platform::Discord => "discord",
        Platform::Telegram => "telegram",
        Platform::Web => "web",
        Platform::Terminal => "terminal",
    }
}

/// Time spent per answered message, for `bench pipeline`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyTiming {
    /// From the request to the final reply event.
    pub total: Duration,
    /// Waiting for the model (queue + generation).
    pub model: Duration,
}

impl ReplyTiming {
    /// Everything but the model: the pipeline's own overhead.
    pub fn overhead(&self) -> Duration {
        self.total.saturating_sub(self.model)
    }
}

pub struct Pipeline {
    cfg: PipelineConfig,
    engine: Arc<Engine>,
    gate: Gate,
    store: WriterHandle,
    sessions: Sessions,
    limiter: RateLimiter,
    replies: Mutex<ReplyIndex>,
    last_sweep: Mutex<Instant>,
    timings: Mutex<Vec<ReplyTiming>>,
}

impl Pipeline {
    /// Checks `cfg` (the error names the key) and builds the pipeline.
    pub fn new(
        cfg: PipelineConfig,
        engine: Arc<Engine>,
        gate: Gate,
        store: WriterHandle,
    ) -> Result<Self, String> {
        cfg.validate()?;
        if gate.is_off() {
            tracing::warn!("moderation is off: replies and messages go unchecked");
        }
        Ok(Self {
            limiter: RateLimiter::new(cfg.rate_limit),
            cfg,
            engine,
            gate,
            store,
            sessions: Sessions::new(),
            replies: Mutex::new(ReplyIndex::new(REPLY_INDEX_CAP)),
            last_sweep: Mutex::new(Instant::now()),
            timings: Mutex::new(Vec::new()),
        })
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Timings of the replies since the last call.
    pub fn take_timings(&self) -> Vec<ReplyTiming> {
        self.timings
            .lock()
            .map(|mut t| std::mem::take(&mut *t))
            .unwrap_or_default()
    }

    /// Conversations held in memory.
    pub fn active_sessions(&self) -> usize {
        self.sessions.count()
    }

    async fn log(&self, record: Record) {
        let kind = record.kind();
        if let Err(e) = self.store.enqueue(record).await {
            tracing::error!(kind, error = %e, "could not queue a record for the store");
        }
    }

    async fn sweep_if_due(&self) {
        let due = match self.last_sweep.lock() {
            Ok(mut at) if at.elapsed() >= SWEEP_EVERY => {
                *at = Instant::now();
                true
            }
            _ => false,
        };
        if !due {
            return;
        }
        self.limiter.sweep();
        for conversation in self.sessions.sweep(self.cfg.idle()) {
            self.end_conversation(&conversation).await;
        }
    }

    async fn end_conversation(&self, conversation: &str) {
        let mut u = ConversationUpdate::new(conversation);
        u.ended = true;
        self.log(Record::Update(u)).await;
    }

    /// Ends the session if it was idle too long, and opens a conversation in
    /// the store if it has none. Returns the conversation id.
    async fn open_conversation(&self, s: &mut Session, m: &IncomingMessage) -> String {
        if s.last_active.elapsed() >= self.cfg.idle()
            && let Some(old) = s.end()
        {
            self.end_conversation(&old).await;
        }
        s.last_active = Instant::now();
        if let Some(id) = &s.conversation_id {
            return id.clone();
        }
        let mut c = self.store.new_conversation(
            platform_name(m.platform),
            &m.conversation_key,
            &m.user_key,
        );
        c.topic.clone_from(&s.profile.topic);
        c.style.clone_from(&s.profile.style);
        let id = c.id.clone();
        s.conversation_id = Some(id.clone());
        self.log(Record::Conversation(c)).await;
        id
    }

    fn session_of(&self, m: &IncomingMessage) -> session::SessionRef {
        self.sessions.get(m.platform, &m.conversation_key, || {
            self.cfg.profile(m.platform, &m.conversation_key)
        })
    }

    async fn on_message(&self, m: IncomingMessage, sink: EventSink) {
        let started = Instant::now();
        self.sweep_if_due().await;
        if !self.admit(&m, &sink) {
            return;
        }
        let session = self.session_of(&m);
        let mut s = session.lock().await;
        let conversation = self.open_conversation(&mut s, &m).await;
        let text = m.text.trim();
        if s.handoff {
            // The operator reads it from the store; the bot stays quiet.
            if !text.is_empty() {
                self.log(Record::Message(MessageRecord::new(
                    &conversation,
                    Role::User,
                    text,
                )))
                .await;
            }
            return;
        }
        if text.is_empty() {
            notice(
                &sink,
                "I can only read text. Please type your question (attachments and stickers are not supported).",
            );
            return;
        }
        let (text, chars_cut) = keep_last_chars(text, self.cfg.max_input_chars);
        let _ = sink.send(ChatEvent::Typing);

        let mut user = MessageRecord::new(&conversation, Role::User, text);
        match self.gate.check(text) {
            Err(reason) => {
                tracing::error!(%conversation, %reason, "cannot moderate a message; not answering it");
                self.log(Record::Message(user)).await;
                notice(&sink, &self.cfg.apology);
                return;
            }
            Ok(Some(v)) if v.flagged => {
                apply_verdict(&mut user, &v, StoredVerdict::Block);
                let id = user.id.clone();
                self.log(Record::Message(user)).await;
                self.log_flags(&conversation, &id, &v, "input").await;
                tracing::info!(%conversation, reasons = ?v.reasons(), "message flagged; refused");
                let _ = sink.send(ChatEvent::Reply {
                    text: self.cfg.input_refusal.clone(),
                    message_id: crate::store::new_id(),
                });
                return;
            }
            Ok(v) => {
                if let Some(v) = &v {
                    apply_verdict(&mut user, v, StoredVerdict::Allow);
                }
                self.log(Record::Message(user)).await;
            }
        }
        s.turns.push(Message {
            role: Role::User,
            content: text.to_string(),
        });

        let pool = self.engine.current();
        let dialog = self.dialog(&s);
        let params = self.params(pool.defaults(), s.turns.len());
        let (deltas_tx, mut deltas) = tokio::sync::mpsc::unbounded_channel();
        let cancel = Arc::new(AtomicBool::new(false));
        let model_started = Instant::now();
        let reply = pool.reply(dialog, params, Arc::clone(&cancel), deltas_tx);
        tokio::pin!(reply);
        let timeout = tokio::time::sleep(self.cfg.reply_timeout());
        tokio::pin!(timeout);
        let mut stream = Streamer::new(&self.gate, &sink, self.cfg.stream_chunk_chars);
        let result = loop {
            tokio::select! {
                r = &mut reply => break r.map_err(|e| e.to_string()),
                Some(piece) = deltas.recv() => {
                    if !stream.push(&piece) || sink.is_closed() {
                        // Flagged or unreadable so far, or nobody listens:
                        // the rest of the reply is not worth generating.
                        cancel.store(true, Ordering::Relaxed);
                    }
                }
                () = &mut timeout => {
                    cancel.store(true, Ordering::Relaxed);
                    break Err(format!("no reply within {:?}", self.cfg.reply_timeout()));
                }
            }
        };
        let model_time = model_started.elapsed();
        // The timer has millisecond granularity: a reply that finished past
        // the deadline before it fired is late all the same.
        let result = result.and_then(|g| {
            if model_time >= self.cfg.reply_timeout() {
                Err(format!("no reply within {:?}", self.cfg.reply_timeout()))
            } else {
                Ok(g)
            }
        });
        let generation = match result {
            Ok(g) => g,
            Err(reason) => {
                tracing::error!(%conversation, %reason, "reply failed");
                notice(&sink, &self.cfg.apology);
                return;
            }
        };

        let generated = generation.text.trim();
        let generated = if generated.is_empty() {
            EMPTY_REPLY
        } else {
            generated
        };
        let mut assistant = MessageRecord::new(&conversation, Role::Assistant, generated);
        assistant.model_version = Some(pool.model_version().to_string());
        assistant.prompt_tokens = Some(saturating_u32(generation.prompt_tokens));
        assistant.completion_tokens = Some(saturating_u32(generation.tokens.len()));
        let checked = match stream.flagged.take() {
            Some(v) => Ok(Some(v)),
            None => self.gate.check(generated),
        };
        let (sent, rateable) = match checked {
            Err(reason) => {
                tracing::error!(%conversation, %reason, "cannot moderate the reply; not sending it");
                assistant.verdict = Some(StoredVerdict::Block);
                (self.cfg.apology.clone(), false)
            }
            Ok(Some(v)) if v.flagged => {
                apply_verdict(&mut assistant, &v, StoredVerdict::Block);
                tracing::warn!(%conversation, reasons = ?v.reasons(), "reply flagged; replaced by the safe reply");
                self.log_flags(&conversation, &assistant.id, &v, "output")
                    .await;
                (self.cfg.safe_reply.clone(), false)
            }
            Ok(Some(v)) => {
                apply_verdict(&mut assistant, &v, StoredVerdict::Allow);
                let text = v.redacted.clone().unwrap_or_else(|| generated.to_string());
                // What the user saw is what later fine-tuning learns from.
                assistant.content.clone_from(&text);
                (text, true)
            }
            Ok(None) => (generated.to_string(), true),
        };
        let message_id = assistant.id.clone();
        assistant.latency_ms = Some(saturating_u32(started.elapsed().as_millis() as usize));
        self.log(Record::Message(assistant)).await;
        s.turns.push(Message {
            role: Role::Assistant,
            content: sent.clone(),
        });
        if rateable {
            s.last_reply = Some(message_id.clone());
            if let Ok(mut idx) = self.replies.lock() {
                idx.insert(message_id.clone(), conversation.clone());
            }
        }
        let text = if chars_cut || generation.prompt_cut_tokens > 0 {
            format!("(Your message was very long, so I read only its last part.)\n\n{sent}")
        } else {
            sent
        };
        let _ = sink.send(ChatEvent::Reply {
            text,
            message_id: message_id.clone(),
        });
        if rateable {
            let _ = sink.send(ChatEvent::FeedbackRequest { message_id });
        }
        if let Ok(mut t) = self.timings.lock() {
            t.push(ReplyTiming {
                total: started.elapsed(),
                model: model_time,
            });
        }
    }

    /// Rate limit: `false` when the message is not taken (the user is told
    /// once per flood).
    fn admit(&self, m: &IncomingMessage, sink: &EventSink) -> bool {
        let user = format!("{}:{}", platform_name(m.platform), m.user_key);
        match self.limiter.admit(&user) {
            Admit::Yes => true,
            Admit::Notify(wait) => {
                tracing::info!(platform = platform_name(m.platform), "user rate-limited");
                notice(
                    sink,
                    &format!(
                        "You're sending messages faster than I can answer. Please wait {} s; messages sent until then are skipped.",
                        wait.as_secs().max(1)
                    ),
                );
                false
            }
            Admit::Drop => false,
        }
    }

    fn dialog(&self, s: &Session) -> Dialog {
        let mut messages = Vec::with_capacity(s.turns.len() + 1);
        if let Some(p) = &s.profile.persona {
            messages.push(Message {
                role: Role::System,
                content: p.clone(),
            });
        }
        messages.extend(s.turns.iter().cloned());
        Dialog {
            messages,
            topic: s.profile.topic.clone(),
            style: s.profile.style.clone(),
        }
    }

    fn params(&self, defaults: &SamplingParams, turn: usize) -> SamplingParams {
        let mut p = defaults.clone();
        if let Some(n) = self.cfg.max_new_tokens {
            p.max_new_tokens = n;
        }
        if let Some(t) = self.cfg.temperature {
            p.temperature = t;
        }
        // Reproducible per turn, yet not the same draw for every message.
        p.seed = p.seed.wrapping_add(turn as u64);
        p
    }

    async fn log_flags(&self, conversation: &str, message: &str, v: &Verdict, direction: &str) {
        let mut events: Vec<(String, f64)> = v
            .categories
            .iter()
            .filter(|c| c.flagged)
            .map(|c| (c.category.clone(), f64::from(c.score)))
            .collect();
        if v.rules
            .iter()
            .any(|r| matches!(r, crate::moderation::RuleHit::Blocklist { .. }))
        {
            events.push(("blocklist".into(), 1.0));
        }
        for (category, score) in events {
            let mut rec =
                ModerationRecord::new(conversation, &category, score, StoredVerdict::Block);
            rec.message_id = Some(message.to_string());
            rec.detail = Some(format!("{direction}: {}", v.reasons().join(", ")));
            self.log(Record::Moderation(rec)).await;
        }
    }

    async fn on_command(&self, m: IncomingMessage, command: Command, sink: EventSink) {
        if !matches!(command, Command::Feedback { .. }) && !self.admit(&m, &sink) {
            return;
        }
        let reply = |text: String| {
            let _ = sink.send(ChatEvent::Reply {
                text,
                message_id: crate::store::new_id(),
            });
        };
        match command {
            Command::Start => reply(self.cfg.greeting.clone()),
            Command::Help => reply(help_text()),
            Command::Invalid { usage, .. } => notice(&sink, &format!("Usage: {usage}")),
            Command::Unknown { name } => notice(
                &sink,
                &format!("I don't know the command /{name}. /help lists the ones I know."),
            ),
            Command::Reset => {
                let session = self.session_of(&m);
                let mut s = session.lock().await;
                if let Some(old) = s.end() {
                    self.end_conversation(&old).await;
                }
                reply("Done: I've forgotten our conversation. What can I help you with?".into());
            }
            Command::Feedback { rating, comment } => {
                let session = self.session_of(&m);
                let last = session.lock().await.last_reply.clone();
                match last {
                    Some(id) => {
                        let f = Feedback {
                            platform: m.platform,
                            conversation_key: m.conversation_key.clone(),
                            user_key: m.user_key.clone(),
                            message_id: id,
                            rating,
                            comment,
                        };
                        if self.record_feedback(&f).await {
                            reply("Thanks for your feedback!".into());
                        }
                    }
                    None => notice(&sink, "There is no reply of mine to rate yet."),
                }
            }
            Command::Human => {
                let session = self.session_of(&m);
                let mut s = session.lock().await;
                let conversation = self.open_conversation(&mut s, &m).await;
                if !s.handoff {
                    s.handoff = true;
                    let mut u = ConversationUpdate::new(&conversation);
                    u.handoff = Some(Handoff::Requested);
                    self.log(Record::Update(u)).await;
                    tracing::info!(%conversation, "conversation handed to a human operator");
                }
                let _ = sink.send(ChatEvent::Handoff {
                    notice: "I've asked a human operator to take over; they will answer here. Type /bot to talk to me again.".into(),
                });
            }
            Command::Bot => {
                let session = self.session_of(&m);
                let mut s = session.lock().await;
                if s.handoff {
                    s.handoff = false;
                    if let Some(conversation) = s.conversation_id.clone() {
                        let mut u = ConversationUpdate::new(&conversation);
                        u.handoff = Some(Handoff::Resolved);
                        self.log(Record::Update(u)).await;
                    }
                    let _ = sink.send(ChatEvent::Handoff {
                        notice: "You're talking to the bot again. How can I help?".into(),
                    });
                } else {
                    reply("I'm here. How can I help?".into());
                }
            }
        }
    }

    /// Stores a rating; `false` (and logged) when the reply is unknown.
    async fn record_feedback(&self, f: &Feedback) -> bool {
        let conversation = self
            .replies
            .lock()
            .ok()
            .and_then(|idx| idx.get(&f.message_id).map(str::to_string));
        let Some(conversation) = conversation else {
            tracing::info!(message = %f.message_id, "feedback on a reply this server does not know; ignored");
            return false;
        };
        let rating = match f.rating {
            Rating::Good => 5,
            Rating::Bad => 1,
        };
        let mut rec = self.store.new_feedback(
            &conversation,
            platform_name(f.platform),
            &f.user_key,
            rating,
        );
        rec.message_id = Some(f.message_id.clone());
        rec.comment.clone_from(&f.comment);
        self.log(Record::Feedback(rec)).await;
        true
    }
}

impl ChatHandler for Pipeline {
    fn handle(&self, request: ChatRequest, events: EventSink) -> HandlerFuture<'_> {
        Box::pin(async move {
            match request {
                ChatRequest::Message(m) => self.on_message(m, events).await,
                ChatRequest::Command { message, command } => {
                    self.on_command(message, command, events).await;
                }
                ChatRequest::Feedback(f) => {
                    self.record_feedback(&f).await;
                }
            }
        })
    }
}

fn notice(sink: &EventSink, text: &str) {
    let _ = sink.send(ChatEvent::Error {
        notice: text.to_string(),
    });
}

fn help_text() -> String {
    let mut s = String::from("I answer questions about our products and your orders. Commands:\n");
    for c in COMMANDS {
        s.push_str(&format!("/{} — {}\n", c.name, c.description));
    }
    s.trim_end().to_string()
}

fn saturating_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// `text` cut to its last `max` characters, and whether it was cut.
fn keep_last_chars(text: &str, max: usize) -> (&str, bool) {
    match text.char_indices().rev().nth(max.saturating_sub(1)) {
        Some((i, _)) if i > 0 => (&text[i..], true),
        _ => (text, false),
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

/// Releases reply text to the adapter in pieces that moderation has seen.
struct Streamer<'a> {
    gate: &'a Gate,
    sink: &'a EventSink,
    min_chars: usize,
    text: String,
    released: usize,
    /// Set when the text so far was flagged.
    flagged: Option<Verdict>,
    stopped: bool,
}

impl<'a> Streamer<'a> {
    fn new(gate: &'a Gate, sink: &'a EventSink, min_chars: usize) -> Self {
        Self {
            gate,
            sink,
            min_chars: min_chars.max(1),
            text: String::new(),
            released: 0,
            flagged: None,
            stopped: false,
        }
    }

    /// Adds generated text; `false` once streaming stopped (flagged, or
    /// moderation unavailable): the final reply decides what is shown.
    fn push(&mut self, piece: &str) -> bool {
        if self.stopped {
            return false;
        }
        self.text.push_str(piece);
        let pending = &self.text[self.released..];
        let at_boundary = pending.ends_with(['.', '!', '?', '\n', '。', '！', '？']);
        let count = pending.chars().count();
        if !(count >= self.min_chars && at_boundary || count >= self.min_chars * 3) {
            return true;
        }
        match self.gate.check(&self.text) {
            Ok(Some(v)) if v.flagged => {
                self.flagged = Some(v);
                self.stopped = true;
            }
            // Personal data is redacted in the final reply only.
            Ok(Some(v)) if v.redacted.is_some() => self.stopped = true,
            Ok(_) => {
                let delta = self.text[self.released..].to_string();
                self.released = self.text.len();
                let _ = self.sink.send(ChatEvent::ReplyChunk { delta });
            }
            Err(_) => self.stopped = true,
        }
        !self.stopped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_keep_last_chars() {
        assert_eq!(keep_last_chars("hello", 10), ("hello", false));
        assert_eq!(keep_last_chars("hello", 5), ("hello", false));
        assert_eq!(keep_last_chars("héllo wörld", 5), ("wörld", true));
        assert_eq!(keep_last_chars("你好世界", 2), ("世界", true));
    }

    #[test]
    fn test_help_lists_every_command() {
        let h = help_text();
        for c in COMMANDS {
            assert!(h.contains(&format!("/{}", c.name)), "{h}");
        }
    }
}
