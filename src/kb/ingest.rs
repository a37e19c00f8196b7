//! Documents → passages, split by structure so that each passage answers
//! one thing: a FAQ entry (a bold or heading question and its answer), a
//! table row with its header, a labelled bullet, or a few sentences of
//! prose. Every passage is titled by its heading path, and keeps its source
//! file, line and anchor for citations.
//!
//! Markdown is parsed with `pulldown-cmark`; plain text splits into
//! paragraphs; JSONL and CSV files hold question–answer pairs, or (CSV
//! `text,label`, banking77's format) labelled example questions whose
//! labels become the entries.

use std::collections::BTreeMap;
use std::path::Path;

use pulldown_cmark::{Event, HeadingLevel, Options, Parser, Tag, TagEnd};
use serde::{Deserialize, Serialize};

use super::{Error, Result};

/// Joins title components, in titles and citations.
pub const TITLE_SEP: &str = " › ";

/// What a passage is cut from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A question (bold line or heading) and its answer.
    Faq,
    /// One row of a table, with the header's names.
    TableRow,
    /// A bullet that starts with a label (`- **Label**: …`, `- Label: …`).
    Bullet,
    /// Sentences of prose under a heading.
    Prose,
    /// A question–answer pair from a JSONL or CSV file.
    Qa,
    /// An intent named by labelled example questions (CSV `text,label`).
    Intent,
}

/// One retrievable piece of a document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Passage {
    /// Stable across rebuilds while the source keeps the same structure:
    /// `<file stem>/<slug of the title path>`, with `~2`, `~3` … for
    /// repeats and the parts of a split passage.
    pub id: String,
    /// The source file, as given to `kb build`.
    pub source: String,
    /// 1-based line where the passage starts.
    pub line: usize,
    /// `#slug` of the passage's heading or entry, for links.
    pub anchor: String,
    /// Heading path, then the entry's question, row or label.
    pub title: Vec<String>,
    pub text: String,
    pub kind: Kind,
    /// Labelled example questions that ask for this passage.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub questions: Vec<String>,
}

#[cfg(test)]
impl Passage {
    /// A passage of `faq.md` with `title`, `text` and `kind`, for tests of
    /// what reads passages.
    pub(crate) fn for_test(title: &[&str], text: &str, kind: Kind) -> Passage {
        Passage {
            id: title.join("/"),
            source: "faq.md".into(),
            line: 1,
            anchor: String::new(),
            title: title.iter().map(|t| t.to_string()).collect(),
            text: text.into(),
            kind,
            questions: Vec::new(),
        }
    }
}

impl Passage {
    /// The name of the item a table row or labelled bullet is about (its
    /// row's first cell, its bullet's label).
    pub fn item_name(&self) -> Option<&str> {
        matches!(self.kind, Kind::TableRow | Kind::Bullet)
            .then(|| self.title.last().map(String::as_str))
            .flatten()
    }

    /// The title as shown: components joined by ` › `.
    pub fn title_text(&self) -> String {
        self.title.join(TITLE_SEP)
    }

    /// The title path without the document's own title (what a citation
    /// shows).
    pub fn short_title(&self) -> String {
        self.title
            .iter()
            .skip(usize::from(self.title.len() > 1))
            .cloned()
            .collect::<Vec<_>>()
            .join(TITLE_SEP)
    }

    /// The passage as a model reads it in its context block: short title,
    /// then the text.
    pub fn context_text(&self) -> String {
        format!("{}\n{}", self.short_title(), self.text)
    }

    /// Whether `label` names this passage: its id, or the last components
    /// of its title path (so a label may leave out the document's title).
    pub fn answers_to(&self, label: &str) -> bool {
        if label == self.id {
            return true;
        }
        let want: Vec<&str> = label.split('›').map(str::trim).collect();
        want.len() <= self.title.len()
            && !want.is_empty()
            && self.title[self.title.len() - want.len()..]
                .iter()
                .zip(&want)
                .all(|(a, b)| a.trim() == *b)
    }
}

/// A problem in a source that does not stop the build.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Warning {
    pub source: String,
    pub line: usize,
    pub message: String,
}

/// How passages are cut.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SplitSettings {
    /// Longest passage in words; longer text splits at sentence ends.
    pub max_words: usize,
}

impl Default for SplitSettings {
    fn default() -> Self {
        Self { max_words: 80 }
    }
}

/// Passages and warnings from one source.
#[derive(Debug, Default)]
pub struct Ingested {
    pub passages: Vec<Passage>,
    pub warnings: Vec<Warning>,
}

/// Sources larger than this are refused (a KB is documents people wrote,
/// not a data dump).
pub const MAX_SOURCE_BYTES: u64 = 20 * 1024 * 1024;

