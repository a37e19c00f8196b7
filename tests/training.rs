//! Pretraining and fine-tuning end to end on the bundled support data with
//! the tiny preset: falling loss, bundle contents, exact resume, gradients.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var};
use chatforge::bundle::Bundle;
use chatforge::model::{GptConfig, init_weights};
use chatforge::text::{
    Dialog, Message, Role, TokenizerKind, default_control_tags, train_tokenizer,
};
use chatforge::train::{
    self, AdamW, Dataset, DialogData, FinetuneJob, PretrainData, PretrainJob, TrainConfig,
    TrainSection, batch_loss, step_rng, trainable,
};

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

/// The tiny preset, shortened for tests.
fn tiny(steps: usize) -> TrainConfig {
    let mut cfg = TrainConfig::from_file(&repo("models/tiny.toml")).unwrap();
    cfg.tokenizer.vocab_size = 512;
    cfg.train = TrainSection {
        steps,
        batch_size: 8,
        block_size: Some(32),
        warmup_steps: 5,
        eval_interval: 20,
        eval_iters: 4,
        log_interval: 5,
        checkpoint_interval: 20,
        ..cfg.train
    };
    cfg
}

fn pretrain_data() -> Vec<PathBuf> {
    vec![repo("data/support/faq.md")]
}

#[test]
fn test_tiny_pretrain_loss_falls_and_writes_bundle() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("bundle");
    let mut config = tiny(100);
    config.train.batch_size = 16;
    config.train.block_size = Some(64);
    let report = train::pretrain(PretrainJob {
        config,
        data: pretrain_data(),
        out: out.clone(),
        tokenizer: None,
        steps: None,
        resume: false,
        progress: false,
    })
    .unwrap();
    let o = &report.outcome;
    let first = o.first_loss.unwrap();
    println!(
        "loss {first:.3} -> {:.3}, val {:.3} ({:.3} bpb)",
        o.last_loss, o.val_loss, o.val_bpb
    );
    // Uniform guessing over 512 ids is ln(512) = 6.24 nats.
    assert!(first > 5.5, "first loss {first}");
    assert!(
        o.last_loss < first - 2.0,
        "loss did not fall: {first} -> {}",
        o.last_loss
    );
    assert!(
        o.val_loss < first - 1.5,
        "val loss did not fall: {first} -> {}",
        o.val_loss
    );
    assert!(o.val_bpb.is_finite() && o.val_bpb > 0.0);
    for f in [
        "config.json",
        "tokenizer.json",
        "model.safetensors",
        "generation.json",
        "training.json",
        "metrics.jsonl",
        "loss.png",
        "checkpoint/state.json",
    ] {
        assert!(out.join(f).is_file(), "missing {f}");
    }
    let bundle = Bundle::open(&out).unwrap();
    let meta = bundle.meta.clone().unwrap();
    assert_eq!(meta.stage, "pretrain");
    assert!(meta.model_version.starts_with("pretrain-"));
    let (model, tok) = bundle.load(&Device::Cpu).unwrap();
    assert_eq!(tok.vocab_size(), model.config().vocab_size);
    let prov: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("training.json")).unwrap()).unwrap();
    assert_eq!(prov["steps"], 100);
    assert_eq!(
        prov["data"][0]["path"].as_str().unwrap(),
        pretrain_data()[0].display().to_string()
    );
    assert_eq!(prov["data"][0]["sha256"].as_str().unwrap().len(), 64);
    let lines = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert_eq!(lines.lines().filter(|l| l.contains("\"eval\"")).count(), 5);
    let png = std::fs::read(out.join("loss.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");
}

