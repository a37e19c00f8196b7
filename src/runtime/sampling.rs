//! Choosing the next token: repetition penalty, then greedy or temperature
//! sampling restricted by top-k and top-p, from a seeded RNG so a run can
//! be repeated exactly.

use rand::Rng;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::bundle::GenerationDefaults;

/// Settings of one generation; defaults come from the bundle's
/// `generation.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamplingParams {
    pub max_new_tokens: usize,
    /// 0 means greedy decoding.
    pub temperature: f32,
    /// Keep only the k most likely tokens (0 = off).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches p (1 = off).
    pub top_p: f32,
    /// > 1 discourages tokens already in the context (1 = off).
    pub repetition_penalty: f32,
    /// Added to the logit of each token that would continue a run of at
    /// least [`COPY_MIN_RUN`] tokens the reply shares with its context
    /// passages (the longest such runs; 0 = off). A small model starts to
    /// quote a passage and loses the thread halfway ("Weight: 2-layer"
    /// for "Weight: 2.1 kg"); this keeps it on the run it chose, and it
    /// still chooses where to start and when to stop.
    #[serde(default)]
    pub copy_bias: f32,
    pub seed: u64,
    /// Tokens that end the reply (e.g. `<|end|>`).
    pub stop_tokens: Vec<String>,
    /// Strings that end the reply; the text is cut before them.
    pub stop_strings: Vec<String>,
    /// Texts the reply may not open with: while the reply so far is the
    /// start of one (token by token, as the template encodes a reply), the
    /// token that would continue it is never drawn. The pipeline passes
    /// the abstain text when retrieval is confident: the model learnt to
    /// say it word for word from the distractor-only examples, and says it
    /// with the answer first in its context.
    #[serde(default)]
    pub avoid_openings: Vec<String>,
}

impl From<&GenerationDefaults> for SamplingParams {
    fn from(d: &GenerationDefaults) -> Self {
        Self {
            max_new_tokens: d.max_new_tokens,
            temperature: d.temperature,
            top_k: d.top_k,
            top_p: d.top_p,
            repetition_penalty: d.repetition_penalty,
            copy_bias: d.copy_bias,
            seed: 0,
            stop_tokens: d.stop_tokens.clone(),
            stop_strings: Vec::new(),
            avoid_openings: Vec::new(),
        }
    }
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self::from(&GenerationDefaults::default())
    }
}

impl SamplingParams {
    pub fn greedy(mut self) -> Self {
        self.temperature = 0.0;
        self
    }

    pub fn validate(&self) -> Result<(), String> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(format!("temperature ({}) must be ≥ 0", self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(format!("top_p ({}) must be in (0, 1]", self.top_p));
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty.is_finite()) {
            return Err(format!(
                "repetition_penalty ({}) must be > 0",
                self.repetition_penalty
            ));
        }
        Ok(())
    }
}

