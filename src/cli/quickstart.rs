//! `chatforge quickstart`: builds (or reuses) every stage into one run
//! folder, prints a line per stage and a timing table, then chats in the
//! terminal through the same pipeline `serve` runs (moderation, store
//! logging, commands, streaming).

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use chatforge::config::Config;
use chatforge::moderation::TrainSettings;
use chatforge::quickstart::{Options, Outcome, Quickstart, Stage, StageReport, Summary};
use chatforge::runtime::chatforge_home;
use chatforge::train::TrainConfig;
use chatforge_channel::{
    ChatEvent, ChatHandler, ChatRequest, IncomingMessage, Platform, event_channel, parse_command,
};

#[derive(clap::Args)]
pub struct QuickstartArgs {
    /// Run folder: every artifact goes here.
    #[arg(long, default_value = "runs/quickstart")]
    run: PathBuf,
    /// Model preset: a name in models/ (tiny, demo, small) or a .toml file.
    #[arg(long, default_value = "demo")]
    preset: String,
    /// Stop after the summary instead of starting the terminal chat.
    #[arg(long)]
    no_chat: bool,
    /// Redo every stage (and rewrite chatforge.toml).
    #[arg(long)]
    force: bool,
    /// Pretraining text, files or folders (default: the general corpus from
    /// scripts/setup.sh plus data/support/faq.md).
    #[arg(long, num_args = 1..)]
    corpus: Vec<PathBuf>,
    /// Fine-tuning dialogs, OpenAI chat JSONL (default data/support/train.jsonl).
    #[arg(long, num_args = 1..)]
    dialogs: Vec<PathBuf>,
    /// Moderation training CSVs (default: what `scripts/setup.sh
    /// --moderation` writes to $CHATFORGE_HOME/moderation/data/, plus the
    /// labelled sets in data/moderation/).
    #[arg(long, num_args = 1..)]
    moderation_data: Vec<PathBuf>,
    /// Clean in-domain texts for moderation (default: the support texts
    /// `setup.sh --moderation` writes, with the default data).
    #[arg(long, num_args = 1..)]
    moderation_clean: Vec<PathBuf>,
    /// The knowledge base's documents (default data/support/faq.md);
    /// `--no-kb` answers from the model alone.
    #[arg(long, num_args = 1..)]
    kb_docs: Vec<PathBuf>,
    /// Labelled questions for the knowledge base's router, besides the
    /// dialogs (default data/support/kb/train_questions.jsonl).
    #[arg(long, num_args = 1..)]
    kb_questions: Vec<PathBuf>,
    /// Questions the knowledge base cannot answer (default
    /// data/support/kb/out_of_scope_train.txt).
    #[arg(long, num_args = 1..)]
    kb_negatives: Vec<PathBuf>,
    #[arg(long, conflicts_with_all = ["kb_docs", "kb_questions", "kb_negatives"])]
    no_kb: bool,
    /// Router epochs (default: as `chatforge kb train`).
    #[arg(long, hide = true)]
    kb_epochs: Option<usize>,
    /// Blocked terms, one per line (default: $CHATFORGE_HOME/moderation/
    /// blocklist.txt with the default moderation data, none otherwise).
    #[arg(long)]
    blocklist: Option<PathBuf>,
    /// Override the preset's pretraining steps (tests, quick looks).
    #[arg(long, hide = true)]
    pretrain_steps: Option<usize>,
    /// Override the fine-tuning steps.
    #[arg(long, hide = true)]
    finetune_steps: Option<usize>,
    /// Moderation epochs (default: as `chatforge moderation train`).
    #[arg(long, hide = true)]
    moderation_epochs: Option<usize>,
}

