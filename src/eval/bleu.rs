//! Corpus BLEU exactly as sacreBLEU 2.x computes it with its defaults
//! (`BLEU()`: 13a tokenizer, case-sensitive, exponential smoothing, brevity
//! penalty, n-grams up to 4, one reference per line), plus its `zh`
//! tokenizer. Ported from `sacrebleu/metrics/bleu.py` and
//! `sacrebleu/tokenizers/tokenizer_{13a,re,zh}.py` (2.6.0); the committed
//! vectors in `tests/fixtures/eval-vectors/bleu.json` hold us to it.

use std::collections::HashMap;
use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

use super::pytext::{py_rstrip, py_split, py_strip};

/// The sacreBLEU release this port follows (and is tested against).
pub const SACREBLEU_VERSION: &str = "2.6.0";

/// n-grams up to this order count.
pub const MAX_NGRAM_ORDER: usize = 4;

/// How lines are cut into words before counting n-grams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Tokenize {
    /// mteval-v13a, the WMT standard and sacreBLEU's default.
    #[default]
    #[serde(rename = "13a")]
    Thirteen,
    /// Chinese: every CJK character is a word, the rest as 13a's regexes.
    #[serde(rename = "zh")]
    Zh,
}

impl Tokenize {
    pub fn name(self) -> &'static str {
        match self {
            Tokenize::Thirteen => "13a",
            Tokenize::Zh => "zh",
        }
    }

    /// sacreBLEU's signature of these settings, naming the version whose
    /// behaviour this module reproduces.
    pub fn signature(self) -> String {
        format!(
            "nrefs:1|case:mixed|eff:no|tok:{}|smooth:exp|version:{SACREBLEU_VERSION}",
            self.name()
        )
    }

    /// The tokenised line, words separated by one space (sacreBLEU's
    /// `_preprocess_segment`: right-strip, then the tokenizer).
    pub fn apply(self, line: &str) -> String {
        let line = py_rstrip(line);
        match self {
            Tokenize::Thirteen => tokenize_13a(line),
            Tokenize::Zh => tokenize_zh(line),
        }
    }

    /// The words of `line`.
    pub fn words(self, line: &str) -> Vec<String> {
        py_split(&self.apply(line))
            .into_iter()
            .map(str::to_string)
            .collect()
    }
}

impl std::str::FromStr for Tokenize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "13a" => Ok(Tokenize::Thirteen),
            "zh" => Ok(Tokenize::Zh),
            other => Err(format!("unknown tokenizer {other:?} (expected 13a or zh)")),
        }
    }
}

/// `TokenizerRegexp`: the four substitutions shared by 13a and zh, in order;
/// each replaces non-overlapping matches left to right, as Python's `re.sub`.
static RULES: LazyLock<[(Regex, &'static str); 4]> = LazyLock::new(|| {
    let re = |p: &str| Regex::new(p).expect("static regex");
    [
        // Punctuation and symbols (ASCII ranges {-~, [-`, space-&, (-+, :-@, /).
        (re(r"([{-~\[-` -&(-+:-@/])"), " ${1} "),
        // Period and comma unless preceded by a digit.
        (re(r"([^0-9])([.,])"), "${1} ${2} "),
        // Period and comma unless followed by a digit.
        (re(r"([.,])([^0-9])"), " ${1} ${2}"),
        // Dash when preceded by a digit.
        (re(r"([0-9])(-)"), "${1} ${2} "),
    ]
});

fn tokenize_regexp(line: &str) -> String {
    let mut s = line.to_string();
    for (re, rep) in RULES.iter() {
        s = re.replace_all(&s, *rep).into_owned();
    }
    py_split(&s).join(" ")
}

/// mteval-v13a: drop `<skipped>`, join hyphenated line breaks, unescape four
/// HTML entities, then the shared regexes.
pub fn tokenize_13a(line: &str) -> String {
    let mut line = line
        .replace("<skipped>", "")
        .replace("-\n", "")
        .replace('\n', " ");
    if line.contains('&') {
        line = line
            .replace("&quot;", "\"")
            .replace("&amp;", "&")
            .replace("&lt;", "<")
            .replace("&gt;", ">");
    }
    tokenize_regexp(&format!(" {line} "))
}

