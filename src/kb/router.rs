//! The trained router: which entries a question asks for, learned from
//! labelled example questions. The model is the moderation classifier's
//! (hashed character and word n-grams → mean of embeddings → linear), with
//! a softmax over the knowledge base's entries instead of sigmoids over
//! labels: a fastText-style text classifier, which reads typos and slang
//! by their character n-grams where BM25 needs the exact word. Trained in
//! candle, exported to ONNX, run through ONNX Runtime.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use candle_core::{Device, Tensor, Var};
use candle_nn::Optimizer as _;
use indicatif::{ProgressBar, ProgressStyle};
use ort::session::Session;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::lexicon::{KB_TOKENIZER_FILE, Lexicon, LexiconTokenizer, NORM_FLOOR, pooled};
use super::{Error, Result};
use crate::moderation::{
    Classifier, Features, FeaturizerConfig, LexiconPart, Pooling, SparseAdam, SparseBatch,
    classifier_graph, gathered_mean, pad,
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
    /// The pretrained lexicon the router reads beside its n-grams
    /// (recorded by training; `kb train --lexicon` chooses it). None:
    /// n-grams only, as routers trained before it.
    #[serde(default)]
    pub lexicon: Option<LexiconInfo>,
    /// The lexicon table's learning rate, as a share of `lr` (0: frozen).
    #[serde(default)]
    pub lexicon_lr: f64,
}

/// Which lexicon a router was trained with, and its table's shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LexiconInfo {
    pub name: String,
    pub rows: usize,
    pub dim: usize,
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
            lexicon: None,
            lexicon_lr: 0.0,
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
    lexical: Option<Lexical>,
}

/// The lexicon stream of a trained router: its table (the pretrained one,
/// fine-tuned) and the trained map from a question's lexicon vector to the
/// entries' scores.
struct Lexical {
    lexicon: Arc<Lexicon>,
    /// `[rows, dim]`, row-major.
    table: Vec<f32>,
    /// `[dim, entries]`, row-major.
    weight: Vec<f32>,
}

/// The L2-normalised weighted mean of `table`'s rows `ids` (`[b, n]`,
/// weights `w`): [`super::lexicon::pooled`] in candle, for training.
fn lexicon_vectors(table: &Tensor, ids: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
    let (_, mean) = gathered_mean(table, ids, w)?;
    // max(‖v‖, floor) as sqrt(max(‖v‖², floor²)): no infinite gradient
    // at an empty text's zero vector.
    let floor = f64::from(NORM_FLOOR) * f64::from(NORM_FLOOR);
    let norm = mean.sqr()?.sum_keepdim(1)?.maximum(floor)?.sqrt()?;
    mean.broadcast_div(&norm)
}

