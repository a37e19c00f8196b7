//! Text → index terms for BM25: lower-cased words, English stop words
//! dropped and the rest Porter-stemmed (the stemmer `eval` already uses),
//! numbers kept whole ("14.95", "2-3" → "2", "3"), and Chinese (any Han
//! text, written without spaces) as character unigrams and bigrams, which
//! match words without a segmenter's dictionary.

use std::collections::HashSet;
use std::sync::LazyLock;

use crate::eval::porter;

/// Words that carry no topic in a support question.
static STOP: LazyLock<HashSet<&'static str>> = LazyLock::new(|| {
    [
        "a", "about", "am", "an", "and", "any", "are", "as", "at", "be", "been", "but", "by",
        "can", "could", "did", "do", "does", "for", "from", "get", "got", "had", "has", "have",
        "hello", "hey", "hi", "how", "i", "if", "im", "in", "is", "it", "its", "just", "let", "me",
        "my", "of", "on", "or", "our", "please", "pls", "so", "that", "the", "their", "them",
        "then", "there", "these", "they", "this", "to", "u", "ur", "us", "was", "we", "were",
        "what", "when", "where", "which", "who", "will", "with", "would", "you", "your", "thanks",
        "thank", "thx", "ok", "okay", "yes", "also", "some", "need", "want", "know", "tell",
        // Contractions customers write without the apostrophe.
        "whats", "hows", "wheres", "dont", "doesnt", "didnt", "isnt", "cant", "wont",
    ]
    .into_iter()
    .collect()
});

/// Words that open a question of its own after "and" or a comma ("…, and
/// can I pay in euros?").
const CLAUSE_OPENERS: &[&str] = &[
    "can", "could", "do", "does", "did", "is", "are", "will", "would", "should", "how", "what",
    "whats", "when", "where", "which", "who", "why", "if",
];

/// The questions `text` asks, when it asks more than one: split at sentence
/// ends and where "and", "or", "also" or a comma opens a new question
/// ("how long does standard take and if i order at 4pm when does it
/// ship"). Each part has at least one index term; one part means one
/// question. Plain "and" between nouns ("express and overnight") is no
/// split.
pub fn clauses(text: &str) -> Vec<&str> {
    let bare = |w: &str| {
        w.trim_matches(|c: char| !c.is_alphanumeric())
            .to_lowercase()
    };
    let mut out = Vec::new();
    for sentence in text.split_inclusive(['?', '!', ';']) {
        let mut start = 0;
        let words: Vec<(usize, &str)> = sentence
            .split_whitespace()
            .map(|w| (w.as_ptr() as usize - sentence.as_ptr() as usize, w))
            .collect();
        for (i, &(at, w)) in words.iter().enumerate() {
            let Some(&(_, next)) = words.get(i + 1) else {
                break;
            };
            let opens = CLAUSE_OPENERS.contains(&bare(next).as_str());
            let joins = matches!(bare(w).as_str(), "and" | "or" | "also" | "plus");
            if opens && joins {
                out.push(&sentence[start..at]);
                start = at + w.len();
            } else if opens && w.ends_with(',') {
                out.push(&sentence[start..at + w.len()]);
                start = at + w.len();
            }
        }
        out.push(&sentence[start..]);
    }
    let out: Vec<&str> = out
        .into_iter()
        .map(|c| c.trim_matches(|c: char| c.is_whitespace() || c == ','))
        .filter(|c| !terms(c).is_empty())
        .collect();
    if out.len() < 2 { Vec::new() } else { out }
}

/// Words that point back to something said before ("is it waterproof?",
/// "how much do they cost", "这个多少钱").
const BACK_REFERENCES: &[&str] = &[
    "it", "its", "they", "them", "their", "this", "that", "these", "those",
];
const BACK_REFERENCES_ZH: &[&str] = &["它", "这个", "那个", "这款", "那款"];

/// `text` points back to something said before.
pub fn refers_back(text: &str) -> bool {
    text.split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .map(|w| without_clitic(&w.to_lowercase()))
        .any(|w| BACK_REFERENCES.contains(&w.as_str()))
        || BACK_REFERENCES_ZH.iter().any(|w| text.contains(w))
}

pub(crate) fn is_han(c: char) -> bool {
    matches!(c as u32, 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF | 0x20000..=0x2FA1F)
}

/// The index terms of `text`, in order.
pub fn terms(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut han: Vec<char> = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    let flush_word = |word: &mut String, out: &mut Vec<String>| {
        if !word.is_empty() {
            let w = std::mem::take(word);
            let w = without_clitic(w.trim_matches(['.', '\'']));
            if !w.is_empty() && !STOP.contains(w.as_str()) {
                if w.chars().all(|c| c.is_ascii_alphabetic()) {
                    out.push(porter::stem(&w));
                } else {
                    out.push(w);
                }
            }
        }
    };
    let flush_han = |han: &mut Vec<char>, out: &mut Vec<String>| {
        for (i, c) in han.iter().enumerate() {
            out.push(c.to_string());
            if let Some(n) = han.get(i + 1) {
                out.push(format!("{c}{n}"));
            }
        }
        han.clear();
    };
    for (i, &c) in chars.iter().enumerate() {
        if is_han(c) {
            flush_word(&mut word, &mut out);
            han.push(c);
            continue;
        }
        flush_han(&mut han, &mut out);
        let lower: Vec<char> = c.to_lowercase().collect();
        let digit_dot = c == '.'
            && word.chars().last().is_some_and(|p| p.is_ascii_digit())
            && chars.get(i + 1).is_some_and(|n| n.is_ascii_digit());
        let apostrophe = matches!(c, '\'' | '\u{2019}') && !word.is_empty();
        if apostrophe {
            word.push('\'');
        } else if c.is_alphanumeric() || digit_dot {
            word.extend(lower);
        } else {
            flush_word(&mut word, &mut out);
        }
    }
    flush_word(&mut word, &mut out);
    flush_han(&mut han, &mut out);
    out
}

