//! Showing a request's events on Discord: the shared streaming renderer of
//! [`chatforge_channel::render_request`] over Discord's calls — typing
//! indicator, messages sent, edited and deleted, and the 👍/👎 reactions on
//! a reply's last part. A slash command's reply goes into its deferred
//! response, further parts into followups.

use std::future::Future;
use std::time::Duration;

use chatforge_channel::{ChatRequest, Pacing, Surface, render_request};
use serenity::all::{
    ChannelId, CommandInteraction, CreateInteractionResponseFollowup, CreateMessage,
    EditInteractionResponse, EditMessage, MessageId, ReactionType,
};
use serenity::http::{Http, HttpError};

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
    let place = Place { http, ctx, target };
    let place = render_request(ctx.handler.as_ref(), request, place).await;
    // A deferred slash command that got no text would show "thinking…"
    // for 15 minutes: take the placeholder away.
    if let Target::Interaction {
        command,
        original: None,
    } = &place.target
    {
        tracing::debug!(command = %command.data.name, "slash command got no reply; removing the deferred response");
        let result = command.delete_response(place.http).await;
        place.log_error("DELETE @original", result.err());
    }
}

struct Place<'a> {
    http: &'a Http,
    ctx: &'a Context,
    target: Target,
}

impl Surface for Place<'_> {
    type Id = MessageId;

    fn pacing(&self) -> Pacing {
        self.ctx.pacing
    }

    async fn typing(&mut self) -> bool {
        // A deferred slash command already shows "… is thinking".
        let Target::Channel(channel) = self.target else {
            return false;
        };
        // Discord shows the indicator for about 10 s or until the bot sends.
        let result = channel.broadcast_typing(self.http).await;
        self.log_error("POST typing", result.err());
        true
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

    async fn edit(&mut self, id: &MessageId, text: &str) -> bool {
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
        done.is_some()
    }

    async fn delete(&mut self, id: &MessageId) {
        let id = *id;
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

    /// Adds 👍 and 👎 to the reply's last message and remembers it, so that
    /// a user's reaction becomes feedback on it.
    async fn feedback(&mut self, message: &MessageId, reply_id: &str) {
        let target = *message;
        self.ctx.replies.insert(target, reply_id.to_string());
        let channel = self.target.channel_id();
        for emoji in [THUMBS_UP, THUMBS_DOWN] {
            let reaction = ReactionType::Unicode(emoji.to_string());
            self.retry("PUT reaction", || {
                channel.create_reaction(self.http, target, reaction.clone())
            })
            .await;
        }
    }
}

impl Place<'_> {
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
