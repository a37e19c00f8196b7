//! Searching a knowledge base: BM25 and the router each propose candidates,
//! for the latest message and for it with the user's turn before; the
//! fused score ranks them and the calibrated confidence says whether the
//! top one can be trusted.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::analyze;
use super::build::{EXPANDED_DIR, INDEX_DIR, Manifest, read_expansions, read_passages};
use super::fuse::{Calibration, Features, Signals, Weights, rank};
use super::index::{Bm25, indexed_text};
use super::ingest::Passage;
use super::router::{NONE_ENTRY, ROUTER_ONNX, Router, softmax};
use super::{Error, Result};
use crate::runtime::RuntimeConfig;

pub const SEARCH_JSON: &str = "search.json";

/// Candidates each side proposes before fusion.
const CANDIDATES: usize = 20;

/// `search.json`: how scores fuse and what confidence means, as `kb train`
/// fitted them (defaults for BM25 alone).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SearchSettings {
    pub weights: Weights,
    pub calibration: Calibration,
    /// The [`SIGNALS_REVISION`] the calibration was fitted with (0: before
    /// revisions were recorded).
    #[serde(default)]
    pub signals: u32,
}

/// Revision of how the confidence's inputs are computed; a calibration
/// fitted with an older one is refitted by `kb train`. 1: a one-edit
/// misspelling counts as the word in the term coverage; 2: list parts that
/// only repeat their items are no candidates; 3: the winner's fused score
/// counts a table row's or labelled bullet's holder as the part; 4: a
/// misspelt word is searched as the word it misspells, among words that
/// include the router's negatives (`negatives.json`).
pub const SIGNALS_REVISION: u32 = 4;

impl Default for SearchSettings {
    fn default() -> Self {
        Self {
            weights: Weights::BM25,
            calibration: Calibration::DEFAULT,
            signals: SIGNALS_REVISION,
        }
    }
}

/// A question in its conversation.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<'a> {
    pub text: &'a str,
    /// The user's turn before it (for follow-ups).
    pub previous: Option<&'a str>,
}

