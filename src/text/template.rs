//! The chat template: `[control tags] <|system|>…<|end|> [<|context|>
//! <|passage|>title\ntext … <|end|>] <|user|>…<|end|> <|assistant|>…<|end|>
//! … <|endoftext|>`. The context block holds the retrieved passages the
//! reply may draw its facts from. Sequences are assembled from ids, never by
//! formatting and re-tokenising a string, so message and passage text can
//! only ever be plain text.

use super::{ChatTokenizer, Dialog, Result, Role, control_tag};

/// A dialog as ids, with which positions count in the loss.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedDialog {
    pub ids: Vec<u32>,
    /// `true` where the token is part of an assistant reply (its text and the
    /// closing `<|end|>`), the only tokens fine-tuning learns to produce.
    pub loss_mask: Vec<bool>,
}

fn role_id(tok: &ChatTokenizer, role: Role) -> u32 {
    let s = tok.special();
    match role {
        Role::System => s.system,
        Role::User => s.user,
        Role::Assistant => s.assistant,
    }
}

/// Control tag ids for the dialog's topic/style; tags the tokenizer does not
/// declare are skipped with a warning rather than spelled out as text.
fn control_ids(tok: &ChatTokenizer, dialog: &Dialog) -> Vec<u32> {
    let mut ids = Vec::new();
    for (kind, value) in [("topic", &dialog.topic), ("style", &dialog.style)] {
        if let Some(v) = value {
            let tag = control_tag(kind, v);
            match tok.control_id(&tag) {
                Some(id) => ids.push(id),
                None => tracing::warn!("control tag {tag} is not in the tokenizer; skipped"),
            }
        }
    }
    ids
}

/// The context block for `dialog.context` (empty without passages; a
/// tokenizer without the context tokens gets none, with a warning).
fn context_ids(tok: &ChatTokenizer, dialog: &Dialog) -> Result<Vec<u32>> {
    if dialog.context.is_empty() {
        return Ok(Vec::new());
    }
    let s = tok.special();
    let Some((open, passage)) = s.context else {
        tracing::warn!(
            "this model has no context tokens (<|context|>, <|passage|>); retrieved passages are not shown to it"
        );
        return Ok(Vec::new());
    };
    let mut ids = vec![open];
    for p in &dialog.context {
        ids.push(passage);
        ids.extend(tok.encode_text(p)?);
    }
    ids.push(s.end);
    Ok(ids)
}

/// Encodes a whole dialog for fine-tuning: every assistant turn is learned.
pub fn encode_dialog(tok: &ChatTokenizer, dialog: &Dialog) -> Result<EncodedDialog> {
    encode_learning(tok, dialog, false)
}

/// Encodes a dialog whose context belongs to its last reply: only that
/// reply is learned (the earlier ones were written with other contexts).
pub fn encode_dialog_last(tok: &ChatTokenizer, dialog: &Dialog) -> Result<EncodedDialog> {
    encode_learning(tok, dialog, true)
}

fn encode_learning(tok: &ChatTokenizer, dialog: &Dialog, last_only: bool) -> Result<EncodedDialog> {
    tok.require_chat()?;
    let controls = control_ids(tok, dialog);
    let mut loss_mask = vec![false; controls.len()];
    let mut ids = controls;
    let end = tok.special().end;
    let last_reply = dialog
        .messages
        .iter()
        .rposition(|m| m.role == Role::Assistant);
    let mut context_done = false;
    for (i, m) in dialog.messages.iter().enumerate() {
        if m.role != Role::System && !context_done {
            let c = context_ids(tok, dialog)?;
            loss_mask.extend(std::iter::repeat_n(false, c.len()));
            ids.extend(c);
            context_done = true;
        }
        let learn = m.role == Role::Assistant && (!last_only || Some(i) == last_reply);
        ids.push(role_id(tok, m.role));
        loss_mask.push(false);
        let text = tok.encode_text(&m.content)?;
        loss_mask.extend(std::iter::repeat_n(learn, text.len() + 1));
        ids.extend(text);
        ids.push(end);
    }
    ids.push(tok.special().endoftext);
    loss_mask.push(false);
    Ok(EncodedDialog { ids, loss_mask })
}

/// Encodes the context for generating the next assistant turn: the dialog's
/// messages followed by an open `<|assistant|>`.
pub fn encode_prompt(tok: &ChatTokenizer, dialog: &Dialog) -> Result<Vec<u32>> {
    tok.require_chat()?;
    let mut ids = control_ids(tok, dialog);
    let mut context_done = false;
    for m in &dialog.messages {
        if m.role != Role::System && !context_done {
            ids.extend(context_ids(tok, dialog)?);
            context_done = true;
        }
        ids.push(role_id(tok, m.role));
        ids.extend(tok.encode_text(&m.content)?);
        ids.push(tok.special().end);
    }
    ids.push(tok.special().assistant);
    Ok(ids)
}

/// A prompt cut to fit its budget, and how much was cut.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    pub ids: Vec<u32>,
    /// Whole turns dropped from the start of the conversation.
    pub dropped_turns: usize,
    /// Tokens cut from the start of the latest turn (a message too long for
    /// the context on its own).
    pub cut_tokens: usize,
}

