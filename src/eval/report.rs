//! The evaluation report: `report.json` (everything), `report.md` (a table
//! of bundle, baseline and change per metric, example replies) and
//! `metrics.png` (bars per metric), plus the bundle's training loss curve
//! copied in as `loss.png` when it has one.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde::{Deserialize, Serialize};

use super::run::ModelEval;
use super::{Error, Result, io_err};

/// One metric of the bundle, the baseline, and the change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricRow {
    pub name: String,
    /// `Some(true)`: higher is better; `Some(false)`: lower is; `None`: neither.
    pub higher_is_better: Option<bool>,
    pub bundle: Option<f64>,
    pub baseline: Option<f64>,
    /// bundle − baseline.
    pub change: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub dialogs_file: PathBuf,
    pub created_unix: u64,
    pub bundle: ModelEval,
    pub baseline: Option<ModelEval>,
    pub metrics: Vec<MetricRow>,
    /// Report-relative path of the bundle's training loss curve.
    pub loss_curve: Option<String>,
    pub baseline_loss_curve: Option<String>,
    pub chart: String,
}

/// (name, higher is better, value) of every metric in the table and chart.
fn metric_values(m: &ModelEval) -> Vec<(&'static str, Option<bool>, Option<f64>)> {
    let s = &m.scores;
    vec![
        ("perplexity", Some(false), Some(m.perplexity.perplexity)),
        (
            "bits per byte",
            Some(false),
            Some(m.perplexity.bits_per_byte),
        ),
        ("BLEU", Some(true), Some(s.bleu.score)),
        ("ROUGE-1 F", Some(true), Some(s.rouge.rouge1)),
        ("ROUGE-2 F", Some(true), Some(s.rouge.rouge2)),
        ("ROUGE-L F", Some(true), Some(s.rouge.rouge_l)),
        ("distinct-1", Some(true), Some(s.diversity.distinct_1)),
        ("distinct-2", Some(true), Some(s.diversity.distinct_2)),
        ("avg reply length", None, Some(s.diversity.avg_len)),
        ("safety (flagged share)", Some(false), m.safety),
    ]
}

impl Report {
    pub fn new(dialogs_file: &Path, bundle: ModelEval, baseline: Option<ModelEval>) -> Self {
        let base = baseline.as_ref().map(metric_values);
        let metrics = metric_values(&bundle)
            .into_iter()
            .enumerate()
            .map(|(i, (name, hib, v))| {
                let b = base.as_ref().and_then(|b| b[i].2);
                MetricRow {
                    name: name.into(),
                    higher_is_better: hib,
                    bundle: v,
                    baseline: b,
                    change: v.zip(b).map(|(v, b)| v - b),
                }
            })
            .collect();
        Self {
            dialogs_file: dialogs_file.to_path_buf(),
            created_unix: crate::bundle::unix_now(),
            bundle,
            baseline,
            metrics,
            loss_curve: None,
            baseline_loss_curve: None,
            chart: CHART.into(),
        }
    }
}

const CHART: &str = "metrics.png";

/// Writes report.json, report.md and the chart into `out` (created).
pub fn write_report(mut report: Report, out: &Path) -> Result<Report> {
    std::fs::create_dir_all(out).map_err(io_err(out))?;
    report.loss_curve = copy_loss_curve(&report.bundle, out, "loss.png")?;
    if let Some(b) = &report.baseline {
        report.baseline_loss_curve = copy_loss_curve(b, out, "baseline-loss.png")?;
    }
    draw_chart(&report, &out.join(CHART))?;
    crate::fsio::write_json_atomic(&out.join("report.json"), &report)?;
    crate::fsio::write_atomic(&out.join("report.md"), markdown(&report).as_bytes())?;
    Ok(report)
}

/// Copies the curve `training.json` names (else `loss.png`) into the report.
fn copy_loss_curve(m: &ModelEval, out: &Path, name: &str) -> Result<Option<String>> {
    let file = m
        .training
        .as_ref()
        .and_then(|t| t.loss_curve.as_deref())
        .unwrap_or("loss.png");
    let src = m.bundle.join(file);
    if !src.is_file() {
        return Ok(None);
    }
    let dst = out.join(name);
    std::fs::copy(&src, &dst).map_err(io_err(&dst))?;
    Ok(Some(name.into()))
}

fn fmt(v: Option<f64>) -> String {
    match v {
        None => "n/a".into(),
        Some(v) if v.abs() >= 1000.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.4}"),
    }
}

