//! chatforge's Discord adapter: a serenity gateway client over the
//! platform-neutral [`chatforge_channel`] contract.
//!
//! - Answers direct messages, and messages that @mention the bot in guild
//!   channels ([`DiscordConfig::guild_channels`] only, when it is not
//!   empty); the mention is removed from the text. Messages from bots
//!   (this one included) are ignored.
//! - Text commands (`/reset`, `/human`, …) are parsed with
//!   [`chatforge_channel::parse_command`]; slash commands (`/ask`, `/reset`,
//!   `/feedback`, and the rest of [`chatforge_channel::COMMANDS`]) are
//!   registered globally at READY, deferred at once (Discord's 3 s window)
//!   and answered by editing the deferred response.
//! - While the handler works the channel shows the typing indicator; reply
//!   chunks appear in one message edited at most once per
//!   [`DiscordConfig::edit_interval`], split at 2,000 characters.
//! - On a feedback request the bot reacts 👍 and 👎 to its reply; a user's
//!   👍/👎 reaction on it reaches the handler as
//!   [`chatforge_channel::Feedback`].
//!
//! The bot token (and interaction tokens) never appear in logs or errors:
//! every platform error is redacted before it is shown.

#[cfg(feature = "fake")]
pub mod fake;
mod inbound;
mod render;

use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chatforge_channel::{
    ChatHandler, ChatOutbox, ChatRequest, Feedback, OutboxError, OutboxFuture, Pacing, Platform,
    split_message,
};
use serenity::all::{
    ChannelId, Client, ClientBuilder, Command, CommandInteraction, Context as SerenityContext,
    CreateAllowedMentions, EventHandler, GatewayIntents, HttpBuilder, Interaction, Message,
    Reaction, Ready, ResumedEvent, ShardStageUpdateEvent,
};
use serenity::async_trait;
use serenity::http::Http;
use tokio::sync::watch;

use crate::inbound::{
    BotIdentity, ReplyIndex, command_menu, interaction_request, message_request, reaction_rating,
};
use crate::render::Target;

/// Errors starting or running the adapter. Messages never contain the bot
/// token.
#[derive(Debug, thiserror::Error)]
pub enum DiscordError {
    #[error("the Discord bot token is empty (set the environment variable the config names)")]
    EmptyToken,
    #[error("Discord proxy URL {url:?} is not valid: it must start with http:// or https://")]
    Proxy { url: String },
    #[error("Discord API call {call} failed: {message}")]
    Api { call: &'static str, message: String },
    #[error("the Discord gateway connection failed: {message}")]
    Gateway { message: String },
}

/// Settings of the Discord adapter.
#[derive(Clone)]
pub struct DiscordConfig {
    /// Bot token from the Discord developer portal; a secret.
    pub token: String,
    /// Base URL that REST calls go to instead of `https://discord.com`
    /// (serenity's `HttpBuilder::proxy`): an HTTP API proxy, or a fake in
    /// tests. serenity's own rate limiter does not go through a proxy, so
    /// with one it is off and rate limiting is the proxy's job (429s are
    /// retried with backoff).
    pub proxy: Option<String>,
    /// Guild channels where @mentions are answered; empty means any channel
    /// the bot can read. Direct messages and slash commands are always
    /// answered (slash command use is governed by the guild's integration
    /// settings).
    pub guild_channels: Vec<u64>,
    /// Shortest time between two edits of a streaming reply.
    pub edit_interval: Duration,
    /// How often the typing indicator is renewed while generating (Discord
    /// shows it for about 10 s).
    pub typing_interval: Duration,
    /// The gateway shards this process runs; `None`: as many as Discord
    /// recommends, all here (autosharded).
    pub shards: Option<Shards>,
}

impl DiscordConfig {
    pub fn new(token: impl Into<String>) -> Self {
        Self {
            token: token.into(),
            proxy: None,
            guild_channels: Vec::new(),
            edit_interval: Duration::from_secs(1),
            typing_interval: Duration::from_secs(8),
            shards: None,
        }
    }
}

/// A range of gateway shards out of a total: `"0..2 of 4"` runs shards 0
/// and 1 of 4 in this process (another process runs `"2..4 of 4"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shards {
    pub range: std::ops::Range<u32>,
    pub total: u32,
}

impl std::str::FromStr for Shards {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a shard range like \"0..2 of 4\"");
        let (range, total) = s.split_once(" of ").ok_or_else(bad)?;
        let (start, end) = range.trim().split_once("..").ok_or_else(bad)?;
        let num = |t: &str| t.trim().parse::<u32>().map_err(|_| bad());
        let (start, end, total) = (num(start)?, num(end)?, num(total)?);
        if start >= end || end > total {
            return Err(format!(
                "{s:?}: the range must hold at least one shard and end at most at the total"
            ));
        }
        Ok(Self {
            range: start..end,
            total,
        })
    }
}

