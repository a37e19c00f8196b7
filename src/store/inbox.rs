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
}
