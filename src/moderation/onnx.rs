//! The classifier as a standard-op ONNX graph:
//! `ids` int64 `[batch, n]`, `weights` float `[batch, n]` (0 on padding) →
//! Gather → ×weights → ReduceSum / max(Σweights, 1) [, ReduceMax over the
//! present features, concatenated] → Gemm → Platt scale → Sigmoid →
//! `scores` float `[batch, labels]`.

use candle_core::{Device, Tensor};
use ort::session::{Session, SessionInputValue};

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
    classifier_graph(m, Some(labels), None, "moderation_classifier")
}

/// A pretrained token table beside the n-gram one (the knowledge-base
/// router's lexicon): inputs `tokens` int64 and `token_weights` float
/// `[batch, tokens]` → the L2-normalised weighted mean of their rows →
/// MatMul `weight` `[dim, labels]`, added to the raw scores.
pub(crate) struct LexiconPart<'a> {
    pub table: &'a [f32],
    pub rows: usize,
    pub dim: usize,
    pub weight: &'a [f32],
    /// Smallest norm divided by (an empty text stays zero).
    pub norm_floor: f32,
}

/// `Σ e·weights / max(Σ weights, 1)` over the features axis of the
/// gathered rows `e` `[batch, n, dim]`: `[batch, dim]`.
fn weighted_mean(g: &mut GraphBuilder, e: &str, weights: &str) -> String {
    let axis2 = g.const_i64("axis2", &[1], &[2]);
    let w3 = g.op("Unsqueeze", &[weights, &axis2], vec![]); // [b, n, 1]
    let ew = g.op("Mul", &[e, &w3], vec![]);
    let axis1 = g.const_i64("axis1", &[1], &[1]);
    let sum = g.op("ReduceSum", &[&ew, &axis1], vec![Attr::Int("keepdims", 0)]); // [b, dim]
    let count = g.op(
        "ReduceSum",
        &[weights, &axis1],
        vec![Attr::Int("keepdims", 1)],
    ); // [b, 1]
    let one = g.const_f32("one", &[], &[1.0]);
    let count = g.op("Max", &[&count, &one], vec![]);
    g.op("Div", &[&sum, &count], vec![])
}

/// The classifier graph: with `labels`, their Platt scaling and a sigmoid
/// (moderation's calibrated scores); without, the raw logits (the
/// knowledge-base router, whose softmax is taken by the caller).
pub(crate) fn classifier_graph(
    m: &Classifier,
    labels: Option<&[LabelModel]>,
    lexicon: Option<&LexiconPart>,
    name: &str,
) -> Result<ModelProto> {
    let (emb, w, b) = m.to_vecs()?;
    let dims = |v: &candle_core::Var| v.as_tensor().dims().to_vec();
    let (edims, wdims) = (dims(&m.embedding), dims(&m.weight));
    let n_labels = wdims.get(1).copied().unwrap_or(0);
    if wdims.first() != Some(&m.pooling.width(edims[1]))
        || labels.is_some_and(|l| l.len() != n_labels)
        || lexicon.is_some_and(|x| {
            labels.is_some()
                || x.table.len() != x.rows * x.dim
                || x.weight.len() != x.dim * n_labels
        })
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
    let mean = weighted_mean(&mut g, &e, &weights);
    let pooled = match m.pooling {
        Pooling::Mean => mean,
        Pooling::MeanMax => {
            let axis2 = g.const_i64("axis2", &[1], &[2]);
            let one = g.const_f32("one", &[], &[1.0]);
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
        None => match lexicon {
            None => g.op_into("Gemm", &[&pooled, &weight, &bias], &["scores"], vec![]),
            Some(x) => {
                let base = g.op("Gemm", &[&pooled, &weight, &bias], vec![]);
                let tokens = g.input("tokens", Elem::I64, &["batch".into(), "tokens".into()]);
                let tw = g.input(
                    "token_weights",
                    Elem::F32,
                    &["batch".into(), "tokens".into()],
                );
                let lt = g.initializer(crate::export::tensor_f32(
                    "lexicon.table",
                    &[x.rows, x.dim],
                    x.table,
                ));
                let lw = g.initializer(crate::export::tensor_f32(
                    "lexicon.weight",
                    &[x.dim, n_labels],
                    x.weight,
                ));
                let le = g.op("Gather", &[&lt, &tokens], vec![Attr::Int("axis", 0)]);
                let v = weighted_mean(&mut g, &le, &tw); // [b, dim]
                let sq = g.op("Mul", &[&v, &v], vec![]);
                let axis1 = g.const_i64("lexicon_axis1", &[1], &[1]);
                let sum = g.op("ReduceSum", &[&sq, &axis1], vec![Attr::Int("keepdims", 1)]);
                let norm = g.op("Sqrt", &[&sum], vec![]);
                let floor = g.const_f32("lexicon_norm_floor", &[], &[x.norm_floor]);
                let norm = g.op("Max", &[&norm, &floor], vec![]);
                let unit = g.op("Div", &[&v, &norm], vec![]);
                let lscores = g.op("MatMul", &[&unit, &lw], vec![]);
                g.op_into("Add", &[&base, &lscores], &["scores"], vec![])
            }
        },
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
    run_scores_with(session, rows, None, n_labels)
}

/// [`run_scores`] for a graph with a [`LexiconPart`]: `tokens` are the
/// rows' lexicon token ids and counts.
pub(crate) fn run_scores_with(
    session: &mut Session,
    rows: &[&Features],
    tokens: Option<&[&Features]>,
    n_labels: usize,
) -> Result<Vec<f32>> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let pair = |rows: &[&Features]| -> Result<[SessionInputValue<'static>; 2]> {
        let (n, ids, weights) = pad(rows);
        let ids: Vec<i64> = ids.into_iter().map(i64::from).collect();
        let shape = [rows.len(), n];
        Ok([
            ort::value::Tensor::<i64>::from_array((shape, ids))
                .map_err(ort_err)?
                .into(),
            ort::value::Tensor::<f32>::from_array((shape, weights))
                .map_err(ort_err)?
                .into(),
        ])
    };
    let [ids, weights] = pair(rows)?;
    let mut inputs: Vec<(&str, SessionInputValue<'static>)> =
        vec![("ids", ids), ("weights", weights)];
    if let Some(tokens) = tokens {
        let [t, tw] = pair(tokens)?;
        inputs.extend([("tokens", t), ("token_weights", tw)]);
    }
    let outputs = session.run(inputs).map_err(ort_err)?;
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
