//! Moderation: training on CSV, ONNX export with parity, the `Moderator`
//! API with its rules, the `moderate` and `moderation eval` commands, and
//! clear errors for bad data and bad model folders. A synthetic CSV makes
//! every test run anywhere; the shared labelled sets, when present, add a
//! quick training run on real data.
//!
//! Needs the ONNX Runtime library that `./scripts/setup.sh` fetches (or
//! `ORT_DYLIB_PATH`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use chatforge::moderation::{
    Blocklist, Error, FeaturizerConfig, Moderator, PARITY_TOLERANCE, PiiAction, RuleHit, Rules,
    TrainJob, TrainSettings, evaluate, read_datasets, train,
};
use chatforge::runtime::{Provider, RuntimeConfig};

mod common;
use common::{quick_settings, synthetic_csv};

fn cpu() -> RuntimeConfig {
    RuntimeConfig {
        providers: vec![Provider::Cpu],
        strict: true,
        intra_threads: 1,
        ..RuntimeConfig::default()
    }
}

/// One synthetic model for the tests of this file.
fn model() -> &'static (tempfile::TempDir, PathBuf, PathBuf) {
    static M: OnceLock<(tempfile::TempDir, PathBuf, PathBuf)> = OnceLock::new();
    M.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let csv = synthetic_csv(tmp.path(), 600);
        let out = tmp.path().join("model");
        let report = train(TrainJob {
            data: vec![csv.clone()],
            out: out.clone(),
            settings: quick_settings(),
            clean: vec![],
            clean_train: vec![],
            progress: false,
        })
        .expect("training on the synthetic CSV");
        let m = &report.meta;
        assert!(m.onnx.parity_max_diff <= PARITY_TOLERANCE);
        assert_eq!(
            m.labels.iter().map(|l| l.name.as_str()).collect::<Vec<_>>(),
            ["offensive", "hate"]
        );
        (tmp, out, csv)
    })
}

fn chatforge(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_chatforge"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

#[test]
fn test_train_writes_model_and_metadata() {
    let (_, dir, _) = model();
    assert!(dir.join("moderation.onnx").is_file());
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("moderation.json")).unwrap())
            .unwrap();
    assert_eq!(json["featurizer"]["buckets"], 4096);
    assert_eq!(json["data"][0]["format"], "generic");
    assert_eq!(json["data"][0]["rows"], 600);
    let t = &json["training"];
    let total = t["train_rows"].as_u64().unwrap()
        + t["validation_rows"].as_u64().unwrap()
        + t["test_rows"].as_u64().unwrap();
    assert_eq!(total, 600);
    for l in json["labels"].as_array().unwrap() {
        let thr = l["threshold"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&thr), "threshold {thr}");
        // The synthetic task is easy: validation must separate it.
        assert!(l["validation"]["roc_auc"].as_f64().unwrap() > 0.95, "{l}");
    }
}

#[test]
fn test_moderator_scores_and_rules() {
    let (_, dir, _) = model();
    let m = Moderator::open(dir, &cpu()).unwrap().with_rules(Rules {
        blocklist: Blocklist::new(["tent"]),
        pii: PiiAction::Flag,
        ..Rules::default()
    });
    let long = "order boots ".repeat(10_000);
    let texts = [
        "you stupid moron loser idiot",
        "thanks refund order shipping boots",
        "",
        long.as_str(),
        "😀\u{0}\u{7}\u{202e} 混合 scripts ✓",
        "my tent arrived",
        "reach me at jane@example.com",
    ];
    let v = m.check_batch(&texts).unwrap();
    assert_eq!(v.len(), texts.len());
    for verdict in &v {
        assert_eq!(verdict.categories.len(), 2);
        for c in &verdict.categories {
            assert!((0.0..=1.0).contains(&c.score), "{c:?}");
            assert_eq!(c.flagged, c.score >= c.threshold);
        }
    }
    let off = |i: usize| v[i].categories[0].score;
    assert!(off(0) > off(1), "insults {} vs clean {}", off(0), off(1));
    assert!(v[0].categories[0].flagged, "{:?}", v[0]);
    assert!(!v[1].flagged, "{:?}", v[1]);
    assert!(v[3].truncated && !v[1].truncated);
    assert_eq!(
        v[5].rules,
        vec![RuleHit::Blocklist {
            term: "tent".into()
        }]
    );
    assert!(v[5].flagged);
    assert_eq!(
        v[6].rules,
        vec![RuleHit::Pii {
            kind: "EMAIL".into(),
            count: 1
        }]
    );
    assert!(v[6].flagged);
    assert!(v[6].reasons().iter().any(|r| r == "pii:EMAIL×1"));
    // Batched and one-by-one agree.
    for (t, b) in texts.iter().zip(&v) {
        let one = m.check(t).unwrap();
        for (x, y) in one.categories.iter().zip(&b.categories) {
            assert!((x.score - y.score).abs() < 1e-5);
        }
    }
    // Redact: the verdict carries the cleaned text and PII alone does not flag.
    let m = Moderator::open(dir, &cpu()).unwrap().with_rules(Rules {
        pii: PiiAction::Redact,
        ..Rules::default()
    });
    let v = m.check("thanks, call +1 415-555-0100").unwrap();
    assert_eq!(v.redacted.as_deref(), Some("thanks, call <PHONE>"));
}

