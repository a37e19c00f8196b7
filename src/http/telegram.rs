//! Telegram's webhook route (`[telegram] mode = "webhook"`): the secret
//! header checked in constant time, then the update kept by the
//! [`Inbox`] before it is acknowledged. Telegram retries any non-2xx
//! answer, so a 503 (shutting down, store away) loses nothing.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::AppState;
use crate::inbox::{Accepted, Inbox, InboxError};

/// The header Telegram sends the registered secret in.
const SECRET_HEADER: &str = "x-telegram-bot-api-secret-token";

/// What the route needs: where it is, the secret, the inbox.
#[derive(Clone)]
pub struct TelegramHook {
    pub path: String,
    /// SHA-256 of the secret, never the secret.
    secret: [u8; 32],
    pub inbox: Arc<Inbox>,
}

impl TelegramHook {
    pub fn new(path: String, secret: &str, inbox: Arc<Inbox>) -> Self {
        Self {
            path,
            secret: Sha256::digest(secret.as_bytes()).into(),
            inbox,
        }
    }
}

pub(super) type HookState = (AppState, Arc<TelegramHook>);

pub(super) async fn update(
    State((shared, hook)): State<HookState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if shared.draining.load(Ordering::SeqCst) {
        return retry_later();
    }
    let given: [u8; 32] = headers
        .get(SECRET_HEADER)
        .map(|v| Sha256::digest(v.as_bytes()).into())
        .unwrap_or([0; 32]);
    let (outcome, response) = if !bool::from(given.ct_eq(&hook.secret)) {
        ("unauthorized", StatusCode::UNAUTHORIZED.into_response())
    } else {
        match hook.inbox.accept(&body).await {
            Ok(Accepted::New) => ("kept", StatusCode::OK.into_response()),
            Ok(Accepted::Resent) => ("resent", StatusCode::OK.into_response()),
            Ok(Accepted::Ignored) => ("ignored", StatusCode::OK.into_response()),
            Err(InboxError::Malformed) => (
                "malformed",
                (StatusCode::BAD_REQUEST, "not a Telegram update\n").into_response(),
            ),
            Err(InboxError::Store(e)) => {
                tracing::warn!(error = %e, "a Telegram update could not be kept; Telegram will resend it");
                ("unavailable", retry_later())
            }
        }
    };
    metrics::counter!(super::metrics::TELEGRAM_UPDATES, "outcome" => outcome).increment(1);
    response
}

fn retry_later() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, "5")],
        "try again later\n",
    )
        .into_response()
}
