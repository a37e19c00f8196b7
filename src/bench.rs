//! `chatforge bench`: throughput figures printed as one JSON line.

use std::time::Instant;

use candle_core::{Device, Tensor};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::config::Config;

mod generate;
mod http;
mod pipeline;
mod serve;

pub use generate::{DecodeFigures, GenerateBench, GeneratePreset, bench_generate};
pub use http::{HttpBench, HttpFigures, bench_http};
pub use pipeline::{PipelineBench, PipelineFigures, Via, bench_pipeline};
pub use serve::{SchedulerFigures, ServeBench, ServeFigures, bench_serve};

/// `cfg` made into a scratch run of the serving path: its store and spill
/// folder in `dir`, no reload watching, no per-user rate limit (one
/// scripted user may send many messages). What `bench pipeline`, `bench
/// http` and `eval --questions` run.
pub(crate) fn scratch_config(cfg: &Config, dir: &std::path::Path) -> Config {
    let mut cfg = cfg.clone();
    cfg.model.watch_secs = 0.0;
    cfg.store.url = Some(format!(
        "sqlite://{}?mode=rwc",
        dir.join("bench.db").display()
    ));
    cfg.store.spill_dir = Some(dir.join("spill"));
    cfg.pipeline.rate_limit.burst = u32::MAX / 2;
    cfg
}

/// A bench's model, moderation (`None`: off) and knowledge base (`None`:
/// the config's `[kb]`, if any) over `cfg`.
pub(crate) fn serving_under_test(
    cfg: &mut Config,
    bundle: &std::path::Path,
    moderation: Option<&std::path::Path>,
    kb: Option<&std::path::Path>,
    new_tokens: usize,
) {
    cfg.model.bundle = Some(bundle.to_path_buf());
    cfg.moderation.enabled = moderation.is_some();
    cfg.moderation.model = moderation.map(std::path::Path::to_path_buf);
    if let Some(dir) = kb {
        cfg.kb = Some(crate::config::KbSection {
            dir: dir.to_path_buf(),
            passages: crate::config::KbSection::DEFAULT_PASSAGES,
            links: Default::default(),
        });
    }
    cfg.pipeline.max_new_tokens = Some(new_tokens);
}

/// The value at fraction `p` of `sorted` (nearest rank); 0 when empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The middle value of `v` (nearest rank); 0 when empty.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    percentile(&v, 0.5)
}

use crate::model::{GptConfig, init_weights};
use crate::train::{Batch, Dataset, TrainDevice, TrainSection, step_rng, train_step, trainable};

/// nanoGPT-style configurations used to compare with PyTorch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TrainPreset {
    /// 4 layers, 4 heads, 128 wide, context 64, batch 12, vocab 65.
    #[value(name = "A", alias = "a")]
    A,
    /// 6 layers, 6 heads, 384 wide, context 256, batch 8, vocab 65.
    #[value(name = "B", alias = "b")]
    B,
    /// GPT-2 small: 12 layers, 12 heads, 768 wide, context 1024, batch 8,
    /// vocab 50,257 (a GPU figure; very slow on a CPU).
    #[value(name = "gpt2-124m")]
    Gpt2,
}

impl TrainPreset {
    /// (model, batch size, context)
    pub fn shape(self) -> (GptConfig, usize, usize) {
        match self {
            TrainPreset::A => (GptConfig::sized(65, 64, 128, 4, 4), 12, 64),
            TrainPreset::B => (GptConfig::sized(65, 256, 384, 6, 6), 8, 256),
            TrainPreset::Gpt2 => (GptConfig::sized(50257, 1024, 768, 12, 12), 8, 1024),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            TrainPreset::A => "A",
            TrainPreset::B => "B",
            TrainPreset::Gpt2 => "gpt2-124m",
        }
    }
}

