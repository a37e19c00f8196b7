//! PII detection and redaction: e-mail addresses, phone numbers, payment
//! card numbers (Luhn-checked) and configurable extra patterns, each replaced
//! by a typed placeholder (`<EMAIL>`, `<PHONE>`, `<CARD>`, `<PATTERN>` or the
//! pattern's own name). Shared by the store export and moderation.
//!
//! The detectors lean towards precision on numbers: a support chat is full of
//! order numbers, dates, prices and versions, and redacting those would ruin
//! the training data. A number counts as a phone number only when it is
//! written like one (a leading `+`, an area code in parentheses, or digit
//! groups split by spaces, dots or dashes), or as an unseparated 10–11 digit
//! run starting with `0` (the national trunk prefix). A card number must pass
//! the Luhn check.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use regex::{Captures, Regex};

/// The kinds of personal data the redactor finds.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum PiiKind {
    Email,
    Phone,
    Card,
    /// A user-supplied pattern; the name is its placeholder label.
    Pattern(String),
}

impl PiiKind {
    /// The placeholder written in place of the match, e.g. `<EMAIL>`.
    pub fn placeholder(&self) -> String {
        format!("<{}>", self.label())
    }

    pub fn label(&self) -> &str {
        match self {
            PiiKind::Email => "EMAIL",
            PiiKind::Phone => "PHONE",
            PiiKind::Card => "CARD",
            PiiKind::Pattern(name) => name,
        }
    }
}

/// A bad `--redact-pattern` value.
#[derive(Debug, thiserror::Error)]
pub enum PatternError {
    #[error("redaction pattern {name:?}: {reason}")]
    Regex { name: String, reason: String },
    #[error("redaction pattern name {0:?} must be letters, digits and '_' (e.g. ORDER_ID)")]
    Name(String),
    #[error("redaction pattern {0:?} matches the empty string, which would redact everything")]
    Empty(String),
}

/// An extra pattern with the label of its placeholder.
#[derive(Debug, Clone)]
pub struct NamedPattern {
    pub name: String,
    pub regex: Regex,
}

impl NamedPattern {
    pub fn new(name: &str, pattern: &str) -> Result<Self, PatternError> {
        let valid = !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with(|c: char| c.is_ascii_digit());
        if !valid {
            return Err(PatternError::Name(name.to_string()));
        }
        let regex = Regex::new(pattern).map_err(|e| PatternError::Regex {
            name: name.to_string(),
            reason: e.to_string(),
        })?;
        if regex.is_match("") {
            return Err(PatternError::Empty(pattern.to_string()));
        }
        Ok(Self {
            name: name.to_ascii_uppercase(),
            regex,
        })
    }

    /// Parses `NAME=REGEX` or a bare `REGEX` (placeholder `<PATTERN>`). A
    /// regex that itself starts with `word=` must be given a name.
    pub fn parse(spec: &str) -> Result<Self, PatternError> {
        match spec.split_once('=') {
            Some((name, pattern))
                if !name.is_empty()
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
            {
                Self::new(name, pattern)
            }
            _ => Self::new("PATTERN", spec),
        }
    }
}

impl std::str::FromStr for NamedPattern {
    type Err = PatternError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// How many of each placeholder a redaction wrote, keyed by label.
pub type PiiCounts = BTreeMap<String, usize>;

/// Replaces PII in text with typed placeholders.
#[derive(Debug, Clone)]
pub struct Redactor {
    email: bool,
    phone: bool,
    card: bool,
    extra: Vec<NamedPattern>,
}

impl Default for Redactor {
    fn default() -> Self {
        Self {
            email: true,
            phone: true,
            card: true,
            extra: Vec::new(),
        }
    }
}

/// A bad entry of a redaction list such as `[store] redact_at_rest`.
#[derive(Debug, thiserror::Error)]
pub enum KindError {
    #[error(
        "{0:?} is not a kind of personal data: use card, email, phone or NAME=REGEX (a named pattern)"
    )]
    Unknown(String),
    #[error(transparent)]
    Pattern(#[from] PatternError),
}

static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"[\w.%+-]+@[\p{L}\p{N}](?:[\p{L}\p{N}-]*[\p{L}\p{N}])?(?:\.[\p{L}\p{N}](?:[\p{L}\p{N}-]*[\p{L}\p{N}])?)*\.\p{L}{2,}",
    )
    .expect("built-in e-mail pattern compiles")
});

