//! When human agents are on duty (`[handoff] hours`), in the support
//! team's time zone: a customer who asks for a human outside them is told
//! when agents are back, and the conversation waits in the queue.

use chrono::{DateTime, Datelike, Duration, NaiveTime, TimeZone, Utc, Weekday};
use chrono_tz::Tz;

const DAYS: [(&str, Weekday); 7] = [
    ("mon", Weekday::Mon),
    ("tue", Weekday::Tue),
    ("wed", Weekday::Wed),
    ("thu", Weekday::Thu),
    ("fri", Weekday::Fri),
    ("sat", Weekday::Sat),
    ("sun", Weekday::Sun),
];

/// Weekly on-duty windows in one time zone.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentHours {
    tz: Tz,
    /// Per weekday (Monday first): the windows, start < end.
    windows: [Vec<(NaiveTime, NaiveTime)>; 7],
}

fn day(s: &str) -> Result<Weekday, String> {
    let lower = s.trim().to_ascii_lowercase();
    DAYS.iter()
        .find(|(name, _)| lower.starts_with(name) && lower.len() <= 9)
        .map(|&(_, d)| d)
        .ok_or_else(|| format!("{s:?} is not a day (Mon, Tue, … Sun)"))
}

fn time(s: &str) -> Result<NaiveTime, String> {
    let s = s.trim();
    if s == "24:00" {
        // The end of the day.
        return Ok(NaiveTime::from_hms_milli_opt(23, 59, 59, 999).unwrap_or(NaiveTime::MIN));
    }
    NaiveTime::parse_from_str(s, "%H:%M").map_err(|_| format!("{s:?} is not a time (HH:MM)"))
}

impl AgentHours {
    /// Parses `"Mon-Fri 09:00-17:00, Sat 10:00-14:00"` (days or day
    /// ranges, then one or more `HH:MM-HH:MM` windows; groups separated by
    /// `,` or `;`) in the IANA time zone `tz` (`Europe/Berlin`).
    pub fn parse(spec: &str, tz: &str) -> Result<Self, String> {
        let tz: Tz = tz
            .parse()
            .map_err(|_| format!("{tz:?} is not an IANA time zone (e.g. Europe/Berlin)"))?;
        let mut windows: [Vec<(NaiveTime, NaiveTime)>; 7] = Default::default();
        let mut any = false;
        for group in spec
            .split([',', ';'])
            .map(str::trim)
            .filter(|g| !g.is_empty())
        {
            let mut parts = group.split_whitespace();
            let days = parts.next().ok_or_else(|| format!("{group:?}: no days"))?;
            let (first, last) = match days.split_once('-') {
                Some((a, b)) => (day(a)?, day(b)?),
                None => (day(days)?, day(days)?),
            };
            let mut spans = Vec::new();
            for span in parts {
                let (a, b) = span
                    .split_once('-')
                    .ok_or_else(|| format!("{span:?} is not a window (HH:MM-HH:MM)"))?;
                let (start, end) = (time(a)?, time(b)?);
                if start >= end {
                    return Err(format!(
                        "{span:?}: the window must end after it starts (split one that crosses midnight)"
                    ));
                }
                spans.push((start, end));
            }
            if spans.is_empty() {
                return Err(format!("{group:?}: no HH:MM-HH:MM window"));
            }
            // Mon-Fri, or a range that wraps (Fri-Mon).
            let mut d = first;
            loop {
                windows[d.num_days_from_monday() as usize].extend(spans.iter().copied());
                if d == last {
                    break;
                }
                d = d.succ();
            }
            any = true;
        }
        if !any {
            return Err("no hours given (e.g. \"Mon-Fri 09:00-17:00\")".into());
        }
        Ok(Self { tz, windows })
    }

