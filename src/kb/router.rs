//! The trained router: which entries a question asks for, learned from
//! labelled example questions. The model is the moderation classifier's
//! (hashed character and word n-grams → mean of embeddings → linear), with
//! a softmax over the knowledge base's entries instead of sigmoids over
//! labels: a fastText-style text classifier, which reads typos and slang
//! by their character n-grams where BM25 needs the exact word. Trained in
//! candle, exported to ONNX, run through ONNX Runtime.

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use candle_core::{Device, Tensor};
use candle_nn::Optimizer as _;
use indicatif::{ProgressBar, ProgressStyle};
use ort::session::Session;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::{Error, Result};
use crate::moderation::{
    Classifier, Features, FeaturizerConfig, Pooling, SparseAdam, SparseBatch, classifier_graph, pad,
};
use crate::runtime::{self, RuntimeConfig};

/// The router's extra output for "nothing here answers it", trained on
/// negatives when there are any.
pub const NONE_ENTRY: &str = "<none>";

/// The router's files in a knowledge-base folder.
pub const ROUTER_ONNX: &str = "router.onnx";
pub const ROUTER_JSON: &str = "router.json";

/// How the router is trained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouterSettings {
    pub featurizer: FeaturizerConfig,
    pub dim: usize,
    #[serde(default)]
    pub pooling: Pooling,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    /// Share of a training question's n-grams dropped at random each
    /// step, so the router does not lean on a few of them.
    pub feature_dropout: f32,
    pub seed: u64,
}

impl Default for RouterSettings {
    fn default() -> Self {
        Self {
            featurizer: FeaturizerConfig {
                buckets: 1 << 18,
                hash_seed: 0x726f_7574_6572,
                char_ngrams: (2, 5),
                word_ngrams: (1, 2),
                max_chars: 1000,
                clauses: false,
            },
            dim: 96,
            pooling: Pooling::Mean,
            epochs: 20,
            batch_size: 32,
            lr: 0.01,
            feature_dropout: 0.2,
            seed: 11,
        }
    }
}

/// `router.json`: what the ONNX file's outputs mean, and how it was made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouterMeta {
    pub settings: RouterSettings,
    /// Passage ids, in the order of the model's outputs.
    pub entries: Vec<String>,
    /// Labelled questions it was trained on (besides the entries' own
    /// titles), and how many it kept aside for validation.
    pub trained_questions: usize,
    pub validation_questions: usize,
    /// Top-1 accuracy on the validation questions. A router refit on all
    /// questions (`kb train` without `--no-refit`) records the first fit's
    /// held-aside figures here.
    pub validation_accuracy: f32,
    pub train_seconds: f64,
}

impl RouterMeta {
    pub fn read(dir: &Path) -> Result<Self> {
        let json = dir.join(ROUTER_JSON);
        let text = std::fs::read_to_string(&json).map_err(crate::fsio::io_err(&json))?;
        serde_json::from_str(&text).map_err(|e| {
            Error::Format(format!(
                "{}: {e}; retrain with `chatforge kb train --kb {}`",
                json.display(),
                dir.display()
            ))
        })
    }
}

/// One labelled example: a text and the entries that answer it (the
/// target spreads evenly over them).
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub text: String,
    pub entries: Vec<usize>,
}

/// A trained router in memory, before export.
pub struct Trained {
    pub meta: RouterMeta,
    model: Classifier,
}

fn candle_err(e: candle_core::Error) -> Error {
    Error::Router(e.to_string())
}

/// Mean softmax cross-entropy of `logits` `[b, c]` against target
/// distributions `[b, c]` (rows sum to 1),
/// written with ops that all have a backward in candle.
fn softmax_ce(logits: &Tensor, target: &Tensor) -> candle_core::Result<Tensor> {
    let max = logits.max_keepdim(1)?.detach();
    let shifted = logits.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(1)?.log()?; // [b, 1]
    let picked = (shifted * target)?.sum_keepdim(1)?; // [b, 1]
    (lse - picked)?.mean_all()
}

