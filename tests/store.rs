//! The conversation store. Every test body below runs twice: on SQLite (a
//! temporary file) and on Postgres (a fresh database on the server named by
//! `DATABASE_URL`, dropped afterwards; `scripts/test.sh` sets it). Without
//! `DATABASE_URL` the Postgres variants say so and pass without running,
//! except under `scripts/test.sh` (`CHATFORGE_REQUIRE_SERVICES=1`), where a
//! missing Postgres fails them.
//! `store_outage_real_postgres` stops and restarts a throwaway Postgres
//! server of its own in the middle of a write stream.

use std::future::Future;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};

mod common;

use chatforge::store::{
    self, ConversationRecord, ConversationStore, ConversationUpdate, ExportFilter, ExportFormat,
    FeedbackRecord, Handoff, InboundUpdate, MessageRecord, ModerationRecord, Record, StoreFuture,
    StoreOptions, StoredConversation, UserKeyHasher, Verdict, Writer, WriterConfig,
};
use chatforge::text::{NamedPattern, Redactor, Role, read_dialogs_jsonl};

// ---------------------------------------------------------------- harness

struct Ctx {
    store: Arc<dyn ConversationStore>,
    dir: tempfile::TempDir,
}

impl Ctx {
    fn spill_dir(&self) -> PathBuf {
        self.dir.path().join("spill")
    }
}

fn hasher() -> UserKeyHasher {
    UserKeyHasher::new(b"test-secret-0123456789abcdef").unwrap()
}

async fn on_sqlite<F, Fut>(body: F)
where
    F: FnOnce(Ctx) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("store.db").display()
    );
    let store = store::connect_and_migrate(&url, &StoreOptions::default())
        .await
        .unwrap();
    body(Ctx { store, dir }).await;
}

use common::database_url;

/// A fresh database on the `DATABASE_URL` server, dropped when the body ends
/// (also when it panics).
async fn on_postgres<F, Fut>(body: F)
where
    F: FnOnce(Ctx) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(db) = common::ScratchDb::create().await else {
        return;
    };
    let store = store::connect_and_migrate(&db.url, &StoreOptions::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let closer = Arc::clone(&store);
    let outcome = tokio::spawn(body(Ctx { store, dir })).await;
    let _ = closer.close().await;
    db.drop_db().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// One test per backend for each body.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::on_sqlite(super::$name).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::on_postgres(super::$name).await
            }
        }
    )*};
}

on_both!(
    store_roundtrip,
    store_replay_is_idempotent,
    store_bad_input,
    store_export_filters_and_redaction,
    store_stats_per_platform_and_day,
    store_writer_spills_and_replays,
    store_redacts_at_rest,
    store_purge_deletes_idle_conversations,
    store_forget_and_subject_access,
    store_operators_login_and_lockout,
    store_console_claims_reviews_and_corrections,
    store_inbox_leases_chats_in_order,
);

fn at(day: u32, hour: u32, sec: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, day, hour, 0, sec).unwrap()
}

fn message_ids(c: &StoredConversation) -> Vec<String> {
    c.messages.iter().map(|m| m.id.clone()).collect()
}

fn quick_writer(ctx: &Ctx, store: Arc<dyn ConversationStore>) -> Writer {
    let mut cfg = WriterConfig::new(ctx.spill_dir());
    cfg.retry_min = Duration::from_millis(20);
    cfg.retry_max = Duration::from_millis(200);
    cfg.drain_timeout = Duration::from_millis(300);
    Writer::spawn(store, hasher(), cfg).unwrap()
}

// ------------------------------------------------------------ test bodies

async fn store_roundtrip(ctx: Ctx) {
    let store = &ctx.store;
    assert_eq!(
        store.schema_version().await.unwrap(),
        Some(store::INBOX_SCHEMA)
    );
    store.migrate().await.unwrap();
    assert_eq!(
        store.schema_version().await.unwrap(),
        Some(store::INBOX_SCHEMA)
    );

    let writer = quick_writer(&ctx, Arc::clone(store));
    let h = writer.handle();
    let mut conv = h.new_conversation("discord", "guild-1/channel-2", "123456789");
    conv.topic = Some("orders".into());
    conv.style = Some("formal".into());
    let id = conv.id.clone();
    h.enqueue(Record::Conversation(conv.clone())).unwrap();

    let system = MessageRecord::new(&id, Role::System, "You are the support bot.");
    let user = MessageRecord::new(&id, Role::User, "Where is my order?");
    let mut reply = MessageRecord::new(&id, Role::Assistant, "It ships tomorrow.");
    reply.model_version = Some("tiny-chat@3f2a".into());
    reply.latency_ms = Some(84);
    reply.prompt_tokens = Some(31);
    reply.completion_tokens = Some(7);
    reply.verdict = Some(Verdict::Allow);
    reply.scores.insert("toxic".into(), 0.125);
    reply.scores.insert("spam".into(), 0.0);
    let msgs = vec![system, user, reply.clone()];
    for m in &msgs {
        h.enqueue(Record::Message(m.clone())).unwrap();
    }
    let mut event = ModerationRecord::new(&id, "spam", 0.75, Verdict::Flag);
    event.message_id = Some(reply.id.clone());
    event.detail = Some("rule: repeated link".into());
    h.enqueue(Record::Moderation(event.clone())).unwrap();
    let mut fb = h.new_feedback(&id, "discord", "123456789", 5);
    fb.message_id = Some(reply.id.clone());
    fb.comment = Some("quick and right".into());
    h.enqueue(Record::Feedback(fb.clone())).unwrap();
    let mut upd = ConversationUpdate::new(&id);
    upd.handoff = Some(Handoff::Requested);
    h.enqueue(Record::Update(upd.clone())).unwrap();
    let mut end = ConversationUpdate::new(&id);
    end.ended = true;
    h.enqueue(Record::Update(end.clone())).unwrap();

    let report = writer.shutdown().await.unwrap();
    assert_eq!(report.enqueued, 8);
    assert_eq!(report.written, 8, "{report:?}");
    assert_eq!((report.spilled, report.rejected, report.pending), (0, 0, 0));

    let got = store.conversation(&id).await.unwrap().expect("stored");
    assert_eq!(got.record, conv);
    assert_eq!(got.messages, msgs);
    assert_eq!(got.handoff, Handoff::Requested);
    assert_eq!(got.handoff_at, Some(upd.at));
    assert_eq!(got.ended_at, Some(end.at));
    assert_eq!(store.feedback(&id).await.unwrap(), vec![fb]);
    assert_eq!(store.moderation_events(&id).await.unwrap(), vec![event]);
    assert!(store.conversation("no-such-id").await.unwrap().is_none());

    // Only the keyed hash of the platform id is stored.
    assert_eq!(got.record.user_key, hasher().key("discord", "123456789"));
    assert!(!got.record.user_key.as_str().contains("123456789"));
    assert_eq!(got.record.user_key.as_str().len(), 64);
}

fn sample(conv: &str, n: usize) -> Vec<Record> {
    (0..n)
        .map(|i| {
            let role = if i % 2 == 0 {
                Role::User
            } else {
                Role::Assistant
            };
            Record::Message(MessageRecord::new(conv, role, format!("turn {i}")))
        })
        .collect()
}

async fn store_replay_is_idempotent(ctx: Ctx) {
    let store = &ctx.store;
    let conv = ConversationRecord::new("telegram", "chat-42", hasher().key("telegram", "42"));
    let id = conv.id.clone();
    let mut records = vec![Record::Conversation(conv)];
    records.extend(sample(&id, 3));
    records.push(Record::Feedback(FeedbackRecord::new(
        &id,
        4,
        hasher().key("telegram", "42"),
    )));
    records.push(Record::Moderation(ModerationRecord::new(
        &id,
        "toxic",
        0.5,
        Verdict::Allow,
    )));
    let mut end = ConversationUpdate::new(&id);
    end.ended = true;
    records.push(Record::Update(end.clone()));
    store.write_batch(&records).await.unwrap();
    // The same records again, whole and in parts: nothing doubles, and a
    // later end time does not move the first one.
    store.write_batch(&records).await.unwrap();
    store.write_batch(&records[2..4]).await.unwrap();
    let mut late_end = ConversationUpdate::new(&id);
    late_end.ended = true;
    late_end.at = end.at + chrono::Duration::seconds(60);
    store
        .write_batch(&[Record::Update(late_end)])
        .await
        .unwrap();

    let got = store.conversation(&id).await.unwrap().unwrap();
    let want: Vec<String> = records[1..4].iter().map(|r| r.id().to_string()).collect();
    assert_eq!(message_ids(&got), want);
    assert_eq!(got.ended_at, Some(end.at));
    assert_eq!(store.feedback(&id).await.unwrap().len(), 1);
    assert_eq!(store.moderation_events(&id).await.unwrap().len(), 1);
}

async fn store_bad_input(ctx: Ctx) {
    let writer = quick_writer(&ctx, Arc::clone(&ctx.store));
    let h = writer.handle();
    let conv = h.new_conversation("telegram", "chat-\0-1", "user\0id");
    let id = conv.id.clone();
    h.enqueue(Record::Conversation(conv)).unwrap();

    // A lone surrogate from a platform's UTF-16 arrives as U+FFFD.
    let surrogate = String::from_utf16_lossy(&[0xD83D, 0x0041]);
    let texts = [
        "nul \0 inside".to_string(),
        surrogate,
        "'); DROP TABLE messages; --".to_string(),
        "$1 ?1 :name @p \\' \\x00 %s {}".to_string(),
        "控制 \u{1}\u{7f} 👋🏽 עברית".to_string(),
        "x".repeat(100_000),
    ];
    let mut want = Vec::new();
    for t in &texts {
        let m = MessageRecord::new(&id, Role::User, t.clone());
        want.push(m.id.clone());
        h.enqueue(Record::Message(m)).unwrap();
    }
    // The database refuses a message of a conversation it does not know;
    // only that record is set aside.
    let orphan = MessageRecord::new("no-such-conversation", Role::User, "orphan");
    h.enqueue(Record::Message(orphan.clone())).unwrap();
    let after = MessageRecord::new(&id, Role::Assistant, "still here");
    want.push(after.id.clone());
    h.enqueue(Record::Message(after)).unwrap();

    // Over the limit or not a number: refused before queuing, with the reason.
    let huge = MessageRecord::new(&id, Role::User, "y".repeat(2 << 20));
    let err = h.enqueue(Record::Message(huge)).unwrap_err().to_string();
    assert!(
        err.contains("message content") && err.contains("limit"),
        "{err}"
    );
    let mut nan = MessageRecord::new(&id, Role::Assistant, "scores");
    nan.scores.insert("toxic".into(), f64::NAN);
    let err = h.enqueue(Record::Message(nan)).unwrap_err().to_string();
    assert!(err.contains("finite"), "{err}");
    let bad_rating = h.new_feedback(&id, "telegram", "user", 0);
    assert!(h.enqueue(Record::Feedback(bad_rating)).is_err());

    let report = writer.shutdown().await.unwrap();
    assert_eq!(report.rejected, 1, "{report:?}");
    assert_eq!(report.written, 1 + texts.len() as u64 + 1, "{report:?}");

    let got = ctx.store.conversation(&id).await.unwrap().unwrap();
    assert_eq!(got.record.channel, "chat-\u{FFFD}-1");
    assert_eq!(message_ids(&got), want);
    let contents: Vec<&str> = got.messages.iter().map(|m| m.content.as_str()).collect();
    assert_eq!(contents[0], "nul \u{FFFD} inside");
    assert_eq!(contents[1], "\u{FFFD}A");
    for (got, sent) in contents[2..6].iter().zip(&texts[2..6]) {
        assert_eq!(got, sent);
    }
    let rejected = std::fs::read_to_string(ctx.spill_dir().join("rejected.jsonl")).unwrap();
    assert_eq!(rejected.lines().count(), 1);
    assert!(rejected.contains(&orphan.id), "{rejected}");
}

