//! What operators do to a conversation from the console, on the pipeline's
//! side: the session's [`State`] follows claims and resolutions (so the bot
//! stays quiet while a person answers), operators' messages join the turns
//! the model sees when it takes over again, and every change is announced
//! to the consoles watching ([`ConsoleEvent`]).
//!
//! The store decides who holds a conversation (a claim is one conditional
//! update there); these calls only bring the in-memory session in line.

use chatforge_channel::Platform;
use serde::Serialize;
use tokio::sync::broadcast;

use super::session::State;
use super::{Pipeline, TextKey};
use crate::text::{Message, Role};

/// Consoles that fall this far behind miss events (and reload the queue).
const FEED_CAPACITY: usize = 256;

/// What changed, for the consoles' live view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsoleEventKind {
    /// A customer asked for a human.
    Handoff,
    /// A customer wrote while waiting for or talking to a human.
    Message,
    Claimed,
    Replied,
    /// Back to the bot (an operator resolved it, or the customer typed /bot).
    Resolved,
    Reviewed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConsoleEvent {
    pub kind: ConsoleEventKind,
    /// The store's conversation id.
    pub conversation: String,
}

/// The consoles' event feed.
pub(super) struct Feed(broadcast::Sender<ConsoleEvent>);

impl Feed {
    pub fn new() -> Self {
        Self(broadcast::channel(FEED_CAPACITY).0)
    }

    pub fn announce(&self, kind: ConsoleEventKind, conversation: &str) {
        // No console listening is not an error.
        let _ = self.0.send(ConsoleEvent {
            kind,
            conversation: conversation.to_string(),
        });
    }
}

/// A stored conversation as the pipeline knows it: its id, and the
/// platform chat its messages come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatRef {
    pub conversation: String,
    pub platform: Platform,
    pub key: String,
}

impl Pipeline {
    /// Events for a console, from now on.
    pub fn console_events(&self) -> broadcast::Receiver<ConsoleEvent> {
        self.feed.0.subscribe()
    }

    /// Announces a change made outside the pipeline (a review).
    pub fn announce(&self, kind: ConsoleEventKind, conversation: &str) {
        self.feed.announce(kind, conversation);
    }

    /// The session of `chat` when it is (or, after a restart, can become)
    /// the one of this conversation.
    async fn operator_session(
        &self,
        chat: &ChatRef,
    ) -> Option<tokio::sync::OwnedMutexGuard<super::session::Session>> {
        let mut s = self.session_of(chat.platform, &chat.key).lock_owned().await;
        match &s.conversation_id {
            Some(id) if *id != chat.conversation => {
                // The customer has moved on to a newer conversation.
                tracing::warn!(conversation = %chat.conversation, current = %id, "operator action on an older conversation");
                None
            }
            Some(_) => Some(s),
            None => {
                s.conversation_id = Some(chat.conversation.clone());
                Some(s)
            }
        }
    }

    /// `operator` now holds the conversation (the store said so).
    pub async fn operator_claimed(&self, chat: &ChatRef, operator: &str) {
        if let Some(mut s) = self.operator_session(chat).await {
            s.state = State::WithOperator {
                operator: operator.to_string(),
            };
            self.record.handoff(&chat.conversation, s.state.stored());
        }
        self.feed
            .announce(ConsoleEventKind::Claimed, &chat.conversation);
    }

    /// Logs what an operator sent the customer (already delivered); the
    /// bot sees it as an assistant turn when it answers again. Returns the
    /// message id.
    pub async fn operator_said(&self, chat: &ChatRef, operator: &str, text: &str) -> String {
        let id = self.record.operator(&chat.conversation, operator, text);
        if let Some(mut s) = self.operator_session(chat).await {
            s.turns.push(Message {
                role: Role::Assistant,
                content: text.to_string(),
            });
        }
        self.feed
            .announce(ConsoleEventKind::Replied, &chat.conversation);
        id
    }

    /// The bot answers again (the store has released the conversation);
    /// returns the notice to send the customer, in their language.
    pub async fn operator_resolved(&self, chat: &ChatRef) -> String {
        let mut lang = "en";
        if let Some(mut s) = self.operator_session(chat).await {
            s.state = State::Active;
            lang = s.lang;
        }
        self.feed
            .announce(ConsoleEventKind::Resolved, &chat.conversation);
        self.text(lang, TextKey::HandoffResolved).to_string()
    }
}
