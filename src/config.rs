//! `chatforge.toml`: settings shared by the serving commands, with
//! environment overrides for deployments that configure by environment.
//! `chatforge.example.toml` at the repository root documents every key.
//!
//! Secrets are not written in the file: a value of the form `${NAME}` is
//! read from the environment variable `NAME` ([`expand_env`]).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::moderation::PiiAction;
use crate::pipeline::PipelineConfig;
use crate::runtime::{Provider, RuntimeConfig};
use crate::text::Redactor;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error("environment variable {name}: {reason}")]
    Env { name: &'static str, reason: String },
    /// A key's value is wrong; `key` is its dotted path (`telegram.token`).
    #[error("config key {key}: {reason}")]
    Key { key: String, reason: String },
    /// A value out of its range; the message names the key.
    #[error("config: {0}")]
    Value(String),
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub runtime: RuntimeConfig,
    pub model: ModelConfig,
    pub moderation: ModerationConfig,
    pub store: StoreConfig,
    pub pipeline: PipelineConfig,
    pub kb: Option<KbSection>,
    pub handoff: Option<HandoffSection>,
    pub telegram: Option<TelegramSection>,
    pub discord: Option<DiscordSection>,
    pub http: Option<HttpSection>,
    pub console: Option<ConsoleSection>,
}

/// `[model]`: the bundle `serve` answers with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    pub bundle: Option<PathBuf>,
    /// Generator threads, each with its own ONNX Runtime session.
    pub workers: usize,
    /// Seconds between checks of the bundle's `model.onnx` (and of the
    /// config file's `model.bundle`) for a new model; 0 = reload on SIGHUP only.
    pub watch_secs: f64,
    /// How each worker takes replies: `continuous` (replies join and leave
    /// a running batch between decode steps) or `pool` (one at a time).
    pub scheduler: SchedulerKind,
    /// With `continuous`: rows decoded together at most.
    pub max_batch: usize,
    /// With `continuous`: token positions (rows × cached length) a batch
    /// may hold; newcomers wait past it.
    pub max_batch_tokens: usize,
    /// Replies that may wait for the workers; past it the customer gets
    /// the busy notice at once (the HTTP API answers 429).
    pub queue: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SchedulerKind {
    #[default]
    Continuous,
    Pool,
}

impl ModelConfig {
    /// The workers' scheduling, checked.
    pub fn scheduler(&self) -> Result<crate::pipeline::Scheduler, String> {
        if self.max_batch == 0 || self.max_batch > 256 {
            return Err(format!(
                "model.max_batch must be between 1 and 256, got {}",
                self.max_batch
            ));
        }
        if self.max_batch_tokens < 64 {
            return Err("model.max_batch_tokens must be at least 64".into());
        }
        if self.queue == 0 || self.queue > 1 << 20 {
            return Err(format!(
                "model.queue must be between 1 and 1048576, got {}",
                self.queue
            ));
        }
        Ok(match self.scheduler {
            SchedulerKind::Pool => crate::pipeline::Scheduler::Pool,
            SchedulerKind::Continuous => {
                crate::pipeline::Scheduler::Continuous(crate::runtime::BatchLimits {
                    max_batch: self.max_batch,
                    max_tokens: self.max_batch_tokens,
                })
            }
        })
    }

    /// `watch_secs` checked; `None` when watching is off (0).
    pub fn watch_interval(&self) -> Result<Option<Duration>, String> {
        if self.watch_secs == 0.0 {
            return Ok(None);
        }
        bounded_secs("model.watch_secs", self.watch_secs, 0.01, 86_400.0).map(Some)
    }
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            bundle: None,
            workers: 1,
            watch_secs: 2.0,
            scheduler: SchedulerKind::default(),
            max_batch: crate::runtime::BatchLimits::default().max_batch,
            max_batch_tokens: crate::runtime::BatchLimits::default().max_tokens,
            queue: crate::pipeline::DEFAULT_QUEUE,
        }
    }
}

