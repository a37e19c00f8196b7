//! The store writer: a queue in front of a task that writes records in
//! batches. Callers never wait: `enqueue` only checks the record and the
//! queue's length. When the database is unreachable (refusing, or hanging
//! past the store's call timeout) the task appends to the spill file and
//! retries with backoff; everything that arrives meanwhile goes to the
//! spill file too, so replay keeps the order records were queued in. On
//! shutdown the queue drains, within its deadline.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::record::{ConversationRecord, FeedbackRecord};
use super::spill::{Entry, Spill};
use super::{ConversationStore, Error, Limits, Record, Result, UserKey, UserKeyHasher};
use crate::text::Redactor;

/// Tuning of the writer.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// Holds `spill.jsonl`, its offset and `rejected.jsonl`.
    pub spill_dir: PathBuf,
    /// Records queued at most; past it `enqueue` refuses (the database and
    /// the disk both cannot keep up) rather than make the bot wait.
    pub queue_capacity: usize,
    /// Records per transaction.
    pub batch_size: usize,
    /// First wait before retrying an unreachable database; doubles up to
    /// `retry_max`.
    pub retry_min: Duration,
    pub retry_max: Duration,
    /// How long shutdown keeps trying to store what is queued and spilled;
    /// what is left stays in the spill file for the next writer.
    pub drain_timeout: Duration,
    pub limits: Limits,
    /// Personal data replaced before a record is queued: nothing behind the
    /// queue (database, spill file, `rejected.jsonl`) ever holds it.
    pub redactor: Redactor,
}

impl WriterConfig {
    pub fn new(spill_dir: impl Into<PathBuf>) -> Self {
        Self {
            spill_dir: spill_dir.into(),
            queue_capacity: 100_000,
            batch_size: 500,
            retry_min: Duration::from_millis(100),
            retry_max: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(10),
            limits: Limits::default(),
            redactor: Redactor::from_kinds(super::DEFAULT_REDACT_AT_REST)
                .expect("the default kinds are valid"),
        }
    }
}

/// Live counters of a writer.
#[derive(Debug, Default)]
pub struct WriterStats {
    enqueued: AtomicU64,
    written: AtomicU64,
    spilled: AtomicU64,
    replayed: AtomicU64,
    rejected: AtomicU64,
    pending: AtomicU64,
    /// Records in the queue now.
    queued: AtomicU64,
    /// Records refused because the queue was full, or lost because neither
    /// the database nor the disk would take them.
    dropped: AtomicU64,
    /// Milliseconds since the Unix epoch of the last "queue full" error.
    full_warned_ms: AtomicU64,
}

/// A snapshot of the counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct WriterReport {
    /// Records accepted by `enqueue`.
    pub enqueued: u64,
    /// Records stored, directly or by replay.
    pub written: u64,
    /// Records that went to the spill file (or, with the disk failing too,
    /// to memory) because the database was unreachable.
    pub spilled: u64,
    /// Spilled records stored later.
    pub replayed: u64,
    /// Records the database refused; see `rejected.jsonl`.
    pub rejected: u64,
    /// Spilled records still waiting for the database.
    pub pending: u64,
    /// Records in the queue.
    pub queued: u64,
    /// Records refused (queue full) or lost (database and disk failing).
    pub dropped: u64,
}

impl WriterStats {
    pub fn report(&self) -> WriterReport {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        WriterReport {
            enqueued: g(&self.enqueued),
            written: g(&self.written),
            spilled: g(&self.spilled),
            replayed: g(&self.replayed),
            rejected: g(&self.rejected),
            pending: g(&self.pending),
            queued: g(&self.queued),
            dropped: g(&self.dropped),
        }
    }

    /// Counts lost records and says so at most every ten seconds, with a
    /// count, so that a burst does not flood the log.
    fn drop_records(&self, n: usize, why: &str) {
        let dropped = self.dropped.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
        let now = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0);
        let last = self.full_warned_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= 10_000
            && self
                .full_warned_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::error!(dropped, "{why}");
        }
    }

    fn add(a: &AtomicU64, n: usize) {
        a.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// What a flush found: records still waiting in the spill file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlushOutcome {
    pub pending: u64,
}

enum Command {
    Record(Box<Record>),
    Flush(oneshot::Sender<FlushOutcome>),
    Shutdown,
}

/// The pipeline's side of the writer: cheap to clone, never touches the
/// database, never waits.
#[derive(Clone)]
pub struct WriterHandle {
    tx: mpsc::UnboundedSender<Command>,
    hasher: UserKeyHasher,
    limits: Limits,
    redactor: Arc<Redactor>,
    capacity: u64,
    stats: Arc<WriterStats>,
}

