//! `chatforge logs stats`: counts, feedback and moderation rates per
//! platform and day (UTC). Conversations count on the day they started,
//! messages, feedback and moderation events on the day they were made.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::backend::require_schema;
use super::{ConversationStore, Result};

/// The report of `store`; a clear error on a database without the schema.
pub async fn stats(store: &dyn ConversationStore) -> Result<Stats> {
    require_schema(store).await?;
    store.stats().await
}

/// One line of the report. Rates are `None` when their denominator is 0.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StatsRow {
    /// `YYYY-MM-DD`, or `total`.
    pub day: String,
    /// A platform, or `all`.
    pub platform: String,
    pub conversations: i64,
    pub messages: i64,
    pub user_messages: i64,
    pub assistant_messages: i64,
    /// Messages whose verdict was flag or block.
    pub flagged_messages: i64,
    pub moderation_events: i64,
    /// Moderation events whose verdict was flag or block.
    pub moderation_actions: i64,
    pub feedback: i64,
    /// Ratings of 4 or 5.
    pub positive_feedback: i64,
    pub handoffs: i64,
    /// Replies by what the fact guard decided (with a knowledge base).
    pub generated_replies: i64,
    pub extracted_replies: i64,
    pub abstained_replies: i64,
    /// Replies operators wrote in handed-off conversations.
    pub operator_messages: i64,
    /// Bot replies reviewed in the console, and those corrected.
    pub reviewed_replies: i64,
    pub corrected_replies: i64,
    pub avg_rating: Option<f64>,
    /// Feedback per conversation.
    pub feedback_rate: Option<f64>,
    /// Positive share of the feedback.
    pub positive_rate: Option<f64>,
    /// Flagged share of the messages.
    pub flag_rate: Option<f64>,
    /// Share of conversations handed to a human.
    pub handoff_rate: Option<f64>,
    pub avg_latency_ms: Option<f64>,
    #[serde(skip)]
    rating_sum: i64,
    #[serde(skip)]
    latency_sum: i64,
    #[serde(skip)]
    latency_count: i64,
}

fn ratio(a: i64, b: i64) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
}

impl StatsRow {
    fn add(&mut self, o: &StatsRow) {
        self.conversations += o.conversations;
        self.messages += o.messages;
        self.user_messages += o.user_messages;
        self.assistant_messages += o.assistant_messages;
        self.flagged_messages += o.flagged_messages;
        self.moderation_events += o.moderation_events;
        self.moderation_actions += o.moderation_actions;
        self.feedback += o.feedback;
        self.positive_feedback += o.positive_feedback;
        self.handoffs += o.handoffs;
        self.generated_replies += o.generated_replies;
        self.extracted_replies += o.extracted_replies;
        self.abstained_replies += o.abstained_replies;
        self.operator_messages += o.operator_messages;
        self.reviewed_replies += o.reviewed_replies;
        self.corrected_replies += o.corrected_replies;
        self.rating_sum += o.rating_sum;
        self.latency_sum += o.latency_sum;
        self.latency_count += o.latency_count;
    }

    fn finish(&mut self) {
        self.avg_rating = ratio(self.rating_sum, self.feedback);
        self.feedback_rate = ratio(self.feedback, self.conversations);
        self.positive_rate = ratio(self.positive_feedback, self.feedback);
        self.flag_rate = ratio(self.flagged_messages, self.messages);
        self.handoff_rate = ratio(self.handoffs, self.conversations);
        self.avg_latency_ms = ratio(self.latency_sum, self.latency_count);
    }
}

/// Raw grouped counts from a backend: `(day, platform, values)` with the
/// values in the order of the columns each query names.
pub(crate) type Grouped = Vec<(String, String, Vec<i64>)>;

pub(crate) struct StatsParts {
    /// conversations, handoffs
    pub conversations: Grouped,
    /// messages, user, assistant, flagged, latency sum, latency count,
    /// generated, extracted, abstained, operator, reviewed, corrected
    pub messages: Grouped,
    /// feedback, rating sum, positive
    pub feedback: Grouped,
    /// events, actions
    pub moderation: Grouped,
}

fn entry<'m>(
    rows: &'m mut BTreeMap<(String, String), StatsRow>,
    day: &str,
    platform: &str,
) -> &'m mut StatsRow {
    rows.entry((day.to_string(), platform.to_string()))
        .or_insert_with(|| StatsRow {
            day: day.to_string(),
            platform: platform.to_string(),
            ..Default::default()
        })
}

/// The whole report: one row per (day, platform), then the total.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stats {
    pub rows: Vec<StatsRow>,
    pub total: StatsRow,
}

