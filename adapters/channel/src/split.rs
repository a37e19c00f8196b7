//! Splitting long replies for platforms with a message length limit
//! (Discord 2,000, Telegram 4,096 characters). Lengths count `char`s
//! (Unicode scalar values), never bytes.
//!
//! A part ends at the best boundary in the second half of the window of
//! `max_chars`: a blank line, then a line break, then a sentence end, then
//! any whitespace, and only then a hard cut. The choice depends only on the
//! window and the character after it, so an adapter that streams a reply can
//! freeze a full message as soon as it has more than `max_chars` characters
//! and still match [`split_message`] of the finished text.

/// Where to split `text` so that the first part has at most `max_chars`
/// characters: `Some((part_end, rest_start))` as byte offsets (the part is
/// `text[..part_end]`, without trailing whitespace; the rest starts at
/// `text[rest_start..]`, after the whitespace at the boundary). `None` when
/// the whole text fits.
pub fn split_point(text: &str, max_chars: usize) -> Option<(usize, usize)> {
    // A limit of 0 cannot hold any text; treat it as 1 rather than loop.
    let max_chars = max_chars.max(1);
    let cut = text.char_indices().nth(max_chars).map(|(i, _)| i)?;
    // Boundaries earlier than half the window would make many short parts.
    let min = text
        .char_indices()
        .nth((max_chars / 2).max(1))
        .map_or(cut, |(i, _)| i);
    let window = &text[..cut];
    // The character just after the window decides whether a sentence end or
    // a space sits exactly at the limit.
    let after = text[cut..].chars().next();

    let end = window
        .rfind("\n\n")
        .filter(|&p| p >= min)
        .or_else(|| window.rfind('\n').filter(|&p| p >= min))
        .or_else(|| sentence_end(window, after, min))
        .or_else(|| {
            if after.is_some_and(char::is_whitespace) {
                Some(cut)
            } else {
                window
                    .char_indices()
                    .rev()
                    .find(|&(_, c)| c.is_whitespace())
                    .map(|(p, _)| p)
                    .filter(|&p| p >= min)
            }
        })
        .unwrap_or(cut);

    let part_end = text[..end].trim_end().len();
    let rest_start = text.len() - text[end..].trim_start().len();
    if part_end == 0 {
        // Only whitespace before the boundary: cut hard so the part is not
        // empty and the caller makes progress.
        return Some((cut, cut));
    }
    Some((part_end, rest_start))
}

/// Byte offset just after the last sentence end in `window` at or after
/// `min`: `.`, `!`, `?` or `…` followed by whitespace, or a CJK full stop,
/// exclamation or question mark (no space follows those).
fn sentence_end(window: &str, after: Option<char>, min: usize) -> Option<usize> {
    let mut next = after;
    for (i, c) in window.char_indices().rev() {
        let end = i + c.len_utf8();
        if end < min {
            return None;
        }
        let ends = match c {
            '.' | '!' | '?' | '…' => next.is_some_and(char::is_whitespace),
            '。' | '！' | '？' => true,
            _ => false,
        };
        if ends {
            return Some(end);
        }
        next = Some(c);
    }
    None
}

/// Splits `text` into parts of at most `max_chars` characters each, on
/// line and sentence boundaries where possible. Leading and trailing
/// whitespace of every part is dropped (platforms strip it anyway), and a
/// text of only whitespace gives no parts.
pub fn split_message(text: &str, max_chars: usize) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        match split_point(rest, max_chars) {
            None => {
                parts.push(rest);
                break;
            }
            Some((part_end, rest_start)) => {
                parts.push(&rest[..part_end]);
                rest = rest[rest_start..].trim_start();
            }
        }
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chars(s: &str) -> usize {
        s.chars().count()
    }

    #[test]
    fn test_short_text_is_one_part() {
        assert_eq!(split_message("  hello  ", 10), vec!["hello"]);
        assert_eq!(split_point("hello", 5), None);
        assert!(split_message(" \n ", 10).is_empty());
    }

    #[test]
    fn test_prefers_paragraph_then_line_then_sentence() {
        let text = "First line here.\n\nSecond paragraph. More text\nthird line";
        let parts = split_message(text, 30);
        assert_eq!(parts[0], "First line here.");
        let text = "aaaaaaaaaaaa\nbbbbbbbb. cccccccccc dd";
        assert_eq!(split_message(text, 30)[0], "aaaaaaaaaaaa\nbbbbbbbb.");
        let text = "aaaa. bbbbbbbbbbbbbbbb ccc dddddddd eeee";
        let parts = split_message(text, 30);
        assert_eq!(parts, vec!["aaaa. bbbbbbbbbbbbbbbb ccc", "dddddddd eeee"]);
    }

    #[test]
    fn test_sentence_end_in_second_half() {
        let text = "Hello there, friend. How are you doing today my dear?";
        let parts = split_message(text, 30);
        assert_eq!(parts[0], "Hello there, friend.");
        assert_eq!(parts[1], "How are you doing today my");
    }

    #[test]
    fn test_space_right_after_window_is_a_boundary() {
        let parts = split_message("abcde fghij", 5);
        assert_eq!(parts, vec!["abcde", "fghij"]);
    }

    #[test]
    fn test_counts_chars_not_bytes() {
        // 3 bytes per char: a byte count would split far too early.
        let text = "日本語のテキスト。".repeat(10);
        let parts = split_message(&text, 20);
        assert!(parts.iter().all(|p| chars(p) <= 20), "{parts:?}");
        assert_eq!(parts[0], "日本語のテキスト。日本語のテキスト。");
        assert_eq!(parts.concat(), text);
        let emoji = "😀".repeat(4100);
        let parts = split_message(&emoji, 4096);
        assert_eq!(parts.len(), 2);
        assert_eq!(chars(parts[0]), 4096);
        assert_eq!(chars(parts[1]), 4);
    }

    #[test]
    fn test_hard_cut_without_boundaries() {
        let text = "x".repeat(25);
        let parts = split_message(&text, 10);
        assert_eq!(parts, vec!["x".repeat(10), "x".repeat(10), "x".repeat(5)]);
        // A limit of 0 still makes progress.
        assert_eq!(split_message("ab", 0), vec!["a", "b"]);
    }

    #[test]
    fn test_ten_thousand_chars_for_telegram_and_discord() {
        let sentence = "This sentence is part of a very long reply. ";
        let text = sentence.repeat(10_000 / sentence.len() + 1);
        let text = text.trim();
        assert!(chars(text) >= 10_000);
        let tg = split_message(text, 4096);
        assert_eq!(tg.len(), 3);
        let dc = split_message(text, 2000);
        assert_eq!(dc.len(), 6);
        for parts in [&tg, &dc] {
            for p in parts.iter() {
                assert!(
                    p.ends_with('.'),
                    "not on a sentence end: …{}",
                    &p[p.len() - 20..]
                );
            }
            // Nothing lost except the spaces at the boundaries.
            assert_eq!(parts.join(" "), text);
        }
        assert!(tg.iter().all(|p| chars(p) <= 4096));
        assert!(dc.iter().all(|p| chars(p) <= 2000));
    }

    #[test]
    fn test_streaming_prefix_gives_the_same_first_part() {
        let text =
            "Line one is here.\nLine two follows it. And a third sentence that is long enough.";
        let full = split_message(text, 40);
        // As soon as a streamed prefix exceeds the limit, its first part is final.
        for n in 41..=text.chars().count() {
            let prefix: String = text.chars().take(n).collect();
            let (end, _) = split_point(&prefix, 40).unwrap();
            assert_eq!(&prefix[..end], full[0], "prefix of {n} chars");
        }
    }
}
