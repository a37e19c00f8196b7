//! The chat pipeline: what happens between an adapter's [`ChatRequest`] and
//! the events it renders. A turn runs as stages, one file each:
//!
//! ```text
//! validate ─▶ moderate input ─▶ retrieve ─▶ generate ─▶ check ─▶ guard ─▶ deliver ─▶ record
//! validate.rs  moderate.rs   retrieve.rs generate.rs check.rs guard.rs deliver.rs record.rs
//! ```
//!
//! With a knowledge base, the reply rests on retrieved passages: they are
//! the model's context, and the fact guard lets no reply through that
//! states what they do not (it sends their best sentences instead, or the
//! handoff offer when retrieval is not confident).
//!
//! Around them: per-conversation sessions with an explicit [`State`]
//! (bot, waiting for a human, with an operator; `session.rs`), per-user
//! rate limits (`ratelimit.rs`), the commands (`commands.rs`), the model
//! [`Engine`] over a [`Backend`] (`engine.rs`), the moderation [`Gate`]
//! on its own threads (`gate.rs`), and every user-facing text in one table
//! per language (`texts.rs`). Reply text streams to the adapter only after
//! moderation has checked it.

mod check;
mod commands;
mod config;
mod deliver;
mod engine;
mod gate;
mod generate;
mod guard;
mod hours;
mod moderate;
mod operator;
mod pleasantry;
mod ratelimit;
mod record;
mod retrieve;
mod session;
mod texts;
mod validate;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chatforge_channel::{
    ChatEvent, ChatHandler, ChatRequest, EventSink, HandlerFuture, IncomingMessage, Platform,
};

pub use config::{ChannelProfile, Durations, PipelineConfig, Profile, RateLimitConfig};
pub use engine::{
    Backend, DEFAULT_QUEUE, Engine, EngineError, Opener, Pool, Scheduler, onnx_opener,
};
pub use gate::{Checker, Gate};
pub use hours::AgentHours;
pub use operator::{ChatRef, ConsoleEvent, ConsoleEventKind};
pub use ratelimit::{Admit, RateLimiter};
pub use record::{ReplyTrace, platform_from_name, platform_name};
pub use retrieve::{Cite, Knowledge};
pub use session::{State, Transition};
pub use texts::{TextKey, TextOverrides, Texts, detect_lang};

use self::check::{Checked, Streamer};
use self::generate::GenerateError;
use self::guard::{Decision, Evidence};
use self::moderate::InputCheck;
use self::record::{Recorder, ReplyLog, Traces};
use self::retrieve::Grounded;
use self::session::{OpenHandoffs, ReplyIndex, Session, SessionRef, Sessions};
use crate::runtime::{SamplingParams, StopReason};
use crate::store::{Grounding, ReplyKind, Verdict as StoredVerdict, WriterHandle};
use crate::text::{Dialog, Message, Role};

/// A turn from the HTTP API: OpenAI's chat API sends the conversation
/// whole, and may set the sampling.
#[derive(Debug, Clone, Default)]
pub struct TurnOptions {
    /// The turns before this message; they replace what the session held.
    pub history: Option<Vec<Message>>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub max_tokens: Option<usize>,
    pub stop: Vec<String>,
    pub seed: Option<u64>,
}

impl TurnOptions {
    fn apply(&self, p: &mut SamplingParams) {
        if let Some(t) = self.temperature {
            p.temperature = t;
        }
        if let Some(t) = self.top_p {
            p.top_p = t;
        }
        if let Some(n) = self.max_tokens {
            p.max_new_tokens = n;
        }
        if let Some(s) = self.seed {
            p.seed = s;
        }
        p.stop_strings.extend(self.stop.iter().cloned());
    }
}

/// Why a turn's reply ended (OpenAI's `finish_reason`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Finish {
    #[default]
    Stop,
    /// The token limit (or the model's context) cut it.
    Length,
    /// Moderation refused the message or replaced the reply.
    ContentFilter,
}

/// How a turn went, for the HTTP API's `finish_reason` and `usage`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TurnOutcome {
    pub finish: Finish,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// Waiting for the model (queue and generation).
    pub model_time: Duration,
    /// The model's queue was full: nothing was generated (the API answers
    /// 429).
    pub busy: bool,
}

