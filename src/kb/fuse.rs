//! Fusing BM25 with the router, and a confidence that means something: the
//! probability, calibrated on held-aside labelled questions (and questions
//! the knowledge base cannot answer), that the top passage is right.
//!
//! Per candidate passage the features are the router's softmax
//! probability and the BM25 score relative to the best one, each for the
//! latest message alone and with the user's turn before it (a follow-up
//! like "and to Canada?" leans on that). The fused score is a weighted sum;
//! the weights are chosen on the validation questions. The confidence is a
//! logistic model over the winner's fused score, its margin over the
//! runner-up and how many query terms it covers.

use serde::{Deserialize, Serialize};

/// Weights of the fused score.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Weights {
    pub router: f32,
    pub router_context: f32,
    pub bm25: f32,
    pub bm25_context: f32,
}

impl Weights {
    /// BM25 alone (no router trained).
    pub const BM25: Weights = Weights {
        router: 0.0,
        router_context: 0.0,
        bm25: 1.0,
        bm25_context: 0.35,
    };
}

/// Candidate features (all in [0, 1]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Features {
    pub router: f32,
    pub router_context: f32,
    pub bm25: f32,
    pub bm25_context: f32,
    /// For a table row or labelled bullet: the router's probability of
    /// the entry that holds it (alone and with the turn before).
    pub held: f32,
    pub held_context: f32,
}

impl Features {
    /// The fused score, which ranks.
    pub fn score(&self, w: &Weights) -> f32 {
        w.router * self.router
            + w.router_context * self.router_context
            + w.bm25 * self.bm25
            + w.bm25_context * self.bm25_context
    }

    /// The fused score with a part's holder counted as the part, which
    /// the confidence reads: a question about a part is labelled with its
    /// holder too, so the router gives the part only a share of what it
    /// believes. Ranking by it put parts first where their entry's own
    /// answer was right (on the second customer-words set, recall@1 0.919
    /// → 0.894).
    pub fn score_held(&self, w: &Weights) -> f32 {
        self.score(w) + w.router * self.held + w.router_context * self.held_context
    }
}

/// Candidates in fused-score order (ties: passage order).
pub fn rank(cands: &[(usize, Features)], w: &Weights) -> Vec<(usize, f32)> {
    let mut r: Vec<(usize, f32)> = cands.iter().map(|(p, f)| (*p, f.score(w))).collect();
    r.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    r
}

/// The inputs of the confidence model, for the winning passage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Signals {
    pub top: f32,
    pub margin: f32,
    /// Share of the query's terms (IDF-weighted) found in the winner.
    pub coverage: f32,
    /// The router's probability that nothing in the knowledge base answers
    /// (0 when it was trained without negatives).
    pub none: f32,
}

/// `P(top passage is right) = σ(a·top + b·margin + c·coverage + e·none + d)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    pub a: f32,
    pub b: f32,
    pub c: f32,
    #[serde(default)]
    pub e: f32,
    pub d: f32,
    /// Below this confidence the answer is "I don't know".
    pub threshold: f32,
}

impl Calibration {
    /// Used until `kb train` fits one: confidence follows the share of the
    /// question's terms the passage has, and the margin.
    pub const DEFAULT: Calibration = Calibration {
        a: 2.0,
        b: 4.0,
        c: 6.0,
        e: 0.0,
        d: -5.0,
        threshold: 0.5,
    };

