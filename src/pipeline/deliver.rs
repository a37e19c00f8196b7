//! Stage 6 of a turn: the events the adapter renders. Replies carry the id
//! feedback refers to; notices are short and user-safe (internals stay in
//! the log).

use chatforge_channel::{ChatEvent, EventSink};

/// A short notice instead of a reply (an error, a limit).
pub fn notice(sink: &EventSink, text: &str) {
    let _ = sink.send(ChatEvent::Error {
        notice: text.to_string(),
    });
}

/// A reply that is not a model's answer (a command's), under a fresh id.
pub fn plain(sink: &EventSink, text: &str) {
    let _ = sink.send(ChatEvent::Reply {
        text: text.to_string(),
        message_id: crate::store::new_id(),
    });
}

/// The final reply under `message_id`, then, if it may be rated, the
/// request for feedback. `prefix` (a notice about the message) goes first.
pub fn reply(sink: &EventSink, prefix: Option<&str>, text: &str, message_id: &str, rateable: bool) {
    let text = match prefix {
        Some(p) => format!("{p}\n\n{text}"),
        None => text.to_string(),
    };
    let _ = sink.send(ChatEvent::Reply {
        text,
        message_id: message_id.to_string(),
    });
    if rateable {
        let _ = sink.send(ChatEvent::FeedbackRequest {
            message_id: message_id.to_string(),
        });
    }
}

pub fn handoff(sink: &EventSink, text: &str) {
    let _ = sink.send(ChatEvent::Handoff {
        notice: text.to_string(),
    });
}
