//! Binary classification metrics: ROC-AUC, precision/recall/F1 at a
//! threshold, Platt scaling and threshold choice for a target precision.

use serde::{Deserialize, Serialize};

/// ROC-AUC as the Mann–Whitney statistic (ties count half); `None` when
/// one class is absent.
pub fn roc_auc(scores: &[f32], labels: &[bool]) -> Option<f64> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let pos = labels.iter().filter(|&&l| l).count();
    let neg = labels.len() - pos;
    if pos == 0 || neg == 0 {
        return None;
    }
    // Average ranks over ties.
    let mut rank_sum_pos = 0f64;
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && scores[idx[j + 1]] == scores[idx[i]] {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            if labels[k] {
                rank_sum_pos += rank;
            }
        }
        i = j + 1;
    }
    let u = rank_sum_pos - (pos * (pos + 1)) as f64 / 2.0;
    Some(u / (pos as f64 * neg as f64))
}

/// The share of positives flagged at the strictest cut that flags at most
/// `max_fpr` of the negatives (a positive tied with the last negative it
/// must pass is not counted); `None` when one class is absent. The
/// insult-in-request target is stated this way (recall at 2% false
/// positives on the clean half), which a model's own threshold, chosen on
/// other data, does not show.
pub fn recall_at_fpr(scores: &[f32], labels: &[bool], max_fpr: f64) -> Option<f64> {
    let (pos, mut neg): (Vec<_>, Vec<_>) = scores.iter().zip(labels).partition(|(_, l)| **l);
    if neg.is_empty() || pos.is_empty() {
        return None;
    }
    neg.sort_by(|a, b| b.0.total_cmp(a.0));
    // Flagging strictly above the (allowed + 1)-th highest negative flags
    // at most `allowed` of them; past the last one, every row is flagged.
    let allowed = (max_fpr * neg.len() as f64).floor() as usize;
    let caught = match neg.get(allowed) {
        Some((cut, _)) => pos.iter().filter(|(s, _)| s > cut).count(),
        None => pos.len(),
    };
    Some(caught as f64 / pos.len() as f64)
}

/// Counts and rates at one threshold (`score >= threshold` is positive).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BinaryMetrics {
    pub tp: usize,
    pub fp: usize,
    pub tn: usize,
    #[serde(rename = "fn")]
    pub fn_: usize,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub accuracy: f64,
}

impl BinaryMetrics {
    pub fn at(scores: &[f32], labels: &[bool], threshold: f32) -> Self {
        let flags: Vec<bool> = scores.iter().map(|&s| s >= threshold).collect();
        Self::of(&flags, labels)
    }

    /// From each row's decision (rows may have had different thresholds).
    pub fn of(flags: &[bool], labels: &[bool]) -> Self {
        let mut m = Self::default();
        for (&f, &l) in flags.iter().zip(labels) {
            match (f, l) {
                (true, true) => m.tp += 1,
                (true, false) => m.fp += 1,
                (false, false) => m.tn += 1,
                (false, true) => m.fn_ += 1,
            }
        }
        let div = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        m.precision = div(m.tp, m.tp + m.fp);
        m.recall = div(m.tp, m.tp + m.fn_);
        m.f1 = if m.precision + m.recall > 0.0 {
            2.0 * m.precision * m.recall / (m.precision + m.recall)
        } else {
            0.0
        };
        m.accuracy = div(m.tp + m.tn, flags.len());
        m
    }
}

