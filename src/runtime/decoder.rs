//! The exported GPT decoder in an ONNX Runtime session: a forward pass over
//! new tokens given the KV cache of earlier ones.

use std::collections::HashSet;

use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, Tensor};

use super::providers::{LoadedSession, Provider};
use super::{Error, Result};
use crate::export::LOGITS_TO_KEEP;
use crate::model::GptConfig;

/// Keys and values of every layer for the tokens seen so far,
/// `[batch, n_head, len, head_dim]` each, as ONNX Runtime returned them.
pub struct KvCache {
    values: Vec<DynValue>,
    pub batch: usize,
    pub len: usize,
}

impl KvCache {
    /// A cache made on the host (for rows joining or leaving a batch).
    pub(crate) fn from_values(values: Vec<DynValue>, batch: usize, len: usize) -> Self {
        Self { values, batch, len }
    }

    pub(crate) fn values(&self) -> &[DynValue] {
        &self.values
    }
}

pub struct OnnxDecoder {
    session: Session,
    provider: Provider,
    cfg: GptConfig,
    input_names: Vec<String>,
    output_names: Vec<String>,
    /// The model takes `logits_to_keep` (exports before it compute the
    /// logits of every position).
    keeps_logits: bool,
}

/// Which positions' logits a forward pass returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// `[batch, seq, vocab]`.
    All,
    /// `[batch, vocab]`: each row's last position, the one generation
    /// draws from.
    Last,
}

fn ort_err(e: impl std::fmt::Display) -> Error {
    Error::Run(e.to_string())
}

impl OnnxDecoder {
    /// Wraps a session, checking that its inputs and outputs are the
    /// decoder contract for `cfg` (a model file from another bundle, or an
    /// older export, is refused here rather than failing mid-generation).
    pub fn new(loaded: LoadedSession, cfg: &GptConfig) -> Result<Self> {
        let mut input_names = vec![
            "input_ids".to_string(),
            "attention_mask".to_string(),
            "position_ids".to_string(),
        ];
        let mut output_names = vec!["logits".to_string()];
        for i in 0..cfg.n_layer {
            for kind in ["key", "value"] {
                input_names.push(format!("past_key_values.{i}.{kind}"));
                output_names.push(format!("present.{i}.{kind}"));
            }
        }
        let have_in: HashSet<&str> = loaded.session.inputs().iter().map(|o| o.name()).collect();
        let have_out: HashSet<&str> = loaded.session.outputs().iter().map(|o| o.name()).collect();
        let want_in: HashSet<&str> = input_names.iter().map(String::as_str).collect();
        let want_out: HashSet<&str> = output_names.iter().map(String::as_str).collect();
        if have_in != want_in || have_out != want_out {
            return Err(Error::Model(format!(
                "the ONNX model does not match config.json ({} layers): inputs {:?}, outputs {:?}",
                cfg.n_layer,
                sorted(&have_in),
                sorted(&have_out)
            )));
        }
        if let Some(shape) = loaded
            .session
            .outputs()
            .iter()
            .find(|o| o.name() == "logits")
            .and_then(|o| o.dtype().tensor_shape())
        {
            let vocab = shape.last().copied().unwrap_or(-1);
            if vocab >= 0 && vocab as usize != cfg.vocab_size {
                return Err(Error::Model(format!(
                    "the ONNX model has {vocab} logits per token but config.json says vocab_size {}",
                    cfg.vocab_size
                )));
            }
        }
        let keeps_logits = loaded
            .session
            .overridable_initializers()
            .iter()
            .any(|i| i.name() == LOGITS_TO_KEEP);
        Ok(Self {
            session: loaded.session,
            provider: loaded.provider,
            cfg: cfg.clone(),
            input_names,
            output_names,
            keeps_logits,
        })
    }

    pub fn provider(&self) -> Provider {
        self.provider
    }

    pub fn config(&self) -> &GptConfig {
        &self.cfg
    }