#[test]
fn test_time_budget_fits_the_step_count_and_resume_keeps_it() {
    let mut cfg = tiny(1_000_000);
    cfg.train.time_budget_s = Some(1.0);
    cfg.train.checkpoint_interval = 1_000_000;
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("b");
    let job = |resume: bool| PretrainJob {
        config: cfg.clone(),
        data: pretrain_data(),
        out: out.clone(),
        tokenizer: None,
        steps: None,
        resume,
        progress: false,
    };
    let o = train::pretrain(job(false)).unwrap().outcome;
    println!("{} steps in {:.2} s", o.steps, o.elapsed_s);
    // A million steps would take hours; the run stopped at what fits.
    assert!((9..1_000_000).contains(&o.steps), "{}", o.steps);
    let prov: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("training.json")).unwrap()).unwrap();
    assert_eq!(prov["steps"].as_u64().unwrap() as usize, o.steps);
    // How the count and the schedule follow the clock is replayed on a
    // simulated one in the trainer's unit tests; this run's speed is the
    // machine's, so only what holds at any speed is checked here.
    let log = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let last: serde_json::Value = log
        .lines()
        .filter(|l| l.contains("\"train\""))
        .map(|l| serde_json::from_str(l).unwrap())
        .next_back()
        .unwrap();
    assert_eq!(last["step"].as_u64().unwrap() as usize, o.steps);
    // The checkpoint keeps the fitted count: resuming trains no further.
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("checkpoint/state.json")).unwrap())
            .unwrap();
    assert_eq!(
        state["config"]["train"]["steps"].as_u64().unwrap() as usize,
        o.steps
    );
    let r = train::pretrain(job(true)).unwrap().outcome;
    assert_eq!(r.resumed_from, Some(o.steps));
    assert_eq!(r.steps, o.steps);
}

#[test]
fn test_resume_is_exact() {
    let n = 12;
    let mut cfg = tiny(2 * n);
    cfg.model.dropout = 0.1; // dropout masks must resume exactly too
    cfg.train.grad_accum = 2;
    cfg.train.lr_decay_steps = Some(2 * n);
    cfg.train.checkpoint_interval = 100;
    let tmp = tempfile::tempdir().unwrap();
    let job = |out: &Path, steps: usize, resume: bool| PretrainJob {
        config: cfg.clone(),
        data: pretrain_data(),
        out: out.to_path_buf(),
        tokenizer: None,
        steps: Some(steps),
        resume,
        progress: false,
    };
    let split = tmp.path().join("split");
    train::pretrain(job(&split, n, false)).unwrap();
    let resumed = train::pretrain(job(&split, 2 * n, true)).unwrap();
    assert_eq!(resumed.outcome.resumed_from, Some(n));
    let straight = train::pretrain(job(&tmp.path().join("straight"), 2 * n, false)).unwrap();
    let (a, b) = (&resumed.outcome, &straight.outcome);
    println!(
        "resumed {} / {}  straight {} / {}",
        a.last_loss, a.val_loss, b.last_loss, b.val_loss
    );
    assert!((a.last_loss - b.last_loss).abs() < 1e-5);
    assert!((a.val_loss - b.val_loss).abs() < 1e-5);
    for (k, w) in &a.weights {
        let d: f32 = (w - &b.weights[k])
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar()
            .unwrap();
        assert!(d < 1e-5, "{k} differs by {d}");
    }
    // The metrics log holds each step once.
    let log = std::fs::read_to_string(split.join("metrics.jsonl")).unwrap();
    let steps: Vec<u64> = log
        .lines()
        .filter(|l| l.contains("\"train\""))
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                .as_u64()
                .unwrap()
        })
        .collect();
    let mut dedup = steps.clone();
    dedup.dedup();
    assert_eq!(steps, dedup);
}

#[test]
fn test_resume_on_other_data_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("b");
    let mut job = PretrainJob {
        config: tiny(4),
        data: pretrain_data(),
        out: out.clone(),
        tokenizer: None,
        steps: None,
        resume: false,
        progress: false,
    };
    train::pretrain(PretrainJob {
        data: job.data.clone(),
        out: out.clone(),
        config: job.config.clone(),
        ..job
    })
    .unwrap();
    let other = tmp.path().join("other.txt");
    std::fs::write(&other, "completely different text ".repeat(200)).unwrap();
    job = PretrainJob {
        config: tiny(8),
        data: vec![other],
        out,
        tokenizer: None,
        steps: None,
        resume: true,
        progress: false,
    };
    let err = train::pretrain(job).unwrap_err().to_string();
    assert!(err.contains("other data"), "{err}");
}