/// `chatforge moderate ARGS --input INPUT --json`: one verdict per line.
fn moderate_json(args: &[&str], input: &Path) -> Vec<serde_json::Value> {
    let mut all = vec!["moderate"];
    all.extend_from_slice(args);
    all.extend(["--input", input.to_str().unwrap(), "--json"]);
    let o = chatforge(&all);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Texts of very different lengths, with their clauses, score in one batch
/// as each does alone: the batch runs in groups of similar length and every
/// score must land back on its own text.
#[test]
fn test_a_batch_scores_each_text_as_it_scores_alone() {
    let (_, dir, _) = model();
    let m = Moderator::open(dir, &cpu()).unwrap();
    let long = format!(
        "{}, moron, {}",
        "thanks order shipping boots refund tent ".repeat(12),
        "where is my parcel".repeat(3)
    );
    let texts = [
        "moron",
        long.as_str(),
        "hi",
        "refund my tent, idiot",
        "thanks",
    ];
    let together = m.score_batch(&texts).unwrap();
    for (t, scores) in texts.iter().zip(&together) {
        let alone = m.score_batch(&[t]).unwrap();
        for (a, b) in alone[0].iter().zip(scores) {
            assert!((a - b).abs() < 1e-5, "{t:?}: alone {a}, in the batch {b}");
        }
    }
    assert!(together[0][0] > together[2][0], "{together:?}");
}

/// An insult in one clause of a long, polite request is flagged: the text
/// scores as its most offensive clause, where the whole text's score
/// averages the insult away among the request's words.
#[test]
fn test_an_insult_in_one_clause_of_a_long_request_is_flagged() {
    let (_, dir, _) = model();
    let request = "thanks order shipping boots refund tent ".repeat(4);
    let text = format!("{request}, moron");
    let m = Moderator::open(dir, &cpu()).unwrap();
    let v = m.check_batch(&[&text, &request, "moron"]).unwrap();
    let off = |v: &[chatforge::moderation::Verdict], i: usize| v[i].categories[0].score;
    assert!(v[0].categories[0].flagged, "{:?}", v[0]);
    assert!(!v[1].flagged, "{:?}", v[1]);
    assert!(off(&v, 0) >= off(&v, 2) - 1e-6, "the clause's score: {v:?}");

    // The same model told to score whole texts only.
    let tmp = tempfile::tempdir().unwrap();
    for f in ["moderation.onnx", "moderation.json"] {
        std::fs::copy(dir.join(f), tmp.path().join(f)).unwrap();
    }
    let json = tmp.path().join("moderation.json");
    let mut meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(meta["featurizer"]["clauses"], true);
    meta["featurizer"]["clauses"] = false.into();
    std::fs::write(&json, meta.to_string()).unwrap();
    let whole = Moderator::open(tmp.path(), &cpu())
        .unwrap()
        .check_batch(&[&text])
        .unwrap();
    assert!(
        off(&whole, 0) < off(&v, 0),
        "whole text {} vs clauses {}",
        off(&whole, 0),
        off(&v, 0)
    );
}

#[test]
fn test_moderate_cli_json_lines_in_order() {
    let (tmp, dir, _) = model();
    let input = tmp.path().join("texts.txt");
    let lines = [
        "thanks for the boots",
        "stupid idiot",
        "",
        "快递 谢谢",
        "垃圾 滚蛋 垃圾",
    ];
    std::fs::write(&input, lines.join("\n")).unwrap();
    let dir_s = dir.to_str().unwrap();
    let out = moderate_json(&["--model", dir_s], &input);
    assert_eq!(out.len(), lines.len());
    for (i, v) in out.iter().enumerate() {
        assert_eq!(v["index"], i);
        assert!(v["scores"]["offensive"].is_number() && v["scores"]["hate"].is_number());
        assert!(v["flagged"].is_boolean());
    }
    let s = |i: usize| out[i]["scores"]["offensive"].as_f64().unwrap();
    assert!(s(1) > s(0) && s(4) > s(3));

    let o = chatforge(&["moderate", "--model", dir_s, "stupid loser"]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("offensive"));
}

#[test]
fn test_eval_cli_json_is_sane() {
    let (_, dir, csv) = model();
    let o = chatforge(&[
        "moderation",
        "eval",
        "--model",
        dir.to_str().unwrap(),
        "--data",
        csv.to_str().unwrap(),
        "--heldout",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("moderation.json")).unwrap())
            .unwrap();
    assert_eq!(r["rows"], meta["training"]["test_rows"]);
    let rows = r["metrics"].as_array().unwrap();
    assert!(
        rows.iter()
            .any(|m| m["category"] == "offensive" && m["language"] == "zh")
    );
    for m in rows {
        let n = m["rows"].as_u64().unwrap();
        let c = ["tp", "fp", "tn", "fn"].map(|k| m[k].as_u64().unwrap());
        assert_eq!(c.iter().sum::<u64>(), n, "{m}");
        assert_eq!(c[0] + c[3], m["positives"].as_u64().unwrap());
        for k in ["precision", "recall", "f1", "accuracy"] {
            assert!((0.0..=1.0).contains(&m[k].as_f64().unwrap()), "{k} in {m}");
        }
        // Recall at 2% false positives is absent only where a class is.
        let (pos, neg) = (c[0] + c[3], c[1] + c[2]);
        match m["recall_at_2pct_fpr"].as_f64() {
            Some(r) => assert!((0.0..=1.0).contains(&r) && pos > 0 && neg > 0, "{m}"),
            None => assert!(pos == 0 || neg == 0, "{m}"),
        }
    }
    let all = rows
        .iter()
        .find(|m| m["category"] == "offensive" && m["language"] == "all")
        .unwrap();
    assert!(all["roc_auc"].as_f64().unwrap() > 0.95, "{all}");
    // A model this separable catches most offensive rows with 2% of the
    // clean ones flagged.
    assert!(all["recall_at_2pct_fpr"].as_f64().unwrap() > 0.5, "{all}");
}

#[test]
fn test_malformed_csv_names_the_line() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("bad.csv");
    std::fs::write(&p, "text,offensive\nfine,0\n\"too\",1,extra\n").unwrap();
    let e = read_datasets(std::slice::from_ref(&p), None).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::Row { line: 3, .. }), "{msg}");
    assert!(
        msg.contains("bad.csv:3") && msg.contains("3 fields"),
        "{msg}"
    );

    std::fs::write(&p, "text,offensive\nfine,0\nhm,yes\n").unwrap();
    let msg = read_datasets(std::slice::from_ref(&p), None)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("bad.csv:3") && msg.contains("\"yes\""),
        "{msg}"
    );

    std::fs::write(&p, "words,offensive\nfine,0\n").unwrap();
    let msg = read_datasets(std::slice::from_ref(&p), None)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("no `text` column"), "{msg}");

    // The CLI shows the same message and fails.
    let o = chatforge(&[
        "moderation",
        "train",
        "--data",
        p.to_str().unwrap(),
        "--out",
        tmp.path().join("m").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("no `text` column"));
}

