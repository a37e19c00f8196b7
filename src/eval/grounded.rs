//! `chatforge eval --questions`: labelled customer questions through the
//! serving pipeline (moderation, retrieval, generation, the fact guard) as
//! a platform user sends them, scored on what the user would read: does the
//! reply state every fact the question needs, does every fact it states
//! rest on the passages it was given, and how was it made (generated,
//! extracted from a passage, or declined).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chatforge_channel::{ChatEvent, ChatHandler, ChatRequest, IncomingMessage, Platform};
use serde::Serialize;

use super::{Error, Result};
use crate::config::Config;
use crate::ground;
use crate::kb::{Kb, Labelled};
use crate::pipeline::{Pipeline, ReplyTrace, TextKey, Texts, detect_lang};
use crate::store::ReplyKind;

/// One answered question.
#[derive(Debug, Clone, Serialize)]
pub struct Answer {
    pub id: String,
    pub question: String,
    pub reply: String,
    /// What the model wrote before the fact guard, when the guard sent
    /// something else (an extract or the handoff offer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub draft: Option<String>,
    /// `generated`, `extracted`, `abstained`, or `ungrounded` (no knowledge
    /// base).
    pub kind: String,
    /// Out-of-scope question (no passage answers it).
    pub out_of_scope: bool,
    /// Every required fact is in the reply (`None`: the question lists none).
    pub states_facts: Option<bool>,
    /// Declined: the handoff offer or the abstain reply.
    pub declined: bool,
    /// The checkable facts the reply states.
    pub facts: Vec<String>,
    /// Those its passages and the user's messages do not state.
    pub unsupported: Vec<String>,
    /// Drafts the model wrote for the reply (`[pipeline] drafts`; 0: the
    /// reply was made without the model).
    pub drafts: usize,
}

/// The scores of one bundle (with or without retrieval) on a question set.
#[derive(Debug, Clone, Serialize)]
pub struct GroundedScores {
    pub model_version: String,
    /// Retrieval and the fact guard were on.
    pub retrieval: bool,
    /// In-scope questions that list required facts.
    pub with_facts: usize,
    /// Share of those whose reply states every required fact.
    pub fact_accuracy: f64,
    /// Of those: declined (handed off) rather than answered.
    pub handed_off: usize,
    /// Of those: answered without stating every required fact.
    pub wrong: usize,
    /// Facts stated across all replies, and the share the reply's passages
    /// or the user's messages support.
    pub reply_facts: usize,
    pub unsupported_facts: usize,
    pub groundedness: f64,
    /// Replies by how they were made.
    pub kinds: BTreeMap<String, usize>,
    /// Share of replies that are the model's own words passed by the guard
    /// (generated) among those the knowledge base grounded.
    pub own_words: f64,
    /// Generated replies whose first draft the guard passed (the rest
    /// passed a later one).
    pub generated_first_draft: usize,
    /// Drafts per reply the model wrote.
    pub drafts_per_reply: f64,
    pub out_of_scope: usize,
    /// Share of out-of-scope questions declined or handed off.
    pub out_of_scope_declined: f64,
    /// Per reply: the whole turn, and retrieval plus the guard within it.
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub grounding_p50_ms: f64,
    pub grounding_p99_ms: f64,
    pub answers: Vec<Answer>,
}