impl WriterHandle {
    /// Checks, redacts and queues a record, at once. A full queue (the
    /// database and the spill file both falling behind) refuses the record,
    /// counted in [`WriterReport::dropped`], rather than make the caller
    /// wait.
    pub fn enqueue(&self, mut record: Record) -> Result<()> {
        record.sanitize(&self.limits)?;
        record.redact(&self.redactor);
        if self.stats.queued.load(Ordering::Relaxed) >= self.capacity {
            self.stats
                .drop_records(1, "store queue full: records are being dropped (database and spill file cannot keep up)");
            return Err(Error::QueueFull(self.capacity));
        }
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        if self.tx.send(Command::Record(Box::new(record))).is_err() {
            self.stats.queued.fetch_sub(1, Ordering::Relaxed);
            return Err(Error::WriterClosed);
        }
        WriterStats::add(&self.stats.enqueued, 1);
        Ok(())
    }

    /// `text` with what `[store] redact_at_rest` names replaced, as every
    /// record is before it is kept.
    pub fn redact(&self, text: &str) -> String {
        self.redactor.redact(text)
    }

    /// The pseudonymous key of a platform user.
    pub fn user_key(&self, platform: &str, platform_user_id: &str) -> UserKey {
        self.hasher.key(platform, platform_user_id)
    }

    /// A new conversation for a platform user; the raw id is hashed here and
    /// goes no further.
    pub fn new_conversation(
        &self,
        platform: &str,
        channel: &str,
        platform_user_id: &str,
    ) -> ConversationRecord {
        ConversationRecord::new(platform, channel, self.user_key(platform, platform_user_id))
    }

    /// Feedback from a platform user, hashed like [`Self::new_conversation`].
    pub fn new_feedback(
        &self,
        conversation_id: &str,
        platform: &str,
        platform_user_id: &str,
        rating: u8,
    ) -> FeedbackRecord {
        FeedbackRecord::new(
            conversation_id,
            rating,
            self.user_key(platform, platform_user_id),
        )
    }

    /// Waits until every record queued before this call is stored or
    /// spilled, after one replay attempt if anything is spilled.
    pub async fn flush(&self) -> Result<FlushOutcome> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::Flush(tx))
            .map_err(|_| Error::WriterClosed)?;
        rx.await.map_err(|_| Error::WriterClosed)
    }

    pub fn stats(&self) -> WriterReport {
        self.stats.report()
    }
}

/// Owns the writer task; [`Writer::shutdown`] drains it.
pub struct Writer {
    handle: WriterHandle,
    task: JoinHandle<WriterReport>,
}

impl Writer {
    /// Starts the writer task on the current tokio runtime. Records left in
    /// the spill folder by an earlier run are replayed first.
    pub fn spawn(
        store: Arc<dyn ConversationStore>,
        hasher: UserKeyHasher,
        config: WriterConfig,
    ) -> Result<Self> {
        let spill = Spill::open(&config.spill_dir)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let stats = Arc::new(WriterStats::default());
        stats.pending.store(spill.pending(), Ordering::Relaxed);
        let handle = WriterHandle {
            tx,
            hasher,
            limits: config.limits,
            redactor: Arc::new(config.redactor.clone()),
            capacity: config.queue_capacity.max(1) as u64,
            stats: Arc::clone(&stats),
        };
        let task = Task {
            store,
            rx,
            closed: false,
            deadline: None,
            spill,
            overflow: Vec::new(),
            retry_at: None,
            backoff: config.retry_min,
            outage_logged: false,
            stats,
            cfg: config,
        };
        Ok(Self {
            handle,
            task: tokio::spawn(task.run()),
        })
    }

    pub fn handle(&self) -> WriterHandle {
        self.handle.clone()
    }

    /// Stops taking records, stores (or spills) everything queued, and
    /// returns the final counters.
    pub async fn shutdown(self) -> Result<WriterReport> {
        // A closed channel means the task is already draining.
        let _ = self.handle.tx.send(Command::Shutdown);
        self.task
            .await
            .map_err(|e| Error::WriterTask(e.to_string()))
    }
}

struct Task {
    store: Arc<dyn ConversationStore>,
    rx: mpsc::UnboundedReceiver<Command>,
    closed: bool,
    /// Set while draining at shutdown: no database call may outlast it.
    deadline: Option<Instant>,
    spill: Spill,
    /// Records that neither the database nor the disk would take; they come
    /// after everything in the spill file.
    overflow: Vec<Record>,
    retry_at: Option<Instant>,
    backoff: Duration,
    outage_logged: bool,
    stats: Arc<WriterStats>,
    cfg: WriterConfig,
}