impl<'a> Query<'a> {
    /// A message without a turn before it.
    pub fn new(text: &'a str) -> Self {
        Self {
            text,
            previous: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hit {
    /// Position in [`Kb::passages`].
    pub passage: usize,
    pub score: f32,
    pub bm25: f32,
    pub router: f32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Retrieval {
    pub hits: Vec<Hit>,
    /// Calibrated probability that the first hit answers the question.
    pub confidence: f32,
    /// `confidence` is at or above the threshold.
    pub answerable: bool,
    /// For a question that asks several things ("which cards do you take,
    /// and can I pay in euros?"): the answerable best passage of each part
    /// that is not the first hit, in the question's order. The whole
    /// question's ranking put the second part's passage fourth or lower, or
    /// second with no word in common ("euros" is not in "we charge in US
    /// dollars"): with the parts, the extractive answers that state every
    /// required fact went from 186 to 190 of the 221 customer-words
    /// questions.
    pub parts: Vec<usize>,
    /// What the confidence was computed from.
    pub signals: Signals,
}

/// The most parts of one message searched on their own.
const MAX_PARTS: usize = 4;

/// What the parts of a message found ([`Kb::part_answers`]).
#[derive(Default)]
struct Parts {
    /// [`Retrieval::parts`].
    passages: Vec<usize>,
    /// The least confidence of the parts, when every one was answerable.
    confidence: Option<f32>,
}

/// The turns [`Kb::carry_item`] has searched for one message, with the
/// passage each was confidently about: a message and its first part share
/// the turn before, searched once.
type Before<'q> = Vec<(&'q str, Option<usize>)>;

impl Retrieval {
    /// The passages a reply is given: the first `k` hits, then the parts'
    /// passages among them or after them.
    pub fn served(&self, k: usize) -> Vec<usize> {
        let mut out: Vec<usize> = self.hits.iter().take(k).map(|h| h.passage).collect();
        for &p in &self.parts {
            if !out.contains(&p) {
                out.push(p);
            }
        }
        out
    }
}

/// An opened knowledge base.
pub struct Kb {
    dir: PathBuf,
    pub manifest: Manifest,
    pub passages: Vec<Passage>,
    /// BM25 over the documents alone, and over the documents with the
    /// labelled questions (the fused search's, when trained).
    bm25: Bm25,
    expanded: Option<Bm25>,
    /// The router, each of its outputs' passage (None: gone, or the
    /// "none of these" output), and that output's position.
    router: Option<(Router, Vec<Option<usize>>, Option<usize>)>,
    /// Each passage's router output, if it has one.
    router_output: Vec<Option<usize>>,
    /// For a table row or labelled bullet, the router outputs of the entry
    /// or prose that holds it ([`holders`]).
    holder_outputs: Vec<Vec<usize>>,
    pub settings: SearchSettings,
    /// Inverse document frequency of each analysed term.
    idf: HashMap<String, f32>,
    /// The distinct analysed terms of each passage.
    terms: Vec<HashSet<String>>,
    /// Passages that only repeat other passages: a part of a labelled
    /// list whose every item is a passage of its own.
    repeats: Vec<bool>,
    /// [`naming_terms`]: a message that uses one names its item itself.
    item_terms: HashSet<String>,
    /// Reads a misspelt word of a question as the word it misspells.
    speller: super::spell::Speller,
}

/// Which passages are parts of a labelled list whose every item is also
/// its own passage. Such a part ranks beside its items and crowds the few
/// passages a reply is grounded on: for "how much is the mug set and can it
/// go in the microwave?" four parts of the care list filled the places
/// after the mug's care item, and the price row was left out.
fn list_repeats(passages: &[Passage]) -> Vec<bool> {
    let items: HashSet<&str> = passages
        .iter()
        .filter(|p| p.kind == super::Kind::Bullet)
        .map(|p| p.text.trim())
        .collect();
    passages
        .iter()
        .map(|p| {
            if p.kind == super::Kind::Bullet {
                return false;
            }
            let heading = p.title.last().map_or("", String::as_str);
            let lines: Vec<&str> = p
                .text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            lines.iter().any(|l| l.starts_with("- "))
                && lines.iter().all(|l| match l.strip_prefix("- ") {
                    Some(item) => items.contains(item.trim()),
                    None => *l == heading,
                })
        })
        .collect()
}

/// Each passage's holders: for a table row or a labelled bullet, the
/// passages (every part of a split one) whose title is its title less the
/// last component and that are an entry or prose, not rows or bullets
/// themselves. A question about a part is labelled with its holder too
/// (the FAQ's convention, and the dialogs' passages), so the router splits
/// its probability between them, and mostly to the holder, which every
/// question about its parts names: "can the mugs go in the microwave?" gave
/// the mug's care bullet 0.05 of it, its list the rest, and the confidence
/// stayed below the threshold though the bullet was found first.
fn holders(passages: &[Passage]) -> Vec<Vec<usize>> {
    use super::Kind;
    let part = |k: Kind| matches!(k, Kind::TableRow | Kind::Bullet);
    let mut by_title: HashMap<&[String], Vec<usize>> = HashMap::new();
    for (i, p) in passages.iter().enumerate() {
        if !part(p.kind) {
            by_title.entry(p.title.as_slice()).or_default().push(i);
        }
    }
    passages
        .iter()
        .map(|p| match p.title.split_last() {
            Some((_, parent)) if part(p.kind) && !parent.is_empty() => {
                by_title.get(parent).cloned().unwrap_or_default()
            }
            _ => Vec::new(),
        })
        .collect()
}

/// The terms of item names ([`Passage::item_name`]) that name their item: no
/// passage has one but the item's own rows and bullets and what holds
/// them. "rain" of "Cascade Rain Jacket" is in other passages too, so
/// "does it work in the rain?" still refers back.
fn naming_terms(
    passages: &[Passage],
    holder_of: &[Vec<usize>],
    terms: &[HashSet<String>],
) -> HashSet<String> {
    let mut about: HashMap<&str, HashSet<usize>> = HashMap::new();
    for (i, p) in passages.iter().enumerate() {
        if let Some(name) = p.item_name() {
            let own = about.entry(name).or_default();
            own.insert(i);
            own.extend(holder_of[i].iter().copied());
        }
    }
    let mut out = HashSet::new();
    for (name, own) in &about {
        for t in analyze::terms(name) {
            let only_there = terms
                .iter()
                .enumerate()
                .all(|(k, has)| own.contains(&k) || !has.contains(&t));
            if only_there {
                out.insert(t);
            }
        }
    }
    out
}

impl Kb {
    /// Opens the knowledge base in `dir` with its router if one was trained
    /// (and is current); `runtime` runs the router.
    pub fn open(dir: &Path, runtime: &RuntimeConfig) -> Result<Self> {
        let manifest = Manifest::read(dir)?;
        let passages = read_passages(dir)?;
        if passages.len() != manifest.passages {
            return Err(Error::Format(format!(
                "{}: kb.json lists {} passages but passages.jsonl has {}; rebuild with `chatforge kb build --docs … --out {} --force`",
                dir.display(),
                manifest.passages,
                passages.len(),
                dir.display()
            )));
        }
        let bm25 = Bm25::open(&dir.join(INDEX_DIR)).map_err(|e| {
            Error::Format(format!(
                "{}: the index cannot be opened ({e}); rebuild with `chatforge kb build --docs … --out {} --force`",
                dir.display(),
                dir.display()
            ))
        })?;
        let expansions = read_expansions(dir, &passages)?;
        let mut router_output = vec![None; passages.len()];
        let expanded = match &expansions {
            Some(_) => Some(Bm25::open(&dir.join(EXPANDED_DIR)).map_err(|e| {
                Error::Format(format!(
                    "{}: the expanded index cannot be opened ({e}); retrain with `chatforge kb train --kb {}`",
                    dir.display(),
                    dir.display()
                ))
            })?),
            None => None,
        };
        let router = if dir.join(ROUTER_ONNX).is_file() {
            let r = Router::open(dir, runtime, 2)?;
            let pos: HashMap<&str, usize> = passages
                .iter()
                .enumerate()
                .map(|(i, p)| (p.id.as_str(), i))
                .collect();
            // Router output k → passage position (None: a passage gone).
            let map: Vec<Option<usize>> = r
                .meta
                .entries
                .iter()
                .map(|id| pos.get(id.as_str()).copied())
                .collect();
            let none = r.meta.entries.iter().position(|id| id == NONE_ENTRY);
            for (k, p) in map.iter().enumerate() {
                if let Some(p) = p {
                    router_output[*p] = Some(k);
                }
            }
            if manifest.router_stale {
                tracing::warn!(kb = %dir.display(), "passages changed since the router was trained; retrain it with `chatforge kb train`");
            }
            Some((r, map, none))
        } else {
            None
        };
        let settings = match std::fs::read_to_string(dir.join(SEARCH_JSON)) {
            Ok(text) => serde_json::from_str(&text)
                .map_err(|e| Error::Format(format!("{}: {e}", dir.join(SEARCH_JSON).display())))?,
            Err(_) => SearchSettings::default(),
        };
        if router.is_some() && settings.signals < SIGNALS_REVISION {
            tracing::warn!(kb = %dir.display(), "the confidence was calibrated by an older `kb train`; retrain it with `chatforge kb train` for thresholds that fit this version");
        }
        let indexed: Vec<String> = passages
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let extra = expansions.as_ref().map_or(&[][..], |e| e[i].as_slice());
                indexed_text(p, extra)
            })
            .collect();
        let terms: Vec<HashSet<String>> = indexed
            .iter()
            .map(|t| analyze::terms(t).into_iter().collect())
            .collect();
        let negatives = super::build::read_negatives(dir)?;
        let speller =
            super::spell::Speller::new(indexed.iter().chain(&negatives).map(String::as_str));
        let mut df: HashMap<&str, usize> = HashMap::new();
        for t in &terms {
            for term in t {
                *df.entry(term.as_str()).or_insert(0) += 1;
            }
        }
        let n = passages.len() as f32;
        let idf = df
            .into_iter()
            .map(|(t, d)| {
                (
                    t.to_string(),
                    (1.0 + (n - d as f32 + 0.5) / (d as f32 + 0.5)).ln(),
                )
            })
            .collect();
        let repeats = list_repeats(&passages);
        let holder_of = holders(&passages);
        let item_terms = naming_terms(&passages, &holder_of, &terms);
        let holder_outputs = holder_of
            .into_iter()
            .map(|h| h.into_iter().filter_map(|p| router_output[p]).collect())
            .collect();
        Ok(Self {
            dir: dir.to_path_buf(),
            manifest,
            repeats,
            passages,
            bm25,
            expanded,
            router,
            router_output,
            holder_outputs,
            settings,
            idf,
            terms,
            item_terms,
            speller,
        })
    }

    /// `text` as the search reads it, when it has a misspelt word: each
    /// read as the knowledge base's word it misspells ([`super::spell`]).
    pub fn read_as(&self, text: &str) -> Option<String> {
        self.speller.correct_text(text)
    }

    /// The passage answer to `question` from `served` ([`crate::ground::answer`],
    /// two sentences of a passage at most), read as the search reads it:
    /// "is the skilet seasoned" asks for the skillet's sentences.
    pub fn answer(
        &self,
        served: &[usize],
        question: &str,
        parts: &[usize],
    ) -> Option<(String, Vec<usize>)> {
        let read = self.read_as(question);
        let question = read.as_deref().unwrap_or(question);
        crate::ground::answer(&self.passages, served, question, 2, parts)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn has_router(&self) -> bool {
        self.router.is_some()
    }

    /// The `k` best passages for `q` with the confidence of the first.
    pub fn search(&self, q: &Query<'_>, k: usize) -> Result<Retrieval> {
        let mut before = Before::new();
        let carried = self.carry_item(q, &mut before)?;
        let asked = carried.as_deref().map_or(*q, Query::new);
        let mut r = self.search_with(&asked, k, &self.settings, true)?;
        let parts = self.part_answers(q, &r, &mut before)?;
        r.parts = parts.passages;
        // A question asking two things splits the router's belief between
        // their passages, so the whole question's confidence can fall
        // below the threshold while each part alone clears it.
        if let Some(c) = parts.confidence.filter(|_| !r.answerable) {
            r.confidence = c;
            r.answerable = true;
        }
        Ok(r)
    }

    /// The item a message refers back to: when `q` says "it" or "they"
    /// without naming an item of a table or labelled list, and the turn
    /// before it is confidently about one, `q`'s text with that item's
    /// name after it, searched on its own (the turn before as context
    /// pulled it back to that turn's passage). "what does the daypack
    /// weigh and is it ok in heavy rain?": the second part alone found the
    /// rain jacket, with "Summit 30L Daypack" after it the daypack's care
    /// bullet.
    fn carry_item<'q>(&self, q: &Query<'q>, before: &mut Before<'q>) -> Result<Option<String>> {
        let Some(previous) = q.previous else {
            return Ok(None);
        };
        if !analyze::refers_back(q.text)
            || analyze::terms(q.text)
                .iter()
                .any(|t| self.item_terms.contains(t))
        {
            return Ok(None);
        }
        let about = match before.iter().find(|(text, _)| *text == previous) {
            Some(&(_, about)) => about,
            None => {
                let r = self.search_with(&Query::new(previous), 1, &self.settings, true)?;
                let about = r.hits.first().filter(|_| r.answerable).map(|h| h.passage);
                before.push((previous, about));
                about
            }
        };
        Ok(about
            .and_then(|p| self.passages[p].item_name())
            .map(|item| format!("{} {item}", q.text)))
    }

    /// [`Retrieval::parts`]: each part is asked as a follow-up of the one
    /// before it ("…weigh, and do they need special care?": "they" are the
    /// boots).
    fn part_answers<'q>(
        &self,
        q: &Query<'q>,
        whole: &Retrieval,
        before: &mut Before<'q>,
    ) -> Result<Parts> {
        let first = whole.hits.first().map(|h| h.passage);
        let mut out = Parts::default();
        let mut least = f32::INFINITY;
        let mut first_confirmed = false;
        let mut previous = q.previous;
        // A long message is not searched sentence by sentence: each part
        // costs a router run.
        let parts = analyze::clauses(q.text);
        for part in parts.iter().copied().take(MAX_PARTS) {
            let asked = Query {
                text: part,
                previous,
            };
            let carried = self.carry_item(&asked, before)?;
            let r = self.search_with(
                &carried.as_deref().map_or(asked, Query::new),
                1,
                &self.settings,
                true,
            )?;
            previous = Some(part);
            least = least.min(if r.answerable { r.confidence } else { 0.0 });
            let Some(h) = r.hits.first().filter(|_| r.answerable) else {
                continue;
            };
            if Some(h.passage) == first {
                first_confirmed = true;
            } else if !out.passages.contains(&h.passage) {
                out.passages.push(h.passage);
            }
        }
        // Every part answered, one of them by the whole question's first
        // passage (which the reply's answer starts from) and another by a
        // passage of its own: parts that all find the first passage ask
        // one thing, and the whole question's confidence stands.
        if first_confirmed && !out.passages.is_empty() && least > 0.0 && parts.len() <= MAX_PARTS {
            out.confidence = Some(least);
        }
        Ok(out)
    }