/// Replies remembered for feedback after their session ended.
const REPLY_INDEX_CAP: usize = 100_000;
/// Reply traces kept for `bench pipeline` and `eval --questions`.
const TRACES_CAP: usize = 65_536;
/// How often idle sessions and rate-limit buckets are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

pub struct Pipeline {
    cfg: PipelineConfig,
    durations: Durations,
    texts: Texts,
    engine: Arc<Engine>,
    gate: Gate,
    knowledge: Option<Arc<Knowledge>>,
    /// `[handoff] hours`: outside them `/human` says when agents are back.
    agent_hours: Option<AgentHours>,
    record: Recorder,
    sessions: Sessions,
    limiter: RateLimiter,
    replies: Mutex<ReplyIndex>,
    last_sweep: Mutex<Instant>,
    traces: Traces,
    /// What the operator consoles see change.
    feed: operator::Feed,
    /// Read back which chats wait for a human when a session is new (after
    /// a restart); `None`: sessions start with the bot.
    store: Option<Arc<dyn crate::store::ConversationStore>>,
    /// Which chats `store` may hold a handoff for.
    open_handoffs: OpenHandoffs,
    /// Platforms whose chats any replica may answer: their sessions are
    /// read from `store` at every turn (memory is only a cache).
    shared: Vec<Platform>,
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
        let durations = cfg.durations()?;
        let texts = Texts::new(&cfg.texts)?;
        if gate.is_off() {
            tracing::warn!("moderation is off: replies and messages go unchecked");
        }
        Ok(Self {
            limiter: RateLimiter::new(cfg.rate_limit, durations.rate_window),
            sessions: Sessions::new(cfg.max_sessions),
            durations,
            texts,
            cfg,
            engine,
            gate,
            knowledge: None,
            agent_hours: None,
            record: Recorder::new(store),
            replies: Mutex::new(ReplyIndex::new(REPLY_INDEX_CAP)),
            last_sweep: Mutex::new(Instant::now()),
            traces: Traces::new(TRACES_CAP),
            feed: operator::Feed::new(),
            store: None,
            open_handoffs: OpenHandoffs::default(),
            shared: Vec::new(),
        })
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Answers from `knowledge`: retrieval, context and the fact guard.
    pub fn with_knowledge(mut self, knowledge: Arc<Knowledge>) -> Self {
        self.knowledge = Some(knowledge);
        self
    }

