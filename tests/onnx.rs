//! Export to ONNX and generation through ONNX Runtime: parity with candle,
//! batched vs single generation, streaming, prompt cutting, providers, and
//! the clear errors for a missing library or a bad model file.
//!
//! Needs the ONNX Runtime library that `./scripts/setup.sh` fetches (or
//! `ORT_DYLIB_PATH`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use chatforge::bundle::Precision;
use chatforge::export::{INT8_KL_TOLERANCE, PARITY_TOLERANCE, export_bundle};
use chatforge::runtime::{Generator, Provider, RuntimeConfig, SamplingParams, StopReason};
use chatforge::text::{Dialog, Message, Role};

mod common;

use common::repo;

fn cpu() -> RuntimeConfig {
    RuntimeConfig {
        providers: vec![Provider::Cpu],
        strict: true,
        intra_threads: 1,
        ..RuntimeConfig::default()
    }
}

/// A tiny model trained briefly on the support FAQ, exported once for all
/// tests of this file.
fn bundle() -> &'static Path {
    static DIR: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, path) = DIR.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("tiny");
        common::pretrain_tiny_bundle(&out, 40);
        (tmp, out)
    });
    path
}

fn dialog(turns: &[&str]) -> Dialog {
    let mut messages = vec![Message {
        role: Role::System,
        content: "You are the support assistant of Northwind Outfitters.".into(),
    }];
    for (i, t) in turns.iter().enumerate() {
        let role = if i % 2 == 0 {
            Role::User
        } else {
            Role::Assistant
        };
        messages.push(Message {
            role,
            content: t.to_string(),
        });
    }
    Dialog {
        messages,
        topic: Some("orders".into()),
        style: Some("formal".into()),
        ..Default::default()
    }
}

#[test]
fn test_export_matches_candle_within_tolerance() {
    let dir = bundle();
    // Exporting again reports the measured differences.
    let r = export_bundle(dir, false).unwrap();
    assert!(r.prefill_max_diff <= PARITY_TOLERANCE, "{r:?}");
    assert!(r.decode_max_diff <= PARITY_TOLERANCE, "{r:?}");
    assert!(r.decode_steps >= 2);
    assert!(r.bytes > 100_000);
    assert_eq!(r.opset, 17);
    let bytes = std::fs::read(dir.join("model.onnx")).unwrap();
    assert_eq!(bytes.len(), r.bytes);
}

#[test]
fn test_batch_equals_one_by_one_and_streams_the_same_text() {
    let mut g = Generator::open(bundle(), &cpu()).unwrap();
    let tok = g.tokenizer().clone();
    let prompts: Vec<Vec<u32>> = [
        "Where is my order?",
        "Hi",
        "Can I return a tent after 40 days? Thanks a lot",
    ]
    .iter()
    .map(|t| chatforge::text::encode_prompt(&tok, &dialog(&[t])).unwrap())
    .collect();
    assert!(prompts[0].len() != prompts[1].len());
    let params = SamplingParams {
        max_new_tokens: 12,
        ..SamplingParams::default()
    }
    .greedy();
    let mut streamed = vec![String::new(); prompts.len()];
    let batch = g
        .generate(&prompts, &params, &mut |r, s| streamed[r].push_str(s))
        .unwrap();
    for (i, p) in prompts.iter().enumerate() {
        let mut one = String::new();
        let single = g
            .generate(std::slice::from_ref(p), &params, &mut |_, s| {
                one.push_str(s)
            })
            .unwrap();
        assert_eq!(single[0].tokens, batch[i].tokens, "row {i}");
        assert_eq!(single[0].text, batch[i].text);
        assert_eq!(one, single[0].text);
        assert_eq!(streamed[i], batch[i].text, "row {i} streamed");
        assert!(!batch[i].tokens.iter().any(|&t| tok.is_special(t)));
        assert!(batch[i].tokens.len() <= 12);
        assert_eq!(batch[i].prompt_tokens, p.len());
    }
}

