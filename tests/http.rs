//! `chatforge serve` with an `[http]` section, as its users call it: the
//! `async-openai` client (streamed and not), raw server-sent events in the
//! order strict clients expect, OpenAI error objects (401, 400, 413, 422,
//! 429), `/v1/models`, health, readiness and Prometheus metrics, and the
//! conversations stored under platform `api` after SIGTERM.
//!
//! Needs the ONNX Runtime library that `./scripts/setup.sh` fetches (or
//! `ORT_DYLIB_PATH`).

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::types::chat::{
    ChatCompletionRequestUserMessageArgs, ChatCompletionStreamOptions,
    CreateChatCompletionRequestArgs,
};
use futures::StreamExt;
use serde_json::{Value, json};

mod common;

const KEY: &str = "test-key-1";

/// A `chatforge serve` with only the HTTP server, on a free port.
struct Server {
    child: Child,
    base: String,
}

impl Server {
    async fn start(dir: &Path, extra: &str) -> Self {
        Self::start_with(dir, extra, "").await
    }

    /// [`Self::start`] with `model` lines added to `[model]`.
    async fn start_with(dir: &Path, extra: &str, model: &str) -> Self {
        let f = common::chat_fixture();
        let port = common::free_port();
        let config = common::write_serve_config(
            dir,
            &f.bundle,
            &format!(
                "[http]\nlisten = \"127.0.0.1:{port}\"\napi_keys = [\"{KEY}\", \"second-key\"]\nmax_body_bytes = 4096\n{extra}\n"
            ),
        );
        let text = std::fs::read_to_string(&config).unwrap();
        std::fs::write(
            &config,
            text.replacen("[model]\n", &format!("[model]\n{model}"), 1),
        )
        .unwrap();
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_chatforge"))
            .args(["serve", "--config", config.to_str().unwrap()])
            .env("RUST_LOG", "warn")
            .env("CHATFORGE_PROVIDERS", "cpu")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        common::wait_healthy(&base, &mut child).await;
        Self { child, base }
    }

    fn openai(&self, key: &str) -> Client<OpenAIConfig> {
        Client::with_config(
            OpenAIConfig::new()
                .with_api_base(format!("{}/v1", self.base))
                .with_api_key(key),
        )
    }

    /// The Prometheus text of `/metrics`.
    async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.base))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// SIGTERM, then the exit status (replies drained, the store flushed).
    fn stop(&mut self) -> bool {
        let pid = self.child.id() as i32;
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        self.child.wait().unwrap().success()
    }
}

