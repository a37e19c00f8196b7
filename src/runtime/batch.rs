//! Continuous batching: one generator serves many replies at once. Each
//! decode step runs every live row together; a newcomer is prefilled (with
//! the others that arrived meanwhile) and joins the running batch at the
//! next step; a row that finishes or is cancelled leaves at once. Rows keep
//! their own positions, and the KV cache is aligned by left padding and the
//! attention mask, so a row generates the same tokens alone as in a
//! changing batch (up to the float rounding of a wider matrix product).
//!
//! The cache moves to the host and back only when rows join or leave; the
//! steps in between feed the model's output cache straight back.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use ort::value::Tensor;

use super::decoder::{KvCache, Logits};
use super::generate::{Bans, Generation, Generator, Row, RowRule, StopReason};
use super::sampling::{Sampler, SamplingParams};
use super::{Error, Result};
use crate::text::Dialog;

/// One reply for the batch.
pub struct BatchRequest {
    pub dialog: Dialog,
    pub params: SamplingParams,
    /// Set from another thread: the row stops at the next step.
    pub cancel: Arc<AtomicBool>,
    /// The reply's text as it becomes final.
    pub on_text: Box<dyn FnMut(&str) + Send>,
    pub done: Box<dyn FnOnce(Result<Generation>) + Send>,
}

/// Where requests come from.
pub trait Intake {
    /// Up to `room` waiting requests, oldest first; with `wait`, blocks
    /// until there is one. `None`: closed, and nothing is left.
    fn take(&mut self, wait: bool, room: usize) -> Option<Vec<BatchRequest>>;
}

/// How large a batch may grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// Rows decoded together at most.
    pub max_batch: usize,
    /// Token positions (rows × cached length) the batch may hold; a
    /// newcomer waits while joining would pass it. A lone request always
    /// runs.
    pub max_tokens: usize,
}

impl Default for BatchLimits {
    fn default() -> Self {
        Self {
            // 32: on two cores `bench serve` (64 conversations) gave the
            // most tokens/s at 32 for the `small` preset and ties for
            // `demo`; time to first text falls with the batch.
            max_batch: 32,
            max_tokens: 16_384,
        }
    }
}

/// A row in the running batch.
struct Live {
    row: Row,
    params: SamplingParams,
    budget: usize,
    bans: Bans,
    prompt_tokens: usize,
    cut_tokens: usize,
    /// Padding on the left of this row's cache: its tokens are the last
    /// `cache.len - pad` positions.
    pad: usize,
    /// The token to feed at the next step.
    next: Option<u32>,
    cancel: Arc<AtomicBool>,
    on_text: Box<dyn FnMut(&str) + Send>,
    done: Option<Box<dyn FnOnce(Result<Generation>) + Send>>,
}

impl Live {
    /// Still generating (a finished row stays in the batch, masked and
    /// ignored, until the next join or compaction drops it).
    fn is_live(&self) -> bool {
        self.done.is_some()
    }

    fn finish(&mut self) {
        if !self.row.stream.rest().is_empty() {
            let rest = self.row.stream.rest().to_string();
            (self.on_text)(&rest);
        }
        let g = Generation {
            text: self.row.stream.text().to_string(),
            tokens: std::mem::take(&mut self.row.tokens),
            prompt_tokens: self.prompt_tokens,
            prompt_cut_tokens: self.cut_tokens,
            stop: self.row.stop.unwrap_or(StopReason::MaxTokens),
        };
        if let Some(done) = self.done.take() {
            done(Ok(g));
        }
    }

    fn fail(&mut self, e: &Error) {
        if let Some(done) = self.done.take() {
            done(Err(Error::Run(e.to_string())));
        }
    }
}

/// A newcomer with its prompt, before it joins.
struct Waiting {
    prompt: Vec<u32>,
    cut_tokens: usize,
    req: BatchRequest,
}

