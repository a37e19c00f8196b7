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
}

impl Evidence {
    /// The context passages' texts and the user's messages so far.
    pub fn new<'a>(g: &'a Grounded, user_turns: impl IntoIterator<Item = &'a str>) -> Self {
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
        Self {
            support: ground::support_texts(passages.chain(user_turns)),
            names,
            needs_fact,
        }
    }

    /// The answer needs a fact and `text` states none yet: a streamed
    /// reply is held back until it does (or the guard replaces it).
    pub fn awaits_fact(&self, text: &str) -> bool {
        self.needs_fact && ground::facts(text, &self.names).is_empty()
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
    let evasive = facts.is_empty() && evidence.needs_fact;
    if missing.is_empty() && !evasive {
        // Cite the first passage that states one of the reply's facts.
        let cite = g.passages.iter().zip(&g.context).find_map(|(&p, text)| {
            let s = ground::support_texts([text.as_str()]);
            facts.iter().any(|f| ground::supported(f, &s)).then_some(p)
        });
        return Decision::Generated { cite };
    }
    if evasive {
        tracing::info!("reply states none of the passage's facts; its answer goes instead");
    } else {
        // A reply can echo the customer's card number or address: the log
        // shows the facts' kinds of personal data, never their values.
        let redactor = crate::text::Redactor::new();
        tracing::info!(missing = ?missing.iter().map(|f| redactor.redact(&f.text)).collect::<Vec<_>>(), "reply states facts the passages do not; not sent");
    }
    passage_answer(g, question).unwrap_or(Decision::Abstained)
}

/// The first passage's best sentences for `question`, when retrieval was
/// confident: what goes instead of a reply that cannot be sent.
pub fn passage_answer(g: &Grounded, question: &str) -> Option<Decision> {
    match (&g.loaded, g.passages.first()) {
        (Some(l), Some(&top)) if g.answerable => Some(Decision::Extracted {
            text: ground::extract(&l.kb.passages[top], question, 2),
            passage: top,
        }),
        _ => None,
    }
}