/// Reads one source file by its extension.
pub fn ingest_file(path: &Path, shown: &str, split: SplitSettings) -> Result<Ingested> {
    let meta = std::fs::metadata(path).map_err(crate::fsio::io_err(path))?;
    if meta.len() > MAX_SOURCE_BYTES {
        return Err(Error::Source {
            source_file: shown.to_string(),
            line: 0,
            reason: format!(
                "{} MB is over the {} MB a knowledge-base source may have; split it",
                meta.len() / (1024 * 1024),
                MAX_SOURCE_BYTES / (1024 * 1024)
            ),
        });
    }
    let bytes = std::fs::read(path).map_err(crate::fsio::io_err(path))?;
    let text = String::from_utf8(bytes).map_err(|e| Error::Source {
        source_file: shown.to_string(),
        line: 0,
        reason: format!(
            "not UTF-8 text (byte {} is invalid): a binary file?",
            e.utf8_error().valid_up_to()
        ),
    })?;
    if text.contains('\0') {
        return Err(Error::Source {
            source_file: shown.to_string(),
            line: 0,
            reason: "holds NUL bytes: a binary file?".into(),
        });
    }
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("doc")
        .to_string();
    let mut out = match ext.as_str() {
        "md" | "markdown" => markdown(&text, shown, &stem, split),
        "txt" | "text" => plain_text(&text, shown, &stem, split),
        "jsonl" => qa_jsonl(&text, shown, &stem)?,
        "csv" => qa_csv(&text, shown, &stem)?,
        other => {
            return Err(Error::Source {
                source_file: shown.to_string(),
                line: 0,
                reason: format!(
                    "unsupported file type {other:?}: use Markdown (.md), text (.txt), JSONL or CSV"
                ),
            });
        }
    };
    if out.passages.is_empty() {
        out.warnings.push(Warning {
            source: shown.to_string(),
            line: 0,
            message: "no passages: the file has no text".into(),
        });
    }
    assign_ids(&mut out.passages, &stem);
    Ok(out)
}

/// Lower-case ASCII words and CJK characters joined by `-`.
pub fn slug(text: &str) -> String {
    let mut out = String::new();
    let mut dash = false;
    for c in text.chars().flat_map(char::to_lowercase) {
        if c.is_alphanumeric() {
            if dash && !out.is_empty() {
                out.push('-');
            }
            out.push(c);
            dash = false;
        } else {
            dash = true;
        }
    }
    out
}

fn assign_ids(passages: &mut [Passage], stem: &str) {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for p in passages.iter_mut() {
        // The document title (H1) is the same for every passage: leave it
        // out so ids stay short.
        let parts: Vec<String> = p
            .title
            .iter()
            .skip(usize::from(p.title.len() > 1))
            .map(|t| slug(t))
            .filter(|s| !s.is_empty())
            .collect();
        let base = format!("{}/{}", slug(stem), parts.join("/"));
        let n = seen.entry(base.clone()).or_insert(0);
        *n += 1;
        p.id = if *n == 1 { base } else { format!("{base}~{n}") };
    }
}

// ------------------------------------------------------------- Markdown

/// Text collected from inline events, with the first bold run noted.
#[derive(Default)]
struct Inline {
    text: String,
    /// The bold text at the very start of the block, and where it ended.
    lead_bold: Option<(String, usize)>,
    in_strong: bool,
    strong_buf: String,
    strong_at_start: bool,
}

impl Inline {
    fn push(&mut self, s: &str) {
        if self.in_strong {
            self.strong_buf.push_str(s);
        }
        self.text.push_str(s);
    }

    /// A soft line break is a space (CommonMark), none beside Chinese,
    /// which is written without spaces: Markdown prose is hard-wrapped, and
    /// a wrap inside a sentence ("within 30 days of" / "delivery.") cut as
    /// a sentence end made passages and quotes that began mid-sentence. A
    /// bold line of its own ("**Gift cards**" above its answer) keeps its
    /// break: it opens an entry.
    fn soft_break(&mut self) {
        let after_bold = self
            .lead_bold
            .as_ref()
            .is_some_and(|(_, end)| *end == self.text.len());
        if after_bold {
            self.push("\n");
        } else if !self.text.ends_with(|c: char| c > '\u{2e80}') {
            self.push(" ");
        }
    }

    fn start_strong(&mut self) {
        self.in_strong = true;
        self.strong_buf.clear();
        self.strong_at_start = self.text.trim().is_empty() && self.lead_bold.is_none();
    }

    fn end_strong(&mut self) {
        self.in_strong = false;
        if self.strong_at_start {
            self.lead_bold = Some((self.strong_buf.trim().to_string(), self.text.len()));
        }
    }
}

