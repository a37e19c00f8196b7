//! The `[pipeline]` section of `chatforge.toml`: persona, control tags per
//! channel, session lifetime, limits and what the bot says.

use std::time::Duration;

use chatforge_channel::Platform;
use serde::{Deserialize, Serialize};

use super::retrieve::Cite;
use super::texts::{TextOverrides, Texts};
use crate::config::{bounded_minutes, bounded_secs};

/// How the pipeline talks and what it tolerates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineConfig {
    /// System prompt (persona) of every conversation; a channel profile may
    /// replace it.
    pub persona: Option<String>,
    /// Default control tags (`<|topic=…|>`, `<|style=…|>`).
    pub topic: Option<String>,
    pub style: Option<String>,
    /// Profiles per platform or per conversation; the most specific match wins.
    pub channels: Vec<ChannelProfile>,
    /// A conversation idle this long ends; the next message starts a new
    /// one. A conversation waiting for a human does not end.
    pub idle_minutes: f64,
    /// Longer messages are cut to their last this many characters (the user
    /// is told); the model's context cuts further if needed.
    pub max_input_chars: usize,
    /// A reply that takes longer is abandoned with the apology text.
    pub reply_timeout_secs: f64,
    /// Overrides `generation.json`'s `max_new_tokens` when set.
    pub max_new_tokens: Option<usize>,
    /// Overrides `generation.json`'s temperature when set (0 = greedy).
    pub temperature: Option<f32>,
    pub rate_limit: RateLimitConfig,
    /// Conversations held in memory at most; past it the longest idle ones
    /// end (one waiting for a human is kept).
    pub max_sessions: usize,
    /// Replies streamed to platforms that edit messages are released in
    /// pieces of at least this many characters, each checked by moderation
    /// before it is shown.
    pub stream_chunk_chars: usize,
    /// What the bot says, per language: `[pipeline.texts.en]`,
    /// `[pipeline.texts.zh]`, … replace built-in texts entry by entry.
    pub texts: TextOverrides,
    /// With a knowledge base: show the source of a grounded reply
    /// (`"off"`, `"title"`, or `"link"`).
    pub cite: Cite,
    /// With a knowledge base: drafts the model may write for one reply.
    /// When the fact guard would refuse a draft of which nothing was
    /// shown, another is sampled (a new seed), while the model's queue is
    /// empty and the reply's time allows; the first the guard passes is
    /// sent, else the passage's sentences as before. 1 = one draft. A
    /// greedy reply's further drafts sample at temperature 0.7.
    pub drafts: usize,
}

/// [`PipelineConfig::drafts`] by default.
pub const DEFAULT_DRAFTS: usize = 3;
/// The most [`PipelineConfig::drafts`] may be.
pub const MAX_DRAFTS: usize = 8;

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            persona: None,
            topic: None,
            style: None,
            channels: Vec::new(),
            idle_minutes: 30.0,
            max_input_chars: 8000,
            reply_timeout_secs: 60.0,
            max_new_tokens: None,
            temperature: None,
            rate_limit: RateLimitConfig::default(),
            max_sessions: 100_000,
            stream_chunk_chars: 48,
            texts: TextOverrides::new(),
            cite: Cite::Off,
            drafts: DEFAULT_DRAFTS,
        }
    }
}

/// Per-user token bucket: `burst` messages at once, then one every
/// `per_seconds / burst` seconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    pub burst: u32,
    pub per_seconds: f64,
    /// Users tracked at most; past it the fullest buckets are forgotten.
    pub max_users: usize,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            burst: 5,
            per_seconds: 10.0,
            max_users: 100_000,
        }
    }
}

/// Persona and control tags for one platform, or one conversation on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelProfile {
    pub platform: Platform,
    /// The platform's conversation (chat/channel) id; `None` = every
    /// conversation on the platform.
    #[serde(default)]
    pub conversation: Option<String>,
    #[serde(default)]
    pub persona: Option<String>,
    #[serde(default)]
    pub topic: Option<String>,
    #[serde(default)]
    pub style: Option<String>,
}

/// What a conversation is set up with.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Profile {
    pub persona: Option<String>,
    pub topic: Option<String>,
    pub style: Option<String>,
}

/// The durations of a [`PipelineConfig`], checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Durations {
    pub idle: Duration,
    pub reply_timeout: Duration,
    /// The time `rate_limit.burst` messages take to refill.
    pub rate_window: Duration,
}

const DAY: f64 = 86_400.0;

