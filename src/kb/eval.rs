//! `kb eval`: how well retrieval finds the passages that answer labelled
//! questions (recall@1/3/5, MRR), how often it answers at its confidence
//! threshold and how often it is then right, how often it abstains on
//! questions the knowledge base cannot answer, and how long a search takes.
//! Plain BM25 runs beside it on the same questions.

use std::time::Instant;

use serde::Serialize;

use super::Result;
use super::questions::Labelled;
use super::search::{Kb, Query, Retrieval};

#[derive(Debug, Clone, Default, Serialize)]
pub struct Metrics {
    /// Questions the knowledge base can answer.
    pub questions: usize,
    pub recall_at_1: f32,
    pub recall_at_3: f32,
    pub recall_at_5: f32,
    pub mrr: f32,
    /// Share of answerable questions whose confidence reaches the threshold.
    pub coverage: f32,
    /// Of those, the share whose first passage is right.
    pub accuracy: f32,
    /// Questions it cannot answer (`"passages": []`).
    pub out_of_scope: usize,
    /// Of those, the share it abstained on (confidence under the threshold).
    pub abstained: f32,
    /// Questions with required facts (`"facts"`): the share the bot's
    /// fallback answer (the first passage's best sentences, what the fact
    /// guard sends instead of an unsupported reply) answers with every
    /// fact, the share it answers without one, and the rest it hands off.
    pub with_facts: usize,
    pub extract_correct: f32,
    pub extract_wrong: f32,
    pub latency_p50_ms: f32,
    pub latency_p99_ms: f32,
}

#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub kb: String,
    pub router: bool,
    pub fused: Metrics,
    pub bm25: Metrics,
    /// Recall@1 of the fused retriever per question kind (typo, slang, …).
    pub by_kind: Vec<(String, usize, f32)>,
    /// What other confidence thresholds would trade (fused), for choosing
    /// `[kb] threshold`.
    pub sweep: Vec<SweepRow>,
}

/// The fused retriever's figures at one confidence threshold.
#[derive(Debug, Clone, Serialize)]
pub struct SweepRow {
    pub threshold: f32,
    pub coverage: f32,
    pub accuracy: f32,
    pub abstained: f32,
    pub extract_correct: f32,
    pub extract_wrong: f32,
}

/// One question's outcome: what the metrics at any threshold derive from.
struct Outcome {
    confidence: f32,
    /// Answered at the knowledge base's own threshold.
    answerable: bool,
    in_scope: bool,
    right: bool,
    has_facts: bool,
    /// Whether the first passage's extract states every required fact
    /// (None: no facts required, or no passage found).
    extract_all: Option<bool>,
}

/// The answer figures when `answers` says which questions are answered.
fn figures(outcomes: &[Outcome], threshold: f32, answers: impl Fn(&Outcome) -> bool) -> SweepRow {
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f32 / b as f32 };
    let scoped: Vec<&Outcome> = outcomes.iter().filter(|o| o.in_scope).collect();
    let answered: Vec<&&Outcome> = scoped.iter().filter(|o| answers(o)).collect();
    let oos: Vec<&Outcome> = outcomes.iter().filter(|o| !o.in_scope).collect();
    let with_facts = scoped.iter().filter(|o| o.has_facts).count();
    let facts = |want: bool| {
        answered
            .iter()
            .filter(|o| o.extract_all == Some(want))
            .count()
    };
    SweepRow {
        threshold,
        coverage: ratio(answered.len(), scoped.len()),
        accuracy: ratio(answered.iter().filter(|o| o.right).count(), answered.len()),
        abstained: ratio(oos.iter().filter(|o| !answers(o)).count(), oos.len()),
        extract_correct: ratio(facts(true), with_facts),
        extract_wrong: ratio(facts(false), with_facts),
    }
}

fn percentile(sorted: &[f32], q: f32) -> f32 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f32 * q).round() as usize]
}

