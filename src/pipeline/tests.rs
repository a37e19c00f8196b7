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
        events_of(&self.pipeline, req).await
    }

    async fn stored(&self) -> Vec<StoredConversation> {
        self.writer.handle().flush().await.unwrap();
        self.store
            .select(&ExportFilter::default(), None, 100)
            .await
            .unwrap()
    }
}

async fn events_of(pipeline: &Pipeline, req: ChatRequest) -> Vec<ChatEvent> {
    let (sink, mut stream) = event_channel();
    pipeline.handle(req, sink).await;
    let mut out = Vec::new();
    while let Some(e) = stream.next().await {
        out.push(e);
    }
    out
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

/// Everything shown while the reply streamed, pieces joined.
fn streamed(events: &[ChatEvent]) -> String {
    events.iter().filter_map(ChatEvent::delta).collect()
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
        // Generous, so that the quick reply below stays inside it on a
        // loaded CI machine; the slow one takes 4.5 s.
        reply_timeout_secs: 1.5,
        ..PipelineConfig::default()
    };
    let h = Harness::new(cfg, Gate::off()).await;
    // The scripted backend takes 500 ms a word for "slow!".
    let events = h.say("1", "slow! question").await;
    assert_eq!(
        notice(&events),
        Some(Texts::default().get("en", TextKey::Apology))
    );
    assert!(reply_text(&events).is_none());
    let events = h.say("2", "quick one").await;
    assert_eq!(reply_text(&events), Some(echo("quick one").as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_a_full_model_queue_answers_busy_at_once() {
    let mut h = Harness::new(PipelineConfig::default(), Gate::off()).await;
    // One worker, one reply waiting at most.
    let engine = Engine::with_opener_scheduled(
        Path::new("scripted"),
        testing::opener("v1", echo),
        1,
        Scheduler::Pool,
        1,
    )
    .unwrap();
    // Every word streams, so the first piece shows the worker has the reply.
    let cfg = PipelineConfig {
        stream_chunk_chars: 1,
        ..PipelineConfig::default()
    };
    h.pipeline = Pipeline::new(cfg, Arc::new(engine), Gate::off(), h.writer.handle()).unwrap();
    let h = Arc::new(h);
    let pool = h.pipeline.engine().current();
    // The scripted backend takes 500 ms a word for "slow!": the first
    // reply holds the worker for seconds, the second waits in the queue,
    // and the third finds it full.
    let (one, two) = ("slow! one", "slow! two");
    let (sink, mut first_events) = event_channel();
    let first = tokio::spawn({
        let h = Arc::clone(&h);
        async move {
            h.pipeline
                .handle(ChatRequest::Message(incoming("1", one)), sink)
                .await
        }
    });
    let mut first_seen = Vec::new();
    while let Some(e) = first_events.next().await {
        let generating = matches!(e, ChatEvent::ReplyChunk { .. });
        first_seen.push(e);
        if generating {
            break;
        }
    }
    let second = tokio::spawn({
        let h = Arc::clone(&h);
        async move { h.say("2", two).await }
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while pool.waiting() < 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the second reply never queued"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let third = h.say("3", "a third customer").await;
    assert_eq!(
        notice(&third),
        Some(Texts::default().get("en", TextKey::Busy))
    );
    assert!(reply_text(&third).is_none());
    // Those already taken are answered.
    first.await.unwrap();
    while let Some(e) = first_events.next().await {
        first_seen.push(e);
    }
    assert_eq!(reply_text(&first_seen), Some(echo(one).as_str()));
    assert_eq!(reply_text(&second.await.unwrap()), Some(echo(two).as_str()));
    // Once the queue has room, the next customer is answered.
    let later = h.say("3", "a third customer").await;
    assert_eq!(reply_text(&later), Some(echo("a third customer").as_str()));
}

const HELP_CENTRE: &str = "# Help centre

## Returns

**What is your return policy?**
You can return unworn items within 30 days of delivery for a full refund.

## Shipping

**How much is express delivery?**
Express delivery costs $14.95 and arrives in 2-3 business days.

**Do you ship abroad?**
We ship to the EU, the UK and Canada; delivery takes 7-14 business days.

## Gift cards

**Do gift cards expire?**
No, our gift cards never expire.
";

/// What the scripted model says: an invented return window, a shipping
/// answer that the knowledge base states, one that states a true price but
/// not the delivery time asked for, one that states the facts without the
/// words around them, an answer with no fact, a needless "I don't know",
/// and small talk.
fn grounded_model(q: &str) -> String {
    let q = q.to_lowercase();
    if q.contains("gift card") {
        "I don\u{2019}t have that information; type /human to reach a person.".into()
    } else if q.contains("abroad") {
        "Great question, we love travelling too!".into()
    } else if q.contains("return") {
        "You can return unworn items within 45 days. Just ask!".into()
    } else if q.contains("price please") {
        "Lovely express yes the days we are delivery happy costs the $14.95 arrives in 2-3 business days thanks lovely".into()
    } else if q.contains("in short") {
        "Hi! Express $14.95, 2-3 business days.".into()
    } else if q.contains("how fast") {
        "Express is only $14.95!".into()
    } else if q.contains("cost of express") {
        "Oh darn, express costs $14.95.".into()
    } else if q.contains("express") {
        "Express delivery takes 2-3 business days and costs $14.95.".into()
    } else {
        "Happy to help!".into()
    }
}

/// A pipeline answering from a knowledge base built from [`HELP_CENTRE`]
/// (BM25 alone, no router).
async fn grounded_harness(cite: Cite) -> (Harness, tempfile::TempDir) {
    grounded_harness_with(PipelineConfig {
        cite,
        ..PipelineConfig::default()
    })
    .await
}

/// [`grounded_harness`] with the pipeline configured as `cfg`.
async fn grounded_harness_with(cfg: PipelineConfig) -> (Harness, tempfile::TempDir) {
    let kb_dir = tempfile::tempdir().unwrap();
    let docs = kb_dir.path().join("help.md");
    std::fs::write(&docs, HELP_CENTRE).unwrap();
    crate::kb::build(&crate::kb::BuildOptions {
        docs: vec![docs],
        out: kb_dir.path().join("kb"),
        force: false,
        split: Default::default(),
    })
    .unwrap();
    let knowledge = Knowledge::open(
        &kb_dir.path().join("kb"),
        &crate::runtime::RuntimeConfig::default(),
        2,
        Default::default(),
    )
    .unwrap();
    let mut h = Harness::new(PipelineConfig::default(), gate("darn")).await;
    let engine = Engine::with_opener(
        Path::new("scripted"),
        testing::opener("v1", grounded_model),
        1,
    )
    .unwrap();
    h.pipeline = Pipeline::new(cfg, Arc::new(engine), gate("darn"), h.writer.handle())
        .unwrap()
        .with_knowledge(Arc::new(knowledge));
    (h, kb_dir)
}

/// The reply of the only conversation stored, with its grounding.
fn last_reply(stored: &[StoredConversation]) -> (String, store::Grounding) {
    assert_eq!(stored.len(), 1);
    let m = stored[0]
        .messages
        .iter()
        .rev()
        .find(|m| m.role == Role::Assistant)
        .unwrap();
    (
        m.content.clone(),
        m.grounding.clone().expect("no grounding stored"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_invented_fact_is_replaced_by_the_passage() {
    let (h, _kb) = grounded_harness(Cite::Off).await;
    let events = h.say("1", "how long do i have to return my boots?").await;
    let reply = reply_text(&events).unwrap();
    assert!(reply.contains("30 days"), "{reply}");
    assert!(
        !reply.contains("45"),
        "the invented window was sent: {reply}"
    );
    // Nothing of the invented reply was shown while it streamed.
    let shown = streamed(&events);
    assert!(!shown.contains("45"), "streamed: {shown}");
    let (content, g) = last_reply(&h.stored().await);
    assert_eq!(content, reply);
    assert_eq!(g.kind, store::ReplyKind::Extracted);
    assert!(!g.passages.is_empty() && g.confidence > 0.0, "{g:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_supported_reply_is_sent_and_cited() {
    assert_generated_and_cited(
        "how much is express delivery?",
        "Express delivery takes 2-3 business days and costs $14.95.",
        "Shipping",
    )
    .await;
}

/// The model's reply to `question` is sent as written (it starts with
/// `starts`), cited by `cite`, and stored as generated.
async fn assert_generated_and_cited(question: &str, starts: &str, cite: &str) {
    let (h, _kb) = grounded_harness(Cite::Title).await;
    let events = h.say("1", question).await;
    let reply = reply_text(&events).unwrap();
    assert!(reply.starts_with(starts), "{reply}");
    assert!(reply.contains(cite), "no citation: {reply}");
    let (_, g) = last_reply(&h.stored().await);
    assert_eq!(g.kind, store::ReplyKind::Generated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_unanswerable_question_gets_the_handoff_offer() {
    let (h, _kb) = grounded_harness(Cite::Off).await;
    let events = h
        .say(
            "1",
            "can you recommend a good quantum chromodynamics textbook",
        )
        .await;
    let reply = reply_text(&events).unwrap();
    assert_eq!(reply, h.pipeline.text("en", TextKey::Abstain));
    let (_, g) = last_reply(&h.stored().await);
    assert_eq!(g.kind, store::ReplyKind::Abstained);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_the_model_reads_the_retrieved_passage_in_its_context() {
    let (h, _kb) = grounded_harness(Cite::Off).await;
    let events = h.say("1", "return policy for unworn items? quote!").await;
    let reply = reply_text(&events).unwrap();
    assert!(
        reply.contains("within 30 days of delivery for a full refund"),
        "{reply}"
    );
    let (_, g) = last_reply(&h.stored().await);
    assert_eq!(g.kind, store::ReplyKind::Generated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_a_reply_without_the_passages_facts_gets_the_passage() {
    let (h, _kb) = grounded_harness(Cite::Off).await;
    let events = h.say("1", "do you ship abroad to canada?").await;
    let reply = reply_text(&events).unwrap();
    assert!(reply.contains("7-14 business days"), "{reply}");
    assert!(!reply.contains("travelling"), "{reply}");
    let (_, g) = last_reply(&h.stored().await);
    assert_eq!(g.kind, store::ReplyKind::Extracted);
}

/// The first draft invents a price; the second quotes the passage and is
/// sent as the model's words. With one draft allowed, the passage's
/// sentences go instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_a_refused_draft_is_written_again() {
    let question = "return policy for unworn items? again!";
    let (h, _kb) = grounded_harness(Cite::Off).await;
    h.pipeline.keep_traces();
    let events = h.say("1", question).await;
    let reply = reply_text(&events).unwrap();
    assert!(
        reply.contains("within 30 days of delivery for a full refund"),
        "{reply}"
    );
    assert!(!streamed(&events).contains("99"), "{events:?}");
    let (_, g) = last_reply(&h.stored().await);
    assert_eq!(g.kind, store::ReplyKind::Generated);
    let trace = h.pipeline.take_traces().pop();
    assert_eq!(trace.map(|t| t.drafts), Some(2));

    // A greedy reply's further drafts are sampled: the same happens.
    let (h, _kb) = grounded_harness_with(PipelineConfig {
        temperature: Some(0.0),
        ..PipelineConfig::default()
    })
    .await;
    let events = h.say("1", question).await;
    let reply = reply_text(&events).unwrap();
    assert!(reply.contains("within 30 days of delivery"), "{reply}");
    let (_, g) = last_reply(&h.stored().await);
    assert_eq!(g.kind, store::ReplyKind::Generated);

    let (h, _kb) = grounded_harness_with(PipelineConfig {
        drafts: 1,
        ..PipelineConfig::default()
    })
    .await;
    let events = h.say("1", question).await;
    let reply = reply_text(&events).unwrap();
    assert!(reply.contains("30 days"), "{reply}");
    assert!(!reply.contains("99"), "{reply}");
    let (_, g) = last_reply(&h.stored().await);
    assert_eq!(g.kind, store::ReplyKind::Extracted);
}

/// Every fact of the reply is in the passage, but it leaves out the one
/// asked for: the passage goes instead, and the model's words never show.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_a_reply_leaving_out_the_answers_fact_gets_the_passage() {
    let (h, _kb) = grounded_harness(Cite::Off).await;
    let events = h.say("1", "how fast is express delivery?").await;
    let reply = reply_text(&events).unwrap();
    assert!(reply.contains("2-3 business days"), "{reply}");
    let shown = streamed(&events);
    assert!(!shown.contains("only"), "streamed: {shown}");
    let (_, g) = last_reply(&h.stored().await);
    assert_eq!(g.kind, store::ReplyKind::Extracted);
}

/// Every fact of the passage answer is there, but the words that say what
/// they are are not: the passage goes instead, and the model's words never
/// show. One word said otherwise passes
/// ([`test_supported_reply_is_sent_and_cited`]).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_the_facts_without_the_answers_words_get_the_passage() {
    let (h, _kb) = grounded_harness(Cite::Off).await;
    let events = h.say("1", "express delivery in short?").await;
    let reply = reply_text(&events).unwrap();
    assert!(
        reply.contains("Express delivery costs $14.95 and arrives in 2-3 business days"),
        "{reply}"
    );
    assert!(!streamed(&events).contains("Express $14.95"), "{events:?}");
    let (_, g) = last_reply(&h.stored().await);
    assert_eq!(g.kind, store::ReplyKind::Extracted);
}

/// Every fact of the passage answer is there, in word salad: the passage
/// goes instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_word_salad_around_the_facts_gets_the_passage() {
    let (h, _kb) = grounded_harness(Cite::Off).await;
    let events = h.say("1", "express delivery price please").await;
    let reply = reply_text(&events).unwrap();
    assert!(reply.contains("Express delivery costs $14.95"), "{reply}");
    assert!(!streamed(&events).contains("ovely"), "{reply}");
    let (_, g) = last_reply(&h.stored().await);
    assert_eq!(g.kind, store::ReplyKind::Extracted);
}

/// An answer with no fact to check ("never expire") is sent in the model's
/// words when they state it, and cites its passage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_a_fact_free_answer_quoted_is_sent_and_cited() {
    assert_generated_and_cited(
        "do gift cards expire at all? quote!",
        "No, our gift cards never expire.",
        "Gift cards",
    )
    .await;
}

/// The model declines a question the passage answers (with no number to
/// check): the passage goes instead, and the refusal is never shown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_a_needless_refusal_gets_the_passage() {
    let (h, _kb) = grounded_harness(Cite::Off).await;
    let events = h.say("1", "do gift cards expire?").await;
    let reply = reply_text(&events).unwrap();
    assert!(reply.contains("never expire"), "{reply}");
    let shown = streamed(&events);
    assert!(
        !shown.contains("have that information"),
        "streamed: {shown}"
    );
    let (_, g) = last_reply(&h.stored().await);
    assert_eq!(g.kind, store::ReplyKind::Extracted);
}

/// When retrieval is confident, the model is told not to open with the
/// abstain text (it learnt to say it word for word); without a knowledge
/// base it is told nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_a_confident_retrieval_steers_the_model_off_the_abstain_text() {
    let (h, _kb) = grounded_harness(Cite::Off).await;
    h.pipeline.keep_traces();
    h.say("1", "do gift cards expire? openings!").await;
    let draft = h.pipeline.take_traces().pop().and_then(|t| t.draft);
    let abstain = h.pipeline.text("en", TextKey::Abstain);
    assert_eq!(draft, Some(format!("avoided: {abstain}")));
    let h = Harness::new(PipelineConfig::default(), gate("darn")).await;
    let events = h.say("1", "openings!").await;
    assert_eq!(reply_text(&events).unwrap().trim(), "avoided:");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_card_numbers_reach_the_model_but_not_the_store() {
    let h = Harness::new(PipelineConfig::default(), gate("darn")).await;
    let events = h.say("1", "card 4111 1111 1111 1111 was charged").await;
    // The scripted model echoes the question: it read the number as typed.
    let reply = reply_text(&events).unwrap();
    assert!(reply.contains("4111 1111 1111 1111"), "{reply}");
    let convs = h.stored().await;
    let texts: Vec<&str> = convs[0]
        .messages
        .iter()
        .map(|m| m.content.as_str())
        .collect();
    assert!(texts.contains(&"card <CARD> was charged"), "{texts:?}");
    assert!(texts.iter().all(|t| !t.contains("4111")), "{texts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_human_outside_agent_hours_says_when_they_are_back() {
    use chrono::Datelike;
    let mut h = Harness::new(PipelineConfig::default(), Gate::off()).await;
    // Agents work only tomorrow: now is always outside their hours.
    let tomorrow = chrono::Utc::now().weekday().succ();
    let spec = format!("{tomorrow:?} 09:00-17:00");
    h.pipeline.agent_hours = Some(AgentHours::parse(&spec, "UTC").unwrap());
    h.say("1", "hello").await;
    let events = h.command("1", Command::Human).await;
    let ChatEvent::Handoff { notice } = &events[0] else {
        panic!("{events:?}");
    };
    let day = chrono::Utc::now()
        .date_naive()
        .succ_opt()
        .unwrap()
        .format("%A")
        .to_string();
    assert!(
        notice.contains(&format!("back {day} 09:00 (UTC)")),
        "{notice}"
    );
    // The conversation still waits in the queue.
    let stored = h.stored().await;
    assert_eq!(stored[0].handoff, Handoff::Requested);

    // On duty: the usual notice.
    h.pipeline.agent_hours = Some(AgentHours::parse("Mon-Sun 00:00-24:00", "UTC").unwrap());
    let events = h.command("2", Command::Human).await;
    assert_eq!(
        events[0],
        ChatEvent::Handoff {
            notice: Texts::default()
                .get("en", TextKey::HandoffRequested)
                .to_string()
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_flagged_reply_to_a_confident_question_gets_the_passage() {
    let (h, _kb) = grounded_harness(Cite::Off).await;
    let events = h.say("1", "what is the cost of express delivery?").await;
    let reply = reply_text(&events).unwrap();
    assert!(reply.contains("Express delivery costs $14.95"), "{reply}");
    assert!(!reply.to_lowercase().contains("darn"), "{reply}");
    let stored = h.stored().await;
    let (content, g) = last_reply(&stored);
    assert_eq!(content, reply);
    assert_eq!(g.kind, store::ReplyKind::Extracted);
    // The model's flagged words are on record as an output moderation event.
    let flagged = h
        .store
        .moderation_events(&stored[0].record.id)
        .await
        .unwrap();
    assert!(
        flagged
            .iter()
            .any(|e| e.detail.as_deref().is_some_and(|d| d.starts_with("output"))),
        "{flagged:?}"
    );
}

/// Telegram's "send to this chat", recorded.
#[derive(Default)]
struct SentToChats(std::sync::Mutex<Vec<(String, String)>>);

impl chatforge_channel::ChatOutbox for SentToChats {
    fn platform(&self) -> Platform {
        Platform::Telegram
    }

    fn send<'a>(&'a self, key: &'a str, text: &'a str) -> chatforge_channel::OutboxFuture<'a> {
        self.0
            .lock()
            .unwrap()
            .push((key.to_string(), text.to_string()));
        Box::pin(async { Ok(()) })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_console_claim_reply_resolve_drive_the_conversation() {
    use crate::console::{Console, Error as ConsoleError, Verdict};
    use crate::operators::Operator;

    let h = Harness::new(PipelineConfig::default(), Gate::off()).await;
    let Harness {
        pipeline,
        writer,
        store,
        _dir,
    } = h;
    let pipeline = Arc::new(pipeline);
    let console = Console::new(store.clone(), writer.handle(), pipeline.clone(), 1);
    let chats = Arc::new(SentToChats::default());
    console.add_outbox(chats.clone());
    let mut ops = Vec::new();
    for name in ["ann", "bob"] {
        let (row, _) = crate::operators::add(store.as_ref(), name, "test")
            .await
            .unwrap();
        ops.push(Operator {
            id: row.id,
            name: name.into(),
            must_change: false,
        });
    }
    let (ann, bob) = (&ops[0], &ops[1]);
    let mut feed = pipeline.console_events();
    let say = |text: &str| ChatRequest::Message(incoming("42", text));

    events_of(
        &pipeline,
        ChatRequest::Command {
            message: incoming("42", "/human"),
            command: Command::Human,
        },
    )
    .await;
    let e = feed.recv().await.unwrap();
    assert_eq!(e.kind, ConsoleEventKind::Handoff);
    let id = e.conversation;
    let queue = console.queue(ann, false).await.unwrap();
    assert_eq!((queue.len(), queue[0].state), (1, "requested"));

    assert!(
        events_of(&pipeline, say("is anyone there?"))
            .await
            .is_empty()
    );
    assert_eq!(feed.recv().await.unwrap().kind, ConsoleEventKind::Message);
    assert!(matches!(
        console.reply(ann, &id, "hi").await,
        Err(ConsoleError::Conflict(_))
    ));
    console.claim(ann, &id).await.unwrap();
    let err = console.claim(bob, &id).await.unwrap_err();
    assert!(err.to_string().contains("ann"), "{err}");
    assert!(matches!(
        console.reply(bob, &id, "hi").await,
        Err(ConsoleError::Conflict(_))
    ));
    assert!(matches!(
        console.reply(ann, &id, "  ").await,
        Err(ConsoleError::Invalid(_))
    ));
    console
        .reply(ann, &id, "Ann here: it ships today.")
        .await
        .unwrap();
    assert!(
        events_of(&pipeline, say("thanks!")).await.is_empty(),
        "the bot stays quiet"
    );
    console.resolve(ann, &id).await.unwrap();
    let sent = chats.0.lock().unwrap().clone();
    assert_eq!(
        sent,
        [
            ("42".to_string(), "Ann here: it ships today.".to_string()),
            (
                "42".to_string(),
                pipeline.text("en", TextKey::HandoffResolved).to_string()
            ),
        ]
    );
    let events = events_of(&pipeline, say("where is my parcel")).await;
    assert_eq!(
        reply_text(&events),
        Some(echo("where is my parcel").as_str())
    );

    let view = console.conversation(ann, &id, false).await.unwrap();
    let roles: Vec<&str> = view.messages.iter().map(|m| m.role).collect();
    assert_eq!(roles, ["user", "operator", "user", "user", "assistant"]);
    assert_eq!(view.messages[1].operator.as_deref(), Some("ann"));
    let actions: Vec<&str> = view.audit.iter().map(|a| a.action.as_str()).collect();
    assert_eq!(actions, ["claimed", "replied", "resolved"]);
    assert_eq!(view.state, "resolved");

    // The bot's reply is sampled for review (one in 1); a correction
    // takes it out of the queue.
    let items = console.review_queue().await.unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(
        items[0].context.last().unwrap().content,
        "where is my parcel"
    );
    console
        .review(
            ann,
            &items[0].message_id,
            Verdict::Correct("It arrives Friday.".into()),
        )
        .await
        .unwrap();
    assert!(console.review_queue().await.unwrap().is_empty());
    assert!(matches!(
        console.review(ann, "no-such-reply", Verdict::Approve).await,
        Err(ConsoleError::NotFound(_))
    ));
    writer.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_a_restarted_pipeline_keeps_a_handed_off_chat_with_the_humans() {
    let h = Harness::new(PipelineConfig::default(), Gate::off()).await;
    h.command("7", Command::Human).await;
    h.say("8", "hello").await;
    h.writer.handle().flush().await.unwrap();
    // A new process over the same store.
    let engine =
        Engine::with_opener(Path::new("scripted"), testing::opener("v1", echo), 1).unwrap();
    let restarted = Pipeline::new(
        PipelineConfig::default(),
        Arc::new(engine),
        Gate::off(),
        h.writer.handle(),
    )
    .unwrap()
    .with_store(h.store.clone());
    let mut feed = restarted.console_events();
    let events = events_of(
        &restarted,
        ChatRequest::Message(incoming("7", "still there?")),
    )
    .await;
    assert!(events.is_empty(), "the bot stays quiet: {events:?}");
    let e = feed.recv().await.unwrap();
    assert_eq!(e.kind, ConsoleEventKind::Message);
    // The other chat was with the bot: it still is.
    let events = events_of(&restarted, ChatRequest::Message(incoming("8", "next"))).await;
    assert_eq!(reply_text(&events), Some(echo("next").as_str()));
    let stored = h.stored().await;
    let waiting: Vec<_> = stored.iter().filter(|c| c.record.channel == "7").collect();
    assert_eq!(waiting.len(), 1, "the same conversation continues");
    let last = waiting[0].messages.last().unwrap();
    assert_eq!(
        (last.role, last.content.as_str()),
        (Role::User, "still there?")
    );
    // Only the chat left with a human is read back from the store.
    let store = h.store.as_ref();
    assert!(
        restarted
            .open_handoffs
            .may_hold(store, "telegram", "7")
            .await
    );
    assert!(
        !restarted
            .open_handoffs
            .may_hold(store, "telegram", "8")
            .await
    );
}

/// Two replicas over one store (Telegram webhooks): the second continues
/// the conversation the first began, with its turns, and finds the reply
/// the first sent when it is rated; a reset on one ends it for the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_replicas_share_a_chat_through_the_store() {
    let h = Harness::new(PipelineConfig::default(), Gate::off()).await;
    let replica = || {
        let engine =
            Engine::with_opener(Path::new("scripted"), testing::opener("v1", echo), 1).unwrap();
        Pipeline::new(
            PipelineConfig::default(),
            Arc::new(engine),
            Gate::off(),
            h.writer.handle(),
        )
        .unwrap()
        .with_store(h.store.clone())
        .with_shared_sessions(Platform::Telegram)
    };
    let (a, b) = (replica(), replica());
    let first = events_of(
        &a,
        ChatRequest::Message(incoming("9", "where is my parcel")),
    )
    .await;
    let reply_id = first
        .iter()
        .find_map(|e| match e {
            ChatEvent::Reply { message_id, .. } => Some(message_id.clone()),
            _ => None,
        })
        .unwrap();
    h.writer.handle().flush().await.unwrap();
    let events = events_of(&b, ChatRequest::Message(incoming("9", "turns! and now"))).await;
    assert_eq!(
        reply_text(&events),
        Some(
            format!(
                "where is my parcel | {} | turns! and now",
                echo("where is my parcel")
            )
            .as_str()
        )
    );
    // Rated on b, sent by a.
    b.handle(
        ChatRequest::Feedback(chatforge_channel::Feedback {
            platform: Platform::Telegram,
            conversation_key: "9".into(),
            user_key: "user-9".into(),
            message_id: reply_id,
            rating: chatforge_channel::Rating::Good,
            comment: None,
        }),
        event_channel().0,
    )
    .await;
    let stored = h.stored().await;
    assert_eq!(stored.len(), 1, "one conversation across both");
    assert_eq!(
        h.store.feedback(&stored[0].record.id).await.unwrap().len(),
        1
    );
    // A reset on b ends the conversation; a starts a new one.
    events_of(
        &b,
        ChatRequest::Command {
            message: incoming("9", "/reset"),
            command: Command::Reset,
        },
    )
    .await;
    h.writer.handle().flush().await.unwrap();
    let events = events_of(&a, ChatRequest::Message(incoming("9", "turns! fresh"))).await;
    assert_eq!(reply_text(&events), Some("turns! fresh"));
    assert_eq!(h.stored().await.len(), 2);
}

/// A greeting, thanks or goodbye gets its reply, not a passage ("ok
/// thanks, that's all!" found the account-deletion entry by "all"), and is
/// stored without a knowledge-base decision; a question after it is
/// answered from the passages as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_a_pleasantry_gets_its_reply_not_a_passage() {
    let (h, _kb) = grounded_harness(Cite::Title).await;
    let events = h.say("1", "ok thanks, that's all!").await;
    let reply = reply_text(&events).unwrap();
    assert_eq!(reply, "Thanks for reaching out. Have a great day!");
    let stored = h.stored().await;
    let (content, grounding) = stored[0]
        .messages
        .iter()
        .rev()
        .find(|m| m.role == Role::Assistant)
        .map(|m| (m.content.clone(), m.grounding.clone()))
        .unwrap();
    assert_eq!(content, reply);
    assert!(grounding.is_none(), "{grounding:?}");
    let events = h.say("1", "how much is express delivery?").await;
    let reply = reply_text(&events).unwrap();
    assert!(reply.contains("$14.95"), "{reply}");
    let (_, g) = last_reply(&h.stored().await);
    assert_ne!(g.kind, store::ReplyKind::Abstained);
}