/// A bundle exported before `logits_to_keep` existed (its logits always
/// cover every position) still generates, and the same tokens: generation
/// asks for the last position's logits either way.
#[test]
fn test_an_export_without_logits_to_keep_generates_the_same_tokens() {
    use prost::Message as _;
    let tmp = tempfile::tempdir().unwrap();
    let old = tmp.path().join("old");
    std::fs::create_dir(&old).unwrap();
    for entry in std::fs::read_dir(bundle()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, old.join(path.file_name().unwrap())).unwrap();
        }
    }
    // Without the graph input, the initializer is a constant 0: every
    // position's logits, as the earlier graphs computed.
    let bytes = std::fs::read(old.join("model.onnx")).unwrap();
    let mut model = chatforge::export::ModelProto::decode(bytes.as_slice()).unwrap();
    let graph = model.graph.as_mut().unwrap();
    let inputs = graph.input.len();
    graph
        .input
        .retain(|i| i.name.as_deref() != Some(chatforge::export::LOGITS_TO_KEEP));
    assert_eq!(
        graph.input.len(),
        inputs - 1,
        "the export takes logits_to_keep"
    );
    std::fs::write(old.join("model.onnx"), model.encode_to_vec()).unwrap();

    let mut new_g = Generator::open(bundle(), &cpu()).unwrap();
    let mut old_g = Generator::open(&old, &cpu()).unwrap();
    let tok = new_g.tokenizer().clone();
    let prompts: Vec<Vec<u32>> = ["Where is my order?", "Can I return a tent after 40 days?"]
        .iter()
        .map(|t| chatforge::text::encode_prompt(&tok, &dialog(&[t])).unwrap())
        .collect();
    let params = SamplingParams {
        max_new_tokens: 12,
        ..SamplingParams::default()
    }
    .greedy();
    let new = new_g.generate(&prompts, &params, &mut |_, _| {}).unwrap();
    let old = old_g.generate(&prompts, &params, &mut |_, _| {}).unwrap();
    for (n, o) in new.iter().zip(&old) {
        assert!(!n.tokens.is_empty());
        assert_eq!(n.tokens, o.tokens);
    }
}

#[test]
fn test_sampling_is_seeded_and_respects_max_tokens() {
    let mut g = Generator::open(bundle(), &cpu()).unwrap();
    let d = dialog(&["My parcel never arrived, what now?"]);
    let params = SamplingParams {
        temperature: 1.0,
        top_k: 20,
        top_p: 0.9,
        max_new_tokens: 10,
        stop_tokens: vec![],
        seed: 5,
        ..SamplingParams::default()
    };
    let a = g.reply(&d, &params, &mut |_, _| {}).unwrap();
    let b = g.reply(&d, &params, &mut |_, _| {}).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.tokens.len(), 10);
    assert_eq!(a.stop, StopReason::MaxTokens);
    let c = g
        .reply(
            &d,
            &SamplingParams {
                seed: 6,
                ..params.clone()
            },
            &mut |_, _| {},
        )
        .unwrap();
    assert_ne!(a.tokens, c.tokens);
}

#[test]
fn test_long_dialog_is_cut_to_the_context() {
    let mut g = Generator::open(bundle(), &cpu()).unwrap();
    let ctx = g.decoder().config().n_positions;
    let long: Vec<String> = (0..40)
        .map(|i| format!("question number {i} about my order NW-{i:06}"))
        .collect();
    let refs: Vec<&str> = long.iter().map(String::as_str).collect();
    let d = dialog(&refs);
    assert!(
        chatforge::text::encode_prompt(g.tokenizer(), &d)
            .unwrap()
            .len()
            > ctx
    );
    let params = SamplingParams {
        max_new_tokens: 8,
        ..SamplingParams::default()
    }
    .greedy();
    let r = g.reply(&d, &params, &mut |_, _| {}).unwrap();
    assert!(r.prompt_tokens + r.tokens.len() <= ctx);
    // A prompt over the context is refused, not cut silently, by generate().
    let too_long = vec![1u32; ctx];
    let err = g
        .generate(&[too_long], &params, &mut |_, _| {})
        .unwrap_err();
    assert!(err.to_string().contains("context"), "{err}");
}

