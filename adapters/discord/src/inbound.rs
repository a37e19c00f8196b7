//! Discord events → platform-neutral requests: which messages the bot
//! answers, mention stripping, slash commands and their menu, feedback
//! reactions, and the index from reply messages to the handler's reply ids.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;

use chatforge_channel::{
    COMMANDS, ChatRequest, Command, FEEDBACK_USAGE, IncomingMessage, Platform, Rating,
    parse_command, tidy_after_mention,
};
use serenity::all::{
    ChannelId, CommandInteraction, CommandOptionType, CreateCommand, CreateCommandOption, Message,
    MessageId, ReactionType, UserId,
};

/// Who the bot is, from `GET /users/@me`.
#[derive(Debug, Clone)]
pub(crate) struct BotIdentity {
    pub id: UserId,
    pub name: String,
}

/// The request a message makes of the bot, or `None` when the bot should
/// stay silent: messages from bots (two bots must not answer each other
/// forever, and the bot sees its own messages), guild messages that do not
/// mention the bot, and guild channels outside `channels` when it is not
/// empty. Empty and attachment-only messages still reach the handler, which
/// decides what to say about them.
pub(crate) fn message_request(
    msg: &Message,
    me: &BotIdentity,
    channels: &HashSet<ChannelId>,
) -> Option<ChatRequest> {
    if msg.author.bot || msg.author.id == me.id {
        return None;
    }
    let is_direct = msg.guild_id.is_none();
    let (in_text, text) = strip_mention(&msg.content, me.id);
    let mentioned = in_text || msg.mentions.iter().any(|u| u.id == me.id);
    if !is_direct {
        if !mentioned {
            return None;
        }
        if !channels.is_empty() && !channels.contains(&msg.channel_id) {
            tracing::debug!(channel = %msg.channel_id, "mention in a channel not configured; ignored");
            return None;
        }
    }
    let reply_to = msg
        .message_reference
        .as_ref()
        .and_then(|r| r.message_id)
        .or_else(|| msg.referenced_message.as_ref().map(|m| m.id));
    let message = IncomingMessage {
        platform: Platform::Discord,
        conversation_key: msg.channel_id.to_string(),
        user_key: msg.author.id.to_string(),
        text,
        reply_to: reply_to.map(|id| id.to_string()),
        is_direct,
    };
    if let Some(parsed) = parse_command(&message.text)
        && parsed.is_for(&me.name)
    {
        return Some(ChatRequest::Command {
            command: parsed.command,
            message,
        });
    }
    Some(ChatRequest::Message(message))
}

/// Whether `text` mentions the bot (`<@id>` or the nickname form
/// `<@!id>`), and the text with every such mention removed.
pub(crate) fn strip_mention(text: &str, me: UserId) -> (bool, String) {
    let plain = format!("<@{me}>");
    let nick = format!("<@!{me}>");
    if !text.contains(&plain) && !text.contains(&nick) {
        return (false, text.trim().to_string());
    }
    let out = text.replace(&plain, " ").replace(&nick, " ");
    (true, tidy_after_mention(&out))
}

/// The slash command menu: `/ask <question>`, then chatforge's commands;
/// `/feedback` takes `rating` (good|bad) and an optional `comment`.
pub(crate) fn command_menu() -> Vec<CreateCommand> {
    let ask = CreateCommand::new("ask")
        .description("Ask me a question")
        .add_option(
            CreateCommandOption::new(CommandOptionType::String, "question", "Your question")
                .required(true),
        );
    let mut menu = vec![ask];
    for info in COMMANDS {
        let mut command = CreateCommand::new(info.name).description(info.description);
        if info.name == "feedback" {
            command = command
                .description("Rate my last reply")
                .add_option(
                    CreateCommandOption::new(
                        CommandOptionType::String,
                        "rating",
                        "Was the reply good or bad?",
                    )
                    .required(true)
                    .add_string_choice("good", "good")
                    .add_string_choice("bad", "bad"),
                )
                .add_option(CreateCommandOption::new(
                    CommandOptionType::String,
                    "comment",
                    "What was good or wrong (optional)",
                ));
        }
        menu.push(command);
    }
    menu
}

/// The request a slash command makes: `/ask` is a plain message, the rest
/// are commands (as if typed: `message.text` is the command line).
pub(crate) fn interaction_request(command: &CommandInteraction) -> ChatRequest {
    let options: Vec<(&str, &str)> = command
        .data
        .options
        .iter()
        .filter_map(|o| Some((o.name.as_str(), o.value.as_str()?)))
        .collect();
    slash_request(
        &command.data.name,
        &options,
        command.channel_id,
        command.user.id,
        command.guild_id.is_none(),
    )
}

pub(crate) fn slash_request(
    name: &str,
    options: &[(&str, &str)],
    channel: ChannelId,
    user: UserId,
    is_direct: bool,
) -> ChatRequest {
    let option = |key: &str| {
        options
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    };
    let mut line = format!("/{name}");
    for (_, value) in options {
        line.push(' ');
        line.push_str(value);
    }
    let mut message = IncomingMessage {
        platform: Platform::Discord,
        conversation_key: channel.to_string(),
        user_key: user.to_string(),
        text: line.clone(),
        reply_to: None,
        is_direct,
    };
    let command = match name {
        "ask" => {
            message.text = option("question").unwrap_or_default().to_string();
            return ChatRequest::Message(message);
        }
        "feedback" => {
            let rating = match option("rating").map(str::to_lowercase).as_deref() {
                Some("good") => Some(Rating::Good),
                Some("bad") => Some(Rating::Bad),
                _ => None,
            };
            match rating {
                Some(rating) => Command::Feedback {
                    rating,
                    comment: option("comment").map(str::to_string),
                },
                None => Command::Invalid {
                    name: "feedback".into(),
                    usage: FEEDBACK_USAGE.into(),
                },
            }
        }
        _ => parse_command(&line).map_or_else(
            || Command::Unknown {
                name: name.to_lowercase(),
            },
            |p| p.command,
        ),
    };
    ChatRequest::Command { message, command }
}

