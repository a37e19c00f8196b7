//! `POST /v1/chat/completions` and `GET /v1/models` as OpenAI's API
//! defines them. The request's last message is the customer's turn; the
//! messages before it replace what the pipeline's session held (the client
//! owns the conversation), and the operator's persona stays. Errors are
//! OpenAI error objects.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::Extension;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use chatforge_channel::{ChatEvent, IncomingMessage, Platform, event_channel};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{AppState, Client, metrics};
use crate::pipeline::{Finish, TurnOptions, TurnOutcome};
use crate::text::{Message, Role};

/// An OpenAI-style error response.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
    param: Option<String>,
    code: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            message: message.into(),
            param: None,
            code: None,
        }
    }

    fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    /// 422 naming the parameter.
    fn invalid(param: &str, message: impl Into<String>) -> Self {
        let mut e = Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request_error",
            message,
        );
        e.param = Some(param.to_string());
        e.code = Some("invalid_value");
        e
    }

    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    fn body(&self) -> Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body())).into_response()
    }
}

#[derive(Deserialize)]
struct CompletionRequest {
    // `model` and other fields OpenAI clients send are accepted and
    // ignored: the served bundle answers.
    messages: Vec<RequestMessage>,
    #[serde(default)]
    temperature: Option<f32>,
    #[serde(default)]
    top_p: Option<f32>,
    #[serde(default)]
    max_tokens: Option<i64>,
    #[serde(default)]
    max_completion_tokens: Option<i64>,
    #[serde(default)]
    stop: Option<Stop>,
    #[serde(default)]
    seed: Option<u64>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    n: Option<i64>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct RequestMessage {
    role: String,
    #[serde(default)]
    content: Option<Content>,
}

/// A string, or (newer clients) a list of parts of which the text ones
/// count.
#[derive(Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Deserialize)]
struct Part {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

impl Content {
    fn text(&self) -> String {
        match self {
            Content::Text(t) => t.clone(),
            Content::Parts(p) => p
                .iter()
                .filter(|p| p.kind == "text")
                .filter_map(|p| p.text.as_deref())
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }
}

/// A request checked: the customer's turn, the history, the sampling.
struct Turn {
    text: String,
    history: Vec<Message>,
    options: TurnOptions,
    stream: bool,
    include_usage: bool,
    user: Option<String>,
}

const MAX_STOP: usize = 4;

fn check(r: CompletionRequest) -> Result<Turn, ApiError> {
    if r.messages.is_empty() {
        return Err(ApiError::invalid("messages", "messages must not be empty"));
    }
    if r.n.is_some_and(|n| n != 1) {
        return Err(ApiError::invalid("n", "only n = 1 is supported"));
    }
    if let Some(t) = r.temperature
        && !(0.0..=2.0).contains(&t)
    {
        return Err(ApiError::invalid(
            "temperature",
            format!("temperature {t} is not between 0 and 2"),
        ));
    }
    if let Some(p) = r.top_p
        && !(p > 0.0 && p <= 1.0)
    {
        return Err(ApiError::invalid(
            "top_p",
            format!("top_p {p} is not in (0, 1]"),
        ));
    }
    let (param, max) = match (r.max_completion_tokens, r.max_tokens) {
        (Some(m), _) => ("max_completion_tokens", Some(m)),
        (None, m) => ("max_tokens", m),
    };
    if let Some(m) = max
        && m < 1
    {
        return Err(ApiError::invalid(
            param,
            format!("{param} must be at least 1"),
        ));
    }
    let stop = match r.stop {
        None => Vec::new(),
        Some(Stop::One(s)) => vec![s],
        Some(Stop::Many(v)) => v,
    };
    if stop.len() > MAX_STOP || stop.iter().any(String::is_empty) {
        return Err(ApiError::invalid(
            "stop",
            format!("stop takes up to {MAX_STOP} non-empty strings"),
        ));
    }
    let mut messages = Vec::with_capacity(r.messages.len());
    for (i, m) in r.messages.iter().enumerate() {
        let role = match m.role.as_str() {
            "system" | "developer" => Role::System,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            other => {
                return Err(ApiError::invalid(
                    &format!("messages[{i}].role"),
                    format!("role {other:?} is not system, developer, user or assistant"),
                ));
            }
        };
        messages.push(Message {
            role,
            content: m.content.as_ref().map(Content::text).unwrap_or_default(),
        });
    }
    let last = messages.len() - 1;
    if messages[last].role != Role::User || messages[last].content.trim().is_empty() {
        return Err(ApiError::invalid(
            &format!("messages[{last}]"),
            "the last message must be the user's, with text",
        ));
    }
    let text = messages.pop().map(|m| m.content).unwrap_or_default();
    Ok(Turn {
        text,
        history: messages,
        options: TurnOptions {
            history: None,
            temperature: r.temperature,
            top_p: r.top_p,
            max_tokens: max.map(|m| m as usize),
            stop,
            seed: r.seed,
        },
        stream: r.stream,
        include_usage: r.stream_options.is_some_and(|o| o.include_usage),
        user: r.user,
    })
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn finish_reason(f: Finish) -> &'static str {
    match f {
        Finish::Stop => "stop",
        Finish::Length => "length",
        Finish::ContentFilter => "content_filter",
    }
}

fn usage(o: &TurnOutcome) -> Value {
    json!({
        "prompt_tokens": o.prompt_tokens,
        "completion_tokens": o.completion_tokens,
        "total_tokens": o.prompt_tokens + o.completion_tokens,
    })
}

/// A conversation is the client (key or address), its `user`, and its
/// first user message: a client that resends the conversation with a new
/// turn continues the same stored conversation.
fn conversation_key(client: &str, user: Option<&str>, history: &[Message], text: &str) -> String {
    let first = history
        .iter()
        .find(|m| m.role == Role::User)
        .map_or(text, |m| m.content.as_str());
    let mut h = Sha256::new();
    for part in [client, user.unwrap_or(""), first] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    hex::encode(&h.finalize()[..12])
}

pub async fn completions(
    State(s): State<AppState>,
    Extension(Client(client)): Extension<Client>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let result = completion(s, client, body, started).await;
    let status = match &result {
        Ok(r) => r.status(),
        Err(e) => e.status,
    };
    ::metrics::counter!(metrics::HTTP_REQUESTS, "route" => "/v1/chat/completions", "status" => status.as_u16().to_string())
        .increment(1);
    result.unwrap_or_else(IntoResponse::into_response)
}

async fn completion(
    s: AppState,
    client: String,
    body: Result<Bytes, BytesRejection>,
    started: Instant,
) -> Result<Response, ApiError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                format!("the request body is over {} bytes", s.max_body_bytes),
            )
        } else {
            ApiError::bad(format!("cannot read the request body: {e}"))
        }
    })?;
    let request: CompletionRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad(format!("the body is not a chat completion request: {e}")))?;
    let turn = check(request)?;
    let pool = s.pipeline.engine().current();
    let model = pool.model_version().to_string();
    drop(pool);
    let message = IncomingMessage {
        platform: Platform::Api,
        conversation_key: conversation_key(
            &client,
            turn.user.as_deref(),
            &turn.history,
            &turn.text,
        ),
        user_key: turn.user.clone().unwrap_or_else(|| client.clone()),
        text: turn.text.clone(),
        reply_to: None,
        is_direct: true,
    };
    let mut options = turn.options.clone();
    options.history = Some(turn.history.clone());
    let (sink, events) = event_channel();
    let pipeline = s.pipeline.clone();
    let task = tokio::spawn(async move { pipeline.complete(message, options, sink).await });
    let id = format!("chatcmpl-{}", crate::store::new_id());
    let created = now_secs();
    if turn.stream {
        return Ok(stream(
            s,
            id,
            created,
            model,
            turn.include_usage,
            events,
            task,
            started,
        ));
    }
    let collected = collect(events).await;
    let outcome = task.await.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            format!("the reply task failed: {e}"),
        )
    })?;
    record_timing(&outcome, started, collected.first_at);
    s.record_timing(started.elapsed(), outcome.model_time);
    if outcome.busy {
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            "the model is answering too many requests; retry shortly",
        )
        .into_response();
        e.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from(1),
        );
        return Ok(e);
    }
    let text = match collected.reply {
        Some(t) => t,
        None => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                collected
                    .error
                    .unwrap_or_else(|| "no reply was produced".into()),
            ));
        }
    };
    Ok(axum::Json(json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "logprobs": null,
            "finish_reason": finish_reason(outcome.finish),
        }],
        "usage": usage(&outcome),
    }))
    .into_response())
}