// Written by hand so that `{:?}` of a config can never print the token.
impl fmt::Debug for DiscordConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DiscordConfig")
            .field("token", &"<redacted>")
            .field("proxy", &self.proxy)
            .field("guild_channels", &self.guild_channels)
            .field("edit_interval", &self.edit_interval)
            .field("typing_interval", &self.typing_interval)
            .finish()
    }
}

/// What the event handlers share.
pub(crate) struct Context {
    handler: Arc<dyn ChatHandler>,
    pub(crate) me: BotIdentity,
    token: String,
    guild_channels: HashSet<ChannelId>,
    pub(crate) pacing: Pacing,
    /// Discord message carrying a reply's 👍/👎 → the handler's reply id.
    pub(crate) replies: ReplyIndex,
    /// Cleared at shutdown: new messages are no longer taken.
    accepting: AtomicBool,
    /// Requests being served; shutdown waits for 0.
    in_flight: watch::Sender<usize>,
    commands_registered: AtomicBool,
    shards: Option<Shards>,
}

impl Context {
    /// `error` as text with the bot token (and its secret parts alone) cut
    /// out.
    pub(crate) fn redact(&self, error: &dyn fmt::Display) -> String {
        redact(&error.to_string(), &self.token)
    }

    /// Marks one request in flight until the guard drops, or `None` once
    /// the adapter is shutting down.
    fn begin(&self) -> Option<InFlight<'_>> {
        if !self.accepting.load(Ordering::SeqCst) {
            return None;
        }
        self.in_flight.send_modify(|n| *n += 1);
        Some(InFlight(self))
    }

    /// Sends `request` to the handler and shows its events at `target`.
    async fn serve(&self, http: &Http, target: Target, request: ChatRequest) {
        render::serve(http, self, target, request).await;
    }
}

struct InFlight<'a>(&'a Context);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.send_modify(|n| *n -= 1);
    }
}

/// `text` with `token` replaced by `<token>`; also each secret part of a
/// Discord token (`<user id>.<timestamp>.<hmac>`: all but the first, which
/// is only the bot's id in base64), in case one shows up alone.
pub(crate) fn redact(text: &str, token: &str) -> String {
    let token = token.trim();
    let token = token.strip_prefix("Bot ").unwrap_or(token);
    if token.is_empty() {
        return text.to_string();
    }
    let mut out = text.replace(token, "<token>");
    for part in token.split('.').skip(1) {
        if part.len() >= 6 {
            out = out.replace(part, "<token>");
        }
    }
    out
}

/// `error` as text with its causes: serenity shows a failed request only as
/// "Error while sending HTTP request.", its cause names the URL and the
/// reason (refused, timed out, …). Not yet redacted.
pub(crate) fn error_text(error: &serenity::Error) -> String {
    let mut text = error.to_string();
    if let serenity::Error::Http(serenity::http::HttpError::Request(cause)) = error {
        let mut cause: Option<&dyn std::error::Error> = Some(cause);
        while let Some(e) = cause {
            text.push_str(": ");
            text.push_str(&e.to_string());
            cause = e.source();
        }
    }
    text
}

/// A connected Discord bot, ready to run.
pub struct DiscordAdapter {
    client: Client,
    ctx: Arc<Context>,
}

