//! The `chatforge` binary as a user meets it: tokenizer training, and the
//! clear errors for bad input (empty corpus, impossible config, a bundle
//! from a newer version, a disk that fills up while checkpointing).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

fn chatforge(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_chatforge"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("the chatforge binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// models/tiny.toml with some `[train]` keys replaced, written to `dir`.
fn tiny_config(dir: &Path, overrides: &[(&str, &str)]) -> PathBuf {
    let mut text = std::fs::read_to_string(repo("models/tiny.toml")).unwrap();
    for (key, value) in overrides {
        let start = text
            .find(&format!("\n{key} = "))
            .unwrap_or_else(|| panic!("models/tiny.toml has no {key}"));
        let end = start + 1 + text[start + 1..].find('\n').unwrap();
        text.replace_range(start + 1..end, &format!("{key} = {value}"));
    }
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn test_tokenizer_train_writes_a_loadable_tokenizer() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("tok");
    let o = chatforge(&[
        "tokenizer",
        "train",
        "--input",
        p(&repo("data/support/faq.md")),
        "--vocab-size",
        "600",
        "--out",
        p(&out),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let tok = chatforge::text::ChatTokenizer::from_file(&out.join("tokenizer.json")).unwrap();
    assert_eq!(tok.vocab_size(), 600);
    assert!(tok.control_id("<|style=formal|>").is_some());
    let ids = tok.encode_text("Where is my order? <|assistant|>").unwrap();
    assert!(ids.iter().all(|&i| !tok.is_special(i)));

    let char_out = tmp.path().join("char");
    let o = chatforge(&[
        "tokenizer",
        "train",
        "--kind",
        "char",
        "--input",
        p(&repo("data/support/faq.md")),
        "--out",
        p(&char_out),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let tok = chatforge::text::ChatTokenizer::from_file(&char_out.join("tokenizer.json")).unwrap();
    assert_eq!(tok.kind(), chatforge::text::TokenizerKind::Char);
}

#[test]
fn test_empty_or_missing_corpus_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty.txt");
    std::fs::write(&empty, "\n  \n").unwrap();
    for input in [empty.clone(), tmp.path().join("missing.txt")] {
        let o = chatforge(&[
            "tokenizer",
            "train",
            "--input",
            p(&input),
            "--out",
            p(tmp.path()),
        ]);
        assert!(!o.status.success());
        let err = stderr(&o);
        assert!(err.contains(p(&input)) || err.contains("empty"), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    let o = chatforge(&[
        "train",
        "--config",
        p(&repo("models/tiny.toml")),
        "--data",
        p(&empty),
        "--out",
        p(&tmp.path().join("bundle")),
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("empty"), "{}", stderr(&o));
}

#[test]
fn test_impossible_config_names_the_cause() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("bad.toml");
    let base = std::fs::read_to_string(repo("models/tiny.toml")).unwrap();
    let cases = [
        ("n_embd = 64", "n_embd = 65", "divisible"),
        ("block_size = 64", "block_size = 512", "n_positions"),
        (
            "steps = 200",
            "steps = 200\nlearning_rate = 1.0",
            "learning_rate",
        ),
    ];
    for (from, to, expect) in cases {
        assert!(base.contains(from), "tiny.toml changed: {from}");
        std::fs::write(&cfg, base.replace(from, to)).unwrap();
        let o = chatforge(&[
            "train",
            "--config",
            p(&cfg),
            "--data",
            p(&repo("data/support/faq.md")),
            "--out",
            p(&tmp.path().join("b")),
        ]);
        assert!(!o.status.success());
        let err = stderr(&o);
        assert!(err.contains(expect), "expected '{expect}' in: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn test_bundle_from_a_newer_version_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = tmp.path().join("b");
    let cfg = tiny_config(tmp.path(), &[("steps", "2"), ("vocab_size", "400")]);
    let o = chatforge(&[
        "train",
        "--config",
        p(&cfg),
        "--data",
        p(&repo("data/support/faq.md")),
        "--out",
        p(&bundle),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("model version pretrain-"),
        "{}",
        stdout(&o)
    );
    let config_path = bundle.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    config["chatforge"]["format_version"] = 99.into();
    std::fs::write(&config_path, config.to_string()).unwrap();
    let o = chatforge(&[
        "finetune",
        "--base",
        p(&bundle),
        "--dialogs",
        p(&repo("data/support/train.jsonl")),
        "--out",
        p(&tmp.path().join("ft")),
        "--steps",
        "1",
    ]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("bundle format 99"), "{err}");
}

#[test]
fn test_full_disk_while_checkpointing_keeps_the_last_good_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = tmp.path().join("b");
    let cfg = tiny_config(
        tmp.path(),
        &[
            ("vocab_size", "400"),
            ("checkpoint_interval", "2"),
            ("eval_interval", "2"),
        ],
    );
    let data = repo("data/support/faq.md");
    let o = chatforge(&[
        "train",
        "--config",
        p(&cfg),
        "--data",
        p(&data),
        "--out",
        p(&bundle),
        "--steps",
        "2",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let state = bundle.join("checkpoint/state.json");
    let before = std::fs::read(&state).unwrap();
    let weights_before = std::fs::read(bundle.join("checkpoint/model.safetensors")).unwrap();

    // Files may grow to 200 KiB: the metrics and small files fit, the next
    // checkpoint (weights + optimizer state, about 2 MB) does not.
    let exe = env!("CARGO_BIN_EXE_chatforge");
    let script = format!(
        "ulimit -f 200; exec '{exe}' train --config '{}' --data '{}' --out '{}' --steps 6 --resume",
        p(&cfg),
        p(&data),
        p(&bundle)
    );
    let o = Command::new("bash")
        .args(["-c", &script])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        !o.status.success(),
        "training should fail on the file-size limit"
    );
    let err = stderr(&o);
    assert!(err.contains("previous checkpoint is kept"), "{err}");
    assert!(err.contains("file size limit"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    // The last good checkpoint is untouched and still loads.
    assert_eq!(std::fs::read(&state).unwrap(), before);
    assert_eq!(
        std::fs::read(bundle.join("checkpoint/model.safetensors")).unwrap(),
        weights_before
    );
    let ck = chatforge::train::Checkpoint::load(&bundle, &candle_core::Device::Cpu)
        .unwrap()
        .expect("a checkpoint");
    assert_eq!(ck.state.step, 2);

    // With room again, the run resumes from it and finishes.
    let o = chatforge(&[
        "train",
        "--config",
        p(&cfg),
        "--data",
        p(&data),
        "--out",
        p(&bundle),
        "--steps",
        "6",
        "--resume",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("6 steps"), "{}", stdout(&o));
}

#[test]
fn test_bench_train_prints_json() {
    let o = chatforge(&[
        "bench", "train", "--preset", "A", "--steps", "2", "--warmup", "1", "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["bench"], "train");
    assert_eq!(v["preset"], "A");
    assert!(v["tokens_per_s"].as_f64().unwrap() > 0.0);
    assert!(v["threads"].as_u64().unwrap() >= 1);
    assert!(v["peak_rss_mb"].as_f64().unwrap() > 1.0);
    assert!(v.get("pytorch").is_none() && v.get("ratio").is_none());
    assert!(v.get("rounds").is_none());

    // Several rounds: each one's figure, and their median as the figure.
    let o = chatforge(&[
        "bench", "train", "--preset", "A", "--steps", "2", "--warmup", "1", "--rounds", "3",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    let mut each: Vec<f64> = v["rounds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["tokens_per_s"].as_f64().unwrap())
        .collect();
    assert_eq!(each.len(), 3, "{v}");
    each.sort_by(f64::total_cmp);
    assert_eq!(v["tokens_per_s"].as_f64().unwrap(), each[1], "{v}");
    let o = chatforge(&["bench", "train", "--preset", "A", "--rounds", "0"]);
    assert!(!o.status.success());
}

/// `--compare-python` without a usable Python still reports the Rust figure
/// and says why PyTorch did not run; with `CHATFORGE_TORCH_PYTHON` set to a
/// Python with torch, the same run carries both figures and their ratio.
#[test]
fn test_bench_train_compare_python() {
    let compare = |python: &str| {
        let args = "bench train --preset A --steps 2 --warmup 1 --json --compare-python --python";
        let mut args: Vec<&str> = args.split(' ').collect();
        args.push(python);
        let o = chatforge(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
        (stderr(&o), v)
    };
    let (err, v) = compare("/nonexistent/python3");
    assert!(v["tokens_per_s"].as_f64().unwrap() > 0.0);
    let why = v["pytorch_skipped"].as_str().unwrap();
    assert!(why.contains("cannot run /nonexistent/python3"), "{why}");
    assert!(err.contains("PyTorch comparison skipped"), "{err}");

    let Ok(python) = std::env::var("CHATFORGE_TORCH_PYTHON") else {
        eprintln!("skipping the PyTorch side: CHATFORGE_TORCH_PYTHON is not set");
        return;
    };
    let (_, v) = compare(&python);
    let (rust, torch) = (
        v["tokens_per_s"].as_f64().unwrap(),
        v["pytorch"]["tokens_per_s"].as_f64().unwrap(),
    );
    assert!(torch > 0.0, "{v}");
    let ratio = v["ratio"].as_f64().unwrap();
    assert!((ratio - rust / torch).abs() < 1e-9, "{v}");
}
