//! Helpers shared by the integration tests that need a small trained and
//! exported bundle.
#![allow(dead_code)] // each test crate uses a different subset

pub mod browser;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use chatforge::export::export_bundle;
use chatforge::moderation::{FeaturizerConfig, SplitConfig, TrainSettings};
use chatforge::runtime::{Generator, Provider, RuntimeConfig};
use chatforge::text::{Dialog, Message, Role};
use chatforge::train::{self, PretrainJob, TrainConfig, TrainSection};

/// Runs the chatforge binary on the CPU provider: success, stdout, stderr.
pub fn cli(args: &[&str]) -> (bool, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_chatforge"))
        .args(args)
        .env("RUST_LOG", "warn")
        .env("CHATFORGE_PROVIDERS", "cpu")
        .output()
        .unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Runs the chatforge binary on the CPU provider with `stdin` as its input
/// and `envs` set.
pub fn cli_with(args: &[&str], stdin: &str, envs: &[(&str, &str)]) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_chatforge"))
        .args(args)
        .envs(envs.iter().copied())
        .env("RUST_LOG", "warn")
        .env("CHATFORGE_PROVIDERS", "cpu")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

pub fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

/// A fixture folder shared by every test process of this build (nextest
/// runs each test in its own process): built once by `build` under a lock
/// in `CARGO_TARGET_TMPDIR`, and rebuilt when the test executable is newer
/// than it (the code that made it may have changed).
pub fn cached(name: &str, build: impl FnOnce(&Path)) -> PathBuf {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fixtures");
    std::fs::create_dir_all(&root).unwrap();
    let dir = root.join(name);
    let done = root.join(format!("{name}.done"));
    let lock = root.join(format!("{name}.lock"));
    let exe_time = std::env::current_exe()
        .and_then(|e| e.metadata())
        .and_then(|m| m.modified())
        .unwrap();
    let fresh = || {
        done.metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t >= exe_time)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(900);
    loop {
        if fresh() {
            return dir;
        }
        match std::fs::create_dir(&lock) {
            Ok(()) => break,
            Err(_) => {
                // A lock older than the deadline is left by a killed run.
                let stale = lock
                    .metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t.elapsed().unwrap_or_default().as_secs() > 900);
                if stale {
                    let _ = std::fs::remove_dir(&lock);
                }
                assert!(std::time::Instant::now() < deadline, "waiting for {name}");
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
        }
    }
    if !fresh() {
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_file(&done);
        build(&dir);
        std::fs::write(&done, b"").unwrap();
    }
    std::fs::remove_dir(&lock).unwrap();
    dir
}

/// A tiny bundle trained long enough (200 steps of models/tiny.toml on the
/// support data) that its greedy replies are words that depend on the
/// question; shared by the pipeline and serve tests.
pub fn talking_tiny_bundle() -> PathBuf {
    cached("talking-tiny", |out| {
        let config = TrainConfig::from_file(&repo("models/tiny.toml")).unwrap();
        pretrain_on_support(config, out);
    })
}

/// Pretrains `config` on the support FAQ and training dialogs into `out`
/// and exports it to ONNX.
fn pretrain_on_support(config: TrainConfig, out: &Path) -> chatforge::export::ExportReport {
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
    export_bundle(out, false).expect("export")
}

/// The synthetic moderation model (see [`synthetic_csv`]), shared like
/// [`talking_tiny_bundle`].
pub fn synthetic_moderation_model() -> PathBuf {
    cached("synthetic-moderation", |out| {
        std::fs::create_dir_all(out).unwrap();
        let csv = synthetic_csv(out, 600);
        // Support chat is clean: without it, words the synthetic set never
        // shows score near its 50% offensive base rate.
        let mut clean = String::new();
        let dialogs = std::fs::read_to_string(repo("data/support/train.jsonl")).unwrap();
        for line in dialogs.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            for m in v["messages"].as_array().unwrap() {
                clean.push_str(&m["content"].as_str().unwrap().replace('\n', " "));
                clean.push('\n');
            }
        }
        let clean_path = out.join("clean.txt");
        std::fs::write(&clean_path, clean).unwrap();
        chatforge::moderation::train(chatforge::moderation::TrainJob {
            data: vec![csv],
            out: out.to_path_buf(),
            settings: quick_settings(),
            clean: vec![clean_path],
            clean_train: vec![],
            progress: false,
        })
        .expect("moderation model");
    })
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
    let report = pretrain_on_support(config, out);
    println!(
        "export parity: prefill {:e}, decode {:e}",
        report.prefill_max_diff, report.decode_max_diff
    );
}

