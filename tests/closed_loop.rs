//! The closed loop as one test: `chatforge quickstart` makes a run (on a
//! micro preset, or `CHATFORGE_LOOP_RUN` names a finished run folder, e.g.
//! the README's `runs/quickstart`, which is only read); its chat bundle is
//! served with the run's own serve config (moderation model, blocklist,
//! persona) through the Telegram fake; scripted users hold conversations
//! (each shares an e-mail address, one insults the bot) and press 👍/👎;
//! `chatforge logs export` keeps the well-rated conversations with PII
//! redacted; `chatforge finetune` trains on the export and the original
//! dialogs;
//! `chatforge export` writes the new ONNX model; `chatforge eval` compares
//! old and new on the held-out support dialogs; `serve` picks the new
//! bundle up without a restart and later replies record its version.
//!
//! Needs the ONNX Runtime library that `./scripts/setup.sh` fetches (or
//! `ORT_DYLIB_PATH`).

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use chatforge::bundle::Bundle;
use chatforge::config::Config;
use chatforge::store::{self, StoreOptions, Verdict};
use chatforge::text::Role;
use chatforge_telegram::fake::{Fake, TOKEN, bot_user, chat_json};
use serde_json::{Value, json};

mod common;

use common::QuickstartRun;

/// What every user but the first asks after greeting.
const ASK_OK: &str = "can I get a refund?";
/// What the first says instead (the micro run's blocklist holds "idiot").
const INSULT: &str = "you idiot, can I get a refund?";

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let dest = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_dir(&p, &dest);
        } else {
            std::fs::copy(&p, &dest).unwrap();
        }
    }
}

