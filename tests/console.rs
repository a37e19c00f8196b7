//! The operator console end to end, in headless Chromium: `chatforge
//! serve` with the real teloxide dispatcher against the fake Bot API, the
//! HTTP server with `[console]`, a tiny real model and moderation model,
//! and a SQLite store. A Telegram customer asks for a human; the queue shows
//! it without a reload; an operator claims it (a second operator cannot),
//! replies (the customer receives it on Telegram), resolves it (the bot
//! answers again); a 👎 reply is corrected in the review queue and
//! `chatforge logs export` trains on the correction. Also: markup in a
//! customer's message renders as text; requests without a session or CSRF
//! token are refused.
//!
//! Needs the ONNX Runtime library that `./scripts/setup.sh` fetches, and
//! Chromium with chromedriver (`scripts/ensure-chromium.sh`).

use std::path::Path;
use std::time::Duration;

use chatforge::config::Config;
use chatforge::pipeline::{TextKey, Texts};
use chatforge::store::{self, StoreOptions};
use chatforge_telegram::fake::{Fake, TOKEN, bot_user, chat_json};
use fantoccini::{Client, Locator};
use serde_json::{Value, json};

mod common;

const CHAT: i64 = 42;
const WAIT: Duration = Duration::from_secs(30);

fn text_message(chat: i64, text: &str) -> Value {
    json!({"message": {
        "message_id": 10, "date": 1, "chat": chat_json(chat),
        "from": {"id": 7, "is_bot": false, "first_name": "Ann"},
        "text": text
    }})
}

fn button_press(chat: i64, message_id: i64, data: &str) -> Value {
    json!({"callback_query": {
        "id": format!("cb{message_id}"),
        "from": {"id": 7, "is_bot": false, "first_name": "Ann"},
        "message": {"message_id": message_id, "date": 1, "chat": chat_json(chat), "from": bot_user(), "text": "…"},
        "chat_instance": "ci",
        "data": data
    }})
}

/// Texts the bot sent to `chat` (first version of each message).
fn sent(fake: &Fake, chat: i64) -> Vec<String> {
    fake.calls("sendMessage")
        .iter()
        .filter(|c| c.body["chat_id"] == json!(chat))
        .map(|c| c.body["text"].as_str().unwrap_or("").to_string())
        .collect()
}

/// The feedback buttons' data (`fb:g:<reply id>`) of the newest message
/// that has them.
fn last_buttons(fake: &Fake) -> Option<String> {
    fake.calls("editMessageReplyMarkup")
        .iter()
        .rev()
        .find_map(|c| c.body["reply_markup"]["inline_keyboard"][0][0]["callback_data"].as_str())
        .map(str::to_string)
}

async fn wait_css(c: &Client, css: &str) -> fantoccini::elements::Element {
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css} within {WAIT:?}: {e}"))
}

async fn click(c: &Client, css: &str) {
    wait_css(c, css).await.click().await.unwrap();
}

async fn type_into(c: &Client, css: &str, text: &str) {
    let e = wait_css(c, css).await;
    e.clear().await.unwrap();
    e.send_keys(text).await.unwrap();
}

