//! Stage 1 of a turn: is the message something to answer? Text is trimmed
//! and, when too long, cut to its last part (the reply says so); a message
//! without text gets a notice instead of a reply.

use super::texts::{TextKey, detect_lang};

/// A message worth answering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    pub text: String,
    /// The text was cut to `max_input_chars`.
    pub cut: bool,
    pub lang: &'static str,
}

/// The message's text, trimmed and within `max_chars`; or the notice to
/// send instead.
pub fn input(text: &str, max_chars: usize) -> Result<Input, TextKey> {
    let text = text.trim();
    if text.is_empty() {
        return Err(TextKey::NotText);
    }
    let (kept, cut) = keep_last_chars(text, max_chars);
    Ok(Input {
        text: kept.to_string(),
        cut,
        lang: detect_lang(kept),
    })
}

/// `text` cut to its last `max` characters, and whether it was cut.
fn keep_last_chars(text: &str, max: usize) -> (&str, bool) {
    match text.char_indices().rev().nth(max.saturating_sub(1)) {
        Some((i, _)) if i > 0 => (&text[i..], true),
        _ => (text, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_keep_last_chars() {
        assert_eq!(keep_last_chars("hello", 10), ("hello", false));
        assert_eq!(keep_last_chars("hello", 5), ("hello", false));
        assert_eq!(keep_last_chars("héllo wörld", 5), ("wörld", true));
        assert_eq!(keep_last_chars("你好世界", 2), ("世界", true));
    }

    #[test]
    fn test_input_is_trimmed_cut_and_tagged_with_its_language() {
        assert_eq!(input("  \n ", 10), Err(TextKey::NotText));
        let i = input("  where is my order?  ", 100).unwrap();
        assert_eq!(
            (i.text.as_str(), i.cut, i.lang),
            ("where is my order?", false, "en")
        );
        let i = input("前面的话不重要。我的订单在哪里", 7).unwrap();
        assert_eq!(
            (i.text.as_str(), i.cut, i.lang),
            ("我的订单在哪里", true, "zh")
        );
    }
}
