//! Platform-neutral chat types shared by chatforge's adapters (Discord,
//! Telegram, web) and its conversation pipeline. No ML, no database here:
//! adapters turn platform updates into [`IncomingMessage`]s and render the
//! [`ChatEvent`]s the pipeline answers with.

use serde::{Deserialize, Serialize};

/// Where a message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    Discord,
    Telegram,
    Web,
    Terminal,
}

impl Platform {
    /// Longest message the platform accepts, in characters.
    pub fn max_message_chars(self) -> usize {
        match self {
            Platform::Discord => 2000,
            Platform::Telegram => 4096,
            Platform::Web | Platform::Terminal => usize::MAX,
        }
    }
}

/// A user's message as an adapter hands it to the pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncomingMessage {
    pub platform: Platform,
    /// Identifies the conversation (channel, chat or thread) on the platform.
    pub conversation_key: String,
    /// The platform's user id; the pipeline stores only a keyed hash of it.
    pub user_key: String,
    pub text: String,
    /// Platform id of the message this one replies to, if any.
    pub reply_to: Option<String>,
    /// A direct message (as opposed to a group or guild channel).
    pub is_direct: bool,
}

/// What the pipeline sends back, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ChatEvent {
    /// Show a typing indicator.
    Typing,
    /// Text produced so far, for platforms that edit a message progressively.
    ReplyChunk { text: String },
    /// The complete reply; `message_id` lets feedback refer to it.
    Reply { text: String, message_id: String },
    /// Ask the user to rate the reply with `message_id`.
    FeedbackRequest { message_id: String },
    /// The conversation was handed to a human operator.
    Handoff { notice: String },
    /// A short, user-safe error notice.
    Error { notice: String },
}

/// Feedback a user left on a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rating {
    Good,
    Bad,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_event_json_is_tagged() {
        let e = ChatEvent::Reply {
            text: "hi".into(),
            message_id: "m1".into(),
        };
        let s = serde_json::to_string(&e).unwrap();
        assert_eq!(s, r#"{"type":"reply","text":"hi","message_id":"m1"}"#);
        assert_eq!(Platform::Telegram.max_message_chars(), 4096);
    }
}