impl PipelineConfig {
    /// Checks values that serde cannot; names the key at fault. Every
    /// duration has bounds, so none can overflow a `Duration` later.
    pub fn validate(&self) -> Result<(), String> {
        self.durations()?;
        if self.rate_limit.burst == 0 {
            return Err("pipeline.rate_limit.burst must be at least 1".into());
        }
        if self.rate_limit.max_users == 0 {
            return Err("pipeline.rate_limit.max_users must be at least 1".into());
        }
        if self.max_input_chars == 0 {
            return Err("pipeline.max_input_chars must be at least 1".into());
        }
        if self.max_sessions == 0 {
            return Err("pipeline.max_sessions must be at least 1".into());
        }
        if self
            .temperature
            .is_some_and(|t| !(t.is_finite() && t >= 0.0))
        {
            return Err("pipeline.temperature must be a number ≥ 0".into());
        }
        if !(1..=MAX_DRAFTS).contains(&self.drafts) {
            return Err(format!(
                "pipeline.drafts must be between 1 and {MAX_DRAFTS}, got {}",
                self.drafts
            ));
        }
        if self.max_new_tokens == Some(0) {
            return Err("pipeline.max_new_tokens must be at least 1".into());
        }
        Texts::new(&self.texts)?;
        Ok(())
    }

    /// The checked durations.
    pub fn durations(&self) -> Result<Durations, String> {
        let idle = bounded_minutes(
            "pipeline.idle_minutes",
            self.idle_minutes,
            0.001,
            30.0 * 1440.0,
        )?;
        let reply_timeout = bounded_secs(
            "pipeline.reply_timeout_secs",
            self.reply_timeout_secs,
            1e-6,
            DAY,
        )?;
        let rate_window = bounded_secs(
            "pipeline.rate_limit.per_seconds",
            self.rate_limit.per_seconds,
            0.001,
            DAY,
        )?;
        Ok(Durations {
            idle,
            reply_timeout,
            rate_window,
        })
    }

    /// The defaults overlaid with the platform's profile, then the
    /// conversation's.
    pub fn profile(&self, platform: Platform, conversation: &str) -> Profile {
        let mut p = Profile {
            persona: self.persona.clone(),
            topic: self.topic.clone(),
            style: self.style.clone(),
        };
        let platform_wide = self
            .channels
            .iter()
            .filter(|c| c.platform == platform && c.conversation.is_none());
        let this_one = self
            .channels
            .iter()
            .filter(|c| c.platform == platform && c.conversation.as_deref() == Some(conversation));
        for c in platform_wide.chain(this_one) {
            if c.persona.is_some() {
                p.persona.clone_from(&c.persona);
            }
            if c.topic.is_some() {
                p.topic.clone_from(&c.topic);
            }
            if c.style.is_some() {
                p.style.clone_from(&c.style);
            }
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_profile_most_specific_wins() {
        let cfg: PipelineConfig = toml::from_str(
            r#"
persona = "default persona"
topic = "general"
[[channels]]
platform = "telegram"
style = "casual"
[[channels]]
platform = "telegram"
conversation = "-100"
topic = "billing"
persona = "billing desk"
"#,
        )
        .unwrap();
        cfg.validate().unwrap();
        let p = cfg.profile(Platform::Telegram, "-100");
        assert_eq!(p.persona.as_deref(), Some("billing desk"));
        assert_eq!(p.topic.as_deref(), Some("billing"));
        assert_eq!(p.style.as_deref(), Some("casual"));
        let p = cfg.profile(Platform::Telegram, "7");
        assert_eq!(
            (p.persona.as_deref(), p.topic.as_deref()),
            (Some("default persona"), Some("general"))
        );
        assert_eq!(cfg.profile(Platform::Discord, "-100").style, None);
    }

    #[test]
    fn test_bad_values_name_the_key() {
        let err = toml::from_str::<PipelineConfig>("idle_minute = 3").unwrap_err();
        assert!(err.to_string().contains("idle_minute"), "{err}");
        let mut cfg = PipelineConfig::default();
        cfg.rate_limit.burst = 0;
        assert!(cfg.validate().unwrap_err().contains("rate_limit.burst"));
        let cfg: PipelineConfig = toml::from_str("[texts.en]\napology = \"\"\n").unwrap();
        assert!(cfg.validate().unwrap_err().contains("texts.en.apology"));
    }

    /// One case per duration key: infinite, huge, zero, negative and NaN
    /// values are errors naming the key, never a panic.
    #[test]
    fn test_every_duration_key_is_bounded() {
        type Set = fn(&mut PipelineConfig, f64);
        let keys: [(&str, Set); 3] = [
            ("pipeline.idle_minutes", |c, v| c.idle_minutes = v),
            ("pipeline.reply_timeout_secs", |c, v| {
                c.reply_timeout_secs = v;
            }),
            ("pipeline.rate_limit.per_seconds", |c, v| {
                c.rate_limit.per_seconds = v;
            }),
        ];
        for (key, set) in keys {
            for bad in [f64::INFINITY, 1e300, 0.0, -1.0, f64::NAN] {
                let mut cfg = PipelineConfig::default();
                set(&mut cfg, bad);
                let err = cfg.validate().unwrap_err();
                assert!(err.contains(key), "{key} = {bad}: {err}");
            }
            let mut cfg = PipelineConfig::default();
            set(&mut cfg, 5.0);
            cfg.validate().unwrap();
        }
        let d = PipelineConfig::default().durations().unwrap();
        assert_eq!(d.idle, Duration::from_secs(1800));
    }
}