#[test]
fn test_bad_model_files_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("b");
    std::fs::create_dir(&copy).unwrap();
    for f in [
        "config.json",
        "tokenizer.json",
        "model.safetensors",
        "generation.json",
    ] {
        std::fs::copy(bundle().join(f), copy.join(f)).unwrap();
    }
    let err = Generator::open(&copy, &cpu()).err().unwrap().to_string();
    assert!(err.contains("chatforge export"), "{err}");

    std::fs::write(copy.join("model.onnx"), b"not a protobuf at all").unwrap();
    let err = Generator::open(&copy, &cpu()).err().unwrap().to_string();
    assert!(err.starts_with("model:"), "{err}");

    // A model exported for a different shape: one layer fewer in config.json.
    std::fs::copy(bundle().join("model.onnx"), copy.join("model.onnx")).unwrap();
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(copy.join("config.json")).unwrap()).unwrap();
    cfg["n_layer"] = 1.into();
    std::fs::write(copy.join("config.json"), cfg.to_string()).unwrap();
    let err = Generator::open(&copy, &cpu()).err().unwrap().to_string();
    assert!(err.contains("does not match config.json"), "{err}");

    // A tokenizer of another size than the model.
    std::fs::copy(bundle().join("config.json"), copy.join("config.json")).unwrap();
    let other = chatforge::text::train_tokenizer(
        &["some other text entirely".to_string()],
        chatforge::text::TokenizerKind::Char,
        0,
        &[],
    )
    .unwrap();
    other.save(&copy.join("tokenizer.json")).unwrap();
    let err = Generator::open(&copy, &cpu()).err().unwrap().to_string();
    assert!(err.contains("tokenizer.json has"), "{err}");
}

#[test]
fn test_providers_fall_back_or_fail_when_strict() {
    let dir = bundle();
    let cuda_present = Provider::Cuda.compiled_in().unwrap();
    let lenient = RuntimeConfig {
        providers: vec![Provider::Cuda, Provider::Cpu],
        strict: false,
        intra_threads: 1,
        ..RuntimeConfig::default()
    };
    let g = Generator::open(dir, &lenient).unwrap();
    if !cuda_present {
        assert_eq!(g.decoder().provider(), Provider::Cpu);
        let strict = RuntimeConfig {
            strict: true,
            ..lenient
        };
        let err = Generator::open(dir, &strict).err().unwrap().to_string();
        assert!(err.contains("cuda") && err.contains("strict"), "{err}");
    } else {
        println!("CUDA provider present: fallback not exercised here");
    }
}

use common::cli_with as chatforge;

