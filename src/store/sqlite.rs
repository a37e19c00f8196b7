//! The SQLite backend, the embedded default: the shared implementation
//! ([`sql_store`](super::sql_store)) over a SQLite file, with times as
//! integer milliseconds since the Unix epoch and lists as JSON text (see
//! migrations/sqlite).

use std::str::FromStr;

use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow,
};

use super::backend::StoreOptions;
use super::redact_url;
use super::sql_store::sql_store;
use super::url::scrub_secret;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

const BACKEND: &str = "sqlite";

type Rating = i64;

sql_store! {
    store: SqliteStore,
    pool: SqlitePool,
    row: SqliteRow,
    conn: SqliteConnection,
    backend: Backend::Sqlite,
    dir: "sqlite",
}

/// A SQLite database file holding the conversation store.
pub struct SqliteStore {
    pool: SqlitePool,
    url: String,
    call_timeout: std::time::Duration,
}

impl SqliteStore {
    pub async fn connect(url: &str, options: &StoreOptions) -> Result<Self> {
        let shown = redact_url(url);
        let connect_err = |e: sqlx::Error| Error::Connect {
            url: shown.clone(),
            reason: scrub_secret(&e.to_string(), url),
        };
        let opts = SqliteConnectOptions::from_str(url)
            .map_err(connect_err)?
            // Readers (export, stats) must not wait for the writer.
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(options.acquire_timeout)
            .foreign_keys(true);
        let file = opts.get_filename().to_path_buf();
        let in_memory = file.as_os_str().is_empty() || file.as_os_str() == ":memory:";
        if !in_memory {
            if let Some(dir) = file.parent()
                && !dir.as_os_str().is_empty()
                && !dir.exists()
            {
                std::fs::create_dir_all(dir).map_err(super::io_err(dir))?;
            }
            // The file holds the same text as the 0600 spill file.
            crate::fsio::create_private(&file).map_err(super::io_err(&file))?;
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            .connect_with(opts)
            .await
            .map_err(connect_err)?;
        if !in_memory {
            // WAL and shared-memory files are created by SQLite itself
            // with the database file's mode.
            crate::fsio::restrict_to_owner(&file).map_err(super::io_err(&file))?;
        }
        Ok(Self {
            pool,
            url: shown,
            call_timeout: options.call_timeout,
        })
    }
}

/// Whether a database error means "try again later" rather than "bad data".
fn transient(code: &str) -> bool {
    // Primary result codes: BUSY, LOCKED, IOERR, FULL (disk), CANTOPEN.
    code.parse::<i32>()
        .is_ok_and(|c| matches!(c & 0xFF, 5 | 6 | 10 | 13 | 14))
}

fn db_time(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn millis(ms: i64) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms).ok_or_else(|| corrupt("time", &ms.to_string()))
}

fn time(row: &SqliteRow, col: &str) -> Result<DateTime<Utc>> {
    millis(row.try_get(col).map_err(read_err)?)
}

fn opt_time(row: &SqliteRow, col: &str) -> Result<Option<DateTime<Utc>>> {
    let v: Option<i64> = row.try_get(col).map_err(read_err)?;
    v.map(millis).transpose()
}

fn db_list(items: &[String]) -> Result<String> {
    serde_json::to_string(items).map_err(|e| read_err(sqlx::Error::Encode(e.into())))
}

/// A run of messages, one statement each (SQLite has no array parameters;
/// within the transaction, the statements are cheap).
async fn insert_run(conn: &mut SqliteConnection, run: &[Record]) -> Result<()> {
    for r in run {
        insert(conn, r).await?;
    }
    Ok(())
}
