//! chatforge's Telegram adapter: long polling with teloxide's `Dispatcher`
//! behind its `Throttle` adaptor, or updates pushed to a webhook and handed
//! over one at a time ([`TelegramWebhook`]), over the platform-neutral
//! [`chatforge_channel`] contract.
//!
//! - Commands (`/start`, `/help`, `/reset`, `/feedback`, `/human`, `/bot`)
//!   are registered with `setMyCommands` and passed to the handler as
//!   [`chatforge_channel::Command`]s.
//! - While the handler generates, the chat shows the typing action; reply
//!   chunks appear in one message edited at most once per
//!   [`TelegramConfig::edit_interval`], split at 4,096 characters.
//! - Final replies get a 👍/👎 inline keyboard; a press reaches the handler
//!   as [`chatforge_channel::Feedback`].
//! - In groups the bot answers only when mentioned, replied to, or given a
//!   command.
//!
//! The bot token never appears in logs or errors: every platform error is
//! passed through [`TelegramConfig`]'s redaction before it is shown.

#[cfg(feature = "fake")]
pub mod fake;
mod inbound;
mod render;

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chatforge_channel::{
    COMMANDS, ChatHandler, ChatOutbox, ChatRequest, Feedback, OutboxError, OutboxFuture, Pacing,
    Platform, split_message,
};
use teloxide::RequestError;
use teloxide::adaptors::Throttle;
use teloxide::adaptors::throttle::Limits;
use teloxide::dispatching::UpdateHandler;
use teloxide::error_handlers::ErrorHandler;
use teloxide::prelude::*;
pub use teloxide::types::Update;
use teloxide::types::{AllowedUpdate, BotCommand, UpdateKind};
use teloxide::update_listeners::polling_default;

use crate::inbound::{BotIdentity, parse_feedback_data, to_request};

/// The bot as the dispatcher and handlers see it: every send goes through
/// teloxide's throttling (1 message/s per chat, 20/min per group, 30/s in
/// all), so Telegram's flood limits are respected.
type TgBot = Throttle<Bot>;

/// Errors starting the adapter. Messages never contain the bot token.
#[derive(Debug, thiserror::Error)]
pub enum TelegramError {
    #[error("the Telegram bot token is empty (set the environment variable the config names)")]
    EmptyToken,
    #[error("Telegram API URL {url:?} is not valid: {reason}")]
    ApiUrl { url: String, reason: String },
    #[error("Telegram API call {method} failed: {message}")]
    Api {
        method: &'static str,
        message: String,
    },
    #[error(
        "the bot has no username (getMe returned none), so group mentions cannot be recognised"
    )]
    NoUsername,
}

/// Settings of the Telegram adapter.
#[derive(Clone)]
pub struct TelegramConfig {
    /// Bot token from @BotFather (`123456:ABC…`); a secret.
    pub token: String,
    /// Bot API base URL; `None` is `https://api.telegram.org`. A
    /// self-hosted Bot API server, or a fake in tests.
    pub api_url: Option<String>,
    /// Shortest time between two edits of a streaming reply. Telegram
    /// rate-limits edits too; once a second keeps well clear of that.
    pub edit_interval: Duration,
    /// How often the typing action is renewed while generating (Telegram
    /// shows it for 5 s).
    pub typing_interval: Duration,
}

impl TelegramConfig {
    pub fn new(token: impl Into<String>) -> Self {
        Self {
            token: token.into(),
            api_url: None,
            edit_interval: Duration::from_secs(1),
            typing_interval: Duration::from_secs(4),
        }
    }
}

// Written by hand so that `{:?}` of a config can never print the token.
impl fmt::Debug for TelegramConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TelegramConfig")
            .field("token", &"<redacted>")
            .field("api_url", &self.api_url)
            .field("edit_interval", &self.edit_interval)
            .field("typing_interval", &self.typing_interval)
            .finish()
    }
}

/// What the update handlers share.
struct Context {
    handler: Arc<dyn ChatHandler>,
    me: BotIdentity,
    token: String,
    pacing: Pacing,
}

impl Context {
    /// `error` as text with the token (and its secret half alone) cut out;
    /// teloxide hides it only for tokens of the usual length.
    fn redact(&self, error: &dyn fmt::Display) -> String {
        redact(&error.to_string(), &self.token)
    }
}

