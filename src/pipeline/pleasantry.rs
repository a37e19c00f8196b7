//! Pleasantries: a message that only greets, thanks or says goodbye ("ok
//! thanks, that's all!", "hey, how's your day going?", "谢谢") gets a
//! friendly fixed reply, not the knowledge base. Small talk used to be a
//! message without an index term, so these were searched: "day" and
//! "going" found the US shipping table, "all" the account deletion, and the
//! model, asked to write freely, wrote word salad for "thanks!".

use super::texts::TextKey;

/// What a pleasantry says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pleasantry {
    /// "hi", "good morning", "how's it going?"
    Hello,
    /// "thanks!", "thank you so much"
    Thanks,
    /// "bye", "ok thanks, that's all!", "have a nice day"
    Goodbye,
}

impl Pleasantry {
    /// The text it is answered with.
    pub fn reply(self) -> TextKey {
        match self {
            Pleasantry::Hello => TextKey::Hello,
            Pleasantry::Thanks => TextKey::YoureWelcome,
            Pleasantry::Goodbye => TextKey::Goodbye,
        }
    }
}

const HELLO: &[&str] = &[
    "hi",
    "hello",
    "hey",
    "heya",
    "hiya",
    "howdy",
    "yo",
    "morning",
    "afternoon",
    "evening",
    "greetings",
    "sup",
    "hows",
    "howre",
];
const THANKS: &[&str] = &[
    "thanks",
    "thank",
    "thx",
    "ty",
    "tysm",
    "cheers",
    "appreciate",
    "appreciated",
    "thankyou",
];
const GOODBYE: &[&str] = &["bye", "goodbye", "byebye", "cya", "later", "goodnight"];
/// Words a pleasantry may hold besides its cue ("ok thanks so much, that's
/// all for today!"). None of them asks for anything.
const FILLER: &[&str] = &[
    "ok",
    "okay",
    "oh",
    "ah",
    "well",
    "so",
    "very",
    "much",
    "really",
    "a",
    "lot",
    "you",
    "u",
    "ya",
    "yall",
    "guys",
    "again",
    "all",
    "thats",
    "that",
    "it",
    "is",
    "for",
    "the",
    "your",
    "ur",
    "great",
    "good",
    "nice",
    "lovely",
    "wonderful",
    "awesome",
    "cool",
    "perfect",
    "super",
    "helpful",
    "help",
    "have",
    "and",
    "there",
    "hope",
    "too",
    "as",
    "always",
    "everyone",
    "folks",
    "team",
    "bot",
    "day",
    "night",
    "today",
    "going",
    "doing",
    "are",
    "how",
    "whats",
    "up",
    "i",
    "im",
    "am",
    "me",
    "my",
    "just",
    "to",
    "say",
    "kind",
    "everything",
    "of",
    "weekend",
    "one",
    "see",
    "soon",
    "take",
    "care",
    "then",
    "alright",
    "sounds",
    "got",
    "gotcha",
    "understood",
    "will",
    "do",
    "dear",
    "mate",
    "friend",
    "buddy",
    "sir",
    "madam",
    "in",
    "advance",
    "yes",
    "yeah",
    "yep",
    "sure",
    "fine",
    "now",
];
/// Longest pleasantry, in words: a longer message says something.
const MAX_WORDS: usize = 12;

const ZH_HELLO: &[&str] = &[
    "你好",
    "您好",
    "嗨",
    "哈喽",
    "早上好",
    "下午好",
    "晚上好",
    "早安",
];
const ZH_THANKS: &[&str] = &["谢谢", "多谢", "谢啦", "感谢"];
const ZH_GOODBYE: &[&str] = &["再见", "拜拜", "晚安", "就这些", "没事了", "没有了"];
const ZH_FILLER: &[&str] = &[
    "非常", "太", "了", "啊", "呀", "哦", "嗯", "好的", "好", "你", "您", "们", "客服", "的", "啦",
    "哈", "吧", "呢",
];

