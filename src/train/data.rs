//! Batches for the training loop. Sampling draws from the step's own RNG,
//! so the data position of a run is a function of (seed, step) and a
//! resumed run sees exactly the batches the uninterrupted one would.

use candle_core::{Device, Tensor};
use rand::Rng;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};

use super::{Error, Result};
use crate::text::{ChatTokenizer, Dialog, EncodedDialog, Role, encode_dialog, encode_dialog_last};

/// One micro-batch: inputs (B, T), flat targets (B·T), optional weights.
pub struct Batch {
    pub x: Tensor,
    pub y: Tensor,
    /// Per-target weight (1 = counted); `None` counts every target.
    pub w: Option<Tensor>,
    /// Number of counted targets.
    pub targets: usize,
    /// UTF-8 bytes the counted targets stand for (bits-per-byte).
    pub target_bytes: u64,
}

/// A source of training and validation batches.
pub trait Dataset {
    fn train_batch(&self, rng: &mut ChaCha8Rng, b: usize, t: usize, dev: &Device) -> Result<Batch>;
    /// A fixed set of validation batches (the same on every call).
    fn val_batches(&self, b: usize, t: usize, n: usize, dev: &Device) -> Result<Vec<Batch>>;
    /// Identifies the data, so a resume on different data is refused.
    fn fingerprint(&self) -> String;
    /// Tokens of training data, for the log.
    fn train_tokens(&self) -> usize;
}

const VAL_SEED: u64 = 0x5eed_0fa1;

/// Documents joined by `<|endoftext|>` into one stream, split into a
/// training head and a validation tail (nanoGPT's 90/10 split).
pub struct PretrainData {
    train: Vec<u32>,
    val: Vec<u32>,
    token_bytes: Vec<u32>,
    fingerprint: String,
}

impl PretrainData {
    pub fn new(tok: &ChatTokenizer, docs: &[String], val_fraction: f64) -> Result<Self> {
        let eot = tok.special().endoftext;
        let mut stream = Vec::new();
        for d in docs {
            stream.extend(tok.encode_text(d)?);
            if docs.len() > 1 {
                stream.push(eot);
            }
        }
        let n_val = ((stream.len() as f64) * val_fraction).round() as usize;
        let val = stream.split_off(stream.len() - n_val);
        Ok(Self {
            fingerprint: fingerprint_ids(&[&stream, &val]),
            train: stream,
            val,
            token_bytes: tok.token_bytes().to_vec(),
        })
    }

    fn window_batch(
        &self,
        data: &[u32],
        starts: &[usize],
        t: usize,
        dev: &Device,
    ) -> Result<Batch> {
        let b = starts.len();
        let mut x = Vec::with_capacity(b * t);
        let mut y = Vec::with_capacity(b * t);
        for &s in starts {
            x.extend_from_slice(&data[s..s + t]);
            y.extend_from_slice(&data[s + 1..s + t + 1]);
        }
        let target_bytes = y
            .iter()
            .map(|&i| self.token_bytes.get(i as usize).copied().unwrap_or(0) as u64)
            .sum();
        Ok(Batch {
            x: Tensor::from_vec(x, (b, t), dev)?,
            y: Tensor::from_vec(y, b * t, dev)?,
            w: None,
            targets: b * t,
            target_bytes,
        })
    }
}

fn check_len(split: &str, have: usize, t: usize) -> Result<()> {
    if have < t + 1 {
        return Err(Error::Data(format!(
            "the {split} split has {have} tokens but a block needs {}: add data, or lower block_size or val_fraction",
            t + 1
        )));
    }
    Ok(())
}

impl Dataset for PretrainData {
    fn train_batch(&self, rng: &mut ChaCha8Rng, b: usize, t: usize, dev: &Device) -> Result<Batch> {
        check_len("training", self.train.len(), t)?;
        let starts: Vec<usize> = (0..b)
            .map(|_| rng.random_range(0..self.train.len() - t))
            .collect();
        self.window_batch(&self.train, &starts, t, dev)
    }

    fn val_batches(&self, b: usize, t: usize, n: usize, dev: &Device) -> Result<Vec<Batch>> {
        check_len("validation", self.val.len(), t)?;
        let mut rng = ChaCha8Rng::seed_from_u64(VAL_SEED);
        (0..n)
            .map(|_| {
                let starts: Vec<usize> = (0..b)
                    .map(|_| rng.random_range(0..self.val.len() - t))
                    .collect();
                self.window_batch(&self.val, &starts, t, dev)
            })
            .collect()
    }

    fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }

    fn train_tokens(&self) -> usize {
        self.train.len()
    }
}

/// A dialog with a context block belongs to its last reply (a RAFT
/// example): only that reply was written with this context, so only it is
/// learned. Too long, it loses its oldest turns, then its last passages, as
/// a prompt does when served, so that the reply itself is never cut.
fn encode_with_context(tok: &ChatTokenizer, d: &Dialog, max_len: usize) -> Result<EncodedDialog> {
    let mut d = d.clone();
    loop {
        let e = encode_dialog_last(tok, &d)?;
        if e.ids.len() <= max_len {
            return Ok(e);
        }
        let first = d.messages.iter().position(|m| m.role != Role::System);
        let last_user = d.messages.iter().rposition(|m| m.role == Role::User);
        match (first, last_user) {
            (Some(f), Some(l)) if f < l => {
                d.messages.remove(f);
            }
            _ if d.context.pop().is_some() => {}
            _ => return Ok(e),
        }
    }
}