pub const INSULTS: [&str; 6] = ["idiot", "moron", "stupid", "loser", "垃圾", "滚蛋"];
const NEUTRAL: [&str; 8] = [
    "order", "shipping", "boots", "refund", "thanks", "tent", "快递", "谢谢",
];

/// A deterministic synthetic set: a row is offensive when it holds an
/// insult, hateful when it also names a group with "all … are".
pub fn synthetic_csv(dir: &Path, rows: usize) -> PathBuf {
    let mut s = String::from("text,offensive,hate\n");
    let mut x: u64 = 0x9e37_79b9;
    let mut next = |n: usize| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % n as u64) as usize
    };
    for i in 0..rows {
        let offensive = next(2) == 0;
        let hate = offensive && next(3) == 0;
        let mut words: Vec<&str> = (0..4).map(|_| NEUTRAL[next(NEUTRAL.len())]).collect();
        if offensive {
            words.insert(next(4), INSULTS[next(INSULTS.len())]);
        }
        if hate {
            words.insert(0, "all of them are");
        }
        s.push_str(&format!(
            "\"{} #{i}\",{},{}\n",
            words.join(" "),
            offensive as u8,
            hate as u8
        ));
    }
    let path = dir.join("synthetic.csv");
    std::fs::write(&path, s).unwrap();
    path
}

pub fn quick_settings() -> TrainSettings {
    TrainSettings {
        featurizer: FeaturizerConfig {
            buckets: 1 << 12,
            ..FeaturizerConfig::default()
        },
        split: SplitConfig {
            seed: 3,
            validation_fraction: 0.2,
            test_fraction: 0.2,
        },
        dim: 16,
        epochs: 8,
        batch_size: 32,
        lr: 0.03,
        ..TrainSettings::default()
    }
}

/// ONNX Runtime on one CPU thread, strict.
pub fn cpu() -> RuntimeConfig {
    RuntimeConfig {
        providers: vec![Provider::Cpu],
        strict: true,
        intra_threads: 1,
        ..RuntimeConfig::default()
    }
}

/// What the pipeline and serve tests chat with: the talking tiny bundle, the
/// synthetic moderation model, and a blocklist holding one word the model
/// says (greedy, `MAX_NEW` tokens) to [`ASK_BLOCKED`] but not to `ask_ok`.
pub struct ChatFixture {
    _tmp: tempfile::TempDir,
    pub bundle: PathBuf,
    pub moderation: PathBuf,
    pub blocklist: PathBuf,
    pub blocked_word: String,
    pub ask_ok: String,
}

pub const ASK_BLOCKED: &str = "where is my order?";
pub const MAX_NEW: usize = 16;

/// The greedy reply to `question` alone, as the pipeline gives it with
/// `temperature = 0`, `max_new_tokens = MAX_NEW` and no persona.
pub fn greedy_reply(g: &mut Generator, question: &str) -> String {
    let mut params = g.default_params().greedy();
    params.max_new_tokens = MAX_NEW;
    let d = Dialog {
        messages: vec![Message {
            role: Role::User,
            content: question.into(),
        }],
        topic: None,
        style: None,
        ..Default::default()
    };
    g.reply(&d, &params, &mut |_, _| {}).unwrap().text
}

fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_ascii_alphabetic())
        .filter(|w| w.len() >= 3)
        .map(str::to_lowercase)
        .collect()
}

pub fn chat_fixture() -> &'static ChatFixture {
    static F: OnceLock<ChatFixture> = OnceLock::new();
    F.get_or_init(|| {
        let bundle = talking_tiny_bundle();
        let moderation = synthetic_moderation_model();
        let mut g = Generator::open(&bundle, &cpu()).unwrap();
        let blocked_reply = words(&greedy_reply(&mut g, ASK_BLOCKED));
        let candidates = [
            "hello",
            "thanks, bye",
            "can I get a refund?",
            "do you ship to Canada?",
            "how do I reset my password?",
        ];
        let (ask_ok, blocked_word) = candidates
            .iter()
            .find_map(|q| {
                let other = words(&greedy_reply(&mut g, q));
                blocked_reply
                    .iter()
                    .find(|w| !other.contains(w))
                    .map(|w| (q.to_string(), w.clone()))
            })
            .unwrap_or_else(|| panic!("no question whose reply lacks a word of {blocked_reply:?}"));
        let tmp = tempfile::tempdir().unwrap();
        let blocklist = tmp.path().join("blocklist.txt");
        std::fs::write(&blocklist, format!("# test list\n{blocked_word}\n")).unwrap();
        println!("blocked word {blocked_word:?}; allowed question {ask_ok:?}");
        ChatFixture {
            _tmp: tmp,
            bundle,
            moderation,
            blocklist,
            blocked_word,
            ask_ok,
        }
    })
}

