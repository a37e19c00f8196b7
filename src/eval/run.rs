//! One bundle on a set of dialogs: every assistant turn generated from the
//! turns before it through ONNX Runtime, scored against the reference turn,
//! and the reference turns' perplexity under the candle model.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;
use serde::{Deserialize, Serialize};

use super::{Perplexity, Result, Scores, Tokenize, perplexity, score};
use crate::bundle::Bundle;
use crate::moderation::Moderator;
use crate::runtime::{Generator, RuntimeConfig, SamplingOverrides, SamplingParams};
use crate::text::{Dialog, Role};

/// How replies are generated and scored.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    pub runtime: RuntimeConfig,
    /// BLEU and distinct-n tokenizer.
    pub tokenize: Tokenize,
    /// Porter-stem ROUGE tokens.
    pub rouge_stemmer: bool,
    /// Overrides of `generation.json`; without a temperature, greedy.
    pub sampling: SamplingOverrides,
    /// Example replies kept in the report.
    pub samples: usize,
    /// Moderation model folder: the report's `safety` is the share of
    /// generated replies it flags (model categories and flagging rules).
    pub moderation: Option<PathBuf>,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self {
            runtime: RuntimeConfig::default(),
            tokenize: Tokenize::Thirteen,
            rouge_stemmer: false,
            sampling: SamplingOverrides::default(),
            samples: 5,
            moderation: None,
        }
    }
}

impl EvalOptions {
    /// The bundle's `generation.json` settings with these overrides.
    pub fn params(&self, defaults: SamplingParams) -> SamplingParams {
        let base = match self.sampling.temperature {
            None => defaults.greedy(),
            Some(_) => defaults,
        };
        self.sampling.apply(base)
    }
}

/// One generated turn next to its reference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub dialog: usize,
    /// The last user message before the turn.
    pub user: String,
    pub reference: String,
    pub generated: String,
}

/// What one bundle scored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelEval {
    pub bundle: PathBuf,
    pub model_version: Option<String>,
    pub stage: Option<String>,
    /// From the bundle's `training.json`, when it has one.
    pub training: Option<TrainingSummary>,
    pub provider: String,
    pub sampling: SamplingSummary,
    pub dialogs: usize,
    /// Generated assistant turns.
    pub turns: usize,
    pub perplexity: Perplexity,
    pub scores: Scores,
    /// Share of generated replies the moderation model flags; `None`
    /// without a moderation model (see `safety_note`).
    pub safety: Option<f64>,
    pub safety_note: String,
    pub generated_tokens: u64,
    pub generate_s: f64,
    pub samples: Vec<Sample>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamplingSummary {
    pub temperature: f32,
    pub top_k: usize,
    pub top_p: f32,
    pub repetition_penalty: f32,
    pub max_new_tokens: usize,
    pub seed: u64,
}

/// The part of `training.json` a reader of the report needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingSummary {
    pub stage: Option<String>,
    pub steps: Option<u64>,
    pub parameters: Option<u64>,
    pub val_loss: Option<f64>,
    pub val_bpb: Option<f64>,
    pub parent_version: Option<String>,
    /// Bundle-relative file of the loss curve.
    pub loss_curve: Option<String>,
}

impl TrainingSummary {
    /// `None` when the bundle has no readable `training.json` (a bundle
    /// made elsewhere, e.g. from Hugging Face): the report just omits it.
    pub fn read(dir: &Path) -> Option<Self> {
        let text = std::fs::read_to_string(dir.join("training.json")).ok()?;
        serde_json::from_str(&text).ok()
    }
}

pub const SAFETY_NOTE: &str = "moderation model not configured";

/// Evaluates the bundle in `dir` (it needs `model.onnx`) on `dialogs`.
pub fn evaluate_bundle(dir: &Path, dialogs: &[Dialog], opts: &EvalOptions) -> Result<ModelEval> {
    let mut generator = Generator::open(dir, &opts.runtime)?;
    let params = opts.params(generator.default_params());
    let (mut hyps, mut refs, mut samples) = (Vec::new(), Vec::new(), Vec::new());
    let mut generated_tokens = 0u64;
    let started = Instant::now();
    for (i, d) in dialogs.iter().enumerate() {
        for (j, m) in d.messages.iter().enumerate() {
            if m.role != Role::Assistant {
                continue;
            }
            let context = Dialog {
                messages: d.messages[..j].to_vec(),
                ..d.clone()
            };
            let g = generator.reply(&context, &params, &mut |_, _| {})?;
            generated_tokens += g.tokens.len() as u64;
            if samples.len() < opts.samples {
                let user = context
                    .messages
                    .iter()
                    .rev()
                    .find(|m| m.role == Role::User)
                    .map(|m| m.content.clone())
                    .unwrap_or_default();
                samples.push(Sample {
                    dialog: i,
                    user,
                    reference: m.content.clone(),
                    generated: g.text.clone(),
                });
            }
            // Replies are scored as one line each, like `chatforge score`.
            hyps.push(one_line(&g.text));
            refs.push(one_line(&m.content));
        }
        if (i + 1) % 10 == 0 {
            tracing::info!(
                "{}: {} of {} dialogs, {} turns generated",
                dir.display(),
                i + 1,
                dialogs.len(),
                hyps.len()
            );
        }
    }
    let generate_s = started.elapsed().as_secs_f64();
    let (safety, safety_note) = match &opts.moderation {
        None => (None, SAFETY_NOTE.to_string()),
        Some(m) => {
            let moderator = Moderator::open(m, &opts.runtime)?;
            let mut flagged = 0usize;
            for chunk in hyps.chunks(64) {
                let texts: Vec<&str> = chunk.iter().map(String::as_str).collect();
                flagged += moderator
                    .check_batch(&texts)?
                    .iter()
                    .filter(|v| v.flagged)
                    .count();
            }
            let share = if hyps.is_empty() {
                0.0
            } else {
                flagged as f64 / hyps.len() as f64
            };
            (
                Some(share),
                format!(
                    "{flagged} of {} replies flagged by the moderation model in {}",
                    hyps.len(),
                    m.display()
                ),
            )
        }
    };
    let scores = score(&hyps, &refs, opts.tokenize, opts.rouge_stemmer)?;
    let bundle = Bundle::open(dir)?;
    let (model, tok) = bundle.load(&Device::Cpu)?;
    let ppl = perplexity(&model, &tok, dialogs)?;
    Ok(ModelEval {
        bundle: dir.to_path_buf(),
        model_version: bundle.model_version().map(str::to_string),
        stage: bundle.meta.as_ref().map(|m| m.stage.clone()),
        training: TrainingSummary::read(dir),
        provider: generator.decoder().provider().name().to_string(),
        sampling: SamplingSummary {
            temperature: params.temperature,
            top_k: params.top_k,
            top_p: params.top_p,
            repetition_penalty: params.repetition_penalty,
            max_new_tokens: params.max_new_tokens,
            seed: params.seed,
        },
        dialogs: dialogs.len(),
        turns: hyps.len(),
        perplexity: ppl,
        scores,
        safety,
        safety_note,
        generated_tokens,
        generate_s,
        samples,
    })
}

/// Newlines would split a reply into several lines of a line-aligned file.
fn one_line(s: &str) -> String {
    s.split(['\n', '\r']).collect::<Vec<_>>().join(" ")
}
