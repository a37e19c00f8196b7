//! The storage trait both backends implement, and opening one from a URL.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::UserKey;
use super::export::ExportFilter;
use super::inbox::InboundUpdate;
use super::operator::OperatorRow;
use super::record::{
    ConversationRecord, FeedbackRecord, Handoff, MessageRecord, ModerationRecord, Review,
};
use super::retention::{AuditEvent, Deleted};
use super::stats::Stats;
use super::{Error, PgStore, Record, Result, SqliteStore, redact_url};

/// A boxed future, so the trait stays usable as `dyn ConversationStore`.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Postgres => "postgres",
            Backend::Sqlite => "sqlite",
        }
    }
}

/// A conversation as stored, with its messages in the order they were logged.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredConversation {
    pub record: ConversationRecord,
    pub ended_at: Option<DateTime<Utc>>,
    pub handoff: Handoff,
    pub handoff_at: Option<DateTime<Utc>>,
    /// The operator (id) holding a handed-off conversation.
    pub claimed_by: Option<String>,
    pub messages: Vec<MessageRecord>,
}

/// A bot reply waiting in the review queue, and why it is there.
#[derive(Debug, Clone, PartialEq)]
pub struct ReviewItem {
    pub message: MessageRecord,
    pub platform: String,
    /// `blocked` (moderation replaced it), `thumbs_down`, `guard_replaced`
    /// (the fact guard sent the passage's sentences instead) or `sample`.
    pub reason: String,
}

/// Connection settings.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub max_connections: u32,
    /// How long a write waits for a connection before the database counts as
    /// unreachable (and the writer spills).
    pub acquire_timeout: Duration,
    /// Longest wait for any one call (a write batch, a read): a database
    /// that hangs counts as unreachable after it.
    pub call_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_connections: 8,
            acquire_timeout: Duration::from_secs(5),
            call_timeout: Duration::from_secs(5),
        }
    }
}

/// Where conversations live. Implemented for Postgres ([`PgStore`]) and
/// SQLite ([`SqliteStore`]); the pipeline writes through a
/// [`Writer`](super::Writer), not directly.
pub trait ConversationStore: Send + Sync {
    fn backend(&self) -> Backend;

    /// The database URL with any password replaced by `***`.
    fn display_url(&self) -> &str;

    /// Applies the embedded migrations that are not applied yet.
    fn migrate(&self) -> StoreFuture<'_, ()>;

    /// The newest applied migration, `None` on a database without the schema.
    fn schema_version(&self) -> StoreFuture<'_, Option<i64>>;

    /// Stores `records` in one transaction, in order. A record already stored
    /// (same id) is skipped, so replays are harmless. Fails as a whole:
    /// [`Error::Unavailable`] when the database cannot be reached,
    /// [`Error::Rejected`] when it refuses a record.
    fn write_batch<'a>(&'a self, records: &'a [Record]) -> StoreFuture<'a, ()>;

    fn conversation<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<StoredConversation>>;

    fn feedback<'a>(&'a self, conversation_id: &'a str) -> StoreFuture<'a, Vec<FeedbackRecord>>;

