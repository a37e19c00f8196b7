//! The SQLite backend: the embedded default. Times are stored as integer
//! milliseconds since the Unix epoch (see migrations/sqlite).

use std::collections::HashMap;
use std::str::FromStr;

use chrono::{DateTime, Utc};

use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow,
};

use super::backend::{Backend, ConversationStore, StoreFuture, StoreOptions, StoredConversation};
use super::export::ExportFilter;
use super::record::{
    ConversationRecord, FeedbackRecord, Handoff, MessageRecord, ModerationRecord, Record,
    parse_role, role_str,
};
use super::stats::{Stats, StatsParts};
use super::url::scrub_secret;
use super::{Error, Result, UserKey, redact_url};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

const BACKEND: &str = "sqlite";

/// A SQLite database file holding the conversation store.
pub struct SqliteStore {
    pool: SqlitePool,
    url: String,
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
        let file = opts.get_filename();
        if let Some(dir) = file.parent()
            && !dir.as_os_str().is_empty()
            && !dir.exists()
            && !file.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(super::io_err(dir))?;
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            .connect_with(opts)
            .await
            .map_err(connect_err)?;
        Ok(Self { pool, url: shown })
    }

    /// The pool, for queries this module does not offer.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    async fn load_messages(&self, ids: &[String]) -> Result<HashMap<String, Vec<MessageRecord>>> {
        let ids =
            serde_json::to_string(ids).map_err(|e| read_err(sqlx::Error::Encode(e.into())))?;
        let rows = sqlx::query(include_str!("sql/sqlite/select_messages.sql"))
            .bind(ids)
            .fetch_all(&self.pool)
            .await
            .map_err(read_err)?;
        let mut out: HashMap<String, Vec<MessageRecord>> = HashMap::new();
        for row in &rows {
            let m = message_from_row(row)?;
            out.entry(m.conversation_id.clone()).or_default().push(m);
        }
        Ok(out)
    }
}

/// Whether a database error means "try again later" rather than "bad data".
fn transient(code: &str) -> bool {
    // Primary result codes: BUSY, LOCKED, IOERR, FULL (disk), CANTOPEN.
    code.parse::<i32>()
        .is_ok_and(|c| matches!(c & 0xFF, 5 | 6 | 10 | 13 | 14))
}

/// Classifies an error from a statement of the write path.
fn write_err(record: &Record, e: sqlx::Error) -> Error {
    let reason = format!("{} {}: {e}", record.kind(), record.id());
    let is_transient = match &e {
        sqlx::Error::Database(db) => db.code().is_some_and(|c| transient(&c)),
        sqlx::Error::Encode(_) | sqlx::Error::Decode(_) | sqlx::Error::InvalidArgument(_) => false,
        _ => true,
    };
    if is_transient {
        Error::Unavailable {
            backend: BACKEND,
            reason,
        }
    } else {
        Error::Rejected {
            backend: BACKEND,
            reason,
        }
    }
}

fn unavailable(e: sqlx::Error) -> Error {
    Error::Unavailable {
        backend: BACKEND,
        reason: e.to_string(),
    }
}

fn read_err(e: sqlx::Error) -> Error {
    Error::Database {
        backend: BACKEND,
        reason: e.to_string(),
    }
}

