//! Fused CPU kernels for the model's hot paths, as candle custom ops with
//! their own backward: LayerNorm, the linear layer (matmul + bias-add, with
//! GELU in the tanh form fused for the MLP), causal self-attention and
//! cross-entropy; and the AdamW update in place.
//!
//! Composed candle ops run one single-threaded pass and one allocation per
//! elementary op, forward and backward alike (a composed LayerNorm is eight
//! ops, its backward twenty); these kernels make one multi-threaded,
//! vectorised pass each. They run on the CPU only: on other devices the model
//! uses the composed ops, which give the same values.

mod adamw;
mod attention;
mod cross_entropy;
mod host;
mod layer_norm;
mod linear;
mod math;

pub use adamw::{AdamStep, adamw_update};
pub use attention::causal_attention;
pub use cross_entropy::cross_entropy;
pub use layer_norm::layer_norm;
pub use linear::linear;

/// Which implementation of the hot paths the model uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernels {
    /// The fused CPU kernels of this module.
    Fused,
    /// Plain candle ops: any device, and the reference the fused ones are
    /// tested against.
    Composed,
}

impl Kernels {
    /// Fused for f32 on the CPU, composed otherwise.
    pub fn default_for(dev: &candle_core::Device, dtype: candle_core::DType) -> Self {
        if dev.is_cpu() && dtype == candle_core::DType::F32 {
            Kernels::Fused
        } else {
            Kernels::Composed
        }
    }
}
