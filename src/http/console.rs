//! The operator console at `/console` (`[console]`): a login page, then the
//! queue, the conversation view and the review queue, over JSON under
//! `/console/api/` and a server-sent event stream of changes. The work is
//! [`crate::console::Console`]'s; this module is the web's security:
//!
//! - a login is an HttpOnly, SameSite=Strict cookie (`Secure` behind TLS)
//!   naming a random session held here, with an absolute expiry; logout
//!   ends it;
//! - every state-changing request needs the session's CSRF token in
//!   `X-CSRF-Token`, and a cross-site `Origin`/`Sec-Fetch-Site` is refused;
//! - logins are limited per client address on top of the account lockout
//!   (`operators::login`);
//! - an operator with a one-time password can only choose a new one.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::AppState;
use crate::console::{self, Console, Verdict};
use crate::operators::{self, Operator};
use crate::pipeline::{Admit, RateLimitConfig, RateLimiter};

const INDEX: &str = include_str!("console/index.html");
const SCRIPT: &str = include_str!("console/console.js");
const STYLE: &str = include_str!("console/console.css");
const COOKIE: &str = "chatforge_console";
const CSRF_HEADER: &str = "x-csrf-token";
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";
/// Login attempts per client address: a burst, refilled over a minute.
const LOGIN_BURST: u32 = 10;
const LOGIN_WINDOW: Duration = Duration::from_secs(60);

/// The console's settings and logged-in sessions.
pub struct ConsoleState {
    pub console: Arc<Console>,
    sessions: Sessions,
    logins: RateLimiter,
    /// Cookies get `Secure` (a TLS-terminating proxy is in front).
    secure: bool,
}

impl ConsoleState {
    pub fn new(console: Arc<Console>, session_length: Duration, secure: bool) -> Self {
        Self {
            console,
            sessions: Sessions {
                map: Mutex::new(HashMap::new()),
                length: session_length,
            },
            logins: RateLimiter::new(
                RateLimitConfig {
                    burst: LOGIN_BURST,
                    per_seconds: LOGIN_WINDOW.as_secs_f64(),
                    max_users: 100_000,
                },
                LOGIN_WINDOW,
            ),
            secure,
        }
    }
}

struct Session {
    operator: Operator,
    csrf: String,
    expires: Instant,
}

/// Sessions by the SHA-256 of their cookie: the map never holds a usable
/// cookie value.
struct Sessions {
    map: Mutex<HashMap<[u8; 32], Session>>,
    length: Duration,
}

fn token_key(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Sessions {
    /// A new session for `operator`: (cookie value, CSRF token).
    fn start(&self, operator: Operator) -> (String, String) {
        let token = hex::encode(rand::random::<[u8; 32]>());
        let csrf = hex::encode(rand::random::<[u8; 32]>());
        let now = Instant::now();
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, s| s.expires > now);
        map.insert(
            token_key(&token),
            Session {
                operator,
                csrf: csrf.clone(),
                expires: now + self.length,
            },
        );
        (token, csrf)
    }

    /// The operator and CSRF token of a live session.
    fn get(&self, token: &str) -> Option<(Operator, String)> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&token_key(token))
            .filter(|s| s.expires > Instant::now())
            .map(|s| (s.operator.clone(), s.csrf.clone()))
    }

    fn update(&self, token: &str, operator: Operator) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = map.get_mut(&token_key(token)) {
            s.operator = operator;
        }
    }

    fn end(&self, token: &str) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&token_key(token));
    }
}

fn refuse(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({"error": message.into()})),
    )
        .into_response()
}

/// A refused request: its status and the message shown.
struct Refusal(StatusCode, String);

impl Refusal {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self(status, message.into())
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        refuse(self.0, self.1)
    }
}

/// Refuses a request a browser sent from another site.
fn same_origin(headers: &HeaderMap) -> Result<(), Refusal> {
    let cross = || Refusal::new(StatusCode::FORBIDDEN, "cross-site request refused");
    if let Some(site) = headers.get("sec-fetch-site")
        && !matches!(site.to_str(), Ok("same-origin" | "none"))
    {
        return Err(cross());
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        let origin = origin.to_str().ok();
        let matches = match (origin, host) {
            (Some(o), Some(h)) => {
                o.strip_prefix("http://")
                    .or_else(|| o.strip_prefix("https://"))
                    == Some(h)
            }
            _ => false,
        };
        if !matches {
            return Err(cross());
        }
    }
    Ok(())
}

