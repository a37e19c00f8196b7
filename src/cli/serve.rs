//! `chatforge serve`: the configured adapters until Ctrl-C or SIGTERM.

use std::path::PathBuf;

use anyhow::{Context, Result};

use chatforge::bench::{HttpBench, PipelineBench, Via, bench_http, bench_pipeline};
use chatforge::config::Config;

#[derive(clap::Args)]
pub struct ServeArgs {
    /// chatforge.toml (see chatforge.example.toml): model, moderation,
    /// store, pipeline and the [telegram]/[discord] adapters.
    #[arg(long, env = "CHATFORGE_CONFIG")]
    config: PathBuf,
}

pub fn run(a: ServeArgs) -> Result<()> {
    let cfg = Config::load(Some(&a.config))?;
    let rt = crate::store_cmd::runtime()?;
    let report = rt
        .block_on(chatforge::serve::serve(
            cfg,
            Some(a.config.clone()),
            shutdown_signal(),
        ))
        .with_context(|| format!("serve --config {}", a.config.display()))?;
    eprintln!(
        "stopped; store: {} records written, {} waiting in the spill file",
        report.store.written, report.store.pending
    );
    Ok(())
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[derive(clap::Args)]
pub struct BenchPipelineArgs {
    /// Bundle with model.onnx (e.g. a tiny one from quickstart or the tests).
    #[arg(long)]
    bundle: PathBuf,
    /// Moderation model folder; without it moderation is off.
    #[arg(long)]
    moderation: Option<PathBuf>,
    /// Knowledge base (`kb build`): retrieval and the fact guard on, their
    /// share of the overhead reported (default: the config's `[kb]`).
    #[arg(long)]
    kb: Option<PathBuf>,
    /// Concurrent conversations.
    #[arg(long, default_value_t = 64)]
    conversations: usize,
    /// Messages each conversation sends, one after the other's reply.
    #[arg(long, default_value_t = 4)]
    messages: usize,
    /// max_new_tokens of every reply.
    #[arg(long, default_value_t = 16)]
    new_tokens: usize,
    /// chatforge.toml for the [runtime] settings.
    #[arg(long, env = "CHATFORGE_CONFIG")]
    config: Option<PathBuf>,
    /// Where messages enter: straight into the pipeline, or through the
    /// Telegram adapter and a local fake of the Bot API (needs a build
    /// with `--features fakes`).
    #[arg(long, value_enum, default_value = "direct")]
    via: Via,
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct BenchServeArgs {
    /// Bundle with model.onnx.
    #[arg(long)]
    bundle: PathBuf,
    /// Conversations sending at once.
    #[arg(long, default_value_t = 64)]
    conversations: usize,
    /// Replies each conversation asks for, one after the other.
    #[arg(long, default_value_t = 2)]
    replies: usize,
    /// Tokens of every reply.
    #[arg(long, default_value_t = 32)]
    new_tokens: usize,
    /// Generator threads of each scheduler.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Rows of the continuous batch at most.
    #[arg(long, default_value_t = chatforge::runtime::BatchLimits::default().max_batch)]
    max_batch: usize,
    /// Token positions the continuous batch may hold.
    #[arg(long, default_value_t = chatforge::runtime::BatchLimits::default().max_tokens)]
    max_batch_tokens: usize,
    /// Rounds of the load on each scheduler, taking turns (the figures
    /// cover all rounds).
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// chatforge.toml for the [runtime] settings.
    #[arg(long, env = "CHATFORGE_CONFIG")]
    config: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

pub fn bench_serve_cmd(a: BenchServeArgs) -> Result<()> {
    anyhow::ensure!(
        a.conversations > 0 && a.replies > 0 && a.new_tokens > 0 && a.workers > 0 && a.rounds > 0,
        "--conversations, --replies, --new-tokens, --workers and --rounds must be at least 1"
    );
    let config = Config::load(a.config.as_deref())?;
    let rt = crate::store_cmd::runtime()?;
    let r = rt.block_on(chatforge::bench::bench_serve(
        chatforge::bench::ServeBench {
            bundle: a.bundle,
            runtime: config.runtime,
            conversations: a.conversations,
            replies: a.replies,
            new_tokens: a.new_tokens,
            workers: a.workers,
            limits: chatforge::runtime::BatchLimits {
                max_batch: a.max_batch.max(1),
                max_tokens: a.max_batch_tokens,
            },
            rounds: a.rounds,
        },
    ))?;
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        for f in [&r.pool, &r.continuous] {
            println!(
                "{:<10} {} replies ({} failed) in {:.1} s: {:.1} tokens/s; first text p50 {:.0} ms, p99 {:.0} ms; reply p50 {:.0} ms, p99 {:.0} ms; {:.2} ms/token",
                f.scheduler,
                f.replies,
                f.failed,
                f.seconds,
                f.tokens_per_s,
                f.ttft_p50_ms,
                f.ttft_p99_ms,
                f.reply_p50_ms,
                f.reply_p99_ms,
                f.per_token_ms
            );
        }
        println!(
            "{} conversations, {} tokens per reply, {} worker(s): continuous/pool throughput {:.2}x",
            r.conversations, r.new_tokens, r.workers, r.throughput_ratio
        );
    }
    Ok(())
}

pub fn bench(a: BenchPipelineArgs) -> Result<()> {
    anyhow::ensure!(
        a.conversations > 0 && a.messages > 0,
        "--conversations and --messages must be at least 1"
    );
    let config = Config::load(a.config.as_deref())?;
    let rt = crate::store_cmd::runtime()?;
    let r = rt.block_on(bench_pipeline(PipelineBench {
        bundle: a.bundle,
        moderation: a.moderation,
        kb: a.kb,
        conversations: a.conversations,
        messages_per_conversation: a.messages,
        new_tokens: a.new_tokens,
        config,
        via: a.via,
    }))?;
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!(
            "{} messages from {} conversations in {:.1} s: {:.1} messages/s; end to end p50 {:.0} ms, p99 {:.0} ms; pipeline overhead p50 {:.2} ms, p99 {:.2} ms (retrieval + fact guard p50 {:.2} ms, p99 {:.2} ms); model p50 {:.0} ms (moderation {}, knowledge base {})",
            r.messages,
            r.conversations,
            r.seconds,
            r.messages_per_s,
            r.e2e_p50_ms,
            r.e2e_p99_ms,
            r.overhead_p50_ms,
            r.overhead_p99_ms,
            r.grounding_p50_ms,
            r.grounding_p99_ms,
            r.model_p50_ms,
            if r.moderation { "on" } else { "off" },
            if r.kb { "on" } else { "off" }
        );
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct BenchHttpArgs {
    /// Bundle with model.onnx.
    #[arg(long)]
    bundle: PathBuf,
    /// Moderation model folder; without it moderation is off.
    #[arg(long)]
    moderation: Option<PathBuf>,
    /// Knowledge base: retrieval and the fact guard on.
    #[arg(long)]
    kb: Option<PathBuf>,
    /// Streamed completions in flight at once.
    #[arg(long, default_value_t = 200)]
    concurrency: usize,
    /// Streamed completions in all.
    #[arg(long, default_value_t = 2000)]
    requests: usize,
    /// Streams opened at once and held until their replies end (0: skip).
    #[arg(long, default_value_t = 1000)]
    idle: usize,
    /// Non-streamed completions one after another, for the memory they
    /// leave (0: skip).
    #[arg(long, default_value_t = 20_000)]
    sequential: usize,
    /// max_tokens of every completion.
    #[arg(long, default_value_t = 8)]
    new_tokens: usize,
    /// chatforge.toml for the [runtime] settings.
    #[arg(long, env = "CHATFORGE_CONFIG")]
    config: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

pub fn bench_http_cmd(a: BenchHttpArgs) -> Result<()> {
    anyhow::ensure!(
        a.concurrency > 0 && a.requests > 0,
        "--concurrency and --requests must be at least 1"
    );
    let config = Config::load(a.config.as_deref())?;
    let rt = crate::store_cmd::runtime()?;
    let r = rt.block_on(bench_http(HttpBench {
        bundle: a.bundle,
        moderation: a.moderation,
        kb: a.kb,
        concurrency: a.concurrency,
        requests: a.requests,
        idle: a.idle,
        sequential: a.sequential,
        new_tokens: a.new_tokens,
        config,
    }))?;
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!(
            "{} streamed completions, {} at once, in {:.1} s ({:.1}/s, {} errors): end to end p50 {:.0} ms, p99 {:.0} ms; server overhead beside the model p50 {:.2} ms, p99 {:.2} ms; model p50 {:.0} ms",
            r.requests,
            r.concurrency,
            r.seconds,
            r.requests_per_s,
            r.errors,
            r.e2e_p50_ms,
            r.e2e_p99_ms,
            r.overhead_p50_ms,
            r.overhead_p99_ms,
            r.model_p50_ms
        );
        println!(
            "{} streams at once: all open in {:.2} s, {} errors; threads {} before, {} with them open",
            r.idle_streams, r.idle_open_s, r.idle_errors, r.threads_before, r.threads_with_idle
        );
        let samples: Vec<String> = r.rss_samples_mb.iter().map(|m| format!("{m:.0}")).collect();
        println!(
            "{} sequential completions ({} errors): RSS {:.1} → {:.1} MB ({:+.1} MB; along the way {})",
            r.sequential,
            r.sequential_errors,
            r.rss_before_mb,
            r.rss_after_mb,
            r.rss_growth_mb,
            samples.join(" ")
        );
    }
    Ok(())
}
