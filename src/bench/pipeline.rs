//! `chatforge bench pipeline`: the serving path — the pipeline with
//! moderation and the store, the model — under many concurrent
//! conversations. Each conversation sends a message, waits for its reply to
//! be final, then sends the next. The messages enter through the
//! `ChatHandler` contract as an adapter hands them over (`--via direct`),
//! or, in a build with the `fakes` feature, through teloxide's dispatcher
//! polling a local fake of the Telegram Bot API (`--via telegram`: the
//! reply is final when its feedback keyboard arrives there).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chatforge_channel::{
    ChatEvent, ChatHandler, ChatRequest, IncomingMessage, Platform, event_channel,
};
use serde::Serialize;

use super::percentile;
use crate::config::Config;
use crate::serve::{ServeError, start_services};

/// What to run.
#[derive(Debug, Clone)]
pub struct PipelineBench {
    pub bundle: PathBuf,
    /// A moderation model folder; `None` runs with moderation off.
    pub moderation: Option<PathBuf>,
    /// A knowledge base (`kb build`): retrieval and the fact guard on.
    /// `None` keeps the config's `[kb]`, if any.
    pub kb: Option<PathBuf>,
    pub conversations: usize,
    pub messages_per_conversation: usize,
    pub new_tokens: usize,
    /// `[runtime]` settings (providers, threads).
    pub config: Config,
    pub via: Via,
}

/// Where the bench's messages enter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    /// Straight into the pipeline, as an adapter hands messages over.
    Direct,
    /// Through the Telegram adapter and a local fake of the Bot API (a
    /// build with `--features fakes`).
    Telegram,
}

