//! The `chatforge` command line: one subcommand per job.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use chatforge::bench::{GeneratePreset, TrainPreset, bench_generate, bench_train_rounds};
use chatforge::config::Config;
use chatforge::runtime::SamplingOverrides;
use chatforge::text::{TokenizerKind, default_control_tags, train_tokenizer};
use chatforge::train::{self, FinetuneJob, PretrainJob, TrainConfig, TrainDevice, read_corpus};

/// The CLI's interactive and diagnostic commands (the library has no
/// terminal I/O).
mod cli {
    pub mod chat;
    pub mod doctor;
    pub mod eval;
    pub mod input;
    pub mod kb;
    pub mod moderation;
    pub mod quickstart;
    pub mod serve;
    pub mod telegram;
}

use cli::{chat, doctor, eval};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `db`, `logs` and `bench store`: the conversation store's commands.
#[path = "cli/store.rs"]
mod store_cmd;

#[derive(Parser)]
#[command(
    name = "chatforge",
    version,
    about = "Train, export and serve your own support chatbot"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Tokenizer jobs.
    Tokenizer {
        #[command(subcommand)]
        command: TokenizerCommand,
    },
    /// Pretrain a GPT on plain text and write a bundle.
    Train {
        /// Training config (e.g. models/tiny.toml).
        #[arg(long)]
        config: PathBuf,
        /// Text files or folders (.txt, .md, .jsonl with "text" or "messages").
        #[arg(long, required = true, num_args = 1..)]
        data: Vec<PathBuf>,
        /// Bundle folder to write (also holds checkpoint, metrics, loss curve).
        #[arg(long)]
        out: PathBuf,
        /// Use this tokenizer.json instead of training one into the bundle.
        #[arg(long)]
        tokenizer: Option<PathBuf>,
        /// Override the config's step count.
        #[arg(long)]
        steps: Option<usize>,
        /// Continue from the bundle's checkpoint.
        #[arg(long)]
        resume: bool,
        /// Override the config's `[train] device`: cpu, cuda or cuda:N.
        #[arg(long)]
        device: Option<TrainDevice>,
    },
    /// Fine-tune a bundle on chat dialogs (OpenAI chat JSONL).
    Finetune {
        /// Bundle to start from.
        #[arg(long)]
        base: PathBuf,
        /// JSONL files of {"messages":[…]} dialogs.
        #[arg(long, required = true, num_args = 1..)]
        dialogs: Vec<PathBuf>,
        /// Bundle folder to write.
        #[arg(long)]
        out: PathBuf,
        /// A config whose [train] table sets the loop (default: built-in).
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        steps: Option<usize>,
        #[arg(long)]
        resume: bool,
        /// Train on cpu, cuda or cuda:N (default: the config's, else cpu).
        #[arg(long)]
        device: Option<TrainDevice>,
        /// Knowledge base (`kb build`): each assistant turn becomes an
        /// example whose context is what it retrieves for the customer's
        /// message; most hold the turn's recorded passages among
        /// distractors, the rest distractors only with the abstain reply.
        #[arg(long)]
        kb: Option<PathBuf>,
        /// With --kb: share of grounded turns given their gold passages.
        #[arg(long, default_value_t = train::RaftSettings::GOLD_SHARE, requires = "kb")]
        gold_share: f64,
        /// With --kb: passages per context (as `[kb] passages` serves).
        #[arg(long, default_value_t = 2, requires = "kb")]
        passages: usize,
        /// With --kb: chance that an example loses each control tag
        /// (topic, style), so the model also answers without them.
        #[arg(long, default_value_t = train::RaftSettings::TAG_DROPOUT, requires = "kb")]
        tag_dropout: f64,
        /// With --kb: the serve config whose [pipeline.texts] abstain text
        /// the abstaining examples learn (default: the built-in text).
        #[arg(long, requires = "kb")]
        serve_config: Option<PathBuf>,
    },
    /// Export a bundle's model to <bundle>/model.onnx (with a parity check).
    Export {
        #[arg(long)]
        bundle: PathBuf,
        /// Also write model.int8.onnx (int8 weights, for `[runtime]
        /// precision = "int8"` on the CPU), checked against candle.
        #[arg(long)]
        int8: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check the ONNX Runtime set-up: library, providers, threads.
    Doctor {
        /// chatforge.toml with a [runtime] table.
        #[arg(long, env = "CHATFORGE_CONFIG")]
        config: Option<PathBuf>,
        /// Also load this bundle's model.onnx.
        #[arg(long)]
        bundle: Option<PathBuf>,
    },
    /// Generate replies to prompts (several prompts run as one batch).
    Generate {
        #[arg(long)]
        bundle: PathBuf,
        #[arg(long, env = "CHATFORGE_CONFIG")]
        config: Option<PathBuf>,
        /// A user message (repeatable).
        #[arg(long, required = true)]
        prompt: Vec<String>,
        /// System prompt (persona).
        #[arg(long)]
        system: Option<String>,
        /// Continue the prompt as plain text instead of answering it as a chat turn.
        #[arg(long)]
        raw: bool,
        /// One JSON object per prompt instead of streamed text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        sampling: SamplingOverrides,
    },
    /// Chat in the terminal (one message per line; /help, /quit): with
    /// --config, through the serving pipeline (moderation, knowledge base,
    /// fact guard, store) as platform users get it; with --bundle alone,
    /// the bare model (/reset starts over).
    Chat {
        /// The bundle (with --config: replaces its `model.bundle`).
        #[arg(long, required_unless_present = "config")]
        bundle: Option<PathBuf>,
        #[arg(long, env = "CHATFORGE_CONFIG")]
        config: Option<PathBuf>,
        /// The bare model: no pipeline even with --config (which then only
        /// gives the [runtime] settings).
        #[arg(long)]
        raw: bool,
        /// System prompt (persona) of the bare model.
        #[arg(long)]
        system: Option<String>,
        #[command(flatten)]
        sampling: SamplingOverrides,
    },
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
    /// Conversation store schema.
    Db {
        #[command(subcommand)]
        command: store_cmd::DbCommand,
    },
    /// Logged conversations: export, statistics, retention, erasure, audit.
    Logs {
        #[command(subcommand)]
        command: store_cmd::LogsCommand,
    },
    /// Operator accounts for the console (argon2id passwords).
    Operators {
        #[command(subcommand)]
        command: store_cmd::OperatorsCommand,
    },
    /// BLEU, ROUGE and distinct-n of line-aligned hypothesis and reference files.
    Score(eval::ScoreArgs),
    /// Evaluate a bundle (and a baseline) on held-out dialogs; writes a report.
    Eval(Box<eval::EvalArgs>),
    /// Knowledge base: build from documents, train its router, search, evaluate.
    Kb {
        #[command(subcommand)]
        command: cli::kb::KbCommand,
    },
    /// Moderation classifier: train and evaluate.
    Moderation {
        #[command(subcommand)]
        command: cli::moderation::ModerationCommand,
    },
    /// Check texts with a moderation model and its rules (blocklist, PII).
    Moderate(Box<cli::moderation::ModerateArgs>),
    /// Serve the model on the configured chat platforms (Telegram, Discord).
    Serve(cli::serve::ServeArgs),
    /// Telegram webhook registration (webhook mode).
    Telegram {
        #[command(subcommand)]
        command: cli::telegram::TelegramCommand,
    },
    /// Every stage from raw text to a chat bot in one run folder, then a
    /// terminal chat through the serving pipeline.
    Quickstart(cli::quickstart::QuickstartArgs),
    /// Training data jobs.
    Data {
        #[command(subcommand)]
        command: cli::moderation::DataCommand,
    },
}