#[test]
fn test_empty_data_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("empty.csv");
    std::fs::write(&p, "text,offensive\n").unwrap();
    let e = train(TrainJob {
        data: vec![p],
        out: tmp.path().join("m"),
        settings: quick_settings(),
        clean: vec![],
        clean_train: vec![],
        progress: false,
    })
    .unwrap_err();
    assert!(matches!(e, Error::Empty(_)), "{e}");
    assert!(!tmp.path().join("m").exists());
}

#[test]
fn test_missing_or_mismatched_model_is_clear() {
    let tmp = tempfile::tempdir().unwrap();
    let e = Moderator::open(tmp.path(), &cpu())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("moderation.json"), "{e}");

    // A moderation.json listing a label the ONNX file does not score.
    let (_, dir, _) = model();
    let bad = tmp.path().join("bad");
    std::fs::create_dir(&bad).unwrap();
    std::fs::copy(dir.join("moderation.onnx"), bad.join("moderation.onnx")).unwrap();
    let mut meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("moderation.json")).unwrap())
            .unwrap();
    let extra = meta["labels"][0].clone();
    meta["labels"].as_array_mut().unwrap().push(extra);
    std::fs::write(bad.join("moderation.json"), meta.to_string()).unwrap();
    let e = Moderator::open(&bad, &cpu()).err().unwrap().to_string();
    assert!(e.contains("3 labels"), "{e}");

    std::fs::remove_file(bad.join("moderation.onnx")).unwrap();
    let e = Moderator::open(&bad, &cpu()).err().unwrap().to_string();
    assert!(
        e.contains("moderation.onnx") && e.contains("missing"),
        "{e}"
    );
}

