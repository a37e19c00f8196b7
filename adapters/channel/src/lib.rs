//! Platform-neutral chat types shared by chatforge's adapters (Discord,
//! Telegram, web) and its conversation pipeline. No ML, no database here:
//! adapters turn platform updates into [`ChatRequest`]s, hand them to a
//! [`ChatHandler`], and render the [`ChatEvent`]s it answers with.
//!
//! The flow for one request:
//!
//! ```text
//! adapter ──ChatRequest──▶ ChatHandler::handle(request, EventSink)
//!    ▲                                   │ Typing, ReplyChunk…, Reply, FeedbackRequest
//!    └──────────── EventStream ◀─────────┘
//! ```
//!
//! The sink is unbounded so that generation never waits for a slow platform
//! API; adapters coalesce [`ChatEvent::ReplyChunk`]s into rate-limited edits.
//!
//! The other way, a [`ChatOutbox`] sends an operator's message to a chat
//! ("send to this chat"), outside any request.

mod command;
mod handler;
mod outbox;
mod render;
mod split;
#[cfg(feature = "testing")]
pub mod testing;

use serde::{Deserialize, Serialize};

pub use command::{
    COMMANDS, Command, CommandInfo, FEEDBACK_USAGE, ParsedCommand, parse_command,
    tidy_after_mention,
};
pub use handler::{ChatHandler, EventSink, EventStream, HandlerFuture, SinkClosed, event_channel};
pub use outbox::{ChatOutbox, OutboxError, OutboxFuture};
pub use render::{Pacing, Surface, render_request};
pub use split::{split_message, split_point};

/// Where a message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    Discord,
    Telegram,
    Web,
    Terminal,
    /// The OpenAI-compatible HTTP API.
    Api,
}

impl Platform {
    /// Longest message the platform accepts, in characters (Unicode scalar
    /// values, not bytes).
    pub fn max_message_chars(self) -> usize {
        match self {
            Platform::Discord => 2000,
            Platform::Telegram => 4096,
            Platform::Web | Platform::Terminal | Platform::Api => usize::MAX,
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
    /// The text, with the bot's own @mention removed by the adapter.
    pub text: String,
    /// Platform id of the message this one replies to, if any.
    pub reply_to: Option<String>,
    /// A direct message (as opposed to a group or guild channel).
    pub is_direct: bool,
}

/// A rating a user left on one reply (a button or reaction on it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Feedback {
    pub platform: Platform,
    pub conversation_key: String,
    pub user_key: String,
    /// The `message_id` the handler gave the reply in [`ChatEvent::Reply`].
    pub message_id: String,
    pub rating: Rating,
    pub comment: Option<String>,
}

/// What an adapter asks the handler to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ChatRequest {
    /// Plain text to answer.
    Message(IncomingMessage),
    /// A command (`/reset`, `/human`, …); `message.text` keeps the raw text.
    Command {
        message: IncomingMessage,
        command: Command,
    },
    /// A rating from a feedback button or reaction.
    Feedback(Feedback),
}

impl ChatRequest {
    pub fn platform(&self) -> Platform {
        match self {
            ChatRequest::Message(m) | ChatRequest::Command { message: m, .. } => m.platform,
            ChatRequest::Feedback(f) => f.platform,
        }
    }

    pub fn conversation_key(&self) -> &str {
        match self {
            ChatRequest::Message(m) | ChatRequest::Command { message: m, .. } => {
                &m.conversation_key
            }
            ChatRequest::Feedback(f) => &f.conversation_key,
        }
    }
}

/// What the handler sends back, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ChatEvent {
    /// Show a typing indicator until the reply (or an error) arrives.
    Typing,
    /// The next piece of a reply being generated, appended to the ones
    /// before it; platforms that can edit messages show the text so far.
    ReplyChunk { delta: String },
    /// The complete reply. Its text replaces whatever the chunks showed
    /// (output moderation may have replaced it); `message_id` is the
    /// handler's id for it, so feedback can refer to it.
    Reply { text: String, message_id: String },
    /// Ask the user to rate the reply with `message_id`.
    FeedbackRequest { message_id: String },
    /// The conversation was handed to a human operator (or back to the bot).
    Handoff { notice: String },
    /// A short, user-safe error notice; internals stay in the handler's logs.
    Error { notice: String },
}

impl ChatEvent {
    /// The piece of reply text a `ReplyChunk` carries.
    pub fn delta(&self) -> Option<&str> {
        match self {
            ChatEvent::ReplyChunk { delta } => Some(delta),
            _ => None,
        }
    }
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
        let c = ChatEvent::ReplyChunk { delta: "h".into() };
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            r#"{"type":"reply_chunk","delta":"h"}"#
        );
        assert_eq!(Platform::Telegram.max_message_chars(), 4096);
        assert_eq!(Platform::Discord.max_message_chars(), 2000);
    }

    #[test]
    fn test_request_accessors_and_json_round_trip() {
        let message = IncomingMessage {
            platform: Platform::Telegram,
            conversation_key: "42".into(),
            user_key: "7".into(),
            text: "/reset".into(),
            reply_to: None,
            is_direct: true,
        };
        let r = ChatRequest::Command {
            message,
            command: Command::Reset,
        };
        assert_eq!(r.platform(), Platform::Telegram);
        assert_eq!(r.conversation_key(), "42");
        let s = serde_json::to_string(&r).unwrap();
        let back: ChatRequest = serde_json::from_str(&s).unwrap();
        assert_eq!(back, r);

        let f = ChatRequest::Feedback(Feedback {
            platform: Platform::Discord,
            conversation_key: "c".into(),
            user_key: "u".into(),
            message_id: "m".into(),
            rating: Rating::Bad,
            comment: None,
        });
        assert_eq!(f.platform(), Platform::Discord);
        assert_eq!(f.conversation_key(), "c");
    }
}
