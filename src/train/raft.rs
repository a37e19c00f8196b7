//! Fine-tuning examples with retrieved context (RAFT: Zhang et al. 2024,
//! "Adapt language models to domain-specific RAG"). Each assistant turn
//! becomes one example whose context is what the knowledge base retrieves
//! for the customer's message (with the turn before it, as `serve` asks).
//! In most examples the turn's gold passages come first, before
//! distractors, and the target is the reference reply with its facts
//! replaced by the gold passages' own sentences (as the extractive answer
//! quotes them, framed by the reply's greeting and closing question); the
//! first entry of the context is that answer under its passage's title, as
//! `serve` puts a confident retrieval's answer first
//! ([`crate::ground::answer_context`]). In the rest only distractors are
//! there and the target is the abstain text. The model learns to copy
//! facts from its context, and to say it does not know when they are
//! missing. Quoting, not the reference's paraphrase: the demo model wrote
//! word salad around the facts when it had to paraphrase (fine-tuned
//! validation loss 0.76), and copied runs of the passage when it had to quote
//! (0.33); replies that passed the guard in its own words went from 3 to 10
//! of the 269 customer-words and out-of-scope questions.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::{Error, Result};
use crate::kb::{Kb, Query, resolve};
use crate::pipeline::{TextKey, Texts, detect_lang};
use crate::text::{Dialog, Message, Role};

