//! The model bundle: one folder with everything serving needs, in a layout
//! Hugging Face `transformers` reads too (see models/README.md).

use std::path::{Path, PathBuf};

use candle_core::Device;
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use crate::model::{Gpt, GptConfig, Weights, load_safetensors, save_safetensors};
use crate::text::{ChatTokenizer, TokenizerKind};

/// Bundle layout version this build writes; it reads this one and older.
pub const FORMAT_VERSION: u32 = 1;

pub const CONFIG_FILE: &str = "config.json";
pub const TOKENIZER_FILE: &str = "tokenizer.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const GENERATION_FILE: &str = "generation.json";
pub const ONNX_FILE: &str = "model.onnx";
/// The int8 variant of `model.onnx` (`chatforge export --int8`).
pub const ONNX_INT8_FILE: &str = "model.int8.onnx";
pub const TRAINING_FILE: &str = "training.json";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("bundle {dir}: {reason}")]
    Invalid { dir: String, reason: String },
    #[error(transparent)]
    Model(#[from] crate::model::Error),
    #[error(transparent)]
    Text(#[from] crate::text::Error),
    #[error(transparent)]
    Write(#[from] crate::fsio::WriteError),
}

pub type Result<T> = std::result::Result<T, Error>;

/// Which exported graph of a bundle the decoder runs (`[runtime]
/// precision`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// `model.onnx`: fp32, parity-checked against candle.
    #[default]
    Fp32,
    /// `model.int8.onnx`: int8 weights, activations quantized per call; for
    /// the CPU provider, about 2× faster batch-1 decoding.
    Int8,
}

impl Precision {
    pub fn file_name(self) -> &'static str {
        match self {
            Precision::Fp32 => ONNX_FILE,
            Precision::Int8 => ONNX_INT8_FILE,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Int8 => "int8",
        }
    }

    /// This graph's path in bundle `dir`, or, when it is not there, what to
    /// run to export it.
    pub fn graph_in(self, dir: &Path) -> std::result::Result<PathBuf, String> {
        let path = dir.join(self.file_name());
        if path.is_file() {
            return Ok(path);
        }
        let flag = match self {
            Precision::Fp32 => "",
            Precision::Int8 => " --int8",
        };
        Err(format!(
            "{} is missing; run `chatforge export --bundle {}{flag}` first",
            path.display(),
            dir.display()
        ))
    }
}

/// chatforge's own fields, under `chatforge` in `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BundleMeta {
    pub format_version: u32,
    /// Identifies these weights: stage, time and a weights hash; recorded on
    /// every logged message.
    pub model_version: String,
    pub tokenizer: TokenizerKind,
    /// `pretrain` or `finetune`.
    pub stage: String,
    /// The bundle this one was fine-tuned from.
    #[serde(default)]
    pub parent_version: Option<String>,
    pub created_unix: u64,
}

/// The default [`GenerationDefaults::copy_bias`]. Chosen on the
/// quickstart's customer-words and out-of-scope questions (269; greedy,
/// 96 new tokens at most): replies
/// that passed the fact guard in the demo model's own words went 21 → 41
/// → 59 → 61 → 66 at biases 0, 2, 4, 6, 10, with fact accuracy 0.837 →
/// 0.842 → 0.833 → 0.833 → 0.833 (the guard sends a passage extract
/// otherwise); a bias changes nothing without context passages.
pub const DEFAULT_COPY_BIAS: f32 = 6.0;

fn default_copy_bias() -> f32 {
    DEFAULT_COPY_BIAS
}

/// Sampling defaults for serving (`generation.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerationDefaults {
    pub max_new_tokens: usize,
    pub temperature: f32,
    pub top_k: usize,
    pub top_p: f32,
    pub repetition_penalty: f32,
    /// Added to the logit of the token that continues a run the reply is
    /// copying from its context passages (0 = off; see
    /// [`crate::runtime::SamplingParams::copy_bias`]). Bundles written
    /// before it get the default.
    #[serde(default = "default_copy_bias")]
    pub copy_bias: f32,
    pub stop_tokens: Vec<String>,
    pub chat_template: String,
}

impl Default for GenerationDefaults {
    fn default() -> Self {
        Self {
            max_new_tokens: 128,
            temperature: 0.7,
            top_k: 40,
            top_p: 0.95,
            repetition_penalty: 1.1,
            copy_bias: DEFAULT_COPY_BIAS,
            stop_tokens: vec![crate::text::END.into(), crate::text::ENDOFTEXT.into()],
            chat_template: "chatforge-v1".into(),
        }
    }
}

/// A bundle folder whose `config.json` has been read and checked.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub dir: PathBuf,
    pub config: GptConfig,
    /// `None` for a plain Hugging Face GPT-2 folder.
    pub meta: Option<BundleMeta>,
}

impl Bundle {
    fn invalid(dir: &Path, reason: impl std::fmt::Display) -> Error {
        Error::Invalid {
            dir: dir.display().to_string(),
            reason: reason.to_string(),
        }
    }

