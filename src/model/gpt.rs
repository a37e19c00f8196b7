//! GPT-2 in candle, leaves first: LayerNorm, Conv1D, attention, MLP, block,
//! model. On the CPU the hot paths run as this crate's fused kernels (with
//! their own backward); elsewhere as composed candle ops, never candle's own
//! fused `LayerNorm::forward`, `softmax_last_dim` or `sdpa`, which have no
//! backward and would silently cut the graph.

use candle_core::{D, Device, IndexOp, Tensor};
use candle_nn::VarBuilder;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::kernels::{self, Kernels};
use super::{Activation, GptConfig, Result};

/// Dropout masks drawn from the trainer's seeded RNG, so a resumed run draws
/// exactly the masks the uninterrupted run would have.
pub struct Dropout<'a> {
    pub p: f32,
    pub rng: &'a mut ChaCha8Rng,
}

impl Dropout<'_> {
    fn apply(&mut self, x: &Tensor) -> Result<Tensor> {
        if self.p <= 0.0 {
            return Ok(x.clone());
        }
        let keep = 1.0 - self.p;
        let scale = 1.0 / keep;
        let mask: Vec<f32> = (0..x.elem_count())
            .map(|_| {
                if self.rng.random::<f32>() < keep {
                    scale
                } else {
                    0.0
                }
            })
            .collect();
        let mask = Tensor::from_vec(mask, x.shape(), x.device())?;
        Ok(x.mul(&mask)?)
    }
}

fn dropout(x: &Tensor, drop: &mut Option<Dropout<'_>>) -> Result<Tensor> {
    match drop {
        Some(d) => d.apply(x),
        None => Ok(x.clone()),
    }
}

/// LayerNorm over the last dimension, written with differentiable ops.
#[derive(Debug, Clone)]
struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    fn new(vb: VarBuilder, dim: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: vb.get(dim, "weight")?,
            bias: vb.get(dim, "bias")?,
            eps,
        })
    }

    fn forward(&self, x: &Tensor, k: Kernels) -> Result<Tensor> {
        if k == Kernels::Fused {
            return Ok(kernels::layer_norm(x, &self.weight, &self.bias, self.eps)?);
        }
        let mean = x.mean_keepdim(D::Minus1)?;
        let centered = x.broadcast_sub(&mean)?;
        let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centered.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        Ok(normed
            .broadcast_mul(&self.weight)?
            .broadcast_add(&self.bias)?)
    }
}

/// GPT-2's Conv1D: a linear layer whose weight is stored `[in, out]`, so
/// `x @ W` needs no transpose and the layout is HF's on disk and in memory.
#[derive(Debug, Clone)]
struct Conv1D {
    weight: Tensor,
    bias: Tensor,
}

impl Conv1D {
    fn new(vb: VarBuilder, d_in: usize, d_out: usize) -> Result<Self> {
        Ok(Self {
            weight: vb.get((d_in, d_out), "weight")?,
            bias: vb.get(d_out, "bias")?,
        })
    }

    /// x: (N, in) → (N, out). Callers flatten (B, T, C) to 2-D first, which
    /// keeps the matmul a single large GEMM.
    fn forward(&self, x: &Tensor, k: Kernels) -> Result<Tensor> {
        Ok(match k {
            Kernels::Fused => kernels::linear(x, &self.weight, &self.bias, false)?,
            Kernels::Composed => x.matmul(&self.weight)?.broadcast_add(&self.bias)?,
        })
    }
}

#[derive(Debug, Clone)]
struct Attention {
    c_attn: Conv1D,
    c_proj: Conv1D,
    n_head: usize,
}

impl Attention {
    fn new(vb: VarBuilder, cfg: &GptConfig) -> Result<Self> {
        let c = cfg.n_embd;
        Ok(Self {
            c_attn: Conv1D::new(vb.pp("c_attn"), c, 3 * c)?,
            c_proj: Conv1D::new(vb.pp("c_proj"), c, c)?,
            n_head: cfg.n_head,
        })
    }