/// `[moderation]`: the gate in front of and behind the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModerationConfig {
    /// `false` turns moderation off (logged loudly). When on, `model` must
    /// load or `serve` does not start.
    pub enabled: bool,
    /// Folder with `moderation.onnx` + `moderation.json`.
    pub model: Option<PathBuf>,
    /// Extra blocked terms, one per line.
    pub blocklist: Option<PathBuf>,
    /// Personal data in replies: `redact` (default), `flag` or `ignore`.
    pub pii: PiiAction,
    /// ONNX Runtime sessions of the classifier: this many conversations
    /// are checked at the same time.
    pub workers: usize,
}

impl Default for ModerationConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            model: None,
            blocklist: None,
            pii: PiiAction::Redact,
            workers: 2,
        }
    }
}

/// `[store]`: where conversations are logged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// `sqlite://…` or `postgres://…`; default `DATABASE_URL`, else the
    /// embedded SQLite file.
    pub url: Option<String>,
    /// Where records wait while the database is unreachable.
    pub spill_dir: Option<PathBuf>,
    /// Longest wait for one database call (a write batch, a read); past it
    /// the database counts as unreachable and records go to the spill file.
    pub timeout_secs: f64,
    /// How long shutdown keeps trying to store what is queued or spilled.
    pub drain_secs: f64,
    /// Personal data replaced by its placeholder (`<CARD>`) before a record
    /// is queued, so the database, the spill file and `rejected.jsonl`
    /// never hold it: `card` (Luhn-checked), `email`, `phone`, or
    /// `NAME=REGEX`. Card numbers by default (PCI DSS).
    pub redact_at_rest: Vec<String>,
    /// Conversations idle for longer are deleted with their messages,
    /// feedback and moderation events (daily while serving; `chatforge logs
    /// purge`). Unset: kept until deleted by hand.
    pub retain_days: Option<u32>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            url: None,
            spill_dir: None,
            timeout_secs: 5.0,
            drain_secs: 10.0,
            redact_at_rest: crate::store::DEFAULT_REDACT_AT_REST
                .iter()
                .map(|k| k.to_string())
                .collect(),
            retain_days: None,
        }
    }
}

/// The checked `[store]` durations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreTimeouts {
    pub call: Duration,
    pub drain: Duration,
}

impl StoreConfig {
    /// The redactor of `redact_at_rest`.
    pub fn at_rest_redactor(&self) -> Result<Redactor, String> {
        Redactor::from_kinds(&self.redact_at_rest).map_err(|e| format!("store.redact_at_rest: {e}"))
    }

    /// `retain_days` as a duration; 0 is refused (it would delete
    /// conversations as they happen).
    pub fn retention(&self) -> Result<Option<chrono::Duration>, String> {
        match self.retain_days {
            None => Ok(None),
            Some(0) => {
                Err("store.retain_days must be at least 1 (or left out to keep everything)".into())
            }
            Some(d) => Ok(Some(chrono::Duration::days(i64::from(d)))),
        }
    }

    pub fn timeouts(&self) -> Result<StoreTimeouts, String> {
        Ok(StoreTimeouts {
            call: bounded_secs("store.timeout_secs", self.timeout_secs, 0.01, 3600.0)?,
            drain: bounded_secs("store.drain_secs", self.drain_secs, 0.0, 3600.0)?,
        })
    }
}

/// `[handoff]`: when human agents are on duty.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandoffSection {
    /// `"Mon-Fri 09:00-17:00, Sat 10:00-14:00"`; outside these hours
    /// `/human` tells the customer when agents are back (the conversation
    /// still waits in the queue).
    pub hours: String,
    /// The IANA time zone of `hours` (`Europe/Berlin`).
    #[serde(default = "default_timezone")]
    pub timezone: String,
}