    /// Reads `config.json`; a bundle from a newer chatforge is refused.
    pub fn open(dir: &Path) -> Result<Self> {
        let path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Self::invalid(dir, format!("cannot read {CONFIG_FILE}: {e}")))?;
        let value: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Self::invalid(dir, format!("{CONFIG_FILE} is not valid JSON: {e}")))?;
        let config = GptConfig::from_hf_json(&value)?;
        let meta = match value.get("chatforge") {
            None => None,
            Some(m) => {
                let version = m
                    .get("format_version")
                    .and_then(|v| v.as_u64())
                    .unwrap_or(0);
                if version > FORMAT_VERSION as u64 || version == 0 {
                    return Err(Self::invalid(
                        dir,
                        format!(
                            "written with bundle format {version}; this chatforge reads formats 1..={FORMAT_VERSION} — upgrade chatforge or re-export the bundle"
                        ),
                    ));
                }
                Some(
                    serde_json::from_value(m.clone())
                        .map_err(|e| Self::invalid(dir, format!("chatforge section: {e}")))?,
                )
            }
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            meta,
        })
    }

    /// The tokenizer as this model can use it: with the chat tokens only if
    /// the model has rows for them (see [`ChatTokenizer::within`]).
    pub fn tokenizer(&self) -> Result<ChatTokenizer> {
        Ok(ChatTokenizer::from_file_within(
            &self.dir.join(TOKENIZER_FILE),
            self.config.vocab_size,
        )?)
    }

    /// The tokenizer with the chat tokens, added if missing: what
    /// fine-tuning starts from (it grows the model's vocabulary to match).
    pub fn chat_tokenizer(&self) -> Result<ChatTokenizer> {
        Ok(ChatTokenizer::from_file(&self.dir.join(TOKENIZER_FILE))?)
    }

    pub fn weights(&self, dev: &Device) -> Result<Weights> {
        Ok(load_safetensors(
            &self.dir.join(WEIGHTS_FILE),
            &self.config,
            dev,
        )?)
    }

    /// The model and its tokenizer, refusing a tokenizer with ids the
    /// embedding table does not have.
    pub fn load(&self, dev: &Device) -> Result<(Gpt, ChatTokenizer)> {
        let tok = self.tokenizer()?;
        if tok.vocab_size() > self.config.vocab_size {
            return Err(Self::invalid(
                &self.dir,
                format!(
                    "{TOKENIZER_FILE} has {} ids but the model's vocab_size is {}",
                    tok.vocab_size(),
                    self.config.vocab_size
                ),
            ));
        }
        let vb = VarBuilder::from_tensors(self.weights(dev)?, candle_core::DType::F32, dev);
        Ok((Gpt::new(vb, &self.config)?, tok))
    }

    /// `generation.json`, or the built-in defaults when the bundle has none.
    pub fn generation_defaults(&self) -> Result<GenerationDefaults> {
        let path = self.dir.join(GENERATION_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .map_err(|e| Self::invalid(&self.dir, format!("{GENERATION_FILE}: {e}"))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(GenerationDefaults::default()),
            Err(e) => Err(Self::invalid(
                &self.dir,
                format!("cannot read {GENERATION_FILE}: {e}"),
            )),
        }
    }

    pub fn model_version(&self) -> Option<&str> {
        self.meta.as_ref().map(|m| m.model_version.as_str())
    }

    /// Writes weights, tokenizer, config (with a new model version) and,
    /// unless present, generation defaults.
    pub fn write(
        dir: &Path,
        config: &GptConfig,
        stage: &str,
        parent_version: Option<String>,
        tok: &ChatTokenizer,
        weights: &Weights,
    ) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Self::invalid(dir, e))?;
        let weights_path = dir.join(WEIGHTS_FILE);
        // An exported graph holds the old weights: it must not outlive them.
        for file in [ONNX_FILE, ONNX_INT8_FILE] {
            if crate::fsio::remove_if_present(&dir.join(file))? {
                tracing::info!("removed the stale {file}; run `chatforge export` again");
            }
        }
        save_safetensors(weights, &weights_path)?;
        tok.save(&dir.join(TOKENIZER_FILE))?;
        let meta = BundleMeta {
            format_version: FORMAT_VERSION,
            model_version: model_version(stage, &weights_path),
            tokenizer: tok.kind(),
            stage: stage.to_string(),
            parent_version,
            created_unix: unix_now(),
        };
        let mut value = config.to_hf_json();
        value["bos_token_id"] = tok.special().endoftext.into();
        value["eos_token_id"] = tok.special().endoftext.into();
        value["chatforge"] = serde_json::to_value(&meta).unwrap_or_default();
        crate::fsio::write_json_atomic(&dir.join(CONFIG_FILE), &value)?;
        let gen_path = dir.join(GENERATION_FILE);
        if !gen_path.exists() {
            crate::fsio::write_json_atomic(&gen_path, &GenerationDefaults::default())?;
        }
        Self::open(dir)
    }
}

/// `<stage>-<unix time>-<first 12 hex digits of the weights' hash>`.
pub fn model_version(stage: &str, weights_file: &Path) -> String {
    use sha2::{Digest, Sha256};
    let hash = std::fs::read(weights_file)
        .map(|b| hex::encode(&Sha256::digest(&b)[..6]))
        .unwrap_or_else(|_| "unknown".to_string());
    format!("{stage}-{}-{hash}", unix_now())
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
