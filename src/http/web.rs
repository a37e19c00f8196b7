//! The web chat at `/`: a small page (no CDN: its HTML, CSS and script are
//! in the binary) that talks to same-origin endpoints under `/web/`. A
//! browser is known by an HttpOnly, SameSite=Strict session cookie set
//! with the page, never by an API key in the page; its conversation id
//! (kept in localStorage, so a reload continues) is scoped by that cookie.
//! Messages and commands (`/reset`, `/human`) go through the pipeline as
//! platform `web`; replies stream back as server-sent events of
//! [`ChatEvent`]s. What an operator sends the conversation (after
//! `/human`) arrives on `/web/events`, a stream the page keeps open
//! ([`WebOutbox`]).

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::sync::Mutex;

use chatforge_channel::{
    ChatHandler, ChatOutbox, ChatRequest, Feedback, IncomingMessage, OutboxFuture, Platform,
    Rating, event_channel, parse_command,
};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::broadcast;

use super::AppState;
use crate::text::Role;

const INDEX: &str = include_str!("web/index.html");
const SCRIPT: &str = include_str!("web/chat.js");
const STYLE: &str = include_str!("web/chat.css");
const COOKIE: &str = "chatforge_session";
/// Only the page's own files: no inline script, nothing from elsewhere.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'";

fn session_of(headers: &HeaderMap) -> Option<String> {
    super::session_cookie(headers, COOKIE)
}

/// The page; sets the session cookie when the browser has none.
pub async fn index(headers: HeaderMap) -> Response {
    let mut r = (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        INDEX,
    )
        .into_response();
    if session_of(&headers).is_none() {
        let id = hex::encode(rand::random::<[u8; 32]>());
        let cookie = format!("{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age=2592000");
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            r.headers_mut().insert(header::SET_COOKIE, v);
        }
    }
    r
}

pub async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        SCRIPT,
    )
        .into_response()
}

pub async fn style() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        STYLE,
    )
        .into_response()
}

fn refuse(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({"error": message}))).into_response()
}

/// A conversation id from the page: a UUID-like token.
fn valid_conversation(c: &str) -> bool {
    (8..=64).contains(&c.len()) && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// The pipeline's key of a browser's conversation: another browser cannot
/// name it without the cookie.
fn conversation_key(session: &str, conversation: &str) -> String {
    let mut h = Sha256::new();
    h.update(session.as_bytes());
    h.update([0]);
    h.update(conversation.as_bytes());
    hex::encode(&h.finalize()[..16])
}

/// The cookie's session and the conversation, checked.
fn caller(
    headers: &HeaderMap,
    conversation: &str,
) -> Result<(String, String), (StatusCode, &'static str)> {
    let Some(session) = session_of(headers) else {
        return Err((
            StatusCode::UNAUTHORIZED,
            "no session: load the chat page first",
        ));
    };
    if !valid_conversation(conversation) {
        return Err((
            StatusCode::UNPROCESSABLE_ENTITY,
            "conversation must be 8-64 letters, digits or dashes",
        ));
    }
    let key = conversation_key(&session, conversation);
    Ok((session, key))
}

#[derive(Deserialize)]
pub struct Say {
    conversation: String,
    text: String,
}

/// A message or command; the events stream back as they happen.
pub async fn chat(State(s): State<AppState>, headers: HeaderMap, Json(say): Json<Say>) -> Response {
    let (session, key) = match caller(&headers, &say.conversation) {
        Ok(c) => c,
        Err((status, message)) => return refuse(status, message),
    };
    let message = IncomingMessage {
        platform: Platform::Web,
        conversation_key: key,
        user_key: session,
        text: say.text.clone(),
        reply_to: None,
        is_direct: true,
    };
    let request = match parse_command(&say.text) {
        Some(c) => ChatRequest::Command {
            message,
            command: c.command,
        },
        None => ChatRequest::Message(message),
    };
    let (sink, mut events) = event_channel();
    let pipeline = s.pipeline.clone();
    tokio::spawn(async move { pipeline.handle(request, sink).await });
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(64);
    tokio::spawn(async move {
        while let Some(e) = events.next().await {
            let Ok(data) = serde_json::to_string(&e) else {
                continue;
            };
            if tx.send(Event::default().data(data)).await.is_err() {
                // The page went away; the turn still finishes and is stored.
                break;
            }
        }
    });
    super::sse(rx)
}

#[derive(Deserialize)]
pub struct Rate {
    conversation: String,
    message_id: String,
    rating: Rating,
    #[serde(default)]
    comment: Option<String>,
}

/// 👍/👎 on a reply, stored as feedback.
pub async fn feedback(
    State(s): State<AppState>,
    headers: HeaderMap,
    Json(rate): Json<Rate>,
) -> Response {
    let (session, key) = match caller(&headers, &rate.conversation) {
        Ok(c) => c,
        Err((status, message)) => return refuse(status, message),
    };
    let request = ChatRequest::Feedback(Feedback {
        platform: Platform::Web,
        conversation_key: key,
        user_key: session,
        message_id: rate.message_id,
        rating: rate.rating,
        comment: rate.comment,
    });
    let (sink, _events) = event_channel();
    s.pipeline.handle(request, sink).await;
    StatusCode::NO_CONTENT.into_response()
}

#[derive(Deserialize)]
pub struct Which {
    conversation: String,
}

/// What the conversation holds, for a reloaded page.
pub async fn history(
    State(s): State<AppState>,
    headers: HeaderMap,
    Query(which): Query<Which>,
) -> Response {
    let (_, key) = match caller(&headers, &which.conversation) {
        Ok(c) => c,
        Err((status, message)) => return refuse(status, message),
    };
    let (turns, last_reply) = s.pipeline.transcript(Platform::Web, &key).await;
    let n = turns.len();
    let messages: Vec<_> = turns
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            let role = if m.role == Role::User {
                "user"
            } else {
                "assistant"
            };
            // Only the last reply can still be rated from its id here.
            let id = (i + 1 == n && m.role == Role::Assistant)
                .then(|| last_reply.clone())
                .flatten();
            json!({"role": role, "content": m.content, "message_id": id})
        })
        .collect();
    Json(json!({ "messages": messages })).into_response()
}

