//! Running one request through the handler and showing its events in a
//! Telegram chat: typing action, a reply message edited as chunks arrive
//! (at most once per `edit_interval`), split at 4,096 characters, and the
//! 👍/👎 keyboard on the final part.

use std::collections::HashMap;
use std::time::Duration;

use chatforge_channel::{
    ChatEvent, ChatRequest, EventStream, Rating, event_channel, split_message, split_point,
};
use teloxide::RequestError;
use teloxide::prelude::*;
use teloxide::types::{ChatAction, InlineKeyboardButton, InlineKeyboardMarkup, MessageId};
use tokio::time::Instant;

use crate::inbound::feedback_data;
use crate::{Context, TgBot};

/// Sends `request` to the handler and renders its events in `chat` until
/// the handler is done. Platform errors are logged (token redacted) and
/// never reach the handler: the reply just goes on with what can be shown.
pub(crate) async fn serve(bot: &TgBot, ctx: &Context, chat: ChatId, request: ChatRequest) {
    let (sink, mut events) = event_channel();
    let produce = ctx.handler.handle(request, sink);
    let consume = Renderer::new(bot, ctx, chat).run(&mut events);
    tokio::join!(produce, consume);
}

struct Renderer<'a> {
    bot: &'a TgBot,
    ctx: &'a Context,
    chat: ChatId,
    /// When to renew the typing action; `None` when not generating.
    typing_due: Option<Instant>,
    /// Messages of the reply being streamed and the text each one shows.
    /// All but the last are full and final.
    sent: Vec<(MessageId, String)>,
    /// How many of `sent` are full and final.
    frozen: usize,
    /// Streamed text not yet frozen into a full message: the last message
    /// of `sent` shows it (or will, once `dirty` is flushed).
    pending: String,
    dirty: bool,
    last_edit: Option<Instant>,
    /// The handler's reply id → the Telegram message holding its last part,
    /// where the feedback keyboard goes.
    replies: HashMap<String, MessageId>,
}

impl<'a> Renderer<'a> {
    fn new(bot: &'a TgBot, ctx: &'a Context, chat: ChatId) -> Self {
        Self {
            bot,
            ctx,
            chat,
            typing_due: None,
            sent: Vec::new(),
            frozen: 0,
            pending: String::new(),
            dirty: false,
            last_edit: None,
            replies: HashMap::new(),
        }
    }

    async fn run(mut self, events: &mut EventStream) {
        loop {
            let deadline = [self.typing_due, self.flush_due()]
                .into_iter()
                .flatten()
                .min();
            let event = match deadline {
                None => events.next().await,
                Some(at) => match tokio::time::timeout_at(at, events.next()).await {
                    Ok(event) => event,
                    Err(_) => {
                        self.on_timer().await;
                        continue;
                    }
                },
            };
            match event {
                Some(event) => self.on_event(event).await,
                None => break,
            }
        }
        // The handler ended without a final reply: show what streamed.
        if self.dirty {
            self.flush().await;
        }
    }

    fn flush_due(&self) -> Option<Instant> {
        if !self.dirty {
            return None;
        }
        Some(
            self.last_edit
                .map_or_else(Instant::now, |t| t + self.ctx.edit_interval),
        )
    }

    async fn on_timer(&mut self) {
        let now = Instant::now();
        if self.flush_due().is_some_and(|t| t <= now) {
            self.flush().await;
        }
        if self.typing_due.is_some_and(|t| t <= now) {
            self.typing().await;
        }
    }

    async fn on_event(&mut self, event: ChatEvent) {
        match event {
            ChatEvent::Typing => self.typing().await,
            ChatEvent::ReplyChunk { delta } => self.chunk(&delta).await,
            ChatEvent::Reply { text, message_id } => {
                self.typing_due = None;
                if let Some(last) = self.finish(&text).await {
                    self.replies.insert(message_id, last);
                }
            }
            ChatEvent::FeedbackRequest { message_id } => self.keyboard(&message_id).await,
            ChatEvent::Handoff { notice } | ChatEvent::Error { notice } => {
                self.typing_due = None;
                // A reply cut short stays as far as it got; the notice follows.
                if self.dirty {
                    self.flush().await;
                }
                self.reset_stream();
                for part in split_message(&notice, self.ctx.max_chars) {
                    self.send(part).await;
                }
            }
        }
    }

