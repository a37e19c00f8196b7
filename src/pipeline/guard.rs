//! The fact guard, after moderation: every checkable fact of a reply
//! (prices, durations, e-mail addresses, products, menu paths …, see
//! [`crate::ground`]) must be stated by the passages the model was given or
//! by the user in this conversation. A reply that claims anything else is
//! never sent: the passage's best sentences go instead, or, when retrieval
//! was not confident, the handoff offer.

use super::retrieve::Grounded;
use crate::ground;
use crate::store::ReplyKind;

/// What the facts of a reply are checked against.
pub struct Evidence {
    names: Vec<String>,
    support: Vec<String>,
    /// When retrieval was confident: what the passage answer (the
    /// sentences [`passage_answer`] would send instead) says. The model's
    /// own reply goes only if it says all of it, and never when that
    /// answer has nothing to check it by. A reply whose facts were all in
    /// the passages but which left out the one asked for was the
    /// commonest wrong answer: of the quickstart model's 24 such replies
    /// to customer questions, 1 stated the facts the question needed.
    needs: Option<Needs>,
    /// The abstain text without its closing punctuation, lower-cased, when
    /// retrieval was confident: the model learnt to say it word for word
    /// (RAFT) and does so for questions the passage answers (12 of the 221
    /// customer-words questions), but the calibrated retrieval is the
    /// better judge of that. The whole text, not a clause of it: "Sorry"
    /// may open a good answer.
    decline: Option<String>,
    /// The passages' and the user's words ([`ground::words`]), when
    /// retrieval was confident: a reply in the model's words must take
    /// all but [`FRAMING_WORDS`] of its words from them.
    sources: Option<Vec<Vec<String>>>,
}

/// Words of a reply to a confident retrieval that need not be quoted from
/// the passages or the customer: a greeting and a closing question ("Hi
/// there! … Anything else?"). A small model's paraphrase garbles (in the
/// quickstart model's 75 guard-passed replies, the 10 with 9 or more such
/// words were word salad: "Charged at inconvenience. I'm welcome. Lake we
/// get a lovely."; those with 7 or fewer had a greeting, now and then one
/// misspelt word).
pub const FRAMING_WORDS: usize = 8;

/// Terms of a passage answer with facts that a reply may leave out: one
/// word said otherwise ("takes 2-3 business days" for "arrives in 2-3
/// business days"). On the quickstart model's replies to the 221
/// customer-words questions, holding them to the facts alone / every term
/// but one / every term gave fact accuracy 0.837 / 0.855 / 0.860 and 71 /
/// 59 / 56 replies in the model's words; every term but one turned 4 of
/// the 5 wrong replies of word salad around the facts into the passage's
/// sentences (the fifth dropped one sentence, whose only term not said
/// elsewhere was "same").
const TERMS_LEFT_OUT: usize = 1;

/// What a reply to a question retrieval was confident about must state.
struct Needs {
    /// The passage answer's facts, normalized.
    facts: Vec<String>,
    /// The passage answer's index terms. An answer with no checkable facts
    /// ("Visa, Mastercard, PayPal …") is checked by them alone, and the
    /// reply must use every one; without them, the model's word-for-word
    /// copy of such an answer was never sent. An answer with facts is
    /// checked by them too, the reply leaving out at most
    /// [`TERMS_LEFT_OUT`]: a reply that kept the facts but dropped the
    /// words around them was sent ("Use which your bank releases within
    /// 3-5 business days", the authorization hold it explains left out;
    /// "Happy to 2 business days. Account > Preferences", without the
    /// unsubscribe link).
    terms: Vec<String>,
}

/// Lower-cased, with typographic apostrophes made plain.
fn fold(text: &str) -> String {
    text.to_lowercase().replace('\u{2019}', "'")
}