/// Waits until the browser's `probe` script returns true.
async fn wait_js(c: &Client, what: &str, probe: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if c.execute(probe, vec![]).await.unwrap() == json!(true) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A console client without a browser: cookie and CSRF token by hand.
struct Api {
    http: reqwest::Client,
    base: String,
    cookie: String,
    csrf: String,
}

impl Api {
    async fn login(base: &str, name: &str, password: &str) -> (Self, Value) {
        let http = reqwest::Client::new();
        let r = http
            .post(format!("{base}/console/api/login"))
            .json(&json!({"name": name, "password": password}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "login of {name}");
        let cookie = r.headers()[reqwest::header::SET_COOKIE]
            .to_str()
            .unwrap()
            .to_string();
        assert!(
            cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
            "{cookie}"
        );
        let cookie = cookie.split(';').next().unwrap().to_string();
        let me: Value = r.json().await.unwrap();
        let csrf = me["csrf"].as_str().unwrap().to_string();
        (
            Self {
                http,
                base: base.to_string(),
                cookie,
                csrf,
            },
            me,
        )
    }

    async fn post(&self, path: &str, body: Value, csrf: bool) -> (u16, Value) {
        let mut r = self
            .http
            .post(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .json(&body);
        if csrf {
            r = r.header("x-csrf-token", &self.csrf);
        }
        let r = r.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_console_in_chromium_queue_claim_reply_resolve_review_export() {
    let f = common::chat_fixture();
    let dir = tempfile::tempdir().unwrap();
    let db_url = format!("sqlite://{}?mode=rwc", dir.path().join("chat.db").display());

    // Two operators, made as `chatforge operators add` makes them.
    let db = store::connect_and_migrate(&db_url, &StoreOptions::default())
        .await
        .unwrap();
    let (_, ann_otp) = chatforge::operators::add(db.as_ref(), "ann", "test")
        .await
        .unwrap();
    let (_, bob_otp) = chatforge::operators::add(db.as_ref(), "bob", "test")
        .await
        .unwrap();
    db.close().await.unwrap();

    let fake = Fake::start().await.unwrap();
    let port = common::free_port();
    let config_path = common::write_serve_config(
        dir.path(),
        &f.bundle,
        &format!(
            "[telegram]\ntoken = \"{TOKEN}\"\napi_url = \"{}\"\nedit_interval_secs = 0.2\n\n\
             [http]\nlisten = \"127.0.0.1:{port}\"\n\n[console]\nreview_sample_every = 1000\n",
            fake.url
        ),
    );
    let cfg = Config::load(Some(&config_path)).unwrap();
    let texts = Texts::new(&cfg.pipeline.texts).unwrap();
    let resolved_notice = texts.get("en", TextKey::HandoffResolved).to_string();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(chatforge::serve::serve(cfg, None, async {
        let _ = stop_rx.await;
    }));
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    for _ in 0..300 {
        if http.get(format!("{base}/healthz")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Without a session nothing is shown or changed.
    let r = http
        .get(format!("{base}/console/api/queue"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .post(format!("{base}/console/api/claim"))
        .json(&json!({"conversation": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Ann logs in with her one-time password and must choose a new one.
    let driver = common::browser::Driver::start().await;
    let c = driver.browser(1280, 900).await;
    c.goto(&format!("{base}/console")).await.unwrap();
    wait_css(&c, "body[data-view=login]").await;
    type_into(&c, "#login-name", "ann").await;
    type_into(&c, "#login-password", &ann_otp).await;
    click(&c, "#login-submit").await;
    wait_css(&c, "body[data-view=password]").await;
    type_into(&c, "#old-password", &ann_otp).await;
    type_into(&c, "#new-password", "ann's long passphrase").await;
    click(&c, "#password-submit").await;
    wait_css(&c, "body[data-view=console]").await;
    wait_css(&c, "#queue-empty").await;
    wait_css(&c, "body[data-live='1']").await;

    // A Telegram customer asks for a human: the queue shows it live.
    fake.push_update(text_message(CHAT, "/human"));
    let row = wait_css(&c, "#queue li.conv[data-state=requested]").await;
    let id = row.attr("data-id").await.unwrap().unwrap();
    assert_eq!(
        row.find(Locator::Css(".platform"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "telegram"
    );
    // Markup a customer types is shown as text, never run.
    let payload = "<img src=x onerror=\"document.body.dataset.pwned=1\"> where is my order?";
    fake.push_update(text_message(CHAT, payload));
    wait_js(
        &c,
        "the customer's message in the queue",
        &format!(
            "return [...document.querySelectorAll('#queue .preview .msg')].some(p => p.textContent === {});",
            json!(payload)
        ),
    )
    .await;
    assert!(
        c.find_all(Locator::Css("#queue img, #conversation img"))
            .await
            .unwrap()
            .is_empty()
    );

    // Ann opens and claims it.
    click(&c, &format!("#queue li.conv[data-id='{id}']")).await;
    wait_css(&c, &format!("#conversation[data-id='{id}']")).await;
    click(&c, "#claim").await;
    wait_css(
        &c,
        &format!("#queue li.conv[data-id='{id}'][data-state=active]"),
    )
    .await;

    // Bob cannot claim it; and a request without the CSRF token is refused.
    let (bob, me) = Api::login(&base, "bob", &bob_otp).await;
    assert_eq!(me["must_change"], json!(true));
    let (status, _) = bob
        .post("/console/api/claim", json!({"conversation": id}), true)
        .await;
    assert_eq!(status, 403, "a one-time password must be changed first");
    let (status, _) = bob
        .post(
            "/console/api/password",
            json!({"old_password": bob_otp, "new_password": "bob's long passphrase"}),
            false,
        )
        .await;
    assert_eq!(status, 403, "no CSRF token, no change");
    let (status, _) = bob
        .post(
            "/console/api/password",
            json!({"old_password": bob_otp, "new_password": "bob's long passphrase"}),
            true,
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = bob
        .post("/console/api/claim", json!({"conversation": id}), true)
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(body["error"].as_str().unwrap().contains("ann"), "{body}");
    let (status, _) = bob
        .post(
            "/console/api/reply",
            json!({"conversation": id, "text": "hi"}),
            true,
        )
        .await;
    assert_eq!(status, 409, "only the holder answers");

    // Ann replies; the customer receives it on Telegram.
    let reply = "Hi, Ann here from support. Your order ships today.";
    type_into(&c, "#reply-text", reply).await;
    click(&c, "#reply-send").await;
    fake.wait_for("the operator's reply on Telegram", |f| {
        sent(f, CHAT).iter().any(|t| t == reply)
    })
    .await;
    wait_js(
        &c,
        "the operator's message in the conversation",
        &format!(
            "return [...document.querySelectorAll('#conversation .msg.operator .text')].some(p => p.textContent === {});",
            json!(reply)
        ),
    )
    .await;
    // The customer's next message arrives in the console, not at the bot.
    let before = sent(&fake, CHAT).len();
    fake.push_update(text_message(CHAT, "thanks, and the tracking number?"));
    wait_js(
        &c,
        "the customer's message during handoff",
        "return [...document.querySelectorAll('#conversation .msg.user .text')].some(p => p.textContent === 'thanks, and the tracking number?');",
    )
    .await;
    let shot = c.screenshot().await.unwrap();
    assert!(shot.starts_with(b"\x89PNG"));
    let artifact = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-queue.png");
    std::fs::write(&artifact, &shot).unwrap();
    println!("screenshot: {}", artifact.display());
    assert_eq!(sent(&fake, CHAT).len(), before, "the bot stays quiet");

    // Resolve: the customer is told, and the bot answers again.
    click(&c, "#resolve").await;
    fake.wait_for("the resolved notice", |f| {
        sent(f, CHAT).contains(&resolved_notice)
    })
    .await;
    wait_css(&c, "#queue-empty").await;
    let before = sent(&fake, CHAT).len();
    fake.push_update(text_message(CHAT, &f.ask_ok));
    fake.wait_for("the bot's answer after resolve", |f| {
        !f.calls("sendChatAction").is_empty() && sent(f, CHAT).len() > before
    })
    .await;

    // Another customer rates a reply 👎 (a fresh chat: the tiny model's
    // reply to the long handed-off conversation above may be moderated,
    // and a replaced reply has no rating buttons).
    const OTHER: i64 = 43;
    fake.push_update(text_message(OTHER, &f.ask_ok));
    fake.wait_for("a bot reply with feedback buttons", |f| {
        last_buttons(f).is_some()
    })
    .await;
    let good = last_buttons(&fake).unwrap();
    let reply_id = good.strip_prefix("fb:g:").unwrap().to_string();
    let message_id = fake.calls("editMessageReplyMarkup").last().unwrap().body["message_id"]
        .as_i64()
        .unwrap();
    fake.push_update(button_press(OTHER, message_id, &format!("fb:b:{reply_id}")));
    fake.wait_for("the feedback acknowledged", |f| {
        !f.calls("answerCallbackQuery").is_empty()
    })
    .await;

    // The 👎 reply is in the review queue; Ann corrects it.
    click(&c, "#tab-review").await;
    let correction = "Refunds reach your card within 5 business days.";
    let item_css = format!("#review li.review[data-message='{reply_id}']");
    let item = wait_css(&c, &item_css).await;
    assert_eq!(
        item.find(Locator::Css(".reason"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "thumbs_down"
    );
    let area = item
        .find(Locator::Css("textarea.correction"))
        .await
        .unwrap();
    area.send_keys(correction).await.unwrap();
    item.find(Locator::Css(".correct"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_js(
        &c,
        "the reviewed reply to leave the queue",
        &format!("return !document.querySelector({});", json!(item_css)),
    )
    .await;
    assert!(
        c.find_all(Locator::Css("body[data-pwned]"))
            .await
            .unwrap()
            .is_empty()
    );

    // Logout ends the session.
    click(&c, "#logout").await;
    wait_css(&c, "body[data-view=login]").await;
    c.close().await.unwrap();

    let _ = stop_tx.send(());
    server.await.unwrap().unwrap();

    // The audit trail of the conversation.
    let db = store::connect(&db_url, &StoreOptions::default())
        .await
        .unwrap();
    let audit: Vec<(String, String)> = db
        .conversation_audit(&id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.actor, e.action))
        .collect();
    assert_eq!(
        audit,
        [
            ("ann".to_string(), "claimed".to_string()),
            ("ann".to_string(), "replied".to_string()),
            ("ann".to_string(), "resolved".to_string()),
        ]
    );
    let stored = db.conversation(&id).await.unwrap().unwrap();
    let by_ann = stored.messages.iter().find(|m| m.content == reply).unwrap();
    assert!(by_ann.operator_id.is_some(), "stored with role operator");
    let last = stored.messages.last().unwrap();
    assert!(
        last.role == chatforge::text::Role::Assistant && last.operator_id.is_none(),
        "the bot answered after the resolve: {last:?}"
    );

    // `logs export` trains on the correction, not on the 👎 reply.
    let out = dir.path().join("export.jsonl");
    let (ok, stdout, err) = common::cli(&[
        "logs",
        "export",
        "--database-url",
        &db_url,
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{stdout}{err}");
    let exported = std::fs::read_to_string(&out).unwrap();
    println!("export: {exported}");
    assert!(exported.contains(correction), "{exported}");
    let rated = db.message_conversation(&reply_id).await.unwrap().unwrap();
    let original = db
        .conversation(&rated)
        .await
        .unwrap()
        .unwrap()
        .messages
        .into_iter()
        .find(|m| m.id == reply_id)
        .unwrap()
        .content;
    assert!(!exported.contains(&format!("{original:?}")));
    let audit = db.conversation_audit(&rated).await.unwrap();
    assert_eq!(
        (audit[0].actor.as_str(), audit[0].action.as_str()),
        ("ann", "reply corrected")
    );
    let (ok, stats, _) = common::cli(&["logs", "stats", "--database-url", &db_url]);
    assert!(ok && stats.contains("corrected"), "{stats}");
}
