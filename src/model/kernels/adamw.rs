//! The AdamW update as one in-place pass over parameter, gradient and
//! moments (composed, it is a dozen tensor ops and allocations per parameter).

use std::cell::RefCell;

use candle_core::{CpuStorage, InplaceOp2, Layout, Result, Tensor, bail};
use multiversion::multiversion;
use rayon::prelude::*;

use super::host::slice;

/// One step's coefficients (PyTorch's AdamW semantics).
#[derive(Debug, Clone, Copy)]
pub struct AdamStep {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// 1 − β₁ᵗ and 1 − β₂ᵗ.
    pub bias_correction: (f32, f32),
    /// θ ← θ·(1 − lr·wd) first; 0 for parameters that do not decay.
    pub weight_decay: f32,
    /// Multiplies the gradient (clipping folded in).
    pub grad_scale: f32,
}

/// θ, m, v ← AdamW(θ, g, m, v) in place; `m` and `v` are the host-side
/// moments of `theta`.
pub fn adamw_update(
    theta: &Tensor,
    grad: &Tensor,
    m: &mut [f32],
    v: &mut [f32],
    step: AdamStep,
) -> Result<()> {
    if m.len() != theta.elem_count() || v.len() != theta.elem_count() {
        bail!(
            "adamw: moments of {} for a parameter of {}",
            m.len(),
            theta.elem_count()
        );
    }
    theta.inplace_op2(
        &grad.contiguous()?,
        &AdamUpdate {
            moments: RefCell::new((m, v)),
            step,
        },
    )
}

struct AdamUpdate<'a> {
    moments: RefCell<(&'a mut [f32], &'a mut [f32])>,
    step: AdamStep,
}

const CHUNK: usize = 16_384;

#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn update(theta: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], s: &AdamStep) {
    let (bc1, bc2) = s.bias_correction;
    let decay = 1.0 - s.lr * s.weight_decay;
    for (((p, &g), m), v) in theta.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
        let g = g * s.grad_scale;
        *m = s.beta1 * *m + (1.0 - s.beta1) * g;
        *v = s.beta2 * *v + (1.0 - s.beta2) * g * g;
        let denom = (*v / bc2).sqrt() + s.eps;
        *p = *p * decay - s.lr * (*m / bc1) / denom;
    }
}

impl InplaceOp2 for AdamUpdate<'_> {
    fn name(&self) -> &'static str {
        "fused-adamw"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<()> {
        let g = slice::<f32>(s2, l2)?;
        let Some((a, b)) = l1.contiguous_offsets() else {
            bail!("adamw: parameter is not contiguous");
        };
        let CpuStorage::F32(data) = s1 else {
            bail!("adamw: parameter is not f32");
        };
        let theta = &mut data[a..b];
        if g.len() != theta.len() {
            bail!(
                "adamw: gradient of {} for a parameter of {}",
                g.len(),
                theta.len()
            );
        }
        let mut moments = self.moments.borrow_mut();
        let (m, v) = &mut *moments;
        let step = self.step;
        theta
            .par_chunks_mut(CHUNK)
            .zip(g.par_chunks(CHUNK))
            .zip(m.par_chunks_mut(CHUNK))
            .zip(v.par_chunks_mut(CHUNK))
            .for_each(|(((p, g), m), v)| update(p, g, m, v, &step));
        Ok(())
    }
}
