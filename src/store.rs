//! The conversation store: every conversation, message, moderation event
//! and piece of feedback, in Postgres (`postgres://…`) or an embedded SQLite
//! file (`sqlite://…`), and the curated fine-tuning export made from it.
//!
//! The pipeline never waits on the database: it hands records to a
//! [`Writer`] (a bounded queue and a task that writes them in batches). When
//! the database is unreachable, records go to an append-only spill file and
//! are replayed, in order, when it returns; every record carries a unique id
//! and inserts are idempotent, so a replay never duplicates anything.
//! Platform user ids are stored only as keyed hashes ([`UserKeyHasher`]).

mod backend;
pub mod bench;
pub mod export;
mod id;
mod inbox;
mod operator;
mod postgres;
mod record;
pub mod retention;
mod spill;
mod sql_store;
mod sqlite;
pub mod stats;
mod url;
mod user_key;
mod writer;

pub use backend::{
    Backend, CONSOLE_SCHEMA, ConversationStore, DATA_PROTECTION_SCHEMA, INBOX_SCHEMA,
    OPERATORS_SCHEMA, ReviewItem, StoreFuture, StoreOptions, StoredConversation, connect,
    connect_and_migrate, require_schema_version,
};
pub use export::{ExportFilter, ExportFormat, ExportReport, export_jsonl, parse_time};
pub use id::{new_id, now_ms};
pub use inbox::InboundUpdate;
pub use operator::OperatorRow;
pub use postgres::PgStore;
pub use record::{
    ConversationRecord, ConversationUpdate, FeedbackRecord, Grounding, Handoff, Limits,
    MessageRecord, ModerationRecord, Record, ReplyKind, Review, ReviewDecision, Verdict,
};
pub use retention::{AuditEvent, Deleted, KeyCheck};
pub use sqlite::SqliteStore;
pub use stats::{Stats, StatsRow};
pub use url::{DEFAULT_SQLITE_URL, default_database_url, redact_url, with_database};
pub use user_key::{USER_KEY_SECRET_ENV, UserKey, UserKeyHasher};
pub use writer::{FlushOutcome, Writer, WriterConfig, WriterHandle, WriterReport, WriterStats};

/// What `[store] redact_at_rest` redacts unless configured: card numbers,
/// which PCI DSS forbids storing in the clear.
pub const DEFAULT_REDACT_AT_REST: &[&str] = &["card"];

/// Errors of the store stage. Messages never hold a database password or the
/// user-key secret.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database could not be reached; the writer spills and retries.
    #[error("{backend} database unavailable: {reason}")]
    Unavailable {
        backend: &'static str,
        reason: String,
    },
    /// The database refused the data (a constraint, an invalid value);
    /// retrying will not help.
    #[error("{backend} database rejected the record: {reason}")]
    Rejected {
        backend: &'static str,
        reason: String,
    },
    /// A read or schema operation failed.
    #[error("{backend} database error: {reason}")]
    Database {
        backend: &'static str,
        reason: String,
    },
    #[error("cannot connect to {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("unsupported database URL {url}: expected postgres://… or sqlite://…")]
    UnsupportedUrl { url: String },
    #[error("migrating {url}: {reason}")]
    Migrate { url: String, reason: String },
    #[error(
        "the database at {url} has no chatforge schema, or an older one; run `chatforge db migrate --database-url <url>`"
    )]
    NotMigrated { url: String },
    /// A record that breaks a limit or is malformed; nothing was queued.
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("{USER_KEY_SECRET_ENV}: {0}")]
    Secret(String),
    #[error("the store writer has shut down; the record was not queued")]
    WriterClosed,
    /// Neither the database nor the spill file keeps up with the records.
    #[error("the store queue is full ({0} records); the record was not queued")]
    QueueFull(u64),
    #[error("the store writer task failed: {0}")]
    WriterTask(String),
    #[error("spill file {path}: {reason}")]
    Spill { path: String, reason: String },
    #[error(transparent)]
    Io(#[from] crate::fsio::IoError),
    #[error(transparent)]
    Write(#[from] crate::fsio::WriteError),
    #[error(transparent)]
    Pattern(#[from] crate::text::pii::PatternError),
}

impl Error {
    /// Whether retrying later may succeed (the database was unreachable).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::Unavailable { .. })
    }
}

pub type Result<T> = std::result::Result<T, Error>;

pub(crate) use crate::fsio::io_err;
