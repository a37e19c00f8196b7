//! The training config file (`models/*.toml`): model shape, tokenizer and
//! loop settings. Only what differs from the defaults needs writing.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{Error, Result, TrainDevice};
use crate::model::GptConfig;
use crate::text::TokenizerKind;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub model: ModelSection,
    #[serde(default)]
    pub tokenizer: TokenizerSection,
    #[serde(default)]
    pub train: TrainSection,
    /// The fine-tuning loop (`chatforge quickstart`): keys set here replace
    /// those of [`finetune_defaults`](super::finetune_defaults); absent
    /// means those defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finetune: Option<toml::Table>,
}

/// Model shape; the vocabulary size comes from the tokenizer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    pub n_layer: usize,
    pub n_head: usize,
    pub n_embd: usize,
    /// Longest context the model can ever see (position table size).
    pub n_positions: usize,
    #[serde(default)]
    pub dropout: f32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenizerSection {
    /// `bpe` (byte-level, GPT-2 style) or `char`.
    pub kind: TokenizerKind,
    /// Target vocabulary size for BPE (bytes and special tokens included).
    pub vocab_size: usize,
}

impl Default for TokenizerSection {
    fn default() -> Self {
        Self {
            kind: TokenizerKind::Bpe,
            vocab_size: 4096,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainSection {
    /// Optimiser steps (each of `grad_accum` micro-batches).
    pub steps: usize,
    /// Sequences per micro-batch.
    pub batch_size: usize,
    /// Training context; `None` means `n_positions`.
    pub block_size: Option<usize>,
    /// Micro-batches whose gradients are summed before each step.
    pub grad_accum: usize,
    /// Peak learning rate, reached after `warmup_steps`.
    pub lr: f64,
    /// Floor of the cosine decay.
    pub min_lr: f64,
    pub warmup_steps: usize,
    /// End of the cosine decay; `None` means `steps`. Set it to extend a run
    /// later with `--resume --steps` on the same schedule.
    pub lr_decay_steps: Option<usize>,
    /// Decoupled weight decay, applied to matrix weights only (not to
    /// biases, LayerNorm gains or embeddings).
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Global gradient-norm clip; 0 disables.
    pub grad_clip: f64,
    /// Validate every this many steps (and at the end).
    pub eval_interval: usize,
    /// Validation batches per evaluation.
    pub eval_iters: usize,
    /// Log a metrics line every this many steps.
    pub log_interval: usize,
    /// Write a resumable checkpoint every this many steps (and at the end).
    pub checkpoint_interval: usize,
    /// Share of the data held out for validation.
    pub val_fraction: f64,
    /// Seeds initialisation, batch sampling and dropout.
    pub seed: u64,
    /// `cpu` (default) or `cuda[:N]`.
    pub device: TrainDevice,
    /// Wall-clock seconds the run may take. From its first steps the run
    /// measures its speed and lowers `steps` (and the cosine schedule with
    /// it) to what fits, re-measuring through the first half of the run;
    /// `steps` stays the upper bound. A resumed run keeps the fitted count.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_budget_s: Option<f64>,
}

impl Default for TrainSection {
    fn default() -> Self {
        Self {
            steps: 1000,
            batch_size: 16,
            block_size: None,
            grad_accum: 1,
            lr: 1e-3,
            min_lr: 1e-4,
            warmup_steps: 50,
            lr_decay_steps: None,
            weight_decay: 0.1,
            beta1: 0.9,
            beta2: 0.99,
            eps: 1e-8,
            grad_clip: 1.0,
            eval_interval: 100,
            eval_iters: 20,
            log_interval: 10,
            checkpoint_interval: 250,
            val_fraction: 0.1,
            seed: 1337,
            device: TrainDevice::Cpu,
            time_budget_s: None,
        }
    }
}

impl TrainConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(super::io_err(path))?;
        let cfg: Self =
            toml::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        Ok(cfg)
    }

    /// The GPT config for a tokenizer of `vocab_size` ids.
    pub fn gpt_config(&self, vocab_size: usize) -> GptConfig {
        let m = &self.model;
        let mut cfg = GptConfig::sized(vocab_size, m.n_positions, m.n_embd, m.n_layer, m.n_head);
        cfg.dropout = m.dropout;
        cfg
    }

    /// Fails on settings that cannot work, naming the values.
    pub fn validate(&self) -> Result<()> {
        self.gpt_config(1).validate()?;
        self.train.validate(self.model.n_positions)?;
        self.finetune_section()?.validate(self.model.n_positions)
    }

    /// The fine-tuning loop: the `[finetune]` keys over the built-in
    /// fine-tuning defaults (a lower rate and fewer steps than pretraining).
    pub fn finetune_section(&self) -> Result<TrainSection> {
        let defaults = super::finetune_defaults();
        let Some(keys) = &self.finetune else {
            return Ok(defaults);
        };
        let mut table = toml::Table::try_from(&defaults)
            .map_err(|e| Error::Config(format!("[finetune]: {e}")))?;
        table.extend(keys.iter().map(|(k, v)| (k.clone(), v.clone())));
        table
            .try_into()
            .map_err(|e| Error::Config(format!("[finetune]: {e}")))
    }
}

impl TrainSection {
    pub fn block_size(&self, n_positions: usize) -> usize {
        self.block_size.unwrap_or(n_positions)
    }

