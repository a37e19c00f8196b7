//! A fake Discord on 127.0.0.1 for end-to-end tests (feature `fake`): REST
//! over hyper (`GET /gateway` points serenity at the fake's gateway;
//! messages, edits, typing, reactions, command registration and interaction
//! callbacks are answered and recorded) and the gateway over
//! tokio-tungstenite (Hello, Identify → READY, then queued dispatches;
//! heartbeats acknowledged). Point [`DiscordConfig::proxy`](crate::DiscordConfig)
//! at [`Fake::url`] and use [`TOKEN`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// Shaped like a real token (`<id>.<timestamp>.<hmac>`), so redaction of
/// its parts is exercised too.
pub const TOKEN: &str = "MTAwMA.GhJkLm.TESTsecretTESTsecret00";
pub const SECRET: &str = "TESTsecret";
pub const BOT_ID: u64 = 1000;
pub const APP_ID: u64 = 1000;
pub const BOT_NAME: &str = "shop_bot";
pub const DM: u64 = 42;
pub const GUILD: u64 = 9;
pub const USER: u64 = 7;

// ---------------------------------------------------------------- the fake

#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    /// Path after `/api/v10`, percent-decoded.
    pub path: String,
    pub body: Value,
    pub status: u16,
    /// Id of the message the fake answered with, if any.
    pub message_id: Option<u64>,
    pub at: Instant,
}

#[derive(Default)]
pub struct FakeState {
    pub calls: Vec<Call>,
    /// Gateway dispatches (`{"t":…,"d":…}`) to send after READY.
    pub events: Vec<Value>,
    pub next_message_id: u64,
    /// Message creates to answer with a 500 before succeeding.
    pub fail_sends: u32,
    pub identified: bool,
    /// The `[shard, total]` of each gateway Identify.
    pub shards: Vec<Value>,
    /// Calls (or `identify`) that came without the right token.
    pub bad_auth: Vec<String>,
}

#[derive(Clone)]
pub struct Fake {
    pub state: Arc<Mutex<FakeState>>,
    /// Base URL for [`DiscordConfig::proxy`](crate::DiscordConfig).
    pub url: String,
}

fn lock(state: &Mutex<FakeState>) -> std::sync::MutexGuard<'_, FakeState> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

impl Fake {
    /// Listens on two free ports of 127.0.0.1 (REST and gateway).
    pub async fn start() -> std::io::Result<Fake> {
        let http = TcpListener::bind("127.0.0.1:0").await?;
        let ws = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", http.local_addr()?);
        let ws_url = format!("ws://{}", ws.local_addr()?);
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
        Ok(Fake { state, url })
    }

    /// Queues a gateway dispatch, checking first that serenity can parse
    /// its data (a malformed one would be dropped with only a log line).
    ///
    /// # Panics
    /// When the data does not parse: the caller's fixture is wrong.
    pub fn push(&self, t: &str, d: Value) {
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
        lock(&self.state).events.push(json!({"t": t, "d": d}));
    }

    /// Calls with `method` whose path (after `/api/v10`) starts with `path_prefix`.
    pub fn calls(&self, method: &str, path_prefix: &str) -> Vec<Call> {
        let state = lock(&self.state);
        state
            .calls
            .iter()
            .filter(|c| c.method == method && c.path.starts_with(path_prefix))
            .cloned()
            .collect()
    }

    pub fn all_calls(&self) -> Vec<Call> {
        lock(&self.state).calls.clone()
    }

    /// Answers the next `n` message creates with a 500.
    pub fn fail_next_sends(&self, n: u32) {
        lock(&self.state).fail_sends = n;
    }

    /// Calls (or `identify`) that came without the right token.
    pub fn bad_auth(&self) -> Vec<String> {
        lock(&self.state).bad_auth.clone()
    }