/// A logged-in request: the operator, the session's cookie value and its
/// CSRF token.
struct Caller {
    op: Operator,
    token: String,
    csrf: String,
}

/// The logged-in operator. `write`: a state-changing request, which needs
/// the CSRF token. `any_password`: allowed before a one-time password is
/// replaced.
fn operator(
    c: &ConsoleState,
    headers: &HeaderMap,
    write: bool,
    any_password: bool,
) -> Result<Caller, Refusal> {
    let token = super::session_cookie(headers, COOKIE)
        .ok_or_else(|| Refusal::new(StatusCode::UNAUTHORIZED, "not logged in"))?;
    let (op, csrf) = c.sessions.get(&token).ok_or_else(|| {
        Refusal::new(
            StatusCode::UNAUTHORIZED,
            "the session has ended; log in again",
        )
    })?;
    if write {
        same_origin(headers)?;
        let given = headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !bool::from(given.as_bytes().ct_eq(csrf.as_bytes())) {
            return Err(Refusal::new(
                StatusCode::FORBIDDEN,
                "missing or wrong CSRF token",
            ));
        }
    }
    if op.must_change && !any_password {
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "choose a new password first (you logged in with a one-time password)",
        ));
    }
    Ok(Caller { op, token, csrf })
}

fn console_of(s: &AppState) -> Result<&ConsoleState, Refusal> {
    s.console
        .as_deref()
        .ok_or_else(|| Refusal::new(StatusCode::NOT_FOUND, "the console is not enabled"))
}

macro_rules! try_or {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(r) => return r.into_response(),
        }
    };
}

fn failed(e: console::Error) -> Response {
    use console::Error as E;
    let status = match &e {
        E::NotFound(_) => StatusCode::NOT_FOUND,
        E::Conflict(_) => StatusCode::CONFLICT,
        E::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
        E::Undelivered(_) => StatusCode::BAD_GATEWAY,
        E::Store(err) if err.is_unavailable() => StatusCode::SERVICE_UNAVAILABLE,
        E::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    if status.is_server_error() {
        tracing::error!(error = %e, "console request failed");
    }
    refuse(status, e.to_string())
}

fn me_json(op: &Operator, csrf: &str) -> Response {
    (
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({"name": op.name, "must_change": op.must_change, "csrf": csrf})),
    )
        .into_response()
}

fn page(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::CACHE_CONTROL, "no-store"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
        .into_response()
}

pub async fn index() -> Response {
    page(INDEX, "text/html; charset=utf-8")
}

pub async fn script() -> Response {
    page(SCRIPT, "text/javascript; charset=utf-8")
}

pub async fn style() -> Response {
    page(STYLE, "text/css; charset=utf-8")
}

#[derive(Deserialize)]
pub struct Login {
    name: String,
    password: String,
}

pub async fn login(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Json(l): Json<Login>,
) -> Response {
    let c = try_or!(console_of(&s));
    try_or!(same_origin(&headers));
    if !matches!(c.logins.admit(&peer.ip().to_string()), Admit::Yes) {
        return refuse(
            StatusCode::TOO_MANY_REQUESTS,
            "too many login attempts; wait a minute",
        );
    }
    let store = c.console.store();
    match operators::login(store.as_ref(), l.name.trim(), &l.password).await {
        Ok(op) => {
            tracing::info!(operator = %op.name, "operator logged in");
            let (token, csrf) = c.sessions.start(op.clone());
            let mut r = me_json(&op, &csrf);
            let cookie = format!(
                "{COOKIE}={token}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={}{}",
                c.sessions.length.as_secs(),
                if c.secure { "; Secure" } else { "" }
            );
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        Err(operators::Error::BadCredentials) => {
            refuse(StatusCode::UNAUTHORIZED, "wrong name or password")
        }
        Err(e @ operators::Error::Locked) => refuse(StatusCode::LOCKED, e.to_string()),
        Err(e) => {
            tracing::error!(error = %e, "login failed");
            refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "login is unavailable right now",
            )
        }
    }
}