    pub fn validate(&self, n_positions: usize) -> Result<()> {
        let fail = |m: String| Err(Error::Config(m));
        let block = self.block_size(n_positions);
        if block > n_positions {
            return fail(format!(
                "block_size ({block}) is longer than the model's n_positions ({n_positions})"
            ));
        }
        if block == 0 || self.batch_size == 0 || self.grad_accum == 0 {
            return fail(format!(
                "block_size ({block}), batch_size ({}) and grad_accum ({}) must be positive",
                self.batch_size, self.grad_accum
            ));
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) || self.min_lr < 0.0 || self.min_lr > self.lr {
            return fail(format!(
                "need 0 <= min_lr ({}) <= lr ({}) and lr > 0",
                self.min_lr, self.lr
            ));
        }
        if !(0.0..1.0).contains(&self.beta1) || !(0.0..1.0).contains(&self.beta2) {
            return fail(format!(
                "beta1 ({}) and beta2 ({}) must be in [0, 1)",
                self.beta1, self.beta2
            ));
        }
        if !(0.0 < self.val_fraction && self.val_fraction < 1.0) {
            return fail(format!(
                "val_fraction ({}) must be in (0, 1)",
                self.val_fraction
            ));
        }
        if self.eval_interval == 0 || self.log_interval == 0 || self.checkpoint_interval == 0 {
            return fail(
                "eval_interval, log_interval and checkpoint_interval must be positive".into(),
            );
        }
        if self.eval_iters == 0 {
            return fail("eval_iters must be positive".into());
        }
        if let Some(b) = self.time_budget_s
            && !(b > 0.0 && b.is_finite())
        {
            return fail(format!("time_budget_s ({b}) must be a positive number"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_presets_parse_and_validate() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/models");
        for name in ["tiny", "demo", "small", "gpt2-124m"] {
            let p = Path::new(dir).join(format!("{name}.toml"));
            let cfg = TrainConfig::from_file(&p).unwrap();
            cfg.validate().unwrap();
            let params = cfg.gpt_config(cfg.tokenizer.vocab_size).num_params();
            match name {
                "tiny" => assert!(params < 1_000_000, "tiny has {params}"),
                "demo" => assert!(
                    (1_000_000..8_000_000).contains(&params),
                    "demo has {params}"
                ),
                "small" => assert!(
                    (8_000_000..14_000_000).contains(&params),
                    "small has {params}"
                ),
                _ => assert_eq!(params, 124_439_808),
            }
        }
    }

    #[test]
    fn test_block_longer_than_positions_is_named() {
        let mut cfg: TrainConfig =
            toml::from_str("[model]\nn_layer = 1\nn_head = 2\nn_embd = 8\nn_positions = 16\n")
                .unwrap();
        cfg.train.block_size = Some(32);
        let err = cfg.validate().unwrap_err().to_string();
        assert!(
            err.contains("block_size (32)") && err.contains("n_positions (16)"),
            "{err}"
        );
        cfg.train.block_size = None;
        cfg.model.n_head = 3;
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("not divisible"), "{err}");
    }

    #[test]
    fn test_finetune_table_overrides_the_defaults() {
        let text = "[model]\nn_layer = 1\nn_head = 2\nn_embd = 8\nn_positions = 16\n";
        let cfg: TrainConfig = toml::from_str(text).unwrap();
        assert_eq!(
            cfg.finetune_section().unwrap(),
            super::super::finetune_defaults()
        );
        let cfg: TrainConfig =
            toml::from_str(&format!("{text}[finetune]\nsteps = 7\nlr = 1e-3\n")).unwrap();
        let t = cfg.finetune_section().unwrap();
        assert_eq!((t.steps, t.lr), (7, 1e-3));
        assert_eq!(t.batch_size, super::super::finetune_defaults().batch_size);
        let cfg: TrainConfig = toml::from_str(&format!("{text}[finetune]\nstepz = 7\n")).unwrap();
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("[finetune]") && err.contains("stepz"), "{err}");
    }

    #[test]
    fn test_unknown_field_is_rejected() {
        let err = toml::from_str::<TrainConfig>(
            "[model]\nn_layer = 1\nn_head = 2\nn_embd = 8\nn_positions = 16\nn_lyaer = 3\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("n_lyaer"), "{err}");
    }
}
