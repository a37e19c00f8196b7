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
    max_users: usize,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    /// `window`: the checked `per_seconds` (see `PipelineConfig::durations`).
    pub fn new(cfg: RateLimitConfig, window: Duration) -> Self {
        let burst = cfg.burst.max(1);
        Self {
            burst: f64::from(burst),
            per_token: (window / burst).max(Duration::from_nanos(1)),
            max_users: cfg.max_users.max(1),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    pub fn admit(&self, user: &str) -> Admit {
        self.admit_at(user, Instant::now())
    }

    fn admit_at(&self, user: &str, now: Instant) -> Admit {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= self.max_users && !buckets.contains_key(user) {
            self.forget(&mut buckets, now);
        }
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
        let mut b = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let full_after = self.per_token.mul_f64(self.burst);
        let now = Instant::now();
        b.retain(|_, v| now.saturating_duration_since(v.at) < full_after);
    }

    /// Makes room under `max_users`: full buckets first, then the users
    /// seen longest ago (a tenth of the cap at once).
    fn forget(&self, buckets: &mut HashMap<String, Bucket>, now: Instant) {
        let full_after = self.per_token.mul_f64(self.burst);
        buckets.retain(|_, v| now.saturating_duration_since(v.at) < full_after);
        if buckets.len() < self.max_users {
            return;
        }
        let mut by_age: Vec<(Instant, String)> =
            buckets.iter().map(|(k, v)| (v.at, k.clone())).collect();
        by_age.sort_by_key(|(at, _)| *at);
        for (_, k) in by_age.into_iter().take((self.max_users / 10).max(1)) {
            buckets.remove(&k);
        }
    }

    /// Users tracked now.
    pub fn tracked(&self) -> usize {
        self.buckets.lock().map(|b| b.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_flood_gets_one_notice_then_refills() {
        let rl = RateLimiter::new(
            RateLimitConfig {
                burst: 3,
                per_seconds: 3.0,
                max_users: 100,
            },
            Duration::from_secs(3),
        );
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

    #[test]
    fn test_users_tracked_are_capped() {
        let rl = RateLimiter::new(
            RateLimitConfig {
                burst: 1,
                per_seconds: 3600.0,
                max_users: 50,
            },
            Duration::from_secs(3600),
        );
        let t0 = Instant::now();
        for i in 0..1000 {
            assert_eq!(
                rl.admit_at(&format!("u{i}"), t0 + Duration::from_millis(i)),
                Admit::Yes
            );
        }
        assert!(rl.tracked() <= 50, "{}", rl.tracked());
        // The newest users are the ones remembered.
        assert!(matches!(
            rl.admit_at("u999", t0 + Duration::from_millis(1000)),
            Admit::Notify(_)
        ));
    }
}