/// Asks every question of `questions` through the pipeline of `cfg` (its
/// store redirected into a temporary folder) and scores the replies
/// against the passages of `kb`. With `retrieval = false` the pipeline
/// runs without the knowledge base: the replies are the model's alone,
/// checked against the user's messages only.
pub async fn evaluate_grounded(
    cfg: &Config,
    kb: &Kb,
    questions: &[Labelled],
    retrieval: bool,
) -> Result<GroundedScores> {
    let tmp = tempfile::tempdir().map_err(|e| Error::Input(format!("temporary folder: {e}")))?;
    let mut cfg = crate::bench::scratch_config(cfg, tmp.path());
    if !retrieval {
        cfg.kb = None;
    }
    let texts = Texts::new(&cfg.pipeline.texts).map_err(Error::Input)?;
    let services = crate::serve::start_services(&cfg)
        .await
        .map_err(|e| Error::Input(format!("starting the pipeline: {e}")))?;
    let pipeline = Arc::clone(&services.pipeline);
    pipeline.keep_traces();
    let model_version = pipeline.engine().current().model_version().to_string();
    let names = ground::names(&kb.passages);
    let by_id: BTreeMap<&str, &crate::kb::Passage> =
        kb.passages.iter().map(|p| (p.id.as_str(), p)).collect();
    let mut answers = Vec::with_capacity(questions.len());
    let mut traces: Vec<ReplyTrace> = Vec::with_capacity(questions.len());
    let mut latency = Vec::with_capacity(questions.len());
    let progress = indicatif::ProgressBar::new(questions.len() as u64);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{bar:30} {pos}/{len} questions [{elapsed} < {eta}]",
    ) {
        progress.set_style(style);
    }
    for (i, q) in questions.iter().enumerate() {
        let key = format!("eval-{i}");
        let mut user_turns: Vec<&str> = Vec::new();
        if let Some(previous) = &q.previous {
            ask(&pipeline, &key, previous).await;
            user_turns.push(previous);
        }
        pipeline.take_traces();
        let at = Instant::now();
        let (reply, handoff) = ask(&pipeline, &key, &q.text).await;
        latency.push(at.elapsed());
        user_turns.push(&q.text);
        let trace = pipeline.take_traces().pop();
        let grounding = trace.as_ref().and_then(|t| t.grounding.clone());
        let kind = match grounding.as_ref().map(|g| g.kind) {
            Some(ReplyKind::Generated) => "generated",
            Some(ReplyKind::Extracted) => "extracted",
            Some(ReplyKind::Abstained) => "abstained",
            None if trace.as_ref().is_some_and(|t| t.pleasantry) => "pleasantry",
            None => "ungrounded",
        };
        // The support the guard had: the passages given and the user's turns.
        let passages = grounding
            .iter()
            .flat_map(|g| &g.passages)
            .filter_map(|id| by_id.get(id.as_str()))
            .map(|p| p.context_text());
        let support = ground::support_texts(
            passages
                .collect::<Vec<_>>()
                .iter()
                .map(String::as_str)
                .chain(user_turns.iter().copied()),
        );
        let facts = ground::facts(&reply, &names);
        let unsupported = facts
            .iter()
            .filter(|f| !ground::supported(f, &support))
            .map(|f| f.text.clone())
            .collect();
        let abstain = texts.get(detect_lang(&q.text), TextKey::Abstain);
        // A pleasantry's fixed reply ("You're welcome! …") answers nothing
        // from the knowledge base, as declining does.
        let declined = handoff
            || kind == "abstained"
            || kind == "pleasantry"
            || ground::normalize(&reply).contains(&ground::normalize(abstain));
        let said = ground::normalize(&reply);
        let states_facts = (!q.facts.is_empty())
            .then(|| q.facts.iter().all(|f| said.contains(&ground::normalize(f))));
        let draft = trace
            .as_ref()
            .and_then(|t| t.draft.clone())
            .filter(|_| kind != "generated" && kind != "ungrounded");
        answers.push(Answer {
            id: q.id.clone(),
            question: q.text.clone(),
            reply,
            draft,
            kind: kind.to_string(),
            out_of_scope: q.passages.is_empty(),
            states_facts,
            declined,
            facts: facts.into_iter().map(|f| f.text).collect(),
            unsupported,
            drafts: trace.as_ref().map_or(0, |t| t.drafts),
        });
        traces.extend(trace);
        progress.inc(1);
    }
    progress.finish_and_clear();
    services
        .writer
        .shutdown()
        .await
        .map_err(|e| Error::Input(format!("closing the evaluation store: {e}")))?;
    Ok(score(model_version, retrieval, answers, &traces, &latency))
}