fn fmt_change(row: &MetricRow) -> String {
    let Some(c) = row.change else {
        return "n/a".into();
    };
    let better = match row.higher_is_better {
        Some(true) if c > 0.0 => " ▲",
        Some(false) if c < 0.0 => " ▲",
        Some(_) if c != 0.0 => " ▼",
        _ => "",
    };
    format!("{c:+.4}{better}")
}

fn describe(m: &ModelEval) -> String {
    let mut s = format!(
        "`{}` (model version {}, stage {}; {} on {}; temperature {}, top-k {}, top-p {}, repetition penalty {}, max {} new tokens, seed {})",
        m.bundle.display(),
        m.model_version.as_deref().unwrap_or("unknown"),
        m.stage.as_deref().unwrap_or("unknown"),
        if m.sampling.temperature == 0.0 {
            "greedy"
        } else {
            "sampling"
        },
        m.provider,
        m.sampling.temperature,
        m.sampling.top_k,
        m.sampling.top_p,
        m.sampling.repetition_penalty,
        m.sampling.max_new_tokens,
        m.sampling.seed
    );
    if let Some(t) = &m.training {
        let num = |v: Option<f64>| v.map_or("?".to_string(), |v| format!("{v:.4}"));
        let _ = write!(
            s,
            "; trained {} steps, {} parameters, validation loss {} ({} bits/byte)",
            t.steps.map_or("?".to_string(), |v| v.to_string()),
            t.parameters.map_or("?".to_string(), |v| v.to_string()),
            num(t.val_loss),
            num(t.val_bpb)
        );
    }
    s
}

fn markdown(r: &Report) -> String {
    let b = &r.bundle;
    let mut s = String::new();
    let _ = writeln!(s, "# Evaluation report\n");
    let _ = writeln!(
        s,
        "{} dialogs from `{}`, {} assistant turns generated from the turns before them.\n",
        b.dialogs,
        r.dialogs_file.display(),
        b.turns
    );
    let _ = writeln!(s, "- bundle: {}", describe(b));
    if let Some(base) = &r.baseline {
        let _ = writeln!(s, "- baseline: {}", describe(base));
    }
    let _ = writeln!(
        s,
        "- BLEU: corpus BLEU as sacreBLEU (tokenizer `{}`, exp smoothing), 0-100; ROUGE: mean F-measure per turn as rouge-score (stemmer {}); distinct-n and length over `{}` words; perplexity and bits per byte of the reference turns by teacher forcing.\n",
        b.scores.tokenize.name(),
        if b.scores.rouge_stemmer { "on" } else { "off" },
        b.scores.tokenize.name()
    );
    if r.baseline.is_some() {
        let _ = writeln!(s, "| metric | bundle | baseline | change |");
        let _ = writeln!(s, "|---|---:|---:|---:|");
        for row in &r.metrics {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} |",
                row.name,
                fmt(row.bundle),
                fmt(row.baseline),
                fmt_change(row)
            );
        }
        let _ = writeln!(s, "\n▲ better, ▼ worse than the baseline.");
    } else {
        let _ = writeln!(s, "| metric | bundle |");
        let _ = writeln!(s, "|---|---:|");
        for row in &r.metrics {
            let _ = writeln!(s, "| {} | {} |", row.name, fmt(row.bundle));
        }
    }
    // Without a moderation model the safety row is empty; say why.
    let unmeasured = if b.safety.is_none() {
        " (the share of flagged replies is left empty, not estimated)"
    } else {
        ""
    };
    let _ = writeln!(s, "\nSafety: {}{unmeasured}.\n", b.safety_note);
    let _ = writeln!(s, "![metrics]({})\n", r.chart);
    if let Some(l) = &r.loss_curve {
        let _ = writeln!(s, "Training loss of the bundle: [{l}]({l})\n");
    }
    if let Some(l) = &r.baseline_loss_curve {
        let _ = writeln!(s, "Training loss of the baseline: [{l}]({l})\n");
    }
    let _ = writeln!(s, "## Example replies\n");
    for (i, x) in b.samples.iter().enumerate() {
        let _ = writeln!(s, "**user** (dialog {}): {}\n", x.dialog, quote(&x.user));
        let _ = writeln!(s, "- reference: {}", quote(&x.reference));
        let _ = writeln!(s, "- bundle: {}", quote(&x.generated));
        if let Some(y) = r.baseline.as_ref().and_then(|b| b.samples.get(i)) {
            let _ = writeln!(s, "- baseline: {}", quote(&y.generated));
        }
        s.push('\n');
    }
    s
}