    /// A chat handed to a human stays with them across a restart: a new
    /// session reads the chat's handoff from `store`.
    pub fn with_store(mut self, store: Arc<dyn crate::store::ConversationStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// Any replica may answer `platform`'s chats (Telegram webhooks): each
    /// turn continues the chat's open conversation as the store holds it
    /// (turns, handoff, last reply), and feedback on a reply another
    /// replica sent is found in the store. Needs [`Pipeline::with_store`].
    pub fn with_shared_sessions(mut self, platform: Platform) -> Self {
        self.shared.push(platform);
        self
    }

    pub fn with_agent_hours(mut self, hours: AgentHours) -> Self {
        self.agent_hours = Some(hours);
        self
    }

    pub fn knowledge(&self) -> Option<&Arc<Knowledge>> {
        self.knowledge.as_ref()
    }

    /// Keeps reply traces from now on (for `bench pipeline` and `eval`;
    /// off in `serve`).
    pub fn keep_traces(&self) {
        self.traces.keep();
    }

    /// Traces of the replies since the last call (the most recent
    /// [`TRACES_CAP`]), once [`Pipeline::keep_traces`] was called.
    pub fn take_traces(&self) -> Vec<ReplyTrace> {
        self.traces.take()
    }

    /// The turns a conversation holds now (for the web chat after a page
    /// reload), and the id of the bot's last rateable reply; empty when the
    /// conversation is not held.
    pub async fn transcript(
        &self,
        platform: chatforge_channel::Platform,
        conversation_key: &str,
    ) -> (Vec<Message>, Option<String>) {
        match self.sessions.peek(platform, conversation_key) {
            Some(s) => {
                let s = s.lock().await;
                (s.turns.clone(), s.last_reply.clone())
            }
            None => (Vec::new(), None),
        }
    }

    /// Conversations held in memory.
    pub fn active_sessions(&self) -> usize {
        self.sessions.count()
    }

    /// Users the rate limiter tracks.
    pub fn rate_limited_users(&self) -> usize {
        self.limiter.tracked()
    }

    fn text(&self, lang: &str, key: TextKey) -> &str {
        self.texts.get(lang, key)
    }

    fn sweep_if_due(&self) {
        let due = {
            let mut at = self.last_sweep.lock().unwrap_or_else(|p| p.into_inner());
            let due = at.elapsed() >= SWEEP_EVERY;
            if due {
                *at = Instant::now();
            }
            due
        };
        if due {
            self.limiter.sweep();
            for conversation in self.sessions.sweep(self.durations.idle) {
                self.record.end(&conversation);
            }
        }
    }

    /// The session of a platform chat (created if new); ends the ones
    /// evicted to make room.
    fn session_of(&self, platform: Platform, key: &str) -> SessionRef {
        let (s, evicted) = self
            .sessions
            .get(platform, key, || self.cfg.profile(platform, key));
        for conversation in evicted {
            self.record.end(&conversation);
        }
        s
    }

    /// A new session of a chat that waits for or is with a human (the
    /// store says so: serve restarted) continues that conversation; a
    /// shared chat's session is read from the store at every turn.
    async fn restore_session(&self, s: &mut Session, m: &IncomingMessage) {
        if self.shared.contains(&m.platform) {
            return self.load_shared(s, m).await;
        }
        if s.restored || s.conversation_id.is_some() {
            return;
        }
        s.restored = true;
        let Some(store) = &self.store else { return };
        let platform = platform_name(m.platform);
        if !self
            .open_handoffs
            .may_hold(store.as_ref(), platform, &m.conversation_key)
            .await
        {
            return;
        }
        match store.open_handoff(platform, &m.conversation_key).await {
            Ok(Some(c)) => {
                s.state = match c.claimed_by {
                    Some(operator) => State::WithOperator { operator },
                    None => State::HandoffRequested,
                };
                tracing::info!(conversation = %c.record.id, "the chat still waits for a human");
                s.conversation_id = Some(c.record.id);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot read whether the chat waits for a human; the bot answers");
            }
        }
    }

    /// The session as the store holds it: another replica may have
    /// answered the chat since this one last did. On a store error the
    /// cached session goes on.
    async fn load_shared(&self, s: &mut Session, m: &IncomingMessage) {
        let Some(store) = &self.store else { return };
        let open = match store
            .open_conversation(platform_name(m.platform), &m.conversation_key)
            .await
        {
            Ok(open) => open,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the chat's conversation; answering from this replica's copy");
                return;
            }
        };
        s.restored = true;
        let Some(c) = open else {
            // Never started, or ended (reset, idle) wherever it was.
            s.end();
            return;
        };
        let last = c
            .messages
            .last()
            .map_or(c.record.started_at, |m| m.created_at);
        let idle_for = (chrono::Utc::now() - last).to_std().unwrap_or_default();
        s.last_active = Instant::now()
            .checked_sub(idle_for)
            .unwrap_or_else(Instant::now);
        s.state = match (c.handoff, c.claimed_by) {
            (crate::store::Handoff::Requested, _) => State::HandoffRequested,
            (crate::store::Handoff::Active, Some(operator)) => State::WithOperator { operator },
            (crate::store::Handoff::Active, None) => State::HandoffRequested,
            _ => State::Active,
        };
        // What the model saw: refused messages never were turns.
        let turns: Vec<&crate::store::MessageRecord> = c
            .messages
            .iter()
            .filter(|m| m.role != Role::System && m.verdict != Some(StoredVerdict::Block))
            .collect();
        s.last_reply = turns
            .iter()
            .rev()
            .find(|m| m.role == Role::Assistant && m.operator_id.is_none())
            .map(|m| m.id.clone());
        s.turns = turns
            .into_iter()
            .map(|m| Message {
                role: m.role,
                content: m.content.clone(),
            })
            .collect();
        s.conversation_id = Some(c.record.id);
    }