/// `[console]`: the operator console at `/console` of the `[http]` server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsoleSection {
    /// A TLS-terminating proxy is in front of the server: required to serve
    /// the console beyond loopback (operators' passwords and session
    /// cookies must not cross the network in the clear); cookies get
    /// `Secure`.
    pub tls_terminated: bool,
    /// How long a login lasts (hours).
    pub session_hours: f64,
    /// One in this many bot replies with nothing wrong joins the review
    /// queue as a sample.
    pub review_sample_every: u32,
}

impl Default for ConsoleSection {
    fn default() -> Self {
        Self {
            tls_terminated: false,
            session_hours: 8.0,
            review_sample_every: 20,
        }
    }
}

impl ConsoleSection {
    pub fn session_length(&self) -> Result<Duration, String> {
        bounded(
            "console.session_hours",
            self.session_hours,
            3600.0,
            "h",
            0.05,
            720.0,
        )
    }
}

fn default_timezone() -> String {
    "UTC".into()
}

impl HandoffSection {
    pub fn agent_hours(&self) -> Result<crate::pipeline::AgentHours, String> {
        crate::pipeline::AgentHours::parse(&self.hours, &self.timezone)
            .map_err(|e| format!("handoff.hours: {e}"))
    }
}

/// `[kb]`: present = replies rest on this knowledge base (retrieval, the
/// model's context, the fact guard).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KbSection {
    /// The folder `chatforge kb build` wrote (reloaded when it changes).
    pub dir: PathBuf,
    /// Passages put in the model's context at most.
    #[serde(default = "default_kb_passages")]
    pub passages: usize,
    /// Source file (as given to `kb build`) → its web page, for
    /// `[pipeline] cite = "link"`.
    #[serde(default)]
    pub links: std::collections::BTreeMap<String, String>,
}

impl KbSection {
    pub const DEFAULT_PASSAGES: usize = 2;
}

fn default_kb_passages() -> usize {
    KbSection::DEFAULT_PASSAGES
}

/// `[telegram]`: present = the Telegram adapter runs.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelegramSection {
    /// Usually `"${TELEGRAM_TOKEN}"`.
    pub token: String,
    /// Bot API base URL (a self-hosted Bot API server); default api.telegram.org.
    #[serde(default)]
    pub api_url: Option<String>,
    /// Shortest time between two edits of a streaming reply.
    #[serde(default = "default_edit_secs")]
    pub edit_interval_secs: f64,
    /// `polling` (getUpdates; one process per bot) or `webhook` (Telegram
    /// pushes updates to `[http]`; any number of replicas).
    #[serde(default)]
    pub mode: TelegramMode,
    /// Webhook mode: the public HTTPS address Telegram posts to; its path
    /// is the route serve answers on (`chatforge telegram set-webhook`
    /// registers it).
    #[serde(default)]
    pub webhook_url: Option<String>,
    /// Webhook mode: the secret Telegram sends back with every update,
    /// usually `"${TELEGRAM_WEBHOOK_SECRET}"` (1-256 of A-Z a-z 0-9 _ -).
    #[serde(default)]
    pub webhook_secret: Option<String>,
    /// Webhook mode: this process's name among the replicas; unanswered
    /// updates it kept are taken back at its next start. Default: the host
    /// name and the HTTP port.
    #[serde(default)]
    pub replica: Option<String>,
    /// Webhook mode: how long a replica's hold on a chat lives unrenewed
    /// (it renews while answering): how soon a dead replica's chats move
    /// to another.
    #[serde(default = "default_lease_secs")]
    pub lease_secs: f64,
}

fn default_lease_secs() -> f64 {
    10.0
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TelegramMode {
    #[default]
    Polling,
    Webhook,
}

/// `[discord]`: present = the Discord adapter runs.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscordSection {
    /// Usually `"${DISCORD_TOKEN}"`.
    pub token: String,
    /// HTTP base URL all Discord REST calls go through (a corporate proxy).
    #[serde(default)]
    pub proxy: Option<String>,
    /// Guild channel ids where mentions are answered; empty = any channel.
    #[serde(default)]
    pub guild_channels: Vec<u64>,
    #[serde(default = "default_edit_secs")]
    pub edit_interval_secs: f64,
    /// The gateway shards this process runs, `"0..2 of 4"`; unset: as many
    /// as Discord recommends, all in this process.
    #[serde(default)]
    pub shards: Option<String>,
}

