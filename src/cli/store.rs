//! `chatforge db …`, `chatforge logs …` and `chatforge bench store`: the
//! conversation store's commands. The database URL comes from
//! `--database-url`, else `DATABASE_URL`, else the embedded SQLite default
//! (`sqlite://runs/chatforge.db?mode=rwc`).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use chatforge::store::{
    self, ExportFilter, ExportFormat, StoreOptions, UserKeyHasher, default_database_url, redact_url,
};
use chatforge::text::{NamedPattern, Redactor};

#[derive(Args)]
pub struct DbUrl {
    /// postgres://user@host/db or sqlite://path.db?mode=rwc [default: $DATABASE_URL, else sqlite://runs/chatforge.db?mode=rwc]
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
}

impl DbUrl {
    fn get(&self) -> String {
        self.database_url
            .clone()
            .filter(|s| !s.trim().is_empty())
            .unwrap_or_else(default_database_url)
    }
}

#[derive(Subcommand)]
pub enum DbCommand {
    /// Create or update the conversation store's schema.
    Migrate {
        #[command(flatten)]
        url: DbUrl,
    },
}

#[derive(Subcommand)]
pub enum LogsCommand {
    /// Write logged conversations as fine-tuning JSONL (PII redacted).
    Export(ExportArgs),
    /// Counts, feedback and moderation rates per platform and day.
    Stats {
        #[command(flatten)]
        url: DbUrl,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Delete conversations idle since before a date, with their messages,
    /// feedback and moderation events (what `[store] retain_days` does daily).
    Purge(PurgeArgs),
    /// Delete everything stored about one platform user (erasure request).
    Forget {
        #[command(flatten)]
        user: UserArgs,
        /// Count what would be deleted; delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Print everything stored about one platform user as JSON (subject access).
    Show {
        #[command(flatten)]
        user: UserArgs,
    },
    /// The newest audit events (purges, erasures), newest first, as JSON lines.
    Audit {
        #[command(flatten)]
        url: DbUrl,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
}

#[derive(Subcommand)]
pub enum OperatorsCommand {
    /// Create an account; prints its one-time password once.
    Add {
        #[command(flatten)]
        url: DbUrl,
        name: String,
    },
    /// Every account: name, created, whether its password is a one-time one, lock.
    List {
        #[command(flatten)]
        url: DbUrl,
        /// JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Delete an account.
    Remove {
        #[command(flatten)]
        url: DbUrl,
        name: String,
    },
    /// A new one-time password (printed once); also lifts a lockout.
    ResetPassword {
        #[command(flatten)]
        url: DbUrl,
        name: String,
    },
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("cutoff").required(true).args(["before", "days"])))]
pub struct PurgeArgs {
    #[command(flatten)]
    url: DbUrl,
    /// Delete conversations with nothing at or after this time (2026-11-01 or RFC 3339, UTC).
    #[arg(long, value_parser = store::parse_time)]
    before: Option<chrono::DateTime<chrono::Utc>>,
    /// Delete conversations idle for more than this many days.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    days: Option<u32>,
    /// Count what would be deleted; delete nothing.
    #[arg(long)]
    dry_run: bool,
}

/// One platform user, found through the user-key secret `serve` uses.
#[derive(Args)]
pub struct UserArgs {
    #[command(flatten)]
    url: DbUrl,
    /// The platform: telegram, discord, web, api.
    #[arg(long)]
    platform: String,
    /// The user's id on that platform (as the platform shows it).
    #[arg(long)]
    user: String,
    /// The spill folder `serve` uses ([store] spill_dir), which holds its
    /// generated user-key secret when CHATFORGE_USER_KEY_SECRET is not set.
    #[arg(long, default_value = "runs/spill")]
    spill_dir: PathBuf,
}

#[derive(Args)]
pub struct ExportArgs {
    #[command(flatten)]
    url: DbUrl,
    #[arg(long, value_enum, default_value_t = ExportFormat::Openai)]
    format: ExportFormat,
    /// JSONL file to write (replaced atomically).
    #[arg(long)]
    out: PathBuf,
    /// Conversations started at or after (2026-11-01 or RFC 3339, UTC).
    #[arg(long, value_parser = store::parse_time)]
    since: Option<chrono::DateTime<chrono::Utc>>,
    /// Conversations started before (2026-12-01 or RFC 3339, UTC).
    #[arg(long, value_parser = store::parse_time)]
    until: Option<chrono::DateTime<chrono::Utc>>,
    /// Only this platform (repeatable).
    #[arg(long)]
    platform: Vec<String>,
    /// Mean feedback rating (1-5) at least this; leaves out unrated conversations.
    #[arg(long)]
    min_rating: Option<f64>,
    /// Leave out conversations with flagged or blocked messages.
    #[arg(long)]
    exclude_flagged: bool,
    /// Leave out conversations handed to a human.
    #[arg(long)]
    exclude_handoff: bool,
    /// At least this many assistant replies.
    #[arg(long, default_value_t = 1)]
    min_turns: u32,
    /// Extra PII pattern, NAME=REGEX (placeholder <NAME>) or REGEX (<PATTERN>); repeatable.
    #[arg(long)]
    redact_pattern: Vec<NamedPattern>,
    /// Export the text as logged, without PII redaction.
    #[arg(long)]
    no_redact: bool,
}

#[derive(Args)]
pub struct BenchStoreArgs {
    /// Server to benchmark; a scratch database is created there and dropped.
    /// sqlite:… benchmarks a temporary SQLite file. Repeatable.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, num_args = 1..)]
    database_url: Vec<String>,
    /// Also benchmark SQLite (in a temporary file).
    #[arg(long)]
    sqlite: bool,
    /// Conversations logging at once.
    #[arg(long, default_value_t = 64)]
    conversations: usize,
    /// Messages per conversation in the throughput phase.
    #[arg(long, default_value_t = 500)]
    messages: usize,
    /// Messages per second (all conversations together) in the latency phase.
    #[arg(long, default_value_t = 5000.0)]
    paced_rate: f64,
    /// Length of the latency phase.
    #[arg(long, default_value_t = 3.0)]
    paced_seconds: f64,
    /// One JSON line per backend.
    #[arg(long)]
    json: bool,
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

pub fn db(cmd: DbCommand) -> Result<()> {
    match cmd {
        DbCommand::Migrate { url } => runtime()?.block_on(async {
            let url = url.get();
            let store = store::connect_and_migrate(&url, &StoreOptions::default()).await?;
            let version = store.schema_version().await?;
            println!(
                "{}: schema at version {}",
                redact_url(&url),
                version.map_or("none".to_string(), |v| v.to_string())
            );
            store.close().await?;
            Ok(())
        }),
    }
}

pub fn logs(cmd: LogsCommand) -> Result<()> {
    match cmd {
        LogsCommand::Export(a) => runtime()?.block_on(export(a)),
        LogsCommand::Purge(a) => runtime()?.block_on(purge(a)),
        LogsCommand::Forget { user, dry_run } => runtime()?.block_on(forget(user, dry_run)),
        LogsCommand::Show { user } => runtime()?.block_on(show(user)),
        LogsCommand::Audit { url, limit } => runtime()?.block_on(async {
            let store = open_migrated(&url.get(), store::DATA_PROTECTION_SCHEMA).await?;
            for e in store.audit_events(limit).await? {
                println!("{}", serde_json::to_string(&e)?);
            }
            store.close().await?;
            Ok(())
        }),
        LogsCommand::Stats { url, json } => runtime()?.block_on(async {
            let url = url.get();
            let store = store::connect(&url, &StoreOptions::default()).await?;
            let stats = store::stats::stats(store.as_ref()).await?;
            if json {
                println!("{}", serde_json::to_string(&stats)?);
            } else {
                print!("{}", stats.to_table());
            }
            store.close().await?;
            Ok(())
        }),
    }
}

pub fn operators(cmd: OperatorsCommand) -> Result<()> {
    use chatforge::operators as ops;
    runtime()?.block_on(async {
        match cmd {
            OperatorsCommand::Add { url, name } => {
                let store = open_migrated(&url.get(), store::OPERATORS_SCHEMA).await?;
                let (_, password) = ops::add(store.as_ref(), &name, "operators add").await?;
                store.close().await?;
                println!("added operator {name}; one-time password (shown only now, to be changed at the first login):\n{password}");
            }
            OperatorsCommand::List { url, json } => {
                let store = open_migrated(&url.get(), store::OPERATORS_SCHEMA).await?;
                let rows = store.operators(None).await?;
                store.close().await?;
                for r in &rows {
                    if json {
                        println!("{}", serde_json::to_string(r)?);
                    } else {
                        let lock = match r.locked_until {
                            Some(t) if t > chrono::Utc::now() => format!("locked until {}", t.to_rfc3339()),
                            _ => String::new(),
                        };
                        println!(
                            "{:<24} created {}  {}  {}",
                            r.name,
                            r.created_at.format("%Y-%m-%d %H:%M"),
                            if r.must_change { "one-time password" } else { "password set" },
                            lock
                        );
                    }
                }
                if rows.is_empty() && !json {
                    println!("no operators; add one with `chatforge operators add NAME`");
                }
            }
            OperatorsCommand::Remove { url, name } => {
                let store = open_migrated(&url.get(), store::OPERATORS_SCHEMA).await?;
                ops::remove(store.as_ref(), &name, "operators remove").await?;
                store.close().await?;
                println!("removed operator {name}");
            }
            OperatorsCommand::ResetPassword { url, name } => {
                let store = open_migrated(&url.get(), store::OPERATORS_SCHEMA).await?;
                let password =
                    ops::reset_password(store.as_ref(), &name, "operators reset-password").await?;
                store.close().await?;
                println!("new one-time password for {name} (shown only now):\n{password}");
            }
        }
        Ok(())
    })
}

/// The store at `url`, refusing one without the schema (these commands
/// never create or migrate a database).
async fn open_migrated(
    url: &str,
    version: i64,
) -> Result<std::sync::Arc<dyn store::ConversationStore>> {
    let store = store::connect(url, &StoreOptions::default()).await?;
    store::require_schema_version(store.as_ref(), version).await?;
    Ok(store)
}

async fn purge(a: PurgeArgs) -> Result<()> {
    let before = match (a.before, a.days) {
        (Some(t), _) => t,
        (None, Some(d)) => chrono::Utc::now() - chrono::Duration::days(i64::from(d)),
        (None, None) => anyhow::bail!("give --before DATE or --days N"),
    };
    let store = open_migrated(&a.url.get(), store::DATA_PROTECTION_SCHEMA).await?;
    let d = store::retention::purge(store.as_ref(), before, a.dry_run, "logs purge").await?;
    store.close().await?;
    let verb = if a.dry_run { "would delete" } else { "deleted" };
    println!(
        "{verb} {d} (conversations idle since before {})",
        before.to_rfc3339()
    );
    Ok(())
}

async fn forget(u: UserArgs, dry_run: bool) -> Result<()> {
    let hasher = UserKeyHasher::for_spill_dir(&u.spill_dir, false)?;
    let store = open_migrated(&u.url.get(), store::DATA_PROTECTION_SCHEMA).await?;
    let d = store::retention::forget(
        store.as_ref(),
        &hasher,
        &u.platform,
        &u.user,
        dry_run,
        "logs forget",
    )
    .await?;
    store.close().await?;
    let verb = if dry_run { "would delete" } else { "deleted" };
    println!("{verb} {d} of this {} user", u.platform);
    if !dry_run {
        println!(
            "recorded in the audit log: an erasure with these counts (not whose); records still \
             in a serve spill folder reach the database when it replays them: run this again \
             after `logs stats` shows the outage is over"
        );
    }
    Ok(())
}

async fn show(u: UserArgs) -> Result<()> {
    let hasher = UserKeyHasher::for_spill_dir(&u.spill_dir, false)?;
    let store = open_migrated(&u.url.get(), store::DATA_PROTECTION_SCHEMA).await?;
    let (key, convs) =
        store::retention::subject_records(store.as_ref(), &hasher, &u.platform, &u.user).await?;
    store.close().await?;
    let conversations: Vec<serde_json::Value> = convs
        .iter()
        .map(|c| {
            let s = &c.conversation;
            serde_json::json!({
                "id": s.record.id,
                "channel": s.record.channel,
                "started_at": s.record.started_at,
                "ended_at": s.ended_at,
                "handoff": s.handoff.as_str(),
                "handoff_at": s.handoff_at,
                "topic": s.record.topic,
                "style": s.record.style,
                "messages": s.messages,
                "feedback": c.feedback,
                "moderation_events": c.moderation,
            })
        })
        .collect();
    let out = serde_json::json!({
        "platform": u.platform,
        "user_key": key,
        "conversations": conversations,
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

async fn export(a: ExportArgs) -> Result<()> {
    let url = a.url.get();
    let store = store::connect(&url, &StoreOptions::default()).await?;
    let filter = ExportFilter {
        since: a.since,
        until: a.until,
        platforms: a.platform,
        min_rating: a.min_rating,
        exclude_flagged: a.exclude_flagged,
        exclude_handoff: a.exclude_handoff,
        min_turns: a.min_turns,
    };
    let redactor = (!a.no_redact).then(|| Redactor::new().with_patterns(a.redact_pattern));
    let r =
        store::export_jsonl(store.as_ref(), &filter, a.format, redactor.as_ref(), &a.out).await?;
    store.close().await?;
    let redactions = if r.redactions.is_empty() {
        "none".to_string()
    } else {
        r.redactions
            .iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "wrote {} dialogs ({} messages) to {}; {} conversations matched, {} skipped without an assistant reply; redacted: {}",
        r.written,
        r.messages,
        a.out.display(),
        r.matched,
        r.skipped,
        redactions
    );
    Ok(())
}

pub fn bench(a: BenchStoreArgs) -> Result<()> {
    let mut urls = a.database_url;
    if a.sqlite || urls.is_empty() {
        urls.push("sqlite:".into());
    }
    runtime()?.block_on(async {
        for url in &urls {
            let plan = store::bench::BenchPlan {
                conversations: a.conversations,
                messages: a.messages,
                paced_rate: a.paced_rate,
                paced_seconds: a.paced_seconds,
            };
            let r = store::bench::bench_store(url, plan).await?;
            if a.json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!(
                    "{}: {:.0} messages/s ({} messages from {} conversations at once); \
                     at {:.0} messages/s enqueue takes p50 {:.1} µs, p99 {:.1} µs, max {:.0} µs",
                    r.backend,
                    r.messages_per_s,
                    r.messages,
                    r.conversations,
                    r.paced_rate_per_s,
                    r.enqueue_p50_us,
                    r.enqueue_p99_us,
                    r.enqueue_max_us
                );
            }
        }
        Ok(())
    })
}