fn redact(text: &str, token: &str) -> String {
    if token.is_empty() {
        return text.to_string();
    }
    let mut out = text.replace(token, "<token>");
    if let Some((_, secret)) = token.split_once(':')
        && secret.len() >= 4
    {
        out = out.replace(secret, "<token>");
    }
    out
}

fn make_bot(config: &TelegramConfig) -> Result<Bot, TelegramError> {
    if config.token.trim().is_empty() {
        return Err(TelegramError::EmptyToken);
    }
    let mut bot = Bot::new(config.token.clone());
    if let Some(raw) = &config.api_url {
        let url = url::Url::parse(raw).map_err(|e| TelegramError::ApiUrl {
            url: redact(raw, &config.token),
            reason: e.to_string(),
        })?;
        bot = bot.set_api_url(url);
    }
    Ok(bot)
}

fn api_error(config: &TelegramConfig, method: &'static str, e: RequestError) -> TelegramError {
    TelegramError::Api {
        method,
        message: redact(&e.to_string(), &config.token),
    }
}

/// Where Telegram should push updates, for [`set_webhook`].
#[derive(Clone)]
pub struct WebhookRegistration {
    /// The public HTTPS address of serve's webhook route.
    pub url: String,
    /// Sent back by Telegram in `X-Telegram-Bot-Api-Secret-Token`; a secret.
    pub secret: String,
    /// Connections Telegram opens at once (1–100; Telegram's default 40).
    pub max_connections: Option<u8>,
    /// Drop the updates Telegram holds for the bot instead of delivering them.
    pub drop_pending: bool,
}

/// Registers the webhook (`setWebhook`), once per deployment rather than
/// at every replica's start: messages and button presses only.
pub async fn set_webhook(
    config: &TelegramConfig,
    registration: &WebhookRegistration,
) -> Result<(), TelegramError> {
    let bot = make_bot(config)?;
    let url = url::Url::parse(&registration.url).map_err(|e| TelegramError::ApiUrl {
        url: redact(&registration.url, &config.token),
        reason: e.to_string(),
    })?;
    let mut request = bot
        .set_webhook(url)
        .secret_token(registration.secret.clone())
        .allowed_updates([AllowedUpdate::Message, AllowedUpdate::CallbackQuery])
        .drop_pending_updates(registration.drop_pending);
    if let Some(n) = registration.max_connections {
        request = request.max_connections(n);
    }
    request
        .await
        .map_err(|e| api_error(config, "setWebhook", e))?;
    Ok(())
}

/// Removes the webhook (`deleteWebhook`), e.g. to go back to polling.
pub async fn delete_webhook(
    config: &TelegramConfig,
    drop_pending: bool,
) -> Result<(), TelegramError> {
    let bot = make_bot(config)?;
    bot.delete_webhook()
        .drop_pending_updates(drop_pending)
        .await
        .map_err(|e| api_error(config, "deleteWebhook", e))?;
    Ok(())
}

/// A connected Telegram bot, ready to poll.
pub struct TelegramAdapter {
    bot: TgBot,
    ctx: Arc<Context>,
}

impl TelegramAdapter {
    /// Checks the token with `getMe` and registers the command menu with
    /// `setMyCommands`.
    pub async fn connect(
        config: TelegramConfig,
        handler: Arc<dyn ChatHandler>,
    ) -> Result<Self, TelegramError> {
        let bot = make_bot(&config)?;
        let api_error = |method, e| api_error(&config, method, e);
        let me = bot.get_me().await.map_err(|e| api_error("getMe", e))?;
        let username = me.username.clone().ok_or(TelegramError::NoUsername)?;
        let commands: Vec<BotCommand> = COMMANDS
            .iter()
            .map(|c| BotCommand::new(c.name, c.description))
            .collect();
        bot.set_my_commands(commands)
            .await
            .map_err(|e| api_error("setMyCommands", e))?;
        tracing::info!(bot = %username, "connected to Telegram");
        let ctx = Context {
            handler,
            me: BotIdentity {
                id: me.id,
                username,
            },
            token: config.token,
            pacing: Pacing {
                max_chars: Platform::Telegram.max_message_chars(),
                edit_interval: config.edit_interval,
                typing_interval: config.typing_interval,
            },
        };
        Ok(Self {
            bot: bot.throttle(Limits::default()),
            ctx: Arc::new(ctx),
        })
    }

    /// The bot's username, without `@`.
    pub fn username(&self) -> &str {
        &self.ctx.me.username
    }

