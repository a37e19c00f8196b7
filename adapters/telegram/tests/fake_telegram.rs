//! End to end: the real teloxide `Dispatcher` of `chatforge-telegram`
//! against a fake Telegram Bot API on 127.0.0.1, with a scripted
//! `ChatHandler` (no ML). Assertions are on what the fake received.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chatforge_channel::testing::{Pacing, STREAMED, Scripted};
use chatforge_channel::{ChatRequest, Command, Rating};
use chatforge_telegram::{TelegramAdapter, TelegramConfig};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::time::Instant;

use chatforge_telegram::fake::{BOT_NAME, Fake, TOKEN, bot_user, chat_json};

/// Every test finishes well inside this, or fails instead of hanging.
const TEST_TIMEOUT: Duration = Duration::from_secs(60);

// ------------------------------------------------------- scripted handler

fn long_reply() -> String {
    let sentence = "Your order ships from our warehouse within two days. ";
    let text = sentence.repeat(10_000 / sentence.len() + 1);
    text.trim().to_string()
}

fn scripted() -> Scripted {
    Scripted::new(
        Pacing {
            stream: Duration::from_millis(450),
            long: Duration::from_millis(20),
            echo: Duration::from_millis(100),
        },
        long_reply(),
    )
}

// ------------------------------------------------------------- harness

struct Running {
    fake: Fake,
    /// "Send to this chat", taken before the adapter started.
    outbox: Arc<dyn chatforge_channel::ChatOutbox>,
    handler: Arc<Scripted>,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), chatforge_telegram::TelegramError>>,
}

async fn start() -> Running {
    let fake = Fake::start().await.unwrap();
    let handler = Arc::new(scripted());
    let mut config = TelegramConfig::new(TOKEN);
    config.api_url = Some(fake.url.clone());
    let adapter = TelegramAdapter::connect(config, handler.clone())
        .await
        .unwrap();
    assert_eq!(adapter.username(), BOT_NAME);
    let outbox = adapter.outbox();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(adapter.run_until(async move {
        let _ = stopped.await;
    }));
    Running {
        fake,
        outbox,
        handler,
        stop,
        task,
    }
}

impl Running {
    async fn shutdown(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("adapter did not stop within 10 s")
            .unwrap()
            .unwrap();
    }
}

fn text_message(chat: i64, user: i64, text: &str) -> Value {
    json!({"message": {
        "message_id": 10, "date": 1, "chat": chat_json(chat),
        "from": {"id": user, "is_bot": false, "first_name": "Ann"},
        "text": text
    }})
}