/// Six conversations across two platforms and six days.
async fn seed(store: &dyn ConversationStore) -> Vec<String> {
    let key = hasher().key("discord", "u1");
    let mut records = Vec::new();
    let mut ids = Vec::new();
    let mut conv = |platform: &str, day: u32, turns: &[(Role, &str)], records: &mut Vec<Record>| {
        let mut c = ConversationRecord::new(platform, "c", key.clone());
        c.started_at = at(day, 10, 0);
        let id = c.id.clone();
        records.push(Record::Conversation(c));
        for (i, (role, text)) in turns.iter().enumerate() {
            let mut m = MessageRecord::new(&id, *role, *text);
            m.created_at = at(day, 10, i as u32 + 1);
            if *role == Role::Assistant {
                m.latency_ms = Some(100);
            }
            records.push(Record::Message(m));
        }
        ids.push(id.clone());
        id
    };
    use Role::{Assistant as A, System as S, User as U};
    // A: good, rated 5, PII inside, topic and style.
    let a = conv(
        "discord",
        1,
        &[
            (S, "You are the support bot."),
            (
                U,
                "I'm jane.doe@example.com, call me on +44 20 7946 0958 about ORD-123456",
            ),
            (A, "Thanks, I will call."),
            (U, "Great"),
            (A, "Anything else?"),
        ],
        &mut records,
    );
    // B: one turn, rated 2.
    let b = conv("telegram", 2, &[(U, "hi"), (A, "hello")], &mut records);
    // C: a flagged message, rated 5.
    let c = conv(
        "discord",
        3,
        &[
            (U, "you idiot"),
            (A, "Let's keep it civil."),
            (U, "sorry"),
            (A, "No problem."),
        ],
        &mut records,
    );
    // D: handed to a human.
    let d = conv(
        "discord",
        4,
        &[
            (U, "I want a person"),
            (A, "Connecting you."),
            (U, "ok"),
            (A, "A colleague joins."),
        ],
        &mut records,
    );
    // E: no assistant reply at all.
    let _e = conv("telegram", 5, &[(U, "hello?")], &mut records);
    // F: a blocking moderation event, a card number.
    let f = conv(
        "discord",
        6,
        &[
            (U, "my card is 4111 1111 1111 1111"),
            (A, "Please never share card numbers."),
        ],
        &mut records,
    );

    for r in records.iter_mut() {
        if let Record::Conversation(cr) = r
            && cr.id == a
        {
            cr.topic = Some("orders".into());
            cr.style = Some("formal".into());
        }
        if let Record::Message(m) = r
            && m.conversation_id == c
            && m.content == "you idiot"
        {
            m.verdict = Some(Verdict::Flag);
            m.scores.insert("insult".into(), 0.875);
        }
    }
    let fb = |conv: &str, rating: u8, day: u32| {
        let mut f = FeedbackRecord::new(conv, rating, key.clone());
        f.created_at = at(day, 11, 0);
        Record::Feedback(f)
    };
    records.push(fb(&a, 5, 1));
    records.push(fb(&b, 2, 2));
    records.push(fb(&c, 5, 3));
    let mut block = ModerationRecord::new(&f, "payment_data", 0.99, Verdict::Block);
    block.created_at = at(6, 10, 5);
    records.push(Record::Moderation(block));
    let mut handoff = ConversationUpdate::new(&d);
    handoff.handoff = Some(Handoff::Active);
    handoff.at = at(4, 10, 30);
    records.push(Record::Update(handoff));
    store.write_batch(&records).await.unwrap();
    ids
}

async fn selected(store: &dyn ConversationStore, filter: &ExportFilter) -> Vec<String> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    // Pages of two exercise the keyset pagination.
    loop {
        let page = store.select(filter, after.as_deref(), 2).await.unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.record.id.clone());
        out.extend(page.iter().map(|c| c.record.id.clone()));
    }
    out
}

async fn check(store: &dyn ConversationStore, filter: ExportFilter, want: &[&String]) {
    let want: Vec<String> = want.iter().map(|s| (*s).clone()).collect();
    assert_eq!(selected(store, &filter).await, want, "{filter:?}");
}

