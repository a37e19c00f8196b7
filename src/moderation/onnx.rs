//! The classifier as a standard-op ONNX graph:
//! `ids` int64 `[batch, n]`, `weights` float `[batch, n]` (0 on padding) →
//! Gather → ×weights → ReduceSum / max(Σweights, 1) [, ReduceMax over the
//! present features, concatenated] → Gemm → Platt scale → Sigmoid →
//! `scores` float `[batch, labels]`.

use candle_core::{Device, Tensor};
use ort::session::Session;

use super::features::{Features, pad};
use super::train::{Classifier, LabelModel, MASKED, Pooling, batch_tensors, sigmoid};
use super::{Error, Result, candle_err};
use crate::export::{Attr, Dim, Elem, GraphBuilder, ModelProto, OPSET as GPT_OPSET, model};
use crate::runtime::{self, Provider, RuntimeConfig};

/// The classifier file in a moderation model folder.
pub const ONNX_FILE: &str = "moderation.onnx";
/// Same opset as the GPT export.
pub const OPSET: i64 = GPT_OPSET;
/// Largest difference allowed between ONNX Runtime's and candle's scores.
pub use crate::export::PARITY_TOLERANCE;

pub(crate) fn classifier_model(m: &Classifier, labels: &[LabelModel]) -> Result<ModelProto> {
    classifier_graph(m, Some(labels), "moderation_classifier")
}

/// The classifier graph: with `labels`, their Platt scaling and a sigmoid
/// (moderation's calibrated scores); without, the raw logits (the
/// knowledge-base router, whose softmax is taken by the caller).
pub(crate) fn classifier_graph(
    m: &Classifier,
    labels: Option<&[LabelModel]>,
    name: &str,
) -> Result<ModelProto> {
    let (emb, w, b) = m.to_vecs()?;
    let dims = |v: &candle_core::Var| v.as_tensor().dims().to_vec();
    let (edims, wdims) = (dims(&m.embedding), dims(&m.weight));
    let n_labels = wdims.get(1).copied().unwrap_or(0);
    if wdims.first() != Some(&m.pooling.width(edims[1]))
        || labels.is_some_and(|l| l.len() != n_labels)
    {
        return Err(Error::Train(format!(
            "classifier weight {wdims:?} does not fit the embedding {edims:?} and labels"
        )));
    }
    let mut g = GraphBuilder::new();
    let ids = g.input("ids", Elem::I64, &["batch".into(), "features".into()]);
    let weights = g.input("weights", Elem::F32, &["batch".into(), "features".into()]);
    let table = g.initializer(crate::export::tensor_f32("embedding", &edims, &emb));
    let weight = g.initializer(crate::export::tensor_f32("classifier.weight", &wdims, &w));
    let bias = g.initializer(crate::export::tensor_f32(
        "classifier.bias",
        &[n_labels],
        &b,
    ));
    let e = g.op("Gather", &[&table, &ids], vec![Attr::Int("axis", 0)]); // [b, n, dim]
    let axis2 = g.const_i64("axis2", &[1], &[2]);
    let w3 = g.op("Unsqueeze", &[&weights, &axis2], vec![]); // [b, n, 1]
    let ew = g.op("Mul", &[&e, &w3], vec![]);
    let axis1 = g.const_i64("axis1", &[1], &[1]);
    let sum = g.op("ReduceSum", &[&ew, &axis1], vec![Attr::Int("keepdims", 0)]); // [b, dim]
    let count = g.op(
        "ReduceSum",
        &[&weights, &axis1],
        vec![Attr::Int("keepdims", 1)],
    ); // [b, 1]
    let one = g.const_f32("one", &[], &[1.0]);
    let count = g.op("Max", &[&count, &one], vec![]);
    let mean = g.op("Div", &[&sum, &count], vec![]);
    let pooled = match m.pooling {
        Pooling::Mean => mean,
        Pooling::MeanMax => {
            // As `Classifier::logits`: padding pushed down by MASKED, an
            // empty text's maximum zeroed.
            let present = g.op("Min", &[&weights, &one], vec![]); // [b, n]
            let absent = g.op("Sub", &[&present, &one], vec![]);
            let masked = g.const_f32("masked", &[], &[MASKED as f32]);
            let penalty = g.op("Mul", &[&absent, &masked], vec![]);
            let penalty = g.op("Unsqueeze", &[&penalty, &axis2], vec![]); // [b, n, 1]
            let shifted = g.op("Add", &[&e, &penalty], vec![]);
            let max = g.op(
                "ReduceMax",
                &[&shifted],
                vec![Attr::Ints("axes", vec![1]), Attr::Int("keepdims", 0)],
            ); // [b, dim]
            let any = g.op(
                "ReduceMax",
                &[&present],
                vec![Attr::Ints("axes", vec![1]), Attr::Int("keepdims", 1)],
            ); // [b, 1]
            let max = g.op("Mul", &[&max, &any], vec![]);
            g.op("Concat", &[&mean, &max], vec![Attr::Int("axis", 1)]) // [b, 2·dim]
        }
    };
    match labels {
        Some(labels) => {
            let logits = g.op("Gemm", &[&pooled, &weight, &bias], vec![]); // [b, labels]
            let a: Vec<f32> = labels.iter().map(|l| l.platt_a).collect();
            let c: Vec<f32> = labels.iter().map(|l| l.platt_b).collect();
            let a = g.const_f32("platt_a", &[n_labels], &a);
            let c = g.const_f32("platt_b", &[n_labels], &c);
            let scaled = g.op("Mul", &[&logits, &a], vec![]);
            let shifted = g.op("Add", &[&scaled, &c], vec![]);
            g.op_into("Sigmoid", &[&shifted], &["scores"], vec![]);
        }
        None => g.op_into("Gemm", &[&pooled, &weight, &bias], &["scores"], vec![]),
    }
    g.output(
        "scores",
        Elem::F32,
        &["batch".into(), Dim::Fixed(n_labels as i64)],
    );
    Ok(model(g.finish(name), OPSET, env!("CARGO_PKG_VERSION")))
}

