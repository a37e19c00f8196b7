//! LayerNorm over the last dimension: y = (x − mean) / √(var + ε) · w + b.

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor, bail};
use multiversion::multiversion;

use super::host::{par_rows, par_rows_acc, slice, with_host};
use super::math::{dot, sum};

struct LayerNorm {
    eps: f32,
}

/// Fused LayerNorm of `x` (…, C) with gain `w` (C) and bias `b` (C).
pub fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    x.contiguous()?
        .apply_op3(w, b, LayerNorm { eps: eps as f32 })
}

#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn forward_row(x: &[f32], w: &[f32], b: &[f32], eps: f32, y: &mut [f32]) {
    let n = x.len() as f32;
    let mean = sum(x) / n;
    for (o, &v) in y.iter_mut().zip(x) {
        *o = v - mean;
    }
    let rstd = 1.0 / (dot(y, y) / n + eps).sqrt();
    for ((o, &wi), &bi) in y.iter_mut().zip(w).zip(b) {
        *o = *o * rstd * wi + bi;
    }
}

/// dx for one row; dw and db accumulate. `dx` holds x̂ in between.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn backward_row(x: &[f32], dy: &[f32], w: &[f32], eps: f32, dx: &mut [f32], acc: &mut [f32]) {
    let c = x.len();
    let n = c as f32;
    let mean = sum(x) / n;
    for (o, &v) in dx.iter_mut().zip(x) {
        *o = v - mean;
    }
    let rstd = 1.0 / (dot(dx, dx) / n + eps).sqrt();
    for o in dx.iter_mut() {
        *o *= rstd;
    }
    let (dw, db) = acc.split_at_mut(c);
    for (((gw, gb), &g), &xh) in dw.iter_mut().zip(db.iter_mut()).zip(dy).zip(dx.iter()) {
        *gw += g * xh;
        *gb += g;
    }
    // With ĝ = dy·w: dx = rstd · (ĝ − mean(ĝ) − x̂ · mean(ĝ·x̂)).
    let mean_g = dot(dy, w) / n;
    let mut gx = 0f32;
    for ((&g, &wi), &xh) in dy.iter().zip(w).zip(dx.iter()) {
        gx += g * wi * xh;
    }
    let mean_gx = gx / n;
    for ((o, &g), &wi) in dx.iter_mut().zip(dy).zip(w) {
        *o = rstd * (g * wi - mean_g - *o * mean_gx);
    }
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "fused-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, w, b) = (
            slice::<f32>(s1, l1)?,
            slice::<f32>(s2, l2)?,
            slice::<f32>(s3, l3)?,
        );
        let c = l1.dims().last().copied().unwrap_or(0);
        if c == 0 || w.len() != c || b.len() != c {
            bail!(
                "layer norm: x {:?}, w {}, b {}",
                l1.dims(),
                w.len(),
                b.len()
            );
        }
        let mut y = vec![0f32; x.len()];
        par_rows(&mut y, c, |i, row| {
            forward_row(&x[i * c..(i + 1) * c], w, b, self.eps, row)
        });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let c = w.elem_count();
        let (dx, acc) = with_host(&[x, grad, w], |s| {
            let (x, dy, w) = (s[0], s[1], s[2]);
            let mut dx = vec![0f32; x.len()];
            let acc = par_rows_acc(&mut dx, c, 2 * c, |i, row, acc| {
                let r = i * c..(i + 1) * c;
                backward_row(&x[r.clone()], &dy[r], w, self.eps, row, acc)
            });
            Ok((dx, acc))
        })?;
        let dev = x.device();
        let dx = Tensor::from_vec(dx, x.shape(), dev)?;
        let dw = Tensor::from_slice(&acc[..c], c, dev)?;
        let db = Tensor::from_slice(&acc[c..], c, dev)?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}