async fn store_export_filters_and_redaction(ctx: Ctx) {
    let store = ctx.store.as_ref();
    let ids = seed(store).await;
    let [a, b, c, d, e, f] = [0, 1, 2, 3, 4, 5].map(|i| ids[i].clone());
    let all = ExportFilter::default();
    assert_eq!(selected(store, &all).await, ids);
    check(
        store,
        ExportFilter {
            platforms: vec!["telegram".into()],
            ..all.clone()
        },
        &[&b, &e],
    )
    .await;
    check(
        store,
        ExportFilter {
            platforms: vec!["telegram".into(), "discord".into()],
            ..all.clone()
        },
        &ids.iter().collect::<Vec<_>>(),
    )
    .await;
    check(
        store,
        ExportFilter {
            since: Some(at(2, 0, 0)),
            until: Some(at(5, 0, 0)),
            ..all.clone()
        },
        &[&b, &c, &d],
    )
    .await;
    check(
        store,
        ExportFilter {
            min_rating: Some(4.0),
            ..all.clone()
        },
        &[&a, &c],
    )
    .await;
    check(
        store,
        ExportFilter {
            exclude_flagged: true,
            ..all.clone()
        },
        &[&a, &b, &d, &e],
    )
    .await;
    check(
        store,
        ExportFilter {
            exclude_handoff: true,
            ..all.clone()
        },
        &[&a, &b, &c, &e, &f],
    )
    .await;
    check(
        store,
        ExportFilter {
            min_turns: 2,
            ..all.clone()
        },
        &[&a, &c, &d],
    )
    .await;
    check(
        store,
        ExportFilter {
            platforms: vec!["discord".into()],
            exclude_flagged: true,
            exclude_handoff: true,
            min_rating: Some(4.0),
            ..all.clone()
        },
        &[&a],
    )
    .await;

    // OpenAI JSONL, redacted, read back by the fine-tuning reader.
    let out = ctx.dir.path().join("openai.jsonl");
    let redactor = Redactor::new().with_pattern(NamedPattern::parse(r"ORDER=ORD-\d{6}").unwrap());
    let report = store::export_jsonl(store, &all, ExportFormat::Openai, Some(&redactor), &out)
        .await
        .unwrap();
    assert_eq!((report.matched, report.written, report.skipped), (6, 5, 1));
    assert_eq!(report.messages, 5 + 2 + 4 + 4 + 2);
    assert_eq!(report.redactions.get("EMAIL"), Some(&1));
    assert_eq!(report.redactions.get("PHONE"), Some(&1));
    assert_eq!(report.redactions.get("CARD"), Some(&1));
    assert_eq!(report.redactions.get("ORDER"), Some(&1));
    let dialogs = read_dialogs_jsonl(&out).unwrap();
    assert_eq!(dialogs.len(), 5);
    assert_eq!(dialogs[0].topic.as_deref(), Some("orders"));
    assert_eq!(dialogs[0].style.as_deref(), Some("formal"));
    assert_eq!(dialogs[0].messages[0].role, Role::System);
    assert_eq!(
        dialogs[0].messages[1].content,
        "I'm <EMAIL>, call me on <PHONE> about <ORDER>"
    );
    assert_eq!(dialogs[4].messages[0].content, "my card is <CARD>");
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(
        !text.contains("jane.doe") && !text.contains("7946"),
        "{text}"
    );
    assert!(
        text.starts_with(r#"{"messages":[{"role":"system","content":"#),
        "{text}"
    );

    // ShareGPT reads back as the same dialogs.
    let share = ctx.dir.path().join("sharegpt.jsonl");
    store::export_jsonl(store, &all, ExportFormat::Sharegpt, Some(&redactor), &share)
        .await
        .unwrap();
    let share_text = std::fs::read_to_string(&share).unwrap();
    assert!(share_text.contains(r#""from":"human""#) && share_text.contains(r#""from":"gpt""#));
    assert_eq!(read_dialogs_jsonl(&share).unwrap(), dialogs);

    // Without redaction the text is as logged.
    let raw = ctx.dir.path().join("raw.jsonl");
    store::export_jsonl(store, &all, ExportFormat::Openai, None, &raw)
        .await
        .unwrap();
    assert!(
        std::fs::read_to_string(&raw)
            .unwrap()
            .contains("jane.doe@example.com")
    );

    // A path that cannot be written: a clear error, nothing left behind.
    let bad = ctx.dir.path().join("missing-dir").join("x.jsonl");
    let err = store::export_jsonl(store, &all, ExportFormat::Openai, None, &bad)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing-dir"), "{err}");
}

async fn store_stats_per_platform_and_day(ctx: Ctx) {
    let store = ctx.store.as_ref();
    seed(store).await;
    let s = store::stats::stats(store).await.unwrap();
    let days: Vec<(&str, &str)> = s
        .rows
        .iter()
        .map(|r| (r.day.as_str(), r.platform.as_str()))
        .collect();
    assert_eq!(
        days,
        [
            ("2026-11-01", "discord"),
            ("2026-11-02", "telegram"),
            ("2026-11-03", "discord"),
            ("2026-11-04", "discord"),
            ("2026-11-05", "telegram"),
            ("2026-11-06", "discord"),
        ]
    );
    let a = &s.rows[0];
    assert_eq!(
        (
            a.conversations,
            a.messages,
            a.user_messages,
            a.assistant_messages
        ),
        (1, 5, 2, 2)
    );
    assert_eq!(
        (a.feedback, a.avg_rating, a.positive_rate),
        (1, Some(5.0), Some(1.0))
    );
    assert_eq!(a.avg_latency_ms, Some(100.0));
    let c = &s.rows[2];
    assert_eq!((c.flagged_messages, c.flag_rate), (1, Some(0.25)));
    assert_eq!(s.rows[3].handoff_rate, Some(1.0));
    assert_eq!(
        (s.rows[5].moderation_events, s.rows[5].moderation_actions),
        (1, 1)
    );
    let t = &s.total;
    assert_eq!(
        (t.conversations, t.messages, t.feedback, t.handoffs),
        (6, 18, 3, 1)
    );
    assert_eq!(t.avg_rating, Some(4.0));
    assert_eq!(t.feedback_rate, Some(0.5));
    assert!(s.to_table().contains("2026-11-06 discord"));
}

async fn store_inbox_leases_chats_in_order(ctx: Ctx) {
    let store = &ctx.store;
    let update = |id: i64, chat: &str| InboundUpdate {
        platform: "telegram".into(),
        update_id: id,
        chat_key: chat.into(),
        payload: format!("{{\"update_id\":{id}}}"),
        sent: Vec::new(),
    };
    assert!(store.accept_update(&update(8, "1"), "a").await.unwrap());
    assert!(store.accept_update(&update(7, "1"), "b").await.unwrap());
    // Resent: recognised, not kept twice.
    assert!(!store.accept_update(&update(7, "1"), "a").await.unwrap());
    assert!(store.accept_update(&update(9, "2"), "b").await.unwrap());
    // Oldest first, whoever acknowledged it.
    assert_eq!(
        store.next_update("telegram", "1").await.unwrap(),
        Some(update(7, "1"))
    );
    let mut waiting = store.waiting_chats("telegram", "c", 10).await.unwrap();
    waiting.sort();
    assert_eq!(waiting, ["1", "2"]);

    // One replica at a time answers a chat; the holder renews.
    let soon = Utc::now() + chrono::Duration::minutes(5);
    assert!(store.lease_chat("telegram", "1", "a", soon).await.unwrap());
    assert!(!store.lease_chat("telegram", "1", "b", soon).await.unwrap());
    assert!(store.lease_chat("telegram", "1", "a", soon).await.unwrap());
    // A held chat is not waiting, except for its holder after a restart.
    assert_eq!(
        store.waiting_chats("telegram", "c", 10).await.unwrap(),
        ["2"]
    );
    let mut own = store.waiting_chats("telegram", "a", 10).await.unwrap();
    own.sort();
    assert_eq!(own, ["1", "2"]);
    // The messages sent in answer are noted as they go, and read back by
    // whoever answers the update again.
    store.note_sent("telegram", 7, &[501]).await.unwrap();
    store.note_sent("telegram", 7, &[501, 502]).await.unwrap();
    assert_eq!(
        store.next_update("telegram", "1").await.unwrap(),
        Some(InboundUpdate {
            sent: vec![501, 502],
            ..update(7, "1")
        })
    );
    store.finish_update("telegram", 7).await.unwrap();
    assert_eq!(
        store.next_update("telegram", "1").await.unwrap(),
        Some(update(8, "1"))
    );
    // Released: another replica takes it at once.
    store.release_chat("telegram", "1", "b").await.unwrap();
    assert!(
        !store.lease_chat("telegram", "1", "b", soon).await.unwrap(),
        "b cannot release a's lease"
    );
    store.release_chat("telegram", "1", "a").await.unwrap();
    assert!(store.lease_chat("telegram", "1", "b", soon).await.unwrap());
    // An expired lease (its replica died) is taken over.
    let past = Utc::now() - chrono::Duration::seconds(1);
    assert!(
        store
            .lease_chat("telegram", "2", "dead", past)
            .await
            .unwrap()
    );
    let mut waiting = store.waiting_chats("telegram", "c", 10).await.unwrap();
    waiting.sort();
    assert_eq!(waiting, ["2"], "chat 1 is b's, chat 2's lease expired");
    assert!(store.lease_chat("telegram", "2", "c", soon).await.unwrap());

    // Answered: gone from the queue, payload dropped, still recognised.
    store.finish_update("telegram", 8).await.unwrap();
    store.finish_update("telegram", 9).await.unwrap();
    assert_eq!(store.next_update("telegram", "1").await.unwrap(), None);
    assert!(!store.accept_update(&update(7, "1"), "b").await.unwrap());
    // Another platform's ids are its own.
    assert!(
        store
            .accept_update(
                &InboundUpdate {
                    platform: "other".into(),
                    ..update(7, "1")
                },
                "a"
            )
            .await
            .unwrap()
    );
    // Purging removes answered rows before the cutoff, nothing unanswered.
    let later = Utc::now() + chrono::Duration::seconds(1);
    assert_eq!(store.purge_updates(past).await.unwrap(), 0);
    assert_eq!(store.purge_updates(later).await.unwrap(), 3);
    assert!(store.accept_update(&update(7, "1"), "a").await.unwrap());

    // The chat's open conversation, with its messages, for a replica that
    // does not hold the chat.
    assert!(
        store
            .open_conversation("telegram", "77")
            .await
            .unwrap()
            .is_none()
    );
    let writer = quick_writer(&ctx, Arc::clone(store));
    let h = writer.handle();
    let conv = h.new_conversation("telegram", "77", "77");
    let id = conv.id.clone();
    h.enqueue(Record::Conversation(conv)).unwrap();
    h.enqueue(Record::Message(MessageRecord::new(&id, Role::User, "hi")))
        .unwrap();
    h.flush().await.unwrap();
    let open = store
        .open_conversation("telegram", "77")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(open.record.id, id);
    assert_eq!(open.messages.len(), 1);
    writer.shutdown().await.unwrap();
}

/// A store whose database can be switched off.
struct Flaky {
    inner: Arc<dyn ConversationStore>,
    down: AtomicBool,
}

impl ConversationStore for Flaky {
    fn backend(&self) -> store::Backend {
        self.inner.backend()
    }
    fn display_url(&self) -> &str {
        self.inner.display_url()
    }
    fn migrate(&self) -> StoreFuture<'_, ()> {
        self.inner.migrate()
    }
    fn schema_version(&self) -> StoreFuture<'_, Option<i64>> {
        self.inner.schema_version()
    }
    fn write_batch<'a>(&'a self, records: &'a [Record]) -> StoreFuture<'a, ()> {
        if self.down.load(Ordering::SeqCst) {
            return Box::pin(async {
                tokio::time::sleep(Duration::from_millis(5)).await;
                Err(store::Error::Unavailable {
                    backend: "test",
                    reason: "switched off".into(),
                })
            });
        }
        self.inner.write_batch(records)
    }
    fn conversation<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<StoredConversation>> {
        self.inner.conversation(id)
    }
    fn feedback<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Vec<FeedbackRecord>> {
        self.inner.feedback(id)
    }
    fn moderation_events<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Vec<ModerationRecord>> {
        self.inner.moderation_events(id)
    }
    fn select<'a>(
        &'a self,
        filter: &'a ExportFilter,
        after: Option<&'a str>,
        limit: u32,
    ) -> StoreFuture<'a, Vec<StoredConversation>> {
        self.inner.select(filter, after, limit)
    }
    fn idle_conversations<'a>(
        &'a self,
        before: DateTime<Utc>,
        after: Option<&'a str>,
        limit: u32,
    ) -> StoreFuture<'a, Vec<String>> {
        self.inner.idle_conversations(before, after, limit)
    }
    fn user_conversations<'a>(
        &'a self,
        platform: &'a str,
        user: &'a store::UserKey,
    ) -> StoreFuture<'a, Vec<String>> {
        self.inner.user_conversations(platform, user)
    }
    fn delete_conversations<'a>(
        &'a self,
        ids: &'a [String],
        rater: Option<&'a store::UserKey>,
        dry_run: bool,
    ) -> StoreFuture<'a, store::Deleted> {
        self.inner.delete_conversations(ids, rater, dry_run)
    }
    fn setting<'a>(&'a self, name: &'a str) -> StoreFuture<'a, Option<String>> {
        self.inner.setting(name)
    }
    fn set_setting_once<'a>(&'a self, name: &'a str, value: &'a str) -> StoreFuture<'a, ()> {
        self.inner.set_setting_once(name, value)
    }
    fn write_audit<'a>(&'a self, event: &'a store::AuditEvent) -> StoreFuture<'a, ()> {
        self.inner.write_audit(event)
    }
    fn audit_events(&self, limit: u32) -> StoreFuture<'_, Vec<store::AuditEvent>> {
        self.inner.audit_events(limit)
    }
    fn insert_operator<'a>(&'a self, row: &'a store::OperatorRow) -> StoreFuture<'a, bool> {
        self.inner.insert_operator(row)
    }
    fn operators<'a>(&'a self, name: Option<&'a str>) -> StoreFuture<'a, Vec<store::OperatorRow>> {
        self.inner.operators(name)
    }
    fn update_operator<'a>(&'a self, row: &'a store::OperatorRow) -> StoreFuture<'a, bool> {
        self.inner.update_operator(row)
    }
    fn delete_operator<'a>(&'a self, name: &'a str) -> StoreFuture<'a, bool> {
        self.inner.delete_operator(name)
    }
    fn handoff_queue(&self, limit: u32) -> StoreFuture<'_, Vec<StoredConversation>> {
        self.inner.handoff_queue(limit)
    }
    fn open_handoff<'a>(
        &'a self,
        platform: &'a str,
        channel: &'a str,
    ) -> StoreFuture<'a, Option<StoredConversation>> {
        self.inner.open_handoff(platform, channel)
    }
    fn claim<'a>(&'a self, id: &'a str, operator: &'a str) -> StoreFuture<'a, bool> {
        self.inner.claim(id, operator)
    }
    fn release<'a>(&'a self, id: &'a str) -> StoreFuture<'a, bool> {
        self.inner.release(id)
    }
    fn message_conversation<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<String>> {
        self.inner.message_conversation(id)
    }
    fn write_review<'a>(&'a self, review: &'a store::Review) -> StoreFuture<'a, ()> {
        self.inner.write_review(review)
    }
    fn review_queue(&self, every: u32, limit: u32) -> StoreFuture<'_, Vec<store::ReviewItem>> {
        self.inner.review_queue(every, limit)
    }
    fn conversation_audit<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Vec<store::AuditEvent>> {
        self.inner.conversation_audit(id)
    }
    fn accept_update<'a>(
        &'a self,
        update: &'a InboundUpdate,
        replica: &'a str,
    ) -> StoreFuture<'a, bool> {
        self.inner.accept_update(update, replica)
    }
    fn next_update<'a>(
        &'a self,
        platform: &'a str,
        chat: &'a str,
    ) -> StoreFuture<'a, Option<InboundUpdate>> {
        self.inner.next_update(platform, chat)
    }
    fn note_sent<'a>(
        &'a self,
        platform: &'a str,
        update_id: i64,
        sent: &'a [i64],
    ) -> StoreFuture<'a, ()> {
        self.inner.note_sent(platform, update_id, sent)
    }
    fn forget_chat_updates<'a>(
        &'a self,
        platform: &'a str,
        chat: &'a str,
        dry_run: bool,
    ) -> StoreFuture<'a, u64> {
        self.inner.forget_chat_updates(platform, chat, dry_run)
    }
    fn finish_update<'a>(&'a self, platform: &'a str, update_id: i64) -> StoreFuture<'a, ()> {
        self.inner.finish_update(platform, update_id)
    }
    fn lease_chat<'a>(
        &'a self,
        platform: &'a str,
        chat: &'a str,
        replica: &'a str,
        until: DateTime<Utc>,
    ) -> StoreFuture<'a, bool> {
        self.inner.lease_chat(platform, chat, replica, until)
    }
    fn release_chat<'a>(
        &'a self,
        platform: &'a str,
        chat: &'a str,
        replica: &'a str,
    ) -> StoreFuture<'a, ()> {
        self.inner.release_chat(platform, chat, replica)
    }
    fn waiting_chats<'a>(
        &'a self,
        platform: &'a str,
        replica: &'a str,
        limit: u32,
    ) -> StoreFuture<'a, Vec<String>> {
        self.inner.waiting_chats(platform, replica, limit)
    }
    fn open_conversation<'a>(
        &'a self,
        platform: &'a str,
        channel: &'a str,
    ) -> StoreFuture<'a, Option<StoredConversation>> {
        self.inner.open_conversation(platform, channel)
    }
    fn purge_updates(&self, before: DateTime<Utc>) -> StoreFuture<'_, u64> {
        self.inner.purge_updates(before)
    }
    fn stats(&self) -> StoreFuture<'_, store::Stats> {
        self.inner.stats()
    }
    fn close(&self) -> StoreFuture<'_, ()> {
        self.inner.close()
    }
}

