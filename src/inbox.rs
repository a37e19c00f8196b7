//! The webhook inbox: Telegram pushes each update to `[http]` and retries
//! until it gets a 2xx, so an update is acknowledged only once it is kept
//! in the store (`inbound_updates`). Any replica may then answer it: the
//! replica that holds the chat's lease (`chat_leases`) answers the chat's
//! kept updates one at a time, oldest first, whichever replica took them
//! in, writes the turn to the store before the next (so the next replica
//! to answer the chat continues the conversation), and marks each
//! answered. A replica that dies stops renewing its leases; once they
//! expire, any replica's sweep takes its chats over. A resent update is
//! recognised by its id and answered once.
//!
//! teloxide's own axum webhook answers 200 as soon as the update is in a
//! memory channel, so an update is lost when the process dies before the
//! reply: this is why the route is ours, on teloxide's types.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chatforge_telegram::{ReplyJournal, TelegramWebhook, Update};

use crate::store::{self, ConversationStore, InboundUpdate, WriterHandle};

/// The `platform` of Telegram's rows.
const PLATFORM: &str = "telegram";
/// Chats woken per sweep.
const SWEEP_BATCH: u32 = 500;
/// How often answered updates older than [`KEEP_ANSWERED`] are deleted.
const PURGE_EVERY: Duration = Duration::from_secs(600);
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

