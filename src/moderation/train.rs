//! Training with candle: hashed n-gram embeddings pooled (mean, and by
//! default the element-wise maximum beside it, see [`Pooling`]) → linear →
//! per-label logits, binary cross-entropy with a mask for labels a source
//! does not provide, AdamW; then Platt calibration and thresholds on the
//! validation split, ONNX export with a parity check, and the model folder.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use indicatif::{ProgressBar, ProgressStyle};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::data::{Dataset, SourceInfo, Split, SplitConfig, add_clean, read_datasets};
use super::features::{Features, FeaturizerConfig, pad};
use super::metrics::{BinaryMetrics, choose_threshold, fit_platt, roc_auc};
use super::onnx::{ONNX_FILE, OPSET, check_parity, classifier_model};
use super::{Error, Result, candle_err};
use crate::train::{AdamW, TrainSection};

/// The model's description beside `moderation.onnx`.
pub const JSON_FILE: &str = "moderation.json";

/// Version of the `moderation.json` layout.
const FORMAT: u32 = 1;

/// Everything `moderation train` can be told.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainSettings {
    pub featurizer: FeaturizerConfig,
    pub split: SplitConfig,
    /// Width of the n-gram embeddings.
    pub dim: usize,
    #[serde(default)]
    pub pooling: Pooling,
    pub epochs: usize,
    pub batch_size: usize,
    /// Peak learning rate; decays linearly to a tenth over the run.
    pub lr: f64,
    /// Decoupled weight decay on the output layer (not the embeddings).
    pub weight_decay: f64,
    /// Each label's threshold is the lowest reaching this precision on the
    /// validation split (the best-F1 one when none does; recorded).
    pub target_precision: f64,
    /// Rows read from each file at most (for quick runs and tests).
    pub max_rows_per_file: Option<usize>,
    /// Seed of initialisation and batch order.
    pub seed: u64,
    /// Each language's threshold is raised until at most this share of the
    /// `--clean` texts of that language on the validation split is flagged.
    #[serde(default = "default_max_clean_fpr")]
    pub max_clean_fpr: f64,
}

fn default_max_clean_fpr() -> f64 {
    0.005
}

/// A language's threshold needs this many validation rows of each class.
const MIN_LANGUAGE_ROWS: usize = 10;

impl Default for TrainSettings {
    fn default() -> Self {
        Self {
            featurizer: FeaturizerConfig::default(),
            split: SplitConfig::default(),
            dim: 64,
            pooling: Pooling::MeanMax,
            epochs: 5,
            batch_size: 128,
            lr: 0.01,
            weight_decay: 0.01,
            target_precision: 0.9,
            max_rows_per_file: None,
            seed: 7,
            max_clean_fpr: default_max_clean_fpr(),
        }
    }
}

pub struct TrainJob {
    pub data: Vec<PathBuf>,
    /// Texts known to be clean (all labels 0), e.g. support questions.
    pub clean: Vec<PathBuf>,
    /// Clean texts trained on only: never in the validation split, so
    /// they do not move the thresholds' false-positive cap (customer
    /// questions that resemble the held-out ones would otherwise raise
    /// it past insults inside requests).
    pub clean_train: Vec<PathBuf>,
    pub out: PathBuf,
    pub settings: TrainSettings,
    /// Show a progress bar (the CLI passes whether stderr is a terminal).
    pub progress: bool,
}

/// Validation figures of one label at its threshold.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabelValidation {
    pub positives: usize,
    pub negatives: usize,
    pub roc_auc: Option<f64>,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

/// One output of the classifier.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabelModel {
    pub name: String,
    /// Calibrated score at or above which the label is flagged.
    pub threshold: f32,
    pub target_precision: f64,
    /// Whether the threshold reached `target_precision` on validation.
    pub target_met: bool,
    /// Platt scaling of the raw logit: `score = sigmoid(a·logit + b)`.
    pub platt_a: f32,
    pub platt_b: f32,
    pub validation: LabelValidation,
    /// Thresholds of the languages with enough validation rows (`en`,
    /// `zh`); other texts use `threshold`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub by_language: BTreeMap<String, LanguageThreshold>,
}

impl LabelModel {
    /// The threshold for a text in `lang`.
    pub fn threshold_for(&self, lang: &str) -> f32 {
        self.by_language
            .get(lang)
            .map_or(self.threshold, |t| t.threshold)
    }
}

/// One language's threshold and its validation figures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LanguageThreshold {
    pub threshold: f32,
    /// Whether it reached the target precision before the clean-text cap.
    pub target_met: bool,
    pub positives: usize,
    pub negatives: usize,
    pub roc_auc: Option<f64>,
    pub precision: f64,
    pub recall: f64,
    /// `--clean` validation texts of the language, and the share flagged.
    pub clean_rows: usize,
    pub clean_fpr: f64,
}