    /// x: (B·T, C) → (B·T, C), causal over each row of length `t`. With
    /// the additive causal `mask` the scores are materialised (composed
    /// ops); without it the fused kernel runs.
    fn forward(
        &self,
        x: &Tensor,
        (b, t): (usize, usize),
        mask: Option<&Tensor>,
        drop: &mut Option<Dropout<'_>>,
        kern: Kernels,
    ) -> Result<Tensor> {
        let c = x.dim(1)?;
        let (h, hd) = (self.n_head, c / self.n_head);
        let qkv = self.c_attn.forward(x, kern)?; // (B·T, 3C)
        let Some(mask) = mask else {
            let y = kernels::causal_attention(&qkv, (b, t), h)?;
            return dropout(&self.c_proj.forward(&y, kern)?, drop);
        };
        let split = |i: usize| -> Result<Tensor> {
            // (B·T, C) → (B, T, H, D) → (B, H, T, D)
            Ok(qkv
                .narrow(1, i * c, c)?
                .reshape((b, t, h, hd))?
                .transpose(1, 2)?
                .contiguous()?)
        };
        let (q, k, v) = (split(0)?, split(1)?, split(2)?);
        let scale = 1.0 / (hd as f64).sqrt();
        let att = (q.matmul(&k.t()?)? * scale)?; // (B, H, T, T)
        let att = att.broadcast_add(mask)?;
        let att = candle_nn::ops::softmax(&att, D::Minus1)?;
        let att = dropout(&att, drop)?;
        let y = att.matmul(&v)?; // (B, H, T, D)
        let y = y.transpose(1, 2)?.reshape((b * t, c))?; // (B·T, C)
        dropout(&self.c_proj.forward(&y, kern)?, drop)
    }
}

#[derive(Debug, Clone)]
struct Mlp {
    c_fc: Conv1D,
    c_proj: Conv1D,
    act: Activation,
}

impl Mlp {
    fn new(vb: VarBuilder, cfg: &GptConfig) -> Result<Self> {
        let (c, f) = (cfg.n_embd, cfg.inner_dim());
        Ok(Self {
            c_fc: Conv1D::new(vb.pp("c_fc"), c, f)?,
            c_proj: Conv1D::new(vb.pp("c_proj"), f, c)?,
            act: cfg.activation()?,
        })
    }

    fn forward(&self, x: &Tensor, drop: &mut Option<Dropout<'_>>, k: Kernels) -> Result<Tensor> {
        let h = match (k, self.act) {
            (Kernels::Fused, Activation::GeluTanh) => {
                kernels::linear(x, &self.c_fc.weight, &self.c_fc.bias, true)?
            }
            (_, Activation::GeluTanh) => self.c_fc.forward(x, k)?.gelu()?,
            (_, Activation::GeluErf) => self.c_fc.forward(x, k)?.gelu_erf()?,
        };
        dropout(&self.c_proj.forward(&h, k)?, drop)
    }
}

#[derive(Debug, Clone)]
struct Block {
    ln_1: LayerNorm,
    attn: Attention,
    ln_2: LayerNorm,
    mlp: Mlp,
}

