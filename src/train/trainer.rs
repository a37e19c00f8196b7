//! The training loop shared by pretraining and fine-tuning.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use candle_core::{D, DType, Device, Tensor, Var};
use candle_nn::VarBuilder;
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::checkpoint::{Checkpoint, CheckpointState};
use super::data::{Batch, Dataset};
use super::metrics::{Metric, MetricsLog, plot_loss_curve};
use super::optim::{AdamW, grad_norm};
use super::{Error, Result, TrainConfig, TrainSection, learning_rate};
use crate::model::{Dropout, Gpt, GptConfig, Kernels, Weights, kernels};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Pretrain,
    Finetune,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Pretrain => "pretrain",
            Stage::Finetune => "finetune",
        }
    }
}

/// Everything one training run needs.
pub struct TrainRun<'a> {
    pub config: TrainConfig,
    pub model: GptConfig,
    /// Starting weights (unused when resuming from a checkpoint).
    pub init: Weights,
    pub data: &'a dyn Dataset,
    /// Run folder: checkpoint, metrics.jsonl, loss.png.
    pub out: PathBuf,
    pub stage: Stage,
    pub resume: bool,
    pub device: Device,
    pub progress: bool,
}

/// What a finished run reports.
#[derive(Debug)]
pub struct TrainOutcome {
    pub weights: Weights,
    pub steps: usize,
    pub resumed_from: Option<usize>,
    /// Training loss of the last step.
    pub last_loss: f32,
    /// Validation loss and bits-per-byte at the end.
    pub val_loss: f32,
    pub val_bpb: f32,
    /// Loss at the first logged step of this run (or of the resumed run).
    pub first_loss: Option<f32>,
    pub elapsed_s: f64,
    pub tokens_per_s: f64,
    pub tokens_seen: u64,
}

/// Negative log-likelihood of every target: (B·T).
pub fn token_nll(model: &Gpt, batch: &Batch, drop: Option<Dropout<'_>>) -> Result<Tensor> {
    let logits = model.logits_flat(&batch.x, drop)?; // (B·T, V)
    if model.kernels() == Kernels::Fused {
        return Ok(kernels::cross_entropy(&logits, &batch.y)?);
    }
    let logp = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
    Ok(logp.gather(&batch.y.unsqueeze(1)?, 1)?.squeeze(1)?.neg()?)
}

/// Mean loss over the batch's counted targets.
pub fn batch_loss(model: &Gpt, batch: &Batch, drop: Option<Dropout<'_>>) -> Result<Tensor> {
    let nll = token_nll(model, batch, drop)?;
    Ok(match &batch.w {
        Some(w) => ((nll * w)?.sum_all()? / batch.targets.max(1) as f64)?,
        None => nll.mean_all()?,
    })
}

/// (mean loss, bits per byte) over fixed validation batches.
fn evaluate(model: &Gpt, batches: &[Batch]) -> Result<(f32, f32)> {
    let (mut nats, mut targets, mut bytes) = (0f64, 0usize, 0u64);
    for b in batches {
        let nll = token_nll(model, b, None)?;
        let nll = match &b.w {
            Some(w) => (nll * w)?,
            None => nll,
        };
        nats += nll.sum_all()?.to_scalar::<f32>()? as f64;
        targets += b.targets;
        bytes += b.target_bytes;
    }
    let loss = (nats / targets.max(1) as f64) as f32;
    let bpb = (nats / std::f64::consts::LN_2 / bytes.max(1) as f64) as f32;
    Ok((loss, bpb))
}

