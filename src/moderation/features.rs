//! Text → bag of hashed n-gram buckets with counts. Works on any script
//! without word segmentation: character 1–3-grams carry Chinese (and any
//! other script), word uni/bigrams add context for space-delimited text.

use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

/// Featurizer settings; stored in `moderation.json` so inference hashes
/// exactly as training did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeaturizerConfig {
    /// Number of hash buckets (rows of the embedding table).
    pub buckets: u32,
    /// Mixed into every hash, so two models can use different collisions.
    pub hash_seed: u64,
    /// Smallest and largest character n-gram.
    pub char_ngrams: (usize, usize),
    /// Smallest and largest word n-gram (words of space-delimited scripts).
    pub word_ngrams: (usize, usize),
    /// Characters scored per text; a longer text is cut to this window (the
    /// verdict says so) to bound latency.
    pub max_chars: usize,
    /// Also score each clause of a text on its own and keep the highest
    /// score (trained the same way), so an insult in one clause of a long,
    /// polite request is not averaged away by the request's words. Models
    /// written before this setting score whole texts only.
    #[serde(default)]
    pub clauses: bool,
}

impl Default for FeaturizerConfig {
    fn default() -> Self {
        Self {
            buckets: 1 << 18,
            hash_seed: 0x6d6f_6465_7261_7465,
            char_ngrams: (1, 3),
            word_ngrams: (1, 2),
            max_chars: 1000,
            clauses: true,
        }
    }
}

/// Clauses scored beside the whole text at most; a longer text's later
/// clauses are left to the whole-text score (latency stays bounded).
pub const MAX_CLAUSES: usize = 16;

/// Where clauses end: sentence and clause punctuation, Latin and CJK.
const CLAUSE_ENDS: &[char] = &[
    '.', '!', '?', ';', ',', ':', '\n', '…', '，', '。', '！', '？', '；', '：', '、',
];

/// A text's clauses: the parts between [`CLAUSE_ENDS`] that hold a letter
/// or digit.
fn clauses(text: &str) -> Vec<&str> {
    text.split(CLAUSE_ENDS)
        .map(str::trim)
        .filter(|c| c.chars().any(char::is_alphanumeric))
        .collect()
}

/// The features of one text: distinct buckets with occurrence counts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Features {
    pub ids: Vec<u32>,
    pub weights: Vec<f32>,
    /// The text was longer than `max_chars` and only its start was used.
    pub truncated: bool,
}

// Twitter-style noise that says nothing about offence: links, user handles
// and HTML entities left by scrapers.
static URL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"https?://\S+|www\.\S+").expect("built-in URL pattern compiles"));
static MENTION: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"@\w+").expect("built-in mention pattern compiles"));

fn normalise(text: &str) -> String {
    let t = text
        .replace("&amp;", "&")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&#8220;", "\"")
        .replace("&#8221;", "\"");
    let t = URL.replace_all(&t, " url ");
    let t = MENTION.replace_all(&t, "@user");
    // Control characters become spaces; runs of whitespace collapse.
    let mut out = String::with_capacity(t.len());
    let mut space = true;
    for c in t.chars().flat_map(char::to_lowercase) {
        if c.is_whitespace() || c.is_control() {
            if !space {
                out.push(' ');
            }
            space = true;
        } else {
            out.push(c);
            space = false;
        }
    }
    if out.ends_with(' ') {
        out.pop();
    }
    out
}

/// Han, kana, hangul: scripts written without spaces between words.
pub(crate) fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30FF | 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xAC00..=0xD7AF
        | 0xF900..=0xFAFF | 0x20000..=0x2FA1F)
}

/// FNV-1a over the seed, a kind byte and the n-gram, then a 64-bit
/// finaliser (splitmix) so nearby n-grams spread over the buckets.
fn hash(seed: u64, kind: u8, parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    let mut eat = |b: u8| {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    };
    eat(kind);
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            eat(0x1f);
        }
        p.bytes().for_each(&mut eat);
    }
    let mut z = h;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl FeaturizerConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.buckets < 2 {
            return Err(format!("buckets must be at least 2, got {}", self.buckets));
        }
        let (a, b) = self.char_ngrams;
        let (c, d) = self.word_ngrams;
        if a == 0 || a > b || c == 0 || c > d || b > 8 || d > 4 {
            return Err(format!(
                "n-gram ranges must be 1 ≤ min ≤ max (chars ≤ 8, words ≤ 4), got chars {a}..{b}, words {c}..{d}"
            ));
        }
        if self.max_chars == 0 {
            return Err("max_chars must be positive".into());
        }
        Ok(())
    }

    /// What `text` is scored by: its features, then, with `clauses` and
    /// more than one clause, each clause's (at most [`MAX_CLAUSES`]). The
    /// text's score is the highest of theirs.
    pub fn windows(&self, text: &str) -> Vec<Features> {
        let whole = self.featurize(text);
        if !self.clauses {
            return vec![whole];
        }
        let parts = clauses(text);
        if parts.len() < 2 {
            return vec![whole];
        }
        std::iter::once(whole)
            .chain(
                parts
                    .into_iter()
                    .take(MAX_CLAUSES)
                    .map(|c| self.featurize(c)),
            )
            .collect()
    }

    /// The hashed features of `text`, sorted by bucket.
    pub fn featurize(&self, text: &str) -> Features {
        let norm = normalise(text);
        let truncated = norm.chars().count() > self.max_chars;
        let window: String = norm.chars().take(self.max_chars).collect();
        if window.is_empty() {
            return Features::default();
        }
        let mut buckets: Vec<u32> = Vec::new();
        let b = self.buckets as u64;
        let mut push = |h: u64| buckets.push((h % b) as u32);

        // Character n-grams over the text framed by spaces, so word starts
        // and ends get their own n-grams.
        let chars: Vec<char> = std::iter::once(' ')
            .chain(window.chars())
            .chain(std::iter::once(' '))
            .collect();
        let mut buf = String::new();
        for n in self.char_ngrams.0..=self.char_ngrams.1 {
            for w in chars.windows(n) {
                if n == 1 && w[0] == ' ' {
                    continue;
                }
                buf.clear();
                buf.extend(w);
                push(hash(self.hash_seed, b'c', &[&buf]));
            }
        }
        // Words: runs of letters, digits and apostrophes outside CJK.
        let words: Vec<&str> = window
            .split(|c: char| !(c.is_alphanumeric() || c == '\'') || is_cjk(c))
            .filter(|w| !w.is_empty())
            .collect();
        for n in self.word_ngrams.0..=self.word_ngrams.1 {
            for w in words.windows(n) {
                push(hash(self.hash_seed, b'w', w));
            }
        }
        Features::counted(buckets, truncated)
    }
}

