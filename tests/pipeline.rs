//! The chat pipeline end to end with a real tiny model, a real moderation
//! model and a real SQLite store, driven through the `ChatHandler` trait as
//! an adapter drives it: streaming, output and input moderation (failing
//! closed), commands and handoff, rate limiting, long and empty messages,
//! timeouts and generation errors, idle sessions, feedback, hot reload.
//!
//! Needs the ONNX Runtime library that `./scripts/setup.sh` fetches (or
//! `ORT_DYLIB_PATH`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chatforge::moderation::{Blocklist, Moderator, PiiAction, Rules};
use chatforge::pipeline::{ChannelProfile, Engine, Gate, Pipeline, PipelineConfig, TextKey, Texts};

use chatforge::store::{
    self, ConversationStore, ExportFilter, Handoff, StoreOptions, StoredConversation,
    UserKeyHasher, Verdict, Writer, WriterConfig,
};
use chatforge::text::Role;
use chatforge_channel::{
    ChatEvent, ChatHandler, ChatRequest, Command, Feedback, IncomingMessage, Platform, Rating,
    event_channel,
};

mod common;

use common::{ASK_BLOCKED as QUESTION, MAX_NEW, cpu};

struct Fixture {
    bundle: PathBuf,
    moderation: PathBuf,
    /// A word the tiny model says in its greedy reply to [`QUESTION`].
    spoken_word: String,
}

fn fixture() -> Fixture {
    let f = common::chat_fixture();
    Fixture {
        bundle: f.bundle.clone(),
        moderation: f.moderation.clone(),
        spoken_word: f.blocked_word.clone(),
    }
}

fn config() -> PipelineConfig {
    PipelineConfig {
        max_new_tokens: Some(MAX_NEW),
        // Greedy replies so that the blocked-word test knows what comes.
        temperature: Some(0.0),
        ..PipelineConfig::default()
    }
}

struct Harness {
    pipeline: Arc<Pipeline>,
    writer: Option<Writer>,
    store: Arc<dyn ConversationStore>,
    _dir: tempfile::TempDir,
}

impl Harness {
    async fn new(cfg: PipelineConfig, gate: impl FnOnce(&Fixture) -> Gate) -> Self {
        let f = fixture();
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("chat.db").display());
        let store = store::connect_and_migrate(&url, &StoreOptions::default())
            .await
            .unwrap();
        let writer = Writer::spawn(
            store.clone(),
            UserKeyHasher::ephemeral(),
            WriterConfig::new(dir.path().join("spill")),
        )
        .unwrap();
        let bundle = f.bundle.clone();
        let engine = tokio::task::spawn_blocking(move || Engine::open(&bundle, &cpu(), 1))
            .await
            .unwrap()
            .unwrap();
        let pipeline = Pipeline::new(cfg, Arc::new(engine), gate(&f), writer.handle()).unwrap();
        pipeline.keep_traces();
        Self {
            pipeline: Arc::new(pipeline),
            writer: Some(writer),
            store,
            _dir: dir,
        }
    }

    async fn send(&self, req: ChatRequest) -> Vec<ChatEvent> {
        let (sink, mut stream) = event_channel();
        self.pipeline.handle(req, sink).await;
        let mut out = Vec::new();
        while let Some(e) = stream.next().await {
            out.push(e);
        }
        out
    }

    async fn say(&self, conversation: &str, user: &str, text: &str) -> Vec<ChatEvent> {
        self.send(message(conversation, user, text)).await
    }

    async fn command(&self, conversation: &str, user: &str, command: Command) -> Vec<ChatEvent> {
        let mut m = incoming(conversation, user, "/cmd");
        m.text = format!("/{command:?}").to_lowercase();
        self.send(ChatRequest::Command {
            message: m,
            command,
        })
        .await
    }

    /// Every stored conversation, after the writer caught up.
    async fn stored(&self) -> Vec<StoredConversation> {
        self.writer
            .as_ref()
            .unwrap()
            .handle()
            .flush()
            .await
            .unwrap();
        self.store
            .select(&ExportFilter::default(), None, 1000)
            .await
            .unwrap()
    }

    async fn shutdown(mut self) {
        self.writer.take().unwrap().shutdown().await.unwrap();
    }
}

