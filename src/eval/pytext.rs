//! Python's `str.split()`, `strip()` and `rstrip()`: the reference metrics
//! split on Python's whitespace, which also counts U+001C..U+001F (Rust's
//! `char::is_whitespace` does not).

/// `str.isspace()` for one character.
pub fn is_py_space(c: char) -> bool {
    matches!(c, '\u{1c}'..='\u{1f}') || c.is_whitespace()
}

/// `str.split()` without arguments.
pub fn py_split(s: &str) -> Vec<&str> {
    s.split(is_py_space).filter(|w| !w.is_empty()).collect()
}

pub fn py_strip(s: &str) -> &str {
    s.trim_matches(is_py_space)
}

pub fn py_rstrip(s: &str) -> &str {
    s.trim_end_matches(is_py_space)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_python_whitespace_includes_separators() {
        assert_eq!(py_split(" a\u{1c}b\u{a0}c\t"), ["a", "b", "c"]);
        assert_eq!(py_strip("\u{1f} x \u{3000}"), "x");
        assert_eq!(py_rstrip(" x \u{85}"), " x");
        assert!(!is_py_space('\u{200b}'));
    }
}
