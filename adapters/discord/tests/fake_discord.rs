//! End to end: the real serenity `Client` of `chatforge-discord` against a
//! fake Discord on 127.0.0.1 (REST over hyper, the gateway over
//! tokio-tungstenite), with a scripted `ChatHandler` (no ML). Assertions are
//! on what the fake received.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chatforge_channel::{
    ChatEvent, ChatHandler, ChatRequest, Command, EventSink, HandlerFuture, Rating, split_message,
};
use chatforge_discord::{DiscordAdapter, DiscordConfig, DiscordError};
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// Shaped like a real token (`<id>.<timestamp>.<hmac>`), so redaction of
/// its parts is exercised too.
const TOKEN: &str = "MTAwMA.GhJkLm.TESTsecretTESTsecret00";
const SECRET: &str = "TESTsecret";
const BOT_ID: u64 = 1000;
const APP_ID: u64 = 1000;
const BOT_NAME: &str = "shop_bot";
const DM: u64 = 42;
const GUILD: u64 = 9;
const USER: u64 = 7;
/// Every test finishes well inside this, or fails instead of hanging.
const TEST_TIMEOUT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------- the fake

#[derive(Debug, Clone)]
struct Call {
    method: String,
    /// Path after `/api/v10`, percent-decoded.
    path: String,
    body: Value,
    status: u16,
    /// Id of the message the fake answered with, if any.
    message_id: Option<u64>,
    at: Instant,
}

#[derive(Default)]
struct FakeState {
    calls: Vec<Call>,
    /// Gateway dispatches (`{"t":…,"d":…}`) to send after READY.
    events: Vec<Value>,
    next_message_id: u64,
    /// Message creates to answer with a 500 before succeeding.
    fail_sends: u32,
    identified: bool,
    bad_auth: Vec<String>,
}

#[derive(Clone)]
struct Fake {
    state: Arc<Mutex<FakeState>>,
    url: String,
}