fn measure(
    kb: &Kb,
    questions: &[Labelled],
    search: impl Fn(&Kb, &Query<'_>) -> Result<Retrieval>,
    by_kind: Option<&mut Vec<(String, usize, f32)>>,
    outcomes: &mut Vec<Outcome>,
) -> Result<Metrics> {
    let mut m = Metrics::default();
    let mut times = Vec::with_capacity(questions.len());
    let (mut r1, mut r3, mut r5, mut rr) = (0f32, 0f32, 0f32, 0f32);
    let mut kinds: std::collections::BTreeMap<String, (usize, usize)> = Default::default();
    for q in questions {
        let query = Query {
            text: &q.text,
            previous: q.previous.as_deref(),
        };
        let t = Instant::now();
        let r = search(kb, &query)?;
        times.push(t.elapsed().as_secs_f32() * 1e3);
        if q.passages.is_empty() {
            m.out_of_scope += 1;
            outcomes.push(Outcome {
                confidence: r.confidence,
                answerable: r.answerable,
                in_scope: false,
                right: false,
                has_facts: false,
                extract_all: None,
            });
            continue;
        }
        m.questions += 1;
        let rank = r.hits.iter().position(|h| q.passages.contains(&h.passage));
        let hit = |k: usize| f32::from(u8::from(rank.is_some_and(|p| p < k)));
        r1 += hit(1);
        r3 += hit(3);
        r5 += hit(5);
        rr += rank.map_or(0.0, |p| 1.0 / (p + 1) as f32);
        let mut extract_all = None;
        if !q.facts.is_empty() {
            m.with_facts += 1;
            // The passages a reply is given with `[kb] passages` at its default.
            let served = r.served(crate::config::KbSection::DEFAULT_PASSAGES);
            if let Some((answer, _)) = kb.answer(&served, &q.text, &r.parts) {
                let answer = crate::ground::normalize(&answer);
                let all = q
                    .facts
                    .iter()
                    .all(|f| answer.contains(&crate::ground::normalize(f)));
                extract_all = Some(all);
            }
        }
        outcomes.push(Outcome {
            confidence: r.confidence,
            answerable: r.answerable,
            in_scope: true,
            right: rank == Some(0),
            has_facts: !q.facts.is_empty(),
            extract_all,
        });
        let e = kinds.entry(q.kind.clone()).or_default();
        e.0 += 1;
        e.1 += usize::from(rank == Some(0));
    }
    let n = m.questions.max(1) as f32;
    m.recall_at_1 = r1 / n;
    m.recall_at_3 = r3 / n;
    m.recall_at_5 = r5 / n;
    m.mrr = rr / n;
    let at = figures(outcomes, 0.0, |o| o.answerable);
    m.coverage = at.coverage;
    m.accuracy = at.accuracy;
    m.abstained = at.abstained;
    m.extract_correct = at.extract_correct;
    m.extract_wrong = at.extract_wrong;
    times.sort_by(f32::total_cmp);
    m.latency_p50_ms = percentile(&times, 0.5);
    m.latency_p99_ms = percentile(&times, 0.99);
    if let Some(out) = by_kind {
        *out = kinds
            .into_iter()
            .filter(|(k, _)| !k.is_empty())
            .map(|(k, (n, r))| (k, n, r as f32 / n as f32))
            .collect();
    }
    Ok(m)
}

/// Evaluates `kb` (fused) and BM25 alone on `questions`.
pub fn evaluate(kb: &Kb, questions: &[Labelled]) -> Result<EvalReport> {
    let mut by_kind = Vec::new();
    let mut outcomes = Vec::new();
    let fused = measure(
        kb,
        questions,
        |kb, q| kb.search(q, 5),
        Some(&mut by_kind),
        &mut outcomes,
    )?;
    let bm25 = measure(
        kb,
        questions,
        |kb, q| kb.search_bm25(q, 5),
        None,
        &mut Vec::new(),
    )?;
    let sweep = (1..=19)
        .map(|i| i as f32 * 0.05)
        .map(|t| figures(&outcomes, t, |o| o.confidence >= t))
        .collect();
    Ok(EvalReport {
        kb: kb.dir().display().to_string(),
        router: kb.has_router(),
        fused,
        bm25,
        by_kind,
        sweep,
    })
}
