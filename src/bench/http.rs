//! `chatforge bench http`: the HTTP server's cost under load, through the
//! whole serving path (the pipeline, moderation, the store, the model):
//! streamed completions from many clients at once (the server's and
//! pipeline's time beside the model's), many streams held open at once
//! (errors, threads), and the memory a long run of requests leaves behind.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use serde_json::json;

use super::percentile;
use super::pipeline::QUESTIONS;
use crate::config::Config;
use crate::http::{HttpServer, HttpSettings};
use crate::serve::{ServeError, start_services};

/// What to run.
#[derive(Debug, Clone)]
pub struct HttpBench {
    pub bundle: PathBuf,
    pub moderation: Option<PathBuf>,
    pub kb: Option<PathBuf>,
    /// Streamed completions in flight at once.
    pub concurrency: usize,
    /// Streamed completions in all.
    pub requests: usize,
    /// Streams opened at once and held until their replies end (0: skip).
    pub idle: usize,
    /// Non-streamed completions one after another, for memory (0: skip).
    pub sequential: usize,
    pub new_tokens: usize,
    pub config: Config,
}

#[derive(Debug, Serialize)]
pub struct HttpFigures {
    pub bench: &'static str,
    pub model_version: String,
    pub moderation: bool,
    pub kb: bool,
    pub concurrency: usize,
    pub requests: usize,
    pub errors: usize,
    pub seconds: f64,
    pub requests_per_s: f64,
    /// As the client sees a streamed completion: sent to `[DONE]`.
    pub e2e_p50_ms: f64,
    pub e2e_p99_ms: f64,
    /// The server's whole time per completion less the model's: HTTP,
    /// the pipeline (moderation, retrieval, guard, store) and streaming.
    pub overhead_p50_ms: f64,
    pub overhead_p99_ms: f64,
    pub model_p50_ms: f64,
    pub idle_streams: usize,
    /// Streams that did not end with `[DONE]` after a 200.
    pub idle_errors: usize,
    /// Seconds until every idle stream had its first event.
    pub idle_open_s: f64,
    /// The process's threads before and with every idle stream open.
    pub threads_before: usize,
    pub threads_with_idle: usize,
    pub sequential: usize,
    pub sequential_errors: usize,
    pub rss_before_mb: f64,
    pub rss_after_mb: f64,
    pub rss_growth_mb: f64,
    /// RSS before the sequential completions and after each twentieth of
    /// them: a leak climbs steadily, a one-off allocation steps once.
    pub rss_samples_mb: Vec<f64>,
}

