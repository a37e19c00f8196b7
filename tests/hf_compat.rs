//! chatforge against the real Hugging Face formats: a GPT-2 made and run by
//! `transformers` (fixture from scripts/make_hf_fixture.py) and the real
//! GPT-2 `tokenizer.json` (scripts/make_tokenizer_fixture.py).

use std::io::Read;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use chatforge::model::{Gpt, GptConfig, load_safetensors, save_safetensors};
use chatforge::text::ChatTokenizer;

mod common;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn load_fixture_model(dir: &Path) -> Gpt {
    let value: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let cfg = GptConfig::from_hf_json(&value).unwrap();
    let w = load_safetensors(&dir.join("model.safetensors"), &cfg, &Device::Cpu).unwrap();
    Gpt::new(VarBuilder::from_tensors(w, DType::F32, &Device::Cpu), &cfg).unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap()
}

#[test]
fn test_transformers_logits_match() {
    let dir = fixture("hf-gpt2-tiny");
    let model = load_fixture_model(&dir);
    let expected =
        candle_core::safetensors::load(dir.join("expected.safetensors"), &Device::Cpu).unwrap();
    for case in ["a", "b"] {
        let ids = expected[&format!("input_ids_{case}")]
            .to_dtype(DType::U32)
            .unwrap();
        let want = &expected[&format!("logits_{case}")];
        let got = model.forward(&ids).unwrap();
        assert_eq!(got.dims(), want.dims());
        let diff = max_abs_diff(&got, want);
        println!("case {case}: max |Δlogit| = {diff:e}");
        assert!(diff < 1e-4, "case {case}: logits differ by {diff}");
    }
}

#[test]
fn test_weights_round_trip_in_hf_names() {
    // Written back without the `transformer.` prefix (the hub's spelling),
    // the weights reload to the same logits.
    let dir = fixture("hf-gpt2-tiny");
    let value: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let cfg = GptConfig::from_hf_json(&value).unwrap();
    let w = load_safetensors(&dir.join("model.safetensors"), &cfg, &Device::Cpu).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("model.safetensors");
    save_safetensors(&w, &out).unwrap();
    let names: Vec<String> = candle_core::safetensors::load(&out, &Device::Cpu)
        .unwrap()
        .into_keys()
        .collect();
    assert!(
        names.contains(&"h.1.attn.c_attn.weight".to_string()),
        "{names:?}"
    );
    assert!(names.iter().all(|n| !n.starts_with("transformer.")));
    let w2 = load_safetensors(&out, &cfg, &Device::Cpu).unwrap();
    for (k, v) in &w {
        assert_eq!(max_abs_diff(v, &w2[k]), 0.0, "{k}");
    }
}

#[test]
fn test_corrupt_and_mismatched_weights_are_clear_errors() {
    let dir = fixture("hf-gpt2-tiny");
    let value: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let cfg = GptConfig::from_hf_json(&value).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("model.safetensors");
    let mut bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&bad, &bytes).unwrap();
    let err = load_safetensors(&bad, &cfg, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("model.safetensors") && err.contains("not a readable safetensors"),
        "{err}"
    );
    let mut wider = cfg.clone();
    wider.n_embd = 64;
    let err = load_safetensors(&dir.join("model.safetensors"), &wider, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("has shape"), "{err}");
}

fn gpt2_tokenizer_path(tmp: &Path) -> PathBuf {
    let mut gz = flate2::read::GzDecoder::new(
        std::fs::File::open(fixture("gpt2-tokenizer/tokenizer.json.gz")).unwrap(),
    );
    let mut json = Vec::new();
    gz.read_to_end(&mut json).unwrap();
    let p = tmp.join("tokenizer.json");
    std::fs::write(&p, json).unwrap();
    p
}

#[test]
fn test_gpt2_tokenizer_json_loads() {
    let tmp = tempfile::tempdir().unwrap();
    let path = gpt2_tokenizer_path(tmp.path());
    let cases: Vec<serde_json::Value> = serde_json::from_str(
        &std::fs::read_to_string(fixture("gpt2-tokenizer/expected.json")).unwrap(),
    )
    .unwrap();
    let raw = tokenizers::Tokenizer::from_file(&path).unwrap();
    let tok = ChatTokenizer::from_file(&path).unwrap();
    // GPT-2's own 50,257 ids stay; the chat tokens (4 new) and the
    // context tokens (2) are appended after them.
    assert_eq!(tok.special().endoftext, 50256);
    assert!(tok.special().assistant >= 50257);
    assert!(tok.special().context.is_some());
    assert_eq!(tok.vocab_size(), 50257 + 6);
    for case in &cases {
        let text = case["text"].as_str().unwrap();
        let want: Vec<u32> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        // With special-token parsing on (trusted text), HF's ids exactly.
        assert_eq!(
            raw.encode(text, false).unwrap().get_ids(),
            want.as_slice(),
            "{text:?}"
        );
        let plain = tok.encode_text(text).unwrap();
        if text.contains("<|endoftext|>") {
            // User text: the same characters, but never the control id.
            assert!(!plain.contains(&50256), "{text:?} -> {plain:?}");
        } else {
            assert_eq!(plain, want, "{text:?}");
        }
        assert_eq!(tok.decode(&plain, false).unwrap(), text);
    }
}

/// A stock Hugging Face GPT-2 checkpoint: HF's `config.json`, weights and
/// GPT-2's own `tokenizer.json`, whose vocabulary has no chat tokens and
/// whose model has no rows for them. It must export, generate plain text
/// (`--raw`) and bench; a chat prompt is refused with what to do instead.
#[test]
fn test_stock_gpt2_checkpoint_exports_generates_raw_and_benches() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    gpt2_tokenizer_path(dir);
    let cfg = GptConfig::sized(50257, 64, 32, 2, 2);
    let w = chatforge::model::init_weights(&cfg, 7, &Device::Cpu).unwrap();
    save_safetensors(&w, &dir.join("model.safetensors")).unwrap();
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&cfg.to_hf_json()).unwrap(),
    )
    .unwrap();
    let d = dir.to_str().unwrap();
    let run = common::cli;
    let (ok, _, err) = run(&["export", "--bundle", d, "--json"]);
    assert!(ok, "export: {err}");
    let (ok, out, err) = run(&[
        "generate",
        "--bundle",
        d,
        "--raw",
        "--prompt",
        "Hello there",
        "--max-new-tokens",
        "5",
        "--temperature",
        "0",
        "--json",
    ]);
    assert!(ok, "generate --raw: {err}");
    let g: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert!(g["tokens"].as_u64().is_some_and(|n| n > 0), "{g}");
    let (ok, out, err) = run(&[
        "bench",
        "generate",
        "--bundle",
        d,
        "--prompt-tokens",
        "8",
        "--new-tokens",
        "8",
        "--json",
    ]);
    assert!(ok, "bench generate: {err}");
    assert!(out.contains("cached_tokens_per_s"), "{out}");
    // A chat turn needs the chat tokens: refused, saying what to do.
    let (ok, _, err) = run(&["generate", "--bundle", d, "--prompt", "Hello there"]);
    assert!(!ok);
    assert!(err.contains("--raw") && err.contains("finetune"), "{err}");
}
