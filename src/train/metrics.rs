//! `metrics.jsonl` (one JSON object per logged step or evaluation) and the
//! loss-curve PNG drawn from it.

use std::io::Write;
use std::path::{Path, PathBuf};

use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use super::{Error, Result, io_err};

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Metric {
    Train {
        step: usize,
        loss: f32,
        lr: f64,
        grad_norm: f32,
        tokens_per_s: f64,
        elapsed_s: f64,
    },
    Eval {
        step: usize,
        val_loss: f32,
        val_bpb: f32,
    },
}

impl Metric {
    fn step(&self) -> usize {
        match self {
            Metric::Train { step, .. } | Metric::Eval { step, .. } => *step,
        }
    }
}

pub struct MetricsLog {
    path: PathBuf,
    entries: Vec<Metric>,
}

impl MetricsLog {
    /// Opens the run's log, keeping only entries up to `keep_until` (a
    /// resumed run drops what was logged after its checkpoint).
    pub fn open(run_dir: &Path, keep_until: Option<usize>) -> Result<Self> {
        let path = run_dir.join("metrics.jsonl");
        let mut entries = Vec::new();
        if let (Some(limit), Ok(text)) = (keep_until, std::fs::read_to_string(&path)) {
            entries = text
                .lines()
                .filter_map(|l| serde_json::from_str::<Metric>(l).ok())
                .filter(|m| m.step() <= limit)
                .collect();
        }
        let log = Self { path, entries };
        log.rewrite()?;
        Ok(log)
    }

    fn rewrite(&self) -> Result<()> {
        let mut body = String::new();
        for m in &self.entries {
            body.push_str(&serde_json::to_string(m).unwrap_or_default());
            body.push('\n');
        }
        Ok(crate::fsio::write_atomic(&self.path, body.as_bytes())?)
    }

    pub fn push(&mut self, m: Metric) -> Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&self.path)
            .map_err(io_err(&self.path))?;
        let line = serde_json::to_string(&m).unwrap_or_default();
        writeln!(f, "{line}").map_err(|e| crate::fsio::WriteError::new(&self.path, e))?;
        self.entries.push(m);
        Ok(())
    }

    pub fn entries(&self) -> &[Metric] {
        &self.entries
    }
}

/// Draws train and validation loss against the step.
pub fn plot_loss_curve(metrics: &[Metric], path: &Path, title: &str) -> Result<()> {
    let train: Vec<(f64, f64)> = metrics
        .iter()
        .filter_map(|m| match m {
            Metric::Train { step, loss, .. } => Some((*step as f64, *loss as f64)),
            _ => None,
        })
        .collect();
    let val: Vec<(f64, f64)> = metrics
        .iter()
        .filter_map(|m| match m {
            Metric::Eval { step, val_loss, .. } => Some((*step as f64, *val_loss as f64)),
            _ => None,
        })
        .collect();
    if train.is_empty() && val.is_empty() {
        return Ok(());
    }
    register_font();
    let all = train.iter().chain(&val);
    let max_x = all.clone().map(|p| p.0).fold(1.0, f64::max);
    let max_y = all
        .clone()
        .map(|p| p.1)
        .filter(|y| y.is_finite())
        .fold(0.0, f64::max)
        * 1.05;
    let min_y = all
        .map(|p| p.1)
        .filter(|y| y.is_finite())
        .fold(f64::MAX, f64::min)
        * 0.95;
    let plot_err = |e: String| Error::Data(format!("cannot draw {}: {e}", path.display()));
    let tmp = path.with_extension("tmp.png");
    {
        let root = BitMapBackend::new(&tmp, (900, 540)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_err(e.to_string()))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(0f64..max_x, min_y.min(max_y - 1e-3)..max_y)
            .map_err(|e| plot_err(e.to_string()))?;
        chart
            .configure_mesh()
            .x_desc("step")
            .y_desc("loss (nats/token)")
            .draw()
            .map_err(|e| plot_err(e.to_string()))?;
        chart
            .draw_series(LineSeries::new(train, &BLUE))
            .map_err(|e| plot_err(e.to_string()))?
            .label("train")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], BLUE));
        chart
            .draw_series(LineSeries::new(val.clone(), RED.stroke_width(2)))
            .map_err(|e| plot_err(e.to_string()))?
            .label("validation")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], RED));
        chart
            .draw_series(val.iter().map(|p| Circle::new(*p, 3, RED.filled())))
            .map_err(|e| plot_err(e.to_string()))?;
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .draw()
            .map_err(|e| plot_err(e.to_string()))?;
        root.present().map_err(|e| plot_err(e.to_string()))?;
    }
    std::fs::rename(&tmp, path).map_err(io_err(path))?;
    Ok(())
}

/// plotters' pure-Rust text path needs a font registered by hand; the
/// embedded DejaVu Sans keeps charts independent of system fonts.
pub(crate) fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            dejavu::sans::regular(),
        );
    });
}
