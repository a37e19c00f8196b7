//! Prometheus metrics: vLLM's names where they mean the same (with a
//! `chatforge_` prefix), and the bot's own beside them. The pipeline
//! records through the `metrics` facade, which costs nothing until the
//! HTTP server installs the recorder.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Replies being generated, and queued for a generator (every platform).
pub const REQUESTS_RUNNING: &str = "chatforge_num_requests_running";
pub const REQUESTS_WAITING: &str = "chatforge_num_requests_waiting";
pub const TIME_TO_FIRST_TOKEN: &str = "chatforge_time_to_first_token_seconds";
pub const TIME_PER_OUTPUT_TOKEN: &str = "chatforge_time_per_output_token_seconds";
pub const E2E_LATENCY: &str = "chatforge_e2e_request_latency_seconds";
pub const PROMPT_TOKENS: &str = "chatforge_prompt_tokens_total";
pub const GENERATION_TOKENS: &str = "chatforge_generation_tokens_total";
pub const HTTP_REQUESTS: &str = "chatforge_http_requests_total";
/// Replies by outcome: sent, moderated, guard_replaced, abstained,
/// timed_out, busy (the model queue was full), failed.
pub const REPLIES: &str = "chatforge_replies_total";
pub const HANDOFFS: &str = "chatforge_handoffs_total";
/// Further drafts written because the fact guard refused the last one
/// (`[pipeline] drafts`), by platform and model version.
pub const REDRAFTS: &str = "chatforge_redrafts_total";
pub const FEEDBACK: &str = "chatforge_feedback_total";
pub const STORE_QUEUE: &str = "chatforge_store_queue_depth";
pub const STORE_SPILLED: &str = "chatforge_store_spilled_records";
/// Operators' actions in the console, by `action` (claimed, replied,
/// resolved, reply_approved, reply_rejected, reply_corrected).
pub const CONSOLE_ACTIONS: &str = "chatforge_console_actions_total";
/// Reviews of bot replies, by `decision` (approved, rejected, corrected).
pub const REVIEWS: &str = "chatforge_reviews_total";
/// Successful reloads, by `what`: `model` or `knowledge_base`.
pub const RELOADS: &str = "chatforge_reloads_total";
/// Telegram webhook posts, by `outcome`: kept, resent, ignored,
/// malformed, unauthorized, unavailable (answered 503: Telegram resends).
pub const TELEGRAM_UPDATES: &str = "chatforge_telegram_updates_total";

/// Buckets of the latency histograms (seconds): vLLM's for time to first
/// token, which also cover a whole reply on a CPU.
const LATENCY_BUCKETS: [f64; 17] = [
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's Prometheus recorder, installed on first use. A process
/// that already has another recorder gets a detached one (empty output)
/// rather than an error.
pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let builder = || {
            PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS)
                .unwrap_or_else(|_| PrometheusBuilder::new())
        };
        match builder().install_recorder() {
            Ok(h) => {
                spawn_upkeep(h.clone());
                h
            }
            Err(e) => {
                tracing::warn!(error = %e, "a metrics recorder is already installed; /metrics stays empty");
                builder().build_recorder().handle()
            }
        }
    })
}

/// How often histogram samples are folded into their buckets.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// The recorder keeps every histogram sample until upkeep folds it into
/// the buckets (rendering `/metrics` does too): a server nobody scrapes
/// would hold a sample of every request for ever. `install_recorder`
/// leaves upkeep to the caller; it runs on its own thread, as the
/// recorder may outlive any one runtime.
fn spawn_upkeep(handle: PrometheusHandle) {
    let spawned = std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_EVERY);
                handle.run_upkeep();
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the metrics upkeep thread; histograms grow until /metrics is read");
    }
}

/// Counts a reply of `platform` by `outcome`.
pub fn reply(platform: &'static str, outcome: &'static str, model_version: &str) {
    metrics::counter!(REPLIES, "platform" => platform, "outcome" => outcome, "model_version" => model_version.to_string())
        .increment(1);
}

/// Counts the further drafts of a reply of `platform`.
pub fn redrafts(platform: &'static str, model_version: &str, n: usize) {
    if n > 0 {
        metrics::counter!(REDRAFTS, "platform" => platform, "model_version" => model_version.to_string())
            .increment(n as u64);
    }
}