/// An entry being collected: a bold question and what follows it.
struct Entry {
    title: String,
    line: usize,
    text: Vec<String>,
}

struct Md<'a> {
    source: &'a str,
    /// The file's name without extension: the title of text under no heading.
    stem: &'a str,
    split: SplitSettings,
    headings: Vec<String>,
    entry: Option<Entry>,
    /// Prose under the current heading, before any entry: paragraphs, and
    /// runs of bullets, each a block of its own (with its line).
    prose: Vec<(String, usize)>,
    /// The last prose block is a run of bullets (the next one joins it).
    in_bullets: bool,
    out: Ingested,
}

impl Md<'_> {
    fn path(&self) -> Vec<String> {
        if self.headings.is_empty() {
            vec![self.stem.to_string()]
        } else {
            self.headings.clone()
        }
    }

    fn entry_path(&self) -> Vec<String> {
        let mut p = self.path();
        if let Some(e) = &self.entry {
            p.push(e.title.clone());
        }
        p
    }

    fn anchor_of(title: &[String]) -> String {
        format!("#{}", title.last().map(|t| slug(t)).unwrap_or_default())
    }

    fn push(&mut self, title: Vec<String>, line: usize, text: String, kind: Kind) {
        let text = text.trim().to_string();
        if text.is_empty() {
            return;
        }
        self.out.passages.push(Passage {
            id: String::new(),
            source: self.source.to_string(),
            line,
            anchor: Self::anchor_of(&title),
            title,
            text,
            kind,
            questions: Vec::new(),
        });
    }

    /// Adds prose or an entry's text, split under the word cap.
    fn push_split(&mut self, title: Vec<String>, line: usize, text: &str, kind: Kind) {
        for part in split_sentences(text, self.split.max_words) {
            self.push(title.clone(), line, part, kind);
        }
    }

    fn flush_entry(&mut self) {
        if let Some(e) = self.entry.take() {
            let mut title = self.path();
            title.push(e.title.clone());
            let body = e.text.join("\n");
            let text = format!("{}\n{}", e.title, body);
            self.push_split(title, e.line, &text, Kind::Faq);
        }
    }

    fn flush_prose(&mut self) {
        let title = self.path();
        for (text, line) in std::mem::take(&mut self.prose) {
            self.push_split(title.clone(), line, &text, Kind::Prose);
        }
        self.in_bullets = false;
    }

    /// Text that belongs to the current entry, else to the heading's prose
    /// (a bullet joins the bullets right before it).
    fn add_text(&mut self, text: String, line: usize, bullet: bool) {
        if text.trim().is_empty() {
            return;
        }
        match &mut self.entry {
            Some(e) => e.text.push(text),
            None => {
                match self.prose.last_mut() {
                    Some((block, _)) if bullet && self.in_bullets => {
                        block.push('\n');
                        block.push_str(&text);
                    }
                    _ => self.prose.push((text, line)),
                }
                self.in_bullets = bullet;
            }
        }
    }
}

fn line_of(starts: &[usize], offset: usize) -> usize {
    starts.partition_point(|&s| s <= offset)
}