/// One optimiser step: `grad_accum` micro-batches, clipping, AdamW.
/// Returns (mean loss, gradient norm before clipping).
#[allow(clippy::too_many_arguments)]
pub fn train_step(
    model: &Gpt,
    opt: &mut AdamW,
    data: &dyn Dataset,
    rng: &mut ChaCha8Rng,
    tc: &TrainSection,
    (b, t): (usize, usize),
    p_drop: f32,
    lr: f64,
    step: usize,
) -> Result<(f32, f32)> {
    let accum = tc.grad_accum;
    let dev = model.device().clone();
    let mut acc: Option<Vec<Tensor>> = None;
    let mut loss_sum = 0f32;
    for _ in 0..accum {
        let batch = data.train_batch(rng, b, t, &dev)?;
        let drop = (p_drop > 0.0).then_some(Dropout {
            p: p_drop,
            rng: &mut *rng,
        });
        let loss = batch_loss(model, &batch, drop)?;
        let lv = loss.to_scalar::<f32>()?;
        check_finite(step, "the loss", lv)?;
        loss_sum += lv / accum as f32;
        let grads = opt.collect_grads(&(loss / accum as f64)?.backward()?)?;
        acc = Some(match acc {
            None => grads,
            Some(prev) => prev
                .iter()
                .zip(&grads)
                .map(|(a, g)| Ok(a.add(g)?))
                .collect::<Result<_>>()?,
        });
    }
    let grads = acc.unwrap_or_default();
    let norm = grad_norm(&grads)?;
    check_finite(step, "the gradient norm", norm)?;
    let scale = if tc.grad_clip > 0.0 && norm as f64 > tc.grad_clip {
        tc.grad_clip / norm as f64
    } else {
        1.0
    };
    opt.step_scaled(&grads, lr, scale)?;
    Ok((loss_sum, norm))
}

/// Named trainable variables (sorted by name), the model reading them, and an
/// AdamW over them.
pub type Trainable = (Vec<(String, Var)>, Gpt, AdamW);

/// Turns weights into trainable `Var`s (sorted by name), the model reading
/// them, and a fresh AdamW over them.
pub fn trainable(
    weights: &Weights,
    cfg: &GptConfig,
    tc: &TrainSection,
    dev: &Device,
) -> Result<Trainable> {
    let mut names: Vec<&String> = weights.keys().collect();
    names.sort();
    let vars: Vec<(String, Var)> = names
        .into_iter()
        .map(|n| Ok((n.clone(), Var::from_tensor(&weights[n])?)))
        .collect::<Result<_>>()?;
    let map: HashMap<String, Tensor> = vars
        .iter()
        .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
        .collect();
    let model = Gpt::new(VarBuilder::from_tensors(map, DType::F32, dev), cfg)?;
    let opt = AdamW::new(&vars, tc)?;
    Ok((vars, model, opt))
}

/// Per-step RNG: batches and dropout masks of step `s` depend on (seed, s) only.
pub fn step_rng(seed: u64, step: usize) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(step as u64);
    rng
}

pub fn snapshot(vars: &[(String, Var)]) -> Result<Weights> {
    vars.iter()
        .map(|(n, v)| Ok((n.clone(), v.as_tensor().detach().copy()?)))
        .collect()
}

/// Steps timed before `steps` is first fitted to `time_budget_s`. The
/// cosine schedule's horizon (`lr_decay_steps`, when unset) follows the
/// fitted count; these steps fall inside the usual warm-up, whose rate does
/// not depend on it.
const BUDGET_PROBE_STEPS: usize = 8;

/// How many steps in all fit when `remaining_s` seconds are left after
/// `done` steps taking `per_step_s` each, counting the validation passes
/// (`eval_iters` forward passes, about a third of a step each, every
/// `eval_interval` steps). Never fewer than `done`, never more than
/// `max_steps`.
fn fit_steps(
    tc: &TrainSection,
    max_steps: usize,
    remaining_s: f64,
    per_step_s: f64,
    done: usize,
) -> usize {
    let eval_share = tc.eval_iters as f64 / (3.0 * tc.eval_interval as f64);
    let more = remaining_s.max(0.0) / (per_step_s * (1.0 + eval_share)).max(1e-9);
    (done + more.min(max_steps as f64).floor() as usize).clamp(done, max_steps.max(done))
}

/// Fits a run's `steps` to `time_budget_s` as it goes. It reads time only
/// from the `elapsed` it is given, so its decisions can be replayed.
struct Budget {
    seconds: f64,
    max_steps: usize,
    /// `elapsed` after each step of this run, kept while it refits.
    elapsed_at: Vec<f64>,
    fitted: bool,
}

