use std::collections::HashMap;
use std::path::Path;

use tokenizers::{AddedToken, DecoderWrapper, Tokenizer};

use super::{ASSISTANT, END, ENDOFTEXT, Error, Result, SYSTEM, UNK, USER, tk_err};

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
    /// GPT-2 `tokenizer.json` gains `<|system|>` … after its 50,257 ids).
    pub fn new(mut raw: Tokenizer) -> Result<Self> {
        let wanted = [ENDOFTEXT, SYSTEM, USER, ASSISTANT, END];
        let missing: Vec<AddedToken> = wanted
            .iter()
            .filter(|t| raw.token_to_id(t).is_none())
            .map(|t| AddedToken::from(t.to_string(), true))
            .collect();
        if !missing.is_empty() {
            raw.add_special_tokens(missing).map_err(tk_err)?;
        }
        let added = raw.get_added_tokens_decoder();
        for t in wanted {
            let id = raw
                .token_to_id(t)
                .ok_or_else(|| tk_err(format!("{t} missing")))?;
            if !added.get(&id).is_some_and(|a| a.special) {
                return Err(Error::Tokenizer(format!(
                    "{t} (id {id}) is not declared as a special token, so user text could produce it"
                )));
            }
        }
        let id = |t: &str| raw.token_to_id(t).unwrap_or(u32::MAX);
        let special = SpecialIds {
            endoftext: id(ENDOFTEXT),
            system: id(SYSTEM),
            user: id(USER),
            assistant: id(ASSISTANT),
            end: id(END),
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
            special_set,
            controls,
            token_bytes,
        })
    }

    /// Loads a `tokenizer.json` (chatforge's or any HF one).
    pub fn from_file(path: &Path) -> Result<Self> {
        if !path.exists() {
            return Err(Error::Io {
                path: path.display().to_string(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            });
        }
        let raw = Tokenizer::from_file(path)
            .map_err(|e| Error::Tokenizer(format!("{}: {e}", path.display())))?;
        Self::new(raw)
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