fn chatforge(args: &[&str]) -> Output {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_chatforge"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chatforge {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The run's `chatforge.toml` as a user adapts it to serve: the tests'
/// [`common::serve_settings`] for `bundle` and `dir`, and a Telegram section
/// for the fake. The moderation model, blocklist and persona stay the run's.
fn write_serve_config(run: &Path, dir: &Path, bundle: &Path, api_url: &str) -> PathBuf {
    let text = std::fs::read_to_string(run.join("chatforge.toml")).unwrap();
    let mut config: toml::Table = text.parse().unwrap();
    // The loop is about logs, ratings and reloads: the run has no
    // knowledge base (whose guard would send passage text instead of what
    // the model learnt from the logs); a given run's is left out too.
    config.remove("kb");
    let changes: toml::Table = format!(
        "{}\n[telegram]\ntoken = \"{TOKEN}\"\napi_url = \"{api_url}\"\nedit_interval_secs = 0.2\n",
        common::serve_settings(dir, bundle)
    )
    .parse()
    .unwrap();
    for (section, values) in changes {
        let table = config
            .entry(section)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .unwrap();
        table.extend(values.as_table().unwrap().clone());
    }
    let path = dir.join("chatforge.toml");
    std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
    path
}

fn text_message(chat: i64, text: &str) -> Value {
    json!({"message": {
        "message_id": 10, "date": 1, "chat": chat_json(chat),
        "from": {"id": chat, "is_bot": false, "first_name": "Ann"},
        "text": text
    }})
}

/// Messages the bot sent in `chat`.
fn sends(fake: &Fake, chat: i64) -> usize {
    fake.calls("sendMessage")
        .iter()
        .filter(|c| c.body["chat_id"] == json!(chat))
        .count()
}

/// Message ids and callback data of the feedback keyboards in `chat`.
fn keyboards(fake: &Fake, chat: i64) -> Vec<(i64, String)> {
    fake.calls("editMessageReplyMarkup")
        .iter()
        .filter(|c| c.body["chat_id"] == json!(chat) && c.body.get("reply_markup").is_some())
        .map(|c| {
            (
                c.body["message_id"].as_i64().unwrap(),
                c.body["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_logs_to_finetune_to_hot_reload() {
    tokio::time::timeout(Duration::from_secs(600), async {
        let (made, run) = match std::env::var_os("CHATFORGE_LOOP_RUN") {
            Some(dir) => (None, PathBuf::from(dir)),
            None => {
                // Long enough that the model says words moderation lets through.
                let made = QuickstartRun::with_steps(300, 150).without_kb();
                made.quickstart(&["--no-chat"], None);
                let dir = made.dir.clone();
                (Some(made), dir)
            }
        };
        println!("the loop from the quickstart run in {}", run.display());
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let v1 = dir.join("v1");
        copy_dir(&run.join("chat"), &v1);
        let fake = Fake::start().await.unwrap();
        let config_path = write_serve_config(&run, dir, &v1, &fake.url);
        let cfg = Config::load(Some(&config_path)).unwrap();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(chatforge::serve::serve(cfg, Some(config_path.clone()), async {
            let _ = stop_rx.await;
        }));

        // Six users, two messages each; the first gives an e-mail address.
        let chats: Vec<i64> = (101..=106).collect();
        for &c in &chats {
            fake.push_update(text_message(c, &format!("hi, I'm ann{c}@example.com. where is my order?")));
        }
        fake.wait_for("first replies", |f| chats.iter().all(|&c| sends(f, c) == 1))
            .await;
        // The first user then insults the bot: the run's blocklist blocks it.
        for &c in &chats {
            let text = if c == chats[0] { INSULT } else { ASK_OK };
            fake.push_update(text_message(c, text));
        }
        fake.wait_for("second replies", |f| chats.iter().all(|&c| sends(f, c) == 2))
            .await;
        // Let the last edits and keyboards land.
        tokio::time::sleep(Duration::from_secs(1)).await;
        // 👍 from four users, 👎 from two, on their last reply that has
        // buttons (a reply moderation replaced has none).
        let mut good = Vec::new();
        for (i, &c) in chats.iter().enumerate() {
            let (message_id, data) = keyboards(&fake, c).pop().unwrap_or_else(|| {
                let sent: Vec<_> = fake
                    .calls("sendMessage")
                    .iter()
                    .filter(|m| m.body["chat_id"] == json!(c))
                    .map(|m| m.body["text"].clone())
                    .collect();
                panic!("no rateable reply in chat {c}: {sent:?}")
            });
            if i < 4 {
                good.push(c.to_string());
            }
            let data = if i < 4 { data } else { data.replacen("fb:g:", "fb:b:", 1) };
            fake.push_update(json!({"callback_query": {
                "id": format!("cb{c}"),
                "from": {"id": c, "is_bot": false, "first_name": "Ann"},
                "message": {"message_id": message_id, "date": 1, "chat": chat_json(c), "from": bot_user(), "text": "…"},
                "chat_instance": "ci", "data": data
            }}));
        }
        let url = format!("sqlite://{}?mode=rwc", dir.join("chat.db").display());
        let db = store::connect(&url, &StoreOptions::default()).await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let convs = common::stored_conversations(dir).await;
            let mut rated = 0;
            for c in &convs {
                rated += db.feedback(&c.record.id).await.unwrap().len();
            }
            if rated == 6 {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "feedback not stored: {rated}/6");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let v1_version = Bundle::open(&v1).unwrap().model_version().unwrap().to_string();

        // Export the well-rated conversations, PII redacted.
        let export = dir.join("export.jsonl");
        let out = chatforge(&[
            "logs", "export", "--database-url", &url, "--min-rating", "4",
            "--out", export.to_str().unwrap(),
        ]);
        println!("{}", String::from_utf8_lossy(&out.stdout));
        let text = std::fs::read_to_string(&export).unwrap();
        let dialogs: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        // The 👍 conversations, each up to its first blocked message; one
        // blocked before any allowed reply has nothing to train on.
        let convs = common::stored_conversations(dir).await;
        let expected = convs
            .iter()
            .filter(|c| good.contains(&c.record.channel))
            .filter(|c| c.messages.get(1).is_some_and(|m| m.verdict == Some(Verdict::Allow)))
            .count();
        assert!(expected >= 1);
        assert_eq!(dialogs.len(), expected, "{text}");
        assert!(!text.contains("@example.com"), "e-mail addresses are redacted");
        assert!(text.contains("<EMAIL>"), "{text}");
        let blocked: Vec<&str> = convs
            .iter()
            .flat_map(|c| &c.messages)
            .filter(|m| m.verdict == Some(Verdict::Block))
            .map(|m| m.content.as_str())
            .collect();
        // A real run's moderation may judge the insult otherwise.
        let refused = blocked.contains(&INSULT);
        assert!(refused || made.is_none(), "{blocked:?}");
        // The insulting user's conversation ends before the insult.
        let turns: Vec<usize> = dialogs.iter().map(|d| d["messages"].as_array().unwrap().len()).collect();
        if made.is_some() {
            assert_eq!(turns.iter().filter(|&&n| n == 2).count(), 1, "{turns:?}");
            assert_eq!(turns.iter().filter(|&&n| n == 4).count(), dialogs.len() - 1, "{turns:?}");
        }
        for d in &dialogs {
            let messages = d["messages"].as_array().unwrap();
            let roles: Vec<&str> = messages.iter().map(|m| m["role"].as_str().unwrap()).collect();
            assert!(roles.len() >= 2 && roles.len().is_multiple_of(2), "{d}");
            assert!(roles.chunks(2).all(|p| p == ["user", "assistant"]), "{d}");
            // Nothing moderation blocked becomes a training target.
            for m in messages {
                assert!(!blocked.contains(&m["content"].as_str().unwrap()), "{d}");
            }
        }

        // Fine-tune on it with the original dialogs (as the README's loop
        // does: a few logged conversations alone would pull the model away
        // from the rest), export, compare on the held-out dialogs.
        let train = common::repo("data/support/train.jsonl");
        let v2 = dir.join("v2");
        chatforge(&[
            "finetune", "--base", v1.to_str().unwrap(), "--dialogs", train.to_str().unwrap(),
            export.to_str().unwrap(), "--out", v2.to_str().unwrap(), "--steps", "20",
        ]);
        let provenance: Value =
            serde_json::from_str(&std::fs::read_to_string(v2.join("training.json")).unwrap()).unwrap();
        let sources: Vec<&str> =
            provenance["data"].as_array().unwrap().iter().map(|d| d["path"].as_str().unwrap()).collect();
        assert!(sources.iter().any(|p| p.ends_with("export.jsonl")), "{sources:?}");
        // Eval generates through ONNX Runtime: export first.
        chatforge(&["export", "--bundle", v2.to_str().unwrap()]);
        let report = dir.join("report");
        let heldout = common::repo("data/support/heldout.jsonl");
        let out = chatforge(&[
            "eval", "--bundle", v2.to_str().unwrap(), "--baseline", v1.to_str().unwrap(),
            "--dialogs", heldout.to_str().unwrap(), "--limit", "5", "--max-new-tokens", "16",
            "--out", report.to_str().unwrap(),
        ]);
        let table = String::from_utf8_lossy(&out.stdout);
        println!("{table}");
        // The columns are named: the new bundle, then the baseline.
        assert!(table.lines().any(|l| l.split_whitespace().eq(["bundle", "baseline"])), "{table}");
        let r: Value =
            serde_json::from_str(&std::fs::read_to_string(report.join("report.json")).unwrap()).unwrap();
        let v2_meta = Bundle::open(&v2).unwrap();
        let v2_version = v2_meta.model_version().unwrap().to_string();
        assert_eq!(r["bundle"]["model_version"], json!(v2_version), "{}", r["bundle"]);
        assert_eq!(r["baseline"]["model_version"], json!(v1_version));
        assert!(r["metrics"].as_array().unwrap().len() >= 9);
        assert_eq!(v2_meta.meta.as_ref().unwrap().parent_version.as_deref(), Some(v1_version.as_str()));

        // Point serve at the new bundle; it reloads without a restart.
        write_serve_config(&run, dir, &v2, &fake.url);
        tokio::time::sleep(Duration::from_secs(2)).await;
        fake.push_update(text_message(107, ASK_OK));
        // Its reply is stored, allowed or replaced by moderation, with the
        // version of the model that made it.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !common::stored_conversations(dir).await.iter().any(|c| {
            c.record.channel == "107" && c.messages.iter().any(|m| m.role == Role::Assistant)
        }) {
            assert!(tokio::time::Instant::now() < deadline, "no reply from the new model stored");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = stop_tx.send(());
        server.await.unwrap().expect("serve ran");

        let convs = common::stored_conversations(dir).await;
        let versions: Vec<(String, Option<String>)> = convs
            .iter()
            .flat_map(|c| c.messages.iter().filter(|m| m.role == Role::Assistant).map(|m| (c.record.channel.clone(), m.model_version.clone())))
            .collect();
        for (chat, v) in &versions {
            let want = if chat == "107" { &v2_version } else { &v1_version };
            assert_eq!(v.as_deref(), Some(want.as_str()), "chat {chat}");
        }
        // Six users × two replies, less the refused insult (a refusal is not
        // the model's), and the one after the reload.
        assert_eq!(versions.len(), 13 - usize::from(refused), "{versions:?}");
    })
    .await
    .expect("the loop ran past its time limit");
}