    fn moderation_events<'a>(
        &'a self,
        conversation_id: &'a str,
    ) -> StoreFuture<'a, Vec<ModerationRecord>>;

    /// Up to `limit` conversations passing `filter` whose id sorts after
    /// `after`, in id (= start) order, with their messages.
    fn select<'a>(
        &'a self,
        filter: &'a ExportFilter,
        after: Option<&'a str>,
        limit: u32,
    ) -> StoreFuture<'a, Vec<StoredConversation>>;

    /// Ids of conversations with no row at or after `before` (idle since
    /// before it), sorting after `after`, in id order, at most `limit`.
    fn idle_conversations<'a>(
        &'a self,
        before: DateTime<Utc>,
        after: Option<&'a str>,
        limit: u32,
    ) -> StoreFuture<'a, Vec<String>>;

    /// Ids of the conversations of one user on one platform, in id order.
    fn user_conversations<'a>(
        &'a self,
        platform: &'a str,
        user: &'a UserKey,
    ) -> StoreFuture<'a, Vec<String>>;

    /// Deletes the conversations `ids` with their messages, feedback and
    /// moderation events, and any feedback `rater` gave, in one
    /// transaction; `dry_run` only counts the rows.
    fn delete_conversations<'a>(
        &'a self,
        ids: &'a [String],
        rater: Option<&'a UserKey>,
        dry_run: bool,
    ) -> StoreFuture<'a, Deleted>;

    /// A value of the `store_settings` table.
    fn setting<'a>(&'a self, name: &'a str) -> StoreFuture<'a, Option<String>>;

    /// Sets a setting unless it is set already.
    fn set_setting_once<'a>(&'a self, name: &'a str, value: &'a str) -> StoreFuture<'a, ()>;

    fn write_audit<'a>(&'a self, event: &'a AuditEvent) -> StoreFuture<'a, ()>;

    /// The newest `limit` audit events, newest first.
    fn audit_events(&self, limit: u32) -> StoreFuture<'_, Vec<AuditEvent>>;

    /// Adds an operator; `false` when the name is taken.
    fn insert_operator<'a>(&'a self, row: &'a OperatorRow) -> StoreFuture<'a, bool>;

    /// Every operator by name, or the one named `name`.
    fn operators<'a>(&'a self, name: Option<&'a str>) -> StoreFuture<'a, Vec<OperatorRow>>;

    /// Writes an operator's password and login state (by id); `false` when
    /// the account is gone.
    fn update_operator<'a>(&'a self, row: &'a OperatorRow) -> StoreFuture<'a, bool>;

    /// Removes an operator; `false` when there was none by that name.
    fn delete_operator<'a>(&'a self, name: &'a str) -> StoreFuture<'a, bool>;

    /// Conversations waiting for or with a human (handoff `requested` or
    /// `active`), the longest waiting first, without their messages.
    fn handoff_queue(&self, limit: u32) -> StoreFuture<'_, Vec<StoredConversation>>;

    /// The conversation of a platform chat that waits for or is with a
    /// human, without its messages.
    fn open_handoff<'a>(
        &'a self,
        platform: &'a str,
        channel: &'a str,
    ) -> StoreFuture<'a, Option<StoredConversation>>;

    /// Gives a conversation waiting for a human to `operator`: `false` when
    /// it is not waiting or another operator holds it (one statement, so
    /// two operators, even on two replicas, cannot both claim it).
    fn claim<'a>(&'a self, conversation_id: &'a str, operator: &'a str) -> StoreFuture<'a, bool>;

    /// Hands a conversation back to the bot (`resolved`, nobody holds it);
    /// `false` when it was with no human.
    fn release<'a>(&'a self, conversation_id: &'a str) -> StoreFuture<'a, bool>;

    /// The conversation of a bot reply (`None`: no such reply).
    fn message_conversation<'a>(&'a self, message_id: &'a str) -> StoreFuture<'a, Option<String>>;

    /// Stores an operator's review of a reply, replacing an earlier one.
    fn write_review<'a>(&'a self, review: &'a Review) -> StoreFuture<'a, ()>;

    /// Bot replies nobody reviewed yet that moderation blocked, that were
    /// rated 👎, that the fact guard replaced, and one in `sample_every` of
    /// the rest; those with a reason first, newest first.
    fn review_queue(&self, sample_every: u32, limit: u32) -> StoreFuture<'_, Vec<ReviewItem>>;

    /// The audit events about one conversation, oldest first.
    fn conversation_audit<'a>(
        &'a self,
        conversation_id: &'a str,
    ) -> StoreFuture<'a, Vec<AuditEvent>>;

    /// Counts per day and platform.
    /// Keeps a pushed update, acknowledged by `replica`; false when it was
    /// kept already (the platform resent it).
    fn accept_update<'a>(
        &'a self,
        update: &'a InboundUpdate,
        replica: &'a str,
    ) -> StoreFuture<'a, bool>;

    /// The chat's oldest unanswered update.
    fn next_update<'a>(
        &'a self,
        platform: &'a str,
        chat: &'a str,
    ) -> StoreFuture<'a, Option<InboundUpdate>>;

    /// Notes the ids of the messages sent so far in answer to an update
    /// (all of them, oldest first), so that answering it again edits them.
    fn note_sent<'a>(
        &'a self,
        platform: &'a str,
        update_id: i64,
        sent: &'a [i64],
    ) -> StoreFuture<'a, ()>;

    /// Marks an update answered and drops its payload.
    fn finish_update<'a>(&'a self, platform: &'a str, update_id: i64) -> StoreFuture<'a, ()>;

    /// Takes (or renews) the right to answer a chat until `until`: true when
    /// `replica` holds it now; false while another replica's lease lives.
    fn lease_chat<'a>(
        &'a self,
        platform: &'a str,
        chat: &'a str,
        replica: &'a str,
        until: DateTime<Utc>,
    ) -> StoreFuture<'a, bool>;

    /// Gives a chat back (only when `replica` holds it).
    fn release_chat<'a>(
        &'a self,
        platform: &'a str,
        chat: &'a str,
        replica: &'a str,
    ) -> StoreFuture<'a, ()>;

    /// Chats with unanswered updates that no live replica answers (or that
    /// `replica` held in an earlier life).
    fn waiting_chats<'a>(
        &'a self,
        platform: &'a str,
        replica: &'a str,
        limit: u32,
    ) -> StoreFuture<'a, Vec<String>>;

    /// The chat's newest conversation that has not ended, with its
    /// messages (what a replica that does not hold the chat continues).
    fn open_conversation<'a>(
        &'a self,
        platform: &'a str,
        channel: &'a str,
    ) -> StoreFuture<'a, Option<StoredConversation>>;

    /// Deletes every update kept from one chat, answered or not (with
    /// `dry_run`, only counts them); returns how many.
    fn forget_chat_updates<'a>(
        &'a self,
        platform: &'a str,
        chat: &'a str,
        dry_run: bool,
    ) -> StoreFuture<'a, u64>;

    /// Deletes answered updates older than `before`; returns how many.
    fn purge_updates(&self, before: DateTime<Utc>) -> StoreFuture<'_, u64>;

    fn stats(&self) -> StoreFuture<'_, Stats>;

    /// Closes the connections.
    fn close(&self) -> StoreFuture<'_, ()>;
}