    /// Ends the session if it was idle too long (unless it waits for a
    /// human), and opens a conversation in the store if it has none.
    /// Returns the conversation id.
    fn open_conversation(&self, s: &mut Session, m: &IncomingMessage) -> String {
        if s.last_active.elapsed() >= self.durations.idle
            && !s.with_humans()
            && let Some(old) = s.end()
        {
            self.record.end(&old);
        }
        s.last_active = Instant::now();
        if let Some(id) = &s.conversation_id {
            return id.clone();
        }
        let id = self.record.open(
            m.platform,
            &m.conversation_key,
            &m.user_key,
            s.profile.topic.as_deref(),
            s.profile.style.as_deref(),
        );
        s.conversation_id = Some(id.clone());
        id
    }

    /// A turn of the HTTP API: `opts` carries the client's conversation
    /// and sampling; the outcome gives its `finish_reason` and `usage`.
    pub async fn complete(
        &self,
        m: IncomingMessage,
        opts: TurnOptions,
        sink: EventSink,
    ) -> TurnOutcome {
        let (platform, key) = (m.platform, m.conversation_key.clone());
        let out = self.on_message(m, sink, Some(&opts)).await;
        // The client sends the whole conversation with every turn: a copy
        // kept here would hold memory for each API conversation until it
        // goes idle, for nothing.
        if let Some(s) = self.sessions.peek(platform, &key) {
            s.lock().await.turns = Vec::new();
        }
        out
    }

