//! Generation: left-padded batched prefill, then one cached decode step per
//! token, streaming each row's text as soon as it is valid UTF-8 and cannot
//! turn into a stop string.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use super::decoder::{Logits, OnnxDecoder};
use super::providers::{RuntimeConfig, open_file};
use super::sampling::{Sampler, SamplingParams, ban_openings, copy_continuations};
use super::{Error, Result};
use crate::bundle::{Bundle, GenerationDefaults};
use crate::text::{ChatTokenizer, Dialog, encode_prompt_within};

/// Why a sequence ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    StopToken,
    StopString,
    MaxTokens,
    /// The model's context is full.
    Context,
    /// The caller raised the cancel flag (a timeout, or nobody is reading).
    Cancelled,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    pub text: String,
    /// Generated ids, without the stop token.
    pub tokens: Vec<u32>,
    pub prompt_tokens: usize,
    /// Tokens cut from the start of the latest message to fit the context
    /// (0 unless that message alone was too long).
    pub prompt_cut_tokens: usize,
    pub stop: StopReason,
}

/// A bundle's decoder and tokenizer, ready to generate.
pub struct Generator {
    decoder: OnnxDecoder,
    tok: ChatTokenizer,
    defaults: GenerationDefaults,
    bundle: Bundle,
}

/// What ends a row and what it may not draw.
pub(super) struct RowRule<'a> {
    pub params: &'a SamplingParams,
    /// Tokens the row may generate.
    pub budget: usize,
    pub bans: &'a Bans,
}

/// A row's parameters as token ids: what ends it and what it may not draw.
pub(super) struct Bans {
    pub stop_ids: Vec<u32>,
    /// Never drawn: special tokens other than the stop tokens.
    pub banned: Vec<bool>,
    /// [`SamplingParams::avoid_openings`], encoded.
    pub openings: Vec<Vec<u32>>,
}

/// Per-row state while generating.
pub(super) struct Row {
    pub sampler: Sampler,
    /// The prompt and the tokens generated so far.
    pub history: Vec<u32>,
    /// What the repetition penalty counts: `history` without the prompt's
    /// context block. The passages are there to be copied: penalizing
    /// their tokens garbled the facts a grounded reply quotes.
    pub penalized: Vec<u32>,
    /// The prompt's context block, which the reply may copy from.
    pub context: Vec<u32>,
    pub tokens: Vec<u32>,
    pub stream: TextStream,
    pub stop: Option<StopReason>,
    pub last_pos: i64,
}

impl Row {
    /// A row about to continue `prompt`; `context` is the tokenizer's
    /// `<|context|>` id and `end` its `<|end|>`.
    pub(super) fn new(sampler: Sampler, prompt: Vec<u32>, context: Option<u32>, end: u32) -> Self {
        let mut penalized = prompt.clone();
        let mut block = Vec::new();
        if let Some(open) = context
            && let Some(a) = prompt.iter().position(|&t| t == open)
        {
            let b = prompt[a..]
                .iter()
                .position(|&t| t == end)
                .map_or(prompt.len(), |i| a + i + 1);
            block = penalized.drain(a..b).collect();
        }
        Self {
            sampler,
            last_pos: prompt.len() as i64 - 1,
            history: prompt,
            penalized,
            context: block,
            tokens: Vec::new(),
            stream: TextStream::default(),
            stop: None,
        }
    }
}

impl Generator {
    /// Opens `<dir>/model.onnx` with its tokenizer, checking that model,
    /// config and tokenizer agree.
    pub fn open(dir: &Path, runtime: &RuntimeConfig) -> Result<Self> {
        let bundle = Bundle::open(dir)?;
        let tok = bundle.tokenizer()?;
        if tok.vocab_size() != bundle.config.vocab_size {
            return Err(Error::Model(format!(
                "{}: tokenizer.json has {} ids but config.json says vocab_size {}",
                dir.display(),
                tok.vocab_size(),
                bundle.config.vocab_size
            )));
        }
        let path = runtime.precision.graph_in(dir).map_err(Error::Model)?;
        let loaded = open_file(runtime, &path)?;
        let decoder = OnnxDecoder::new(loaded, &bundle.config)?;
        let mut defaults = bundle.generation_defaults()?;
        if !tok.has_chat_tokens() {
            // A plain language model (a stock GPT-2 checkpoint) stops only
            // at the tokens it has, e.g. `<|endoftext|>`.
            defaults.stop_tokens.retain(|t| tok.token_id(t).is_some());
        }
        Ok(Self {
            decoder,
            tok,
            defaults,
            bundle,
        })
    }

