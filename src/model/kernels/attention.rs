//! Causal multi-head self-attention straight from the fused `c_attn` output:
//! qkv (B·T, 3C) → y (B·T, C), one task per (batch, head).
//!
//! Q, K and V are read in place through strides (no split, transpose or
//! copy), rows go in blocks of `BLOCK` so the masked upper triangle is never
//! multiplied, and the backward recomputes the probabilities from the saved
//! row log-sum-exp (flash-attention style) instead of keeping B·H·T² floats.

use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor, bail};
use gemm::Parallelism;
use multiversion::multiversion;
use rayon::prelude::*;

use super::host::{Shared, slice, with_host};
use super::math::{dot, exp, exp_shifted, max};

const BLOCK: usize = 64;

/// y = softmax(QKᵀ/√d + causal mask) V per head, heads concatenated.
pub fn causal_attention(qkv: &Tensor, (b, t): (usize, usize), n_head: usize) -> Result<Tensor> {
    let (rows, width) = qkv.dims2()?;
    if rows != b * t || width % (3 * n_head) != 0 {
        bail!(
            "attention: qkv {:?} for batch {b} × {t} with {n_head} heads",
            qkv.dims()
        );
    }
    qkv.contiguous()?.apply_op1(CausalAttention {
        b,
        t,
        h: n_head,
        lse: Mutex::new(Vec::new()),
    })
}

struct CausalAttention {
    b: usize,
    t: usize,
    h: usize,
    /// Row log-sum-exp of the scores, (B·H·T), for the backward.
    lse: Mutex<Vec<f32>>,
}

/// A strided matrix operand.
#[derive(Clone, Copy)]
struct Mat {
    ptr: *const f32,
    rs: isize,
    cs: isize,
}

impl Mat {
    fn new(ptr: *const f32, rs: isize, cs: isize) -> Self {
        Self { ptr, rs, cs }
    }
}

/// dst (m×n, row stride `dst_rs`) ← [dst +] scale · lhs (m×k) · rhs (k×n).
///
/// # Safety
/// Every pointer must cover the addressed elements; `dst` must not alias
/// `lhs` or `rhs`.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    dst_rs: isize,
    accumulate: bool,
    lhs: Mat,
    rhs: Mat,
    scale: f32,
) {
    // SAFETY: forwarded from the caller.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs,
            accumulate,
            lhs.ptr,
            lhs.cs,
            lhs.rs,
            rhs.ptr,
            rhs.cs,
            rhs.rs,
            1.0,
            scale,
            false,
            false,
            false,
            Parallelism::None,
        )
    }
}

/// s (rows r0..r1 of the scores, row stride t) ← scale · Q[r0..r1] · K[..r1]ᵀ.
///
/// # Safety
/// `q` and `k` point at this head's Q and K in qkv (row stride `w`), which
/// has at least r1 rows; `s` holds (r1 − r0) rows of t.
unsafe fn scores(
    s: &mut [f32],
    [q, k]: [*const f32; 2],
    (r0, r1): (usize, usize),
    (t, d, w): (usize, usize, isize),
    scale: f32,
) {
    let q_blk = Mat::new(q.wrapping_offset(r0 as isize * w), w, 1);
    let k_t = Mat::new(k, 1, w);
    // SAFETY: forwarded from the caller.
    unsafe {
        gemm(
            (r1 - r0, r1, d),
            s.as_mut_ptr(),
            t as isize,
            false,
            q_blk,
            k_t,
            scale,
        )
    }
}

/// Softmax in place over `row[..=i]`, zero over `row[i + 1..]`; returns the
/// log-sum-exp.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn softmax_row(row: &mut [f32], i: usize) -> f32 {
    let (valid, masked) = row.split_at_mut(i + 1);
    let m = max(valid);
    let s = exp_shifted(valid, m);
    let inv = 1.0 / s;
    for x in valid.iter_mut() {
        *x *= inv;
    }
    masked.fill(0.0);
    m + s.ln()
}

/// Probabilities from scores and the saved log-sum-exp, then in `dp`
/// the scores' gradient: ds = p · (dp − Σ p·dp) · scale.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn backward_row(s: &mut [f32], dp: &mut [f32], i: usize, lse: f32, scale: f32) {
    let (valid, masked) = s.split_at_mut(i + 1);
    for x in valid.iter_mut() {
        *x = exp(*x - lse);
    }
    masked.fill(0.0);
    let delta = dot(valid, &dp[..=i]);
    for (d, &p) in dp.iter_mut().zip(s.iter()) {
        *d = p * (*d - delta) * scale;
    }
}

impl CausalAttention {
    fn dims(&self, width: usize) -> (usize, usize, isize, f32) {
        let c = width / 3;
        let d = c / self.h;
        (c, d, width as isize, 1.0 / (d as f32).sqrt())
    }

    /// Per (batch, head): the Q, K, V operands' pointers into qkv.
    fn heads(&self, qkv: *const f32, bh: usize, width: usize) -> [*const f32; 3] {
        let (c, d, _, _) = self.dims(width);
        let (bi, hi) = (bh / self.h, bh % self.h);
        let base = bi * self.t * width + hi * d;
        // SAFETY (for callers' use): offsets stay inside the (B·T, 3C) buffer.
        [base, base + c, base + 2 * c].map(|o| qkv.wrapping_add(o))
    }
}