impl Lexical {
    /// Adds each text's lexicon scores to its row of `z` (`n` per row).
    fn add_to(&self, texts: &[&str], z: &mut [f32], n: usize) {
        for (t, row) in texts.iter().zip(z.chunks_mut(n)) {
            let f = self.lexicon.tokenizer.features(t);
            let v = pooled(&self.table, self.lexicon.dim, &f.ids, &f.weights);
            for (d, x) in v.iter().enumerate() {
                if *x != 0.0 {
                    let w = &self.weight[d * n..(d + 1) * n];
                    row.iter_mut().zip(w).for_each(|(r, w)| *r += x * w);
                }
            }
        }
    }
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
    lexicon: Option<&Arc<Lexicon>>,
    progress: bool,
) -> Result<Trained> {
    let mut settings = settings.clone();
    settings.lexicon = lexicon.map(|l| LexiconInfo {
        name: l.name.clone(),
        rows: l.rows,
        dim: l.dim,
    });
    let s = &settings;
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
    let mut vars = vec![weight.clone(), bias.clone()];
    // The lexicon stream: its table (fine-tuned at `lexicon_lr` × the
    // learning rate, rows a batch touches only), each question's tokens,
    // and the map to the entries.
    let mut lex = match lexicon {
        Some(l) => {
            let w = Var::zeros((l.dim, n_entries), candle_core::DType::F32, &dev)
                .map_err(candle_err)?;
            vars.push(w.clone());
            let tokens: Vec<Features> = train
                .iter()
                .map(|e| l.tokenizer.features(&e.text))
                .collect();
            Some((SparseAdam::new(l.table.clone(), l.dim), w, tokens))
        }
        None => None,
    };
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
            let z = model.logits(&ids, &w).map_err(candle_err)?;
            let (loss, lex_batch) = match &lex {
                None => (softmax_ce(&z, &onehot).map_err(candle_err)?, None),
                Some((lex_table, lw, tokens)) => {
                    let token_rows: Vec<&Features> = batch.iter().map(|&i| &tokens[i]).collect();
                    let (n, ids, w) = pad(&token_rows);
                    let part = lex_table
                        .batch(token_rows.len(), n, &ids, w, &dev)
                        .map_err(candle_err)?;
                    // Each stream is also trained to answer alone: trained
                    // only on their sum, the n-grams learn the training
                    // questions by heart before the lexicon learns much,
                    // and the sum then gains nothing on new wordings.
                    let loss = lexicon_vectors(part.embedding.as_tensor(), &part.ids, &part.w)
                        .and_then(|v| v.matmul(lw.as_tensor()))
                        .and_then(|l| {
                            let both = softmax_ce(&(&z + &l)?, &onehot)?;
                            let alone = (softmax_ce(&z, &onehot)? + softmax_ce(&l, &onehot)?)?;
                            both + alone
                        })
                        .map_err(candle_err)?;
                    (loss, Some(part))
                }
            };
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
            if let (Some((lex_table, _, _)), Some(part)) = (&mut lex, lex_batch)
                && s.lexicon_lr > 0.0
            {
                let g = grads
                    .get(part.embedding.as_tensor())
                    .ok_or_else(|| Error::Router("the lexicon got no gradient".into()))?
                    .flatten_all()
                    .and_then(|g| g.to_vec1::<f32>())
                    .map_err(candle_err)?;
                lex_table.step(&part.touched, &g, (lr * s.lexicon_lr) as f32);
            }
            step += 1;
            bar.set_position(step as u64);
            bar.set_message(format!("{value:.4}"));
        }
    }
    bar.finish_and_clear();
    let model = table
        .into_classifier(weight, bias, s.pooling, &dev)
        .map_err(candle_err)?;
    let lexical = match (lex, lexicon) {
        (Some((lex_table, w, _)), Some(l)) => Some(Lexical {
            lexicon: Arc::clone(l),
            table: lex_table.into_data(),
            weight: w
                .as_tensor()
                .flatten_all()
                .and_then(|t| t.to_vec1::<f32>())
                .map_err(candle_err)?,
        }),
        _ => None,
    };
    let mut trained = Trained {
        meta: RouterMeta {
            settings: s.clone(),
            entries: entries.to_vec(),
            trained_questions: train.len(),
            validation_questions: val.len(),
            validation_accuracy: 0.0,
            train_seconds: 0.0,
        },
        model,
        lexical,
    };
    if !val.is_empty() {
        let texts: Vec<&str> = val.iter().map(|e| e.text.as_str()).collect();
        let correct = trained
            .logits(&texts)?
            .iter()
            .zip(val)
            .filter(|(l, e)| e.entries.contains(&argmax(l)))
            .count();
        trained.meta.validation_accuracy = correct as f32 / val.len() as f32;
    }
    trained.meta.train_seconds = started.elapsed().as_secs_f64();
    Ok(trained)
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
        let mut z = logits_of(&self.model, &refs, n)?;
        if let Some(l) = &self.lexical {
            l.add_to(texts, &mut z, n);
        }
        Ok(z.chunks(n).map(<[f32]>::to_vec).collect())
    }

    /// Writes `router.onnx` and `router.json` into `dir`, after checking
    /// that ONNX Runtime gives candle's scores on a sample.
    pub fn write(&self, dir: &Path, sample: &[&str]) -> Result<f32> {
        let part = self.lexical.as_ref().map(|l| LexiconPart {
            table: &l.table,
            rows: l.lexicon.rows,
            dim: l.lexicon.dim,
            weight: &l.weight,
            norm_floor: NORM_FLOOR,
        });
        let graph = classifier_graph(&self.model, None, part.as_ref(), "kb_router")
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
        let tokenizer = self.lexical.as_ref().map(|l| &l.lexicon.tokenizer);
        let got = run(
            &mut session,
            &self.meta.settings.featurizer,
            tokenizer,
            sample,
            self.meta.entries.len(),
        )?;
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
        let kb_tokenizer = dir.join(KB_TOKENIZER_FILE);
        match &self.lexical {
            Some(l) => {
                let from = l.lexicon.dir.join(super::lexicon::TOKENIZER_FILE);
                let json = std::fs::read(&from).map_err(crate::fsio::io_err(&from))?;
                crate::fsio::write_atomic(&kb_tokenizer, &json)?;
            }
            None => {
                if kb_tokenizer.exists() {
                    std::fs::remove_file(&kb_tokenizer)
                        .map_err(crate::fsio::io_err(&kb_tokenizer))?;
                }
            }
        }
        crate::fsio::write_atomic(&dir.join(ROUTER_ONNX), &bytes)?;
        crate::fsio::write_json_atomic(&dir.join(ROUTER_JSON), &self.meta)?;
        Ok(max_diff)
    }
}

