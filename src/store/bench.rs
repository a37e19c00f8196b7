//! `chatforge bench store`: messages per second through the writer into a
//! backend, with many conversations logging at once, and the enqueue
//! latency callers see. Runs in a scratch database (a fresh Postgres
//! database on the given server, dropped afterwards; or a temporary SQLite
//! file), so a production database is never touched.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use sqlx::Connection;

use super::{
    Error, MessageRecord, Record, Result, StoreOptions, UserKeyHasher, Writer, WriterConfig,
    connect_and_migrate, redact_url, with_database,
};
use crate::bench::percentile;
use crate::text::Role;

#[derive(Debug, Clone, Serialize)]
pub struct StoreBench {
    pub bench: &'static str,
    pub backend: &'static str,
    pub conversations: usize,
    /// Throughput phase: every conversation logs as fast as it can.
    pub messages: u64,
    /// Messages stored per second, from the first enqueue until the writer
    /// has drained.
    pub messages_per_s: f64,
    /// Latency phase: the conversations together log at this steady rate…
    pub paced_rate_per_s: f64,
    pub paced_messages: u64,
    /// …and this is how long `enqueue` took for the caller.
    pub enqueue_p50_us: f64,
    pub enqueue_p99_us: f64,
    pub enqueue_max_us: f64,
}

/// A scratch database on the server of `url`, dropped on [`Scratch::drop_db`].
struct Scratch {
    admin_url: String,
    name: String,
}

impl Scratch {
    async fn create(url: &str) -> Result<(Self, String)> {
        let name = format!("chatforge_bench_{:016x}", rand::random::<u64>());
        let shown = redact_url(url);
        let err = |e: sqlx::Error| Error::Connect {
            url: shown.clone(),
            reason: super::url::scrub_secret(&e.to_string(), url),
        };
        let mut conn = sqlx::PgConnection::connect(url).await.map_err(err)?;
        // The name is made above from hex digits only.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .map_err(err)?;
        let _ = conn.close().await;
        let db_url = with_database(url, &name);
        Ok((
            Self {
                admin_url: url.to_string(),
                name,
            },
            db_url,
        ))
    }

    async fn drop_db(self) {
        match sqlx::PgConnection::connect(&self.admin_url).await {
            Ok(mut conn) => {
                let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
                if let Err(e) = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .execute(&mut conn)
                    .await
                {
                    tracing::warn!(database = %self.name, error = %e, "cannot drop the bench database");
                }
                let _ = conn.close().await;
            }
            Err(e) => {
                tracing::warn!(database = %self.name, error = %e, "cannot drop the bench database")
            }
        }
    }
}

/// What to run: `conversations` logging at once, `messages` each in the
/// throughput phase, then `paced_rate` messages per second in all for
/// `paced_seconds` in the latency phase.
#[derive(Debug, Clone, Copy)]
pub struct BenchPlan {
    pub conversations: usize,
    pub messages: usize,
    pub paced_rate: f64,
    pub paced_seconds: f64,
}

/// Runs the benchmark against the server of `url` (`postgres://…`) or in a
/// temporary SQLite file (`sqlite:` URLs: only the scheme is used).
pub async fn bench_store(url: &str, plan: BenchPlan) -> Result<StoreBench> {
    let dir = tempfile_dir()?;
    let is_pg = url.to_ascii_lowercase().starts_with("postgres");
    let (scratch, db_url) = if is_pg {
        let (s, u) = Scratch::create(url).await?;
        (Some(s), u)
    } else {
        (
            None,
            format!("sqlite://{}?mode=rwc", dir.join("bench.db").display()),
        )
    };
    let result = run(&db_url, &dir, plan).await;
    if let Some(s) = scratch {
        s.drop_db().await;
    }
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn tempfile_dir() -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "chatforge-bench-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).map_err(super::io_err(&dir))?;
    Ok(dir)
}

