//! The GPT-2 decoder with a KV cache as standard ONNX ops (opset 17), with
//! Hugging Face optimum's input/output names so other runtimes can use it.
//! In [`Precision::Int8`] every matrix product reads int8 weights and
//! quantizes its input on the fly (`DynamicQuantizeLinear` →
//! `MatMulInteger`), the pattern ONNX Runtime's CPU provider fuses into one
//! int8 GEMM: batch-1 decoding is bound by reading the weights, and they
//! are 4× smaller.

use candle_core::Tensor;

use super::graph::{Attr, Dim, Elem, GraphBuilder, model, tensor_f32, tensor_i8, tensor_i64};
use super::onnx::ModelProto;
use super::{Error, Result};
use crate::bundle::Precision;
use crate::model::{Activation, GptConfig, Weights};

pub const OPSET: i64 = 17;
/// The decoder's optional input (an overridable initializer, default 0):
/// how many of the last positions get logits, 0 for all.
pub const LOGITS_TO_KEEP: &str = "logits_to_keep";

/// Value added to attention scores where attention is not allowed. Finite
/// (not −∞) so a row with nothing to attend to, such as a left-padding
/// position, gives a uniform softmax instead of NaN.
const MASKED: f32 = -1.0e9;

fn weight(weights: &Weights, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
    let t: &Tensor = weights
        .get(name)
        .ok_or_else(|| Error::Model(format!("weights have no tensor {name}")))?;
    let dims = t.dims().to_vec();
    let data = t
        .to_dtype(candle_core::DType::F32)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(|e| Error::Model(format!("{name}: {e}")))?;
    Ok((dims, data))
}

fn init(g: &mut GraphBuilder, weights: &Weights, name: &str) -> Result<String> {
    let (dims, data) = weight(weights, name)?;
    Ok(g.initializer(tensor_f32(name, &dims, &data)))
}

struct Shared {
    /// Additive attention bias `[batch, 1, seq, total]`.
    bias: String,
    /// `[batch, seq, n_head, head_dim]` for Reshape.
    heads_shape: String,
    /// `[batch·seq, n_embd]` for Reshape.
    merge_shape: String,
    split_sizes: String,
    scale: String,
    precision: Precision,
}

fn layer_norm(
    g: &mut GraphBuilder,
    w: &Weights,
    x: &str,
    prefix: &str,
    eps: f64,
) -> Result<String> {
    let gamma = init(g, w, &format!("{prefix}.weight"))?;
    let beta = init(g, w, &format!("{prefix}.bias"))?;
    Ok(g.op(
        "LayerNormalization",
        &[x, &gamma, &beta],
        vec![Attr::Int("axis", -1), Attr::Float("epsilon", eps as f32)],
    ))
}

/// Largest int8 weight magnitude. 7 bits, not 8: on x86 CPUs without VNNI
/// ONNX Runtime multiplies uint8 activations by int8 weights with
/// `vpmaddubsw`, whose pairwise int16 sums saturate for |w| near 127
/// (onnxruntime's own quantizer offers `reduce_range` for the same reason).
const INT8_WEIGHT_MAX: f32 = 63.0;

/// Symmetric per-column quantization of a row-major `[k, n]` matrix:
/// int8 values and one scale per column (per output channel).
pub fn quantize_columns(w: &[f32], k: usize, n: usize) -> (Vec<i8>, Vec<f32>) {
    let mut amax = vec![0f32; n];
    for row in w.chunks_exact(n).take(k) {
        for (m, &v) in amax.iter_mut().zip(row) {
            *m = m.max(v.abs());
        }
    }
    let scales: Vec<f32> = amax
        .iter()
        .map(|&m| if m > 0.0 { m / INT8_WEIGHT_MAX } else { 1.0 })
        .collect();
    let q = w
        .chunks_exact(n)
        .take(k)
        .flat_map(|row| {
            row.iter()
                .zip(&scales)
                .map(|(&v, &s)| (v / s).round().clamp(-INT8_WEIGHT_MAX, INT8_WEIGHT_MAX) as i8)
        })
        .collect();
    (q, scales)
}