impl Budget {
    fn new(seconds: f64, max_steps: usize) -> Self {
        Self {
            seconds,
            max_steps,
            elapsed_at: Vec::new(),
            fitted: false,
        }
    }

    /// After step `done`, `elapsed` seconds into the run: the new step
    /// count when it changes. Re-fitted every step through the first half
    /// of the run, at the pace of the latest half of the steps so far (a
    /// machine whose speed drifts is followed; the slow first step drops
    /// out); the schedule's second half then stays fixed.
    fn after_step(
        &mut self,
        tc: &TrainSection,
        done: usize,
        elapsed: f64,
        bar: &ProgressBar,
    ) -> Option<usize> {
        if self.fitted && 2 * done > tc.steps {
            return None;
        }
        self.elapsed_at.push(elapsed);
        let ran = self.elapsed_at.len();
        if ran <= BUDGET_PROBE_STEPS {
            return None;
        }
        let from = ran / 2;
        let per_step = (elapsed - self.elapsed_at[from - 1]) / (ran - from) as f64;
        let fitted = fit_steps(tc, self.max_steps, self.seconds - elapsed, per_step, done);
        if !self.fitted {
            self.fitted = true;
            bar.suspend(|| {
                tracing::info!(
                    "{per_step:.3} s per step: {fitted} of at most {} steps fit the {:.0} s budget",
                    self.max_steps,
                    self.seconds
                )
            });
        }
        (fitted != tc.steps).then_some(fitted)
    }
}

fn check_finite(step: usize, what: &'static str, value: f32) -> Result<()> {
    if value.is_finite() {
        Ok(())
    } else {
        Err(Error::NonFinite { step, what, value })
    }
}

