//! The HTTP server of `chatforge serve` (`[http]`): the OpenAI-compatible
//! chat API (`/v1/chat/completions`, `/v1/models`), the web chat (`/`),
//! health checks (`/healthz`, `/readyz`) and Prometheus metrics
//! (`/metrics`). API and web turns go through the same pipeline as Telegram
//! and Discord: moderation, the knowledge base and fact guard, the store.

mod console;
pub mod metrics;
mod openai;
mod telegram;
mod web;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{self, HttpSection, expand_env};
use crate::pipeline::{Admit, Pipeline, RateLimitConfig, RateLimiter};
use crate::serve::ServeError;
use crate::store::WriterHandle;

pub use console::ConsoleState;
pub use openai::ApiError;
pub use telegram::TelegramHook;

/// `[http]` checked, its keys read from the environment.
#[derive(Clone)]
pub struct HttpSettings {
    pub listen: SocketAddr,
    /// SHA-256 of each key: compared in constant time, never logged.
    keys: Vec<[u8; 32]>,
    pub max_body_bytes: usize,
    pub rate_limit: RateLimitConfig,
    pub rate_window: Duration,
    pub cors_origins: Vec<HeaderValue>,
}

impl std::fmt::Debug for HttpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSettings")
            .field("listen", &self.listen)
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

fn key_err(key: &str, reason: impl Into<String>) -> ServeError {
    ServeError::Config(config::Error::Key {
        key: key.to_string(),
        reason: reason.into(),
    })
}

impl HttpSettings {
    /// Checks `[http]`: the address parses, every key is set, and a server
    /// reachable beyond this machine has keys.
    pub fn resolve(section: &HttpSection) -> Result<Self, ServeError> {
        let listen: SocketAddr = section.listen.parse().map_err(|e| {
            key_err(
                "http.listen",
                format!("{:?} is not an address:port ({e})", section.listen),
            )
        })?;
        let mut keys = Vec::with_capacity(section.api_keys.len());
        for (i, k) in section.api_keys.iter().enumerate() {
            let name = format!("http.api_keys[{i}]");
            let key = expand_env(&name, k)?;
            if key.trim().is_empty() {
                return Err(key_err(&name, "is empty"));
            }
            keys.push(Sha256::digest(key.as_bytes()).into());
        }
        if keys.is_empty() && !listen.ip().is_loopback() {
            return Err(key_err(
                "http.api_keys",
                format!(
                    "listening on {listen}, beyond this machine, needs API keys (e.g. api_keys = [\"${{CHATFORGE_API_KEY}}\"])"
                ),
            ));
        }
        if section.max_body_bytes < 1024 {
            return Err(key_err("http.max_body_bytes", "must be at least 1024"));
        }
        let rate_window = config::bounded_secs(
            "http.rate_limit.per_seconds",
            section.rate_limit.per_seconds,
            0.001,
            86_400.0,
        )
        .map_err(|r| ServeError::Config(config::Error::Value(r)))?;
        let cors_origins = section
            .cors_origins
            .iter()
            .map(|o| {
                HeaderValue::from_str(o)
                    .map_err(|_| key_err("http.cors_origins", format!("{o:?} is not an origin")))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            listen,
            keys,
            max_body_bytes: section.max_body_bytes,
            rate_limit: section.rate_limit,
            rate_window,
            cors_origins,
        })
    }
}

/// What every handler shares.
struct Shared {
    /// Per completion: the handler's whole time and the model's part, for
    /// `bench http` (the most recent [`TIMINGS_CAP`]).
    timings: std::sync::Mutex<std::collections::VecDeque<(Duration, Duration)>>,
    /// Set by [`HttpServer::probe`]: a server nobody probes keeps none.
    probed: AtomicBool,
    pipeline: Arc<Pipeline>,
    store: WriterHandle,
    keys: Vec<[u8; 32]>,
    limiter: RateLimiter,
    max_body_bytes: usize,
    draining: AtomicBool,
    /// Set once at shutdown: long-lived event streams end with it.
    stop: tokio::sync::watch::Sender<bool>,
    console: Option<Arc<ConsoleState>>,
    web: Arc<web::WebOutbox>,
}

type AppState = Arc<Shared>;

const TIMINGS_CAP: usize = 65_536;

impl Shared {
    fn record_timing(&self, total: Duration, model: Duration) {
        if !self.probed.load(Ordering::Relaxed) {
            return;
        }
        let mut t = self.timings.lock().unwrap_or_else(|p| p.into_inner());
        if t.len() == TIMINGS_CAP {
            t.pop_front();
        }
        t.push_back((total, model));
    }
}

/// A running server's completion timings, for `bench http`.
#[derive(Clone)]
pub struct HttpProbe(AppState);

impl HttpProbe {
    /// Each completion since the last call: (the handler's whole time, the
    /// model's part of it).
    pub fn take_timings(&self) -> Vec<(Duration, Duration)> {
        let mut t = self.0.timings.lock().unwrap_or_else(|p| p.into_inner());
        t.drain(..).collect()
    }
}

