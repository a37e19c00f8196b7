//! Tokenizers (byte-level BPE and char-level), the chat template and its
//! special tokens, and the dialog format shared by fine-tuning, the store
//! export and evaluation.

mod dialog;
pub mod pii;
mod template;
mod tokenizer;
mod train;

pub use dialog::{Dialog, Message, Role, read_dialogs_jsonl};
pub use pii::{NamedPattern, PiiKind, Redactor};
pub use template::{
    EncodedDialog, Prompt, encode_dialog, encode_dialog_last, encode_prompt, encode_prompt_within,
};
pub use tokenizer::{ChatTokenizer, SpecialIds, TokenizerKind};
pub use train::{default_control_tags, train_tokenizer};

/// Ends a document.
pub const ENDOFTEXT: &str = "<|endoftext|>";
/// Opens a system turn.
pub const SYSTEM: &str = "<|system|>";
/// Opens a user turn.
pub const USER: &str = "<|user|>";
/// Opens an assistant turn.
pub const ASSISTANT: &str = "<|assistant|>";
/// Closes any turn.
pub const END: &str = "<|end|>";
/// Opens the block of retrieved passages a reply may draw its facts from
/// (closed by `<|end|>`).
pub const CONTEXT: &str = "<|context|>";
/// Starts one passage inside the context block: its title, a line break,
/// its text.
pub const PASSAGE: &str = "<|passage|>";
/// Unknown character (char-level tokenizers only).
pub const UNK: &str = "<|unk|>";

/// The control token steering `kind` (`topic`, `style`) towards `value`.
pub fn control_tag(kind: &str, value: &str) -> String {
    format!("<|{kind}={value}|>")
}

/// Errors of the text stage.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("{path}:{line}: {reason}")]
    Dialog {
        path: String,
        line: usize,
        reason: String,
    },
    #[error("invalid dialog: {0}")]
    InvalidDialog(String),
    #[error(transparent)]
    Io(#[from] crate::fsio::IoError),
}

pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn tk_err(e: impl std::fmt::Display) -> Error {
    Error::Tokenizer(e.to_string())
}