pub fn run(a: QuickstartArgs, progress: bool) -> Result<()> {
    let preset_path = preset_path(&a.preset)?;
    let preset = TrainConfig::from_file(&preset_path)?;
    let home = chatforge_home();
    let corpus = if a.corpus.is_empty() {
        vec![
            home.join("corpus").join("general"),
            PathBuf::from("data/support/faq.md"),
        ]
    } else {
        a.corpus
    };
    let dialogs = if a.dialogs.is_empty() {
        vec![PathBuf::from("data/support/train.jsonl")]
    } else {
        a.dialogs
    };
    let (moderation_data, moderation_clean, blocklist) = if a.moderation_data.is_empty() {
        // As scripts/moderation-default.sh trains it.
        let m = home.join("moderation");
        (
            vec![
                m.join("data").join("train.csv"),
                m.join("data").join("offensive.csv"),
                PathBuf::from("data/moderation/davidson.csv.gz"),
                PathBuf::from("data/moderation/cold.csv.gz"),
            ],
            if a.moderation_clean.is_empty() {
                vec![m.join("data").join("support_clean.txt")]
            } else {
                a.moderation_clean
            },
            Some(a.blocklist.unwrap_or_else(|| m.join("blocklist.txt"))),
        )
    } else {
        (a.moderation_data, a.moderation_clean, a.blocklist)
    };
    let or = |given: Vec<PathBuf>, default: &str| {
        if given.is_empty() {
            vec![PathBuf::from(default)]
        } else {
            given
        }
    };
    let (kb_docs, kb_questions, kb_negatives) = if a.no_kb {
        (Vec::new(), Vec::new(), Vec::new())
    } else {
        (
            or(a.kb_docs, "data/support/faq.md"),
            or(a.kb_questions, "data/support/kb/train_questions.jsonl"),
            or(a.kb_negatives, "data/support/kb/out_of_scope_train.txt"),
        )
    };
    let mut moderation_settings = TrainSettings::default();
    if let Some(e) = a.moderation_epochs {
        moderation_settings.epochs = e;
    }
    let qs = Quickstart::new(Options {
        run: a.run.clone(),
        preset,
        corpus,
        dialogs,
        moderation_data,
        moderation_clean,
        blocklist,
        kb_docs,
        kb_questions,
        kb_negatives,
        kb_epochs: a.kb_epochs,
        moderation_settings,
        pretrain_steps: a.pretrain_steps,
        finetune_steps: a.finetune_steps,
        force: a.force,
        progress,
    })?;
    println!(
        "quickstart: preset {} ({}), run folder {}",
        a.preset,
        preset_path.display(),
        a.run.display()
    );
    let total = Stage::ALL.len();
    let mut n = 0;
    let summary = qs.run(&mut |r| {
        n += 1;
        print_stage(n, total, r);
    })?;
    print_summary(&summary);
    if a.no_chat {
        return Ok(());
    }
    chat(&summary.layout.config)
}

/// `demo` → `models/demo.toml`; anything with a `/` or `.toml` is a path.
fn preset_path(preset: &str) -> Result<PathBuf> {
    let p = if preset.contains('/') || preset.ends_with(".toml") {
        PathBuf::from(preset)
    } else {
        Path::new("models").join(format!("{preset}.toml"))
    };
    anyhow::ensure!(
        p.is_file(),
        "preset {} not found: run from the repository root (models/*.toml), or pass --preset path/to/preset.toml",
        p.display()
    );
    Ok(p)
}

fn print_stage(n: usize, total: usize, r: &StageReport) {
    let time = match r.outcome {
        Outcome::Reused => format!("reused, built in {}", clock(r.built_in)),
        Outcome::Built | Outcome::Resumed => {
            format!("{} in {}", r.outcome.name(), clock(r.elapsed))
        }
    };
    println!("[{n}/{total}] {:<10} {time}: {}", r.stage.name(), r.summary);
}

fn print_summary(s: &Summary) {
    println!();
    println!(
        "{:<12} {:<8} {:>10} {:>12}",
        "stage", "status", "this run", "when built"
    );
    for r in &s.stages {
        println!(
            "{:<12} {:<8} {:>10} {:>12}",
            r.stage.name(),
            r.outcome.name(),
            clock(r.elapsed),
            clock(r.built_in)
        );
    }
    let built: Duration = s.stages.iter().map(|r| r.built_in).sum();
    println!(
        "{:<12} {:<8} {:>10} {:>12}",
        "total",
        "",
        clock(s.elapsed),
        clock(built)
    );
    println!();
    let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    println!("bundle: {}", abs(&s.layout.bundle).display());
    println!(
        "serve config: {} ({})",
        abs(&s.layout.config).display(),
        if s.config_written {
            "written"
        } else {
            "kept as it was"
        }
    );
    println!(
        "next: add a bot token section to it and run `chatforge serve --config {}`",
        s.layout.config.display()
    );
}

/// `7m05s`, `42.1s`.
fn clock(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 60.0 {
        format!("{s:.1}s")
    } else {
        format!("{}m{:02}s", (s / 60.0) as u64, (s % 60.0) as u64)
    }
}

/// Chats on stdin/stdout through the pipeline of `config`: one message per
/// line, so piped input works; `/quit` or end of input stops.
fn chat(config: &Path) -> Result<()> {
    let mut cfg = Config::load(Some(config))?;
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
