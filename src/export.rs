//! ONNX export: the GPT decoder (and later the moderation classifier) as
//! standard-op graphs written with prost, checked against candle through
//! ONNX Runtime before the file is put in place.

mod gpt;
mod graph;
#[allow(clippy::all, missing_docs, rustdoc::all)]
mod onnx {
    include!("export/onnx_proto.rs");
}

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use prost::Message;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub use gpt::{OPSET, decoder_model};
pub use graph::{Attr, Dim, Elem, GraphBuilder, model, tensor_f32, tensor_i64};
pub use onnx::ModelProto;

use crate::bundle::{Bundle, ONNX_FILE};
use crate::runtime::{self, OnnxDecoder, Provider, RuntimeConfig};

/// Largest difference allowed between ONNX Runtime's and candle's logits.
pub const PARITY_TOLERANCE: f32 = 1e-4;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("export: {0}")]
    Model(String),
    #[error(
        "export parity check failed: ONNX Runtime's logits differ from candle's by {diff:e} ({stage}), more than {PARITY_TOLERANCE:e}; the file was not written"
    )]
    Parity { stage: String, diff: f32 },
    #[error(transparent)]
    Runtime(#[from] runtime::Error),
    #[error(transparent)]
    Bundle(#[from] crate::bundle::Error),
    #[error(transparent)]
    Write(#[from] crate::fsio::WriteError),
}

pub type Result<T> = std::result::Result<T, Error>;

/// What `chatforge export` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ExportReport {
    pub path: PathBuf,
    pub bytes: usize,
    pub opset: i64,
    /// Largest |ONNX − candle| over the prefill logits.
    pub prefill_max_diff: f32,
    /// Largest |ONNX − candle| over the cached decode steps.
    pub decode_max_diff: f32,
    pub decode_steps: usize,
}

/// Exports `<dir>/model.onnx` from the bundle's weights, after checking it
/// against the candle model on a sample: a prefill of a two-row batch, then
/// several single-token decode steps through the KV cache.
pub fn export_bundle(dir: &Path) -> Result<ExportReport> {
    let bundle = Bundle::open(dir)?;
    let cfg = bundle.config.clone();
    let dev = Device::Cpu;
    let weights = bundle.weights(&dev)?;
    let proto = decoder_model(&cfg, &weights)?;
    let bytes = proto.encode_to_vec();
    let (model, _) = bundle.load(&dev)?;

    // The check runs on the CPU provider: it tests the graph, not a GPU's
    // reduced-precision kernels.
    let cpu = RuntimeConfig {
        providers: vec![Provider::Cpu],
        strict: true,
        intra_threads: 0,
    };
    let session = runtime::open_memory(&cpu, &bytes, "exported decoder")?;
    let mut decoder = OnnxDecoder::new(session, &cfg)?;

    let total = cfg.n_positions.min(16);
    let decode_steps = (total / 2).min(4);
    let prefill = total - decode_steps;
    let batch = 2;
    let mut rng = ChaCha8Rng::seed_from_u64(17);
    let ids: Vec<u32> = (0..batch * total)
        .map(|_| rng.random_range(0..cfg.vocab_size as u32))
        .collect();
    let ids_t = Tensor::from_vec(ids.clone(), (batch, total), &dev).map_err(model_err)?;
    let want = model
        .forward(&ids_t)
        .and_then(|t| t.flatten_all().map_err(Into::into))
        .and_then(|t| t.to_vec1::<f32>().map_err(Into::into))
        .map_err(model_err)?; // [batch, total, vocab]
    let v = cfg.vocab_size;
    let at = |row: usize, pos: usize| &want[(row * total + pos) * v..(row * total + pos + 1) * v];

    let rows = |range: std::ops::Range<usize>| -> Vec<i64> {
        (0..batch)
            .flat_map(|r| range.clone().map(move |p| (r, p)))
            .map(|(r, p)| ids[r * total + p] as i64)
            .collect()
    };
    let positions = |range: std::ops::Range<usize>| -> Vec<i64> {
        (0..batch)
            .flat_map(|_| range.clone().map(|p| p as i64))
            .collect()
    };
    let cache = decoder.empty_cache(batch)?;
    let (logits, mut cache) = decoder.forward(
        &rows(0..prefill),
        &positions(0..prefill),
        &vec![1; batch * prefill],
        cache,
    )?;
    let mut prefill_max_diff = 0f32;
    for r in 0..batch {
        for p in 0..prefill {
            let got = &logits[(r * prefill + p) * v..(r * prefill + p + 1) * v];
            prefill_max_diff = prefill_max_diff.max(max_diff(got, at(r, p)));
        }
    }
    if prefill_max_diff > PARITY_TOLERANCE || prefill_max_diff.is_nan() {
        return Err(Error::Parity {
            stage: "prefill".into(),
            diff: prefill_max_diff,
        });
    }
    let mut decode_max_diff = 0f32;
    for p in prefill..total {
        let (logits, next) = decoder.forward(
            &rows(p..p + 1),
            &positions(p..p + 1),
            &vec![1; batch * (p + 1)],
            cache,
        )?;
        cache = next;
        for r in 0..batch {
            decode_max_diff = decode_max_diff.max(max_diff(&logits[r * v..(r + 1) * v], at(r, p)));
        }
    }
    if decode_max_diff > PARITY_TOLERANCE || decode_max_diff.is_nan() {
        return Err(Error::Parity {
            stage: format!("{decode_steps} cached decode steps"),
            diff: decode_max_diff,
        });
    }
    let path = dir.join(ONNX_FILE);
    crate::fsio::write_atomic(&path, &bytes)?;
    Ok(ExportReport {
        path,
        bytes: bytes.len(),
        opset: OPSET,
        prefill_max_diff,
        decode_max_diff,
        decode_steps,
    })
}

fn model_err(e: impl std::fmt::Display) -> Error {
    Error::Model(e.to_string())
}

/// Largest |a − b| over the pairs; NaN if any pair is NaN.
pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, |m: f32, d| {
            if m.is_nan() || d.is_nan() {
                f32::NAN
            } else {
                m.max(d)
            }
        })
}
