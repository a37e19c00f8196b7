//! A customer's misspelt word ("cancle", "dishwaser", "botle") is read as
//! the knowledge base's word one edit away before the question is searched.
//! BM25 matches whole stemmed words, so a misspelling matched nothing and
//! left the ranking to the other words: "how long do i have to cancle my
//! order" found the entry about changing an order.
//!
//! The known words are those of the passages and of the texts the router
//! learnt from, its questions and its negatives, so a word the knowledge
//! base already knows in its misspelt form (a training question that wrote
//! "warrenty") is kept, and so is one it learnt as "none of these".
//! Candidates come from a one-deletion index (SymSpell's idea at edit
//! distance 1): a word is filed under itself and each of its one-letter
//! deletions, so a letter left out or added, or two swapped, share a key.
//!
//! A changed letter is not read as a typo, nor any edit of the first
//! letter: on the customer-words sets those were mostly other words
//! ("hiring" → "hiking", "shopping" → "shipping", "height" → "weight",
//! "couch" → "touch"), while letters left out, doubled or swapped were
//! typos ("botle", "shipp", "retrun", "mcuh").

use std::collections::HashMap;

use crate::eval::porter;

use super::analyze::TYPO_MIN_CHARS;

/// Known words, their counts, and the one-deletion index over them.
#[derive(Debug, Default)]
pub struct Speller {
    words: Vec<(String, u32)>,
    position: HashMap<String, usize>,
    deletions: HashMap<String, Vec<usize>>,
}

/// The lower-cased runs of ASCII letters of `text`, with their byte ranges.
fn words(text: &str) -> impl Iterator<Item = (usize, usize)> + '_ {
    let bytes = text.as_bytes();
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < bytes.len() && !bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        if i >= bytes.len() {
            return None;
        }
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        Some((start, i))
    })
}

/// `word` and each of its one-letter deletions.
fn keys(word: &str) -> impl Iterator<Item = String> + '_ {
    std::iter::once(word.to_string()).chain((0..word.len()).map(|i| {
        let mut k = String::with_capacity(word.len() - 1);
        k.push_str(&word[..i]);
        k.push_str(&word[i + 1..]);
        k
    }))
}

/// `typed` is `known` with one letter after the first left out, added, or
/// swapped with its neighbour.
fn slip(typed: &str, known: &str) -> bool {
    let (t, k) = (typed.as_bytes(), known.as_bytes());
    let same = t.iter().zip(k).take_while(|(a, b)| a == b).count();
    if same == 0 || (same == t.len().min(k.len()) && t.len() == k.len()) {
        return false;
    }
    let (a, b) = (&t[same..], &k[same..]);
    match t.len() as isize - k.len() as isize {
        1 => a[1..] == *b,
        -1 => *a == b[1..],
        0 => a.len() >= 2 && a[0] == b[1] && a[1] == b[0] && a[2..] == b[2..],
        _ => false,
    }
}

impl Speller {
    /// Knows every word of `texts`.
    pub fn new<'a>(texts: impl IntoIterator<Item = &'a str>) -> Self {
        let mut s = Self::default();
        for text in texts {
            for (a, b) in words(text) {
                let w = text[a..b].to_ascii_lowercase();
                match s.position.get(&w) {
                    Some(&i) => s.words[i].1 += 1,
                    None => {
                        let i = s.words.len();
                        for k in keys(&w) {
                            s.deletions.entry(k).or_default().push(i);
                        }
                        s.position.insert(w.clone(), i);
                        s.words.push((w, 1));
                    }
                }
            }
        }
        s
    }

    /// The known word `word` (lower-case ASCII letters) misspells, when it
    /// is not known itself: one letter left out, added or swapped with the
    /// next, not the first; the commonest of them.
    pub fn correct(&self, word: &str) -> Option<&str> {
        if word.len() < TYPO_MIN_CHARS || self.position.contains_key(word) {
            return None;
        }
        let mut best: Option<(u32, &str)> = None;
        for k in keys(word) {
            for &i in self.deletions.get(&k).into_iter().flatten() {
                let (known, count) = (&self.words[i].0, self.words[i].1);
                // The commonest; between equals, the first in order.
                let better =
                    best.is_none_or(|(c, w)| count > c || (count == c && known.as_str() < w));
                if better && known.len() >= TYPO_MIN_CHARS && slip(word, known) {
                    best = Some((count, known));
                }
            }
        }
        // An inflection ("pockets", "pocket") is the same index term: BM25
        // finds it as it is, and the router's reading of it stands.
        best.map(|(_, w)| w)
            .filter(|w| porter::stem(w) != porter::stem(word))
    }

    /// `text` with its misspelt words corrected, when it has any.
    pub fn correct_text(&self, text: &str) -> Option<String> {
        let mut out = String::with_capacity(text.len());
        let mut last = 0;
        let mut changed = false;
        for (a, b) in words(text) {
            let w = text[a..b].to_ascii_lowercase();
            if let Some(known) = self.correct(&w) {
                out.push_str(&text[last..a]);
                out.push_str(known);
                last = b;
                changed = true;
            }
        }
        changed.then(|| {
            out.push_str(&text[last..]);
            out
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_a_misspelt_word_is_read_as_the_known_word_one_edit_away() {
        let s = Speller::new([
            "Can I cancel my order? Orders can be canceled within 1 hour.",
            "Insulated bottle: dishwasher safe. The bottle keeps drinks cold.",
            "how do i cancel",
        ]);
        let fixed = |t: &str| s.correct_text(t);
        assert_eq!(
            fixed("how long do i have to cancle my order?").as_deref(),
            Some("how long do i have to cancel my order?")
        );
        assert_eq!(
            fixed("can the Botle go in the dishwaser??").as_deref(),
            Some("can the bottle go in the dishwasher??")
        );
        assert_eq!(fixed("can I cancel my order"), None, "known words stay");
        assert_eq!(
            fixed("is it ok"),
            None,
            "short words are never read as others"
        );
        assert_eq!(
            fixed("cancelling"),
            None,
            "two edits away is another word, not a typo"
        );
        assert_eq!(
            s.correct("bottles"),
            None,
            "an inflection is the same index term"
        );
    }

    #[test]
    fn test_a_changed_letter_or_first_letter_is_another_word() {
        let s = Speller::new(["hiking trips and shipping, and the stakes of a tent"]);
        assert_eq!(s.correct("hiring"), None);
        assert_eq!(s.correct("shopping"), None);
        assert_eq!(s.correct("takes"), None, "the first letter left out");
        assert_eq!(s.correct("shiping"), Some("shipping"));
        assert_eq!(s.correct("tirps"), Some("trips"));
    }

    #[test]
    fn test_the_commonest_of_two_known_words_wins() {
        // "fils" is one letter short of "fills" and of "fails".
        let s = Speller::new(["fills fills fails"]);
        assert_eq!(s.correct("fils"), Some("fills"));
        let s = Speller::new(["fills fails fails"]);
        assert_eq!(s.correct("fils"), Some("fails"));
    }
}