/// The final reply to `text` (or the handoff notice), and whether the
/// conversation was handed to a person.
async fn ask(pipeline: &Arc<Pipeline>, key: &str, text: &str) -> (String, bool) {
    let request = ChatRequest::Message(IncomingMessage {
        platform: Platform::Terminal,
        conversation_key: key.to_string(),
        user_key: key.to_string(),
        text: text.to_string(),
        reply_to: None,
        is_direct: true,
    });
    let (sink, mut events) = chatforge_channel::event_channel();
    pipeline.handle(request, sink).await;
    let (mut reply, mut handoff) = (String::new(), false);
    while let Some(e) = events.next().await {
        match e {
            ChatEvent::Reply { text, .. } => reply = text,
            ChatEvent::Handoff { notice } => {
                handoff = true;
                reply = notice;
            }
            ChatEvent::Error { notice } if reply.is_empty() => reply = notice,
            _ => {}
        }
    }
    (reply, handoff)
}

fn score(
    model_version: String,
    retrieval: bool,
    answers: Vec<Answer>,
    traces: &[ReplyTrace],
    latency: &[Duration],
) -> GroundedScores {
    let share = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let in_scope: Vec<&Answer> = answers.iter().filter(|a| !a.out_of_scope).collect();
    let graded: Vec<&&Answer> = in_scope
        .iter()
        .filter(|a| a.states_facts.is_some())
        .collect();
    let correct = graded
        .iter()
        .filter(|a| a.states_facts == Some(true))
        .count();
    let handed_off = graded
        .iter()
        .filter(|a| a.states_facts == Some(false) && a.declined)
        .count();
    let reply_facts: usize = answers.iter().map(|a| a.facts.len()).sum();
    let unsupported_facts: usize = answers.iter().map(|a| a.unsupported.len()).sum();
    let mut kinds = BTreeMap::new();
    for a in &answers {
        *kinds.entry(a.kind.clone()).or_insert(0) += 1;
    }
    let grounded_replies: usize = ["generated", "extracted", "abstained"]
        .iter()
        .map(|k| kinds.get(*k).copied().unwrap_or(0))
        .sum();
    let oos: Vec<&Answer> = answers.iter().filter(|a| a.out_of_scope).collect();
    let drafted: Vec<usize> = answers
        .iter()
        .map(|a| a.drafts)
        .filter(|&d| d > 0)
        .collect();
    let ms = |d: &Duration| d.as_secs_f64() * 1e3;
    let sorted = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v
    };
    let latency = sorted(latency.iter().map(ms).collect());
    let grounding = sorted(traces.iter().map(|t| ms(&t.grounding_time)).collect());
    GroundedScores {
        model_version,
        retrieval,
        with_facts: graded.len(),
        fact_accuracy: share(correct, graded.len()),
        handed_off,
        wrong: graded.len() - correct - handed_off,
        reply_facts,
        unsupported_facts,
        groundedness: if reply_facts == 0 {
            1.0
        } else {
            1.0 - share(unsupported_facts, reply_facts)
        },
        own_words: share(
            kinds.get("generated").copied().unwrap_or(0),
            grounded_replies,
        ),
        kinds,
        generated_first_draft: answers
            .iter()
            .filter(|a| a.kind == "generated" && a.drafts == 1)
            .count(),
        drafts_per_reply: if drafted.is_empty() {
            0.0
        } else {
            drafted.iter().sum::<usize>() as f64 / drafted.len() as f64
        },
        out_of_scope: oos.len(),
        out_of_scope_declined: share(oos.iter().filter(|a| a.declined).count(), oos.len()),
        latency_p50_ms: crate::bench::percentile(&latency, 0.5),
        latency_p99_ms: crate::bench::percentile(&latency, 0.99),
        grounding_p50_ms: crate::bench::percentile(&grounding, 0.5),
        grounding_p99_ms: crate::bench::percentile(&grounding, 0.99),
        answers,
    }
}
