//! Stage 5 of a turn: nothing reaches the user before moderation has seen
//! it. While the model writes, [`Streamer`] releases the reply in pieces,
//! each checked together with a window of the text before it (so a phrase
//! split across two pieces is still seen, and the cost stays linear in the
//! reply's length); at the end [`reply`] checks the whole reply once and
//! decides what is sent.

use chatforge_channel::{ChatEvent, EventSink};

use super::gate::Gate;
use super::guard::Evidence;
use crate::moderation::Verdict;

/// Characters of already released text checked again with each new piece.
pub const WINDOW_CHARS: usize = 160;

/// What the final check decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Checked {
    /// Send `text` (the reply, with personal data redacted if found).
    Pass {
        text: String,
        verdict: Option<Verdict>,
    },
    /// Moderation flagged the reply: send the safe reply instead.
    Flagged(Verdict),
    /// The reply could not be checked: send the apology instead.
    Unchecked(String),
}

/// The final check of a generated reply. `streamed` is the verdict that
/// stopped streaming, if a piece was flagged on the way.
pub async fn reply(gate: &Gate, generated: &str, streamed: Option<Verdict>) -> Checked {
    let checked = match streamed {
        Some(v) => Ok(Some(v)),
        None => gate.check(generated).await,
    };
    match checked {
        Err(reason) => Checked::Unchecked(reason),
        Ok(Some(v)) if v.flagged => Checked::Flagged(v),
        Ok(Some(v)) => Checked::Pass {
            text: v.redacted.clone().unwrap_or_else(|| generated.to_string()),
            verdict: Some(v),
        },
        Ok(None) => Checked::Pass {
            text: generated.to_string(),
            verdict: None,
        },
    }
}

/// Releases reply text to the adapter in pieces that moderation has seen.
pub struct Streamer<'a> {
    gate: &'a Gate,
    /// With a knowledge base: a piece that states a fact the passages do
    /// not is not shown (the final decision replaces the reply), nor is an
    /// answer before it states one of the facts it needs.
    evidence: Option<&'a Evidence>,
    sink: &'a EventSink,
    min_chars: usize,
    text: String,
    released: usize,
    /// Set when a piece was flagged.
    pub flagged: Option<Verdict>,
    stopped: bool,
}

impl<'a> Streamer<'a> {
    pub fn new(
        gate: &'a Gate,
        evidence: Option<&'a Evidence>,
        sink: &'a EventSink,
        min_chars: usize,
    ) -> Self {
        Self {
            gate,
            evidence,
            sink,
            min_chars: min_chars.max(1),
            text: String::new(),
            released: 0,
            flagged: None,
            stopped: false,
        }
    }

    /// Whether any of the text has been shown.
    pub fn shown(&self) -> bool {
        self.released > 0
    }

    /// Adds generated text and releases what is ready; `false` once
    /// streaming stopped (flagged, personal data found, or moderation
    /// unavailable): the final check decides what is shown.
    pub async fn push(&mut self, piece: &str) -> bool {
        if self.stopped {
            return false;
        }
        self.text.push_str(piece);
        let pending = &self.text[self.released..];
        let at_boundary = pending.ends_with(['.', '!', '?', '\n', '。', '！', '？']);
        let count = pending.chars().count();
        if !(count >= self.min_chars && at_boundary || count >= self.min_chars * 3) {
            return true;
        }
        let settled = settled_end(&self.text);
        if settled <= self.released {
            return true;
        }
        let window = window_start(&self.text, self.released, WINDOW_CHARS);
        let checked = &self.text[window..settled];
        match self.gate.check(checked).await {
            Ok(Some(v)) if v.flagged => {
                self.flagged = Some(v);
                self.stopped = true;
            }
            // Personal data is redacted in the final reply only.
            Ok(Some(v)) if v.redacted.is_some() => self.stopped = true,
            Ok(_)
                if self
                    .evidence
                    .is_some_and(|e| !e.unsupported(checked).is_empty()) =>
            {
                self.stopped = true;
            }
            // Held, not stopped: the next pieces may state the fact.
            Ok(_)
                if self
                    .evidence
                    .is_some_and(|e| e.holds_back(&self.text[..settled])) => {}
            Ok(_) => {
                let delta = self.text[self.released..settled].to_string();
                self.released = settled;
                let _ = self.sink.send(ChatEvent::ReplyChunk { delta });
            }
            Err(_) => self.stopped = true,
        }
        !self.stopped
    }
}

/// Where the text that can be judged ends: before a last word that is a
/// number still being written ("$5." before "95": the passages state
/// "$5.95", not "$5"), which waits for the next piece or the final check.
fn settled_end(text: &str) -> usize {
    let unfinished = text
        .strip_suffix(['.', ','])
        .unwrap_or(text)
        .ends_with(|c: char| c.is_ascii_digit());
    if !unfinished {
        return text.len();
    }
    text.rfind(char::is_whitespace).map_or(0, |i| {
        i + text[i..].chars().next().map_or(1, char::len_utf8)
    })
}

