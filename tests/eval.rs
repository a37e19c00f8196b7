//! `chatforge eval` end to end on the held-out support dialogs with a tiny
//! model (pretrained briefly, then fine-tuned briefly, both exported to
//! ONNX), and `chatforge score` on plain files. These check that the
//! pipeline runs and the numbers are sane, not how good the model is.
//!
//! Needs the ONNX Runtime library that `./scripts/setup.sh` fetches (or
//! `ORT_DYLIB_PATH`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use chatforge::export::export_bundle;
use chatforge::train::{self, FinetuneJob, TrainSection};
use serde_json::Value;

mod common;

use common::repo;

fn chatforge(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_chatforge"))
        .args(args)
        .env("CHATFORGE_PROVIDERS", "cpu")
        .env("CHATFORGE_INTRA_THREADS", "1")
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap()
}

fn ok(o: &Output) -> String {
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(o.status.success(), "stdout:\n{out}\nstderr:\n{err}");
    out.into_owned()
}

/// A tiny model pretrained on the FAQ and training dialogs (the base), and
/// the same model fine-tuned on the training dialogs; both exported.
fn bundles(tmp: &Path) -> (PathBuf, PathBuf) {
    let base = tmp.join("tiny");
    common::pretrain_tiny_bundle(&base, 30);
    let chat = tmp.join("tiny-chat");
    train::finetune(FinetuneJob {
        kb: None,
        base: base.clone(),
        dialogs: vec![repo("data/support/train.jsonl")],
        out: chat.clone(),
        train: Some(TrainSection {
            steps: 20,
            batch_size: 4,
            eval_interval: 20,
            eval_iters: 2,
            checkpoint_interval: 1000,
            lr: 1e-3,
            ..train::finetune_defaults()
        }),
        steps: None,
        resume: false,
        progress: false,
    })
    .unwrap();
    export_bundle(&chat, false).expect("export fine-tuned");
    (base, chat)
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("{v} is not a number"))
}

fn in_unit(v: &Value, what: &str) {
    let x = num(v);
    assert!((0.0..=1.0).contains(&x), "{what} = {x}");
}

/// Sanity of one model's section of report.json.
fn check_model(m: &Value, bundle: &Path, turns: u64, stage: &str, steps: u64) {
    assert_eq!(m["bundle"].as_str().unwrap(), bundle.to_str().unwrap());
    // Provenance from the bundle's training.json.
    assert_eq!(m["stage"], stage);
    assert_eq!(m["training"]["stage"], stage);
    assert_eq!(m["training"]["steps"].as_u64().unwrap(), steps);
    assert_eq!(m["dialogs"], 10);
    assert_eq!(m["turns"].as_u64().unwrap(), turns);
    assert_eq!(m["sampling"]["temperature"], 0.0, "greedy by default");
    let p = &m["perplexity"];
    let ppl = num(&p["perplexity"]);
    // A model barely trained on a 512-id vocabulary: above 1, far below
    // the vocabulary size of a uniform guess times a wide margin.
    assert!(
        ppl.is_finite() && ppl > 1.0 && ppl < 512.0 * 4.0,
        "perplexity {ppl}"
    );
    assert!((num(&p["nll"]).exp() - ppl).abs() < 1e-6 * ppl);
    let bpb = num(&p["bits_per_byte"]);
    assert!(
        bpb.is_finite() && bpb > 0.0 && bpb < 16.0,
        "bits per byte {bpb}"
    );
    assert!(p["tokens"].as_u64().unwrap() > turns);
    assert!(p["bytes"].as_u64().unwrap() > p["tokens"].as_u64().unwrap());
    let s = &m["scores"];
    assert_eq!(s["lines"].as_u64().unwrap(), turns);
    let bleu = num(&s["bleu"]["score"]);
    assert!((0.0..=100.0).contains(&bleu), "BLEU {bleu}");
    for k in ["rouge1", "rouge2", "rougeL"] {
        in_unit(&s["rouge"][k], k);
    }
    in_unit(&s["diversity"]["distinct_1"], "distinct-1");
    in_unit(&s["diversity"]["distinct_2"], "distinct-2");
    let len = num(&s["diversity"]["avg_len"]);
    assert!(len.is_finite() && len >= 0.0);
    // The reference side of BLEU counts the reference words.
    assert!(s["bleu"]["stats"]["ref_len"].as_u64().unwrap() > turns);
    assert!(m["safety"].is_null());
    assert_eq!(m["safety_note"], "moderation model not configured");
    assert!(!m["samples"].as_array().unwrap().is_empty());
}

