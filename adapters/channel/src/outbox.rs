//! "Send to this chat": how a person (an operator in the console) reaches a
//! customer in the conversation's own channel, outside the request/reply
//! flow of [`ChatHandler`](crate::ChatHandler). Each adapter offers one for
//! its platform; the text is split to the platform's message limit.

use std::future::Future;
use std::pin::Pin;

use crate::Platform;

/// The future [`ChatOutbox::send`] returns (boxed: outboxes are held as
/// `Arc<dyn ChatOutbox>`).
pub type OutboxFuture<'a> = Pin<Box<dyn Future<Output = Result<(), OutboxError>> + Send + 'a>>;

/// Why a message did not reach the chat. The reason never holds a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutboxError {
    /// The conversation key is not one of this platform's chats.
    #[error("{platform:?} has no chat {key:?}")]
    BadKey { platform: Platform, key: String },
    /// The platform refused or could not be reached.
    #[error("{platform:?} did not take the message: {reason}")]
    Failed { platform: Platform, reason: String },
}

/// Sends text to a chat of one platform, by the `conversation_key` its
/// adapter gave the conversation's messages.
pub trait ChatOutbox: Send + Sync {
    fn platform(&self) -> Platform;

    fn send<'a>(&'a self, conversation_key: &'a str, text: &'a str) -> OutboxFuture<'a>;
}