pub async fn logout(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let c = try_or!(console_of(&s));
    let Caller { op, token, .. } = try_or!(operator(c, &headers, true, true));
    c.sessions.end(&token);
    tracing::info!(operator = %op.name, "operator logged out");
    let mut r = StatusCode::NO_CONTENT.into_response();
    let expired = format!("{COOKIE}=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0");
    if let Ok(v) = HeaderValue::from_str(&expired) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

pub async fn me(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let c = try_or!(console_of(&s));
    let Caller { op, csrf, .. } = try_or!(operator(c, &headers, false, true));
    me_json(&op, &csrf)
}

#[derive(Deserialize)]
pub struct NewPassword {
    old_password: String,
    new_password: String,
}

pub async fn password(
    State(s): State<AppState>,
    headers: HeaderMap,
    Json(p): Json<NewPassword>,
) -> Response {
    let c = try_or!(console_of(&s));
    let Caller { op, token, csrf } = try_or!(operator(c, &headers, true, true));
    let store = c.console.store();
    // The old password again: a session left open cannot change it.
    if let Err(e) = operators::login(store.as_ref(), &op.name, &p.old_password).await {
        return refuse(StatusCode::FORBIDDEN, e.to_string());
    }
    if p.new_password == p.old_password {
        return refuse(
            StatusCode::UNPROCESSABLE_ENTITY,
            "the new password must differ from the old one",
        );
    }
    match operators::change_password(store.as_ref(), &op, &p.new_password).await {
        Ok(()) => {
            let op = Operator {
                must_change: false,
                ..op
            };
            c.sessions.update(&token, op.clone());
            me_json(&op, &csrf)
        }
        Err(e @ operators::Error::WeakPassword) => {
            refuse(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
        }
        Err(e) => {
            tracing::error!(error = %e, "password change failed");
            refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "could not change the password",
            )
        }
    }
}

#[derive(Deserialize)]
pub struct View {
    #[serde(default)]
    redact: u8,
}

pub async fn queue(
    State(s): State<AppState>,
    headers: HeaderMap,
    Query(v): Query<View>,
) -> Response {
    let c = try_or!(console_of(&s));
    let Caller { op, .. } = try_or!(operator(c, &headers, false, false));
    match c.console.queue(&op, v.redact == 1).await {
        Ok(q) => Json(json!({ "conversations": q })).into_response(),
        Err(e) => failed(e),
    }
}

pub async fn conversation(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(v): Query<View>,
) -> Response {
    let c = try_or!(console_of(&s));
    let Caller { op, .. } = try_or!(operator(c, &headers, false, false));
    match c.console.conversation(&op, &id, v.redact == 1).await {
        Ok(view) => Json(view).into_response(),
        Err(e) => failed(e),
    }
}

/// Changes as server-sent events until logout, expiry or shutdown.
pub async fn events(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let c = try_or!(console_of(&s));
    let Caller { token, .. } = try_or!(operator(c, &headers, false, false));
    let mut feed = c.console.pipeline().console_events();
    let mut stop = s.stop.subscribe();
    let shared = Arc::clone(&s);
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(64);
    tokio::spawn(async move {
        let _ = tx.send(Event::default().data(r#"{"kind":"hello"}"#)).await;
        loop {
            let data = tokio::select! {
                e = feed.recv() => match e {
                    Ok(e) => serde_json::to_string(&e).unwrap_or_default(),
                    // Missed some: the page reloads what it shows.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => r#"{"kind":"resync"}"#.to_string(),
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                },
                _ = stop.changed() => break,
            };
            let live = shared
                .console
                .as_deref()
                .is_some_and(|c| c.sessions.get(&token).is_some());
            if !live || tx.send(Event::default().data(data)).await.is_err() {
                break;
            }
        }
    });
    super::sse(rx)
}

#[derive(Deserialize)]
pub struct Which {
    conversation: String,
    #[serde(default)]
    text: Option<String>,
}

/// An operator's action on a conversation, with the session and CSRF
/// token checked; `{}` when it is done.
async fn act(
    s: &AppState,
    headers: &HeaderMap,
    action: impl AsyncFnOnce(&Console, &Operator) -> console::Result<()>,
) -> Response {
    let c = try_or!(console_of(s));
    let Caller { op, .. } = try_or!(operator(c, headers, true, false));
    match action(&c.console, &op).await {
        Ok(()) => Json(json!({})).into_response(),
        Err(e) => failed(e),
    }
}

pub async fn claim(
    State(s): State<AppState>,
    headers: HeaderMap,
    Json(w): Json<Which>,
) -> Response {
    act(&s, &headers, async |c, op| {
        c.claim(op, &w.conversation).await
    })
    .await
}

pub async fn reply(
    State(s): State<AppState>,
    headers: HeaderMap,
    Json(w): Json<Which>,
) -> Response {
    let text = w.text.unwrap_or_default();
    act(&s, &headers, async |c, op| {
        c.reply(op, &w.conversation, &text).await
    })
    .await
}

pub async fn resolve(
    State(s): State<AppState>,
    headers: HeaderMap,
    Json(w): Json<Which>,
) -> Response {
    act(&s, &headers, async |c, op| {
        c.resolve(op, &w.conversation).await
    })
    .await
}

pub async fn review_queue(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let c = try_or!(console_of(&s));
    try_or!(operator(c, &headers, false, false));
    match c.console.review_queue().await {
        Ok(items) => Json(json!({ "items": items })).into_response(),
        Err(e) => failed(e),
    }
}

#[derive(Deserialize)]
pub struct ReviewForm {
    message_id: String,
    decision: String,
    #[serde(default)]
    correction: Option<String>,
}

pub async fn review(
    State(s): State<AppState>,
    headers: HeaderMap,
    Json(f): Json<ReviewForm>,
) -> Response {
    act(&s, &headers, async |c, op| {
        let verdict = match (f.decision.as_str(), f.correction) {
            ("approve", _) => Verdict::Approve,
            ("reject", _) => Verdict::Reject,
            ("correct", Some(text)) => Verdict::Correct(text),
            ("correct", None) => {
                return Err(console::Error::Invalid(
                    "a correction needs its text".into(),
                ));
            }
            (other, _) => {
                return Err(console::Error::Invalid(format!(
                    "decision {other:?}: use approve, reject or correct"
                )));
            }
        };
        c.review(op, &f.message_id, verdict).await
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn test_cross_site_requests_are_refused() {
        assert!(same_origin(&headers(&[("host", "127.0.0.1:8080")])).is_ok());
        assert!(
            same_origin(&headers(&[
                ("host", "127.0.0.1:8080"),
                ("origin", "http://127.0.0.1:8080"),
                ("sec-fetch-site", "same-origin"),
            ]))
            .is_ok()
        );
        assert!(
            same_origin(&headers(&[
                ("host", "127.0.0.1:8080"),
                ("origin", "http://evil.example"),
            ]))
            .is_err()
        );
        assert!(
            same_origin(&headers(&[
                ("host", "127.0.0.1:8080"),
                ("sec-fetch-site", "cross-site"),
            ]))
            .is_err()
        );
    }

    #[test]
    fn test_sessions_expire_end_and_hold_no_cookie_value() {
        let s = Sessions {
            map: Mutex::new(HashMap::new()),
            length: Duration::from_secs(60),
        };
        let op = Operator {
            id: "o1".into(),
            name: "ann".into(),
            must_change: false,
        };
        let (token, csrf) = s.start(op.clone());
        assert_ne!(token, csrf);
        assert_eq!(s.get(&token), Some((op.clone(), csrf)));
        assert!(s.get(&"0".repeat(64)).is_none());
        assert!(
            !s.map
                .lock()
                .unwrap()
                .keys()
                .any(|k| hex::encode(k) == token)
        );
        s.end(&token);
        assert!(s.get(&token).is_none());

        let short = Sessions {
            map: Mutex::new(HashMap::new()),
            length: Duration::ZERO,
        };
        let (token, _) = short.start(op);
        assert!(short.get(&token).is_none(), "an expired session is refused");
    }
}