fn corrupt(what: &str, value: &str) -> Error {
    Error::Database {
        backend: BACKEND,
        reason: format!("unexpected {what} {value:?} in the database"),
    }
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

fn to_u32(v: Option<i64>) -> Option<u32> {
    v.and_then(|v| u32::try_from(v).ok())
}

fn scores_json(m: &MessageRecord) -> Option<String> {
    if m.scores.is_empty() {
        None
    } else {
        serde_json::to_string(&m.scores).ok()
    }
}

async fn insert(conn: &mut SqliteConnection, record: &Record) -> Result<()> {
    let fail = |e| write_err(record, e);
    match record {
        Record::Conversation(c) => {
            sqlx::query(include_str!("sql/sqlite/insert_conversation.sql"))
                .bind(&c.id)
                .bind(&c.platform)
                .bind(&c.channel)
                .bind(c.user_key.as_str())
                .bind(c.started_at.timestamp_millis())
                .bind(c.topic.as_deref())
                .bind(c.style.as_deref())
                .execute(&mut *conn)
                .await
                .map_err(fail)?;
        }
        Record::Update(u) => {
            let done = sqlx::query(include_str!("sql/sqlite/update_conversation.sql"))
                .bind(&u.conversation_id)
                .bind(u.ended)
                .bind(u.at.timestamp_millis())
                .bind(u.handoff.map(Handoff::as_str))
                .bind(u.topic.as_deref())
                .bind(u.style.as_deref())
                .execute(&mut *conn)
                .await
                .map_err(fail)?;
            if done.rows_affected() == 0 {
                return Err(Error::Rejected {
                    backend: BACKEND,
                    reason: format!("update {}: no conversation {}", u.id, u.conversation_id),
                });
            }
        }
        Record::Message(m) => {
            sqlx::query(include_str!("sql/sqlite/insert_message.sql"))
                .bind(&m.id)
                .bind(&m.conversation_id)
                .bind(role_str(m.role))
                .bind(&m.content)
                .bind(m.created_at.timestamp_millis())
                .bind(m.model_version.as_deref())
                .bind(m.latency_ms.map(i64::from))
                .bind(m.prompt_tokens.map(i64::from))
                .bind(m.completion_tokens.map(i64::from))
                .bind(m.verdict.map(|v| v.as_str()))
                .bind(scores_json(m))
                .execute(&mut *conn)
                .await
                .map_err(fail)?;
        }
        Record::Moderation(e) => {
            sqlx::query(include_str!("sql/sqlite/insert_moderation.sql"))
                .bind(&e.id)
                .bind(&e.conversation_id)
                .bind(e.message_id.as_deref())
                .bind(e.created_at.timestamp_millis())
                .bind(&e.category)
                .bind(e.score)
                .bind(e.verdict.as_str())
                .bind(e.detail.as_deref())
                .execute(&mut *conn)
                .await
                .map_err(fail)?;
        }
        Record::Feedback(f) => {
            sqlx::query(include_str!("sql/sqlite/insert_feedback.sql"))
                .bind(&f.id)
                .bind(&f.conversation_id)
                .bind(f.message_id.as_deref())
                .bind(i64::from(f.rating))
                .bind(f.comment.as_deref())
                .bind(f.user_key.as_str())
                .bind(f.created_at.timestamp_millis())
                .execute(&mut *conn)
                .await
                .map_err(fail)?;
        }
    }
    Ok(())
}

fn conversation_from_row(row: &SqliteRow) -> Result<StoredConversation> {
    let get_err = read_err;
    let handoff: String = row.try_get("handoff_state").map_err(get_err)?;
    Ok(StoredConversation {
        record: ConversationRecord {
            id: row.try_get("id").map_err(get_err)?,
            platform: row.try_get("platform").map_err(get_err)?,
            channel: row.try_get("channel").map_err(get_err)?,
            user_key: UserKey::from_stored(row.try_get("user_key").map_err(get_err)?),
            started_at: time(row, "started_at")?,
            topic: row.try_get("topic").map_err(get_err)?,
            style: row.try_get("style").map_err(get_err)?,
        },
        ended_at: opt_time(row, "ended_at")?,
        handoff: Handoff::parse(&handoff).ok_or_else(|| corrupt("handoff state", &handoff))?,
        handoff_at: opt_time(row, "handoff_at")?,
        messages: Vec::new(),
    })
}

fn message_from_row(row: &SqliteRow) -> Result<MessageRecord> {
    let role: String = row.try_get("role").map_err(read_err)?;
    let verdict: Option<String> = row.try_get("moderation_verdict").map_err(read_err)?;
    let scores: Option<String> = row.try_get("moderation_scores").map_err(read_err)?;
    Ok(MessageRecord {
        id: row.try_get("id").map_err(read_err)?,
        conversation_id: row.try_get("conversation_id").map_err(read_err)?,
        role: parse_role(&role).ok_or_else(|| corrupt("role", &role))?,
        content: row.try_get("content").map_err(read_err)?,
        created_at: time(row, "created_at")?,
        model_version: row.try_get("model_version").map_err(read_err)?,
        latency_ms: to_u32(row.try_get("latency_ms").map_err(read_err)?),
        prompt_tokens: to_u32(row.try_get("prompt_tokens").map_err(read_err)?),
        completion_tokens: to_u32(row.try_get("completion_tokens").map_err(read_err)?),
        verdict: match verdict {
            Some(v) => Some(super::Verdict::parse(&v).ok_or_else(|| corrupt("verdict", &v))?),
            None => None,
        },
        scores: match scores {
            Some(s) => serde_json::from_str(&s).map_err(|_| corrupt("scores", &s))?,
            None => Default::default(),
        },
    })
}

fn feedback_from_row(row: &SqliteRow) -> Result<FeedbackRecord> {
    let rating: i64 = row.try_get("rating").map_err(read_err)?;
    Ok(FeedbackRecord {
        id: row.try_get("id").map_err(read_err)?,
        conversation_id: row.try_get("conversation_id").map_err(read_err)?,
        message_id: row.try_get("message_id").map_err(read_err)?,
        rating: u8::try_from(rating).map_err(|_| corrupt("rating", &rating.to_string()))?,
        comment: row.try_get("comment").map_err(read_err)?,
        user_key: UserKey::from_stored(row.try_get("user_key").map_err(read_err)?),
        created_at: time(row, "created_at")?,
    })
}

fn moderation_from_row(row: &SqliteRow) -> Result<ModerationRecord> {
    let verdict: String = row.try_get("verdict").map_err(read_err)?;
    Ok(ModerationRecord {
        id: row.try_get("id").map_err(read_err)?,
        conversation_id: row.try_get("conversation_id").map_err(read_err)?,
        message_id: row.try_get("message_id").map_err(read_err)?,
        created_at: time(row, "created_at")?,
        category: row.try_get("category").map_err(read_err)?,
        score: row.try_get("score").map_err(read_err)?,
        verdict: super::Verdict::parse(&verdict).ok_or_else(|| corrupt("verdict", &verdict))?,
        detail: row.try_get("detail").map_err(read_err)?,
    })
}

async fn stats_rows(
    pool: &SqlitePool,
    sql: &'static str,
    cols: &[&str],
) -> Result<Vec<(String, String, Vec<i64>)>> {
    let rows = sqlx::query(sql).fetch_all(pool).await.map_err(read_err)?;
    rows.iter()
        .map(|r| super::stats::decode_stats_row(r, cols).map_err(read_err))
        .collect()
}

impl ConversationStore for SqliteStore {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    fn display_url(&self) -> &str {
        &self.url
    }

    fn migrate(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            MIGRATOR.run(&self.pool).await.map_err(|e| Error::Migrate {
                url: self.url.clone(),
                reason: e.to_string(),
            })
        })
    }

    fn schema_version(&self) -> StoreFuture<'_, Option<i64>> {
        Box::pin(async move {
            let present: bool =
                sqlx::query_scalar(include_str!("sql/sqlite/has_migrations_table.sql"))
                    .fetch_one(&self.pool)
                    .await
                    .map_err(read_err)?;
            if !present {
                return Ok(None);
            }
            sqlx::query_scalar(include_str!("sql/sqlite/schema_version.sql"))
                .fetch_one(&self.pool)
                .await
                .map_err(read_err)
        })
    }

    fn write_batch<'a>(&'a self, records: &'a [Record]) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            if records.is_empty() {
                return Ok(());
            }
            // Failing to get a connection or to commit is the database's
            // state, never the data's.
            let mut tx = self.pool.begin().await.map_err(unavailable)?;
            for r in records {
                insert(&mut tx, r).await?;
            }
            tx.commit().await.map_err(unavailable)
        })
    }

    fn conversation<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<StoredConversation>> {
        Box::pin(async move {
            let row = sqlx::query(include_str!("sql/sqlite/select_conversation.sql"))
                .bind(id)
                .fetch_optional(&self.pool)
                .await
                .map_err(read_err)?;
            let Some(row) = row else { return Ok(None) };
            let mut c = conversation_from_row(&row)?;
            let mut msgs = self.load_messages(&[id.to_string()]).await?;
            c.messages = msgs.remove(id).unwrap_or_default();
            Ok(Some(c))
        })
    }

    fn feedback<'a>(&'a self, conversation_id: &'a str) -> StoreFuture<'a, Vec<FeedbackRecord>> {
        Box::pin(async move {
            let rows = sqlx::query(include_str!("sql/sqlite/select_feedback.sql"))
                .bind(conversation_id)
                .fetch_all(&self.pool)
                .await
                .map_err(read_err)?;
            rows.iter().map(feedback_from_row).collect()
        })
    }

    fn moderation_events<'a>(
        &'a self,
        conversation_id: &'a str,
    ) -> StoreFuture<'a, Vec<ModerationRecord>> {
        Box::pin(async move {
            let rows = sqlx::query(include_str!("sql/sqlite/select_moderation.sql"))
                .bind(conversation_id)
                .fetch_all(&self.pool)
                .await
                .map_err(read_err)?;
            rows.iter().map(moderation_from_row).collect()
        })
    }

    fn select<'a>(
        &'a self,
        filter: &'a ExportFilter,
        after: Option<&'a str>,
        limit: u32,
    ) -> StoreFuture<'a, Vec<StoredConversation>> {
        Box::pin(async move {
            let platforms = serde_json::to_string(&filter.platforms)
                .map_err(|e| read_err(sqlx::Error::Encode(e.into())))?;
            let rows = sqlx::query(include_str!("sql/sqlite/select_page.sql"))
                .bind(after)
                .bind(filter.since.map(|t| t.timestamp_millis()))
                .bind(filter.until.map(|t| t.timestamp_millis()))
                .bind(platforms)
                .bind(filter.exclude_handoff)
                .bind(filter.exclude_flagged)
                .bind(filter.min_rating)
                .bind(i64::from(filter.min_turns))
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await
                .map_err(read_err)?;
            let mut out = rows
                .iter()
                .map(conversation_from_row)
                .collect::<Result<Vec<_>>>()?;
            let ids: Vec<String> = out.iter().map(|c| c.record.id.clone()).collect();
            let mut msgs = self.load_messages(&ids).await?;
            for c in &mut out {
                c.messages = msgs.remove(&c.record.id).unwrap_or_default();
            }
            Ok(out)
        })
    }

    fn stats(&self) -> StoreFuture<'_, Stats> {
        Box::pin(async move {
            let p = &self.pool;
            Ok(Stats::merge(StatsParts {
                conversations: stats_rows(
                    p,
                    include_str!("sql/sqlite/stats_conversations.sql"),
                    &["conversations", "handoffs"],
                )
                .await?,
                messages: stats_rows(
                    p,
                    include_str!("sql/sqlite/stats_messages.sql"),
                    &[
                        "messages",
                        "user_messages",
                        "assistant_messages",
                        "flagged",
                        "latency_sum",
                        "latency_count",
                    ],
                )
                .await?,
                feedback: stats_rows(
                    p,
                    include_str!("sql/sqlite/stats_feedback.sql"),
                    &["feedback", "rating_sum", "positive"],
                )
                .await?,
                moderation: stats_rows(
                    p,
                    include_str!("sql/sqlite/stats_moderation.sql"),
                    &["events", "actions"],
                )
                .await?,
            }))
        })
    }

    fn close(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            self.pool.close().await;
            Ok(())
        })
    }
}
