//! Record ids: UUIDv7 text (48-bit Unix milliseconds, a 12-bit counter,
//! 62 random bits; RFC 9562 "method 1"), strictly increasing within the
//! process, so sorting ids sorts records by creation.

use std::sync::Mutex;

use chrono::{DateTime, Utc};
use rand::Rng;

struct Clock {
    ms: u64,
    counter: u16,
}

static LAST: Mutex<Clock> = Mutex::new(Clock { ms: 0, counter: 0 });

/// Now, truncated to milliseconds: both backends keep exactly this much, so
/// a record reads back equal to what was written.
pub fn now_ms() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now)
}

/// A new unique, time-ordered id.
pub fn new_id() -> String {
    let wall = u64::try_from(Utc::now().timestamp_millis()).unwrap_or(0);
    let (ms, counter) = {
        // A poisoned lock only means another thread panicked mid-update; the
        // state is two integers and still usable.
        let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
        if wall > last.ms {
            last.ms = wall;
            last.counter = 0;
        } else if last.counter < 0x0FFF {
            last.counter += 1;
        } else {
            // 4,096 ids in one millisecond: borrow the next millisecond.
            last.ms += 1;
            last.counter = 0;
        }
        (last.ms, last.counter)
    };
    let rand_b: u64 = rand::rng().random::<u64>() & 0x3FFF_FFFF_FFFF_FFFF;
    let hi = (ms << 16) | 0x7000 | u64::from(counter);
    let lo = 0x8000_0000_0000_0000 | rand_b;
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        hi >> 32,
        (hi >> 16) & 0xFFFF,
        hi & 0xFFFF,
        lo >> 48,
        lo & 0xFFFF_FFFF_FFFF
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_ids_are_uuid7_and_increasing() {
        let ids: Vec<String> = (0..10_000).map(|_| new_id()).collect();
        for w in ids.windows(2) {
            assert!(w[0] < w[1], "{} !< {}", w[0], w[1]);
        }
        let id = &ids[0];
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "7", "{id}");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"), "{id}");
    }

    #[test]
    fn test_now_ms_has_no_sub_millisecond_part() {
        assert_eq!(now_ms().timestamp_subsec_nanos() % 1_000_000, 0);
    }
}