/// Scores per entry for `texts` from an exported router; `lexicon` when
/// it reads one (its `tokens` and `token_weights` inputs).
fn run(
    session: &mut Session,
    featurizer: &FeaturizerConfig,
    lexicon: Option<&LexiconTokenizer>,
    texts: &[&str],
    n: usize,
) -> Result<Vec<Vec<f32>>> {
    let feats: Vec<Features> = texts.iter().map(|t| featurizer.featurize(t)).collect();
    let rows: Vec<&Features> = feats.iter().collect();
    let tokens: Option<Vec<Features>> =
        lexicon.map(|l| texts.iter().map(|t| l.features(t)).collect());
    let token_rows: Option<Vec<&Features>> = tokens.as_ref().map(|t| t.iter().collect());
    let flat = crate::moderation::run_scores_with(session, &rows, token_rows.as_deref(), n)
        .map_err(|e| Error::Router(e.to_string()))?;
    Ok(flat.chunks(n).map(<[f32]>::to_vec).collect())
}

/// The router as served: ONNX sessions (one per thread scoring at once)
/// and its metadata.
pub struct Router {
    sessions: Vec<Mutex<Session>>,
    next: AtomicUsize,
    lexicon: Option<LexiconTokenizer>,
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
        let lexicon = match &meta.settings.lexicon {
            Some(info) => Some(LexiconTokenizer::open(
                &dir.join(KB_TOKENIZER_FILE),
                info.rows,
            )?),
            None => None,
        };
        Ok(Self {
            sessions: all,
            next: AtomicUsize::new(0),
            lexicon,
            meta,
        })
    }

    /// Raw scores per entry (in `meta.entries` order) for each text.
    pub fn scores(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
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
        run(
            &mut session,
            &self.meta.settings.featurizer,
            self.lexicon.as_ref(),
            texts,
            self.meta.entries.len(),
        )
    }
}

/// Softmax of raw scores.
pub fn softmax(z: &[f32]) -> Vec<f32> {
    let m = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = z.iter().map(|v| (v - m).exp()).collect();
    let s: f32 = e.iter().sum();
    e.iter().map(|v| v / s.max(f32::MIN_POSITIVE)).collect()
}
