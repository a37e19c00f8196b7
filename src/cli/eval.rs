//! `chatforge score` (metrics of line-aligned text files) and `chatforge
//! eval` (a bundle, and optionally a baseline, on held-out dialogs).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use chatforge::config::Config;
use chatforge::eval::{self, EvalOptions, GroundedScores, Report, Scores, Tokenize};
use chatforge::kb::Kb;
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
#[command(group(clap::ArgGroup::new("set").required(true).args(["dialogs", "questions"])))]
pub struct EvalArgs {
    /// Bundle to evaluate (needs model.onnx: `chatforge export`); with
    /// --questions, the config's `model.bundle` unless given.
    #[arg(long, required_unless_present = "questions")]
    bundle: Option<PathBuf>,
    /// Held-out dialogs (OpenAI chat JSONL), e.g. data/support/heldout.jsonl:
    /// reference-matching metrics of the bare model.
    #[arg(long)]
    dialogs: Option<PathBuf>,
    /// Labelled questions (`kb eval`'s format, e.g.
    /// data/support/questions/customer_heldout.jsonl and out_of_scope.jsonl)
    /// asked through the serving pipeline of --config (moderation, the
    /// `[kb]` knowledge base, the fact guard): fact accuracy,
    /// groundedness, the split of reply kinds, out-of-scope declines.
    #[arg(long, num_args = 1.., requires = "config")]
    questions: Vec<PathBuf>,
    /// A second bundle to compare against (with --questions: run through
    /// the same pipeline without retrieval).
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
    /// Greedy unless --temperature is given (with --questions: as the
    /// config's `[pipeline]` samples, or the bundle's generation.json,
    /// unless --temperature or --max-new-tokens is given).
    #[command(flatten)]
    sampling: SamplingOverrides,
    /// Moderation model folder: report the share of replies it flags.
    #[arg(long)]
    moderation: Option<PathBuf>,
    /// Example replies shown in the report.
    #[arg(long, default_value_t = 5)]
    samples: usize,
    /// With --questions: print the scores as one JSON object.
    #[arg(long)]
    json: bool,
}