/// The lowest threshold reaching `target_precision` on `scores` (see
/// [`choose_threshold`]), raised above all but `max_clean_fpr` of the
/// clean texts' scores.
fn language_threshold(
    scores: &[f32],
    labels: &[bool],
    clean: &[bool],
    target_precision: f64,
    max_clean_fpr: f64,
) -> LanguageThreshold {
    let (mut threshold, target_met) = choose_threshold(scores, labels, target_precision);
    let mut clean_scores: Vec<f32> = scores
        .iter()
        .zip(clean)
        .filter(|(_, c)| **c)
        .map(|(s, _)| *s)
        .collect();
    clean_scores.sort_by(|a, b| b.total_cmp(a));
    let allowed = (max_clean_fpr * clean_scores.len() as f64).floor() as usize;
    if let Some(&s) = clean_scores.get(allowed) {
        threshold = threshold.max(s.next_up());
    }
    let m = BinaryMetrics::at(scores, labels, threshold);
    let positives = labels.iter().filter(|&&v| v).count();
    LanguageThreshold {
        threshold,
        target_met,
        positives,
        negatives: labels.len() - positives,
        roc_auc: roc_auc(scores, labels),
        precision: m.precision,
        recall: m.recall,
        clean_rows: clean_scores.len(),
        clean_fpr: if clean_scores.is_empty() {
            0.0
        } else {
            clean_scores.iter().filter(|&&s| s >= threshold).count() as f64
                / clean_scores.len() as f64
        },
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainingInfo {
    pub settings: TrainSettings,
    pub train_rows: usize,
    pub validation_rows: usize,
    /// Rows of the test part, left out of everything (see `moderation eval --heldout`).
    pub test_rows: usize,
    pub steps: usize,
    pub elapsed_s: f64,
    pub final_train_loss: f32,
    pub validation_loss: f32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OnnxInfo {
    pub file: String,
    pub opset: i64,
    pub bytes: usize,
    /// Largest |ONNX Runtime − candle| over the calibrated scores checked at export.
    pub parity_max_diff: f32,
}

/// `moderation.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelMeta {
    pub format: u32,
    pub labels: Vec<LabelModel>,
    pub featurizer: FeaturizerConfig,
    pub dim: usize,
    pub split: SplitConfig,
    pub training: TrainingInfo,
    pub data: Vec<SourceInfo>,
    pub onnx: OnnxInfo,
    pub chatforge_version: String,
}

impl ModelMeta {
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(JSON_FILE);
        let err = |reason: String| Error::Model {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(&path).map_err(|e| err(e.to_string()))?;
        let meta: Self = serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
        if meta.format != FORMAT {
            return Err(err(format!(
                "format {} is not the supported {FORMAT}",
                meta.format
            )));
        }
        meta.featurizer.validate().map_err(err)?;
        if meta.labels.is_empty() {
            return Err(err("no labels".into()));
        }
        Ok(meta)
    }
}

/// What `moderation train` did.
#[derive(Debug, Clone, Serialize)]
pub struct TrainReport {
    pub dir: PathBuf,
    pub meta: ModelMeta,
}

/// How a text's n-gram embeddings become the one vector the output layer
/// reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    /// Their weighted mean (fastText). Models written before pooling was
    /// a setting use it.
    #[default]
    Mean,
    /// The mean beside their element-wise maximum, so one strong n-gram
    /// (an insult inside a long, polite request) is not averaged away.
    MeanMax,
}

impl Pooling {
    /// Width of the pooled vector for embeddings of width `dim`.
    pub fn width(self, dim: usize) -> usize {
        match self {
            Pooling::Mean => dim,
            Pooling::MeanMax => 2 * dim,
        }
    }
}

/// The classifier's parameters in candle.
pub(crate) struct Classifier {
    pub embedding: Var,
    pub weight: Var,
    pub bias: Var,
    pub pooling: Pooling,
}

impl Classifier {
    /// Seeded initialisation (candle's CPU generator cannot be seeded).
    pub(crate) fn new(
        buckets: usize,
        dim: usize,
        labels: usize,
        pooling: Pooling,
        seed: u64,
        dev: &Device,
    ) -> Result<Self> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut uniform = |n: usize, r: f32, shape: (usize, usize)| -> Result<Var> {
            let v: Vec<f32> = (0..n).map(|_| rng.random_range(-r..r)).collect();
            let t = Tensor::from_vec(v, shape, dev).map_err(candle_err)?;
            Var::from_tensor(&t).map_err(candle_err)
        };
        // fastText's initialisation: uniform ±1/dim for the embeddings.
        let embedding = uniform(buckets * dim, 1.0 / dim as f32, (buckets, dim))?;
        let width = pooling.width(dim);
        let weight = uniform(width * labels, (1.0 / width as f32).sqrt(), (width, labels))?;
        let bias = Var::zeros(labels, DType::F32, dev).map_err(candle_err)?;
        Ok(Self {
            embedding,
            weight,
            bias,
            pooling,
        })
    }

    /// Raw logits `[batch, labels]` for ids `[batch, n]` (u32) and weights
    /// `[batch, n]` (0 on padding).
    pub fn logits(&self, ids: &Tensor, weights: &Tensor) -> candle_core::Result<Tensor> {
        let (e, mean) = gathered_mean(self.embedding.as_tensor(), ids, weights)?;
        let pooled = match self.pooling {
            Pooling::Mean => mean,
            Pooling::MeanMax => {
                // Padding (weight 0) is pushed far below any embedding
                // before the maximum; an empty text's maximum is 0.
                let present = weights.minimum(1f32)?; // [b, n]
                let penalty = ((present.clone() - 1.0)? * MASKED)?.unsqueeze(2)?;
                let max = e.broadcast_add(&penalty)?.max(1)?; // [b, dim]
                let any = present.max_keepdim(1)?; // [b, 1]
                Tensor::cat(&[mean, max.broadcast_mul(&any)?], 1)?
            }
        };
        pooled
            .matmul(self.weight.as_tensor())?
            .broadcast_add(self.bias.as_tensor())
    }

    pub fn to_vecs(&self) -> Result<(Vec<f32>, Vec<f32>, Vec<f32>)> {
        let v = |t: &Var| -> Result<Vec<f32>> {
            t.as_tensor()
                .flatten_all()
                .and_then(|t| t.to_vec1::<f32>())
                .map_err(candle_err)
        };
        Ok((v(&self.embedding)?, v(&self.weight)?, v(&self.bias)?))
    }
}

