//! The Postgres backend (production): the shared implementation
//! ([`sql_store`](super::sql_store)) over a Postgres pool, `timestamptz`
//! times and array parameters.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::{ConnectOptions, Connection};

use super::backend::StoreOptions;
use super::redact_url;
use super::sql_store::sql_store;
use super::url::scrub_secret;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

const BACKEND: &str = "postgres";

type Rating = i16;

sql_store! {
    store: PgStore,
    pool: PgPool,
    row: PgRow,
    conn: PgConnection,
    backend: Backend::Postgres,
    dir: "postgres",
}

/// A Postgres connection pool holding the conversation store.
pub struct PgStore {
    pool: PgPool,
    url: String,
    call_timeout: std::time::Duration,
}

impl PgStore {
    pub async fn connect(url: &str, options: &StoreOptions) -> Result<Self> {
        let shown = redact_url(url);
        let connect_err = |e: sqlx::Error| Error::Connect {
            url: shown.clone(),
            reason: scrub_secret(&e.to_string(), url),
        };
        let opts = PgConnectOptions::from_str(url)
            .map_err(connect_err)?
            .application_name("chatforge");
        // The pool reports a refused connection or a bad password only as a
        // time-out; one direct connection first gives the real reason.
        match tokio::time::timeout(options.acquire_timeout, opts.connect()).await {
            Ok(Ok(conn)) => {
                let _ = conn.close().await;
            }
            Ok(Err(e)) => return Err(connect_err(e)),
            Err(_) => {
                return Err(Error::Connect {
                    url: shown.clone(),
                    reason: format!("no answer within {:?}", options.acquire_timeout),
                });
            }
        }
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            .connect_with(opts)
            .await
            .map_err(connect_err)?;
        Ok(Self {
            pool,
            url: shown,
            call_timeout: options.call_timeout,
        })
    }
}

/// Whether a database error means "try again later" rather than "bad data".
fn transient(code: &str) -> bool {
    // 08: connection exception, 53: insufficient resources, 57P: shutdown or
    // start-up in progress, 58: system I/O error, 40001/40P01: retryable
    // transaction conflicts.
    code.starts_with("08")
        || code.starts_with("53")
        || code.starts_with("57P")
        || code.starts_with("58")
        || code == "40001"
        || code == "40P01"
}

fn db_time(t: DateTime<Utc>) -> DateTime<Utc> {
    t
}

fn time(row: &PgRow, col: &str) -> Result<DateTime<Utc>> {
    row.try_get(col).map_err(read_err)
}

fn opt_time(row: &PgRow, col: &str) -> Result<Option<DateTime<Utc>>> {
    row.try_get(col).map_err(read_err)
}

fn db_list(items: &[String]) -> Result<Vec<String>> {
    Ok(items.to_vec())
}

/// Inserts `run` (messages only) in one statement, in order.
async fn insert_run(conn: &mut PgConnection, run: &[Record]) -> Result<()> {
    let msgs: Vec<&MessageRecord> = run
        .iter()
        .filter_map(|r| match r {
            Record::Message(m) => Some(m),
            _ => None,
        })
        .collect();
    let col =
        |f: fn(&MessageRecord) -> Option<String>| msgs.iter().copied().map(f).collect::<Vec<_>>();
    let num = |f: fn(&MessageRecord) -> Option<u32>| {
        msgs.iter().map(|m| f(m).map(i64::from)).collect::<Vec<_>>()
    };
    sqlx::query(sql!("insert_messages"))
        .bind(col(|m| Some(m.id.clone())))
        .bind(col(|m| Some(m.conversation_id.clone())))
        .bind(col(|m| Some(role_str(m).to_string())))
        .bind(col(|m| Some(m.content.clone())))
        .bind(msgs.iter().map(|m| m.created_at).collect::<Vec<_>>())
        .bind(col(|m| m.model_version.clone()))
        .bind(num(|m| m.latency_ms))
        .bind(num(|m| m.prompt_tokens))
        .bind(num(|m| m.completion_tokens))
        .bind(col(|m| m.verdict.map(|v| v.as_str().to_string())))
        .bind(col(scores_json))
        .bind(col(reply_kind))
        .bind(col(passages_json))
        .bind(msgs.iter().map(|m| confidence(m)).collect::<Vec<_>>())
        .bind(col(|m| m.operator_id.clone()))
        .execute(&mut *conn)
        .await
        .map_err(|e| write_err(&run[0], e))?;
    Ok(())
}