    /// A cache holding nothing, for the first (prefill) step.
    pub fn empty_cache(&self, batch: usize) -> Result<KvCache> {
        let (h, d) = (self.cfg.n_head, self.cfg.head_dim());
        let values = (0..2 * self.cfg.n_layer)
            .map(|_| {
                Tensor::<f32>::from_array(([batch, h, 0, d], Vec::<f32>::new()))
                    .map(|t| t.into_dyn())
                    .map_err(ort_err)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(KvCache {
            values,
            batch,
            len: 0,
        })
    }

    /// Runs `seq` new tokens per row. `ids` and `positions` are
    /// `[batch, seq]`, `mask` is `[batch, cache.len + seq]`, all row-major.
    /// Returns the logits `which` asks for and the grown cache.
    pub fn forward(
        &mut self,
        ids: &[i64],
        positions: &[i64],
        mask: &[i64],
        cache: KvCache,
        which: Logits,
    ) -> Result<(Vec<f32>, KvCache)> {
        let batch = cache.batch;
        if batch == 0 || ids.is_empty() || !ids.len().is_multiple_of(batch) {
            return Err(Error::Input(format!(
                "{} ids do not fill {batch} rows",
                ids.len()
            )));
        }
        let seq = ids.len() / batch;
        let total = cache.len + seq;
        if positions.len() != ids.len() || mask.len() != batch * total {
            return Err(Error::Input(format!(
                "positions ({}) or attention mask ({}) do not match {batch}×{seq} ids after {} cached",
                positions.len(),
                mask.len(),
                cache.len
            )));
        }
        if total > self.cfg.n_positions {
            return Err(Error::Input(format!(
                "{total} tokens exceed the model's context of {}",
                self.cfg.n_positions
            )));
        }
        let vocab = self.cfg.vocab_size as i64;
        if let Some(bad) = ids.iter().find(|&&i| i < 0 || i >= vocab) {
            return Err(Error::Input(format!(
                "token id {bad} is outside the vocabulary ({vocab})"
            )));
        }
        let tensor = |shape: [usize; 2], data: &[i64]| -> Result<SessionInputValue<'static>> {
            Ok(Tensor::<i64>::from_array((shape, data.to_vec()))
                .map_err(ort_err)?
                .into())
        };
        let mut inputs: Vec<(String, SessionInputValue<'static>)> = vec![
            (self.input_names[0].clone(), tensor([batch, seq], ids)?),
            (self.input_names[1].clone(), tensor([batch, total], mask)?),
            (
                self.input_names[2].clone(),
                tensor([batch, seq], positions)?,
            ),
        ];
        for (name, value) in self.input_names[3..].iter().zip(cache.values) {
            inputs.push((name.clone(), value.into()));
        }
        let last_only = which == Logits::Last && seq > 1;
        if last_only && self.keeps_logits {
            let keep = Tensor::<i64>::from_array(([1usize], vec![1i64])).map_err(ort_err)?;
            inputs.push((LOGITS_TO_KEEP.to_string(), keep.into()));
        }
        let mut outputs = self.session.run(inputs).map_err(ort_err)?;
        let logits = {
            let value = outputs
                .get("logits")
                .ok_or_else(|| Error::Run("no logits output".into()))?;
            let (_, data) = value.try_extract_tensor::<f32>().map_err(ort_err)?;
            let vocab = self.cfg.vocab_size;
            let rows = if last_only { batch } else { batch * seq };
            if data.len() == rows * vocab {
                data.to_vec()
            } else if last_only && data.len() == batch * seq * vocab {
                // An export without `logits_to_keep`: every position came back.
                data.chunks_exact(seq * vocab)
                    .flat_map(|row| &row[(seq - 1) * vocab..])
                    .copied()
                    .collect()
            } else {
                return Err(Error::Run(format!(
                    "{} logits for {batch}×{seq} tokens of a {vocab}-token vocabulary",
                    data.len()
                )));
            }
        };
        let mut values = Vec::with_capacity(2 * self.cfg.n_layer);
        for name in &self.output_names[1..] {
            values.push(
                outputs
                    .remove(name.as_str())
                    .ok_or_else(|| Error::Run(format!("no {name} output")))?,
            );
        }
        Ok((
            logits,
            KvCache {
                values,
                batch,
                len: total,
            },
        ))
    }
}

fn sorted(set: &HashSet<&str>) -> Vec<String> {
    let mut v: Vec<String> = set.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}