impl Task {
    async fn run(mut self) -> WriterReport {
        if self.pending() > 0 {
            tracing::info!(
                records = self.pending(),
                file = %self.spill.path().display(),
                "replaying records spilled by an earlier run"
            );
            self.retry_at = Some(Instant::now());
        }
        loop {
            let mut batch = Vec::new();
            let mut flushes = Vec::new();
            let mut shutdown = false;
            if let Some(cmd) = self.recv().await {
                Self::take(cmd, &mut batch, &mut flushes, &mut shutdown);
            } else if self.closed {
                shutdown = true;
            }
            while batch.len() < self.cfg.batch_size && flushes.is_empty() && !shutdown {
                let Some(cmd) = self.try_next() else { break };
                Self::take(cmd, &mut batch, &mut flushes, &mut shutdown);
            }
            self.process(batch).await;
            if self.retry_at.is_some_and(|t| t <= Instant::now()) {
                self.replay().await;
            }
            for ack in flushes {
                if self.pending() > 0 {
                    self.replay().await;
                }
                let _ = ack.send(FlushOutcome {
                    pending: self.pending(),
                });
            }
            if shutdown {
                return self.drain().await;
            }
        }
    }

    fn take(
        cmd: Command,
        batch: &mut Vec<Record>,
        flushes: &mut Vec<oneshot::Sender<FlushOutcome>>,
        shutdown: &mut bool,
    ) {
        match cmd {
            Command::Record(r) => batch.push(*r),
            Command::Flush(ack) => flushes.push(ack),
            Command::Shutdown => *shutdown = true,
        }
    }

    /// The next command; `None` when the retry time comes first or the
    /// queue is closed.
    async fn recv(&mut self) -> Option<Command> {
        if self.closed {
            return None;
        }
        let got = match self.retry_at {
            Some(at) => match tokio::time::timeout_at(at, self.rx.recv()).await {
                Ok(got) => got,
                Err(_) => return None,
            },
            None => self.rx.recv().await,
        };
        match &got {
            None => self.closed = true,
            Some(Command::Record(_)) => {
                self.stats.queued.fetch_sub(1, Ordering::Relaxed);
            }
            Some(_) => {}
        }
        got
    }

    fn try_next(&mut self) -> Option<Command> {
        let cmd = self.rx.try_recv().ok();
        if let Some(Command::Record(_)) = cmd {
            self.stats.queued.fetch_sub(1, Ordering::Relaxed);
        }
        cmd
    }

    fn pending(&self) -> u64 {
        self.spill.pending() + self.overflow.len() as u64
    }

    fn update_pending(&self) {
        self.stats.pending.store(self.pending(), Ordering::Relaxed);
    }

    async fn process(&mut self, batch: Vec<Record>) {
        if batch.is_empty() {
            return;
        }
        if self.pending() > 0 {
            // Older records are waiting: these queue up behind them.
            self.defer(&batch);
            return;
        }
        if let Err(i) = self.write(&batch).await {
            self.defer(&batch[i..]);
            self.schedule_retry();
        }
    }

    /// Stores `batch`; on an unreachable database returns the index of the
    /// first record not stored. Refused records are set aside one by one.
    async fn write(&mut self, batch: &[Record]) -> std::result::Result<(), usize> {
        let res = self.call(batch).await;
        match res {
            Ok(()) => {
                WriterStats::add(&self.stats.written, batch.len());
                self.recovered();
                return Ok(());
            }
            Err(e) if e.is_unavailable() => {
                self.outage(&e);
                return Err(0);
            }
            Err(_) => {}
        }
        // Some record was refused: find which, alone.
        for (i, r) in batch.iter().enumerate() {
            let res = self.call(std::slice::from_ref(r)).await;
            match res {
                Ok(()) => WriterStats::add(&self.stats.written, 1),
                Err(e) if e.is_unavailable() => {
                    self.outage(&e);
                    return Err(i);
                }
                Err(e) => self.reject(r, &e.to_string()),
            }
        }
        self.recovered();
        Ok(())
    }

    /// One write, within the shutdown deadline when draining (the store
    /// bounds every call by its own timeout besides).
    async fn call(&self, records: &[Record]) -> Result<()> {
        let write = self.store.write_batch(records);
        match self.deadline {
            None => write.await,
            Some(at) => match tokio::time::timeout_at(at, write).await {
                Ok(r) => r,
                Err(_) => Err(Error::Unavailable {
                    backend: self.store.backend().name(),
                    reason: "shutdown deadline reached".into(),
                }),
            },
        }
    }

    fn reject<T: Serialize>(&self, record: T, reason: &str) {
        WriterStats::add(&self.stats.rejected, 1);
        tracing::error!(%reason, "store refused a record; it is kept in rejected.jsonl");
        if let Err(e) = self.spill.reject(record, reason) {
            tracing::error!(error = %e, "cannot write the rejected record aside");
        }
    }

