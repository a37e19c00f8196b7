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

/// The stored `sent` column back as ids.
pub(crate) fn parse_sent(column: Option<&str>) -> Option<Vec<i64>> {
    column
        .filter(|c| !c.is_empty())
        .map_or(Some(Vec::new()), |c| {
            c.split(',').map(|id| id.trim().parse().ok()).collect()
        })
}
