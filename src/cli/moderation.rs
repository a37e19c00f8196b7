//! `moderation train`, `moderation eval` and `moderate`.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use chatforge::config::Config;
use chatforge::moderation::{
    Blocklist, EvalSets, FeaturizerConfig, Moderator, PiiAction, Pooling, Rules, SplitConfig,
    TrainJob, TrainSettings, Verdict, evaluate, train,
};

#[derive(clap::Subcommand)]
pub enum ModerationCommand {
    /// Train the classifier on labelled CSV files; writes moderation.onnx + moderation.json.
    Train(TrainArgs),
    /// ROC-AUC, precision, recall, F1 per category and language on labelled CSV.
    Eval(EvalArgs),
}

#[derive(clap::Args)]
pub struct TrainArgs {
    /// CSV files: `text,label[,label2…]` with 0/1 labels, or the Davidson
    /// (`class`,`tweet`) and COLD (`label`,`TEXT`) layouts.
    #[arg(long, required = true, num_args = 1..)]
    data: Vec<PathBuf>,
    /// Model folder to write.
    #[arg(long)]
    out: PathBuf,
    /// Texts known to be clean (every label 0): a CSV with a `text` column,
    /// JSONL dialogs or questions, or one text per line. In-domain messages
    /// (e.g. support questions) keep ordinary chat from scoring like the
    /// tweets' offensive base rate.
    #[arg(long, num_args = 1..)]
    clean: Vec<PathBuf>,
    /// Clean texts trained on only, never validation rows: they lower the
    /// scores of texts like them without moving the thresholds' cap on
    /// --clean false positives.
    #[arg(long, num_args = 1..)]
    clean_train: Vec<PathBuf>,
    /// Precision each category's threshold must reach on the validation split.
    #[arg(long, default_value_t = 0.9)]
    target_precision: f64,
    #[arg(long, default_value_t = 5)]
    epochs: usize,
    #[arg(long, default_value_t = 128)]
    batch_size: usize,
    #[arg(long, default_value_t = 0.01)]
    lr: f64,
    /// Embedding width.
    #[arg(long, default_value_t = 64)]
    dim: usize,
    /// How a text's n-gram embeddings are pooled.
    #[arg(long, value_enum, default_value_t = TrainSettings::default().pooling)]
    pooling: Pooling,
    /// log2 of the number of hash buckets.
    #[arg(long, default_value_t = 18)]
    buckets_log2: u32,
    /// Score whole texts only, not also each clause (the highest score of
    /// the text and its clauses counts, in training and when checking).
    #[arg(long)]
    whole_texts: bool,
    /// Seed of the train/validation/test split.
    #[arg(long, default_value_t = 1337)]
    split_seed: u64,
    #[arg(long, default_value_t = 0.1)]
    validation_fraction: f64,
    /// Rows kept out of training entirely (score them with `moderation eval --heldout`).
    #[arg(long, default_value_t = 0.1)]
    test_fraction: f64,
    /// Read at most this many rows of each file.
    #[arg(long)]
    max_rows: Option<usize>,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct EvalArgs {
    /// Model folder (moderation.onnx + moderation.json).
    #[arg(long)]
    model: PathBuf,
    /// Labelled CSV files (`.csv` or `.csv.gz`).
    #[arg(long, num_args = 1..)]
    data: Vec<PathBuf>,
    /// Score only the `--data` rows held out from training (a file's
    /// `split` column says which; else the model's seeded split).
    #[arg(long)]
    heldout: bool,
    /// Labelled files the model never trained on, scored whole (such as
    /// data/moderation/insult_in_request_eval.csv).
    #[arg(long, num_args = 1..)]
    unseen: Vec<PathBuf>,
    /// Clean texts, for the false-positive rate: a CSV with a `text`
    /// column, JSONL dialogs (the customer's turns) or questions
    /// (`question`), or one text per line.
    #[arg(long, num_args = 1..)]
    clean: Vec<PathBuf>,
    #[arg(long, env = "CHATFORGE_CONFIG")]
    config: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct ModerateArgs {
    /// Model folder (moderation.onnx + moderation.json).
    #[arg(long)]
    model: PathBuf,
    /// Text to check.
    #[arg(conflicts_with = "input")]
    text: Option<String>,
    /// File with one text per line (`-` for stdin).
    #[arg(long)]
    input: Option<PathBuf>,
    /// Blocklist file: one term per line, `#` comments.
    #[arg(long)]
    blocklist: Option<PathBuf>,
    /// What PII (e-mail, phone, card numbers) does.
    #[arg(long, value_enum, default_value_t = PiiAction::Flag)]
    pii: PiiAction,
    #[arg(long, env = "CHATFORGE_CONFIG")]
    config: Option<PathBuf>,
    /// One JSON object per text.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Subcommand)]
pub enum DataCommand {
    /// Drop documents and dialog turns the moderation model flags.
    Filter(FilterArgs),
}

#[derive(clap::Args)]
pub struct FilterArgs {
    /// Model folder (moderation.onnx + moderation.json).
    #[arg(long)]
    model: PathBuf,
    /// Text files (paragraphs) and JSONL (`text` lines or `messages` dialogs).
    #[arg(long, required = true, num_args = 1..)]
    input: Vec<PathBuf>,
    /// Folder for the filtered copies (same file names).
    #[arg(long, required_unless_present = "list")]
    out: Option<PathBuf>,
    /// Only list what would be removed (JSON lines on stdout).
    #[arg(long)]
    list: bool,
    /// Blocklist file: one term per line, `#` comments.
    #[arg(long)]
    blocklist: Option<PathBuf>,
    /// PII in training data is redacted at export; here it is ignored unless asked.
    #[arg(long, value_enum, default_value_t = PiiAction::Ignore)]
    pii: PiiAction,
    #[arg(long, env = "CHATFORGE_CONFIG")]
    config: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// The model with the command line's rules beside it.
fn open_moderator(
    model: &Path,
    config: Option<&Path>,
    blocklist: Option<&Path>,
    pii: PiiAction,
) -> Result<Moderator> {
    let cfg = Config::load(config)?;
    let blocklist = match blocklist {
        Some(p) => Blocklist::from_file(p)?,
        None => Blocklist::default(),
    };
    Ok(Moderator::open(model, &cfg.runtime)?.with_rules(Rules {
        blocklist,
        pii,
        ..Rules::default()
    }))
}

pub fn data(cmd: DataCommand) -> Result<()> {
    let DataCommand::Filter(a) = cmd;
    let moderator = open_moderator(&a.model, a.config.as_deref(), a.blocklist.as_deref(), a.pii)?;
    let out = if a.list { None } else { a.out.as_deref() };
    let r = chatforge::moderation::filter_files(&moderator, &a.input, out)?;
    if a.list {
        for f in &r.flagged {
            println!("{}", serde_json::to_string(f)?);
        }
        return Ok(());
    }
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
        return Ok(());
    }
    for f in &r.files {
        println!(
            "{}: {} items, {} removed{}{}",
            f.path,
            f.items,
            f.items_removed,
            if f.turns_removed > 0 {
                format!(", {} dialog turns cut", f.turns_removed)
            } else {
                String::new()
            },
            f.written
                .as_ref()
                .map_or(String::new(), |w| format!(" → {w}"))
        );
    }
    let by: Vec<String> = r
        .removed_by_reason
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    println!(
        "removed by reason: {}",
        if by.is_empty() {
            "none".into()
        } else {
            by.join(", ")
        }
    );
    Ok(())
}

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Model folder (moderation.onnx + moderation.json).
    #[arg(long)]
    model: PathBuf,
    #[arg(long, default_value_t = 2000)]
    messages: usize,
    #[arg(long, env = "CHATFORGE_CONFIG")]
    config: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

pub fn bench(a: BenchArgs) -> Result<()> {
    let cfg = Config::load(a.config.as_deref())?;
    let r = chatforge::moderation::bench(&a.model, &cfg.runtime, a.messages)?;
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!(
            "{} messages on {}: batch 1 {:.0} msg/s (p50 {:.3} ms, p99 {:.3} ms), batch 32 {:.0} msg/s",
            r.messages,
            r.provider,
            r.batch1_messages_per_s,
            r.p50_ms,
            r.p99_ms,
            r.batch32_messages_per_s
        );
    }
    Ok(())
}

pub fn run(cmd: ModerationCommand, progress: bool) -> Result<()> {
    match cmd {
        ModerationCommand::Train(a) => {
            let settings = TrainSettings {
                featurizer: FeaturizerConfig {
                    buckets: 1u32
                        .checked_shl(a.buckets_log2)
                        .filter(|_| (1..=24).contains(&a.buckets_log2))
                        .context("--buckets-log2 must be 1..=24")?,
                    clauses: !a.whole_texts,
                    ..FeaturizerConfig::default()
                },
                split: SplitConfig {
                    seed: a.split_seed,
                    validation_fraction: a.validation_fraction,
                    test_fraction: a.test_fraction,
                },
                dim: a.dim,
                pooling: a.pooling,
                epochs: a.epochs,
                batch_size: a.batch_size,
                lr: a.lr,
                target_precision: a.target_precision,
                max_rows_per_file: a.max_rows,
                seed: a.seed,
                ..TrainSettings::default()
            };
            let report = train(TrainJob {
                data: a.data,
                clean: a.clean,
                clean_train: a.clean_train,
                out: a.out,
                settings,
                progress,
            })?;
            let m = &report.meta;
            if a.json {
                println!("{}", serde_json::to_string(m)?);
                return Ok(());
            }
            let t = &m.training;
            println!(
                "wrote {} ({} train / {} validation / {} held-out rows, {} steps, {:.1} s, val loss {:.4}; ONNX parity max |Δ| {:.2e})",
                report.dir.display(),
                t.train_rows,
                t.validation_rows,
                t.test_rows,
                t.steps,
                t.elapsed_s,
                t.validation_loss,
                m.onnx.parity_max_diff
            );
            for l in &m.labels {
                let v = &l.validation;
                println!(
                    "  {:<12} threshold {:.3} (precision target {} {}), validation ROC-AUC {}, precision {:.3}, recall {:.3}",
                    l.name,
                    l.threshold,
                    l.target_precision,
                    if l.target_met {
                        "met"
                    } else {
                        "NOT met: best F1"
                    },
                    v.roc_auc.map_or("-".into(), |a| format!("{a:.4}")),
                    v.precision,
                    v.recall
                );
            }
        }
        ModerationCommand::Eval(a) => {
            let cfg = Config::load(a.config.as_deref())?;
            if a.data.is_empty() && a.unseen.is_empty() && a.clean.is_empty() {
                bail!("nothing to evaluate: give --data, --unseen or --clean");
            }
            let sets = EvalSets {
                labelled: a.data,
                unseen: a.unseen,
                clean: a.clean,
                heldout: a.heldout,
            };
            let r = evaluate(&a.model, &sets, &cfg.runtime)?;
            if a.json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!(
                    "{} rows{} in {:.1} s\n{}",
                    r.rows,
                    if r.heldout_only {
                        " (held-out split)"
                    } else {
                        ""
                    },
                    r.elapsed_s,
                    r.table()
                );
            }
        }
    }
    Ok(())
}

fn print_verdict(
    out: &mut impl Write,
    index: usize,
    text: &str,
    v: &Verdict,
    json: bool,
) -> Result<()> {
    if json {
        let scores: serde_json::Map<String, serde_json::Value> = v
            .categories
            .iter()
            .map(|c| (c.category.clone(), serde_json::json!(c.score)))
            .collect();
        let line = serde_json::json!({
            "index": index,
            "flagged": v.flagged,
            "scores": scores,
            "reasons": v.reasons(),
            "verdict": v,
        });
        writeln!(out, "{line}")?;
    } else {
        let scores: Vec<String> = v
            .categories
            .iter()
            .map(|c| format!("{} {:.3}", c.category, c.score))
            .collect();
        writeln!(
            out,
            "{}  [{}]{}{}  {}",
            if v.flagged { "FLAGGED" } else { "ok     " },
            scores.join(", "),
            if v.reasons().is_empty() {
                String::new()
            } else {
                format!("  fired: {}", v.reasons().join("; "))
            },
            if v.truncated {
                "  (scored the first part only)"
            } else {
                ""
            },
            text.chars().take(80).collect::<String>()
        )?;
    }
    Ok(())
}

pub fn moderate(a: ModerateArgs) -> Result<()> {
    let moderator = open_moderator(&a.model, a.config.as_deref(), a.blocklist.as_deref(), a.pii)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match (&a.text, &a.input) {
        (Some(text), None) => {
            let v = moderator.check(text)?;
            print_verdict(&mut out, 0, text, &v, a.json)?;
        }
        (None, Some(path)) => {
            let reader = super::input::lines(path)?;
            // Batches of 64 lines: batched inference, bounded memory on big files.
            let mut lines = reader.lines();
            let mut index = 0;
            loop {
                let mut batch = Vec::with_capacity(64);
                for line in lines.by_ref().take(64) {
                    batch.push(line.with_context(|| format!("reading {}", path.display()))?);
                }
                if batch.is_empty() {
                    break;
                }
                let refs: Vec<&str> = batch.iter().map(String::as_str).collect();
                for (text, v) in batch.iter().zip(moderator.check_batch(&refs)?) {
                    print_verdict(&mut out, index, text, &v, a.json)?;
                    index += 1;
                }
            }
        }
        _ => bail!("give a text, or --input FILE (one text per line)"),
    }
    out.flush()?;
    Ok(())
}