pub fn run(a: &EvalArgs) -> Result<()> {
    let cfg = Config::load(a.config.as_deref())?;
    let (Some(bundle), Some(dialogs)) = (&a.bundle, &a.dialogs) else {
        return grounded(a, cfg);
    };
    let mut dialogs_read = read_dialogs_jsonl(dialogs)?;
    if let Some(n) = a.limit {
        dialogs_read.truncate(n);
    }
    if dialogs_read.is_empty() {
        bail!("{} has no dialogs to evaluate", dialogs.display());
    }
    let (path, dialogs) = (dialogs, dialogs_read);
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
    let bundle = one(bundle)?;
    let baseline = a.baseline.as_deref().map(one).transpose()?;
    let report = eval::write_report(Report::new(path, bundle, baseline), &a.out)?;
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

/// `eval --questions`: the questions through the serving pipeline, with
/// retrieval and (for --baseline) without.
fn grounded(a: &EvalArgs, mut cfg: Config) -> Result<()> {
    if a.dialogs.is_some() {
        bail!("give --dialogs or --questions, not both");
    }
    if let Some(b) = &a.bundle {
        cfg.model.bundle = Some(b.clone());
    }
    // The pipeline samples as `[pipeline]` says; the flags it has keys for
    // override them, the others would be ignored without a word.
    let s = &a.sampling;
    if s.top_k.is_some()
        || s.top_p.is_some()
        || s.repetition_penalty.is_some()
        || !s.stop.is_empty()
    {
        bail!(
            "with --questions only --temperature and --max-new-tokens apply (as [pipeline] temperature and max_new_tokens); set the rest in the bundle's generation.json"
        );
    }
    if let Some(t) = s.temperature {
        cfg.pipeline.temperature = Some(t);
    }
    if let Some(n) = s.max_new_tokens {
        cfg.pipeline.max_new_tokens = Some(n);
    }
    let Some(kb_section) = cfg.kb.clone() else {
        bail!(
            "eval --questions answers from the knowledge base: the config needs a [kb] section (see chatforge.example.toml)"
        );
    };
    let kb = Kb::open(&kb_section.dir, &cfg.runtime)
        .with_context(|| format!("opening the knowledge base {}", kb_section.dir.display()))?;
    let mut questions = Vec::new();
    for file in &a.questions {
        let mut read = chatforge::kb::read_questions(file, &kb.passages)
            .with_context(|| format!("reading {}", file.display()))?;
        if let Some(n) = a.limit {
            read.truncate(n);
        }
        questions.extend(read);
    }
    if questions.is_empty() {
        bail!("the --questions files hold no questions");
    }
    let rt = crate::store_cmd::runtime()?;
    eprintln!("asking {} questions through the pipeline", questions.len());
    let bundle = rt.block_on(eval::evaluate_grounded(&cfg, &kb, &questions, true))?;
    let baseline = match &a.baseline {
        Some(b) => {
            let mut bcfg = cfg.clone();
            bcfg.model.bundle = Some(b.clone());
            eprintln!("and again with {} without retrieval", b.display());
            Some(rt.block_on(eval::evaluate_grounded(&bcfg, &kb, &questions, false))?)
        }
        None => None,
    };
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let report = serde_json::json!({ "bundle": bundle, "baseline": baseline });
    let path = a.out.join("grounded.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("writing {}", path.display()))?;
    if a.json {
        let summary = |s: &GroundedScores| {
            let mut v = serde_json::to_value(s).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.remove("answers");
            }
            v
        };
        println!(
            "{}",
            serde_json::json!({
                "bundle": summary(&bundle),
                "baseline": baseline.as_ref().map(summary),
            })
        );
    } else {
        print_grounded(&bundle, baseline.as_ref());
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn print_grounded(bundle: &GroundedScores, baseline: Option<&GroundedScores>) {
    let runs: Vec<&GroundedScores> = std::iter::once(bundle).chain(baseline).collect();
    let head: Vec<String> = runs
        .iter()
        .map(|r| {
            if r.retrieval {
                "with retrieval".to_string()
            } else {
                "without".to_string()
            }
        })
        .collect();
    println!(
        "{:<34}{}",
        "",
        head.iter().map(|h| format!("{h:>16}")).collect::<String>()
    );
    let row = |name: &str, f: &dyn Fn(&GroundedScores) -> String| {
        println!(
            "{name:<34}{}",
            runs.iter()
                .map(|r| format!("{:>16}", f(r)))
                .collect::<String>()
        );
    };
    row("model", &|r| r.model_version.chars().take(15).collect());
    row("questions with facts", &|r| r.with_facts.to_string());
    row("fact accuracy", &|r| format!("{:.3}", r.fact_accuracy));
    row("  handed off", &|r| r.handed_off.to_string());
    row("  wrong", &|r| r.wrong.to_string());
    row("facts stated in replies", &|r| r.reply_facts.to_string());
    row("unsupported facts sent", &|r| {
        r.unsupported_facts.to_string()
    });
    row("groundedness", &|r| format!("{:.3}", r.groundedness));
    for kind in ["generated", "extracted", "abstained", "ungrounded"] {
        row(&format!("replies {kind}"), &|r| {
            r.kinds.get(kind).copied().unwrap_or(0).to_string()
        });
    }
    row("own words (generated share)", &|r| {
        format!("{:.3}", r.own_words)
    });
    row("  passed at the first draft", &|r| {
        r.generated_first_draft.to_string()
    });
    row("drafts per model reply", &|r| {
        format!("{:.2}", r.drafts_per_reply)
    });
    row("out-of-scope questions", &|r| r.out_of_scope.to_string());
    row("out-of-scope declined", &|r| {
        format!("{:.3}", r.out_of_scope_declined)
    });
    row("latency p50 / p99 ms", &|r| {
        format!("{:.0} / {:.0}", r.latency_p50_ms, r.latency_p99_ms)
    });
    row("retrieval + guard p50 / p99 ms", &|r| {
        format!("{:.2} / {:.2}", r.grounding_p50_ms, r.grounding_p99_ms)
    });
}