    async fn on_message(
        &self,
        m: IncomingMessage,
        sink: EventSink,
        opts: Option<&TurnOptions>,
    ) -> TurnOutcome {
        let mut out = TurnOutcome::default();
        let started = Instant::now();
        self.sweep_if_due();
        // The HTTP server limits API turns per key before they get here.
        if opts.is_none() && !self.admit(&m, &sink) {
            return out;
        }
        let session = self.session_of(m.platform, &m.conversation_key);
        let mut s = session.lock().await;
        self.restore_session(&mut s, &m).await;
        let conversation = self.open_conversation(&mut s, &m);
        if let Some(history) = opts.and_then(|o| o.history.as_ref()) {
            // The API's client holds the conversation; the bot's persona
            // stays the operator's.
            s.turns = history
                .iter()
                .filter(|m| m.role != Role::System)
                .cloned()
                .collect();
        }

        // 1. validate
        let input = match validate::input(&m.text, self.cfg.max_input_chars) {
            Ok(i) => i,
            Err(key) => {
                if s.state.bot_answers() {
                    deliver::notice(&sink, self.text(s.lang, key));
                }
                return out;
            }
        };
        s.lang = input.lang;
        if !s.state.bot_answers() {
            // The operator reads it in the console; the bot stays quiet.
            self.record.user(&conversation, &input.text, None);
            s.turns.push(Message {
                role: Role::User,
                content: input.text.clone(),
            });
            self.feed
                .announce(operator::ConsoleEventKind::Message, &conversation);
            return out;
        }
        let _ = sink.send(ChatEvent::Typing);

        // 2. moderate the message
        match moderate::input(&self.gate, &input.text).await {
            InputCheck::Unavailable(reason) => {
                tracing::error!(%conversation, %reason, "cannot moderate a message; not answering it");
                self.record.user(&conversation, &input.text, None);
                deliver::notice(&sink, self.text(s.lang, TextKey::Apology));
                return out;
            }
            InputCheck::Blocked(v) => {
                let id =
                    self.record
                        .user(&conversation, &input.text, Some((&v, StoredVerdict::Block)));
                self.record.flags(&conversation, &id, &v, "input");
                tracing::info!(%conversation, reasons = ?v.reasons(), "message flagged; refused");
                deliver::plain(&sink, self.text(s.lang, TextKey::InputRefusal));
                out.finish = Finish::ContentFilter;
                return out;
            }
            InputCheck::Allowed(v) => {
                let verdict = v.as_ref().map(|v| (v, StoredVerdict::Allow));
                self.record.user(&conversation, &input.text, verdict);
            }
        }
        let previous = s
            .turns
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .map(|m| m.content.clone());
        s.turns.push(Message {
            role: Role::User,
            content: input.text.clone(),
        });

        // A greeting, thanks or goodbye is answered as such: searched, its
        // words found passages ("how's your day going": shipping).
        let pleasantry = self
            .knowledge
            .as_ref()
            .and_then(|_| pleasantry::detect(&input.text));
        if let Some(p) = pleasantry {
            let reply = Canned::Pleasantry(p);
            self.finish(
                &mut s,
                &sink,
                &conversation,
                started,
                input.cut,
                m.platform,
                reply,
            );
            return out;
        }

        // 3. retrieve
        let grounding_started = Instant::now();
        let grounded = match &self.knowledge {
            None => None,
            Some(k) => match retrieve::retrieve(k, &input.text, previous.as_deref()) {
                Ok(g) => Some(g),
                Err(e) => {
                    tracing::error!(%conversation, error = %e, "cannot search the knowledge base; not answering");
                    deliver::notice(&sink, self.text(s.lang, TextKey::Apology));
                    return out;
                }
            },
        };
        if let Some(g) = grounded.as_ref().filter(|g| !g.answerable && !g.smalltalk) {
            // Nothing the model could say would rest on the documents.
            let reply = Canned::Abstain(
                grounding(g, ReplyKind::Abstained),
                grounding_started.elapsed(),
            );
            self.finish(
                &mut s,
                &sink,
                &conversation,
                started,
                input.cut,
                m.platform,
                reply,
            );
            return out;
        }
        let evidence = grounded.as_ref().map(|g| {
            Evidence::new(
                g,
                s.turns
                    .iter()
                    .filter(|m| m.role == Role::User)
                    .map(|m| m.content.as_str()),
                self.text(s.lang, TextKey::Abstain),
            )
        });
        let mut grounding_time = grounding_started.elapsed();

        // 4. generate, streamed through 5. the check
        let pool = self.engine.current();
        let mut dialog = self.dialog(&s);
        if let Some(g) = grounded.as_ref().filter(|g| g.answerable) {
            dialog.context.clone_from(&g.context);
        }
        let mut params = self.params(pool.defaults(), s.turns.len());
        if let Some(o) = opts {
            o.apply(&mut params);
        }
        if grounded.as_ref().is_some_and(Grounded::confident) {
            // The guard would refuse the abstain text anyway.
            let abstain = self.text(s.lang, TextKey::Abstain);
            params.avoid_openings.push(abstain.to_string());
        }
        let mut stream = Streamer::new(
            &self.gate,
            evidence.as_ref(),
            &sink,
            self.cfg.stream_chunk_chars,
        );
        let redraft = evidence.as_ref().filter(|_| self.cfg.drafts > 1).map(|ev| {
            let r = generate::Redraft {
                drafts: self.cfg.drafts,
                gate: &self.gate,
                evidence: ev,
                chunk_chars: self.cfg.stream_chunk_chars,
                deadline: started + self.durations.reply_timeout,
            };
            (r, dialog.clone(), params.clone())
        });
        let generated = generate::reply(
            &pool,
            dialog,
            params,
            self.durations.reply_timeout,
            &mut stream,
            &sink,
        )
        .await;
        let generated = match (generated, redraft) {
            (Ok(g), Some((r, dialog, params))) => {
                Ok(generate::redraft(&pool, &dialog, params, &r, &sink, g, &mut stream).await)
            }
            (generated, _) => generated,
        };
        let generated = match generated {
            Ok(g) => g,
            Err(e) => {
                let outcome = match e {
                    GenerateError::Timeout(_) => "timed_out",
                    GenerateError::Engine(EngineError::Busy(_)) => {
                        out.busy = true;
                        "busy"
                    }
                    _ => "failed",
                };
                // A full queue is load, not a fault: one warning per
                // refusal, not an error.
                if out.busy {
                    tracing::warn!(%conversation, error = %e, "answered busy");
                } else {
                    tracing::error!(%conversation, error = %e, "reply failed");
                }
                crate::http::metrics::reply(
                    platform_name(m.platform),
                    outcome,
                    pool.model_version(),
                );
                let key = match e {
                    GenerateError::Engine(EngineError::Busy(_)) => TextKey::Busy,
                    _ => TextKey::Apology,
                };
                deliver::notice(&sink, self.text(s.lang, key));
                return out;
            }
        };
        crate::http::metrics::redrafts(
            platform_name(m.platform),
            pool.model_version(),
            generated.drafts - 1,
        );
        let g = &generated.generation;
        out.prompt_tokens = g.prompt_tokens;
        out.model_time = generated.model_time;
        out.completion_tokens = g.tokens.len();
        if matches!(g.stop, StopReason::MaxTokens | StopReason::Context) {
            out.finish = Finish::Length;
        }
        let text = match g.text.trim() {
            "" => self.text(s.lang, TextKey::EmptyReply),
            t => t,
        };
        let checked = check::reply(&self.gate, text, stream.flagged.take()).await;

        // 6. the fact guard, on what moderation let through
        let mut kind = None;
        let guarded;
        let (sent, rateable, verdict, unchecked) = match &checked {
            Checked::Pass { text, verdict } => {
                let verdict = verdict.as_ref().map(|v| (v, StoredVerdict::Allow));
                match (&grounded, &evidence) {
                    (Some(g), Some(ev)) => {
                        let at = Instant::now();
                        let d = guard::decide(g, ev, text);
                        kind = Some(d.kind());
                        guarded = self.guarded(g, &d, text, s.lang);
                        grounding_time += at.elapsed();
                        (guarded.as_str(), true, verdict, false)
                    }
                    _ => (text.as_str(), true, verdict, false),
                }
            }
            Checked::Flagged(v) => {
                // The model's words were flagged, but a confident question
                // can still get the team's own passage (checked too).
                let answer = match &grounded {
                    Some(g) => {
                        guard::passage_answer(g).map(|d| (self.guarded(g, &d, text, s.lang), d))
                    }
                    None => None,
                };
                let answer = match answer {
                    Some((a, d)) => match check::reply(&self.gate, &a, None).await {
                        Checked::Pass { .. } => Some((a, d)),
                        _ => None,
                    },
                    None => None,
                };
                match answer {
                    Some((a, d)) => {
                        tracing::info!(%conversation, reasons = ?v.reasons(), "reply flagged; the passage's answer goes instead");
                        kind = Some(d.kind());
                        guarded = a;
                        (guarded.as_str(), true, None, false)
                    }
                    None => {
                        out.finish = Finish::ContentFilter;
                        tracing::warn!(%conversation, reasons = ?v.reasons(), "reply flagged; replaced by the safe reply");
                        (
                            self.text(s.lang, TextKey::SafeReply),
                            false,
                            Some((v, StoredVerdict::Block)),
                            false,
                        )
                    }
                }
            }
            Checked::Unchecked(reason) => {
                tracing::error!(%conversation, %reason, "cannot moderate the reply; not sending it");
                (self.text(s.lang, TextKey::Apology), false, None, true)
            }
        };
        let grounding = match (&grounded, kind) {
            (Some(gr), Some(k)) => Some(grounding(gr, k)),
            _ => None,
        };
        let message_id = self.record.reply(&ReplyLog {
            conversation: &conversation,
            // What the user saw is what later fine-tuning learns from; a
            // replaced reply is kept as written, marked blocked.
            content: if rateable { sent } else { text },
            model_version: pool.model_version(),
            prompt_tokens: g.prompt_tokens,
            completion_tokens: g.tokens.len(),
            verdict,
            unchecked,
            latency: started.elapsed(),
            grounding: grounding.clone(),
        });
        if let Checked::Flagged(v) = &checked {
            self.record.flags(&conversation, &message_id, v, "output");
        }
        s.turns.push(Message {
            role: Role::Assistant,
            content: sent.to_string(),
        });
        // The API has no feedback: its replies need no index entry.
        if rateable && m.platform != Platform::Api {
            s.last_reply = Some(message_id.clone());
            self.replies
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(message_id.clone(), conversation.clone());
        }
        let outcome = match (&checked, kind) {
            (Checked::Flagged(_), _) => "moderated",
            (Checked::Unchecked(_), _) => "failed",
            (_, Some(ReplyKind::Extracted)) => "guard_replaced",
            (_, Some(ReplyKind::Abstained)) => "abstained",
            _ => "sent",
        };
        crate::http::metrics::reply(platform_name(m.platform), outcome, pool.model_version());
        let cut = input.cut || g.prompt_cut_tokens > 0;
        let prefix = cut.then(|| self.text(s.lang, TextKey::LongMessage));
        deliver::reply(&sink, prefix, sent, &message_id, rateable);
        self.traces.push(ReplyTrace {
            total: started.elapsed(),
            model: generated.model_time,
            grounding_time,
            grounding,
            draft: self.traces.kept().then(|| text.to_string()),
            drafts: generated.drafts,
            pleasantry: false,
        });
        out
    }

