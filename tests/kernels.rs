//! The fused CPU kernels against the composed candle ops they replace:
//! forward values and gradients (through candle's autograd on both sides)
//! within 1e-4 relative, on odd shapes that exercise every remainder path;
//! then the whole model and a short training run, fused vs composed.

use candle_core::{D, DType, Device, IndexOp, Tensor, Var};
use chatforge::model::kernels::{
    self, AdamStep, Kernels, adamw_update, causal_attention, cross_entropy, layer_norm, linear,
};
use chatforge::model::{GptConfig, init_weights};
use chatforge::train::{self, TrainSection, batch_loss, step_rng, train_step, trainable};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn randn(shape: &[usize], scale: f32, seed: u64) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|_| (rng.random::<f32>() * 2.0 - 1.0) * scale)
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

/// max |a − b| / max |b| ≤ 1e-4.
fn assert_close(what: &str, a: &Tensor, b: &Tensor) {
    assert_eq!(a.dims(), b.dims(), "{what}: shapes");
    let (a, b) = (flat(a), flat(b));
    let scale = b.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-6);
    let worst = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(
        worst / scale <= 1e-4,
        "{what}: max abs diff {worst} vs max |ref| {scale} (relative {})",
        worst / scale
    );
    assert!(a.iter().all(|x| x.is_finite()), "{what}: non-finite");
}

/// Values and the gradients of Σ y·r w.r.t. every input, fused vs composed.
fn check(
    what: &str,
    inputs: &[Tensor],
    fused: impl Fn(&[Tensor]) -> Tensor,
    composed: impl Fn(&[Tensor]) -> Tensor,
) {
    let run = |f: &dyn Fn(&[Tensor]) -> Tensor| {
        let vars: Vec<Var> = inputs
            .iter()
            .map(|t| Var::from_tensor(t).unwrap())
            .collect();
        let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let y = f(&ts);
        let r = randn(y.dims(), 1.0, 99);
        let grads = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let gs: Vec<Option<Tensor>> = vars
            .iter()
            .map(|v| grads.get(v.as_tensor()).cloned())
            .collect();
        (y, gs)
    };
    let (yf, gf) = run(&fused);
    let (yc, gc) = run(&composed);
    assert_close(&format!("{what} forward"), &yf, &yc);
    for (i, (f, c)) in gf.iter().zip(&gc).enumerate() {
        match (f, c) {
            (Some(f), Some(c)) => assert_close(&format!("{what} d/d input {i}"), f, c),
            (None, None) => {}
            _ => panic!("{what}: input {i} has a gradient on one side only"),
        }
    }
}

fn composed_layer_norm(x: &Tensor, w: &Tensor, b: &Tensor) -> Tensor {
    let mean = x.mean_keepdim(D::Minus1).unwrap();
    let c = x.broadcast_sub(&mean).unwrap();
    let var = c.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
    let n = c
        .broadcast_div(&(var + 1e-5).unwrap().sqrt().unwrap())
        .unwrap();
    n.broadcast_mul(w).unwrap().broadcast_add(b).unwrap()
}

#[test]
fn test_layer_norm_matches_composed() {
    for (rows, c) in [(1, 1), (7, 33), (50, 128), (3, 385)] {
        let x = (randn(&[rows, c], 3.0, 1) + 0.7).unwrap();
        let w = (randn(&[c], 0.5, 2) + 1.0).unwrap();
        let b = randn(&[c], 0.3, 3);
        check(
            &format!("layer norm {rows}×{c}"),
            &[x, w, b],
            |t| layer_norm(&t[0], &t[1], &t[2], 1e-5).unwrap(),
            |t| composed_layer_norm(&t[0], &t[1], &t[2]),
        );
    }
}