/// Platt scaling: `a, b` minimising the log loss of `sigmoid(a·z + b)`,
/// with Platt's smoothed targets (so a separable validation set does not
/// push `a` to infinity), by Newton's method with a backtracking line
/// search (Lin, Lin and Weng 2007): a plain Newton step from saturated
/// logits, where the Hessian is near zero, can jump to `a` of ±1e10 and
/// flip the ranking.
pub fn fit_platt(logits: &[f32], labels: &[bool]) -> (f32, f32) {
    let pos = labels.iter().filter(|&&l| l).count() as f64;
    let neg = labels.len() as f64 - pos;
    if pos == 0.0 || neg == 0.0 {
        return (1.0, 0.0);
    }
    let hi = (pos + 1.0) / (pos + 2.0);
    let lo = 1.0 / (neg + 2.0);
    let target = |l: bool| if l { hi } else { lo };
    // log(1 + e^s) without overflow.
    let softplus = |s: f64| s.max(0.0) + (-s.abs()).exp().ln_1p();
    let loss = |a: f64, b: f64| -> f64 {
        logits
            .iter()
            .zip(labels)
            .map(|(&z, &l)| {
                let s = a * z as f64 + b;
                softplus(s) - target(l) * s
            })
            .sum()
    };
    let (mut a, mut b) = (0.0f64, ((pos + 1.0) / (neg + 1.0)).ln());
    let mut f = loss(a, b);
    for _ in 0..100 {
        let (mut ga, mut gb, mut haa, mut hab, mut hbb) = (0.0, 0.0, 1e-12, 0.0, 1e-12);
        for (&z, &l) in logits.iter().zip(labels) {
            let z = z as f64;
            let p = 1.0 / (1.0 + (-(a * z + b)).exp());
            let d = p - target(l);
            ga += d * z;
            gb += d;
            let w = p * (1.0 - p);
            haa += w * z * z;
            hab += w * z;
            hbb += w;
        }
        if ga.abs() < 1e-7 && gb.abs() < 1e-7 {
            break;
        }
        let det = haa * hbb - hab * hab;
        if det.abs() < 1e-300 {
            break;
        }
        let da = -(hbb * ga - hab * gb) / det;
        let db = -(haa * gb - hab * ga) / det;
        let slope = ga * da + gb * db;
        let mut step = 1.0;
        let moved = loop {
            let (na, nb) = (a + step * da, b + step * db);
            let nf = loss(na, nb);
            if nf.is_finite() && nf <= f + 1e-4 * step * slope {
                a = na;
                b = nb;
                f = nf;
                break true;
            }
            step /= 2.0;
            if step < 1e-10 {
                break false;
            }
        };
        if !moved {
            break;
        }
    }
    if !(a.is_finite() && b.is_finite()) {
        return (1.0, 0.0);
    }
    (a as f32, b as f32)
}