    /// The text sent for a guard decision, with its citation when asked.
    fn guarded(&self, g: &Grounded, d: &Decision, reply: &str, lang: &str) -> String {
        let cite =
            |passage: Option<usize>, text: String| match (&self.knowledge, &g.loaded, passage) {
                (Some(k), Some(l), Some(p)) => match retrieve::citation(k, l, p, self.cfg.cite) {
                    Some(source) => format!(
                        "{text}\n\n{}",
                        self.texts
                            .fill(lang, TextKey::Source, &[("source", &source)])
                    ),
                    None => text,
                },
                _ => text,
            };
        match d {
            Decision::Generated { cite: c } => cite(*c, reply.to_string()),
            Decision::Extracted { text, passage } => cite(
                Some(*passage),
                self.texts.fill(lang, TextKey::Extract, &[("text", text)]),
            ),
            Decision::Abstained => self.text(lang, TextKey::Abstain).to_string(),
        }
    }

    /// Records and delivers a reply made without the model (`reply`); `cut`:
    /// the message was cut to fit, which the reply says first.
    #[allow(clippy::too_many_arguments)]
    fn finish(
        &self,
        s: &mut Session,
        sink: &EventSink,
        conversation: &str,
        started: Instant,
        cut: bool,
        platform: Platform,
        reply: Canned,
    ) {
        let (key, grounding, grounding_time, outcome) = match reply {
            Canned::Abstain(g, took) => (TextKey::Abstain, Some(g), took, "abstained"),
            Canned::Pleasantry(p) => (p.reply(), None, Duration::ZERO, "pleasantry"),
        };
        let sent = self.text(s.lang, key).to_string();
        let sent = sent.as_str();
        let message_id = self.record.reply(&ReplyLog {
            conversation,
            content: sent,
            model_version: "",
            prompt_tokens: 0,
            completion_tokens: 0,
            verdict: None,
            unchecked: false,
            latency: started.elapsed(),
            grounding: grounding.clone(),
        });
        s.turns.push(Message {
            role: Role::Assistant,
            content: sent.to_string(),
        });
        s.last_reply = Some(message_id.clone());
        self.replies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(message_id.clone(), conversation.to_string());
        let prefix = cut.then(|| self.text(s.lang, TextKey::LongMessage));
        deliver::reply(sink, prefix, sent, &message_id, true);
        self.traces.push(ReplyTrace {
            total: started.elapsed(),
            model: Duration::ZERO,
            grounding_time,
            grounding,
            draft: None,
            drafts: 0,
            pleasantry: outcome == "pleasantry",
        });
        let version = self.engine.current().model_version().to_string();
        crate::http::metrics::reply(platform_name(platform), outcome, &version);
    }

