//! `chatforge bench kb`: a knowledge base of 10,000 passages (made from the
//! shop FAQ's vocabulary, deterministic), built, its router trained briefly,
//! then searched: build time, training time, and query latency p50/p99 of
//! the fused search and of BM25 alone.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::analyze;
use super::search::{Kb, Query};
use super::{BuildOptions, Result, SplitSettings, TrainOptions, build, train};
use crate::runtime::RuntimeConfig;

#[derive(Debug, Clone, Serialize)]
pub struct KbBenchReport {
    pub bench: &'static str,
    pub passages: usize,
    pub queries: usize,
    pub build_seconds: f64,
    pub train_seconds: f64,
    pub fused_p50_ms: f64,
    pub fused_p99_ms: f64,
    pub bm25_p50_ms: f64,
    pub bm25_p99_ms: f64,
}

/// Sections of synthetic Markdown: a heading, then bold questions with a
/// few sentences each, in the FAQ's words.
fn synth_docs(dir: &Path, faq: &str, passages: usize, rng: &mut ChaCha8Rng) -> Result<()> {
    let mut words: Vec<String> = faq
        .split(|c: char| !c.is_alphanumeric() && c != '$' && c != '.')
        .map(|w| w.trim_matches('.').to_lowercase())
        .filter(|w| w.len() > 2)
        .collect();
    words.sort();
    words.dedup();
    // Product-like names spread the vocabulary as a large catalog would.
    for i in 0..3000 {
        words.push(format!("item{i:04}"));
    }
    let per_file = 1000;
    for f in 0..passages.div_ceil(per_file) {
        let mut text = format!("# Catalog part {f}\n");
        for s in 0..per_file.min(passages - f * per_file) {
            if s % 20 == 0 {
                let _ = write!(text, "\n## Section {f}-{s}\n");
            }
            let q: Vec<&str> = (0..rng.random_range(4..9))
                .filter_map(|_| words.choose(rng).map(String::as_str))
                .collect();
            let _ = write!(text, "\n**{}?**\n", q.join(" "));
            for _ in 0..rng.random_range(3..6) {
                let sentence: Vec<&str> = (0..rng.random_range(8..16))
                    .filter_map(|_| words.choose(rng).map(String::as_str))
                    .collect();
                let _ = write!(text, "{}. ", sentence.join(" "));
            }
            text.push('\n');
        }
        let path = dir.join(format!("part{f:02}.md"));
        std::fs::write(&path, text).map_err(crate::fsio::io_err(&path))?;
    }
    Ok(())
}

fn percentile_ms(mut v: Vec<f64>, q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(((v.len().max(1) - 1) as f64 * q).round() as usize)
        .copied()
        .unwrap_or(0.0)
}

pub fn bench_kb(
    faq: &Path,
    passages: usize,
    queries: usize,
    runtime: &RuntimeConfig,
) -> Result<KbBenchReport> {
    let tmp = tempfile::tempdir().map_err(crate::fsio::io_err(Path::new("temporary folder")))?;
    let docs = tmp.path().join("docs");
    std::fs::create_dir_all(&docs).map_err(crate::fsio::io_err(&docs))?;
    let faq_text = std::fs::read_to_string(faq).map_err(crate::fsio::io_err(faq))?;
    let mut rng = ChaCha8Rng::seed_from_u64(20261204);
    synth_docs(&docs, &faq_text, passages, &mut rng)?;
    let out = tmp.path().join("kb");
    let t = Instant::now();
    let built = build(&BuildOptions {
        docs: vec![docs],
        out: out.clone(),
        force: true,
        split: SplitSettings::default(),
    })?;
    let build_seconds = t.elapsed().as_secs_f64();
    // The router trains on the passages' own titles (one epoch: the bench
    // measures serving, not accuracy); the questions file is one line.
    let questions = tmp.path().join("q.jsonl");
    let first = super::build::read_passages(&out)?
        .first()
        .map(|p| p.id.clone())
        .unwrap_or_default();
    std::fs::write(
        &questions,
        format!("{{\"question\":\"a question\",\"passages\":[\"{first}\"]}}\n"),
    )
    .map_err(crate::fsio::io_err(&questions))?;
    let mut o = TrainOptions::new(out.clone(), vec![questions]);
    o.settings.epochs = 1;
    o.validation_fraction = 0.0;
    // As `kb train` serves it: with set-up's lexicon when it is there.
    o.lexicon = super::lexicon::resolve(None)?;
    o.runtime = runtime.clone();
    let t = Instant::now();
    train(&o)?;
    let train_seconds = t.elapsed().as_secs_f64();
    let kb = Kb::open(&out, runtime)?;
    let vocab: Vec<String> = kb
        .passages
        .iter()
        .take(500)
        .flat_map(|p| analyze::terms(&p.text))
        .collect();
    let texts: Vec<String> = (0..queries)
        .map(|_| {
            (0..rng.random_range(3..9))
                .filter_map(|_| vocab.choose(&mut rng).cloned())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    let time = |f: &dyn Fn(&Query<'_>) -> Result<()>| -> Result<Vec<f64>> {
        texts
            .iter()
            .map(|t| {
                let q = Query {
                    text: t,
                    previous: None,
                };
                let start = Instant::now();
                f(&q)?;
                Ok(start.elapsed().as_secs_f64() * 1e3)
            })
            .collect()
    };
    let fused = time(&|q| kb.search(q, 5).map(drop))?;
    let bm25 = time(&|q| kb.search_bm25(q, 5).map(drop))?;
    Ok(KbBenchReport {
        bench: "kb",
        passages: built.passages,
        queries,
        build_seconds,
        train_seconds,
        fused_p50_ms: percentile_ms(fused.clone(), 0.5),
        fused_p99_ms: percentile_ms(fused, 0.99),
        bm25_p50_ms: percentile_ms(bm25.clone(), 0.5),
        bm25_p99_ms: percentile_ms(bm25, 0.99),
    })
}