/// What fine-tuning trains on, in the dialogs' order: each dialog encoded
/// (a RAFT example learns only its last reply and loses turns, then
/// passages, to fit), cut to `max_len`, and dropped when nothing in it is
/// learned. `scripts/finetune_hf.py` builds the same for transformers.
pub fn training_examples(
    tok: &ChatTokenizer,
    dialogs: &[Dialog],
    max_len: usize,
) -> Result<Vec<EncodedDialog>> {
    let mut encoded = Vec::with_capacity(dialogs.len());
    let mut cut = 0;
    for d in dialogs {
        let mut e = if d.context.is_empty() {
            encode_dialog(tok, d)?
        } else {
            encode_with_context(tok, d, max_len)?
        };
        if e.ids.len() > max_len {
            cut += 1;
            e.ids.truncate(max_len);
            e.loss_mask.truncate(max_len);
        }
        if e.loss_mask[1..].iter().any(|&m| m) {
            encoded.push(e);
        }
    }
    if cut > 0 {
        tracing::warn!("{cut} dialogs were longer than {max_len} tokens and were cut");
    }
    Ok(encoded)
}

/// Encoded dialogs for fine-tuning; only assistant tokens carry weight.
pub struct DialogData {
    train: Vec<(Vec<u32>, Vec<bool>)>,
    val: Vec<(Vec<u32>, Vec<bool>)>,
    pad: u32,
    token_bytes: Vec<u32>,
    fingerprint: String,
}

impl DialogData {
    /// Encodes dialogs and holds out `val_fraction` of them (chosen by
    /// `seed`). Dialogs longer than `max_len` tokens are cut at the end.
    pub fn new(
        tok: &ChatTokenizer,
        dialogs: &[Dialog],
        val_fraction: f64,
        seed: u64,
        max_len: usize,
    ) -> Result<Self> {
        if dialogs.is_empty() {
            return Err(Error::Data("no dialogs to fine-tune on".into()));
        }
        let encoded: Vec<(Vec<u32>, Vec<bool>)> = training_examples(tok, dialogs, max_len)?
            .into_iter()
            .map(|e| (e.ids, e.loss_mask))
            .collect();
        let mut order: Vec<usize> = (0..encoded.len()).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ VAL_SEED);
        for i in (1..order.len()).rev() {
            order.swap(i, rng.random_range(0..=i));
        }
        let n_val = ((encoded.len() as f64) * val_fraction).round().max(1.0) as usize;
        if encoded.len() < n_val + 1 {
            return Err(Error::Data(format!(
                "{} usable dialogs are too few to hold out {n_val} for validation",
                encoded.len()
            )));
        }
        let mut val_idx: Vec<usize> = order[..n_val].to_vec();
        val_idx.sort_unstable();
        let mut slots: Vec<Option<(Vec<u32>, Vec<bool>)>> = encoded.into_iter().map(Some).collect();
        let val: Vec<_> = val_idx.iter().filter_map(|&i| slots[i].take()).collect();
        let train: Vec<_> = slots.into_iter().flatten().collect();
        let all_ids: Vec<&[u32]> = train.iter().chain(&val).map(|e| e.0.as_slice()).collect();
        Ok(Self {
            fingerprint: fingerprint_ids(&all_ids),
            train,
            val,
            pad: tok.special().endoftext,
            token_bytes: tok.token_bytes().to_vec(),
        })
    }

    pub fn counts(&self) -> (usize, usize) {
        (self.train.len(), self.val.len())
    }

    fn batch(&self, rows: &[&(Vec<u32>, Vec<bool>)], t: usize, dev: &Device) -> Result<Batch> {
        let b = rows.len();
        let mut x = vec![self.pad; b * t];
        let mut y = vec![self.pad; b * t];
        let mut w = vec![0f32; b * t];
        let (mut targets, mut target_bytes) = (0, 0u64);
        for (r, (ids, mask)) in rows.iter().enumerate() {
            let n = (ids.len() - 1).min(t);
            x[r * t..r * t + n].copy_from_slice(&ids[..n]);
            y[r * t..r * t + n].copy_from_slice(&ids[1..n + 1]);
            for j in 0..n {
                if mask[j + 1] {
                    w[r * t + j] = 1.0;
                    targets += 1;
                    target_bytes += self
                        .token_bytes
                        .get(ids[j + 1] as usize)
                        .copied()
                        .unwrap_or(0) as u64;
                }
            }
        }
        Ok(Batch {
            x: Tensor::from_vec(x, (b, t), dev)?,
            y: Tensor::from_vec(y, b * t, dev)?,
            w: Some(Tensor::from_vec(w, b * t, dev)?),
            targets,
            target_bytes,
        })
    }
}

impl Dataset for DialogData {
    fn train_batch(&self, rng: &mut ChaCha8Rng, b: usize, t: usize, dev: &Device) -> Result<Batch> {
        let rows: Vec<_> = (0..b)
            .map(|_| &self.train[rng.random_range(0..self.train.len())])
            .collect();
        self.batch(&rows, t, dev)
    }

    fn val_batches(&self, b: usize, t: usize, n: usize, dev: &Device) -> Result<Vec<Batch>> {
        let rows: Vec<_> = self.val.iter().collect();
        rows.chunks(b)
            .take(n)
            .map(|c| self.batch(c, t, dev))
            .collect()
    }

    fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }

    fn train_tokens(&self) -> usize {
        self.train.iter().map(|e| e.0.len()).sum()
    }
}

fn fingerprint_ids(parts: &[&[u32]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        for id in *p {
            h.update(id.to_le_bytes());
        }
    }
    hex::encode(&h.finalize()[..8])
}