    /// Whether agents are on duty at `now`.
    pub fn on_duty(&self, now: DateTime<Utc>) -> bool {
        let local = now.with_timezone(&self.tz);
        let t = local.time();
        self.windows[local.weekday().num_days_from_monday() as usize]
            .iter()
            .any(|&(start, end)| start <= t && t < end)
    }

    /// When agents are next on duty after `now` (in the team's zone).
    pub fn next_start(&self, now: DateTime<Utc>) -> Option<DateTime<Tz>> {
        let local = now.with_timezone(&self.tz);
        (0..=7)
            .filter_map(|ahead| {
                let date = local.date_naive() + Duration::days(ahead);
                let mut starts: Vec<NaiveTime> = self.windows
                    [date.weekday().num_days_from_monday() as usize]
                    .iter()
                    .map(|w| w.0)
                    .collect();
                starts.sort();
                starts.into_iter().find_map(|start| {
                    // A start inside a DST gap begins at the gap's end.
                    let at = self
                        .tz
                        .from_local_datetime(&date.and_time(start))
                        .earliest()
                        .or_else(|| {
                            self.tz
                                .from_local_datetime(&(date.and_time(start) + Duration::hours(1)))
                                .earliest()
                        })?;
                    (at > local).then_some(at)
                })
            })
            .next()
    }

    /// `next_start` as a customer reads it: "Monday 09:00 (Europe/Berlin)".
    pub fn back_at(&self, now: DateTime<Utc>) -> String {
        match self.next_start(now) {
            Some(t) => format!("{} ({})", t.format("%A %H:%M"), self.tz.name()),
            None => "soon".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn test_hours_in_the_teams_time_zone() {
        let h = AgentHours::parse(
            "Mon-Fri 09:00-17:00; Sat 10:00-12:00 13:00-14:00",
            "Europe/Berlin",
        )
        .unwrap();
        // Friday 2026-12-04 15:30 UTC is 16:30 in Berlin (UTC+1): on duty.
        assert!(h.on_duty(utc("2026-12-04T15:30:00Z")));
        // 16:30 UTC is 17:30 in Berlin: off duty, back Saturday 10:00.
        let evening = utc("2026-12-04T16:30:00Z");
        assert!(!h.on_duty(evening));
        assert_eq!(h.back_at(evening), "Saturday 10:00 (Europe/Berlin)");
        // Saturday's lunch break, then Sunday: back Saturday 13:00, Monday 09:00.
        assert!(!h.on_duty(utc("2026-12-05T11:30:00Z")));
        assert_eq!(
            h.back_at(utc("2026-12-05T11:30:00Z")),
            "Saturday 13:00 (Europe/Berlin)"
        );
        assert_eq!(
            h.back_at(utc("2026-12-06T09:00:00Z")),
            "Monday 09:00 (Europe/Berlin)"
        );
        // Summer time: 07:30 UTC on a July Monday is 09:30 in Berlin.
        assert!(h.on_duty(utc("2026-07-06T07:30:00Z")));
        assert!(!h.on_duty(utc("2026-07-06T06:30:00Z")));
    }

    #[test]
    fn test_bad_hours_are_explained() {
        for (spec, tz, want) in [
            ("Mon-Fri 09:00-17:00", "Mars/Olympus", "IANA"),
            ("Funday 09:00-17:00", "UTC", "not a day"),
            ("Mon 9am-5pm", "UTC", "not a time"),
            ("Mon 17:00-09:00", "UTC", "end after"),
            ("Mon", "UTC", "no HH:MM"),
            ("", "UTC", "no hours"),
        ] {
            let err = AgentHours::parse(spec, tz).unwrap_err();
            assert!(err.contains(want), "{spec:?}: {err}");
        }
        // A range may wrap around the week; 24:00 ends the day.
        let h = AgentHours::parse("Sat-Mon 00:00-24:00", "UTC").unwrap();
        assert!(h.on_duty(utc("2026-12-06T23:59:00Z")));
        assert!(!h.on_duty(utc("2026-12-08T12:00:00Z")));
    }
}
