//! Chat commands (`/start`, `/help`, `/reset`, `/feedback`, `/human`, `/bot`)
//! parsed from message text the same way on every platform.

use serde::{Deserialize, Serialize};

use crate::Rating;

/// A command a user typed. What each one does is the handler's business;
/// adapters only recognise them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    /// `/start`: greet and explain.
    Start,
    /// `/help`: list the commands.
    Help,
    /// `/reset`: forget the conversation so far.
    Reset,
    /// `/feedback good|bad [comment]`: rate the last reply.
    Feedback {
        rating: Rating,
        comment: Option<String>,
    },
    /// `/human`: hand the conversation to an operator; the bot goes quiet.
    Human,
    /// `/bot`: hand the conversation back to the bot.
    Bot,
    /// A known command with arguments it cannot take; `usage` says the form.
    Invalid { name: String, usage: String },
    /// A command chatforge does not know (lowercased, without the `/`).
    Unknown { name: String },
}

/// Usage line of `/feedback`, shown when its arguments are wrong.
pub const FEEDBACK_USAGE: &str = "/feedback good|bad [comment]";

/// One entry of the command menu platforms show (Telegram's `setMyCommands`,
/// Discord's slash commands).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandInfo {
    /// Name without the `/`; lowercase letters only, as every platform allows.
    pub name: &'static str,
    pub description: &'static str,
}

/// Every command, in menu order.
pub const COMMANDS: &[CommandInfo] = &[
    CommandInfo {
        name: "start",
        description: "Start a conversation",
    },
    CommandInfo {
        name: "help",
        description: "What I can do and the commands",
    },
    CommandInfo {
        name: "reset",
        description: "Forget this conversation and start over",
    },
    CommandInfo {
        name: "feedback",
        description: "Rate my last reply: /feedback good|bad [comment]",
    },
    CommandInfo {
        name: "human",
        description: "Talk to a human operator",
    },
    CommandInfo {
        name: "bot",
        description: "Hand the conversation back to the bot",
    },
];

/// A command and the bot it names, if any (`/reset@northwind_bot`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedCommand<'a> {
    pub command: Command,
    /// The `@bot` suffix without the `@`; `None` when the command names no bot.
    pub addressee: Option<&'a str>,
}

impl ParsedCommand<'_> {
    /// Whether the command is meant for the bot called `username`: it names
    /// no bot, or names this one (usernames compare case-insensitively, as
    /// Telegram's do).
    pub fn is_for(&self, username: &str) -> bool {
        self.addressee
            .is_none_or(|a| a.eq_ignore_ascii_case(username.trim_start_matches('@')))
    }
}

/// Message text once the bot's @mention was cut out of it: spaces
/// collapsed and a leading `,` or `:` dropped ("@bot, where is my order?" →
/// "where is my order?").
pub fn tidy_after_mention(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .trim_start_matches([',', ':'])
        .trim()
        .to_string()
}

/// Parses `text` as a command. `None` when it is not one: no leading `/`, or
/// a name with characters no platform allows in command names (so a path
/// like `/usr/bin` or a lone `/` stays plain text).
pub fn parse_command(text: &str) -> Option<ParsedCommand<'_>> {
    let text = text.trim_start();
    let rest = text.strip_prefix('/')?;
    let (head, args) = match rest.find(char::is_whitespace) {
        Some(i) => (&rest[..i], rest[i..].trim()),
        None => (rest, ""),
    };
    let (name, addressee) = match head.split_once('@') {
        Some((name, bot)) => (name, Some(bot)),
        None => (head, None),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 32
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !name_ok || addressee.is_some_and(|a| a.is_empty()) {
        return None;
    }
    let name = name.to_ascii_lowercase();
    let command = match name.as_str() {
        "start" => Command::Start,
        "help" => Command::Help,
        "reset" => Command::Reset,
        "human" => Command::Human,
        "bot" => Command::Bot,
        "feedback" => parse_feedback(args),
        _ => Command::Unknown { name },
    };
    Some(ParsedCommand { command, addressee })
}

fn parse_feedback(args: &str) -> Command {
    let (word, comment) = match args.find(char::is_whitespace) {
        Some(i) => (&args[..i], args[i..].trim()),
        None => (args, ""),
    };
    let rating = match word.to_lowercase().as_str() {
        "good" | "up" | "+" | "👍" => Rating::Good,
        "bad" | "down" | "-" | "👎" => Rating::Bad,
        _ => {
            return Command::Invalid {
                name: "feedback".into(),
                usage: FEEDBACK_USAGE.into(),
            };
        }
    };
    Command::Feedback {
        rating,
        comment: (!comment.is_empty()).then(|| comment.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(text: &str) -> Option<Command> {
        parse_command(text).map(|p| p.command)
    }

    #[test]
    fn test_parse_simple_commands() {
        assert_eq!(cmd("/start"), Some(Command::Start));
        assert_eq!(cmd("  /help"), Some(Command::Help));
        assert_eq!(cmd("/RESET"), Some(Command::Reset));
        assert_eq!(cmd("/human please"), Some(Command::Human));
        assert_eq!(cmd("/bot"), Some(Command::Bot));
        assert_eq!(
            cmd("/weather today"),
            Some(Command::Unknown {
                name: "weather".into()
            })
        );
    }

    #[test]
    fn test_plain_text_is_not_a_command() {
        assert_eq!(cmd("hello /start"), None);
        assert_eq!(cmd("/"), None);
        assert_eq!(cmd("/ start"), None);
        assert_eq!(cmd("/usr/bin/env"), None);
        assert_eq!(cmd("/start@"), None);
        assert_eq!(cmd(""), None);
    }

    #[test]
    fn test_parse_feedback() {
        assert_eq!(
            cmd("/feedback good"),
            Some(Command::Feedback {
                rating: Rating::Good,
                comment: None
            })
        );
        assert_eq!(
            cmd("/feedback BAD  the answer was   wrong "),
            Some(Command::Feedback {
                rating: Rating::Bad,
                comment: Some("the answer was   wrong".into())
            })
        );
        assert_eq!(
            cmd("/feedback 👎"),
            Some(Command::Feedback {
                rating: Rating::Bad,
                comment: None
            })
        );
        let invalid = Some(Command::Invalid {
            name: "feedback".into(),
            usage: FEEDBACK_USAGE.into(),
        });
        assert_eq!(cmd("/feedback"), invalid);
        assert_eq!(cmd("/feedback great job"), invalid);
    }

    #[test]
    fn test_addressee() {
        let p = parse_command("/reset@Northwind_Bot now").unwrap();
        assert_eq!(p.command, Command::Reset);
        assert_eq!(p.addressee, Some("Northwind_Bot"));
        assert!(p.is_for("northwind_bot"));
        assert!(p.is_for("@northwind_bot"));
        assert!(!p.is_for("other_bot"));
        assert!(parse_command("/reset").unwrap().is_for("any_bot"));
    }

    #[test]
    fn test_menu_names_parse_back() {
        for info in COMMANDS {
            let parsed = cmd(&format!("/{} good", info.name)).unwrap();
            assert!(
                !matches!(parsed, Command::Unknown { .. } | Command::Invalid { .. }),
                "{} does not parse: {parsed:?}",
                info.name
            );
            assert!(info.name.chars().all(|c| c.is_ascii_lowercase()));
        }
    }
}