    async fn typing(&mut self) {
        // Telegram shows the action for 5 s or until a message is sent.
        let result = self
            .bot
            .send_chat_action(self.chat, ChatAction::Typing)
            .await;
        self.log_error("sendChatAction", result.err());
        self.typing_due = Some(Instant::now() + self.ctx.typing_interval);
    }

    async fn chunk(&mut self, delta: &str) {
        self.pending.push_str(delta);
        // Freeze every full message as soon as the text passes the limit;
        // split_point decides on the window alone, so the split matches
        // split_message of the finished reply.
        loop {
            let trimmed = self.pending.trim_start();
            let Some((end, rest)) = split_point(trimmed, self.ctx.max_chars) else {
                break;
            };
            let part = trimmed[..end].to_string();
            let rest = trimmed[rest..].to_string();
            self.show_open(&part).await;
            self.sent_frozen();
            self.pending = rest;
        }
        self.dirty = !self.pending.trim().is_empty();
        // The first piece goes out at once; edits follow the interval.
        if self.dirty && self.open_message().is_none() {
            self.flush().await;
        }
    }

    /// The message showing `pending`, if one was sent.
    fn open_message(&self) -> Option<usize> {
        (self.sent.len() > self.frozen).then(|| self.sent.len() - 1)
    }

    fn sent_frozen(&mut self) {
        self.frozen = self.sent.len();
    }

    async fn flush(&mut self) {
        let text = self.pending.trim().to_string();
        self.dirty = false;
        if !text.is_empty() {
            self.show_open(&text).await;
        }
        self.last_edit = Some(Instant::now());
    }

    /// Shows `text` in the open message, sending one if there is none.
    async fn show_open(&mut self, text: &str) {
        match self.open_message() {
            Some(i) => self.edit(i, text).await,
            None => {
                if let Some(id) = self.send(text).await {
                    self.sent.push((id, text.to_string()));
                }
            }
        }
    }

    /// Brings the streamed messages to the final `text`: parts that differ
    /// are edited, missing parts sent, surplus messages deleted (the final
    /// text can be shorter than what streamed, e.g. after moderation).
    /// Returns the message with the last part.
    async fn finish(&mut self, text: &str) -> Option<MessageId> {
        let parts = split_message(text, self.ctx.max_chars);
        let mut last = None;
        for (i, part) in parts.iter().enumerate() {
            if i < self.sent.len() {
                self.edit(i, part).await;
                last = Some(self.sent[i].0);
            } else {
                last = self.send(part).await;
            }
        }
        for (id, _) in self.sent.iter().skip(parts.len()) {
            let result = self.bot.delete_message(self.chat, *id).await;
            self.log_error("deleteMessage", result.err());
        }
        if parts.is_empty() {
            tracing::warn!(
                chat = self.chat.0,
                "handler sent an empty reply; nothing shown"
            );
        }
        self.reset_stream();
        last
    }

    fn reset_stream(&mut self) {
        self.sent.clear();
        self.frozen = 0;
        self.pending.clear();
        self.dirty = false;
        self.last_edit = None;
    }

    async fn keyboard(&mut self, message_id: &str) {
        let Some(&target) = self.replies.get(message_id) else {
            tracing::debug!(message_id, "feedback request for a reply not shown here");
            return;
        };
        let (Some(good), Some(bad)) = (
            feedback_data(Rating::Good, message_id),
            feedback_data(Rating::Bad, message_id),
        ) else {
            tracing::warn!(
                message_id,
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
            .edit_message_reply_markup(self.chat, target)
            .reply_markup(markup)
            .await;
        self.log_error("editMessageReplyMarkup", result.err());
    }

    async fn edit(&mut self, index: usize, text: &str) {
        let (id, shown) = &self.sent[index];
        // Telegram refuses an edit that changes nothing.
        if shown == text {
            return;
        }
        let result = self.bot.edit_message_text(self.chat, *id, text).await;
        match result {
            Ok(_) => self.sent[index].1 = text.to_string(),
            Err(e) => self.log_error("editMessageText", Some(e)),
        }
    }

    /// Sends `text`, retrying network failures and flood waits with backoff.
    async fn send(&self, text: &str) -> Option<MessageId> {
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
