//! `kb build`: documents → passages → index, into a knowledge-base folder.
//! A rebuild re-reads only the sources whose sha256 changed (the rest keep
//! their passages); `force` re-reads everything. The router, when one was
//! trained, stays; `kb.json` says whether passages changed since.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::index::Bm25;
use super::ingest::{Passage, SPLIT_REVISION, SplitSettings, Warning, ingest_file};
use super::{Error, FORMAT, Result};

pub const MANIFEST: &str = "kb.json";
pub const PASSAGES: &str = "passages.jsonl";
pub const INDEX_DIR: &str = "index";
/// BM25 over the passages and the labelled questions `kb train` learned
/// from; the fused search reads this one when it exists.
pub const EXPANDED_DIR: &str = "index-expanded";
/// `{passage id: [questions]}`, written by `kb train`.
pub const EXPANSIONS: &str = "expansions.json";
/// `[text]`: what `kb train` learnt as "none of these" (the negatives it
/// was given and its near misses).
pub const NEGATIVES: &str = "negatives.json";

/// Rebuilds BM25 over the passages and the labelled questions of
/// `expansions.json`, when `kb train` wrote one.
pub(crate) fn reindex_expanded(dir: &Path, passages: &[Passage]) -> Result<()> {
    if let Some(extra) = read_expansions(dir, passages)? {
        Bm25::build(&dir.join(EXPANDED_DIR), passages, &extra)?;
    }
    Ok(())
}

/// The labelled questions per passage position, from `expansions.json`.
pub(crate) fn read_expansions(
    dir: &Path,
    passages: &[Passage],
) -> Result<Option<Vec<Vec<String>>>> {
    let path = dir.join(EXPANSIONS);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(crate::fsio::io_err(&path)(e).into()),
    };
    let map: BTreeMap<String, Vec<String>> = serde_json::from_str(&text)
        .map_err(|e| Error::Format(format!("{}: {e}", path.display())))?;
    Ok(Some(
        passages
            .iter()
            .map(|p| map.get(&p.id).cloned().unwrap_or_default())
            .collect(),
    ))
}

/// The texts of `negatives.json` (none before `kb train` wrote one).
pub(crate) fn read_negatives(dir: &Path) -> Result<Vec<String>> {
    let path = dir.join(NEGATIVES);
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text)
            .map_err(|e| Error::Format(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(crate::fsio::io_err(&path)(e).into()),
    }
}

/// The extensions `kb build` reads in a folder.
const EXTENSIONS: [&str; 6] = ["md", "markdown", "txt", "text", "jsonl", "csv"];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceEntry {
    pub path: String,
    pub sha256: String,
    pub bytes: u64,
    pub passages: usize,
}

/// `kb.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub chatforge: String,
    pub sources: Vec<SourceEntry>,
    pub passages: usize,
    /// Passages per kind (`faq`, `table_row`, …).
    pub kinds: BTreeMap<String, usize>,
    /// Example questions written in the sources (JSONL `questions`, CSV
    /// `text,label`).
    pub questions: usize,
    pub split: SplitSettings,
    /// The splitter's [`SPLIT_REVISION`] the passages were cut with (0: a
    /// build from before it was recorded): a source cut by another is read
    /// again, changed or not.
    #[serde(default)]
    pub split_revision: u32,
    /// Warnings of the last build (file, line, what).
    #[serde(default)]
    pub warnings: Vec<Warning>,
    /// Passage ids changed since the router was trained (retrain).
    #[serde(default)]
    pub router_stale: bool,
}