/// Trains on `train` (each text's entry) for `entries` outputs; `val`
/// measures accuracy only.
pub fn train(
    entries: &[String],
    train: &[Example],
    val: &[Example],
    settings: &RouterSettings,
    progress: bool,
) -> Result<Trained> {
    let s = settings;
    s.featurizer.validate().map_err(Error::Router)?;
    if entries.is_empty() || train.is_empty() {
        return Err(Error::Router(
            "nothing to train on: no entries or no example questions".into(),
        ));
    }
    if s.dim == 0 || s.epochs == 0 || s.batch_size == 0 || s.lr.is_nan() || s.lr <= 0.0 {
        return Err(Error::Router(
            "dim, epochs, batch size and learning rate must be positive".into(),
        ));
    }
    let started = std::time::Instant::now();
    let dev = Device::Cpu;
    let n_entries = entries.len();
    let feats: Vec<Features> = train
        .iter()
        .map(|e| s.featurizer.featurize(&e.text))
        .collect();
    let init = Classifier::new(
        s.featurizer.buckets as usize,
        s.dim,
        n_entries,
        s.pooling,
        s.seed,
        &dev,
    )
    .map_err(|e| Error::Router(e.to_string()))?;
    let (table, _, _) = init.to_vecs().map_err(|e| Error::Router(e.to_string()))?;
    let mut table = SparseAdam::new(table, s.dim);
    let (weight, bias) = (init.weight, init.bias);
    let vars = vec![weight.clone(), bias.clone()];
    let mut opt = candle_nn::AdamW::new(
        vars,
        candle_nn::ParamsAdamW {
            lr: s.lr,
            weight_decay: 0.0,
            ..Default::default()
        },
    )
    .map_err(candle_err)?;
    let mut order: Vec<usize> = (0..train.len()).collect();
    let steps = order.len().div_ceil(s.batch_size) * s.epochs;
    let bar = if progress {
        let bar = ProgressBar::new(steps as u64);
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
    let mut step = 0usize;
    for _ in 0..s.epochs {
        order.shuffle(&mut rng);
        for batch in order.chunks(s.batch_size) {
            let rows: Vec<&Features> = batch.iter().map(|&i| &feats[i]).collect();
            // Only the table rows the batch touches take part
            // (`SparseAdam::batch`).
            let (n, ids, mut w) = pad(&rows);
            if s.feature_dropout > 0.0 {
                for row in w.chunks_mut(n) {
                    let kept = row.iter().filter(|v| **v > 0.0).count();
                    let mut left = kept;
                    for v in row.iter_mut().filter(|v| **v > 0.0) {
                        if left > 1 && rng.random::<f32>() < s.feature_dropout {
                            *v = 0.0;
                            left -= 1;
                        }
                    }
                }
            }
            let SparseBatch {
                touched,
                embedding,
                ids,
                w,
            } = table
                .batch(rows.len(), n, &ids, w, &dev)
                .map_err(candle_err)?;
            let model = Classifier {
                embedding: embedding.clone(),
                weight: weight.clone(),
                bias: bias.clone(),
                pooling: s.pooling,
            };
            let mut onehot = vec![0f32; rows.len() * n_entries];
            for (r, &i) in batch.iter().enumerate() {
                let gold = &train[i].entries;
                for &e in gold {
                    onehot[r * n_entries + e] = 1.0 / gold.len() as f32;
                }
            }
            let onehot =
                Tensor::from_vec(onehot, (rows.len(), n_entries), &dev).map_err(candle_err)?;
            let loss = model
                .logits(&ids, &w)
                .and_then(|z| softmax_ce(&z, &onehot))
                .map_err(candle_err)?;
            let value = loss.to_scalar::<f32>().map_err(candle_err)?;
            if !value.is_finite() {
                return Err(Error::Router(format!(
                    "loss is {value} at step {step}; lower the learning rate"
                )));
            }
            let grads = loss.backward().map_err(candle_err)?;
            let lr = s.lr * (1.0 - 0.9 * step as f64 / steps as f64);
            opt.set_learning_rate(lr);
            opt.step(&grads).map_err(candle_err)?;
            let g = grads
                .get(embedding.as_tensor())
                .ok_or_else(|| Error::Router("the embedding table got no gradient".into()))?
                .flatten_all()
                .and_then(|g| g.to_vec1::<f32>())
                .map_err(candle_err)?;
            table.step(&touched, &g, lr as f32);
            step += 1;
            bar.set_position(step as u64);
            bar.set_message(format!("{value:.4}"));
        }
    }
    bar.finish_and_clear();
    let model = table
        .into_classifier(weight, bias, s.pooling, &dev)
        .map_err(candle_err)?;
    let correct = if val.is_empty() {
        0
    } else {
        let vf: Vec<Features> = val
            .iter()
            .map(|e| s.featurizer.featurize(&e.text))
            .collect();
        let refs: Vec<&Features> = vf.iter().collect();
        let logits = logits_of(&model, &refs, n_entries)?;
        val.iter()
            .zip(logits.chunks(n_entries))
            .filter(|(e, l)| e.entries.contains(&argmax(l)))
            .count()
    };
    Ok(Trained {
        meta: RouterMeta {
            settings: s.clone(),
            entries: entries.to_vec(),
            trained_questions: train.len(),
            validation_questions: val.len(),
            validation_accuracy: if val.is_empty() {
                0.0
            } else {
                correct as f32 / val.len() as f32
            },
            train_seconds: started.elapsed().as_secs_f64(),
        },
        model,
    })
}

fn logits_of(model: &Classifier, rows: &[&Features], n: usize) -> Result<Vec<f32>> {
    let dev = Device::Cpu;
    let mut out = Vec::with_capacity(rows.len() * n);
    for chunk in rows.chunks(256) {
        let (ids, w) = crate::moderation::batch_tensors(chunk, &dev)
            .map_err(|e| Error::Router(e.to_string()))?;
        let z = model
            .logits(&ids, &w)
            .and_then(|z| z.flatten_all())
            .and_then(|z| z.to_vec1::<f32>())
            .map_err(candle_err)?;
        out.extend(z);
    }
    Ok(out)
}

pub(crate) fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i)
}

