//! Reading training text from files and folders: plain text (`.txt`, `.md`)
//! and JSONL whose lines carry a `text` field or chat `messages`.

use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{Error, Result, io_err};

/// A file that went into training, for provenance.
#[derive(Debug, Clone, Serialize)]
pub struct CorpusFile {
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
    pub documents: usize,
}

const TEXT_EXTENSIONS: &[&str] = &["txt", "md", "text", "jsonl"];

/// Expands files and folders (recursively, sorted, hidden entries skipped).
fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(io_err(p))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|e| {
                    !e.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
                })
                .collect();
            entries.sort();
            let (dirs, files): (Vec<_>, Vec<_>) = entries.into_iter().partition(|e| e.is_dir());
            out.extend(files.into_iter().filter(|f| {
                f.extension()
                    .is_some_and(|x| TEXT_EXTENSIONS.contains(&x.to_string_lossy().as_ref()))
            }));
            out.extend(expand(&dirs)?);
        } else if p.is_file() {
            out.push(p.clone());
        } else {
            return Err(Error::Data(format!("{} does not exist", p.display())));
        }
    }
    Ok(out)
}

/// Parses one JSONL line into a document.
fn jsonl_document(v: &serde_json::Value) -> Option<String> {
    if let Some(t) = v.get("text").and_then(|t| t.as_str()) {
        return Some(t.to_string());
    }
    let msgs = v.get("messages")?.as_array()?;
    let parts: Option<Vec<&str>> = msgs.iter().map(|m| m.get("content")?.as_str()).collect();
    Some(parts?.join("\n"))
}

/// Reads every document under `paths`. An empty corpus, a missing path or a
/// malformed JSONL line is an error naming the cause.
pub fn read_corpus(paths: &[PathBuf]) -> Result<(Vec<String>, Vec<CorpusFile>)> {
    if paths.is_empty() {
        return Err(Error::Data("no input paths given".into()));
    }
    let files = expand(paths)?;
    let mut docs = Vec::new();
    let mut manifest = Vec::new();
    for f in &files {
        let bytes = std::fs::read(f).map_err(io_err(f))?;
        let text = String::from_utf8(bytes.clone())
            .map_err(|e| Error::Data(format!("{} is not UTF-8 text ({e})", f.display())))?;
        let before = docs.len();
        if f.extension().is_some_and(|x| x == "jsonl") {
            read_jsonl(f, &text, &mut docs)?;
        } else if !text.trim().is_empty() {
            docs.push(text);
        }
        manifest.push(CorpusFile {
            path: f.display().to_string(),
            bytes: bytes.len() as u64,
            sha256: hex::encode(Sha256::digest(&bytes)),
            documents: docs.len() - before,
        });
    }
    if docs.iter().all(|d| d.trim().is_empty()) {
        let shown: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        return Err(Error::Data(format!(
            "the corpus is empty: no text found in {} (looked for .txt, .md, .jsonl)",
            shown.join(", ")
        )));
    }
    Ok((docs, manifest))
}

fn read_jsonl(path: &Path, text: &str, docs: &mut Vec<String>) -> Result<()> {
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| Error::Data(format!("{}:{}: {e}", path.display(), i + 1)))?;
        let doc = jsonl_document(&v).ok_or_else(|| {
            Error::Data(format!(
                "{}:{}: expected a \"text\" string or chat \"messages\"",
                path.display(),
                i + 1
            ))
        })?;
        docs.push(doc);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_reads_dirs_and_jsonl() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("a.txt"), "alpha").unwrap();
        std::fs::write(dir.path().join("skip.bin"), "zzz").unwrap();
        std::fs::write(
            dir.path().join("sub/b.jsonl"),
            "{\"text\":\"beta\"}\n\n{\"messages\":[{\"role\":\"user\",\"content\":\"q\"},{\"role\":\"assistant\",\"content\":\"a\"}]}\n",
        )
        .unwrap();
        let (docs, files) = read_corpus(&[dir.path().to_path_buf()]).unwrap();
        assert_eq!(docs, vec!["alpha", "beta", "q\na"]);
        assert_eq!(files.len(), 2);
        assert_eq!(files[1].documents, 2);
    }

    #[test]
    fn test_empty_and_missing_corpus_errors() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.txt"), "  \n").unwrap();
        let err = read_corpus(&[dir.path().to_path_buf()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("corpus is empty"), "{err}");
        let err = read_corpus(&[dir.path().join("nope")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("nope") && err.contains("does not exist"),
            "{err}"
        );
        std::fs::write(dir.path().join("c.jsonl"), "{\"x\":1}\n").unwrap();
        let err = read_corpus(&[dir.path().join("c.jsonl")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("c.jsonl:1"), "{err}");
    }
}