#[derive(Debug, Serialize)]
pub struct TrainBench {
    pub bench: &'static str,
    pub preset: &'static str,
    pub tokens_per_s: f64,
    pub threads: usize,
    pub peak_rss_mb: f64,
    pub steps: usize,
    pub params: usize,
    pub device: String,
    /// PyTorch on the same model in the same run (`--compare-python`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pytorch: Option<PytorchFigures>,
    /// tokens_per_s / pytorch.tokens_per_s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio: Option<f64>,
    /// Why the PyTorch side did not run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pytorch_skipped: Option<String>,
    /// Each round's figures when there were several (`--rounds`); the
    /// figures above are then their medians.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rounds: Vec<TrainRound>,
}

/// One round of `bench train`: chatforge, then PyTorch when compared.
#[derive(Debug, Clone, Serialize)]
pub struct TrainRound {
    pub tokens_per_s: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pytorch_tokens_per_s: Option<f64>,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct PytorchFigures {
    pub tokens_per_s: f64,
    pub torch: String,
    pub threads: usize,
    pub steps: usize,
}

/// The PyTorch twin of the benchmark model, run by `--compare-python`.
const TORCH_SCRIPT: &str = include_str!("../scripts/bench_train_torch.py");

/// Runs the preset in PyTorch with `python`; `Err` says why it could not,
/// for printing.
pub fn bench_train_pytorch(
    python: &std::path::Path,
    preset: TrainPreset,
    steps: usize,
    warmup: usize,
    device: TrainDevice,
) -> std::result::Result<PytorchFigures, String> {
    let (cfg, b, t) = preset.shape();
    let arg = |name: &str, v: usize| [format!("--{name}"), v.to_string()];
    let mut args: Vec<String> = [
        arg("layers", cfg.n_layer),
        arg("heads", cfg.n_head),
        arg("embd", cfg.n_embd),
        arg("ctx", t),
        arg("batch", b),
        arg("vocab", cfg.vocab_size),
        arg("steps", steps),
        arg("warmup", warmup),
        arg("threads", crate::threads()),
    ]
    .concat();
    args.extend(["--device".to_string(), device.to_string()]);
    run_python_bench(python, "torch", "bench_train_torch.py", TORCH_SCRIPT, &args)
}

/// Runs a Python twin of a benchmark: checks that `python` can import
/// `module`, runs `script` (written to a temporary folder) with `args` and
/// reads the JSON line it prints last. `Err` says why it could not, for
/// printing.
pub(crate) fn run_python_bench<T: serde::de::DeserializeOwned>(
    python: &std::path::Path,
    module: &str,
    name: &str,
    script: &str,
    args: &[String],
) -> std::result::Result<T, String> {
    use std::process::Command;
    let shown = python.display();
    let probe = Command::new(python)
        .args(["-c", &format!("import {module}")])
        .output()
        .map_err(|e| format!("cannot run {shown}: {e}"))?;
    if !probe.status.success() {
        return Err(format!(
            "{shown} has no {module} (pass --python, or set the environment variable it names, to a Python with {module})"
        ));
    }
    let dir = tempfile::tempdir().map_err(|e| format!("temporary folder: {e}"))?;
    let path = dir.path().join(name);
    std::fs::write(&path, script).map_err(|e| format!("writing the script: {e}"))?;
    let out = Command::new(python)
        .arg(&path)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {shown}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "the Python benchmark failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).map_err(|e| format!("unreadable Python output {line:?}: {e}"))
}

/// Uniformly random tokens: throughput does not depend on the text.
struct RandomTokens {
    vocab: u32,
}

impl Dataset for RandomTokens {
    fn train_batch(
        &self,
        rng: &mut ChaCha8Rng,
        b: usize,
        t: usize,
        dev: &Device,
    ) -> crate::train::Result<Batch> {
        let x: Vec<u32> = (0..b * t)
            .map(|_| rng.random_range(0..self.vocab))
            .collect();
        let y: Vec<u32> = (0..b * t)
            .map(|_| rng.random_range(0..self.vocab))
            .collect();
        Ok(Batch {
            x: Tensor::from_vec(x, (b, t), dev)?,
            y: Tensor::from_vec(y, b * t, dev)?,
            w: None,
            targets: b * t,
            target_bytes: (b * t) as u64,
        })
    }

