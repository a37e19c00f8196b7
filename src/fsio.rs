//! Crash-safe file writes: a file is written beside its target, synced, then
//! renamed over it, so a full disk or a kill mid-write leaves the previous
//! version intact.

use std::io::Write;
use std::path::{Path, PathBuf};

/// A write that failed, naming the file and, for the usual suspects, the cause.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {path}: {source}{hint}")]
pub struct WriteError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
    hint: &'static str,
}

impl WriteError {
    pub fn new(path: &Path, source: std::io::Error) -> Self {
        let hint = match source.raw_os_error() {
            Some(libc::ENOSPC) => " (the disk is full)",
            Some(libc::EFBIG) => " (file size limit reached)",
            Some(libc::EDQUOT) => " (disk quota exceeded)",
            Some(libc::EROFS) => " (read-only file system)",
            _ => "",
        };
        Self {
            path: path.to_path_buf(),
            source,
            hint,
        }
    }
}

/// Writes `bytes` to `path` atomically (temporary file + fsync + rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    let tmp = temp_path(path);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        sync_parent(path);
        Ok(())
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        WriteError::new(path, e)
    })
}

/// Removes `path` if it exists; whether it did.
pub fn remove_if_present(path: &Path) -> Result<bool, WriteError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(WriteError::new(path, e)),
    }
}

/// Serialises `value` as pretty JSON and writes it atomically.
pub fn write_json_atomic<T: serde::Serialize>(path: &Path, value: &T) -> Result<(), WriteError> {
    let mut bytes = serde_json::to_vec_pretty(value)
        .map_err(|e| WriteError::new(path, std::io::Error::other(e)))?;
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Makes a completed rename durable; failure only weakens crash safety.
pub fn sync_parent(path: &Path) {
    let dir = match path.parent() {
        Some(d) if d.as_os_str().is_empty() => Path::new("."),
        Some(d) => d,
        None => return,
    };
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_write_atomic_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn test_write_error_names_path() {
        let p = Path::new("/nonexistent-dir/x.bin");
        let err = write_atomic(p, b"x").unwrap_err().to_string();
        assert!(err.contains("/nonexistent-dir/x.bin"), "{err}");
    }
}