    /// BM25 alone, with the default calibration: the baseline `kb eval`
    /// reports beside the fused retriever.
    pub fn search_bm25(&self, q: &Query<'_>, k: usize) -> Result<Retrieval> {
        self.search_with(q, k, &SearchSettings::default(), false)
    }

    /// Candidate features for `q` (every candidate either side proposes but
    /// the list parts that only repeat their items),
    /// and the router's probability that none answers.
    pub(crate) fn candidates(
        &self,
        q: &Query<'_>,
        use_router: bool,
    ) -> Result<(Vec<(usize, Features)>, f32)> {
        let (text, previous) = (
            self.read_as(q.text),
            q.previous.and_then(|p| self.read_as(p)),
        );
        let q = &Query {
            text: text.as_deref().unwrap_or(q.text),
            previous: previous.as_deref().or(q.previous),
        };
        let with_context = q.previous.map(|p| format!("{p}\n{}", q.text));
        let ctx_text = with_context.as_deref().unwrap_or(q.text);
        let index = match (&self.expanded, use_router) {
            (Some(e), true) => e,
            _ => &self.bm25,
        };
        let b = index.search(q.text, CANDIDATES)?;
        let bc = if with_context.is_some() {
            index.search(ctx_text, CANDIDATES)?
        } else {
            b.clone()
        };
        let mut feats: HashMap<usize, Features> = HashMap::new();
        let norm = |v: &[super::index::Scored]| v.first().map_or(1.0, |s| s.score.max(1e-6));
        let (nb, nbc) = (norm(&b), norm(&bc));
        for s in &b {
            feats.entry(s.passage).or_default().bm25 = s.score / nb;
        }
        for s in &bc {
            feats.entry(s.passage).or_default().bm25_context = s.score / nbc;
        }
        let mut none_p = 0.0;
        if let (true, Some((router, map, none))) = (use_router, &self.router) {
            let texts: Vec<&str> = if with_context.is_some() {
                vec![q.text, ctx_text]
            } else {
                vec![q.text]
            };
            let scores = router.scores(&texts)?;
            let p = softmax(&scores[0]);
            let pc = scores.get(1).map_or_else(|| p.clone(), |s| softmax(s));
            if let Some(n) = none {
                // A follow-up may be answerable only with its context.
                none_p = p[*n].min(pc[*n]);
            }
            // The router's own best join the candidates (a partial
            // selection: a full sort of 10,000 scores costs more than the
            // rest of a search).
            let mut order: Vec<usize> = (0..p.len()).collect();
            let best = |a: &usize, b: &usize| p[*b].max(pc[*b]).total_cmp(&p[*a].max(pc[*a]));
            if order.len() > CANDIDATES {
                order.select_nth_unstable_by(CANDIDATES, best);
                order.truncate(CANDIDATES);
            }
            for k in order {
                if let Some(passage) = map[k] {
                    feats.entry(passage).or_default();
                }
            }
            // Every candidate gets its router features; a part, its
            // holder's too (for the confidence).
            for (passage, f) in feats.iter_mut() {
                if let Some(k) = self.router_output[*passage] {
                    let held = &self.holder_outputs[*passage];
                    f.router = p[k];
                    f.router_context = pc[k];
                    f.held = held.iter().map(|&h| p[h]).sum();
                    f.held_context = held.iter().map(|&h| pc[h]).sum();
                }
            }
        }
        let mut out: Vec<(usize, Features)> = feats
            .into_iter()
            .filter(|(p, _)| !self.repeats[*p])
            .collect();
        out.sort_by_key(|(p, _)| *p);
        Ok((out, none_p))
    }

