use std::collections::HashMap;
use std::path::Path;

use tokenizers::{AddedToken, DecoderWrapper, Tokenizer};

use super::{
    ASSISTANT, CONTEXT, END, ENDOFTEXT, Error, PASSAGE, Result, SYSTEM, UNK, USER, tk_err,
};

/// Which family a tokenizer belongs to (recorded in the bundle).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenizerKind {
    /// Byte-level BPE, as GPT-2.
    Bpe,
    /// One token per character, as nanoGPT's shakespeare_char.
    Char,
}

/// Ids of the chat template's special tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialIds {
    pub endoftext: u32,
    pub system: u32,
    pub user: u32,
    pub assistant: u32,
    pub end: u32,
    /// `<|context|>` and `<|passage|>`, when the vocabulary has them
    /// (tokenizers from before retrieval, and models without rows for
    /// them, do not).
    pub context: Option<(u32, u32)>,
}

/// A tokenizer with the chat special tokens, which never lets user text
/// become a control token.
#[derive(Clone)]
pub struct ChatTokenizer {
    /// As loaded/saved; matches special tokens in its input.
    raw: Tokenizer,
    /// Same vocabulary with special-token matching off, for untrusted text.
    plain: Tokenizer,
    special: SpecialIds,
    /// The chat tokens are in the vocabulary (false for a stock GPT-2
    /// checkpoint's tokenizer whose model has no rows for them).
    has_chat: bool,
    special_set: Vec<bool>,
    controls: HashMap<String, u32>,
    token_bytes: Vec<u32>,
}

impl std::fmt::Debug for ChatTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTokenizer")
            .field("kind", &self.kind())
            .field("vocab_size", &self.vocab_size())
            .finish()
    }
}

impl ChatTokenizer {
    /// Wraps a tokenizer, adding any missing chat special tokens (so a stock
    /// GPT-2 `tokenizer.json` gains `<|system|>` … after its 50,257 ids):
    /// what training and fine-tuning use, growing the model's vocabulary.
    pub fn new(raw: Tokenizer) -> Result<Self> {
        Self::build(raw, None)
    }

    /// The tokenizer of a model with `model_vocab` embedding rows: the chat
    /// tokens are added only if the model has rows for them. Without them
    /// (a stock Hugging Face GPT-2 checkpoint) the tokenizer still encodes
    /// and decodes plain text, for raw generation; chat prompts are refused
    /// with an error that says to fine-tune first.
    pub fn within(raw: Tokenizer, model_vocab: usize) -> Result<Self> {
        Self::build(raw, Some(model_vocab))
    }

    fn build(mut raw: Tokenizer, model_vocab: Option<usize>) -> Result<Self> {
        let chat = [ENDOFTEXT, SYSTEM, USER, ASSISTANT, END];
        // Adds what is missing of `tokens` if the model has rows for it.
        let mut add = |tokens: &[&str]| -> Result<bool> {
            let missing: Vec<AddedToken> = tokens
                .iter()
                .filter(|t| raw.token_to_id(t).is_none())
                .map(|t| AddedToken::from(t.to_string(), true))
                .collect();
            let fits = model_vocab.is_none_or(|v| raw.get_vocab_size(true) + missing.len() <= v);
            if missing.is_empty() {
                Ok(true)
            } else if fits {
                raw.add_special_tokens(missing).map_err(tk_err)?;
                Ok(true)
            } else {
                Ok(false)
            }
        };
        let has_chat = add(&chat)?;
        let has_context = has_chat && add(&[CONTEXT, PASSAGE])?;
        let mut wanted: Vec<&str> = if has_chat {
            chat.to_vec()
        } else {
            vec![ENDOFTEXT]
        };
        if has_context {
            wanted.extend([CONTEXT, PASSAGE]);
        }
        let added = raw.get_added_tokens_decoder();
        for &t in &wanted {
            let id = raw
                .token_to_id(t)
                .ok_or_else(|| tk_err(format!("{t} missing")))?;
            if !added.get(&id).is_some_and(|a| a.special) {
                return Err(Error::Tokenizer(format!(
                    "{t} (id {id}) is not declared as a special token, so user text could produce it"
                )));
            }
        }
        // Without chat tokens these ids stay unused: `require_chat` guards
        // every chat template function.
        let id = |t: &str| raw.token_to_id(t).unwrap_or(u32::MAX);
        let special = SpecialIds {
            endoftext: id(ENDOFTEXT),
            system: id(SYSTEM),
            user: id(USER),
            assistant: id(ASSISTANT),
            end: id(END),
            context: has_context.then(|| (id(CONTEXT), id(PASSAGE))),
        };
        let vocab = raw.get_vocab_size(true);
        let mut special_set = vec![false; vocab];
        let mut controls = HashMap::new();
        for (id, tok) in added.iter() {
            // `<|unk|>` (char-level) stands for an unseen character: user
            // text may produce it, and it steers nothing.
            if tok.special && tok.content != UNK {
                if let Some(slot) = special_set.get_mut(*id as usize) {
                    *slot = true;
                }
                if tok.content.starts_with("<|") && tok.content.contains('=') {
                    controls.insert(tok.content.clone(), *id);
                }
            }
        }
        let token_bytes = token_byte_lengths(&raw, &special_set);
        let mut plain = raw.clone();
        plain.set_encode_special_tokens(true);
        Ok(Self {
            raw,
            plain,
            special,
            has_chat,
            special_set,
            controls,
            token_bytes,
        })
    }

