//! Running one request through the handler and showing its events on
//! Discord: typing indicator, a reply message edited as chunks arrive (at
//! most once per `edit_interval`), split at 2,000 characters, and the 👍/👎
//! reactions on the final part. A slash command's reply goes into its
//! deferred response, further parts into followups.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use chatforge_channel::{
    ChatEvent, ChatRequest, EventStream, event_channel, split_message, split_point,
};
use serenity::all::{
    ChannelId, CommandInteraction, CreateInteractionResponseFollowup, CreateMessage,
    EditInteractionResponse, EditMessage, MessageId, ReactionType,
};
use serenity::http::{Http, HttpError};
use tokio::time::Instant;

use crate::Context;
use crate::inbound::{THUMBS_DOWN, THUMBS_UP};

/// Where a request's reply goes.
pub(crate) enum Target {
    /// New messages in a channel (a DM or a guild channel).
    Channel(ChannelId),
    /// A deferred slash command: the first message is its original
    /// response, later ones are followups.
    Interaction {
        command: Box<CommandInteraction>,
        /// The original response, once it shows text.
        original: Option<MessageId>,
    },
}

impl Target {
    pub(crate) fn channel(channel: ChannelId) -> Self {
        Target::Channel(channel)
    }

    pub(crate) fn interaction(command: &CommandInteraction) -> Self {
        Target::Interaction {
            command: Box::new(command.clone()),
            original: None,
        }
    }

    fn channel_id(&self) -> ChannelId {
        match self {
            Target::Channel(c) => *c,
            Target::Interaction { command, .. } => command.channel_id,
        }
    }
}

/// Sends `request` to the handler and renders its events at `target` until
/// the handler is done. Platform errors are logged (tokens redacted) and
/// never reach the handler: the reply just goes on with what can be shown.
pub(crate) async fn serve(http: &Http, ctx: &Context, target: Target, request: ChatRequest) {
    let (sink, mut events) = event_channel();
    let produce = ctx.handler.handle(request, sink);
    let consume = Renderer::new(http, ctx, target).run(&mut events);
    tokio::join!(produce, consume);
}

struct Renderer<'a> {
    http: &'a Http,
    ctx: &'a Context,
    target: Target,
    /// When to renew the typing indicator; `None` when not generating.
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
    /// The handler's reply id → the message holding its last part, where
    /// the feedback reactions go.
    replies: HashMap<String, MessageId>,
}