impl Drop for Server {
    /// A failed test leaves no server behind.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn post(base: &str, key: Option<&str>, body: &str) -> (u16, String) {
    let mut r = reqwest::Client::new()
        .post(format!("{base}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(k) = key {
        r = r.bearer_auth(k);
    }
    let r = r.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// The JSON of every `data:` event, and whether `[DONE]` ended them.
fn sse_events(body: &str) -> (Vec<Value>, bool) {
    let data: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    let done = data.last() == Some(&"[DONE]");
    let events = data
        .iter()
        .filter(|d| **d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    (events, done)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_openai_client_streamed_and_not_and_stored_as_api() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), "").await;
    let client = server.openai(KEY);
    let ask = |text: &str, stream: bool| {
        let mut r = CreateChatCompletionRequestArgs::default();
        r.model("anything")
            .max_completion_tokens(8u32)
            .temperature(0.0)
            .user("customer-42")
            .messages([ChatCompletionRequestUserMessageArgs::default()
                .content(text)
                .build()
                .unwrap()
                .into()]);
        if stream {
            r.stream(true).stream_options(ChatCompletionStreamOptions {
                include_usage: Some(true),
                include_obfuscation: None,
            });
        }
        r.build().unwrap()
    };

    let r = client
        .chat()
        .create(ask(&common::chat_fixture().ask_ok, false))
        .await
        .unwrap();
    assert_eq!(r.object, "chat.completion");
    let text = r.choices[0].message.content.clone().unwrap();
    assert!(!text.trim().is_empty());
    assert!(r.choices[0].finish_reason.is_some());
    let usage = r.usage.unwrap();
    assert!(usage.prompt_tokens > 0 && usage.completion_tokens <= 8);
    assert_eq!(
        usage.total_tokens,
        usage.prompt_tokens + usage.completion_tokens
    );

    let mut stream = client
        .chat()
        .create_stream(ask("do you ship to Canada?", true))
        .await
        .unwrap();
    let mut chunks = Vec::new();
    while let Some(c) = stream.next().await {
        chunks.push(c.unwrap());
    }
    assert!(chunks.len() >= 3, "{chunks:?}");
    assert!(
        chunks
            .iter()
            .all(|c| c.id == chunks[0].id && c.created == chunks[0].created)
    );
    let with_finish: Vec<usize> = chunks
        .iter()
        .enumerate()
        .filter(|(_, c)| c.choices.iter().any(|ch| ch.finish_reason.is_some()))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(with_finish, vec![chunks.len() - 2], "{chunks:?}");
    let last = chunks.last().unwrap();
    assert!(last.choices.is_empty() && last.usage.is_some(), "{last:?}");
    let streamed: String = chunks
        .iter()
        .flat_map(|c| &c.choices)
        .filter_map(|ch| ch.delta.content.clone())
        .collect();
    assert!(!streamed.trim().is_empty());

    // A wrong key is refused as OpenAI refuses it.
    let err = server
        .openai("wrong")
        .chat()
        .create(ask("hello", false))
        .await
        .unwrap_err();
    assert!(format!("{err}").contains("incorrect API key"), "{err}");

    assert!(server.stop());
    let stored = common::stored_conversations(dir.path()).await;
    assert_eq!(stored.len(), 2, "one conversation per first message");
    for c in &stored {
        assert_eq!(c.record.platform, "api");
        // The `user` is kept only as a keyed hash.
        assert!(!format!("{:?}", c.record.user_key).contains("customer-42"));
        assert_eq!(c.messages.len(), 2);
    }
}

/// One worker and room for one waiting reply: requests sent at once past
/// that are refused with 429, Retry-After and an OpenAI error at once, and
/// counted; the others are answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_a_full_model_queue_answers_429() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        dir.path(),
        "rate_limit = { burst = 1000, per_seconds = 1 }",
        "workers = 1\nscheduler = \"pool\"\nqueue = 1\n",
    )
    .await;
    let f = common::chat_fixture();
    let http = reqwest::Client::new();
    let ask = |i: usize| {
        let body = json!({
            "model": "x", "max_tokens": 64, "user": format!("customer-{i}"),
            "messages": [{"role": "user", "content": f.ask_ok}],
        });
        http.post(format!("{}/v1/chat/completions", server.base))
            .bearer_auth(KEY)
            .json(&body)
            .send()
    };
    // Bursts of 40 at once until one is refused (the first burst, unless
    // the model answers faster than requests arrive).
    let mut refused = None;
    let mut answered = 0;
    for burst in 0..10 {
        let replies = futures::future::join_all((0..40).map(|i| ask(burst * 40 + i))).await;
        for r in replies {
            let r = r.unwrap();
            match r.status().as_u16() {
                200 => answered += 1,
                429 => {
                    let retry = r.headers().get("retry-after").cloned();
                    refused = Some((retry, r.json::<Value>().await.unwrap()));
                }
                other => panic!("status {other}: {}", r.text().await.unwrap()),
            }
        }
        if refused.is_some() {
            break;
        }
    }
    let (retry, error) = refused.expect("400 requests never filled a queue of one");
    assert!(answered >= 1, "none was answered");
    assert_eq!(retry.unwrap(), "1");
    assert_eq!(error["error"]["type"], "rate_limit_error", "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("too many requests"),
        "{error}"
    );
    let metrics = server.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("chatforge_replies_total{") && l.contains("outcome=\"busy\"")),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_sse_order_errors_metrics_and_health() {
    let dir = tempfile::tempdir().unwrap();
    let mut server =
        Server::start(dir.path(), "rate_limit = { burst = 40, per_seconds = 600 }").await;
    let base = server.base.clone();
    let http = reqwest::Client::new();

    // Raw events: role chunk first, one id, finish on the last content
    // chunk, the usage chunk, then [DONE].
    let f = common::chat_fixture();
    let body = json!({
        "model": "x", "stream": true, "stream_options": {"include_usage": true},
        "max_tokens": 6, "temperature": 0,
        "messages": [{"role": "user", "content": f.ask_ok}],
    });
    let (status, text) = post(&base, Some(KEY), &body.to_string()).await;
    assert_eq!(status, 200, "{text}");
    let (events, done) = sse_events(&text);
    assert!(done, "{text}");
    assert_eq!(
        events[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );
    assert!(events.iter().all(|e| e["id"] == events[0]["id"]));
    let n = events.len();
    assert_eq!(events[n - 1]["choices"], json!([]), "{text}");
    assert!(
        events[n - 1]["usage"]["completion_tokens"]
            .as_u64()
            .unwrap()
            <= 6
    );
    let finish = &events[n - 2]["choices"][0]["finish_reason"];
    assert!(finish == "stop" || finish == "length", "{text}");
    assert!(
        events[..n - 2]
            .iter()
            .all(|e| e["choices"][0]["finish_reason"].is_null())
    );

    // The client's conversation (its system message gives way to the
    // operator's persona).
    let body = json!({
        "messages": [
            {"role": "system", "content": "ignored: the operator's persona stays"},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "Hello! How can I help?"},
            {"role": "user", "content": [{"type": "text", "text": "where is my order?"}]},
        ],
    });
    let (status, text) = post(&base, Some(KEY), &body.to_string()).await;
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["object"], "chat.completion", "{text}");
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 10, "{text}");

    // A message moderation refuses: content_filter.
    let blocked =
        json!({"messages": [{"role": "user", "content": format!("you {} idiot", f.blocked_word)}]});
    let (status, text) = post(&base, Some(KEY), &blocked.to_string()).await;
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], "content_filter", "{text}");

    // Errors are OpenAI error objects naming what is wrong.
    let ok_body = json!({"messages": [{"role": "user", "content": "hi"}]}).to_string();
    let (status, text) = post(&base, None, &ok_body).await;
    assert_eq!(status, 401, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["error"]["code"], "invalid_api_key");
    let (status, text) = post(&base, Some(KEY), "{not json").await;
    assert_eq!(status, 400, "{text}");
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap()["error"]["type"],
        "invalid_request_error"
    );
    for (body, param) in [
        (
            json!({"messages": [{"role": "user", "content": "hi"}], "temperature": 3}),
            "temperature",
        ),
        (
            json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}),
            "max_tokens",
        ),
        (json!({"messages": []}), "messages"),
        (
            json!({"messages": [{"role": "robot", "content": "hi"}]}),
            "messages[0].role",
        ),
        (
            json!({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}),
            "messages[1]",
        ),
    ] {
        let (status, text) = post(&base, Some(KEY), &body.to_string()).await;
        assert_eq!(status, 422, "{body}: {text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["error"]["param"], param, "{text}");
    }
    let huge = json!({"messages": [{"role": "user", "content": "a".repeat(10_000)}]});
    let (status, text) = post(&base, Some(KEY), &huge.to_string()).await;
    assert_eq!(status, 413, "{text}");
    assert!(
        serde_json::from_str::<Value>(&text).unwrap()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("4096")
    );

    let models: Value = http
        .get(format!("{base}/v1/models"))
        .bearer_auth("second-key")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["object"], "list");
    assert!(
        models["data"][0]["id"]
            .as_str()
            .unwrap()
            .starts_with("pretrain-")
    );
    let ready = http.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);

    let metrics = server.metrics().await;
    for name in [
        "chatforge_e2e_request_latency_seconds_bucket",
        "chatforge_time_to_first_token_seconds_bucket",
        "chatforge_prompt_tokens_total",
        "chatforge_generation_tokens_total",
        "chatforge_num_requests_running",
        "chatforge_num_requests_waiting",
        "chatforge_store_queue_depth",
    ] {
        assert!(metrics.contains(name), "{name} missing:\n{metrics}");
    }
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("chatforge_replies_total")
                && l.contains("platform=\"api\"")
                && l.contains("outcome=\"sent\"")),
        "{metrics}"
    );

    // Over the per-key limit: 429 with Retry-After; the other key is not
    // affected.
    let mut limited = None;
    for _ in 0..60 {
        let r = http
            .get(format!("{base}/v1/models"))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap();
        if r.status() == 429 {
            limited = Some(r);
            break;
        }
    }
    let limited = limited.expect("no 429 within 60 requests over a burst of 40");
    assert!(limited.headers().contains_key("retry-after"));
    let other = http
        .get(format!("{base}/v1/models"))
        .bearer_auth("second-key")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 200);
    assert!(server.stop());
}