impl Manifest {
    /// Reads `kb.json`, refusing another format version with the command
    /// that rebuilds it.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(MANIFEST);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::Format(format!(
                    "{} is not a knowledge base (no {MANIFEST}): build one with `chatforge kb build --docs <files or folders> --out {}`",
                    dir.display(),
                    dir.display()
                ))
            } else {
                crate::fsio::io_err(&path)(e).into()
            }
        })?;
        let rebuild = format!(
            "rebuild it with `chatforge kb build --docs <files or folders> --out {} --force`",
            dir.display()
        );
        let value: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::Format(format!("{}: {e}; {rebuild}", path.display())))?;
        let format = value.get("format").and_then(serde_json::Value::as_u64);
        if format != Some(u64::from(FORMAT)) {
            return Err(Error::Format(format!(
                "{} was built in knowledge-base format {}; this chatforge reads format {FORMAT}: {rebuild}",
                dir.display(),
                format.map_or("(none)".to_string(), |f| f.to_string()),
            )));
        }
        serde_json::from_value(value)
            .map_err(|e| Error::Format(format!("{}: {e}; {rebuild}", path.display())))
    }
}

pub struct BuildOptions {
    /// Files or folders (read recursively, in name order).
    pub docs: Vec<PathBuf>,
    pub out: PathBuf,
    pub force: bool,
    pub split: SplitSettings,
}

#[derive(Debug, Clone, Serialize)]
pub struct BuildReport {
    pub out: String,
    pub passages: usize,
    pub sources: usize,
    /// Sources read this time (changed, new, or all with `force`).
    pub read: usize,
    /// Sources whose passages were kept.
    pub reused: usize,
    /// Nothing changed: the folder was left as it was.
    pub unchanged: bool,
    pub warnings: Vec<Warning>,
    pub seconds: f64,
}

/// Files named directly, and the supported files under folders.
fn source_files(docs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for d in docs {
        if d.is_dir() {
            let mut found = Vec::new();
            walk(d, &mut found)?;
            if found.is_empty() {
                return Err(Error::Empty(format!(
                    "{} has no documents (looked for {})",
                    d.display(),
                    EXTENSIONS.map(|e| format!(".{e}")).join(", ")
                )));
            }
            out.extend(found);
        } else if d.is_file() {
            out.push(d.clone());
        } else {
            return Err(crate::fsio::io_err(d)(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no such file or folder",
            ))
            .into());
        }
    }
    if out.is_empty() {
        return Err(Error::Empty("name files or folders with --docs".into()));
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(crate::fsio::io_err(dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for p in entries {
        let hidden = p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        if p.is_dir() {
            walk(&p, out)?;
        } else if p
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        {
            out.push(p);
        }
    }
    Ok(())
}

fn sha256_file(path: &Path) -> Result<(String, u64)> {
    let bytes = std::fs::read(path).map_err(crate::fsio::io_err(path))?;
    Ok((hex::encode(Sha256::digest(&bytes)), bytes.len() as u64))
}

/// Reads `passages.jsonl` (every line must parse: a broken file is a
/// knowledge base to rebuild).
pub(crate) fn read_passages(dir: &Path) -> Result<Vec<Passage>> {
    let path = dir.join(PASSAGES);
    let text = std::fs::read_to_string(&path).map_err(crate::fsio::io_err(&path))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| {
                Error::Format(format!(
                    "{}:{}: {e}; rebuild with `chatforge kb build --docs … --out {} --force`",
                    path.display(),
                    i + 1,
                    dir.display()
                ))
            })
        })
        .collect()
}

fn write_passages(dir: &Path, passages: &[Passage]) -> Result<()> {
    let mut text = String::new();
    for p in passages {
        text.push_str(
            &serde_json::to_string(p)
                .map_err(|e| Error::Format(format!("passage {}: {e}", p.id)))?,
        );
        text.push('\n');
    }
    crate::fsio::write_atomic(&dir.join(PASSAGES), text.as_bytes())?;
    Ok(())
}