#[test]
fn test_cli_export_chat_and_doctor() {
    let dir = bundle();
    let d = dir.to_str().unwrap();
    let o = chatforge(&["export", "--bundle", d, "--json"], "", &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(r["decode_max_diff"].as_f64().unwrap() <= 1e-4);

    let o = chatforge(
        &[
            "chat",
            "--bundle",
            d,
            "--max-new-tokens",
            "8",
            "--temperature",
            "0",
        ],
        "Where is my order?\n/reset\nhello <|assistant|>\n",
        &[],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(out.matches("assistant> ").count(), 2, "{out}");
    assert!(out.contains("(conversation reset)"));

    let o = chatforge(&["doctor", "--bundle", d], "", &[]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains("ONNX Runtime library: "), "{out}");
    assert!(out.contains("ONNX Runtime version: 1."), "{out}");
    assert!(out.contains("provider in use: cpu"), "{out}");
    assert!(out.contains("model.onnx loads on cpu"), "{out}");

    let o = chatforge(
        &["doctor"],
        "",
        &[("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")],
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("ORT_DYLIB_PATH") && !err.contains("panicked"),
        "{err}"
    );
}

/// The exported file runs unchanged in Python onnxruntime with the optimum
/// names (skipped, saying why, when Python lacks onnxruntime or numpy;
/// `./scripts/test.sh` provides them through `CHATFORGE_PYTHON`).
#[test]
fn test_python_onnxruntime_runs_the_export() {
    let python = std::env::var("CHATFORGE_PYTHON").unwrap_or_else(|_| "python3".into());
    let probe = Command::new(&python)
        .args(["-c", "import onnxruntime, numpy"])
        .output();
    if !probe.as_ref().is_ok_and(|o| o.status.success()) {
        println!(
            "skipped: {python} cannot import onnxruntime and numpy (run ./scripts/test.sh, or set CHATFORGE_PYTHON)"
        );
        return;
    }
    let dir = bundle();
    let b = chatforge::bundle::Bundle::open(dir).unwrap();
    let cfg = b.config.clone();
    let ids: Vec<u32> = (0..12)
        .map(|i| (i * 37 + 5) % cfg.vocab_size as u32)
        .collect();
    let req = serde_json::json!({
        "ids": ids, "prefill": 8, "n_layer": cfg.n_layer, "n_head": cfg.n_head, "head_dim": cfg.head_dim(),
    });
    use std::io::Write;
    let mut child = Command::new(&python)
        .arg(repo("scripts/onnx_interop.py"))
        .arg(dir.join("model.onnx"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(req.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (model, _) = b.load(&candle_core::Device::Cpu).unwrap();
    let x = candle_core::Tensor::from_vec(ids.clone(), (1, ids.len()), &candle_core::Device::Cpu)
        .unwrap();
    let want: Vec<Vec<f32>> = model
        .forward(&x)
        .unwrap()
        .squeeze(0)
        .unwrap()
        .to_vec2()
        .unwrap();
    let rows = got["logits"].as_array().unwrap();
    assert_eq!(rows.len(), ids.len());
    let mut max = 0f32;
    for (row, w) in rows.iter().zip(&want) {
        for (g, w) in row.as_array().unwrap().iter().zip(w) {
            max = max.max((g.as_f64().unwrap() as f32 - w).abs());
        }
    }
    println!(
        "Python onnxruntime {} vs candle: max |Δ| {max:e}",
        got["onnxruntime"]
    );
    assert!(max <= PARITY_TOLERANCE, "max diff {max}");
}

#[test]
fn test_bench_generate_reports_cached_and_recompute_figures() {
    let d = bundle().to_str().unwrap();
    let o = chatforge(
        &[
            "bench",
            "generate",
            "--bundle",
            d,
            "--prompt-tokens",
            "8",
            "--new-tokens",
            "8",
            "--json",
        ],
        "",
        &[],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["bench"], "generate");
    assert_eq!(r["provider"], "cpu");
    let batches = r["batches"].as_array().unwrap();
    assert_eq!(
        batches
            .iter()
            .map(|b| b["batch"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![1, 8]
    );
    for b in batches {
        for k in [
            "prefill_first_token_ms",
            "cached_tokens_per_s",
            "recompute_tokens_per_s",
        ] {
            assert!(b[k].as_f64().unwrap() > 0.0, "{k} in {b}");
        }
    }
    assert!(r["long_speedup"].as_f64().unwrap() > 0.0);
    assert!(r["candle_recompute_tokens_per_s"].as_f64().unwrap() > 0.0);
    assert!(r["peak_rss_mb"].as_f64().unwrap() > 1.0);
}

/// A copy of the shared bundle's files, for tests that export into it.
fn bundle_copy(to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(bundle()).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

#[test]
fn test_int8_export_is_checked_served_and_never_left_stale() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("b");
    bundle_copy(&dir);
    let int8 = RuntimeConfig {
        precision: Precision::Int8,
        ..cpu()
    };
    let err = Generator::open(&dir, &int8)
        .err()
        .expect("no int8 graph yet");
    let msg = err.to_string();
    assert!(
        msg.contains("model.int8.onnx") && msg.contains("--int8"),
        "{msg}"
    );

    let r = export_bundle(&dir, true).unwrap();
    let q = r.int8.expect("int8 report");
    assert_eq!(q.path, dir.join("model.int8.onnx"));
    assert_eq!(std::fs::metadata(&q.path).unwrap().len() as usize, q.bytes);
    assert!(q.bytes < r.bytes, "{} vs {}", q.bytes, r.bytes);
    assert!(q.mean_kl <= INT8_KL_TOLERANCE, "{q:?}");
    // Really quantized: close to candle, but not equal.
    assert!(q.max_diff > PARITY_TOLERANCE, "{q:?}");
    assert!(q.top1_agreement >= 0.75, "{q:?}");

    // `precision = "int8"` serves it, with the fp32 graph's sampling contract.
    let mut g = Generator::open(&dir, &int8).unwrap();
    let params = SamplingParams {
        max_new_tokens: 6,
        ..SamplingParams::default()
    }
    .greedy();
    let tok = g.tokenizer().clone();
    let prompt = chatforge::text::encode_prompt(&tok, &dialog(&["Where is my order?"])).unwrap();
    let out = g.generate(&[prompt], &params, &mut |_, _| {}).unwrap();
    assert!(!out[0].tokens.is_empty() || out[0].stop == StopReason::StopToken);

    // A later fp32-only export (new weights) removes the old int8 graph.
    export_bundle(&dir, false).unwrap();
    assert!(!dir.join("model.int8.onnx").exists());
}

#[test]
fn test_bench_generate_int8_and_python_comparison() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("b");
    bundle_copy(&dir);
    let d = dir.to_str().unwrap();
    let args = |python: &str| {
        vec![
            "bench".to_string(),
            "generate".into(),
            "--bundle".into(),
            d.into(),
            "--prompt-tokens".into(),
            "8".into(),
            "--new-tokens".into(),
            "8".into(),
            "--int8".into(),
            "--compare-python".into(),
            "--python".into(),
            python.into(),
            "--json".into(),
        ]
    };
    let run = |python: &str| {
        let a = args(python);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        chatforge(&a, "", &[])
    };
    // Without model.int8.onnx: a clear error.
    let o = run("/nonexistent/python");
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("export") && err.contains("--int8"), "{err}");

    // The CLI as the README shows it.
    let o = chatforge(&["export", "--bundle", d, "--int8", "--json"], "", &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        r["int8"]["mean_kl"].as_f64().unwrap() <= INT8_KL_TOLERANCE,
        "{r}"
    );
    assert!(dir.join("model.int8.onnx").is_file());
    let o = run("/nonexistent/python");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let int8 = r["int8"].as_array().unwrap();
    assert_eq!(int8.len(), 2);
    for f in int8 {
        assert!(f["cached_tokens_per_s"].as_f64().unwrap() > 0.0, "{f}");
        assert!(f["prefill_first_token_ms"].as_f64().unwrap() > 0.0, "{f}");
    }
    let why = r["python_skipped"].as_str().unwrap();
    assert!(why.contains("/nonexistent/python"), "{why}");
    assert!(r.get("ratio").is_none());

    match std::env::var("CHATFORGE_ORT_PYTHON") {
        Err(_) => eprintln!(
            "the Python onnxruntime side is not run: set CHATFORGE_ORT_PYTHON to a Python with onnxruntime"
        ),
        Ok(py) => {
            let o = run(&py);
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            let python = r["python_ort"]["cached_tokens_per_s"].as_f64().unwrap();
            let rust = r["batches"][0]["cached_tokens_per_s"].as_f64().unwrap();
            let ratio = r["ratio"].as_f64().unwrap();
            assert!((ratio - rust / python).abs() < 1e-9 * ratio.max(1.0), "{r}");
            assert!(r["python_ort"]["prefill_first_token_ms"].as_f64().unwrap() > 0.0);
            // Hugging Face generate ran too, or the output says why not.
            let p = &r["python_ort"];
            match p.get("transformers") {
                Some(t) => {
                    let hf = t["cached_tokens_per_s"].as_f64().unwrap();
                    let ratio = r["ratio_transformers"].as_f64().unwrap();
                    assert!((ratio - rust / hf).abs() < 1e-9 * ratio.max(1.0), "{r}");
                }
                None => assert!(p["transformers_skipped"].as_str().is_some(), "{r}"),
            }
        }
    }
}
