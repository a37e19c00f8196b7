//! `chatforge serve`: the configured adapters until Ctrl-C or SIGTERM.

use std::path::PathBuf;

use anyhow::{Context, Result};

use chatforge::config::Config;

#[derive(clap::Args)]
pub struct ServeArgs {
    /// chatforge.toml (see chatforge.example.toml): model, moderation,
    /// store, pipeline and the [telegram]/[discord] adapters.
    #[arg(long, env = "CHATFORGE_CONFIG")]
    config: PathBuf,
}

pub fn run(a: ServeArgs) -> Result<()> {
    let cfg = Config::load(Some(&a.config))?;
    let rt = crate::store_cmd::runtime()?;
    let report = rt
        .block_on(chatforge::serve::serve(
            cfg,
            Some(a.config.clone()),
            shutdown_signal(),
        ))
        .with_context(|| format!("serve --config {}", a.config.display()))?;
    eprintln!(
        "stopped; store: {} records written, {} waiting in the spill file",
        report.store.written, report.store.pending
    );
    Ok(())
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
