//! The pipeline's stages wired together, with a scripted backend and a
//! scripted moderation checker (tests/pipeline.rs runs the same paths with
//! a real tiny model and moderation model).

use std::path::Path;
use std::sync::Arc;

use chatforge_channel::{
    ChatEvent, ChatRequest, Command, IncomingMessage, Platform, event_channel,
};

use super::engine::testing;
use super::gate::testing::WordChecker;
use super::*;
use crate::store::{
    self, ConversationStore, ExportFilter, Handoff, StoreOptions, StoredConversation,
    UserKeyHasher, Writer, WriterConfig,
};

struct Harness {
    pipeline: Pipeline,
    writer: Writer,
    store: Arc<dyn ConversationStore>,
    _dir: tempfile::TempDir,
}

fn echo(q: &str) -> String {
    format!("You asked about {q}. Here is the answer.")
}

impl Harness {
    async fn new(cfg: PipelineConfig, gate: Gate) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let store = store::connect_and_migrate(&url, &StoreOptions::default())
            .await
            .unwrap();
        let writer = Writer::spawn(
            store.clone(),
            UserKeyHasher::ephemeral(),
            WriterConfig::new(dir.path().join("spill")),
        )
        .unwrap();
        let engine =
            Engine::with_opener(Path::new("scripted"), testing::opener("v1", echo), 1).unwrap();
        let pipeline = Pipeline::new(cfg, Arc::new(engine), gate, writer.handle()).unwrap();
        Self {
            pipeline,
            writer,
            store,
            _dir: dir,
        }
    }

    async fn say(&self, conversation: &str, text: &str) -> Vec<ChatEvent> {
        self.send(ChatRequest::Message(incoming(conversation, text)))
            .await
    }

    async fn command(&self, conversation: &str, command: Command) -> Vec<ChatEvent> {
        self.send(ChatRequest::Command {
            message: incoming(conversation, "/cmd"),
            command,
        })
        .await
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

    async fn stored(&self) -> Vec<StoredConversation> {
        self.writer.handle().flush().await.unwrap();
        self.store
            .select(&ExportFilter::default(), None, 100)
            .await
            .unwrap()
    }
}

fn incoming(conversation: &str, text: &str) -> IncomingMessage {
    IncomingMessage {
        platform: Platform::Telegram,
        conversation_key: conversation.into(),
        user_key: format!("user-{conversation}"),
        text: text.into(),
        reply_to: None,
        is_direct: true,
    }
}

fn reply_text(events: &[ChatEvent]) -> Option<&str> {
    events.iter().find_map(|e| match e {
        ChatEvent::Reply { text, .. } => Some(text.as_str()),
        _ => None,
    })
}

fn notice(events: &[ChatEvent]) -> Option<&str> {
    events.iter().find_map(|e| match e {
        ChatEvent::Error { notice } | ChatEvent::Handoff { notice } => Some(notice.as_str()),
        _ => None,
    })
}