/// x @ W for a row-major `[k, n]` weight named `name`, in `precision`.
fn matmul(
    g: &mut GraphBuilder,
    x: &str,
    name: &str,
    w: &[f32],
    k: usize,
    n: usize,
    precision: Precision,
) -> String {
    match precision {
        Precision::Fp32 => {
            let weight = g.initializer(tensor_f32(name, &[k, n], w));
            g.op("MatMul", &[x, &weight], vec![])
        }
        Precision::Int8 => {
            let (q, scales) = quantize_columns(w, k, n);
            let wq = g.initializer(tensor_i8(&format!("{name}_quantized"), &[k, n], &q));
            let ws = g.initializer(tensor_f32(&format!("{name}_scale"), &[n], &scales));
            let wz = g.initializer(tensor_i8(&format!("{name}_zero_point"), &[n], &vec![0; n]));
            let xq = g.op_n("DynamicQuantizeLinear", &[x], 3, vec![]);
            let scale = g.op("Mul", &[&xq[1], &ws], vec![]);
            let y = g.op("MatMulInteger", &[&xq[0], &wq, &xq[2], &wz], vec![]);
            let y = g.op("Cast", &[&y], vec![Attr::Int("to", 1)]); // float
            g.op("Mul", &[&y, &scale], vec![])
        }
    }
}

/// x @ W + b with a Conv1D weight stored `[in, out]`.
fn conv1d(
    g: &mut GraphBuilder,
    w: &Weights,
    x: &str,
    prefix: &str,
    precision: Precision,
) -> Result<String> {
    let name = format!("{prefix}.weight");
    let (dims, data) = weight(w, &name)?;
    let [k, n] = dims[..] else {
        return Err(Error::Model(format!("{name} has shape {dims:?}, not 2-D")));
    };
    let bias = init(g, w, &format!("{prefix}.bias"))?;
    let y = matmul(g, x, &name, &data, k, n, precision);
    Ok(g.op("Add", &[&y, &bias], vec![]))
}

fn gelu(g: &mut GraphBuilder, x: &str, act: Activation) -> String {
    let half = g.const_f32("half", &[], &[0.5]);
    let one = g.const_f32("one", &[], &[1.0]);
    let inner = match act {
        Activation::GeluTanh => {
            // tanh(√(2/π)·x·(1 + 0.044715·x²)): the arrangement ONNX
            // Runtime's FastGelu fusion recognises, so it runs as one kernel.
            let c = g.const_f32("gelu_c", &[], &[(2.0f32 / std::f32::consts::PI).sqrt()]);
            let k = g.const_f32("gelu_k", &[], &[0.044715]);
            let kx = g.op("Mul", &[x, &k], vec![]);
            let kx2 = g.op("Mul", &[&kx, x], vec![]);
            let p = g.op("Add", &[&kx2, &one], vec![]);
            let cx = g.op("Mul", &[x, &c], vec![]);
            let arg = g.op("Mul", &[&cx, &p], vec![]);
            g.op("Tanh", &[&arg], vec![])
        }
        Activation::GeluErf => {
            let r = g.const_f32("inv_sqrt2", &[], &[std::f32::consts::FRAC_1_SQRT_2]);
            let arg = g.op("Mul", &[x, &r], vec![]);
            g.op("Erf", &[&arg], vec![])
        }
    };
    let onep = g.op("Add", &[&inner, &one], vec![]);
    let hx = g.op("Mul", &[x, &half], vec![]);
    g.op("Mul", &[&hx, &onep], vec![])
}

/// The `[cols, rows]` transpose of a row-major `[rows, cols]` matrix.
fn transpose(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0f32; m.len()];
    for (r, row) in m.chunks_exact(cols).enumerate().take(rows) {
        for (c, &v) in row.iter().enumerate() {
            t[c * rows + r] = v;
        }
    }
    t
}

