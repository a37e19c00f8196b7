//! Perplexity and bits per byte of the reference assistant turns, by
//! teacher forcing with the candle model: the same tokens fine-tuning
//! learns (assistant text and its closing `<|end|>`), scored one dialog at a
//! time.

use candle_core::{D, Device, Tensor};
use serde::{Deserialize, Serialize};

use super::Result;
use crate::model::Gpt;
use crate::text::{ChatTokenizer, Dialog, Role, encode_dialog};

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Perplexity {
    /// Scored tokens (assistant text and `<|end|>`).
    pub tokens: u64,
    /// UTF-8 bytes of the assistant texts.
    pub bytes: u64,
    /// Mean negative log-likelihood, nats per token.
    pub nll: f64,
    /// exp(nll).
    pub perplexity: f64,
    /// Total bits over total bytes: unlike perplexity, comparable between
    /// models with different tokenizers.
    pub bits_per_byte: f64,
}

/// Scores every dialog's assistant turns.
pub fn perplexity(model: &Gpt, tok: &ChatTokenizer, dialogs: &[Dialog]) -> Result<Perplexity> {
    let ctx = model.config().n_positions;
    let (mut nats, mut tokens, mut bytes) = (0f64, 0u64, 0u64);
    for d in dialogs {
        let e = encode_dialog(tok, d)?;
        let (n, t) = dialog_nll(model, &e.ids, &e.loss_mask, ctx)?;
        nats += n;
        tokens += t;
        bytes += d
            .messages
            .iter()
            .filter(|m| m.role == Role::Assistant)
            .map(|m| m.content.len() as u64)
            .sum::<u64>();
    }
    let nll = nats / tokens.max(1) as f64;
    Ok(Perplexity {
        tokens,
        bytes,
        nll,
        perplexity: nll.exp(),
        bits_per_byte: nats / std::f64::consts::LN_2 / bytes.max(1) as f64,
    })
}

/// (summed nats, counted targets) of one sequence. A sequence longer than
/// the context is scored in windows that overlap by half a context, each
/// target exactly once and with at least half a context before it.
fn dialog_nll(model: &Gpt, ids: &[u32], mask: &[bool], ctx: usize) -> Result<(f64, u64)> {
    let dev = model.device().clone();
    let (mut nats, mut count) = (0f64, 0u64);
    // Targets are positions 1..ids.len(); `done` is the first not yet scored.
    let mut done = 1usize;
    while done < ids.len() {
        let end = if done == 1 {
            ids.len().min(ctx)
        } else {
            ids.len().min(done + ctx / 2)
        };
        let start = end.saturating_sub(ctx);
        // Row r of the window predicts ids[start + r + 1].
        let lp = target_log_probs(model, &ids[start..end], &dev)?;
        for pos in done..end {
            if mask[pos] {
                nats -= lp[pos - 1 - start] as f64;
                count += 1;
            }
        }
        done = end;
    }
    Ok((nats, count))
}

/// log p(window[r + 1] | window[..=r]) for every row r.
fn target_log_probs(model: &Gpt, window: &[u32], dev: &Device) -> Result<Vec<f32>> {
    let t = window.len();
    let x = Tensor::new(&window[..t - 1], dev)?.unsqueeze(0)?; // (1, T-1)
    let logits = model.forward(&x)?.squeeze(0)?; // (T-1, V)
    let logp = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
    let y = Tensor::new(&window[1..], dev)?.unsqueeze(1)?; // (T-1, 1)
    Ok(logp.gather(&y, 1)?.squeeze(1)?.to_vec1::<f32>()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{GptConfig, init_weights};

    fn model(ctx: usize) -> Gpt {
        let cfg = GptConfig::sized(40, ctx, 16, 1, 2);
        let dev = Device::Cpu;
        let w = init_weights(&cfg, 1, &dev).unwrap();
        let vb = candle_nn::VarBuilder::from_tensors(w, candle_core::DType::F32, &dev);
        Gpt::new(vb, &cfg).unwrap()
    }

    #[test]
    fn test_every_masked_target_is_scored_once() {
        let ids: Vec<u32> = (0..30u32).map(|i| i * 7 % 40).collect();
        let mask: Vec<bool> = (0..30).map(|i| i % 3 != 0).collect();
        let want = mask[1..].iter().filter(|&&m| m).count() as u64;
        // Within the context: one pass, the plain sum of the targets' NLL.
        let m = model(64);
        let (nats, n) = dialog_nll(&m, &ids, &mask, 64).unwrap();
        assert_eq!(n, want);
        let lp = target_log_probs(&m, &ids, &Device::Cpu).unwrap();
        let direct: f64 = (1..30)
            .filter(|&p| mask[p])
            .map(|p| -lp[p - 1] as f64)
            .sum();
        assert!((nats - direct).abs() < 1e-4, "{nats} vs {direct}");
        // Longer than the context: overlapping windows, still once each.
        let m = model(8);
        let (nats, n) = dialog_nll(&m, &ids, &mask, 8).unwrap();
        assert_eq!(n, want);
        // A random model is close to uniform over 40 ids.
        let per = nats / n as f64;
        assert!((per - 40f64.ln()).abs() < 1.0, "{per}");
    }
}