fn moderator(f: &Fixture, blocklist: &[&str]) -> Gate {
    let m = Moderator::open(&f.moderation, &cpu())
        .unwrap()
        .with_rules(Rules {
            blocklist: Blocklist::new(blocklist),
            pii: PiiAction::Redact,
            ..Rules::default()
        });
    Gate::new(Arc::new(m))
}

/// The built-in English text for `key`.
fn text(key: TextKey) -> String {
    Texts::default().get("en", key).to_string()
}

fn incoming(conversation: &str, user: &str, text: &str) -> IncomingMessage {
    IncomingMessage {
        platform: Platform::Telegram,
        conversation_key: conversation.into(),
        user_key: user.into(),
        text: text.into(),
        reply_to: None,
        is_direct: true,
    }
}

fn message(conversation: &str, user: &str, text: &str) -> ChatRequest {
    ChatRequest::Message(incoming(conversation, user, text))
}

fn reply_of(events: &[ChatEvent]) -> Option<(&str, &str)> {
    events.iter().find_map(|e| match e {
        ChatEvent::Reply { text, message_id } => Some((text.as_str(), message_id.as_str())),
        _ => None,
    })
}

fn notices(events: &[ChatEvent]) -> Vec<&str> {
    events
        .iter()
        .filter_map(|e| match e {
            ChatEvent::Error { notice } => Some(notice.as_str()),
            _ => None,
        })
        .collect()
}