impl TrainRun<'_> {
    pub fn run(self) -> Result<TrainOutcome> {
        // `steps` may be lowered below to fit `time_budget_s`.
        let mut tc = self.config.train.clone();
        tc.validate(self.model.n_positions)?;
        crate::retain_freed_memory();
        let (b, t, accum) = (
            tc.batch_size,
            tc.block_size(self.model.n_positions),
            tc.grad_accum,
        );
        std::fs::create_dir_all(&self.out).map_err(super::io_err(&self.out))?;

        let (start, weights, opt_state, mut tokens_seen, elapsed0) = if self.resume {
            let ck =
                Checkpoint::load(&self.out, &self.device)?.ok_or_else(|| Error::Checkpoint {
                    path: Checkpoint::dir(&self.out).display().to_string(),
                    reason: "--resume given but there is no checkpoint".into(),
                })?;
            self.check_resumable(&ck.state)?;
            let s = ck.state;
            if tc.time_budget_s.is_some() {
                // The step count (and schedule) fitted when the run began.
                tc.steps = s.config.train.steps;
            }
            (
                s.step,
                ck.weights,
                Some((ck.optimizer, s.adam_t)),
                s.tokens_seen,
                s.elapsed_s,
            )
        } else {
            (0, self.init.clone(), None, 0, 0.0)
        };

        let (vars, model, mut opt) = trainable(&weights, &self.model, &tc, &self.device)?;
        if let Some((state, adam_t)) = opt_state {
            opt.load_state(state, adam_t)?;
        }
        let val = self.data.val_batches(b, t, tc.eval_iters, &self.device)?;
        let mut metrics = MetricsLog::open(&self.out, self.resume.then_some(start))?;

        let bar = self.progress_bar(start);
        let began = Instant::now();
        let p_drop = self.model.dropout;
        let mut last_loss = f32::NAN;
        let mut first_loss = None;
        let mut window = (Instant::now(), 0u64);
        let mut val_result = None;
        // A resumed run keeps the step count fitted when it began.
        let mut budget = tc
            .time_budget_s
            .filter(|_| !self.resume)
            .map(|seconds| Budget::new(seconds, tc.steps));
        let mut step = start;
        while step < tc.steps {
            let lr = learning_rate(&tc, step);
            let (loss_sum, norm) = train_step(
                &model,
                &mut opt,
                self.data,
                &mut step_rng(tc.seed, step),
                &tc,
                (b, t),
                p_drop,
                lr,
                step,
            )?;
            tokens_seen += (b * t * accum) as u64;
            window.1 += (b * t * accum) as u64;
            last_loss = loss_sum;
            first_loss.get_or_insert(loss_sum);
            let done = step + 1;
            step = done;
            let elapsed = elapsed0 + began.elapsed().as_secs_f64();
            if let Some(fitted) = budget
                .as_mut()
                .and_then(|bu| bu.after_step(&tc, done, elapsed, &bar))
            {
                tc.steps = fitted;
                bar.set_length(fitted as u64);
            }

            if done % tc.log_interval == 0 || done == tc.steps {
                let tps = window.1 as f64 / window.0.elapsed().as_secs_f64().max(1e-9);
                window = (Instant::now(), 0);
                metrics.push(Metric::Train {
                    step: done,
                    loss: loss_sum,
                    lr,
                    grad_norm: norm,
                    tokens_per_s: tps,
                    elapsed_s: elapsed,
                })?;
                bar.set_message(format!("loss {loss_sum:.4} | lr {lr:.2e} | {tps:.0} tok/s"));
            }
            if done % tc.eval_interval == 0 || done == tc.steps {
                let (vl, bpb) = evaluate(&model, &val)?;
                check_finite(step, "the validation loss", vl)?;
                metrics.push(Metric::Eval {
                    step: done,
                    val_loss: vl,
                    val_bpb: bpb,
                })?;
                bar.suspend(|| {
                    tracing::info!(
                        "step {done}: train loss {loss_sum:.4}, val loss {vl:.4}, val bpb {bpb:.4}"
                    )
                });
                val_result = Some((vl, bpb));
                self.plot(&metrics)?;
            }
            if done % tc.checkpoint_interval == 0 || done == tc.steps {
                let state = CheckpointState {
                    format_version: CheckpointState::FORMAT_VERSION,
                    step: done,
                    adam_t: opt.t,
                    seed: tc.seed,
                    tokens_seen,
                    data_fingerprint: self.data.fingerprint(),
                    elapsed_s: elapsed,
                    stage: self.stage.as_str().to_string(),
                    config: TrainConfig {
                        train: tc.clone(),
                        ..self.config.clone()
                    },
                    model: self.model.clone(),
                };
                Checkpoint::save(&self.out, &state, &snapshot(&vars)?, &opt.state_tensors()?)?;
            }
            bar.inc(1);
        }
        bar.finish_and_clear();
        let (val_loss, val_bpb) = match val_result {
            Some(v) => v,
            None => evaluate(&model, &val)?,
        };
        let run_s = began.elapsed().as_secs_f64();
        Ok(TrainOutcome {
            weights: snapshot(&vars)?,
            steps: tc.steps.max(start),
            resumed_from: self.resume.then_some(start),
            last_loss,
            val_loss,
            val_bpb,
            first_loss,
            elapsed_s: elapsed0 + run_s,
            tokens_per_s: ((tc.steps.saturating_sub(start)) * b * t * accum) as f64
                / run_s.max(1e-9),
            tokens_seen,
        })
    }

    fn check_resumable(&self, s: &CheckpointState) -> Result<()> {
        let fail = |reason: String| Error::Checkpoint {
            path: Checkpoint::dir(&self.out).display().to_string(),
            reason,
        };
        if s.model != self.model {
            return Err(fail(
                "the checkpoint's model shape differs from the config".into(),
            ));
        }
        if s.data_fingerprint != self.data.fingerprint() {
            return Err(fail(format!(
                "the checkpoint was trained on other data (fingerprint {} vs {}); resume with the same --data and tokenizer",
                s.data_fingerprint,
                self.data.fingerprint()
            )));
        }
        if s.stage != self.stage.as_str() {
            return Err(fail(format!("the checkpoint is from a {} run", s.stage)));
        }
        Ok(())
    }

    fn progress_bar(&self, start: usize) -> ProgressBar {
        let steps = self.config.train.steps as u64;
        if !self.progress {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(steps);
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix} [{elapsed_precise}] {bar:30.cyan/blue} {pos}/{len} {msg} (ETA {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_prefix(self.stage.as_str());
        bar.set_position(start as u64);
        bar
    }

    fn plot(&self, metrics: &MetricsLog) -> Result<()> {
        plot_loss_curve(
            metrics.entries(),
            &self.out.join("loss.png"),
            &format!("chatforge {} loss", self.stage.as_str()),
        )
    }
}

#[cfg(test)]
mod budget_tests {
    use super::*;

    #[test]
    fn test_fit_steps_counts_validation_and_stays_in_bounds() {
        let tc = TrainSection {
            steps: 1000,
            eval_interval: 100,
            eval_iters: 150, // validation costs half a step per step
            ..TrainSection::default()
        };
        // 37.5 s left at 0.25 s per step (+50 % validation): 100 more steps.
        assert_eq!(fit_steps(&tc, 1000, 37.5, 0.25, 9), 109);
        assert_eq!(fit_steps(&tc, 1000, 1e6, 0.25, 9), 1000);
        assert_eq!(fit_steps(&tc, 1000, -5.0, 0.25, 9), 9);
        assert_eq!(fit_steps(&tc, 1000, 37.5, 0.0, 9), 1000);
    }

    /// The trainer's loop on a simulated clock, `step_s(i)` seconds for step
    /// `i`: (steps run, seconds taken, rate of the last step).
    fn simulate(
        budget_s: f64,
        max_steps: usize,
        step_s: impl Fn(usize) -> f64,
    ) -> (usize, f64, f64) {
        let mut tc = TrainSection {
            steps: max_steps,
            warmup_steps: 5,
            eval_interval: 100,
            eval_iters: 3,
            ..TrainSection::default()
        };
        let mut budget = Budget::new(budget_s, max_steps);
        let bar = ProgressBar::hidden();
        let (mut step, mut elapsed, mut lr) = (0, 0.0, f64::NAN);
        while step < tc.steps {
            lr = learning_rate(&tc, step);
            elapsed += step_s(step);
            step += 1;
            if let Some(fitted) = budget.after_step(&tc, step, elapsed, &bar) {
                tc.steps = fitted;
            }
        }
        (step, elapsed, lr)
    }

    fn near_min_lr(lr: f64) -> bool {
        let tc = TrainSection::default();
        lr < tc.min_lr + 0.05 * (tc.lr - tc.min_lr)
    }

    #[test]
    fn test_budget_fills_the_time_and_the_schedule_ends_with_it() {
        // A slow first step, then 0.1 s a step: 60 s hold about 580 steps.
        let (steps, took, lr) = simulate(60.0, 1_000_000, |i| if i == 0 { 1.0 } else { 0.1 });
        assert!((570..=600).contains(&steps), "{steps}");
        assert!((57.0..=60.0).contains(&took), "{took}");
        assert!(near_min_lr(lr), "{lr}");
        // A step count that fits well inside the budget is kept.
        assert_eq!(simulate(60.0, 100, |_| 0.1).0, 100);
    }

    #[test]
    fn test_budget_follows_a_machine_that_slows_down() {
        // Twice as slow from step 100 on, or twice as fast: the refits in
        // the first half follow it.
        for (before, after) in [(0.05, 0.1), (0.1, 0.05)] {
            let (steps, took, lr) =
                simulate(60.0, 1_000_000, |i| if i < 100 { before } else { after });
            assert!((58.0..=60.5).contains(&took), "{took} s for {steps} steps");
            assert!(near_min_lr(lr), "{lr}");
        }
    }

    #[test]
    fn test_budget_spent_by_the_probe_stops_after_it() {
        let (steps, took, _) = simulate(1.0, 1_000_000, |_| 0.2);
        assert_eq!(steps, BUDGET_PROBE_STEPS + 1);
        assert!((took - 0.2 * steps as f64).abs() < 1e-9, "{took}");
    }
}