impl Generator {
    /// Serves `intake` as one continuous batch until it is closed and every
    /// reply is done.
    pub fn serve_continuous(&mut self, intake: &mut dyn Intake, limits: &BatchLimits) {
        let max_batch = limits.max_batch.max(1);
        let mut rows: Vec<Live> = Vec::new();
        let mut cache: Option<KvCache> = None;
        let mut waiting: VecDeque<Waiting> = VecDeque::new();
        let mut closed = false;
        loop {
            // 1. Take what arrived (waiting for something when idle).
            let live = rows.iter().filter(|r| r.is_live()).count();
            if !closed {
                let room = max_batch.saturating_sub(live + waiting.len());
                let idle = live == 0 && waiting.is_empty();
                if room > 0 || idle {
                    match intake.take(idle, room.max(1)) {
                        Some(new) => {
                            for req in new {
                                match self.prompt(&req.dialog, &req.params) {
                                    Ok(p) => waiting.push_back(Waiting {
                                        prompt: p.ids,
                                        cut_tokens: p.cut_tokens,
                                        req,
                                    }),
                                    Err(e) => (req.done)(Err(e)),
                                }
                            }
                        }
                        None => closed = true,
                    }
                }
            }
            if closed && live == 0 && waiting.is_empty() {
                return;
            }
            // 2. Cancelled rows stop; finished rows get their result now
            // and leave the cache at the next join or compaction.
            for r in rows.iter_mut() {
                if r.is_live() && r.row.stop.is_none() && r.cancel.load(Ordering::Relaxed) {
                    r.row.stop = Some(StopReason::Cancelled);
                }
                if r.is_live() && r.row.stop.is_some() {
                    r.finish();
                }
            }
            let live = rows.iter().filter(|r| r.is_live()).count();
            // 3. Newcomers join, oldest first, within the limits.
            let len = cache.as_ref().map_or(0, |c| c.len);
            let mut joining = Vec::new();
            while let Some(w) = waiting.front() {
                let n = live + joining.len() + 1;
                let width = joining
                    .iter()
                    .map(|j: &Waiting| j.prompt.len())
                    .chain([w.prompt.len(), len])
                    .max()
                    .unwrap_or(0);
                let alone = live == 0 && joining.is_empty();
                if n > max_batch || (!alone && n * width > limits.max_tokens) {
                    break;
                }
                joining.extend(waiting.pop_front());
            }
            if !joining.is_empty() {
                match self.prefill(joining) {
                    Ok((mut new_rows, new_cache)) => {
                        let merged = match cache.take() {
                            Some(old) if live > 0 => {
                                merge(&mut rows, old, &mut new_rows, new_cache)
                            }
                            _ => {
                                rows.clear();
                                Ok(new_cache)
                            }
                        };
                        rows.append(&mut new_rows);
                        match merged {
                            Ok(c) => cache = Some(c),
                            Err(e) => fail_all(&mut rows, &e),
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "prefill failed"),
                }
            } else if live == 0 {
                rows.clear();
                cache = None;
            } else if live * 2 <= rows.len() {
                // Half the rows are finished: stop computing them.
                if let Some(c) = cache.take() {
                    match compact(c, &mut rows) {
                        Ok(c) => cache = Some(c),
                        Err(e) => fail_all(&mut rows, &e),
                    }
                }
            }
            // 4. One decode step for every row.
            if !rows.iter().any(Live::is_live) {
                continue;
            }
            let Some(mut c) = cache.take() else {
                continue;
            };
            // A finished row that filled the context would push the cache
            // past it: drop the finished rows first.
            if c.len + 1 > self.decoder().config().n_positions {
                match compact(c, &mut rows) {
                    Ok(compacted) => c = compacted,
                    Err(e) => {
                        fail_all(&mut rows, &e);
                        continue;
                    }
                }
            }
            match self.decode_step(&mut rows, c) {
                Ok(c) => cache = Some(c),
                Err(e) => {
                    tracing::error!(error = %e, "decode step failed");
                    fail_all(&mut rows, &e);
                }
            }
        }
    }

    /// Prefills newcomers together (left-padded) and draws each one's
    /// first token.
    fn prefill(&mut self, joining: Vec<Waiting>) -> Result<(Vec<Live>, KvCache)> {
        let ctx = self.decoder().config().n_positions;
        let vocab = self.decoder().config().vocab_size;
        let pad_id = self.tokenizer().special().endoftext as i64;
        let mut rows = Vec::with_capacity(joining.len());
        for w in joining {
            let checked = w.req.params.validate().map_err(Error::Input).and_then(|()| {
                if w.prompt.is_empty() || w.prompt.len() >= ctx {
                    Err(Error::Input(format!(
                        "a prompt has {} tokens; it must have between 1 and {} (the context is {ctx})",
                        w.prompt.len(),
                        ctx - 1
                    )))
                } else {
                    self.bans(&w.req.params)
                }
            });
            let bans = match checked {
                Ok(x) => x,
                Err(e) => {
                    (w.req.done)(Err(e));
                    continue;
                }
            };
            let n = w.prompt.len();
            rows.push(Live {
                row: self.row(Sampler::new(&w.req.params, 0), w.prompt),
                budget: w.req.params.max_new_tokens.min(ctx - n),
                params: w.req.params,
                bans,
                prompt_tokens: n,
                cut_tokens: w.cut_tokens,
                pad: 0,
                next: None,
                cancel: w.req.cancel,
                on_text: w.req.on_text,
                done: Some(w.req.done),
            });
        }
        let batch = rows.len();
        let width = rows.iter().map(|r| r.prompt_tokens).max().unwrap_or(0);
        if batch == 0 {
            return Ok((rows, self.decoder().empty_cache(0)?));
        }
        let mut ids = Vec::with_capacity(batch * width);
        let mut positions = Vec::with_capacity(batch * width);
        let mut mask = Vec::with_capacity(batch * width);
        for r in rows.iter_mut() {
            let n = r.prompt_tokens;
            r.pad = width - n;
            ids.extend(std::iter::repeat_n(pad_id, r.pad));
            ids.extend(r.row.history.iter().map(|&t| i64::from(t)));
            mask.extend(std::iter::repeat_n(0i64, r.pad));
            mask.extend(std::iter::repeat_n(1i64, n));
            positions.extend(std::iter::repeat_n(0i64, r.pad));
            positions.extend(0..n as i64);
        }
        let empty = self.decoder().empty_cache(batch)?;
        let (logits, cache) =
            match self
                .decoder_mut()
                .forward(&ids, &positions, &mask, empty, Logits::Last)
            {
                Ok(x) => x,
                Err(e) => {
                    fail_all(&mut rows, &e);
                    return Err(e);
                }
            };
        for (i, r) in rows.iter_mut().enumerate() {
            self.draw(r, &logits[i * vocab..(i + 1) * vocab])?;
        }
        Ok((rows, cache))
    }

    /// Draws a row's next token from its logits.
    fn draw(&self, r: &mut Live, logits: &[f32]) -> Result<()> {
        let rule = RowRule {
            params: &r.params,
            budget: r.budget,
            bans: &r.bans,
        };
        let on_text = &mut r.on_text;
        r.next = self.next_token(&mut r.row, logits, &rule, &mut |d| on_text(d))?;
        Ok(())
    }

    /// Feeds every row its drawn token and draws the next.
    fn decode_step(&mut self, rows: &mut [Live], cache: KvCache) -> Result<KvCache> {
        let vocab = self.decoder().config().vocab_size;
        let total = cache.len + 1;
        let mut ids = Vec::with_capacity(rows.len());
        let mut positions = Vec::with_capacity(rows.len());
        let mut mask = Vec::with_capacity(rows.len() * total);
        for r in rows.iter_mut() {
            ids.push(r.next.map_or(0, i64::from));
            // A finished row rides along masked until it is dropped; its
            // position stays where it was (inside the model's range).
            if r.is_live() {
                r.row.last_pos += 1;
            }
            positions.push(r.row.last_pos);
            mask.extend((0..total).map(|j| i64::from(j >= r.pad)));
        }
        let (logits, cache) =
            self.decoder_mut()
                .forward(&ids, &positions, &mask, cache, Logits::Last)?;
        // One row after the other on this thread: ONNX Runtime's threads
        // spin for the next forward pass meanwhile, and drawing on more
        // threads beside them took longer (`bench serve`, 64
        // conversations: 0.27-0.33 s of draws per 8,192 tokens spread by
        // rayon, 0.17-0.21 s here).
        for (r, l) in rows.iter_mut().zip(logits.chunks(vocab)) {
            self.draw(r, l)?;
        }
        Ok(cache)
    }
}

fn fail_all(rows: &mut Vec<Live>, e: &Error) {
    for r in rows.iter_mut() {
        r.fail(e);
    }
    rows.clear();
}

/// The cache's tensors as host slices: `[batch, heads, len, head_dim]`
/// each.
type HostCache<'a> = Vec<(Vec<i64>, &'a [f32])>;