impl DiscordAdapter {
    /// Checks the token with `GET /users/@me` and prepares the gateway
    /// client (it connects in [`DiscordAdapter::run_until`]).
    pub async fn connect(
        config: DiscordConfig,
        handler: Arc<dyn ChatHandler>,
    ) -> Result<Self, DiscordError> {
        if config.token.trim().is_empty() {
            return Err(DiscordError::EmptyToken);
        }
        // Generated text must never ping @everyone, roles or users.
        let mut http = HttpBuilder::new(&config.token)
            .default_allowed_mentions(CreateAllowedMentions::new().replied_user(false));
        if let Some(proxy) = &config.proxy {
            let proxy = proxy.trim_end_matches('/');
            if !(proxy.starts_with("http://") || proxy.starts_with("https://")) {
                return Err(DiscordError::Proxy {
                    url: redact(proxy, &config.token),
                });
            }
            // serenity's rate limiter sends straight to discord.com,
            // bypassing the proxy: with a proxy it must be off.
            http = http.proxy(proxy).ratelimiter_disabled(true);
        }
        let http = http.build();
        let api_error = |call: &'static str, e: serenity::Error| DiscordError::Api {
            call,
            message: redact(&error_text(&e), &config.token),
        };
        let user = http
            .get_current_user()
            .await
            .map_err(|e| api_error("GET /users/@me", e))?;
        tracing::info!(bot = %user.name, id = %user.id, "connected to Discord");
        let (in_flight, _) = watch::channel(0);
        let ctx = Arc::new(Context {
            handler,
            me: BotIdentity {
                id: user.id,
                name: user.name.clone(),
            },
            token: config.token.clone(),
            guild_channels: config
                .guild_channels
                .iter()
                .map(|&id| ChannelId::new(id))
                .collect(),
            pacing: Pacing {
                max_chars: Platform::Discord.max_message_chars(),
                edit_interval: config.edit_interval,
                typing_interval: config.typing_interval,
            },
            replies: ReplyIndex::new(REPLY_INDEX_CAPACITY),
            accepting: AtomicBool::new(true),
            in_flight,
            commands_registered: AtomicBool::new(false),
            shards: config.shards.clone(),
        });
        // MESSAGE_CONTENT is privileged and not needed: Discord sends the
        // content of DMs and of messages that mention the bot without it.
        let intents = GatewayIntents::GUILD_MESSAGES
            | GatewayIntents::DIRECT_MESSAGES
            | GatewayIntents::GUILD_MESSAGE_REACTIONS
            | GatewayIntents::DIRECT_MESSAGE_REACTIONS;
        let client = ClientBuilder::new_with_http(http, intents)
            .event_handler(Handler { ctx: ctx.clone() })
            .await
            .map_err(|e| api_error("GET /gateway", e))?;
        Ok(Self { client, ctx })
    }

    /// The bot's user name.
    pub fn username(&self) -> &str {
        &self.ctx.me.name
    }

    /// Sends operators' messages to channels by id (mentions stay off, as
    /// for replies).
    pub fn outbox(&self) -> Arc<dyn ChatOutbox> {
        Arc::new(DiscordOutbox {
            http: self.client.http.clone(),
            ctx: self.ctx.clone(),
        })
    }

    /// The bot's user id.
    pub fn user_id(&self) -> u64 {
        self.ctx.me.id.get()
    }

    /// Runs the gateway connection until `shutdown` completes, then stops
    /// taking messages, lets the replies in flight finish and closes the
    /// connection. Reconnects are serenity's (and logged). Fails if the
    /// gateway connection ends on its own.
    pub async fn run_until(
        mut self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), DiscordError> {
        let shard_manager = self.client.shard_manager.clone();
        let shards = self.ctx.shards.clone();
        let mut gateway = tokio::spawn(async move {
            match shards {
                None => self.client.start_autosharded().await,
                // serenity's range is inclusive.
                Some(s) => {
                    self.client
                        .start_shard_range(s.range.start..s.range.end - 1, s.total)
                        .await
                }
            }
        });
        tokio::select! {
            result = &mut gateway => {
                let message = match result {
                    Ok(Ok(())) => "the gateway connection closed".to_string(),
                    Ok(Err(e)) => self.ctx.redact(&error_text(&e)),
                    Err(e) => e.to_string(),
                };
                tracing::error!(error = %message, "Discord gateway stopped");
                return Err(DiscordError::Gateway { message });
            }
            () = shutdown => {}
        }
        tracing::info!("stopping the Discord adapter: waiting for replies in flight");
        self.ctx.accepting.store(false, Ordering::SeqCst);
        let mut in_flight = self.ctx.in_flight.subscribe();
        let _ = in_flight.wait_for(|&n| n == 0).await;
        shard_manager.shutdown_all().await;
        if let Ok(Err(e)) = gateway.await {
            tracing::debug!(error = %self.ctx.redact(&error_text(&e)), "gateway ended at shutdown");
        }
        tracing::info!("Discord adapter stopped");
        Ok(())
    }
}

struct DiscordOutbox {
    http: Arc<Http>,
    ctx: Arc<Context>,
}

impl ChatOutbox for DiscordOutbox {
    fn platform(&self) -> Platform {
        Platform::Discord
    }

    fn send<'a>(&'a self, conversation_key: &'a str, text: &'a str) -> OutboxFuture<'a> {
        Box::pin(async move {
            let channel = conversation_key
                .parse::<u64>()
                .ok()
                .filter(|&id| id != 0)
                .map(ChannelId::new)
                .ok_or_else(|| OutboxError::BadKey {
                    platform: Platform::Discord,
                    key: conversation_key.to_string(),
                })?;
            for part in split_message(text, Platform::Discord.max_message_chars()) {
                channel
                    .say(&self.http, part)
                    .await
                    .map_err(|e| OutboxError::Failed {
                        platform: Platform::Discord,
                        reason: self.ctx.redact(&error_text(&e)),
                    })?;
            }
            Ok(())
        })
    }
}

/// How many bot replies feedback reactions are remembered for.
const REPLY_INDEX_CAPACITY: usize = 4096;

