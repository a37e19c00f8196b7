//! `chatforge score` (metrics of line-aligned text files) and `chatforge
//! eval` (a bundle, and optionally a baseline, on held-out dialogs).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use chatforge::config::Config;
use chatforge::eval::{self, EvalOptions, Report, Scores, Tokenize};
use chatforge::runtime::SamplingOverrides;
use chatforge::text::read_dialogs_jsonl;

#[derive(clap::Args)]
pub struct ScoreArgs {
    /// System output, one segment per line.
    #[arg(long)]
    hyp: PathBuf,
    /// Reference, line-aligned with --hyp.
    #[arg(long = "ref")]
    reference: PathBuf,
    /// BLEU (and distinct-n) tokenizer: 13a or zh.
    #[arg(long, default_value = "13a")]
    tokenize: Tokenize,
    /// Porter-stem ROUGE tokens (rouge-score's use_stemmer).
    #[arg(long)]
    stem: bool,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

pub fn score(a: &ScoreArgs) -> Result<()> {
    let hyps = eval::read_lines(&a.hyp)?;
    let refs = eval::read_lines(&a.reference)?;
    if hyps.len() != refs.len() {
        bail!(eval::Error::Misaligned {
            hyp_name: a.hyp.display().to_string(),
            hyp: hyps.len(),
            ref_name: a.reference.display().to_string(),
            refs: refs.len(),
        });
    }
    let s = eval::score(&hyps, &refs, a.tokenize, a.stem)?;
    if a.json {
        println!("{}", serde_json::to_string(&s)?);
    } else {
        print_scores(&s);
    }
    Ok(())
}

/// sacreBLEU's text summary line (`sacrebleu -f text`), then ROUGE and
/// diversity.
fn print_scores(s: &Scores) {
    let b = &s.bleu;
    let p = b.precisions;
    let ratio = b.stats.sys_len as f64 / b.stats.ref_len.max(1) as f64;
    println!(
        "BLEU|{} = {:.1} {:.1}/{:.1}/{:.1}/{:.1} (BP = {:.3} ratio = {:.3} hyp_len = {} ref_len = {})",
        s.bleu_signature,
        b.score,
        p[0],
        p[1],
        p[2],
        p[3],
        b.bp,
        ratio,
        b.stats.sys_len,
        b.stats.ref_len,
    );
    println!(
        "ROUGE-1 F = {:.4}  ROUGE-2 F = {:.4}  ROUGE-L F = {:.4}  (mean over {} lines, stemmer {})",
        s.rouge.rouge1,
        s.rouge.rouge2,
        s.rouge.rouge_l,
        s.lines,
        if s.rouge_stemmer { "on" } else { "off" }
    );
    println!(
        "distinct-1 = {:.4}  distinct-2 = {:.4}  avg length = {:.2} words",
        s.diversity.distinct_1, s.diversity.distinct_2, s.diversity.avg_len
    );
}

#[derive(clap::Args)]
pub struct EvalArgs {
    /// Bundle to evaluate (needs model.onnx: `chatforge export`).
    #[arg(long)]
    bundle: PathBuf,
    /// Held-out dialogs (OpenAI chat JSONL), e.g. data/support/heldout.jsonl.
    #[arg(long)]
    dialogs: PathBuf,
    /// A second bundle to compare against.
    #[arg(long)]
    baseline: Option<PathBuf>,
    /// Report folder (report.json, report.md, metrics.png).
    #[arg(long)]
    out: PathBuf,
    /// Only the first N dialogs.
    #[arg(long)]
    limit: Option<usize>,
    #[arg(long, env = "CHATFORGE_CONFIG")]
    config: Option<PathBuf>,
    /// BLEU and distinct-n tokenizer: 13a or zh.
    #[arg(long, default_value = "13a")]
    tokenize: Tokenize,
    /// Porter-stem ROUGE tokens.
    #[arg(long)]
    stem: bool,
    /// Greedy unless --temperature is given.
    #[command(flatten)]
    sampling: SamplingOverrides,
    /// Moderation model folder: report the share of replies it flags.
    #[arg(long)]
    moderation: Option<PathBuf>,
    /// Example replies shown in the report.
    #[arg(long, default_value_t = 5)]
    samples: usize,
}

pub fn run(a: &EvalArgs) -> Result<()> {
    let cfg = Config::load(a.config.as_deref())?;
    let mut dialogs = read_dialogs_jsonl(&a.dialogs)?;
    if let Some(n) = a.limit {
        dialogs.truncate(n);
    }
    if dialogs.is_empty() {
        bail!("{} has no dialogs to evaluate", a.dialogs.display());
    }
    let opts = EvalOptions {
        runtime: cfg.runtime.clone(),
        tokenize: a.tokenize,
        rouge_stemmer: a.stem,
        sampling: a.sampling.clone(),
        samples: a.samples,
        moderation: a.moderation.clone(),
    };
    let one = |dir: &Path| {
        eprintln!("evaluating {} on {} dialogs", dir.display(), dialogs.len());
        eval::evaluate_bundle(dir, &dialogs, &opts)
            .with_context(|| format!("evaluating {}", dir.display()))
    };
    let bundle = one(&a.bundle)?;
    let baseline = a.baseline.as_deref().map(one).transpose()?;
    let report = eval::write_report(Report::new(&a.dialogs, bundle, baseline), &a.out)?;
    if report.baseline.is_some() {
        println!("{:<24} {:>12} {:>12}", "", "bundle", "baseline");
    }
    for row in &report.metrics {
        let v = |x: Option<f64>| x.map_or("n/a".to_string(), |v| format!("{v:.4}"));
        match &report.baseline {
            Some(_) => println!(
                "{:<24} {:>12} {:>12}",
                row.name,
                v(row.bundle),
                v(row.baseline)
            ),
            None => println!("{:<24} {:>12}", row.name, v(row.bundle)),
        }
    }
    println!("safety: {}", report.bundle.safety_note);
    println!("wrote {}", a.out.join("report.md").display());
    Ok(())
}