fn ort_err(e: impl std::fmt::Display) -> Error {
    Error::Run(e.to_string())
}

/// Scores `[rows, n_labels]` from an ONNX session.
pub(crate) fn run_scores(
    session: &mut Session,
    rows: &[&Features],
    n_labels: usize,
) -> Result<Vec<f32>> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let (n, ids, weights) = pad(rows);
    let ids: Vec<i64> = ids.into_iter().map(i64::from).collect();
    let shape = [rows.len(), n];
    let ids = ort::value::Tensor::<i64>::from_array((shape, ids)).map_err(ort_err)?;
    let weights = ort::value::Tensor::<f32>::from_array((shape, weights)).map_err(ort_err)?;
    let outputs = session
        .run(ort::inputs!["ids" => ids, "weights" => weights])
        .map_err(ort_err)?;
    let value = outputs
        .get("scores")
        .ok_or_else(|| Error::Run("the model has no `scores` output".into()))?;
    let (_, data) = value.try_extract_tensor::<f32>().map_err(ort_err)?;
    if data.len() != rows.len() * n_labels {
        return Err(Error::Run(format!(
            "the model returned {} scores for {} texts × {n_labels} labels",
            data.len(),
            rows.len()
        )));
    }
    Ok(data.to_vec())
}

/// Runs the exported bytes in ONNX Runtime (CPU) and candle on `sample`;
/// returns the largest difference of calibrated scores, or fails above
/// [`PARITY_TOLERANCE`].
pub(crate) fn check_parity(
    bytes: &[u8],
    m: &Classifier,
    labels: &[LabelModel],
    sample: &[&Features],
) -> Result<f32> {
    // CPU: the check tests the graph, not a GPU's reduced-precision kernels.
    let cpu = RuntimeConfig {
        providers: vec![Provider::Cpu],
        strict: true,
        intra_threads: 0,
        ..RuntimeConfig::default()
    };
    let mut loaded = runtime::open_memory(&cpu, bytes, "exported moderation classifier")?;
    let got = run_scores(&mut loaded.session, sample, labels.len())?;
    let (ids, w) = batch_tensors(sample, &Device::Cpu)?;
    let z: Vec<f32> = m
        .logits(&ids, &w)
        .and_then(|t: Tensor| t.flatten_all())
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(candle_err)?;
    let want: Vec<f32> = z
        .iter()
        .enumerate()
        .map(|(i, &zi)| {
            let l = &labels[i % labels.len()];
            sigmoid(l.platt_a * zi + l.platt_b)
        })
        .collect();
    let diff = crate::export::max_diff(&got, &want);
    if diff.is_nan() || diff > PARITY_TOLERANCE {
        return Err(Error::Parity(diff));
    }
    Ok(diff)
}