    /// The confidence inputs for the winner of `cands` ranked by `w`
    /// ([`rank`]: `ranked`).
    pub(crate) fn signals(
        &self,
        q: &Query<'_>,
        cands: &[(usize, Features)],
        ranked: &[(usize, f32)],
        w: &Weights,
        none: f32,
    ) -> Signals {
        let total = (w.router + w.router_context + w.bm25 + w.bm25_context).max(1e-6);
        let held = |r: Option<&(usize, f32)>| {
            r.and_then(|(p, _)| cands.iter().find(|(c, _)| c == p))
                .map_or(0.0, |(_, f)| f.score_held(w) / total)
        };
        let top = held(ranked.first());
        let second = held(ranked.get(1));
        let coverage = ranked
            .first()
            .map_or(0.0, |(p, _)| self.coverage(q.text, *p));
        Signals {
            top,
            margin: top - second,
            coverage,
            none,
        }
    }

    /// Share of the query's distinct terms, weighted by IDF, that
    /// `passage` contains, a one-edit misspelling counting as the word
    /// (and a misspelt stop word as none).
    fn coverage(&self, query: &str, passage: usize) -> f32 {
        let mut terms = analyze::terms(query);
        terms.sort_unstable();
        terms.dedup();
        let idf = |t: &str| self.idf.get(t).copied().unwrap_or(3.0);
        let has = &self.terms[passage];
        let (mut found, mut total) = (0f32, 0f32);
        for t in &terms {
            if has.contains(t.as_str()) {
                found += idf(t);
                total += idf(t);
            } else if let Some(p) = has.iter().find(|p| analyze::is_typo_of(t, p)) {
                // A misspelling of the passage's word counts as that word
                // (customers write "retrun" and "warrenty"): without it a
                // typo lowered the confidence of a right passage.
                found += idf(p);
                total += idf(p);
            } else if !analyze::is_stop_word_typo(t) {
                total += idf(t);
            }
        }
        if total <= 0.0 {
            return 0.0;
        }
        found / total
    }