    pub fn tokenizer(&self) -> &ChatTokenizer {
        &self.tok
    }

    pub fn defaults(&self) -> &GenerationDefaults {
        &self.defaults
    }

    pub fn bundle(&self) -> &Bundle {
        &self.bundle
    }

    pub fn decoder(&self) -> &OnnxDecoder {
        &self.decoder
    }

    pub(super) fn decoder_mut(&mut self) -> &mut OnnxDecoder {
        &mut self.decoder
    }

    /// Sampling settings from `generation.json`.
    pub fn default_params(&self) -> SamplingParams {
        SamplingParams::from(&self.defaults)
    }

    /// The next assistant turn of `dialog`; the prompt is cut from the
    /// oldest turns to leave room for `max_new_tokens`.
    pub fn reply(
        &mut self,
        dialog: &Dialog,
        params: &SamplingParams,
        on_text: &mut dyn FnMut(usize, &str),
    ) -> Result<Generation> {
        self.reply_cancellable(dialog, params, &AtomicBool::new(false), on_text)
    }

    /// [`Self::reply`] that stops with [`StopReason::Cancelled`] at the next
    /// token once `cancel` is set (from another thread).
    pub fn reply_cancellable(
        &mut self,
        dialog: &Dialog,
        params: &SamplingParams,
        cancel: &AtomicBool,
        on_text: &mut dyn FnMut(usize, &str),
    ) -> Result<Generation> {
        let prompt = self.prompt(dialog, params)?;
        let mut out = self.run(&[prompt.ids], params, cancel, on_text)?;
        let mut g = out.remove(0);
        g.prompt_cut_tokens = prompt.cut_tokens;
        Ok(g)
    }

    /// The prompt of the next assistant turn of `dialog`: cut from the
    /// oldest turns (and the context passages fitted) to leave room for
    /// `max_new_tokens`.
    pub fn prompt(&self, dialog: &Dialog, params: &SamplingParams) -> Result<crate::text::Prompt> {
        let ctx = self.decoder.config().n_positions;
        if dialog.context.is_empty() {
            let room = params.max_new_tokens.min(ctx / 2).max(1);
            return Ok(encode_prompt_within(&self.tok, dialog, ctx - room)?);
        }
        // What the system prompt, tags and latest message leave is shared
        // evenly by the passages and the reply, which quotes them: with
        // half the context kept for the reply and the passages held to
        // 3/5 of the rest, the demo model saw its answer cut short: 26 of
        // its replies to the 269 customer-words and out-of-scope questions
        // passed the guard in its own words, 62 with this split (greedy).
        let latest = Dialog {
            messages: dialog
                .messages
                .iter()
                .filter(|m| m.role == crate::text::Role::System)
                .chain(dialog.messages.last())
                .cloned()
                .collect(),
            context: Vec::new(),
            ..dialog.clone()
        };
        let fixed = encode_prompt_within(&self.tok, &latest, usize::MAX)?
            .ids
            .len();
        let share = (ctx.saturating_sub(fixed) / 2).max(ctx / 4);
        let room = params.max_new_tokens.min(share).max(1);
        let avail = ctx - room;
        let fitted = self.fit_context(dialog, avail.saturating_sub(fixed))?;
        Ok(encode_prompt_within(&self.tok, &fitted, avail)?)
    }