    pub fn confidence(&self, s: &Signals) -> f32 {
        sigmoid(self.a * s.top + self.b * s.margin + self.c * s.coverage + self.e * s.none + self.d)
    }
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Fits the logistic model on `(signals, top passage was right)` by
/// gradient descent with a little L2, then the threshold: the lowest at
/// which answered questions (out-of-scope ones count as wrong) are right at
/// least `target_precision` of the time; when none reaches it, the best F1.
pub fn fit_calibration(data: &[(Signals, bool)], target_precision: f32) -> Calibration {
    if data.is_empty() || data.iter().all(|(_, y)| *y) || data.iter().all(|(_, y)| !*y) {
        return Calibration::DEFAULT;
    }
    const K: usize = 5;
    let mut w = [0f32; K];
    let lr = 0.5f32;
    let n = data.len() as f32;
    for _ in 0..3000 {
        let mut g = [0f32; K];
        for (s, y) in data {
            let x = [s.top, s.margin, s.coverage, s.none, 1.0];
            let z: f32 = w.iter().zip(&x).map(|(a, b)| a * b).sum();
            let err = sigmoid(z) - f32::from(u8::from(*y));
            for k in 0..K {
                g[k] += err * x[k] / n;
            }
        }
        for k in 0..K - 1 {
            g[k] += 1e-3 * w[k];
        }
        for k in 0..K {
            w[k] -= lr * g[k];
        }
    }
    let mut cal = Calibration {
        a: w[0],
        b: w[1],
        c: w[2],
        e: w[3],
        d: w[4],
        threshold: 0.5,
    };
    // The threshold answers as many questions as it can while those it
    // answers stay right `target_precision` of the time (the moderation
    // classifier's rule): the fact guard catches an unsupported claim, and
    // a needless handoff leaves the customer waiting.
    let scores: Vec<f32> = data.iter().map(|(s, _)| cal.confidence(s)).collect();
    let labels: Vec<bool> = data.iter().map(|(_, y)| *y).collect();
    let (threshold, _) =
        crate::moderation::choose_threshold(&scores, &labels, f64::from(target_precision));
    cal.threshold = threshold.clamp(0.05, 0.95);
    cal
}

/// A question's candidates with their features, and its right passages.
pub type Case = (Vec<(usize, Features)>, Vec<usize>);

/// Chooses fusion weights on labelled cases for the best top-1 accuracy
/// (ties: the simpler, router-heavier weights come first in the grid).
pub fn fit_weights(data: &[Case]) -> Weights {
    let steps = [0.0f32, 0.15, 0.3, 0.5, 0.75, 1.0];
    let mut best = (0usize, Weights::BM25);
    for &bm25 in &steps {
        for &bm25_context in &[0.0f32, 0.2, 0.4] {
            for &router_context in &[0.0f32, 0.25, 0.5] {
                let w = Weights {
                    router: 1.0,
                    router_context,
                    bm25,
                    bm25_context,
                };
                let right = data
                    .iter()
                    .filter(|(cands, gold)| {
                        cands
                            .iter()
                            .max_by(|a, b| a.1.score(&w).total_cmp(&b.1.score(&w)))
                            .is_some_and(|(p, _)| gold.contains(p))
                    })
                    .count();
                if right > best.0 {
                    best = (right, w);
                }
            }
        }
    }
    best.1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_calibration_separates_and_sets_a_threshold() {
        let mut data = Vec::new();
        for i in 0..200 {
            let good = i % 2 == 0;
            let top = if good { 0.8 } else { 0.3 } + (i % 7) as f32 * 0.01;
            data.push((
                Signals {
                    top,
                    margin: if good { 0.4 } else { 0.05 },
                    coverage: if good { 0.9 } else { 0.3 },
                    none: if good { 0.0 } else { 0.5 },
                },
                good,
            ));
        }
        let cal = fit_calibration(&data, 0.95);
        let good = cal.confidence(&data[0].0);
        let bad = cal.confidence(&data[1].0);
        assert!(good > 0.8 && bad < 0.2, "{good} {bad}");
        assert!(cal.threshold > bad && cal.threshold <= good, "{cal:?}");
        assert_eq!(fit_calibration(&[], 0.9), Calibration::DEFAULT);
    }

    /// The holder's probability counts for the confidence's score, not
    /// for the ranking.
    #[test]
    fn test_a_parts_holder_counts_for_the_confidence_only() {
        let w = Weights {
            router: 1.0,
            router_context: 0.5,
            bm25: 0.3,
            bm25_context: 0.0,
        };
        let part = Features {
            router: 0.1,
            bm25: 1.0,
            held: 0.7,
            held_context: 0.2,
            ..Features::default()
        };
        let other = Features {
            router: 0.3,
            bm25: 0.5,
            ..Features::default()
        };
        assert!((part.score(&w) - 0.4).abs() < 1e-6);
        assert!((part.score_held(&w) - 1.2).abs() < 1e-6);
        assert_eq!(other.score_held(&w), other.score(&w));
        let ranked = rank(&[(0, other), (1, part)], &w);
        assert_eq!(ranked.iter().map(|r| r.0).collect::<Vec<_>>(), vec![0, 1]);
    }

    #[test]
    fn test_weights_prefer_what_ranks_the_gold_first() {
        let f = |router, bm25| Features {
            router,
            bm25,
            ..Features::default()
        };
        // The router is right on one, BM25 on two: BM25 must weigh in.
        let data = vec![
            (vec![(0, f(0.6, 0.2)), (1, f(0.4, 1.0))], vec![1]),
            (vec![(0, f(0.55, 0.1)), (1, f(0.45, 1.0))], vec![1]),
            (vec![(0, f(0.9, 0.5)), (1, f(0.1, 1.0))], vec![0]),
        ];
        let w = fit_weights(&data);
        assert!(w.bm25 >= 0.3, "{w:?}");
    }
}