impl<'a> Renderer<'a> {
    fn new(http: &'a Http, ctx: &'a Context, target: Target) -> Self {
        Self {
            http,
            ctx,
            target,
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
        // A deferred slash command that got no text would show "thinking…"
        // for 15 minutes: take the placeholder away.
        if let Target::Interaction {
            command,
            original: None,
        } = &self.target
        {
            tracing::debug!(command = %command.data.name, "slash command got no reply; removing the deferred response");
            let result = command.delete_response(self.http).await;
            self.log_error("DELETE @original", result.err());
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
            ChatEvent::FeedbackRequest { message_id } => self.reactions(&message_id).await,
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
        // A deferred slash command already shows "… is thinking".
        let Target::Channel(channel) = self.target else {
            return;
        };
        // Discord shows the indicator for about 10 s or until the bot sends.
        let result = channel.broadcast_typing(self.http).await;
        self.log_error("POST typing", result.err());
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
        let surplus: Vec<MessageId> = self
            .sent
            .iter()
            .skip(parts.len())
            .map(|(id, _)| *id)
            .collect();
        for id in surplus {
            self.delete(id).await;
        }
        if parts.is_empty() {
            tracing::warn!(
                channel = %self.target.channel_id(),
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

    /// Adds 👍 and 👎 to the reply `message_id` and remembers it, so that a
    /// user's reaction becomes feedback on it.
    async fn reactions(&mut self, message_id: &str) {
        let Some(&target) = self.replies.get(message_id) else {
            tracing::debug!(message_id, "feedback request for a reply not shown here");
            return;
        };
        self.ctx.replies.insert(target, message_id.to_string());
        let channel = self.target.channel_id();
        for emoji in [THUMBS_UP, THUMBS_DOWN] {
            let reaction = ReactionType::Unicode(emoji.to_string());
            self.retry("PUT reaction", || {
                channel.create_reaction(self.http, target, reaction.clone())
            })
            .await;
        }
    }

    async fn edit(&mut self, index: usize, text: &str) {
        let (id, shown) = &self.sent[index];
        if shown == text {
            return;
        }
        let id = *id;
        let done = match &self.target {
            Target::Channel(channel) => {
                let channel = *channel;
                self.retry("PATCH message", || {
                    channel.edit_message(self.http, id, EditMessage::new().content(text))
                })
                .await
            }
            Target::Interaction { command, original } if *original == Some(id) => {
                self.retry("PATCH @original", || {
                    command.edit_response(self.http, EditInteractionResponse::new().content(text))
                })
                .await
            }
            Target::Interaction { command, .. } => {
                self.retry("PATCH followup", || {
                    command.edit_followup(
                        self.http,
                        id,
                        CreateInteractionResponseFollowup::new().content(text),
                    )
                })
                .await
            }
        };
        if done.is_some() {
            self.sent[index].1 = text.to_string();
        }
    }

    /// Sends `text` as a new message (for a slash command: its deferred
    /// response first, then followups), retrying server errors, rate limits
    /// and network failures with backoff.
    async fn send(&mut self, text: &str) -> Option<MessageId> {
        match &mut self.target {
            Target::Channel(channel) => {
                let channel = *channel;
                let http = self.http;
                let message = retry(self.ctx, None, "POST message", || {
                    channel.send_message(http, CreateMessage::new().content(text))
                })
                .await?;
                Some(message.id)
            }
            Target::Interaction { command, original } => {
                let http = self.http;
                let command: &CommandInteraction = command;
                let message = if original.is_none() {
                    let message = retry(self.ctx, Some(&command.token), "PATCH @original", || {
                        command.edit_response(http, EditInteractionResponse::new().content(text))
                    })
                    .await?;
                    *original = Some(message.id);
                    message
                } else {
                    retry(self.ctx, Some(&command.token), "POST followup", || {
                        command.create_followup(
                            http,
                            CreateInteractionResponseFollowup::new().content(text),
                        )
                    })
                    .await?
                };
                Some(message.id)
            }
        }
    }

    async fn delete(&mut self, id: MessageId) {
        let result = match &self.target {
            Target::Channel(channel) => channel.delete_message(self.http, id).await,
            Target::Interaction { command, original } if *original == Some(id) => {
                command.delete_response(self.http).await
            }
            Target::Interaction { command, .. } => command.delete_followup(self.http, id).await,
        };
        self.log_error("DELETE message", result.err());
        if let Target::Interaction { original, .. } = &mut self.target
            && *original == Some(id)
        {
            // The next part may take the (now deleted) response's place.
            *original = None;
        }
    }

    fn interaction_token(&self) -> Option<&str> {
        match &self.target {
            Target::Channel(_) => None,
            Target::Interaction { command, .. } => Some(&command.token),
        }
    }

    async fn retry<T, F, Fut>(&self, call: &'static str, op: F) -> Option<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = serenity::Result<T>>,
    {
        retry(self.ctx, self.interaction_token(), call, op).await
    }

    fn log_error(&self, call: &'static str, error: Option<serenity::Error>) {
        if let Some(e) = error {
            tracing::warn!(
                channel = %self.target.channel_id(),
                call,
                error = %describe(self.ctx, self.interaction_token(), &e),
                "Discord API call failed"
            );
        }
    }
}

/// Attempts per send before it is given up (and logged).
const SEND_ATTEMPTS: u32 = 4;
/// Wait before the first retry; doubled for each one after.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);

/// Runs `op` until it succeeds, retrying errors that may pass (server
/// errors, 429s, network failures) with backoff; other errors and the last
/// failure are logged and give `None`.
async fn retry<T, F, Fut>(
    ctx: &Context,
    interaction_token: Option<&str>,
    call: &'static str,
    mut op: F,
) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = serenity::Result<T>>,
{
    let mut backoff = FIRST_BACKOFF;
    for attempt in 1..=SEND_ATTEMPTS {
        match op().await {
            Ok(value) => return Some(value),
            Err(e) => {
                let error = describe(ctx, interaction_token, &e);
                if is_transient(&e) && attempt < SEND_ATTEMPTS {
                    tracing::warn!(call, attempt, %error, "Discord API call failed; retrying in {backoff:?}");
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                } else {
                    tracing::warn!(call, attempt, %error, "Discord API call failed");
                    return None;
                }
            }
        }
    }
    None
}

/// Whether a failed call may succeed if tried again: a server error, a
/// rate limit (reached only when serenity's rate limiter is off), or a
/// request that never got an answer.
fn is_transient(error: &serenity::Error) -> bool {
    match error {
        serenity::Error::Http(HttpError::UnsuccessfulRequest(response)) => {
            let status = response.status_code;
            status.is_server_error() || status.as_u16() == 429
        }
        serenity::Error::Http(HttpError::Request(_)) => true,
        _ => false,
    }
}

/// `error` as text for logs: status and Discord's message, with the bot
/// token and the interaction token (it is in webhook URLs) cut out.
fn describe(ctx: &Context, interaction_token: Option<&str>, error: &serenity::Error) -> String {
    let text = match error {
        serenity::Error::Http(HttpError::UnsuccessfulRequest(response)) => {
            format!("HTTP {}: {}", response.status_code.as_u16(), error)
        }
        other => crate::error_text(other),
    };
    let text = ctx.redact(&text);
    match interaction_token {
        Some(token) if !token.is_empty() => text.replace(token, "<interaction-token>"),
        _ => text,
    }
}