#[test]
fn test_listening_beyond_loopback_needs_keys() {
    let dir = tempfile::tempdir().unwrap();
    let f = common::chat_fixture();
    let config =
        common::write_serve_config(dir.path(), &f.bundle, "[http]\nlisten = \"0.0.0.0:0\"\n");
    let (ok, _, err) = common::cli(&["serve", "--config", config.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        err.contains("http.api_keys") && err.contains("beyond this machine"),
        "{err}"
    );
    // The operator console beyond loopback only behind declared TLS.
    let console = "[http]\nlisten = \"0.0.0.0:0\"\napi_keys = [\"k\"]\n[console]\n";
    let config = common::write_serve_config(dir.path(), &f.bundle, console);
    let (ok, _, err) = common::cli(&["serve", "--config", config.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        err.contains("console.tls_terminated") && err.contains("in the clear"),
        "{err}"
    );
    // And only with the HTTP server that serves it.
    let config = common::write_serve_config(dir.path(), &f.bundle, "[console]\n");
    let (ok, _, err) = common::cli(&["serve", "--config", config.to_str().unwrap()]);
    assert!(!ok && err.contains("[http]"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_web_chat_in_chromium_streams_rates_escapes_and_survives_reload() {
    use fantoccini::Locator;

    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), "").await;
    let driver = common::browser::Driver::start().await;
    let c = driver.browser(420, 860).await;
    let wait = Duration::from_secs(30);
    c.goto(&format!("{}/", server.base)).await.unwrap();
    c.wait()
        .at_most(wait)
        .for_element(Locator::Css("body[data-loaded=true]"))
        .await
        .unwrap();

    let question = &common::chat_fixture().ask_ok;
    let input = c.find(Locator::Css("#text")).await.unwrap();
    input.send_keys(question).await.unwrap();
    c.find(Locator::Css("#send"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let reply = c
        .wait()
        .at_most(wait)
        .for_element(Locator::Css(".msg.assistant.done p"))
        .await
        .unwrap();
    let reply_text = reply.text().await.unwrap();
    assert!(!reply_text.trim().is_empty() && reply_text != "…");
    c.wait()
        .at_most(wait)
        .for_element(Locator::Css(".rate-good"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait()
        .at_most(wait)
        .for_element(Locator::Css(".rate.rated"))
        .await
        .unwrap();

    // Markup typed by a user is shown as text, never run or rendered.
    let payloads = [
        "<img src=x onerror=\"document.body.dataset.pwned=1\">",
        "<script>document.body.dataset.pwned=1</script>",
    ];
    for p in payloads {
        input.send_keys(p).await.unwrap();
        input.send_keys("\n").await.unwrap();
    }
    c.wait()
        .at_most(wait)
        .for_element(Locator::Css(".msg.assistant.done:nth-of-type(6)"))
        .await
        .unwrap();
    let check_escaped = |c: fantoccini::Client| async move {
        let users = c.find_all(Locator::Css(".msg.user p")).await.unwrap();
        let mut texts = Vec::new();
        for u in &users {
            texts.push(u.text().await.unwrap());
        }
        assert!(
            c.find_all(Locator::Css("#log img, #log script"))
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            c.find_all(Locator::Css("body[data-pwned]"))
                .await
                .unwrap()
                .is_empty()
        );
        texts
    };
    let texts = check_escaped(c.clone()).await;
    assert_eq!(texts, [question.as_str(), payloads[0], payloads[1]]);

    let shot = c.screenshot().await.unwrap();
    assert!(shot.starts_with(b"\x89PNG"));
    let artifact = Path::new(env!("CARGO_TARGET_TMPDIR")).join("web-chat.png");
    std::fs::write(&artifact, &shot).unwrap();
    println!("screenshot: {}", artifact.display());

    // A reload continues the same conversation.
    c.refresh().await.unwrap();
    c.wait()
        .at_most(wait)
        .for_element(Locator::Css("body[data-loaded=true]"))
        .await
        .unwrap();
    let texts = check_escaped(c.clone()).await;
    assert_eq!(texts, [question.as_str(), payloads[0], payloads[1]]);
    c.close().await.unwrap();

    assert!(server.stop());
    let stored = common::stored_conversations(dir.path()).await;
    assert_eq!(stored.len(), 1, "one browser, one conversation");
    assert_eq!(stored[0].record.platform, "web");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("chat.db").display());
    let db = chatforge::store::connect(&url, &chatforge::store::StoreOptions::default())
        .await
        .unwrap();
    let rated = db.feedback(&stored[0].record.id).await.unwrap();
    assert_eq!(rated.len(), 1, "the 👍 is stored");
}

#[test]
fn test_bench_http_runs_the_serving_path_without_errors() {
    let f = common::chat_fixture();
    let (ok, out, err) = common::cli(&[
        "bench",
        "http",
        "--bundle",
        f.bundle.to_str().unwrap(),
        "--concurrency",
        "8",
        "--requests",
        "24",
        "--idle",
        "50",
        "--sequential",
        "30",
        "--new-tokens",
        "4",
        "--json",
    ]);
    assert!(ok, "{err}");
    let r: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(r["errors"], 0, "{r}");
    assert_eq!(r["idle_errors"], 0, "{r}");
    assert_eq!(r["sequential_errors"], 0, "{r}");
    let (e2e, overhead) = (
        r["e2e_p50_ms"].as_f64().unwrap(),
        r["overhead_p50_ms"].as_f64().unwrap(),
    );
    assert!(overhead > 0.0 && overhead < e2e, "{r}");
    // Fifty open streams do not take fifty threads.
    let (before, open) = (
        r["threads_before"].as_u64().unwrap(),
        r["threads_with_idle"].as_u64().unwrap(),
    );
    assert!(before > 0 && open < before + 50, "{r}");
}