/// Model text inside a Markdown line: no line breaks, no table pipes.
fn quote(t: &str) -> String {
    let t = t.trim().replace(['\n', '\r'], " ").replace('|', "\\|");
    if t.is_empty() { "(empty)".into() } else { t }
}

/// Two panels: the 0-1 metrics (BLEU / 100) and bits per byte, each bar
/// labelled with its value so that small differences stay readable.
fn draw_chart(r: &Report, path: &Path) -> Result<()> {
    let plot_err = |e: String| Error::Plot {
        path: path.display().to_string(),
        reason: e,
    };
    crate::train::register_chart_font();
    // (label, row in `r.metrics`)
    let unit: Vec<(&str, usize)> = vec![
        ("BLEU/100", 2),
        ("ROUGE-1", 3),
        ("ROUGE-2", 4),
        ("ROUGE-L", 5),
        ("distinct-1", 6),
        ("distinct-2", 7),
    ];
    let value = |row: usize, base: bool| {
        let m = &r.metrics[row];
        let v = if base { m.baseline } else { m.bundle };
        v.map(|v| if row == 2 { v / 100.0 } else { v })
    };
    let mut series = vec![(false, RGBColor(31, 119, 180), "bundle")];
    if r.baseline.is_some() {
        series.push((true, RGBColor(255, 127, 14), "baseline"));
    }
    let bpb_max = {
        let m = &r.metrics[1];
        m.bundle
            .into_iter()
            .chain(m.baseline)
            .filter(|v| v.is_finite())
            .fold(0.1, f64::max)
            * 1.15
    };
    let tmp = path.with_extension("tmp.png");
    {
        let root = BitMapBackend::new(&tmp, (1000, 480)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_err(e.to_string()))?;
        let (left, right) = root.split_horizontally(760);
        let panels = [
            (&left, "reference match and diversity", unit, 1.05),
            (
                &right,
                "bits per byte (lower: better)",
                vec![("bpb", 1)],
                bpb_max,
            ),
        ];
        for (p, (area, title, rows, max_y)) in panels.into_iter().enumerate() {
            let mut chart = ChartBuilder::on(area)
                .caption(title, ("sans-serif", 18))
                .margin(12)
                .x_label_area_size(30)
                .y_label_area_size(48)
                .build_cartesian_2d(0f64..rows.len() as f64, 0f64..max_y)
                .map_err(|e| plot_err(e.to_string()))?;
            chart
                .configure_mesh()
                .disable_x_mesh()
                .light_line_style(WHITE)
                .x_labels(0)
                .draw()
                .map_err(|e| plot_err(e.to_string()))?;
            let width = 0.8 / series.len() as f64;
            let above =
                TextStyle::from(("sans-serif", 12)).pos(Pos::new(HPos::Center, VPos::Bottom));
            for (k, &(base, color, label)) in series.iter().enumerate() {
                // (left edge, value) of each bar
                let bars: Vec<(f64, f64)> = rows
                    .iter()
                    .enumerate()
                    .filter_map(|(i, &(_, row))| {
                        Some((i as f64 + 0.1 + k as f64 * width, value(row, base)?))
                    })
                    .collect();
                let top = |v: f64| {
                    if v.is_finite() {
                        v.clamp(0.0, max_y)
                    } else {
                        0.0
                    }
                };
                let drawn = chart
                    .draw_series(bars.iter().map(|&(x0, v)| {
                        Rectangle::new([(x0, 0.0), (x0 + width * 0.95, top(v))], color.filled())
                    }))
                    .map_err(|e| plot_err(e.to_string()))?;
                if p == 0 {
                    drawn.label(label).legend(move |(x, y)| {
                        Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled())
                    });
                }
                chart
                    .draw_series(bars.iter().map(|&(x0, v)| {
                        Text::new(
                            format!("{v:.3}"),
                            (x0 + width * 0.475, top(v)),
                            above.clone(),
                        )
                    }))
                    .map_err(|e| plot_err(e.to_string()))?;
            }
            if p == 0 {
                chart
                    .configure_series_labels()
                    .position(SeriesLabelPosition::UpperLeft)
                    .border_style(BLACK)
                    .background_style(WHITE.mix(0.8))
                    .draw()
                    .map_err(|e| plot_err(e.to_string()))?;
            }
            let style = TextStyle::from(("sans-serif", 14)).pos(Pos::new(HPos::Center, VPos::Top));
            for (i, (name, _)) in rows.iter().enumerate() {
                let (px, py) = chart.backend_coord(&(i as f64 + 0.5, 0.0));
                root.draw(&Text::new(name.to_string(), (px, py + 6), style.clone()))
                    .map_err(|e| plot_err(e.to_string()))?;
            }
        }
        root.present().map_err(|e| plot_err(e.to_string()))?;
    }
    std::fs::rename(&tmp, path).map_err(io_err(path))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::{Perplexity as P, SAFETY_NOTE, Sample, SamplingSummary, Tokenize, score};

    fn model(dir: &str, hyps: &[&str], refs: &[&str], ppl: f64) -> ModelEval {
        ModelEval {
            bundle: PathBuf::from(dir),
            model_version: Some(format!("{dir}-v1")),
            stage: Some("finetune".into()),
            training: None,
            provider: "cpu".into(),
            sampling: SamplingSummary {
                temperature: 0.0,
                top_k: 40,
                top_p: 0.95,
                repetition_penalty: 1.1,
                max_new_tokens: 64,
                seed: 0,
            },
            dialogs: 2,
            turns: hyps.len(),
            perplexity: P {
                tokens: 40,
                bytes: 120,
                nll: ppl.ln(),
                perplexity: ppl,
                bits_per_byte: ppl.ln() * 40.0 / std::f64::consts::LN_2 / 120.0,
            },
            scores: score(hyps, refs, Tokenize::Thirteen, false).unwrap(),
            safety: None,
            safety_note: SAFETY_NOTE.into(),
            generated_tokens: 30,
            generate_s: 0.5,
            samples: vec![Sample {
                dialog: 0,
                user: "Where is my order?".into(),
                reference: refs[0].into(),
                generated: format!("{}\nwith | pipe", hyps[0]),
            }],
        }
    }

    #[test]
    fn test_report_with_and_without_baseline() {
        let refs = [
            "Your order shipped today.",
            "Returns are free within 30 days.",
        ];
        let good = model(
            "good",
            &["Your order shipped today.", "Returns are free."],
            &refs,
            5.0,
        );
        let bad = model("bad", &["Hello.", "Hello."], &refs, 50.0);
        let tmp = tempfile::tempdir().unwrap();

        let out = tmp.path().join("pair");
        let r = write_report(
            Report::new(Path::new("d.jsonl"), good.clone(), Some(bad)),
            &out,
        )
        .unwrap();
        let row = |name: &str| r.metrics.iter().find(|m| m.name == name).unwrap().clone();
        let ppl = row("perplexity");
        assert_eq!(
            (ppl.bundle, ppl.baseline, ppl.change),
            (Some(5.0), Some(50.0), Some(-45.0))
        );
        assert!(row("BLEU").change.unwrap() > 0.0);
        let safety = row("safety (flagged share)");
        assert_eq!((safety.bundle, safety.change), (None, None));
        let md = std::fs::read_to_string(out.join("report.md")).unwrap();
        // Lower perplexity and higher BLEU both show as improvements.
        assert!(
            md.contains("| perplexity | 5.0000 | 50.0000 | -45.0000 ▲ |"),
            "{md}"
        );
        assert!(md.contains(SAFETY_NOTE) && md.contains("left empty, not estimated"));
        assert!(
            md.contains("with \\| pipe"),
            "model text cannot break the table"
        );
        assert!(!md.contains("(loss.png)"), "no loss curve to link");
        let back: Report =
            serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap())
                .unwrap();
        // (serde_json parses floats to within an ulp, not always exactly)
        assert_eq!(back.bundle.samples, r.bundle.samples);
        assert_eq!(back.baseline.unwrap().bundle, PathBuf::from("bad"));
        assert_eq!(back.metrics.len(), r.metrics.len());
        for (a, b) in back.metrics.iter().zip(&r.metrics) {
            assert_eq!(a.name, b.name);
            assert!(
                a.bundle
                    .zip(b.bundle)
                    .is_none_or(|(a, b)| (a - b).abs() < 1e-12)
            );
        }
        assert!(
            std::fs::read(out.join("metrics.png"))
                .unwrap()
                .starts_with(b"\x89PNG")
        );

        let out = tmp.path().join("single");
        write_report(Report::new(Path::new("d.jsonl"), good, None), &out).unwrap();
        let md = std::fs::read_to_string(out.join("report.md")).unwrap();
        assert!(md.contains("| metric | bundle |\n"), "{md}");
        assert!(!md.contains("baseline"), "{md}");
        assert!(out.join("metrics.png").is_file());
    }
}