/// One conversation logging `count` messages, one every `interval` (or as
/// fast as it can); returns the enqueue latencies in µs.
async fn converse(
    h: super::WriterHandle,
    n: usize,
    count: usize,
    interval: Option<Duration>,
) -> Result<Vec<f64>> {
    let conv = h.new_conversation("bench", &format!("channel-{n}"), &format!("user-{n}"));
    let id = conv.id.clone();
    h.enqueue(Record::Conversation(conv))?;
    let mut lat = Vec::with_capacity(count);
    // Spread the conversations' ticks over the interval.
    let mut next = tokio::time::Instant::now()
        + interval.map_or(Duration::ZERO, |i| i.mul_f64(n as f64 / 64.0));
    for i in 0..count {
        if let Some(iv) = interval {
            tokio::time::sleep_until(next).await;
            next += iv;
        }
        let role = if i % 2 == 0 {
            Role::User
        } else {
            Role::Assistant
        };
        let mut m = MessageRecord::new(
            &id,
            role,
            format!("message {i} of conversation {n}: how do I reset my password?"),
        );
        m.latency_ms = Some(120);
        let t = Instant::now();
        h.enqueue(Record::Message(m))?;
        lat.push(t.elapsed().as_secs_f64() * 1e6);
        if interval.is_none() && i % 16 == 15 {
            // Conversations interleave the way concurrent chats do.
            tokio::task::yield_now().await;
        }
    }
    Ok(lat)
}

/// Runs `plan.conversations` conversations at once; (latencies, seconds
/// until the writer drained).
async fn phase(
    store: &Arc<dyn super::ConversationStore>,
    dir: &std::path::Path,
    conversations: usize,
    per_conversation: usize,
    interval: Option<Duration>,
) -> Result<(Vec<f64>, f64)> {
    let writer = Writer::spawn(
        Arc::clone(store),
        UserKeyHasher::ephemeral(),
        WriterConfig::new(dir.join("spill")),
    )?;
    let start = Instant::now();
    let tasks: Vec<_> = (0..conversations)
        .map(|n| tokio::spawn(converse(writer.handle(), n, per_conversation, interval)))
        .collect();
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.map_err(|e| Error::WriterTask(e.to_string()))??);
    }
    let report = writer.shutdown().await?;
    let seconds = start.elapsed().as_secs_f64();
    let want = (conversations * (per_conversation + 1)) as u64;
    if report.written != want {
        return Err(Error::WriterTask(format!(
            "{} of {want} records were stored ({report:?})",
            report.written
        )));
    }
    lat.sort_by(f64::total_cmp);
    Ok((lat, seconds))
}

async fn run(db_url: &str, dir: &std::path::Path, plan: BenchPlan) -> Result<StoreBench> {
    let store = connect_and_migrate(db_url, &StoreOptions::default()).await?;
    let backend = store.backend().name();
    let convs = plan.conversations.max(1);
    let (_, seconds) = phase(&store, dir, convs, plan.messages, None).await?;
    let messages = (convs * plan.messages) as u64;
    let per_conv = ((plan.paced_rate * plan.paced_seconds) / convs as f64).ceil() as usize;
    let interval = Duration::from_secs_f64(convs as f64 / plan.paced_rate.max(1.0));
    let (lat, _) = phase(&store, dir, convs, per_conv.max(1), Some(interval)).await?;
    store.close().await?;
    Ok(StoreBench {
        bench: "store",
        backend,
        conversations: convs,
        messages,
        messages_per_s: messages as f64 / seconds,
        paced_rate_per_s: plan.paced_rate,
        paced_messages: lat.len() as u64,
        enqueue_p50_us: percentile(&lat, 0.50),
        enqueue_p99_us: percentile(&lat, 0.99),
        enqueue_max_us: lat.last().copied().unwrap_or(0.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_percentile() {
        assert_eq!(percentile(&[1.0, 2.0, 3.0], 0.5), 2.0);
    }
}
