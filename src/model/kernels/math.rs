//! Vectorisable f32 building blocks. libm's `expf`/`tanhf` are calls LLVM
//! cannot vectorise, and f32 sums in one accumulator cannot be reordered, so
//! these are written to compile to SIMD inside the multiversioned kernels.

/// e^x with Cephes' polynomial (≈ 2 ulp); saturates below −87.3 (≈ 1e-38)
/// and above 88.3 (+∞ past f32's range). NaN propagates.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5·2^23: adding and subtracting it rounds to the nearest integer
    // without a libm call.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.3, 88.3);
    let shifted = x * LOG2E + ROUND;
    let n = shifted - ROUND;
    // n as an integer, read from the mantissa bits of `shifted`: a float →
    // int `as` cast saturates and checks NaN per element, which LLVM will
    // not vectorise.
    let ni = shifted.to_bits().wrapping_sub(ROUND.to_bits()) as i32;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_1e-4_f32;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    let scale = f32::from_bits((ni.wrapping_add(127) as u32) << 23);
    y * scale
}

/// tanh through `exp`; absolute error ~1e-7.
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    1.0 - 2.0 / (exp(2.0 * x) + 1.0)
}

const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const GELU_C: f32 = 0.044_715;

/// GELU, tanh form (GPT-2's `gelu_new`).
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    let t = tanh(SQRT_2_OVER_PI * (x + GELU_C * x * x * x));
    0.5 * x * (1.0 + t)
}

/// d gelu / dx.
#[inline(always)]
pub fn gelu_grad(x: f32) -> f32 {
    let x2 = x * x;
    let t = tanh(SQRT_2_OVER_PI * (x + GELU_C * x2 * x));
    0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_C * x2)
}

const LANES: usize = 16;

/// Σ xs, in `LANES` independent accumulators so it vectorises.
#[inline(always)]
pub fn sum(xs: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = xs.chunks_exact(LANES);
    let rest: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for k in 0..LANES {
            acc[k] += c[k];
        }
    }
    acc.iter().sum::<f32>() + rest
}

/// Σ a·b.
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let rest: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for k in 0..LANES {
            acc[k] += x[k] * y[k];
        }
    }
    acc.iter().sum::<f32>() + rest
}

/// max xs (−∞ when empty; NaN-free inputs assumed, a NaN row stays NaN
/// through `exp` anyway).
#[inline(always)]
pub fn max(xs: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = xs.chunks_exact(LANES);
    let rest = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    for c in chunks {
        for k in 0..LANES {
            acc[k] = acc[k].max(c[k]);
        }
    }
    acc.iter().fold(rest, |m, &x| m.max(x))
}

/// Σ e^(x − m).
#[inline(always)]
pub fn sum_exp(xs: &[f32], m: f32) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = xs.chunks_exact(LANES);
    let rest: f32 = chunks.remainder().iter().map(|&x| exp(x - m)).sum();
    for c in chunks {
        for k in 0..LANES {
            acc[k] += exp(c[k] - m);
        }
    }
    acc.iter().sum::<f32>() + rest
}

/// In place: xs ← e^(xs − m); returns the sum.
#[inline(always)]
pub fn exp_shifted(xs: &mut [f32], m: f32) -> f32 {
    for x in xs.iter_mut() {
        *x = exp(*x - m);
    }
    sum(xs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_exp_and_tanh_match_libm() {
        let mut worst = (0f32, 0f32);
        for i in -8000..8000 {
            let x = i as f32 * 0.01;
            let (a, b) = (exp(x), x.exp());
            let rel = ((a - b) / b).abs();
            if rel > worst.0 {
                worst = (rel, x);
            }
            assert!((tanh(x) - x.tanh()).abs() < 3e-7, "tanh({x})");
        }
        assert!(worst.0 < 5e-7, "exp worst relative error {worst:?}");
        assert_eq!(exp(f32::NEG_INFINITY), exp(-87.3));
        assert!(exp(-200.0) < 1e-37);
        assert!(exp(f32::NAN).is_nan());
    }

    #[test]
    fn test_gelu_grad_matches_finite_differences() {
        for i in -60..60 {
            let x = i as f32 * 0.1;
            let h = 1e-3f64;
            let g = |x: f64| {
                0.5 * x
                    * (1.0
                        + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3))).tanh())
            };
            let fd = (g(x as f64 + h) - g(x as f64 - h)) / (2.0 * h);
            assert!((gelu_grad(x) as f64 - fd).abs() < 1e-5, "x={x}");
            assert!((gelu(x) as f64 - g(x as f64)).abs() < 1e-6, "x={x}");
        }
    }

    #[test]
    fn test_reductions() {
        let xs: Vec<f32> = (0..37).map(|i| (i as f32 * 0.37).sin()).collect();
        let s: f32 = xs.iter().sum();
        assert!((sum(&xs) - s).abs() < 1e-5);
        assert!((dot(&xs, &xs) - xs.iter().map(|x| x * x).sum::<f32>()).abs() < 1e-5);
        assert_eq!(max(&xs), xs.iter().cloned().fold(f32::MIN, f32::max));
        assert_eq!(max(&[]), f32::NEG_INFINITY);
    }
}