fn markdown(text: &str, source: &str, stem: &str, split: SplitSettings) -> Ingested {
    let starts: Vec<usize> = std::iter::once(0)
        .chain(text.match_indices('\n').map(|(i, _)| i + 1))
        .collect();
    let mut md = Md {
        source,
        stem,
        split,
        headings: Vec::new(),
        entry: None,
        prose: Vec::new(),
        in_bullets: false,
        out: Ingested::default(),
    };
    let mut inline = Inline::default();
    let mut block_line = 1;
    let mut heading: Option<(usize, String)> = None;
    // Table state: header cells, the current row, whether in the header.
    let mut table: Option<(Vec<String>, Vec<Vec<String>>, usize)> = None;
    let mut row: Vec<String> = Vec::new();
    let mut cell = String::new();
    let mut in_cell = false;
    let mut in_head = false;
    // List items: (text, lead bold, line), flushed at the end of the item.
    let mut item_depth = 0usize;
    let mut saw_h1 = false;
    for (event, range) in Parser::new_ext(text, Options::ENABLE_TABLES).into_offset_iter() {
        match event {
            Event::Start(Tag::Heading { level, .. }) => {
                md.flush_entry();
                md.flush_prose();
                heading = Some((heading_depth(level), String::new()));
                block_line = line_of(&starts, range.start);
            }
            Event::End(TagEnd::Heading(_)) => {
                if let Some((depth, title)) = heading.take() {
                    let title = title.trim().to_string();
                    saw_h1 |= depth == 1;
                    // Without an H1, `##` is the top of the path.
                    let depth = if saw_h1 {
                        depth
                    } else {
                        depth.saturating_sub(1).max(1)
                    };
                    md.headings.truncate(depth - 1);
                    while md.headings.len() < depth - 1 {
                        md.headings.push(String::new());
                    }
                    md.headings.push(title.clone());
                    md.headings.retain(|h| !h.is_empty());
                    // A heading that asks a question is a FAQ entry.
                    if title.ends_with('?') || title.ends_with('？') {
                        md.headings.pop();
                        md.entry = Some(Entry {
                            title,
                            line: block_line,
                            text: Vec::new(),
                        });
                    }
                }
            }
            Event::Start(Tag::Paragraph) => {
                inline = Inline::default();
                block_line = line_of(&starts, range.start);
            }
            Event::End(TagEnd::Paragraph) => {
                if item_depth > 0 {
                    // An item's paragraphs are read at the item's end.
                    inline.text.push('\n');
                    continue;
                }
                let para = std::mem::take(&mut inline);
                paragraph(&mut md, para, block_line);
            }
            Event::Start(Tag::Item) => {
                item_depth += 1;
                if item_depth == 1 {
                    inline = Inline::default();
                    block_line = line_of(&starts, range.start);
                }
            }
            Event::End(TagEnd::Item) => {
                item_depth = item_depth.saturating_sub(1);
                if item_depth == 0 {
                    let item = std::mem::take(&mut inline);
                    list_item(&mut md, item, block_line);
                }
            }
            Event::Start(Tag::Table(_)) => {
                table = Some((Vec::new(), Vec::new(), line_of(&starts, range.start)));
            }
            Event::Start(Tag::TableHead) => in_head = true,
            Event::End(TagEnd::TableHead) => {
                in_head = false;
                if let Some(t) = &mut table {
                    t.0 = std::mem::take(&mut row);
                }
            }
            Event::Start(Tag::TableRow) => row.clear(),
            Event::End(TagEnd::TableRow) => {
                if let Some(t) = &mut table
                    && !in_head
                {
                    t.1.push(std::mem::take(&mut row));
                }
            }
            Event::Start(Tag::TableCell) => {
                in_cell = true;
                cell.clear();
            }
            Event::End(TagEnd::TableCell) => {
                in_cell = false;
                row.push(cell.trim().to_string());
            }
            Event::End(TagEnd::Table) => {
                if let Some((header, rows, line)) = table.take() {
                    table_passages(&mut md, &header, &rows, line);
                }
            }
            Event::Start(Tag::Strong) if !in_cell => inline.start_strong(),
            Event::End(TagEnd::Strong) if !in_cell => inline.end_strong(),
            Event::Text(t) | Event::Code(t) => {
                if let Some((_, h)) = &mut heading {
                    h.push_str(&t);
                } else if in_cell {
                    cell.push_str(&t);
                } else {
                    inline.push(&t);
                }
            }
            Event::SoftBreak if heading.is_none() && !in_cell => inline.soft_break(),
            Event::HardBreak => inline.push("\n"),
            Event::Start(Tag::CodeBlock(_)) => {
                inline = Inline::default();
                block_line = line_of(&starts, range.start);
            }
            Event::End(TagEnd::CodeBlock) => {
                let code = std::mem::take(&mut inline);
                md.add_text(code.text, block_line, false);
            }
            _ => {}
        }
    }
    md.flush_entry();
    md.flush_prose();
    md.out
}

fn heading_depth(level: HeadingLevel) -> usize {
    match level {
        HeadingLevel::H1 => 1,
        HeadingLevel::H2 => 2,
        HeadingLevel::H3 => 3,
        HeadingLevel::H4 => 4,
        HeadingLevel::H5 => 5,
        HeadingLevel::H6 => 6,
    }
}

/// A paragraph that starts with a bold question, or with a bold line of its
/// own, opens a FAQ entry; any other paragraph is text of the entry or the
/// heading.
fn paragraph(md: &mut Md<'_>, para: Inline, line: usize) {
    if let Some((bold, end)) = &para.lead_bold {
        let rest = para.text[*end..].to_string();
        let question = bold.ends_with('?') || bold.ends_with('？');
        let own_line = rest.trim().is_empty() || rest.starts_with('\n');
        if !bold.is_empty() && (question || own_line) {
            md.flush_entry();
            md.flush_prose();
            md.entry = Some(Entry {
                title: bold.clone(),
                line,
                text: Vec::new(),
            });
            md.add_text(rest.trim().to_string(), line, false);
            return;
        }
    }
    md.add_text(para.text.trim().to_string(), line, false);
}

