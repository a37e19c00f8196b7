//! The Porter stemmer as NLTK's `PorterStemmer()` runs it by default
//! (`NLTK_EXTENSIONS` mode), which is what Google's `rouge-score` uses with
//! `use_stemmer=True`. It is not Snowball's English (Porter2) stemmer, so
//! `rust-stemmers` would give different ROUGE scores; this is a port of
//! `nltk/stem/porter.py` (3.10), checked against it word by word in
//! `tests/fixtures/eval-vectors/porter.json`.
//!
//! rouge-score only ever passes lowercase ASCII `[a-z0-9]+` tokens, so the
//! port works on bytes.

/// Irregular forms NLTK maps directly.
const POOL: [(&str, &str); 16] = [
    ("sky", "sky"),
    ("skies", "sky"),
    ("dying", "die"),
    ("lying", "lie"),
    ("tying", "tie"),
    ("news", "news"),
    ("innings", "inning"),
    ("inning", "inning"),
    ("outings", "outing"),
    ("outing", "outing"),
    ("cannings", "canning"),
    ("canning", "canning"),
    ("howe", "howe"),
    ("proceed", "proceed"),
    ("exceed", "exceed"),
    ("succeed", "succeed"),
];

/// Stems one word (lowercased first, as NLTK does).
pub fn stem(word: &str) -> String {
    let lower = word.to_lowercase();
    if let Some((_, s)) = POOL.iter().find(|(w, _)| *w == lower) {
        return s.to_string();
    }
    // NLTK tests the length of the word as given, in characters.
    if word.chars().count() <= 2 || !lower.is_ascii() {
        return lower;
    }
    let mut w = lower.into_bytes();
    w = step1a(w);
    w = step1b(w);
    w = step1c(w);
    w = step2(w);
    w = step3(w);
    w = step4(w);
    w = step5a(w);
    w = step5b(w);
    String::from_utf8(w).unwrap_or_default()
}

fn is_vowel(c: u8) -> bool {
    matches!(c, b'a' | b'e' | b'i' | b'o' | b'u')
}

/// `y` is a consonant at the start or after a vowel, a vowel after a
/// consonant.
fn consonant_flags(w: &[u8]) -> Vec<bool> {
    let mut flags: Vec<bool> = Vec::with_capacity(w.len());
    for (i, &c) in w.iter().enumerate() {
        let f = if is_vowel(c) {
            false
        } else if c == b'y' {
            i == 0 || !flags[i - 1]
        } else {
            true
        };
        flags.push(f);
    }
    flags
}

fn is_consonant(w: &[u8], i: usize) -> bool {
    consonant_flags(&w[..=i])[i]
}

/// m in [C](VC)^m[V]: the number of vowel→consonant transitions.
fn measure(stem: &[u8]) -> usize {
    consonant_flags(stem)
        .windows(2)
        .filter(|p| !p[0] && p[1])
        .count()
}

fn contains_vowel(stem: &[u8]) -> bool {
    consonant_flags(stem).iter().any(|c| !c)
}

fn ends_double_consonant(w: &[u8]) -> bool {
    let n = w.len();
    n >= 2 && w[n - 1] == w[n - 2] && is_consonant(w, n - 1)
}

fn ends_cvc(w: &[u8]) -> bool {
    let n = w.len();
    (n >= 3
        && is_consonant(w, n - 3)
        && !is_consonant(w, n - 2)
        && is_consonant(w, n - 1)
        && !matches!(w[n - 1], b'w' | b'x' | b'y'))
        || (n == 2 && !is_consonant(w, 0) && is_consonant(w, 1))
}

/// A rule's condition on the stem left after removing the suffix.
type Cond<'a> = Option<&'a dyn Fn(&[u8]) -> bool>;

/// A suffix rule; `"*d"` means "ends in a double consonant".
struct Rule<'a> {
    suffix: &'a str,
    replacement: Vec<u8>,
    cond: Cond<'a>,
}

fn rule<'a>(suffix: &'a str, replacement: &str, cond: Cond<'a>) -> Rule<'a> {
    Rule {
        suffix,
        replacement: replacement.as_bytes().to_vec(),
        cond,
    }
}

