//! The `[pipeline]` section of `chatforge.toml`: persona, control tags per
//! channel, session lifetime, limits and the fixed replies.

use std::time::Duration;

use chatforge_channel::Platform;
use serde::{Deserialize, Serialize};

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
    /// A conversation idle this long ends; the next message starts a new one.
    pub idle_minutes: f64,
    /// Longer messages are cut to their last this many characters (the user
    /// is told); the model's context cuts further if needed.
    pub max_input_chars: usize,
    /// A reply that takes longer is abandoned with [`Self::apology`].
    pub reply_timeout_secs: f64,
    /// Overrides `generation.json`'s `max_new_tokens` when set.
    pub max_new_tokens: Option<usize>,
    /// Overrides `generation.json`'s temperature when set (0 = greedy).
    pub temperature: Option<f32>,
    pub rate_limit: RateLimitConfig,
    /// Sent instead of a reply that moderation flagged.
    pub safe_reply: String,
    /// Sent when a user's message was flagged.
    pub input_refusal: String,
    /// Sent when a reply could not be produced or checked.
    pub apology: String,
    /// `/start`.
    pub greeting: String,
    /// Replies streamed to platforms that edit messages are released in
    /// pieces of at least this many characters, each checked by moderation
    /// before it is shown.
    pub stream_chunk_chars: usize,
}

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
            safe_reply: "Sorry, I can't help with that. Type /human to reach a person.".into(),
            input_refusal: "I can't respond to that message. Please keep it respectful; type /human to reach a person.".into(),
            apology: "Sorry, something went wrong on my side and I couldn't answer. Please try again, or type /human to reach a person.".into(),
            greeting: "Hi! I'm the support assistant. Ask me anything; /help lists the commands.".into(),
            stream_chunk_chars: 48,
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
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            burst: 5,
            per_seconds: 10.0,
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

impl PipelineConfig {
    /// Checks values that serde cannot; names the key at fault.
    pub fn validate(&self) -> Result<(), String> {
        let positive = |key: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(format!("pipeline.{key} must be a positive number, got {v}"))
            }
        };
        positive("idle_minutes", self.idle_minutes)?;
        positive("reply_timeout_secs", self.reply_timeout_secs)?;
        positive("rate_limit.per_seconds", self.rate_limit.per_seconds)?;
        if self.rate_limit.burst == 0 {
            return Err("pipeline.rate_limit.burst must be at least 1".into());
        }
        if self.max_input_chars == 0 {
            return Err("pipeline.max_input_chars must be at least 1".into());
        }
        if self
            .temperature
            .is_some_and(|t| !(t.is_finite() && t >= 0.0))
        {
            return Err("pipeline.temperature must be a number ≥ 0".into());
        }
        if self.max_new_tokens == Some(0) {
            return Err("pipeline.max_new_tokens must be at least 1".into());
        }
        for (key, text) in [
            ("safe_reply", &self.safe_reply),
            ("input_refusal", &self.input_refusal),
            ("apology", &self.apology),
            ("greeting", &self.greeting),
        ] {
            if text.trim().is_empty() {
                return Err(format!("pipeline.{key} must not be empty"));
            }
        }
        Ok(())
    }

    pub fn idle(&self) -> Duration {
        Duration::from_secs_f64(self.idle_minutes * 60.0)
    }

    pub fn reply_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.reply_timeout_secs)
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
        let cfg = PipelineConfig {
            reply_timeout_secs: 0.0,
            ..Default::default()
        };
        assert!(cfg.validate().unwrap_err().contains("reply_timeout_secs"));
        let mut cfg = PipelineConfig::default();
        cfg.rate_limit.burst = 0;
        assert!(cfg.validate().unwrap_err().contains("rate_limit.burst"));
    }
}