/// The byte offset `chars` characters before `released` (a char boundary).
fn window_start(text: &str, released: usize, chars: usize) -> usize {
    text[..released]
        .char_indices()
        .rev()
        .nth(chars.saturating_sub(1))
        .map_or(0, |(i, _)| i)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use chatforge_channel::event_channel;

    use super::super::gate::testing::WordChecker;
    use super::*;

    #[test]
    fn test_a_number_being_written_waits() {
        assert_eq!(settled_end("It costs $5."), "It costs ".len());
        assert_eq!(settled_end("Order NW-1234"), "Order ".len());
        assert_eq!(settled_end("$14"), 0);
        assert_eq!(settled_end("It costs $5.95."), "It costs ".len());
        assert_eq!(settled_end("It costs $5.95. "), "It costs $5.95. ".len());
        assert_eq!(settled_end("Within 30 days."), "Within 30 days.".len());
    }

    #[test]
    fn test_window_start() {
        assert_eq!(window_start("abcdef", 6, 2), 4);
        assert_eq!(window_start("abcdef", 3, 10), 0);
        assert_eq!(window_start("añb", 4, 2), 1);
    }

    #[tokio::test]
    async fn test_stream_releases_checked_pieces_and_stops_when_flagged() {
        let checker = WordChecker::new("darn");
        let gate = Gate::new(checker.clone());
        let (sink, mut events) = event_channel();
        let mut s = Streamer::new(&gate, None, &sink, 10);
        assert!(s.push("Hello there, ").await);
        assert!(s.push("how are you.").await);
        assert!(s.push(" Oh da").await);
        // The flagged word is split across pieces; the window still sees it.
        assert!(!s.push("rn it all.").await);
        assert!(s.flagged.is_some());
        let mut shown = String::new();
        while let Some(ChatEvent::ReplyChunk { delta }) = events.try_next() {
            shown.push_str(&delta);
        }
        assert_eq!(shown, "Hello there, how are you.");
    }

    /// An answer whose passage states facts is held back until it states
    /// one: a fact-free opening is never shown, even if the reply then
    /// goes on to the fact.
    #[tokio::test]
    async fn test_stream_holds_an_answer_until_it_states_a_fact() {
        let gate = Gate::new(WordChecker::new("darn"));
        let grounded = super::super::retrieve::Grounded {
            loaded: None,
            passages: vec![0],
            context: vec!["Shipping abroad\nDelivery takes 7-14 business days.".into()],
            confidence: 0.9,
            answerable: true,
            smalltalk: false,
            answer: None,
        };
        let evidence = Evidence::new(&grounded, ["do you ship abroad?"], "I don't know.");
        let (sink, mut events) = event_channel();
        let mut s = Streamer::new(&gate, Some(&evidence), &sink, 10);
        assert!(s.push("Great question! ").await);
        assert!(s.push("Happy to help you. ").await);
        assert!(events.try_next().is_none(), "a fact-free answer was shown");
        assert!(s.push("Delivery takes 7-14 business days.").await);
        let mut shown = String::new();
        while let Some(ChatEvent::ReplyChunk { delta }) = events.try_next() {
            shown.push_str(&delta);
        }
        assert_eq!(
            shown,
            "Great question! Happy to help you. Delivery takes 7-14 business days."
        );
        // More words than a greeting that are not the passage's: held,
        // fact or not (the guard sends the passage instead).
        let (sink, mut events) = event_channel();
        let mut s = Streamer::new(&gate, Some(&evidence), &sink, 10);
        assert!(s.push("Great question, we love travelling too! ").await);
        assert!(s.push("We are always happy to help you out. ").await);
        assert!(s.push("Delivery takes 7-14 business days.").await);
        assert!(events.try_next().is_none(), "a garbled answer was shown");
        // Without a knowledge base nothing is held.
        let (sink, mut events) = event_channel();
        let mut s = Streamer::new(&gate, None, &sink, 10);
        assert!(s.push("Great question, we love travelling too! ").await);
        assert!(events.try_next().is_some());
    }

    #[tokio::test]
    async fn test_stream_checks_cost_linear_in_the_reply() {
        let checker = WordChecker::new("darn");
        let gate = Gate::new(checker.clone());
        let (sink, _events) = event_channel();
        let mut s = Streamer::new(&gate, None, &sink, 20);
        let sentence = "This sentence is fine as it is.";
        for _ in 0..200 {
            assert!(s.push(sentence).await);
        }
        let total = 200 * sentence.chars().count();
        let checked = checker.checked_chars.load(Ordering::SeqCst);
        // Each check sees the new piece plus at most the window: far from
        // the quadratic sum of re-checking everything each time.
        assert!(
            checked <= total + 200 * WINDOW_CHARS,
            "checked {checked} chars for a {total}-char reply"
        );
    }

    #[tokio::test]
    async fn test_final_check() {
        let gate = Gate::new(WordChecker::new("darn"));
        assert!(
            matches!(reply(&gate, "all good", None).await, Checked::Pass { text, .. } if text == "all good")
        );
        assert!(matches!(
            reply(&gate, "oh darn", None).await,
            Checked::Flagged(_)
        ));
        assert!(matches!(
            reply(&gate, "fail me", None).await,
            Checked::Unchecked(_)
        ));
        assert!(matches!(
            reply(&Gate::off(), "anything", None).await,
            Checked::Pass { verdict: None, .. }
        ));
    }
}
