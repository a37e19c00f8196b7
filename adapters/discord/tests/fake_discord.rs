//! End to end: the real serenity `Client` of `chatforge-discord` against a
//! fake Discord on 127.0.0.1 (REST over hyper, the gateway over
//! tokio-tungstenite), with a scripted `ChatHandler` (no ML). Assertions are
//! on what the fake received.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chatforge_channel::testing::{Pacing, STREAMED, Scripted};
use chatforge_channel::{ChatHandler, ChatRequest, Command, Rating, split_message};
use chatforge_discord::fake::{
    APP_ID, BOT_ID, BOT_NAME, DM, Fake, SECRET, TOKEN, USER, dm, guild_message, interaction,
    reaction, user_json,
};
use chatforge_discord::{DiscordAdapter, DiscordConfig, DiscordError};
use serde_json::json;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// Every test finishes well inside this, or fails instead of hanging.
const TEST_TIMEOUT: Duration = Duration::from_secs(20);

// ------------------------------------------------------- scripted handler

/// 60 lines of 74 characters plus line breaks: 4,499 characters.
fn long_reply() -> String {
    (1..=60)
        .map(|i| {
            format!("Line {i:02}: your order ships from our warehouse within two days, promise")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn scripted() -> Scripted {
    Scripted::new(
        Pacing {
            stream: Duration::from_millis(120),
            long: Duration::from_millis(10),
            echo: Duration::from_millis(50),
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
    task: tokio::task::JoinHandle<Result<(), DiscordError>>,
}

async fn start() -> Running {
    start_with(|_| {}).await
}

async fn start_with(configure: impl FnOnce(&mut DiscordConfig)) -> Running {
    let fake = Fake::start().await.unwrap();
    let handler = Arc::new(scripted());
    let mut config = DiscordConfig::new(TOKEN);
    config.proxy = Some(fake.url.clone());
    config.edit_interval = Duration::from_millis(300);
    configure(&mut config);
    let adapter = DiscordAdapter::connect(config, handler.clone())
        .await
        .unwrap();
    assert_eq!(adapter.username(), BOT_NAME);
    assert_eq!(adapter.user_id(), BOT_ID);
    let outbox = adapter.outbox();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(adapter.run_until(async move {
        let _ = stopped.await;
    }));
    fake.wait_for("the slash commands", |f| {
        !f.calls("PUT", "/applications/").is_empty()
    })
    .await;
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
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("adapter did not stop within 5 s")
            .unwrap()
            .unwrap();
        let bad = self.fake.bad_auth();
        assert!(bad.is_empty(), "calls without the bot token: {bad:?}");
    }
}

async fn with_timeout(test: impl Future<Output = ()>) {
    tokio::time::timeout(TEST_TIMEOUT, test)
        .await
        .expect("test ran past its time limit");
}

// ---------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_dm_typing_reply_reactions_and_commands_registered() {
    with_timeout(async {
        let bot = start().await;
        let fake = bot.fake.clone();
        let put = &fake.calls("PUT", "/applications/")[0];
        assert_eq!(put.path, format!("/applications/{APP_ID}/commands"));
        let commands = put.body.as_array().unwrap();
        let names: Vec<&str> = commands
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            ["ask", "start", "help", "reset", "feedback", "human", "bot"]
        );
        assert_eq!(commands[0]["options"][0]["name"], "question");
        assert_eq!(commands[0]["options"][0]["required"], true);
        let feedback = &commands[4]["options"];
        assert_eq!(feedback[0]["name"], "rating");
        assert_eq!(feedback[0]["choices"][0]["value"], "good");
        assert_eq!(feedback[1]["name"], "comment");

        fake.push("MESSAGE_CREATE", dm(10, "hi"));
        fake.wait_for("both reactions", |f| {
            f.calls("PUT", "/channels/42/messages/501/reactions/").len() >= 2
        })
        .await;

        let calls = fake.all_calls();
        let typing = calls
            .iter()
            .position(|c| c.path == "/channels/42/typing")
            .expect("no typing");
        let send = calls
            .iter()
            .position(|c| c.method == "POST" && c.path == "/channels/42/messages")
            .expect("no message");
        assert!(typing < send, "typing must come before the reply");
        assert_eq!(fake.sent_texts(DM), ["echo: hi"]);
        // Generated text must not ping anyone.
        assert_eq!(calls[send].body["allowed_mentions"]["parse"], json!([]));
        let reactions: Vec<String> = fake
            .calls("PUT", "/channels/42/messages/501/reactions/")
            .iter()
            .map(|c| c.path.clone())
            .collect();
        assert_eq!(
            reactions,
            [
                "/channels/42/messages/501/reactions/👍/@me",
                "/channels/42/messages/501/reactions/👎/@me"
            ]
        );

        let requests = bot.handler.requests();
        let [ChatRequest::Message(m)] = requests.as_slice() else {
            panic!("{requests:?}")
        };
        assert_eq!(m.text, "hi");
        assert_eq!(m.conversation_key, "42");
        assert_eq!(m.user_key, "7");
        assert_eq!(m.reply_to, None);
        assert!(m.is_direct);

        // An attachment-only message still reaches the handler.
        let mut attachment = dm(11, "");
        attachment["attachments"] = json!([{
            "id": "77", "filename": "photo.png", "size": 10,
            "url": "https://cdn.invalid/photo.png", "proxy_url": "https://cdn.invalid/photo.png"
        }]);
        fake.push("MESSAGE_CREATE", attachment);
        fake.wait_for("the answer to the attachment", |f| {
            f.sent_texts(DM).len() >= 2
        })
        .await;
        assert_eq!(fake.sent_texts(DM)[1], "I can only read text.");
        bot.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_guild_answers_mentions_in_configured_channels_only() {
    with_timeout(async {
        let bot = start_with(|c| c.guild_channels = vec![50]).await;
        let fake = bot.fake.clone();
        fake.push(
            "MESSAGE_CREATE",
            guild_message(20, 50, "hello everyone", false),
        );
        fake.push(
            "MESSAGE_CREATE",
            guild_message(21, 60, "<@1000> wrong channel", true),
        );
        let mut from_bot = guild_message(22, 50, "<@1000> I am a bot", true);
        from_bot["author"] = user_json(3000, "other_bot", true);
        fake.push("MESSAGE_CREATE", from_bot);
        let mut reply = guild_message(23, 50, "<@!1000>, where is my order?", true);
        reply["message_reference"] = json!({"message_id": "20", "channel_id": "50"});
        fake.push("MESSAGE_CREATE", reply);
        fake.wait_for("the answer", |f| !f.sent_texts(50).is_empty())
            .await;
        // Give an ignored message time to show up if it were answered.
        tokio::time::sleep(Duration::from_millis(300)).await;

        assert_eq!(fake.sent_texts(50), ["echo: where is my order?"]);
        assert!(fake.sent_texts(60).is_empty());
        let requests = bot.handler.requests();
        let [ChatRequest::Message(m)] = requests.as_slice() else {
            panic!("{requests:?}")
        };
        assert_eq!(m.text, "where is my order?");
        assert_eq!(m.conversation_key, "50");
        assert_eq!(m.reply_to.as_deref(), Some("20"));
        assert!(!m.is_direct);
        bot.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_long_reply_is_split_into_three_messages_on_lines() {
    with_timeout(async {
        let bot = start().await;
        let fake = bot.fake.clone();
        fake.push("MESSAGE_CREATE", dm(10, "long"));
        fake.wait_for("the reactions", |f| {
            f.calls("PUT", "/channels/42/messages/").len() >= 2
        })
        .await;

        let sends = fake.sent_texts(DM);
        assert_eq!(sends.len(), 3, "{sends:?}");
        let shown = fake.shown_texts();
        let ids: Vec<u64> = shown.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, [501, 502, 503]);
        let parts: Vec<&str> = shown.iter().map(|(_, t)| t.as_str()).collect();
        let reply = long_reply();
        assert_eq!(parts, split_message(&reply, 2000));
        let lines: Vec<&str> = reply.lines().collect();
        for part in &parts {
            assert!(part.chars().count() <= 2000);
            // Whole lines only.
            for line in part.lines() {
                assert!(lines.contains(&line), "cut line: {line:?}");
            }
        }
        assert_eq!(parts.join("\n"), reply);
        assert!(fake.calls("DELETE", "/").is_empty());
        // The reactions sit on the last part.
        assert!(
            fake.calls("PUT", "/channels/42/messages/503/reactions/")
                .len()
                == 2
        );
        bot.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_streamed_reply_is_edited_at_most_once_per_interval() {
    with_timeout(async {
        let bot = start_with(|c| c.typing_interval = Duration::from_millis(150)).await;
        let fake = bot.fake.clone();
        fake.push("MESSAGE_CREATE", dm(10, "stream"));
        fake.wait_for("the reactions", |f| {
            f.calls("PUT", "/channels/42/messages/").len() >= 2
        })
        .await;

        // One message, shown at the first chunk, then edited as text grows.
        assert_eq!(fake.sent_texts(DM), ["Hello"]);
        let edits = fake.calls("PATCH", "/channels/42/messages/501");
        assert!(edits.len() >= 2, "expected progressive edits: {edits:?}");
        let texts: Vec<&str> = edits
            .iter()
            .map(|e| e.body["content"].as_str().unwrap())
            .collect();
        for pair in texts.windows(2) {
            assert!(
                pair[1].starts_with(pair[0]) && pair[1].len() > pair[0].len(),
                "{texts:?}"
            );
        }
        assert_eq!(*texts.last().unwrap(), STREAMED.concat());
        let mut previous = fake.calls("POST", "/channels/42/messages")[0].at;
        for edit in &edits {
            let gap = edit.at.duration_since(previous);
            // The last edit is the final reply and may follow at once.
            if edit.body["content"] != STREAMED.concat() {
                assert!(gap >= Duration::from_millis(280), "edits {gap:?} apart");
            }
            previous = edit.at;
        }
        // The typing indicator was renewed while the reply streamed (about
        // 720 ms at one renewal per 150 ms), and stopped with the reply: the
        // handler's final Reply, after which the reactions are added. (A
        // renewal may follow the edit that showed the whole text: until the
        // Reply the handler is still working, e.g. checking the reply.)
        // Two renewal intervals more: none may come after the reply.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let typing = fake.calls("POST", "/channels/42/typing");
        assert!(typing.len() >= 3, "typing posted {} times", typing.len());
        let reactions = fake.calls("PUT", "/channels/42/messages/");
        assert!(typing.iter().all(|t| t.at <= reactions[0].at));
        bot.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_thumbs_up_reaction_reaches_handler_as_feedback() {
    with_timeout(async {
        let bot = start().await;
        let fake = bot.fake.clone();
        fake.push("MESSAGE_CREATE", dm(10, "hi"));
        fake.wait_for("the reactions", |f| {
            f.calls("PUT", "/channels/42/messages/501/reactions/").len() >= 2
        })
        .await;
        // The bot's own reactions, a reaction on an unknown message and an
        // unrelated emoji are ignored; the user's 👍 on the reply counts.
        fake.push("MESSAGE_REACTION_ADD", reaction(BOT_ID, 501, "👍"));
        fake.push("MESSAGE_REACTION_ADD", reaction(USER, 999, "👍"));
        fake.push("MESSAGE_REACTION_ADD", reaction(USER, 501, "🎉"));
        fake.push("MESSAGE_REACTION_ADD", reaction(USER, 501, "👍"));
        let deadline = Instant::now() + Duration::from_secs(5);
        while bot.handler.requests().len() < 2 {
            assert!(
                Instant::now() < deadline,
                "feedback never reached the handler"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let requests = bot.handler.requests();
        assert_eq!(requests.len(), 2, "{requests:?}");
        let ChatRequest::Feedback(f) = &requests[1] else {
            panic!("{requests:?}")
        };
        assert_eq!(f.rating, Rating::Good);
        assert_eq!(f.message_id, "r1");
        assert_eq!(f.conversation_key, "42");
        assert_eq!(f.user_key, "7");
        bot.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_text_commands_reset_and_human_handoff() {
    with_timeout(async {
        let bot = start().await;
        let fake = bot.fake.clone();
        fake.push("MESSAGE_CREATE", dm(10, "/reset"));
        fake.wait_for("the first answer", |f| f.sent_texts(DM).len() == 1)
            .await;
        fake.push("MESSAGE_CREATE", dm(11, "/human now please"));
        fake.wait_for("the second answer", |f| f.sent_texts(DM).len() == 2)
            .await;
        fake.push(
            "MESSAGE_CREATE",
            guild_message(12, 50, "<@1000> /feedback bad too slow", true),
        );
        fake.wait_for("the third answer", |f| f.sent_texts(50).len() == 1)
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
        assert_eq!(
            commands,
            [
                Command::Reset,
                Command::Human,
                Command::Feedback {
                    rating: Rating::Bad,
                    comment: Some("too slow".into())
                }
            ]
        );
        assert_eq!(
            fake.sent_texts(DM),
            ["command Reset", "A human will take over."]
        );
        bot.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_slash_ask_is_deferred_then_answered() {
    with_timeout(async {
        let bot = start().await;
        let fake = bot.fake.clone();
        let token = "itoken-SECRET-1";
        fake.push(
            "INTERACTION_CREATE",
            interaction(
                "ask",
                json!([{"name": "question", "type": 3, "value": "why?"}]),
                token,
            ),
        );
        let original = format!("/webhooks/{APP_ID}/{token}/messages/@original");
        fake.wait_for("the answer", |f| !f.calls("PATCH", &original).is_empty())
            .await;
        let calls = fake.all_calls();
        let defer = calls
            .iter()
            .position(|c| c.path == format!("/interactions/9001/{token}/callback"))
            .expect("no interaction callback");
        assert_eq!(calls[defer].body["type"], 5);
        let answer = calls.iter().position(|c| c.path == original).unwrap();
        assert!(defer < answer);
        assert_eq!(calls[answer].body["content"], "echo: why?");
        // No typing for a slash command: Discord shows "thinking…".
        assert!(fake.calls("POST", "/channels/42/typing").is_empty());

        fake.push(
            "INTERACTION_CREATE",
            interaction("reset", json!([]), "itoken-2"),
        );
        fake.push(
            "INTERACTION_CREATE",
            interaction(
                "feedback",
                json!([{"name": "rating", "type": 3, "value": "good"}]),
                "itoken-3",
            ),
        );
        fake.wait_for("two more answers", |f| {
            f.calls("PATCH", "/webhooks/").len() >= 3
        })
        .await;
        let requests = bot.handler.requests();
        let ChatRequest::Message(m) = &requests[0] else {
            panic!("{requests:?}")
        };
        assert_eq!(m.text, "why?");
        assert!(m.is_direct);
        let commands: Vec<&Command> = requests[1..]
            .iter()
            .map(|r| match r {
                ChatRequest::Command { command, .. } => command,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert!(commands.contains(&&Command::Reset));
        assert!(commands.contains(&&Command::Feedback {
            rating: Rating::Good,
            comment: None
        }));
        bot.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_slash_long_answer_uses_followups() {
    with_timeout(async {
        let bot = start().await;
        let fake = bot.fake.clone();
        let token = "itoken-long";
        fake.push(
            "INTERACTION_CREATE",
            interaction(
                "ask",
                json!([{"name": "question", "type": 3, "value": "long"}]),
                token,
            ),
        );
        fake.wait_for("the followups", |f| {
            f.calls("POST", &format!("/webhooks/{APP_ID}/{token}"))
                .len()
                >= 2
        })
        .await;
        fake.wait_for("the reactions", |f| {
            f.calls("PUT", "/channels/42/messages/").len() >= 2
        })
        .await;
        let followups = fake.calls("POST", &format!("/webhooks/{APP_ID}/{token}"));
        assert_eq!(followups.len(), 2);
        let parts: Vec<String> = fake.shown_texts().into_iter().map(|(_, t)| t).collect();
        assert_eq!(parts, split_message(&long_reply(), 2000));
        // The first part went into the deferred response.
        let original = format!("/webhooks/{APP_ID}/{token}/messages/@original");
        assert_eq!(
            fake.calls("PATCH", &original).last().unwrap().body["content"],
            parts[0]
        );
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
async fn test_send_retried_after_server_errors_and_token_not_logged() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    with_timeout(async {
        let bot = start().await;
        let fake = bot.fake.clone();
        fake.fail_next_sends(2);
        fake.push("MESSAGE_CREATE", dm(10, "hi"));
        fake.wait_for("the reactions", |f| {
            f.calls("PUT", "/channels/42/messages/").len() >= 2
        })
        .await;
        let statuses: Vec<u16> = fake
            .calls("POST", "/channels/42/messages")
            .iter()
            .map(|c| c.status)
            .collect();
        assert_eq!(statuses, [500, 500, 200]);
        assert_eq!(fake.sent_texts(DM), ["echo: hi"]);
        bot.shutdown().await;
    })
    .await;
    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("Discord API call failed; retrying"), "{logs}");
    assert!(logs.contains("500"), "{logs}");
    assert!(!logs.contains(TOKEN), "token in the logs");
    assert!(!logs.contains(SECRET), "token part in the logs");
    assert!(!logs.contains("GhJkLm"), "token part in the logs");
}

#[tokio::test]
async fn test_bad_token_is_an_error_without_the_token() {
    let fake = Fake::start().await.unwrap();
    let mut config = DiscordConfig::new("");
    config.proxy = Some(fake.url.clone());
    let handler: Arc<dyn ChatHandler> = Arc::new(scripted());
    let err = DiscordAdapter::connect(config.clone(), handler.clone())
        .await
        .err()
        .unwrap();
    assert!(matches!(err, DiscordError::EmptyToken));
    // A network error names the URL; here the token is in it.
    config.token = TOKEN.into();
    config.proxy = Some(format!("http://127.0.0.1:1/{TOKEN}"));
    let err = DiscordAdapter::connect(config, handler)
        .await
        .err()
        .unwrap();
    let shown = format!("{err} {err:?}");
    assert!(matches!(err, DiscordError::Api { .. }), "{shown}");
    assert!(!shown.contains(SECRET), "{shown}");
    assert!(
        shown.contains("127.0.0.1:1/<token>/api/v10/users/@me"),
        "{shown}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_outbox_sends_to_the_channel_split_to_the_limit() {
    with_timeout(async {
        let bot = start().await;
        assert_eq!(bot.outbox.platform(), chatforge_channel::Platform::Discord);
        bot.outbox
            .send("555", "Hello from Ann at support.")
            .await
            .unwrap();
        let long = "word ".repeat(900); // 4,500 characters: three messages
        bot.outbox.send("556", &long).await.unwrap();
        assert_eq!(bot.fake.sent_texts(555), ["Hello from Ann at support."]);
        let parts = bot.fake.sent_texts(556);
        assert_eq!(parts.len(), 3, "{parts:?}");
        assert!(parts.iter().all(|p| p.chars().count() <= 2000));
        for key in ["0", "general", ""] {
            let err = bot.outbox.send(key, "hi").await.unwrap_err();
            assert!(
                matches!(err, chatforge_channel::OutboxError::BadKey { .. }),
                "{key:?}: {err}"
            );
        }
        bot.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_shards_autosharded_by_default_or_the_configured_range() {
    with_timeout(async {
        let bot = start().await;
        bot.fake
            .wait_for("an identify", |f| {
                !f.state.lock().unwrap().shards.is_empty()
            })
            .await;
        assert_eq!(bot.fake.state.lock().unwrap().shards, [json!([0, 1])]);
        assert!(
            !bot.fake.calls("GET", "/gateway/bot").is_empty(),
            "autosharded"
        );
        bot.shutdown().await;

        let bot = start_with(|c| c.shards = Some("1..2 of 2".parse().unwrap())).await;
        bot.fake
            .wait_for("an identify", |f| {
                !f.state.lock().unwrap().shards.is_empty()
            })
            .await;
        assert_eq!(bot.fake.state.lock().unwrap().shards, [json!([1, 2])]);
        bot.shutdown().await;
    })
    .await;
    for bad in ["2..2 of 4", "0..5 of 4", "0-2 of 4", "0..2", "a..b of c"] {
        assert!(bad.parse::<chatforge_discord::Shards>().is_err(), "{bad}");
    }
    let s: chatforge_discord::Shards = "0..2 of 4".parse().unwrap();
    assert_eq!((s.range, s.total), (0..2, 4));
}
