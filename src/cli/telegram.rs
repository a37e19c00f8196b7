//! `chatforge telegram set-webhook|delete-webhook`: the one-time
//! registration of webhook mode, so that replicas never call setWebhook
//! as they start.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use chatforge::config::{Config, TelegramSection};

#[derive(clap::Subcommand)]
pub enum TelegramCommand {
    /// Tell Telegram to post updates to `[telegram] webhook_url` with
    /// `webhook_secret` (messages and button presses only).
    SetWebhook {
        #[arg(long, env = "CHATFORGE_CONFIG")]
        config: PathBuf,
        /// Connections Telegram opens at once (1-100; Telegram's default 40).
        #[arg(long, value_parser = clap::value_parser!(u8).range(1..=100))]
        max_connections: Option<u8>,
        /// Drop the updates Telegram holds for the bot.
        #[arg(long)]
        drop_pending: bool,
    },
    /// Remove the webhook (to go back to polling).
    DeleteWebhook {
        #[arg(long, env = "CHATFORGE_CONFIG")]
        config: PathBuf,
        /// Drop the updates Telegram holds for the bot.
        #[arg(long)]
        drop_pending: bool,
    },
}

fn telegram_section(config: &Path) -> Result<TelegramSection> {
    match Config::load(Some(config))?.telegram {
        Some(section) => Ok(section),
        None => bail!("{}: no [telegram] section", config.display()),
    }
}

pub fn run(cmd: TelegramCommand) -> Result<()> {
    let rt = crate::store_cmd::runtime()?;
    match cmd {
        TelegramCommand::SetWebhook {
            config,
            max_connections,
            drop_pending,
        } => {
            let section = telegram_section(&config)?;
            let tc = chatforge::serve::telegram_config(&section)?;
            let (url, secret) = chatforge::serve::webhook_settings(&section)?;
            if url.scheme() != "https" {
                eprintln!(
                    "warning: {url} is not https; Telegram's Bot API accepts only https webhooks (a local Bot API server may accept others)"
                );
            }
            let registration = chatforge_telegram::WebhookRegistration {
                url: url.to_string(),
                secret,
                max_connections,
                drop_pending,
            };
            rt.block_on(chatforge_telegram::set_webhook(&tc, &registration))
                .context("telegram set-webhook")?;
            println!("Telegram now posts this bot's updates to {url}");
        }
        TelegramCommand::DeleteWebhook {
            config,
            drop_pending,
        } => {
            let tc = chatforge::serve::telegram_config(&telegram_section(&config)?)?;
            rt.block_on(chatforge_telegram::delete_webhook(&tc, drop_pending))
                .context("telegram delete-webhook")?;
            println!("webhook removed; updates wait for getUpdates (polling mode)");
        }
    }
    Ok(())
}