    fn val_batches(
        &self,
        _b: usize,
        _t: usize,
        _n: usize,
        _dev: &Device,
    ) -> crate::train::Result<Vec<Batch>> {
        Ok(Vec::new())
    }

    fn fingerprint(&self) -> String {
        "random".into()
    }

    fn train_tokens(&self) -> usize {
        usize::MAX
    }
}

/// Forward + backward + AdamW on random tokens; `warmup` steps are not timed.
pub fn bench_train(
    preset: TrainPreset,
    steps: usize,
    warmup: usize,
    device: TrainDevice,
) -> crate::train::Result<TrainBench> {
    let (cfg, b, t) = preset.shape();
    let dev = device.open()?;
    crate::retain_freed_memory();
    let tc = TrainSection {
        batch_size: b,
        block_size: Some(t),
        lr: 1e-3,
        ..TrainSection::default()
    };
    let weights = init_weights(&cfg, 1337, &dev)?;
    let (_vars, model, mut opt) = trainable(&weights, &cfg, &tc, &dev)?;
    let data = RandomTokens {
        vocab: cfg.vocab_size as u32,
    };
    let mut timed = None;
    for step in 0..warmup + steps {
        if step == warmup {
            timed = Some(Instant::now());
        }
        let mut rng = step_rng(tc.seed, step);
        train_step(
            &model,
            &mut opt,
            &data,
            &mut rng,
            &tc,
            (b, t),
            0.0,
            tc.lr,
            step,
        )?;
    }
    let secs = timed.map(|t| t.elapsed().as_secs_f64()).unwrap_or(0.0);
    Ok(TrainBench {
        bench: "train",
        preset: preset.name(),
        tokens_per_s: (steps * b * t) as f64 / secs.max(1e-9),
        threads: crate::threads(),
        peak_rss_mb: peak_rss_mb(),
        steps,
        params: cfg.num_params(),
        device: device.to_string(),
        pytorch: None,
        ratio: None,
        pytorch_skipped: None,
        rounds: Vec::new(),
    })
}

/// [`bench_train`] `rounds` times, each followed by its PyTorch twin when
/// `python` is given: alternating, so that a drift of the machine's speed
/// (other load, clock changes) reaches both sides alike. With several
/// rounds the figures are the medians and the ratio is theirs.
pub fn bench_train_rounds(
    preset: TrainPreset,
    steps: usize,
    warmup: usize,
    device: TrainDevice,
    python: Option<&std::path::Path>,
    rounds: usize,
) -> crate::train::Result<TrainBench> {
    let mut rows = Vec::new();
    let mut last = None;
    let mut torch: Option<PytorchFigures> = None;
    let mut skipped = None;
    for _ in 0..rounds.max(1) {
        let r = bench_train(preset, steps, warmup, device)?;
        let py = match python {
            Some(p) if skipped.is_none() => {
                match bench_train_pytorch(p, preset, steps, warmup, device) {
                    Ok(f) => Some(f),
                    Err(why) => {
                        skipped = Some(why);
                        None
                    }
                }
            }
            _ => None,
        };
        rows.push(TrainRound {
            tokens_per_s: r.tokens_per_s,
            pytorch_tokens_per_s: py.as_ref().map(|f| f.tokens_per_s),
        });
        torch = py.or(torch);
        last = Some(r);
    }
    let mut r = last.expect("at least one round ran");
    r.tokens_per_s = median(rows.iter().map(|x| x.tokens_per_s).collect());
    if let Some(mut py) = torch {
        py.tokens_per_s = median(rows.iter().filter_map(|x| x.pytorch_tokens_per_s).collect());
        r.ratio = Some(r.tokens_per_s / py.tokens_per_s.max(1e-9));
        r.pytorch = Some(py);
    }
    r.pytorch_skipped = skipped;
    if rows.len() > 1 {
        r.rounds = rows;
    }
    Ok(r)
}

/// Peak resident memory of this process.
pub fn peak_rss_mb() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given; RUSAGE_SELF is valid.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    if rc != 0 {
        return 0.0;
    }
    // SAFETY: initialised by the successful call above.
    let usage = unsafe { usage.assume_init() };
    usage.ru_maxrss as f64 / 1024.0
}