fn host(cache: &KvCache) -> Result<HostCache<'_>> {
    cache
        .values()
        .iter()
        .map(|v| {
            let (shape, data) = v
                .try_extract_tensor::<f32>()
                .map_err(|e| Error::Run(e.to_string()))?;
            Ok((shape.to_vec(), data))
        })
        .collect()
}

/// One output row: which source (0: the first cache, 1: the second), which
/// row of it.
type Pick = (usize, usize);

/// Builds a cache of `len` positions from rows of `sources`, each row's
/// tokens right-aligned (the last `min(len, source len)` positions).
fn assemble(sources: &[&HostCache<'_>], picks: &[Pick], len: usize) -> Result<KvCache> {
    let mut values = Vec::with_capacity(sources[0].len());
    for (l, (shape, _)) in sources[0].iter().enumerate() {
        let (heads, dim) = (shape[1] as usize, shape[3] as usize);
        let mut out = vec![0f32; picks.len() * heads * len * dim];
        for (o, &(s, row)) in picks.iter().enumerate() {
            let (src_shape, src) = &sources[s][l];
            let src_len = src_shape[2] as usize;
            let n = src_len.min(len);
            for h in 0..heads {
                let from = ((row * heads + h) * src_len + (src_len - n)) * dim;
                let to = ((o * heads + h) * len + (len - n)) * dim;
                out[to..to + n * dim].copy_from_slice(&src[from..from + n * dim]);
            }
        }
        let t = Tensor::<f32>::from_array(([picks.len(), heads, len, dim], out))
            .map_err(|e| Error::Run(e.to_string()))?;
        values.push(t.into_dyn());
    }
    Ok(KvCache::from_values(values, picks.len(), len))
}

/// The live running rows and the newcomers in one cache, right-aligned to
/// the longest of them; the rows that finished are dropped from `rows`.
fn merge(
    rows: &mut Vec<Live>,
    old: KvCache,
    new_rows: &mut [Live],
    new: KvCache,
) -> Result<KvCache> {
    let old_len = rows
        .iter()
        .filter(|r| r.is_live())
        .map(|r| old.len - r.pad)
        .max()
        .unwrap_or(0);
    let len = old_len.max(new.len);
    let (a, b) = (host(&old)?, host(&new)?);
    for r in rows.iter_mut() {
        // The padding the old rows all share may be cut.
        r.pad = (r.pad + len).saturating_sub(old.len);
    }
    for r in new_rows.iter_mut() {
        r.pad += len - new.len;
    }
    let mut picks = drop_finished(rows);
    picks.extend((0..new.batch).map(|i| (1, i)));
    assemble(&[&a, &b], &picks, len)
}

/// Where each live row's cache is (in the first source), and `rows`
/// without the finished ones.
fn drop_finished(rows: &mut Vec<Live>) -> Vec<Pick> {
    let picks = rows
        .iter()
        .enumerate()
        .filter(|(_, r)| r.is_live())
        .map(|(i, _)| (0, i))
        .collect();
    rows.retain(Live::is_live);
    picks
}

/// The cache of the live rows only, without the left padding they all
/// share; the finished rows are dropped from `rows`.
fn compact(cache: KvCache, rows: &mut Vec<Live>) -> Result<KvCache> {
    let shared = rows
        .iter()
        .filter(|r| r.is_live())
        .map(|r| r.pad)
        .min()
        .unwrap_or(0);
    for r in rows.iter_mut() {
        r.pad = r.pad.saturating_sub(shared);
    }
    let a = host(&cache)?;
    let picks = drop_finished(rows);
    assemble(&[&a], &picks, cache.len - shared)
}
