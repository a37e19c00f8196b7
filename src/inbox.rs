//! The webhook inbox: Telegram pushes each update to `[http]` and retries
//! until it gets a 2xx, so an update is acknowledged only once it is kept
//! in the store (`inbound_updates`), claimed by this replica. Then it is
//! answered, one update of a chat at a time and in the order kept, and
//! marked answered. What a replica leaves unanswered (it was killed, or
//! stopped mid-queue) is taken back by the same replica at its next start,
//! or by any replica once the claim is older than the lease. A resent
//! update is recognised by its id and answered once.
//!
//! teloxide's own axum webhook answers 200 as soon as the update is in a
//! memory channel, so an update is lost when the process dies before the
//! reply: this is why the route is ours, on teloxide's types.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chatforge_telegram::{TelegramWebhook, Update};
use tokio::sync::mpsc;

use crate::store::{self, ConversationStore, InboundUpdate, WriterHandle};

/// The `platform` of Telegram's rows.
const PLATFORM: &str = "telegram";
/// Unanswered updates taken per sweep.
const SWEEP_BATCH: u32 = 200;
/// How long an answered update is kept to recognise it if resent
/// (Telegram keeps undelivered updates for 24 hours).
const KEEP_ANSWERED: Duration = Duration::from_secs(24 * 3600);

/// Why an update was not acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum InboxError {
    /// Not an update: answered 400, never retried usefully.
    #[error("the body is not a Telegram update")]
    Malformed,
    /// The store could not keep it: answered 503, so Telegram retries.
    #[error("the update could not be kept: {0}")]
    Store(#[from] store::Error),
}

/// What became of an acknowledged update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// Kept, and queued for its chat.
    New,
    /// Kept already (Telegram resent it): not answered again.
    Resent,
    /// A kind the bot does not answer (no chat): nothing kept.
    Ignored,
}

struct Queued {
    update_id: i64,
    update: Update,
}

