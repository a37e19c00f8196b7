//! ROUGE-1, ROUGE-2 and ROUGE-L as Google's `rouge-score` package (0.1.2)
//! computes them: its default tokenizer (lowercase, every run of characters
//! outside `[a-z0-9]` becomes a separator, optional Porter stemming of
//! tokens longer than 3 characters), n-gram overlap for ROUGE-N and the
//! longest common subsequence for ROUGE-L, each as precision, recall and F1.
//!
//! Like rouge-score, the tokenizer keeps only ASCII letters and digits, so
//! text in Chinese (or any non-Latin script) has no tokens and scores 0:
//! use BLEU with the `zh` tokenizer for it.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::porter;

/// rouge-score's `tokenize.tokenize(text, stemmer)`.
pub fn tokenize(text: &str, stem: bool) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit()))
        .filter(|t| !t.is_empty())
        .map(|t| {
            if stem && t.len() > 3 {
                porter::stem(t)
            } else {
                t.to_string()
            }
        })
        // The stemmer never empties a token here, but rouge-score checks.
        .filter(|t| !t.is_empty())
        .collect()
}

/// Precision, recall and F-measure of one metric.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Prf {
    pub precision: f64,
    pub recall: f64,
    pub fmeasure: f64,
}

impl Prf {
    fn new(precision: f64, recall: f64) -> Self {
        let fmeasure = if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall)
        } else {
            0.0
        };
        Prf {
            precision,
            recall,
            fmeasure,
        }
    }
}

/// ROUGE-1/2/L of one prediction against one target.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Rouge {
    pub rouge1: Prf,
    pub rouge2: Prf,
    #[serde(rename = "rougeL")]
    pub rouge_l: Prf,
}

/// `RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=stem)
/// .score(target, prediction)`: note the reference comes first.
pub fn score(target: &str, prediction: &str, stem: bool) -> Rouge {
    let t = tokenize(target, stem);
    let p = tokenize(prediction, stem);
    score_tokens(&t, &p)
}

pub fn score_tokens(target: &[String], prediction: &[String]) -> Rouge {
    Rouge {
        rouge1: rouge_n(target, prediction, 1),
        rouge2: rouge_n(target, prediction, 2),
        rouge_l: rouge_l(target, prediction),
    }
}

fn ngrams(tokens: &[String], n: usize) -> HashMap<&[String], usize> {
    let mut m = HashMap::new();
    for w in tokens.windows(n) {
        *m.entry(w).or_insert(0) += 1;
    }
    m
}

fn rouge_n(target: &[String], prediction: &[String], n: usize) -> Prf {
    let t = ngrams(target, n);
    let p = ngrams(prediction, n);
    let overlap: usize = t
        .iter()
        .map(|(g, &c)| c.min(p.get(g).copied().unwrap_or(0)))
        .sum();
    let t_count: usize = t.values().sum();
    let p_count: usize = p.values().sum();
    Prf::new(
        overlap as f64 / p_count.max(1) as f64,
        overlap as f64 / t_count.max(1) as f64,
    )
}

fn rouge_l(target: &[String], prediction: &[String]) -> Prf {
    if target.is_empty() || prediction.is_empty() {
        return Prf::default();
    }
    let lcs = lcs_len(target, prediction);
    Prf::new(
        lcs as f64 / prediction.len() as f64,
        lcs as f64 / target.len() as f64,
    )
}

/// Length of the longest common subsequence, one row at a time.
fn lcs_len(a: &[String], b: &[String]) -> usize {
    let mut prev = vec![0usize; b.len() + 1];
    let mut cur = vec![0usize; b.len() + 1];
    for x in a {
        for (j, y) in b.iter().enumerate() {
            cur[j + 1] = if x == y {
                prev[j] + 1
            } else {
                prev[j + 1].max(cur[j])
            };
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// Mean F-measures over line pairs (rouge-score scores pairs; a corpus
/// figure is their mean).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct RougeF {
    pub rouge1: f64,
    pub rouge2: f64,
    #[serde(rename = "rougeL")]
    pub rouge_l: f64,
}

pub fn mean_f<H: AsRef<str>, R: AsRef<str>>(hyps: &[H], refs: &[R], stem: bool) -> RougeF {
    let mut sum = RougeF::default();
    let mut n = 0usize;
    for (h, r) in hyps.iter().zip(refs) {
        let s = score(r.as_ref(), h.as_ref(), stem);
        sum.rouge1 += s.rouge1.fmeasure;
        sum.rouge2 += s.rouge2.fmeasure;
        sum.rouge_l += s.rouge_l.fmeasure;
        n += 1;
    }
    let n = n.max(1) as f64;
    RougeF {
        rouge1: sum.rouge1 / n,
        rouge2: sum.rouge2 / n,
        rouge_l: sum.rouge_l / n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_tokenizer_drops_non_ascii_and_punctuation() {
        assert_eq!(tokenize("Café, NW-483920!", false), ["caf", "nw", "483920"]);
        assert!(tokenize("你好", false).is_empty());
        assert_eq!(tokenize("Running shoes", true), ["run", "shoe"]);
    }

    #[test]
    fn test_rouge_l_uses_subsequence_order() {
        let s = score("a b c d", "a c b d", false);
        assert_eq!(s.rouge1.fmeasure, 1.0);
        assert!((s.rouge_l.fmeasure - 0.75).abs() < 1e-12);
        assert!((s.rouge2.precision - 0.0).abs() < 1e-12);
        assert_eq!(score("", "a", false).rouge_l, Prf::default());
    }
}
