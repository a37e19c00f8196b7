//! The two training jobs as the CLI runs them: pretraining a bundle from a
//! corpus and fine-tuning a bundle on dialogs. Both write a complete bundle
//! plus `training.json` (provenance).

use std::path::{Path, PathBuf};

use candle_core::Tensor;
use serde_json::json;

use super::{
    Dataset, DialogData, Error, PretrainData, Result, Stage, TrainConfig, TrainOutcome, TrainRun,
    TrainSection, read_corpus,
};
use crate::bundle::{self, Bundle};
use crate::model::{GptConfig, Weights, init_weights};
use crate::text::{ChatTokenizer, default_control_tags, read_dialogs_jsonl, train_tokenizer};

pub struct PretrainJob {
    pub config: TrainConfig,
    pub data: Vec<PathBuf>,
    pub out: PathBuf,
    /// Use this tokenizer instead of training one into the bundle.
    pub tokenizer: Option<PathBuf>,
    pub steps: Option<usize>,
    pub resume: bool,
    pub progress: bool,
}

pub struct FinetuneJob {
    pub base: PathBuf,
    pub dialogs: Vec<PathBuf>,
    pub out: PathBuf,
    /// Fine-tune with retrieved context from this knowledge base (RAFT).
    pub kb: Option<RaftJob>,
    /// Loop settings; `None` uses [`finetune_defaults`].
    pub train: Option<TrainSection>,
    pub steps: Option<usize>,
    pub resume: bool,
    pub progress: bool,
}

/// `finetune --kb`: the knowledge base and how examples are drawn.
pub struct RaftJob {
    pub dir: PathBuf,
    pub settings: super::raft::RaftSettings,
}

/// What a job produced.
#[derive(Debug)]
pub struct JobReport {
    pub bundle: Bundle,
    pub outcome: TrainOutcome,
}

/// Loop settings for fine-tuning when no config is given: a short run at a
/// lower peak rate than pretraining.
pub fn finetune_defaults() -> TrainSection {
    TrainSection {
        steps: 300,
        batch_size: 8,
        lr: 3e-4,
        min_lr: 3e-5,
        warmup_steps: 20,
        eval_interval: 50,
        eval_iters: 10,
        checkpoint_interval: 100,
        weight_decay: 0.0,
        ..TrainSection::default()
    }
}

/// Reads the `[train]` table of a config file (fine-tuning takes the model
/// shape from its base bundle).
pub fn read_train_section(path: &Path) -> Result<TrainSection> {
    let text = std::fs::read_to_string(path).map_err(super::io_err(path))?;
    let value: toml::Table =
        toml::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
    match value.get("train") {
        Some(t) => t
            .clone()
            .try_into()
            .map_err(|e| Error::Config(format!("{} [train]: {e}", path.display()))),
        None => Err(Error::Config(format!(
            "{} has no [train] table",
            path.display()
        ))),
    }
}

pub fn pretrain(job: PretrainJob) -> Result<JobReport> {
    let mut config = job.config;
    if let Some(n) = job.steps {
        config.train.steps = n;
    }
    config.validate()?;
    let (docs, manifest) = read_corpus(&job.data)?;
    std::fs::create_dir_all(&job.out).map_err(super::io_err(&job.out))?;
    let tok_path = job.out.join(bundle::TOKENIZER_FILE);
    let resuming_tokenizer = job.resume && tok_path.exists();
    let tok = if resuming_tokenizer {
        ChatTokenizer::from_file(&tok_path)?
    } else if let Some(p) = &job.tokenizer {
        ChatTokenizer::from_file(p)?
    } else {
        tracing::info!(
            "training a {:?} tokenizer (vocab {}) on {} documents",
            config.tokenizer.kind,
            config.tokenizer.vocab_size,
            docs.len()
        );
        train_tokenizer(
            &docs,
            config.tokenizer.kind,
            config.tokenizer.vocab_size,
            &default_control_tags(),
        )?
    };
    if !resuming_tokenizer {
        tok.save(&tok_path)?;
    }
    let model = config.gpt_config(tok.vocab_size());
    let data = PretrainData::new(&tok, &docs, config.train.val_fraction)?;
    tracing::info!(
        "pretraining {} parameters on {} training tokens",
        model.num_params(),
        data.train_tokens()
    );
    let device = config.train.device.open()?;
    let init = init_weights(&model, config.train.seed, &device)?;
    let outcome = TrainRun {
        config: config.clone(),
        model: model.clone(),
        init,
        data: &data,
        out: job.out.clone(),
        stage: Stage::Pretrain,
        resume: job.resume,
        device,
        progress: job.progress,
    }
    .run()?;
    let bundle = Bundle::write(&job.out, &model, "pretrain", None, &tok, &outcome.weights)?;
    write_provenance(&bundle, &config, &outcome, json!(manifest), None)?;
    Ok(JobReport { bundle, outcome })
}

