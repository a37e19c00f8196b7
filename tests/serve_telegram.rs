//! `chatforge serve` end to end over Telegram: the real teloxide dispatcher
//! against the fake Bot API on 127.0.0.1, a tiny real model, a real
//! moderation model and a real SQLite store. Assertions are on what the fake
//! received and what the store holds: replies with feedback buttons, a
//! flagged reply replaced, handoff, reset, a rate-limit notice, feedback
//! stored, hot reload of a new bundle, SIGTERM draining, and config errors
//! that name the key.
//!
//! Needs the ONNX Runtime library that `./scripts/setup.sh` fetches (or
//! `ORT_DYLIB_PATH`).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use chatforge::config::Config;
use chatforge::pipeline::{TextKey, Texts};
use chatforge::store::{self, Handoff, StoreOptions, StoredConversation, Verdict};
use chatforge::text::Role;
use serde_json::{Value, json};

mod common;
use chatforge_telegram::fake::{Fake, TOKEN, bot_user, chat_json};

/// Every test finishes well inside this, or fails instead of hanging.
const TEST_TIMEOUT: Duration = Duration::from_secs(60);

fn write_config(dir: &Path, fake_url: &str, bundle: &Path, token: &str) -> PathBuf {
    common::write_serve_config(
        dir,
        bundle,
        &format!(
            "[telegram]\ntoken = \"{token}\"\napi_url = \"{fake_url}\"\nedit_interval_secs = 0.2\n"
        ),
    )
}

fn text_message(chat: i64, user: i64, text: &str) -> Value {
    json!({"message": {
        "message_id": 10, "date": 1, "chat": chat_json(chat),
        "from": {"id": user, "is_bot": false, "first_name": "Ann"},
        "text": text
    }})
}

fn button_press(chat: i64, user: i64, message_id: i64, data: &str) -> Value {
    json!({"callback_query": {
        "id": format!("cb{message_id}"),
        "from": {"id": user, "is_bot": false, "first_name": "Ann"},
        "message": {"message_id": message_id, "date": 1, "chat": chat_json(chat), "from": bot_user(), "text": "…"},
        "chat_instance": "ci",
        "data": data
    }})
}

/// Final texts of the bot's messages in `chat`, in order (sent, then edited).
fn shown(fake: &Fake, chat: i64) -> Vec<(i64, String)> {
    let mut out: Vec<(i64, String)> = Vec::new();
    let mut next = 500;
    for c in fake.all_calls() {
        match c.method.as_str() {
            "sendmessage" => {
                next += 1;
                if c.body["chat_id"] == json!(chat) {
                    out.push((next, c.body["text"].as_str().unwrap_or("").to_string()));
                }
            }
            "editmessagetext" => {
                let id = c.body["message_id"].as_i64().unwrap();
                if let Some(m) = out.iter_mut().find(|m| m.0 == id) {
                    m.1 = c.body["text"].as_str().unwrap_or("").to_string();
                }
            }
            _ => {}
        }
    }
    out
}