/// `table`'s rows `ids` (`[b, n]`, u32) gathered, `[b, n, dim]`, and their
/// mean weighted by `weights` (`[b, n]`, 0 on padding), `[b, dim]`; an
/// empty text (all weights 0) divides by 1.
pub(crate) fn gathered_mean(
    table: &Tensor,
    ids: &Tensor,
    weights: &Tensor,
) -> candle_core::Result<(Tensor, Tensor)> {
    let (b, n) = ids.dims2()?;
    let dim = table.dim(1)?;
    let e = table
        .index_select(&ids.flatten_all()?, 0)?
        .reshape((b, n, dim))?;
    let sum = e.broadcast_mul(&weights.unsqueeze(2)?)?.sum(1)?;
    let count = weights.sum_keepdim(1)?.maximum(1f32)?; // [b, 1]
    let mean = sum.broadcast_div(&count)?;
    Ok((e, mean))
}

/// What padding adds to an embedding before the max-pool: far below any
/// trained value, small enough to stay exact in f32 beside one.
pub(crate) const MASKED: f64 = 1e4;

/// Batch tensors: ids, weights, and for training targets and mask.
pub(crate) fn batch_tensors(rows: &[&Features], dev: &Device) -> Result<(Tensor, Tensor)> {
    let (n, ids, weights) = pad(rows);
    let ids = Tensor::from_vec(ids, (rows.len(), n), dev).map_err(candle_err)?;
    let weights = Tensor::from_vec(weights, (rows.len(), n), dev).map_err(candle_err)?;
    Ok((ids, weights))
}

/// Binary cross-entropy with logits, averaged over the known labels:
/// softplus(z) − y·z written with max/abs/exp/log, every one of which has a
/// backward in candle.
fn masked_bce(z: &Tensor, y: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
    let softplus = (z.relu()? + (z.abs()?.neg()?.exp()? + 1.0)?.log()?)?;
    let per = (softplus - (y * z)?)?;
    let total = (per * mask)?.sum_all()?;
    let count = mask.sum_all()?.maximum(1f32)?;
    total / count
}

fn targets(ds: &Dataset, idx: &[usize], dev: &Device) -> Result<(Tensor, Tensor)> {
    let l = ds.labels.len();
    let mut y = Vec::with_capacity(idx.len() * l);
    let mut m = Vec::with_capacity(idx.len() * l);
    for &i in idx {
        for v in &ds.examples[i].labels {
            y.push(if *v == Some(true) { 1f32 } else { 0.0 });
            m.push(if v.is_some() { 1f32 } else { 0.0 });
        }
    }
    let y = Tensor::from_vec(y, (idx.len(), l), dev).map_err(candle_err)?;
    let m = Tensor::from_vec(m, (idx.len(), l), dev).map_err(candle_err)?;
    Ok((y, m))
}

/// Raw logits of `texts`, each the highest over its windows, row-major
/// `[texts, labels]`.
fn predict(
    model: &Classifier,
    texts: &[&[Features]],
    labels: usize,
    dev: &Device,
) -> Result<Vec<f32>> {
    let mut out = Vec::with_capacity(texts.len() * labels);
    for chunk in texts.chunks(256) {
        let rows: Vec<&Features> = chunk.iter().flat_map(|w| w.iter()).collect();
        let (ids, w) = batch_tensors(&rows, dev)?;
        let z = model
            .logits(&ids, &w)
            .and_then(|z| z.flatten_all())
            .and_then(|z| z.to_vec1::<f32>())
            .map_err(candle_err)?;
        out.extend(max_per_text(&z, chunk.iter().map(|w| w.len()), labels));
    }
    Ok(out)
}