async fn store_writer_spills_and_replays(ctx: Ctx) {
    let flaky = Arc::new(Flaky {
        inner: Arc::clone(&ctx.store),
        down: AtomicBool::new(false),
    });
    let writer = quick_writer(&ctx, flaky.clone());
    let h = writer.handle();
    let conv = h.new_conversation("discord", "c", "u");
    let id = conv.id.clone();
    h.enqueue(Record::Conversation(conv)).unwrap();
    let msgs = sample(&id, 900);
    let want: Vec<String> = msgs.iter().map(|r| r.id().to_string()).collect();
    for (i, m) in msgs.iter().enumerate() {
        if i == 300 {
            h.flush().await.unwrap();
            flaky.down.store(true, Ordering::SeqCst);
        }
        if i == 600 {
            let f = h.flush().await.unwrap();
            assert!(f.pending > 0, "records spilled while the database is down");
            let spill = std::fs::read_to_string(ctx.spill_dir().join("spill.jsonl")).unwrap();
            assert_eq!(spill.lines().count() as u64, f.pending);
            assert!(!spill.contains("\"u\""), "no raw user id in the spill file");
            flaky.down.store(false, Ordering::SeqCst);
        }
        // `enqueue` is synchronous: it cannot wait on the database.
        h.enqueue(m.clone()).unwrap();
    }
    let report = writer.shutdown().await.unwrap();
    assert_eq!(report.pending, 0, "{report:?}");
    assert!(report.spilled >= 300, "{report:?}");
    assert_eq!(report.replayed, report.spilled, "{report:?}");
    assert_eq!(report.written, 901, "{report:?}");
    let got = ctx.store.conversation(&id).await.unwrap().unwrap();
    assert_eq!(message_ids(&got), want, "every record once, in order");

    // Down at shutdown: the records stay spilled and the next writer
    // replays them before anything else.
    flaky.down.store(true, Ordering::SeqCst);
    let writer = quick_writer(&ctx, flaky.clone());
    let h = writer.handle();
    let more = sample(&id, 50);
    for m in &more {
        h.enqueue(m.clone()).unwrap();
    }
    let report = writer.shutdown().await.unwrap();
    assert_eq!(report.pending, 50, "{report:?}");
    flaky.down.store(false, Ordering::SeqCst);
    let writer = quick_writer(&ctx, flaky.clone());
    let last = sample(&id, 1);
    writer.handle().enqueue(last[0].clone()).unwrap();
    let report = writer.shutdown().await.unwrap();
    assert_eq!((report.pending, report.written), (0, 51), "{report:?}");
    let got = ctx.store.conversation(&id).await.unwrap().unwrap();
    let mut want = want;
    want.extend(more.iter().chain(&last).map(|r| r.id().to_string()));
    assert_eq!(message_ids(&got), want);
}

// ------------------------------------------------------ data protection

fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

const PAN_SPACED: &str = "4111 1111 1111 1111";
const PAN: &str = "4111111111111111";

fn holds_pan(text: &str) -> bool {
    text.contains(PAN_SPACED) || text.contains(PAN) || text.contains("4111-1111-1111-1111")
}

/// Card numbers never get behind the writer's queue: not into the
/// database, the spill file or `rejected.jsonl`; the kinds configured on top
/// (here none: e-mail stays) are left alone.
async fn store_redacts_at_rest(ctx: Ctx) {
    let flaky = Arc::new(Flaky {
        inner: Arc::clone(&ctx.store),
        down: AtomicBool::new(false),
    });
    let writer = quick_writer(&ctx, flaky.clone());
    let h = writer.handle();
    let conv = h.new_conversation("telegram", "c", "u");
    let id = conv.id.clone();
    h.enqueue(Record::Conversation(conv)).unwrap();
    let said = format!("my email is jane.doe@example.com and card {PAN_SPACED}");
    h.enqueue(Record::Message(MessageRecord::new(
        &id,
        Role::User,
        said.clone(),
    )))
    .unwrap();
    let mut fb = h.new_feedback(&id, "telegram", "u", 1);
    fb.comment = Some(format!("you charged {PAN} twice"));
    h.enqueue(Record::Feedback(fb)).unwrap();
    assert_eq!(h.flush().await.unwrap().pending, 0);

    // The database is down: the next records wait in the spill file.
    flaky.down.store(true, Ordering::SeqCst);
    h.enqueue(Record::Message(MessageRecord::new(
        &id,
        Role::User,
        format!("again: {}", PAN_SPACED.replace(' ', "-")),
    )))
    .unwrap();
    // A record the database will refuse (no such conversation) goes to
    // rejected.jsonl once it is back.
    h.enqueue(Record::Message(MessageRecord::new(
        "no-such-conversation",
        Role::User,
        format!("orphan {PAN}"),
    )))
    .unwrap();
    let f = h.flush().await.unwrap();
    assert_eq!(f.pending, 2);
    let spill = std::fs::read_to_string(ctx.spill_dir().join("spill.jsonl")).unwrap();
    assert!(!holds_pan(&spill) && spill.contains("<CARD>"), "{spill}");
    flaky.down.store(false, Ordering::SeqCst);
    let report = writer.shutdown().await.unwrap();
    assert_eq!((report.pending, report.rejected), (0, 1), "{report:?}");
    let rejected = std::fs::read_to_string(ctx.spill_dir().join("rejected.jsonl")).unwrap();
    assert!(
        !holds_pan(&rejected) && rejected.contains("orphan <CARD>"),
        "{rejected}"
    );
    for file in ["spill.jsonl", "rejected.jsonl"] {
        assert_eq!(mode(&ctx.spill_dir().join(file)), 0o600, "{file}");
    }

    let got = ctx.store.conversation(&id).await.unwrap().unwrap();
    let contents: Vec<&str> = got.messages.iter().map(|m| m.content.as_str()).collect();
    assert_eq!(
        contents,
        [
            "my email is jane.doe@example.com and card <CARD>",
            "again: <CARD>"
        ]
    );
    let fb = ctx.store.feedback(&id).await.unwrap();
    assert_eq!(fb[0].comment.as_deref(), Some("you charged <CARD> twice"));

    // More kinds when configured: e-mail and a named pattern too.
    let mut cfg = WriterConfig::new(ctx.dir.path().join("spill2"));
    cfg.redactor = Redactor::from_kinds(&["card", "email", "ORDER_ID=ORD-\\d{6}"]).unwrap();
    let writer = Writer::spawn(Arc::clone(&ctx.store), hasher(), cfg).unwrap();
    let h = writer.handle();
    let m = MessageRecord::new(&id, Role::User, format!("{said}, order ORD-123456"));
    let mid = m.id.clone();
    h.enqueue(Record::Message(m)).unwrap();
    writer.shutdown().await.unwrap();
    let got = ctx.store.conversation(&id).await.unwrap().unwrap();
    let last = got.messages.iter().find(|m| m.id == mid).unwrap();
    assert_eq!(
        last.content,
        "my email is <EMAIL> and card <CARD>, order <ORDER_ID>"
    );
}