    /// `dialog` with its context passages within `budget` tokens: the
    /// later (weaker) passages go first; a first passage too long on its own
    /// keeps its first sentences.
    fn fit_context(&self, dialog: &Dialog, budget: usize) -> Result<Dialog> {
        let mut d = dialog.clone();
        let cost = |p: &str| -> Result<usize> { Ok(self.tok.encode_text(p)?.len() + 1) };
        let mut used = 2;
        let mut kept = Vec::new();
        for p in &d.context {
            let c = cost(p)?;
            if used + c <= budget {
                used += c;
                kept.push(p.clone());
            } else if kept.is_empty() {
                // Sentence by sentence until the budget.
                let mut part = String::new();
                for s in crate::kb::sentences_of(p) {
                    if used + cost(&format!("{part}{s}"))? > budget {
                        break;
                    }
                    part.push_str(&s);
                }
                if !part.trim().is_empty() {
                    kept.push(part.trim().to_string());
                }
                break;
            } else {
                break;
            }
        }
        d.context = kept;
        Ok(d)
    }

    /// Generates a continuation for every prompt, as one batch. `on_text`
    /// receives `(row, new text)` as it becomes final.
    pub fn generate(
        &mut self,
        prompts: &[Vec<u32>],
        params: &SamplingParams,
        on_text: &mut dyn FnMut(usize, &str),
    ) -> Result<Vec<Generation>> {
        self.run(prompts, params, &AtomicBool::new(false), on_text)
    }

    fn run(
        &mut self,
        prompts: &[Vec<u32>],
        params: &SamplingParams,
        cancel: &AtomicBool,
        on_text: &mut dyn FnMut(usize, &str),
    ) -> Result<Vec<Generation>> {
        params.validate().map_err(Error::Input)?;
        let ctx = self.decoder.config().n_positions;
        let vocab = self.decoder.config().vocab_size;
        if prompts.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(p) = prompts.iter().find(|p| p.is_empty() || p.len() >= ctx) {
            return Err(Error::Input(format!(
                "a prompt has {} tokens; it must have between 1 and {} (the context is {ctx})",
                p.len(),
                ctx - 1
            )));
        }
        // Special tokens other than the stop tokens never appear in a reply.
        let bans = self.bans(params)?;
        let pad = self.tok.special().endoftext as i64;
        let batch = prompts.len();
        let width = prompts.iter().map(Vec::len).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(batch * width);
        let mut positions = Vec::with_capacity(batch * width);
        let mut mask = Vec::with_capacity(batch * width);
        let mut rows = Vec::with_capacity(batch);
        for (r, p) in prompts.iter().enumerate() {
            let padding = width - p.len();
            ids.extend(std::iter::repeat_n(pad, padding));
            ids.extend(p.iter().map(|&t| t as i64));
            mask.extend(std::iter::repeat_n(0i64, padding));
            mask.extend(std::iter::repeat_n(1i64, p.len()));
            positions.extend(std::iter::repeat_n(0i64, padding));
            positions.extend(0..p.len() as i64);
            rows.push(self.row(Sampler::new(params, r as u64), p.clone()));
        }
        let budget = params.max_new_tokens.min(ctx - width);
        let cache = self.decoder.empty_cache(batch)?;
        let (mut logits, mut cache) =
            self.decoder
                .forward(&ids, &positions, &mask, cache, Logits::Last)?;
        for step in 0..=budget {
            if cancel.load(Ordering::Relaxed) {
                for row in rows.iter_mut().filter(|r| r.stop.is_none()) {
                    row.stop = Some(StopReason::Cancelled);
                }
                break;
            }
            debug_assert!(
                rows.iter()
                    .all(|r| r.stop.is_some() || r.tokens.len() == step)
            );
            let mut next = Vec::with_capacity(batch);
            for (r, row) in rows.iter_mut().enumerate() {
                let start = r * vocab;
                let rule = RowRule {
                    params,
                    budget,
                    bans: &bans,
                };
                let t = self.next_token(row, &logits[start..start + vocab], &rule, &mut |d| {
                    on_text(r, d)
                })?;
                next.push(t.map_or(pad, i64::from));
            }
            if rows.iter().all(|r| r.stop.is_some()) {
                break;
            }
            let step_positions: Vec<i64> = rows
                .iter_mut()
                .map(|r| {
                    r.last_pos += 1;
                    r.last_pos
                })
                .collect();
            mask.clear();
            let total = cache.len + 1;
            for p in prompts {
                let padding = width - p.len();
                mask.extend((0..total).map(|j| i64::from(j >= padding)));
            }
            (logits, cache) =
                self.decoder
                    .forward(&next, &step_positions, &mask, cache, Logits::Last)?;
        }
        let mut out = Vec::with_capacity(batch);
        for (r, row) in rows.into_iter().enumerate() {
            // Whatever was held back (a partial stop-string match) is final now.
            if !row.stream.rest().is_empty() {
                on_text(r, row.stream.rest());
            }
            out.push(Generation {
                text: row.stream.text().to_string(),
                tokens: row.tokens,
                prompt_tokens: prompts[r].len(),
                prompt_cut_tokens: 0,
                stop: row.stop.unwrap_or(StopReason::MaxTokens),
            });
        }
        Ok(out)
    }