/// Each text's highest score per label over its consecutive windows' rows
/// of `scores` (`[windows, labels]`, row-major).
pub(crate) fn max_per_text(
    scores: &[f32],
    windows: impl Iterator<Item = usize>,
    labels: usize,
) -> Vec<f32> {
    let mut out = Vec::new();
    let mut at = 0;
    for k in windows {
        let rows = scores.get(at * labels..(at + k) * labels).unwrap_or(&[]);
        at += k;
        out.extend((0..labels).map(|l| {
            rows.iter()
                .skip(l)
                .step_by(labels)
                .copied()
                .fold(f32::NEG_INFINITY, f32::max)
        }));
    }
    out
}

/// Training rows of one batch are padded in this many parts of similar
/// length, so a short clause is not padded to the batch's longest text.
const LENGTH_PARTS: usize = 4;

/// One batch's windows as padded parts (`(rows, n, ids, weights)`, shortest
/// first), and each text's windows as rows of the parts' logits stacked.
struct WindowBatch {
    parts: Vec<(usize, usize, Vec<u32>, Vec<f32>)>,
    windows: Vec<Vec<u32>>,
}

fn window_batch(texts: &[&[Features]]) -> WindowBatch {
    let rows: Vec<&Features> = texts.iter().flat_map(|w| w.iter()).collect();
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by_key(|&r| rows[r].ids.len());
    let mut position = vec![0u32; rows.len()];
    for (p, &r) in order.iter().enumerate() {
        position[r] = p as u32;
    }
    let per = order.len().div_ceil(LENGTH_PARTS).max(1);
    let parts = order
        .chunks(per)
        .map(|chunk| {
            let feats: Vec<&Features> = chunk.iter().map(|&r| rows[r]).collect();
            let (n, ids, w) = pad(&feats);
            (chunk.len(), n, ids, w)
        })
        .collect();
    let mut at = 0;
    let windows = texts
        .iter()
        .map(|w| {
            let rows = position[at..at + w.len()].to_vec();
            at += w.len();
            rows
        })
        .collect();
    WindowBatch { parts, windows }
}

/// The training graph's form of [`max_per_text`]: logits `[rows, labels]`
/// → `[texts, labels]`, each text the maximum over its `windows` rows (the
/// gradient reaches the highest window only).
fn max_over_windows(z: &Tensor, windows: &[Vec<u32>]) -> candle_core::Result<Tensor> {
    let k = windows.iter().map(Vec::len).max().unwrap_or(1).max(1);
    let (_, labels) = z.dims2()?;
    let (mut idx, mut penalty) = (Vec::new(), Vec::new());
    for rows in windows {
        for j in 0..k {
            // A text with fewer windows repeats its first, pushed far
            // below every real one so it is never the maximum.
            let real = rows.get(j);
            idx.push(real.or(rows.first()).copied().unwrap_or(0));
            penalty.push(if real.is_some() { 0f32 } else { -MASKED as f32 });
        }
    }
    let b = windows.len();
    let idx = Tensor::from_vec(idx, b * k, z.device())?;
    let penalty = Tensor::from_vec(penalty, (b, k, 1), z.device())?;
    z.index_select(&idx, 0)?
        .reshape((b, k, labels))?
        .broadcast_add(&penalty)?
        .max(1)
}