// Four groups of four (most cards), Amex/Diners 4-6-5/4-6-4, or one run.
static CARD: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\d{4}(?:[ -]\d{4}){3}|\d{4}[ -]\d{6}[ -]\d{4,5}|\d{13,19}")
        .expect("built-in card pattern compiles")
});

static PHONE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\+?(?:\(\d{1,5}\)[ .-]?)?\d(?:[ .-]?\(?\d+\)?)*\d")
        .expect("built-in phone pattern compiles")
});

static DATE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(?:\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{2,4})$")
        .expect("built-in date pattern compiles")
});

static DOTTED: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^\d{1,3}(?:\.\d{1,3}){2,}$").expect("built-in dotted-number pattern compiles")
});

impl Redactor {
    /// E-mail, phone and card detection; add patterns with [`Redactor::with_pattern`].
    pub fn new() -> Self {
        Self::default()
    }

    /// A redactor that finds nothing until kinds or patterns are added.
    pub fn nothing() -> Self {
        Self {
            email: false,
            phone: false,
            card: false,
            extra: Vec::new(),
        }
    }

    /// A redactor for the kinds listed by name: `card`, `email`, `phone`
    /// (any case) and `NAME=REGEX` patterns, as `[store] redact_at_rest`
    /// lists them.
    pub fn from_kinds<S: AsRef<str>>(kinds: &[S]) -> Result<Self, KindError> {
        let mut r = Self::nothing();
        for k in kinds {
            let k = k.as_ref().trim();
            match k.to_ascii_lowercase().as_str() {
                "card" => r.card = true,
                "email" => r.email = true,
                "phone" => r.phone = true,
                _ if k.contains('=') => r.extra.push(NamedPattern::parse(k)?),
                _ => return Err(KindError::Unknown(k.to_string())),
            }
        }
        Ok(r)
    }

    /// Whether this redactor would never change a text.
    pub fn is_empty(&self) -> bool {
        !(self.email || self.phone || self.card) && self.extra.is_empty()
    }

    /// The placeholder labels this redactor writes (`CARD`, `EMAIL`, …).
    pub fn labels(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (on, kind) in [
            (self.card, PiiKind::Card),
            (self.email, PiiKind::Email),
            (self.phone, PiiKind::Phone),
        ] {
            if on {
                out.push(kind.label().to_string());
            }
        }
        out.extend(self.extra.iter().map(|p| p.name.clone()));
        out
    }

    pub fn with_pattern(mut self, pattern: NamedPattern) -> Self {
        self.extra.push(pattern);
        self
    }

    pub fn with_patterns(mut self, patterns: impl IntoIterator<Item = NamedPattern>) -> Self {
        self.extra.extend(patterns);
        self
    }

    /// The redacted text; adds what it replaced to `counts`.
    pub fn redact_counting(&self, text: &str, counts: &mut PiiCounts) -> String {
        // Built-ins first: an extra pattern must not split an e-mail address.
        let mut out = text.to_string();
        if self.email {
            out = replace(&EMAIL, &out, &PiiKind::Email, counts, |_, _| true);
        }
        // Cards before phones: a spaced card number also reads as a phone
        // number, and must be labelled a card.
        if self.card {
            out = replace(&CARD, &out, &PiiKind::Card, counts, is_card);
        }
        if self.phone {
            out = replace(&PHONE, &out, &PiiKind::Phone, counts, is_phone);
        }
        for p in &self.extra {
            let kind = PiiKind::Pattern(p.name.clone());
            out = replace(&p.regex, &out, &kind, counts, |_, _| true);
        }
        out
    }

    /// The redacted text.
    pub fn redact(&self, text: &str) -> String {
        self.redact_counting(text, &mut PiiCounts::new())
    }

    /// Whether `text` holds anything the redactor would replace.
    pub fn contains_pii(&self, text: &str) -> bool {
        let mut counts = PiiCounts::new();
        self.redact_counting(text, &mut counts);
        !counts.is_empty()
    }
}

/// Replaces every match that `accept(haystack, match)` takes.
fn replace(
    re: &Regex,
    text: &str,
    kind: &PiiKind,
    counts: &mut PiiCounts,
    accept: impl Fn(&str, &regex::Match<'_>) -> bool,
) -> String {
    let placeholder = kind.placeholder();
    let mut hits = 0;
    let out = re.replace_all(text, |caps: &Captures<'_>| {
        let Some(m) = caps.get(0) else {
            return String::new();
        };
        if accept(text, &m) {
            hits += 1;
            placeholder.clone()
        } else {
            m.as_str().to_string()
        }
    });
    if hits > 0 {
        *counts.entry(kind.label().to_string()).or_default() += hits;
    }
    out.into_owned()
}