/// The first rule whose suffix matches decides: replaced if its condition
/// holds, else the word stays as it is.
fn apply_rules(w: Vec<u8>, rules: &[Rule<'_>]) -> Vec<u8> {
    for r in rules {
        if r.suffix == "*d" && ends_double_consonant(&w) {
            let stem = &w[..w.len() - 2];
            return if r.cond.is_none_or(|c| c(stem)) {
                [stem, &r.replacement].concat()
            } else {
                w
            };
        }
        if w.ends_with(r.suffix.as_bytes()) {
            let stem = &w[..w.len() - r.suffix.len()];
            return if r.cond.is_none_or(|c| c(stem)) {
                [stem, &r.replacement].concat()
            } else {
                w
            };
        }
    }
    w
}

fn replace_suffix(w: &[u8], suffix: &str, rep: &str) -> Vec<u8> {
    [&w[..w.len() - suffix.len()], rep.as_bytes()].concat()
}

fn step1a(w: Vec<u8>) -> Vec<u8> {
    if w.ends_with(b"ies") && w.len() == 4 {
        return replace_suffix(&w, "ies", "ie");
    }
    apply_rules(
        w,
        &[
            rule("sses", "ss", None),
            rule("ies", "i", None),
            rule("ss", "ss", None),
            rule("s", "", None),
        ],
    )
}

fn step1b(w: Vec<u8>) -> Vec<u8> {
    if w.ends_with(b"ied") {
        let rep = if w.len() == 4 { "ie" } else { "i" };
        return replace_suffix(&w, "ied", rep);
    }
    if w.ends_with(b"eed") {
        let stem = &w[..w.len() - 3];
        return if measure(stem) > 0 {
            [stem, b"ee"].concat()
        } else {
            w
        };
    }
    let mut stem = None;
    for suffix in ["ed", "ing"] {
        if w.ends_with(suffix.as_bytes()) {
            let s = &w[..w.len() - suffix.len()];
            if contains_vowel(s) {
                stem = Some(s.to_vec());
                break;
            }
        }
    }
    let Some(stem) = stem else {
        return w;
    };
    // Non-empty: it contains a vowel.
    let last = stem[stem.len() - 1];
    let not_lsz = move |_: &[u8]| !matches!(last, b'l' | b's' | b'z');
    let short = |s: &[u8]| measure(s) == 1 && ends_cvc(s);
    let last_s = String::from_utf8_lossy(&[last]).into_owned();
    apply_rules(
        stem,
        &[
            rule("at", "ate", None),
            rule("bl", "ble", None),
            rule("iz", "ize", None),
            rule("*d", &last_s, Some(&not_lsz)),
            rule("", "e", Some(&short)),
        ],
    )
}

fn step1c(w: Vec<u8>) -> Vec<u8> {
    let cond = |s: &[u8]| s.len() > 1 && is_consonant(s, s.len() - 1);
    apply_rules(w, &[rule("y", "i", Some(&cond))])
}

fn positive(s: &[u8]) -> bool {
    measure(s) > 0
}

fn step2(w: Vec<u8>) -> Vec<u8> {
    if w.ends_with(b"alli") && positive(&w[..w.len() - 4]) {
        return step2(replace_suffix(&w, "alli", "al"));
    }
    let p: Cond<'_> = Some(&positive);
    let word = w.clone();
    // NLTK checks the measure of the word minus "ogi", not minus "logi".
    let logi = move |_: &[u8]| positive(&word[..word.len() - 3]);
    apply_rules(
        w,
        &[
            rule("ational", "ate", p),
            rule("tional", "tion", p),
            rule("enci", "ence", p),
            rule("anci", "ance", p),
            rule("izer", "ize", p),
            rule("bli", "ble", p),
            rule("alli", "al", p),
            rule("entli", "ent", p),
            rule("eli", "e", p),
            rule("ousli", "ous", p),
            rule("ization", "ize", p),
            rule("ation", "ate", p),
            rule("ator", "ate", p),
            rule("alism", "al", p),
            rule("iveness", "ive", p),
            rule("fulness", "ful", p),
            rule("ousness", "ous", p),
            rule("aliti", "al", p),
            rule("iviti", "ive", p),
            rule("biliti", "ble", p),
            rule("fulli", "ful", p),
            rule("logi", "log", Some(&logi)),
        ],
    )
}

fn step3(w: Vec<u8>) -> Vec<u8> {
    let p: Cond<'_> = Some(&positive);
    apply_rules(
        w,
        &[
            rule("icate", "ic", p),
            rule("ative", "", p),
            rule("alize", "al", p),
            rule("iciti", "ic", p),
            rule("ical", "ic", p),
            rule("ful", "", p),
            rule("ness", "", p),
        ],
    )
}

fn step4(w: Vec<u8>) -> Vec<u8> {
    let gt1 = |s: &[u8]| measure(s) > 1;
    let ion = |s: &[u8]| measure(s) > 1 && matches!(s.last(), Some(b's' | b't'));
    let m: Cond<'_> = Some(&gt1);
    apply_rules(
        w,
        &[
            rule("al", "", m),
            rule("ance", "", m),
            rule("ence", "", m),
            rule("er", "", m),
            rule("ic", "", m),
            rule("able", "", m),
            rule("ible", "", m),
            rule("ant", "", m),
            rule("ement", "", m),
            rule("ment", "", m),
            rule("ent", "", m),
            rule("ion", "", Some(&ion)),
            rule("ou", "", m),
            rule("ism", "", m),
            rule("ate", "", m),
            rule("iti", "", m),
            rule("ous", "", m),
            rule("ive", "", m),
            rule("ize", "", m),
        ],
    )
}

fn step5a(w: Vec<u8>) -> Vec<u8> {
    if let Some(stem) = w.strip_suffix(b"e") {
        let m = measure(stem);
        if m > 1 || (m == 1 && !ends_cvc(stem)) {
            return stem.to_vec();
        }
    }
    w
}

fn step5b(w: Vec<u8>) -> Vec<u8> {
    let word = w.clone();
    let cond = move |_: &[u8]| measure(&word[..word.len() - 1]) > 1;
    apply_rules(w, &[rule("ll", "l", Some(&cond))])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_classic_porter_examples() {
        for (w, s) in [
            ("caresses", "caress"),
            ("ponies", "poni"),
            ("ties", "tie"),
            ("cats", "cat"),
            ("agreed", "agre"),
            ("plastered", "plaster"),
            ("motoring", "motor"),
            ("hopping", "hop"),
            ("filing", "file"),
            ("happy", "happi"),
            ("relational", "relat"),
            ("generalizations", "gener"),
            ("controll", "control"),
            ("dying", "die"),
            ("is", "is"),
        ] {
            assert_eq!(stem(w), s, "{w}");
        }
    }
}