    /// Sends operators' messages to this bot's chats (through the same
    /// rate-limit throttle as the replies).
    pub fn outbox(&self) -> Arc<dyn ChatOutbox> {
        Arc::new(TelegramOutbox {
            bot: self.bot.clone(),
            ctx: self.ctx.clone(),
        })
    }

    /// Answers updates pushed to a webhook instead of polling.
    pub fn webhook(&self) -> TelegramWebhook {
        TelegramWebhook {
            bot: self.bot.clone(),
            ctx: self.ctx.clone(),
        }
    }

    /// Long-polls for updates until `shutdown` completes, then stops taking
    /// updates and returns once the replies in flight are done. Fails only
    /// if the dispatcher cannot start (its `getMe` call fails).
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), TelegramError> {
        let listener = polling_default(self.bot.clone()).await;
        let listener_errors = Arc::new(ListenerErrors {
            ctx: self.ctx.clone(),
        });
        let mut dispatcher = Dispatcher::builder(self.bot, schema())
            .dependencies(dptree::deps![self.ctx.clone()])
            // Updates the bot does not act on (edits, joins, …) are dropped
            // quietly instead of teloxide's warning for each.
            .default_handler(|_| async {})
            .build();
        let token = dispatcher.shutdown_token();
        let stopper = tokio::spawn(async move {
            shutdown.await;
            // shutdown() fails while dispatching has not started yet: retry.
            loop {
                match token.shutdown() {
                    Ok(done) => {
                        done.await;
                        break;
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        let result = dispatcher
            .try_dispatch_with_listener(listener, listener_errors)
            .await;
        stopper.abort();
        result.map_err(|e| TelegramError::Api {
            method: "getMe",
            message: self.ctx.redact(&e),
        })?;
        tracing::info!("Telegram adapter stopped");
        Ok(())
    }
}

/// Answers updates one at a time as the caller hands them over (webhook
/// mode: the caller keeps them durably and decides the order).
#[derive(Clone)]
pub struct TelegramWebhook {
    bot: TgBot,
    ctx: Arc<Context>,
}

impl TelegramWebhook {
    /// Answers a message or a button press, returning once the reply was
    /// sent (or failed, which is logged); other kinds are ignored. Each
    /// message sent in answer is noted in `journal` before the reply goes
    /// on, and the messages it noted before are edited, not sent again.
    pub async fn handle(&self, update: Update, journal: &dyn ReplyJournal) {
        let bot = self.bot.clone();
        let ctx = self.ctx.clone();
        match update.kind {
            UpdateKind::Message(msg) => answer_message(bot, ctx, msg, Some(journal)).await,
            UpdateKind::CallbackQuery(q) => answer_callback(bot, ctx, q, Some(journal)).await,
            _ => {}
        }
    }
}

/// Where the ids of the messages sent in answer to one update are kept as
/// they are sent. Sending has no idempotency key on Telegram: a replica
/// that answers an update again, because the one answering it died before
/// marking it answered, edits the messages noted here instead of sending
/// the reply twice (only a death between a send and its note still
/// duplicates a message).
pub trait ReplyJournal: Send + Sync {
    /// The ids already sent in answer, oldest first.
    fn earlier(&self) -> Vec<i64>;
    /// Keeps `sent`, every id of the answer so far, oldest first; returns
    /// once it is kept.
    fn note<'a>(&'a self, sent: &'a [i64]) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>>;
}

/// An update pushed to a webhook, parsed: `None` for a body that is not
/// an update at all.
pub fn parse_update(body: &[u8]) -> Option<Update> {
    let update: Update = serde_json::from_slice(body).ok()?;
    (!matches!(update.kind, UpdateKind::Error(_))).then_some(update)
}

/// The chat an update belongs to: its replies must keep its order.
pub fn update_chat(update: &Update) -> Option<i64> {
    update.chat().map(|c| c.id.0)
}

/// `update`'s JSON made fit to keep until it is answered: every `text` and
/// `caption` passed through `redact`, people's names blanked (the ids the
/// adapter needs stay).
pub fn scrub_update(update: &mut serde_json::Value, redact: &dyn Fn(&str) -> String) {
    use serde_json::Value;
    match update {
        Value::Object(fields) => {
            for (key, value) in fields.iter_mut() {
                match (key.as_str(), &mut *value) {
                    ("text" | "caption", Value::String(s)) => *s = redact(s),
                    ("first_name" | "last_name" | "username" | "title", Value::String(s)) => {
                        s.clear()
                    }
                    _ => scrub_update(value, redact),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| scrub_update(v, redact)),
        _ => {}
    }
}

struct TelegramOutbox {
    bot: TgBot,
    ctx: Arc<Context>,
}

impl ChatOutbox for TelegramOutbox {
    fn platform(&self) -> Platform {
        Platform::Telegram
    }

    fn send<'a>(&'a self, conversation_key: &'a str, text: &'a str) -> OutboxFuture<'a> {
        Box::pin(async move {
            let chat: i64 = conversation_key.parse().map_err(|_| OutboxError::BadKey {
                platform: Platform::Telegram,
                key: conversation_key.to_string(),
            })?;
            for part in split_message(text, Platform::Telegram.max_message_chars()) {
                self.bot
                    .send_message(ChatId(chat), part)
                    .await
                    .map_err(|e| OutboxError::Failed {
                        platform: Platform::Telegram,
                        reason: self.ctx.redact(&e),
                    })?;
            }
            Ok(())
        })
    }
}

/// Logs failed `getUpdates` calls (teloxide's polling backs off and
/// retries by itself) with the token cut out.
struct ListenerErrors {
    ctx: Arc<Context>,
}

impl ErrorHandler<RequestError> for ListenerErrors {
    fn handle_error(
        self: Arc<Self>,
        error: RequestError,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        let message = self.ctx.redact(&error);
        Box::pin(async move {
            tracing::warn!(error = %message, "polling Telegram for updates failed");
        })
    }
}

/// The update tree: messages and button presses; everything else is dropped.
fn schema() -> UpdateHandler<Infallible> {
    dptree::entry()
        .branch(Update::filter_message().endpoint(on_message))
        .branch(Update::filter_callback_query().endpoint(on_callback))
}

async fn on_message(bot: TgBot, ctx: Arc<Context>, msg: Message) -> Result<(), Infallible> {
    answer_message(bot, ctx, msg, None).await;
    Ok(())
}

async fn on_callback(bot: TgBot, ctx: Arc<Context>, q: CallbackQuery) -> Result<(), Infallible> {
    answer_callback(bot, ctx, q, None).await;
    Ok(())
}

async fn answer_message(
    bot: TgBot,
    ctx: Arc<Context>,
    msg: Message,
    journal: Option<&dyn ReplyJournal>,
) {
    if let Some(request) = to_request(&msg, &ctx.me) {
        render::serve(&bot, &ctx, msg.chat.id, request, journal).await;
    }
}

async fn answer_callback(
    bot: TgBot,
    ctx: Arc<Context>,
    q: CallbackQuery,
    journal: Option<&dyn ReplyJournal>,
) {
    let parsed = q.data.as_deref().and_then(parse_feedback_data);
    let answer = match parsed {
        Some(_) => bot
            .answer_callback_query(q.id.clone())
            .text("Thanks for your feedback!"),
        None => bot.answer_callback_query(q.id.clone()),
    };
    // The button spins until answered, whatever the data was.
    if let Err(e) = answer.await {
        tracing::warn!(error = %ctx.redact(&e), "answerCallbackQuery failed");
    }
    let (Some((rating, message_id)), Some(message)) = (parsed, q.message.as_ref()) else {
        tracing::debug!("callback query that is not feedback on a chat message; ignored");
        return;
    };
    let chat = message.chat().id;
    // One rating per reply: the keyboard goes once it was used.
    if let Err(e) = bot.edit_message_reply_markup(chat, message.id()).await {
        tracing::warn!(error = %ctx.redact(&e), "removing the feedback keyboard failed");
    }
    let request = ChatRequest::Feedback(Feedback {
        platform: Platform::Telegram,
        conversation_key: chat.0.to_string(),
        user_key: q.from.id.0.to_string(),
        message_id: message_id.to_string(),
        rating,
        comment: None,
    });
    render::serve(&bot, &ctx, chat, request, journal).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_redact_hides_token_and_secret() {
        let token = "123456:SECRETsecret";
        let text =
            "error sending request for url (http://x/bot123456:SECRETsecret/GetMe): SECRETsecret";
        let out = redact(text, token);
        assert!(!out.contains("SECRET"), "{out}");
        assert!(out.contains("bot<token>/GetMe"));
        assert_eq!(redact("plain", ""), "plain");
    }

    #[test]
    fn test_config_debug_hides_token() {
        let config = TelegramConfig::new("123456:SECRETsecret");
        let shown = format!("{config:?}");
        assert!(!shown.contains("SECRET"), "{shown}");
    }
}