/// How the examples are drawn.
#[derive(Debug, Clone)]
pub struct RaftSettings {
    /// Share of grounded turns whose context holds their gold passages.
    pub gold_share: f64,
    /// Passages in each context (as `[kb] passages` serves them).
    pub passages: usize,
    /// Chance that an example loses each of its control tags (topic,
    /// style). Served replies usually come without tags (only `[pipeline]
    /// topic`/`style` set them): a model that always saw them wrote fluent
    /// answers with its tags and word salad without.
    pub tag_dropout: f64,
    pub seed: u64,
    /// Their abstain text is the reply when the context lacks the answer
    /// (in the customer's language).
    pub texts: Texts,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RaftReport {
    /// Examples written (one per assistant turn).
    pub examples: usize,
    /// Turns whose context holds their gold passages.
    pub with_gold: usize,
    /// Turns given distractors only, taught to abstain.
    pub distractor_only: usize,
    /// Turns with no recorded passages (greetings, thanks): context as
    /// retrieved, reply unchanged.
    pub ungrounded: usize,
    /// Recorded passages no passage of the knowledge base matches.
    pub unknown_passages: usize,
    /// Turns whose gold passage retrieval ranked first.
    pub retrieved_gold_first: usize,
    /// Control tags left out of examples (see `tag_dropout`).
    pub tags_dropped: usize,
}

impl RaftSettings {
    /// The default `gold_share`.
    pub const GOLD_SHARE: f64 = 0.8;
    /// The default `tag_dropout`: half the examples learn each tag, the
    /// other half to answer without it.
    pub const TAG_DROPOUT: f64 = 0.5;
}

/// The examples for `dialogs`: one dialog per assistant turn, ending with
/// it, its `context` set (encode them with `encode_dialog_last`).
pub fn raft_examples(
    kb: &Kb,
    dialogs: &[Dialog],
    s: &RaftSettings,
) -> Result<(Vec<Dialog>, RaftReport)> {
    if s.passages == 0
        || !(0.0..=1.0).contains(&s.gold_share)
        || !(0.0..=1.0).contains(&s.tag_dropout)
    {
        return Err(Error::Config(format!(
            "RAFT needs at least one passage, and a gold share and tag dropout in [0, 1] (got {}, {} and {})",
            s.passages, s.gold_share, s.tag_dropout
        )));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(s.seed);
    // Its own stream: the tag dropout leaves the contexts as they were.
    let mut tag_rng = ChaCha8Rng::seed_from_u64(s.seed ^ 0x7461_6773);
    let mut out = Vec::new();
    let mut report = RaftReport::default();
    for d in dialogs {
        let mut turn = 0;
        for (i, m) in d.messages.iter().enumerate() {
            if m.role != Role::Assistant {
                continue;
            }
            let gold_labels = d.passages.get(turn).cloned().unwrap_or_default();
            turn += 1;
            let mut users = d.messages[..i]
                .iter()
                .rev()
                .filter(|m| m.role == Role::User);
            let Some(question) = users.next() else {
                continue;
            };
            let previous = users.next().map(|m| m.content.as_str());
            let hits = kb
                .search(
                    &Query {
                        text: &question.content,
                        previous,
                    },
                    s.passages + gold_labels.len() + 1,
                )
                .map_err(|e| Error::Data(format!("retrieving for fine-tuning: {e}")))?;
            let retrieved: Vec<usize> = hits.hits.iter().map(|h| h.passage).collect();
            let mut gold: Vec<usize> = Vec::new();
            for label in &gold_labels {
                let found = resolve(&kb.passages, label);
                if found.is_empty() {
                    report.unknown_passages += 1;
                }
                // A split passage answers with all its parts.
                gold.extend(
                    found
                        .into_iter()
                        .filter(|p| !gold.contains(p))
                        .collect::<Vec<_>>(),
                );
            }
            let mut distractors: Vec<usize> = retrieved
                .iter()
                .copied()
                .filter(|p| !gold.contains(p))
                .collect();
            // Retrieval may find little besides the gold passage (a small
            // knowledge base, a precise question): random passages fill in.
            let others = kb.passages.len().saturating_sub(gold.len());
            while distractors.len() < s.passages.min(others) {
                let p = rng.random_range(0..kb.passages.len());
                if !gold.contains(&p) && !distractors.contains(&p) {
                    distractors.push(p);
                }
            }
            let mut reply = m.content.clone();
            let mut answer: Option<String> = None;
            let context: Vec<usize> = if gold.is_empty() {
                report.ungrounded += 1;
                retrieved.iter().copied().take(s.passages).collect()
            } else {
                if retrieved.first().is_some_and(|p| gold.contains(p)) {
                    report.retrieved_gold_first += 1;
                }
                if rng.random_bool(s.gold_share) {
                    report.with_gold += 1;
                    // The gold passages, then the distractors: as `serve`
                    // gives the best first.
                    let mut c: Vec<usize> = gold.iter().copied().take(s.passages).collect();
                    let room = s.passages.saturating_sub(c.len());
                    let mut more: Vec<usize> = distractors.iter().copied().take(room).collect();
                    more.shuffle(&mut rng);
                    c.extend(more);
                    if let Some((quote, used)) = kb.answer(&gold, &question.content, &gold) {
                        reply = quoted(&m.content, &quote);
                        // As served: the answer first, in place of the
                        // passage it quotes.
                        answer = Some(crate::ground::answer_context(&kb.passages, &used, &quote));
                    }
                    c
                } else {
                    report.distractor_only += 1;
                    reply = s
                        .texts
                        .get(detect_lang(&question.content), TextKey::Abstain)
                        .to_string();
                    distractors.iter().copied().take(s.passages).collect()
                }
            };
            let mut messages: Vec<Message> = d.messages[..i].to_vec();
            messages.push(Message {
                role: Role::Assistant,
                content: reply,
            });
            let mut tag = |t: &Option<String>| {
                let drop = t.is_some() && tag_rng.random_bool(s.tag_dropout);
                report.tags_dropped += usize::from(drop);
                t.clone().filter(|_| !drop)
            };
            let (topic, style) = (tag(&d.topic), tag(&d.style));
            out.push(Dialog {
                messages,
                topic,
                style,
                context: context
                    .iter()
                    .enumerate()
                    .map(|(i, &p)| match (&answer, i) {
                        (Some(a), 0) => a.clone(),
                        _ => kb.passages[p].context_text(),
                    })
                    .collect(),
                passages: Vec::new(),
            });
            report.examples += 1;
        }
    }
    if out.is_empty() {
        return Err(Error::Data(
            "no assistant turn with a customer message before it to fine-tune on".into(),
        ));
    }
    Ok((out, report))
}

/// `reference` with its facts replaced by `quote`: the sentences before its
/// first fact that greet or thank (short, fact-free) and the fact-free
/// questions after its last fact ("Anything else?") frame the passage's
/// own sentences.
fn quoted(reference: &str, quote: &str) -> String {
    let sentences = crate::kb::sentences_of(reference);
    let plain = |t: &str| crate::ground::facts(t, &[]).is_empty();
    let opening: Vec<&str> = sentences
        .iter()
        .map(|t| t.trim())
        .take_while(|t| plain(t) && !t.ends_with('?') && t.split_whitespace().count() <= 6)
        .collect();
    let rest = &sentences[opening.len()..];
    let closing = rest
        .iter()
        .rev()
        .map(|t| t.trim())
        .take_while(|t| plain(t) && t.ends_with('?'))
        .collect::<Vec<_>>();
    let mut parts: Vec<&str> = opening;
    parts.push(quote.trim());
    parts.extend(closing.into_iter().rev());
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::TextOverrides;

    const DOCS: &str = "# Help\n\n## Returns\n\n**What is your return policy?**\nReturn unworn items within 30 days.\n\n**Who pays return shipping?**\nReturn shipping is free with the prepaid label.\n\n## Shipping\n\n**How much is express delivery?**\nExpress delivery costs $14.95.\n\n**Do you ship abroad?**\nWe ship to the EU, the UK and Canada.\n";

    fn kb(dir: &std::path::Path) -> Kb {
        let docs = dir.join("help.md");
        std::fs::write(&docs, DOCS).unwrap();
        crate::kb::build(&crate::kb::BuildOptions {
            docs: vec![docs],
            out: dir.join("kb"),
            force: false,
            split: Default::default(),
        })
        .unwrap();
        Kb::open(&dir.join("kb"), &crate::runtime::RuntimeConfig::default()).unwrap()
    }

    fn dialogs() -> Vec<Dialog> {
        let line = |text: &str| serde_json::from_str::<Dialog>(text).unwrap();
        vec![
            line(
                r#"{"messages":[{"role":"user","content":"how long can I return stuff"},{"role":"assistant","content":"Within 30 days, unworn."},{"role":"user","content":"thanks!"},{"role":"assistant","content":"You're welcome."}],"passages":[["Returns › What is your return policy?"],[]]}"#,
            ),
            line(
                r#"{"messages":[{"role":"user","content":"express delivery price?"},{"role":"assistant","content":"Express costs $14.95."}],"passages":[["Shipping › How much is express delivery?", "Shipping › No such entry"]]}"#,
            ),
        ]
    }

    #[test]
    fn test_quoted_keeps_the_greeting_and_closing_around_the_passage() {
        let reference = "Good day. Thank you. Refunds are sent within 3 business days, banks take 5-10 more. Is there anything further I may help you with?";
        let quote = "We process refunds within 3 business days after the return arrives.";
        assert_eq!(
            quoted(reference, quote),
            "Good day. Thank you. We process refunds within 3 business days after the return arrives. Is there anything further I may help you with?"
        );
        // A first sentence with a fact is no greeting.
        assert_eq!(quoted("Returns take 30 days.", quote), quote);
    }

    fn settings(gold_share: f64) -> RaftSettings {
        RaftSettings {
            gold_share,
            passages: 2,
            tag_dropout: 0.0,
            seed: 1,
            texts: Texts::new(&TextOverrides::default()).unwrap(),
        }
    }

    #[test]
    fn test_gold_passages_join_the_context_of_their_turn() {
        let dir = tempfile::tempdir().unwrap();
        let kb = kb(dir.path());
        let (ex, r) = raft_examples(&kb, &dialogs(), &settings(1.0)).unwrap();
        assert_eq!(r.examples, 3);
        assert_eq!((r.with_gold, r.distractor_only, r.ungrounded), (2, 0, 1));
        assert_eq!(r.unknown_passages, 1);
        // Each example ends with its own reply after its history: a grounded
        // one quotes its passage, the others are unchanged.
        assert_eq!(ex[0].messages.len(), 2);
        assert_eq!(
            ex[0].messages[1].content,
            "Return unworn items within 30 days."
        );
        assert_eq!(ex[1].messages.len(), 4);
        assert_eq!(ex[1].messages[3].content, "You're welcome.");
        // The answer comes first, under its passage's title, as served.
        assert_eq!(
            ex[0].context[0],
            "Returns › What is your return policy?\nReturn unworn items within 30 days.",
            "{:?}",
            ex[0].context
        );
        assert!(
            ex[2].context.iter().any(|c| c.contains("$14.95")),
            "{:?}",
            ex[2].context
        );
        assert_eq!(ex[2].messages[1].content, "Express delivery costs $14.95.");
        assert!(
            ex.iter()
                .all(|e| e.context.len() <= 2 && e.passages.is_empty())
        );
    }

    /// Tags are dropped per example at the configured rate, and only
    /// tags: the messages and context stay as they were.
    #[test]
    fn test_control_tags_are_dropped_at_the_configured_rate() {
        let dir = tempfile::tempdir().unwrap();
        let kb = kb(dir.path());
        let tagged: Vec<Dialog> = dialogs()
            .into_iter()
            .map(|mut d| {
                d.topic = Some("returns".into());
                d.style = Some("formal".into());
                d
            })
            .collect();
        let many: Vec<Dialog> = tagged.iter().cycle().take(200).cloned().collect();
        let mut s = settings(1.0);
        let (kept, r) = raft_examples(&kb, &many, &s).unwrap();
        assert_eq!(r.tags_dropped, 0);
        assert!(kept.iter().all(|e| e.topic.is_some() && e.style.is_some()));
        s.tag_dropout = 1.0;
        let (bare, r) = raft_examples(&kb, &many, &s).unwrap();
        assert_eq!(r.tags_dropped, 2 * bare.len());
        assert!(bare.iter().all(|e| e.topic.is_none() && e.style.is_none()));
        for (a, b) in kept.iter().zip(&bare) {
            assert_eq!((&a.messages, &a.context), (&b.messages, &b.context));
        }
        s.tag_dropout = 0.5;
        let (half, r) = raft_examples(&kb, &many, &s).unwrap();
        let share = r.tags_dropped as f64 / (2 * half.len()) as f64;
        assert!((0.4..0.6).contains(&share), "{share}");
        s.tag_dropout = 1.5;
        assert!(raft_examples(&kb, &many, &s).is_err());
    }

    #[test]
    fn test_distractor_only_examples_learn_to_abstain() {
        let dir = tempfile::tempdir().unwrap();
        let kb = kb(dir.path());
        let s = settings(0.0);
        let (ex, r) = raft_examples(&kb, &dialogs(), &s).unwrap();
        assert_eq!((r.with_gold, r.distractor_only), (0, 2));
        let abstain = s.texts.get("en", TextKey::Abstain);
        for (e, fact) in [(&ex[0], "within 30 days"), (&ex[2], "$14.95")] {
            assert_eq!(e.messages.last().unwrap().content, abstain);
            assert_eq!(e.context.len(), 2);
            assert!(
                e.context.iter().all(|c| !c.contains(fact)),
                "{:?}",
                e.context
            );
        }
        assert!(raft_examples(&kb, &dialogs(), &settings(1.5)).is_err());
    }
}