/// Pages listening per conversation key; an entry goes when its last
/// listener does.
#[derive(Default)]
pub struct WebOutbox {
    pages: Mutex<HashMap<String, broadcast::Sender<String>>>,
}

/// Messages a page that fell behind may miss (it reloads the history).
const PUSH_CAPACITY: usize = 32;

impl WebOutbox {
    fn subscribe(&self, key: &str) -> broadcast::Receiver<String> {
        let mut pages = self.pages.lock().unwrap_or_else(|p| p.into_inner());
        pages.retain(|_, tx| tx.receiver_count() > 0);
        pages
            .entry(key.to_string())
            .or_insert_with(|| broadcast::channel(PUSH_CAPACITY).0)
            .subscribe()
    }
}

impl ChatOutbox for WebOutbox {
    fn platform(&self) -> Platform {
        Platform::Web
    }

    /// Shown at once on the pages that have the conversation open; the
    /// conversation's history (for a page opened later) comes from the
    /// pipeline, which keeps the message as a turn.
    fn send<'a>(&'a self, conversation_key: &'a str, text: &'a str) -> OutboxFuture<'a> {
        Box::pin(async move {
            let data = json!({"type": "operator", "text": text}).to_string();
            let pages = self.pages.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(tx) = pages.get(conversation_key) {
                let _ = tx.send(data);
            }
            Ok(())
        })
    }
}

/// The stream of what operators send this conversation, until the page
/// closes or the server stops.
pub async fn events(
    State(s): State<AppState>,
    headers: HeaderMap,
    Query(which): Query<Which>,
) -> Response {
    let (_, key) = match caller(&headers, &which.conversation) {
        Ok(c) => c,
        Err((status, message)) => return refuse(status, message),
    };
    let mut pushed = s.web.subscribe(&key);
    let mut stop = s.stop.subscribe();
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(PUSH_CAPACITY);
    tokio::spawn(async move {
        loop {
            let data = tokio::select! {
                m = pushed.recv() => match m {
                    Ok(m) => m,
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                _ = stop.changed() => break,
            };
            if tx.send(Event::default().data(data)).await.is_err() {
                break;
            }
        }
    });
    super::sse(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn test_web_outbox_reaches_the_open_pages_of_the_conversation() {
        let outbox = WebOutbox::default();
        let mut page = outbox.subscribe("conv-a");
        let mut other = outbox.subscribe("conv-b");
        outbox.send("conv-a", "Hello from Ann").await.unwrap();
        let got: serde_json::Value = serde_json::from_str(&page.recv().await.unwrap()).unwrap();
        assert_eq!(got, json!({"type": "operator", "text": "Hello from Ann"}));
        assert!(other.try_recv().is_err(), "another conversation's page");
        // Nobody listening is not an error; closed pages are forgotten.
        drop(page);
        outbox.send("conv-a", "anyone?").await.unwrap();
        let _again = outbox.subscribe("conv-c");
        assert_eq!(outbox.pages.lock().unwrap().len(), 2);
    }
}