/// Trains on `job.data`, writes `moderation.onnx` and `moderation.json`
/// into `job.out`.
pub fn train(job: TrainJob) -> Result<TrainReport> {
    let s = &job.settings;
    s.featurizer.validate().map_err(Error::Config)?;
    if s.dim == 0 || s.epochs == 0 || s.batch_size == 0 || !s.lr.is_finite() || s.lr <= 0.0 {
        return Err(Error::Config(
            "dim, epochs, batch size and learning rate must be positive".into(),
        ));
    }
    if !(0.0..=1.0).contains(&s.target_precision) {
        return Err(Error::Config(format!(
            "target precision must be in [0, 1], got {}",
            s.target_precision
        )));
    }
    let (vf, tf) = (s.split.validation_fraction, s.split.test_fraction);
    if !(vf.is_finite() && tf.is_finite() && vf > 0.0 && tf >= 0.0 && vf + tf < 1.0) {
        return Err(Error::Config(format!(
            "validation fraction ({vf}) must be > 0 and validation + test ({tf}) < 1"
        )));
    }
    let start = Instant::now();
    let mut ds = read_datasets(&job.data, s.max_rows_per_file)?;
    add_clean(&mut ds, &job.clean, s.max_rows_per_file, false)?;
    add_clean(&mut ds, &job.clean_train, s.max_rows_per_file, true)?;
    let labels = ds.labels.len();
    let (mut train_idx, mut val_idx, mut test_rows) = (Vec::new(), Vec::new(), 0);
    for (i, ex) in ds.examples.iter().enumerate() {
        match ex.split(&s.split) {
            Split::Train => train_idx.push(i),
            Split::Validation => val_idx.push(i),
            Split::Test => test_rows += 1,
        }
    }
    if train_idx.is_empty() || val_idx.is_empty() {
        return Err(Error::Empty(format!(
            "{} rows give {} for training and {} for validation; both need at least one",
            ds.examples.len(),
            train_idx.len(),
            val_idx.len()
        )));
    }
    let feats: Vec<Option<Vec<Features>>> = {
        let mut keep = vec![false; ds.examples.len()];
        train_idx
            .iter()
            .chain(&val_idx)
            .for_each(|&i| keep[i] = true);
        ds.examples
            .iter()
            .zip(&keep)
            .map(|(ex, &k)| k.then(|| s.featurizer.windows(&ex.text)))
            .collect()
    };
    let feat = |i: usize| -> Result<&[Features]> {
        feats[i]
            .as_deref()
            .ok_or_else(|| Error::Train(format!("row {i} was not featurized")))
    };

    let dev = Device::Cpu;
    let init = Classifier::new(
        s.featurizer.buckets as usize,
        s.dim,
        labels,
        s.pooling,
        s.seed,
        &dev,
    )?;
    let (table, _, _) = init.to_vecs()?;
    let mut table = SparseAdam::new(table, s.dim);
    let (weight, bias) = (init.weight, init.bias);
    drop(init.embedding);
    let vars = vec![
        ("classifier.bias".to_string(), bias.clone()),
        ("classifier.weight".to_string(), weight.clone()),
    ];
    let section = TrainSection {
        lr: s.lr,
        weight_decay: s.weight_decay,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        ..TrainSection::default()
    };
    let mut opt = AdamW::new(&vars, &section).map_err(|e| Error::Train(e.to_string()))?;

    let steps_per_epoch = train_idx.len().div_ceil(s.batch_size);
    let total = steps_per_epoch * s.epochs;
    let bar = if job.progress {
        let bar = ProgressBar::new(total as u64);
        if let Ok(style) = ProgressStyle::with_template(
            "{bar:30} {pos}/{len} steps, loss {msg} [{elapsed} < {eta}]",
        ) {
            bar.set_style(style);
        }
        bar
    } else {
        ProgressBar::hidden()
    };
    let mut rng = ChaCha8Rng::seed_from_u64(s.seed);
    let mut step = 0;
    let mut last_loss = f32::NAN;
    for epoch in 0..s.epochs {
        if epoch > 0 {
            tracing::info!(epoch, step, loss = last_loss, "moderation training");
        }
        train_idx.shuffle(&mut rng);
        for batch in train_idx.chunks(s.batch_size) {
            let texts = batch.iter().map(|&i| feat(i)).collect::<Result<Vec<_>>>()?;
            let WindowBatch { parts, windows } = window_batch(&texts);
            let SparseParts {
                touched,
                embedding,
                parts,
            } = table.batch_parts(parts, &dev).map_err(candle_err)?;
            let step_model = Classifier {
                embedding: embedding.clone(),
                weight: weight.clone(),
                bias: bias.clone(),
                pooling: s.pooling,
            };
            let (y, mask) = targets(&ds, batch, &dev)?;
            let loss = parts
                .iter()
                .map(|(ids, w)| step_model.logits(ids, w))
                .collect::<candle_core::Result<Vec<_>>>()
                .and_then(|z| Tensor::cat(&z, 0))
                .and_then(|z| max_over_windows(&z, &windows))
                .and_then(|z| masked_bce(&z, &y, &mask))
                .map_err(candle_err)?;
            let value = loss.to_scalar::<f32>().map_err(candle_err)?;
            if !value.is_finite() {
                return Err(Error::Train(format!(
                    "loss is {value} at step {step}; lower the learning rate"
                )));
            }
            let grad_store = loss.backward().map_err(candle_err)?;
            let grads = opt
                .collect_grads(&grad_store)
                .map_err(|e| Error::Train(e.to_string()))?;
            let table_grad = grad_store
                .get(embedding.as_tensor())
                .ok_or_else(|| {
                    Error::Train(
                        "the embedding table received no gradient (the graph is cut)".into(),
                    )
                })?
                .flatten_all()
                .and_then(|g| g.to_vec1::<f32>())
                .map_err(candle_err)?;
            // Linear decay to a tenth of the peak rate.
            let lr = s.lr * (1.0 - 0.9 * step as f64 / total as f64);
            opt.step(&grads, lr)
                .map_err(|e| Error::Train(e.to_string()))?;
            table.step(&touched, &table_grad, lr as f32);
            last_loss = value;
            step += 1;
            bar.set_position(step as u64);
            bar.set_message(format!("{value:.4}"));
        }
    }
    bar.finish_and_clear();
    let model = table
        .into_classifier(weight, bias, s.pooling, &dev)
        .map_err(candle_err)?;

    // Calibration and thresholds on the validation split.
    val_idx.sort_unstable();
    let val_feats = val_idx
        .iter()
        .map(|&i| feat(i))
        .collect::<Result<Vec<_>>>()?;
    let val_logits = predict(&model, &val_feats, labels, &dev)?;
    let mut label_models = Vec::with_capacity(labels);
    let mut val_loss_sum = 0f64;
    let mut val_loss_n = 0usize;
    for (l, name) in ds.labels.iter().enumerate() {
        let (mut z, mut y, mut rows) = (Vec::new(), Vec::new(), Vec::new());
        for (r, &i) in val_idx.iter().enumerate() {
            if let Some(v) = ds.examples[i].labels[l] {
                let zi = val_logits[r * labels + l];
                z.push(zi);
                y.push(v);
                rows.push(i);
                let p = (1.0 / (1.0 + (-zi as f64).exp())).clamp(1e-7, 1.0 - 1e-7);
                val_loss_sum -= if v { p.ln() } else { (1.0 - p).ln() };
                val_loss_n += 1;
            }
        }
        let (a, b) = fit_platt(&z, &y);
        let scores: Vec<f32> = z.iter().map(|&zi| sigmoid(a * zi + b)).collect();
        let (threshold, target_met) = choose_threshold(&scores, &y, s.target_precision);
        let m = BinaryMetrics::at(&scores, &y, threshold);
        let positives = y.iter().filter(|&&v| v).count();
        let mut by_language = BTreeMap::new();
        for lang in ["en", "zh"] {
            let (mut sl, mut yl, mut cl) = (Vec::new(), Vec::new(), Vec::new());
            for ((&sc, &v), &i) in scores.iter().zip(&y).zip(&rows) {
                let ex = &ds.examples[i];
                if ex.language() == lang {
                    sl.push(sc);
                    yl.push(v);
                    cl.push(ex.clean);
                }
            }
            let pos = yl.iter().filter(|&&v| v).count();
            if pos >= MIN_LANGUAGE_ROWS && yl.len() - pos >= MIN_LANGUAGE_ROWS {
                by_language.insert(
                    lang.to_string(),
                    language_threshold(&sl, &yl, &cl, s.target_precision, s.max_clean_fpr),
                );
            }
        }
        label_models.push(LabelModel {
            name: name.clone(),
            threshold,
            target_precision: s.target_precision,
            target_met,
            platt_a: a,
            platt_b: b,
            validation: LabelValidation {
                positives,
                negatives: y.len() - positives,
                roc_auc: roc_auc(&scores, &y),
                precision: m.precision,
                recall: m.recall,
                f1: m.f1,
            },
            by_language,
        });
    }

    // Export, checked against candle on validation rows plus edge cases.
    let proto = classifier_model(&model, &label_models)?;
    let bytes = prost::Message::encode_to_vec(&proto);
    let empty = Features::default();
    let mut sample: Vec<&Features> = val_feats.iter().flat_map(|w| w.iter()).take(63).collect();
    sample.push(&empty);
    let parity = check_parity(&bytes, &model, &label_models, &sample)?;

    let meta = ModelMeta {
        format: FORMAT,
        labels: label_models,
        featurizer: s.featurizer.clone(),
        dim: s.dim,
        split: s.split.clone(),
        training: TrainingInfo {
            settings: s.clone(),
            train_rows: train_idx.len(),
            validation_rows: val_idx.len(),
            test_rows,
            steps: step,
            elapsed_s: start.elapsed().as_secs_f64(),
            final_train_loss: last_loss,
            validation_loss: (val_loss_sum / val_loss_n.max(1) as f64) as f32,
        },
        data: ds.sources.clone(),
        onnx: OnnxInfo {
            file: ONNX_FILE.into(),
            opset: OPSET,
            bytes: bytes.len(),
            parity_max_diff: parity,
        },
        chatforge_version: env!("CARGO_PKG_VERSION").into(),
    };
    std::fs::create_dir_all(&job.out).map_err(|e| Error::Data {
        path: job.out.display().to_string(),
        reason: format!("cannot create the output folder: {e}"),
    })?;
    // The ONNX file first: a folder whose JSON exists always has its model.
    crate::fsio::write_atomic(&job.out.join(ONNX_FILE), &bytes)?;
    crate::fsio::write_json_atomic(&job.out.join(JSON_FILE), &meta)?;
    Ok(TrainReport { dir: job.out, meta })
}