fn streamed(events: &[ChatEvent]) -> String {
    events.iter().filter_map(ChatEvent::delta).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_reply_streams_is_moderated_and_logged() {
    let h = Harness::new(config(), |f| moderator(f, &[])).await;
    let events = h.say("c1", "u1", QUESTION).await;
    assert_eq!(events.first(), Some(&ChatEvent::Typing), "{events:?}");
    let (text, id) = reply_of(&events).expect("a reply");
    assert!(!text.trim().is_empty());
    // Streamed pieces are a prefix of the final text (moderation released them).
    let shown = streamed(&events);
    assert!(text.starts_with(shown.trim_end()), "{shown:?} vs {text:?}");
    assert!(
        matches!(events.last(), Some(ChatEvent::FeedbackRequest { message_id }) if message_id == id)
    );

    // A rating through the button path lands on that reply.
    let fb = h
        .send(ChatRequest::Feedback(Feedback {
            platform: Platform::Telegram,
            conversation_key: "c1".into(),
            user_key: "u1".into(),
            message_id: id.to_string(),
            rating: Rating::Good,
            comment: None,
        }))
        .await;
    assert!(fb.is_empty(), "{fb:?}");

    let convs = h.stored().await;
    assert_eq!(convs.len(), 1);
    let c = &convs[0];
    assert_eq!(c.record.platform, "telegram");
    assert_eq!(c.record.channel, "c1");
    // Only the keyed hash of the user id is stored.
    assert_ne!(c.record.user_key.as_str(), "u1");
    assert_eq!(c.messages.len(), 2);
    let (user, bot) = (&c.messages[0], &c.messages[1]);
    assert_eq!((user.role, user.content.as_str()), (Role::User, QUESTION));
    assert_eq!(user.verdict, Some(Verdict::Allow));
    assert!(user.scores.contains_key("offensive"));
    assert_eq!(bot.id, id);
    assert_eq!(bot.content, text);
    assert_eq!(bot.verdict, Some(Verdict::Allow));
    let version = Engine::open(&fixture().bundle, &cpu(), 1)
        .unwrap()
        .current()
        .model_version()
        .to_string();
    assert_eq!(bot.model_version.as_deref(), Some(version.as_str()));
    assert!(bot.latency_ms.is_some());
    assert!(bot.prompt_tokens.unwrap() > 0 && bot.completion_tokens.unwrap() > 0);
    let feedback = h.store.feedback(&c.record.id).await.unwrap();
    assert_eq!(feedback.len(), 1);
    assert_eq!(feedback[0].rating, 5);
    assert_eq!(feedback[0].message_id.as_deref(), Some(id));
    let timings = h.pipeline.take_traces();
    assert_eq!(timings.len(), 1);
    assert!(timings[0].model <= timings[0].total);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_flagged_reply_is_replaced_and_logged() {
    let word = fixture().spoken_word.clone();
    let cfg = config();
    let safe = text(TextKey::SafeReply);
    let h = Harness::new(cfg, |f| moderator(f, &[word.as_str()])).await;
    let events = h.say("c2", "u2", QUESTION).await;
    let (text, _) = reply_of(&events).expect("a reply");
    assert_eq!(text, safe);
    // Nothing with the blocked word was shown while streaming.
    assert!(
        !streamed(&events).to_lowercase().contains(&word),
        "{events:?}"
    );
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, ChatEvent::FeedbackRequest { .. }))
    );
    let convs = h.stored().await;
    let bot = &convs[0].messages[1];
    assert_eq!(bot.verdict, Some(Verdict::Block));
    assert!(
        bot.content.to_lowercase().contains(&word),
        "the original is kept for review"
    );
    let events = h
        .store
        .moderation_events(&convs[0].record.id)
        .await
        .unwrap();
    assert!(events.iter().any(|e| e.category == "blocklist"
        && e.message_id.as_deref() == Some(bot.id.as_str())
        && e.detail.as_deref().is_some_and(|d| d.starts_with("output"))));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_flagged_message_is_refused_without_generating() {
    let cfg = config();
    let refusal = text(TextKey::InputRefusal);
    let h = Harness::new(cfg, |f| moderator(f, &[])).await;
    let text = format!("{} you idiot moron loser", common::INSULTS[2]);
    let events = h.say("c3", "u3", &text).await;
    assert_eq!(reply_of(&events).map(|r| r.0), Some(refusal.as_str()));
    assert_eq!(streamed(&events), "");
    let convs = h.stored().await;
    assert_eq!(convs[0].messages.len(), 1, "no reply was generated");
    assert_eq!(convs[0].messages[0].verdict, Some(Verdict::Block));
    let events = h
        .store
        .moderation_events(&convs[0].record.id)
        .await
        .unwrap();
    assert!(
        events.iter().any(|e| e.category == "offensive"),
        "{events:?}"
    );
    assert!(h.pipeline.take_traces().is_empty());
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_moderation_unavailable_fails_closed() {
    let cfg = config();
    let apology = text(TextKey::Apology);
    let h = Harness::new(cfg, |_| Gate::unavailable("moderation.onnx: missing")).await;
    let events = h.say("c4", "u4", QUESTION).await;
    assert_eq!(notices(&events), vec![apology.as_str()]);
    assert!(reply_of(&events).is_none());
    assert_eq!(streamed(&events), "");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_commands_handoff_and_reset() {
    let mut cfg = config();
    cfg.rate_limit.burst = 100;
    let greeting = text(TextKey::Greeting);
    let h = Harness::new(cfg, |f| moderator(f, &[])).await;
    let start = h.command("c5", "u5", Command::Start).await;
    assert_eq!(reply_of(&start).map(|r| r.0), Some(greeting.as_str()));
    let help = h.command("c5", "u5", Command::Help).await;
    assert!(reply_of(&help).unwrap().0.contains("/human"));
    let none = h
        .command(
            "c5",
            "u5",
            Command::Feedback {
                rating: Rating::Bad,
                comment: None,
            },
        )
        .await;
    assert_eq!(
        notices(&none),
        vec!["There is no reply of mine to rate yet."]
    );

    let first = h.say("c5", "u5", QUESTION).await;
    let (_, first_id) = reply_of(&first).unwrap();
    let rated = h
        .command(
            "c5",
            "u5",
            Command::Feedback {
                rating: Rating::Bad,
                comment: Some("too vague".into()),
            },
        )
        .await;
    assert!(reply_of(&rated).unwrap().0.contains("Thanks"));

    let human = h.command("c5", "u5", Command::Human).await;
    assert!(matches!(&human[..], [ChatEvent::Handoff { notice }] if notice.contains("/bot")));
    // The bot stays quiet while an operator has the conversation.
    let quiet = h.say("c5", "u5", "hello? anyone?").await;
    assert!(quiet.is_empty(), "{quiet:?}");
    let back = h.command("c5", "u5", Command::Bot).await;
    assert!(matches!(&back[..], [ChatEvent::Handoff { .. }]));
    assert!(reply_of(&h.say("c5", "u5", QUESTION).await).is_some());

    let reset = h.command("c5", "u5", Command::Reset).await;
    assert!(reply_of(&reset).unwrap().0.contains("forgotten"));
    assert!(reply_of(&h.say("c5", "u5", QUESTION).await).is_some());

    let unknown = h
        .command(
            "c5",
            "u5",
            Command::Unknown {
                name: "frobnicate".into(),
            },
        )
        .await;
    assert!(notices(&unknown)[0].contains("/frobnicate"));
    let invalid = h
        .command(
            "c5",
            "u5",
            Command::Invalid {
                name: "feedback".into(),
                usage: "/feedback good|bad [comment]".into(),
            },
        )
        .await;
    assert_eq!(
        notices(&invalid),
        vec!["Usage: /feedback good|bad [comment]"]
    );

    let convs = h.stored().await;
    assert_eq!(convs.len(), 2, "reset starts a new conversation");
    let first_conv = &convs[0];
    assert!(first_conv.ended_at.is_some());
    assert_eq!(first_conv.handoff, Handoff::Resolved);
    // user, bot, the message the operator got, user, bot
    assert_eq!(first_conv.messages.len(), 5);
    assert_eq!(first_conv.messages[2].content, "hello? anyone?");
    let fb = h.store.feedback(&first_conv.record.id).await.unwrap();
    assert_eq!(fb.len(), 1);
    assert_eq!(
        (fb[0].rating, fb[0].comment.as_deref()),
        (1, Some("too vague"))
    );
    assert_eq!(fb[0].message_id.as_deref(), Some(first_id));
    assert_eq!(convs[1].messages.len(), 2);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_long_empty_and_flooding_messages() {
    let mut cfg = config();
    cfg.rate_limit.burst = 3;
    cfg.rate_limit.per_seconds = 600.0;
    let h = Harness::new(cfg, |f| moderator(f, &[])).await;
    // 50 kB: answered, cut to the context, and the user is told.
    let long = "Where is my parcel? I ordered boots last week. ".repeat(1100);
    assert!(long.len() > 50_000);
    let events = h.say("c6", "u6", &long).await;
    let (text, _) = reply_of(&events).expect("a reply to a long message");
    assert!(text.starts_with("(Your message was very long"), "{text}");
    // Empty (or attachment-only) messages get a notice, not silence.
    let empty = h.say("c6", "u6", "   ").await;
    assert!(notices(&empty)[0].contains("only read text"));
    // One more is allowed, then a flood: one notice, the rest dropped.
    assert!(reply_of(&h.say("c6", "u6", QUESTION).await).is_some());
    let mut told = 0;
    for _ in 0..10 {
        let e = h.say("c6", "u6", QUESTION).await;
        assert!(reply_of(&e).is_none());
        told += notices(&e).iter().filter(|n| n.contains("faster")).count();
    }
    assert_eq!(told, 1, "one notice per flood");
    // Another user is unaffected.
    assert!(reply_of(&h.say("c6", "u7", QUESTION).await).is_some());
    let convs = h.stored().await;
    let stored_long = &convs[0].messages[0].content;
    assert_eq!(stored_long.chars().count(), config().max_input_chars);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_timeout_and_generation_error_apologise() {
    let mut cfg = config();
    cfg.reply_timeout_secs = 0.000_001;
    let apology = text(TextKey::Apology);
    let h = Harness::new(cfg, |f| moderator(f, &[])).await;
    let events = h.say("c7", "u7", QUESTION).await;
    assert_eq!(notices(&events), vec![apology.as_str()]);
    assert!(reply_of(&events).is_none());
    // The pipeline keeps working after a timeout.
    h.shutdown().await;

    // A bundle whose generation.json names a stop token the tokenizer lacks
    // fails at generation time.
    let f = fixture();
    let broken = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&f.bundle).unwrap() {
        let p = entry.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, broken.path().join(p.file_name().unwrap())).unwrap();
        }
    }
    let gen_path = broken.path().join("generation.json");
    let mut defaults: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&gen_path).unwrap()).unwrap();
    defaults["stop_tokens"] = serde_json::json!(["<|no-such-token|>"]);
    std::fs::write(&gen_path, defaults.to_string()).unwrap();
    let h = Harness::new(config(), |f| moderator(f, &[])).await;
    let dir = broken.path().to_path_buf();
    let engine = h.pipeline.engine().clone();
    tokio::task::spawn_blocking(move || engine.reload(&dir))
        .await
        .unwrap()
        .unwrap();
    let events = h.say("c8", "u8", QUESTION).await;
    assert_eq!(
        notices(&events),
        vec![text(TextKey::Apology).as_str()],
        "{events:?}"
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_idle_session_ends_and_profile_tags_apply() {
    let mut cfg = config();
    cfg.idle_minutes = 0.2 / 60.0;
    cfg.channels = vec![ChannelProfile {
        platform: Platform::Telegram,
        conversation: Some("c9".into()),
        persona: Some("Be brief.".into()),
        topic: Some("shipping".into()),
        style: Some("friendly".into()),
    }];
    let h = Harness::new(cfg, |f| moderator(f, &[])).await;
    assert!(reply_of(&h.say("c9", "u9", QUESTION).await).is_some());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(reply_of(&h.say("c9", "u9", QUESTION).await).is_some());
    let convs = h.stored().await;
    assert_eq!(convs.len(), 2, "the idle session ended and a new one began");
    assert!(convs[0].ended_at.is_some());
    assert!(convs[1].ended_at.is_none());
    for c in &convs {
        assert_eq!(c.record.topic.as_deref(), Some("shipping"));
        assert_eq!(c.record.style.as_deref(), Some("friendly"));
        assert_eq!(c.messages.len(), 2);
    }
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_reload_switches_model_version_for_new_replies() {
    let h = Harness::new(config(), |f| moderator(f, &[])).await;
    let v1 = h.pipeline.engine().current().model_version().to_string();
    // A second bundle: the same weights re-written with a new version.
    let tmp = tempfile::tempdir().unwrap();
    let second = tmp.path().join("v2");
    common::pretrain_tiny_bundle(&second, 5);
    let dir: PathBuf = second.clone();
    let engine = h.pipeline.engine().clone();
    let v2 = tokio::task::spawn_blocking(move || engine.reload(&dir))
        .await
        .unwrap()
        .unwrap();
    assert_ne!(v1, v2);
    assert!(reply_of(&h.say("c10", "u10", QUESTION).await).is_some());
    let convs = h.stored().await;
    assert_eq!(
        convs[0].messages[1].model_version.as_deref(),
        Some(v2.as_str())
    );
    // A broken bundle leaves the current model in place.
    let err = h.pipeline.engine().reload(Path::new("/nonexistent/bundle"));
    assert!(err.is_err());
    assert_eq!(h.pipeline.engine().current().model_version(), v2);
    h.shutdown().await;
}