impl DiscordSection {
    pub fn shard_range(&self) -> Result<Option<chatforge_discord::Shards>, String> {
        self.shards
            .as_deref()
            .map(|s| s.parse().map_err(|e| format!("discord.shards: {e}")))
            .transpose()
    }
}

fn default_edit_secs() -> f64 {
    1.0
}

/// `[http]`: present = `serve` runs the HTTP server (the OpenAI-compatible
/// chat API, health checks and Prometheus metrics).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    /// Address and port to listen on.
    #[serde(default = "default_http_listen")]
    pub listen: String,
    /// Bearer keys of `/v1/*`, usually `"${CHATFORGE_API_KEY}"`; required
    /// when `listen` is beyond loopback.
    #[serde(default)]
    pub api_keys: Vec<String>,
    /// Largest request body in bytes (larger: 413).
    #[serde(default = "default_http_max_body")]
    pub max_body_bytes: usize,
    /// Requests per API key (per client address without keys): a burst,
    /// refilled over `per_seconds` (over it: 429).
    #[serde(default = "default_http_rate_limit")]
    pub rate_limit: crate::pipeline::RateLimitConfig,
    /// Origins allowed to call `/v1/*` from a browser; empty = CORS off.
    #[serde(default)]
    pub cors_origins: Vec<String>,
}

impl HttpSection {
    pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
}

fn default_http_listen() -> String {
    HttpSection::DEFAULT_LISTEN.into()
}

fn default_http_max_body() -> usize {
    256 * 1024
}

fn default_http_rate_limit() -> crate::pipeline::RateLimitConfig {
    crate::pipeline::RateLimitConfig {
        burst: 120,
        per_seconds: 60.0,
        ..Default::default()
    }
}

impl fmt::Debug for HttpSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpSection")
            .field("listen", &self.listen)
            .field("api_keys", &format!("<{} redacted>", self.api_keys.len()))
            .field("max_body_bytes", &self.max_body_bytes)
            .field("rate_limit", &self.rate_limit)
            .field("cors_origins", &self.cors_origins)
            .finish()
    }
}

fn edit_interval(key: &str, secs: f64) -> Result<Duration, String> {
    bounded_secs(key, secs, 0.01, 60.0)
}

impl TelegramSection {
    pub fn edit_interval(&self) -> Result<Duration, String> {
        edit_interval("telegram.edit_interval_secs", self.edit_interval_secs)
    }
}

impl DiscordSection {
    pub fn edit_interval(&self) -> Result<Duration, String> {
        edit_interval("discord.edit_interval_secs", self.edit_interval_secs)
    }
}

// By hand, so that `{:?}` never prints a token.
impl fmt::Debug for TelegramSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TelegramSection")
            .field("token", &"<redacted>")
            .field("api_url", &self.api_url)
            .field("edit_interval_secs", &self.edit_interval_secs)
            .field("mode", &self.mode)
            .field("webhook_url", &self.webhook_url)
            .field(
                "webhook_secret",
                &self.webhook_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("replica", &self.replica)
            .field("lease_secs", &self.lease_secs)
            .finish()
    }
}

impl fmt::Debug for DiscordSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DiscordSection")
            .field("token", &"<redacted>")
            .field("proxy", &self.proxy)
            .field("guild_channels", &self.guild_channels)
            .field("edit_interval_secs", &self.edit_interval_secs)
            .finish()
    }
}

/// `value` seconds as a [`Duration`], or an error naming `key` unless it
/// lies in `min..=max` (so no config value can overflow or panic later).
pub fn bounded_secs(key: &str, value: f64, min: f64, max: f64) -> Result<Duration, String> {
    bounded(key, value, 1.0, "s", min, max)
}