/// A labelled bullet becomes a passage of its own (and stays in its
/// entry's text); any other bullet is a line of the entry or prose.
fn list_item(md: &mut Md<'_>, item: Inline, line: usize) {
    let text = item.text.trim().to_string();
    if text.is_empty() {
        return;
    }
    let label = match &item.lead_bold {
        Some((bold, end)) => {
            let rest = item.text[*end..].trim_start();
            rest.strip_prefix(':')
                .or_else(|| rest.strip_prefix('：'))
                .map(|body| {
                    (
                        bold.trim_end_matches(':').to_string(),
                        body.trim().to_string(),
                    )
                })
        }
        None => plain_label(&text),
    };
    if let Some((label, body)) = label
        && !body.is_empty()
    {
        let mut title = md.entry_path();
        title.push(label.clone());
        md.push(title, line, format!("{label}: {body}"), Kind::Bullet);
    }
    md.add_text(format!("- {text}"), line, true);
}

/// `Label: text`, where the label is a short name (at most 4 words, no
/// sentence punctuation).
pub fn plain_label(text: &str) -> Option<(String, String)> {
    let (label, body) = text.split_once(':')?;
    let words = label.split_whitespace().count();
    let ok = (1..=4).contains(&words)
        && !label.contains(['.', '?', '!', ',', '(', ')'])
        && !label.contains("http");
    ok.then(|| (label.trim().to_string(), body.trim().to_string()))
}

/// Each row is a passage titled by its first cell, its text naming every
/// column; the whole table is also text of its entry or heading.
fn table_passages(md: &mut Md<'_>, header: &[String], rows: &[Vec<String>], line: usize) {
    let mut rendered = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        let Some(first) = r.first().filter(|c| !c.is_empty()) else {
            continue;
        };
        let fields: Vec<String> = r
            .iter()
            .enumerate()
            .filter(|(_, v)| !v.is_empty())
            .map(|(j, v)| match header.get(j).filter(|h| !h.is_empty()) {
                Some(h) => format!("{h}: {v}"),
                None => v.clone(),
            })
            .collect();
        let text = fields.join("; ");
        let mut title = md.entry_path();
        title.push(first.clone());
        md.push(title, line + 2 + i, text.clone(), Kind::TableRow);
        rendered.push(text);
    }
    md.add_text(rendered.join("\n"), line, false);
}

/// Raised whenever the same documents would split into other passages or
/// index into other terms: `kb build` reads again every source cut by
/// another revision, and the quickstart's `kb` stage counts it among its
/// inputs. 2: Markdown soft breaks are spaces (plain text is unwrapped), list
/// items are kept whole, and the analyzer drops possessives and
/// contractions ("chair's" → "chair").
pub const SPLIT_REVISION: u32 = 2;

/// Splits `text` into parts of at most `max_words` words at sentence ends
/// (a sentence longer than the cap is cut at the cap). Its lines stay lines
/// (list items), so a line break in `text` must be a real one: Markdown's
/// soft breaks are spaces from the parser on ([`Inline::soft_break`]), and
/// plain text goes through [`unwrap_lines`] first. Parts cut at a wrap
/// began mid-sentence ("dirt, let them dry away from heat…").
pub fn split_sentences(text: &str, max_words: usize) -> Vec<String> {
    let max_words = max_words.max(8);
    let words = |s: &str| s.split_whitespace().count();
    if words(text) <= max_words {
        return vec![text.trim().to_string()];
    }
    let mut parts = Vec::new();
    let mut current = String::new();
    let add = |piece: &str, new_line: bool, current: &mut String, parts: &mut Vec<String>| {
        if words(current) + words(piece) > max_words && !current.trim().is_empty() {
            parts.push(current.trim().to_string());
            current.clear();
        }
        if words(piece) > max_words {
            let ws: Vec<&str> = piece.split_whitespace().collect();
            for chunk in ws.chunks(max_words) {
                parts.push(chunk.join(" "));
            }
            return;
        }
        if !current.is_empty() {
            current.truncate(current.trim_end().len());
            current.push(if new_line { '\n' } else { ' ' });
        }
        current.push_str(piece.trim());
    };
    // A line (a list item) goes whole when it fits, so an item is never
    // split between two parts; a longer one goes sentence by sentence.
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if words(line) <= max_words {
            add(line, true, &mut current, &mut parts);
            continue;
        }
        for (i, sentence) in sentences(line).into_iter().enumerate() {
            add(&sentence, i == 0, &mut current, &mut parts);
        }
    }
    if !current.trim().is_empty() {
        parts.push(current.trim().to_string());
    }
    parts
}

