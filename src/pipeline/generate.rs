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
    /// Waiting for the model: queue plus generation.
    pub model_time: Duration,
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
    })
}
