//! `kb train`: the router on labelled example questions, then the fusion
//! weights and the confidence calibration on the questions held aside (and
//! on questions the knowledge base cannot answer, when given).

use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::build::{
    EXPANDED_DIR, EXPANSIONS, MANIFEST, Manifest, NEGATIVES, read_passages, reindex_expanded,
};
use super::fuse::{Calibration, Signals, Weights, fit_calibration, fit_weights, rank};
use super::index::Bm25;
use super::questions::{Labelled, read};
use super::router::{Example, NONE_ENTRY, RouterSettings, train as train_router};
use super::search::{Kb, Query, SEARCH_JSON, SearchSettings};
use super::{Error, Result};
use crate::runtime::RuntimeConfig;

pub struct TrainOptions {
    pub kb: PathBuf,
    /// Labelled questions (CSV `text,label`, question JSONL, or dialogs
    /// with `passages`).
    pub questions: Vec<PathBuf>,
    /// Questions the knowledge base cannot answer (text lines, or JSONL
    /// with `"passages": []`): they teach the confidence to say "I don't
    /// know".
    pub negatives: Vec<PathBuf>,
    pub settings: RouterSettings,
    /// The pretrained lexicon the router reads beside its n-grams
    /// (`kb::lexicon`); None trains on n-grams alone.
    pub lexicon: Option<std::sync::Arc<super::lexicon::Lexicon>>,
    /// Share of the labelled questions held aside for fusion and calibration.
    pub validation_fraction: f32,
    /// Precision the answered questions must reach at the threshold.
    pub target_precision: f32,
    /// After fusion and calibration are fitted on the held-aside questions,
    /// train the served router again on all labelled questions (the
    /// held-aside ones too), with the same settings.
    pub refit: bool,
    /// Add [`near_miss`](super::near_miss) questions to the negatives
    /// (when there are any: they sharpen the "none of these" that given
    /// negatives teach).
    pub near_misses: bool,
    pub runtime: RuntimeConfig,
    pub progress: bool,
}

impl TrainOptions {
    pub fn new(kb: PathBuf, questions: Vec<PathBuf>) -> Self {
        Self {
            kb,
            questions,
            negatives: Vec::new(),
            settings: RouterSettings::default(),
            lexicon: None,
            validation_fraction: 0.15,
            target_precision: 0.9,
            refit: true,
            near_misses: true,
            runtime: RuntimeConfig::default(),
            progress: false,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TrainReport {
    pub entries: usize,
    pub labelled: usize,
    /// Examples the served router was trained on.
    pub train_examples: usize,
    pub validation: usize,
    /// Whether the served router was trained again on the held-aside
    /// questions too (the accuracies below are the first router's).
    pub refit: bool,
    pub negatives: usize,
    /// Of the negatives, near misses written from the passages.
    pub near_misses: usize,
    /// The pretrained lexicon the router reads, if any.
    pub lexicon: Option<String>,
    /// Router alone, top-1, on the validation questions.
    pub router_accuracy: f32,
    /// The fused ranking, top-1, on the validation questions.
    pub fused_accuracy: f32,
    pub weights: Weights,
    pub calibration: Calibration,
    /// ONNX Runtime vs candle, largest score difference.
    pub parity: f32,
    pub seconds: f64,
}

impl TrainReport {
    /// What the router reads: "n-grams", or "n-grams and the NAME lexicon".
    pub fn streams(&self) -> String {
        match &self.lexicon {
            Some(l) => format!("n-grams and the {l} lexicon"),
            None => "n-grams".into(),
        }
    }
}

/// The same question (case and spacing aside) labelled twice keeps one
/// entry with the union of its passages, so the hold-out cannot see a
/// training question.
fn dedupe(labelled: &mut Vec<Labelled>) {
    let key = |t: &str, p: &Option<String>| {
        format!(
            "{}\u{1}{}",
            p.as_deref()
                .unwrap_or("")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .to_lowercase(),
            t.split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .to_lowercase()
        )
    };
    let mut seen: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut out: Vec<Labelled> = Vec::with_capacity(labelled.len());
    for q in labelled.drain(..) {
        match seen.get(&key(&q.text, &q.previous)) {
            Some(&i) => {
                for p in q.passages {
                    if !out[i].passages.contains(&p) {
                        out[i].passages.push(p);
                    }
                }
            }
            None => {
                seen.insert(key(&q.text, &q.previous), out.len());
                out.push(q);
            }
        }
    }
    *labelled = out;
}

/// Deterministic hold-out: by the text's hash, never by file order.
fn held_out(text: &str, fraction: f32) -> bool {
    let h = Sha256::digest(text.trim().to_lowercase().as_bytes());
    let v = u16::from_le_bytes([h[0], h[1]]) as f32 / 65536.0;
    v < fraction
}

fn read_negatives(files: &[PathBuf], passages: &[super::Passage]) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for f in files {
        let is_text = f
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("txt"));
        if is_text {
            let text = std::fs::read_to_string(f).map_err(crate::fsio::io_err(f))?;
            out.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_string),
            );
        } else {
            out.extend(
                read(f, passages)?
                    .into_iter()
                    .filter(|q| q.passages.is_empty())
                    .map(|q| q.text),
            );
        }
    }
    Ok(out)
}