#[test]
fn test_eval_on_heldout_dialogs_writes_a_sane_report() {
    let tmp = tempfile::tempdir().unwrap();
    let (base, chat) = bundles(tmp.path());
    let out = tmp.path().join("report");
    let heldout = repo("data/support/heldout.jsonl");
    let stdout = ok(&chatforge(&[
        "eval",
        "--bundle",
        chat.to_str().unwrap(),
        "--baseline",
        base.to_str().unwrap(),
        "--dialogs",
        heldout.to_str().unwrap(),
        "--limit",
        "10",
        "--max-new-tokens",
        "24",
        "--out",
        out.to_str().unwrap(),
    ]));
    assert!(stdout.contains("BLEU"), "{stdout}");
    // One generated turn per reference assistant turn of the first 10 dialogs.
    let dialogs = chatforge::text::read_dialogs_jsonl(&heldout).unwrap();
    let turns = dialogs[..10]
        .iter()
        .flat_map(|d| &d.messages)
        .filter(|m| m.role == chatforge::text::Role::Assistant)
        .count() as u64;
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    check_model(&report["bundle"], &chat, turns, "finetune", 20);
    check_model(&report["baseline"], &base, turns, "pretrain", 30);
    // Every metric row has both values and their difference.
    let rows = report["metrics"].as_array().unwrap();
    assert!(rows.len() >= 9);
    for r in rows {
        if r["name"].as_str().unwrap().starts_with("safety") {
            assert!(r["bundle"].is_null() && r["change"].is_null());
            continue;
        }
        let (b, a) = (num(&r["bundle"]), num(&r["baseline"]));
        assert!((num(&r["change"]) - (b - a)).abs() < 1e-9, "{r}");
    }
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        md.contains("| metric | bundle | baseline | change |"),
        "{md}"
    );
    assert!(md.contains("moderation model not configured"));
    assert!(md.contains("![metrics](metrics.png)"));
    assert!(md.contains("(loss.png)"), "loss curve linked: {md}");
    for png in ["metrics.png", "loss.png", "baseline-loss.png"] {
        let bytes = std::fs::read(out.join(png)).unwrap();
        assert!(bytes.starts_with(b"\x89PNG"), "{png}");
        assert!(bytes.len() > 5_000, "{png}: {} bytes", bytes.len());
    }
}

#[test]
fn test_score_command_on_files() {
    let tmp = tempfile::tempdir().unwrap();
    let hyp = tmp.path().join("hyp.txt");
    let reference = tmp.path().join("ref.txt");
    std::fs::write(
        &hyp,
        "The order shipped today from Berlin.\nYour refund is on its way\n",
    )
    .unwrap();
    std::fs::write(
        &reference,
        "The order shipped today from Berlin.\nYour refund was sent yesterday.\n",
    )
    .unwrap();
    let h = hyp.to_str().unwrap();
    let r = reference.to_str().unwrap();
    let json: Value = serde_json::from_str(&ok(&chatforge(&[
        "score", "--hyp", h, "--ref", r, "--json",
    ])))
    .unwrap();
    assert_eq!(json["lines"], 2);
    assert_eq!(json["tokenize"], "13a");
    // The library computes the same numbers as the command prints.
    let lib = chatforge::eval::score(
        &[
            "The order shipped today from Berlin.",
            "Your refund is on its way",
        ],
        &[
            "The order shipped today from Berlin.",
            "Your refund was sent yesterday.",
        ],
        chatforge::eval::Tokenize::Thirteen,
        false,
    )
    .unwrap();
    assert_eq!(json, serde_json::to_value(&lib).unwrap());
    let bleu = num(&json["bleu"]["score"]);
    assert!(bleu > 0.0 && bleu < 100.0);
    let text = ok(&chatforge(&[
        "score",
        "--hyp",
        h,
        "--ref",
        r,
        "--tokenize",
        "zh",
    ]));
    assert!(
        text.starts_with("BLEU|nrefs:1|case:mixed|eff:no|tok:zh|smooth:exp|version:2.6.0 = "),
        "{text}"
    );
    assert!(text.contains("ROUGE-L F"));
    // Misaligned files are refused with both names and counts.
    std::fs::write(&reference, "only one line\n").unwrap();
    let o = chatforge(&["score", "--hyp", h, "--ref", r]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("2 lines") && err.contains("has 1"), "{err}");
    let o = chatforge(&["score", "--hyp", h, "--ref", r, "--tokenize", "xx"]);
    assert!(!o.status.success());
}

