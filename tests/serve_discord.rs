//! `chatforge serve` end to end over Discord: the real serenity client
//! against the fake Discord (REST + gateway) on 127.0.0.1, a tiny real
//! model, a real moderation model and a real SQLite store. Assertions are on
//! what the fake received and what the store holds: a DM answered with
//! typing and 👍/👎 reactions, a user's 👍 stored as feedback, a flagged
//! reply replaced, `/human` handoff, and a slash `/ask` deferred and then
//! answered.
//!
//! Needs the ONNX Runtime library that `./scripts/setup.sh` fetches (or
//! `ORT_DYLIB_PATH`).

use std::time::Duration;

use chatforge::config::Config;
use chatforge::pipeline::{TextKey, Texts};
use chatforge::store::{self, Handoff, StoreOptions, Verdict};
use chatforge::text::Role;
use chatforge_discord::fake::{DM, Fake, TOKEN, USER, dm, interaction, reaction};
use serde_json::json;

mod common;

const TEST_TIMEOUT: Duration = Duration::from_secs(120);

/// Message ids the bot's messages got, with their final text, in DM order.
fn bot_messages(fake: &Fake) -> Vec<(u64, String)> {
    fake.shown_texts()
}

async fn wait_bot_messages(fake: &Fake, n: usize) -> Vec<(u64, String)> {
    fake.wait_for(&format!("{n} bot messages"), |f| bot_messages(f).len() >= n)
        .await;
    bot_messages(fake)
}

/// Waits until the bot's message `id` reads `text` (streamed replies are
/// edited into their final text).
async fn wait_text(fake: &Fake, id: u64, text: &str) {
    fake.wait_for(&format!("message {id} to read {text:?}"), |f| {
        bot_messages(f).iter().any(|(i, t)| *i == id && t == text)
    })
    .await;
}

fn reactions_on(fake: &Fake, message: u64) -> Vec<String> {
    fake.calls(
        "PUT",
        &format!("/channels/{DM}/messages/{message}/reactions/"),
    )
    .iter()
    .map(|c| c.path.split('/').nth(6).unwrap_or_default().to_string())
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_serve_discord_dm_moderation_feedback_handoff_and_slash() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let f = common::chat_fixture();
        let dir = tempfile::tempdir().unwrap();
        let fake = Fake::start().await.unwrap();
        let config_path = common::write_serve_config(
            dir.path(),
            &f.bundle,
            &format!(
                "[discord]\ntoken = \"{TOKEN}\"\nproxy = \"{}\"\nedit_interval_secs = 0.3\n",
                fake.url
            ),
        );
        let cfg = Config::load(Some(&config_path)).unwrap();
        let safe = Texts::new(&cfg.pipeline.texts)
            .unwrap()
            .get("en", TextKey::SafeReply)
            .to_string();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(chatforge::serve::serve(cfg, None, async {
            let _ = stop_rx.await;
        }));
        fake.wait_for("slash commands registered", |f| {
            !f.calls("PUT", "/applications/").is_empty()
        })
        .await;

        // A DM: typing, the reply, 👍 and 👎 on it.
        fake.push("MESSAGE_CREATE", dm(1, &f.ask_ok));
        let msgs = wait_bot_messages(&fake, 1).await;
        let (reply_id, reply) = msgs[0].clone();
        assert!(!reply.is_empty() && reply != safe, "{reply}");
        assert!(
            !fake
                .calls("POST", &format!("/channels/{DM}/typing"))
                .is_empty()
        );
        fake.wait_for("👍 and 👎 on the reply", |f| {
            reactions_on(f, reply_id).len() == 2
        })
        .await;
        assert_eq!(reactions_on(&fake, reply_id), ["👍", "👎"]);

        // The user's 👍 is stored as feedback on that reply.
        fake.push("MESSAGE_REACTION_ADD", reaction(USER, reply_id, "👍"));

        // /reset, then the question whose reply moderation blocks.
        fake.push("MESSAGE_CREATE", dm(2, "/reset"));
        wait_bot_messages(&fake, 2).await;
        fake.push("MESSAGE_CREATE", dm(3, common::ASK_BLOCKED));
        let msgs = wait_bot_messages(&fake, 3).await;
        let replaced = msgs[2].0;
        wait_text(&fake, replaced, &safe).await;

        // Handoff: the bot says so, then stays quiet.
        fake.push("MESSAGE_CREATE", dm(4, "/human"));
        let msgs = wait_bot_messages(&fake, 4).await;
        assert!(msgs[3].1.contains("human operator"), "{}", msgs[3].1);
        fake.push("MESSAGE_CREATE", dm(5, "hello? anyone?"));
        // The pipeline logs a message it does not answer (for the operator)
        // once it has dealt with it: then it is safe to look for an answer.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !common::stored_conversations(dir.path())
            .await
            .iter()
            .any(|c| {
                c.messages
                    .iter()
                    .any(|m| m.role == Role::User && m.content == "hello? anyone?")
            })
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the message was not logged"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(bot_messages(&fake).len(), 4, "no answer during handoff");
        fake.push("MESSAGE_CREATE", dm(6, "/bot"));
        wait_bot_messages(&fake, 5).await;

        // Slash /ask: deferred first (type 5), then the answer edits @original.
        fake.push(
            "INTERACTION_CREATE",
            interaction(
                "ask",
                json!([{"name": "question", "type": 3, "value": f.ask_ok}]),
                "itoken",
            ),
        );
        fake.wait_for("the slash answer", |f| {
            !f.calls("PATCH", "/webhooks/").is_empty()
        })
        .await;
        let callback = fake.calls("POST", "/interactions/");
        assert_eq!(callback[0].body["type"], 5);
        let answer = &fake.calls("PATCH", "/webhooks/")[0];
        assert!(callback[0].at <= answer.at);
        // The answer itself may be the safe reply: later in a conversation
        // the tiny model's reply can carry the blocklisted word.
        let answered = answer.body["content"].as_str().unwrap_or_default();
        assert!(!answered.is_empty(), "{answered}");

        let _ = stop_tx.send(());
        let report = server.await.unwrap().expect("serve ran");
        assert_eq!(report.store.pending, 0);
        assert!(fake.bad_auth().is_empty());
        // Serve has stopped and every reply is rendered: nothing can come late.
        assert!(
            reactions_on(&fake, replaced).is_empty(),
            "no rating of a replaced reply"
        );

        let convs = common::stored_conversations(dir.path()).await;
        assert_eq!(convs.len(), 2, "one before /reset, one after");
        assert!(convs.iter().all(|c| c.record.platform == "discord"));
        let first = &convs[0];
        assert!(first.ended_at.is_some());
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("chat.db").display());
        let db = store::connect(&url, &StoreOptions::default())
            .await
            .unwrap();
        let fb = db.feedback(&first.record.id).await.unwrap();
        assert_eq!(fb.len(), 1);
        assert_eq!(fb[0].rating, 5);
        assert_eq!(
            fb[0].message_id.as_deref(),
            Some(first.messages[1].id.as_str())
        );
        let second = &convs[1];
        let bots: Vec<_> = second
            .messages
            .iter()
            .filter(|m| m.role == Role::Assistant)
            .collect();
        assert_eq!(bots[0].verdict, Some(Verdict::Block));
        assert_eq!(second.handoff, Handoff::Resolved);
        assert!(
            second
                .messages
                .iter()
                .any(|m| m.content == "hello? anyone?")
        );
        assert_eq!(bots.len(), 2, "the blocked reply and the /ask answer");
    })
    .await
    .expect("test ran past its time limit");
}