/// Shortest term a one-letter typo is read in: below it, one edit turns
/// too many words into others ("bag" and "tag").
pub(super) const TYPO_MIN_CHARS: usize = 4;

/// `term` (an analysed query term) is a one-edit misspelling of `known`
/// (a letter left out, added, changed, or two swapped: "retrun", "accpet",
/// "skilet"). Only plain words of at least [`TYPO_MIN_CHARS`] letters.
pub fn is_typo_of(term: &str, known: &str) -> bool {
    let plain = |w: &str| w.len() >= TYPO_MIN_CHARS && w.bytes().all(|b| b.is_ascii_lowercase());
    plain(term)
        && plain(known)
        && term.len().abs_diff(known.len()) <= 1
        && strsim::osa_distance(term, known) == 1
}

/// `term` is a misspelt stop word ("wich", "whta"): a word that asks, not
/// one the passage must have.
pub fn is_stop_word_typo(term: &str) -> bool {
    STOP.iter().any(|w| is_typo_of(term, w))
}

/// The word without its possessive or contraction: "chair's" and
/// "customers'" are about a chair and customers, "what's" and "doesn't"
/// ask as "what" and "does" do. Kept whole, such a word matched no
/// passage, so "what's the camp chair's price?" ranked the stove (it has
/// "camp" and a price) over the chair.
fn without_clitic(w: &str) -> String {
    match w {
        "can't" => return "can".into(),
        "won't" => return "will".into(),
        _ => {}
    }
    if let Some(base) = w.strip_suffix("n't") {
        return base.to_string();
    }
    w.split('\'').next().unwrap_or(w).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_clauses_split_questions_not_noun_lists() {
        assert_eq!(
            clauses("What payment methods do you take, and can I pay in euros?"),
            vec!["What payment methods do you take", "can I pay in euros?"]
        );
        assert_eq!(
            clauses("how long does standard take and if i order at 4pm when does it ship"),
            vec![
                "how long does standard take",
                "if i order at 4pm when does it ship"
            ]
        );
        assert_eq!(
            clauses("Which things can't be returned? Do gift cards expire?"),
            vec!["Which things can't be returned?", "Do gift cards expire?"]
        );
        // One question: nouns joined by "and", a greeting with no terms.
        assert!(clauses("whats the price of express and overnight shipping").is_empty());
        assert!(clauses("hi! and can you help?").is_empty());
        assert!(clauses("能退货吗？").is_empty());
    }

    #[test]
    fn test_refers_back_to_a_pronoun_not_a_word_that_holds_one() {
        for text in [
            "does it work in the rain?",
            "It's too small",
            "how much do they cost",
            "is that one waterproof",
            "这个多少钱",
        ] {
            assert!(refers_back(text), "{text}");
        }
        // "its" inside "items", "this" inside "thistle": whole words only.
        for text in [
            "is the tent waterproof?",
            "which items can't be returned",
            "do you sell thistle tea",
            "帐篷防水吗",
        ] {
            assert!(!refers_back(text), "{text}");
        }
    }

    #[test]
    fn test_one_edit_typos_of_plain_words() {
        for (typo, word) in [
            ("retrun", "return"),
            ("accpet", "accept"),
            ("skilet", "skillet"),
            ("warrenti", "warranti"),
        ] {
            assert!(is_typo_of(typo, word), "{typo} {word}");
        }
        // Two edits, short words, numbers and the word itself are not typos.
        for (a, b) in [
            ("ertrun", "return"),
            ("bag", "tag"),
            ("1495", "1496"),
            ("return", "return"),
        ] {
            assert!(!is_typo_of(a, b), "{a} {b}");
        }
        assert!(is_stop_word_typo("wich"));
        assert!(!is_stop_word_typo("boot"));
    }

    #[test]
    fn test_terms() {
        assert_eq!(
            terms("How much is Express shipping? $14.95!"),
            vec!["much", "express", "ship", "14.95"]
        );
        assert_eq!(terms("2-3 business days"), vec!["2", "3", "busi", "day"]);
        assert_eq!(terms("退货"), vec!["退", "退货", "货"]);
        assert_eq!(
            terms("NW-123456 到了吗"),
            vec!["nw", "123456", "到", "到了", "了", "了吗", "吗"]
        );
        assert!(terms("can I, please?").is_empty());
        assert_eq!(
            terms("What's the camp chair\u{2019}s price? Customers' boots don't leak"),
            vec!["camp", "chair", "price", "custom", "boot", "leak"]
        );
    }
}
