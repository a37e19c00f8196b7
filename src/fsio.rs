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

/// An I/O error on a named file: every stage's errors carry this one.
#[derive(Debug, thiserror::Error)]
#[error("I/O error on {path}: {source}")]
pub struct IoError {
    pub path: String,
    #[source]
    pub source: std::io::Error,
}

/// Wraps an I/O error with the file it happened on: `.map_err(io_err(p))?`.
pub fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> IoError + '_ {
    move |source| IoError {
        path: path.display().to_string(),
        source,
    }
}

/// Writes `bytes` to `path` atomically (temporary file + fsync + rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    let mut f = AtomicFile::create(path, false)?;
    f.write_all(bytes).map_err(|e| WriteError::new(path, e))?;
    f.commit()
}

/// [`write_atomic`] for a file only its owner may read (mode 0600): secrets
/// and message text.
pub fn write_private_atomic(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    let mut f = AtomicFile::create(path, true)?;
    f.write_all(bytes).map_err(|e| WriteError::new(path, e))?;
    f.commit()
}

/// A file written beside its target and renamed over it by
/// [`AtomicFile::commit`]; dropped uncommitted, it leaves the target as it
/// was and removes itself.
pub struct AtomicFile {
    path: PathBuf,
    tmp: PathBuf,
    file: Option<std::io::BufWriter<std::fs::File>>,
}

impl AtomicFile {
    /// `private`: created with mode 0600 (it holds message text or secrets).
    pub fn create(path: &Path, private: bool) -> Result<Self, WriteError> {
        let tmp = temp_path(path);
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        if private {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let file = opts.open(&tmp).map_err(|e| WriteError::new(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            tmp,
            file: Some(std::io::BufWriter::new(file)),
        })
    }

    /// Flushes, syncs and renames over the target.
    pub fn commit(mut self) -> Result<(), WriteError> {
        let result = (|| {
            if let Some(f) = self.file.take() {
                let f = f.into_inner().map_err(|e| e.into_error())?;
                f.sync_all()?;
            }
            std::fs::rename(&self.tmp, &self.path)?;
            sync_parent(&self.path);
            Ok(())
        })();
        result.map_err(|e| WriteError::new(&self.path, e))
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match &mut self.file {
            Some(f) => f.write(buf),
            None => Err(std::io::Error::other("already committed")),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.file {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Creates `path` empty with mode 0600 if it does not exist yet (so a file
/// another library fills, like a SQLite database, never starts readable by
/// others); an existing file is left as it is.
pub fn create_private(path: &Path) -> std::io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    match opts.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Sets `path` to mode 0600.
pub fn restrict_to_owner(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
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

    #[cfg(unix)]
    #[test]
    fn test_private_files_are_0600_and_uncommitted_ones_vanish() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secret");
        write_private_atomic(&p, b"k").unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let q = dir.path().join("export.jsonl");
        {
            let mut f = AtomicFile::create(&q, true).unwrap();
            f.write_all(b"half").unwrap();
        }
        assert!(!q.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        let db = dir.path().join("x.db");
        create_private(&db).unwrap();
        let mode = std::fs::metadata(&db).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn test_write_error_names_path() {
        let p = Path::new("/nonexistent-dir/x.bin");
        let err = write_atomic(p, b"x").unwrap_err().to_string();
        assert!(err.contains("/nonexistent-dir/x.bin"), "{err}");
    }
}
