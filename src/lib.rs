//! chatforge: train a GPT on your own support data, export it, serve it on
//! chat platforms, and feed the logged conversations back into training.

pub mod bench;
pub mod bundle;
pub mod config;
pub mod eval;
pub mod export;
pub mod fsio;
pub mod model;
pub mod moderation;
pub mod pipeline;
pub mod quickstart;
pub mod runtime;
pub mod serve;
pub mod store;
pub mod text;
pub mod train;

/// Worker threads candle's CPU kernels use.
pub fn threads() -> usize {
    candle_core::utils::get_num_threads()
}