/// The threshold with the highest recall among those reaching
/// `target_precision`; when none does, the one with the best F1. Returns
/// the threshold and whether the target was met.
pub fn choose_threshold(scores: &[f32], labels: &[bool], target_precision: f64) -> (f32, bool) {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let pos = labels.iter().filter(|&&l| l).count();
    let (mut tp, mut fp) = (0usize, 0usize);
    let mut best_target: Option<(usize, f32)> = None;
    let mut best_f1: (f64, f32) = (-1.0, 0.5);
    let mut i = 0;
    while i < idx.len() {
        let t = scores[idx[i]];
        while i < idx.len() && scores[idx[i]] == t {
            if labels[idx[i]] {
                tp += 1;
            } else {
                fp += 1;
            }
            i += 1;
        }
        let precision = tp as f64 / (tp + fp) as f64;
        let recall = if pos == 0 {
            0.0
        } else {
            tp as f64 / pos as f64
        };
        if precision >= target_precision && best_target.is_none_or(|(b, _)| tp > b) {
            best_target = Some((tp, t));
        }
        let f1 = if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall)
        } else {
            0.0
        };
        if f1 > best_f1.0 {
            best_f1 = (f1, t);
        }
    }
    match best_target {
        Some((_, t)) if pos > 0 => (t, true),
        _ => (best_f1.1, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_roc_auc_ranks_and_ties() {
        assert_eq!(
            roc_auc(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true]),
            Some(0.75)
        );
        assert_eq!(roc_auc(&[0.5, 0.5], &[false, true]), Some(0.5));
        assert_eq!(roc_auc(&[0.5, 0.7], &[true, true]), None);
    }

    #[test]
    fn test_recall_at_fpr_passes_the_allowed_negatives_only() {
        // 50 negatives scored 0.00 … 0.49 and one at 0.95; positives at
        // 0.97, 0.9, 0.6 and 0.3.
        let mut scores: Vec<f32> = (0..50).map(|i| i as f32 / 100.0).collect();
        scores.push(0.95);
        let mut labels = vec![false; 51];
        scores.extend([0.97, 0.9, 0.6, 0.3]);
        labels.extend([true; 4]);
        // 2% of 51 negatives allows 1: the cut is the second-highest
        // negative (0.49), so 0.97, 0.9 and 0.6 are caught.
        assert_eq!(recall_at_fpr(&scores, &labels, 0.02), Some(0.75));
        // None allowed: only what scores above the 0.95 negative.
        assert_eq!(recall_at_fpr(&scores, &labels, 0.0), Some(0.25));
        // A positive tied with the cut is not caught.
        assert_eq!(
            recall_at_fpr(&[0.5, 0.5, 0.9], &[false, true, true], 0.0),
            Some(0.5)
        );
        assert_eq!(recall_at_fpr(&[0.5, 0.7], &[true, true], 0.02), None);
        assert_eq!(recall_at_fpr(&[0.5], &[false], 1.0), None);
        assert_eq!(recall_at_fpr(&[0.5, 0.1], &[false, true], 1.0), Some(1.0));
    }

    #[test]
    fn test_threshold_reaches_target_precision() {
        let scores = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4];
        let labels = [true, true, false, true, false, false];
        let (t, met) = choose_threshold(&scores, &labels, 1.0);
        assert!(met);
        assert_eq!(t, 0.8);
        let m = BinaryMetrics::at(&scores, &labels, t);
        assert_eq!((m.tp, m.fp, m.fn_, m.tn), (2, 0, 1, 3));
        let (t, met) = choose_threshold(&scores, &labels, 0.75);
        assert!(met);
        assert_eq!(t, 0.6);
    }

    #[test]
    fn test_platt_recovers_scale() {
        // Labels drawn from sigmoid(2z − 1) deterministically by quantile.
        let mut z = Vec::new();
        let mut y = Vec::new();
        for i in 0..2000 {
            let zi = (i as f32 / 2000.0) * 6.0 - 3.0;
            let p = 1.0 / (1.0 + (-(2.0 * zi - 1.0)).exp());
            for k in 0..10 {
                z.push(zi);
                y.push((k as f32 + 0.5) / 10.0 < p);
            }
        }
        let (a, b) = fit_platt(&z, &y);
        assert!(
            (a - 2.0).abs() < 0.2 && (b + 1.0).abs() < 0.2,
            "a={a} b={b}"
        );
    }

    /// Large, nearly separable logits (a trained model's validation scores):
    /// a plain Newton step from there diverged to a ≈ −1e10, which ranked
    /// every insult below every clean text.
    #[test]
    fn test_platt_on_saturated_logits_keeps_the_ranking() {
        let mut z = Vec::new();
        let mut y = Vec::new();
        for i in 0..1500 {
            let pos = i % 2 == 0;
            let spread = (i % 97) as f32 / 97.0;
            z.push(if pos {
                8.0 + 30.0 * spread
            } else {
                -8.0 - 30.0 * spread
            });
            y.push(pos);
        }
        // A few mislabelled rows, as real validation sets have.
        z.extend([20.0, -25.0, 0.5]);
        y.extend([false, true, false]);
        let (a, b) = fit_platt(&z, &y);
        assert!(
            a.is_finite() && b.is_finite() && a > 0.0 && a < 100.0,
            "a={a} b={b}"
        );
        let s = |x: f32| 1.0 / (1.0 + (-(a * x + b)).exp());
        assert!(s(10.0) > 0.9 && s(-10.0) < 0.1, "a={a} b={b}");
        let scores: Vec<f32> = z.iter().map(|&x| s(x)).collect();
        assert!(roc_auc(&scores, &y).unwrap() > 0.99);
    }
}
