//! Per-user token buckets. A user over the limit hears about it once per
//! flood, not once per message.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::config::RateLimitConfig;

/// What to do with a user's message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Yes,
    /// Over the limit, first time in this flood: tell the user, with how
    /// long until the next message is taken.
    Notify(Duration),
    /// Over the limit and already told: drop quietly.
    Drop,
}

struct Bucket {
    tokens: f64,
    at: Instant,
    told: bool,
}

pub struct RateLimiter {
    burst: f64,
    per_token: Duration,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    pub fn new(cfg: RateLimitConfig) -> Self {
        let burst = f64::from(cfg.burst.max(1));
        Self {
            burst,
            per_token: Duration::from_secs_f64(cfg.per_seconds / burst),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    pub fn admit(&self, user: &str) -> Admit {
        self.admit_at(user, Instant::now())
    }

    fn admit_at(&self, user: &str, now: Instant) -> Admit {
        let mut buckets = match self.buckets.lock() {
            Ok(b) => b,
            Err(p) => p.into_inner(),
        };
        let b = buckets.entry(user.to_string()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
            told: false,
        });
        let refill =
            now.saturating_duration_since(b.at).as_secs_f64() / self.per_token.as_secs_f64();
        b.tokens = (b.tokens + refill).min(self.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            b.told = false;
            Admit::Yes
        } else if b.told {
            Admit::Drop
        } else {
            b.told = true;
            Admit::Notify(self.per_token.mul_f64(1.0 - b.tokens))
        }
    }

    /// Forgets users whose bucket is full again (they are like new).
    pub fn sweep(&self) {
        let now = Instant::now();
        let full_after = self.per_token.mul_f64(self.burst);
        if let Ok(mut b) = self.buckets.lock() {
            b.retain(|_, v| now.saturating_duration_since(v.at) < full_after);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_flood_gets_one_notice_then_refills() {
        let rl = RateLimiter::new(RateLimitConfig {
            burst: 3,
            per_seconds: 3.0,
        });
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(rl.admit_at("u", t0), Admit::Yes);
        }
        assert!(matches!(rl.admit_at("u", t0), Admit::Notify(d) if d <= Duration::from_secs(1)));
        for _ in 0..10 {
            assert_eq!(rl.admit_at("u", t0), Admit::Drop);
        }
        // Another user is not affected.
        assert_eq!(rl.admit_at("v", t0), Admit::Yes);
        // One token back after a second; the flood is over.
        assert_eq!(
            rl.admit_at("u", t0 + Duration::from_millis(1001)),
            Admit::Yes
        );
        assert!(matches!(
            rl.admit_at("u", t0 + Duration::from_millis(1002)),
            Admit::Notify(_)
        ));
    }
}