/// A bound HTTP server; [`HttpServer::run_until`] serves until `stop`.
pub struct HttpServer {
    listener: tokio::net::TcpListener,
    router: Router,
    shared: AppState,
}

impl HttpServer {
    /// `console`: serve the operator console at `/console` too.
    pub async fn bind(
        settings: &HttpSettings,
        pipeline: Arc<Pipeline>,
        store: WriterHandle,
        console: Option<Arc<ConsoleState>>,
    ) -> Result<Self, ServeError> {
        metrics::handle();
        let shared = Arc::new(Shared {
            timings: Default::default(),
            probed: AtomicBool::new(false),
            pipeline,
            store,
            keys: settings.keys.clone(),
            limiter: RateLimiter::new(settings.rate_limit, settings.rate_window),
            max_body_bytes: settings.max_body_bytes,
            draining: AtomicBool::new(false),
            stop: tokio::sync::watch::channel(false).0,
            console,
            web: Arc::default(),
        });
        let router = router(Arc::clone(&shared), settings);
        let listener = tokio::net::TcpListener::bind(settings.listen)
            .await
            .map_err(|e| ServeError::Adapter {
                adapter: "http",
                reason: format!("cannot listen on {}: {e}", settings.listen),
            })?;
        Ok(Self {
            listener,
            router,
            shared,
        })
    }

    /// Answers Telegram's webhook posts on `hook.path`.
    pub fn with_telegram(mut self, hook: TelegramHook) -> Self {
        let path = hook.path.clone();
        let route = Router::new()
            .route(&path, post(telegram::update))
            .with_state((Arc::clone(&self.shared), Arc::new(hook)));
        self.router = self.router.merge(route);
        self
    }

    /// "Send to this chat" for web conversations.
    pub fn web_outbox(&self) -> Arc<dyn chatforge_channel::ChatOutbox> {
        self.shared.web.clone()
    }

    /// Starts keeping completion timings, and the handle that reads them.
    pub fn probe(&self) -> HttpProbe {
        self.shared.probed.store(true, Ordering::Relaxed);
        HttpProbe(Arc::clone(&self.shared))
    }

    /// The address it listens on (the port when `listen` gave port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `stop`; then answers 503 to new API calls and lets
    /// the replies in flight finish.
    pub async fn run_until(
        self,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let shared = Arc::clone(&self.shared);
        let stop = async move {
            stop.await;
            shared.draining.store(true, Ordering::SeqCst);
            shared.stop.send_replace(true);
        };
        axum::serve(
            self.listener,
            self.router
                .into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(stop)
        .await
    }
}

fn router(shared: AppState, settings: &HttpSettings) -> Router {
    let api = Router::new()
        .route("/v1/chat/completions", post(openai::completions))
        .route("/v1/models", get(openai::models))
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(&shared),
            authorize,
        ));
    let api = if settings.cors_origins.is_empty() {
        api
    } else {
        api.layer(
            tower_http::cors::CorsLayer::new()
                .allow_origin(settings.cors_origins.clone())
                .allow_methods([axum::http::Method::GET, axum::http::Method::POST])
                .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE]),
        )
    };
    let console = if shared.console.is_some() {
        Router::new()
            .route("/console", get(console::index))
            .route("/console/console.js", get(console::script))
            .route("/console/console.css", get(console::style))
            .route("/console/api/login", post(console::login))
            .route("/console/api/logout", post(console::logout))
            .route("/console/api/me", get(console::me))
            .route("/console/api/password", post(console::password))
            .route("/console/api/queue", get(console::queue))
            .route(
                "/console/api/conversations/{id}",
                get(console::conversation),
            )
            .route("/console/api/events", get(console::events))
            .route("/console/api/claim", post(console::claim))
            .route("/console/api/reply", post(console::reply))
            .route("/console/api/resolve", post(console::resolve))
            .route(
                "/console/api/review",
                get(console::review_queue).post(console::review),
            )
    } else {
        Router::new()
    };
    Router::new()
        .route("/", get(web::index))
        .route("/web/chat.js", get(web::script))
        .route("/web/chat.css", get(web::style))
        .route("/web/chat", post(web::chat))
        .route("/web/feedback", post(web::feedback))
        .route("/web/history", get(web::history))
        .route("/web/events", get(web::events))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(render_metrics))
        .merge(api)
        .merge(console)
        .layer(axum::extract::DefaultBodyLimit::max(
            settings.max_body_bytes,
        ))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "no such route",
            )
        })
        .with_state(shared)
}

/// Bearer key (when keys are configured), then the per-key rate limit.
async fn authorize(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    if s.draining.load(Ordering::SeqCst) {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "the server is shutting down",
        )
        .into_response();
    }
    let client = match key_index(&s.keys, req.headers()) {
        Ok(Some(i)) => format!("key{i}"),
        Ok(None) => format!("addr:{}", peer.ip()),
        Err(e) => return e.into_response(),
    };
    let retry_after = match s.limiter.admit(&client) {
        Admit::Yes => None,
        Admit::Notify(wait) => Some(wait.as_secs().max(1)),
        Admit::Drop => Some(1),
    };
    if let Some(secs) = retry_after {
        let mut r = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            "rate limit reached; retry later",
        )
        .into_response();
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        return r;
    }
    let mut req = req;
    req.extensions_mut().insert(Client(client));
    next.run(req).await
}

