//! Showing a request's events in a Telegram chat: the shared streaming
//! renderer of [`chatforge_channel::render_request`] over Telegram's calls —
//! typing action, messages sent, edited and deleted, and the 👍/👎 inline
//! keyboard on a reply's last part.

use std::time::Duration;

use chatforge_channel::{ChatRequest, Pacing, Rating, Surface, render_request};
use teloxide::prelude::*;
use teloxide::types::{ChatAction, InlineKeyboardButton, InlineKeyboardMarkup, MessageId};
use teloxide::{ApiError, RequestError};

use crate::inbound::feedback_data;
use crate::{Context, ReplyJournal, TgBot};

/// Sends `request` to the handler and renders its events in `chat` until
/// the handler is done. Platform errors are logged (token redacted) and
/// never reach the handler: the reply just goes on with what can be shown.
/// With a `journal`, the messages it holds from an earlier try are reused
/// in order, and those this answer did not need are deleted.
pub(crate) async fn serve(
    bot: &TgBot,
    ctx: &Context,
    chat: ChatId,
    request: ChatRequest,
    journal: Option<&dyn ReplyJournal>,
) {
    let earlier = journal.map(|j| j.earlier()).unwrap_or_default();
    let surface = Chat {
        bot,
        ctx,
        chat,
        journal,
        earlier: earlier
            .iter()
            .filter_map(|&id| i32::try_from(id).ok().map(MessageId))
            .collect(),
        sent: Vec::new(),
    };
    let mut done = render_request(ctx.handler.as_ref(), request, surface).await;
    for id in done
        .earlier
        .split_off(done.sent.len().min(done.earlier.len()))
    {
        done.delete(&id).await;
    }
}

struct Chat<'a> {
    bot: &'a TgBot,
    ctx: &'a Context,
    chat: ChatId,
    journal: Option<&'a dyn ReplyJournal>,
    /// Messages an earlier try at this answer sent.
    earlier: Vec<MessageId>,
    /// Messages this answer shows, in order.
    sent: Vec<MessageId>,
}

impl Surface for Chat<'_> {
    type Id = MessageId;

    fn pacing(&self) -> Pacing {
        self.ctx.pacing
    }

    async fn typing(&mut self) -> bool {
        // Telegram shows the action for 5 s or until a message is sent.
        let result = self
            .bot
            .send_chat_action(self.chat, ChatAction::Typing)
            .await;
        self.log_error("sendChatAction", result.err());
        true
    }

    async fn send(&mut self, text: &str) -> Option<MessageId> {
        let reused = match self.earlier.get(self.sent.len()).copied() {
            Some(old) if self.reuse(old, text).await => Some(old),
            _ => None,
        };
        let fresh = reused.is_none();
        let id = match reused {
            Some(id) => id,
            None => self.send_retrying(text).await?,
        };
        self.sent.push(id);
        if let (Some(journal), true) = (self.journal, fresh) {
            // Every message either try sent, so that a third try still
            // finds them all.
            let ids: Vec<i64> = self
                .sent
                .iter()
                .chain(self.earlier.iter().skip(self.sent.len()))
                .map(|m| i64::from(m.0))
                .collect();
            journal.note(&ids).await;
        }
        Some(id)
    }

    async fn edit(&mut self, id: &MessageId, text: &str) -> bool {
        let result = self.bot.edit_message_text(self.chat, *id, text).await;
        let ok = result.is_ok();
        self.log_error("editMessageText", result.err());
        ok
    }

    async fn delete(&mut self, id: &MessageId) {
        let result = self.bot.delete_message(self.chat, *id).await;
        self.log_error("deleteMessage", result.err());
    }

    async fn feedback(&mut self, message: &MessageId, reply_id: &str) {
        let (Some(good), Some(bad)) = (
            feedback_data(Rating::Good, reply_id),
            feedback_data(Rating::Bad, reply_id),
        ) else {
            tracing::warn!(
                reply_id,
                "reply id too long for Telegram callback data; no feedback buttons"
            );
            return;
        };
        let markup = InlineKeyboardMarkup::new([[
            InlineKeyboardButton::callback("👍", good),
            InlineKeyboardButton::callback("👎", bad),
        ]]);
        let result = self
            .bot
            .edit_message_reply_markup(self.chat, *message)
            .reply_markup(markup)
            .await;
        self.log_error("editMessageReplyMarkup", result.err());
    }
}

impl Chat<'_> {
    /// Shows `text` in a message an earlier try sent; false when that
    /// message is gone (deleted by the customer or by that try).
    async fn reuse(&self, id: MessageId, text: &str) -> bool {
        match self.bot.edit_message_text(self.chat, id, text).await {
            Ok(_) | Err(RequestError::Api(ApiError::MessageNotModified)) => true,
            Err(e) => {
                self.log_error("editMessageText", Some(e));
                false
            }
        }
    }

    /// Sends `text`, retrying network failures and flood waits with backoff.
    async fn send_retrying(&self, text: &str) -> Option<MessageId> {
        let mut backoff = Duration::from_millis(500);
        for attempt in 1..=SEND_ATTEMPTS {
            match self.bot.send_message(self.chat, text).await {
                Ok(message) => return Some(message.id),
                Err(e) => {
                    let wait = match &e {
                        RequestError::RetryAfter(secs) => Some(secs.duration()),
                        RequestError::Network(_) | RequestError::Io(_) => Some(backoff),
                        _ => None,
                    };
                    match wait {
                        Some(wait) if attempt < SEND_ATTEMPTS => {
                            tracing::warn!(
                                chat = self.chat.0,
                                attempt,
                                error = %self.ctx.redact(&e),
                                "sendMessage failed; retrying in {wait:?}"
                            );
                            tokio::time::sleep(wait).await;
                            backoff *= 2;
                        }
                        _ => {
                            self.log_error("sendMessage", Some(e));
                            return None;
                        }
                    }
                }
            }
        }
        None
    }

    fn log_error(&self, method: &str, error: Option<RequestError>) {
        if let Some(e) = error {
            tracing::warn!(chat = self.chat.0, method, error = %self.ctx.redact(&e), "Telegram API call failed");
        }
    }
}

const SEND_ATTEMPTS: u32 = 3;