/// Plain text is hard-wrapped as Markdown prose is: a line break inside a
/// paragraph is not a sentence end ("within 30 days of" / "delivery.").
/// Blank lines, list items and table rows keep theirs.
fn unwrap_lines(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut previous_blank = true;
    for (i, line) in text.split('\n').enumerate() {
        let t = line.trim_start();
        if i > 0 {
            let item = t.starts_with(['-', '*', '+', '|', '#', '>'])
                || t.split_once(". ")
                    .is_some_and(|(n, _)| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
            // Chinese is written without spaces between words.
            let cjk = out.chars().last().is_some_and(|c| c > '\u{2e80}')
                || t.chars().next().is_some_and(|c| c > '\u{2e80}');
            if t.is_empty() || previous_blank || item {
                out.push('\n');
            } else {
                if !cjk {
                    out.push(' ');
                }
                // A continuation's indentation is no text.
                out.push_str(t.trim_end());
                previous_blank = false;
                continue;
            }
        }
        out.push_str(line.trim_end());
        previous_blank = t.is_empty();
    }
    out
}

/// Sentences with their trailing space: cut after `.`, `!`, `?` followed by
/// whitespace, after `。！？`, and at line breaks.
pub fn sentences(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let chars: Vec<char> = text.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        cur.push(c);
        let next_ws = chars.get(i + 1).is_none_or(|n| n.is_whitespace());
        let end =
            matches!(c, '。' | '！' | '？' | '\n') || (matches!(c, '.' | '!' | '?') && next_ws);
        if end {
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out.into_iter()
        .map(|s| {
            let t = s.trim_end_matches('\n');
            format!("{t} ")
        })
        .collect()
}

// ----------------------------------------------------------- plain text

fn plain_text(text: &str, source: &str, stem: &str, split: SplitSettings) -> Ingested {
    let mut out = Ingested::default();
    let mut line = 1;
    for para in text.split("\n\n") {
        let first = line;
        line += para.matches('\n').count() + 2;
        let p = para.trim();
        if p.is_empty() {
            continue;
        }
        for part in split_sentences(&unwrap_lines(p), split.max_words) {
            out.passages.push(Passage {
                id: String::new(),
                source: source.to_string(),
                line: first,
                anchor: format!("#L{first}"),
                title: vec![stem.to_string()],
                text: part,
                kind: Kind::Prose,
                questions: Vec::new(),
            });
        }
    }
    out
}

// ------------------------------------------------------- question files

/// A line of a question–answer JSONL file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QaLine {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    title: Option<String>,
    question: String,
    answer: String,
    /// More ways customers ask it.
    #[serde(default)]
    questions: Vec<String>,
}

fn qa_passage(source: &str, stem: &str, line: usize, q: QaLine) -> Passage {
    let title = vec![
        stem.to_string(),
        q.title.unwrap_or_else(|| q.question.clone()),
    ];
    Passage {
        id: q.id.unwrap_or_default(),
        source: source.to_string(),
        line,
        anchor: format!("#L{line}"),
        text: format!("{}\n{}", q.question.trim(), q.answer.trim()),
        title,
        kind: Kind::Qa,
        questions: q.questions,
    }
}

fn qa_jsonl(text: &str, source: &str, stem: &str) -> Result<Ingested> {
    let mut out = Ingested::default();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let q: QaLine = serde_json::from_str(line).map_err(|e| Error::Source {
            source_file: source.to_string(),
            line: i + 1,
            reason: format!(
                "{e} (expected {{\"question\": …, \"answer\": …, \"questions\"?: […], \"title\"?: …, \"id\"?: …}})"
            ),
        })?;
        if q.question.trim().is_empty() || q.answer.trim().is_empty() {
            out.warnings.push(Warning {
                source: source.to_string(),
                line: i + 1,
                message: "empty question or answer; skipped".into(),
            });
            continue;
        }
        out.passages.push(qa_passage(source, stem, i + 1, q));
    }
    Ok(out)
}