fn gate(word: &str) -> Gate {
    Gate::new(WordChecker::new(word))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_a_turn_passes_every_stage_and_is_recorded() {
    let h = Harness::new(PipelineConfig::default(), gate("darn")).await;
    let events = h.say("1", "  shipping  ").await;
    assert_eq!(events[0], ChatEvent::Typing);
    assert_eq!(reply_text(&events), Some(echo("shipping").as_str()));
    assert!(
        events
            .iter()
            .any(|e| matches!(e, ChatEvent::FeedbackRequest { .. }))
    );
    let stored = h.stored().await;
    assert_eq!(stored.len(), 1);
    let m = &stored[0].messages;
    assert_eq!(m[0].content, "shipping");
    assert_eq!(m[1].content, echo("shipping"));
    assert_eq!(m[1].model_version.as_deref(), Some("v1"));
    assert_eq!(m[1].verdict, Some(crate::store::Verdict::Allow));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_generator_panic_apologises_and_the_next_message_is_answered() {
    let h = Harness::new(PipelineConfig::default(), Gate::off()).await;
    let events = h.say("1", "please panic! now").await;
    assert_eq!(
        notice(&events),
        Some(Texts::default().get("en", TextKey::Apology))
    );
    let events = h.say("1", "refunds").await;
    assert_eq!(reply_text(&events), Some(echo("refunds").as_str()));
    assert_eq!(h.pipeline.engine().current().restarts(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_moderation_failures_fail_closed_in_the_users_language() {
    let h = Harness::new(PipelineConfig::default(), gate("darn")).await;
    let events = h.say("1", "darn you").await;
    let texts = Texts::default();
    assert_eq!(
        reply_text(&events),
        Some(texts.get("en", TextKey::InputRefusal))
    );
    let events = h.say("2", "请 fail 一下").await;
    assert_eq!(notice(&events), Some(texts.get("zh", TextKey::Apology)));
    // The model's reply echoes the word: replaced by the safe reply, kept
    // in the store as written and marked blocked.
    let h = Harness::new(PipelineConfig::default(), gate("answer")).await;
    let events = h.say("3", "anything").await;
    assert_eq!(
        reply_text(&events),
        Some(texts.get("en", TextKey::SafeReply))
    );
    let stored = h.stored().await;
    let reply = &stored[0].messages[1];
    assert_eq!(reply.verdict, Some(crate::store::Verdict::Block));
    assert_eq!(reply.content, echo("anything"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_handoff_state_is_persisted_and_survives_idle_time() {
    let cfg = PipelineConfig {
        idle_minutes: 0.001,
        ..PipelineConfig::default()
    };
    let h = Harness::new(cfg, Gate::off()).await;
    h.say("1", "hello").await;
    let events = h.command("1", Command::Human).await;
    assert!(matches!(events[0], ChatEvent::Handoff { .. }));
    // Longer than the idle time: the customer still waits for a human.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let events = h.say("1", "are you there?").await;
    assert!(events.is_empty(), "{events:?}");
    let stored = h.stored().await;
    assert_eq!(stored.len(), 1, "the conversation did not end");
    assert_eq!(stored[0].handoff, Handoff::Requested);
    assert_eq!(stored[0].messages.last().unwrap().content, "are you there?");
    h.command("1", Command::Bot).await;
    let stored = h.stored().await;
    assert_eq!(stored[0].handoff, Handoff::Resolved);
    let events = h.say("1", "again").await;
    assert_eq!(reply_text(&events), Some(echo("again").as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_texts_come_from_the_table_with_overrides() {
    let cfg: PipelineConfig =
        toml::from_str("[texts.en]\nreset_done = \"Fresh start.\"\n").unwrap();
    let h = Harness::new(cfg, Gate::off()).await;
    let events = h.command("1", Command::Reset).await;
    assert_eq!(reply_text(&events), Some("Fresh start."));
    h.say("2", "你好").await;
    let events = h.command("2", Command::Reset).await;
    assert_eq!(
        reply_text(&events),
        Some(Texts::default().get("zh", TextKey::ResetDone))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_sessions_are_capped() {
    let cfg = PipelineConfig {
        max_sessions: 20,
        ..PipelineConfig::default()
    };
    let h = Harness::new(cfg, Gate::off()).await;
    for i in 0..100 {
        h.say(&i.to_string(), "hi").await;
    }
    assert!(h.pipeline.active_sessions() <= 20);
    let stored = h.stored().await;
    let ended = stored.iter().filter(|c| c.ended_at.is_some()).count();
    assert!(ended >= 80, "{ended} of 100 conversations ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_a_reply_past_its_timeout_is_abandoned_with_the_apology() {
    let cfg = PipelineConfig {
        reply_timeout_secs: 0.1,
        ..PipelineConfig::default()
    };
    let h = Harness::new(cfg, Gate::off()).await;
    // The scripted backend takes 200 ms a word for "slow!".
    let events = h.say("1", "slow! question").await;
    assert_eq!(
        notice(&events),
        Some(Texts::default().get("en", TextKey::Apology))
    );
    assert!(reply_text(&events).is_none());
    let events = h.say("2", "quick one").await;
    assert_eq!(reply_text(&events), Some(echo("quick one").as_str()));
}