    /// A row about to continue `prompt`.
    pub(super) fn row(&self, sampler: Sampler, prompt: Vec<u32>) -> Row {
        let s = self.tok.special();
        Row::new(sampler, prompt, s.context.map(|(open, _)| open), s.end)
    }

    /// One row's next token from its `logits` (the row's last position):
    /// `None` when the row has stopped (or stops now: its budget is spent,
    /// or it drew a stop token or reached a stop string).
    pub(super) fn next_token(
        &self,
        row: &mut Row,
        logits: &[f32],
        rule: &RowRule<'_>,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<Option<u32>> {
        if row.stop.is_some() {
            return Ok(None);
        }
        if row.tokens.len() >= rule.budget {
            row.stop = Some(if rule.budget < rule.params.max_new_tokens {
                StopReason::Context
            } else {
                StopReason::MaxTokens
            });
            return Ok(None);
        }
        let mut l = logits.to_vec();
        let bias = rule.params.copy_bias;
        if bias > 0.0 {
            for t in copy_continuations(&row.context, &row.tokens) {
                if let Some(x) = l.get_mut(t as usize) {
                    *x += bias;
                }
            }
        }
        ban_openings(&mut l, &rule.bans.openings, &row.tokens);
        let t = row.sampler.pick(&mut l, &row.penalized, &rule.bans.banned);
        if rule.bans.stop_ids.contains(&t) {
            row.stop = Some(StopReason::StopToken);
            return Ok(None);
        }
        row.tokens.push(t);
        row.history.push(t);
        row.penalized.push(t);
        let text = self.tok.decode(&row.tokens, true)?;
        let (delta, stopped) = row.stream.update(text, &rule.params.stop_strings);
        if let Some(d) = delta {
            on_text(&d);
        }
        if stopped {
            row.stop = Some(StopReason::StopString);
        }
        Ok(Some(t))
    }

    /// What `params` ends on and forbids, as ids.
    pub(super) fn bans(&self, params: &SamplingParams) -> Result<Bans> {
        let vocab = self.decoder.config().vocab_size;
        let stop_ids: Vec<u32> = params
            .stop_tokens
            .iter()
            .map(|s| {
                self.tok.token_id(s).ok_or_else(|| {
                    Error::Input(format!("stop token {s:?} is not in the tokenizer"))
                })
            })
            .collect::<Result<_>>()?;
        let banned: Vec<bool> = (0..vocab as u32)
            .map(|i| self.tok.is_special(i) && !stop_ids.contains(&i))
            .collect();
        let openings = params
            .avoid_openings
            .iter()
            .map(|o| Ok(self.tok.encode_text(o)?))
            .collect::<Result<_>>()?;
        Ok(Bans {
            stop_ids,
            banned,
            openings,
        })
    }
}

/// The text of one generated sequence as it grows, and how much of it has
/// been handed out. Text is final once it is complete UTF-8 (byte-level
/// pieces of one character decode to U+FFFD until the last one arrives) and
/// cannot still turn into a stop string.
#[derive(Debug, Default, Clone)]
pub struct TextStream {
    text: String,
    emitted: usize,
}