/// CSV with `question,answer` columns (passages), or `text,label` /
/// `text,category` (labelled questions: one intent entry per label).
fn qa_csv(text: &str, source: &str, stem: &str) -> Result<Ingested> {
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(false)
        .from_reader(text.as_bytes());
    let err = |line: usize, reason: String| Error::Source {
        source_file: source.to_string(),
        line,
        reason,
    };
    let headers: Vec<String> = rdr
        .headers()
        .map_err(|e| err(1, e.to_string()))?
        .iter()
        .map(|h| h.trim().to_ascii_lowercase())
        .collect();
    let col = |name: &str| headers.iter().position(|h| h == name);
    let mut out = Ingested::default();
    if let (Some(q), Some(a)) = (col("question"), col("answer")) {
        for (i, rec) in rdr.records().enumerate() {
            let rec = rec.map_err(|e| err(i + 2, e.to_string()))?;
            let (question, answer) = (rec.get(q).unwrap_or(""), rec.get(a).unwrap_or(""));
            if question.trim().is_empty() || answer.trim().is_empty() {
                continue;
            }
            let line = QaLine {
                id: col("id").and_then(|c| rec.get(c)).map(str::to_string),
                title: col("title").and_then(|c| rec.get(c)).map(str::to_string),
                question: question.to_string(),
                answer: answer.to_string(),
                questions: Vec::new(),
            };
            out.passages.push(qa_passage(source, stem, i + 2, line));
        }
        return Ok(out);
    }
    let label = col("label")
        .or_else(|| col("category"))
        .or_else(|| col("intent"));
    let (Some(t), Some(l)) = (col("text").or_else(|| col("question")), label) else {
        return Err(err(
            1,
            format!(
                "columns {headers:?}: expected question,answer (passages) or text,label (labelled questions)"
            ),
        ));
    };
    let mut intents: BTreeMap<String, (usize, Vec<String>)> = BTreeMap::new();
    for (i, rec) in rdr.records().enumerate() {
        let rec = rec.map_err(|e| err(i + 2, e.to_string()))?;
        let (text, label) = (
            rec.get(t).unwrap_or("").trim(),
            rec.get(l).unwrap_or("").trim(),
        );
        if text.is_empty() || label.is_empty() {
            continue;
        }
        intents
            .entry(label.to_string())
            .or_insert_with(|| (i + 2, Vec::new()))
            .1
            .push(text.to_string());
    }
    for (label, (line, questions)) in intents {
        out.passages.push(Passage {
            id: String::new(),
            source: source.to_string(),
            line,
            anchor: format!("#{}", slug(&label)),
            title: vec![stem.to_string(), label.clone()],
            text: label.replace(['_', '-'], " "),
            kind: Kind::Intent,
            questions,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAQ: &str = "# Shop FAQ\n\nIntro line.\n\n## Contact\n\n- Email: help@shop.example. We reply within 1 day.\n- Phone: 555-0100\n\nHave your order number ready.\n\n## Shipping\n\n**Which options do you offer?**\n\n| Option | Time | Price |\n|---|---|---|\n| Standard | 5-7 days | $5 |\n| Express | 2-3 days | $15 |\n\nTimes count from shipping.\n\n**Do you ship to PO boxes?**\nStandard only.\n\n**Care**\n\n- **Tent**: Hand wash it.\n- **Boots**: Brush them.\n\n### How long does a refund take?\n\nThree days.\n";

    fn ingest(text: &str) -> Vec<Passage> {
        let mut out = markdown(text, "faq.md", "faq", SplitSettings::default());
        assign_ids(&mut out.passages, "faq");
        out.passages
    }

    #[test]
    fn test_markdown_splits_by_structure() {
        let ps = ingest(FAQ);
        let titles: Vec<String> = ps.iter().map(Passage::title_text).collect();
        for want in [
            "Shop FAQ",
            "Shop FAQ › Contact › Email",
            "Shop FAQ › Contact › Phone",
            "Shop FAQ › Contact",
            "Shop FAQ › Shipping › Which options do you offer? › Express",
            "Shop FAQ › Shipping › Which options do you offer?",
            "Shop FAQ › Shipping › Do you ship to PO boxes?",
            "Shop FAQ › Shipping › Care › Tent",
            "Shop FAQ › Shipping › Care",
            "Shop FAQ › Shipping › How long does a refund take?",
        ] {
            assert!(
                titles.contains(&want.to_string()),
                "{want} not in {titles:#?}"
            );
        }
        let row = ps
            .iter()
            .find(|p| p.title.last().is_some_and(|t| t == "Express"))
            .unwrap();
        assert_eq!(row.text, "Option: Express; Time: 2-3 days; Price: $15");
        assert_eq!(row.kind, Kind::TableRow);
        let entry = ps
            .iter()
            .find(|p| {
                p.title
                    .last()
                    .is_some_and(|t| t == "Which options do you offer?")
            })
            .unwrap();
        assert!(entry.text.contains("Price: $5") && entry.text.contains("from shipping"));
        let po = ps
            .iter()
            .find(|p| p.title.last().is_some_and(|t| t.contains("PO boxes")))
            .unwrap();
        assert_eq!(po.text, "Do you ship to PO boxes?\nStandard only.");
        assert_eq!(po.line, 23);
        assert_eq!(po.anchor, "#do-you-ship-to-po-boxes");
        assert!(po.answers_to("Shipping › Do you ship to PO boxes?"));
        assert!(po.answers_to(&po.id));
        assert!(!po.answers_to("Returns › Do you ship to PO boxes?"));
        let ids: std::collections::HashSet<&str> = ps.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids.len(), ps.len(), "ids are unique");
    }

    #[test]
    fn test_markdown_without_headings_and_long_prose() {
        let long = "This is a sentence about shipping. ".repeat(40);
        let ps = ingest(&long);
        assert!(ps.len() >= 2, "{ps:#?}");
        assert!(ps.iter().all(|p| p.text.split_whitespace().count() <= 80));
        assert!(
            ps.iter()
                .all(|p| p.title == ["faq"] && p.kind == Kind::Prose)
        );
    }

    #[test]
    fn test_chinese_markdown() {
        let ps = ingest("# 常见问题\n\n## 退货\n\n**可以退货吗？**\n可以，收货后30天内。\n");
        let p = ps.iter().find(|p| p.kind == Kind::Faq).unwrap();
        assert_eq!(p.title_text(), "常见问题 › 退货 › 可以退货吗？");
        assert!(p.id.contains("退货"), "{}", p.id);
    }

    #[test]
    fn test_csv_and_jsonl_questions() {
        let out = qa_csv("text,category\nwhere is my card?,card_arrival\nhas my card shipped,card_arrival\ncancel it,cancel\n", "b.csv", "b").unwrap();
        assert_eq!(out.passages.len(), 2);
        assert_eq!(out.passages[1].questions.len(), 2);
        assert_eq!(out.passages[1].title, vec!["b", "card_arrival"]);
        let err = qa_csv("a,b\n1,2\n", "x.csv", "x").unwrap_err().to_string();
        assert!(
            err.contains("x.csv") && err.contains("question,answer"),
            "{err}"
        );
        let err = qa_jsonl(
            "{\"question\":\"q\",\"answer\":\"a\"}\n{bad\n",
            "q.jsonl",
            "q",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("q.jsonl:2"), "{err}");
    }

    /// A hard-wrapped Markdown paragraph or list item is one line of text;
    /// a table's rows stay lines; a bold line of its own still opens an
    /// entry.
    #[test]
    fn test_markdown_soft_breaks_join_lines_but_not_table_rows() {
        let ps = ingest(
            "# Help\n\n**Gift cards**\nThey never\nexpire. Check the\nbalance online.\n\n| Option | Price |\n|---|---|\n| Standard | $5 |\n| Express | $15 |\n\n- Tent: Yes, its rainfly is\n  waterproof.\n- Stove: Let it cool.\n\n退货期限为\n30天。\n",
        );
        let entry = ps
            .iter()
            .find(|p| p.kind == Kind::Faq)
            .expect("the bold line opens an entry");
        assert_eq!(entry.title.last().map(String::as_str), Some("Gift cards"));
        assert!(
            entry.text.starts_with(
                "Gift cards\nThey never expire. Check the balance online.\nOption: Standard; Price: $5\nOption: Express; Price: $15"
            ),
            "{:?}",
            entry.text
        );
        let tent = ps
            .iter()
            .find(|p| p.title.last().is_some_and(|t| t == "Tent"))
            .unwrap();
        assert_eq!(tent.text, "Tent: Yes, its rainfly is waterproof.");
        assert!(
            ps.iter().any(|p| p.text.contains("退货期限为30天。")),
            "{ps:#?}"
        );
    }

    #[test]
    fn test_hard_wrapped_lines_are_one_sentence() {
        let t = unwrap_lines(
            "You can return items within 30 days of\ndelivery. Returns are free.\n\n- Express: $14.95\n- Standard: $5.95\n退货期限为\n30天。",
        );
        assert_eq!(
            t,
            "You can return items within 30 days of delivery. Returns are free.\n\n- Express: $14.95\n- Standard: $5.95退货期限为30天。"
        );
    }

    /// A long entry of hard-wrapped list items splits between items, each
    /// part starting where an item or a sentence does.
    #[test]
    fn test_a_long_list_splits_between_items() {
        let text = unwrap_lines(
            "- Tent: Yes, its rainfly is fully waterproof with\n  taped seams. Dry it fully.\n- Boots: Yes, they have a membrane. Brush off\n  dirt, and use leather conditioner.\n- Jacket: Machine wash it cold.",
        );
        let parts = split_sentences(&text, 20);
        assert_eq!(
            parts,
            vec![
                "- Tent: Yes, its rainfly is fully waterproof with taped seams. Dry it fully.",
                "- Boots: Yes, they have a membrane. Brush off dirt, and use leather conditioner.\n- Jacket: Machine wash it cold.",
            ]
        );
    }

    #[test]
    fn test_sentence_split_keeps_under_the_cap() {
        let parts = split_sentences(&"One two three four five. ".repeat(10), 12);
        assert!(parts.len() >= 4);
        assert!(parts.iter().all(|p| p.split_whitespace().count() <= 12));
        assert!(parts.iter().all(|p| p.ends_with('.')));
    }
}