/// A server-sent event stream of what `rx` receives, with keep-alives.
fn sse(rx: tokio::sync::mpsc::Receiver<axum::response::sse::Event>) -> Response {
    let stream = tokio_stream::StreamExt::map(
        tokio_stream::wrappers::ReceiverStream::new(rx),
        Ok::<_, std::convert::Infallible>,
    );
    axum::response::sse::Sse::new(stream)
        .keep_alive(axum::response::sse::KeepAlive::default())
        .into_response()
}

/// The value of cookie `name` when it is a session id (64 hex digits) as
/// this server makes them.
fn session_cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Who is calling: `key<N>` for the N-th configured key, else the address.
#[derive(Clone)]
pub(crate) struct Client(pub String);

/// The index of the key the request presents; `Ok(None)` when the server
/// has no keys.
fn key_index(keys: &[[u8; 32]], headers: &HeaderMap) -> Result<Option<usize>, ApiError> {
    if keys.is_empty() {
        return Ok(None);
    }
    let unauthorized = |m: &str| {
        ApiError::new(StatusCode::UNAUTHORIZED, "invalid_request_error", m)
            .with_code("invalid_api_key")
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(|| {
            unauthorized("no API key: send it as the header `Authorization: Bearer <key>`")
        })?;
    let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
    // Every key is compared, so the time taken does not tell which matched.
    let mut found = None;
    for (i, k) in keys.iter().enumerate() {
        if bool::from(k.ct_eq(&digest)) {
            found = Some(i);
        }
    }
    found
        .map(Some)
        .ok_or_else(|| unauthorized("incorrect API key"))
}

/// Ready when the model is loaded and the store takes records; while
/// records wait in the spill file, 503 with the reason.
async fn ready(State(s): State<AppState>) -> Response {
    if s.draining.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining: shutting down\n").into_response();
    }
    let stats = s.store.stats();
    if stats.pending > 0 {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "store unreachable: {} records wait in the spill file\n",
                stats.pending
            ),
        )
            .into_response();
    }
    let version = s.pipeline.engine().current().model_version().to_string();
    (StatusCode::OK, format!("ready: model {version}\n")).into_response()
}

async fn render_metrics(State(s): State<AppState>) -> Response {
    let stats = s.store.stats();
    ::metrics::gauge!(metrics::STORE_QUEUE).set(stats.queued as f64);
    ::metrics::gauge!(metrics::STORE_SPILLED).set(stats.pending as f64);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics::handle().render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(listen: &str, keys: &[&str]) -> HttpSection {
        let keys = keys.iter().map(|k| format!("{k:?}")).collect::<Vec<_>>();
        toml::from_str(&format!(
            "listen = {listen:?}\napi_keys = [{}]\n",
            keys.join(", ")
        ))
        .unwrap()
    }

    #[test]
    fn test_public_address_needs_keys_and_keys_are_not_shown() {
        let err = HttpSettings::resolve(&section("0.0.0.0:8080", &[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("http.api_keys"), "{err}");
        let s = HttpSettings::resolve(&section("0.0.0.0:8080", &["sk-secret-1"])).unwrap();
        assert!(!format!("{s:?}").contains("sk-secret-1"));
        let shown = format!("{:?}", section("0.0.0.0:8080", &["sk-secret-1"]));
        assert!(!shown.contains("sk-secret-1"), "{shown}");
        assert!(HttpSettings::resolve(&section("127.0.0.1:0", &[])).is_ok());
        let err = HttpSettings::resolve(&section("localhost", &[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("http.listen"), "{err}");
        let err = HttpSettings::resolve(&section("127.0.0.1:0", &["${CHATFORGE_NO_SUCH_VAR_9}"]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("http.api_keys[0]") && err.contains("CHATFORGE_NO_SUCH_VAR_9"),
            "{err}"
        );
    }

    #[test]
    fn test_key_check_finds_the_presented_key() {
        let keys: Vec<[u8; 32]> = ["a-key", "b-key"]
            .iter()
            .map(|k| Sha256::digest(k.as_bytes()).into())
            .collect();
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
            h
        };
        assert_eq!(key_index(&keys, &with("Bearer b-key")).unwrap(), Some(1));
        assert_eq!(key_index(&keys, &with("Bearer a-key")).unwrap(), Some(0));
        assert!(key_index(&keys, &with("Bearer c-key")).is_err());
        assert!(key_index(&keys, &with("a-key")).is_err());
        assert!(key_index(&keys, &HeaderMap::new()).is_err());
        assert_eq!(key_index(&[], &HeaderMap::new()).unwrap(), None);
    }
}