/// Feedback button data on a message (`fb:g:<reply id>`), if it got them.
fn buttons_of(fake: &Fake, message_id: i64) -> Option<String> {
    fake.calls("editMessageReplyMarkup")
        .iter()
        .find(|c| c.body["message_id"] == json!(message_id) && c.body.get("reply_markup").is_some())
        .map(|c| {
            c.body["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
                .as_str()
                .unwrap()
                .to_string()
        })
}

async fn stored(dir: &Path) -> Vec<StoredConversation> {
    common::stored_conversations(dir).await
}

/// Asks `question` in `chat` (as `user`) until a reply stored there comes
/// from the model `version`: the observable sign that serve reloaded.
async fn wait_for_version(
    fake: &Fake,
    dir: &Path,
    chat: i64,
    user: i64,
    question: &str,
    version: &str,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let before = shown(fake, chat).len();
        fake.push_update(text_message(chat, user, question));
        wait_messages(fake, chat, before + 1).await;
        let replied_by = |c: &StoredConversation| {
            c.messages
                .iter()
                .any(|m| m.role == Role::Assistant && m.model_version.as_deref() == Some(version))
        };
        loop {
            let convs = stored(dir).await;
            let answered = convs
                .iter()
                .filter(|c| c.record.channel == chat.to_string())
                .flat_map(|c| &c.messages)
                .filter(|m| m.role == Role::Assistant)
                .count();
            if convs
                .iter()
                .any(|c| c.record.channel == chat.to_string() && replied_by(c))
            {
                return;
            }
            if answered > before {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no reply stored in chat {chat}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "serve did not reload {version} within 30 s"
        );
    }
}

async fn wait_messages(fake: &Fake, chat: i64, n: usize) -> Vec<(i64, String)> {
    fake.wait_for(&format!("{n} messages in chat {chat}"), |f| {
        shown(f, chat).len() >= n
    })
    .await;
    shown(fake, chat)
}

/// Waits until the bot's message `message_id` in `chat` reads `text`
/// (streamed replies are edited into their final text).
async fn wait_text(fake: &Fake, chat: i64, message_id: i64, text: &str) {
    fake.wait_for(&format!("message {message_id} to read {text:?}"), |f| {
        shown(f, chat)
            .iter()
            .any(|(id, t)| *id == message_id && t == text)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_serve_telegram_conversation_moderation_handoff_feedback_reload() {
    tokio::time::timeout(TEST_TIMEOUT * 3, async {
        let f = common::chat_fixture();
        let dir = tempfile::tempdir().unwrap();
        let fake = Fake::start().await.unwrap();
        let config_path = write_config(dir.path(), &fake.url, &f.bundle, TOKEN);
        let cfg = Config::load(Some(&config_path)).unwrap();
        let safe = Texts::new(&cfg.pipeline.texts)
            .unwrap()
            .get("en", TextKey::SafeReply)
            .to_string();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(chatforge::serve::serve(
            cfg,
            Some(config_path.clone()),
            async {
                let _ = stop_rx.await;
            },
        ));
        let transcript = std::cell::RefCell::new(Vec::new());
        let say = async |chat: i64, text: &str, expect: usize| {
            fake.push_update(text_message(chat, 7, text));
            let msgs = wait_messages(&fake, chat, expect).await;
            let mut t = transcript.borrow_mut();
            t.push(format!("user: {text}"));
            for (id, m) in msgs.iter().skip(expect - 1) {
                let buttons = if buttons_of(&fake, *id).is_some() {
                    "  [👍][👎]"
                } else {
                    ""
                };
                t.push(format!("bot:  {m}{buttons}"));
            }
            msgs
        };

        // 1. A normal question: reply with feedback buttons.
        let msgs = say(42, &f.ask_ok, 1).await;
        let (first_id, first_text) = msgs[0].clone();
        assert!(!first_text.is_empty() && first_text != safe, "{first_text}");
        fake.wait_for("feedback buttons on the reply", |f| {
            buttons_of(f, first_id).is_some()
        })
        .await;
        let data = buttons_of(&fake, first_id).expect("feedback buttons on the reply");
        assert!(data.starts_with("fb:g:"));
        assert!(
            fake.calls("sendChatAction")
                .iter()
                .any(|c| c.body["chat_id"] == json!(42))
        );

        // 2. 👍 on it.
        fake.push_update(button_press(42, 7, first_id, &data));
        fake.wait_for("the button answer", |f| {
            !f.calls("answerCallbackQuery").is_empty()
        })
        .await;

        // 3. A reply that moderation flags is replaced by the safe reply (in
        // a new chat, so the model sees the question alone, as the fixture did).
        let msgs = say(44, common::ASK_BLOCKED, 1).await;
        wait_text(&fake, 44, msgs[0].0, &safe).await;
        // Asserted after a later message in the chat was answered: the
        // adapter renders a chat's replies in order, so any buttons for the
        // replaced reply would have come before.
        fake.push_update(text_message(44, 11, "/help"));
        wait_messages(&fake, 44, 2).await;
        assert!(
            buttons_of(&fake, msgs[0].0).is_none(),
            "no rating of a replaced reply"
        );

        // 4. Handoff: the bot goes quiet until /bot.
        let msgs = say(42, "/human", 2).await;
        assert!(msgs[1].1.contains("human operator"), "{}", msgs[1].1);
        fake.push_update(text_message(42, 7, "is anyone there?"));
        transcript
            .borrow_mut()
            .push("user: is anyone there?".into());
        transcript
            .borrow_mut()
            .push("      (no bot reply: an operator has the conversation)".into());
        let msgs = say(42, "/bot", 3).await;
        // The chat's messages are handled in order: had the bot answered
        // during the handoff, that answer would be message 3.
        assert_eq!(msgs.len(), 3, "no answer during handoff: {msgs:?}");
        assert!(msgs[2].1.contains("bot again"), "{}", msgs[2].1);

        // 5. Hot reload: a new bundle named in the config is picked up.
        let v2 = dir.path().join("bundle-v2");
        common::pretrain_tiny_bundle(&v2, 5);
        let text = std::fs::read_to_string(&config_path).unwrap().replace(
            &format!("bundle = \"{}\"", f.bundle.display()),
            &format!("bundle = \"{}\"", v2.display()),
        );
        std::fs::write(&config_path, text).unwrap();
        let v2_version = chatforge::bundle::Bundle::open(&v2)
            .unwrap()
            .model_version()
            .unwrap()
            .to_string();
        // Reloaded when another chat's reply comes from the new model.
        wait_for_version(&fake, dir.path(), 45, 9, &f.ask_ok, &v2_version).await;
        say(42, &f.ask_ok, 4).await;

        // 6. /reset, then a flood from another chat: one notice.
        let msgs = say(42, "/reset", 5).await;
        assert!(msgs[4].1.contains("forgotten"));
        for i in 0..12 {
            fake.push_update(text_message(43, 8, &format!("hello {i}")));
        }
        fake.wait_for("the rate-limit notice", |f| {
            shown(f, 43).iter().any(|m| m.1.contains("faster"))
        })
        .await;
        // Another user's message in the same chat is handled after the
        // whole flood: once it is answered, the flood's replies are all out.
        fake.push_update(text_message(43, 10, "/help"));
        fake.wait_for("the later /help", |f| {
            shown(f, 43).iter().any(|m| m.1.contains("Commands"))
        })
        .await;
        let flood: Vec<_> = shown(&fake, 43)
            .into_iter()
            .filter(|m| !m.1.contains("Commands"))
            .collect();
        assert_eq!(flood.iter().filter(|m| m.1.contains("faster")).count(), 1);
        assert!(
            flood.len() <= 9,
            "eight answered at most, plus one notice: {flood:?}"
        );

        let _ = stop_tx.send(());
        let report = server.await.unwrap().expect("serve ran");
        assert_eq!(report.store.pending, 0);
        println!(
            "--- Telegram-fake transcript ---\n{}",
            transcript.borrow().join("\n")
        );

        let convs = stored(dir.path()).await;
        let chat42: Vec<&StoredConversation> =
            convs.iter().filter(|c| c.record.channel == "42").collect();
        assert_eq!(chat42.len(), 1, "one conversation until /reset");
        let c = chat42[0];
        assert!(c.ended_at.is_some(), "/reset ended it");
        assert_eq!(c.handoff, Handoff::Resolved);
        let bots: Vec<_> = c
            .messages
            .iter()
            .filter(|m| m.role == Role::Assistant)
            .collect();
        assert_eq!(bots.len(), 2);
        assert_eq!(bots[1].model_version.as_deref(), Some(v2_version.as_str()));
        assert_ne!(bots[0].model_version, bots[1].model_version);
        let chat44 = convs.iter().find(|c| c.record.channel == "44").unwrap();
        assert_eq!(chat44.messages[1].verdict, Some(Verdict::Block));
        let fb = {
            let url = format!("sqlite://{}?mode=rwc", dir.path().join("chat.db").display());
            let db = store::connect(&url, &StoreOptions::default())
                .await
                .unwrap();
            db.feedback(&c.record.id).await.unwrap()
        };
        assert_eq!(fb.len(), 1);
        assert_eq!(fb[0].rating, 5);
        assert_eq!(fb[0].message_id.as_deref(), Some(bots[0].id.as_str()));
        assert!(data.ends_with(&bots[0].id));
        // The message sent during the handoff is kept for the operator.
        assert!(c.messages.iter().any(|m| m.content == "is anyone there?"));
    })
    .await
    .expect("test ran past its time limit");
}

/// Runs the `chatforge serve` binary on `config` with `RUST_LOG=log`, sends
/// `text` in chat 42, waits for the reply, stops serve with SIGTERM and
/// returns what it printed and its exit status.
async fn serve_one_message(
    config: &Path,
    fake: &Fake,
    log: &str,
    text: &str,
) -> std::process::Output {
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_chatforge"))
        .args(["serve", "--config"])
        .arg(config)
        .env("CHATFORGE_TEST_TG_TOKEN", TOKEN)
        .env("RUST_LOG", log)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    fake.push_update(text_message(42, 7, text));
    wait_messages(fake, 42, 1).await;
    let pid = child.id() as i32;
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_serve_binary_stops_on_sigterm_and_drains() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let f = common::chat_fixture();
        let dir = tempfile::tempdir().unwrap();
        let fake = Fake::start().await.unwrap();
        let config = write_config(
            dir.path(),
            &fake.url,
            &f.bundle,
            "${CHATFORGE_TEST_TG_TOKEN}",
        );
        let out = serve_one_message(&config, &fake, "info", &f.ask_ok).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(stderr.contains("stopped; store:"), "{stderr}");
        // The token is read from the environment and never printed.
        assert!(
            !stderr.contains(TOKEN.split(':').nth(1).unwrap()),
            "{stderr}"
        );
        let convs = stored(dir.path()).await;
        assert_eq!(convs.len(), 1);
        assert_eq!(convs[0].messages.len(), 2, "both turns stored before exit");
    })
    .await
    .expect("test ran past its time limit");
}

/// A customer's card number sent through `serve` over Telegram: the reply
/// still comes, but the number never reaches the database, the spill folder
/// or serve's own log (at debug level), on either backend. With
/// `retain_days`, serve purges idle conversations at start-up.
async fn card_number_never_stored(postgres: Option<&str>) {
    const PAN: &str = "4111 1111 1111 1111";
    let f = common::chat_fixture();
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::start().await.unwrap();
    let config = write_config(
        dir.path(),
        &fake.url,
        &f.bundle,
        "${CHATFORGE_TEST_TG_TOKEN}",
    );
    let sqlite = format!("sqlite://{}?mode=rwc", dir.path().join("chat.db").display());
    let url = postgres.map_or_else(|| sqlite.clone(), str::to_string);
    // Retention: serve purges at start-up what is idle for longer.
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(&sqlite, &url)
        .replace("[store]\n", "[store]\nretain_days = 30\n");
    std::fs::write(&config, text).unwrap();
    let db = store::connect_and_migrate(&url, &StoreOptions::default())
        .await
        .unwrap();
    let mut old = store::ConversationRecord::new(
        "telegram",
        "c",
        store::UserKeyHasher::ephemeral().key("telegram", "1"),
    );
    old.started_at = chrono::Utc::now() - chrono::Duration::days(31);
    let old_id = old.id.clone();
    db.write_batch(&[store::Record::Conversation(old)])
        .await
        .unwrap();
    db.close().await.unwrap();
    let said = format!("my email is jane.doe@example.com and card {PAN}, why was I charged twice?");
    let out = serve_one_message(&config, &fake, "debug", &said).await;
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{log}");
    let digits = PAN.replace(' ', "");
    let holds = |t: &str| t.contains(PAN) || t.contains(&digits);
    assert!(!holds(&log), "the log holds the card number:\n{log}");
    let db = store::connect(&url, &StoreOptions::default())
        .await
        .unwrap();
    let convs = db
        .select(&store::ExportFilter::default(), None, 100)
        .await
        .unwrap();
    let audit = db.audit_events(10).await.unwrap();
    db.close().await.unwrap();
    assert_eq!(convs.len(), 1, "the idle conversation was purged");
    assert_ne!(convs[0].record.id, old_id);
    assert_eq!(
        (audit[0].actor.as_str(), audit[0].action.as_str()),
        ("serve", "purge")
    );
    let user = convs[0]
        .messages
        .iter()
        .find(|m| m.role == Role::User)
        .unwrap();
    // Only the card: e-mail is not in the default `redact_at_rest`.
    assert_eq!(
        user.content,
        "my email is jane.doe@example.com and card <CARD>, why was I charged twice?"
    );
    for m in &convs[0].messages {
        assert!(!holds(&m.content), "{m:?}");
    }
    for entry in std::fs::read_dir(dir.path().join("spill")).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            !holds(&String::from_utf8_lossy(&bytes)),
            "{}",
            path.display()
        );
    }
    if postgres.is_none() {
        // SQLite keeps deleted or rewritten text in free pages and the WAL:
        // the raw file bytes must not hold the number either.
        for name in ["chat.db", "chat.db-wal"] {
            if let Ok(bytes) = std::fs::read(dir.path().join(name)) {
                assert!(!holds(&String::from_utf8_lossy(&bytes)), "{name}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_card_number_never_stored_sqlite() {
    tokio::time::timeout(TEST_TIMEOUT, card_number_never_stored(None))
        .await
        .expect("test ran past its time limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_card_number_never_stored_postgres() {
    common::with_scratch_db(TEST_TIMEOUT, |url| async move {
        card_number_never_stored(Some(&url)).await
    })
    .await;
}

#[test]
fn test_config_errors_name_the_key() {
    let f = common::chat_fixture();
    let dir = tempfile::tempdir().unwrap();
    let run = |config: &Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_chatforge"))
            .args(["serve", "--config"])
            .arg(config)
            .env_remove("CHATFORGE_TEST_TG_TOKEN")
            .output()
            .unwrap()
    };
    // Token variable not set.
    let config = write_config(
        dir.path(),
        "http://127.0.0.1:9/",
        &f.bundle,
        "${CHATFORGE_TEST_TG_TOKEN}",
    );
    let out = run(&config);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("telegram.token") && err.contains("CHATFORGE_TEST_TG_TOKEN"),
        "{err}"
    );
    // A misspelt key.
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("watch_secs", "watch_sec");
    std::fs::write(&config, text).unwrap();
    let err = String::from_utf8_lossy(&run(&config).stderr).to_string();
    assert!(err.contains("watch_sec"), "{err}");
    // No bundle.
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("watch_sec ", "watch_secs ")
        .replace("${CHATFORGE_TEST_TG_TOKEN}", TOKEN)
        .replace(&format!("bundle = \"{}\"\n", f.bundle.display()), "");
    std::fs::write(&config, text).unwrap();
    let err = String::from_utf8_lossy(&run(&config).stderr).to_string();
    assert!(err.contains("model.bundle"), "{err}");
    // Webhook mode: needs [http], a URL and a secret Telegram accepts.
    let webhook = |extra: &str| {
        let config = write_config(dir.path(), "http://127.0.0.1:9/", &f.bundle, TOKEN);
        let text = std::fs::read_to_string(&config).unwrap() + "mode = \"webhook\"\n" + extra;
        std::fs::write(&config, text).unwrap();
        String::from_utf8_lossy(&run(&config).stderr).to_string()
    };
    let err = webhook("");
    assert!(
        err.contains("telegram.mode") && err.contains("[http]"),
        "{err}"
    );
    let http = "[http]\nlisten = \"127.0.0.1:0\"\n";
    let err = webhook(&format!("webhook_secret = \"s\"\n{http}"));
    assert!(err.contains("telegram.webhook_url"), "{err}");
    let err = webhook(&format!(
        "webhook_url = \"https://x.example/h\"\nwebhook_secret = \"has space\"\n{http}"
    ));
    assert!(err.contains("telegram.webhook_secret"), "{err}");
}

#[test]
fn test_bench_pipeline_reports_figures() {
    let f = common::chat_fixture();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("runtime.toml");
    std::fs::write(
        &config,
        "[runtime]\nproviders = [\"cpu\"]\nintra_threads = 1\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_chatforge"))
        .args([
            "bench",
            "pipeline",
            "--json",
            "--conversations",
            "4",
            "--messages",
            "2",
        ])
        .arg("--bundle")
        .arg(&f.bundle)
        .arg("--moderation")
        .arg(&f.moderation)
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["bench"], "pipeline");
    assert_eq!(r["messages"], 8);
    assert_eq!(r["moderation"], true);
    let n = |k: &str| r[k].as_f64().unwrap();
    assert!(n("messages_per_s") > 0.0);
    assert!(n("e2e_p50_ms") > 0.0 && n("e2e_p50_ms") <= n("e2e_p99_ms"));
    assert!(n("overhead_p50_ms") <= n("overhead_p99_ms"));
    // Each part of a reply (the model's, the pipeline's) takes less than
    // the whole trip of that reply. The medians of the parts come from
    // different replies, so their sum may exceed the trip's p99 (CI:
    // 2.03 + 16.22 ms > 17.04 ms); each alone may not.
    assert!(
        n("overhead_p50_ms") <= n("e2e_p99_ms") && n("model_p50_ms") <= n("e2e_p99_ms"),
        "{r}"
    );
}

// ------------------------------------------------------------ webhook mode

const WEBHOOK_SECRET: &str = "hook-secret_0123456789";

/// `chatforge serve` in webhook mode on a free port (the same `port` again
/// for a restart), with the token and secret in its environment.
struct WebhookServe {
    child: std::process::Child,
    hook: String,
}

impl WebhookServe {
    async fn start(config: &Path, port: u16) -> Self {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_chatforge"))
            .args(["serve", "--config"])
            .arg(config)
            .env("CHATFORGE_TEST_TG_TOKEN", TOKEN)
            .env("CHATFORGE_TEST_HOOK_SECRET", WEBHOOK_SECRET)
            // Replicas key user ids with one secret (serve refuses another).
            .env(
                "CHATFORGE_USER_KEY_SECRET",
                "replicas-share-this-secret-0123456789",
            )
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        common::wait_healthy(&base, &mut child).await;
        Self {
            child,
            hook: format!("{base}/tg/hook"),
        }
    }

    /// Posts `update` as Telegram does; returns the status.
    async fn post(&self, secret: Option<&str>, update: &Value) -> u16 {
        let mut req = reqwest::Client::new()
            .post(&self.hook)
            .header("content-type", "application/json")
            .body(update.to_string());
        if let Some(s) = secret {
            req = req.header("X-Telegram-Bot-Api-Secret-Token", s);
        }
        req.send().await.unwrap().status().as_u16()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for WebhookServe {
    fn drop(&mut self) {
        self.kill();
    }
}

fn update(id: i64, chat: i64, text: &str) -> Value {
    let mut u = text_message(chat, chat, text);
    u["update_id"] = json!(id);
    u
}

/// Waits until the SQLite store in `dir` keeps no unanswered update.
async fn wait_unanswered_none(dir: &Path) {
    let url = format!("sqlite://{}?mode=rwc", dir.join("chat.db").display());
    let db = sqlx::SqlitePool::connect(&url).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let open: i64 =
            sqlx::query_scalar("SELECT count(*) FROM inbound_updates WHERE done_at IS NULL")
                .fetch_one(&db)
                .await
                .unwrap();
        if open == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{open} updates unanswered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    db.close().await;
}

/// The user texts stored for `chat`, in the order they were answered.
async fn asked_in(dir: &Path, chat: i64) -> Vec<String> {
    stored(dir)
        .await
        .iter()
        .filter(|c| c.record.channel == chat.to_string())
        .flat_map(|c| &c.messages)
        .filter(|m| m.role == Role::User)
        .map(|m| m.content.clone())
        .collect()
}

/// Webhook mode end to end: `telegram set-webhook` registers the URL and
/// secret; serve acknowledges an update only with the right secret, once
/// it is kept; a resent update is answered once; a chat's updates are
/// answered in order; and updates acknowledged by a serve killed before it
/// could answer are answered, once each, by the restarted serve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_webhook_mode_acknowledges_kept_updates_and_recovers_after_a_kill() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let f = common::chat_fixture();
        let dir = tempfile::tempdir().unwrap();
        let fake = Fake::start().await.unwrap();
        let port = common::free_port();
        let config = common::write_serve_config(
            dir.path(),
            &f.bundle,
            &format!(
                "[http]\nlisten = \"127.0.0.1:{port}\"\n\n[telegram]\ntoken = \"${{CHATFORGE_TEST_TG_TOKEN}}\"\napi_url = \"{}\"\nedit_interval_secs = 0.2\nmode = \"webhook\"\nwebhook_url = \"https://bot.example.com/tg/hook\"\nwebhook_secret = \"${{CHATFORGE_TEST_HOOK_SECRET}}\"\n",
                fake.url
            ),
        );

        // The one-time registration.
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_chatforge"))
            .args(["telegram", "set-webhook", "--max-connections", "10", "--config"])
            .arg(&config)
            .env("CHATFORGE_TEST_TG_TOKEN", TOKEN)
            .env("CHATFORGE_TEST_HOOK_SECRET", WEBHOOK_SECRET)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let set = fake.calls("setWebhook");
        assert_eq!(set.len(), 1);
        assert_eq!(set[0].body["url"], "https://bot.example.com/tg/hook");
        assert_eq!(set[0].body["secret_token"], WEBHOOK_SECRET);
        assert_eq!(set[0].body["max_connections"], "10");
        assert_eq!(set[0].body["allowed_updates"], r#"["message","callback_query"]"#);

        let mut serve = WebhookServe::start(&config, port).await;
        // Replicas never register the webhook, nor poll.
        assert_eq!(fake.calls("setWebhook").len(), 1);
        assert!(fake.calls("deleteWebhook").is_empty());

        // Without the secret, or with another, nothing is kept or answered.
        let first = update(1, 42, &f.ask_ok);
        assert_eq!(serve.post(None, &first).await, 401);
        assert_eq!(serve.post(Some("wrong"), &first).await, 401);
        let not_an_update = json!({"hello": "world"});
        assert_eq!(serve.post(Some(WEBHOOK_SECRET), &not_an_update).await, 400);
        assert_eq!(serve.post(Some(WEBHOOK_SECRET), &first).await, 200);
        wait_messages(&fake, 42, 1).await;
        // Telegram resends an update whose acknowledgement it missed: it
        // is recognised and not answered again.
        assert_eq!(serve.post(Some(WEBHOOK_SECRET), &first).await, 200);

        // One chat's updates, posted back to back: answered in order.
        let texts: Vec<String> = (1..=5).map(|i| format!("hello number {i}")).collect();
        for (i, t) in texts.iter().enumerate() {
            assert_eq!(
                serve.post(Some(WEBHOOK_SECRET), &update(10 + i as i64, 43, t)).await,
                200
            );
        }
        wait_messages(&fake, 43, 5).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while asked_in(dir.path(), 43).await.len() < 5 {
            assert!(tokio::time::Instant::now() < deadline, "not stored");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(asked_in(dir.path(), 43).await, texts);
        assert_eq!(shown(&fake, 42).len(), 1, "the resent update was answered again");

        // Kept, acknowledged, then the process dies before replying (the
        // fake holds the typing action, so nothing of a reply is sent).
        fake.hold_chat_actions(Duration::from_secs(30));
        let late = ["after the kill one", "after the kill two"];
        for (i, t) in late.iter().enumerate() {
            assert_eq!(
                serve.post(Some(WEBHOOK_SECRET), &update(20 + i as i64, 44, t)).await,
                200
            );
        }
        serve.kill();
        assert!(shown(&fake, 44).is_empty());
        fake.hold_chat_actions(Duration::ZERO);
        // As if the killed serve had sent two messages (777, 778) answering
        // the first of them and died before marking it answered.
        let db = sqlx::SqlitePool::connect(&format!(
            "sqlite://{}",
            dir.path().join("chat.db").display()
        ))
        .await
        .unwrap();
        sqlx::query("UPDATE inbound_updates SET sent = '777,778' WHERE update_id = 20")
            .execute(&db)
            .await
            .unwrap();
        db.close().await;

        // The restarted replica takes back what it had kept: both are
        // answered once, in order; earlier ones are not answered again.
        // The first reply is shown in the message sent for it before, not
        // sent again, and the message it does not need is deleted.
        let _serve = WebhookServe::start(&config, port).await;
        wait_messages(&fake, 44, 1).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while asked_in(dir.path(), 44).await.len() < 2 {
            assert!(tokio::time::Instant::now() < deadline, "not stored");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Marked answered only once its reply is sent and logged: then
        // nothing more can be sent for it.
        wait_unanswered_none(dir.path()).await;
        // The killed serve may have logged its unsent replies before it
        // died; what the customer saw is the restarted serve's, in order.
        let asked = asked_in(dir.path(), 44).await;
        assert!(asked.ends_with(&late.map(String::from)), "{asked:?}");
        assert_eq!(shown(&fake, 44).len(), 1, "a reply noted as sent was sent again");
        let reused: Vec<String> = fake
            .calls("editMessageText")
            .iter()
            .filter(|c| c.body["chat_id"] == json!(44) && c.body["message_id"] == json!(777))
            .map(|c| c.body["text"].as_str().unwrap_or("").to_string())
            .collect();
        assert!(!reused.is_empty(), "the reply did not reuse message 777");
        let removed: Vec<Value> = fake
            .calls("deleteMessage")
            .iter()
            .filter(|c| c.body["chat_id"] == json!(44))
            .map(|c| c.body["message_id"].clone())
            .collect();
        assert_eq!(removed, [json!(778)], "the message the reply did not need stays");
        assert_eq!(shown(&fake, 43).len(), 5);
        assert_eq!(shown(&fake, 42).len(), 1);
        // Polling would have removed the webhook first.
        assert!(fake.calls("deleteWebhook").is_empty());
    })
    .await
    .expect("test ran past its time limit");
}

// ---------------------------------------------------- replicas behind nginx

/// nginx's binary, or `None` (said why) where it is missing and the run
/// does not require it.
fn nginx_binary() -> Option<PathBuf> {
    let found = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    if found.is_none() {
        assert!(
            std::env::var_os("CHATFORGE_REQUIRE_SERVICES").is_none(),
            "nginx is not installed, but this run requires it (scripts/ensure-nginx.sh installs it)"
        );
        eprintln!(
            "skipping the replica test: nginx is not installed (scripts/test.sh installs it)"
        );
    }
    found
}

/// nginx on `port` balancing round-robin over the replicas' ports; a
/// replica that refuses connections is skipped, and a post it failed is
/// passed to the other (updates are idempotent by id).
fn start_nginx(bin: &Path, dir: &Path, port: u16, replicas: &[u16]) -> std::process::Child {
    let servers: String = replicas
        .iter()
        .map(|p| format!("server 127.0.0.1:{p} max_fails=1 fail_timeout=2s;\n"))
        .collect();
    let d = dir.display();
    let conf = format!(
        "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n access_log off;\n client_body_temp_path {d}/body;\n proxy_temp_path {d}/proxy;\n\
         upstream replicas {{\n{servers}}}\n\
         server {{\n listen 127.0.0.1:{port};\n location / {{\n proxy_pass http://replicas;\n\
         proxy_next_upstream error timeout http_502 http_503 non_idempotent;\n\
         proxy_connect_timeout 1s;\n }}\n }}\n}}\n"
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    std::process::Command::new(bin)
        .args(["-p", dir.to_str().unwrap(), "-c", path.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// Posts `update` to `url` as Telegram does: again after any failure or
/// non-2xx answer, until one is acknowledged.
async fn deliver(http: &reqwest::Client, url: &str, update: &Value) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let sent = http
            .post(url)
            .header("content-type", "application/json")
            .header("X-Telegram-Bot-Api-Secret-Token", WEBHOOK_SECRET)
            .body(update.to_string())
            .send()
            .await;
        if matches!(&sent, Ok(r) if r.status().is_success()) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "update never acknowledged: {:?}",
            sent.map(|r| r.status())
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const CHATS: i64 = 50;
const PER_CHAT: i64 = 20;

fn replica_update(chat: i64, n: i64) -> Value {
    update(
        chat * 1000 + n,
        100 + chat,
        &format!("chat {chat} question {n}"),
    )
}

/// Each chat's messages, posted back to back, for every chat at once.
async fn send_round(url: &str, from: i64, to: i64) {
    let http = reqwest::Client::new();
    let chats: Vec<_> = (0..CHATS)
        .map(|chat| {
            let (http, url) = (http.clone(), url.to_string());
            tokio::spawn(async move {
                for n in from..to {
                    deliver(&http, &url, &replica_update(chat, n)).await;
                }
            })
        })
        .collect();
    for c in chats {
        c.await.unwrap();
    }
}

/// Waits until every kept update is answered; returns how many are kept.
async fn wait_all_answered(db: &sqlx::PgPool, expected: i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let (kept, open): (i64, i64) = sqlx::query_as(
            "SELECT count(*), count(*) FILTER (WHERE done_at IS NULL) FROM inbound_updates",
        )
        .fetch_one(db)
        .await
        .unwrap();
        if kept == expected && open == 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{open} of {kept} kept updates unanswered ({expected} sent)"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Per chat, the user texts the store holds, in the order answered, and
/// how many conversations they are in.
async fn stored_per_chat(url: &str) -> std::collections::BTreeMap<String, (Vec<String>, usize)> {
    let db = store::connect(url, &StoreOptions::default()).await.unwrap();
    let convs = db
        .select(&store::ExportFilter::default(), None, 10_000)
        .await
        .unwrap();
    db.close().await.unwrap();
    type Texts = Vec<(chrono::DateTime<chrono::Utc>, String)>;
    let mut per_chat: std::collections::BTreeMap<String, (Texts, usize)> = Default::default();
    for c in convs {
        let entry = per_chat.entry(c.record.channel.clone()).or_default();
        entry.1 += 1;
        entry.0.extend(
            c.messages
                .iter()
                .filter(|m| m.role == Role::User)
                .map(|m| (m.created_at, m.content.clone())),
        );
    }
    per_chat
        .into_iter()
        .map(|(chat, (mut texts, convs))| {
            texts.sort_by_key(|t| t.0);
            (chat, (texts.into_iter().map(|t| t.1).collect(), convs))
        })
        .collect()
}

/// Two `serve` replicas over one Postgres behind nginx, in webhook mode. 50
/// chats send 20 messages each, back to back, through nginx's round robin,
/// so a chat's messages land on both replicas. First half: every message
/// gets exactly one reply, in order, and each chat stays one conversation
/// (the turns carry across replicas). Second half: one replica is killed
/// mid-run; Telegram-style retries reach the survivor, which takes the dead
/// one's chats over once their leases expire: nothing is lost or out of
/// order. Replies the dead replica had begun to send are sent again by the
/// survivor (counted and printed: delivery is at least once).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn test_two_replicas_behind_nginx_answer_each_message_once_in_order() {
    let Some(nginx) = nginx_binary() else { return };
    common::with_scratch_db(Duration::from_secs(400), |url| async move {
        replicas_run(&nginx, &url).await
    })
    .await;
}

async fn replicas_run(nginx: &Path, url: &str) {
    let f = common::chat_fixture();
    let fake = Fake::start().await.unwrap();
    let lb = common::free_port();
    let ports = [common::free_port(), common::free_port()];
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut configs = Vec::new();
    for (i, (port, dir)) in ports.iter().zip(&dirs).enumerate() {
        let config = common::write_serve_config(
            dir.path(),
            &f.bundle,
            &format!(
                "[http]\nlisten = \"127.0.0.1:{port}\"\n\n[telegram]\ntoken = \"${{CHATFORGE_TEST_TG_TOKEN}}\"\napi_url = \"{}\"\nedit_interval_secs = 0.2\nmode = \"webhook\"\nwebhook_url = \"http://127.0.0.1:{lb}/tg/hook\"\nwebhook_secret = \"${{CHATFORGE_TEST_HOOK_SECRET}}\"\nreplica = \"replica-{i}\"\nlease_secs = 2.0\n",
                fake.url
            ),
        );
        let sqlite = format!("sqlite://{}?mode=rwc", dir.path().join("chat.db").display());
        let text = std::fs::read_to_string(&config)
            .unwrap()
            .replace(&sqlite, url)
            // Many chats write at once: no per-user limit gets in the way.
            .replace("burst = 8", "burst = 100");
        std::fs::write(&config, text).unwrap();
        configs.push(config);
    }
    let nginx_dir = tempfile::tempdir().unwrap();
    let mut balancer = start_nginx(nginx, nginx_dir.path(), lb, &ports);
    // The first replica migrates the shared database before the second.
    let mut first = WebhookServe::start(&configs[0], ports[0]).await;
    let _second = WebhookServe::start(&configs[1], ports[1]).await;
    let hook = format!("http://127.0.0.1:{lb}/tg/hook");
    let pool = sqlx::PgPool::connect(url).await.unwrap();

    // First half: both replicas up.
    let half = PER_CHAT / 2;
    let started = std::time::Instant::now();
    send_round(&hook, 1, half + 1).await;
    wait_all_answered(&pool, CHATS * half).await;
    let first_half = started.elapsed();
    let stored = stored_per_chat(url).await;
    assert_eq!(stored.len(), CHATS as usize);
    for chat in 0..CHATS {
        let expected: Vec<String> = (1..=half)
            .map(|n| format!("chat {chat} question {n}"))
            .collect();
        let (asked, convs) = &stored[&(100 + chat).to_string()];
        assert_eq!(
            asked, &expected,
            "chat {chat}: lost, repeated or out of order"
        );
        assert_eq!(
            *convs, 1,
            "chat {chat}: the conversation did not carry across replicas"
        );
        assert_eq!(shown(&fake, 100 + chat).len(), half as usize, "chat {chat}");
    }
    // A chat's consecutive messages were kept by different replicas.
    let switches: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT received_by, lag(received_by) OVER \
         (PARTITION BY chat_key ORDER BY update_id) AS before FROM inbound_updates) t \
         WHERE before IS NOT NULL AND before <> received_by",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let pairs = CHATS * (half - 1);
    eprintln!(
        "first half: {} messages answered in {:.1} s; {switches} of {pairs} consecutive messages of a chat went to the other replica",
        CHATS * half,
        first_half.as_secs_f64()
    );
    assert!(
        switches * 4 >= pairs,
        "{switches} of {pairs}: nginx did not spread chats over both replicas"
    );

    // Second half: one replica is killed mid-run.
    let started = std::time::Instant::now();
    let sender = {
        let hook = hook.clone();
        tokio::spawn(async move { send_round(&hook, half + 1, PER_CHAT + 1).await })
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM inbound_updates")
            .fetch_one(&pool)
            .await
            .unwrap();
        if kept >= CHATS * half + CHATS * 3 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "second half never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill();
    sender.await.unwrap();
    // An update is marked answered only once its reply was sent and logged.
    wait_all_answered(&pool, CHATS * PER_CHAT).await;

    let stored = stored_per_chat(url).await;
    let (mut repeated, mut out_of_order, mut extra_replies) = (0, 0, 0);
    for chat in 0..CHATS {
        let (asked, _) = &stored[&(100 + chat).to_string()];
        let mut seen = Vec::new();
        for text in asked {
            if seen.last() == Some(text) {
                repeated += 1;
            } else {
                seen.push(text.clone());
            }
        }
        let expected: Vec<String> = (1..=PER_CHAT)
            .map(|n| format!("chat {chat} question {n}"))
            .collect();
        if seen != expected {
            out_of_order += 1;
            eprintln!("chat {chat}: {seen:?}");
        }
        let replies = shown(&fake, 100 + chat).len() as i64;
        assert!(
            replies >= PER_CHAT,
            "chat {chat}: {replies} replies to {PER_CHAT} messages"
        );
        extra_replies += replies - PER_CHAT;
    }
    eprintln!(
        "second half with a replica killed: answered in {:.1} s; {} messages in all, 0 unanswered, {out_of_order} chats lost or out of order, {repeated} messages answered twice in the store, {extra_replies} replies sent twice",
        started.elapsed().as_secs_f64(),
        CHATS * PER_CHAT
    );
    assert_eq!(
        out_of_order, 0,
        "a message was lost or answered out of order"
    );
    assert!(
        extra_replies <= CHATS,
        "more replies sent twice ({extra_replies}) than chats the killed replica could hold"
    );
    let _ = balancer.kill();
    let _ = balancer.wait();
}
