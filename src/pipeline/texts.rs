//! Every text the pipeline says to a user, in one table per language.
//! Built-in English and Chinese; `[pipeline.texts.<lang>]` in
//! `chatforge.toml` overrides any entry, and a language the config adds
//! falls back to English for the entries it leaves out.

use std::collections::{BTreeMap, HashMap};

use chatforge_channel::COMMANDS;
use serde::{Deserialize, Serialize};

/// The texts, by what they are for. Placeholders in braces are filled in
/// by the pipeline: `{seconds}`, `{usage}`, `{name}`, `{source}`, `{back}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TextKey {
    /// `/start`.
    Greeting,
    /// `/help`.
    Help,
    /// A reply could not be produced or checked.
    Apology,
    /// Sent instead of a reply that moderation flagged.
    SafeReply,
    /// The user's message was flagged.
    InputRefusal,
    /// The model produced nothing.
    EmptyReply,
    /// A message without text (a sticker, a photo).
    NotText,
    /// Put before a reply to a message that was cut to fit.
    LongMessage,
    /// `{seconds}`: until the next message is taken.
    RateLimited,
    /// `{usage}` of a command given wrong arguments.
    Usage,
    /// `{name}` of an unknown command.
    UnknownCommand,
    ResetDone,
    FeedbackThanks,
    NothingToRate,
    HandoffRequested,
    /// `{back}`: `/human` outside `[handoff] hours`; when agents return.
    HandoffAway,
    /// `/bot` while a human had the conversation.
    HandoffEnded,
    /// An operator resolved the conversation in the console.
    HandoffResolved,
    /// `/bot` while the bot had it anyway.
    BotHere,
    /// Too many requests wait for the model.
    Busy,
    /// The knowledge base does not answer the question confidently.
    Abstain,
    /// `{text}`: passage sentences sent instead of a reply that claimed
    /// what the passages do not say.
    Extract,
    /// `{source}`: the citation under a grounded reply.
    Source,
    /// The reply to a greeting ("hi", "how's it going?").
    Hello,
    /// The reply to thanks.
    YoureWelcome,
    /// The reply to a goodbye ("bye", "ok thanks, that's all!").
    Goodbye,
}

impl TextKey {
    pub const ALL: [TextKey; 26] = [
        TextKey::Greeting,
        TextKey::Help,
        TextKey::Apology,
        TextKey::SafeReply,
        TextKey::InputRefusal,
        TextKey::EmptyReply,
        TextKey::NotText,
        TextKey::LongMessage,
        TextKey::RateLimited,
        TextKey::Usage,
        TextKey::UnknownCommand,
        TextKey::ResetDone,
        TextKey::FeedbackThanks,
        TextKey::NothingToRate,
        TextKey::HandoffRequested,
        TextKey::HandoffAway,
        TextKey::HandoffEnded,
        TextKey::HandoffResolved,
        TextKey::BotHere,
        TextKey::Busy,
        TextKey::Abstain,
        TextKey::Extract,
        TextKey::Source,
        TextKey::Hello,
        TextKey::YoureWelcome,
        TextKey::Goodbye,
    ];

    /// The placeholders a text for this key may use.
    fn placeholders(self) -> &'static [&'static str] {
        match self {
            TextKey::RateLimited => &["seconds"],
            TextKey::Usage => &["usage"],
            TextKey::UnknownCommand => &["name"],
            TextKey::Extract => &["text"],
            TextKey::Source => &["source"],
            TextKey::HandoffAway => &["back"],
            _ => &[],
        }
    }
}

/// A language code: `en`, `zh`, or whatever the config names.
pub type Lang = String;

/// The language the pipeline answers a text in: Chinese when it holds Han
/// characters and no kana or hangul, else English.
pub fn detect_lang(text: &str) -> &'static str {
    let han = |c: char| matches!(c as u32, 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF);
    let kana_hangul = |c: char| matches!(c as u32, 0x3040..=0x30FF | 0xAC00..=0xD7AF);
    if text.chars().any(han) && !text.chars().any(kana_hangul) {
        "zh"
    } else {
        "en"
    }
}