/// sacreBLEU's `zh`: strip, pad every "Chinese" character with spaces, then
/// the shared regexes (2.x no longer applies 13a's entity handling here).
pub fn tokenize_zh(line: &str) -> String {
    let mut out = String::with_capacity(line.len() * 2);
    for c in py_strip(line).chars() {
        if is_zh_char(c) {
            out.push(' ');
            out.push(c);
            out.push(' ');
        } else {
            out.push(c);
        }
    }
    tokenize_regexp(&out)
}

/// `_UCODE_RANGES` as Python really evaluates them: the table writes the
/// astral ranges as `'\u20000'` and `'\u2f800'`, which Python reads as two
/// characters (`'\u2000' + '0'`), so the string comparisons select
/// U+2001..=U+2A6D and U+2F81..=U+2FA1 instead of the CJK Extension B and
/// Compatibility Supplement blocks. We match that, not the intent.
const ZH_RANGES: [(u32, u32); 22] = [
    (0x3400, 0x4db5),
    (0x4e00, 0x9fa5),
    (0x9fa6, 0x9fbb),
    (0xf900, 0xfa2d),
    (0xfa30, 0xfa6a),
    (0xfa70, 0xfad9),
    (0x2001, 0x2a6d),
    (0x2f81, 0x2fa1),
    (0xff00, 0xffef),
    (0x2e80, 0x2eff),
    (0x3000, 0x303f),
    (0x31c0, 0x31ef),
    (0x2f00, 0x2fdf),
    (0x2ff0, 0x2fff),
    (0x3100, 0x312f),
    (0x31a0, 0x31bf),
    (0xfe10, 0xfe1f),
    (0xfe30, 0xfe4f),
    (0x2600, 0x26ff),
    (0x2700, 0x27bf),
    (0x3200, 0x32ff),
    (0x3300, 0x33ff),
];

fn is_zh_char(c: char) -> bool {
    let u = c as u32;
    ZH_RANGES.iter().any(|&(a, b)| (a..=b).contains(&u))
}

/// Sufficient statistics of a corpus (they add up over lines).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BleuStats {
    pub sys_len: u64,
    pub ref_len: u64,
    /// Clipped n-gram matches, n = 1..=4.
    pub counts: [u64; MAX_NGRAM_ORDER],
    /// Hypothesis n-grams, n = 1..=4.
    pub totals: [u64; MAX_NGRAM_ORDER],
}

impl BleuStats {
    /// Statistics of one tokenised hypothesis against one tokenised reference.
    pub fn of_pair(hyp: &[String], reference: &[String]) -> Self {
        let r = ngram_counts(reference);
        let h = ngram_counts(hyp);
        let mut s = BleuStats {
            sys_len: hyp.len() as u64,
            ref_len: reference.len() as u64,
            ..Self::default()
        };
        for (gram, &n) in &h {
            let order = gram.len() - 1;
            s.totals[order] += n;
            if let Some(&m) = r.get(gram) {
                s.counts[order] += n.min(m);
            }
        }
        s
    }

    pub fn add(&mut self, o: &BleuStats) {
        self.sys_len += o.sys_len;
        self.ref_len += o.ref_len;
        for i in 0..MAX_NGRAM_ORDER {
            self.counts[i] += o.counts[i];
            self.totals[i] += o.totals[i];
        }
    }

