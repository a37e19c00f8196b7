//! chatforge: train a GPT on your own support data, export it, serve it on
//! chat platforms, and feed the logged conversations back into training.

pub mod bench;
pub mod bundle;
pub mod config;
pub mod console;
pub mod eval;
pub mod export;
pub mod fsio;
pub mod ground;
pub mod http;
pub mod inbox;
pub mod kb;
pub mod model;
pub mod moderation;
pub mod operators;
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

/// Training frees and re-allocates the same large buffers every step. By
/// default mimalloc hands freed pages back to the OS after 10 ms, and each
/// step then faults them in again, zeroed by the kernel (~15 % of a step on
/// the `B` benchmark). This keeps them for the life of the process.
pub fn retain_freed_memory() {
    // `mi_option_purge_delay` (15 in mimalloc v2 and v3; the sys crate has
    // no constant for it): −1 never purges.
    const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    // SAFETY: sets a process-wide allocator option; valid at any time.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
}
