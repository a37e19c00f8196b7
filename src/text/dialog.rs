//! Dialogs in the OpenAI chat JSONL format:
//! `{"messages":[{"role":"system|user|assistant","content":"…"}], "topic"?, "style"?}`.
//! ShareGPT lines (`{"conversations":[{"from":"system|human|gpt","value":"…"}]}`)
//! read as the same dialogs; writing always gives the OpenAI shape.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    #[serde(alias = "human")]
    User,
    #[serde(alias = "gpt")]
    Assistant,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    #[serde(alias = "from")]
    pub role: Role,
    #[serde(alias = "value")]
    pub content: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Dialog {
    #[serde(alias = "conversations")]
    pub messages: Vec<Message>,
    /// Optional control tag value, e.g. `billing` → `<|topic=billing|>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// Optional control tag value, e.g. `formal` → `<|style=formal|>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub style: Option<String>,
    /// Retrieved passages the next reply may draw its facts from, each
    /// `title\ntext`; encoded in a `<|context|>` block.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub context: Vec<String>,
    /// The knowledge-base passages each assistant turn rests on (titles or
    /// ids), one list per assistant message, as `data/support` and `logs
    /// export` write them; what `finetune --kb` builds contexts from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub passages: Vec<Vec<String>>,
}

impl Dialog {
    /// Checks the shape fine-tuning relies on: an optional leading system
    /// message, then user/assistant turns, at least one assistant reply.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.messages.is_empty() {
            return Err("\"messages\" is empty".into());
        }
        for (i, m) in self.messages.iter().enumerate() {
            if m.role == Role::System && i != 0 {
                return Err(format!("message {i}: a system message may only come first"));
            }
            if m.content.trim().is_empty() {
                return Err(format!("message {i}: empty content"));
            }
        }
        if !self.messages.iter().any(|m| m.role == Role::Assistant) {
            return Err("no assistant message to learn from".into());
        }
        Ok(())
    }
}

/// Reads a JSONL file of dialogs; a malformed line is an error naming the
/// file and line. Blank lines are skipped.
pub fn read_dialogs_jsonl(path: &Path) -> Result<Vec<Dialog>> {
    let text = std::fs::read_to_string(path).map_err(crate::fsio::io_err(path))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let fail = |reason: String| Error::Dialog {
            path: path.display().to_string(),
            line: i + 1,
            reason,
        };
        let d: Dialog = serde_json::from_str(line).map_err(|e| fail(e.to_string()))?;
        d.validate().map_err(fail)?;
        out.push(d);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_sharegpt_lines_read_as_dialogs() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.jsonl");
        let line = r#"{"id":"c1","conversations":[{"from":"system","value":"Be brief."},{"from":"human","value":"hi"},{"from":"gpt","value":"hello"}],"topic":"orders"}"#;
        std::fs::write(&p, format!("{line}\n")).unwrap();
        let d = read_dialogs_jsonl(&p).unwrap();
        assert_eq!(d[0].messages[1].role, Role::User);
        assert_eq!(d[0].messages[2].role, Role::Assistant);
        assert_eq!(d[0].messages[2].content, "hello");
        assert_eq!(d[0].topic.as_deref(), Some("orders"));
        let written = serde_json::to_string(&d[0]).unwrap();
        assert!(
            written.starts_with(r#"{"messages":[{"role":"system""#),
            "{written}"
        );
    }

    #[test]
    fn test_malformed_line_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.jsonl");
        let good = r#"{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"hello"}]}"#;
        let bad_role = r#"{"messages":[{"role":"robot","content":"hi"}]}"#;
        std::fs::write(&p, format!("{good}\n\n{good}\n{bad_role}\n")).unwrap();
        let err = read_dialogs_jsonl(&p).unwrap_err().to_string();
        assert!(err.contains("d.jsonl:4:"), "{err}");
        std::fs::write(&p, format!("{good}\n{{not json\n")).unwrap();
        let err = read_dialogs_jsonl(&p).unwrap_err().to_string();
        assert!(err.contains("d.jsonl:2:"), "{err}");
        let no_reply = r#"{"messages":[{"role":"user","content":"hi"}]}"#;
        std::fs::write(&p, format!("{no_reply}\n")).unwrap();
        let err = read_dialogs_jsonl(&p).unwrap_err().to_string();
        assert!(
            err.contains("d.jsonl:1:") && err.contains("assistant"),
            "{err}"
        );
    }
}