/// The pleasantry `text` is, if it is nothing else.
pub fn detect(text: &str) -> Option<Pleasantry> {
    if text.chars().any(crate::kb::is_han) {
        return detect_zh(text);
    }
    let words: Vec<String> = text
        .split(|c: char| !(c.is_alphanumeric() || c == '\'' || c == '\u{2019}'))
        .map(|w| w.replace(['\'', '\u{2019}'], "").to_lowercase())
        .filter(|w| !w.is_empty())
        .collect();
    if words.is_empty() || words.len() > MAX_WORDS {
        return None;
    }
    let has = |list: &[&str]| words.iter().any(|w| list.contains(&w.as_str()));
    let known = |w: &String| {
        [HELLO, THANKS, GOODBYE, FILLER]
            .iter()
            .any(|l| l.contains(&w.as_str()))
    };
    if !words.iter().all(known) {
        return None;
    }
    let said = words.join(" ");
    // "that's all", "have a nice day" close a conversation without a
    // goodbye word.
    let closes = said.contains("thats all")
        || (words.iter().any(|w| w == "have")
            && words
                .iter()
                .any(|w| matches!(w.as_str(), "day" | "night" | "weekend" | "one")));
    let asks_how = said.contains("how are you") || said.contains("whats up");
    if has(GOODBYE) || closes {
        Some(Pleasantry::Goodbye)
    } else if has(THANKS) {
        Some(Pleasantry::Thanks)
    } else if has(HELLO) || asks_how {
        Some(Pleasantry::Hello)
    } else {
        None
    }
}

fn detect_zh(text: &str) -> Option<Pleasantry> {
    let mut rest: String = text
        .chars()
        .filter(|c| crate::kb::is_han(*c) || c.is_alphanumeric())
        .collect();
    // Which of hello, thanks and goodbye the message says.
    let mut found = [false; 3];
    // Longest phrases first, so "好的" is not read as "好" and a stray "的".
    let mut phrases: Vec<(&str, usize)> = [ZH_HELLO, ZH_THANKS, ZH_GOODBYE, ZH_FILLER]
        .iter()
        .enumerate()
        .flat_map(|(k, l)| l.iter().map(move |p| (*p, k)))
        .collect();
    phrases.sort_by_key(|(p, _)| std::cmp::Reverse(p.chars().count()));
    for (p, k) in phrases {
        if rest.contains(p) {
            rest = rest.replace(p, "");
            if let Some(f) = found.get_mut(k) {
                *f = true;
            }
        }
    }
    if !rest.is_empty() {
        return None;
    }
    match found {
        [_, _, true] => Some(Pleasantry::Goodbye),
        [_, true, _] => Some(Pleasantry::Thanks),
        [true, _, _] => Some(Pleasantry::Hello),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_pleasantries_are_told_from_questions() {
        use Pleasantry::*;
        for (text, want) in [
            ("thanks!", Some(Thanks)),
            ("thank you so much", Some(Thanks)),
            ("Thanks a lot, very helpful", Some(Thanks)),
            ("ok thanks, that's all!", Some(Goodbye)),
            ("bye", Some(Goodbye)),
            ("have a nice day", Some(Goodbye)),
            ("hi", Some(Hello)),
            ("hey, how's your day going?", Some(Hello)),
            ("good morning", Some(Hello)),
            ("how are you?", Some(Hello)),
            ("谢谢！", Some(Thanks)),
            ("你好", Some(Hello)),
            ("好的，再见", Some(Goodbye)),
            // Anything asked makes it a question.
            ("hi, is express available to canada?", None),
            ("thanks! and to canada?", None),
            ("ok", None),
            ("good", None),
            ("how do i return boots", None),
            ("你好，运费多少？", None),
            (
                "thanks thanks thanks thanks thanks thanks thanks thanks thanks thanks thanks thanks thanks",
                None,
            ),
        ] {
            assert_eq!(detect(text), want, "{text}");
        }
    }
}