impl TextStream {
    /// Takes the full decoded text so far; returns the newly final part and
    /// whether a stop string was reached (the text is then cut before it).
    pub fn update(&mut self, text: String, stop_strings: &[String]) -> (Option<String>, bool) {
        let stops = || stop_strings.iter().filter(|s| !s.is_empty());
        if let Some(cut) = stops().filter_map(|s| text.find(s.as_str())).min() {
            // `get`: the decoded text may no longer have a character
            // boundary where the last delta ended.
            let delta = text
                .get(self.emitted..cut)
                .filter(|d| !d.is_empty())
                .map(str::to_string);
            self.text = text[..cut].to_string();
            self.emitted = cut;
            return (delta, true);
        }
        let mut safe = text.trim_end_matches('\u{FFFD}').len();
        for s in stops() {
            // Hold back a suffix that could grow into this stop string.
            for (i, _) in text.char_indices().rev().take(s.chars().count()) {
                if s.starts_with(&text[i..]) {
                    safe = safe.min(i);
                }
            }
        }
        let delta = text
            .get(self.emitted..safe)
            .filter(|d| !d.is_empty())
            .map(str::to_string);
        if delta.is_some() {
            self.emitted = safe;
        }
        self.text = text;
        (delta, false)
    }

    /// Everything not yet handed out (at the end of generation).
    pub fn rest(&self) -> &str {
        self.text.get(self.emitted..).unwrap_or("")
    }

    pub fn text(&self) -> &str {
        &self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_repetition_penalty_skips_the_context_block_only() {
        // 1 = <|context|>, 2 = <|end|>: system 7 8 <|end|>, the context
        // block, then the user's 9 <|end|>.
        let prompt = vec![7, 8, 2, 1, 30, 31, 2, 9, 2];
        let row = Row::new(
            Sampler::new(&SamplingParams::default(), 0),
            prompt.clone(),
            Some(1),
            2,
        );
        assert_eq!(row.history, prompt);
        assert_eq!(row.penalized, vec![7, 8, 2, 9, 2]);
        assert_eq!(row.context, vec![1, 30, 31, 2]);
        assert_eq!(row.last_pos, 8);
        // No context block (or a tokenizer without one): all of it counts.
        let row = Row::new(
            Sampler::new(&SamplingParams::default(), 0),
            vec![7, 8, 2],
            Some(1),
            2,
        );
        assert_eq!(row.penalized, vec![7, 8, 2]);
        let row = Row::new(
            Sampler::new(&SamplingParams::default(), 0),
            prompt.clone(),
            None,
            2,
        );
        assert_eq!(row.penalized, prompt);
    }

    #[test]
    fn test_stream_waits_for_whole_characters_and_stop_strings() {
        let mut s = TextStream::default();
        let stops = vec!["User:".to_string()];
        assert_eq!(
            s.update("Hi \u{FFFD}".into(), &stops),
            (Some("Hi ".into()), false)
        );
        assert_eq!(s.update("Hi 你".into(), &stops), (Some("你".into()), false));
        // "Us" may become "User:": held back.
        assert_eq!(
            s.update("Hi 你 Us".into(), &stops),
            (Some(" ".into()), false)
        );
        assert_eq!(
            s.update("Hi 你 Use it".into(), &stops),
            (Some("Use it".into()), false)
        );
        assert_eq!(
            s.update("Hi 你 Use it User: x".into(), &stops),
            (Some(" ".into()), true)
        );
        assert_eq!(s.text(), "Hi 你 Use it ");
        assert_eq!(s.rest(), "");
    }

    #[test]
    fn test_stream_survives_text_that_moved_under_the_emitted_offset() {
        // 4 bytes emitted ("ab" + "é"), then the decoder's view of the
        // start changes so that offset 3 falls inside a character: neither
        // a stop string nor the plain path may slice there.
        let stops = vec!["STOP".to_string()];
        let mut s = TextStream::default();
        assert_eq!(s.update("abé".into(), &stops), (Some("abé".into()), false));
        let (delta, stopped) = s.update("a𝄞 xSTOP".into(), &stops);
        assert!(stopped);
        assert_eq!(delta, None);
        let mut s = TextStream::default();
        assert_eq!(s.update("abé".into(), &stops), (Some("abé".into()), false));
        assert!(!s.update("a𝄞 more".into(), &stops).1);
    }
}