    fn outage(&mut self, e: &Error) {
        if !self.outage_logged {
            tracing::warn!(error = %e, file = %self.spill.path().display(), "database unreachable; spilling records to disk");
            self.outage_logged = true;
        }
    }

    fn recovered(&mut self) {
        self.backoff = self.cfg.retry_min;
        if self.outage_logged && self.pending() == 0 {
            tracing::info!("database reachable again; spilled records replayed");
            self.outage_logged = false;
        }
    }

    fn schedule_retry(&mut self) {
        self.retry_at = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(self.cfg.retry_max);
    }

    /// Appends to the spill file, behind anything kept in memory.
    fn defer(&mut self, records: &[Record]) {
        WriterStats::add(&self.stats.spilled, records.len());
        let mut all = std::mem::take(&mut self.overflow);
        all.extend_from_slice(records);
        if let Err(e) = self.spill.append(&all) {
            tracing::error!(error = %e, records = all.len(), "cannot spill to disk; keeping the records in memory");
            // Memory is the last resort: bounded, newest records lost first.
            let cap = self.cfg.queue_capacity.max(1);
            if all.len() > cap {
                let lost = all.len() - cap;
                all.truncate(cap);
                self.stats.drop_records(
                    lost,
                    "neither the database nor the spill file takes records: dropping",
                );
            }
            self.overflow = all;
        }
        if self.retry_at.is_none() {
            self.schedule_retry();
        }
        self.update_pending();
    }

    /// Stores spilled records, oldest first, until the spill file is empty or
    /// the database fails again.
    async fn replay(&mut self) {
        self.retry_at = None;
        if !self.overflow.is_empty() {
            // The disk may be back: keep the memory copy as short as possible.
            self.defer(&[]);
        }
        loop {
            let entries = match self.spill.read(self.cfg.batch_size) {
                Ok(e) => e,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the spill file");
                    self.schedule_retry();
                    return;
                }
            };
            if entries.is_empty() {
                break;
            }
            let mut records = Vec::new();
            let mut at = Vec::new();
            for (k, (entry, _)) in entries.iter().enumerate() {
                if let Entry::Record(r) = entry {
                    records.push((**r).clone());
                    at.push(k);
                }
            }
            let result = self.write(&records).await;
            let done = match result {
                Ok(()) => entries.len(),
                Err(i) => at[i],
            };
            let stored = match result {
                Ok(()) => records.len(),
                Err(i) => i,
            };
            WriterStats::add(&self.stats.replayed, stored);
            for (entry, _) in &entries[..done] {
                if let Entry::Bad { line, reason } = entry {
                    self.reject(line, reason);
                }
            }
            if done > 0
                && let Err(e) = self.spill.commit(entries[done - 1].1, done as u64)
            {
                tracing::error!(error = %e, "cannot save the spill replay position");
            }
            self.update_pending();
            if result.is_err() {
                self.schedule_retry();
                return;
            }
        }
        if !self.overflow.is_empty() {
            let rest = std::mem::take(&mut self.overflow);
            let result = self.write(&rest).await;
            if let Err(i) = result {
                self.overflow = rest[i..].to_vec();
                WriterStats::add(&self.stats.replayed, i);
                self.schedule_retry();
                self.update_pending();
                return;
            }
            WriterStats::add(&self.stats.replayed, rest.len());
        }
        self.retry_at = None;
        self.update_pending();
        self.recovered();
    }

    async fn drain(mut self) -> WriterReport {
        let deadline = Instant::now() + self.cfg.drain_timeout;
        self.deadline = Some(deadline);
        self.rx.close();
        self.closed = true;
        let mut rest = Vec::new();
        while let Some(cmd) = self.try_next() {
            match cmd {
                Command::Record(r) => rest.push(*r),
                Command::Flush(ack) => {
                    let _ = ack.send(FlushOutcome {
                        pending: self.pending(),
                    });
                }
                Command::Shutdown => {}
            }
        }
        for chunk in rest.chunks(self.cfg.batch_size.max(1)) {
            if Instant::now() < deadline {
                self.process(chunk.to_vec()).await;
            } else {
                self.defer(chunk);
            }
        }
        while self.pending() > 0 && Instant::now() < deadline {
            self.replay().await;
            if self.pending() > 0 {
                let wake = self.retry_at.unwrap_or(deadline).min(deadline);
                tokio::time::sleep_until(wake).await;
            }
        }
        if self.pending() > 0 {
            tracing::warn!(
                records = self.pending(),
                file = %self.spill.path().display(),
                "database still unreachable at shutdown; records stay spilled and are replayed at the next start"
            );
        }
        self.update_pending();
        self.stats.report()
    }
}