fn sent_texts(fake: &Fake, chat: i64) -> Vec<String> {
    fake.calls("sendMessage")
        .iter()
        .filter(|c| c.body["chat_id"] == json!(chat))
        .map(|c| c.body["text"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// The last text each message id was given (sent, then edited).
fn shown_texts(fake: &Fake) -> HashMap<i64, String> {
    let mut shown = HashMap::new();
    let mut next = 500;
    for call in fake.all_calls() {
        match call.method.as_str() {
            "sendmessage" => {
                next += 1;
                shown.insert(next, call.body["text"].as_str().unwrap().to_string());
            }
            "editmessagetext" => {
                let id = call.body["message_id"].as_i64().unwrap();
                shown.insert(id, call.body["text"].as_str().unwrap().to_string());
            }
            _ => {}
        }
    }
    shown
}

async fn with_timeout(test: impl Future<Output = ()>) {
    tokio::time::timeout(TEST_TIMEOUT, test)
        .await
        .expect("test ran past its time limit");
}

// ---------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_private_message_typing_reply_and_keyboard() {
    with_timeout(async {
        let bot = start().await;
        let fake = bot.fake.clone();
        let commands = fake.calls("setMyCommands");
        assert_eq!(commands.len(), 1);
        let names: Vec<&str> = commands[0].body["commands"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["command"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            ["start", "help", "reset", "feedback", "human", "bot"]
        );

        fake.push_update(text_message(42, 7, "hi"));
        fake.wait_for("the feedback keyboard", |f| {
            !f.calls("editMessageReplyMarkup").is_empty()
        })
        .await;

        let calls = fake.all_calls();
        let typing = calls
            .iter()
            .position(|c| c.method == "sendchataction")
            .expect("no typing action");
        assert_eq!(calls[typing].body["action"], "typing");
        assert_eq!(calls[typing].body["chat_id"], 42);
        let send = calls
            .iter()
            .position(|c| c.method == "sendmessage")
            .expect("no sendMessage");
        assert!(typing < send, "typing must come before the reply");
        assert_eq!(sent_texts(&fake, 42), ["echo: hi"]);

        let markup = &fake.calls("editMessageReplyMarkup")[0].body;
        assert_eq!(markup["message_id"], 501);
        let buttons = &markup["reply_markup"]["inline_keyboard"][0];
        assert_eq!(buttons[0]["text"], "👍");
        assert_eq!(buttons[0]["callback_data"], "fb:g:r1");
        assert_eq!(buttons[1]["text"], "👎");
        assert_eq!(buttons[1]["callback_data"], "fb:b:r1");

        let requests = bot.handler.requests();
        let [ChatRequest::Message(m)] = requests.as_slice() else {
            panic!("{requests:?}")
        };
        assert_eq!(m.text, "hi");
        assert_eq!(m.conversation_key, "42");
        assert_eq!(m.user_key, "7");
        assert!(m.is_direct);
        bot.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_streamed_reply_is_edited_at_most_once_a_second() {
    with_timeout(async {
        let bot = start().await;
        let fake = bot.fake.clone();
        fake.push_update(text_message(42, 7, "stream"));
        fake.wait_for("the feedback keyboard", |f| {
            !f.calls("editMessageReplyMarkup").is_empty()
        })
        .await;

        // One message, shown at the first chunk, then edited as text grows.
        assert_eq!(sent_texts(&fake, 42), ["Hello"]);
        let edits = fake.calls("editMessageText");
        assert!(edits.len() >= 2, "expected progressive edits: {edits:?}");
        let texts: Vec<&str> = edits
            .iter()
            .map(|e| e.body["text"].as_str().unwrap())
            .collect();
        for pair in texts.windows(2) {
            assert!(
                pair[1].starts_with(pair[0]) && pair[1].len() > pair[0].len(),
                "{texts:?}"
            );
        }
        assert_eq!(*texts.last().unwrap(), STREAMED.concat());
        let first_send = fake.calls("sendMessage")[0].at;
        let mut previous = first_send;
        for edit in &edits {
            assert_eq!(edit.body["message_id"], 501);
            let gap = edit.at.duration_since(previous);
            // The last edit is the final reply and may follow at once.
            if edit.body["text"] != STREAMED.concat() {
                assert!(gap >= Duration::from_millis(950), "edits {gap:?} apart");
            }
            previous = edit.at;
        }
        bot.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_ten_thousand_char_reply_is_three_messages() {
    with_timeout(async {
        let bot = start().await;
        let fake = bot.fake.clone();
        fake.push_update(text_message(42, 7, "long"));
        fake.wait_for("the feedback keyboard", |f| {
            !f.calls("editMessageReplyMarkup").is_empty()
        })
        .await;

        let sends = fake.calls("sendMessage");
        assert_eq!(sends.len(), 3, "{sends:?}");
        let shown = shown_texts(&fake);
        let parts: Vec<&String> = (501..=503).map(|id| &shown[&id]).collect();
        for part in &parts {
            let n = part.chars().count();
            assert!(n <= 4096 && n > 1000, "part of {n} chars");
            assert!(part.ends_with('.'), "split off a sentence end");
        }
        let joined = parts
            .iter()
            .map(|p| p.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        assert_eq!(joined, long_reply());
        assert!(fake.calls("deleteMessage").is_empty());
        // The keyboard sits on the last part.
        let markup = &fake.calls("editMessageReplyMarkup")[0].body;
        assert_eq!(markup["message_id"], 503);
        bot.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_feedback_button_reaches_handler() {
    with_timeout(async {
        let bot = start().await;
        let fake = bot.fake.clone();
        fake.push_update(json!({"callback_query": {
            "id": "cb1",
            "from": {"id": 7, "is_bot": false, "first_name": "Ann"},
            "message": {
                "message_id": 77, "date": 1, "chat": chat_json(42),
                "from": bot_user(), "text": "echo: hi"
            },
            "chat_instance": "ci",
            "data": "fb:g:r9"
        }}));
        fake.wait_for("the callback answer", |f| {
            !f.calls("answerCallbackQuery").is_empty()
                && !f.calls("editMessageReplyMarkup").is_empty()
        })
        .await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while bot.handler.requests().is_empty() {
            assert!(
                Instant::now() < deadline,
                "feedback never reached the handler"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let requests = bot.handler.requests();
        let [ChatRequest::Feedback(f)] = requests.as_slice() else {
            panic!("{requests:?}")
        };
        assert_eq!(f.rating, Rating::Good);
        assert_eq!(f.message_id, "r9");
        assert_eq!(f.conversation_key, "42");
        assert_eq!(f.user_key, "7");
        assert_eq!(
            fake.calls("answerCallbackQuery")[0].body["callback_query_id"],
            "cb1"
        );
        // The keyboard is removed from the rated message.
        let cleared = &fake.calls("editMessageReplyMarkup")[0].body;
        assert_eq!(cleared["message_id"], 77);
        assert!(cleared.get("reply_markup").is_none());
        bot.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_group_answers_only_mentions_and_replies() {
    with_timeout(async {
        let bot = start().await;
        let fake = bot.fake.clone();
        let group = -100;
        fake.push_update(text_message(group, 7, "hello everyone"));
        fake.push_update(text_message(group, 7, "/reset@other_bot"));
        fake.push_update(text_message(group, 7, "@Shop_Bot where is my order?"));
        let mut reply_to_bot = text_message(group, 8, "and my refund?");
        reply_to_bot["message"]["reply_to_message"] = json!({
            "message_id": 501, "date": 1, "chat": chat_json(group),
            "from": bot_user(), "text": "echo: where is my order?"
        });
        fake.push_update(reply_to_bot);
        fake.wait_for("two replies", |f| sent_texts(f, group).len() >= 2)
            .await;
        // Give an ignored message time to show up if it were answered.
        tokio::time::sleep(Duration::from_millis(300)).await;

        assert_eq!(
            sent_texts(&fake, group),
            ["echo: where is my order?", "echo: and my refund?"]
        );
        let texts: Vec<(String, bool)> = bot
            .handler
            .requests()
            .iter()
            .map(|r| match r {
                ChatRequest::Message(m) => (m.text.clone(), m.is_direct),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(
            texts,
            [
                ("where is my order?".to_string(), false),
                ("and my refund?".to_string(), false)
            ]
        );
        bot.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_reset_and_human_pass_through_as_commands() {
    with_timeout(async {
        let bot = start().await;
        let fake = bot.fake.clone();
        fake.push_update(text_message(42, 7, "/reset"));
        fake.push_update(text_message(42, 7, "/human now please"));
        fake.push_update(text_message(-100, 7, "/feedback@shop_bot bad too slow"));
        fake.wait_for("three answers", |f| f.calls("sendMessage").len() >= 3)
            .await;

        let commands: Vec<Command> = bot
            .handler
            .requests()
            .into_iter()
            .map(|r| match r {
                ChatRequest::Command { command, .. } => command,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(commands.len(), 3);
        assert!(commands.contains(&Command::Reset));
        assert!(commands.contains(&Command::Human));
        assert!(commands.contains(&Command::Feedback {
            rating: Rating::Bad,
            comment: Some("too slow".into())
        }));
        let private = sent_texts(&fake, 42);
        assert_eq!(private, ["command Reset", "A human will take over."]);
        bot.shutdown().await;
    })
    .await;
}

/// Captures this thread's tracing output (the test runs on one thread).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn test_send_retried_after_network_error_and_token_not_logged() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    with_timeout(async {
        let bot = start().await;
        let fake = bot.fake.clone();
        fake.drop_next_sends(1);
        fake.push_update(text_message(42, 7, "hi"));
        fake.wait_for("the feedback keyboard", |f| {
            !f.calls("editMessageReplyMarkup").is_empty()
        })
        .await;
        assert_eq!(fake.calls("sendMessage (dropped)").len(), 1);
        assert_eq!(sent_texts(&fake, 42), ["echo: hi"]);
        bot.shutdown().await;
    })
    .await;
    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("sendMessage failed; retrying"), "{logs}");
    assert!(!logs.contains(TOKEN) && !logs.contains("TEST"), "{logs}");
}

#[tokio::test]
async fn test_outbox_sends_to_the_chat_split_to_the_limit() {
    with_timeout(async {
        let bot = start().await;
        assert_eq!(bot.outbox.platform(), chatforge_channel::Platform::Telegram);
        bot.outbox
            .send("42", "Hello from Ann at support.")
            .await
            .unwrap();
        let long = "word ".repeat(1000); // 5,000 characters: two messages
        bot.outbox.send("-77", &long).await.unwrap();
        assert_eq!(sent_texts(&bot.fake, 42), ["Hello from Ann at support."]);
        let parts = sent_texts(&bot.fake, -77);
        assert_eq!(parts.len(), 2, "{parts:?}");
        assert!(parts.iter().all(|p| p.chars().count() <= 4096));
        let err = bot.outbox.send("not-a-chat", "hi").await.unwrap_err();
        assert!(
            matches!(err, chatforge_channel::OutboxError::BadKey { .. }),
            "{err}"
        );
        bot.shutdown().await;
    })
    .await;
}
