//! `bench moderation`: messages per second at batch 1 and 32, and the
//! latency per message at batch 1, for the whole check (featurizing, ONNX
//! Runtime, rules).

use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use super::Result;
use super::moderator::{Moderator, Rules};
use crate::runtime::RuntimeConfig;

/// Chat-like messages of varied length and script, and the bot's own
/// replies, which are checked too: long, of many clauses, quoting the
/// knowledge base.
const SAMPLES: [&str; 14] = [
    "Option: Standard; Delivery time: 5-7 business days; Price: $5.95, free on orders over $75. Option: Express; Delivery time: 2-3 business days; Price: $14.95. Delivery times count from the day the order ships, and orders placed before 2 pm ET on a business day ship the same day.",
    "您可以在收货后30天内退货，商品必须未使用且保持原包装。请在账户的订单页面选择退货，打印退货标签，然后把包裹交给快递。我们收到包裹后3个工作日内处理退款。",
    "Where is my order? It was supposed to arrive on Monday.",
    "thanks!",
    "Can I return boots I bought three weeks ago if I wore them once outside?",
    "you are the most useless bot I have ever talked to",
    "我的快递什么时候到？",
    "退货需要多长时间才能退款，我已经等了一个星期了。",
    "hi",
    "My card was charged twice for the same tent, please refund one of the payments.",
    "ok 👍",
    "这个客服真是太差劲了，垃圾",
    "Do you ship to Canada and how much does it cost for a 2 kg parcel?",
    "lol what",
];

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub provider: String,
    pub messages: usize,
    pub batch1_messages_per_s: f64,
    pub batch32_messages_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// Runs `messages` checks one by one, then the same in batches of 32.
pub fn bench(dir: &Path, cfg: &RuntimeConfig, messages: usize) -> Result<BenchReport> {
    let m = Moderator::open(dir, cfg)?.with_rules(Rules::default());
    let texts: Vec<&str> = (0..messages.max(1))
        .map(|i| SAMPLES[i % SAMPLES.len()])
        .collect();
    // Warm-up: the first runs allocate and let ONNX Runtime pick kernels.
    for t in texts.iter().take(20) {
        m.check(t)?;
    }
    let mut lat = Vec::with_capacity(texts.len());
    let start = Instant::now();
    for t in &texts {
        let s = Instant::now();
        m.check(t)?;
        lat.push(s.elapsed().as_secs_f64() * 1e3);
    }
    let batch1 = texts.len() as f64 / start.elapsed().as_secs_f64();
    let start = Instant::now();
    for chunk in texts.chunks(32) {
        m.check_batch(chunk)?;
    }
    let batch32 = texts.len() as f64 / start.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| crate::bench::percentile(&lat, p);
    Ok(BenchReport {
        provider: m.provider().name().to_string(),
        messages: texts.len(),
        batch1_messages_per_s: batch1,
        batch32_messages_per_s: batch32,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
    })
}
