//! Continuous batching with a real tiny model: a reply's tokens are the
//! same when it is generated alone and inside a batch that rows join (some
//! after waiting in the queue) and leave while it runs; stop strings and
//! cancellation behave as alone, as does a text the reply may not open
//! with. `bench serve` runs both schedulers.
//!
//! Needs the ONNX Runtime library that `./scripts/setup.sh` fetches (or
//! `ORT_DYLIB_PATH`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chatforge::pipeline::{DEFAULT_QUEUE, Engine, Scheduler};
use chatforge::runtime::{BatchLimits, Generation, Generator, SamplingParams, StopReason};
use chatforge::text::{Dialog, Message, Role};

mod common;

fn dialog(text: &str) -> Dialog {
    Dialog {
        messages: vec![Message {
            role: Role::User,
            content: text.to_string(),
        }],
        ..Default::default()
    }
}

const QUESTIONS: [&str; 6] = [
    "hello",
    "where is my order? it has been a week and the tracking page says nothing",
    "can I return shoes",
    "refund",
    "do you ship to Canada and how long does it take to arrive there usually",
    "thanks",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_a_reply_is_the_same_alone_and_in_a_changing_batch() {
    let f = common::chat_fixture();
    let mut alone = Generator::open(&f.bundle, &common::cpu()).unwrap();
    let mut params = alone.default_params().greedy();
    params.max_new_tokens = 24;
    // The third question may not open as it would unhindered.
    let free = alone
        .reply(&dialog(QUESTIONS[2]), &params, &mut |_, _| {})
        .unwrap();
    assert!(free.tokens.len() >= 2, "{free:?}");
    let avoided = free.text.clone();
    // Every other question also stops at a string, cut as alone.
    let params_of = |i: usize| -> SamplingParams {
        let mut p = params.clone();
        if i % 2 == 1 {
            p.stop_strings = vec!["e ".into()];
        }
        if i == 2 {
            p.avoid_openings = vec![avoided.clone()];
        }
        p
    };
    let expected: Vec<Generation> = QUESTIONS
        .iter()
        .enumerate()
        .map(|(i, q)| {
            alone
                .reply(&dialog(q), &params_of(i), &mut |_, _| {})
                .unwrap()
        })
        .collect();
    assert!(
        !expected[2].text.starts_with(&avoided),
        "{avoided:?} was avoided: {:?}",
        expected[2]
    );
    assert!(
        expected.iter().map(|g| g.tokens.len()).max()
            > expected.iter().map(|g| g.tokens.len()).min(),
        "replies of different lengths leave the batch at different steps: {expected:?}"
    );

    // Three rows at most: the fourth waits in the queue; the last two join
    // while the first ones run.
    let limits = BatchLimits {
        max_batch: 3,
        max_tokens: 1_000_000,
    };
    let bundle = f.bundle.clone();
    let engine = tokio::task::spawn_blocking(move || {
        Engine::open_scheduled(
            &bundle,
            &common::cpu(),
            1,
            Scheduler::Continuous(limits),
            DEFAULT_QUEUE,
        )
    })
    .await
    .unwrap()
    .unwrap();
    let pool = engine.current();
    let ask = |i: usize, cancel: Arc<AtomicBool>| {
        let pool = Arc::clone(&pool);
        let p = params_of(i);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let (first_tx, first_rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            if rx.recv().await.is_some() {
                let _ = first_tx.send(());
            }
            while rx.recv().await.is_some() {}
        });
        let task = tokio::spawn(async move {
            pool.reply(dialog(QUESTIONS[i % QUESTIONS.len()]), p, cancel, tx)
                .await
        });
        (task, first_rx)
    };
    let mut running = Vec::new();
    let mut firsts = Vec::new();
    for i in 0..4 {
        let (task, first) = ask(i, Arc::new(AtomicBool::new(false)));
        running.push((i, task));
        firsts.push(first);
    }
    // The first has text out: the others join a running batch.
    let _ = tokio::time::timeout(Duration::from_secs(30), firsts.remove(0)).await;
    for i in 4..QUESTIONS.len() {
        running.push((i, ask(i, Arc::new(AtomicBool::new(false))).0));
    }
    // One more is cancelled as soon as its text starts.
    let cancel = Arc::new(AtomicBool::new(false));
    let (cancelled, cancelled_first) = ask(1, Arc::clone(&cancel));
    let _ = tokio::time::timeout(Duration::from_secs(30), cancelled_first).await;
    cancel.store(true, Ordering::Relaxed);

    for (i, task) in running {
        let g = tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("a batched reply finishes")
            .unwrap()
            .unwrap();
        assert_eq!(
            g.tokens, expected[i].tokens,
            "question {i}: {:?}",
            QUESTIONS[i]
        );
        assert_eq!(g.text, expected[i].text, "question {i}");
        assert_eq!(g.stop, expected[i].stop, "question {i}");
        assert_eq!(g.prompt_tokens, expected[i].prompt_tokens);
    }
    let g = cancelled.await.unwrap().unwrap();
    assert!(
        g.stop == StopReason::Cancelled || g.tokens == expected[1].tokens,
        "cancelled, unless it had already finished: {g:?}"
    );
    assert!(g.tokens.len() <= expected[1].tokens.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_a_batch_does_not_stall_behind_an_idle_worker() {
    // Two continuous workers: while one waits for work, the other's batch
    // keeps decoding.
    let f = common::chat_fixture();
    let bundle = f.bundle.clone();
    let engine = tokio::task::spawn_blocking(move || {
        Engine::open_scheduled(
            &bundle,
            &common::cpu(),
            2,
            Scheduler::Continuous(BatchLimits::default()),
            DEFAULT_QUEUE,
        )
    })
    .await
    .unwrap()
    .unwrap();
    let pool = engine.current();
    let mut params = pool.defaults().clone().greedy();
    params.max_new_tokens = 16;
    params.stop_tokens.clear();
    for q in QUESTIONS.iter().take(3) {
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let g = tokio::time::timeout(
            Duration::from_secs(30),
            pool.reply(
                dialog(q),
                params.clone(),
                Arc::new(AtomicBool::new(false)),
                tx,
            ),
        )
        .await
        .expect("the reply finishes while the other worker is idle")
        .unwrap();
        assert_eq!(g.tokens.len(), 16);
    }
}

#[test]
fn test_bench_serve_runs_both_schedulers() {
    let f = common::chat_fixture();
    let (ok, out, err) = common::cli(&[
        "bench",
        "serve",
        "--bundle",
        f.bundle.to_str().unwrap(),
        "--conversations",
        "6",
        "--replies",
        "2",
        "--new-tokens",
        "8",
        "--max-batch",
        "4",
        "--rounds",
        "2",
        "--json",
    ]);
    assert!(ok, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["rounds"], 2, "{v}");
    // Each scheduler's figures cover both of its rounds.
    for s in ["pool", "continuous"] {
        assert_eq!(v[s]["replies"], 2 * 12, "{v}");
        assert_eq!(v[s]["failed"], 0, "{v}");
        assert_eq!(v[s]["tokens"], 2 * 12 * 8, "{v}");
        assert!(v[s]["tokens_per_s"].as_f64().unwrap() > 0.0);
    }
    assert!(v["throughput_ratio"].as_f64().unwrap() > 0.0);
}