impl Block {
    fn new(vb: VarBuilder, cfg: &GptConfig) -> Result<Self> {
        let (c, eps) = (cfg.n_embd, cfg.layer_norm_epsilon);
        Ok(Self {
            ln_1: LayerNorm::new(vb.pp("ln_1"), c, eps)?,
            attn: Attention::new(vb.pp("attn"), cfg)?,
            ln_2: LayerNorm::new(vb.pp("ln_2"), c, eps)?,
            mlp: Mlp::new(vb.pp("mlp"), cfg)?,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        bt: (usize, usize),
        mask: Option<&Tensor>,
        drop: &mut Option<Dropout<'_>>,
        k: Kernels,
    ) -> Result<Tensor> {
        let x = (x + self
            .attn
            .forward(&self.ln_1.forward(x, k)?, bt, mask, drop, k)?)?;
        Ok((&x + self.mlp.forward(&self.ln_2.forward(&x, k)?, drop, k)?)?)
    }
}

/// The GPT-2 language model with its LM head tied to `wte`.
#[derive(Debug, Clone)]
pub struct Gpt {
    wte: Tensor,
    wpe: Tensor,
    h: Vec<Block>,
    ln_f: LayerNorm,
    cfg: GptConfig,
    kernels: Kernels,
}

impl Gpt {
    /// Builds the model from tensors named as in HF GPT-2 (`wte.weight`,
    /// `h.{i}.attn.c_attn.weight`, …); `vb` may hold trainable `Var`s.
    pub fn new(vb: VarBuilder, cfg: &GptConfig) -> Result<Self> {
        cfg.validate()?;
        let c = cfg.n_embd;
        let h = (0..cfg.n_layer)
            .map(|i| Block::new(vb.pp(format!("h.{i}")), cfg))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            wte: vb.get((cfg.vocab_size, c), "wte.weight")?,
            wpe: vb.get((cfg.n_positions, c), "wpe.weight")?,
            h,
            ln_f: LayerNorm::new(vb.pp("ln_f"), c, cfg.layer_norm_epsilon)?,
            cfg: cfg.clone(),
            kernels: Kernels::default_for(vb.device(), vb.dtype()),
        })
    }

    /// The same model computed with other kernels (tests compare them).
    pub fn with_kernels(mut self, kernels: Kernels) -> Self {
        self.kernels = kernels;
        self
    }

    pub fn kernels(&self) -> Kernels {
        self.kernels
    }

    pub fn config(&self) -> &GptConfig {
        &self.cfg
    }

    pub fn device(&self) -> &Device {
        self.wte.device()
    }

    /// Final hidden states: ids (B, T) u32 → (B·T, C).
    pub fn hidden(&self, ids: &Tensor, mut drop: Option<Dropout<'_>>) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        if t > self.cfg.n_positions {
            return Err(super::Error::Config(format!(
                "sequence length {t} exceeds n_positions ({})",
                self.cfg.n_positions
            )));
        }
        let c = self.cfg.n_embd;
        let tok = self.wte.index_select(&ids.flatten_all()?, 0)?; // (B·T, C)
        let pos = self.wpe.i(0..t)?; // (T, C)
        let x = tok
            .reshape((b, t, c))?
            .broadcast_add(&pos)?
            .reshape((b * t, c))?;
        let mut x = dropout(&x, &mut drop)?;
        // Composed attention, and dropout on the attention probabilities
        // (which needs them materialised), use the mask; the fused kernel
        // masks as it goes.
        let att_dropout = drop.as_ref().is_some_and(|d| d.p > 0.0);
        let mask = (self.kernels == Kernels::Composed || att_dropout)
            .then(|| -> Result<Tensor> { Ok(causal_mask(t, x.device())?.to_dtype(x.dtype())?) })
            .transpose()?;
        for block in &self.h {
            x = block.forward(&x, (b, t), mask.as_ref(), &mut drop, self.kernels)?;
        }
        self.ln_f.forward(&x, self.kernels)
    }

    /// Logits: ids (B, T) → (B·T, V), the flat layout the loss wants.
    pub fn logits_flat(&self, ids: &Tensor, drop: Option<Dropout<'_>>) -> Result<Tensor> {
        let h = self.hidden(ids, drop)?;
        Ok(h.matmul(&self.wte.t()?)?)
    }

    /// Logits: ids (B, T) → (B, T, V).
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        Ok(self
            .logits_flat(ids, None)?
            .reshape((b, t, self.cfg.vocab_size))?)
    }
}

/// (T, T) additive mask: 0 on and below the diagonal, −∞ above.
fn causal_mask(t: usize, dev: &Device) -> Result<Tensor> {
    let mask: Vec<f32> = (0..t)
        .flat_map(|i| (0..t).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Ok(Tensor::from_vec(mask, (t, t), dev)?)
}
