//! `chatforge chat`: a terminal conversation, streaming each reply as it is
//! generated (one message per line, so piped input works): with a config,
//! through the serving pipeline as Telegram and Discord users get it
//! (moderation, the knowledge base, the fact guard, the store); with a
//! bundle alone, the bare model. `chatforge generate`: replies to prompts
//! given on the command line.

use std::io::{BufRead, Write};
use std::path::Path;

use anyhow::{Context, Result};
use chatforge::config::Config;
use chatforge::runtime::Generator;
use chatforge::text::{Dialog, Message, Role, encode_prompt_within};
use chatforge_channel::{
    ChatEvent, ChatHandler, ChatRequest, IncomingMessage, Platform, event_channel, parse_command,
};

use chatforge::runtime::SamplingOverrides;

/// The bare model, no pipeline: what the bundle itself says.
pub fn run(
    bundle: &Path,
    cfg: &Config,
    system: Option<String>,
    sampling: &SamplingOverrides,
) -> Result<()> {
    let mut generator = Generator::open(bundle, &cfg.runtime)?;
    let params = sampling.apply(generator.default_params());
    let fresh = || Dialog {
        messages: system
            .iter()
            .map(|s| Message {
                role: Role::System,
                content: s.clone(),
            })
            .collect(),
        topic: None,
        style: None,
        ..Default::default()
    };
    let mut dialog = fresh();
    let interactive = std::io::IsTerminal::is_terminal(&std::io::stdin());
    if interactive {
        eprintln!(
            "chatting with {} on {} — /reset starts over, /quit or Ctrl-D ends",
            generator
                .bundle()
                .model_version()
                .unwrap_or("an unversioned bundle"),
            generator.decoder().provider().name()
        );
    }
    let stdin = std::io::stdin();
    let mut out = std::io::stdout();
    for line in stdin.lock().lines() {
        let line = line.context("reading stdin")?;
        let text = line.trim();
        match text {
            "" => continue,
            "/quit" | "/exit" => break,
            "/reset" => {
                dialog = fresh();
                writeln!(out, "(conversation reset)")?;
                continue;
            }
            _ => {}
        }
        dialog.messages.push(Message {
            role: Role::User,
            content: text.to_string(),
        });
        write!(out, "assistant> ")?;
        out.flush()?;
        let mut started = false;
        let reply = generator.reply(&dialog, &params, &mut |_, piece| {
            // The reply's leading space belongs to the template, not the text.
            let piece = if started { piece } else { piece.trim_start() };
            started |= !piece.is_empty();
            let _ = write!(out, "{piece}");
            let _ = out.flush();
        })?;
        writeln!(out)?;
        dialog.messages.push(Message {
            role: Role::Assistant,
            content: reply.text.trim().to_string(),
        });
    }
    Ok(())
}

fn with_system(system: &Option<String>, user: &str) -> Dialog {
    let mut messages: Vec<Message> = system
        .iter()
        .map(|s| Message {
            role: Role::System,
            content: s.clone(),
        })
        .collect();
    messages.push(Message {
        role: Role::User,
        content: user.to_string(),
    });
    Dialog {
        messages,
        topic: None,
        style: None,
        ..Default::default()
    }
}

pub fn generate(
    bundle: &Path,
    cfg: &Config,
    prompts: &[String],
    system: Option<String>,
    raw: bool,
    json: bool,
    sampling: &SamplingOverrides,
) -> Result<()> {
    let mut generator = Generator::open(bundle, &cfg.runtime)?;
    let params = sampling.apply(generator.default_params());
    let ctx = generator.decoder().config().n_positions;
    let room = params.max_new_tokens.min(ctx / 2).max(1);
    let tok = generator.tokenizer().clone();
    let ids = prompts
        .iter()
        .map(|p| {
            if raw {
                let mut ids = tok.encode_text(p)?;
                // Keep the newest text when the prompt is over budget.
                let keep = ids.len().min(ctx - room);
                ids.drain(..ids.len() - keep);
                Ok(ids)
            } else {
                encode_prompt_within(&tok, &with_system(&system, p), ctx - room).map(|p| p.ids)
            }
        })
        .collect::<Result<Vec<_>, chatforge::text::Error>>()?;
    let stream = !json && prompts.len() == 1;
    let mut out = std::io::stdout();
    let results = generator.generate(&ids, &params, &mut |_, piece| {
        if stream {
            let _ = write!(out, "{piece}");
            let _ = out.flush();
        }
    })?;
    for (prompt, r) in prompts.iter().zip(&results) {
        if json {
            let line = serde_json::json!({
                "prompt": prompt,
                "text": r.text.trim(),
                "tokens": r.tokens.len(),
                "prompt_tokens": r.prompt_tokens,
                "stop": r.stop,
            });
            writeln!(out, "{line}")?;
        } else if stream {
            writeln!(out)?;
        } else {
            writeln!(out, "> {prompt}\n{}\n", r.text.trim())?;
        }
    }
    Ok(())
}