/// One batch's slice of the embedding table (see [`SparseAdam::batch`]).
pub(crate) struct SparseBatch {
    /// Table rows, sorted: `embedding`'s row `i` is table row `touched[i]`.
    pub touched: Vec<u32>,
    pub embedding: Var,
    /// Ids into `embedding`, and their weights.
    pub ids: Tensor,
    pub w: Tensor,
}

/// [`SparseBatch`] in several padded parts.
pub(crate) struct SparseParts {
    pub touched: Vec<u32>,
    pub embedding: Var,
    /// Ids into `embedding` and weights, per part.
    pub parts: Vec<(Tensor, Tensor)>,
}

/// Adam for the embedding table, updating only the rows a batch touched
/// (PyTorch's `SparseAdam`, TensorFlow's `LazyAdam`): an untouched row keeps
/// its moments, so rare n-grams are not dragged by stale momentum.
pub(crate) struct SparseAdam {
    data: Vec<f32>,
    m: Vec<f32>,
    v: Vec<f32>,
    dim: usize,
    t: i32,
}

impl SparseAdam {
    const BETA1: f32 = 0.9;
    const BETA2: f32 = 0.999;
    const EPS: f32 = 1e-8;

    pub(crate) fn new(data: Vec<f32>, dim: usize) -> Self {
        let n = data.len();
        Self {
            data,
            m: vec![0.0; n],
            v: vec![0.0; n],
            dim,
            t: 0,
        }
    }

