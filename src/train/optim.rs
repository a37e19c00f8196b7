//! AdamW with decoupled weight decay (PyTorch semantics) whose moments can
//! be saved and restored exactly, which candle's own `AdamW` cannot.

use std::collections::HashMap;

use candle_core::{DType, Tensor, Var, backprop::GradStore};

use super::{Error, Result, TrainSection};
use crate::model::kernels::{AdamStep, adamw_update};

struct Param {
    name: String,
    var: Var,
    moments: Moments,
    decay: bool,
}

/// First and second moments: plain host vectors for f32 CPU parameters,
/// updated in place by the fused kernel; tensors on other devices.
enum Moments {
    Host { m: Vec<f32>, v: Vec<f32> },
    Device { m: Tensor, v: Tensor },
}

impl Moments {
    fn zeros(var: &Var) -> Result<Self> {
        Ok(if var.device().is_cpu() && var.dtype() == DType::F32 {
            let n = var.elem_count();
            Moments::Host {
                m: vec![0.0; n],
                v: vec![0.0; n],
            }
        } else {
            Moments::Device {
                m: var.zeros_like()?,
                v: var.zeros_like()?,
            }
        })
    }

    fn tensors(&self, var: &Var) -> Result<(Tensor, Tensor)> {
        Ok(match self {
            Moments::Host { m, v } => (
                Tensor::from_slice(m, var.shape(), var.device())?,
                Tensor::from_slice(v, var.shape(), var.device())?,
            ),
            Moments::Device { m, v } => (m.clone(), v.clone()),
        })
    }

    fn set(&mut self, key: &str, tensor: Tensor) -> Result<()> {
        match (self, key) {
            (Moments::Host { m, .. }, "m") => *m = tensor.flatten_all()?.to_vec1()?,
            (Moments::Host { v, .. }, _) => *v = tensor.flatten_all()?.to_vec1()?,
            (Moments::Device { m, .. }, "m") => *m = tensor,
            (Moments::Device { v, .. }, _) => *v = tensor,
        }
        Ok(())
    }
}

pub struct AdamW {
    params: Vec<Param>,
    /// Updates applied so far (bias correction uses it).
    pub t: u64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
}

/// Matrix weights decay; biases, LayerNorm gains and embeddings do not.
pub fn decays(name: &str) -> bool {
    name.ends_with(".weight")
        && !name.contains("ln_")
        && !name.starts_with("wte")
        && !name.starts_with("wpe")
}