/// Command-line/config overrides of a bundle's `generation.json`; `None`
/// keeps the bundle's value.
#[derive(Debug, Clone, Default, PartialEq, clap::Args)]
pub struct SamplingOverrides {
    /// Sampling temperature (0 = greedy).
    #[arg(long)]
    pub temperature: Option<f32>,
    #[arg(long)]
    pub top_k: Option<usize>,
    #[arg(long)]
    pub top_p: Option<f32>,
    #[arg(long)]
    pub repetition_penalty: Option<f32>,
    #[arg(long)]
    pub max_new_tokens: Option<usize>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Also stop at this string (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
}

impl SamplingOverrides {
    pub fn apply(&self, mut p: SamplingParams) -> SamplingParams {
        if let Some(v) = self.temperature {
            p.temperature = v;
        }
        if let Some(v) = self.top_k {
            p.top_k = v;
        }
        if let Some(v) = self.top_p {
            p.top_p = v;
        }
        if let Some(v) = self.repetition_penalty {
            p.repetition_penalty = v;
        }
        if let Some(v) = self.max_new_tokens {
            p.max_new_tokens = v;
        }
        p.seed = self.seed;
        p.stop_strings.extend(self.stop.iter().cloned());
        p
    }
}

/// The shortest run of reply tokens [`SamplingParams::copy_bias`] follows:
/// single tokens ("the", "$") recur everywhere.
pub const COPY_MIN_RUN: usize = 2;

/// The longest run [`copy_continuations`] looks back over.
const COPY_MAX_RUN: usize = 16;

/// The tokens of `source` that follow the longest runs (of at least
/// [`COPY_MIN_RUN`] tokens) that end `generated`.
pub fn copy_continuations(source: &[u32], generated: &[u32]) -> Vec<u32> {
    let longest = generated.len().min(COPY_MAX_RUN);
    for n in (COPY_MIN_RUN..=longest).rev() {
        let tail = &generated[generated.len() - n..];
        let mut next: Vec<u32> = source
            .windows(n + 1)
            .filter(|w| &w[..n] == tail)
            .map(|w| w[n])
            .collect();
        if !next.is_empty() {
            next.sort_unstable();
            next.dedup();
            return next;
        }
    }
    Vec::new()
}

/// Bans the token of each of `openings` (token ids) that would continue
/// it when `generated` is a proper start of it.
pub fn ban_openings(logits: &mut [f32], openings: &[Vec<u32>], generated: &[u32]) {
    for o in openings {
        if let Some(&next) = o.get(generated.len()).filter(|_| o.starts_with(generated))
            && let Some(x) = logits.get_mut(next as usize)
        {
            *x = f32::NEG_INFINITY;
        }
    }
}

/// Picks tokens for one sequence.
pub struct Sampler {
    params: SamplingParams,
    rng: ChaCha8Rng,
}

impl Sampler {
    pub fn new(params: &SamplingParams, stream: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(params.seed);
        // Each row of a batch draws from its own stream, so batching does
        // not change what a row samples.
        rng.set_stream(stream);
        Self {
            params: params.clone(),
            rng,
        }
    }

    /// Chooses the next token from `logits` (modified in place); `banned`
    /// ids are never chosen, `history` feeds the repetition penalty.
    pub fn pick(&mut self, logits: &mut [f32], history: &[u32], banned: &[bool]) -> u32 {
        let p = &self.params;
        for (l, &b) in logits.iter_mut().zip(banned) {
            if b {
                *l = f32::NEG_INFINITY;
            }
        }
        if p.repetition_penalty != 1.0 {
            let mut seen = vec![false; logits.len()];
            for &t in history {
                if let Some(s) = seen.get_mut(t as usize)
                    && !*s
                {
                    *s = true;
                    let l = &mut logits[t as usize];
                    // CTRL's penalty, as in transformers: shrink positive
                    // logits, push negative ones further down.
                    *l = if *l > 0.0 {
                        *l / p.repetition_penalty
                    } else {
                        *l * p.repetition_penalty
                    };
                }
            }
        }
        if p.temperature <= 0.0 {
            return argmax(logits);
        }
        // Without top-k, every token is among the "k" first.
        let k = if p.top_k > 0 { p.top_k } else { logits.len() };
        let cand = top_k(logits, k, p.temperature);
        if cand.is_empty() {
            return argmax(logits);
        }
        let max = cand[0].1;
        let mut probs: Vec<f64> = cand.iter().map(|c| ((c.1 - max) as f64).exp()).collect();
        let sum: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|x| *x /= sum);
        if p.top_p < 1.0 {
            let mut acc = 0.0;
            let mut keep = probs.len();
            for (i, &q) in probs.iter().enumerate() {
                acc += q;
                if acc >= p.top_p as f64 {
                    keep = i + 1;
                    break;
                }
            }
            probs.truncate(keep);
            let s: f64 = probs.iter().sum();
            probs.iter_mut().for_each(|x| *x /= s);
        }
        let mut r: f64 = self.rng.random();
        for (i, &q) in probs.iter().enumerate() {
            if r < q {
                return cand[i].0;
            }
            r -= q;
        }
        cand[probs.len() - 1].0
    }
}

/// Highest first, ties by id: a total order, so the kept set and its order
/// do not depend on how they were found.
fn order(a: &(u32, f32), b: &(u32, f32)) -> std::cmp::Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
}