/// A quick run on slices of the shared English and Chinese sets: the model
/// must learn both languages well above chance on its held-out rows.
#[test]
fn test_shared_sets_slice() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data");
    let files = [
        data.join("davidson_offensive_train.csv"),
        data.join("cold_offensive_zh_train.csv"),
    ];
    if !files.iter().all(|f| f.is_file()) {
        eprintln!(
            "skipped: {} lacks the Davidson and COLD CSVs",
            data.display()
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("m");
    let report = train(TrainJob {
        data: files.to_vec(),
        out: out.clone(),
        settings: TrainSettings {
            featurizer: FeaturizerConfig {
                buckets: 1 << 16,
                ..FeaturizerConfig::default()
            },
            dim: 32,
            epochs: 4,
            batch_size: 64,
            max_rows_per_file: Some(2500),
            ..TrainSettings::default()
        },
        clean: vec![],
        clean_train: vec![],
        progress: false,
    })
    .unwrap();
    let formats: Vec<&str> = report.meta.data.iter().map(|d| d.format.as_str()).collect();
    assert_eq!(formats, ["davidson", "cold"]);
    let r = evaluate(
        &out,
        &chatforge::moderation::EvalSets {
            labelled: files.to_vec(),
            heldout: true,
            ..Default::default()
        },
        &cpu(),
    )
    .unwrap();
    let get = |lang: &str| {
        r.metrics
            .iter()
            .find(|m| m.category == "offensive" && m.language == lang)
            .unwrap()
    };
    // Only the first 2,500 rows of each file were read for training, but
    // evaluation reads every held-out row: the split is by text hash.
    let en = get("en").roc_auc.unwrap();
    let zh = get("zh").roc_auc.unwrap();
    eprintln!("slice: held-out offensive ROC-AUC en {en:.3}, zh {zh:.3}");
    assert!(en > 0.85 && zh > 0.8, "en {en}, zh {zh}");
}

#[test]
fn test_bench_reports_rates_and_latency() {
    let (_, dir, _) = model();
    let r = chatforge::moderation::bench(dir, &cpu(), 64).unwrap();
    assert_eq!(r.messages, 64);
    assert_eq!(r.provider, "cpu");
    assert!(r.batch1_messages_per_s > 0.0 && r.batch32_messages_per_s > 0.0);
    assert!(r.p50_ms > 0.0 && r.p50_ms <= r.p99_ms, "{r:?}");
}

#[test]
fn test_data_filter_drops_flagged_documents_and_turns() {
    let (tmp, dir, _) = model();
    let work = tmp.path().join("filter");
    std::fs::create_dir_all(&work).unwrap();
    let jsonl = work.join("dialogs.jsonl");
    std::fs::write(
        &jsonl,
        [
            r#"{"text":"thanks refund order shipping boots"}"#,
            r#"{"text":"stupid idiot moron loser"}"#,
            r#"{"messages":[{"role":"user","content":"order shipping boots"},{"role":"assistant","content":"thanks refund tent"},{"role":"user","content":"idiot moron stupid loser"},{"role":"assistant","content":"thanks order"}]}"#,
            r#"{"messages":[{"role":"user","content":"垃圾 滚蛋 垃圾"},{"role":"assistant","content":"谢谢"}]}"#,
        ]
        .join("\n"),
    )
    .unwrap();
    let text = work.join("docs.txt");
    std::fs::write(
        &text,
        "thanks order boots\n\nloser idiot stupid moron\n\n快递 谢谢\n",
    )
    .unwrap();
    let m = Moderator::open(dir, &cpu()).unwrap();
    let out = work.join("out");
    let r = chatforge::moderation::filter_files(&m, &[jsonl, text], Some(&out)).unwrap();
    let kept: Vec<serde_json::Value> = std::fs::read_to_string(out.join("dialogs.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // The clean line stays; the insult goes; the first dialog is cut before
    // the flagged turn; the second has no reply left and goes.
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert_eq!(kept[1]["messages"].as_array().unwrap().len(), 2);
    assert_eq!(
        std::fs::read_to_string(out.join("docs.txt")).unwrap(),
        "thanks order boots\n\n快递 谢谢\n"
    );
    assert_eq!(r.files[0].items_removed, 2);
    assert_eq!(r.files[0].turns_removed, 4);
    assert_eq!(r.files[1].items_removed, 1);
    assert_eq!(r.flagged.len(), 4);
    assert!(
        r.removed_by_reason["offensive"] >= 4,
        "{:?}",
        r.removed_by_reason
    );
}

/// `scripts/moderation-default.sh`, as the README's default moderation model
/// is made: on the data `setup.sh --moderation` built into the cache, it
/// trains a model into `--out` that flags an insult and passes a support
/// question, records the sha256 of what it trained on, and a second run only
/// says it is up to date. Skips, saying why, where that data is absent
/// (`scripts/test.sh` builds it when npm and the registries are reachable).
#[test]
fn test_default_moderation_script_trains_once_and_flags() {
    let home = chatforge::runtime::chatforge_home();
    let data = home.join("moderation/data");
    if !data.join("train.csv").is_file() {
        eprintln!(
            "skipped: no {} (run ./scripts/setup.sh --moderation)",
            data.join("train.csv").display()
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("default");
    let script = || {
        let o = Command::new(common::repo("scripts/moderation-default.sh"))
            .args(["--out", out.to_str().unwrap()])
            .env("CHATFORGE_BIN", env!("CARGO_BIN_EXE_chatforge"))
            .env("CHATFORGE_HOME", &home)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(
            o.status.success(),
            "{text}\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        text
    };
    let first = script();
    assert!(first.contains("default model in"), "{first}");
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("moderation.json")).unwrap())
            .unwrap();
    let mut recorded: Vec<&str> = meta["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["sha256"].as_str().unwrap())
        .collect();
    recorded.sort_unstable();
    let mut want: Vec<String> = [
        data.join("train.csv"),
        data.join("offensive.csv"),
        data.join("support_clean.txt"),
        common::repo("data/moderation/davidson.csv.gz"),
        common::repo("data/moderation/cold.csv.gz"),
        common::repo("data/support/kb/train_questions.jsonl"),
        common::repo("data/support/kb/train_questions_zh.jsonl"),
        common::repo("data/support/kb/out_of_scope_train.txt"),
        common::repo("data/support/faq.md"),
        common::repo("data/support/faq.zh.md"),
    ]
    .iter()
    .map(|f| {
        use sha2::Digest;
        format!("{:x}", sha2::Sha256::digest(std::fs::read(f).unwrap()))
    })
    .collect();
    want.sort_unstable();
    assert_eq!(recorded, want);

    let trained = std::fs::metadata(out.join("moderation.onnx"))
        .unwrap()
        .modified()
        .unwrap();
    let second = script();
    assert!(second.contains("is up to date"), "{second}");
    let kept = std::fs::metadata(out.join("moderation.onnx"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(trained, kept, "the second run retrained");

    let input = tmp.path().join("texts.txt");
    std::fs::write(
        &input,
        "you idiot\nwhere is my order?\nyou idiot, can I get a refund?\nplease kill the order, this product sucks\n",
    )
    .unwrap();
    let blocklist = home.join("moderation/blocklist.txt");
    let verdicts = moderate_json(
        &[
            "--model",
            out.to_str().unwrap(),
            "--blocklist",
            blocklist.to_str().unwrap(),
        ],
        &input,
    );
    assert_eq!(verdicts[0]["flagged"], true, "{verdicts:?}");
    assert_eq!(verdicts[1]["flagged"], false, "{verdicts:?}");
    assert_eq!(verdicts[2]["flagged"], true, "{verdicts:?}");
    assert_eq!(verdicts[3]["flagged"], false, "{verdicts:?}");
    // The report on what it never trained on came with it.
    let report = std::fs::read_to_string(out.join("eval.txt")).unwrap();
    for set in [
        "davidson.csv.gz",
        "cold.csv.gz",
        "insult_in_request_eval.csv",
        "insult_in_request_eval_v2.csv",
        "heldout.jsonl",
        "customer_heldout.jsonl",
    ] {
        assert!(report.contains(set), "{set} missing from\n{report}");
    }
}