    /// Texts of the messages created in `channel` (successful sends only).
    pub fn sent_texts(&self, channel: u64) -> Vec<String> {
        self.calls("POST", &format!("/channels/{channel}/messages"))
            .iter()
            .filter(|c| c.status == 200)
            .map(|c| c.body["content"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// The text each message shows in the end (created, then edited), in
    /// the order they were created.
    pub fn shown_texts(&self) -> Vec<(u64, String)> {
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
    ///
    /// # Panics
    /// After 10 s, listing the calls received (a test's failure message).
    pub async fn wait_for(&self, what: &str, done: impl Fn(&Fake) -> bool) {
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

pub fn user_json(id: u64, name: &str, bot: bool) -> Value {
    json!({"id": id.to_string(), "username": name, "discriminator": "0",
           "global_name": null, "avatar": null, "bot": bot})
}

pub fn bot_user() -> Value {
    user_json(BOT_ID, BOT_NAME, true)
}

pub fn message_json(id: u64, channel: u64, author: Value, content: &str) -> Value {
    json!({
        "id": id.to_string(), "channel_id": channel.to_string(), "author": author,
        "content": content, "timestamp": "2026-01-01T00:00:00.000000+00:00",
        "edited_timestamp": null, "tts": false, "mention_everyone": false,
        "mentions": [], "mention_roles": [], "attachments": [], "embeds": [],
        "pinned": false, "type": 0
    })
}

/// The message the fake answers a create or edit with; new ids count up
/// from 501.
fn message(state: &mut FakeState, channel: &str, content: &Value, id: Option<&str>) -> Value {
    let id = match id {
        Some(id) => id.parse().unwrap_or_default(),
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
    let path = percent_encoding::percent_decode_str(
        raw_path.strip_prefix("/api/v10").unwrap_or(&raw_path),
    )
    .decode_utf8_lossy()
    .into_owned();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    // Webhook (interaction) routes are authorised by their token alone.
    let is_webhook = matches!(segments[0], "webhooks" | "interactions");
    if !is_webhook && auth != format!("Bot {TOKEN}") {
        lock(&state).bad_auth.push(path.clone());
    }

    let mut status = 200;
    let result: Option<Value> = {
        let mut st = lock(&state);
        match (method.as_str(), segments.as_slice()) {
            ("GET", ["gateway"]) => Some(json!({"url": ws_url})),
            // Autosharding asks how many shards to run: one.
            ("GET", ["gateway", "bot"]) => Some(json!({
                "url": ws_url, "shards": 1,
                "session_start_limit": {"total": 1000, "remaining": 1000, "reset_after": 0, "max_concurrency": 1}
            })),
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
    lock(&state).calls.push(Call {
        method,
        path,
        body,
        status,
        message_id,
        at: Instant::now(),
    });
    let bytes = result.map(|v| v.to_string()).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if status != 204 {
        response.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("application/json"),
        );
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
                let pending: Vec<Value> = lock(&state).events[delivered..].to_vec();
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
                    lock(&state).bad_auth.push("identify".into());
                }
                lock(&state).identified = true;
                let shard = payload["d"]["shard"].clone();
                lock(&state).shards.push(shard.clone());
                ready = true;
                seq += 1;
                json!({"op": 0, "s": seq, "t": "READY", "d": {
                    "v": 10, "user": bot_user(), "guilds": [],
                    "session_id": "session-1", "resume_gateway_url": "ws://127.0.0.1:1",
                    "shard": shard, "application": {"id": APP_ID.to_string(), "flags": 0}
                }})
            }
            _ => continue,
        };
        if tx.send(WsMessage::Text(reply.to_string())).await.is_err() {
            return;
        }
    }
}

pub fn dm(id: u64, text: &str) -> Value {
    message_json(id, DM, user_json(USER, "ann", false), text)
}

pub fn guild_message(id: u64, channel: u64, text: &str, mentions_bot: bool) -> Value {
    let mut m = message_json(id, channel, user_json(USER, "ann", false), text);
    m["guild_id"] = json!(GUILD.to_string());
    if mentions_bot {
        m["mentions"] = json!([bot_user()]);
    }
    m
}

pub fn interaction(name: &str, options: Value, token: &str) -> Value {
    json!({
        "id": "9001", "application_id": APP_ID.to_string(), "type": 2,
        "data": {"id": "2000", "name": name, "type": 1, "options": options},
        "channel_id": DM.to_string(), "user": user_json(USER, "ann", false),
        "token": token, "version": 1, "locale": "en-US", "app_permissions": "0",
        "entitlements": [], "attachment_size_limit": 8388608
    })
}

pub fn reaction(user: u64, message: u64, emoji: &str) -> Value {
    json!({
        "user_id": user.to_string(), "channel_id": DM.to_string(),
        "message_id": message.to_string(), "emoji": {"id": null, "name": emoji},
        "burst": false, "type": 0
    })
}