impl CustomOp1 for CausalAttention {
    fn name(&self) -> &'static str {
        "fused-causal-attention"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let qkv = slice::<f32>(storage, layout)?;
        let width = layout.dims()[1];
        let (c, d, w, scale) = self.dims(width);
        let t = self.t;
        let mut y = vec![0f32; self.b * t * c];
        let mut lse = vec![0f32; self.b * self.h * t];
        let (src, out) = (Shared(qkv.as_ptr()), Shared(y.as_mut_ptr()));
        lse.par_chunks_mut(t).enumerate().for_each(|(bh, lse)| {
            let [q, k, v] = self.heads(src.get(), bh, width);
            let (bi, hi) = (bh / self.h, bh % self.h);
            let y = out.get().wrapping_add(bi * t * c + hi * d);
            let mut s = vec![0f32; BLOCK.min(t) * t];
            for r0 in (0..t).step_by(BLOCK) {
                let r1 = (r0 + BLOCK).min(t);
                let nb = r1 - r0;
                // SAFETY: Q rows r0..r1 and K, V rows 0..r1 of this head lie
                // in qkv; `s` holds nb × t; this task alone writes its head's
                // columns of y rows r0..r1.
                unsafe { scores(&mut s, [q, k], (r0, r1), (t, d, w), scale) };
                for ii in 0..nb {
                    lse[r0 + ii] = softmax_row(&mut s[ii * t..ii * t + r1], r0 + ii);
                }
                unsafe {
                    let p = Mat::new(s.as_ptr(), t as isize, 1);
                    let v_m = Mat::new(v, w, 1);
                    gemm((nb, d, r1), y.add(r0 * c), c as isize, false, p, v_m, 1.0);
                }
            }
        });
        *self.lse.lock().unwrap_or_else(|e| e.into_inner()) = lse;
        Ok((CpuStorage::F32(y), Shape::from((self.b * t, c))))
    }

    fn bwd(&self, qkv: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let lse = self.lse.lock().unwrap_or_else(|e| e.into_inner());
        let t = self.t;
        if lse.len() != self.b * self.h * t {
            bail!("attention backward before its forward");
        }
        let width = qkv.dim(1)?;
        let (c, d, w, scale) = self.dims(width);
        let dqkv = with_host(&[qkv, grad], |s| {
            let (src, dy) = (Shared(s[0].as_ptr()), Shared(s[1].as_ptr()));
            let mut dqkv = vec![0f32; s[0].len()];
            let out = Shared(dqkv.as_mut_ptr());
            (0..self.b * self.h).into_par_iter().for_each(|bh| {
                let [q, k, v] = self.heads(src.get(), bh, width);
                let [dq, dk, dv] = self.heads(out.get(), bh, width).map(|p| p as *mut f32);
                let (bi, hi) = (bh / self.h, bh % self.h);
                let dy = dy.get().wrapping_add(bi * t * c + hi * d);
                let lse = &lse[bh * t..(bh + 1) * t];
                let mut s = vec![0f32; BLOCK.min(t) * t];
                let mut dp = vec![0f32; BLOCK.min(t) * t];
                for r0 in (0..t).step_by(BLOCK) {
                    let r1 = (r0 + BLOCK).min(t);
                    let nb = r1 - r0;
                    let ld = t as isize;
                    // SAFETY: as in the forward; this task alone writes its
                    // head's columns of dqkv.
                    unsafe {
                        scores(&mut s, [q, k], (r0, r1), (t, d, w), scale);
                        let dy_blk = Mat::new(dy.add(r0 * c), c as isize, 1);
                        let v_t = Mat::new(v, 1, w);
                        gemm((nb, r1, d), dp.as_mut_ptr(), ld, false, dy_blk, v_t, 1.0);
                    }
                    for ii in 0..nb {
                        let row = ii * t..ii * t + r1;
                        backward_row(
                            &mut s[row.clone()],
                            &mut dp[row],
                            r0 + ii,
                            lse[r0 + ii],
                            scale,
                        );
                    }
                    unsafe {
                        let ds = Mat::new(dp.as_ptr(), ld, 1);
                        let ds_t = Mat::new(dp.as_ptr(), 1, ld);
                        let p_t = Mat::new(s.as_ptr(), 1, ld);
                        let k_m = Mat::new(k, w, 1);
                        let q_blk = Mat::new(q.add(r0 * width), w, 1);
                        let dy_blk = Mat::new(dy.add(r0 * c), c as isize, 1);
                        // dQ[r0..r1] = dS · K;  dK[..r1] += dSᵀ · Q;  dV[..r1] += Pᵀ · dY
                        gemm((nb, d, r1), dq.add(r0 * width), w, false, ds, k_m, 1.0);
                        gemm((r1, d, nb), dk, w, true, ds_t, q_blk, 1.0);
                        gemm((r1, d, nb), dv, w, true, p_t, dy_blk, 1.0);
                    }
                }
            });
            Ok(dqkv)
        })?;
        Ok(Some(Tensor::from_vec(dqkv, qkv.shape(), qkv.device())?))
    }
}
