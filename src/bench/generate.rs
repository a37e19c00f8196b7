//! `chatforge bench generate`: prefill latency and greedy decode throughput
//! through ONNX Runtime with the KV cache and with full recompute, beside
//! candle's forward pass, at batch 1 and 8.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Device, Tensor};
use candle_nn::VarBuilder;
use prost::Message;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::median;
use crate::bundle::{Bundle, ONNX_FILE, Precision};
use crate::export::decoder_model_in;
use crate::model::{Gpt, GptConfig, init_weights};
use crate::runtime::sampling::argmax;
use crate::runtime::{self, Logits, OnnxDecoder, RuntimeConfig};

/// Model shapes to measure without a trained bundle (random weights: speed
/// does not depend on them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GeneratePreset {
    /// models/small.toml: 6 layers, 8 heads, 320 wide, context 256, vocab 8,192.
    Small,
    /// 6 layers, 6 heads, 384 wide, context 256, vocab 8,192 (the reference).
    #[value(name = "6x384")]
    L6W384,
}

impl GeneratePreset {
    fn config(self) -> GptConfig {
        match self {
            GeneratePreset::Small => GptConfig::sized(8192, 256, 320, 6, 8),
            GeneratePreset::L6W384 => GptConfig::sized(8192, 256, 384, 6, 6),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct DecodeFigures {
    pub batch: usize,
    /// Prompt forward pass plus choosing the first token, median of runs.
    pub prefill_first_token_ms: f64,
    /// New tokens per second over all rows, KV cache (median of 3 runs).
    pub cached_tokens_per_s: f64,
    /// The same without the cache: every step re-runs the whole sequence.
    pub recompute_tokens_per_s: f64,
}

/// The int8 graph (`model.int8.onnx`) on the same prompts (`--int8`).
#[derive(Debug, Serialize)]
pub struct Int8Figures {
    pub batch: usize,
    pub prefill_first_token_ms: f64,
    pub cached_tokens_per_s: f64,
}

#[derive(Debug, Serialize)]
pub struct GenerateBench {
    pub bench: &'static str,
    pub model: String,
    pub provider: &'static str,
    pub params: usize,
    pub threads: usize,
    pub prompt_tokens: usize,
    pub new_tokens: usize,
    pub batches: Vec<DecodeFigures>,
    /// At 256 tokens of context (or the model's context): cached vs recompute.
    pub long_context: usize,
    pub long_cached_tokens_per_s: f64,
    pub long_recompute_tokens_per_s: f64,
    pub long_speedup: f64,
    /// candle's forward (no cache) at batch 1, for comparison.
    pub candle_recompute_tokens_per_s: f64,
    pub peak_rss_mb: f64,
    /// The int8 graph at batch 1 and 8 (`--int8`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub int8: Option<Vec<Int8Figures>>,
    /// Python onnxruntime over the same model file in the same run
    /// (`--compare-python`): batch 1, KV cache, greedy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub python_ort: Option<PythonOrtFigures>,
    /// Batch-1 cached tokens/s ÷ python_ort.cached_tokens_per_s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio: Option<f64>,
    /// Batch-1 cached tokens/s ÷ python_ort.transformers.cached_tokens_per_s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio_transformers: Option<f64>,
    /// Why the Python side did not run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub python_skipped: Option<String>,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct PythonOrtFigures {
    pub cached_tokens_per_s: f64,
    pub prefill_first_token_ms: f64,
    pub onnxruntime: String,
    pub threads: usize,
    /// Hugging Face `generate` on the same shape, where that Python has
    /// torch and transformers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transformers: Option<TransformersFigures>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transformers_skipped: Option<String>,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct TransformersFigures {
    pub cached_tokens_per_s: f64,
    pub prefill_first_token_ms: f64,
    pub version: String,
    pub torch: String,
}

/// The Python onnxruntime loop run by `--compare-python`.
const ORT_SCRIPT: &str = include_str!("../../scripts/bench_generate_ort.py");

/// Runs `model` through Python onnxruntime with `python`; `Err` says why it
/// could not, for printing.
fn bench_generate_python(
    python: &Path,
    model: &Path,
    prompt_tokens: usize,
    new_tokens: usize,
    threads: usize,
    ctx: usize,
) -> std::result::Result<PythonOrtFigures, String> {
    let args = [
        "--ctx".to_string(),
        ctx.to_string(),
        "--model".to_string(),
        model.display().to_string(),
        "--prompt-tokens".to_string(),
        prompt_tokens.to_string(),
        "--new-tokens".to_string(),
        new_tokens.to_string(),
        "--threads".to_string(),
        threads.to_string(),
    ];
    super::run_python_bench(
        python,
        "onnxruntime",
        "bench_generate_ort.py",
        ORT_SCRIPT,
        &args,
    )
}

/// Batch sizes measured.
const BATCHES: [usize; 2] = [1, 8];

/// Each row's greedy next token from its last position's logits.
fn argmax_rows(logits: &[f32], vocab: usize) -> Vec<i64> {
    logits
        .chunks_exact(vocab)
        .map(|row| i64::from(argmax(row)))
        .collect()
}

/// Greedy decoding of `new` tokens after `prompt` (`[batch, len]`);
/// returns (prefill + first token seconds, seconds for the remaining tokens).
fn run(
    dec: &mut OnnxDecoder,
    prompt: &[i64],
    batch: usize,
    new: usize,
    cached: bool,
) -> runtime::Result<(f64, f64)> {
    let vocab = dec.config().vocab_size;
    let len = prompt.len() / batch;
    let t0 = Instant::now();
    let cache = dec.empty_cache(batch)?;
    let positions: Vec<i64> = (0..batch).flat_map(|_| 0..len as i64).collect();
    let (logits, mut cache) = dec.forward(
        prompt,
        &positions,
        &vec![1; batch * len],
        cache,
        Logits::Last,
    )?;
    let mut next = argmax_rows(&logits, vocab);
    let prefill = t0.elapsed().as_secs_f64();
    let mut seqs: Vec<Vec<i64>> = (0..batch)
        .map(|r| prompt[r * len..(r + 1) * len].to_vec())
        .collect();
    let t1 = Instant::now();
    for step in 1..new {
        for (s, &t) in seqs.iter_mut().zip(&next) {
            s.push(t);
        }
        let total = len + step;
        if cached {
            let pos = vec![total as i64 - 1; batch];
            let (logits, c) =
                dec.forward(&next, &pos, &vec![1; batch * total], cache, Logits::Last)?;
            cache = c;
            next = argmax_rows(&logits, vocab);
        } else {
            let ids: Vec<i64> = seqs.iter().flatten().copied().collect();
            let pos: Vec<i64> = (0..batch).flat_map(|_| 0..total as i64).collect();
            let empty = dec.empty_cache(batch)?;
            let (logits, _) =
                dec.forward(&ids, &pos, &vec![1; batch * total], empty, Logits::Last)?;
            next = argmax_rows(&logits, vocab);
        }
    }
    Ok((prefill, t1.elapsed().as_secs_f64()))
}

/// (prefill + first token ms, median of 5; cached decode tokens/s over all
/// rows, median of 3) after one warm-up.
fn cached_figures(
    dec: &mut OnnxDecoder,
    prompt: &[i64],
    batch: usize,
    new_tokens: usize,
) -> runtime::Result<(f64, f64)> {
    run(dec, prompt, batch, 4, true)?; // warm-up
    let prefills: Vec<f64> = (0..5)
        .map(|_| run(dec, prompt, batch, 1, true).map(|r| r.0))
        .collect::<runtime::Result<_>>()?;
    // Median of three: single runs vary by ±15% on a shared 2-core VM.
    let cached: Vec<f64> = (0..3)
        .map(|_| run(dec, prompt, batch, new_tokens, true).map(|r| r.1))
        .collect::<runtime::Result<_>>()?;
    let n = (batch * (new_tokens - 1)) as f64;
    Ok((median(prefills) * 1e3, n / median(cached)))
}

fn random_prompt(rng: &mut ChaCha8Rng, n: usize, vocab: usize) -> Vec<i64> {
    (0..n).map(|_| rng.random_range(0..vocab as i64)).collect()
}

/// Measures a bundle's `model.onnx`, or a preset shape with random weights;
/// with `int8`, also its int8 graph; with `python`, also that Python's
/// onnxruntime on the same fp32 file.
pub fn bench_generate(
    bundle: Option<&Path>,
    preset: Option<GeneratePreset>,
    runtime_cfg: &RuntimeConfig,
    prompt_tokens: usize,
    new_tokens: usize,
    int8: bool,
    python: Option<&Path>,
) -> crate::export::Result<GenerateBench> {
    let dev = Device::Cpu;
    // Keeps a preset's model file for the Python side until the end.
    let scratch = tempfile::tempdir()
        .map_err(|e| crate::export::Error::Model(format!("temporary folder: {e}")))?;
    let (cfg, weights, model_name, model_path, int8_model) = match (bundle, preset) {
        (Some(dir), _) => {
            let b = Bundle::open(dir)?;
            let w = b.weights(&dev)?;
            let q = int8
                .then(|| Precision::Int8.graph_in(dir))
                .transpose()
                .map_err(crate::export::Error::Model)?;
            let name = dir.display().to_string();
            (b.config.clone(), w, name, dir.join(ONNX_FILE), q)
        }
        (None, p) => {
            let p = p.unwrap_or(GeneratePreset::L6W384);
            let cfg = p.config();
            let w = init_weights(&cfg, 1, &dev)
                .map_err(|e| crate::export::Error::Model(e.to_string()))?;
            let write = |precision: Precision| -> crate::export::Result<PathBuf> {
                let path = scratch.path().join(precision.file_name());
                let bytes = decoder_model_in(&cfg, &w, precision)?.encode_to_vec();
                crate::fsio::write_atomic(&path, &bytes)?;
                Ok(path)
            };
            let path = write(Precision::Fp32)?;
            let q = int8.then(|| write(Precision::Int8)).transpose()?;
            (cfg, w, format!("{p:?}"), path, q)
        }
    };
    let loaded = runtime::open_file(runtime_cfg, &model_path)?;
    let provider = loaded.provider.name();
    let mut dec = OnnxDecoder::new(loaded, &cfg)?;
    let vocab = cfg.vocab_size;
    let new_tokens = new_tokens
        .min(cfg.n_positions.saturating_sub(prompt_tokens))
        .max(2);
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mut batches = Vec::new();
    let prompts: Vec<Vec<i64>> = BATCHES
        .iter()
        .map(|&b| random_prompt(&mut rng, b * prompt_tokens, vocab))
        .collect();
    for (batch, prompt) in BATCHES.into_iter().zip(&prompts) {
        let (prefill_first_token_ms, cached_tokens_per_s) =
            cached_figures(&mut dec, prompt, batch, new_tokens)?;
        let (_, recompute) = run(&mut dec, prompt, batch, new_tokens, false)?;
        batches.push(DecodeFigures {
            batch,
            prefill_first_token_ms,
            cached_tokens_per_s,
            recompute_tokens_per_s: (batch * (new_tokens - 1)) as f64 / recompute,
        });
    }
    let int8 = match int8_model {
        None => None,
        Some(path) => {
            let mut q = OnnxDecoder::new(runtime::open_file(runtime_cfg, &path)?, &cfg)?;
            let mut figures = Vec::new();
            for (batch, prompt) in BATCHES.into_iter().zip(&prompts) {
                let (prefill_first_token_ms, cached_tokens_per_s) =
                    cached_figures(&mut q, prompt, batch, new_tokens)?;
                figures.push(Int8Figures {
                    batch,
                    prefill_first_token_ms,
                    cached_tokens_per_s,
                });
            }
            Some(figures)
        }
    };
    // Long context: the last 64 tokens of a full window.
    let long = cfg.n_positions.min(256);
    let tail = 64.min(long / 2);
    let prompt = random_prompt(&mut rng, long - tail, vocab);
    let (_, cached) = run(&mut dec, &prompt, 1, tail, true)?;
    let (_, recompute) = run(&mut dec, &prompt, 1, tail, false)?;
    let n = (tail - 1) as f64;

    // candle: the training model's forward, re-run over the sequence.
    let vb = VarBuilder::from_tensors(weights, candle_core::DType::F32, &dev);
    let model = Gpt::new(vb, &cfg).map_err(|e| crate::export::Error::Model(e.to_string()))?;
    let mut ids: Vec<u32> = random_prompt(&mut rng, prompt_tokens, vocab)
        .iter()
        .map(|&t| t as u32)
        .collect();
    let steps = 32.min(new_tokens);
    let t = Instant::now();
    for _ in 0..steps {
        let x = Tensor::from_vec(ids.clone(), (1, ids.len()), &dev)
            .map_err(|e| crate::export::Error::Model(e.to_string()))?;
        let logits = model
            .forward(&x)
            .and_then(|l| l.flatten_all().map_err(Into::into))
            .and_then(|l| l.to_vec1::<f32>().map_err(Into::into))
            .map_err(|e| crate::export::Error::Model(e.to_string()))?;
        // candle returns every position's logits: the last one's next token.
        ids.push(argmax(&logits[logits.len().saturating_sub(vocab)..]));
    }
    let candle = steps as f64 / t.elapsed().as_secs_f64();
    let threads = runtime_cfg.intra_threads_in_use();
    let (python_ort, python_skipped) = match python {
        None => (None, None),
        Some(py) => {
            match bench_generate_python(
                py,
                &model_path,
                prompt_tokens,
                new_tokens,
                threads,
                cfg.n_positions,
            ) {
                Ok(f) => (Some(f), None),
                Err(why) => {
                    eprintln!("Python onnxruntime comparison skipped: {why}");
                    (None, Some(why))
                }
            }
        }
    };
    let ratio = python_ort
        .as_ref()
        .map(|p| batches[0].cached_tokens_per_s / p.cached_tokens_per_s.max(1e-9));
    let ratio_transformers = python_ort
        .as_ref()
        .and_then(|p| p.transformers.as_ref())
        .map(|t| batches[0].cached_tokens_per_s / t.cached_tokens_per_s.max(1e-9));

    Ok(GenerateBench {
        bench: "generate",
        model: model_name,
        provider,
        params: cfg.num_params(),
        threads,
        prompt_tokens,
        new_tokens,
        batches,
        long_context: long,
        long_cached_tokens_per_s: n / cached,
        long_recompute_tokens_per_s: n / recompute,
        long_speedup: recompute / cached,
        candle_recompute_tokens_per_s: candle,
        peak_rss_mb: super::peak_rss_mb(),
        int8,
        python_ort,
        ratio,
        ratio_transformers,
        python_skipped,
    })
}