/// Writes a conversation of `platform`/`user` started on `day` (of November
/// 2026), with one message per entry of `days`, a feedback row on
/// `feedback_day` and a moderation event on the first message's day.
async fn seed_conversation(
    store: &dyn ConversationStore,
    platform: &str,
    user: &str,
    day: u32,
    days: &[u32],
    feedback_day: Option<u32>,
) -> String {
    let key = hasher().key(platform, user);
    let mut c = ConversationRecord::new(platform, "c", key.clone());
    c.started_at = at(day, 9, 0);
    let id = c.id.clone();
    let mut records = vec![Record::Conversation(c)];
    for (i, &d) in days.iter().enumerate() {
        let mut m = MessageRecord::new(&id, Role::User, format!("message {i}"));
        m.created_at = at(d, 9, i as u32 + 1);
        records.push(Record::Message(m));
    }
    if let Some(&first) = days.first() {
        let mut e = ModerationRecord::new(&id, "toxic", 0.9, Verdict::Flag);
        e.created_at = at(first, 9, 30);
        records.push(Record::Moderation(e));
    }
    if let Some(d) = feedback_day {
        let mut f = FeedbackRecord::new(&id, 5, key);
        f.created_at = at(d, 9, 40);
        records.push(Record::Feedback(f));
    }
    store.write_batch(&records).await.unwrap();
    id
}

async fn store_purge_deletes_idle_conversations(ctx: Ctx) {
    let s = ctx.store.as_ref();
    let cutoff = at(10, 0, 0);
    // Idle since before the cutoff: deleted with every row.
    let old = seed_conversation(s, "telegram", "a", 1, &[1, 2], Some(2)).await;
    // Started long ago, but a message, feedback or an end after the cutoff:
    // still in use, kept whole.
    let late_message = seed_conversation(s, "telegram", "b", 1, &[1, 12], None).await;
    let late_feedback = seed_conversation(s, "discord", "c", 2, &[2], Some(11)).await;
    let late_end = seed_conversation(s, "web", "d", 3, &[3], None).await;
    let mut end = ConversationUpdate::new(&late_end);
    end.at = at(11, 8, 0);
    end.ended = true;
    s.write_batch(&[Record::Update(end)]).await.unwrap();
    let new = seed_conversation(s, "telegram", "a", 15, &[15], Some(15)).await;
    // Enough idle ones to need more than one batch.
    let mut many = Vec::new();
    for i in 0..520 {
        many.push(seed_conversation(s, "api", &format!("bulk{i}"), 4, &[4], None).await);
    }

    let dry = store::retention::purge(s, cutoff, true, "test")
        .await
        .unwrap();
    let want = store::Deleted {
        conversations: 521,
        messages: 2 + 520,
        feedback: 1,
        moderation_events: 521,
        kept_updates: 0,
    };
    assert_eq!(dry, want);
    assert!(
        s.conversation(&old).await.unwrap().is_some(),
        "a dry run deletes nothing"
    );
    assert!(s.audit_events(10).await.unwrap().is_empty());

    let done = store::retention::purge(s, cutoff, false, "test")
        .await
        .unwrap();
    assert_eq!(done, want);
    assert!(s.conversation(&old).await.unwrap().is_none());
    assert!(s.feedback(&old).await.unwrap().is_empty());
    assert!(s.moderation_events(&old).await.unwrap().is_empty());
    for id in [&late_message, &late_feedback, &late_end, &new] {
        let c = s.conversation(id).await.unwrap().unwrap();
        assert!(!c.messages.is_empty(), "{id} kept whole");
        assert_eq!(s.moderation_events(id).await.unwrap().len(), 1);
    }
    assert!(s.conversation(&many[519]).await.unwrap().is_none());
    let audit = s.audit_events(10).await.unwrap();
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(
        (audit[0].actor.as_str(), audit[0].action.as_str()),
        ("test", "purge")
    );
    let detail = audit[0].detail.clone().unwrap();
    assert_eq!(detail["deleted"]["conversations"], 521, "{detail}");
    // Nothing left to purge: a second run deletes nothing.
    let again = store::retention::purge(s, cutoff, false, "test")
        .await
        .unwrap();
    assert_eq!(again, store::Deleted::default());
}

async fn store_forget_and_subject_access(ctx: Ctx) {
    let s = ctx.store.as_ref();
    let h = hasher();
    // Without a recorded check, a lookup cannot tell a wrong secret from a
    // user without records: it refuses.
    let err = store::retention::forget(s, &h, "telegram", "u1", false, "test")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("no check"), "{err}");
    assert_eq!(
        store::retention::verify_user_key(s, &h, true)
            .await
            .unwrap(),
        store::KeyCheck::Recorded
    );
    assert_eq!(
        store::retention::verify_user_key(s, &h, true)
            .await
            .unwrap(),
        store::KeyCheck::Matches
    );

    let tg1 = seed_conversation(s, "telegram", "u1", 1, &[1, 1, 1], Some(1)).await;
    let tg2 = seed_conversation(s, "telegram", "u1", 3, &[3], None).await;
    // The same id on another platform is another person.
    let dc = seed_conversation(s, "discord", "u1", 3, &[3], Some(3)).await;
    let other = seed_conversation(s, "telegram", "u2", 4, &[4], Some(4)).await;
    // u1 rated a reply in u2's (shared) chat: that feedback is u1's data.
    let mut elsewhere = FeedbackRecord::new(&other, 2, h.key("telegram", "u1"));
    elsewhere.created_at = at(4, 12, 0);
    s.write_batch(&[Record::Feedback(elsewhere)]).await.unwrap();

    // A wrong secret is an error, and deletes nothing.
    let wrong = UserKeyHasher::new(b"another-secret-0123456789").unwrap();
    let err = store::retention::forget(s, &wrong, "telegram", "u1", false, "test")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("not the secret"), "{err}");
    assert!(!err.contains("0123456789"), "{err}");
    assert!(s.conversation(&tg1).await.unwrap().is_some());

    let (key, seen) = store::retention::subject_records(s, &h, "telegram", "u1")
        .await
        .unwrap();
    assert_eq!(key, h.key("telegram", "u1"));
    let ids: Vec<&str> = seen
        .iter()
        .map(|c| c.conversation.record.id.as_str())
        .collect();
    assert_eq!(ids, [tg1.as_str(), tg2.as_str()]);
    assert_eq!(seen[0].conversation.messages.len(), 3);
    assert_eq!((seen[0].feedback.len(), seen[0].moderation.len()), (1, 1));

    // Updates kept from u1's private chat (its id is theirs), one answered
    // and one waiting; another chat's stays.
    let kept = |id: i64, chat: &str| InboundUpdate {
        platform: "telegram".into(),
        update_id: id,
        chat_key: chat.into(),
        payload: "{}".into(),
        sent: Vec::new(),
    };
    for (id, chat) in [(1, "u1"), (2, "u1"), (3, "u2")] {
        assert!(s.accept_update(&kept(id, chat), "r").await.unwrap());
    }
    s.finish_update("telegram", 1).await.unwrap();

    let dry = store::retention::forget(s, &h, "telegram", "u1", true, "test")
        .await
        .unwrap();
    let want = store::Deleted {
        conversations: 2,
        messages: 4,
        feedback: 2,
        moderation_events: 2,
        kept_updates: 2,
    };
    assert_eq!(dry, want);
    assert!(s.audit_events(10).await.unwrap().is_empty());
    let done = store::retention::forget(s, &h, "telegram", "u1", false, "logs forget")
        .await
        .unwrap();
    assert_eq!(done, want);
    assert_eq!(s.next_update("telegram", "u1").await.unwrap(), None);
    assert!(s.next_update("telegram", "u2").await.unwrap().is_some());
    assert!(
        s.accept_update(&kept(1, "u1"), "r").await.unwrap(),
        "the answered update's row is gone too"
    );
    assert!(s.conversation(&tg1).await.unwrap().is_none());
    assert!(s.conversation(&tg2).await.unwrap().is_none());
    assert!(s.conversation(&dc).await.unwrap().is_some());
    let kept = s.feedback(&other).await.unwrap();
    assert_eq!(kept.len(), 1, "u2's own rating stays: {kept:?}");
    assert_eq!(kept[0].user_key, h.key("telegram", "u2"));
    let (_, after) = store::retention::subject_records(s, &h, "telegram", "u1")
        .await
        .unwrap();
    assert!(after.is_empty());

    // The audit says that an erasure happened and how much went, not whose.
    let audit = s.audit_events(10).await.unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].action, "erasure");
    let line = serde_json::to_string(&audit[0]).unwrap();
    assert!(line.contains("\"messages\":4"), "{line}");
    assert!(
        !line.contains(h.key("telegram", "u1").as_str()) && !line.contains("u1"),
        "{line}"
    );
}

async fn store_operators_login_and_lockout(ctx: Ctx) {
    use chatforge::operators::{self, Error as OpError, MAX_FAILED_LOGINS};
    let s = ctx.store.as_ref();
    let (row, otp) = operators::add(s, "ann", "test").await.unwrap();
    assert!(row.must_change && otp.len() >= 20);
    assert!(matches!(
        operators::add(s, "ann", "test").await,
        Err(OpError::Exists(_))
    ));
    assert!(matches!(
        operators::add(s, "bad name", "test").await,
        Err(OpError::BadName(_))
    ));
    // Only the argon2id hash is stored, never the password.
    let stored = s.operators(Some("ann")).await.unwrap();
    assert_eq!(stored.len(), 1);
    assert!(stored[0].password_hash.starts_with("$argon2id$"));
    assert!(!stored[0].password_hash.contains(&otp));
    assert!(!format!("{:?}", stored[0]).contains("argon2id$"));

    let op = operators::login(s, "ann", &otp).await.unwrap();
    assert!(op.must_change);
    assert!(matches!(
        operators::change_password(s, &op, "short").await,
        Err(OpError::WeakPassword)
    ));
    operators::change_password(s, &op, "a long new passphrase")
        .await
        .unwrap();
    assert!(matches!(
        operators::login(s, "ann", &otp).await,
        Err(OpError::BadCredentials)
    ));
    let op = operators::login(s, "ann", "a long new passphrase")
        .await
        .unwrap();
    assert!(!op.must_change);
    // An unknown name reads like a wrong password.
    assert!(matches!(
        operators::login(s, "nobody", "x").await,
        Err(OpError::BadCredentials)
    ));

    // The failures in a row lock the account: then even the right password
    // is refused, until a reset.
    for i in 1..MAX_FAILED_LOGINS {
        let e = operators::login(s, "ann", "guess").await.unwrap_err();
        assert!(matches!(e, OpError::BadCredentials), "attempt {i}: {e}");
    }
    assert!(matches!(
        operators::login(s, "ann", "guess").await,
        Err(OpError::Locked)
    ));
    assert!(matches!(
        operators::login(s, "ann", "a long new passphrase").await,
        Err(OpError::Locked)
    ));
    let fresh = operators::reset_password(s, "ann", "test").await.unwrap();
    let op = operators::login(s, "ann", &fresh).await.unwrap();
    assert!(op.must_change);

    operators::remove(s, "ann", "test").await.unwrap();
    assert!(matches!(
        operators::remove(s, "ann", "test").await,
        Err(OpError::NoSuchOperator(_))
    ));
    let actions: Vec<String> = s
        .audit_events(20)
        .await
        .unwrap()
        .into_iter()
        .rev()
        .map(|e| e.action)
        .collect();
    assert_eq!(
        actions,
        [
            "operator added",
            "operator password changed",
            "operator locked out",
            "operator password reset",
            "operator removed"
        ]
    );
}

