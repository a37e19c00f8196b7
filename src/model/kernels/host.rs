//! Access to CPU tensor data from inside custom ops, and row-parallel loops.

use candle_core::{CpuStorage, Layout, Result, Storage, Tensor, WithDType, bail};
use rayon::prelude::*;

/// The data of a contiguous CPU storage.
pub fn slice<'a, T: WithDType>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [T]> {
    let data = s.as_slice::<T>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => bail!("fused kernel: input is not contiguous"),
    }
}

/// Runs `f` over the f32 data of CPU tensors, made contiguous first. Backward
/// passes use it: their incoming gradients can be strided views.
pub fn with_host<R>(ts: &[&Tensor], f: impl FnOnce(&[&[f32]]) -> Result<R>) -> Result<R> {
    let ts: Vec<Tensor> = ts.iter().map(|t| t.contiguous()).collect::<Result<_>>()?;
    let guards: Vec<_> = ts.iter().map(|t| t.storage_and_layout()).collect();
    let mut slices = Vec::with_capacity(guards.len());
    for (g, l) in &guards {
        match &**g {
            Storage::Cpu(s) => slices.push(slice::<f32>(s, l)?),
            _ => bail!("fused kernels run on the CPU only"),
        }
    }
    f(&slices)
}

/// Rows per rayon task: enough work that scheduling stays negligible.
pub fn min_rows(cols: usize) -> usize {
    (16_384 / cols.max(1)).max(1)
}

/// `f(row_index, out_row)` over the rows of `out`, in parallel.
pub fn par_rows(out: &mut [f32], cols: usize, f: impl Fn(usize, &mut [f32]) + Sync + Send) {
    out.par_chunks_mut(cols)
        .with_min_len(min_rows(cols))
        .enumerate()
        .for_each(|(i, row)| f(i, row));
}

/// Like [`par_rows`], and each task also adds into its own `width`-long
/// accumulator; the accumulators are summed at the end (column sums for
/// bias and LayerNorm gradients).
pub fn par_rows_acc(
    out: &mut [f32],
    cols: usize,
    width: usize,
    f: impl Fn(usize, &mut [f32], &mut [f32]) + Sync + Send,
) -> Vec<f32> {
    sum_over(out.par_chunks_mut(cols), cols, width, f)
}

/// A raw pointer handed to parallel tasks that write disjoint parts of one
/// buffer (or only read it).
#[derive(Clone, Copy)]
pub struct Shared<P>(pub P);
// SAFETY: every user writes only the part of the buffer its task owns, and
// the buffer outlives the parallel loop.
unsafe impl<P> Send for Shared<P> {}
unsafe impl<P> Sync for Shared<P> {}

impl<P: Copy> Shared<P> {
    /// The pointer. A method, so closures capture the whole `Shared` (a
    /// closure naming the field would capture the bare pointer).
    pub fn get(self) -> P {
        self.0
    }
}

/// Sums `f(row_index, row, acc)` contributions over the rows of `data`, in
/// parallel, into one `width`-long vector.
pub fn par_fold_rows(
    data: &[f32],
    cols: usize,
    width: usize,
    f: impl Fn(usize, &[f32], &mut [f32]) + Sync + Send,
) -> Vec<f32> {
    sum_over(data.par_chunks(cols), cols, width, f)
}

/// Per-block partial sums over fixed row blocks, added in block order: the
/// result does not depend on how rayon happened to split the work, so
/// training stays bit-for-bit reproducible (and `--resume` exact).
fn sum_over<R: Send>(
    rows: impl IndexedParallelIterator<Item = R>,
    cols: usize,
    width: usize,
    f: impl Fn(usize, R, &mut [f32]) + Sync + Send,
) -> Vec<f32> {
    let block = min_rows(cols);
    let partials: Vec<Vec<f32>> = rows
        .enumerate()
        .chunks(block)
        .map(|items| {
            let mut acc = vec![0f32; width];
            for (i, row) in items {
                f(i, row, &mut acc);
            }
            acc
        })
        .collect();
    let mut total = vec![0f32; width];
    for p in &partials {
        for (t, x) in total.iter_mut().zip(p) {
            *t += x;
        }
    }
    total
}
