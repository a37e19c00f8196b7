//! GPT-2's Conv1D as one op: y = x (N, I) · W (I, O) + b, optionally through
//! GELU (tanh form). One node in the graph instead of matmul → bias-add →
//! GELU: candle's backward zero-fills and adds a gradient buffer for every
//! intermediate, and its broadcast backward reduces the bias gradient over
//! the leading dimension per element. Here the bias gradient is one parallel
//! column sum, and outputs come straight from `gemm` without zero-filling.

use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor, bail};
use gemm::Parallelism;
use multiversion::multiversion;

use super::host::{par_fold_rows, par_rows, par_rows_acc, slice, with_host};
use super::math::{gelu, gelu_grad};

/// x (N, I) · W (I, O) + b (O), then GELU when `gelu`.
pub fn linear(x: &Tensor, w: &Tensor, b: &Tensor, gelu: bool) -> Result<Tensor> {
    x.contiguous()?.apply_op3(
        &w.contiguous()?,
        b,
        Linear {
            gelu,
            pre: Mutex::new(Vec::new()),
        },
    )
}

struct Linear {
    gelu: bool,
    /// The pre-activation x·W + b, kept by the forward for GELU's backward.
    pre: Mutex<Vec<f32>>,
}

/// A row-major operand for `matmul`: pointer, row stride, column stride.
type Operand = (*const f32, usize, usize);

/// A new (m × n) = lhs (m × k) · rhs (k × n), written by gemm without a
/// zero-fill first.
fn matmul((m, n, k): (usize, usize, usize), lhs: Operand, rhs: Operand) -> Result<Vec<f32>> {
    if k == 0 {
        bail!("linear: empty inner dimension");
    }
    let mut out = Vec::with_capacity(m * n);
    let threads = if m * n * k >= 1 << 18 {
        Parallelism::Rayon(crate::threads())
    } else {
        Parallelism::None
    };
    // SAFETY: the operands cover m×k and k×n elements with the given strides
    // (callers pass whole contiguous buffers), `out` has room for m×n, and
    // gemm with read_dst = false writes every one of them before `set_len`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            false,
            lhs.0,
            lhs.2 as isize,
            lhs.1 as isize,
            rhs.0,
            rhs.2 as isize,
            rhs.1 as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            threads,
        );
        out.set_len(m * n);
    }
    Ok(out)
}

#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn add_bias_row(row: &mut [f32], b: &[f32]) {
    for (o, &bi) in row.iter_mut().zip(b) {
        *o += bi;
    }
}

#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn gelu_row(h: &[f32], y: &mut [f32]) {
    for (o, &v) in y.iter_mut().zip(h) {
        *o = gelu(v);
    }
}

/// d = dy · gelu'(h), summed into `db` too.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn gelu_backward_row(h: &[f32], dy: &[f32], d: &mut [f32], db: &mut [f32]) {
    for (((o, acc), &v), &g) in d.iter_mut().zip(db.iter_mut()).zip(h).zip(dy) {
        let x = g * gelu_grad(v);
        *o = x;
        *acc += x;
    }
}

#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn accumulate_row(row: &[f32], acc: &mut [f32]) {
    for (a, &v) in acc.iter_mut().zip(row) {
        *a += v;
    }
}

impl CustomOp3 for Linear {
    fn name(&self) -> &'static str {
        if self.gelu {
            "fused-linear-gelu"
        } else {
            "fused-linear"
        }
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
        let (n, i) = l1.shape().dims2()?;
        let (wi, o) = l2.shape().dims2()?;
        if wi != i || b.len() != o {
            bail!(
                "linear: x {:?}, W {:?}, b {}",
                l1.dims(),
                l2.dims(),
                b.len()
            );
        }
        let mut h = matmul((n, o, i), (x.as_ptr(), i, 1), (w.as_ptr(), o, 1))?;
        par_rows(&mut h, o, |_, row| add_bias_row(row, b));
        if !self.gelu {
            return Ok((CpuStorage::F32(h), Shape::from((n, o))));
        }
        let mut y = vec![0f32; h.len()];
        par_rows(&mut y, o, |r, row| gelu_row(&h[r * o..(r + 1) * o], row));
        *self.pre.lock().unwrap_or_else(|e| e.into_inner()) = h;
        Ok((CpuStorage::F32(y), Shape::from((n, o))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (n, i) = x.dims2()?;
        let o = w.dim(1)?;
        let pre = self.pre.lock().unwrap_or_else(|e| e.into_inner());
        if self.gelu && pre.len() != n * o {
            bail!("linear backward before its forward");
        }
        let (dx, dw, db) = with_host(&[x, w, grad], |s| {
            let (x, w, dy) = (s[0], s[1], s[2]);
            let (d, db) = if self.gelu {
                let mut d = vec![0f32; n * o];
                let db = par_rows_acc(&mut d, o, o, |r, row, acc| {
                    let span = r * o..(r + 1) * o;
                    gelu_backward_row(&pre[span.clone()], &dy[span], row, acc)
                });
                (Some(d), db)
            } else {
                (
                    None,
                    par_fold_rows(dy, o, o, |_, row, acc| accumulate_row(row, acc)),
                )
            };
            let d = d.as_deref().unwrap_or(dy);
            // dx = d · Wᵀ, dW = xᵀ · d
            let dx = matmul((n, i, o), (d.as_ptr(), o, 1), (w.as_ptr(), 1, o))?;
            let dw = matmul((i, o, n), (x.as_ptr(), 1, i), (d.as_ptr(), o, 1))?;
            Ok((dx, dw, db))
        })?;
        let dev = x.device();
        Ok((
            Some(Tensor::from_vec(dx, (n, i), dev)?),
            Some(Tensor::from_vec(dw, (i, o), dev)?),
            Some(Tensor::from_vec(db, o, dev)?),
        ))
    }
}
