//! `chatforge chat`: a terminal conversation with a bundle, streaming each
//! reply as it is generated (one message per line, so piped input works);
//! `chatforge generate`: replies to prompts given on the command line.

use std::io::{BufRead, Write};
use std::path::Path;

use anyhow::{Context, Result};
use chatforge::config::Config;
use chatforge::runtime::Generator;
use chatforge::text::{Dialog, Message, Role, encode_prompt_within};

use chatforge::runtime::SamplingOverrides;

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