impl AdamW {
    /// `vars` sorted by name gives a stable parameter order.
    pub fn new(vars: &[(String, Var)], cfg: &TrainSection) -> Result<Self> {
        let params = vars
            .iter()
            .map(|(name, var)| {
                Ok(Param {
                    name: name.clone(),
                    var: var.clone(),
                    moments: Moments::zeros(var)?,
                    decay: decays(name),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            params,
            t: 0,
            beta1: cfg.beta1,
            beta2: cfg.beta2,
            eps: cfg.eps,
            weight_decay: cfg.weight_decay,
        })
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.params.iter().map(|p| p.name.as_str())
    }

    /// Gradients in parameter order; fails naming every parameter the
    /// graph did not reach.
    pub fn collect_grads(&self, grads: &GradStore) -> Result<Vec<Tensor>> {
        let mut out = Vec::with_capacity(self.params.len());
        let mut missing = Vec::new();
        for p in &self.params {
            match grads.get(p.var.as_tensor()) {
                // Detached: a gradient built from `Var`s records its own
                // graph, and moments accumulated from it would keep every
                // past step's graph alive (memory grows each step).
                Some(g) => out.push(g.detach()),
                None => missing.push(p.name.clone()),
            }
        }
        if !missing.is_empty() {
            return Err(Error::MissingGradient(missing));
        }
        Ok(out)
    }

    /// One update with learning rate `lr`.
    pub fn step(&mut self, grads: &[Tensor], lr: f64) -> Result<()> {
        self.step_scaled(grads, lr, 1.0)
    }

    /// One update with the gradients multiplied by `grad_scale` (clipping).
    pub fn step_scaled(&mut self, grads: &[Tensor], lr: f64, grad_scale: f64) -> Result<()> {
        self.t += 1;
        let (b1, b2) = (self.beta1, self.beta2);
        let bc1 = 1.0 - b1.powi(self.t as i32);
        let bc2 = 1.0 - b2.powi(self.t as i32);
        for (p, g) in self.params.iter_mut().zip(grads) {
            let decay = if p.decay { self.weight_decay } else { 0.0 };
            match &mut p.moments {
                Moments::Host { m, v } => adamw_update(
                    p.var.as_tensor(),
                    g,
                    m,
                    v,
                    AdamStep {
                        lr: lr as f32,
                        beta1: b1 as f32,
                        beta2: b2 as f32,
                        eps: self.eps as f32,
                        bias_correction: (bc1 as f32, bc2 as f32),
                        weight_decay: decay as f32,
                        grad_scale: grad_scale as f32,
                    },
                )?,
                Moments::Device { m, v } => {
                    let g = (g * grad_scale)?;
                    *m = ((&*m * b1)? + (&g * (1.0 - b1))?)?;
                    *v = ((&*v * b2)? + (g.sqr()? * (1.0 - b2))?)?;
                    let denom = ((&*v / bc2)?.sqrt()? + self.eps)?;
                    let update = ((&*m / bc1)? / denom)?;
                    let theta = (p.var.as_tensor().detach() * (1.0 - lr * decay))?;
                    p.var.set(&(theta - (update * lr)?)?)?;
                }
            }
        }
        Ok(())
    }

    /// Moments keyed `m.<param>` / `v.<param>`, for checkpoints.
    pub fn state_tensors(&self) -> Result<HashMap<String, Tensor>> {
        let mut out = HashMap::new();
        for p in &self.params {
            let (m, v) = p.moments.tensors(&p.var)?;
            out.insert(format!("m.{}", p.name), m);
            out.insert(format!("v.{}", p.name), v);
        }
        Ok(out)
    }

    /// Restores moments saved by [`AdamW::state_tensors`].
    pub fn load_state(&mut self, mut state: HashMap<String, Tensor>, t: u64) -> Result<()> {
        for p in &mut self.params {
            for key in ["m", "v"] {
                let name = format!("{key}.{}", p.name);
                let tensor = state.remove(&name).ok_or_else(|| Error::Checkpoint {
                    path: "optimizer.safetensors".into(),
                    reason: format!("missing {name}"),
                })?;
                if tensor.dims() != p.var.dims() {
                    return Err(Error::Checkpoint {
                        path: "optimizer.safetensors".into(),
                        reason: format!(
                            "{name} has shape {:?}, expected {:?}",
                            tensor.dims(),
                            p.var.dims()
                        ),
                    });
                }
                p.moments.set(key, tensor)?;
            }
        }
        self.t = t;
        Ok(())
    }
}

/// Global L2 norm of the gradients.
pub fn grad_norm(grads: &[Tensor]) -> Result<f32> {
    let mut total = 0f32;
    for g in grads {
        total += g.sqr()?.sum_all()?.to_scalar::<f32>()?;
    }
    Ok(total.sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn test_decay_groups() {
        assert!(decays("h.0.attn.c_attn.weight"));
        assert!(decays("h.3.mlp.c_proj.weight"));
        for n in [
            "wte.weight",
            "wpe.weight",
            "h.0.ln_1.weight",
            "h.0.attn.c_attn.bias",
            "ln_f.weight",
        ] {
            assert!(!decays(n), "{n}");
        }
    }

    #[test]
    fn test_matches_pytorch_adamw_by_hand() {
        // One step from m = v = 0: the update is lr·sign(g) (bias-corrected),
        // plus decoupled decay θ·(1 − lr·wd) on decaying params.
        let dev = Device::Cpu;
        let w = Var::from_tensor(&Tensor::new(&[[1.0f32, -2.0]], &dev).unwrap()).unwrap();
        let b = Var::from_tensor(&Tensor::new(&[0.5f32], &dev).unwrap()).unwrap();
        let cfg = TrainSection {
            weight_decay: 0.1,
            eps: 0.0,
            ..Default::default()
        };
        let mut opt = AdamW::new(
            &[("x.weight".into(), w.clone()), ("x.bias".into(), b.clone())],
            &cfg,
        )
        .unwrap();
        let gw = Tensor::new(&[[0.3f32, -0.7]], &dev).unwrap();
        let gb = Tensor::new(&[2.0f32], &dev).unwrap();
        opt.step(&[gw, gb], 0.01).unwrap();
        let w1: Vec<f32> = w.flatten_all().unwrap().to_vec1().unwrap();
        let b1: Vec<f32> = b.to_vec1().unwrap();
        assert!(
            (w1[0] - (1.0 * (1.0 - 0.001) - 0.01)).abs() < 1e-6,
            "{w1:?}"
        );
        assert!(
            (w1[1] - (-2.0 * (1.0 - 0.001) + 0.01)).abs() < 1e-6,
            "{w1:?}"
        );
        assert!((b1[0] - (0.5 - 0.01)).abs() < 1e-6, "{b1:?}");
    }
}