impl Stats {
    pub(crate) fn merge(parts: StatsParts) -> Self {
        let mut rows: BTreeMap<(String, String), StatsRow> = BTreeMap::new();
        let v = |vals: &[i64], i: usize| vals.get(i).copied().unwrap_or(0);
        for (d, p, x) in &parts.conversations {
            let r = entry(&mut rows, d, p);
            r.conversations += v(x, 0);
            r.handoffs += v(x, 1);
        }
        for (d, p, x) in &parts.messages {
            let r = entry(&mut rows, d, p);
            r.messages += v(x, 0);
            r.user_messages += v(x, 1);
            r.assistant_messages += v(x, 2);
            r.flagged_messages += v(x, 3);
            r.latency_sum += v(x, 4);
            r.latency_count += v(x, 5);
            r.generated_replies += v(x, 6);
            r.extracted_replies += v(x, 7);
            r.abstained_replies += v(x, 8);
            r.operator_messages += v(x, 9);
            r.reviewed_replies += v(x, 10);
            r.corrected_replies += v(x, 11);
        }
        for (d, p, x) in &parts.feedback {
            let r = entry(&mut rows, d, p);
            r.feedback += v(x, 0);
            r.rating_sum += v(x, 1);
            r.positive_feedback += v(x, 2);
        }
        for (d, p, x) in &parts.moderation {
            let r = entry(&mut rows, d, p);
            r.moderation_events += v(x, 0);
            r.moderation_actions += v(x, 1);
        }
        let mut total = StatsRow {
            day: "total".into(),
            platform: "all".into(),
            ..Default::default()
        };
        let mut rows: Vec<StatsRow> = rows.into_values().collect();
        for r in &mut rows {
            total.add(r);
            r.finish();
        }
        total.finish();
        Self { rows, total }
    }

    /// A fixed-width table for the terminal.
    pub fn to_table(&self) -> String {
        let pct = |x: Option<f64>| x.map_or("-".to_string(), |x| format!("{:.1}%", x * 100.0));
        let num = |x: Option<f64>| x.map_or("-".to_string(), |x| format!("{x:.2}"));
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<10} {:<10} {:>6} {:>8} {:>8} {:>7} {:>6} {:>8} {:>7} {:>7} {:>8} {:>9} {:>9} {:>9} {:>8} {:>8} {:>9}",
            "day",
            "platform",
            "convs",
            "messages",
            "feedback",
            "rating",
            "pos",
            "flagged",
            "flag%",
            "handoff",
            "handoff%",
            "generated",
            "extracted",
            "abstained",
            "operator",
            "reviewed",
            "corrected"
        );
        for r in self.rows.iter().chain(std::iter::once(&self.total)) {
            let _ = writeln!(
                out,
                "{:<10} {:<10} {:>6} {:>8} {:>8} {:>7} {:>6} {:>8} {:>7} {:>7} {:>8} {:>9} {:>9} {:>9} {:>8} {:>8} {:>9}",
                r.day,
                r.platform,
                r.conversations,
                r.messages,
                r.feedback,
                num(r.avg_rating),
                pct(r.positive_rate),
                r.flagged_messages,
                pct(r.flag_rate),
                r.handoffs,
                pct(r.handoff_rate),
                r.generated_replies,
                r.extracted_replies,
                r.abstained_replies,
                r.operator_messages,
                r.reviewed_replies,
                r.corrected_replies
            );
        }
        out
    }
}

/// One row of a per-day, per-platform count query (`day`, `platform`, then
/// `cols`; a NULL count is 0), the same on both backends.
pub(super) fn decode_stats_row<R>(
    row: &R,
    cols: &[&str],
) -> std::result::Result<(String, String, Vec<i64>), sqlx::Error>
where
    R: sqlx::Row,
    for<'c> &'c str: sqlx::ColumnIndex<R>,
    String: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let day: String = row.try_get("day")?;
    let platform: String = row.try_get("platform")?;
    let values = cols
        .iter()
        .map(|c| row.try_get::<Option<i64>, _>(*c).map(|v| v.unwrap_or(0)))
        .collect::<std::result::Result<_, _>>()?;
    Ok((day, platform, values))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_merge_and_rates() {
        let s = Stats::merge(StatsParts {
            conversations: vec![
                ("2026-11-01".into(), "discord".into(), vec![4, 1]),
                ("2026-11-02".into(), "telegram".into(), vec![2, 0]),
            ],
            messages: vec![(
                "2026-11-01".into(),
                "discord".into(),
                vec![10, 5, 5, 1, 900, 3],
            )],
            feedback: vec![("2026-11-01".into(), "discord".into(), vec![2, 6, 1])],
            moderation: vec![("2026-11-03".into(), "discord".into(), vec![1, 1])],
        });
        assert_eq!(s.rows.len(), 3);
        let d = &s.rows[0];
        assert_eq!((d.conversations, d.messages, d.feedback), (4, 10, 2));
        assert_eq!(d.avg_rating, Some(3.0));
        assert_eq!(d.flag_rate, Some(0.1));
        assert_eq!(d.handoff_rate, Some(0.25));
        assert_eq!(d.avg_latency_ms, Some(300.0));
        assert_eq!(s.rows[1].feedback_rate, Some(0.0));
        assert_eq!(s.rows[2].conversations, 0);
        assert_eq!(s.rows[2].handoff_rate, None);
        assert_eq!(s.total.conversations, 6);
        assert_eq!(s.total.moderation_actions, 1);
        assert!(s.to_table().contains("total"));
        let json = serde_json::to_string(&s).unwrap();
        assert!(!json.contains("rating_sum"), "{json}");
    }
}