fn english(key: TextKey) -> String {
    match key {
        TextKey::Greeting => {
            "Hi! I'm the support assistant. Ask me anything; /help lists the commands.".into()
        }
        TextKey::Help => {
            let mut s =
                String::from("I answer questions about our products and your orders. Commands:\n");
            for c in COMMANDS {
                s.push_str(&format!("/{} — {}\n", c.name, c.description));
            }
            s.trim_end().to_string()
        }
        TextKey::Apology => "Sorry, something went wrong on my side and I couldn't answer. Please try again, or type /human to reach a person.".into(),
        TextKey::SafeReply => "Sorry, I can't help with that. Type /human to reach a person.".into(),
        TextKey::InputRefusal => "I can't respond to that message. Please keep it respectful; type /human to reach a person.".into(),
        TextKey::EmptyReply => "Sorry, I don't have an answer to that. Type /human to reach a person.".into(),
        TextKey::NotText => "I can only read text. Please type your question (attachments and stickers are not supported).".into(),
        TextKey::LongMessage => "(Your message was very long, so I read only its last part.)".into(),
        TextKey::RateLimited => "You're sending messages faster than I can answer. Please wait {seconds} s; messages sent until then are skipped.".into(),
        TextKey::Usage => "Usage: {usage}".into(),
        TextKey::UnknownCommand => "I don't know the command /{name}. /help lists the ones I know.".into(),
        TextKey::ResetDone => "Done: I've forgotten our conversation. What can I help you with?".into(),
        TextKey::FeedbackThanks => "Thanks for your feedback!".into(),
        TextKey::NothingToRate => "There is no reply of mine to rate yet.".into(),
        TextKey::HandoffRequested => "I've asked a human operator to take over; they will answer here. Type /bot to talk to me again.".into(),
        TextKey::HandoffAway => "Our team is away right now and back {back}. You're in their queue, and they will answer here then. Type /bot to talk to me again.".into(),
        TextKey::HandoffEnded => "You're talking to the bot again. How can I help?".into(),
        TextKey::HandoffResolved => "Our team has marked this conversation as resolved, and I'm answering again. Type /human if you need a person.".into(),
        TextKey::BotHere => "I'm here. How can I help?".into(),
        TextKey::Busy => "I'm answering many people right now. Please try again in a minute.".into(),
        TextKey::Abstain => "I don't have that information; type /human to reach a person.".into(),
        TextKey::Extract => "Here is what our help pages say: {text}".into(),
        TextKey::Source => "Source: {source}".into(),
        TextKey::Hello => "Hello! How can I help you today?".into(),
        TextKey::YoureWelcome => "You're welcome! Is there anything else I can help with?".into(),
        TextKey::Goodbye => "Thanks for reaching out. Have a great day!".into(),
    }
}

fn chinese(key: TextKey) -> String {
    match key {
        TextKey::Greeting => "您好！我是客服助手，有什么可以帮您？输入 /help 查看可用命令。".into(),
        TextKey::Help => "我可以回答关于商品和订单的问题。命令：\n/start — 开始\n/help — 查看命令\n/reset — 清除对话，重新开始\n/human — 转人工客服\n/bot — 回到机器人\n/feedback good|bad — 评价我的上一条回复".into(),
        TextKey::Apology => "抱歉，我这边出了点问题，没能回答。请再试一次，或输入 /human 联系人工客服。".into(),
        TextKey::SafeReply => "抱歉，这个问题我无法帮您。输入 /human 联系人工客服。".into(),
        TextKey::InputRefusal => "我无法回复这条消息，请文明交流；输入 /human 联系人工客服。".into(),
        TextKey::EmptyReply => "抱歉，这个问题我没有答案。输入 /human 联系人工客服。".into(),
        TextKey::NotText => "我只能阅读文字，请直接输入您的问题（不支持附件和贴纸）。".into(),
        TextKey::LongMessage => "（您的消息太长，我只读了最后一部分。）".into(),
        TextKey::RateLimited => "您发送消息太快了，请等待 {seconds} 秒；在此之前发送的消息将被忽略。".into(),
        TextKey::Usage => "用法：{usage}".into(),
        TextKey::UnknownCommand => "我不认识命令 /{name}。输入 /help 查看可用命令。".into(),
        TextKey::ResetDone => "好的，我已清除我们的对话。有什么可以帮您？".into(),
        TextKey::FeedbackThanks => "感谢您的反馈！".into(),
        TextKey::NothingToRate => "我还没有可以评价的回复。".into(),
        TextKey::HandoffRequested => "已为您转接人工客服，他们会在这里回复您。输入 /bot 可回到机器人。".into(),
        TextKey::HandoffAway => "人工客服现在不在线，将于 {back} 回来。您已在排队，届时他们会在这里回复您。输入 /bot 可回到机器人。".into(),
        TextKey::HandoffEnded => "您现在又在和机器人对话了。有什么可以帮您？".into(),
        TextKey::HandoffResolved => "客服已将此对话标记为已解决，现在由我继续为您服务。如需人工客服，请输入 /human。".into(),
        TextKey::BotHere => "我在。有什么可以帮您？".into(),
        TextKey::Busy => "现在咨询的人很多，请稍后再试。".into(),
        TextKey::Abstain => "抱歉，我没有这方面的信息；输入 /human 联系人工客服。".into(),
        TextKey::Extract => "我们的帮助文档中写道：{text}".into(),
        TextKey::Source => "来源：{source}".into(),
        TextKey::Hello => "您好！有什么可以帮您？".into(),
        TextKey::YoureWelcome => "不客气！还有什么可以帮您的吗？".into(),
        TextKey::Goodbye => "感谢您的咨询，祝您生活愉快！".into(),
    }
}

/// The `[pipeline.texts]` section: per language, the entries to override.
pub type TextOverrides = BTreeMap<Lang, BTreeMap<TextKey, String>>;

/// The resolved table: built-ins overlaid with the config's overrides.
#[derive(Debug, Clone)]
pub struct Texts {
    langs: HashMap<Lang, HashMap<TextKey, String>>,
}