#[test]
fn test_linear_and_linear_gelu_match_composed() {
    // Small (single-threaded gemm) and large (parallel) products.
    for (n, i, o) in [(1, 1, 1), (9, 7, 31), (40, 33, 130), (300, 96, 512)] {
        let x = randn(&[n, i], 2.0, 4);
        let w = randn(&[i, o], 0.5, 12);
        let b = randn(&[o], 1.0, 5);
        let inputs = [x, w, b];
        check(
            &format!("linear {n}×{i}·{i}×{o}"),
            &inputs,
            |t| linear(&t[0], &t[1], &t[2], false).unwrap(),
            |t| t[0].matmul(&t[1]).unwrap().broadcast_add(&t[2]).unwrap(),
        );
        check(
            &format!("linear + gelu {n}×{i}·{i}×{o}"),
            &inputs,
            |t| linear(&t[0], &t[1], &t[2], true).unwrap(),
            |t| {
                t[0].matmul(&t[1])
                    .unwrap()
                    .broadcast_add(&t[2])
                    .unwrap()
                    .gelu()
                    .unwrap()
            },
        );
    }
}

fn composed_attention(qkv: &Tensor, (b, t): (usize, usize), h: usize) -> Tensor {
    let c = qkv.dim(1).unwrap() / 3;
    let d = c / h;
    let split = |i: usize| {
        qkv.narrow(1, i * c, c)
            .unwrap()
            .reshape((b, t, h, d))
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .contiguous()
            .unwrap()
    };
    let (q, k, v) = (split(0), split(1), split(2));
    let att = (q.matmul(&k.t().unwrap()).unwrap() / (d as f64).sqrt()).unwrap();
    let mask: Vec<f32> = (0..t)
        .flat_map(|i| (0..t).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    let mask = Tensor::from_vec(mask, (t, t), &Device::Cpu).unwrap();
    let att = candle_nn::ops::softmax(&att.broadcast_add(&mask).unwrap(), D::Minus1).unwrap();
    att.matmul(&v)
        .unwrap()
        .transpose(1, 2)
        .unwrap()
        .reshape((b * t, c))
        .unwrap()
}

#[test]
fn test_causal_attention_matches_composed() {
    // t = 1, t < block, t spanning blocks with a ragged last one.
    for (b, t, h, d) in [(1, 1, 1, 4), (2, 5, 3, 8), (2, 70, 2, 16), (1, 150, 4, 5)] {
        let c = h * d;
        let qkv = randn(&[b * t, 3 * c], 2.0, 6);
        check(
            &format!("attention b{b} t{t} h{h} d{d}"),
            &[qkv],
            |x| causal_attention(&x[0], (b, t), h).unwrap(),
            |x| composed_attention(&x[0], (b, t), h),
        );
    }
}

#[test]
fn test_attention_is_causal() {
    // Changing a later position leaves earlier outputs untouched.
    let (b, t, h, c) = (1, 9, 2, 8);
    let qkv = randn(&[b * t, 3 * c], 1.0, 7);
    let y = causal_attention(&qkv, (b, t), h).unwrap();
    let bumped = qkv
        .slice_assign(&[8..9, 0..3 * c], &(qkv.i(8..9).unwrap() + 5.0).unwrap())
        .unwrap();
    let y2 = causal_attention(&bumped, (b, t), h).unwrap();
    assert_eq!(flat(&y.i(0..8).unwrap()), flat(&y2.i(0..8).unwrap()));
    assert_ne!(flat(&y.i(8..9).unwrap()), flat(&y2.i(8..9).unwrap()));
}

#[test]
fn test_cross_entropy_matches_composed_and_checks_targets() {
    for (n, v) in [(1, 2), (13, 65), (64, 4099)] {
        let logits = randn(&[n, v], 8.0, 8);
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let y: Vec<u32> = (0..n).map(|_| rng.random_range(0..v as u32)).collect();
        let y = Tensor::from_vec(y, n, &Device::Cpu).unwrap();
        let yc = y.clone();
        check(
            &format!("cross-entropy {n}×{v}"),
            &[logits],
            |t| cross_entropy(&t[0], &y).unwrap(),
            |t| {
                let logp = candle_nn::ops::log_softmax(&t[0], D::Minus1).unwrap();
                logp.gather(&yc.unsqueeze(1).unwrap(), 1)
                    .unwrap()
                    .squeeze(1)
                    .unwrap()
                    .neg()
                    .unwrap()
            },
        );
    }
    let logits = randn(&[2, 5], 1.0, 10);
    let bad = Tensor::new(&[1u32, 5], &Device::Cpu).unwrap();
    let err = cross_entropy(&logits, &bad).unwrap_err().to_string();
    assert!(
        err.contains("target id 5") && err.contains("vocabulary (5)"),
        "{err}"
    );
}

#[test]
fn test_adamw_update_matches_formula_over_steps() {
    let n = 40_000; // several parallel chunks and a remainder
    let theta0 = flat(&randn(&[n], 1.0, 11));
    let theta = Var::from_tensor(&Tensor::from_slice(&theta0, n, &Device::Cpu).unwrap()).unwrap();
    let (mut m, mut v) = (vec![0f32; n], vec![0f32; n]);
    let (mut em, mut ev, mut et) = (
        vec![0f64; n],
        vec![0f64; n],
        theta0.iter().map(|&x| x as f64).collect::<Vec<_>>(),
    );
    let (b1, b2, eps, lr, wd, gs) = (0.9f64, 0.99f64, 1e-8f64, 1e-2f64, 0.1f64, 0.5f64);
    for step in 1..=5 {
        let g = randn(&[n], 1.0, 20 + step as u64);
        let (bc1, bc2) = (1.0 - b1.powi(step), 1.0 - b2.powi(step));
        adamw_update(
            theta.as_tensor(),
            &g,
            &mut m,
            &mut v,
            AdamStep {
                lr: lr as f32,
                beta1: b1 as f32,
                beta2: b2 as f32,
                eps: eps as f32,
                bias_correction: (bc1 as f32, bc2 as f32),
                weight_decay: wd as f32,
                grad_scale: gs as f32,
            },
        )
        .unwrap();
        for (i, &gi) in flat(&g).iter().enumerate() {
            let gi = gi as f64 * gs;
            em[i] = b1 * em[i] + (1.0 - b1) * gi;
            ev[i] = b2 * ev[i] + (1.0 - b2) * gi * gi;
            et[i] = et[i] * (1.0 - lr * wd) - lr * (em[i] / bc1) / ((ev[i] / bc2).sqrt() + eps);
        }
    }
    let got = flat(theta.as_tensor());
    let worst = got
        .iter()
        .zip(&et)
        .map(|(a, b)| (*a as f64 - b).abs())
        .fold(0f64, f64::max);
    assert!(worst < 1e-5, "θ after 5 steps: max abs diff {worst}");
    let worst_m = m
        .iter()
        .zip(&em)
        .map(|(a, b)| (*a as f64 - b).abs())
        .fold(0f64, f64::max);
    assert!(worst_m < 1e-6, "m: {worst_m}");
}

fn batch(cfg: &GptConfig, b: usize, t: usize, seed: u64) -> train::Batch {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let v = cfg.vocab_size as u32;
    let x: Vec<u32> = (0..b * t).map(|_| rng.random_range(0..v)).collect();
    let y: Vec<u32> = (0..b * t).map(|_| rng.random_range(0..v)).collect();
    train::Batch {
        x: Tensor::from_vec(x, (b, t), &Device::Cpu).unwrap(),
        y: Tensor::from_vec(y, b * t, &Device::Cpu).unwrap(),
        w: None,
        targets: b * t,
        target_bytes: (b * t) as u64,
    }
}

#[test]
fn test_model_loss_and_every_gradient_match_composed() {
    let dev = Device::Cpu;
    let cfg = GptConfig::sized(97, 80, 48, 2, 3);
    let tc = TrainSection::default();
    let w = init_weights(&cfg, 5, &dev).unwrap();
    let (vars, model, _) = trainable(&w, &cfg, &tc, &dev).unwrap();
    assert_eq!(
        model.kernels(),
        Kernels::Fused,
        "CPU f32 models use the fused kernels"
    );
    let composed = model.clone().with_kernels(Kernels::Composed);
    let bt = batch(&cfg, 3, 70, 1);
    let lf = batch_loss(&model, &bt, None).unwrap();
    let lc = batch_loss(&composed, &bt, None).unwrap();
    assert_close("loss", &lf, &lc);
    let (gf, gc) = (lf.backward().unwrap(), lc.backward().unwrap());
    for (name, var) in &vars {
        let (f, c) = (gf.get(var.as_tensor()), gc.get(var.as_tensor()));
        let (Some(f), Some(c)) = (f, c) else {
            panic!("{name}: missing gradient");
        };
        assert_close(name, f, c);
    }
    let _ = kernels::Kernels::Composed;
}

/// A learnable stream: a fixed pseudo-random cycle of 97 tokens read from
/// random offsets.
struct Cycle;

impl Cycle {
    fn token(i: usize) -> u32 {
        ((i % 97) * 31 % 61) as u32
    }
}

impl train::Dataset for Cycle {
    fn train_batch(
        &self,
        rng: &mut ChaCha8Rng,
        b: usize,
        t: usize,
        dev: &Device,
    ) -> train::Result<train::Batch> {
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for _ in 0..b {
            let o = rng.random_range(0..97);
            x.extend((0..t).map(|i| Cycle::token(o + i)));
            y.extend((0..t).map(|i| Cycle::token(o + i + 1)));
        }
        Ok(train::Batch {
            x: Tensor::from_vec(x, (b, t), dev)?,
            y: Tensor::from_vec(y, b * t, dev)?,
            w: None,
            targets: b * t,
            target_bytes: (b * t) as u64,
        })
    }

    fn val_batches(
        &self,
        _: usize,
        _: usize,
        _: usize,
        _: &Device,
    ) -> train::Result<Vec<train::Batch>> {
        Ok(Vec::new())
    }

    fn fingerprint(&self) -> String {
        "cycle".into()
    }

    fn train_tokens(&self) -> usize {
        usize::MAX
    }
}

#[test]
fn test_training_curve_unchanged() {
    // 30 AdamW steps from the same weights and batches: fused and composed
    // losses stay together (rounding differs, so not bit-equal).
    let dev = Device::Cpu;
    let cfg = GptConfig::sized(65, 32, 64, 2, 4);
    let tc = TrainSection {
        batch_size: 4,
        block_size: Some(32),
        lr: 3e-3,
        warmup_steps: 0,
        ..TrainSection::default()
    };
    let data = Cycle;
    let w = init_weights(&cfg, 7, &dev).unwrap();
    let curve = |k: Kernels| {
        let (_vars, model, mut opt) = trainable(&w, &cfg, &tc, &dev).unwrap();
        let model = model.with_kernels(k);
        (0..30)
            .map(|s| {
                let mut rng = step_rng(tc.seed, s);
                train_step(
                    &model,
                    &mut opt,
                    &data,
                    &mut rng,
                    &tc,
                    (4, 32),
                    0.0,
                    tc.lr,
                    s,
                )
                .unwrap()
                .0
            })
            .collect::<Vec<f32>>()
    };
    let (f, c) = (curve(Kernels::Fused), curve(Kernels::Composed));
    assert!(f[29] < f[0] - 0.2, "the loss falls: {f:?}");
    for (s, (a, b)) in f.iter().zip(&c).enumerate() {
        assert!(
            (a - b).abs() < 2e-3,
            "step {s}: fused {a} vs composed {b}\n{f:?}\n{c:?}"
        );
    }
    let _ = DType::F32;
}

#[test]
fn test_fused_training_is_bit_reproducible() {
    // Rows enough for several reduction blocks per kernel: two runs from the
    // same seed give identical weights, bit for bit (what `--resume` needs).
    let dev = Device::Cpu;
    let cfg = GptConfig::sized(65, 64, 64, 2, 4);
    let tc = TrainSection {
        batch_size: 8,
        block_size: Some(64),
        warmup_steps: 0,
        ..TrainSection::default()
    };
    let w = init_weights(&cfg, 11, &dev).unwrap();
    let run = || {
        let (vars, model, mut opt) = trainable(&w, &cfg, &tc, &dev).unwrap();
        for s in 0..4 {
            let mut rng = step_rng(tc.seed, s);
            train_step(
                &model,
                &mut opt,
                &Cycle,
                &mut rng,
                &tc,
                (8, 64),
                0.0,
                tc.lr,
                s,
            )
            .unwrap();
        }
        vars.iter()
            .map(|(_, v)| flat(v.as_tensor()))
            .collect::<Vec<_>>()
    };
    let (a, b) = (run(), run());
    assert!(
        a.iter()
            .zip(&b)
            .all(|(x, y)| x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits()))
    );
}
