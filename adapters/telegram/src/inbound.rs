//! Telegram updates → platform-neutral requests: which messages the bot
//! answers, mention stripping, and the feedback buttons' callback data.

use chatforge_channel::{
    ChatRequest, IncomingMessage, Platform, Rating, parse_command, tidy_after_mention,
};
use teloxide::types::{Message, UserId};

/// Who the bot is, from `getMe`.
#[derive(Debug, Clone)]
pub(crate) struct BotIdentity {
    pub id: UserId,
    /// Without the `@`.
    pub username: String,
}

/// The request a message makes of the bot, or `None` when the bot should
/// stay silent: messages from bots (two bots must not answer each other
/// forever), channel posts without a sender, commands for another bot, and
/// group messages that neither mention the bot nor reply to it.
pub(crate) fn to_request(msg: &Message, me: &BotIdentity) -> Option<ChatRequest> {
    let from = msg.from.as_ref()?;
    if from.is_bot {
        return None;
    }
    let is_direct = msg.chat.is_private();
    // Attachment-only messages arrive with empty text in direct chats: the
    // handler decides what to say about them.
    let raw = msg.text().or_else(|| msg.caption()).unwrap_or("");
    let (mentioned, text) = strip_mention(raw, &me.username);
    let replies_to_bot = msg
        .reply_to_message()
        .and_then(|m| m.from.as_ref())
        .is_some_and(|u| u.id == me.id);
    let message = IncomingMessage {
        platform: Platform::Telegram,
        conversation_key: msg.chat.id.0.to_string(),
        user_key: from.id.0.to_string(),
        text: text.clone(),
        reply_to: msg.reply_to_message().map(|m| m.id.0.to_string()),
        is_direct,
    };
    if let Some(parsed) = parse_command(&text) {
        // `/reset@other_bot` in a group is someone else's; a bare `/reset`
        // is for every bot in the chat, as Telegram delivers it.
        if !parsed.is_for(&me.username) {
            return None;
        }
        return Some(ChatRequest::Command {
            command: parsed.command,
            message,
        });
    }
    if !is_direct && !mentioned && !replies_to_bot {
        return None;
    }
    Some(ChatRequest::Message(message))
}

/// Whether `text` mentions `@username` (case-insensitively, as a whole
/// word), and the text with every such mention removed.
pub(crate) fn strip_mention(text: &str, username: &str) -> (bool, String) {
    let needle = format!("@{}", username.trim_start_matches('@')).to_lowercase();
    // Compared in place (ASCII case-insensitively) rather than in a
    // lowercased copy, whose byte offsets could differ from `text`'s.
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = String::with_capacity(text.len());
    let mut found = false;
    let mut i = 0;
    while i < text.len() {
        let rest = &text[i..];
        let matches = rest.len() >= needle.len()
            && rest.is_char_boundary(needle.len())
            && rest[..needle.len()].eq_ignore_ascii_case(&needle)
            && !text[..i].chars().next_back().is_some_and(is_word)
            && !rest[needle.len()..].chars().next().is_some_and(is_word);
        if matches {
            found = true;
            i += needle.len();
            continue;
        }
        let c = rest.chars().next().unwrap_or(' ');
        out.push(c);
        i += c.len_utf8();
    }
    if !found {
        return (false, text.trim().to_string());
    }
    (true, tidy_after_mention(&out))
}

const FEEDBACK_PREFIX: &str = "fb";
/// Telegram's limit on a button's callback data, in bytes.
const MAX_CALLBACK_DATA: usize = 64;

/// Callback data of a feedback button for the reply `message_id`, or `None`
/// when the id is too long for Telegram's 64 bytes.
pub(crate) fn feedback_data(rating: Rating, message_id: &str) -> Option<String> {
    let tag = match rating {
        Rating::Good => "g",
        Rating::Bad => "b",
    };
    let data = format!("{FEEDBACK_PREFIX}:{tag}:{message_id}");
    (data.len() <= MAX_CALLBACK_DATA).then_some(data)
}

/// The rating and reply id in a feedback button's callback data.
pub(crate) fn parse_feedback_data(data: &str) -> Option<(Rating, &str)> {
    let rest = data.strip_prefix(FEEDBACK_PREFIX)?.strip_prefix(':')?;
    let (tag, id) = rest.split_once(':')?;
    let rating = match tag {
        "g" => Rating::Good,
        "b" => Rating::Bad,
        _ => return None,
    };
    (!id.is_empty()).then_some((rating, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_strip_mention() {
        assert_eq!(
            strip_mention("@Shop_Bot, where is my order?", "shop_bot"),
            (true, "where is my order?".to_string())
        );
        assert_eq!(
            strip_mention("hi @shop_bot  there", "@shop_bot"),
            (true, "hi there".to_string())
        );
        // A longer username that starts the same is someone else.
        assert_eq!(
            strip_mention("hi @shop_bot2", "shop_bot"),
            (false, "hi @shop_bot2".to_string())
        );
        assert!(!strip_mention("mail x@shop_bot.com", "shop_bot").0);
        assert_eq!(
            strip_mention("ünïcode @shop_bot ok", "shop_bot"),
            (true, "ünïcode ok".to_string())
        );
    }

    #[test]
    fn test_feedback_data_round_trip() {
        let id = "0190c1a2-7b3c-7def-8123-456789abcdef";
        let data = feedback_data(Rating::Good, id).unwrap();
        assert_eq!(parse_feedback_data(&data), Some((Rating::Good, id)));
        let data = feedback_data(Rating::Bad, "m1").unwrap();
        assert_eq!(data, "fb:b:m1");
        assert_eq!(parse_feedback_data(&data), Some((Rating::Bad, "m1")));
        assert_eq!(feedback_data(Rating::Good, &"x".repeat(60)), None);
        assert_eq!(parse_feedback_data("fb:x:m1"), None);
        assert_eq!(parse_feedback_data("fb:g:"), None);
        assert_eq!(parse_feedback_data("other"), None);
    }
}
