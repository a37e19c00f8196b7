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
    /// A confident answer whose passage states facts (a price, a window, a
    /// menu path) must state some: a reply with none did not answer (the
    /// quickstart's model wrote fact-free sentences for 19% of customer
    /// questions).
    needs_fact: bool,
    /// The abstain text without its closing punctuation, lower-cased, when
    /// retrieval was confident: the model learnt to say it word for word
    /// (RAFT) and does so for questions the passage answers (12 of the 221
    /// customer-words questions), but the calibrated retrieval is the
    /// better judge of that. The whole text, not a clause of it: "Sorry"
    /// may open a good answer.
    decline: Option<String>,
}

/// Lower-cased, with typographic apostrophes made plain.
fn fold(text: &str) -> String {
    text.to_lowercase().replace('\u{2019}', "'")
}

impl Evidence {
    /// The context passages' texts and the user's messages so far;
    /// `abstain` is the abstain text in the customer's language.
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
        let passages = g.context.iter().map(String::as_str);
        let needs_fact = g.answerable
            && !g.smalltalk
            && g.context
                .first()
                .is_some_and(|c| !ground::facts(c, &names).is_empty());
        let abstain = abstain.trim().trim_end_matches(['.', '!', '。', '！']);
        Self {
            support: ground::support_texts(passages.chain(user_turns)),
            names,
            needs_fact,
            decline: (g.answerable && !g.smalltalk && !abstain.is_empty()).then(|| fold(abstain)),
        }
    }

    /// A streamed reply is held back while it states none of the facts the
    /// answer needs, or while it declines a question retrieval is
    /// confident about (the guard replaces either).
    pub fn holds_back(&self, text: &str) -> bool {
        self.needs_fact && ground::facts(text, &self.names).is_empty() || self.declines(text)
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

/// Decides about `reply` to `question`.
pub fn decide(g: &Grounded, evidence: &Evidence, reply: &str, question: &str) -> Decision {
    let facts = ground::facts(reply, &evidence.names);
    let missing: Vec<&ground::Fact> = facts
        .iter()
        .filter(|f| !ground::supported(f, &evidence.support))
        .collect();
    let evasive = facts.is_empty() && evidence.needs_fact || evidence.declines(reply);
    if missing.is_empty() && !evasive {
        // Cite the first passage that states one of the reply's facts.
        let cite = g.passages.iter().zip(&g.context).find_map(|(&p, text)| {
            let s = ground::support_texts([text.as_str()]);
            facts.iter().any(|f| ground::supported(f, &s)).then_some(p)
        });
        return Decision::Generated { cite };
    }
    if evasive {
        tracing::info!(
            "reply declines or states none of the passage's facts; its answer goes instead"
        );
    } else {
        // A reply can echo the customer's card number or address: the log
        // shows the facts' kinds of personal data, never their values.
        let redactor = crate::text::Redactor::new();
        tracing::info!(missing = ?missing.iter().map(|f| redactor.redact(&f.text)).collect::<Vec<_>>(), "reply states facts the passages do not; not sent");
    }
    passage_answer(g, question).unwrap_or(Decision::Abstained)
}

/// The passages' best sentences for `question` ([`ground::answer`]), when
/// retrieval was confident: what goes instead of a reply that cannot be
/// sent.
pub fn passage_answer(g: &Grounded, question: &str) -> Option<Decision> {
    let l = g.loaded.as_ref().filter(|_| g.answerable)?;
    let (text, used) = ground::answer(&l.kb.passages, &g.passages, question, 2)?;
    Some(Decision::Extracted {
        text,
        passage: used[0],
    })
}
