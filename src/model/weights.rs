//! `model.safetensors` with Hugging Face GPT-2 names and layouts.
//!
//! HF checkpoints come in two spellings: `wte.weight` (saved from
//! `GPT2Model`, as on the hub) and `transformer.wte.weight` (saved from
//! `GPT2LMHeadModel`). Both load; chatforge writes the first, which
//! `GPT2LMHeadModel.from_pretrained` also accepts.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use super::{Error, GptConfig, Result};

/// Named weights, keyed by HF GPT-2 tensor name.
pub type Weights = HashMap<String, Tensor>;

/// Every parameter's name and shape, in a stable order (Conv1D as `[in, out]`).
pub fn parameter_shapes(cfg: &GptConfig) -> Vec<(String, Vec<usize>)> {
    let (c, f) = (cfg.n_embd, cfg.inner_dim());
    let mut out = vec![
        ("wte.weight".to_string(), vec![cfg.vocab_size, c]),
        ("wpe.weight".to_string(), vec![cfg.n_positions, c]),
    ];
    for i in 0..cfg.n_layer {
        let p = |s: &str| format!("h.{i}.{s}");
        out.extend([
            (p("ln_1.weight"), vec![c]),
            (p("ln_1.bias"), vec![c]),
            (p("attn.c_attn.weight"), vec![c, 3 * c]),
            (p("attn.c_attn.bias"), vec![3 * c]),
            (p("attn.c_proj.weight"), vec![c, c]),
            (p("attn.c_proj.bias"), vec![c]),
            (p("ln_2.weight"), vec![c]),
            (p("ln_2.bias"), vec![c]),
            (p("mlp.c_fc.weight"), vec![c, f]),
            (p("mlp.c_fc.bias"), vec![f]),
            (p("mlp.c_proj.weight"), vec![f, c]),
            (p("mlp.c_proj.bias"), vec![c]),
        ]);
    }
    out.push(("ln_f.weight".to_string(), vec![c]));
    out.push(("ln_f.bias".to_string(), vec![c]));
    out
}

/// GPT-2's initialisation from a seed: N(0, 0.02) for matrices, residual
/// projections scaled by 1/√(2·n_layer), zero biases, unit LayerNorm gains.
pub fn init_weights(cfg: &GptConfig, seed: u64, dev: &Device) -> Result<Weights> {
    cfg.validate()?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let proj_std = 0.02 / (2.0 * cfg.n_layer as f32).sqrt();
    let mut out = Weights::new();
    for (name, shape) in parameter_shapes(cfg) {
        let n: usize = shape.iter().product();
        let t = if name.ends_with(".bias") {
            Tensor::zeros(shape, DType::F32, dev)?
        } else if name.contains("ln_") {
            Tensor::ones(shape, DType::F32, dev)?
        } else {
            let std = if name.ends_with("c_proj.weight") {
                proj_std
            } else {
                0.02
            };
            let normal = Normal::new(0.0f32, std).map_err(|e| Error::Config(e.to_string()))?;
            let data: Vec<f32> = (0..n).map(|_| normal.sample(&mut rng)).collect();
            Tensor::from_vec(data, shape, dev)?
        };
        out.insert(name, t);
    }
    Ok(out)
}

/// Loads and checks a GPT-2 weights file: every expected tensor present with
/// its exact shape, nothing unexpected, converted to f32.
pub fn load_safetensors(path: &Path, cfg: &GptConfig, dev: &Device) -> Result<Weights> {
    let fail = |reason: String| Error::Weights {
        path: path.display().to_string(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(crate::fsio::io_err(path))?;
    let raw = candle_core::safetensors::load_buffer(&bytes, dev)
        .map_err(|e| fail(format!("not a readable safetensors file ({e})")))?;
    let mut named = BTreeMap::new();
    for (name, t) in raw {
        let name = name
            .strip_prefix("transformer.")
            .unwrap_or(&name)
            .to_string();
        // Causal-mask buffers of old checkpoints and the tied head carry no parameters.
        if name.ends_with(".attn.bias") && t.rank() != 1
            || name.ends_with(".attn.masked_bias")
            || name == "lm_head.weight"
        {
            continue;
        }
        named.insert(name, t);
    }
    let mut out = Weights::new();
    let mut missing = Vec::new();
    for (name, shape) in parameter_shapes(cfg) {
        match named.remove(&name) {
            None => missing.push(name),
            Some(t) if t.dims() != shape.as_slice() => {
                return Err(fail(format!(
                    "{name} has shape {:?}, config.json implies {shape:?}",
                    t.dims()
                )));
            }
            Some(t) => {
                out.insert(name, t.to_dtype(DType::F32)?);
            }
        }
    }
    if !missing.is_empty() {
        return Err(fail(format!("missing tensors: {}", missing.join(", "))));
    }
    if !named.is_empty() {
        let extra: Vec<_> = named.keys().cloned().collect();
        return Err(fail(format!("unexpected tensors: {}", extra.join(", "))));
    }
    Ok(out)
}

/// Writes weights atomically with the `{"format": "pt"}` metadata that
/// `transformers` checks for.
pub fn save_safetensors(weights: &Weights, path: &Path) -> Result<()> {
    let sorted: BTreeMap<&String, &Tensor> = weights.iter().collect();
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    let bytes = safetensors::serialize(sorted, Some(metadata)).map_err(|e| Error::Weights {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    Ok(crate::fsio::write_atomic(path, &bytes)?)
}