pub fn train(o: &TrainOptions) -> Result<TrainReport> {
    let started = Instant::now();
    let mut manifest = Manifest::read(&o.kb)?;
    let passages = read_passages(&o.kb)?;
    if !(0.0..0.9).contains(&o.validation_fraction) {
        return Err(Error::Router(format!(
            "validation fraction {} must be in [0, 0.9)",
            o.validation_fraction
        )));
    }
    let mut labelled: Vec<Labelled> = Vec::new();
    for f in &o.questions {
        labelled.extend(
            read(f, &passages)?
                .into_iter()
                .filter(|q| !q.passages.is_empty()),
        );
    }
    // Questions written beside passages in the sources (JSONL `questions`,
    // CSV `text,label`) are labelled questions too.
    for (i, p) in passages.iter().enumerate() {
        for q in &p.questions {
            labelled.push(Labelled {
                id: format!("{}#{}", p.id, labelled.len()),
                text: q.clone(),
                previous: None,
                passages: vec![i],
                facts: Vec::new(),
                kind: String::new(),
            });
        }
    }
    dedupe(&mut labelled);
    if labelled.is_empty() {
        return Err(Error::Router(
            "no labelled questions: name files with --questions, or write questions beside the passages".into(),
        ));
    }
    let mut negatives = read_negatives(&o.negatives, &passages)?;
    let near_misses = if o.near_misses && !negatives.is_empty() {
        let written = super::near_miss::synthesize(&passages);
        let n = written.len();
        negatives.extend(written);
        n
    } else {
        0
    };
    let (val, train): (Vec<&Labelled>, Vec<&Labelled>) = labelled
        .iter()
        .partition(|q| held_out(&q.text, o.validation_fraction));
    let (val_negatives, train_negatives): (Vec<&String>, Vec<&String>) = negatives
        .iter()
        .partition(|n| held_out(n, o.validation_fraction));

    let ids = router_outputs(&passages, !train_negatives.is_empty());
    let val_examples: Vec<Example> = val
        .iter()
        .map(|q| Example {
            text: q.text.clone(),
            entries: q.passages.clone(),
        })
        .collect();
    // While the weights and confidence are fitted on the held-aside
    // questions, BM25 must not hold them either: a CSV `text,label` source
    // writes every labelled question beside its passage, so BM25 would
    // find them word for word and the fit would trust it more than new
    // wordings bear out. The refit (or, without one, a rebuild) indexes all.
    let first = fit_router(
        o,
        &passages,
        &ids,
        &train,
        &train_negatives,
        &val_examples,
        Fit::First,
    )?;
    manifest.router_stale = false;
    crate::fsio::write_json_atomic(&o.kb.join(MANIFEST), &manifest)?;

    // Fusion and calibration on what the router did not train on.
    let kb = Kb::open(&o.kb, &o.runtime)?;
    let mut fit = Vec::new();
    for q in &val {
        let query = Query {
            text: &q.text,
            previous: q.previous.as_deref(),
        };
        let (cands, none) = kb.candidates(&query, true)?;
        fit.push((cands, q.passages.clone(), none));
    }
    let weights = if fit.is_empty() {
        SearchSettings::default().weights
    } else {
        let data: Vec<_> = fit.iter().map(|(c, g, _)| (c.clone(), g.clone())).collect();
        fit_weights(&data)
    };
    let mut cal_data: Vec<(Signals, bool)> = Vec::new();
    let mut fused_right = 0;
    for ((cands, gold, none), q) in fit.iter().zip(&val) {
        let r = rank(cands, &weights);
        let right = r.first().is_some_and(|(p, _)| gold.contains(p));
        fused_right += usize::from(right);
        let query = Query {
            text: &q.text,
            previous: q.previous.as_deref(),
        };
        cal_data.push((kb.signals(&query, cands, &r, &weights, *none), right));
    }
    for n in &val_negatives {
        let query = Query {
            text: n,
            previous: None,
        };
        let (cands, none) = kb.candidates(&query, true)?;
        let r = rank(&cands, &weights);
        cal_data.push((kb.signals(&query, &cands, &r, &weights, none), false));
    }
    let calibration = fit_calibration(&cal_data, o.target_precision);
    let settings = SearchSettings {
        weights,
        calibration,
        signals: super::search::SIGNALS_REVISION,
    };
    // The served router learns from the held-aside questions too: on
    // questions it never saw it scores like the first router on those, so
    // the weights and calibration fitted above carry over (cross-fitting's
    // last step), and from the negatives held aside.
    drop(kb);
    let refit = o.refit && !val.is_empty();
    if !refit {
        reindex_expanded(&o.kb, &passages)?;
    }
    let served = if refit {
        let all: Vec<&Labelled> = labelled.iter().collect();
        let mut all_negatives = train_negatives.clone();
        all_negatives.extend(val_negatives.iter().copied());
        fit_router(
            o,
            &passages,
            &ids,
            &all,
            &all_negatives,
            &[],
            Fit::Refit {
                held_aside: val.len(),
                accuracy: first.validation_accuracy,
            },
        )?
    } else {
        first
    };
    crate::fsio::write_json_atomic(&o.kb.join(SEARCH_JSON), &settings)?;
    Ok(TrainReport {
        entries: ids.len(),
        labelled: labelled.len(),
        train_examples: served.examples,
        validation: val.len(),
        refit,
        negatives: negatives.len(),
        near_misses,
        lexicon: o.lexicon.as_ref().map(|l| l.name.clone()),
        router_accuracy: first.validation_accuracy,
        fused_accuracy: if val.is_empty() {
            0.0
        } else {
            fused_right as f32 / val.len() as f32
        },
        weights,
        calibration,
        parity: served.parity.max(first.parity),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// BM25 over the passages, their own example questions but those
/// `hidden` picks, and `extra` questions per passage.
fn build_expanded(
    kb: &std::path::Path,
    passages: &[super::Passage],
    extra: &[Vec<String>],
    hidden: impl Fn(&str) -> bool,
) -> Result<()> {
    let shown: Vec<super::Passage> = passages
        .iter()
        .map(|p| super::Passage {
            questions: p.questions.iter().filter(|q| !hidden(q)).cloned().collect(),
            ..p.clone()
        })
        .collect();
    Bm25::build(&kb.join(EXPANDED_DIR), &shown, extra)?;
    Ok(())
}

/// The router's outputs: the passages, then "none of these" when there are
/// negatives to learn it from.
fn router_outputs(passages: &[super::Passage], negatives: bool) -> Vec<String> {
    let mut ids: Vec<String> = passages.iter().map(|p| p.id.clone()).collect();
    if negatives {
        ids.push(NONE_ENTRY.to_string());
    }
    ids
}

/// What one router fit left in the folder.
#[derive(Clone, Copy)]
struct Fitted {
    examples: usize,
    validation_accuracy: f32,
    parity: f32,
}

/// Which fit of the router this is.
#[derive(Clone, Copy)]
enum Fit {
    /// On all but the held-aside questions, which the fusion weights and
    /// the confidence are then fitted on: BM25's index leaves them out too.
    First,
    /// The served router, on every question. It holds nothing aside, so
    /// `router.json` records the first fit's held-aside count and accuracy:
    /// the only measure of the recipe there is.
    Refit { held_aside: usize, accuracy: f32 },
}

/// Trains the router on `questions` (and `negatives` as "none of these"),
/// writes it, and expands BM25's documents with the same questions.
fn fit_router(
    o: &TrainOptions,
    passages: &[super::Passage],
    ids: &[String],
    questions: &[&Labelled],
    negatives: &[&String],
    val: &[Example],
    fit: Fit,
) -> Result<Fitted> {
    // Each passage asks for itself by its title and text, so that passages
    // nobody asked about in the examples still have a chance.
    let mut examples: Vec<Example> = passages
        .iter()
        .enumerate()
        .map(|(i, p)| Example {
            text: format!(
                "{}\n{}",
                p.title.last().cloned().unwrap_or_default(),
                p.text
            ),
            entries: vec![i],
        })
        .collect();
    for q in questions {
        examples.push(Example {
            text: q.text.clone(),
            entries: q.passages.clone(),
        });
        if let Some(prev) = &q.previous {
            examples.push(Example {
                text: format!("{prev}\n{}", q.text),
                entries: q.passages.clone(),
            });
        }
    }
    if ids.len() > passages.len() {
        let none = passages.len();
        examples.extend(negatives.iter().map(|n| Example {
            text: (*n).clone(),
            entries: vec![none],
        }));
    }
    // The training questions also expand BM25's documents (customers'
    // words beside the documents' own).
    let mut expansions: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for q in questions {
        for &p in &q.passages {
            expansions
                .entry(passages[p].id.clone())
                .or_default()
                .push(q.text.clone());
        }
    }
    crate::fsio::write_json_atomic(&o.kb.join(EXPANSIONS), &expansions)?;
    // The words the router learnt as "none" are words the search knows:
    // the speller must not read "pockets" as a passage's "pocket".
    crate::fsio::write_json_atomic(&o.kb.join(NEGATIVES), &negatives)?;
    let extra: Vec<Vec<String>> = passages
        .iter()
        .map(|p| expansions.get(&p.id).cloned().unwrap_or_default())
        .collect();
    let fraction = o.validation_fraction;
    build_expanded(&o.kb, passages, &extra, |q| {
        matches!(fit, Fit::First) && held_out(q, fraction)
    })?;
    let mut trained = train_router(
        ids,
        &examples,
        val,
        &o.settings,
        o.lexicon.as_ref(),
        o.progress,
    )?;
    if let Fit::Refit {
        held_aside,
        accuracy,
    } = fit
    {
        trained.meta.validation_questions = held_aside;
        trained.meta.validation_accuracy = accuracy;
    }
    let sample: Vec<&str> = examples.iter().take(8).map(|e| e.text.as_str()).collect();
    let parity = trained.write(&o.kb, &sample)?;
    Ok(Fitted {
        examples: examples.len(),
        validation_accuracy: trained.meta.validation_accuracy,
        parity,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kb::{Kind, Passage};

    fn intent(id: &str, questions: &[&str]) -> Passage {
        Passage {
            id: id.into(),
            source: "b.csv".into(),
            line: 2,
            anchor: format!("#{id}"),
            title: vec!["b".into(), id.into()],
            text: id.replace('_', " "),
            kind: Kind::Intent,
            questions: questions.iter().map(|q| (*q).to_string()).collect(),
        }
    }

    #[test]
    fn test_the_fitting_index_leaves_out_the_held_aside_questions() {
        let tmp = tempfile::tempdir().unwrap();
        let passages = [
            intent(
                "card_arrival",
                &["where is my zanzibar card", "has my card shipped"],
            ),
            intent("exchange_rate", &["what rate do you give for euros"]),
        ];
        let extra = vec![vec!["my parcel of plastic".to_string()], Vec::new()];
        let hits = |word: &str| {
            let bm25 = Bm25::open(&tmp.path().join(EXPANDED_DIR)).unwrap();
            bm25.search(word, 5).unwrap().len()
        };
        build_expanded(tmp.path(), &passages, &extra, |q| q.contains("zanzibar")).unwrap();
        assert_eq!(hits("zanzibar"), 0, "a held-aside question is not indexed");
        assert_eq!(hits("shipped"), 1, "the other questions are");
        assert_eq!(hits("plastic"), 1, "and so are the extra ones");
        build_expanded(tmp.path(), &passages, &extra, |_| false).unwrap();
        assert_eq!(hits("zanzibar"), 1, "the served index holds every question");
    }
}