impl Fake {
    async fn start() -> Fake {
        let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ws = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", http.local_addr().unwrap());
        let ws_url = format!("ws://{}", ws.local_addr().unwrap());
        let state = Arc::new(Mutex::new(FakeState {
            next_message_id: 500,
            ..FakeState::default()
        }));
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = http.accept().await {
                let state = shared.clone();
                let ws_url = ws_url.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| answer(state.clone(), ws_url.clone(), req));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = ws.accept().await {
                tokio::spawn(gateway(shared.clone(), stream));
            }
        });
        Fake { state, url }
    }

    /// Queues a gateway dispatch, checking first that serenity can parse
    /// its data (a malformed one would be dropped with only a log line).
    fn push(&self, t: &str, d: Value) {
        let parsed = match t {
            "MESSAGE_CREATE" => serde_json::from_value::<serenity::all::Message>(d.clone())
                .map(|_| ())
                .map_err(|e| e.to_string()),
            "INTERACTION_CREATE" => serde_json::from_value::<serenity::all::Interaction>(d.clone())
                .map(|_| ())
                .map_err(|e| e.to_string()),
            "MESSAGE_REACTION_ADD" => serde_json::from_value::<serenity::all::Reaction>(d.clone())
                .map(|_| ())
                .map_err(|e| e.to_string()),
            _ => Ok(()),
        };
        if let Err(e) = parsed {
            panic!("fixture {t} does not parse: {e}\n{d}");
        }
        self.state
            .lock()
            .unwrap()
            .events
            .push(json!({"t": t, "d": d}));
    }

    fn calls(&self, method: &str, path_prefix: &str) -> Vec<Call> {
        let state = self.state.lock().unwrap();
        state
            .calls
            .iter()
            .filter(|c| c.method == method && c.path.starts_with(path_prefix))
            .cloned()
            .collect()
    }

    fn all_calls(&self) -> Vec<Call> {
        self.state.lock().unwrap().calls.clone()
    }

    /// Texts of the messages created in `channel` (successful sends only).
    fn sent_texts(&self, channel: u64) -> Vec<String> {
        self.calls("POST", &format!("/channels/{channel}/messages"))
            .iter()
            .filter(|c| c.status == 200)
            .map(|c| c.body["content"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// The text each message shows in the end (created, then edited), in
    /// the order they were created.
    fn shown_texts(&self) -> Vec<(u64, String)> {
        let mut shown: Vec<(u64, String)> = Vec::new();
        for call in self.all_calls() {
            let (Some(id), Some(text)) = (call.message_id, call.body["content"].as_str()) else {
                continue;
            };
            match shown.iter_mut().find(|(i, _)| *i == id) {
                Some(entry) => entry.1 = text.to_string(),
                None => shown.push((id, text.to_string())),
            }
        }
        shown
    }

    /// Waits until `done` holds.
    async fn wait_for(&self, what: &str, done: impl Fn(&Fake) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done(self) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; calls: {:#?}",
                self.all_calls()
                    .iter()
                    .map(|c| format!("{} {} {} {}", c.status, c.method, c.path, c.body))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn user_json(id: u64, name: &str, bot: bool) -> Value {
    json!({"id": id.to_string(), "username": name, "discriminator": "0",
           "global_name": null, "avatar": null, "bot": bot})
}

fn bot_user() -> Value {
    user_json(BOT_ID, BOT_NAME, true)
}

fn message_json(id: u64, channel: u64, author: Value, content: &str) -> Value {
    json!({
        "id": id.to_string(), "channel_id": channel.to_string(), "author": author,
        "content": content, "timestamp": "2026-01-01T00:00:00.000000+00:00",
        "edited_timestamp": null, "tts": false, "mention_everyone": false,
        "mentions": [], "mention_roles": [], "attachments": [], "embeds": [],
        "pinned": false, "type": 0
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

/// The message the fake answers a create or edit with; new ids count up
/// from 501.
fn message(state: &mut FakeState, channel: &str, content: &Value, id: Option<&str>) -> Value {
    let id = match id {
        Some(id) => id.parse().unwrap(),
        None => {
            state.next_message_id += 1;
            state.next_message_id
        }
    };
    let content = content.as_str().unwrap_or_default();
    message_json(id, channel.parse().unwrap_or(DM), bot_user(), content)
}

type FakeError = Box<dyn std::error::Error + Send + Sync>;

async fn answer(
    state: Arc<Mutex<FakeState>>,
    ws_url: String,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, FakeError> {
    let method = req.method().to_string();
    let raw_path = req.uri().path().to_string();
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let bytes = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let path = percent_decode(raw_path.strip_prefix("/api/v10").unwrap_or(&raw_path));
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    // Webhook (interaction) routes are authorised by their token alone.
    let is_webhook = matches!(segments[0], "webhooks" | "interactions");
    if !is_webhook && auth != format!("Bot {TOKEN}") {
        state.lock().unwrap().bad_auth.push(path.clone());
    }

    let mut status = 200;
    let result: Option<Value> = {
        let mut st = state.lock().unwrap();
        match (method.as_str(), segments.as_slice()) {
            ("GET", ["gateway"]) => Some(json!({"url": ws_url})),
            ("GET", ["users", "@me"]) => Some(bot_user()),
            ("PUT", ["applications", _, "commands"]) => {
                let commands: Vec<Value> = body
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .enumerate()
                    .map(|(i, mut c)| {
                        c["id"] = json!((2000 + i).to_string());
                        c["application_id"] = json!(APP_ID.to_string());
                        c["version"] = json!("1");
                        c["type"] = json!(1);
                        c["default_member_permissions"] = Value::Null;
                        c
                    })
                    .collect();
                Some(json!(commands))
            }
            ("POST", ["channels", _, "typing"]) => None,
            ("POST", ["channels", channel, "messages"]) => {
                if st.fail_sends > 0 {
                    st.fail_sends -= 1;
                    status = 500;
                    Some(json!({"message": "Internal Server Error", "code": 0}))
                } else {
                    Some(message(&mut st, channel, &body["content"], None))
                }
            }
            ("PATCH", ["channels", channel, "messages", id]) => {
                Some(message(&mut st, channel, &body["content"], Some(id)))
            }
            ("PUT", ["channels", _, "messages", _, "reactions", _, "@me"]) => None,
            ("DELETE", _) => None,
            ("POST", ["interactions", _, _, "callback"]) => None,
            ("PATCH", ["webhooks", _, _, "messages", id]) => {
                let id = (*id != "@original").then_some(*id);
                let id = id.map(str::to_string).unwrap_or_else(|| "400".into());
                Some(message(
                    &mut st,
                    &DM.to_string(),
                    &body["content"],
                    Some(&id),
                ))
            }
            ("POST", ["webhooks", _, _]) => {
                Some(message(&mut st, &DM.to_string(), &body["content"], None))
            }
            _ => {
                status = 404;
                Some(json!({"message": "Unknown route", "code": 0}))
            }
        }
    };
    if status == 200 && result.is_none() {
        status = 204;
    }
    let message_id = result
        .as_ref()
        .filter(|v| v.get("content").is_some())
        .and_then(|v| v["id"].as_str()?.parse().ok());
    state.lock().unwrap().calls.push(Call {
        method,
        path,
        body,
        status,
        message_id,
        at: Instant::now(),
    });
    let bytes = result.map(|v| v.to_string()).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    *response.status_mut() = StatusCode::from_u16(status).unwrap();
    if status != 204 {
        response
            .headers_mut()
            .insert("content-type", "application/json".parse().unwrap());
    }
    Ok(response)
}

/// The gateway: Hello, Identify → READY, then the queued dispatches;
/// heartbeats are acknowledged.
async fn gateway(state: Arc<Mutex<FakeState>>, stream: TcpStream) {
    let Ok(ws) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    let (mut tx, mut rx) = ws.split();
    let hello = json!({"op": 10, "d": {"heartbeat_interval": 41250}, "s": null, "t": null});
    if tx.send(WsMessage::Text(hello.to_string())).await.is_err() {
        return;
    }
    let mut seq = 0u64;
    let mut ready = false;
    let mut delivered = 0;
    loop {
        let frame = tokio::select! {
            frame = rx.next() => frame,
            () = tokio::time::sleep(Duration::from_millis(10)) => {
                if !ready {
                    continue;
                }
                let pending: Vec<Value> = state.lock().unwrap().events[delivered..].to_vec();
                for event in pending {
                    delivered += 1;
                    seq += 1;
                    let frame = json!({"op": 0, "s": seq, "t": event["t"], "d": event["d"]});
                    if tx.send(WsMessage::Text(frame.to_string())).await.is_err() {
                        return;
                    }
                }
                continue;
            }
        };
        let Some(Ok(frame)) = frame else { return };
        // A close frame is answered by tungstenite on the next read, which
        // then ends the stream.
        let WsMessage::Text(text) = frame else {
            continue;
        };
        let payload: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let reply = match payload["op"].as_u64() {
            Some(1) => json!({"op": 11, "d": null, "s": null, "t": null}),
            Some(2) => {
                // serenity sends the token as HTTP's `Bot …` form, which
                // Discord accepts.
                let token = payload["d"]["token"].as_str().unwrap_or_default();
                if token.trim_start_matches("Bot ") != TOKEN {
                    state.lock().unwrap().bad_auth.push("identify".into());
                }
                state.lock().unwrap().identified = true;
                ready = true;
                seq += 1;
                json!({"op": 0, "s": seq, "t": "READY", "d": {
                    "v": 10, "user": bot_user(), "guilds": [],
                    "session_id": "session-1", "resume_gateway_url": "ws://127.0.0.1:1",
                    "shard": [0, 1], "application": {"id": APP_ID.to_string(), "flags": 0}
                }})
            }
            _ => continue,
        };
        if tx.send(WsMessage::Text(reply.to_string())).await.is_err() {
            return;
        }
    }
}

// ------------------------------------------------------- scripted handler

/// Answers like the pipeline would, without a model: echoes text, streams
/// `stream` slowly and `long` as a 4,500-character reply of lines,
/// acknowledges commands, goes quiet on feedback. Records every request.
#[derive(Default)]
struct Scripted {
    requests: Mutex<Vec<ChatRequest>>,
    replies: Mutex<u32>,
}

impl Scripted {
    fn requests(&self) -> Vec<ChatRequest> {
        self.requests.lock().unwrap().clone()
    }

    fn next_id(&self) -> String {
        let mut n = self.replies.lock().unwrap();
        *n += 1;
        format!("r{n}")
    }
}

/// 60 lines of 74 characters plus line breaks: 4,499 characters.
fn long_reply() -> String {
    (1..=60)
        .map(|i| {
            format!("Line {i:02}: your order ships from our warehouse within two days, promise")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

const STREAMED: [&str; 6] = ["Hello", ", this", " reply", " arrives", " in", " pieces."];

impl ChatHandler for Scripted {
    fn handle(&self, request: ChatRequest, events: EventSink) -> HandlerFuture<'_> {
        Box::pin(async move {
            self.requests.lock().unwrap().push(request.clone());
            let send = |e| events.send(e).unwrap();
            match request {
                ChatRequest::Message(m) => {
                    let id = self.next_id();
                    send(ChatEvent::Typing);
                    let text = match m.text.as_str() {
                        "stream" => {
                            for piece in STREAMED {
                                send(ChatEvent::ReplyChunk {
                                    delta: piece.into(),
                                });
                                tokio::time::sleep(Duration::from_millis(120)).await;
                            }
                            STREAMED.concat()
                        }
                        "long" => {
                            let text = long_reply();
                            let chars: Vec<char> = text.chars().collect();
                            for piece in chars.chunks(700) {
                                send(ChatEvent::ReplyChunk {
                                    delta: piece.iter().collect(),
                                });
                                tokio::time::sleep(Duration::from_millis(10)).await;
                            }
                            text
                        }
                        "" => "I can only read text.".to_string(),
                        other => {
                            // Long enough for the typing indicator to show.
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            format!("echo: {other}")
                        }
                    };
                    send(ChatEvent::Reply {
                        text,
                        message_id: id.clone(),
                    });
                    send(ChatEvent::FeedbackRequest { message_id: id });
                }
                ChatRequest::Command { command, .. } => match command {
                    Command::Human => send(ChatEvent::Handoff {
                        notice: "A human will take over.".into(),
                    }),
                    other => send(ChatEvent::Reply {
                        text: format!("command {other:?}"),
                        message_id: self.next_id(),
                    }),
                },
                ChatRequest::Feedback(_) => {}
            }
        })
    }
}

// ------------------------------------------------------------- harness

struct Running {
    fake: Fake,
    handler: Arc<Scripted>,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), DiscordError>>,
}

async fn start() -> Running {
    start_with(|_| {}).await
}

async fn start_with(configure: impl FnOnce(&mut DiscordConfig)) -> Running {
    let fake = Fake::start().await;
    let handler = Arc::new(Scripted::default());
    let mut config = DiscordConfig::new(TOKEN);
    config.proxy = Some(fake.url.clone());
    config.edit_interval = Duration::from_millis(300);
    configure(&mut config);
    let adapter = DiscordAdapter::connect(config, handler.clone())
        .await
        .unwrap();
    assert_eq!(adapter.username(), BOT_NAME);
    assert_eq!(adapter.user_id(), BOT_ID);
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
        let bad = self.fake.state.lock().unwrap().bad_auth.clone();
        assert!(bad.is_empty(), "calls without the bot token: {bad:?}");
    }
}

fn dm(id: u64, text: &str) -> Value {
    message_json(id, DM, user_json(USER, "ann", false), text)
}

fn guild_message(id: u64, channel: u64, text: &str, mentions_bot: bool) -> Value {
    let mut m = message_json(id, channel, user_json(USER, "ann", false), text);
    m["guild_id"] = json!(GUILD.to_string());
    if mentions_bot {
        m["mentions"] = json!([bot_user()]);
    }
    m
}

fn interaction(name: &str, options: Value, token: &str) -> Value {
    json!({
        "id": "9001", "application_id": APP_ID.to_string(), "type": 2,
        "data": {"id": "2000", "name": name, "type": 1, "options": options},
        "channel_id": DM.to_string(), "user": user_json(USER, "ann", false),
        "token": token, "version": 1, "locale": "en-US", "app_permissions": "0",
        "entitlements": [], "attachment_size_limit": 8388608
    })
}

fn reaction(user: u64, message: u64, emoji: &str) -> Value {
    json!({
        "user_id": user.to_string(), "channel_id": DM.to_string(),
        "message_id": message.to_string(), "emoji": {"id": null, "name": emoji},
        "burst": false, "type": 0
    })
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
        // 720 ms at one renewal per 150 ms), and stopped with the reply.
        let typing = fake.calls("POST", "/channels/42/typing");
        assert!(typing.len() >= 3, "typing posted {} times", typing.len());
        let final_edit = edits.last().unwrap().at;
        assert!(typing.iter().all(|t| t.at <= final_edit));
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
        fake.state.lock().unwrap().fail_sends = 2;
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
    let fake = Fake::start().await;
    let mut config = DiscordConfig::new("");
    config.proxy = Some(fake.url.clone());
    let handler: Arc<dyn ChatHandler> = Arc::new(Scripted::default());
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