/// Opens the store at `url` (`postgres://…`, `postgresql://…` or `sqlite:…`).
pub async fn connect(url: &str, options: &StoreOptions) -> Result<Arc<dyn ConversationStore>> {
    let lower = url.trim_start().to_ascii_lowercase();
    if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
        Ok(Arc::new(PgStore::connect(url, options).await?))
    } else if lower.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::connect(url, options).await?))
    } else {
        Err(Error::UnsupportedUrl {
            url: redact_url(url),
        })
    }
}

/// Opens the store and applies pending migrations: what `serve` does at
/// start-up.
pub async fn connect_and_migrate(
    url: &str,
    options: &StoreOptions,
) -> Result<Arc<dyn ConversationStore>> {
    let store = connect(url, options).await?;
    store.migrate().await?;
    Ok(store)
}

/// The schema version with `store_settings` and `audit_events`, which
/// retention, erasure and subject access need.
pub const DATA_PROTECTION_SCHEMA: i64 = 3;

/// The schema version with the `operators` table.
pub const OPERATORS_SCHEMA: i64 = 4;

/// The schema version with operators' messages, claims and `reviews`.
pub const CONSOLE_SCHEMA: i64 = 5;

/// The schema version with the webhook inbox (`inbound_updates`) and the
/// ids of the messages sent in answer to each update.
pub const INBOX_SCHEMA: i64 = 7;

/// Fails with [`Error::NotMigrated`] on a database without the current
/// schema (reads of messages join their reviews).
pub(crate) async fn require_schema(store: &dyn ConversationStore) -> Result<()> {
    require_schema_version(store, CONSOLE_SCHEMA).await
}

/// Fails with [`Error::NotMigrated`] on a database whose schema is older
/// than `min` (or absent).
pub async fn require_schema_version(store: &dyn ConversationStore, min: i64) -> Result<()> {
    match store.schema_version().await? {
        Some(v) if v >= min => Ok(()),
        _ => Err(Error::NotMigrated {
            url: store.display_url().to_string(),
        }),
    }
}
