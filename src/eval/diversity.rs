//! Diversity of replies: distinct-n (Li et al. 2016, "A Diversity-Promoting
//! Objective Function for Neural Conversation Models"): distinct n-grams
//! over all n-grams in all replies together, and the mean reply length.
//! Words come from the BLEU tokenizer chosen for the run, so `zh` counts
//! characters.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::bleu::Tokenize;

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Diversity {
    /// Distinct unigrams / unigrams (0 when there are none).
    pub distinct_1: f64,
    /// Distinct bigrams / bigrams.
    pub distinct_2: f64,
    /// Mean words per reply.
    pub avg_len: f64,
}

pub fn diversity<S: AsRef<str>>(replies: &[S], tok: Tokenize) -> Diversity {
    let words: Vec<Vec<String>> = replies.iter().map(|r| tok.words(r.as_ref())).collect();
    let total: usize = words.iter().map(Vec::len).sum();
    Diversity {
        distinct_1: distinct_n(&words, 1),
        distinct_2: distinct_n(&words, 2),
        avg_len: total as f64 / replies.len().max(1) as f64,
    }
}

/// n-grams never cross reply boundaries.
pub fn distinct_n(replies: &[Vec<String>], n: usize) -> f64 {
    let mut seen: HashSet<&[String]> = HashSet::new();
    let mut total = 0usize;
    for r in replies {
        for g in r.windows(n) {
            seen.insert(g);
            total += 1;
        }
    }
    if total == 0 {
        0.0
    } else {
        seen.len() as f64 / total as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_distinct_counts_over_all_replies() {
        let d = diversity(&["a b a", "a b c"], Tokenize::Thirteen);
        // unigrams a b a a b c: {a, b, c} = 3 of 6; bigrams ab ba ab bc: 3 of 4
        assert!((d.distinct_1 - 0.5).abs() < 1e-12);
        assert!((d.distinct_2 - 0.75).abs() < 1e-12);
        assert!((d.avg_len - 3.0).abs() < 1e-12);
        let none = diversity(&[""], Tokenize::Thirteen);
        assert_eq!(
            (none.distinct_1, none.distinct_2, none.avg_len),
            (0.0, 0.0, 0.0)
        );
        let zh = diversity(&["你好你"], Tokenize::Zh);
        assert!((zh.distinct_1 - 2.0 / 3.0).abs() < 1e-12);
    }
}