/// One per `serve` process in webhook mode.
pub struct Inbox {
    store: Arc<dyn ConversationStore>,
    /// For redacting what is kept, as every record is.
    writer: WriterHandle,
    webhook: TelegramWebhook,
    replica: String,
    lease: Duration,
    /// Per chat, the queue its worker drains; a chat has a worker exactly
    /// while it has an entry here.
    queues: Mutex<HashMap<String, mpsc::UnboundedSender<Queued>>>,
    /// Update ids queued or being answered here, so that a sweep does not
    /// queue one twice.
    in_flight: Mutex<HashSet<i64>>,
    /// Counts the chat workers; drained at shutdown.
    idle: tokio::sync::watch::Sender<usize>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Inbox {
    /// `lease`: how old an unanswered update's claim must be before another
    /// replica takes it; longer than any reply takes.
    pub fn new(
        store: Arc<dyn ConversationStore>,
        writer: WriterHandle,
        webhook: TelegramWebhook,
        replica: String,
        lease: Duration,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            writer,
            webhook,
            replica,
            lease,
            queues: Mutex::default(),
            in_flight: Mutex::default(),
            idle: tokio::sync::watch::channel(0).0,
        })
    }

    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// Keeps the update in `body` and queues it for its chat. Returns once
    /// it is kept: the caller may acknowledge it then.
    pub async fn accept(self: &Arc<Self>, body: &[u8]) -> Result<Accepted, InboxError> {
        let mut value: serde_json::Value =
            serde_json::from_slice(body).map_err(|_| InboxError::Malformed)?;
        let update = chatforge_telegram::parse_update(body).ok_or(InboxError::Malformed)?;
        let Some(chat) = chatforge_telegram::update_chat(&update) else {
            return Ok(Accepted::Ignored);
        };
        chatforge_telegram::scrub_update(&mut value, &|t| self.writer.redact(t));
        let row = InboundUpdate {
            platform: PLATFORM.into(),
            update_id: i64::from(update.id.0),
            chat_key: chat.to_string(),
            payload: value.to_string(),
        };
        if !self.store.accept_update(&row, &self.replica).await? {
            return Ok(Accepted::Resent);
        }
        self.dispatch(row.update_id, row.chat_key, update);
        Ok(Accepted::New)
    }

    /// Takes back unanswered updates: at start-up (`own`) those this
    /// replica left, and any whose claim outlived the lease. Returns how
    /// many were queued.
    pub async fn recover(self: &Arc<Self>, own: bool) -> Result<usize, store::Error> {
        let stale_before = ago(self.lease);
        let mut queued = 0;
        loop {
            let rows = self
                .store
                .reclaim_updates(PLATFORM, &self.replica, stale_before, own, SWEEP_BATCH)
                .await?;
            let n = rows.len();
            for row in rows {
                // Kept redacted: the reply answers the redacted text.
                let Some(update) = chatforge_telegram::parse_update(row.payload.as_bytes()) else {
                    tracing::warn!(
                        update_id = row.update_id,
                        "a kept update no longer parses; marking it answered"
                    );
                    self.store.finish_update(PLATFORM, row.update_id).await?;
                    continue;
                };
                if self.dispatch(row.update_id, row.chat_key, update) {
                    queued += 1;
                }
            }
            // `own` takes back the same rows on every call: one batch of
            // each kind per call is enough, the next sweep takes the rest.
            if own || n < SWEEP_BATCH as usize {
                break;
            }
        }
        if queued > 0 {
            tracing::info!(
                updates = queued,
                replica = %self.replica,
                "took back unanswered Telegram updates"
            );
        }
        Ok(queued)
    }

    /// Every `lease / 4`: takes what dead replicas left, and forgets
    /// answered updates older than a day.
    pub async fn sweep_until(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let every = (self.lease / 4).max(Duration::from_secs(1));
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = tick.tick() => {}
            }
            if let Err(e) = self.recover(false).await {
                tracing::warn!(error = %e, "could not look for unanswered Telegram updates");
            }
            if let Err(e) = self.store.purge_updates(ago(KEEP_ANSWERED)).await {
                tracing::warn!(error = %e, "could not forget answered Telegram updates");
            }
        }
    }

    /// Waits until every chat worker is done (the replies in flight were
    /// sent and marked), or `limit` passes; what is left stays kept.
    pub async fn drain(&self, limit: Duration) {
        let mut workers = self.idle.subscribe();
        if tokio::time::timeout(limit, workers.wait_for(|n| *n == 0))
            .await
            .is_err()
        {
            tracing::warn!(
                replica = %self.replica,
                "Telegram updates still queued at shutdown stay kept for the next start"
            );
        }
    }

    /// Queues an update for its chat's worker (starting one when the chat
    /// has none); false when it is queued here already.
    fn dispatch(self: &Arc<Self>, update_id: i64, chat: String, update: Update) -> bool {
        if !lock(&self.in_flight).insert(update_id) {
            return false;
        }
        let job = Queued { update_id, update };
        let mut queues = lock(&self.queues);
        let job = match queues.get(&chat) {
            Some(tx) => match tx.send(job) {
                Ok(()) => return true,
                Err(mpsc::error::SendError(job)) => job,
            },
            None => job,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        // A fresh channel's receiver is alive: this send cannot fail.
        let _ = tx.send(job);
        queues.insert(chat.clone(), tx);
        self.idle.send_modify(|n| *n += 1);
        tokio::spawn(Arc::clone(self).work(chat, rx));
        true
    }

    /// A chat's worker: its updates one at a time, in order; ends when the
    /// queue is empty (checked under the map's lock, so nothing is queued
    /// to a worker that is leaving).
    async fn work(self: Arc<Self>, chat: String, mut rx: mpsc::UnboundedReceiver<Queued>) {
        loop {
            let job = {
                let mut queues = lock(&self.queues);
                match rx.try_recv() {
                    Ok(job) => job,
                    Err(_) => {
                        queues.remove(&chat);
                        break;
                    }
                }
            };
            self.answer(job).await;
        }
        self.idle.send_modify(|n| *n -= 1);
    }

    async fn answer(&self, job: Queued) {
        let id = job.update_id;
        // Renewing the claim also tells whether another replica took the
        // update while it waited here; the store being away is no reason
        // to leave a customer unanswered.
        let mine = match self.store.touch_update(PLATFORM, id, &self.replica).await {
            Ok(mine) => mine,
            Err(e) => {
                tracing::warn!(update_id = id, error = %e, "could not renew the claim; answering anyway");
                true
            }
        };
        if mine {
            self.webhook.handle(job.update).await;
            self.mark_answered(id).await;
        } else {
            tracing::info!(
                update_id = id,
                "another replica took this update over; not answering it here"
            );
        }
        lock(&self.in_flight).remove(&id);
    }

    /// Marks an update answered, retrying a while: an answered update left
    /// unmarked would be answered again once its lease runs out.
    async fn mark_answered(&self, id: i64) {
        let mut wait = Duration::from_millis(100);
        for attempt in 0.. {
            match self.store.finish_update(PLATFORM, id).await {
                Ok(()) => return,
                Err(e) if attempt < 8 => {
                    tracing::warn!(update_id = id, error = %e, "could not mark an update answered; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(self.lease / 8);
                }
                Err(e) => {
                    tracing::error!(update_id = id, error = %e, "could not mark an update answered; it may be answered again");
                    return;
                }
            }
        }
    }
}

/// The time `d` before now (the earliest time there is, for a `d` too long
/// to subtract).
fn ago(d: Duration) -> chrono::DateTime<chrono::Utc> {
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| chrono::Utc::now().checked_sub_signed(d))
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC)
}

/// This process's default name among replicas: host name and HTTP port.
pub fn default_replica(port: u16) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("{host}:{port}")
}
