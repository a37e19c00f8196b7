//! Stage 4 of a turn: the model writes the reply. Its text streams through
//! the [`Streamer`] as it comes; the reply is abandoned (and generation
//! cancelled) when it takes longer than the timeout, when a piece is
//! flagged, or when nobody listens any more.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chatforge_channel::EventSink;

use super::check::Streamer;
use super::engine::{EngineError, Pool};
use super::gate::Gate;
use super::guard::{self, Evidence};
use crate::runtime::{Generation, SamplingParams};
use crate::text::Dialog;

/// Why no reply came.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// A finished generation and what streaming saw of it.
pub struct Generated {
    pub generation: Generation,
    /// Waiting for the model: queue plus generation, over every draft.
    pub model_time: Duration,
    /// Drafts written for the reply; `generation` is the last.
    pub drafts: usize,
}

/// What writing further drafts of a grounded reply needs.
pub struct Redraft<'a> {
    /// Drafts at most, the first included.
    pub drafts: usize,
    pub gate: &'a Gate,
    pub evidence: &'a Evidence,
    pub chunk_chars: usize,
    /// When the reply's time is up.
    pub deadline: Instant,
}

/// The temperature of a greedy reply's further drafts.
const REDRAFT_TEMPERATURE: f32 = 0.7;

/// Spreads the seeds of one reply's drafts far from the next turn's seed
/// (`seed + turn`), so a redraft never repeats another turn's draw.
const DRAFT_SEED_STEP: u64 = 0x9E37_79B9_7F4A_7C15;

/// Writes further drafts while the fact guard would refuse the last one:
/// a small model that loses a fact in one sampled draft often states it in
/// another, and a draft the guard passes is an answer in the model's own
/// words rather than the passage's sentences. Another draft is written
/// only while nothing of the last was shown (it was held back, so the
/// customer saw nothing to retract), the model's queue is empty (under
/// load a redraft would delay other customers), and the time left is at
/// least what the last draft took. A draft that fails (timeout, busy)
/// leaves the last one standing. `stream` ends as the streamer of the
/// returned draft.
pub async fn redraft<'a>(
    pool: &Pool,
    dialog: &Dialog,
    mut params: SamplingParams,
    r: &Redraft<'a>,
    sink: &'a EventSink,
    mut last: Generated,
    stream: &mut Streamer<'a>,
) -> Generated {
    let mut took = last.model_time;
    if params.temperature == 0.0 {
        // Greedy decoding would write the same draft again.
        params.temperature = REDRAFT_TEMPERATURE;
    }
    while last.drafts < r.drafts
        && !stream.shown()
        && stream.flagged.is_none()
        && !sink.is_closed()
        && pool.waiting() == 0
        && !guard::passes(r.evidence, last.generation.text.trim())
    {
        let left = r.deadline.saturating_duration_since(Instant::now());
        if left < took {
            break;
        }
        params.seed = params
            .seed
            .wrapping_add(DRAFT_SEED_STEP.wrapping_mul(last.drafts as u64));
        let mut next = Streamer::new(r.gate, Some(r.evidence), sink, r.chunk_chars);
        match reply(pool, dialog.clone(), params.clone(), left, &mut next, sink).await {
            Ok(more) => {
                took = more.model_time;
                last = Generated {
                    generation: more.generation,
                    model_time: last.model_time + more.model_time,
                    drafts: last.drafts + 1,
                };
                *stream = next;
            }
            Err(e) => {
                tracing::debug!(error = %e, "no further draft; the last one stands");
                break;
            }
        }
    }
    last
}

/// Generates the reply to `dialog` on `pool`, streaming through `stream`.
pub async fn reply(
    pool: &Pool,
    dialog: Dialog,
    params: SamplingParams,
    timeout: Duration,
    stream: &mut Streamer<'_>,
    sink: &EventSink,
) -> Result<Generated, GenerateError> {
    let (deltas_tx, mut deltas) = tokio::sync::mpsc::unbounded_channel();
    let cancel = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let reply = pool.reply(dialog, params, Arc::clone(&cancel), deltas_tx);
    tokio::pin!(reply);
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let result = loop {
        tokio::select! {
            r = &mut reply => break r.map_err(GenerateError::from),
            Some(piece) = deltas.recv() => {
                if !stream.push(&piece).await || sink.is_closed() {
                    // Flagged or unreadable so far, or nobody listens: the
                    // rest of the reply is not worth generating.
                    cancel.store(true, Ordering::Relaxed);
                }
            }
            () = &mut deadline => {
                cancel.store(true, Ordering::Relaxed);
                break Err(GenerateError::Timeout(timeout));
            }
        }
    };
    let model_time = started.elapsed();
    // The timer has millisecond granularity: a reply that finished past
    // the deadline before it fired is late all the same.
    if model_time >= timeout {
        return Err(GenerateError::Timeout(timeout));
    }
    result.map(|generation| Generated {
        generation,
        model_time,
        drafts: 1,
    })
}