/// What a turn's events came to, without streaming.
struct Collected {
    reply: Option<String>,
    error: Option<String>,
    first_at: Option<Instant>,
}

async fn collect(mut events: chatforge_channel::EventStream) -> Collected {
    let mut c = Collected {
        reply: None,
        error: None,
        first_at: None,
    };
    while let Some(e) = events.next().await {
        match e {
            ChatEvent::ReplyChunk { .. } => {
                c.first_at.get_or_insert_with(Instant::now);
            }
            ChatEvent::Reply { text, .. } | ChatEvent::Handoff { notice: text } => {
                c.first_at.get_or_insert_with(Instant::now);
                c.reply = Some(text);
            }
            ChatEvent::Error { notice } => c.error = Some(notice),
            ChatEvent::Typing | ChatEvent::FeedbackRequest { .. } => {}
        }
    }
    c
}

fn record_timing(o: &TurnOutcome, started: Instant, first: Option<Instant>) {
    let e2e = started.elapsed().as_secs_f64();
    ::metrics::histogram!(metrics::E2E_LATENCY, "platform" => "api").record(e2e);
    if let Some(f) = first {
        let ttft = f.duration_since(started).as_secs_f64();
        ::metrics::histogram!(metrics::TIME_TO_FIRST_TOKEN, "platform" => "api").record(ttft);
        if o.completion_tokens > 1 {
            ::metrics::histogram!(metrics::TIME_PER_OUTPUT_TOKEN, "platform" => "api")
                .record((e2e - ttft).max(0.0) / (o.completion_tokens - 1) as f64);
        }
    }
    ::metrics::counter!(metrics::PROMPT_TOKENS, "platform" => "api")
        .increment(o.prompt_tokens as u64);
    ::metrics::counter!(metrics::GENERATION_TOKENS, "platform" => "api")
        .increment(o.completion_tokens as u64);
}