#[derive(Debug, Serialize)]
pub struct PipelineFigures {
    pub bench: &'static str,
    pub via: Via,
    pub model_version: String,
    pub moderation: bool,
    /// Retrieval and the fact guard were on.
    pub kb: bool,
    pub conversations: usize,
    pub messages: usize,
    pub seconds: f64,
    pub messages_per_s: f64,
    /// From the message entering to its final reply (via Telegram: from
    /// the update being offered to the Bot API fake to the reply's feedback
    /// keyboard arriving there).
    pub e2e_p50_ms: f64,
    pub e2e_p99_ms: f64,
    /// Inside the pipeline, everything but waiting for the model.
    pub overhead_p50_ms: f64,
    pub overhead_p99_ms: f64,
    pub model_p50_ms: f64,
    pub model_p99_ms: f64,
    /// What retrieval plus the fact guard add to a reply (part of the
    /// overhead).
    pub grounding_p50_ms: f64,
    pub grounding_p99_ms: f64,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// What the benches' customers ask.
pub(super) const QUESTIONS: [&str; 4] = [
    "where is my order?",
    "can I return boots I wore once?",
    "how long does shipping to Canada take?",
    "my card was charged twice",
];

pub async fn bench_pipeline(b: PipelineBench) -> Result<PipelineFigures, ServeError> {
    let io = |e: std::io::Error| ServeError::Other(format!("bench pipeline: {e}"));
    let dir = tempfile::tempdir().map_err(io)?;
    let mut cfg = super::scratch_config(&b.config, dir.path());
    super::serving_under_test(
        &mut cfg,
        &b.bundle,
        b.moderation.as_deref(),
        b.kb.as_deref(),
        b.new_tokens,
    );
    let services = start_services(&cfg).await?;
    let model_version = services
        .pipeline
        .engine()
        .current()
        .model_version()
        .to_string();
    // The first turn pays one-time costs (ONNX Runtime's first runs of
    // the model, moderation and router sessions): warm up, then measure.
    let (sink, mut events) = event_channel();
    let warm = ChatRequest::Message(IncomingMessage {
        platform: Platform::Telegram,
        conversation_key: "warm-up".into(),
        user_key: "warm-up".into(),
        text: QUESTIONS[0].to_string(),
        reply_to: None,
        is_direct: true,
    });
    services.pipeline.keep_traces();
    services.pipeline.handle(warm, sink).await;
    while events.next().await.is_some() {}
    services.pipeline.take_traces();
    let start = Instant::now();
    let mut e2e = match b.via {
        Via::Direct => direct(&services.pipeline, &b).await?,
        Via::Telegram => via_telegram(&services.pipeline, &b).await?,
    };
    let seconds = start.elapsed().as_secs_f64();
    let total = e2e.len();
    let kb = services.pipeline.knowledge().is_some();
    let traces = services.pipeline.take_traces();
    services.writer.shutdown().await?;
    let sorted = |f: &dyn Fn(&crate::pipeline::ReplyTrace) -> Duration| {
        let mut v: Vec<f64> = traces.iter().map(|t| ms(f(t))).collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let overhead = sorted(&|t| t.overhead());
    let model = sorted(&|t| t.model);
    let grounding = sorted(&|t| t.grounding_time);
    e2e.sort_by(f64::total_cmp);
    Ok(PipelineFigures {
        bench: "pipeline",
        via: b.via,
        model_version,
        moderation: b.moderation.is_some(),
        kb,
        conversations: b.conversations,
        messages: total,
        seconds,
        messages_per_s: total as f64 / seconds,
        e2e_p50_ms: percentile(&e2e, 0.5),
        e2e_p99_ms: percentile(&e2e, 0.99),
        overhead_p50_ms: percentile(&overhead, 0.5),
        overhead_p99_ms: percentile(&overhead, 0.99),
        model_p50_ms: percentile(&model, 0.5),
        model_p99_ms: percentile(&model, 0.99),
        grounding_p50_ms: percentile(&grounding, 0.5),
        grounding_p99_ms: percentile(&grounding, 0.99),
    })
}

/// Every conversation a task: send, wait for the final reply, send the next.
async fn direct(
    pipeline: &Arc<crate::pipeline::Pipeline>,
    b: &PipelineBench,
) -> Result<Vec<f64>, ServeError> {
    let tasks: Vec<_> = (0..b.conversations)
        .map(|c| {
            let pipeline = Arc::clone(pipeline);
            let messages = b.messages_per_conversation;
            tokio::spawn(async move {
                let mut e2e = Vec::with_capacity(messages);
                for n in 0..messages {
                    let request = ChatRequest::Message(IncomingMessage {
                        platform: Platform::Telegram,
                        conversation_key: c.to_string(),
                        user_key: c.to_string(),
                        text: QUESTIONS[n % QUESTIONS.len()].to_string(),
                        reply_to: None,
                        is_direct: true,
                    });
                    let (sink, mut events) = event_channel();
                    let at = Instant::now();
                    pipeline.handle(request, sink).await;
                    let mut replied = false;
                    while let Some(e) = events.next().await {
                        replied |= matches!(e, ChatEvent::Reply { .. });
                    }
                    if !replied {
                        return Err(format!("conversation {c}: message {n} got no reply"));
                    }
                    e2e.push(ms(at.elapsed()));
                }
                Ok(e2e)
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        let got = t
            .await
            .map_err(|e| ServeError::Other(format!("bench pipeline: {e}")))?;
        all.extend(got.map_err(|e| ServeError::Other(format!("bench pipeline: {e}")))?);
    }
    Ok(all)
}

#[cfg(not(feature = "fakes"))]
async fn via_telegram(
    _: &Arc<crate::pipeline::Pipeline>,
    _: &PipelineBench,
) -> Result<Vec<f64>, ServeError> {
    Err(ServeError::Other(
        "bench pipeline --via telegram needs a build with the local platform fakes: cargo build --release --features fakes".into(),
    ))
}

#[cfg(feature = "fakes")]
async fn via_telegram(
    pipeline: &Arc<crate::pipeline::Pipeline>,
    b: &PipelineBench,
) -> Result<Vec<f64>, ServeError> {
    use std::collections::HashMap;

    use chatforge_telegram::fake::{Fake, TOKEN, chat_json};
    use chatforge_telegram::{TelegramAdapter, TelegramConfig};
    use serde_json::json;

    let message = |chat: i64, text: &str| {
        json!({"message": {
            "message_id": 1, "date": 1, "chat": chat_json(chat),
            "from": {"id": chat, "is_bot": false, "first_name": "Bench"},
            "text": text
        }})
    };
    let io = |e: std::io::Error| ServeError::Other(format!("bench pipeline: {e}"));
    let fake = Fake::start().await.map_err(io)?;
    let mut tc = TelegramConfig::new(TOKEN);
    tc.api_url = Some(fake.url.clone());
    let handler: Arc<dyn ChatHandler> = pipeline.clone();
    let adapter = TelegramAdapter::connect(tc, handler)
        .await
        .map_err(|e| ServeError::Other(e.to_string()))?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(adapter.run_until(async {
        let _ = stop_rx.await;
    }));

    let chats: Vec<i64> = (1..=b.conversations as i64).collect();
    let mut sent: HashMap<i64, (usize, Instant)> = HashMap::new();
    let start = Instant::now();
    for &c in &chats {
        fake.push_update(message(c, QUESTIONS[0]));
        sent.insert(c, (1, Instant::now()));
    }
    let total = b.conversations * b.messages_per_conversation;
    let mut e2e = Vec::with_capacity(total);
    let mut seen = 0;
    let deadline = start + Duration::from_secs(600);
    while e2e.len() < total {
        if Instant::now() > deadline {
            return Err(ServeError::Other(format!(
                "bench pipeline: only {} of {total} replies within 10 minutes",
                e2e.len()
            )));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
        let calls = fake.calls_since(seen);
        seen += calls.len();
        for call in &calls {
            let keyboard =
                call.method == "editmessagereplymarkup" && call.body.get("reply_markup").is_some();
            let Some(chat) = call.body["chat_id"].as_i64().filter(|_| keyboard) else {
                continue;
            };
            let Some((n, at)) = sent.get(&chat).copied() else {
                continue;
            };
            e2e.push(ms(call.at.into_std().saturating_duration_since(at)));
            if n < b.messages_per_conversation {
                fake.push_update(message(chat, QUESTIONS[n % QUESTIONS.len()]));
                sent.insert(chat, (n + 1, Instant::now()));
            }
        }
    }
    let _ = stop_tx.send(());
    let _ = running.await;
    Ok(e2e)
}
