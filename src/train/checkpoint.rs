//! Resumable checkpoints: weights, AdamW moments and the loop state, written
//! into a fresh folder that replaces the previous one only once complete,
//! so a failed write (full disk, kill) leaves the last good one intact.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::{Error, Result, TrainConfig};
use crate::model::{GptConfig, Weights, load_safetensors, save_safetensors};

/// The loop state beside the tensors.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointState {
    pub format_version: u32,
    /// Optimiser steps completed.
    pub step: usize,
    /// AdamW update count.
    pub adam_t: u64,
    /// Batches and dropout come from ChaCha8(seed) with stream = step, so
    /// seed and step restore the RNG and the data position exactly.
    pub seed: u64,
    pub tokens_seen: u64,
    pub data_fingerprint: String,
    pub elapsed_s: f64,
    pub stage: String,
    pub config: TrainConfig,
    pub model: GptConfig,
}

pub struct Checkpoint {
    pub state: CheckpointState,
    pub weights: Weights,
    pub optimizer: HashMap<String, Tensor>,
}

const FORMAT_VERSION: u32 = 1;

fn ckpt_err(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::Checkpoint {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

impl Checkpoint {
    pub fn dir(run_dir: &Path) -> PathBuf {
        run_dir.join("checkpoint")
    }

    /// Writes `run_dir/checkpoint` atomically (as a whole folder).
    pub fn save(
        run_dir: &Path,
        state: &CheckpointState,
        weights: &Weights,
        optimizer: &HashMap<String, Tensor>,
    ) -> Result<()> {
        let dir = Self::dir(run_dir);
        let tmp = run_dir.join(".checkpoint.tmp");
        let old = run_dir.join(".checkpoint.old");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(super::io_err(&tmp))?;
        }
        std::fs::create_dir_all(&tmp).map_err(super::io_err(&tmp))?;
        let written = (|| -> Result<()> {
            save_safetensors(weights, &tmp.join("model.safetensors"))?;
            save_safetensors(optimizer, &tmp.join("optimizer.safetensors"))?;
            crate::fsio::write_json_atomic(&tmp.join("state.json"), state)?;
            Ok(())
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(ckpt_err(
                &dir,
                format!("saving failed, the previous checkpoint is kept: {e}"),
            ));
        }
        if dir.exists() {
            if old.exists() {
                std::fs::remove_dir_all(&old).map_err(super::io_err(&old))?;
            }
            std::fs::rename(&dir, &old).map_err(super::io_err(&dir))?;
        }
        std::fs::rename(&tmp, &dir).map_err(super::io_err(&tmp))?;
        crate::fsio::sync_parent(&dir);
        if old.exists() {
            let _ = std::fs::remove_dir_all(&old);
        }
        Ok(())
    }

    /// Loads the newest complete checkpoint of a run, if any (a crash between
    /// the two renames of [`Checkpoint::save`] leaves it in `.checkpoint.old`).
    pub fn load(run_dir: &Path, dev: &Device) -> Result<Option<Self>> {
        let dir = [Self::dir(run_dir), run_dir.join(".checkpoint.old")]
            .into_iter()
            .find(|d| d.join("state.json").is_file());
        let Some(dir) = dir else { return Ok(None) };
        let state_path = dir.join("state.json");
        let text = std::fs::read_to_string(&state_path).map_err(super::io_err(&state_path))?;
        let state: CheckpointState =
            serde_json::from_str(&text).map_err(|e| ckpt_err(&state_path, e))?;
        if state.format_version != FORMAT_VERSION {
            return Err(ckpt_err(
                &state_path,
                format!(
                    "written with checkpoint format {}, this chatforge reads {FORMAT_VERSION}",
                    state.format_version
                ),
            ));
        }
        let weights = load_safetensors(&dir.join("model.safetensors"), &state.model, dev)?;
        let opt_path = dir.join("optimizer.safetensors");
        let optimizer =
            candle_core::safetensors::load(&opt_path, dev).map_err(|e| ckpt_err(&opt_path, e))?;
        Ok(Some(Self {
            state,
            weights,
            optimizer,
        }))
    }
}

impl CheckpointState {
    /// The version this build writes and reads.
    pub const FORMAT_VERSION: u32 = FORMAT_VERSION;
}