pub(crate) const THUMBS_UP: &str = "👍";
pub(crate) const THUMBS_DOWN: &str = "👎";

/// The rating a reaction gives, if it is 👍 or 👎 (any skin tone).
pub(crate) fn reaction_rating(emoji: &ReactionType) -> Option<Rating> {
    let ReactionType::Unicode(s) = emoji else {
        return None;
    };
    // Skin tone modifiers (U+1F3FB..U+1F3FF) follow the base emoji.
    let base = s.trim_end_matches(|c| ('\u{1F3FB}'..='\u{1F3FF}').contains(&c));
    match base.trim_end_matches('\u{FE0F}') {
        THUMBS_UP => Some(Rating::Good),
        THUMBS_DOWN => Some(Rating::Bad),
        _ => None,
    }
}

/// Bounded map from the Discord message carrying a reply's reactions to the
/// handler's id of that reply; the oldest entries go first once full.
pub(crate) struct ReplyIndex {
    capacity: usize,
    inner: Mutex<ReplyIndexInner>,
}

#[derive(Default)]
struct ReplyIndexInner {
    map: HashMap<MessageId, String>,
    order: VecDeque<MessageId>,
}

impl ReplyIndex {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            inner: Mutex::default(),
        }
    }

    pub(crate) fn insert(&self, message: MessageId, reply_id: String) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.map.insert(message, reply_id).is_none() {
            inner.order.push_back(message);
        }
        while inner.order.len() > self.capacity {
            if let Some(old) = inner.order.pop_front() {
                inner.map.remove(&old);
            }
        }
    }

    pub(crate) fn get(&self, message: MessageId) -> Option<String> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.map.get(&message).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: u64 = 1000;

    #[test]
    fn test_strip_mention() {
        let me = UserId::new(ME);
        assert_eq!(
            strip_mention("<@1000>, where is my order?", me),
            (true, "where is my order?".to_string())
        );
        assert_eq!(
            strip_mention("hi <@!1000>  there", me),
            (true, "hi there".to_string())
        );
        // Another user, or a longer id that starts the same.
        assert_eq!(
            strip_mention("hi <@10001>", me),
            (false, "hi <@10001>".to_string())
        );
        assert_eq!(strip_mention("<@1000>", me), (true, String::new()));
        assert_eq!(
            strip_mention("<@1000> /reset", me),
            (true, "/reset".to_string())
        );
    }

    #[test]
    fn test_slash_requests() {
        let (c, u) = (ChannelId::new(5), UserId::new(7));
        let ChatRequest::Message(m) = slash_request("ask", &[("question", " why? ")], c, u, false)
        else {
            panic!()
        };
        assert_eq!(m.text, "why?");
        assert_eq!(m.conversation_key, "5");
        assert_eq!(m.user_key, "7");
        assert!(!m.is_direct);

        let r = slash_request("reset", &[], c, u, true);
        assert!(
            matches!(r, ChatRequest::Command { command: Command::Reset, ref message } if message.text == "/reset")
        );
        let r = slash_request(
            "feedback",
            &[("rating", "bad"), ("comment", "too slow")],
            c,
            u,
            true,
        );
        let ChatRequest::Command { command, message } = r else {
            panic!()
        };
        assert_eq!(
            command,
            Command::Feedback {
                rating: Rating::Bad,
                comment: Some("too slow".into())
            }
        );
        assert_eq!(message.text, "/feedback bad too slow");
        let r = slash_request("feedback", &[("rating", "meh")], c, u, true);
        assert!(matches!(
            r,
            ChatRequest::Command {
                command: Command::Invalid { .. },
                ..
            }
        ));
        let r = slash_request("weather", &[], c, u, true);
        assert!(matches!(
            r,
            ChatRequest::Command { command: Command::Unknown { ref name }, .. } if name == "weather"
        ));
    }

    #[test]
    fn test_menu_has_ask_and_every_command() {
        let menu = command_menu();
        assert_eq!(menu.len(), COMMANDS.len() + 1);
    }

    #[test]
    fn test_reaction_rating() {
        let r = |s: &str| reaction_rating(&ReactionType::Unicode(s.into()));
        assert_eq!(r("👍"), Some(Rating::Good));
        assert_eq!(r("👍🏽"), Some(Rating::Good));
        assert_eq!(r("👎"), Some(Rating::Bad));
        assert_eq!(r("❤️"), None);
    }

    #[test]
    fn test_reply_index_is_bounded() {
        let index = ReplyIndex::new(2);
        index.insert(MessageId::new(1), "r1".into());
        index.insert(MessageId::new(2), "r2".into());
        index.insert(MessageId::new(3), "r3".into());
        assert_eq!(index.get(MessageId::new(1)), None);
        assert_eq!(index.get(MessageId::new(2)).as_deref(), Some("r2"));
        assert_eq!(index.get(MessageId::new(3)).as_deref(), Some("r3"));
        // Re-inserting keeps one entry per message.
        index.insert(MessageId::new(3), "r3b".into());
        assert_eq!(index.get(MessageId::new(3)).as_deref(), Some("r3b"));
        assert_eq!(index.get(MessageId::new(2)).as_deref(), Some("r2"));
    }
}