    /// Loads a `tokenizer.json` (chatforge's or any HF one), adding the
    /// chat tokens it lacks.
    pub fn from_file(path: &Path) -> Result<Self> {
        Self::new(read_raw(path)?)
    }

    /// Loads the `tokenizer.json` of a model with `model_vocab` rows
    /// ([`Self::within`]).
    pub fn from_file_within(path: &Path, model_vocab: usize) -> Result<Self> {
        Self::within(read_raw(path)?, model_vocab)
    }

    /// Whether the chat tokens are in the vocabulary.
    pub fn has_chat_tokens(&self) -> bool {
        self.has_chat
    }

    /// Fails, saying what to do, when the chat tokens are missing.
    pub fn require_chat(&self) -> Result<()> {
        if self.has_chat {
            Ok(())
        } else {
            Err(Error::Tokenizer(
                "this model's vocabulary has no chat tokens (<|user|>, <|assistant|>, …): it is a plain language model, e.g. a stock GPT-2 checkpoint; generate plain text with `--raw`, or fine-tune it on dialogs (`chatforge finetune`), which adds them".into(),
            ))
        }
    }

    /// Writes `tokenizer.json` atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let json = self.raw.to_string(false).map_err(tk_err)?;
        crate::fsio::write_atomic(path, json.as_bytes()).map_err(tk_err)
    }

    /// Encodes text from a user, a platform or a corpus: special-token
    /// syntax stays plain text and can never yield a control id.
    pub fn encode_text(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.plain.encode(text, false).map_err(tk_err)?;
        let ids = enc.get_ids().to_vec();
        if let Some(bad) = ids.iter().find(|&&i| self.is_special(i)) {
            return Err(Error::Tokenizer(format!(
                "plain-text encoding produced special id {bad}; the tokenizer is inconsistent"
            )));
        }
        Ok(ids)
    }

    /// Decodes ids, dropping special tokens when `skip_special` is set.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.raw.decode(ids, skip_special).map_err(tk_err)
    }

    pub fn vocab_size(&self) -> usize {
        self.raw.get_vocab_size(true)
    }

    pub fn special(&self) -> SpecialIds {
        self.special
    }

    pub fn is_special(&self, id: u32) -> bool {
        self.special_set.get(id as usize).copied().unwrap_or(false)
    }

    /// Id of any token by its spelling (e.g. a stop token `<|end|>`).
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.raw.token_to_id(token)
    }

    /// Id of a declared control tag such as `<|topic=billing|>`.
    pub fn control_id(&self, tag: &str) -> Option<u32> {
        self.controls.get(tag).copied()
    }

    /// UTF-8 bytes each id stands for (0 for special tokens): the
    /// denominator of bits-per-byte.
    pub fn token_bytes(&self) -> &[u32] {
        &self.token_bytes
    }

    pub fn kind(&self) -> TokenizerKind {
        match self.raw.get_decoder() {
            Some(DecoderWrapper::ByteLevel(_)) => TokenizerKind::Bpe,
            _ => TokenizerKind::Char,
        }
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.raw.id_to_token(id)
    }
}

/// Byte-level tokens are spelled with GPT-2's byte↔unicode alphabet, one
/// char per byte; other tokens are their own UTF-8.
fn read_raw(path: &Path) -> Result<Tokenizer> {
    if !path.exists() {
        return Err(crate::fsio::io_err(path)(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no such file",
        ))
        .into());
    }
    Tokenizer::from_file(path).map_err(|e| Error::Tokenizer(format!("{}: {e}", path.display())))
}

fn token_byte_lengths(raw: &Tokenizer, special: &[bool]) -> Vec<u32> {
    let byte_level = matches!(raw.get_decoder(), Some(DecoderWrapper::ByteLevel(_)));
    (0..special.len())
        .map(|id| {
            if special[id] {
                return 0;
            }
            match raw.id_to_token(id as u32) {
                Some(t) if t == UNK => 1,
                Some(t) if byte_level => t.chars().count() as u32,
                Some(t) => t.len() as u32,
                None => 0,
            }
        })
        .collect()
}
