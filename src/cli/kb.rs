//! `kb build`, `kb train`, `kb search`, `kb eval`.

use std::io::BufRead;
use std::path::PathBuf;

use anyhow::{Context, Result};

use chatforge::config::Config;
use chatforge::kb::{
    BuildOptions, EvalReport, Kb, Metrics, Query, RouterSettings, SplitSettings, TITLE_SEP,
    TrainOptions, build, evaluate, read_questions, train,
};
use chatforge::moderation::Pooling;

#[derive(clap::Subcommand)]
pub enum KbCommand {
    /// Split documents into passages and index them; unchanged files are
    /// not read again.
    Build(BuildArgs),
    /// Train the router on labelled example questions, then fit fusion and
    /// confidence on the questions held aside.
    Train(TrainArgs),
    /// The best passages for a question, with scores and confidence.
    Search(SearchArgs),
    /// Recall@1/3/5, MRR, coverage and accuracy at the confidence
    /// threshold, abstentions, latency; BM25 alone beside it.
    Eval(EvalArgs),
}

#[derive(clap::Args)]
pub struct BuildArgs {
    /// Markdown, text, JSONL or CSV files, or folders of them.
    #[arg(long, required = true, num_args = 1..)]
    docs: Vec<PathBuf>,
    /// The knowledge-base folder to write.
    #[arg(long)]
    out: PathBuf,
    /// Read every file again, changed or not.
    #[arg(long)]
    force: bool,
    /// Longest passage in words; longer prose splits at sentence ends.
    #[arg(long, default_value_t = SplitSettings::default().max_words)]
    max_words: usize,
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct TrainArgs {
    #[arg(long)]
    kb: PathBuf,
    /// Labelled questions: CSV `text,label`, JSONL `{"question","passages"}`,
    /// or dialogs with `passages` per assistant turn.
    #[arg(long, required = true, num_args = 1..)]
    questions: Vec<PathBuf>,
    /// Questions the knowledge base cannot answer (text lines, or JSONL
    /// with `"passages": []`), for the confidence's "I don't know".
    #[arg(long, num_args = 1..)]
    negatives: Vec<PathBuf>,
    #[arg(long, default_value_t = RouterSettings::default().epochs)]
    epochs: usize,
    /// Serve the router trained without the held-aside questions, instead
    /// of training it again on all of them once fusion and confidence are
    /// fitted.
    #[arg(long)]
    no_refit: bool,
    /// Train without the near-miss negatives written from the passages
    /// (a product's name with a question the knowledge base does not
    /// answer, "what colours does the … come in?").
    #[arg(long)]
    no_near_misses: bool,
    #[arg(long, default_value_t = RouterSettings::default().dim)]
    dim: usize,
    /// The router's initialisation and shuffling seed (another seed
    /// measures how much a figure owes to chance).
    #[arg(long, default_value_t = RouterSettings::default().seed)]
    seed: u64,
    /// How a question's n-gram embeddings are pooled.
    #[arg(long, value_enum, default_value_t = RouterSettings::default().pooling)]
    pooling: Pooling,
    /// The pretrained lexicon (a folder with `tokenizer.json` and
    /// `embedding.safetensors`) the router reads beside its n-grams
    /// [default: $CHATFORGE_HOME/lexicon/wordllama-l2-supercat-256, which
    /// scripts/setup.sh writes].
    #[arg(long, conflicts_with = "no_lexicon")]
    lexicon: Option<PathBuf>,
    /// Train the router on n-grams alone.
    #[arg(long)]
    no_lexicon: bool,
    /// The lexicon table's learning rate as a share of the router's
    /// (0 keeps the pretrained table as it is).
    #[arg(long, default_value_t = RouterSettings::default().lexicon_lr)]
    lexicon_lr: f64,
    /// Precision answered questions must reach at the confidence threshold.
    #[arg(long, default_value_t = 0.9)]
    target_precision: f32,
    #[arg(long, env = "CHATFORGE_CONFIG")]
    config: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct SearchArgs {
    #[arg(long)]
    kb: PathBuf,
    /// The question.
    #[arg(conflicts_with = "input", required_unless_present = "input")]
    question: Option<String>,
    /// The user's message before it (for a follow-up).
    #[arg(long, conflicts_with = "input")]
    previous: Option<String>,
    /// File of questions (`-` for stdin), one per line: plain text, or a
    /// JSON object with `question` and `previous` (`kb eval`'s format; its
    /// labels are not read). Each is searched on its own; with --json, one
    /// object per line, with its question.
    #[arg(long)]
    input: Option<PathBuf>,
    #[arg(long, default_value_t = 5)]
    k: usize,
    #[arg(long, env = "CHATFORGE_CONFIG")]
    config: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct EvalArgs {
    #[arg(long)]
    kb: PathBuf,
    /// Labelled questions (as for `kb train`); `"passages": []` marks ones
    /// it should abstain on.
    #[arg(long, required = true, num_args = 1..)]
    questions: Vec<PathBuf>,
    #[arg(long, env = "CHATFORGE_CONFIG")]
    config: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

pub fn run(command: KbCommand) -> Result<()> {
    match command {
        KbCommand::Build(a) => {
            let r = build(&BuildOptions {
                docs: a.docs,
                out: a.out.clone(),
                force: a.force,
                split: SplitSettings {
                    max_words: a.max_words,
                },
            })
            .with_context(|| format!("kb build --out {}", a.out.display()))?;
            for w in &r.warnings {
                eprintln!("warning: {}:{}: {}", w.source, w.line, w.message);
            }
            if a.json {
                println!("{}", serde_json::to_string(&r)?);
            } else if r.unchanged {
                println!(
                    "{}: up to date ({} passages from {} sources)",
                    r.out, r.passages, r.sources
                );
            } else {
                println!(
                    "{}: {} passages from {} sources ({} read, {} unchanged) in {:.2} s",
                    r.out, r.passages, r.sources, r.read, r.reused, r.seconds
                );
            }
        }
        KbCommand::Train(a) => {
            let cfg = Config::load(a.config.as_deref())?;
            let mut o = TrainOptions::new(a.kb.clone(), a.questions);
            o.negatives = a.negatives;
            o.settings.epochs = a.epochs;
            o.refit = !a.no_refit;
            o.near_misses = !a.no_near_misses;
            o.settings.dim = a.dim;
            o.settings.seed = a.seed;
            o.settings.pooling = a.pooling;
            o.target_precision = a.target_precision;
            o.settings.lexicon_lr = a.lexicon_lr;
            if !a.no_lexicon {
                o.lexicon = chatforge::kb::lexicon::resolve(a.lexicon.as_deref())?;
            }
            o.runtime = cfg.runtime;
            o.progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
            let r = train(&o).with_context(|| format!("kb train --kb {}", a.kb.display()))?;
            if a.json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!(
                    "router over {} passages ({}): {} training examples ({} labelled questions, {} held aside, {} negatives of which {} near misses) in {:.1} s; held-aside top-1: router {:.3}, fused {:.3}; confidence threshold {:.2}{}",
                    r.entries,
                    r.streams(),
                    r.train_examples,
                    r.labelled,
                    r.validation,
                    r.negatives,
                    r.near_misses,
                    r.seconds,
                    r.router_accuracy,
                    r.fused_accuracy,
                    r.calibration.threshold,
                    if r.refit {
                        "; served router trained again on all labelled questions"
                    } else {
                        ""
                    }
                );
            }
        }
        KbCommand::Search(a) => {
            let cfg = Config::load(a.config.as_deref())?;
            let kb = Kb::open(&a.kb, &cfg.runtime)?;
            match (&a.question, &a.input) {
                (Some(question), _) => {
                    search_one(&kb, question, a.previous.as_deref(), a.k, a.json, false)?;
                }
                (None, Some(path)) => {
                    let mut searched = 0;
                    for (n, line) in super::input::lines(path)?.lines().enumerate() {
                        let line = line.with_context(|| format!("reading {}", path.display()))?;
                        if line.trim().is_empty() {
                            continue;
                        }
                        let (question, previous) = input_question(&line)
                            .with_context(|| format!("{}:{}", path.display(), n + 1))?;
                        if !a.json && searched > 0 {
                            println!();
                        }
                        search_one(&kb, &question, previous.as_deref(), a.k, a.json, true)?;
                        searched += 1;
                    }
                }
                (None, None) => anyhow::bail!("give a question, or --input FILE"),
            }
        }
        KbCommand::Eval(a) => {
            let cfg = Config::load(a.config.as_deref())?;
            let kb = Kb::open(&a.kb, &cfg.runtime)?;
            let mut questions = Vec::new();
            for f in &a.questions {
                questions.extend(read_questions(f, &kb.passages)?);
            }
            let r = evaluate(&kb, &questions)?;
            if a.json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                print_eval(&r);
            }
        }
    }
    Ok(())
}

/// A line of `kb search --input`: a JSON object's `question` and
/// `previous`, or the line itself.
fn input_question(line: &str) -> Result<(String, Option<String>)> {
    if !line.trim_start().starts_with('{') {
        return Ok((line.to_string(), None));
    }
    #[derive(serde::Deserialize)]
    struct Line {
        question: String,
        #[serde(default)]
        previous: Option<String>,
    }
    let l: Line = serde_json::from_str(line)
        .context("a JSON line needs a \"question\" string (and may have \"previous\")")?;
    Ok((l.question, l.previous))
}

/// Searches one question and prints what `kb search` shows; `labelled`
/// puts the question itself in the output (a file of questions).
fn search_one(
    kb: &Kb,
    question: &str,
    previous: Option<&str>,
    k: usize,
    json: bool,
    labelled: bool,
) -> Result<()> {
    let r = kb.search(
        &Query {
            text: question,
            previous,
        },
        k,
    )?;
    if json {
        let hits: Vec<serde_json::Value> = r
            .hits
            .iter()
            .map(|h| {
                let p = &kb.passages[h.passage];
                serde_json::json!({
                    "id": p.id, "title": p.title_text(), "source": p.source,
                    "line": p.line, "score": h.score, "bm25": h.bm25, "router": h.router,
                    "text": p.text,
                })
            })
            .collect();
        let mut v = serde_json::json!({"confidence": r.confidence, "answerable": r.answerable,
            "read_as": kb.read_as(question), "signals": r.signals, "hits": hits,
            "parts": r.parts.iter().map(|&p| &kb.passages[p].id).collect::<Vec<_>>()});
        if labelled {
            v["question"] = question.into();
            v["previous"] = previous.into();
        }
        println!("{v}");
        return Ok(());
    }
    if labelled {
        match previous {
            Some(p) => println!("Q: {question}   (after: {p})"),
            None => println!("Q: {question}"),
        }
    }
    if let Some(read) = kb.read_as(question) {
        println!("read as: {read}");
    }
    println!(
        "confidence {:.2} ({})",
        r.confidence,
        if r.answerable {
            "answers"
        } else {
            "below the threshold: abstain"
        }
    );
    for (i, h) in r.hits.iter().enumerate() {
        let p = &kb.passages[h.passage];
        println!(
            "{}. [{:.3}] {} ({}:{})\n   {}",
            i + 1,
            h.score,
            p.title.join(TITLE_SEP),
            p.source,
            p.line,
            p.text.replace('\n', " ")
        );
    }
    for &p in &r.parts {
        println!(
            "a part of the question: {}",
            kb.passages[p].title.join(TITLE_SEP)
        );
    }
    Ok(())
}

fn print_eval(r: &EvalReport) {
    let row = |name: &str, f: fn(&Metrics) -> String| {
        println!("{name:<28}{:>12}{:>12}", f(&r.fused), f(&r.bm25));
    };
    println!(
        "{:<28}{:>12}{:>12}",
        "",
        if r.router { "fused" } else { "kb" },
        "bm25"
    );
    row("questions", |m| m.questions.to_string());
    row("recall@1", |m| format!("{:.3}", m.recall_at_1));
    row("recall@3", |m| format!("{:.3}", m.recall_at_3));
    row("recall@5", |m| format!("{:.3}", m.recall_at_5));
    row("MRR", |m| format!("{:.3}", m.mrr));
    row("coverage at threshold", |m| format!("{:.3}", m.coverage));
    row("accuracy at threshold", |m| format!("{:.3}", m.accuracy));
    row("out-of-scope questions", |m| m.out_of_scope.to_string());
    row("abstained on them", |m| format!("{:.3}", m.abstained));
    row("questions with facts", |m| m.with_facts.to_string());
    row("extract states all facts", |m| {
        format!("{:.3}", m.extract_correct)
    });
    row("extract misses a fact", |m| {
        format!("{:.3}", m.extract_wrong)
    });
    row("latency p50 ms", |m| format!("{:.3}", m.latency_p50_ms));
    row("latency p99 ms", |m| format!("{:.3}", m.latency_p99_ms));
    for (kind, n, r1) in &r.by_kind {
        println!("recall@1 {kind:<19}{r1:>12.3}  ({n})");
    }
    println!(
        "\n{:>9}{:>10}{:>10}{:>11}{:>15}{:>14}",
        "threshold", "coverage", "accuracy", "abstained", "extract right", "extract miss"
    );
    for s in &r.sweep {
        println!(
            "{:>9.2}{:>10.3}{:>10.3}{:>11.3}{:>15.3}{:>14.3}",
            s.threshold, s.coverage, s.accuracy, s.abstained, s.extract_correct, s.extract_wrong
        );
    }
}