async fn store_console_claims_reviews_and_corrections(ctx: Ctx) {
    use chatforge::store::{Review, ReviewDecision};
    let s = ctx.store.as_ref();
    let key = hasher().key("telegram", "7");
    let c = ConversationRecord::new("telegram", "42", key.clone());
    let id = c.id.clone();
    let msg = |role, text: &str, verdict| {
        let mut m = MessageRecord::new(&id, role, text);
        m.verdict = verdict;
        m
    };
    let (q1, good, q2, wrong, q3, blocked) = (
        msg(Role::User, "how long do refunds take?", None),
        msg(
            Role::Assistant,
            "Refunds take 5 days.",
            Some(Verdict::Allow),
        ),
        msg(Role::User, "and shipping?", None),
        msg(
            Role::Assistant,
            "Shipping is free forever.",
            Some(Verdict::Allow),
        ),
        msg(Role::User, "ok", None),
        msg(Role::Assistant, "something unsafe", Some(Verdict::Block)),
    );
    let mut operator_reply = MessageRecord::new(&id, Role::Assistant, "Hi, Ann from support here.");
    operator_reply.operator_id = Some("op-1".into());
    let mut thumbs_down = FeedbackRecord::new(&id, 1, key.clone());
    thumbs_down.message_id = Some(wrong.id.clone());
    let mut handoff = ConversationUpdate::new(&id);
    handoff.handoff = Some(Handoff::Requested);
    let records = vec![
        Record::Conversation(c),
        Record::Message(q1.clone()),
        Record::Message(good.clone()),
        Record::Message(q2.clone()),
        Record::Message(wrong.clone()),
        Record::Message(q3.clone()),
        Record::Message(blocked.clone()),
        Record::Feedback(thumbs_down),
        Record::Update(handoff),
        Record::Message(operator_reply.clone()),
    ];
    s.write_batch(&records).await.unwrap();

    let open = s.open_handoff("telegram", "42").await.unwrap().unwrap();
    assert_eq!(
        (open.record.id.as_str(), open.handoff),
        (id.as_str(), Handoff::Requested)
    );
    assert!(s.open_handoff("telegram", "43").await.unwrap().is_none());
    assert!(s.open_handoff("discord", "42").await.unwrap().is_none());

    // The queue; one claim wins, even when many race for it.
    let queue = s.handoff_queue(10).await.unwrap();
    assert_eq!(queue.len(), 1);
    assert_eq!(
        (queue[0].handoff, queue[0].claimed_by.as_deref()),
        (Handoff::Requested, None)
    );
    let store = Arc::clone(&ctx.store);
    let racers: Vec<_> = (0..8)
        .map(|i| {
            let (store, id) = (Arc::clone(&store), id.clone());
            tokio::spawn(async move { store.claim(&id, &format!("op-{i}")).await.unwrap() })
        })
        .collect();
    let mut won = 0;
    for r in racers {
        won += usize::from(r.await.unwrap());
    }
    assert_eq!(won, 1, "exactly one operator holds the conversation");
    let held = s.conversation(&id).await.unwrap().unwrap();
    assert_eq!(held.handoff, Handoff::Active);
    let holder = held.claimed_by.clone().unwrap();
    assert!(
        !s.claim(&id, &holder).await.unwrap(),
        "no claim of a held conversation"
    );

    // The operator's message reads back as theirs.
    let m = held
        .messages
        .iter()
        .find(|m| m.id == operator_reply.id)
        .unwrap();
    assert_eq!(
        (m.role, m.operator_id.as_deref()),
        (Role::Assistant, Some("op-1"))
    );

    assert!(s.release(&id).await.unwrap());
    assert!(!s.release(&id).await.unwrap());
    let released = s.conversation(&id).await.unwrap().unwrap();
    assert_eq!(
        (released.handoff, released.claimed_by),
        (Handoff::Resolved, None)
    );
    assert!(s.handoff_queue(10).await.unwrap().is_empty());
    assert!(s.open_handoff("telegram", "42").await.unwrap().is_none());
    // Asking again makes it claimable again.
    let mut again = ConversationUpdate::new(&id);
    again.handoff = Some(Handoff::Requested);
    s.write_batch(&[Record::Update(again)]).await.unwrap();
    assert!(s.claim(&id, "op-9").await.unwrap());

    // The review queue: blocked and 👎 replies always, the rest sampled.
    let reasons = |items: Vec<store::ReviewItem>| -> Vec<(String, String)> {
        items
            .into_iter()
            .map(|i| (i.message.id, i.reason))
            .collect()
    };
    let unsampled = reasons(s.review_queue(1_000_000, 50).await.unwrap());
    assert_eq!(
        unsampled,
        [
            (blocked.id.clone(), "blocked".to_string()),
            (wrong.id.clone(), "thumbs_down".to_string())
        ]
    );
    let all = reasons(s.review_queue(1, 50).await.unwrap());
    assert_eq!(
        all.len(),
        3,
        "every bot reply, never the operator's: {all:?}"
    );
    assert!(all.contains(&(good.id.clone(), "sample".to_string())));
    assert_eq!(
        s.message_conversation(&wrong.id).await.unwrap(),
        Some(id.clone())
    );
    assert_eq!(
        s.message_conversation(&q1.id).await.unwrap(),
        None,
        "users' turns are not reviewed"
    );

    let review = |m: &MessageRecord, decision, correction: Option<&str>| Review {
        message_id: m.id.clone(),
        conversation_id: id.clone(),
        operator_id: "op-1".into(),
        decision,
        correction: correction.map(str::to_string),
        created_at: Utc::now(),
    };
    s.write_review(&review(&good, ReviewDecision::Rejected, None))
        .await
        .unwrap();
    // A later review replaces the earlier one.
    s.write_review(&review(&good, ReviewDecision::Approved, None))
        .await
        .unwrap();
    s.write_review(&review(
        &wrong,
        ReviewDecision::Corrected,
        Some("Shipping is $4.95, free over $50."),
    ))
    .await
    .unwrap();
    let left = reasons(s.review_queue(1, 50).await.unwrap());
    assert_eq!(left, [(blocked.id.clone(), "blocked".to_string())]);

    // The export trains on the correction, and stops before the blocked reply.
    let out = ctx.dir.path().join("export.jsonl");
    store::export_jsonl(
        s,
        &ExportFilter::default(),
        ExportFormat::Openai,
        None,
        &out,
    )
    .await
    .unwrap();
    let dialogs = read_dialogs_jsonl(&out).unwrap();
    let texts: Vec<&str> = dialogs[0]
        .messages
        .iter()
        .map(|m| m.content.as_str())
        .collect();
    assert_eq!(
        texts,
        [
            "how long do refunds take?",
            "Refunds take 5 days.",
            "and shipping?",
            "Shipping is $4.95, free over $50."
        ]
    );
    // A rejected reply is never a target: the export stops before it.
    s.write_review(&review(&good, ReviewDecision::Rejected, None))
        .await
        .unwrap();
    store::export_jsonl(
        s,
        &ExportFilter::default(),
        ExportFormat::Openai,
        None,
        &out,
    )
    .await
    .unwrap();
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "");

    let stats = s.stats().await.unwrap();
    assert_eq!(
        (
            stats.total.reviewed_replies,
            stats.total.corrected_replies,
            stats.total.operator_messages,
            stats.total.assistant_messages
        ),
        (2, 1, 1, 3)
    );

    // Erasure takes the reviews (and corrections) along.
    let deleted = s
        .delete_conversations(std::slice::from_ref(&id), None, false)
        .await
        .unwrap();
    assert_eq!(deleted.messages, 7);
    assert!(s.review_queue(1, 50).await.unwrap().is_empty());
}

// ------------------------------------------------- schemas and the CLI

#[tokio::test]
async fn store_schemas_match() {
    if database_url().is_none() {
        return;
    }
    async fn columns_pg(admin: String) -> Vec<(String, String)> {
        let pg = store::PgStore::connect(&admin, &StoreOptions::default())
            .await
            .unwrap();
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT table_name::text, column_name::text FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name::text IN \
             ('conversations', 'messages', 'moderation_events', 'feedback', \
             'store_settings', 'audit_events', 'operators', 'reviews', 'inbound_updates', 'chat_leases') ORDER BY 1, 2",
        )
        .fetch_all(pg.pool())
        .await
        .unwrap();
        rows
    }
    // The shared `test` database may not be migrated: compare against a
    // fresh one.
    let db = common::ScratchDb::create().await.unwrap();
    let pg = store::connect_and_migrate(&db.url, &StoreOptions::default())
        .await
        .unwrap();
    pg.close().await.unwrap();
    let pg_cols = columns_pg(db.url.clone()).await;
    db.drop_db().await;

    let dir = tempfile::tempdir().unwrap();
    let lite_url = format!("sqlite://{}?mode=rwc", dir.path().join("s.db").display());
    let lite = store::SqliteStore::connect(&lite_url, &StoreOptions::default())
        .await
        .unwrap();
    lite.migrate().await.unwrap();
    let lite_cols: Vec<(String, String)> = sqlx::query_as(
        "SELECT m.name, p.name FROM sqlite_master m JOIN pragma_table_info(m.name) p \
         WHERE m.type = 'table' AND m.name IN \
         ('conversations', 'messages', 'moderation_events', 'feedback', \
         'store_settings', 'audit_events', 'operators', 'reviews', 'inbound_updates', 'chat_leases') ORDER BY 1, 2",
    )
    .fetch_all(lite.pool())
    .await
    .unwrap();
    assert_eq!(pg_cols.len(), 77, "{pg_cols:?}");
    assert_eq!(pg_cols, lite_cols);
}

fn chatforge(args: &[&str]) -> std::process::Output {
    chatforge_with_secret(args, None)
}

