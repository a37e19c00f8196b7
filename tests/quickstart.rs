//! `chatforge quickstart` as a user runs it, on a preset smaller than tiny
//! with short step counts and a small synthetic moderation set (the registry data of
//! `setup.sh --moderation` may be absent): every artifact lands in the run
//! folder, a second run reuses every stage, changed dialogs rebuild only
//! fine-tuning and what follows it, and the terminal chat answers piped
//! lines through the pipeline and logs them to the store.
//!
//! Needs the ONNX Runtime library that `./scripts/setup.sh` fetches (or
//! `ORT_DYLIB_PATH`).

use std::io::Write;
use std::process::{Command, Output, Stdio};

use chatforge::config::Config;

mod common;

use common::{QuickstartRun, repo};

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The `[n/6] <stage> <outcome> …` line of each stage.
fn stage_outcomes(out: &str) -> Vec<(String, String)> {
    out.lines()
        .filter(|l| l.starts_with('['))
        .map(|l| {
            let mut w = l.split_whitespace().skip(1);
            let stage = w.next().unwrap_or_default().to_string();
            let outcome = w.next().unwrap_or_default().trim_end_matches(',');
            (stage, outcome.to_string())
        })
        .collect()
}

const STAGES: [&str; 7] = [
    "tokenizer",
    "pretrain",
    "kb",
    "finetune",
    "export",
    "moderation",
    "store",
];

#[test]
fn test_quickstart_builds_reuses_and_chats() {
    let run = QuickstartRun::new();

    let first = stdout(&run.quickstart(&["--no-chat"], None));
    let outcomes = stage_outcomes(&first);
    assert_eq!(
        outcomes,
        STAGES
            .iter()
            .map(|s| (s.to_string(), "built".to_string()))
            .collect::<Vec<_>>(),
        "{first}"
    );
    for f in [
        "tokenizer/tokenizer.json",
        "pretrain/model.safetensors",
        "pretrain/training.json",
        "chat/model.safetensors",
        "chat/tokenizer.json",
        "chat/config.json",
        "chat/model.onnx",
        "moderation/moderation.onnx",
        "moderation/moderation.json",
        "moderation/blocklist.txt",
        "kb/kb.json",
        "kb/router.onnx",
        "chatforge.db",
        "chatforge.toml",
    ] {
        assert!(run.dir.join(f).is_file(), "{f} missing\n{first}");
    }
    let bundle = std::path::absolute(run.dir.join("chat")).unwrap();
    assert!(
        first.contains(&format!("bundle: {}", bundle.display())),
        "{first}"
    );
    let cfg = Config::load(Some(&run.dir.join("chatforge.toml"))).unwrap();
    assert_eq!(cfg.model.bundle.as_deref(), Some(bundle.as_path()));
    assert!(cfg.moderation.enabled && cfg.moderation.blocklist.is_some());
    assert_eq!(
        cfg.kb.map(|k| k.dir),
        Some(std::path::absolute(run.dir.join("kb")).unwrap())
    );

    let second = stdout(&run.quickstart(&["--no-chat"], None));
    assert!(
        stage_outcomes(&second).iter().all(|(_, o)| o == "reused")
            && stage_outcomes(&second).len() == STAGES.len(),
        "{second}"
    );
    assert!(second.contains("kept as it was"), "{second}");

    // New dialogs: the router (trained on their questions too), fine-tuning
    // and export rebuild, the rest stays.
    let mut dialogs = std::fs::OpenOptions::new()
        .append(true)
        .open(run.dialogs())
        .unwrap();
    writeln!(
        dialogs,
        r#"{{"messages":[{{"role":"user","content":"Do you sell socks?"}},{{"role":"assistant","content":"Yes, wool and synthetic hiking socks."}}]}}"#
    )
    .unwrap();
    drop(dialogs);
    let third = stdout(&run.quickstart(&["--no-chat"], None));
    let rebuilt: Vec<String> = stage_outcomes(&third)
        .into_iter()
        .filter(|(_, o)| o == "built")
        .map(|(s, _)| s)
        .collect();
    assert_eq!(rebuilt, ["kb", "finetune", "export"], "{third}");

    // The terminal chat: a message, a command, then /quit.
    let chat = run.quickstart(
        &[],
        Some("hello\nwhere is my order?\n/help\n/quit\nnever read\n"),
    );
    let text = stdout(&chat);
    assert!(
        stage_outcomes(&text).iter().all(|(_, o)| o == "reused"),
        "{text}"
    );
    let stderr = String::from_utf8_lossy(&chat.stderr);
    let replies: Vec<&str> = text.lines().filter(|l| l.starts_with("bot> ")).collect();
    assert!(replies.len() >= 3, "{text}");
    // Generation ran: neither refused nor failed (the pipeline's apology).
    assert!(!text.contains("went wrong"), "{text}\n{stderr}");
    println!("{text}");
    assert!(text.contains("/reset") && text.contains("/human"), "{text}");
    let written: usize = stderr
        .split("records written")
        .next()
        .and_then(|s| s.rsplit('(').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no store report\n{stderr}"));
    // The conversation, the user's message and the reply at least.
    assert!(written >= 3, "{stderr}");
}

#[test]
fn test_missing_moderation_data_says_how_to_get_it() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_chatforge"))
        .args(["quickstart", "--no-chat", "--preset", "tiny", "--run"])
        .arg(tmp.path().join("run"))
        .arg("--corpus")
        .arg(repo("data/support/faq.md"))
        .arg("--moderation-data")
        .arg(tmp.path().join("absent.csv"))
        .current_dir(repo(""))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("absent.csv") && err.contains("setup.sh --moderation"),
        "{err}"
    );
    // Nothing was trained before the check.
    assert!(!tmp.path().join("run").join("pretrain").exists());
}