/// A match glued to letters or digits is part of a longer token (an order
/// code like `AB-555-1234`, a hash, a version), not a number of its own.
fn stands_alone(text: &str, m: &regex::Match<'_>) -> bool {
    let mut before = text[..m.start()].chars().rev();
    let mut after = text[m.end()..].chars();
    !joined(before.next(), before.next()) && !joined(after.next(), after.next())
}

/// Whether the neighbour `c` (then `next`, one further out) continues the token.
fn joined(c: Option<char>, next: Option<char>) -> bool {
    let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    let digit = |c: Option<char>| c.is_some_and(|c| c.is_ascii_digit());
    match c {
        Some('-' | '/' | '_') => word(next),
        Some('.' | ',') => digit(next),
        _ => word(c),
    }
}

fn digits(s: &str) -> Vec<u8> {
    s.bytes()
        .filter(u8::is_ascii_digit)
        .map(|b| b - b'0')
        .collect()
}

/// The Luhn checksum used by payment card numbers.
pub fn luhn_valid(number: &str) -> bool {
    let d = digits(number);
    if d.len() < 2 {
        return false;
    }
    let sum: u32 = d
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &x)| {
            let x = u32::from(x);
            if i % 2 == 1 {
                let y = x * 2;
                if y > 9 { y - 9 } else { y }
            } else {
                x
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

fn is_card(text: &str, m: &regex::Match<'_>) -> bool {
    let n = digits(m.as_str()).len();
    // "+4915112345678" is an international phone number, whatever its checksum.
    let international = text[..m.start()].ends_with('+');
    (13..=19).contains(&n) && !international && stands_alone(text, m) && luhn_valid(m.as_str())
}

fn is_phone(text: &str, m: &regex::Match<'_>) -> bool {
    let s = m.as_str();
    let n = digits(s).len();
    if !(7..=15).contains(&n) || !stands_alone(text, m) {
        return false;
    }
    if DATE.is_match(s) || DOTTED.is_match(s) {
        return false;
    }
    let opens = s.matches('(').count();
    if opens != s.matches(')').count() || opens > 1 {
        return false;
    }
    let has_plus = s.starts_with('+');
    let separators = s.chars().filter(|c| matches!(c, ' ' | '.' | '-')).count();
    if separators == 0 && opens == 0 {
        // An unseparated run: an order number unless it is international or
        // carries the national trunk prefix.
        return has_plus || (s.starts_with('0') && (10..=11).contains(&n));
    }
    if has_plus || opens == 1 {
        return true;
    }
    // Only dots and one of them: a decimal number such as 1234567.89.
    if s.matches('.').count() == separators && separators == 1 {
        return false;
    }
    // "555-1234" style local numbers need 7+ digits in two or more groups;
    // a single dash between two long runs is a range ("1000000-2000000").
    let groups: Vec<usize> = s.split([' ', '.', '-']).map(|g| digits(g).len()).collect();
    if groups.len() == 2 {
        return groups[0] <= 4 && groups[1] <= 4;
    }
    groups.iter().all(|&g| (1..=5).contains(&g))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(text: &str) -> String {
        Redactor::new().redact(text)
    }

    #[test]
    fn test_emails() {
        assert_eq!(r("mail jane.doe+tag@example.co.uk now"), "mail <EMAIL> now");
        assert_eq!(r("<a@b.io>, c_d@mail-host.org."), "<<EMAIL>>, <EMAIL>.");
        // No domain suffix, or a bare handle: not an address.
        assert_eq!(
            r("ping @support or root@localhost"),
            "ping @support or root@localhost"
        );
    }

    #[test]
    fn test_phones() {
        assert_eq!(r("call +44 20 7946 0958 today"), "call <PHONE> today");
        assert_eq!(r("(555) 123-4567"), "<PHONE>");
        assert_eq!(r("555-123-4567 or 555.123.4567"), "<PHONE> or <PHONE>");
        assert_eq!(r("ring 555-1234"), "ring <PHONE>");
        assert_eq!(r("mobile 07946095812."), "mobile <PHONE>.");
        assert_eq!(r("+4915112345678"), "<PHONE>");
    }

    #[test]
    fn test_numbers_that_are_not_phones() {
        for text in [
            "order 12345678 shipped",
            "order #5551234567",
            "on 2026-11-29 at 10:30",
            "on 29.11.2026",
            "server 192.168.100.200",
            "version 1.22.333",
            "total 1,299.00 EUR",
            "price 1234567.89",
            "pages 1000000-2000000",
            "ticket AB-555-1234-XY",
            "sha 3f2a1b4c5d6e7f8091",
            "year 1999, room 101",
        ] {
            assert_eq!(r(text), text, "{text}");
        }
    }

    #[test]
    fn test_cards_need_luhn() {
        assert_eq!(r("card 4111 1111 1111 1111 ok"), "card <CARD> ok");
        assert_eq!(r("4111-1111-1111-1111"), "<CARD>");
        assert_eq!(r("4111111111111111"), "<CARD>");
        assert_eq!(r("amex 3782 822463 10005"), "amex <CARD>");
        // Same shapes, wrong check digit: left alone (and not a phone).
        assert_eq!(
            r("card 4111 1111 1111 1112 ok"),
            "card 4111 1111 1111 1112 ok"
        );
        assert_eq!(r("4111111111111112"), "4111111111111112");
        // A 20-digit run is no card even if a 16-digit part would pass.
        assert_eq!(r("41111111111111110000"), "41111111111111110000");
        assert!(luhn_valid("79927398713"));
        assert!(!luhn_valid("79927398710"));
        assert!(!luhn_valid("7"));
    }

    #[test]
    fn test_extra_patterns_and_counts() {
        let red = Redactor::new()
            .with_pattern(NamedPattern::parse(r"order_id=ORD-\d{6}").unwrap())
            .with_pattern(NamedPattern::parse(r"secret-\w+").unwrap());
        let mut counts = PiiCounts::new();
        let out = red.redact_counting(
            "ORD-123456 for a@b.com, ORD-654321, secret-xyz, 4111111111111111",
            &mut counts,
        );
        assert_eq!(out, "<ORDER_ID> for <EMAIL>, <ORDER_ID>, <PATTERN>, <CARD>");
        assert_eq!(counts["ORDER_ID"], 2);
        assert_eq!(counts["EMAIL"], 1);
        assert_eq!(counts["PATTERN"], 1);
        assert_eq!(counts["CARD"], 1);
        assert!(red.contains_pii("x@y.org"));
        assert!(!red.contains_pii("nothing here 42"));
    }

    #[test]
    fn test_bad_patterns_are_named() {
        let err = NamedPattern::parse("X=(unclosed").unwrap_err().to_string();
        assert!(err.contains("\"X\""), "{err}");
        let err = NamedPattern::parse("a*").unwrap_err().to_string();
        assert!(err.contains("empty string"), "{err}");
        let err = NamedPattern::new("bad name", "x").unwrap_err().to_string();
        assert!(err.contains("bad name"), "{err}");
    }

    #[test]
    fn test_unicode_text_survives() {
        assert_eq!(
            r("Grüße 👋 — schreib an müller@example.de"),
            "Grüße 👋 — schreib an <EMAIL>"
        );
    }

    #[test]
    fn test_chosen_kinds_only() {
        let text = "card 4111 1111 1111 1111, mail a@b.com, call +44 20 7946 0958, ORD-123456";
        let cards = Redactor::from_kinds(&["card"]).unwrap();
        assert_eq!(
            cards.redact(text),
            "card <CARD>, mail a@b.com, call +44 20 7946 0958, ORD-123456"
        );
        assert_eq!(cards.labels(), ["CARD"]);
        let more =
            Redactor::from_kinds(&["Card", "EMAIL", "phone", "order_id=ORD-\\d{6}"]).unwrap();
        assert_eq!(
            more.redact(text),
            "card <CARD>, mail <EMAIL>, call <PHONE>, <ORDER_ID>"
        );
        assert!(Redactor::from_kinds::<&str>(&[]).unwrap().is_empty());
        assert_eq!(
            Redactor::from_kinds::<&str>(&[]).unwrap().redact(text),
            text
        );
        let err = Redactor::from_kinds(&["cards"]).unwrap_err().to_string();
        assert!(
            err.contains("\"cards\"") && err.contains("NAME=REGEX"),
            "{err}"
        );
    }
}