pub fn finetune(job: FinetuneJob) -> Result<JobReport> {
    let base = Bundle::open(&job.base)?;
    let tok = base.chat_tokenizer()?;
    let mut train = job.train.unwrap_or_else(finetune_defaults);
    if let Some(n) = job.steps {
        train.steps = n;
    }
    let device = train.device.open()?;
    let mut model = base.config.clone();
    let mut weights = base.weights(&device)?;
    if tok.vocab_size() > model.vocab_size {
        // A stock GPT-2 tokenizer gains the chat tokens: grow the table.
        grow_vocab(&mut weights, &mut model, tok.vocab_size())?;
    }
    model.dropout = 0.0;
    let config = TrainConfig {
        model: super::ModelSection {
            n_layer: model.n_layer,
            n_head: model.n_head,
            n_embd: model.n_embd,
            n_positions: model.n_positions,
            dropout: 0.0,
        },
        tokenizer: Default::default(),
        train,
        finetune: None,
    };
    config.train.validate(model.n_positions)?;
    let mut dialogs = Vec::new();
    let mut manifest = Vec::new();
    for p in &job.dialogs {
        let d = read_dialogs_jsonl(p)?;
        manifest.push(json!({"path": p.display().to_string(), "dialogs": d.len()}));
        dialogs.extend(d);
    }
    if let Some(r) = &job.kb {
        if tok.special().context.is_none() {
            return Err(Error::Config(format!(
                "{} has no context tokens (<|context|>, <|passage|>): pretrain a base with this version to fine-tune with --kb",
                job.base.display()
            )));
        }
        let kb = crate::kb::Kb::open(&r.dir, &crate::runtime::RuntimeConfig::default())
            .map_err(|e| Error::Data(format!("{}: {e}", r.dir.display())))?;
        let (examples, report) = super::raft::raft_examples(&kb, &dialogs, &r.settings)?;
        tracing::info!(
            "RAFT: {} examples from {} dialogs: {} with their gold passages, {} distractors only (abstain), {} ungrounded turns, {} unknown passage labels; retrieval ranked the gold passage first for {}",
            report.examples,
            dialogs.len(),
            report.with_gold,
            report.distractor_only,
            report.ungrounded,
            report.unknown_passages,
            report.retrieved_gold_first
        );
        manifest.push(json!({"kb": r.dir.display().to_string(), "raft": report, "gold_share": r.settings.gold_share, "passages": r.settings.passages, "tag_dropout": r.settings.tag_dropout}));
        dialogs = examples;
    }
    let block = config.train.block_size(model.n_positions);
    let data = DialogData::new(
        &tok,
        &dialogs,
        config.train.val_fraction,
        config.train.seed,
        block + 1,
    )?;
    let (n_train, n_val) = data.counts();
    tracing::info!("fine-tuning on {n_train} dialogs ({n_val} held out for validation)");
    std::fs::create_dir_all(&job.out).map_err(super::io_err(&job.out))?;
    let outcome = TrainRun {
        config: config.clone(),
        model: model.clone(),
        init: weights,
        data: &data,
        out: job.out.clone(),
        stage: Stage::Finetune,
        resume: job.resume,
        device,
        progress: job.progress,
    }
    .run()?;
    let parent = base.model_version().map(str::to_string);
    let base_gen = base.dir.join(bundle::GENERATION_FILE);
    let out_gen = job.out.join(bundle::GENERATION_FILE);
    if base_gen.is_file() && !out_gen.exists() {
        std::fs::copy(&base_gen, &out_gen).map_err(super::io_err(&out_gen))?;
    }
    let bundle = Bundle::write(
        &job.out,
        &model,
        "finetune",
        parent.clone(),
        &tok,
        &outcome.weights,
    )?;
    write_provenance(&bundle, &config, &outcome, json!(manifest), parent)?;
    Ok(JobReport { bundle, outcome })
}

/// New embedding rows start at the mean of the existing ones, a neutral
/// starting point for tokens the base model never saw.
fn grow_vocab(weights: &mut Weights, model: &mut GptConfig, vocab: usize) -> Result<()> {
    let wte = weights
        .get("wte.weight")
        .ok_or_else(|| Error::Data("base weights lack wte.weight".into()))?;
    let extra = vocab - model.vocab_size;
    let mean = wte.mean_keepdim(0)?;
    let rows = mean.broadcast_as((extra, model.n_embd))?.contiguous()?;
    let grown = Tensor::cat(&[wte, &rows], 0)?;
    weights.insert("wte.weight".into(), grown);
    tracing::info!(
        "grew the vocabulary from {} to {vocab} ids",
        model.vocab_size
    );
    model.vocab_size = vocab;
    Ok(())
}

fn write_provenance(
    bundle: &Bundle,
    config: &TrainConfig,
    o: &TrainOutcome,
    data: serde_json::Value,
    parent: Option<String>,
) -> Result<()> {
    let meta = bundle.meta.as_ref();
    let value = json!({
        "chatforge_version": env!("CARGO_PKG_VERSION"),
        "model_version": meta.map(|m| m.model_version.clone()),
        "stage": meta.map(|m| m.stage.clone()),
        "parent_version": parent,
        "created_unix": bundle::unix_now(),
        "data": data,
        "config": config,
        "model": bundle.config,
        "parameters": bundle.config.num_params(),
        "steps": o.steps,
        "resumed_from": o.resumed_from,
        "first_train_loss": o.first_loss,
        "final_train_loss": o.last_loss,
        "val_loss": o.val_loss,
        "val_bpb": o.val_bpb,
        "wall_time_s": o.elapsed_s,
        "tokens_per_s": o.tokens_per_s,
        "tokens_seen": o.tokens_seen,
        "threads": crate::threads(),
        "metrics": "metrics.jsonl",
        "loss_curve": "loss.png",
    });
    Ok(crate::fsio::write_json_atomic(
        &bundle.dir.join(bundle::TRAINING_FILE),
        &value,
    )?)
}