    /// Rate limit: `false` when the message is not taken (the user is told
    /// once per flood).
    fn admit(&self, m: &IncomingMessage, sink: &EventSink) -> bool {
        let user = format!("{}:{}", platform_name(m.platform), m.user_key);
        match self.limiter.admit(&user) {
            Admit::Yes => true,
            Admit::Notify(wait) => {
                tracing::info!(platform = platform_name(m.platform), "user rate-limited");
                let seconds = wait.as_secs().max(1).to_string();
                let lang = detect_lang(&m.text);
                let text = self
                    .texts
                    .fill(lang, TextKey::RateLimited, &[("seconds", &seconds)]);
                deliver::notice(sink, &text);
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
            ..Default::default()
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
}

/// What the store keeps of a reply's grounding.
fn grounding(g: &Grounded, kind: ReplyKind) -> Grounding {
    Grounding {
        kind,
        passages: g.passage_ids(),
        confidence: g.confidence,
    }
}

impl ChatHandler for Pipeline {
    fn handle(&self, request: ChatRequest, events: EventSink) -> HandlerFuture<'_> {
        Box::pin(async move {
            match request {
                ChatRequest::Message(m) => {
                    self.on_message(m, events, None).await;
                }
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

/// A reply made without the model.
enum Canned {
    /// The handoff offer: the knowledge base has no confident answer
    /// (what retrieval found, and how long it took).
    Abstain(Grounding, Duration),
    /// The reply to a greeting, thanks or goodbye.
    Pleasantry(pleasantry::Pleasantry),
}

#[cfg(test)]
mod tests;
