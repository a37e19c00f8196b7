//! `chatforge bench serve`: many conversations at once against the model
//! engine, with the continuous scheduler and with the one-reply-at-a-time
//! worker pool, side by side in one run: generated tokens/s, time to the
//! first text, and per-reply latency. The two take turns, round after
//! round, so that a machine whose speed drifts (a shared VM's neighbours,
//! clock boost) weighs on both alike.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::percentile;
use crate::pipeline::{DEFAULT_QUEUE, Engine, EngineError, Scheduler};
use crate::runtime::{BatchLimits, RuntimeConfig};
use crate::text::{Dialog, Message, Role};

pub struct ServeBench {
    pub bundle: PathBuf,
    pub runtime: RuntimeConfig,
    /// Conversations sending at once.
    pub conversations: usize,
    /// Replies each conversation asks for, one after the other.
    pub replies: usize,
    /// Tokens of every reply (stop tokens are off, so each reply has them).
    pub new_tokens: usize,
    pub workers: usize,
    pub limits: BatchLimits,
    /// Rounds of pool then continuous; each scheduler's figures cover all
    /// of its rounds.
    pub rounds: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct SchedulerFigures {
    pub scheduler: &'static str,
    pub replies: usize,
    pub failed: usize,
    pub seconds: f64,
    pub tokens: usize,
    pub tokens_per_s: f64,
    pub ttft_p50_ms: f64,
    pub ttft_p99_ms: f64,
    pub reply_p50_ms: f64,
    pub reply_p99_ms: f64,
    /// Mean time per generated token of a reply, after its first text.
    pub per_token_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServeFigures {
    pub conversations: usize,
    pub new_tokens: usize,
    pub workers: usize,
    pub max_batch: usize,
    pub rounds: usize,
    pub pool: SchedulerFigures,
    pub continuous: SchedulerFigures,
    /// Continuous tokens/s over the pool's.
    pub throughput_ratio: f64,
}

/// A question of conversation `c`, turn `t`: prompts of different lengths,
/// as real traffic has.
fn dialog(c: usize, t: usize) -> Dialog {
    let words = ["order", "refund", "shipping", "size", "return", "invoice"];
    let mut q = format!("Hello, question {t} from customer {c}: about my");
    for i in 0..(c % 5) * 3 {
        q.push(' ');
        q.push_str(words[(c + i) % words.len()]);
    }
    q.push('?');
    Dialog {
        messages: vec![Message {
            role: Role::User,
            content: q,
        }],
        ..Default::default()
    }
}

/// What one scheduler's rounds measured, before the percentiles.
#[derive(Default)]
struct Samples {
    ttft: Vec<f64>,
    total: Vec<f64>,
    per_token: Vec<f64>,
    tokens: usize,
    failed: usize,
    seconds: f64,
}

impl Samples {
    fn figures(mut self, scheduler: &'static str) -> SchedulerFigures {
        self.ttft.sort_by(f64::total_cmp);
        self.total.sort_by(f64::total_cmp);
        SchedulerFigures {
            scheduler,
            replies: self.total.len(),
            failed: self.failed,
            seconds: self.seconds,
            tokens: self.tokens,
            tokens_per_s: self.tokens as f64 / self.seconds.max(1e-9),
            ttft_p50_ms: percentile(&self.ttft, 0.5),
            ttft_p99_ms: percentile(&self.ttft, 0.99),
            reply_p50_ms: percentile(&self.total, 0.5),
            reply_p99_ms: percentile(&self.total, 0.99),
            per_token_ms: self.per_token.iter().sum::<f64>() / self.per_token.len().max(1) as f64,
        }
    }
}

/// One round of the load on `scheduler`, added to `into`.
async fn run(b: &ServeBench, scheduler: Scheduler, into: &mut Samples) -> Result<(), EngineError> {
    let (dir, runtime, workers) = (b.bundle.clone(), b.runtime.clone(), b.workers);
    // Room for every conversation: the bench measures speed, not refusals.
    let queue = DEFAULT_QUEUE.max(b.conversations);
    let engine = tokio::task::spawn_blocking(move || {
        Engine::open_scheduled(&dir, &runtime, workers, scheduler, queue)
    })
    .await
    .map_err(|e| EngineError::Generate(e.to_string()))??;
    let pool = engine.current();
    let mut params = pool.defaults().clone();
    params.max_new_tokens = b.new_tokens;
    params.stop_tokens.clear();
    params.stop_strings.clear();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..b.conversations {
        let (pool, params, replies) = (Arc::clone(&pool), params.clone(), b.replies);
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for t in 0..replies {
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
                let asked = Instant::now();
                let first = tokio::spawn(async move { rx.recv().await.map(|_| asked.elapsed()) });
                let r = pool
                    .reply(
                        dialog(c, t),
                        params.clone(),
                        Arc::new(AtomicBool::new(false)),
                        tx,
                    )
                    .await;
                let total = asked.elapsed();
                let ttft = first.await.ok().flatten().unwrap_or(total);
                out.push(r.map(|g| (ttft, total, g.tokens.len())));
            }
            out
        }));
    }
    for t in tasks {
        for r in t.await.map_err(|e| EngineError::Generate(e.to_string()))? {
            match r {
                Ok((first, all, n)) => {
                    into.ttft.push(ms(first));
                    into.total.push(ms(all));
                    into.tokens += n;
                    if n > 1 {
                        into.per_token
                            .push(ms(all.saturating_sub(first)) / (n - 1) as f64);
                    }
                }
                Err(_) => into.failed += 1,
            }
        }
    }
    into.seconds += started.elapsed().as_secs_f64();
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Both schedulers over the same load, taking turns (the pool first).
pub async fn bench_serve(b: ServeBench) -> Result<ServeFigures, EngineError> {
    let (mut pool, mut continuous) = (Samples::default(), Samples::default());
    for _ in 0..b.rounds.max(1) {
        run(&b, Scheduler::Pool, &mut pool).await?;
        run(&b, Scheduler::Continuous(b.limits), &mut continuous).await?;
    }
    let (pool, continuous) = (pool.figures("pool"), continuous.figures("continuous"));
    Ok(ServeFigures {
        conversations: b.conversations,
        new_tokens: b.new_tokens,
        workers: b.workers,
        max_batch: b.limits.max_batch,
        rounds: b.rounds.max(1),
        throughput_ratio: continuous.tokens_per_s / pool.tokens_per_s.max(1e-9),
        pool,
        continuous,
    })
}
