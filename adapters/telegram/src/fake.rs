//! A fake Telegram Bot API on 127.0.0.1 for end-to-end tests and
//! benchmarks (feature `fake`): it serves `getUpdates` from a queue the
//! caller fills, answers the other methods the adapter calls (`getMe`,
//! `setMyCommands`, `sendMessage`, `editMessageText`, …), and records every
//! call. Point [`TelegramConfig::api_url`](crate::TelegramConfig) at
//! [`Fake::url`] and use [`TOKEN`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::time::Instant;

/// The token the fake accepts; other tokens get 401.
pub const TOKEN: &str = "123456:TEST";
pub const BOT_ID: i64 = 1000;
pub const BOT_NAME: &str = "shop_bot";

// ---------------------------------------------------------------- the fake

#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    pub body: Value,
    pub at: Instant,
}

#[derive(Default)]
pub struct FakeState {
    pub updates: Vec<Value>,
    pub calls: Vec<Call>,
    pub next_message_id: i64,
    /// sendMessage calls to answer by closing the connection, as a network
    /// failure would.
    pub drop_sends: u32,
    /// How long sendChatAction calls are kept waiting (holds a reply back
    /// before anything of it is sent).
    pub hold_chat_actions: Duration,
}

#[derive(Clone)]
pub struct Fake {
    pub state: Arc<Mutex<FakeState>>,
    pub url: String,
}

fn lock(state: &Mutex<FakeState>) -> std::sync::MutexGuard<'_, FakeState> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