/// [`bounded_secs`] for a value given in minutes (bounds in minutes too).
pub fn bounded_minutes(key: &str, value: f64, min: f64, max: f64) -> Result<Duration, String> {
    bounded(key, value, 60.0, "min", min, max)
}

fn bounded(
    key: &str,
    value: f64,
    unit_secs: f64,
    unit: &str,
    min: f64,
    max: f64,
) -> Result<Duration, String> {
    if !(value.is_finite() && value >= min && value <= max) {
        return Err(format!(
            "{key} must be between {min} and {max} {unit}, got {value}"
        ));
    }
    Duration::try_from_secs_f64(value * unit_secs).map_err(|e| format!("{key}: {e}"))
}

/// Replaces every `${NAME}` in `value` with the environment variable
/// `NAME`. The error names the config key and the variable, never a value.
pub fn expand_env(key: &str, value: &str) -> Result<String, Error> {
    expand_with(key, value, |name| std::env::var(name).ok())
}

fn expand_with(
    key: &str,
    value: &str,
    get: impl Fn(&str) -> Option<String>,
) -> Result<String, Error> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err(Error::Key {
                key: key.to_string(),
                reason: "`${` without a closing `}`".into(),
            });
        };
        let name = &after[..end];
        let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(Error::Key {
                key: key.to_string(),
                reason: format!("`${{{name}}}` is not an environment variable name"),
            });
        }
        match get(name) {
            Some(v) if !v.is_empty() => out.push_str(&v),
            _ => {
                return Err(Error::Key {
                    key: key.to_string(),
                    reason: format!("environment variable {name} is not set"),
                });
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

impl Config {
    /// Reads `path` (or the defaults when `None`), then applies
    /// `CHATFORGE_PROVIDERS` (e.g. `cuda,cpu`), `CHATFORGE_STRICT` (`1`/`0`)
    /// and `CHATFORGE_INTRA_THREADS`.
    pub fn load(path: Option<&Path>) -> Result<Self, Error> {
        let mut cfg = match path {
            None => Config::default(),
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| Error::File {
                    path: p.display().to_string(),
                    reason: e.to_string(),
                })?;
                toml::from_str(&text).map_err(|e| Error::File {
                    path: p.display().to_string(),
                    reason: e.to_string(),
                })?
            }
        };
        cfg.apply_env(|k| std::env::var(k).ok())?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks every value serde cannot: durations within bounds (so none
    /// can panic later), counts at least 1, the pipeline's texts.
    pub fn validate(&self) -> Result<(), Error> {
        self.model.watch_interval().map_err(Error::Value)?;
        self.model.scheduler().map_err(Error::Value)?;
        if self.model.workers == 0 {
            return Err(Error::Value("model.workers must be at least 1".into()));
        }
        if !(0..=19).contains(&self.runtime.generator_nice) {
            return Err(Error::Value(format!(
                "runtime.generator_nice must be between 0 and 19, got {}",
                self.runtime.generator_nice
            )));
        }
        if self.kb.as_ref().is_some_and(|k| k.passages == 0) {
            return Err(Error::Value("kb.passages must be at least 1".into()));
        }
        if self.moderation.workers == 0 {
            return Err(Error::Value("moderation.workers must be at least 1".into()));
        }
        self.store.timeouts().map_err(Error::Value)?;
        self.store.at_rest_redactor().map_err(Error::Value)?;
        self.store.retention().map_err(Error::Value)?;
        if let Some(h) = &self.handoff {
            h.agent_hours().map_err(Error::Value)?;
        }
        if let Some(c) = &self.console {
            c.session_length().map_err(Error::Value)?;
            if self.http.is_none() {
                return Err(Error::Value(
                    "console: the console is served by the HTTP server: add an [http] section"
                        .into(),
                ));
            }
            if c.review_sample_every == 0 {
                return Err(Error::Value(
                    "console.review_sample_every must be at least 1".into(),
                ));
            }
        }
        if let Some(t) = &self.telegram {
            t.edit_interval().map_err(Error::Value)?;
        }
        if let Some(d) = &self.discord {
            d.edit_interval().map_err(Error::Value)?;
            d.shard_range().map_err(Error::Value)?;
        }
        self.pipeline.validate().map_err(Error::Value)
    }

    fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), Error> {
        if let Some(v) = get("CHATFORGE_PROVIDERS") {
            self.runtime.providers = v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| {
                    <Provider as clap::ValueEnum>::from_str(s, true).map_err(|_| Error::Env {
                        name: "CHATFORGE_PROVIDERS",
                        reason: format!("unknown provider {s:?} (use tensorrt, cuda, cpu)"),
                    })
                })
                .collect::<Result<_, _>>()?;
        }
        if let Some(v) = get("CHATFORGE_STRICT") {
            self.runtime.strict = match v.as_str() {
                "1" | "true" | "yes" => true,
                "0" | "false" | "no" | "" => false,
                other => {
                    return Err(Error::Env {
                        name: "CHATFORGE_STRICT",
                        reason: format!("{other:?} is not 1/0/true/false"),
                    });
                }
            };
        }
        if let Some(v) = get("CHATFORGE_PRECISION") {
            self.runtime.precision = match v.as_str() {
                "fp32" => crate::bundle::Precision::Fp32,
                "int8" => crate::bundle::Precision::Int8,
                other => {
                    return Err(Error::Env {
                        name: "CHATFORGE_PRECISION",
                        reason: format!("{other:?} is not fp32 or int8"),
                    });
                }
            };
        }
        if let Some(v) = get("CHATFORGE_INTRA_THREADS") {
            self.runtime.intra_threads = v.parse().map_err(|_| Error::Env {
                name: "CHATFORGE_INTRA_THREADS",
                reason: format!("{v:?} is not a number"),
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_toml_and_env_overrides() {
        let cfg: Config =
            toml::from_str("[runtime]\nproviders = [\"tensorrt\", \"cpu\"]\nstrict = true\n")
                .unwrap();
        assert_eq!(
            cfg.runtime.providers,
            vec![Provider::Tensorrt, Provider::Cpu]
        );
        assert!(cfg.runtime.strict);
        assert!(toml::from_str::<Config>("[runtime]\nprovider = [\"cpu\"]\n").is_err());
        let mut cfg = Config::default();
        cfg.apply_env(|k| match k {
            "CHATFORGE_PROVIDERS" => Some("CUDA, cpu".into()),
            "CHATFORGE_STRICT" => Some("1".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(cfg.runtime.providers, vec![Provider::Cuda, Provider::Cpu]);
        assert!(cfg.runtime.strict);
        let err = cfg
            .apply_env(|k| (k == "CHATFORGE_PROVIDERS").then(|| "gpu".to_string()))
            .unwrap_err();
        assert!(err.to_string().contains("unknown provider \"gpu\""));
    }

    #[test]
    fn test_env_expansion_names_key_not_value() {
        let get = |n: &str| (n == "TOKEN").then(|| "123:secret".to_string());
        assert_eq!(
            expand_with("telegram.token", "${TOKEN}", get).unwrap(),
            "123:secret"
        );
        assert_eq!(
            expand_with("store.url", "postgres://u:${TOKEN}@h/db", get).unwrap(),
            "postgres://u:123:secret@h/db"
        );
        let err = expand_with("discord.token", "${DISCORD_TOKEN}", get)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("discord.token") && err.contains("DISCORD_TOKEN"),
            "{err}"
        );
        assert!(expand_with("k", "${BAD NAME}", get).is_err());
        assert!(expand_with("k", "${OPEN", get).is_err());
    }

    #[test]
    fn test_example_config_parses_with_every_key() {
        let text = include_str!("../chatforge.example.toml");
        let cfg: Config = toml::from_str(text).unwrap();
        assert_eq!(cfg.pipeline, PipelineConfig::default());
        assert_eq!(cfg.model.workers, ModelConfig::default().workers);
        // Uncommenting every `# key = value` line must still parse: the
        // commented keys are real keys.
        let uncommented: String = text
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest)
                    if rest.starts_with('[')
                        || rest.split_once(" = ").is_some_and(|(k, _)| {
                            k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                        }) =>
                {
                    rest
                }
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n");
        let all: Config = toml::from_str(&uncommented).unwrap();
        assert!(all.discord.is_some() && all.pipeline.channels.len() == 2);
        assert!(all.http.as_ref().is_some_and(|h| h.api_keys.len() == 1));
        assert!(all.pipeline.texts.contains_key("zh"));
        assert!(all.handoff.is_some() && all.console.is_some());
        all.validate().unwrap();
        assert!(all.pipeline.persona.is_some() && all.store.url.is_some());
    }

    /// One case per duration key outside `[pipeline]` (those are tested
    /// there): out-of-range values are errors naming the key.
    #[test]
    fn test_every_duration_key_is_bounded() {
        let base = "[telegram]\ntoken = \"t\"\n[discord]\ntoken = \"d\"\n";
        let keys = [
            ("model", "watch_secs"),
            ("store", "timeout_secs"),
            ("store", "drain_secs"),
            ("telegram", "edit_interval_secs"),
            ("discord", "edit_interval_secs"),
        ];
        for (table, key) in keys {
            for bad in ["inf", "1e300", "-1.0", "nan"] {
                let text = if table == "telegram" || table == "discord" {
                    base.replace(
                        &format!("[{table}]\n"),
                        &format!("[{table}]\n{key} = {bad}\n"),
                    )
                } else {
                    format!("{base}[{table}]\n{key} = {bad}\n")
                };
                let cfg: Config = toml::from_str(&text).unwrap();
                let err = cfg.validate().unwrap_err().to_string();
                assert!(
                    err.contains(&format!("{table}.{key}")),
                    "{key} = {bad}: {err}"
                );
            }
        }
        let cfg: Config = toml::from_str(base).unwrap();
        cfg.validate().unwrap();
        assert_eq!(
            cfg.model.watch_interval().unwrap(),
            Some(Duration::from_secs(2))
        );
        let off: Config = toml::from_str("[model]\nwatch_secs = 0\n").unwrap();
        assert_eq!(off.model.watch_interval().unwrap(), None);
        let cfg: Config = toml::from_str("[pipeline]\nidle_minutes = inf\n").unwrap();
        assert!(
            cfg.validate()
                .unwrap_err()
                .to_string()
                .contains("pipeline.idle_minutes")
        );
    }

    #[test]
    fn test_model_counts_are_bounded() {
        for (text, key) in [
            ("[model]\nqueue = 0\n", "model.queue"),
            ("[model]\nmax_batch = 0\n", "model.max_batch"),
            ("[model]\nworkers = 0\n", "model.workers"),
        ] {
            let cfg: Config = toml::from_str(text).unwrap();
            let err = cfg.validate().unwrap_err().to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
        let cfg: Config = toml::from_str("[model]\nqueue = 8\n").unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.model.queue, 8);
    }

    #[test]
    fn test_unknown_keys_are_named() {
        let err = toml::from_str::<Config>("[telegram]\ntoken = \"x\"\napi_ur = \"y\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("api_ur"), "{err}");
        let cfg: Config = toml::from_str(
            "[model]\nbundle = \"b\"\n[telegram]\ntoken = \"${T}\"\n[pipeline]\npersona = \"p\"\n",
        )
        .unwrap();
        assert_eq!(cfg.model.bundle.as_deref(), Some(Path::new("b")));
        assert!(!format!("{cfg:?}").contains("${T}"));
    }
}