impl Texts {
    /// The built-in tables with `overrides` applied; an error names the
    /// entry (`pipeline.texts.en.apology`) that is empty or uses a
    /// placeholder its key does not fill.
    pub fn new(overrides: &TextOverrides) -> Result<Self, String> {
        let mut langs: HashMap<Lang, HashMap<TextKey, String>> = HashMap::new();
        for (lang, table) in [("en", english as fn(TextKey) -> String), ("zh", chinese)] {
            langs.insert(
                lang.to_string(),
                TextKey::ALL.iter().map(|&k| (k, table(k))).collect(),
            );
        }
        for (lang, entries) in overrides {
            let valid_lang =
                !lang.is_empty() && lang.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
            if !valid_lang {
                return Err(format!(
                    "pipeline.texts.{lang}: a language code is letters, digits and '-'"
                ));
            }
            for (key, text) in entries {
                let name = format!(
                    "pipeline.texts.{lang}.{}",
                    serde_json::to_value(key)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default()
                );
                if text.trim().is_empty() {
                    return Err(format!("{name} must not be empty"));
                }
                check_placeholders(*key, text).map_err(|e| format!("{name}: {e}"))?;
            }
            let table = langs
                .entry(lang.clone())
                .or_insert_with(|| TextKey::ALL.iter().map(|&k| (k, english(k))).collect());
            for (key, text) in entries {
                table.insert(*key, text.clone());
            }
        }
        Ok(Self { langs })
    }

    /// The text for `key` in `lang` (English when the language is unknown).
    pub fn get(&self, lang: &str, key: TextKey) -> &str {
        self.langs
            .get(lang)
            .or_else(|| self.langs.get("en"))
            .and_then(|t| t.get(&key))
            .map(String::as_str)
            .unwrap_or_default()
    }

    /// [`Self::get`] with `{name}` placeholders filled from `args`.
    pub fn fill(&self, lang: &str, key: TextKey, args: &[(&str, &str)]) -> String {
        let mut s = self.get(lang, key).to_string();
        for (name, value) in args {
            s = s.replace(&format!("{{{name}}}"), value);
        }
        s
    }
}

impl Default for Texts {
    fn default() -> Self {
        Self::new(&TextOverrides::new()).unwrap_or_else(|_| unreachable!("built-ins are valid"))
    }
}

/// A `{word}` the key does not fill is a mistake the user would see verbatim.
fn check_placeholders(key: TextKey, text: &str) -> Result<(), String> {
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else { break };
        let name = &after[..close];
        if !name.is_empty()
            && name.chars().all(|c| c.is_ascii_lowercase() || c == '_')
            && !key.placeholders().contains(&name)
        {
            return Err(format!(
                "{{{name}}} is not filled in for this text (it may use: {})",
                if key.placeholders().is_empty() {
                    "none".to_string()
                } else {
                    key.placeholders().join(", ")
                }
            ));
        }
        rest = &after[close + 1..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_builtins_cover_every_key_in_both_languages() {
        let t = Texts::default();
        for k in TextKey::ALL {
            assert!(!t.get("en", k).is_empty(), "{k:?}");
            assert!(!t.get("zh", k).is_empty(), "{k:?}");
            check_placeholders(k, t.get("en", k)).unwrap();
            check_placeholders(k, t.get("zh", k)).unwrap();
        }
        assert_eq!(t.get("fr", TextKey::Busy), t.get("en", TextKey::Busy));
    }

    #[test]
    fn test_overrides_apply_per_language_and_are_checked() {
        let o: TextOverrides =
            toml::from_str("[en]\napology = \"Oops.\"\n[de]\nreset_done = \"Erledigt.\"\n")
                .unwrap();
        let t = Texts::new(&o).unwrap();
        assert_eq!(t.get("en", TextKey::Apology), "Oops.");
        assert_eq!(t.get("de", TextKey::ResetDone), "Erledigt.");
        // Unset entries of a new language fall back to English.
        assert_eq!(t.get("de", TextKey::Apology), english(TextKey::Apology));
        assert_eq!(
            t.fill("en", TextKey::RateLimited, &[("seconds", "3")]),
            english(TextKey::RateLimited).replace("{seconds}", "3")
        );

        let err = toml::from_str::<TextOverrides>("[en]\napologie = \"x\"\n").unwrap_err();
        assert!(err.to_string().contains("apologie"), "{err}");
        let o: TextOverrides = toml::from_str("[en]\nbusy = \"wait {seconds}\"\n").unwrap();
        let err = Texts::new(&o).unwrap_err();
        assert!(
            err.contains("pipeline.texts.en.busy") && err.contains("{seconds}"),
            "{err}"
        );
        let o: TextOverrides = toml::from_str("[en]\nbusy = \" \"\n").unwrap();
        assert!(Texts::new(&o).unwrap_err().contains("must not be empty"));
    }

    #[test]
    fn test_language_detection() {
        assert_eq!(detect_lang("where is my order?"), "en");
        assert_eq!(detect_lang("我的订单在哪里？"), "zh");
        assert_eq!(detect_lang("NW-123456 到了吗"), "zh");
    }
}