impl Trained {
    /// Raw scores (logits) per entry for `texts`, from candle: the parity
    /// reference for the exported graph.
    pub fn logits(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let f: Vec<Features> = texts
            .iter()
            .map(|t| self.meta.settings.featurizer.featurize(t))
            .collect();
        let refs: Vec<&Features> = f.iter().collect();
        let n = self.meta.entries.len();
        Ok(logits_of(&self.model, &refs, n)?
            .chunks(n)
            .map(<[f32]>::to_vec)
            .collect())
    }

    /// Writes `router.onnx` and `router.json` into `dir`, after checking
    /// that ONNX Runtime gives candle's scores on a sample.
    pub fn write(&self, dir: &Path, sample: &[&str]) -> Result<f32> {
        let graph = classifier_graph(&self.model, None, "kb_router")
            .map_err(|e| Error::Router(e.to_string()))?;
        let bytes = prost::Message::encode_to_vec(&graph);
        let cpu = RuntimeConfig {
            providers: vec![crate::runtime::Provider::Cpu],
            intra_threads: 1,
            ..RuntimeConfig::default()
        };
        let mut session = runtime::open_memory(&cpu, &bytes, "the exported router")
            .map_err(|e| Error::Router(e.to_string()))?
            .session;
        let want = self.logits(sample)?;
        let feats: Vec<Features> = sample
            .iter()
            .map(|t| self.meta.settings.featurizer.featurize(t))
            .collect();
        let got = run(&mut session, &feats, self.meta.entries.len())?;
        let max_diff = want
            .iter()
            .flatten()
            .zip(got.iter().flatten())
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        if max_diff > crate::export::PARITY_TOLERANCE {
            return Err(Error::Router(format!(
                "the exported router differs from candle by {max_diff} (tolerance {})",
                crate::export::PARITY_TOLERANCE
            )));
        }
        crate::fsio::write_atomic(&dir.join(ROUTER_ONNX), &bytes)?;
        crate::fsio::write_json_atomic(&dir.join(ROUTER_JSON), &self.meta)?;
        Ok(max_diff)
    }
}

fn run(session: &mut Session, feats: &[Features], n: usize) -> Result<Vec<Vec<f32>>> {
    let rows: Vec<&Features> = feats.iter().collect();
    let flat = crate::moderation::run_scores(session, &rows, n)
        .map_err(|e| Error::Router(e.to_string()))?;
    Ok(flat.chunks(n).map(<[f32]>::to_vec).collect())
}

/// The router as served: ONNX sessions (one per thread scoring at once)
/// and its metadata.
pub struct Router {
    sessions: Vec<Mutex<Session>>,
    next: AtomicUsize,
    pub meta: RouterMeta,
}

impl Router {
    pub fn open(dir: &Path, runtime: &RuntimeConfig, sessions: usize) -> Result<Self> {
        let meta = RouterMeta::read(dir)?;
        let cfg = RuntimeConfig {
            intra_threads: 1,
            ..runtime.clone()
        };
        let onnx = dir.join(ROUTER_ONNX);
        let mut all = Vec::new();
        for _ in 0..sessions.max(1) {
            let s = runtime::open_file(&cfg, &onnx)
                .map_err(|e| Error::Format(format!("{}: {e}", onnx.display())))?;
            all.push(Mutex::new(s.session));
        }
        Ok(Self {
            sessions: all,
            next: AtomicUsize::new(0),
            meta,
        })
    }

    /// Raw scores per entry (in `meta.entries` order) for each text.
    pub fn scores(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let feats: Vec<Features> = texts
            .iter()
            .map(|t| self.meta.settings.featurizer.featurize(t))
            .collect();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let k = self.sessions.len();
        let mut guard = None;
        for i in 0..k {
            match self.sessions[(start + i) % k].try_lock() {
                Ok(s) => {
                    guard = Some(s);
                    break;
                }
                Err(std::sync::TryLockError::Poisoned(p)) => {
                    guard = Some(p.into_inner());
                    break;
                }
                Err(std::sync::TryLockError::WouldBlock) => {}
            }
        }
        let mut session = match guard {
            Some(g) => g,
            None => self.sessions[start % k]
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        };
        run(&mut session, &feats, self.meta.entries.len())
    }
}

/// Softmax of raw scores.
pub fn softmax(z: &[f32]) -> Vec<f32> {
    let m = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = z.iter().map(|v| (v - m).exp()).collect();
    let s: f32 = e.iter().sum();
    e.iter().map(|v| v / s.max(f32::MIN_POSITIVE)).collect()
}
