//! Cross-entropy of logits against target ids, with the softmax inside:
//! nll_i = logsumexp(z_i) − z_i[y_i]; the backward is (softmax(z_i) − onehot)·g_i.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor, bail};
use multiversion::multiversion;
use rayon::prelude::*;

use super::host::{min_rows, slice, with_host};
use super::math::{exp, max, sum_exp};

/// Per-row negative log-likelihood: logits (N, V) f32, targets (N) u32 → (N).
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    logits
        .contiguous()?
        .apply_op2(&targets.contiguous()?, CrossEntropy)
}

struct CrossEntropy;

#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn logsumexp(z: &[f32]) -> f32 {
    let m = max(z);
    m + sum_exp(z, m).ln()
}

/// dz = (e^(z − lse) − onehot(y)) · g
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn backward_row(z: &[f32], lse: f32, g: f32, dz: &mut [f32]) {
    for (o, &v) in dz.iter_mut().zip(z) {
        *o = exp(v - lse) * g;
    }
}

fn check_targets(targets: &[u32], v: usize) -> Result<()> {
    if let Some(t) = targets.iter().find(|&&t| t as usize >= v) {
        bail!("cross-entropy: target id {t} is outside the vocabulary ({v})");
    }
    Ok(())
}

impl CustomOp2 for CrossEntropy {
    fn name(&self) -> &'static str {
        "fused-cross-entropy"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (z, y) = (slice::<f32>(s1, l1)?, slice::<u32>(s2, l2)?);
        let (n, v) = l1.shape().dims2()?;
        if y.len() != n {
            bail!("cross-entropy: {n} rows of logits, {} targets", y.len());
        }
        check_targets(y, v)?;
        let mut nll = vec![0f32; n];
        nll.par_iter_mut()
            .with_min_len(min_rows(v))
            .enumerate()
            .for_each(|(i, o)| {
                let row = &z[i * v..(i + 1) * v];
                *o = logsumexp(row) - row[y[i] as usize];
            });
        Ok((CpuStorage::F32(nll), Shape::from(n)))
    }

    fn bwd(
        &self,
        logits: &Tensor,
        targets: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (n, v) = logits.dims2()?;
        // Checked against the vocabulary by the forward.
        let y = targets.to_vec1::<u32>()?;
        let dz = with_host(&[logits, res, grad], |s| {
            let (z, nll, g) = (s[0], s[1], s[2]);
            let mut dz = vec![0f32; n * v];
            dz.par_chunks_mut(v)
                .with_min_len(min_rows(v))
                .enumerate()
                .for_each(|(i, out)| {
                    let row = &z[i * v..(i + 1) * v];
                    let t = y[i] as usize;
                    // logsumexp = nll + z[target], saved by the forward.
                    backward_row(row, nll[i] + row[t], g[i], out);
                    out[t] -= g[i];
                });
            Ok(dz)
        })?;
        Ok((Some(Tensor::from_vec(dz, (n, v), logits.device())?), None))
    }
}