/// Where a non-finite logit was: [`sort_key`] puts it below every float.
const EXCLUDED: f32 = f32::from_bits(u32::MAX);

/// Tokens per block whose largest logit [`top_k`] looks at first.
const BLOCK: usize = 16;

/// The `k` first in [`order`] of the finite `logits` divided by
/// `temperature`, in that order (`logits` is overwritten). A draw per row
/// per step is what a large batch adds to its forward pass, and sorting
/// or selecting over the whole vocabulary was most of it; here only
/// passes that vectorize touch every token. k blocks reach the k-th
/// largest block maximum, so k tokens do: no token below it can be among
/// the k first, and only the few blocks above it are looked into.
fn top_k(logits: &mut [f32], k: usize, temperature: f32) -> Vec<(u32, f32)> {
    for l in logits.iter_mut() {
        *l = if l.is_finite() {
            *l / temperature
        } else {
            EXCLUDED
        };
    }
    let maxima: Vec<i32> = logits
        .chunks(BLOCK)
        .map(|b| b.iter().fold(i32::MIN, |m, &x| m.max(sort_key(x))))
        .collect();
    let mut floor = i32::MIN + 1;
    if maxima.len() > k {
        let mut m = maxima.clone();
        floor = floor.max(*m.select_nth_unstable_by(k - 1, |a, b| b.cmp(a)).1);
    }
    let mut kept = Vec::with_capacity(k.saturating_mul(2).min(logits.len()));
    for (b, block) in logits.chunks(BLOCK).enumerate() {
        if maxima[b] < floor {
            continue;
        }
        kept.extend(
            block
                .iter()
                .enumerate()
                .filter(|&(_, &x)| sort_key(x) >= floor)
                .map(|(j, &x)| ((b * BLOCK + j) as u32, x)),
        );
    }
    if kept.len() > k {
        kept.select_nth_unstable_by(k - 1, order);
        kept.truncate(k);
    }
    kept.sort_by(order);
    kept
}

/// `f32::total_cmp`'s order as an integer's, which a maximum over a block
/// vectorizes.
fn sort_key(x: f32) -> i32 {
    let b = x.to_bits() as i32;
    b ^ (((b >> 31) as u32) >> 1) as i32
}

