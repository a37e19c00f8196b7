//! The stored form of an update pushed to a webhook (see [`crate::inbox`]
//! for what uses it: acknowledge once stored, answer, recover what a dead
//! replica left).

/// One unanswered row of the `inbound_updates` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundUpdate {
    pub platform: String,
    /// The platform's id of the update: unique per bot, increasing.
    pub update_id: i64,
    /// The chat it belongs to: updates of one chat are answered in order.
    pub chat_key: String,
    /// The update as received (JSON), redacted.
    pub payload: String,
    /// The ids of the messages already sent in answer, oldest first: set
    /// when a replica died mid-reply (read back only; ignored when kept).
    pub sent: Vec<i64>,
}

/// `sent` as stored: the ids comma-separated.
pub(crate) fn sent_column(ids: &[i64]) -> String {
    ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
}

/// The stored `sent` column back as ids. An id that does not read is
/// skipped: that message is then sent anew, rather than the chat held up.
pub(crate) fn parse_sent(column: Option<&str>) -> Vec<i64> {
    column
        .unwrap_or_default()
        .split(',')
        .filter_map(|id| id.trim().parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_sent_ids_round_trip_and_bad_ones_are_skipped() {
        assert_eq!(parse_sent(Some(&sent_column(&[501, 502]))), [501, 502]);
        assert_eq!(parse_sent(Some(&sent_column(&[]))), Vec::<i64>::new());
        assert_eq!(parse_sent(None), Vec::<i64>::new());
        assert_eq!(parse_sent(Some("501,x,503")), [501, 503]);
    }
}