/// Chats on stdin/stdout through the pipeline of `config`: one message per
/// line, so piped input works; `/quit` or end of input stops. `bundle`
/// replaces the config's `model.bundle`.
pub fn through_pipeline(config: &Path, bundle: Option<&Path>) -> Result<()> {
    let mut cfg = Config::load(Some(config))?;
    if let Some(b) = bundle {
        cfg.model.bundle = Some(b.to_path_buf());
    }
    // One local user at a keyboard (or a piped script): the per-user rate
    // limit guards the model against platform users, not against its owner.
    cfg.pipeline.rate_limit.burst = cfg.pipeline.rate_limit.burst.max(10_000);
    let rt = crate::store_cmd::runtime()?;
    rt.block_on(async {
        let services = chatforge::serve::start_services(&cfg)
            .await
            .with_context(|| format!("starting the chat from {}", config.display()))?;
        let interactive = std::io::IsTerminal::is_terminal(&std::io::stdin());
        if interactive {
            eprintln!(
                "chatting with {} — /help lists the commands, /quit or Ctrl-D ends",
                services.bundle.display()
            );
        }
        // A plain thread, not spawn_blocking: the runtime would wait for a
        // blocked stdin read when it shuts down after /quit.
        let (tx, mut lines) = tokio::sync::mpsc::channel::<std::io::Result<String>>(1);
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                if tx.blocking_send(line).is_err() {
                    break;
                }
            }
        });
        let user = std::env::var("USER").unwrap_or_else(|_| "local".into());
        let mut hinted = false;
        loop {
            if interactive {
                print!("you> ");
                std::io::stdout().flush()?;
            }
            let Some(line) = lines.recv().await else {
                break;
            };
            let line = line.context("reading stdin")?;
            let text = line.trim();
            if text.is_empty() {
                continue;
            }
            if matches!(text, "/quit" | "/exit") {
                break;
            }
            let request = terminal_request(text, &user);
            let (sink, mut events) = event_channel();
            let pipeline = services.pipeline.clone();
            let task = tokio::spawn(async move { pipeline.handle(request, sink).await });
            let mut shown = String::new();
            let mut out = std::io::stdout();
            while let Some(event) = events.next().await {
                match event {
                    ChatEvent::Typing => {}
                    ChatEvent::ReplyChunk { delta } => {
                        let delta = if shown.is_empty() {
                            write!(out, "bot> ")?;
                            delta.trim_start().to_string()
                        } else {
                            delta
                        };
                        write!(out, "{delta}")?;
                        out.flush()?;
                        shown.push_str(&delta);
                    }
                    ChatEvent::Reply { text, .. } => {
                        if shown.is_empty() {
                            writeln!(out, "bot> {text}")?;
                        } else if let Some(rest) = text.strip_prefix(shown.as_str()) {
                            writeln!(out, "{rest}")?;
                        } else {
                            // Moderation withheld the rest of what was
                            // streaming and replaced the reply.
                            writeln!(out, " [withheld]\nbot> {text}")?;
                        }
                        shown.clear();
                    }
                    ChatEvent::FeedbackRequest { .. } if !hinted => {
                        hinted = true;
                        writeln!(out, "     (rate a reply with /feedback good|bad [comment])")?;
                    }
                    ChatEvent::FeedbackRequest { .. } => {}
                    ChatEvent::Handoff { notice } | ChatEvent::Error { notice } => {
                        writeln!(out, "bot> {notice}")?;
                    }
                }
            }
            task.await.context("the chat pipeline task failed")?;
        }
        let report = services.writer.shutdown().await?;
        eprintln!(
            "chat logged to {} ({} records written)",
            cfg.store
                .url
                .as_deref()
                .map_or_else(|| "the store".into(), chatforge::store::redact_url),
            report.written
        );
        Ok(())
    })
}

/// A terminal line as the pipeline takes it: a command or a message.
fn terminal_request(text: &str, user: &str) -> ChatRequest {
    let message = IncomingMessage {
        platform: Platform::Terminal,
        conversation_key: "terminal".into(),
        user_key: user.to_string(),
        text: text.to_string(),
        reply_to: None,
        is_direct: true,
    };
    match parse_command(text) {
        Some(c) => ChatRequest::Command {
            message,
            command: c.command,
        },
        None => ChatRequest::Message(message),
    }
}