    /// The score (0-100) with exponential smoothing, as `BLEU.compute_bleu`.
    pub fn score(&self) -> Bleu {
        let bp = if self.sys_len < self.ref_len {
            if self.sys_len > 0 {
                (1.0 - self.ref_len as f64 / self.sys_len as f64).exp()
            } else {
                0.0
            }
        } else {
            1.0
        };
        let mut precisions = [0.0f64; MAX_NGRAM_ORDER];
        let mut out = Bleu {
            score: 0.0,
            bp,
            precisions,
            stats: self.clone(),
        };
        // No match at all: 0, not a smoothed small number (sacreBLEU #141).
        if self.counts.iter().all(|&c| c == 0) {
            return out;
        }
        let mut smooth = 1.0f64;
        for ((p, &count), &total) in precisions.iter_mut().zip(&self.counts).zip(&self.totals) {
            if total == 0 {
                break;
            }
            *p = if count == 0 {
                smooth *= 2.0;
                100.0 / (smooth * total as f64)
            } else {
                100.0 * count as f64 / total as f64
            };
        }
        // sacreBLEU's `my_log` floors log(0) at -9999999999 (a zero
        // precision left by the `break` above), which makes the score 0.
        let log_sum: f64 = precisions
            .iter()
            .map(|&p| if p == 0.0 { -9_999_999_999.0 } else { p.ln() })
            .sum();
        out.score = bp * (log_sum / MAX_NGRAM_ORDER as f64).exp();
        out.precisions = precisions;
        out
    }
}

/// A BLEU score with what it was computed from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bleu {
    /// 0-100.
    pub score: f64,
    /// Brevity penalty.
    pub bp: f64,
    /// n-gram precisions in percent (smoothed).
    pub precisions: [f64; MAX_NGRAM_ORDER],
    pub stats: BleuStats,
}

/// Corpus BLEU of line-aligned hypotheses and references.
pub fn corpus_bleu<H: AsRef<str>, R: AsRef<str>>(hyps: &[H], refs: &[R], tok: Tokenize) -> Bleu {
    let mut total = BleuStats::default();
    for (h, r) in hyps.iter().zip(refs) {
        total.add(&BleuStats::of_pair(
            &tok.words(h.as_ref()),
            &tok.words(r.as_ref()),
        ));
    }
    total.score()
}

fn ngram_counts(words: &[String]) -> HashMap<&[String], u64> {
    let mut m = HashMap::new();
    for n in 1..=MAX_NGRAM_ORDER {
        for w in words.windows(n) {
            *m.entry(w).or_insert(0) += 1;
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_13a_splits_punctuation_but_not_numbers() {
        assert_eq!(
            tokenize_13a("Hello, world! It costs 1,000.50 (3-5 days)."),
            "Hello , world ! It costs 1,000.50 ( 3 - 5 days ) ."
        );
        assert_eq!(tokenize_13a("&amp; &quot;x&quot;"), "& \" x \"");
        assert_eq!(tokenize_13a("   "), "");
    }

    #[test]
    fn test_zh_splits_each_character() {
        assert_eq!(tokenize_zh("订单NW-1已发货。"), "订 单 NW-1 已 发 货 。");
    }

    #[test]
    fn test_identical_lines_score_100_and_disjoint_score_0() {
        let a = ["the order shipped today from Berlin"];
        assert!((corpus_bleu(&a, &a, Tokenize::Thirteen).score - 100.0).abs() < 1e-9);
        let b = ["nothing in common here at all"];
        assert_eq!(corpus_bleu(&a, &b, Tokenize::Thirteen).score, 0.0);
        let empty: [&str; 0] = [];
        assert_eq!(corpus_bleu(&empty, &empty, Tokenize::Thirteen).score, 0.0);
    }

    #[test]
    fn test_short_hypothesis_pays_brevity_penalty() {
        let h = ["the order shipped today"];
        let r = ["the order shipped today from our warehouse"];
        let b = corpus_bleu(&h, &r, Tokenize::Thirteen);
        assert!((b.bp - (1.0f64 - 7.0 / 4.0).exp()).abs() < 1e-12);
        // Every n-gram matches, so only the penalty is left.
        assert!((b.score - 100.0 * b.bp).abs() < 1e-9);
        // Under four words there are no 4-grams: sacreBLEU scores 0.
        let h3 = ["the order shipped"];
        assert_eq!(corpus_bleu(&h3, &r, Tokenize::Thirteen).score, 0.0);
    }
}