/// Item 1's progress bars, seen as a user sees them: the run under a
/// pseudo-terminal (`script` from util-linux) draws each training loop's bar
/// and the spinners; the same run with stderr piped draws none.
#[test]
fn test_progress_is_drawn_on_a_terminal_only() {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: `script` (util-linux) is not installed, so no pseudo-terminal");
        return;
    }
    let run = QuickstartRun::new();
    let quote = |a: &str| format!("'{}'", a.replace('\'', "'\\''"));
    let line: Vec<String> = std::iter::once(env!("CARGO_BIN_EXE_chatforge"))
        .chain(run.args.iter().map(String::as_str))
        .chain(["--no-chat"])
        .map(quote)
        .collect();
    let out = Command::new("script")
        .args(["-qefc", &line.join(" "), "/dev/null"])
        .current_dir(repo(""))
        .env("RUST_LOG", "warn")
        .env("TERM", "xterm-256color")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{screen}");
    // The training bars: stage, elapsed time, position out of the step count
    // and the loss / rate message, redrawn in place.
    for (stage, steps) in [("pretrain", 30), ("finetune", 10)] {
        let bar = screen
            .lines()
            .flat_map(|l| l.split('\r'))
            .find(|l| l.contains(&format!("{stage} [")) && l.contains(&format!("/{steps}")))
            .unwrap_or_else(|| panic!("no {stage} bar in:\n{screen}"));
        assert!(bar.contains("ETA"), "{bar}");
    }
    assert!(
        screen.contains("\u{1b}["),
        "no terminal redraws in:\n{screen}"
    );
    assert!(
        screen.contains("exporting to ONNX"),
        "no export spinner in:\n{screen}"
    );
    assert!(screen.contains("total"), "{screen}");

    let piped = run.quickstart(&["--no-chat", "--force"], None);
    let err = String::from_utf8_lossy(&piped.stderr);
    // No bars, spinners or colour codes in a pipe (a log file stays plain).
    assert!(!err.contains("\u{1b}[") && !err.contains("ETA"), "{err}");
    assert!(stdout(&piped).contains("total"));
}