/// Causal + padding mask as an additive bias, built once from the shapes of
/// `input_ids` (seq) and `attention_mask` (past + seq).
fn attention_bias(g: &mut GraphBuilder) -> String {
    let one_idx = g.const_i64("idx1", &[], &[1]);
    let zero = g.const_i64("zero", &[], &[0]);
    let step = g.const_i64("one", &[], &[1]);
    let ids_shape = g.op("Shape", &["input_ids"], vec![]);
    let seq = g.op(
        "Gather",
        &[&ids_shape, &one_idx],
        vec![Attr::Int("axis", 0)],
    );
    let mask_shape = g.op("Shape", &["attention_mask"], vec![]);
    let total = g.op(
        "Gather",
        &[&mask_shape, &one_idx],
        vec![Attr::Int("axis", 0)],
    );
    let past = g.op("Sub", &[&total, &seq], vec![]);
    // Query i sits at absolute position past + i and may see keys j ≤ past + i.
    let qpos = g.op("Range", &[&past, &total, &step], vec![]);
    let kpos = g.op("Range", &[&zero, &total, &step], vec![]);
    let ax1 = g.const_i64("axes1", &[1], &[1]);
    let ax0 = g.const_i64("axes0", &[1], &[0]);
    let q2 = g.op("Unsqueeze", &[&qpos, &ax1], vec![]);
    let k2 = g.op("Unsqueeze", &[&kpos, &ax0], vec![]);
    let causal = g.op("LessOrEqual", &[&k2, &q2], vec![]); // [seq, total]
    let keep = g.op("Cast", &["attention_mask"], vec![Attr::Int("to", 9)]); // bool
    let ax12 = g.const_i64("axes12", &[2], &[1, 2]);
    let keep4 = g.op("Unsqueeze", &[&keep, &ax12], vec![]); // [b, 1, 1, total]
    let allowed = g.op("And", &[&causal, &keep4], vec![]); // [b, 1, seq, total]
    let open = g.const_f32("open", &[], &[0.0]);
    let closed = g.const_f32("closed", &[], &[MASKED]);
    g.op("Where", &[&allowed, &open, &closed], vec![])
}

fn attention(
    g: &mut GraphBuilder,
    w: &Weights,
    s: &Shared,
    x: &str,
    layer: usize,
) -> Result<String> {
    let p = format!("h.{layer}.attn");
    let qkv = conv1d(g, w, x, &format!("{p}.c_attn"), s.precision)?;
    let parts = g.op_n(
        "Split",
        &[&qkv, &s.split_sizes],
        3,
        vec![Attr::Int("axis", 1)],
    );
    let heads = |g: &mut GraphBuilder, t: &str| {
        let r = g.op("Reshape", &[t, &s.heads_shape], vec![]);
        g.op(
            "Transpose",
            &[&r],
            vec![Attr::Ints("perm", vec![0, 2, 1, 3])],
        )
    };
    let q = heads(g, &parts[0]);
    let k = heads(g, &parts[1]);
    let v = heads(g, &parts[2]);
    let present_k = format!("present.{layer}.key");
    let present_v = format!("present.{layer}.value");
    let past_k = format!("past_key_values.{layer}.key");
    let past_v = format!("past_key_values.{layer}.value");
    g.op_into(
        "Concat",
        &[&past_k, &k],
        &[&present_k],
        vec![Attr::Int("axis", 2)],
    );
    g.op_into(
        "Concat",
        &[&past_v, &v],
        &[&present_v],
        vec![Attr::Int("axis", 2)],
    );
    let kt = g.op(
        "Transpose",
        &[&present_k],
        vec![Attr::Ints("perm", vec![0, 1, 3, 2])],
    );
    let scores = g.op("MatMul", &[&q, &kt], vec![]);
    let scores = g.op("Mul", &[&scores, &s.scale], vec![]);
    let scores = g.op("Add", &[&scores, &s.bias], vec![]);
    let probs = g.op("Softmax", &[&scores], vec![Attr::Int("axis", -1)]);
    let y = g.op("MatMul", &[&probs, &present_v], vec![]);
    let y = g.op(
        "Transpose",
        &[&y],
        vec![Attr::Ints("perm", vec![0, 2, 1, 3])],
    );
    let y = g.op("Reshape", &[&y, &s.merge_shape], vec![]);
    conv1d(g, w, &y, &format!("{p}.c_proj"), s.precision)
}