/// Every parameter receives a gradient, and the check names one that does not.
#[test]
fn test_every_parameter_gets_a_gradient() {
    let dev = Device::Cpu;
    let cfg = GptConfig::sized(50, 16, 16, 2, 2);
    let tc = TrainSection::default();
    let w = init_weights(&cfg, 1, &dev).unwrap();
    let (mut vars, model, _) = trainable(&w, &cfg, &tc, &dev).unwrap();
    let x = Tensor::new(&[[1u32, 2, 3, 4], [5, 6, 7, 8]], &dev).unwrap();
    let y = Tensor::new(&[2u32, 3, 4, 5, 6, 7, 8, 9], &dev).unwrap();
    let batch = train::Batch {
        x,
        y,
        w: None,
        targets: 8,
        target_bytes: 8,
    };
    let grads = batch_loss(&model, &batch, None)
        .unwrap()
        .backward()
        .unwrap();
    let opt = AdamW::new(&vars, &tc).unwrap();
    assert_eq!(opt.collect_grads(&grads).unwrap().len(), 2 + 2 * 12 + 2);
    vars.push((
        "unused.weight".into(),
        Var::zeros(3, DType::F32, &dev).unwrap(),
    ));
    let opt = AdamW::new(&vars, &tc).unwrap();
    let err = opt.collect_grads(&grads).unwrap_err().to_string();
    assert!(
        err.contains("unused.weight") && err.contains("no gradient"),
        "{err}"
    );
}

/// Backprop through the whole model (LayerNorm, attention, GELU, tied head)
/// matches central finite differences in f64.
#[test]
fn test_gradients_match_finite_differences() {
    let dev = Device::Cpu;
    let cfg = GptConfig::sized(11, 8, 8, 2, 2);
    let tc = TrainSection::default();
    let w: chatforge::model::Weights = init_weights(&cfg, 3, &dev)
        .unwrap()
        .into_iter()
        .map(|(k, v)| {
            // Larger weights and non-zero biases exercise every term.
            let v = (v.to_dtype(DType::F64).unwrap() * 10.0).unwrap();
            let v = if k.ends_with("bias") {
                (v + 0.1).unwrap()
            } else {
                v
            };
            (k, v)
        })
        .collect();
    let x = Tensor::new(&[[1u32, 2, 3, 4, 5], [6, 7, 8, 9, 10]], &dev).unwrap();
    let y = Tensor::new(&[2u32, 3, 4, 5, 6, 7, 8, 9, 10, 0], &dev).unwrap();
    let batch = train::Batch {
        x,
        y,
        w: None,
        targets: 10,
        target_bytes: 10,
    };
    let loss_at = |w: &chatforge::model::Weights| -> f64 {
        let vb = candle_nn::VarBuilder::from_tensors(w.clone(), DType::F64, &dev);
        let m = chatforge::model::Gpt::new(vb, &cfg).unwrap();
        batch_loss(&m, &batch, None)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    };
    let mut names: Vec<&String> = w.keys().collect();
    names.sort();
    let vars: Vec<(String, Var)> = names
        .iter()
        .map(|n| (n.to_string(), Var::from_tensor(&w[*n]).unwrap()))
        .collect();
    let map = vars
        .iter()
        .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
        .collect();
    let model = chatforge::model::Gpt::new(
        candle_nn::VarBuilder::from_tensors(map, DType::F64, &dev),
        &cfg,
    )
    .unwrap();
    let grads = batch_loss(&model, &batch, None)
        .unwrap()
        .backward()
        .unwrap();
    let _ = &tc;
    let h = 1e-6;
    for (name, var) in &vars {
        let g: Vec<f64> = grads
            .get(var.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let base: Vec<f64> = w[name].flatten_all().unwrap().to_vec1().unwrap();
        for idx in [0, base.len() / 2, base.len() - 1] {
            let mut plus = w.clone();
            let mut minus = w.clone();
            let mut bp = base.clone();
            let mut bm = base.clone();
            bp[idx] += h;
            bm[idx] -= h;
            plus.insert(
                name.clone(),
                Tensor::from_vec(bp, w[name].shape(), &dev).unwrap(),
            );
            minus.insert(
                name.clone(),
                Tensor::from_vec(bm, w[name].shape(), &dev).unwrap(),
            );
            let fd = (loss_at(&plus) - loss_at(&minus)) / (2.0 * h);
            let tol = 1e-4 * fd.abs().max(g[idx].abs()).max(1e-3);
            assert!(
                (fd - g[idx]).abs() < tol,
                "{name}[{idx}]: autograd {} vs finite difference {fd}",
                g[idx]
            );
        }
    }
}

#[test]
fn test_divergence_stops_with_a_clear_error() {
    let mut cfg = tiny(20);
    cfg.train.lr = 1e30;
    cfg.train.min_lr = 1e30;
    cfg.train.warmup_steps = 0;
    cfg.train.grad_clip = 0.0;
    let tmp = tempfile::tempdir().unwrap();
    let err = train::pretrain(PretrainJob {
        config: cfg,
        data: pretrain_data(),
        out: tmp.path().join("b"),
        tokenizer: None,
        steps: None,
        resume: false,
        progress: false,
    })
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("diverged at step") && err.contains("NaN") || err.contains("inf"),
        "{err}"
    );
}