impl Features {
    /// Each distinct id (sorted) with its number of occurrences as weight.
    pub fn counted(mut ids: Vec<u32>, truncated: bool) -> Self {
        ids.sort_unstable();
        let mut distinct = Vec::with_capacity(ids.len());
        let mut weights: Vec<f32> = Vec::with_capacity(ids.len());
        for id in ids {
            if distinct.last() == Some(&id) {
                if let Some(w) = weights.last_mut() {
                    *w += 1.0;
                }
            } else {
                distinct.push(id);
                weights.push(1.0);
            }
        }
        Features {
            ids: distinct,
            weights,
            truncated,
        }
    }
}

/// Pads a batch to its longest row: ids `[batch, n]` and weights (0 on
/// padding), row-major, with at least one column so empty texts still have
/// a shape.
pub(crate) fn pad(rows: &[&Features]) -> (usize, Vec<u32>, Vec<f32>) {
    let n = rows.iter().map(|f| f.ids.len()).max().unwrap_or(0).max(1);
    let mut ids = vec![0u32; rows.len() * n];
    let mut weights = vec![0f32; rows.len() * n];
    for (r, f) in rows.iter().enumerate() {
        ids[r * n..r * n + f.ids.len()].copy_from_slice(&f.ids);
        weights[r * n..r * n + f.weights.len()].copy_from_slice(&f.weights);
    }
    (n, ids, weights)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_featurize_is_deterministic_and_bounded() {
        let cfg = FeaturizerConfig {
            buckets: 1 << 10,
            ..Default::default()
        };
        let a = cfg.featurize("Hello @someone, see https://x.y/z &amp; 你好世界");
        let b = cfg.featurize("hello @other, see http://q   & 你好世界");
        assert_eq!(a, b, "handles, links, case and entities normalise away");
        assert!(a.ids.iter().all(|&i| i < 1 << 10));
        assert!(a.ids.windows(2).all(|w| w[0] < w[1]));
        let long = "ab ".repeat(5000);
        let f = cfg.featurize(&long);
        assert!(f.truncated);
        assert!(!cfg.featurize("short").truncated);
        assert!(cfg.featurize("").ids.is_empty());
        // Control characters and emoji featurize without panicking.
        assert!(!cfg.featurize("\u{0}\u{7}😀\u{202e}").ids.is_empty());
    }

    #[test]
    fn test_windows_are_the_text_then_its_clauses() {
        let cfg = FeaturizerConfig::default();
        let text = "I need to change my address, dumbass. 快递到哪了？你这个笨蛋";
        let w = cfg.windows(text);
        assert_eq!(w.len(), 5);
        assert_eq!(w[0], cfg.featurize(text), "the whole text first");
        assert_eq!(w[2], cfg.featurize("dumbass"));
        assert_eq!(w[4], cfg.featurize("你这个笨蛋"));
        // One clause, no letters between the marks, or clauses off: the
        // text alone.
        assert_eq!(cfg.windows("where is my order?").len(), 1);
        assert_eq!(cfg.windows("?!, ...").len(), 1);
        let off = FeaturizerConfig {
            clauses: false,
            ..FeaturizerConfig::default()
        };
        assert_eq!(off.windows(text), vec![off.featurize(text)]);
        // Bounded however many clauses a text has.
        assert_eq!(cfg.windows(&"a, ".repeat(100)).len(), 1 + MAX_CLAUSES);
    }

    #[test]
    fn test_seed_changes_buckets() {
        let a = FeaturizerConfig::default().featurize("some words here");
        let b = FeaturizerConfig {
            hash_seed: 1,
            ..Default::default()
        }
        .featurize("some words here");
        assert_ne!(a.ids, b.ids);
    }
}