#[derive(Subcommand)]
enum TokenizerCommand {
    /// Train a tokenizer with the chat special tokens; writes <out>/tokenizer.json.
    Train {
        #[arg(long, required = true, num_args = 1..)]
        input: Vec<PathBuf>,
        #[arg(long, default_value_t = 4096)]
        vocab_size: usize,
        #[arg(long, value_enum, default_value_t = KindArg::Bpe)]
        kind: KindArg,
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum KindArg {
    Bpe,
    Char,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Training throughput (forward + backward + AdamW) on random tokens.
    Train {
        #[arg(long, value_enum)]
        preset: TrainPreset,
        /// Timed steps.
        #[arg(long, default_value_t = 20)]
        steps: usize,
        /// Untimed warm-up steps.
        #[arg(long, default_value_t = 3)]
        warmup: usize,
        /// cpu, cuda or cuda:N.
        #[arg(long, default_value = "cpu")]
        device: TrainDevice,
        /// Also train the same model in PyTorch in this run and report the
        /// ratio (skipped, with the reason, when torch is missing).
        #[arg(long)]
        compare_python: bool,
        /// The Python (with torch) for `--compare-python`.
        #[arg(long, env = "CHATFORGE_TORCH_PYTHON", default_value = "python3")]
        python: PathBuf,
        /// Repeat the measurement (alternating with PyTorch when compared)
        /// and report the medians: short runs on a shared machine vary.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
        rounds: u16,
        /// Print one JSON line.
        #[arg(long)]
        json: bool,
    },
    /// Conversation store writer throughput into Postgres and SQLite.
    Store(store_cmd::BenchStoreArgs),
    /// Knowledge-base search at scale: build time and query p50/p99 over
    /// synthetic passages in the shop FAQ's words, fused and BM25 alone.
    Kb {
        #[arg(long, default_value_t = 10_000)]
        passages: usize,
        #[arg(long, default_value_t = 2000)]
        queries: usize,
        /// The FAQ whose vocabulary the passages use.
        #[arg(long, default_value = "data/support/faq.md")]
        faq: PathBuf,
        #[arg(long, env = "CHATFORGE_CONFIG")]
        config: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Moderation checks: messages/s at batch 1 and 32, p50/p99 latency.
    Moderation(cli::moderation::BenchArgs),
    /// The serving path through a local Telegram fake: messages/s,
    /// end-to-end and pipeline-overhead latency.
    Pipeline(cli::serve::BenchPipelineArgs),
    /// Many conversations at once against the model: the continuous
    /// scheduler and the one-at-a-time worker pool side by side (tokens/s,
    /// time to first text, per-reply latency).
    Serve(cli::serve::BenchServeArgs),
    /// The HTTP server under load: streamed completions at once (server
    /// overhead beside the model), streams held open, memory after many
    /// requests.
    Http(cli::serve::BenchHttpArgs),
    /// Generation: prefill latency, decode tokens/s with and without the KV
    /// cache at batch 1 and 8, and candle's forward for comparison.
    Generate {
        /// A bundle with model.onnx (default: a random-weight preset).
        #[arg(long, conflicts_with = "preset")]
        bundle: Option<PathBuf>,
        #[arg(long, value_enum)]
        preset: Option<GeneratePreset>,
        #[arg(long, env = "CHATFORGE_CONFIG")]
        config: Option<PathBuf>,
        #[arg(long, default_value_t = 32)]
        prompt_tokens: usize,
        #[arg(long, default_value_t = 128)]
        new_tokens: usize,
        /// Also measure the int8 graph (a bundle's model.int8.onnx, or the
        /// preset's, quantized here).
        #[arg(long)]
        int8: bool,
        /// Also run the same model file through Python onnxruntime (batch 1,
        /// KV cache, greedy) in this run and report the ratio (skipped,
        /// with the reason, when onnxruntime is missing); with torch and
        /// transformers there too, also Hugging Face `generate`.
        #[arg(long)]
        compare_python: bool,
        /// The Python (with onnxruntime and numpy) for `--compare-python`.
        #[arg(long, env = "CHATFORGE_ORT_PYTHON", default_value = "python3")]
        python: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

fn main() -> Result<()> {
    // A file-size limit must surface as a write error, not kill the process.
    // SAFETY: setting a signal disposition to SIG_IGN has no preconditions.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    let cli = Cli::parse();
    // Quickstart prints a line per stage and then chats: info logs would
    // bury both.
    let default_log = match cli.command {
        Command::Quickstart(_) => "warn",
        _ => "info",
    };
    let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_log)),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal: not in log files or pipes.
        .with_ansi(progress)
        .init();
    match cli.command {
        Command::Tokenizer {
            command:
                TokenizerCommand::Train {
                    input,
                    vocab_size,
                    kind,
                    out,
                },
        } => {
            let (docs, _) = read_corpus(&input)?;
            let kind = match kind {
                KindArg::Bpe => TokenizerKind::Bpe,
                KindArg::Char => TokenizerKind::Char,
            };
            let tok = train_tokenizer(&docs, kind, vocab_size, &default_control_tags())?;
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            let path = out.join("tokenizer.json");
            tok.save(&path)?;
            println!("wrote {} ({} ids)", path.display(), tok.vocab_size());
        }
        Command::Train {
            config,
            data,
            out,
            tokenizer,
            steps,
            resume,
            device,
        } => {
            let mut config = TrainConfig::from_file(&config)?;
            if let Some(d) = device {
                config.train.device = d;
            }
            let report = train::pretrain(PretrainJob {
                config,
                data,
                out,
                tokenizer,
                steps,
                resume,
                progress,
            })?;
            print_summary(&report);
        }
        Command::Finetune {
            base,
            dialogs,
            out,
            config,
            steps,
            resume,
            device,
            kb,
            gold_share,
            passages,
            tag_dropout,
            serve_config,
        } => {
            let mut train = config
                .as_deref()
                .map(train::read_train_section)
                .transpose()?;
            if let Some(d) = device {
                train.get_or_insert_with(train::finetune_defaults).device = d;
            }
            let kb = match kb {
                None => None,
                Some(dir) => {
                    let serve = chatforge::config::Config::load(serve_config.as_deref())?;
                    let texts = chatforge::pipeline::Texts::new(&serve.pipeline.texts)
                        .map_err(|e| anyhow::anyhow!("[pipeline.texts]: {e}"))?;
                    Some(train::RaftJob {
                        dir,
                        settings: train::RaftSettings {
                            gold_share,
                            passages,
                            tag_dropout,
                            seed: train.as_ref().map_or(0, |t| t.seed),
                            texts,
                        },
                    })
                }
            };
            let report = train::finetune(FinetuneJob {
                base,
                dialogs,
                out,
                kb,
                train,
                steps,
                resume,
                progress,
            })?;
            print_summary(&report);
        }
        Command::Export { bundle, int8, json } => {
            let r = chatforge::export::export_bundle(&bundle, int8)?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!(
                    "wrote {} ({:.1} MB, opset {}); parity with candle: prefill max |Δ| {:.2e}, {} cached decode steps max |Δ| {:.2e}",
                    r.path.display(),
                    r.bytes as f64 / 1e6,
                    r.opset,
                    r.prefill_max_diff,
                    r.decode_steps,
                    r.decode_max_diff
                );
                if let Some(q) = &r.int8 {
                    println!(
                        "wrote {} ({:.1} MB); against candle: mean KL {:.2e} nats, top-1 agreement {:.1} %, max |Δ| {:.2e}",
                        q.path.display(),
                        q.bytes as f64 / 1e6,
                        q.mean_kl,
                        q.top1_agreement * 100.0,
                        q.max_diff
                    );
                }
            }
        }
        Command::Serve(a) => cli::serve::run(a)?,
        Command::Telegram { command } => cli::telegram::run(command)?,
        Command::Doctor { config, bundle } => {
            let cfg = Config::load(config.as_deref())?;
            doctor::run(&cfg, bundle.as_deref())?;
        }
        Command::Generate {
            bundle,
            config,
            prompt,
            system,
            raw,
            json,
            sampling,
        } => {
            let cfg = Config::load(config.as_deref())?;
            chat::generate(&bundle, &cfg, &prompt, system, raw, json, &sampling)?;
        }
        Command::Chat {
            bundle,
            config,
            raw,
            system,
            sampling,
        } => match (config, bundle) {
            (Some(config), bundle) if !raw => {
                chat::through_pipeline(&config, bundle.as_deref())?;
            }
            (config, Some(bundle)) => {
                let cfg = Config::load(config.as_deref())?;
                chat::run(&bundle, &cfg, system, &sampling)?;
            }
            (_, None) => anyhow::bail!("chat --raw needs --bundle"),
        },
        Command::Bench {
            command:
                BenchCommand::Generate {
                    bundle,
                    preset,
                    config,
                    prompt_tokens,
                    new_tokens,
                    int8,
                    compare_python,
                    python,
                    json,
                },
        } => {
            let cfg = Config::load(config.as_deref())?;
            let r = bench_generate(
                bundle.as_deref(),
                preset,
                &cfg.runtime,
                prompt_tokens,
                new_tokens,
                int8,
                compare_python.then_some(python.as_path()),
            )?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!("{}", serde_json::to_string_pretty(&r)?);
            }
        }
        Command::Bench {
            command:
                BenchCommand::Train {
                    preset,
                    steps,
                    warmup,
                    device,
                    compare_python,
                    python,
                    rounds,
                    json,
                },
        } => {
            let r = bench_train_rounds(
                preset,
                steps,
                warmup,
                device,
                compare_python.then_some(python.as_path()),
                rounds.into(),
            )?;
            if let Some(why) = &r.pytorch_skipped {
                eprintln!("PyTorch comparison skipped: {why}");
            }
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!(
                    "preset {}: {:.0} tokens/s on {} threads, peak RSS {:.0} MB ({} params, {} steps)",
                    r.preset, r.tokens_per_s, r.threads, r.peak_rss_mb, r.params, r.steps
                );
                if let (Some(py), Some(ratio)) = (&r.pytorch, r.ratio) {
                    println!(
                        "PyTorch {}: {:.0} tokens/s on {} threads; ratio {ratio:.2}×",
                        py.torch, py.tokens_per_s, py.threads
                    );
                }
                if !r.rounds.is_empty() {
                    println!("(medians of {} rounds)", r.rounds.len());
                }
            }
        }
        Command::Bench {
            command: BenchCommand::Store(args),
        } => store_cmd::bench(args)?,
        Command::Bench {
            command: BenchCommand::Moderation(args),
        } => cli::moderation::bench(args)?,
        Command::Bench {
            command: BenchCommand::Pipeline(args),
        } => cli::serve::bench(args)?,
        Command::Bench {
            command: BenchCommand::Http(args),
        } => cli::serve::bench_http_cmd(args)?,
        Command::Bench {
            command: BenchCommand::Serve(args),
        } => cli::serve::bench_serve_cmd(args)?,
        Command::Bench {
            command:
                BenchCommand::Kb {
                    passages,
                    queries,
                    faq,
                    config,
                    json,
                },
        } => {
            anyhow::ensure!(
                passages > 0 && queries > 0,
                "--passages and --queries must be at least 1"
            );
            let cfg = Config::load(config.as_deref())?;
            let r = chatforge::kb::bench_kb(&faq, passages, queries, &cfg.runtime)?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!(
                    "{} passages: built in {:.1} s, router trained in {:.1} s; {} queries: fused p50 {:.3} ms, p99 {:.3} ms; BM25 alone p50 {:.3} ms, p99 {:.3} ms",
                    r.passages,
                    r.build_seconds,
                    r.train_seconds,
                    r.queries,
                    r.fused_p50_ms,
                    r.fused_p99_ms,
                    r.bm25_p50_ms,
                    r.bm25_p99_ms
                );
            }
        }
        Command::Db { command } => store_cmd::db(command)?,
        Command::Logs { command } => store_cmd::logs(command)?,
        Command::Operators { command } => store_cmd::operators(command)?,
        Command::Score(args) => eval::score(&args)?,
        Command::Eval(args) => eval::run(&args)?,
        Command::Kb { command } => cli::kb::run(command)?,
        Command::Moderation { command } => cli::moderation::run(command, progress)?,
        Command::Moderate(args) => cli::moderation::moderate(*args)?,
        Command::Data { command } => cli::moderation::data(command)?,
        Command::Quickstart(a) => cli::quickstart::run(a, progress)?,
    }
    Ok(())
}

fn print_summary(r: &train::JobReport) {
    let o = &r.outcome;
    println!(
        "{}: {} steps, train loss {:.4}, val loss {:.4} ({:.4} bits/byte), {:.1} s, {:.0} tokens/s",
        r.bundle.dir.display(),
        o.steps,
        o.last_loss,
        o.val_loss,
        o.val_bpb,
        o.elapsed_s,
        o.tokens_per_s
    );
    if let Some(v) = r.bundle.model_version() {
        println!("model version {v}");
    }
}