fn dialog(user: &str, reply: &str) -> Dialog {
    Dialog {
        messages: vec![
            Message {
                role: Role::User,
                content: user.into(),
            },
            Message {
                role: Role::Assistant,
                content: reply.into(),
            },
        ],
        topic: None,
        style: None,
        ..Default::default()
    }
}

#[test]
fn test_dialog_batches_weight_only_assistant_tokens() {
    let tok = train_tokenizer(
        &["where is my order? it ships today.".into()],
        TokenizerKind::Char,
        0,
        &default_control_tags(),
    )
    .unwrap();
    let dialogs: Vec<Dialog> = (0..10)
        .map(|i| dialog(&format!("order {i}?"), "it ships today."))
        .collect();
    let data = DialogData::new(&tok, &dialogs, 0.2, 7, 64).unwrap();
    assert_eq!(data.counts(), (8, 2));
    let mut rng = step_rng(1, 0);
    let b = data.train_batch(&mut rng, 4, 40, &Device::Cpu).unwrap();
    let y: Vec<u32> = b.y.to_vec1().unwrap();
    let w: Vec<f32> = b.w.as_ref().unwrap().to_vec1().unwrap();
    let learned: String = y
        .iter()
        .zip(&w)
        .take(40)
        .filter(|p| *p.1 > 0.0)
        .map(|p| tok.id_to_token(*p.0).unwrap())
        .collect();
    assert_eq!(learned, "it ships today.<|end|>");
    assert_eq!(b.targets, 4 * ("it ships today.".len() + 1));
}

#[test]
fn test_finetune_on_support_dialogs() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    let mut cfg = tiny(10);
    cfg.train.block_size = None;
    train::pretrain(PretrainJob {
        config: cfg,
        data: vec![
            repo("data/support/faq.md"),
            repo("data/support/train.jsonl"),
        ],
        out: base.clone(),
        tokenizer: None,
        steps: None,
        resume: false,
        progress: false,
    })
    .unwrap();
    let out = tmp.path().join("ft");
    let report = train::finetune(FinetuneJob {
        kb: None,
        base: base.clone(),
        dialogs: vec![repo("data/support/train.jsonl")],
        out: out.clone(),
        train: Some(TrainSection {
            steps: 30,
            batch_size: 8,
            eval_interval: 10,
            eval_iters: 4,
            checkpoint_interval: 30,
            lr: 3e-3,
            warmup_steps: 3,
            ..TrainSection::default()
        }),
        steps: None,
        resume: false,
        progress: false,
    })
    .unwrap();
    let o = &report.outcome;
    println!(
        "finetune loss {:?} -> {}, val {}",
        o.first_loss, o.last_loss, o.val_loss
    );
    assert!(o.last_loss < o.first_loss.unwrap());
    let b = Bundle::open(&out).unwrap();
    let meta = b.meta.unwrap();
    assert_eq!(meta.stage, "finetune");
    assert_eq!(
        meta.parent_version.as_deref(),
        Bundle::open(&base).unwrap().model_version()
    );
}

#[test]
fn test_pretrain_data_split_and_short_corpus() {
    let tok = train_tokenizer(&["abcdefgh".into()], TokenizerKind::Char, 0, &[]).unwrap();
    let data = PretrainData::new(&tok, &["abcdefgh".repeat(10)], 0.1).unwrap();
    assert_eq!(data.train_tokens(), 72);
    let err = match data.val_batches(2, 16, 1, &Device::Cpu) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("8 validation tokens cannot fill a 16-token block"),
    };
    assert!(err.contains("validation split has 8 tokens"), "{err}");
}