/// How many times the sequential phase samples RSS.
const RSS_SAMPLES: usize = 20;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A field of /proc/self/status (Linux), e.g. `Threads` or `VmRSS` (kB).
fn proc_status(field: &str) -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field)?.strip_prefix(':').map(str::to_string))
        })
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// Posts a completion; its status and whole body.
async fn complete(client: &HttpClient, addr: SocketAddr, body: &serde_json::Value) -> (u16, Bytes) {
    let request = axum::http::Request::post(format!("http://{addr}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())));
    let Ok(request) = request else {
        return (0, Bytes::new());
    };
    match client.request(request).await {
        Ok(r) => {
            let status = r.status().as_u16();
            let body = r
                .into_body()
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            (status, body)
        }
        Err(_) => (0, Bytes::new()),
    }
}

fn streamed_ok(status: u16, body: &[u8]) -> bool {
    status == 200 && body.ends_with(b"data: [DONE]\n\n")
}

pub async fn bench_http(b: HttpBench) -> Result<HttpFigures, ServeError> {
    let io = |e: std::io::Error| ServeError::Other(format!("bench http: {e}"));
    let dir = tempfile::tempdir().map_err(io)?;
    let mut cfg = super::scratch_config(&b.config, dir.path());
    super::serving_under_test(
        &mut cfg,
        &b.bundle,
        b.moderation.as_deref(),
        b.kb.as_deref(),
        b.new_tokens,
    );
    let mut section: crate::config::HttpSection =
        toml::from_str("listen = \"127.0.0.1:0\"").map_err(|e| ServeError::Other(e.to_string()))?;
    // The bench is one client; the limit is not what is measured.
    section.rate_limit.burst = u32::MAX / 2;
    let settings = HttpSettings::resolve(&section)?;
    let services = start_services(&cfg).await?;
    let model_version = services
        .pipeline
        .engine()
        .current()
        .model_version()
        .to_string();
    let server = HttpServer::bind(
        &settings,
        Arc::clone(&services.pipeline),
        services.writer.handle(),
        None,
    )
    .await?;
    let addr = server.local_addr().map_err(io)?;
    let probe = server.probe();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run_until(async {
        let _ = stop_rx.await;
    }));
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(b.concurrency.max(b.idle))
        .build_http();
    // Question `i` from user `user`. Each client is one user, as a person
    // asks again only once answered: two requests of one user in flight
    // would wait for each other, and that wait is not the server's.
    let ask = |i: usize, user: usize, stream: bool| {
        json!({
            "messages": [{"role": "user", "content": QUESTIONS[i % QUESTIONS.len()]}],
            "stream": stream,
            "max_tokens": b.new_tokens,
            "user": format!("bench-{user}"),
        })
    };
    // Warm up: the first turns pay for ONNX Runtime's first runs.
    for i in 0..4 {
        complete(&client, addr, &ask(i, i, true)).await;
    }
    probe.take_timings();

    // 1. streamed completions, `concurrency` in flight
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..b.concurrency.max(1))
        .map(|slot| {
            let (client, next) = (client.clone(), Arc::clone(&next));
            let asks: Vec<serde_json::Value> =
                (0..b.requests).map(|i| ask(i, slot, true)).collect();
            tokio::spawn(async move {
                let mut e2e = Vec::new();
                let mut errors = 0;
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(body) = asks.get(i) else { break };
                    let at = Instant::now();
                    let (status, got) = complete(&client, addr, body).await;
                    if streamed_ok(status, &got) {
                        e2e.push(ms(at.elapsed()));
                    } else {
                        errors += 1;
                    }
                }
                (e2e, errors)
            })
        })
        .collect();
    let mut e2e = Vec::new();
    let mut errors = 0;
    for w in workers {
        let (e, n) = w
            .await
            .map_err(|e| ServeError::Other(format!("bench http: {e}")))?;
        e2e.extend(e);
        errors += n;
    }
    let seconds = start.elapsed().as_secs_f64();
    let timings = probe.take_timings();
    let sorted = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v
    };
    let e2e = sorted(e2e);
    let overhead = sorted(
        timings
            .iter()
            .map(|(total, model)| ms(total.saturating_sub(*model)))
            .collect(),
    );
    let model = sorted(timings.iter().map(|(_, m)| ms(*m)).collect());

    // 2. `idle` streams at once: each gets its first event at once and
    // then waits for the model.
    let threads_before = proc_status("Threads");
    let mut threads_with_idle = threads_before;
    let mut idle_errors = 0;
    let mut idle_open_s = 0.0;
    if b.idle > 0 {
        let opened = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let at = Instant::now();
        let streams: Vec<_> = (0..b.idle)
            .map(|i| {
                let (client, opened, body) = (client.clone(), Arc::clone(&opened), ask(i, i, true));
                tokio::spawn(async move {
                    let request =
                        axum::http::Request::post(format!("http://{addr}/v1/chat/completions"))
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from(body.to_string())));
                    let Ok(request) = request else { return false };
                    let Ok(r) = client.request(request).await else {
                        return false;
                    };
                    if r.status() != 200 {
                        return false;
                    }
                    let mut body = r.into_body();
                    let mut all = Vec::new();
                    let mut first = true;
                    while let Some(Ok(frame)) = body.frame().await {
                        if let Some(data) = frame.data_ref() {
                            all.extend_from_slice(data);
                            if first {
                                first = false;
                                opened.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                        }
                    }
                    streamed_ok(200, &all)
                })
            })
            .collect();
        while opened.load(std::sync::atomic::Ordering::Relaxed) < b.idle
            && at.elapsed() < Duration::from_secs(120)
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        idle_open_s = at.elapsed().as_secs_f64();
        threads_with_idle = proc_status("Threads");
        for s in streams {
            if !s.await.unwrap_or(false) {
                idle_errors += 1;
            }
        }
    }

    // 3. sequential non-streamed completions: what memory they leave.
    let rss_mb = || proc_status("VmRSS") as f64 / 1024.0;
    let rss_before = rss_mb();
    let every = (b.sequential / RSS_SAMPLES).max(1);
    let mut rss_samples = vec![rss_before];
    let mut sequential_errors = 0;
    for i in 0..b.sequential {
        let (status, _) = complete(&client, addr, &ask(i, i % 200, false)).await;
        sequential_errors += usize::from(status != 200);
        if (i + 1) % every == 0 {
            rss_samples.push(rss_mb());
        }
    }
    let rss_after = rss_mb();

    let _ = stop_tx.send(());
    let _ = running.await;
    services.writer.shutdown().await?;
    Ok(HttpFigures {
        bench: "http",
        model_version,
        moderation: b.moderation.is_some(),
        kb: b.kb.is_some(),
        concurrency: b.concurrency,
        requests: b.requests,
        errors,
        seconds,
        requests_per_s: e2e.len() as f64 / seconds,
        e2e_p50_ms: percentile(&e2e, 0.5),
        e2e_p99_ms: percentile(&e2e, 0.99),
        overhead_p50_ms: percentile(&overhead, 0.5),
        overhead_p99_ms: percentile(&overhead, 0.99),
        model_p50_ms: percentile(&model, 0.5),
        idle_streams: b.idle,
        idle_errors,
        idle_open_s,
        threads_before,
        threads_with_idle,
        sequential: b.sequential,
        sequential_errors,
        rss_before_mb: rss_before,
        rss_after_mb: rss_after,
        rss_growth_mb: rss_after - rss_before,
        rss_samples_mb: rss_samples,
    })
}
