//! `chatforge serve`: the configured adapters over one pipeline, one model
//! engine and one store writer. The model reloads on SIGHUP or when the
//! watched bundle changes; shutdown stops intake, lets replies in flight
//! finish, then drains the store.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use chatforge_channel::ChatHandler;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{self, Config, expand_env};
use crate::moderation::{Blocklist, Moderator, Rules};
use crate::pipeline::{Engine, Gate, Knowledge, Pipeline};
use crate::store::{
    self, ConversationStore, StoreOptions, UserKeyHasher, Writer, WriterConfig, WriterReport,
    default_database_url, redact_url,
};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] config::Error),
    #[error("store: {0}")]
    Store(#[from] store::Error),
    #[error(transparent)]
    Engine(#[from] crate::pipeline::EngineError),
    #[error("moderation: {0}")]
    Moderation(String),
    #[error("{adapter}: {reason}")]
    Adapter {
        adapter: &'static str,
        reason: String,
    },
    #[error("{0}")]
    Other(String),
}

fn key_err(key: &str, reason: impl Into<String>) -> ServeError {
    ServeError::Config(config::Error::Key {
        key: key.to_string(),
        reason: reason.into(),
    })
}

/// The pipeline and what it needs, without adapters: what `serve` runs, and
/// what tests and `bench pipeline` drive directly.
pub struct Services {
    pub pipeline: Arc<Pipeline>,
    pub writer: Writer,
    /// The store the writer writes to, for maintenance (retention).
    pub store: Arc<dyn ConversationStore>,
    pub bundle: PathBuf,
}

/// Opens the store (migrating it), the model and the moderation gate.
pub async fn start_services(cfg: &Config) -> Result<Services, ServeError> {
    let bundle = cfg
        .model
        .bundle
        .clone()
        .ok_or_else(|| key_err("model.bundle", "not set: name the bundle folder to serve"))?;
    cfg.validate()?;
    let gate = open_gate(cfg)?;
    let url = match &cfg.store.url {
        Some(u) => expand_env("store.url", u)?,
        None => default_database_url(),
    };
    let spill_dir = cfg
        .store
        .spill_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs/spill"));
    let hasher = UserKeyHasher::for_spill_dir(&spill_dir, true)?;
    let redactor = cfg.store.at_rest_redactor().map_err(config::Error::Value)?;
    if redactor.is_empty() {
        tracing::warn!("store.redact_at_rest is empty: card numbers will be stored as typed");
    }
    let timeouts = cfg.store.timeouts().map_err(config::Error::Value)?;
    let options = StoreOptions {
        call_timeout: timeouts.call,
        ..StoreOptions::default()
    };
    let db = store::connect_and_migrate(&url, &options).await?;
    if store::retention::verify_user_key(db.as_ref(), &hasher, true).await?
        == store::KeyCheck::Recorded
    {
        tracing::info!("recorded a check of the user-key secret in the store");
    }
    tracing::info!(store = %redact_url(&url), redact_at_rest = ?redactor.labels(), "store ready");
    let mut writer_cfg = WriterConfig::new(&spill_dir);
    writer_cfg.drain_timeout = timeouts.drain;
    writer_cfg.redactor = redactor;
    let writer = Writer::spawn(Arc::clone(&db), hasher, writer_cfg)?;
    let runtime = cfg.runtime.clone();
    let workers = cfg.model.workers;
    let scheduler = cfg.model.scheduler().map_err(config::Error::Value)?;
    let queue = cfg.model.queue;
    let dir = bundle.clone();
    let engine = tokio::task::spawn_blocking(move || {
        Engine::open_scheduled(&dir, &runtime, workers, scheduler, queue)
    })
    .await
    .map_err(|e| ServeError::Other(format!("model loading panicked: {e}")))??;
    let mut pipeline = Pipeline::new(
        cfg.pipeline.clone(),
        Arc::new(engine),
        gate,
        writer.handle(),
    )
    .map_err(|reason| {
        ServeError::Config(config::Error::Key {
            key: "pipeline".into(),
            reason,
        })
    })?;
    pipeline = pipeline.with_store(Arc::clone(&db));
    if cfg
        .telegram
        .as_ref()
        .is_some_and(|t| t.mode == config::TelegramMode::Webhook)
    {
        // Replicas: any of them may answer any Telegram chat.
        pipeline = pipeline.with_shared_sessions(chatforge_channel::Platform::Telegram);
    }
    if let Some(h) = &cfg.handoff {
        let hours = h.agent_hours().map_err(config::Error::Value)?;
        pipeline = pipeline.with_agent_hours(hours);
    }
    if let Some(k) = &cfg.kb {
        let knowledge = Knowledge::open(&k.dir, &cfg.runtime, k.passages, k.links.clone())
            .map_err(|e| key_err("kb.dir", e.to_string()))?;
        tracing::info!(kb = %k.dir.display(), passages = knowledge.current().kb.passages.len(), "knowledge base ready");
        pipeline = pipeline.with_knowledge(Arc::new(knowledge));
    }
    Ok(Services {
        pipeline: Arc::new(pipeline),
        writer,
        store: db,
        bundle,
    })
}

fn open_gate(cfg: &Config) -> Result<Gate, ServeError> {
    let m = &cfg.moderation;
    if !m.enabled {
        return Ok(Gate::off());
    }
    let dir = m.model.as_ref().ok_or_else(|| {
        key_err(
            "moderation.model",
            "not set: name a moderation model folder (`chatforge moderation train`), or set `enabled = false`",
        )
    })?;
    let blocklist = match &m.blocklist {
        Some(p) => {
            Blocklist::from_file(p).map_err(|e| key_err("moderation.blocklist", e.to_string()))?
        }
        None => Blocklist::default(),
    };
    let moderator = Moderator::open_sessions(dir, &cfg.runtime, m.workers)
        .map_err(|e| ServeError::Moderation(e.to_string()))?
        .with_rules(Rules {
            blocklist,
            pii: m.pii,
            ..Rules::default()
        });
    Ok(Gate::new(Arc::new(moderator)))
}

/// Deletes conversations idle for longer than `keep`: at start-up, then
/// once a day, until `stop`.
async fn retention_loop(
    store: Arc<dyn ConversationStore>,
    keep: chrono::Duration,
    mut stop: watch::Receiver<bool>,
) {
    const DAY: Duration = Duration::from_secs(24 * 60 * 60);
    loop {
        let before = chrono::Utc::now() - keep;
        match store::retention::purge(store.as_ref(), before, false, "serve").await {
            Ok(d) => tracing::info!(%before, deleted = %d, "retention: purged idle conversations"),
            // The next day's run tries again; serving goes on.
            Err(e) => tracing::error!(error = %e, "retention: purge failed"),
        }
        tokio::select! {
            () = tokio::time::sleep(DAY) => {}
            _ = stop.changed() => return,
        }
    }
}

/// What `serve` reports when it stops.
#[derive(Debug)]
pub struct ServeReport {
    pub store: WriterReport,
}

/// Runs the adapters configured in `cfg` until `shutdown` completes.
/// `config_path` is re-read on reload for a changed `model.bundle`.
pub async fn serve(
    cfg: Config,
    config_path: Option<PathBuf>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<ServeReport, ServeError> {
    let settings = resolve_adapters(&cfg)?;
    let services = start_services(&cfg).await?;
    let handler: Arc<dyn ChatHandler> = services.pipeline.clone();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut adapters: Vec<(&'static str, JoinHandle<Result<(), String>>)> = Vec::new();
    let started = start_adapters(settings, &handler, &services, &stop_rx, &mut adapters).await;
    if let Err(e) = started {
        let _ = stop_tx.send(true);
        join_adapters(adapters).await;
        services.writer.shutdown().await?;
        return Err(e);
    }
    let every = cfg.model.watch_interval().map_err(config::Error::Value)?;
    let reloader = tokio::spawn(reload_loop(
        services.pipeline.engine().clone(),
        services.bundle.clone(),
        config_path,
        every,
        stop_rx.clone(),
    ));
    let kb_reloader = services
        .pipeline
        .knowledge()
        .cloned()
        .zip(every)
        .map(|(k, every)| tokio::spawn(kb_reload_loop(k, every, stop_rx.clone())));
    let retention = cfg
        .store
        .retention()
        .map_err(config::Error::Value)?
        .map(|keep| {
            tokio::spawn(retention_loop(
                Arc::clone(&services.store),
                keep,
                stop_rx.clone(),
            ))
        });
    tracing::info!(
        adapters = adapters.len(),
        "serving; Ctrl-C or SIGTERM stops, SIGHUP reloads the model"
    );
    let mut any_stopped = stop_rx.clone();
    tokio::select! {
        () = shutdown => tracing::info!("shutting down: no new messages; finishing replies in flight"),
        _ = any_stopped.changed() => {}
    }
    let _ = stop_tx.send(true);
    join_adapters(adapters).await;
    reloader.abort();
    if let Some(r) = kb_reloader {
        r.abort();
    }
    if let Some(r) = retention {
        r.abort();
    }
    let report = services.writer.shutdown().await?;
    tracing::info!(
        written = report.written,
        spilled = report.spilled,
        pending = report.pending,
        "store drained"
    );
    Ok(ServeReport { store: report })
}

/// `[telegram]` as the adapter takes it, the token read from the
/// environment.
pub fn telegram_config(
    t: &config::TelegramSection,
) -> Result<chatforge_telegram::TelegramConfig, ServeError> {
    let mut tc = chatforge_telegram::TelegramConfig::new(expand_env("telegram.token", &t.token)?);
    tc.api_url = t
        .api_url
        .as_deref()
        .map(|u| expand_env("telegram.api_url", u))
        .transpose()?;
    tc.edit_interval = t.edit_interval().map_err(config::Error::Value)?;
    Ok(tc)
}

/// `[telegram] mode = "webhook"`, checked.
struct WebhookSettings {
    path: String,
    secret: String,
    replica: Option<String>,
    lease: Duration,
}

/// The secret Telegram accepts for `setWebhook` (and sends back).
pub fn check_webhook_secret(secret: &str) -> Result<(), String> {
    let ok = (1..=256).contains(&secret.len())
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err("must be 1-256 characters of A-Z, a-z, 0-9, _ and - (Telegram's rule)".into())
    }
}

/// `[telegram]` webhook settings with the secret read from the
/// environment: the public URL (its path is serve's route) and the secret.
pub fn webhook_settings(t: &config::TelegramSection) -> Result<(url::Url, String), ServeError> {
    // A key that must be set, its ${VAR}s read.
    let required = |key: &str, value: &Option<String>, why: &str| match value {
        Some(v) => expand_env(key, v).map_err(ServeError::from),
        None => Err(key_err(key, format!("not set: webhook mode needs {why}"))),
    };
    let raw = required(
        "telegram.webhook_url",
        &t.webhook_url,
        "the public address Telegram posts to",
    )?;
    let url = url::Url::parse(&raw).map_err(|e| {
        key_err(
            "telegram.webhook_url",
            format!("{raw:?} is not a URL ({e})"),
        )
    })?;
    let secret = required(
        "telegram.webhook_secret",
        &t.webhook_secret,
        "a secret (e.g. \"${TELEGRAM_WEBHOOK_SECRET}\") so that only Telegram can post updates",
    )?;
    check_webhook_secret(&secret).map_err(|r| key_err("telegram.webhook_secret", r))?;
    Ok((url, secret))
}

/// The adapters' settings with secrets read from the environment; checked
/// before anything is started, so a config error costs no model load.
struct Adapters {
    telegram: Option<chatforge_telegram::TelegramConfig>,
    /// Set in webhook mode.
    webhook: Option<WebhookSettings>,
    discord: Option<chatforge_discord::DiscordConfig>,
    http: Option<crate::http::HttpSettings>,
    console: Option<crate::config::ConsoleSection>,
}

fn resolve_adapters(cfg: &Config) -> Result<Adapters, ServeError> {
    if cfg.telegram.is_none() && cfg.discord.is_none() && cfg.http.is_none() {
        return Err(ServeError::Other(
            "no adapter configured: add a [telegram], [discord] or [http] section to the config"
                .into(),
        ));
    }
    let telegram = cfg.telegram.as_ref().map(telegram_config).transpose()?;
    let webhook = match &cfg.telegram {
        Some(t) if t.mode == config::TelegramMode::Webhook => {
            if cfg.http.is_none() {
                return Err(key_err(
                    "telegram.mode",
                    "webhook mode answers on the HTTP server: add an [http] section",
                ));
            }
            let (url, secret) = webhook_settings(t)?;
            let lease = config::bounded_secs("telegram.lease_secs", t.lease_secs, 0.5, 600.0)
                .map_err(|r| ServeError::Config(config::Error::Value(r)))?;
            Some(WebhookSettings {
                path: url.path().to_string(),
                secret,
                replica: t.replica.clone(),
                lease,
            })
        }
        _ => None,
    };
    let discord = match &cfg.discord {
        Some(d) => {
            let mut dc =
                chatforge_discord::DiscordConfig::new(expand_env("discord.token", &d.token)?);
            dc.proxy = d
                .proxy
                .as_deref()
                .map(|u| expand_env("discord.proxy", u))
                .transpose()?;
            dc.guild_channels.clone_from(&d.guild_channels);
            dc.edit_interval = d.edit_interval().map_err(config::Error::Value)?;
            dc.shards = d.shard_range().map_err(config::Error::Value)?;
            Some(dc)
        }
        None => None,
    };
    let http = cfg
        .http
        .as_ref()
        .map(crate::http::HttpSettings::resolve)
        .transpose()?;
    if let (Some(c), Some(h)) = (&cfg.console, &http)
        && !h.listen.ip().is_loopback()
        && !c.tls_terminated
    {
        return Err(key_err(
            "console.tls_terminated",
            format!(
                "the console would listen on {}, beyond this machine, in the clear: serve it behind a TLS-terminating proxy and set tls_terminated = true, or listen on 127.0.0.1",
                h.listen
            ),
        ));
    }
    Ok(Adapters {
        telegram,
        webhook,
        discord,
        http,
        console: cfg.console.clone(),
    })
}

async fn start_adapters(
    settings: Adapters,
    handler: &Arc<dyn ChatHandler>,
    services: &Services,
    stop: &watch::Receiver<bool>,
    adapters: &mut Vec<(&'static str, JoinHandle<Result<(), String>>)>,
) -> Result<(), ServeError> {
    let console = match &settings.console {
        Some(c) => {
            store::require_schema_version(services.store.as_ref(), store::CONSOLE_SCHEMA).await?;
            let length = c.session_length().map_err(config::Error::Value)?;
            let console = Arc::new(crate::console::Console::new(
                Arc::clone(&services.store),
                services.writer.handle(),
                Arc::clone(&services.pipeline),
                c.review_sample_every,
            ));
            Some((console, length, c.tls_terminated))
        }
        None => None,
    };
    // Webhook mode: Telegram's updates arrive on the HTTP server, so the
    // adapter connects first and the server gets its route.
    let mut telegram = settings.telegram;
    let mut hook = None;
    if let (Some(w), Some(hs)) = (settings.webhook, &settings.http) {
        store::require_schema_version(services.store.as_ref(), store::INBOX_SCHEMA).await?;
        let tc = telegram
            .take()
            .ok_or_else(|| ServeError::Other("webhook mode without a [telegram] section".into()))?;
        let adapter = connect_telegram(tc, handler).await?;
        let replica = w
            .replica
            .unwrap_or_else(|| crate::inbox::default_replica(hs.listen.port()));
        let inbox = crate::inbox::Inbox::new(
            Arc::clone(&services.store),
            services.writer.handle(),
            adapter.webhook(),
            replica,
            w.lease,
        );
        inbox.wake_waiting().await?;
        tracing::info!(bot = adapter.username(), path = %w.path, replica = inbox.replica(), "Telegram adapter started (webhook)");
        if let Some((c, ..)) = &console {
            c.add_outbox(adapter.outbox());
        }
        let sweeper = tokio::spawn(Arc::clone(&inbox).sweep_until(stop.clone()));
        let drained = Arc::clone(&inbox);
        let stop = stopped(stop.clone());
        adapters.push((
            "telegram",
            tokio::spawn(async move {
                stop.await;
                sweeper.abort();
                drained.drain(Duration::from_secs(30)).await;
                Ok(())
            }),
        ));
        hook = Some(crate::http::TelegramHook::new(w.path, &w.secret, inbox));
    }
    if let Some(hs) = settings.http {
        let state = console.as_ref().map(|(c, length, secure)| {
            Arc::new(crate::http::ConsoleState::new(
                Arc::clone(c),
                *length,
                *secure,
            ))
        });
        let server = crate::http::HttpServer::bind(
            &hs,
            Arc::clone(&services.pipeline),
            services.writer.handle(),
            state,
        )
        .await?;
        let server = match hook {
            Some(h) => server.with_telegram(h),
            None => server,
        };
        let addr = server
            .local_addr()
            .map_err(|e| ServeError::Other(format!("http: {e}")))?;
        tracing::info!(%addr, "HTTP server started: /v1/chat/completions, /metrics, /healthz");
        if let Some((c, ..)) = &console {
            c.add_outbox(server.web_outbox());
            tracing::info!(%addr, "operator console at /console");
        }
        let stop = stopped(stop.clone());
        adapters.push((
            "http",
            tokio::spawn(async move { server.run_until(stop).await.map_err(|e| e.to_string()) }),
        ));
    }
    if let Some(tc) = telegram {
        let adapter = connect_telegram(tc, handler).await?;
        tracing::info!(bot = adapter.username(), "Telegram adapter started");
        if let Some((c, ..)) = &console {
            c.add_outbox(adapter.outbox());
        }
        let stop = stopped(stop.clone());
        adapters.push((
            "telegram",
            tokio::spawn(async move { adapter.run_until(stop).await.map_err(|e| e.to_string()) }),
        ));
    }
    if let Some(dc) = settings.discord {
        let adapter = chatforge_discord::DiscordAdapter::connect(dc, Arc::clone(handler))
            .await
            .map_err(|e| ServeError::Adapter {
                adapter: "discord",
                reason: e.to_string(),
            })?;
        tracing::info!(bot = adapter.username(), "Discord adapter started");
        if let Some((c, ..)) = &console {
            c.add_outbox(adapter.outbox());
        }
        let stop = stopped(stop.clone());
        adapters.push((
            "discord",
            tokio::spawn(async move { adapter.run_until(stop).await.map_err(|e| e.to_string()) }),
        ));
    }
    Ok(())
}

async fn connect_telegram(
    config: chatforge_telegram::TelegramConfig,
    handler: &Arc<dyn ChatHandler>,
) -> Result<chatforge_telegram::TelegramAdapter, ServeError> {
    chatforge_telegram::TelegramAdapter::connect(config, Arc::clone(handler))
        .await
        .map_err(|e| ServeError::Adapter {
            adapter: "telegram",
            reason: e.to_string(),
        })
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

async fn join_adapters(adapters: Vec<(&'static str, JoinHandle<Result<(), String>>)>) {
    for (name, task) in adapters {
        match task.await {
            Ok(Ok(())) => tracing::info!(adapter = name, "adapter stopped"),
            Ok(Err(e)) => tracing::error!(adapter = name, error = %e, "adapter failed"),
            Err(e) => tracing::error!(adapter = name, error = %e, "adapter task panicked"),
        }
    }
}

/// What identifies the model on disk: the modification times of the
/// bundle's exported graphs (both: an export writes `model.onnx`, then
/// `model.int8.onnx`, and either may be the one served).
fn model_stamp(bundle: &Path) -> [Option<SystemTime>; 2] {
    [crate::bundle::ONNX_FILE, crate::bundle::ONNX_INT8_FILE].map(|f| {
        std::fs::metadata(bundle.join(f))
            .and_then(|m| m.modified())
            .ok()
    })
}

/// The `model.bundle` the config file names now, if it can be read.
fn configured_bundle(path: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(path).ok()?;
    match toml::from_str::<Config>(&text) {
        Ok(c) => c.model.bundle,
        Err(e) => {
            tracing::warn!(config = %path.display(), error = %e, "config file unreadable; keeping the current model");
            None
        }
    }
}

/// Watches for a new model (a changed file, a new `model.bundle` in the
/// config, SIGHUP) and reloads it. Only a successful reload changes what is
/// recorded as served: a failed one is retried at the next check, and
/// warned about once per change that failed.
async fn reload_loop(
    engine: Arc<Engine>,
    mut bundle: PathBuf,
    config_path: Option<PathBuf>,
    every: Option<Duration>,
    mut stop: watch::Receiver<bool>,
) {
    let mut stamp = model_stamp(&bundle);
    // The last (bundle, stamp) that failed, so a broken export is reported
    // once, not at every tick.
    let mut failed: Option<(PathBuf, [Option<SystemTime>; 2])> = None;
    #[cfg(unix)]
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut tick = every.map(tokio::time::interval);
    loop {
        let forced = tokio::select! {
            _ = stop.changed() => return,
            () = next_hup(&mut hup) => true,
            () = next_tick(&mut tick) => false,
        };
        let wanted = config_path
            .as_deref()
            .and_then(configured_bundle)
            .unwrap_or_else(|| bundle.clone());
        let now = model_stamp(&wanted);
        if !forced && wanted == bundle && now == stamp {
            continue;
        }
        let attempt = (wanted.clone(), now);
        let engine = Arc::clone(&engine);
        let dir = wanted.clone();
        match tokio::task::spawn_blocking(move || engine.reload(&dir)).await {
            Ok(Ok(version)) => {
                tracing::info!(bundle = %wanted.display(), %version, "serving the new model");
                metrics::counter!(crate::http::metrics::RELOADS, "what" => "model").increment(1);
                bundle = wanted;
                stamp = now;
                failed = None;
            }
            Ok(Err(e)) => {
                // Probably half-written: the current model stays, and the
                // next check tries again.
                if failed.as_ref() != Some(&attempt) {
                    tracing::warn!(bundle = %wanted.display(), error = %e, "reload failed; the current model stays, retrying");
                }
                failed = Some(attempt);
            }
            Err(e) => tracing::error!(error = %e, "reload panicked"),
        }
    }
}

/// What identifies a knowledge base on disk: the modification times of
/// the files a rebuild or a training writes last.
fn kb_stamp(dir: &Path) -> Vec<Option<SystemTime>> {
    ["kb.json", "search.json", "router.onnx"]
        .iter()
        .map(|f| {
            std::fs::metadata(dir.join(f))
                .and_then(|m| m.modified())
                .ok()
        })
        .collect()
}

/// Reopens the knowledge base when its folder changes (a `kb build` or
/// `kb train`); a failed reopen keeps the old one and is retried.
async fn kb_reload_loop(
    knowledge: Arc<Knowledge>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let dir = knowledge.dir();
    let mut stamp = kb_stamp(&dir);
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {}
        }
        let now = kb_stamp(&dir);
        if now == stamp {
            continue;
        }
        let k = Arc::clone(&knowledge);
        let d = dir.clone();
        match tokio::task::spawn_blocking(move || k.reload(&d)).await {
            Ok(Ok(())) => {
                tracing::info!(kb = %dir.display(), "knowledge base reloaded");
                metrics::counter!(crate::http::metrics::RELOADS, "what" => "knowledge_base")
                    .increment(1);
                stamp = now;
            }
            Ok(Err(e)) => {
                tracing::warn!(kb = %dir.display(), error = %e, "knowledge base reload failed; the current one stays, retrying");
            }
            Err(e) => tracing::error!(error = %e, "knowledge base reload panicked"),
        }
    }
}

#[cfg(unix)]
async fn next_hup(hup: &mut Option<tokio::signal::unix::Signal>) {
    match hup {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(not(unix))]
async fn next_hup(_: &mut ()) {
    std::future::pending().await
}

async fn next_tick(tick: &mut Option<tokio::time::Interval>) {
    match tick {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}