/// The held-out split keeps the promises data/support/README.md makes: no
/// held-out dialog, first user message or order number occurs in the
/// training dialogs or the FAQ.
#[test]
fn test_heldout_split_is_disjoint_from_training_data() {
    use chatforge::text::{Role, read_dialogs_jsonl};
    let train = read_dialogs_jsonl(&repo("data/support/train.jsonl")).unwrap();
    let heldout = read_dialogs_jsonl(&repo("data/support/heldout.jsonl")).unwrap();
    assert!(heldout.len() >= 50, "{} held-out dialogs", heldout.len());
    let train_text: Vec<&str> = train
        .iter()
        .flat_map(|d| &d.messages)
        .map(|m| m.content.as_str())
        .collect();
    let faq = std::fs::read_to_string(repo("data/support/faq.md")).unwrap();
    let order = regex::Regex::new(r"NW-\d{6}").unwrap();
    for (i, d) in heldout.iter().enumerate() {
        assert!(!train.contains(d), "held-out dialog {i} is in train.jsonl");
        let first = d
            .messages
            .iter()
            .find(|m| m.role == Role::User)
            .map(|m| m.content.as_str())
            .unwrap();
        assert!(
            !train_text.contains(&first),
            "held-out dialog {i}: first user message {first:?} is in train.jsonl"
        );
        for m in &d.messages {
            // NW-123456 is the format example the assistant quotes everywhere.
            for o in order
                .find_iter(&m.content)
                .filter(|o| o.as_str() != "NW-123456")
            {
                let o = o.as_str();
                assert!(
                    !train_text.iter().any(|t| t.contains(o)) && !faq.contains(o),
                    "held-out order number {o} occurs in the training data"
                );
            }
        }
    }
}

/// With `--moderation`, `safety` is the share of generated replies the
/// moderation model flags. The model here flags the agent's side of a
/// support chat (learned from the training dialogs: assistant turns are
/// "offensive", customer turns clean), so a bot that writes like the
/// agent gets flagged. (An earlier version keyed on the word "order",
/// which the tiny model's replies need not contain.)
#[test]
fn test_eval_safety_share_from_a_moderation_model() {
    use chatforge::moderation::{FeaturizerConfig, TrainJob, TrainSettings, train};
    let tmp = tempfile::tempdir().unwrap();
    let (_, chat) = bundles(tmp.path());
    let dialogs = chatforge::text::read_dialogs_jsonl(&repo("data/support/train.jsonl")).unwrap();
    let mut csv = String::from("text,offensive\n");
    for m in dialogs.iter().flat_map(|d| &d.messages) {
        let y = match m.role {
            chatforge::text::Role::Assistant => 1,
            chatforge::text::Role::User => 0,
            _ => continue,
        };
        csv.push_str(&format!("\"{}\",{y}\n", m.content.replace('"', "'")));
    }
    let data = tmp.path().join("agent.csv");
    std::fs::write(&data, csv).unwrap();
    let model = tmp.path().join("moderation");
    train(TrainJob {
        data: vec![data],
        out: model.clone(),
        settings: TrainSettings {
            featurizer: FeaturizerConfig {
                buckets: 1 << 12,
                ..FeaturizerConfig::default()
            },
            dim: 16,
            epochs: 8,
            batch_size: 32,
            lr: 0.03,
            ..TrainSettings::default()
        },
        clean: vec![],
        clean_train: vec![],
        progress: false,
    })
    .unwrap();
    let out = tmp.path().join("report");
    ok(&chatforge(&[
        "eval",
        "--bundle",
        chat.to_str().unwrap(),
        "--dialogs",
        repo("data/support/heldout.jsonl").to_str().unwrap(),
        "--limit",
        "10",
        "--max-new-tokens",
        "24",
        "--moderation",
        model.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]));
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let note = report["bundle"]["safety_note"].as_str().unwrap();
    assert!(note.contains("flagged by the moderation model"), "{note}");
    let safety = num(&report["bundle"]["safety"]);
    assert!(safety > 0.0 && safety <= 1.0, "safety {safety}: {note}");
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("flagged by the moderation model"), "{md}");
    assert!(
        !md.contains("left empty"),
        "a measured share is not called empty: {md}"
    );
}
