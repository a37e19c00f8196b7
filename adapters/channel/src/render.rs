//! Showing a request's events on a platform that can send, edit and delete
//! messages: the typing indicator renewed while the handler works, reply
//! chunks shown in one message edited at most once per edit interval (a
//! new message whenever the text passes the platform's length limit), the
//! final reply replacing what streamed, and feedback controls on its last
//! part. Adapters implement [`Surface`] for the platform calls; the
//! streaming logic is the same everywhere.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::{
    ChatEvent, ChatHandler, ChatRequest, EventStream, event_channel, split_message, split_point,
};

/// How a platform paces a streamed reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pacing {
    /// Longest message, in characters.
    pub max_chars: usize,
    /// Shortest time between two edits of a streaming message.
    pub edit_interval: Duration,
    /// How often the typing indicator is renewed.
    pub typing_interval: Duration,
}

/// One place a reply can be shown (a chat, a channel, a slash command's
/// response). Calls log their own failures; `None`/`false` means the call
/// failed and the renderer goes on with what it can show.
pub trait Surface: Send {
    /// The platform's id of a sent message.
    type Id: Clone + Send + Sync;

    fn pacing(&self) -> Pacing;

    /// Shows the typing indicator; `false` when the platform shows its own
    /// (then it is not renewed).
    fn typing(&mut self) -> impl Future<Output = bool> + Send;
    fn send(&mut self, text: &str) -> impl Future<Output = Option<Self::Id>> + Send;
    /// Changes a sent message's text; `false` when that failed.
    fn edit(&mut self, id: &Self::Id, text: &str) -> impl Future<Output = bool> + Send;
    fn delete(&mut self, id: &Self::Id) -> impl Future<Output = ()> + Send;
    /// Puts the rating controls (buttons, reactions) for the handler's
    /// reply `reply_id` on `message`, its last part.
    fn feedback(&mut self, message: &Self::Id, reply_id: &str) -> impl Future<Output = ()> + Send;
}

/// Sends `request` to `handler` and shows its events on `surface` until the
/// handler is done; returns the surface (for clean-up the platform needs).
pub async fn render_request<S: Surface>(
    handler: &dyn ChatHandler,
    request: ChatRequest,
    surface: S,
) -> S {
    let (sink, mut events) = event_channel();
    let produce = handler.handle(request, sink);
    let consume = Renderer::new(surface).run(&mut events);
    let ((), surface) = tokio::join!(produce, consume);
    surface
}

struct Renderer<S: Surface> {
    surface: S,
    /// When to renew the typing indicator; `None` when not generating.
    typing_due: Option<Instant>,
    /// Messages of the reply being streamed and the text each one shows.
    /// All but the last are full and final.
    sent: Vec<(S::Id, String)>,
    /// How many of `sent` are full and final.
    frozen: usize,
    /// Streamed text not yet frozen into a full message: the last message
    /// of `sent` shows it (or will, once `dirty` is flushed).
    pending: String,
    dirty: bool,
    last_edit: Option<Instant>,
    /// The handler's reply id → the message holding its last part, where
    /// the feedback controls go.
    replies: HashMap<String, S::Id>,
}

impl<S: Surface> Renderer<S> {
    fn new(surface: S) -> Self {
        Self {
            surface,
            typing_due: None,
            sent: Vec::new(),
            frozen: 0,
            pending: String::new(),
            dirty: false,
            last_edit: None,
            replies: HashMap::new(),
        }
    }

    async fn run(mut self, events: &mut EventStream) -> S {
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
        self.surface
    }

    fn flush_due(&self) -> Option<Instant> {
        if !self.dirty {
            return None;
        }
        Some(
            self.last_edit
                .map_or_else(Instant::now, |t| t + self.surface.pacing().edit_interval),
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
            ChatEvent::FeedbackRequest { message_id } => match self.replies.get(&message_id) {
                Some(target) => {
                    let target = target.clone();
                    self.surface.feedback(&target, &message_id).await;
                }
                None => {
                    tracing::debug!(message_id, "feedback request for a reply not shown here");
                }
            },
            ChatEvent::Handoff { notice } | ChatEvent::Error { notice } => {
                self.typing_due = None;
                // A reply cut short stays as far as it got; the notice follows.
                if self.dirty {
                    self.flush().await;
                }
                self.reset_stream();
                for part in split_message(&notice, self.surface.pacing().max_chars) {
                    self.surface.send(part).await;
                }
            }
        }
    }

    async fn typing(&mut self) {
        self.typing_due = self
            .surface
            .typing()
            .await
            .then(|| Instant::now() + self.surface.pacing().typing_interval);
    }

    async fn chunk(&mut self, delta: &str) {
        self.pending.push_str(delta);
        // Freeze every full message as soon as the text passes the limit;
        // split_point decides on the window alone, so the split matches
        // split_message of the finished reply.
        loop {
            let trimmed = self.pending.trim_start();
            let Some((end, rest)) = split_point(trimmed, self.surface.pacing().max_chars) else {
                break;
            };
            let part = trimmed[..end].to_string();
            let rest = trimmed[rest..].to_string();
            self.show_open(&part).await;
            self.frozen = self.sent.len();
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
                if let Some(id) = self.surface.send(text).await {
                    self.sent.push((id, text.to_string()));
                }
            }
        }
    }

    async fn edit(&mut self, index: usize, text: &str) {
        let (id, shown) = &self.sent[index];
        // Platforms refuse (or waste a call on) an edit that changes nothing.
        if shown == text {
            return;
        }
        let id = id.clone();
        if self.surface.edit(&id, text).await {
            self.sent[index].1 = text.to_string();
        }
    }

    /// Brings the streamed messages to the final `text`: parts that differ
    /// are edited, missing parts sent, surplus messages deleted (the final
    /// text can be shorter than what streamed, e.g. after moderation).
    /// Returns the message with the last part.
    async fn finish(&mut self, text: &str) -> Option<S::Id> {
        let parts = split_message(text, self.surface.pacing().max_chars);
        let mut last = None;
        for (i, part) in parts.iter().enumerate() {
            if i < self.sent.len() {
                self.edit(i, part).await;
                last = Some(self.sent[i].0.clone());
            } else {
                last = self.surface.send(part).await;
            }
        }
        let surplus: Vec<S::Id> = self
            .sent
            .iter()
            .skip(parts.len())
            .map(|(id, _)| id.clone())
            .collect();
        for id in surplus {
            self.surface.delete(&id).await;
        }
        if parts.is_empty() {
            tracing::warn!("handler sent an empty reply; nothing shown");
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
}