/// Builds the fp32 decoder graph. Weights must hold every GPT-2 tensor of
/// `cfg`.
pub fn decoder_model(cfg: &GptConfig, weights: &Weights) -> Result<ModelProto> {
    decoder_model_in(cfg, weights, Precision::Fp32)
}

/// Builds the decoder graph with its matrix products in `precision`.
pub fn decoder_model_in(
    cfg: &GptConfig,
    weights: &Weights,
    precision: Precision,
) -> Result<ModelProto> {
    cfg.validate().map_err(|e| Error::Model(e.to_string()))?;
    let act = cfg.activation().map_err(|e| Error::Model(e.to_string()))?;
    let (c, h, d) = (cfg.n_embd, cfg.n_head, cfg.head_dim());
    let mut g = GraphBuilder::new();
    let batch = Dim::from("batch_size");
    let seq = Dim::from("sequence_length");
    let past = Dim::from("past_sequence_length");
    let total = Dim::from("total_sequence_length");
    g.input("input_ids", Elem::I64, &[batch.clone(), seq.clone()]);
    g.input("attention_mask", Elem::I64, &[batch.clone(), total.clone()]);
    g.input("position_ids", Elem::I64, &[batch.clone(), seq.clone()]);
    for i in 0..cfg.n_layer {
        for kind in ["key", "value"] {
            g.input(
                &format!("past_key_values.{i}.{kind}"),
                Elem::F32,
                &[batch.clone(), h.into(), past.clone(), d.into()],
            );
        }
    }

    let wte = init(&mut g, weights, "wte.weight")?;
    let wpe = init(&mut g, weights, "wpe.weight")?;
    let tok = g.op("Gather", &[&wte, "input_ids"], vec![Attr::Int("axis", 0)]);
    let pos = g.op(
        "Gather",
        &[&wpe, "position_ids"],
        vec![Attr::Int("axis", 0)],
    );
    let x3 = g.op("Add", &[&tok, &pos], vec![]);
    // The residual stream stays 2-D, [batch·seq, n_embd], so every
    // MatMul + bias becomes one Gemm in ONNX Runtime.
    let merge_shape = g.const_i64("merge_shape", &[2], &[-1, c as i64]);
    let mut x = g.op("Reshape", &[&x3, &merge_shape], vec![]);
    let ids_shape = g.op("Shape", &["input_ids"], vec![]);
    let hd = g.const_i64("head_dims", &[2], &[h as i64, d as i64]);
    let heads_shape = g.op("Concat", &[&ids_shape, &hd], vec![Attr::Int("axis", 0)]);

    let shared = Shared {
        bias: attention_bias(&mut g),
        heads_shape,
        merge_shape,
        split_sizes: g.const_i64("split", &[3], &[c as i64; 3]),
        scale: g.const_f32("scale", &[], &[1.0 / (d as f32).sqrt()]),
        precision,
    };
    let eps = cfg.layer_norm_epsilon;
    for i in 0..cfg.n_layer {
        let ln1 = layer_norm(&mut g, weights, &x, &format!("h.{i}.ln_1"), eps)?;
        let a = attention(&mut g, weights, &shared, &ln1, i)?;
        x = g.op("Add", &[&x, &a], vec![]);
        let ln2 = layer_norm(&mut g, weights, &x, &format!("h.{i}.ln_2"), eps)?;
        let fc = conv1d(&mut g, weights, &ln2, &format!("h.{i}.mlp.c_fc"), precision)?;
        let act_out = gelu(&mut g, &fc, act);
        let m = conv1d(
            &mut g,
            weights,
            &act_out,
            &format!("h.{i}.mlp.c_proj"),
            precision,
        )?;
        x = g.op("Add", &[&x, &m], vec![]);
    }
    // Generation needs the next token's logits only: `logits_to_keep` = k
    // keeps the last k positions (0, the default, keeps every one, as
    // optimum's export does). The head is the widest product of a small
    // model, and a prompt's other positions made most of a prefill's work
    // and memory.
    g.input(LOGITS_TO_KEEP, Elem::I64, &[1usize.into()]);
    g.initializer(tensor_i64(LOGITS_TO_KEEP, &[1], &[0]));
    let width = g.const_i64("width", &[1], &[c as i64]);
    let rows_shape = g.op("Concat", &[&ids_shape, &width], vec![Attr::Int("axis", 0)]);
    let rows = g.op("Reshape", &[&x, &rows_shape], vec![]);
    let from = g.op("Neg", &[LOGITS_TO_KEEP], vec![]);
    let to_end = g.const_i64("to_end", &[1], &[i64::MAX]);
    let seq_axis = g.const_i64("seq_axis", &[1], &[1]);
    let kept = g.op("Slice", &[&rows, &from, &to_end, &seq_axis], vec![]);
    let x = g.op("Reshape", &[&kept, &shared.merge_shape], vec![]);
    let xf = layer_norm(&mut g, weights, &x, "ln_f", eps)?;
    let logits_flat = match precision {
        // The head is tied to wte: Gemm with transB reads wte in place
        // instead of storing a transposed copy.
        Precision::Fp32 => g.op("Gemm", &[&xf, &wte], vec![Attr::Int("transB", 1)]),
        // MatMulInteger has no transpose: the head keeps its own int8 copy
        // of wteᵀ, a quarter of wte's size.
        Precision::Int8 => {
            let (_, emb) = weight(weights, "wte.weight")?;
            let wt = transpose(&emb, cfg.vocab_size, c);
            matmul(
                &mut g,
                &xf,
                "lm_head.weight",
                &wt,
                c,
                cfg.vocab_size,
                precision,
            )
        }
    };
    let batch_shape = g.op("Shape", &["input_ids"], vec![Attr::Int("end", 1)]);
    let kept_vocab = g.const_i64("kept_vocab", &[2], &[-1, cfg.vocab_size as i64]);
    let out_shape = g.op(
        "Concat",
        &[&batch_shape, &kept_vocab],
        vec![Attr::Int("axis", 0)],
    );
    g.op_into("Reshape", &[&logits_flat, &out_shape], &["logits"], vec![]);

    g.output(
        "logits",
        Elem::F32,
        &[batch.clone(), "logits_length".into(), cfg.vocab_size.into()],
    );
    for i in 0..cfg.n_layer {
        for kind in ["key", "value"] {
            g.output(
                &format!("present.{i}.{kind}"),
                Elem::F32,
                &[batch.clone(), h.into(), total.clone(), d.into()],
            );
        }
    }
    Ok(model(
        g.finish("chatforge_gpt2_decoder"),
        OPSET,
        env!("CARGO_PKG_VERSION"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_quantize_columns_round_trips_within_half_a_step() {
        // 3 × 4, column 2 all zero, column 3 with one large outlier.
        let w = [
            0.5, -1.0, 0.0, 0.01, //
            -0.25, 0.3, 0.0, 8.0, //
            0.125, 1.0, 0.0, -0.02,
        ];
        let (q, scales) = quantize_columns(&w, 3, 4);
        assert_eq!(scales[2], 1.0);
        assert!((scales[1] - 1.0 / INT8_WEIGHT_MAX).abs() < 1e-7);
        for (i, (&v, &qi)) in w.iter().zip(&q).enumerate() {
            let s = scales[i % 4];
            assert!(qi.unsigned_abs() as f32 <= INT8_WEIGHT_MAX);
            assert!(
                (qi as f32 * s - v).abs() <= s / 2.0 + 1e-7,
                "{i}: {v} vs {qi}·{s}"
            );
        }
        // The largest magnitude of each column maps to ±max.
        assert_eq!(q[1], -(INT8_WEIGHT_MAX as i8));
        assert_eq!(q[7], INT8_WEIGHT_MAX as i8);
    }

    #[test]
    fn test_transpose() {
        let m = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]; // 2 × 3
        assert_eq!(transpose(&m, 2, 3), vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
    }
}