pub(crate) fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_copy_continuations_follow_the_longest_shared_run() {
        // The context holds "5 . 9 5" and "5 . 1 0": after "5 ." both
        // runs continue; after "$ 5 ." only the one that also has "$".
        let source = [40, 5, 6, 9, 5, 41, 7, 5, 6, 1, 0];
        assert_eq!(copy_continuations(&source, &[3, 5, 6]), vec![1, 9]);
        assert_eq!(copy_continuations(&source, &[3, 40, 5, 6]), vec![9]);
        // One shared token is no run; nothing shared, nothing to follow.
        assert!(copy_continuations(&source, &[3, 6]).is_empty());
        assert!(copy_continuations(&source, &[]).is_empty());
        assert!(copy_continuations(&source, &[2, 3]).is_empty());
        // A run that ends the source has no continuation.
        assert!(copy_continuations(&source, &[6, 1, 0]).is_empty());
    }

    #[test]
    fn test_ban_openings_bans_only_the_next_token_of_a_started_opening() {
        let openings = vec![vec![5, 6, 7], vec![5, 8]];
        let banned = |generated: &[u32]| {
            let mut l = [0.0f32; 10];
            ban_openings(&mut l, &openings, generated);
            (0..10u32)
                .filter(|&t| l[t as usize] == f32::NEG_INFINITY)
                .collect::<Vec<_>>()
        };
        assert_eq!(banned(&[]), vec![5]);
        assert_eq!(banned(&[5]), vec![6, 8]);
        assert_eq!(banned(&[5, 6]), vec![7]);
        // Past an opening, or off it, nothing is banned.
        assert!(banned(&[5, 6, 7]).is_empty());
        assert!(banned(&[4]).is_empty());
        assert!(banned(&[5, 9]).is_empty());
        // An id beyond the vocabulary is ignored, not a panic.
        let mut l = [0.0f32; 3];
        ban_openings(&mut l, &[vec![42]], &[]);
        assert!(l.iter().all(|x| *x == 0.0));
    }

    fn params(temperature: f32, top_k: usize, top_p: f32, rep: f32) -> SamplingParams {
        SamplingParams {
            temperature,
            top_k,
            top_p,
            repetition_penalty: rep,
            seed: 7,
            ..SamplingParams::default()
        }
    }

    #[test]
    fn test_greedy_penalty_and_bans() {
        let mut s = Sampler::new(&params(0.0, 0, 1.0, 1.0), 0);
        assert_eq!(s.pick(&mut [0.1, 2.0, 1.0], &[], &[false; 3]), 1);
        assert_eq!(s.pick(&mut [0.1, 2.0, 1.0], &[], &[false, true, false]), 2);
        // Penalty 4 turns 2.0 into 0.5, below 1.0.
        let mut s = Sampler::new(&params(0.0, 0, 1.0, 4.0), 0);
        assert_eq!(s.pick(&mut [0.1, 2.0, 1.0], &[1, 1], &[false; 3]), 2);
    }

    #[test]
    fn test_top_k_and_top_p_restrict_the_support() {
        let logits = [3.0f32, 2.9, 0.0, -1.0, 2.8];
        let mut seen = std::collections::BTreeSet::new();
        let mut s = Sampler::new(&params(1.0, 2, 1.0, 1.0), 0);
        for _ in 0..200 {
            seen.insert(s.pick(&mut logits.clone(), &[], &[false; 5]));
        }
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec![0, 1]);
        // top_p 0.5 over ~[0.35, 0.32, 0.29, ...]: the first two only.
        let mut seen = std::collections::BTreeSet::new();
        let mut s = Sampler::new(&params(1.0, 0, 0.5, 1.0), 0);
        for _ in 0..200 {
            seen.insert(s.pick(&mut logits.clone(), &[], &[false; 5]));
        }
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec![0, 1]);
    }

    #[test]
    fn test_top_k_keeps_what_a_full_sort_keeps() {
        // Coarse values, so many ties: they must go by id, as in a sort.
        // A temperature that rounds distinct logits to one value, and
        // banned (infinite) and NaN logits, which are never kept.
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let mut logits: Vec<f32> = (0..500)
            .map(|_| f32::from(rng.random_range(-20i8..20)) / 4.0)
            .collect();
        logits[3] = f32::NEG_INFINITY;
        logits[7] = f32::NAN;
        logits[9] = f32::INFINITY;
        for t in [1.0, 0.7, 1e-39] {
            let mut sorted: Vec<(u32, f32)> = logits
                .iter()
                .enumerate()
                .filter(|(_, l)| l.is_finite())
                .map(|(i, &l)| (i as u32, l / t))
                .collect();
            sorted.sort_by(order);
            for k in [1, 2, 40, 497, 600] {
                let want = &sorted[..k.min(sorted.len())];
                assert_eq!(top_k(&mut logits.clone(), k, t), want, "k = {k}, t = {t}");
            }
        }
    }

    #[test]
    fn test_sort_key_orders_as_total_cmp() {
        let xs = [
            f32::NEG_INFINITY,
            -3.5,
            -f32::MIN_POSITIVE,
            -0.0,
            0.0,
            1e-42,
            2.0,
            f32::MAX,
            f32::INFINITY,
        ];
        for a in xs {
            assert!(sort_key(EXCLUDED) < sort_key(a));
            for b in xs {
                assert_eq!(sort_key(a).cmp(&sort_key(b)), a.total_cmp(&b), "{a} {b}");
            }
        }
        assert_eq!(sort_key(EXCLUDED), i32::MIN);
    }

    #[test]
    fn test_same_seed_same_choices() {
        let draw = |seed| {
            let mut p = params(1.0, 0, 1.0, 1.0);
            p.seed = seed;
            let mut s = Sampler::new(&p, 3);
            (0..50)
                .map(|_| s.pick(&mut [1.0, 1.0, 1.0, 1.0], &[], &[false; 4]))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(1), draw(1));
        assert_ne!(draw(1), draw(2));
    }
}