    fn search_with(
        &self,
        q: &Query<'_>,
        k: usize,
        settings: &SearchSettings,
        use_router: bool,
    ) -> Result<Retrieval> {
        let (cands, none) = self.candidates(q, use_router)?;
        let w = if use_router && self.router.is_some() {
            settings.weights
        } else {
            Weights::BM25
        };
        let ranked = rank(&cands, &w);
        let signals = self.signals(q, &cands, &ranked, &w, none);
        let calibration = if use_router && self.router.is_some() {
            settings.calibration
        } else {
            Calibration::DEFAULT
        };
        let confidence = if ranked.is_empty() {
            0.0
        } else {
            calibration.confidence(&signals)
        };
        let feats: HashMap<usize, Features> = cands.into_iter().collect();
        let hits = ranked
            .into_iter()
            .take(k)
            .map(|(p, score)| Hit {
                passage: p,
                score,
                bm25: feats.get(&p).map_or(0.0, |f| f.bm25),
                router: feats.get(&p).map_or(0.0, |f| f.router),
            })
            .collect();
        Ok(Retrieval {
            hits,
            confidence,
            answerable: confidence >= calibration.threshold,
            parts: Vec::new(),
            signals,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kb::Kind;

    fn passage(title: &[&str], text: &str, kind: Kind) -> Passage {
        Passage::for_test(title, text, kind)
    }

    /// A row or labelled bullet is held by the entry or prose of its
    /// title less the last part (all parts of a split one); nothing else is.
    #[test]
    fn test_rows_and_bullets_are_held_by_their_entry() {
        let passages = vec![
            passage(&["Products"], "We design everything.", Kind::Prose),
            passage(
                &["Products", "Tent"],
                "Product: Tent; Price: $249",
                Kind::TableRow,
            ),
            passage(&["Products", "Warranty"], "Two years.", Kind::Faq),
            passage(&["Products", "Care"], "Care, part one.", Kind::Faq),
            passage(&["Products", "Care"], "Care, part two.", Kind::Faq),
            passage(
                &["Products", "Care", "Mug"],
                "Mug: Dishwasher safe.",
                Kind::Bullet,
            ),
            passage(&["Orphan", "Row"], "Row: no holder", Kind::TableRow),
            passage(&["Row"], "Row: top level", Kind::TableRow),
        ];
        assert_eq!(
            holders(&passages),
            vec![
                vec![],
                vec![0],
                vec![],
                vec![],
                vec![],
                vec![3, 4],
                vec![],
                vec![],
            ]
        );
    }

    /// A word of an item's name names the item only when no passage but
    /// the item's own and their holders has it.
    #[test]
    fn test_item_names_name_their_item_by_words_only_they_use() {
        let passages = vec![
            passage(&["Products"], "Our gear.", Kind::Prose),
            passage(
                &["Products", "Rain Jacket"],
                "Product: Rain Jacket; Price: $129",
                Kind::TableRow,
            ),
            passage(&["Care"], "How to care for your gear.", Kind::Faq),
            passage(
                &["Care", "Rain Jacket"],
                "Rain Jacket: Wash it cold.",
                Kind::Bullet,
            ),
            passage(&["Shipping"], "Rain or shine, we ship.", Kind::Faq),
        ];
        assert_eq!(passages[1].item_name(), Some("Rain Jacket"));
        assert_eq!(passages[2].item_name(), None);
        let terms: Vec<HashSet<String>> = passages
            .iter()
            .map(|p| analyze::terms(&p.text).into_iter().collect())
            .collect();
        let naming = naming_terms(&passages, &holders(&passages), &terms);
        assert_eq!(naming, analyze::terms("jacket").into_iter().collect());
    }

    /// A list part whose items are all passages repeats them; a part with
    /// an item of its own, prose, or an item itself does not.
    #[test]
    fn test_list_parts_that_repeat_their_items() {
        let passages = vec![
            passage(&["Care", "Mug"], "Mug: Dishwasher safe.", Kind::Bullet),
            passage(&["Care", "Board"], "Board: Never soak it.", Kind::Bullet),
            passage(
                &["Care"],
                "Care\n- Mug: Dishwasher safe.\n- Board: Never soak it.",
                Kind::Prose,
            ),
            passage(
                &["Care"],
                "- Mug: Dishwasher safe.\n- Stove: Store it dry.",
                Kind::Prose,
            ),
            passage(
                &["Care"],
                "Wash everything by hand.\n- Mug: Dishwasher safe.",
                Kind::Prose,
            ),
            passage(&["Shipping"], "We ship worldwide.", Kind::Prose),
        ];
        assert_eq!(
            list_repeats(&passages),
            vec![false, false, true, false, false, false]
        );
    }
}