    /// A padded batch (`pad`'s `n`, ids and weights, `rows` rows) over
    /// only the table rows it touches: those are copied into a small
    /// `Var`, whose gradient [`Self::step`] applies to them alone (a dense
    /// step over 2^18 rows costs ~100×). Ids are renumbered into it.
    pub(crate) fn batch(
        &self,
        rows: usize,
        n: usize,
        ids: &[u32],
        w: Vec<f32>,
        dev: &Device,
    ) -> candle_core::Result<SparseBatch> {
        let SparseParts {
            touched,
            embedding,
            mut parts,
        } = self.batch_parts(vec![(rows, n, ids.to_vec(), w)], dev)?;
        let (ids, w) = parts
            .pop()
            .ok_or_else(|| candle_core::Error::Msg("a batch without rows".into()))?;
        Ok(SparseBatch {
            touched,
            embedding,
            ids,
            w,
        })
    }

    /// [`Self::batch`] for several padded parts sharing one `Var` (rows of
    /// different lengths padded apart): `(rows, n, ids, weights)` each.
    pub(crate) fn batch_parts(
        &self,
        parts: Vec<(usize, usize, Vec<u32>, Vec<f32>)>,
        dev: &Device,
    ) -> candle_core::Result<SparseParts> {
        let mut touched: Vec<u32> = parts.iter().flat_map(|p| p.2.iter().copied()).collect();
        touched.sort_unstable();
        touched.dedup();
        let embedding = Var::from_tensor(&Tensor::from_vec(
            self.gather(&touched),
            (touched.len(), self.dim),
            dev,
        )?)?;
        let parts = parts
            .into_iter()
            .map(|(rows, n, ids, w)| {
                let local: Vec<u32> = ids
                    .iter()
                    .map(|id| touched.binary_search(id).unwrap_or(0) as u32)
                    .collect();
                Ok((
                    Tensor::from_vec(local, (rows, n), dev)?,
                    Tensor::from_vec(w, (rows, n), dev)?,
                ))
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(SparseParts {
            touched,
            embedding,
            parts,
        })
    }

    pub(crate) fn gather(&self, rows: &[u32]) -> Vec<f32> {
        let d = self.dim;
        rows.iter()
            .flat_map(|&r| &self.data[r as usize * d..(r as usize + 1) * d])
            .copied()
            .collect()
    }

    /// `grad` is `[rows.len(), dim]`, row-major.
    pub(crate) fn step(&mut self, rows: &[u32], grad: &[f32], lr: f32) {
        self.t += 1;
        let bc1 = 1.0 - Self::BETA1.powi(self.t);
        let bc2 = 1.0 - Self::BETA2.powi(self.t);
        let d = self.dim;
        for (k, &r) in rows.iter().enumerate() {
            let base = r as usize * d;
            for j in 0..d {
                let g = grad[k * d + j];
                let i = base + j;
                self.m[i] = Self::BETA1 * self.m[i] + (1.0 - Self::BETA1) * g;
                self.v[i] = Self::BETA2 * self.v[i] + (1.0 - Self::BETA2) * g * g;
                self.data[i] -= lr * (self.m[i] / bc1) / ((self.v[i] / bc2).sqrt() + Self::EPS);
            }
        }
    }
}

impl SparseAdam {
    /// The trained table, row-major.
    pub(crate) fn into_data(self) -> Vec<f32> {
        self.data
    }

    /// The trained classifier: the whole table as its embedding.
    pub(crate) fn into_classifier(
        self,
        weight: Var,
        bias: Var,
        pooling: Pooling,
        dev: &Device,
    ) -> candle_core::Result<Classifier> {
        let rows = self.data.len() / self.dim;
        let dim = self.dim;
        Ok(Classifier {
            embedding: Var::from_tensor(&Tensor::from_vec(self.data, (rows, dim), dev)?)?,
            weight,
            bias,
            pooling,
        })
    }
}

pub(crate) fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn features(ids: &[u32]) -> Features {
        Features {
            ids: ids.to_vec(),
            weights: vec![1.0; ids.len()],
            truncated: false,
        }
    }

    fn logits(m: &Classifier, rows: &[&Features]) -> Vec<f32> {
        let (ids, w) = batch_tensors(rows, &Device::Cpu).unwrap();
        m.logits(&ids, &w)
            .and_then(|z| z.flatten_all())
            .and_then(|z| z.to_vec1::<f32>())
            .unwrap()
    }

    #[test]
    fn test_max_pooling_ignores_padding_and_keeps_one_strong_feature() {
        let dev = Device::Cpu;
        let m = Classifier::new(16, 4, 1, Pooling::MeanMax, 3, &dev).unwrap();
        // Bucket 5 alone pushes dimension 0 far up; every other bucket is
        // the initialisation's small noise.
        let mut table = m.to_vecs().unwrap().0;
        table[5 * 4] = 3.0;
        let table = Var::from_tensor(&Tensor::from_vec(table, (16, 4), &dev).unwrap()).unwrap();
        let weight = vec![0.0f32, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0];
        let weight = Var::from_tensor(&Tensor::from_vec(weight, (8, 1), &dev).unwrap()).unwrap();
        let m = Classifier {
            embedding: table,
            weight,
            bias: m.bias,
            pooling: Pooling::MeanMax,
        };
        let short = features(&[1, 5]);
        let long = features(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        let clean = features(&[1, 2, 3]);
        let empty = Features::default();
        // Alone, and padded beside a longer row: the same logits.
        let alone: Vec<f32> = [&short, &clean, &empty]
            .iter()
            .map(|f| logits(&m, &[f])[0])
            .collect();
        let padded = logits(&m, &[&short, &long, &clean, &empty]);
        for (a, p) in alone.iter().zip([padded[0], padded[2], padded[3]]) {
            assert!((a - p).abs() < 1e-6, "{a} alone vs {p} padded");
        }
        // The max channel reads bucket 5 however many others surround it.
        assert!((padded[0] - 3.0).abs() < 1e-6, "{}", padded[0]);
        assert!((padded[1] - 3.0).abs() < 1e-6, "{}", padded[1]);
        assert!(padded[2].abs() < 0.5, "no strong feature: {}", padded[2]);
        assert_eq!(padded[3], 0.0, "an empty text's maximum is 0");
    }

    /// The training batch (rows padded in parts by length, the maximum
    /// taken in the graph) gives each text the same logits as scoring its
    /// windows one by one and keeping the highest, as the served model does.
    #[test]
    fn test_training_batch_takes_each_texts_highest_window() {
        let dev = Device::Cpu;
        let m = Classifier::new(256, 4, 2, Pooling::MeanMax, 5, &dev).unwrap();
        let cfg = FeaturizerConfig {
            buckets: 256,
            clauses: true,
            ..FeaturizerConfig::default()
        };
        let texts: Vec<Vec<Features>> = [
            "where is my order",
            "hi, where is my parcel, it is late. please check",
            "",
            "one; two; three; four; five; six; seven; eight; nine",
            "refund please, you idiot",
        ]
        .iter()
        .map(|t| cfg.windows(t))
        .collect();
        assert_eq!(
            texts.iter().map(Vec::len).collect::<Vec<_>>(),
            [1, 5, 1, 10, 3]
        );
        let one_by_one: Vec<f32> = texts
            .iter()
            .flat_map(|w| {
                let rows: Vec<f32> = w.iter().flat_map(|f| logits(&m, &[f])).collect();
                max_per_text(&rows, std::iter::once(w.len()), 2)
            })
            .collect();
        let refs: Vec<&[Features]> = texts.iter().map(Vec::as_slice).collect();
        let WindowBatch { parts, windows } = window_batch(&refs);
        assert!(parts.len() > 1, "rows are padded in parts");
        let z: Vec<Tensor> = parts
            .into_iter()
            .map(|(rows, n, ids, w)| {
                let ids = Tensor::from_vec(ids, (rows, n), &dev).unwrap();
                let w = Tensor::from_vec(w, (rows, n), &dev).unwrap();
                m.logits(&ids, &w).unwrap()
            })
            .collect();
        let batched = max_over_windows(&Tensor::cat(&z, 0).unwrap(), &windows)
            .and_then(|z| z.flatten_all())
            .and_then(|z| z.to_vec1::<f32>())
            .unwrap();
        assert_eq!(batched.len(), one_by_one.len());
        for (b, o) in batched.iter().zip(&one_by_one) {
            assert!((b - o).abs() < 1e-5, "{batched:?} vs {one_by_one:?}");
        }
        assert_eq!(predict(&m, &refs, 2, &dev).unwrap().len(), one_by_one.len());
    }
}