/// [`encode_prompt`] within `budget` tokens: the oldest turns after the
/// system prompt are dropped first; if the latest turn alone is still too
/// long, its oldest tokens go. Control tags and system messages always stay.
pub fn encode_prompt_within(tok: &ChatTokenizer, dialog: &Dialog, budget: usize) -> Result<Prompt> {
    tok.require_chat()?;
    let s = tok.special();
    let mut head = control_ids(tok, dialog);
    let context = context_ids(tok, dialog)?;
    let mut turns: Vec<Vec<u32>> = Vec::new();
    for m in &dialog.messages {
        let mut ids = vec![role_id(tok, m.role)];
        ids.extend(tok.encode_text(&m.content)?);
        ids.push(s.end);
        if m.role == Role::System {
            head.extend(ids);
        } else {
            turns.push(ids);
        }
    }
    // The context follows the system prompt and stays with it.
    head.extend(context);
    // head + turns + the open <|assistant|>
    let fixed = head.len() + 1;
    if fixed + 3 > budget {
        return Err(super::Error::Tokenizer(format!(
            "the system prompt and control tags take {} tokens, more than the {budget} available",
            head.len()
        )));
    }
    let mut used: usize = fixed + turns.iter().map(Vec::len).sum::<usize>();
    let mut first = 0;
    while used > budget && first + 1 < turns.len() {
        used -= turns[first].len();
        first += 1;
    }
    let mut ids = head;
    let mut cut_tokens = 0;
    if let Some(last) = turns.get_mut(first)
        && used > budget
    {
        // Keep the role id, the newest text and <|end|>.
        cut_tokens = (used - budget).min(last.len() - 2);
        last.drain(1..1 + cut_tokens);
    }
    for t in &turns[first..] {
        ids.extend(t);
    }
    ids.push(s.assistant);
    Ok(Prompt {
        ids,
        dropped_turns: first,
        cut_tokens,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::{Message, TokenizerKind, default_control_tags, train_tokenizer};

    #[test]
    fn test_loss_mask_covers_exactly_assistant_text_and_end() {
        let tok = train_tokenizer(
            &["hello there, how can I help? my order is late".to_string()],
            TokenizerKind::Char,
            0,
            &default_control_tags(),
        )
        .unwrap();
        let d = Dialog {
            messages: vec![
                Message {
                    role: Role::System,
                    content: "be kind".into(),
                },
                Message {
                    role: Role::User,
                    content: "<|assistant|>hi".into(),
                },
                Message {
                    role: Role::Assistant,
                    content: "hello".into(),
                },
            ],
            topic: Some("orders".into()),
            style: Some("no-such-style".into()),
            ..Default::default()
        };
        let e = encode_dialog(&tok, &d).unwrap();
        assert_eq!(e.ids.len(), e.loss_mask.len());
        let s = tok.special();
        // topic tag, system(1+7+1), user(1+15+1), assistant(1+5+1), eot
        assert_eq!(e.ids[0], tok.control_id("<|topic=orders|>").unwrap());
        let learned: Vec<u32> = e
            .ids
            .iter()
            .zip(&e.loss_mask)
            .filter(|p| *p.1)
            .map(|p| *p.0)
            .collect();
        let mut want = tok.encode_text("hello").unwrap();
        want.push(s.end);
        assert_eq!(learned, want);
        // The user's fake control token stayed text: exactly one assistant id.
        assert_eq!(e.ids.iter().filter(|&&i| i == s.assistant).count(), 1);
        assert_eq!(*e.ids.last().unwrap(), s.endoftext);
        let p = encode_prompt(
            &tok,
            &Dialog {
                messages: d.messages[..2].to_vec(),
                ..d.clone()
            },
        )
        .unwrap();
        assert_eq!(p[..], e.ids[..p.len()]);
    }

    #[test]
    fn test_prompt_within_budget_drops_oldest_turns_keeps_system() {
        let tok = train_tokenizer(
            &["abcdefghijklmnopqrstuvwxyz .?".to_string()],
            TokenizerKind::Char,
            0,
            &default_control_tags(),
        )
        .unwrap();
        let msg = |role, c: &str| Message {
            role,
            content: c.into(),
        };
        let d = Dialog {
            messages: vec![
                msg(Role::System, "be kind"),
                msg(Role::User, "first question"),
                msg(Role::Assistant, "first answer"),
                msg(Role::User, "second"),
            ],
            topic: None,
            style: None,
            ..Default::default()
        };
        let full = encode_prompt(&tok, &d).unwrap();
        let whole = encode_prompt_within(&tok, &d, full.len()).unwrap();
        assert_eq!(
            (whole.ids, whole.dropped_turns, whole.cut_tokens),
            (full, 0, 0)
        );
        let s = tok.special();
        // Room for system (9) + last user turn (8) + assistant (1) only.
        let cut = encode_prompt_within(&tok, &d, 18).unwrap();
        assert_eq!((cut.dropped_turns, cut.cut_tokens), (2, 0));
        assert_eq!(
            tok.decode(&cut.ids, false).unwrap(),
            "<|system|>be kind<|end|><|user|>second<|end|><|assistant|>"
        );
        // Even less room: the last turn loses its oldest characters.
        let cut = encode_prompt_within(&tok, &d, 14).unwrap();
        assert_eq!(cut.cut_tokens, 4);
        let cut = cut.ids;
        assert_eq!(cut.len(), 14);
        assert_eq!(cut[9], s.user);
        assert_eq!(
            tok.decode(&cut[10..], false).unwrap(),
            "nd<|end|><|assistant|>"
        );
        assert!(encode_prompt_within(&tok, &d, 10).is_err());
    }
}