/// Builds (or updates) the knowledge base in `opts.out`.
pub fn build(opts: &BuildOptions) -> Result<BuildReport> {
    let started = Instant::now();
    let files = source_files(&opts.docs)?;
    std::fs::create_dir_all(&opts.out).map_err(crate::fsio::io_err(&opts.out))?;
    // What an earlier build left, if it is readable and current.
    let old = if opts.force {
        None
    } else {
        match Manifest::read(&opts.out) {
            Ok(m) => read_passages(&opts.out).ok().map(|p| (m, p)),
            Err(_) => None,
        }
    };
    let old_sources: HashMap<String, &SourceEntry> = old
        .as_ref()
        .map(|(m, _)| m.sources.iter().map(|s| (s.path.clone(), s)).collect())
        .unwrap_or_default();
    let mut sources = Vec::new();
    let mut passages: Vec<Passage> = Vec::new();
    let mut warnings = Vec::new();
    let (mut read, mut reused) = (0, 0);
    for f in &files {
        let shown = f.display().to_string();
        let (sha, bytes) = sha256_file(f)?;
        let keep = old_sources.get(&shown).filter(|s| {
            s.sha256 == sha
                && old.as_ref().is_some_and(|(m, _)| {
                    m.split == opts.split && m.split_revision == SPLIT_REVISION
                })
        });
        let mine: Vec<Passage> = match keep {
            Some(_) => {
                reused += 1;
                old.as_ref()
                    .map(|(_, ps)| ps.iter().filter(|p| p.source == shown).cloned().collect())
                    .unwrap_or_default()
            }
            None => {
                read += 1;
                let got = ingest_file(f, &shown, opts.split)?;
                warnings.extend(got.warnings);
                got.passages
            }
        };
        sources.push(SourceEntry {
            path: shown,
            sha256: sha,
            bytes,
            passages: mine.len(),
        });
        passages.extend(mine);
    }
    drop_duplicates(&mut passages, &mut warnings);
    if passages.is_empty() {
        return Err(Error::Empty(format!(
            "{} source file(s) hold no passages",
            files.len()
        )));
    }
    let unchanged = read == 0
        && old
            .as_ref()
            .is_some_and(|(m, ps)| m.sources.len() == sources.len() && ps == &passages)
        && opts.out.join(super::build::INDEX_DIR).is_dir();
    if unchanged {
        return Ok(BuildReport {
            out: opts.out.display().to_string(),
            passages: passages.len(),
            sources: sources.len(),
            read,
            reused,
            unchanged: true,
            warnings,
            seconds: started.elapsed().as_secs_f64(),
        });
    }
    let router_stale = opts.out.join(super::router::ROUTER_JSON).exists()
        && super::router::RouterMeta::read(&opts.out)
            .is_ok_and(|m| m.entries != passages.iter().map(|p| p.id.clone()).collect::<Vec<_>>());
    Bm25::build(&opts.out.join(INDEX_DIR), &passages, &[])?;
    reindex_expanded(&opts.out, &passages)?;
    write_passages(&opts.out, &passages)?;
    let mut kinds = BTreeMap::new();
    for p in &passages {
        let k = serde_json::to_value(p.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        *kinds.entry(k).or_insert(0) += 1;
    }
    let manifest = Manifest {
        format: FORMAT,
        chatforge: env!("CARGO_PKG_VERSION").to_string(),
        passages: passages.len(),
        questions: passages.iter().map(|p| p.questions.len()).sum(),
        kinds,
        sources: sources.clone(),
        split: opts.split,
        split_revision: SPLIT_REVISION,
        warnings: warnings.clone(),
        router_stale,
    };
    // The manifest last: a folder whose manifest is current is complete.
    crate::fsio::write_json_atomic(&opts.out.join(MANIFEST), &manifest)?;
    Ok(BuildReport {
        out: opts.out.display().to_string(),
        passages: passages.len(),
        sources: sources.len(),
        read,
        reused,
        unchanged: false,
        warnings,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The same text twice (a pasted section, a file given twice under two
/// names) would split the votes of retrieval: the later copy goes, with a
/// warning naming both places.
fn drop_duplicates(passages: &mut Vec<Passage>, warnings: &mut Vec<Warning>) {
    let mut seen: HashMap<String, (String, usize)> = HashMap::new();
    passages.retain(|p| {
        let key = p.text.split_whitespace().collect::<Vec<_>>().join(" ");
        match seen.get(&key) {
            Some((src, line)) => {
                warnings.push(Warning {
                    source: p.source.clone(),
                    line: p.line,
                    message: format!("duplicate of the passage at {src}:{line}; left out"),
                });
                false
            }
            None => {
                seen.insert(key, (p.source.clone(), p.line));
                true
            }
        }
    });
}