impl Fake {
    /// Listens on a free port of 127.0.0.1.
    pub async fn start() -> std::io::Result<Fake> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/", listener.local_addr()?);
        let state = Arc::new(Mutex::new(FakeState {
            next_message_id: 500,
            ..FakeState::default()
        }));
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = shared.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| answer(state.clone(), req));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Fake { state, url })
    }

    /// Queues an update for getUpdates, checking first that teloxide can
    /// parse it (a malformed one would be dropped silently).
    ///
    /// # Panics
    /// When `update` is not a valid update: the caller's fixture is wrong.
    pub fn push_update(&self, mut update: Value) {
        let mut state = lock(&self.state);
        let id = state.updates.len() as i64 + 1;
        update["update_id"] = json!(id);
        let parsed: teloxide::types::Update = serde_json::from_str(&update.to_string())
            .unwrap_or_else(|e| panic!("fixture is not an update ({e}): {update}"));
        assert!(
            !matches!(parsed.kind, teloxide::types::UpdateKind::Error(_)),
            "fixture does not parse as an update: {update}"
        );
        state.updates.push(update);
    }

    /// Calls of `method` (case-insensitive) so far, in order.
    pub fn calls(&self, method: &str) -> Vec<Call> {
        let state = lock(&self.state);
        state
            .calls
            .iter()
            .filter(|c| c.method.eq_ignore_ascii_case(method))
            .cloned()
            .collect()
    }

    pub fn all_calls(&self) -> Vec<Call> {
        lock(&self.state).calls.clone()
    }

    /// The calls after the first `start`, so a poller copies only what is new.
    pub fn calls_since(&self, start: usize) -> Vec<Call> {
        let state = lock(&self.state);
        state.calls.get(start..).unwrap_or_default().to_vec()
    }

    /// Answers the next `n` sendMessage calls by closing the connection, as
    /// a network failure would.
    pub fn drop_next_sends(&self, n: u32) {
        lock(&self.state).drop_sends = n;
    }

    /// Keeps sendChatAction calls waiting `hold` before they are answered,
    /// so a reply is held back before any of it is sent.
    pub fn hold_chat_actions(&self, hold: Duration) {
        lock(&self.state).hold_chat_actions = hold;
    }

    /// Waits until `done` holds on the calls so far.
    ///
    /// # Panics
    /// After 30 s, listing the calls received (a test's failure message).
    pub async fn wait_for(&self, what: &str, done: impl Fn(&Fake) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !done(self) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; calls: {:#?}",
                self.all_calls()
                    .iter()
                    .map(|c| (&c.method, &c.body))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

pub fn chat_json(id: i64) -> Value {
    if id < 0 {
        json!({"id": id, "type": "group", "title": "Support group"})
    } else {
        json!({"id": id, "type": "private", "first_name": "Ann"})
    }
}

pub fn bot_user() -> Value {
    json!({"id": BOT_ID, "is_bot": true, "first_name": "Shop", "username": BOT_NAME})
}

type FakeError = Box<dyn std::error::Error + Send + Sync>;

async fn answer(
    state: Arc<Mutex<FakeState>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, FakeError> {
    let path = req.uri().path().to_string();
    let content_type = req
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let bytes = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let body: Value = match content_type.split_once("boundary=") {
        Some((kind, boundary)) if kind.starts_with("multipart/form-data") => {
            multipart_fields(&String::from_utf8_lossy(&bytes), boundary.trim_matches('"'))
        }
        _ => serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    };
    // Calls arrive as POST /bot<token>/<Method>.
    let (token, method) = path
        .trim_start_matches('/')
        .split_once('/')
        .unwrap_or(("", ""));
    if token != format!("bot{TOKEN}") {
        let reply = json!({"ok": false, "error_code": 401, "description": "Unauthorized"});
        let mut response = Response::new(Full::new(Bytes::from(reply.to_string())));
        *response.status_mut() = hyper::StatusCode::UNAUTHORIZED;
        return Ok(response);
    }
    let method = method.to_ascii_lowercase();
    if method == "sendmessage" {
        let mut state = lock(&state);
        if state.drop_sends > 0 {
            state.drop_sends -= 1;
            state.calls.push(Call {
                method: "sendmessage (dropped)".into(),
                body,
                at: Instant::now(),
            });
            // hyper closes the connection without a response.
            return Err("dropped on purpose".into());
        }
    }

    if method == "sendchataction" {
        let hold = lock(&state).hold_chat_actions;
        tokio::time::sleep(hold).await;
    }

    let result = match method.as_str() {
        "getupdates" => {
            // Long poll, kept short so shutdown is quick.
            let offset = body["offset"].as_i64().unwrap_or(0);
            let deadline = Instant::now() + Duration::from_millis(300);
            loop {
                let ready: Vec<Value> = {
                    let state = lock(&state);
                    state
                        .updates
                        .iter()
                        .filter(|u| u["update_id"].as_i64().unwrap_or(0) >= offset)
                        .cloned()
                        .collect()
                };
                if !ready.is_empty() || Instant::now() >= deadline {
                    break json!(ready);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        "getwebhookinfo" => {
            json!({"url": "", "has_custom_certificate": false, "pending_update_count": 0})
        }
        "getme" => json!({
            "id": BOT_ID, "is_bot": true, "first_name": "Shop", "username": BOT_NAME,
            "can_join_groups": true, "can_read_all_group_messages": false,
            "supports_inline_queries": false, "has_main_web_app": false
        }),
        "sendmessage" | "editmessagetext" | "editmessagereplymarkup" => {
            let chat = body["chat_id"].as_i64().unwrap_or(0);
            let mut state = lock(&state);
            let message_id = match body["message_id"].as_i64() {
                Some(id) => id,
                None => {
                    state.next_message_id += 1;
                    state.next_message_id
                }
            };
            let mut message = json!({
                "message_id": message_id, "date": 1, "chat": chat_json(chat),
                "from": bot_user(), "text": body["text"].as_str().unwrap_or("…")
            });
            if let Some(markup) = body.get("reply_markup") {
                message["reply_markup"] = markup.clone();
            }
            message
        }
        _ => json!(true),
    };
    if method != "getupdates" {
        lock(&state).calls.push(Call {
            method: method.clone(),
            body,
            at: Instant::now(),
        });
    }
    let reply = json!({"ok": true, "result": result}).to_string();
    Ok(Response::new(Full::new(Bytes::from(reply))))
}

/// A multipart/form-data body's text fields as a JSON object of strings
/// (teloxide sends `setWebhook` as multipart).
fn multipart_fields(body: &str, boundary: &str) -> Value {
    let mut fields = serde_json::Map::new();
    for part in body.split(&format!("--{boundary}")) {
        let Some((head, value)) = part.split_once("\r\n\r\n") else {
            continue;
        };
        let Some(name) = head
            .split("name=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
        else {
            continue;
        };
        let value = value.strip_suffix("\r\n").unwrap_or(value);
        fields.insert(name.to_string(), Value::String(value.to_string()));
    }
    Value::Object(fields)
}