/// The server-sent events of a streamed completion, in the order strict
/// clients expect: the role chunk, content chunks (only text moderation
/// and the fact guard passed), the last content chunk with
/// `finish_reason`, the usage chunk when asked, `[DONE]`.
#[allow(clippy::too_many_arguments)]
fn stream(
    s: AppState,
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
    mut events: chatforge_channel::EventStream,
    task: tokio::task::JoinHandle<TurnOutcome>,
    started: Instant,
) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(64);
    // Every chunk carries the same id, creation time and model.
    let head = move |choices: Value, usage: Option<Value>| {
        let mut v = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": choices,
        });
        if let Some(u) = usage {
            v["usage"] = u;
        }
        Event::default().data(v.to_string())
    };
    let chunk = move |delta: Value, finish: Option<&str>| json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]);
    tokio::spawn(async move {
        // A client that went away ends the sending; the turn still finishes
        // and is stored.
        let send = |e: Event| {
            let tx = tx.clone();
            async move { tx.send(e).await.is_ok() }
        };
        if !send(head(
            chunk(json!({"role": "assistant", "content": ""}), None),
            None,
        ))
        .await
        {
            return;
        }
        let mut shown = String::new();
        let mut last: Option<String> = None;
        let mut error: Option<String> = None;
        let mut first_at = None;
        while let Some(e) = events.next().await {
            match e {
                ChatEvent::ReplyChunk { delta } => {
                    first_at.get_or_insert_with(Instant::now);
                    let delta = if shown.is_empty() {
                        delta.trim_start().to_string()
                    } else {
                        delta
                    };
                    if delta.is_empty() {
                        continue;
                    }
                    shown.push_str(&delta);
                    if !send(head(chunk(json!({"content": delta}), None), None)).await {
                        return;
                    }
                }
                ChatEvent::Reply { text, .. } | ChatEvent::Handoff { notice: text } => {
                    first_at.get_or_insert_with(Instant::now);
                    last = Some(match text.strip_prefix(shown.as_str()) {
                        Some(rest) => rest.to_string(),
                        // Streamed text was cut at a sentence the guard or
                        // moderation refused; what replaced it follows.
                        None => format!("\n\n{text}"),
                    });
                }
                ChatEvent::Error { notice } => error = Some(notice),
                ChatEvent::Typing | ChatEvent::FeedbackRequest { .. } => {}
            }
        }
        let outcome = task.await.unwrap_or_default();
        record_timing(&outcome, started, first_at);
        match (last, error) {
            (Some(rest), _) => {
                let delta = if rest.is_empty() {
                    json!({})
                } else {
                    json!({"content": rest})
                };
                let last = chunk(delta, Some(finish_reason(outcome.finish)));
                if !send(head(last, None)).await {
                    return;
                }
                if include_usage && !send(head(json!([]), Some(usage(&outcome)))).await {
                    return;
                }
            }
            (None, e) => {
                let err = ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "server_error",
                    e.unwrap_or_else(|| "no reply was produced".into()),
                );
                if !send(Event::default().data(err.body().to_string())).await {
                    return;
                }
            }
        }
        let _ = send(Event::default().data("[DONE]")).await;
        s.record_timing(started.elapsed(), outcome.model_time);
    });
    super::sse(rx)
}

pub async fn models(State(s): State<AppState>) -> Response {
    let pool = s.pipeline.engine().current();
    axum::Json(json!({
        "object": "list",
        "data": [{
            "id": pool.model_version(),
            "object": "model",
            "created": now_secs(),
            "owned_by": "chatforge",
        }],
    }))
    .into_response()
}
