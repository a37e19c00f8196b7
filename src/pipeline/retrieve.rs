//! Stage 3 of a turn: the knowledge base's passages for the message (with
//! the user's turn before it, for follow-ups). Their texts become the
//! model's context and the fact guard's evidence. The knowledge base
//! reloads when its folder changes, like the model.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use crate::kb::{Kb, Query};
use crate::runtime::RuntimeConfig;

/// How the source of a grounded reply is shown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Cite {
    #[default]
    Off,
    /// "Source: Returns › What is your return policy?"
    Title,
    /// The title and, where `[kb] links` names the source's address, a link.
    Link,
}

/// An opened knowledge base with what the guard derives from it once.
pub struct Loaded {
    pub kb: Kb,
    /// Names the fact guard checks (products, options, channels).
    pub names: Vec<String>,
}

/// The knowledge base the pipeline answers from; replaced whole on reload.
pub struct Knowledge {
    current: RwLock<Arc<Loaded>>,
    runtime: RuntimeConfig,
    /// Passages put in the model's context at most.
    pub max_passages: usize,
    /// Source file → the address of its web page (for `cite = "link"`).
    pub links: std::collections::BTreeMap<String, String>,
}

fn load(dir: &Path, runtime: &RuntimeConfig) -> crate::kb::Result<Loaded> {
    let kb = Kb::open(dir, runtime)?;
    let names = crate::ground::names(&kb.passages);
    Ok(Loaded { kb, names })
}

impl Knowledge {
    pub fn open(
        dir: &Path,
        runtime: &RuntimeConfig,
        max_passages: usize,
        links: std::collections::BTreeMap<String, String>,
    ) -> crate::kb::Result<Self> {
        Ok(Self {
            current: RwLock::new(Arc::new(load(dir, runtime)?)),
            runtime: runtime.clone(),
            max_passages: max_passages.max(1),
            links,
        })
    }

    pub fn current(&self) -> Arc<Loaded> {
        Arc::clone(&self.current.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Opens the knowledge base in `dir` again; on error the old stays.
    pub fn reload(&self, dir: &Path) -> crate::kb::Result<()> {
        let fresh = load(dir, &self.runtime)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(fresh);
        Ok(())
    }

    pub fn dir(&self) -> PathBuf {
        self.current().kb.dir().to_path_buf()
    }
}

/// What retrieval gives a turn.
#[derive(Clone, Default)]
pub struct Grounded {
    /// The knowledge base answering (kept for the guard's names and the
    /// citations).
    pub loaded: Option<Arc<Loaded>>,
    /// Positions of the passages in the model's context, best first.
    pub passages: Vec<usize>,
    /// The context block's entries: each passage's title and text, the
    /// first one's text replaced by [`Self::answer`] when there is one.
    pub context: Vec<String>,
    pub confidence: f32,
    pub answerable: bool,
    /// The message has no content words ("thanks!", "hi"): the model may
    /// answer it without the knowledge base, and the guard still checks it.
    pub smalltalk: bool,
    /// When retrieval was confident: the passages' best sentences for the
    /// message ([`crate::ground::answer`]) and the passage they start from,
    /// found once for the model's context, the fact guard and the
    /// extractive fallback.
    pub answer: Option<(String, usize)>,
}

impl Grounded {
    /// Retrieval judged a question (not small talk) answered by the
    /// passages: the reply must say the passage answer, and must not
    /// decline.
    pub fn confident(&self) -> bool {
        self.answerable && !self.smalltalk
    }

    pub fn passage_ids(&self) -> Vec<String> {
        match &self.loaded {
            Some(l) => self
                .passages
                .iter()
                .map(|&p| l.kb.passages[p].id.clone())
                .collect(),
            None => Vec::new(),
        }
    }
}

pub fn retrieve(k: &Knowledge, text: &str, previous: Option<&str>) -> crate::kb::Result<Grounded> {
    let loaded = k.current();
    let r = loaded
        .kb
        .search(&Query { text, previous }, k.max_passages)?;
    let passages = r.served(k.max_passages);
    let smalltalk = crate::kb::analyze_terms(text).is_empty();
    let mut context: Vec<String> = passages
        .iter()
        .map(|&p| loaded.kb.passages[p].context_text())
        .collect();
    let all = &loaded.kb.passages;
    let answer = r
        .answerable
        .then(|| loaded.kb.answer(&passages, text, &r.parts))
        .flatten();
    // A confident retrieval's answer comes first, as fine-tuning put it
    // (`train::raft`); the whole passages follow.
    if let Some((text, used)) = answer.as_ref().filter(|_| !smalltalk)
        && let Some(first) = context.first_mut()
    {
        *first = crate::ground::answer_context(all, used, text);
    }
    Ok(Grounded {
        answer: answer.map(|(text, used)| (text, used[0])),
        smalltalk,
        confidence: r.confidence,
        answerable: r.answerable,
        passages,
        context,
        loaded: Some(loaded),
    })
}

/// The citation of `passage` (title path without the document's title; a
/// link when asked and known).
pub fn citation(k: &Knowledge, l: &Loaded, passage: usize, cite: Cite) -> Option<String> {
    let p = &l.kb.passages[passage];
    let title = p.short_title();
    match cite {
        Cite::Off => None,
        Cite::Title => Some(title),
        Cite::Link => Some(match k.links.get(&p.source) {
            Some(base) => format!("{title} ({base}{})", p.anchor),
            None => title,
        }),
    }
}