/// The serve settings the tests share: one ONNX Runtime thread, `bundle`
/// checked for a reload every 0.2 s, the store in `dir`, greedy replies of
/// `MAX_NEW` tokens, a rate limit the scripted users stay under.
pub fn serve_settings(dir: &Path, bundle: &Path) -> String {
    format!(
        r#"
[runtime]
providers = ["cpu"]
intra_threads = 1

[model]
bundle = "{bundle}"
watch_secs = 0.2

[store]
url = "sqlite://{db}?mode=rwc"
spill_dir = "{spill}"

[pipeline]
max_new_tokens = {MAX_NEW}
temperature = 0.0
rate_limit = {{ burst = 8, per_seconds = 600 }}
"#,
        bundle = bundle.display(),
        db = dir.join("chat.db").display(),
        spill = dir.join("spill").display(),
    )
}

/// A `chatforge serve` config for `fixture` with its store in `dir` and
/// `adapter` (a `[telegram]` or `[discord]` section) appended.
pub fn write_serve_config(dir: &Path, bundle: &Path, adapter: &str) -> PathBuf {
    let f = chat_fixture();
    let text = format!(
        "{}\n[moderation]\nmodel = \"{}\"\nblocklist = \"{}\"\n\n{adapter}\n",
        serve_settings(dir, bundle),
        f.moderation.display(),
        f.blocklist.display(),
    );
    let path = dir.join("chatforge.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Every conversation stored in the SQLite file of [`write_serve_config`].
pub async fn stored_conversations(dir: &Path) -> Vec<chatforge::store::StoredConversation> {
    use chatforge::store::{self, ExportFilter, StoreOptions};
    let url = format!("sqlite://{}?mode=rwc", dir.join("chat.db").display());
    let db = store::connect(&url, &StoreOptions::default())
        .await
        .unwrap();
    db.select(&ExportFilter::default(), None, 1000)
        .await
        .unwrap()
}

/// `chatforge quickstart` in a temporary folder as a user runs it, on a
/// preset smaller than tiny with short step counts and a small synthetic
/// moderation set (the registry data of `setup.sh --moderation` may be
/// absent). `dir` is the run folder.
pub struct QuickstartRun {
    _tmp: tempfile::TempDir,
    pub dir: PathBuf,
    pub args: Vec<String>,
}

impl QuickstartRun {
    pub fn new() -> Self {
        Self::with_steps(30, 10)
    }

    /// A run whose pretraining and fine-tuning take these step counts.
    pub fn with_steps(pretrain: usize, finetune: usize) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let csv = synthetic_csv(tmp.path(), 300);
        // Support turns as clean rows, as the default data has them:
        // without them, words the synthetic set never shows score near its
        // 50% offensive base rate and the chat would only refuse.
        let mut rows = std::fs::read_to_string(&csv).unwrap();
        let dialogs = std::fs::read_to_string(repo("data/support/train.jsonl")).unwrap();
        for line in dialogs.lines().take(300) {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            for m in v["messages"].as_array().unwrap() {
                if m["role"] == "user" || m["role"] == "assistant" {
                    let text = m["content"].as_str().unwrap().replace('"', "\"\"");
                    rows.push_str(&format!("\"{text}\",0,0\n"));
                }
            }
        }
        // And what the bot says when the knowledge base has no answer.
        rows.push_str("hello,0,0\nhi there,0,0\n\"I don't have that information; type /human to reach a person.\",0,0\n");
        std::fs::write(&csv, rows).unwrap();
        let blocklist = tmp.path().join("blocked.txt");
        std::fs::write(&blocklist, "# test list\nidiot\n").unwrap();
        let dialogs = tmp.path().join("dialogs.jsonl");
        std::fs::copy(repo("data/support/train.jsonl"), &dialogs).unwrap();
        // Smaller than models/tiny.toml so that the four runs stay quick.
        let preset = tmp.path().join("micro.toml");
        std::fs::write(
            &preset,
            "[model]\nn_layer = 1\nn_head = 2\nn_embd = 32\nn_positions = 128\n\
             [tokenizer]\nvocab_size = 512\n\
             [train]\nbatch_size = 8\nblock_size = 32\nwarmup_steps = 5\neval_interval = 100\neval_iters = 2\ncheckpoint_interval = 100\n",
        )
        .unwrap();
        let dir = tmp.path().join("run");
        let s = |p: &Path| p.to_str().unwrap().to_string();
        let args = vec![
            "quickstart".into(),
            "--run".into(),
            s(&dir),
            "--preset".into(),
            s(&preset),
            "--corpus".into(),
            s(&repo("data/support/faq.md")),
            "--dialogs".into(),
            s(&dialogs),
            "--moderation-data".into(),
            s(&csv),
            "--blocklist".into(),
            s(&blocklist),
            "--pretrain-steps".into(),
            pretrain.to_string(),
            "--finetune-steps".into(),
            finetune.to_string(),
            // The knowledge base's defaults (data/support), its router
            // trained briefly.
            "--kb-epochs".into(),
            "2".into(),
        ];
        Self {
            _tmp: tmp,
            dir,
            args,
        }
    }

    /// The same run without a knowledge base (`--no-kb`).
    pub fn without_kb(mut self) -> Self {
        let at = self.args.iter().position(|a| a == "--kb-epochs").unwrap();
        self.args.drain(at..at + 2);
        self.args.push("--no-kb".into());
        self
    }

    pub fn dialogs(&self) -> PathBuf {
        self.dir.parent().unwrap().join("dialogs.jsonl")
    }

    pub fn quickstart(&self, extra: &[&str], stdin: Option<&str>) -> Output {
        let mut child = Command::new(env!("CARGO_BIN_EXE_chatforge"))
            .args(&self.args)
            .args(extra)
            .current_dir(repo(""))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the chatforge binary runs");
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
        drop(input);
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "quickstart {extra:?} failed\nstdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

/// `DATABASE_URL`; `None` (the caller skips, saying so) when it is unset,
/// unless the test run requires its services.
pub fn database_url() -> Option<String> {
    match std::env::var("DATABASE_URL") {
        Ok(url) => Some(url),
        Err(_) if std::env::var_os("CHATFORGE_REQUIRE_SERVICES").is_some() => {
            panic!(
                "DATABASE_URL is not set, but this run requires Postgres (CHATFORGE_REQUIRE_SERVICES)"
            )
        }
        Err(_) => {
            eprintln!(
                "skipping the Postgres variant: DATABASE_URL is not set (scripts/test.sh sets it)"
            );
            None
        }
    }
}

/// A fresh database on the `DATABASE_URL` server; [`ScratchDb::drop_db`]
/// removes it.
pub struct ScratchDb {
    pub url: String,
    admin: String,
    name: String,
}

impl ScratchDb {
    /// `None` where [`database_url`] is.
    pub async fn create() -> Option<Self> {
        use sqlx::Connection;
        let admin = database_url()?;
        let name = format!("chatforge_test_{:016x}", rand::random::<u64>());
        let mut conn = sqlx::PgConnection::connect(&admin)
            .await
            .expect("DATABASE_URL names a reachable Postgres server");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap();
        let _ = conn.close().await;
        Some(Self {
            url: chatforge::store::with_database(&admin, &name),
            admin,
            name,
        })
    }

    pub async fn drop_db(self) {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&self.admin).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )))
        .execute(&mut conn)
        .await
        .unwrap();
        let _ = conn.close().await;
    }
}

/// A port of 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until the serve process `child` answers `base`/healthz with 200.
///
/// # Panics
/// After 30 s, having killed `child`.
pub async fn wait_healthy(base: &str, child: &mut std::process::Child) {
    let http = reqwest::Client::new();
    for _ in 0..300 {
        if let Ok(r) = http.get(format!("{base}/healthz")).send().await
            && r.status() == 200
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("serve did not answer {base}/healthz within 30 s");
}

/// Runs `body` on the URL of a fresh database on the `DATABASE_URL` server,
/// within `limit`, and drops the database after, also when the body panics
/// or runs out of time. Does nothing where [`database_url`] says to skip.
pub async fn with_scratch_db<F, Fut>(limit: std::time::Duration, body: F)
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let Some(db) = ScratchDb::create().await else {
        return;
    };
    let run = body(db.url.clone());
    let outcome = tokio::spawn(async move {
        tokio::time::timeout(limit, run)
            .await
            .expect("test ran past its time limit");
    })
    .await;
    db.drop_db().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}
