//! Helpers shared by the integration tests that need a small trained and
//! exported bundle.
#![allow(dead_code)] // each test crate uses a different subset

use std::path::{Path, PathBuf};

use chatforge::export::export_bundle;
use chatforge::train::{self, PretrainJob, TrainConfig, TrainSection};

pub fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

/// Pretrains models/tiny.toml (vocabulary 512, context 64) for `steps` on
/// the support FAQ and training dialogs into `out`, and exports it to ONNX.
pub fn pretrain_tiny_bundle(out: &Path, steps: usize) {
    let mut config = TrainConfig::from_file(&repo("models/tiny.toml")).unwrap();
    config.tokenizer.vocab_size = 512;
    config.train = TrainSection {
        steps,
        batch_size: 8,
        block_size: Some(64),
        eval_interval: steps,
        eval_iters: 2,
        checkpoint_interval: 1000,
        ..config.train
    };
    train::pretrain(PretrainJob {
        config,
        data: vec![
            repo("data/support/faq.md"),
            repo("data/support/train.jsonl"),
        ],
        out: out.to_path_buf(),
        tokenizer: None,
        steps: None,
        resume: false,
        progress: false,
    })
    .unwrap();
    let report = export_bundle(out).expect("export");
    println!(
        "export parity: prefill {:e}, decode {:e}",
        report.prefill_max_diff, report.decode_max_diff
    );
}