impl Evidence {
    /// The context passages' texts and the user's messages so far (the
    /// last is the question); `abstain` is the abstain text in the
    /// customer's language.
    pub fn new<'a>(
        g: &'a Grounded,
        user_turns: impl IntoIterator<Item = &'a str>,
        abstain: &str,
    ) -> Self {
        let names = g
            .loaded
            .as_ref()
            .map(|l| l.names.clone())
            .unwrap_or_default();
        // The context passages' texts, then what the user said.
        let texts: Vec<&str> = g
            .context
            .iter()
            .map(String::as_str)
            .chain(user_turns)
            .collect();
        // Without the knowledge base's passages (tests build evidence from
        // context text alone) the first passage is the answer.
        let needs = g.confident().then(|| {
            let answer = match &g.answer {
                Some((text, _)) => text.clone(),
                // Its first line is the passage's title, which a reply
                // need not repeat.
                None => g
                    .context
                    .first()
                    .map(|c| c.split_once('\n').map_or(c.as_str(), |(_, body)| body))
                    .unwrap_or_default()
                    .to_string(),
            };
            let facts: Vec<String> = ground::facts(&answer, &names)
                .iter()
                .map(|f| ground::normalize(&f.text))
                .filter(|f| !f.is_empty())
                .collect();
            Needs {
                facts,
                terms: crate::kb::analyze_terms(&answer),
            }
        });
        let abstain = abstain.trim().trim_end_matches(['.', '!', '。', '！']);
        let sources = needs
            .is_some()
            .then(|| texts.iter().copied().map(ground::words).collect());
        Self {
            sources,
            support: ground::support_texts(texts.iter().copied()),
            names,
            needs,
            decline: (g.confident() && !abstain.is_empty()).then(|| fold(abstain)),
        }
    }

    /// A streamed reply is held back while it has not stated every fact of
    /// the passage answer, or while it declines a question retrieval is
    /// confident about (the guard replaces either).
    pub fn holds_back(&self, text: &str) -> bool {
        self.falls_short(text) || self.declines(text) || self.garbled(text)
    }

    /// `text` has more than [`FRAMING_WORDS`] words it did not quote.
    fn garbled(&self, text: &str) -> bool {
        self.sources
            .as_ref()
            .is_some_and(|s| ground::uncovered_words(text, s) > FRAMING_WORDS)
    }

    /// `text` leaves out a fact or a term of the passage answer (or that
    /// answer has neither).
    fn falls_short(&self, text: &str) -> bool {
        let Some(Needs { facts, terms }) = &self.needs else {
            return false;
        };
        if facts.is_empty() && terms.is_empty() {
            return true;
        }
        // Checked on every streamed piece: the terms are analysed only once
        // the facts are all there.
        let said = ground::support_texts([text]);
        if !facts.iter().all(|f| ground::states_normalized(&said, f)) {
            return true;
        }
        let used = crate::kb::analyze_terms(text);
        let missing = terms.iter().filter(|t| !used.contains(t)).count();
        missing > if facts.is_empty() { 0 } else { TERMS_LEFT_OUT }
    }

    /// `text` declines although retrieval was confident.
    fn declines(&self, text: &str) -> bool {
        self.decline
            .as_ref()
            .is_some_and(|c| fold(text).contains(c.as_str()))
    }

    /// The facts of `text` the evidence does not state.
    pub fn unsupported(&self, text: &str) -> Vec<ground::Fact> {
        ground::unsupported(text, &self.names, &self.support)
    }
}

/// The guard's verdict on a reply.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Send it; cite `cite` (the passage whose facts it states, if any).
    Generated { cite: Option<usize> },
    /// Send these sentences of passage `passage` instead.
    Extracted { text: String, passage: usize },
    /// Send the handoff offer.
    Abstained,
}

impl Decision {
    pub fn kind(&self) -> ReplyKind {
        match self {
            Decision::Generated { .. } => ReplyKind::Generated,
            Decision::Extracted { .. } => ReplyKind::Extracted,
            Decision::Abstained => ReplyKind::Abstained,
        }
    }
}

/// Whether [`decide`] would send `reply` as written, without its log lines.
pub fn passes(evidence: &Evidence, reply: &str) -> bool {
    evidence.unsupported(reply).is_empty() && !evidence.holds_back(reply)
}

/// Decides about `reply`.
pub fn decide(g: &Grounded, evidence: &Evidence, reply: &str) -> Decision {
    let facts = ground::facts(reply, &evidence.names);
    let missing: Vec<&ground::Fact> = facts
        .iter()
        .filter(|f| !ground::supported(f, &evidence.support))
        .collect();
    let evasive = evidence.holds_back(reply);
    if missing.is_empty() && !evasive {
        // Cite the first passage that states one of the reply's facts.
        // A reply held to the passage answer without facts (a list of
        // payment methods) cites the passage that answer starts from.
        let cite = g
            .passages
            .iter()
            .zip(&g.context)
            .find_map(|(&p, text)| {
                let s = ground::support_texts([text.as_str()]);
                facts.iter().any(|f| ground::supported(f, &s)).then_some(p)
            })
            .or_else(|| {
                evidence
                    .needs
                    .as_ref()
                    .is_some_and(|n| n.facts.is_empty())
                    .then(|| g.passages.first().copied())
                    .flatten()
            });
        return Decision::Generated { cite };
    }
    if evasive {
        tracing::info!(
            "reply declines, leaves out a fact of the passage's answer, or is not in the passages' words; the answer goes instead"
        );
    } else {
        // A reply can echo the customer's card number or address: the log
        // shows the facts' kinds of personal data, never their values.
        let redactor = crate::text::Redactor::new();
        tracing::info!(missing = ?missing.iter().map(|f| redactor.redact(&f.text)).collect::<Vec<_>>(), "reply states facts the passages do not; not sent");
    }
    passage_answer(g).unwrap_or(Decision::Abstained)
}

/// The passages' best sentences for the message ([`Grounded::answer`]),
/// when retrieval was confident: what goes instead of a reply that cannot
/// be sent.
pub fn passage_answer(g: &Grounded) -> Option<Decision> {
    g.answer
        .as_ref()
        .map(|(text, passage)| Decision::Extracted {
            text: text.clone(),
            passage: *passage,
        })
}