/// One per `serve` process in webhook mode.
pub struct Inbox {
    store: Arc<dyn ConversationStore>,
    /// For redacting what is kept, and writing a turn before the next.
    writer: WriterHandle,
    webhook: TelegramWebhook,
    replica: String,
    lease: Duration,
    /// Chats with a worker here; `true` when woken again while it works.
    workers: Mutex<HashMap<String, bool>>,
    /// Updates acknowledged here, as received, until answered: the model
    /// reads the customer's text as typed; the kept copy is redacted.
    received: Mutex<HashMap<String, HashMap<i64, Update>>>,
    stopping: AtomicBool,
    /// Counts the chat workers; drained at shutdown.
    busy: tokio::sync::watch::Sender<usize>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Inbox {
    /// `lease`: how long a replica's hold on a chat lives without renewal
    /// (it renews while answering): how soon a dead replica's chats move.
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
            workers: Mutex::default(),
            received: Mutex::default(),
            stopping: AtomicBool::new(false),
            busy: tokio::sync::watch::channel(0).0,
        })
    }

    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// Keeps the update in `body` and wakes its chat. Returns once it is
    /// kept: the caller may acknowledge it then.
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
            sent: Vec::new(),
        };
        // Held before it is kept: a worker already answering the chat may
        // take it the moment it is in the store.
        lock(&self.received)
            .entry(row.chat_key.clone())
            .or_default()
            .insert(row.update_id, update);
        let kept = self.store.accept_update(&row, &self.replica).await;
        if !matches!(kept, Ok(true)) {
            // Kept before (a resend: whoever answers it reads the kept
            // copy), or not kept at all.
            let mut received = lock(&self.received);
            if let Some(held) = received.get_mut(&row.chat_key) {
                held.remove(&row.update_id);
                if held.is_empty() {
                    received.remove(&row.chat_key);
                }
            }
        }
        if kept? {
            self.wake(row.chat_key);
            Ok(Accepted::New)
        } else {
            Ok(Accepted::Resent)
        }
    }

    /// Wakes every chat with updates no live replica answers: at start-up
    /// (with the chats this replica held before it restarted) and at each
    /// sweep. Returns how many chats.
    pub async fn wake_waiting(self: &Arc<Self>) -> Result<usize, store::Error> {
        let chats = self
            .store
            .waiting_chats(PLATFORM, &self.replica, SWEEP_BATCH)
            .await?;
        let n = chats.len();
        for chat in chats {
            self.wake(chat);
        }
        Ok(n)
    }

    /// Every half lease: wakes the chats dead replicas left, and now and
    /// then forgets answered updates older than a day.
    pub async fn sweep_until(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let every = (self.lease / 2).max(Duration::from_millis(200));
        let mut tick = tokio::time::interval(every);
        let mut last_purge = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = tick.tick() => {}
            }
            match self.wake_waiting().await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(chats = n, "woke chats with unanswered Telegram updates"),
                Err(e) => {
                    tracing::warn!(error = %e, "could not look for unanswered Telegram updates")
                }
            }
            if last_purge.elapsed() >= PURGE_EVERY {
                last_purge = tokio::time::Instant::now();
                if let Err(e) = self.store.purge_updates(ago(KEEP_ANSWERED)).await {
                    tracing::warn!(error = %e, "could not forget answered Telegram updates");
                }
            }
        }
    }

    /// Stops taking chats, lets each worker finish the update it is
    /// answering (its chat's lease is given back, so another replica goes
    /// on at once), and waits for them up to `limit`.
    pub async fn drain(&self, limit: Duration) {
        self.stopping.store(true, Ordering::SeqCst);
        let mut busy = self.busy.subscribe();
        if tokio::time::timeout(limit, busy.wait_for(|n| *n == 0))
            .await
            .is_err()
        {
            tracing::warn!(
                replica = %self.replica,
                "Telegram replies still in flight at shutdown; their updates stay kept"
            );
        }
    }

    /// Starts a worker for `chat`, or tells the running one to look again.
    fn wake(self: &Arc<Self>, chat: String) {
        if self.stopping.load(Ordering::SeqCst) {
            return;
        }
        let mut workers = lock(&self.workers);
        if let Some(again) = workers.get_mut(&chat) {
            *again = true;
            return;
        }
        workers.insert(chat.clone(), false);
        self.busy.send_modify(|n| *n += 1);
        tokio::spawn(Arc::clone(self).work(chat));
    }

    async fn work(self: Arc<Self>, chat: String) {
        loop {
            self.answer_chat(&chat).await;
            let mut workers = lock(&self.workers);
            if workers.get(&chat) == Some(&true) && !self.stopping.load(Ordering::SeqCst) {
                workers.insert(chat.clone(), false);
                continue;
            }
            workers.remove(&chat);
            // Whatever was received here for the chat was answered (here
            // or by the replica that held it).
            lock(&self.received).remove(&chat);
            break;
        }
        self.busy.send_modify(|n| *n -= 1);
    }

    fn until(&self) -> chrono::DateTime<chrono::Utc> {
        chrono::Utc::now() + chrono::Duration::from_std(self.lease).unwrap_or_default()
    }

    /// Takes the chat's lease (waiting while another replica answers it:
    /// that one answers what was kept here too, so the wait ends when
    /// nothing is left), answers its kept updates in order, gives it back.
    async fn answer_chat(&self, chat: &str) {
        let mut wait = Duration::from_millis(50);
        loop {
            if self.stopping.load(Ordering::SeqCst) {
                return;
            }
            match self
                .store
                .lease_chat(PLATFORM, chat, &self.replica, self.until())
                .await
            {
                Ok(true) => break,
                Ok(false) => {
                    if let Ok(None) = self.store.next_update(PLATFORM, chat).await {
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!(chat, error = %e, "could not take a chat's lease; retrying")
                }
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(1));
        }
        // Renewed for the whole hold, the store's writes and the marking
        // included: a lease that runs out between a reply and its mark lets
        // another replica answer the same update again.
        let lost = AtomicBool::new(false);
        let held = tokio::select! {
            held = self.answer_kept(chat, &lost) => held,
            () = self.keep_lease(chat, &lost) => false,
        };
        if !held {
            tracing::warn!(
                chat,
                "the chat's lease ran out while answering and another replica took it"
            );
            return;
        }
        if let Err(e) = self.store.release_chat(PLATFORM, chat, &self.replica).await {
            tracing::warn!(chat, error = %e, "could not give a chat's lease back; it expires");
        }
    }

    /// Renews the chat's lease every third of it, until another replica
    /// holds it (`lost` is then set; the update being answered is finished
    /// but no other is taken).
    async fn keep_lease(&self, chat: &str, lost: &AtomicBool) {
        let mut tick = tokio::time::interval((self.lease / 3).max(Duration::from_millis(100)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            match self
                .store
                .lease_chat(PLATFORM, chat, &self.replica, self.until())
                .await
            {
                Ok(true) => {}
                Ok(false) => {
                    lost.store(true, Ordering::SeqCst);
                    return std::future::pending().await;
                }
                Err(e) => tracing::warn!(chat, error = %e, "could not renew a chat's lease"),
            }
        }
    }

    /// Answers the chat's kept updates, oldest first, while the lease is
    /// held; false when it was lost.
    async fn answer_kept(&self, chat: &str, lost: &AtomicBool) -> bool {
        while !self.stopping.load(Ordering::SeqCst) && !lost.load(Ordering::SeqCst) {
            let kept = match self.store.next_update(PLATFORM, chat).await {
                Ok(Some(kept)) => kept,
                Ok(None) => break,
                Err(e) => {
                    // The sweep wakes the chat again.
                    tracing::warn!(chat, error = %e, "could not read a chat's next update");
                    break;
                }
            };
            let id = kept.update_id;
            let as_received = lock(&self.received)
                .get_mut(chat)
                .and_then(|m| m.remove(&id));
            match as_received.or_else(|| chatforge_telegram::parse_update(kept.payload.as_bytes()))
            {
                Some(update) => {
                    let journal = Journal {
                        store: self.store.as_ref(),
                        update_id: id,
                        earlier: kept.sent,
                    };
                    self.answer(update, &journal).await
                }
                None => tracing::warn!(
                    update_id = id,
                    "a kept update no longer parses; skipping it"
                ),
            }
            self.mark_answered(id).await;
            // A full lease for the next update.
            match self
                .store
                .lease_chat(PLATFORM, chat, &self.replica, self.until())
                .await
            {
                Ok(true) => {}
                Ok(false) => return false,
                Err(e) => tracing::warn!(chat, error = %e, "could not renew a chat's lease"),
            }
        }
        !lost.load(Ordering::SeqCst)
    }

    /// Answers one update and writes the turn to the store before the
    /// chat's next update is taken.
    async fn answer(&self, update: Update, journal: &Journal<'_>) {
        self.webhook.handle(update, journal).await;
        match self.writer.flush().await {
            Ok(f) if f.pending > 0 => tracing::warn!(
                pending = f.pending,
                "the store is behind: another replica may answer this chat's next message without this turn"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not flush the turn to the store"),
        }
    }

    /// Marks an update answered, retrying a while: an answered update left
    /// unmarked would be answered again.
    async fn mark_answered(&self, id: i64) {
        let mut wait = Duration::from_millis(100);
        for attempt in 0.. {
            match self.store.finish_update(PLATFORM, id).await {
                Ok(()) => return,
                Err(e) if attempt < 8 => {
                    tracing::warn!(update_id = id, error = %e, "could not mark an update answered; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(2));
                }
                Err(e) => {
                    tracing::error!(update_id = id, error = %e, "could not mark an update answered; it may be answered again");
                    return;
                }
            }
        }
    }
}

/// The messages sent in answer to one kept update, noted in the store.
struct Journal<'a> {
    store: &'a dyn ConversationStore,
    update_id: i64,
    earlier: Vec<i64>,
}

impl ReplyJournal for Journal<'_> {
    fn earlier(&self) -> Vec<i64> {
        self.earlier.clone()
    }

    fn note<'a>(
        &'a self,
        sent: &'a [i64],
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
        Box::pin(async move {
            // Not kept: answering the update again would send this message
            // twice; the reply goes on all the same.
            if let Err(e) = self.store.note_sent(PLATFORM, self.update_id, sent).await {
                tracing::warn!(update_id = self.update_id, error = %e, "could not note a sent message");
            }
        })
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