/// serenity's event handler: gateway events → requests.
struct Handler {
    ctx: Arc<Context>,
}

#[async_trait]
impl EventHandler for Handler {
    async fn ready(&self, sc: SerenityContext, ready: Ready) {
        tracing::info!(
            user = %ready.user.name,
            guilds = ready.guilds.len(),
            "Discord gateway ready"
        );
        // Once per run: a new session after a lost one sends READY again.
        if self.ctx.commands_registered.swap(true, Ordering::SeqCst) {
            return;
        }
        sc.http.set_application_id(ready.application.id);
        match Command::set_global_commands(&sc.http, command_menu()).await {
            Ok(commands) => tracing::info!(count = commands.len(), "slash commands registered"),
            Err(e) => {
                self.ctx.commands_registered.store(false, Ordering::SeqCst);
                tracing::warn!(error = %self.ctx.redact(&error_text(&e)), "registering slash commands failed");
            }
        }
    }

    async fn resume(&self, _: SerenityContext, _: ResumedEvent) {
        tracing::info!("Discord gateway session resumed");
    }

    async fn shard_stage_update(&self, _: SerenityContext, event: ShardStageUpdateEvent) {
        tracing::info!(
            shard = event.shard_id.0,
            from = %event.old,
            to = %event.new,
            "Discord gateway connection stage changed"
        );
    }

    async fn message(&self, sc: SerenityContext, msg: Message) {
        let Some(request) = message_request(&msg, &self.ctx.me, &self.ctx.guild_channels) else {
            return;
        };
        let Some(_guard) = self.ctx.begin() else {
            tracing::debug!("shutting down; message not taken");
            return;
        };
        let target = Target::channel(msg.channel_id);
        self.ctx.serve(&sc.http, target, request).await;
    }

    async fn interaction_create(&self, sc: SerenityContext, interaction: Interaction) {
        let Interaction::Command(command) = interaction else {
            return;
        };
        let Some(_guard) = self.ctx.begin() else {
            tracing::debug!("shutting down; slash command not taken");
            return;
        };
        self.on_command(&sc, command).await;
    }

    async fn reaction_add(&self, sc: SerenityContext, reaction: Reaction) {
        let Some(user) = reaction.user_id else {
            return;
        };
        // The bot's own 👍/👎 arrive here too.
        if user == self.ctx.me.id {
            return;
        }
        if reaction.member.as_ref().is_some_and(|m| m.user.bot) {
            return;
        }
        let Some(rating) = reaction_rating(&reaction.emoji) else {
            return;
        };
        let Some(message_id) = self.ctx.replies.get(reaction.message_id) else {
            tracing::debug!(message = %reaction.message_id, "reaction on a message that is not a known reply");
            return;
        };
        let Some(_guard) = self.ctx.begin() else {
            return;
        };
        let request = ChatRequest::Feedback(Feedback {
            platform: Platform::Discord,
            conversation_key: reaction.channel_id.to_string(),
            user_key: user.to_string(),
            message_id,
            rating,
            comment: None,
        });
        let target = Target::channel(reaction.channel_id);
        self.ctx.serve(&sc.http, target, request).await;
    }
}

impl Handler {
    async fn on_command(&self, sc: &SerenityContext, command: CommandInteraction) {
        // Generation takes longer than Discord's 3 s: acknowledge first
        // ("… is thinking"), then edit the deferred response.
        if let Err(e) = command.defer(&sc.http).await {
            tracing::warn!(
                command = %command.data.name,
                error = %self.ctx.redact(&error_text(&e)).replace(&command.token, "<interaction-token>"),
                "deferring the slash command failed"
            );
            return;
        }
        let request = interaction_request(&command);
        let target = Target::interaction(&command);
        self.ctx.serve(&sc.http, target, request).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_redact_hides_token_and_secret_parts() {
        let token = "MTAwMDAwMA.GhJkLm.SECRETsecretSECRET";
        let text = format!("Authorization: Bot {token} failed; hmac SECRETsecretSECRET");
        let out = redact(&text, token);
        assert!(!out.contains("SECRET"), "{out}");
        assert!(!out.contains("GhJkLm"), "{out}");
        assert!(out.contains("Bot <token>"));
        assert_eq!(redact("plain", ""), "plain");
        assert_eq!(redact("x Bot-t0ken y", "Bot Bot-t0ken"), "x <token> y");
    }

    #[test]
    fn test_config_debug_hides_token() {
        let mut config = DiscordConfig::new("MTAw.SECRET.secret");
        config.proxy = Some("http://127.0.0.1:1".into());
        let shown = format!("{config:?}");
        assert!(!shown.contains("SECRET"), "{shown}");
        assert!(shown.contains("127.0.0.1"));
        assert_eq!(config.typing_interval, Duration::from_secs(8));
    }
}
