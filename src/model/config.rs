use serde::{Deserialize, Serialize};

use super::{Error, Result};

/// GPT-2 hyper-parameters, with Hugging Face `GPT2Config` field names so a
/// `config.json` moves between chatforge and `transformers` unchanged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GptConfig {
    /// Number of token ids the embedding table holds (tokenizer size).
    pub vocab_size: usize,
    /// Longest context the learned position table covers.
    pub n_positions: usize,
    /// Width of the residual stream.
    pub n_embd: usize,
    /// Number of transformer blocks.
    pub n_layer: usize,
    /// Attention heads per block; must divide `n_embd`.
    pub n_head: usize,
    /// Hidden width of the MLP; `None` means 4 × `n_embd` as in GPT-2.
    #[serde(default)]
    pub n_inner: Option<usize>,
    /// Epsilon of every LayerNorm.
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    /// `gelu_new` (tanh form, GPT-2's) or `gelu` (erf form).
    #[serde(default = "default_activation")]
    pub activation_function: String,
    /// Dropout on embeddings, residual branches and attention weights while
    /// training (HF keeps three values; chatforge trains with one).
    #[serde(default, rename = "resid_pdrop")]
    pub dropout: f32,
}

fn default_eps() -> f64 {
    1e-5
}

fn default_activation() -> String {
    "gelu_new".to_string()
}

/// The MLP non-linearity named by `activation_function`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))), GPT-2's choice.
    GeluTanh,
    /// x·Φ(x) with the exact error function.
    GeluErf,
}

impl GptConfig {
    /// A tiny model for tests (under 1M parameters).
    pub fn tiny(vocab_size: usize) -> Self {
        Self::sized(vocab_size, 128, 64, 2, 2)
    }

    /// The original GPT-2 small (124M parameters with the 50,257-token vocabulary).
    pub fn gpt2_124m() -> Self {
        Self::sized(50257, 1024, 768, 12, 12)
    }

    pub fn sized(
        vocab_size: usize,
        n_positions: usize,
        n_embd: usize,
        n_layer: usize,
        n_head: usize,
    ) -> Self {
        Self {
            vocab_size,
            n_positions,
            n_embd,
            n_layer,
            n_head,
            n_inner: None,
            layer_norm_epsilon: default_eps(),
            activation_function: default_activation(),
            dropout: 0.0,
        }
    }

    pub fn inner_dim(&self) -> usize {
        self.n_inner.unwrap_or(4 * self.n_embd)
    }

    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }

    pub fn activation(&self) -> Result<Activation> {
        match self.activation_function.as_str() {
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Ok(Activation::GeluTanh),
            "gelu" => Ok(Activation::GeluErf),
            other => Err(Error::Config(format!(
                "activation_function {other:?} is not supported (use gelu_new or gelu)"
            ))),
        }
    }

    /// Fails loudly on a configuration that cannot work, naming the values.
    pub fn validate(&self) -> Result<()> {
        let fail = |msg: String| Err(Error::Config(msg));
        if self.vocab_size == 0 || self.n_positions == 0 || self.n_embd == 0 {
            return fail(format!(
                "vocab_size ({}), n_positions ({}) and n_embd ({}) must be positive",
                self.vocab_size, self.n_positions, self.n_embd
            ));
        }
        if self.n_layer == 0 || self.n_head == 0 {
            return fail(format!(
                "n_layer ({}) and n_head ({}) must be positive",
                self.n_layer, self.n_head
            ));
        }
        if !self.n_embd.is_multiple_of(self.n_head) {
            return fail(format!(
                "n_embd ({}) is not divisible by n_head ({})",
                self.n_embd, self.n_head
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return fail(format!("dropout ({}) must be in [0, 1)", self.dropout));
        }
        if self.layer_norm_epsilon.is_nan() || self.layer_norm_epsilon <= 0.0 {
            return fail(format!(
                "layer_norm_epsilon ({}) must be positive",
                self.layer_norm_epsilon
            ));
        }
        self.activation()?;
        Ok(())
    }

    /// Parameter count (the tied LM head counted once).
    pub fn num_params(&self) -> usize {
        let (c, v, p, f) = (
            self.n_embd,
            self.vocab_size,
            self.n_positions,
            self.inner_dim(),
        );
        let block = 2 * 2 * c + (c * 3 * c + 3 * c) + (c * c + c) + (c * f + f) + (f * c + c);
        v * c + p * c + self.n_layer * block + 2 * c
    }

    /// The `config.json` body as `transformers` writes it for GPT-2, so
    /// `GPT2LMHeadModel.from_pretrained(dir)` accepts the bundle.
    pub fn to_hf_json(&self) -> serde_json::Value {
        serde_json::json!({
            "model_type": "gpt2",
            "architectures": ["GPT2LMHeadModel"],
            "vocab_size": self.vocab_size,
            "n_positions": self.n_positions,
            "n_ctx": self.n_positions,
            "n_embd": self.n_embd,
            "n_layer": self.n_layer,
            "n_head": self.n_head,
            "n_inner": self.n_inner,
            "activation_function": self.activation_function,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "resid_pdrop": self.dropout,
            "embd_pdrop": self.dropout,
            "attn_pdrop": self.dropout,
            "initializer_range": 0.02,
            "scale_attn_weights": true,
            "tie_word_embeddings": true,
            "use_cache": true,
            "torch_dtype": "float32",
        })
    }

    /// Reads the GPT-2 fields of an HF `config.json` value, rejecting layouts
    /// chatforge cannot run (untied heads, non-GPT-2 models).
    pub fn from_hf_json(value: &serde_json::Value) -> Result<Self> {
        if let Some(kind) = value.get("model_type").and_then(|v| v.as_str())
            && kind != "gpt2"
        {
            return Err(Error::Config(format!(
                "model_type {kind:?} is not supported (only gpt2)"
            )));
        }
        if value.get("tie_word_embeddings").and_then(|v| v.as_bool()) == Some(false) {
            return Err(Error::Config(
                "tie_word_embeddings = false is not supported: GPT-2 ties the LM head to wte"
                    .into(),
            ));
        }
        if value
            .get("scale_attn_by_inverse_layer_idx")
            .and_then(|v| v.as_bool())
            == Some(true)
            || value
                .get("reorder_and_upcast_attn")
                .and_then(|v| v.as_bool())
                == Some(true)
        {
            return Err(Error::Config(
                "scale_attn_by_inverse_layer_idx / reorder_and_upcast_attn are not supported"
                    .into(),
            ));
        }
        let cfg: Self = serde_json::from_value(value.clone())
            .map_err(|e| Error::Config(format!("config.json: {e}")))?;
        cfg.validate()?;
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_gpt2_124m_param_count() {
        // The well-known figure for GPT-2 small with tied embeddings.
        assert_eq!(GptConfig::gpt2_124m().num_params(), 124_439_808);
    }

    #[test]
    fn test_validate_names_values() {
        let mut cfg = GptConfig::tiny(100);
        cfg.n_head = 3;
        let err = cfg.validate().unwrap_err().to_string();
        assert!(
            err.contains("n_embd (64)") && err.contains("n_head (3)"),
            "{err}"
        );
    }

    #[test]
    fn test_hf_json_round_trip() {
        let cfg = GptConfig::sized(97, 32, 32, 2, 4);
        let back = GptConfig::from_hf_json(&cfg.to_hf_json()).unwrap();
        assert_eq!(cfg, back);
    }
}