/// The binary with `CHATFORGE_USER_KEY_SECRET` set to `secret` (or unset).
fn chatforge_with_secret(args: &[&str], secret: Option<&str>) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_chatforge"));
    cmd.args(args)
        .env("RUST_LOG", "warn")
        .env_remove("DATABASE_URL")
        .env_remove(store::USER_KEY_SECRET_ENV);
    if let Some(s) = secret {
        cmd.env(store::USER_KEY_SECRET_ENV, s);
    }
    cmd.output().expect("the chatforge binary runs")
}

/// `chatforge operators …`: the one-time password is printed once, and the
/// list never shows a password or hash.
#[tokio::test]
async fn store_cli_operators() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("ops.db").display());
    let o = chatforge(&["operators", "add", "ann", "--database-url", &url]);
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("db migrate"),
        "{}",
        text(&o.stderr)
    );
    assert!(
        chatforge(&["db", "migrate", "--database-url", &url])
            .status
            .success()
    );
    let o = chatforge(&["operators", "add", "ann", "--database-url", &url]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let otp = text(&o.stdout).lines().last().unwrap().trim().to_string();
    assert_eq!(otp.len(), 20, "{}", text(&o.stdout));
    let o = chatforge(&["operators", "add", "ann", "--database-url", &url]);
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("already exists"),
        "{}",
        text(&o.stderr)
    );
    let o = chatforge(&["operators", "list", "--database-url", &url]);
    let listed = text(&o.stdout);
    assert!(
        listed.contains("ann") && listed.contains("one-time password"),
        "{listed}"
    );
    assert!(
        !listed.contains(&otp) && !listed.contains("argon2"),
        "{listed}"
    );
    let o = chatforge(&["operators", "list", "--json", "--database-url", &url]);
    let row: serde_json::Value = serde_json::from_str(text(&o.stdout).trim()).unwrap();
    assert_eq!(row["name"], "ann");
    assert!(row.get("password_hash").is_none(), "{row}");
    let o = chatforge(&["operators", "reset-password", "ann", "--database-url", &url]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let fresh = text(&o.stdout).lines().last().unwrap().trim().to_string();
    assert!(fresh.len() == 20 && fresh != otp);
    let s = store::connect(&url, &StoreOptions::default())
        .await
        .unwrap();
    assert!(
        chatforge::operators::login(s.as_ref(), "ann", &otp)
            .await
            .is_err()
    );
    assert!(
        chatforge::operators::login(s.as_ref(), "ann", &fresh)
            .await
            .is_ok()
    );
    s.close().await.unwrap();
    let o = chatforge(&["operators", "remove", "ann", "--database-url", &url]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = chatforge(&["operators", "remove", "ann", "--database-url", &url]);
    assert!(
        text(&o.stderr).contains("no operator named"),
        "{}",
        text(&o.stderr)
    );
}

/// `logs show`, `logs forget`, `logs purge` and `logs audit` as an operator
/// runs them, with serve's secret from the environment or its spill folder.
#[tokio::test]
async fn store_cli_forget_show_purge_audit() {
    const SECRET: &str = "cli-test-secret-0123456789abcdef";
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("logs.db").display());
    let spill = dir.path().join("spill");
    let spill_s = spill.to_str().unwrap();
    let s = store::connect_and_migrate(&url, &StoreOptions::default())
        .await
        .unwrap();
    let h = UserKeyHasher::new(SECRET.as_bytes()).unwrap();
    store::retention::verify_user_key(s.as_ref(), &h, true)
        .await
        .unwrap();
    // The raw user id is long enough never to turn up by chance in the
    // audit's hashes and timestamps, which the last check searches: "777"
    // once did.
    let mut c = ConversationRecord::new("telegram", "chat-1", h.key("telegram", "4815162342"));
    c.started_at = at(1, 9, 0);
    let id = c.id.clone();
    let mut m = MessageRecord::new(&id, Role::User, "where is my parcel?");
    m.created_at = at(1, 9, 1);
    let mut r = MessageRecord::new(&id, Role::Assistant, "It ships in 2 days.");
    r.created_at = at(1, 9, 2);
    let mut other = ConversationRecord::new("telegram", "chat-2", h.key("telegram", "888"));
    other.started_at = at(2, 9, 0);
    let other_id = other.id.clone();
    s.write_batch(&[
        Record::Conversation(c),
        Record::Message(m),
        Record::Message(r),
        Record::Conversation(other),
    ])
    .await
    .unwrap();
    s.close().await.unwrap();
    let who = [
        "--database-url",
        &url,
        "--platform",
        "telegram",
        "--user",
        "4815162342",
    ];
    let args = |cmd: &str, extra: &[&'static str]| -> Vec<String> {
        ["logs", cmd]
            .iter()
            .chain(who.iter())
            .chain(extra.iter())
            .map(|s| s.to_string())
            .collect()
    };
    let run = |a: &[String], secret: Option<&str>| {
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        chatforge_with_secret(&a, secret)
    };

    let o = run(&args("show", &[]), Some(SECRET));
    assert!(o.status.success(), "{}", text(&o.stderr));
    let shown: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let convs = shown["conversations"].as_array().unwrap();
    assert_eq!(convs.len(), 1, "{shown}");
    assert_eq!(convs[0]["id"], id.as_str());
    assert_eq!(convs[0]["messages"][1]["content"], "It ships in 2 days.");

    // No secret at all, or the wrong one: an error, never "0 records".
    let with_spill: Vec<String> = args("forget", &["--spill-dir"])
        .into_iter()
        .chain([spill_s.to_string()])
        .collect();
    let o = run(&with_spill, None);
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("not set"), "{}", text(&o.stderr));
    let o = run(&args("forget", &[]), Some("wrong-secret-0123456789abcdef"));
    assert!(!o.status.success());
    let err = text(&o.stderr);
    assert!(err.contains("not the secret"), "{err}");
    assert!(!err.contains("wrong-secret"), "{err}");

    // serve's generated secret file, found through the spill folder.
    std::fs::create_dir_all(&spill).unwrap();
    std::fs::write(spill.join("user-key.secret"), SECRET).unwrap();
    let mut dry = with_spill.clone();
    dry.push("--dry-run".into());
    let o = run(&dry, None);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains("would delete 1 conversations, 2 messages"),
        "{}",
        text(&o.stdout)
    );
    let o = run(&with_spill, None);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let said = text(&o.stdout);
    assert!(
        said.contains("deleted 1 conversations, 2 messages, 0 feedback, 0 moderation events"),
        "{said}"
    );
    let o = run(&args("show", &[]), Some(SECRET));
    let shown: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(shown["conversations"].as_array().unwrap().len(), 0);

    let o = chatforge(&["logs", "purge", "--database-url", &url]);
    assert!(!o.status.success(), "a cutoff is required");
    let o = chatforge(&[
        "logs",
        "purge",
        "--database-url",
        &url,
        "--days",
        "1",
        "--dry-run",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains("would delete 1 conversations"),
        "{}",
        text(&o.stdout)
    );
    let o = chatforge(&[
        "logs",
        "purge",
        "--database-url",
        &url,
        "--before",
        "2026-11-03",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains("deleted 1 conversations"),
        "{}",
        text(&o.stdout)
    );
    let s = store::connect(&url, &StoreOptions::default())
        .await
        .unwrap();
    assert!(s.conversation(&other_id).await.unwrap().is_none());
    s.close().await.unwrap();

    let o = chatforge(&["logs", "audit", "--database-url", &url]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let lines: Vec<serde_json::Value> = text(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let actions: Vec<&str> = lines
        .iter()
        .map(|l| l["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["purge", "erasure"], "newest first: {lines:?}");
    assert_eq!(lines[1]["actor"], "logs forget");
    assert!(!text(&o.stdout).contains("4815162342"));
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_cli_migrate_export_stats() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("logs.db").display());
    let out = dir.path().join("export.jsonl");
    let out_s = out.to_str().unwrap();

    // Before migrating: a clear error that says what to run.
    let o = chatforge(&["logs", "export", "--database-url", &url, "--out", out_s]);
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("chatforge db migrate"),
        "{}",
        text(&o.stderr)
    );

    let o = chatforge(&["db", "migrate", "--database-url", &url]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains(&format!("schema at version {}", store::INBOX_SCHEMA)),
        "{}",
        text(&o.stdout)
    );

    let store = store::connect(&url, &StoreOptions::default())
        .await
        .unwrap();
    seed(store.as_ref()).await;
    store.close().await.unwrap();

    let o = chatforge(&[
        "logs",
        "export",
        "--database-url",
        &url,
        "--format",
        "openai",
        "--out",
        out_s,
        "--exclude-flagged",
        "--platform",
        "discord",
        "--redact-pattern",
        r"ORDER=ORD-\d{6}",
        "--since",
        "2026-11-01",
        "--until",
        "2026-11-30T00:00:00Z",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let said = text(&o.stdout);
    // A and D are discord and unflagged (C is flagged, F blocked).
    assert!(said.contains("wrote 2 dialogs"), "{said}");
    assert!(
        said.contains("1 EMAIL") && said.contains("1 ORDER"),
        "{said}"
    );
    let dialogs = read_dialogs_jsonl(&out).unwrap();
    assert_eq!(dialogs.len(), 2);
    // Message text: readable by the owner only, like the database file.
    assert_eq!(mode(&out), 0o600);
    assert_eq!(mode(&dir.path().join("logs.db")), 0o600);
    assert!(dialogs[0].messages[1].content.contains("<ORDER>"));

    let o = chatforge(&["logs", "stats", "--database-url", &url, "--json"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let stats: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(stats["total"]["conversations"], 6);
    assert_eq!(stats["rows"].as_array().unwrap().len(), 6);
    let o = chatforge(&["logs", "stats", "--database-url", &url]);
    assert!(text(&o.stdout).contains("total"), "{}", text(&o.stdout));

    let o = chatforge(&[
        "logs",
        "export",
        "--database-url",
        &url,
        "--out",
        out_s,
        "--since",
        "last week",
    ]);
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("RFC 3339"), "{}", text(&o.stderr));

    // A password never shows up in an error.
    let secret_url = "postgres://bot:hunter2-s3cret@127.0.0.1:1/logs";
    let o = chatforge(&["db", "migrate", "--database-url", secret_url]);
    assert!(!o.status.success());
    let err = text(&o.stderr);
    assert!(err.contains("postgres://bot:***@127.0.0.1:1/logs"), "{err}");
    assert!(err.contains("refused"), "the cause is named: {err}");
    assert!(!err.contains("hunter2"), "{err}");
}

// ------------------------------------------------ a real Postgres outage

/// A throwaway Postgres server in a temporary folder, so that stopping it
/// cannot disturb the shared server other tests use.
struct TempServer {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
}

fn pg_bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, b)| b)
}

impl TempServer {
    /// Runs a server binary as the `postgres` user when we are root
    /// (initdb and postgres refuse to run as root).
    fn cmd(&self, tool: &str, args: &[&str]) -> Result<(), String> {
        let exe = self.bin.join(tool);
        let mut c = if unsafe { libc::geteuid() } == 0 {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let o = c.args(args).output().map_err(|e| format!("{tool}: {e}"))?;
        if o.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{tool} failed: {}{}",
                text(&o.stdout),
                text(&o.stderr)
            ))
        }
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn init(bin: PathBuf) -> Result<Self, String> {
        let dir = tempfile::Builder::new()
            .prefix("chatforge-pg-")
            .tempdir_in("/tmp")
            .map_err(|e| e.to_string())?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
            .map_err(|e| e.to_string())?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let s = Self { bin, dir, port };
        s.cmd(
            "initdb",
            &[
                "-D",
                &s.data(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        )?;
        Ok(s)
    }

    fn start(&self) -> Result<(), String> {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log").display().to_string();
        self.cmd(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-l",
                &log,
                "-o",
                &opts,
                "-w",
                "-t",
                "60",
                "start",
            ],
        )
    }

    fn stop(&self) -> Result<(), String> {
        self.cmd("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"])
    }
}

impl Drop for TempServer {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_outage_real_postgres() {
    let Some(bin) = pg_bin_dir() else {
        assert!(
            std::env::var_os("CHATFORGE_REQUIRE_SERVICES").is_none(),
            "no PostgreSQL server binaries in /usr/lib/postgresql/<version>/bin, but this run requires them"
        );
        eprintln!("skipping: no PostgreSQL server binaries in /usr/lib/postgresql/<version>/bin");
        return;
    };
    let server = TempServer::init(bin).unwrap();
    server.start().unwrap();
    let server = Arc::new(server);
    let url = format!("postgres://postgres@127.0.0.1:{}/postgres", server.port);
    let opts = StoreOptions {
        max_connections: 4,
        acquire_timeout: Duration::from_millis(500),
        ..StoreOptions::default()
    };
    let pg = store::connect_and_migrate(&url, &opts).await.unwrap();
    let spill = tempfile::tempdir().unwrap();
    let mut cfg = WriterConfig::new(spill.path());
    cfg.batch_size = 64;
    cfg.retry_min = Duration::from_millis(50);
    cfg.retry_max = Duration::from_millis(400);
    cfg.drain_timeout = Duration::from_secs(30);
    let writer = Writer::spawn(Arc::clone(&pg), hasher(), cfg).unwrap();
    let h = writer.handle();
    let conv = h.new_conversation("discord", "outage", "u1");
    let id = conv.id.clone();
    h.enqueue(Record::Conversation(conv)).unwrap();

    const TOTAL: usize = 3000;
    let mut want = Vec::with_capacity(TOTAL);
    let mut slowest = Duration::ZERO;
    let mut spilled_while_down = 0;
    for i in 0..TOTAL {
        if i == 1000 {
            let s = Arc::clone(&server);
            tokio::task::spawn_blocking(move || s.stop())
                .await
                .unwrap()
                .unwrap();
        }
        if i == 2000 {
            h.flush().await.unwrap();
            spilled_while_down = h.stats().pending;
            let s = Arc::clone(&server);
            tokio::task::spawn_blocking(move || s.start())
                .await
                .unwrap()
                .unwrap();
        }
        let role = if i % 2 == 0 {
            Role::User
        } else {
            Role::Assistant
        };
        let m = MessageRecord::new(&id, role, format!("message {i}"));
        want.push(m.id.clone());
        let t = Instant::now();
        h.enqueue(Record::Message(m)).unwrap();
        slowest = slowest.max(t.elapsed());
        if i % 20 == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let report = writer.shutdown().await.unwrap();
    let got = pg.conversation(&id).await.unwrap().unwrap();
    eprintln!(
        "outage: {} messages streamed, server stopped at 1000 and restarted at 2000; \
         {} spilled while down ({} in all), {} replayed, {} stored, {} rejected, \
         slowest enqueue {:?}",
        TOTAL,
        spilled_while_down,
        report.spilled,
        report.replayed,
        report.written,
        report.rejected,
        slowest
    );
    assert!(spilled_while_down >= 900, "{spilled_while_down} {report:?}");
    assert_eq!(report.pending, 0, "{report:?}");
    assert_eq!(report.rejected, 0, "{report:?}");
    assert_eq!(report.written, TOTAL as u64 + 1, "{report:?}");
    assert_eq!(got.messages.len(), TOTAL, "every record exactly once");
    assert_eq!(message_ids(&got), want, "in the order they were sent");
    assert!(
        slowest < Duration::from_secs(1),
        "enqueue waited {slowest:?}"
    );
    pg.close().await.unwrap();
    drop(Arc::try_unwrap(server).ok());
}

#[test]
fn store_bench_cli_reports_both_backends() {
    let mut args = vec![
        "bench",
        "store",
        "--sqlite",
        "--conversations",
        "8",
        "--messages",
        "20",
        "--paced-rate",
        "400",
        "--paced-seconds",
        "0.2",
        "--json",
    ];
    let pg = database_url();
    if let Some(url) = &pg {
        args.extend(["--database-url", url.as_str()]);
    }
    let o = chatforge(&args);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let lines: Vec<serde_json::Value> = text(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let backends: Vec<&str> = lines
        .iter()
        .map(|l| l["backend"].as_str().unwrap())
        .collect();
    let want: &[&str] = if pg.is_some() {
        &["postgres", "sqlite"]
    } else {
        &["sqlite"]
    };
    assert_eq!(backends, want);
    for l in &lines {
        assert_eq!(l["messages"], 160);
        assert!(l["messages_per_s"].as_f64().unwrap() > 0.0, "{l}");
        assert!(l["enqueue_p99_us"].as_f64().unwrap() > 0.0, "{l}");
    }
}

// --------------------------------------------- a database that hangs

/// A TCP proxy in front of Postgres that can stop passing bytes while
/// keeping every connection open: a database that hangs rather than
/// refuses (a stuck server, a half-dead network path).
struct HangingProxy {
    port: u16,
    hung: Arc<AtomicBool>,
}

impl HangingProxy {
    async fn start(upstream: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let hung = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&hung);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pipe(cr, sw, Arc::clone(&flag)));
                tokio::spawn(pipe(sr, cw, Arc::clone(&flag)));
            }
        });
        Self { port, hung }
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    hung: Arc<AtomicBool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // While hung, what was read is held back: the peer waits forever.
        while hung.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// A database that stops answering (connections stay open) must not stall
/// the writer: calls give up after the store's call timeout, records go to
/// the spill file, shutdown keeps its deadline, and a later writer replays
/// everything once the database answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_hung_database_spills_and_shutdown_keeps_its_deadline() {
    let Some(db) = common::ScratchDb::create().await else {
        return;
    };
    let direct = db.url.clone();
    let upstream = {
        let u = url_host_port(&direct);
        format!("{}:{}", u.0, u.1)
    };
    let proxy = HangingProxy::start(upstream.clone()).await;
    let proxied = direct.replacen(&upstream, &format!("127.0.0.1:{}", proxy.port), 1);
    assert_ne!(proxied, direct, "the proxy URL must differ: {direct}");
    let opts = StoreOptions {
        max_connections: 2,
        acquire_timeout: Duration::from_millis(500),
        call_timeout: Duration::from_millis(400),
    };
    let store = store::connect_and_migrate(&proxied, &opts).await.unwrap();
    let spill = tempfile::tempdir().unwrap();
    let mut cfg = WriterConfig::new(spill.path());
    cfg.retry_min = Duration::from_millis(50);
    cfg.retry_max = Duration::from_millis(200);
    cfg.drain_timeout = Duration::from_secs(1);
    let writer = Writer::spawn(Arc::clone(&store), hasher(), cfg.clone()).unwrap();
    let h = writer.handle();
    let conv = h.new_conversation("telegram", "c", "u");
    let id = conv.id.clone();
    h.enqueue(Record::Conversation(conv)).unwrap();
    let first = sample(&id, 20);
    for m in &first {
        h.enqueue(m.clone()).unwrap();
    }
    assert_eq!(h.flush().await.unwrap().pending, 0);

    proxy.hung.store(true, Ordering::SeqCst);
    let hung = sample(&id, 200);
    for m in &hung {
        h.enqueue(m.clone()).unwrap();
    }
    // A flush waits for a write attempt: bounded by the call timeout, so
    // it returns with the records spilled instead of hanging.
    let f = tokio::time::timeout(Duration::from_secs(30), h.flush())
        .await
        .expect("the writer stalled on the hung database")
        .unwrap();
    assert!(f.pending > 0, "records spilled while the database hangs");
    let report = tokio::time::timeout(Duration::from_secs(30), writer.shutdown())
        .await
        .expect("shutdown's drain outlived its deadline")
        .unwrap();
    assert_eq!(report.pending, 200, "{report:?}");
    assert_eq!(report.dropped, 0, "{report:?}");

    // The database answers again: the next writer replays the spill file.
    proxy.hung.store(false, Ordering::SeqCst);
    let direct_store = store::connect(&direct, &StoreOptions::default())
        .await
        .unwrap();
    let writer = Writer::spawn(Arc::clone(&direct_store), hasher(), cfg).unwrap();
    let report = writer.shutdown().await.unwrap();
    assert_eq!(report.pending, 0, "{report:?}");
    let got = direct_store.conversation(&id).await.unwrap().unwrap();
    let want: Vec<String> = first
        .iter()
        .chain(&hung)
        .map(|r| r.id().to_string())
        .collect();
    assert_eq!(message_ids(&got), want, "every record once, in order");
    direct_store.close().await.unwrap();
    store.close().await.unwrap();
    db.drop_db().await;
}

/// Host and port of a postgres:// URL (5432 when it names none).
fn url_host_port(url: &str) -> (String, u16) {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let hostport = rest.split(['/', '?']).next().unwrap_or(rest);
    match hostport.rsplit_once(':') {
        Some((h, p)) => (h.to_string(), p.parse().unwrap()),
        None => (hostport.to_string(), 5432),
    }
}
