//! The spill file: records the database could not take yet, one JSON line
//! each, appended and fsynced in order. Replay reads from a persisted byte
//! offset (`spill.offset`); once everything is stored the file is emptied.
//! A crash between storing a chunk and saving the offset replays that chunk
//! again, which the idempotent inserts absorb. Records the database refuses
//! go to `rejected.jsonl` with the reason, for a human to look at.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{Error, Record, Result, io_err};
use crate::fsio::write_atomic;

pub(crate) const SPILL_FILE: &str = "spill.jsonl";
pub(crate) const OFFSET_FILE: &str = "spill.offset";
pub(crate) const REJECTED_FILE: &str = "rejected.jsonl";
const LOCK_FILE: &str = "writer.lock";

/// One line read back for replay.
pub(crate) enum Entry {
    Record(Box<Record>),
    /// A line that does not parse (a write torn by a crash).
    Bad {
        line: String,
        reason: String,
    },
}

pub(crate) struct Spill {
    path: PathBuf,
    offset_path: PathBuf,
    rejected_path: PathBuf,
    file: File,
    /// Bytes before this are stored in the database.
    offset: u64,
    len: u64,
    pending: u64,
    // Held for its advisory lock: two writers on one spill folder would
    // interleave and replay each other's records.
    _lock: File,
}

#[derive(Serialize)]
struct Rejected<'a, T: Serialize> {
    reason: &'a str,
    record: T,
}

impl Spill {
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        lock.try_lock().map_err(|_| Error::Spill {
            path: dir.display().to_string(),
            reason: "another store writer is using this spill folder".into(),
        })?;
        let path = dir.join(SPILL_FILE);
        // Message text waits here: readable by the service's user only.
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_err(&path))?;
        let offset_path = dir.join(OFFSET_FILE);
        let mut offset = match std::fs::read_to_string(&offset_path) {
            Ok(s) => s.trim().parse::<u64>().map_err(|_| Error::Spill {
                path: offset_path.display().to_string(),
                reason: format!("not a byte offset: {:?}", s.trim()),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(io_err(&offset_path)(e).into()),
        };
        let mut len = file.metadata().map_err(io_err(&path))?.len();
        if offset > len {
            // The file was emptied but the offset not yet reset.
            offset = 0;
        }
        let mut bytes = Vec::new();
        file.seek(SeekFrom::Start(offset)).map_err(io_err(&path))?;
        file.read_to_end(&mut bytes).map_err(io_err(&path))?;
        if bytes.last().is_some_and(|&b| b != b'\n') {
            // A torn last line: end it so the next append starts cleanly;
            // replay reports it as unreadable.
            file.write_all(b"\n").map_err(io_err(&path))?;
            file.sync_data().map_err(io_err(&path))?;
            bytes.push(b'\n');
            len += 1;
        }
        let pending = bytes.iter().filter(|&&b| b == b'\n').count() as u64;
        let spill = Self {
            rejected_path: dir.join(REJECTED_FILE),
            path,
            offset_path,
            file,
            offset,
            len,
            pending,
            _lock: lock,
        };
        spill.save_offset()?;
        Ok(spill)
    }

    /// Records waiting for the database.
    pub fn pending(&self) -> u64 {
        self.pending
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `records` durably (fsync) before returning.
    pub fn append(&mut self, records: &[Record]) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::with_capacity(records.len() * 256);
        for r in records {
            serde_json::to_writer(&mut buf, r).map_err(|e| Error::Spill {
                path: self.path.display().to_string(),
                reason: format!("cannot encode {} {}: {e}", r.kind(), r.id()),
            })?;
            buf.push(b'\n');
        }
        self.file
            .write_all(&buf)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| Error::Write(crate::fsio::WriteError::new(&self.path, e)))?;
        self.len += buf.len() as u64;
        self.pending += records.len() as u64;
        Ok(())
    }

    /// Up to `max` entries from the replay position, each with the offset
    /// just past it.
    pub fn read(&self, max: usize) -> Result<Vec<(Entry, u64)>> {
        let mut f = File::open(&self.path).map_err(io_err(&self.path))?;
        f.seek(SeekFrom::Start(self.offset))
            .map_err(io_err(&self.path))?;
        let mut reader = BufReader::new(f);
        let mut out = Vec::new();
        let mut pos = self.offset;
        let mut line = Vec::new();
        while out.len() < max {
            line.clear();
            let n = reader
                .read_until(b'\n', &mut line)
                .map_err(io_err(&self.path))?;
            if n == 0 {
                break;
            }
            pos += n as u64;
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_end_matches('\n');
            let entry = match serde_json::from_str::<Record>(text) {
                Ok(r) => Entry::Record(Box::new(r)),
                Err(e) => Entry::Bad {
                    line: text.to_string(),
                    reason: format!("unreadable spill line: {e}"),
                },
            };
            out.push((entry, pos));
        }
        Ok(out)
    }

    /// Marks everything before `offset` (`count` entries) as stored.
    pub fn commit(&mut self, offset: u64, count: u64) -> Result<()> {
        self.offset = offset;
        self.pending = self.pending.saturating_sub(count);
        if self.pending == 0 && self.offset >= self.len {
            self.file
                .set_len(0)
                .and_then(|()| self.file.sync_all())
                .map_err(io_err(&self.path))?;
            self.offset = 0;
            self.len = 0;
        }
        self.save_offset()
    }

    fn save_offset(&self) -> Result<()> {
        write_atomic(&self.offset_path, self.offset.to_string().as_bytes())?;
        Ok(())
    }

    /// Sets a refused record aside with the reason.
    pub fn reject<T: Serialize>(&self, record: T, reason: &str) -> Result<()> {
        let mut line =
            serde_json::to_vec(&Rejected { reason, record }).map_err(|e| Error::Spill {
                path: self.rejected_path.display().to_string(),
                reason: e.to_string(),
            })?;
        line.push(b'\n');
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.rejected_path)
            .map_err(io_err(&self.rejected_path))?;
        f.write_all(&line)
            .and_then(|()| f.sync_data())
            .map_err(|e| Error::Write(crate::fsio::WriteError::new(&self.rejected_path, e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{ConversationUpdate, new_id, now_ms};

    fn update(n: u32) -> Record {
        Record::Update(ConversationUpdate {
            id: new_id(),
            conversation_id: format!("c{n}"),
            at: now_ms(),
            ended: true,
            handoff: None,
            topic: None,
            style: None,
        })
    }

    fn ids(entries: &[(Entry, u64)]) -> Vec<String> {
        entries
            .iter()
            .map(|(e, _)| match e {
                Entry::Record(r) => r.id().to_string(),
                Entry::Bad { .. } => "bad".into(),
            })
            .collect()
    }

    #[test]
    fn test_replay_in_order_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let recs: Vec<Record> = (0..5).map(update).collect();
        let want: Vec<String> = recs.iter().map(|r| r.id().to_string()).collect();
        {
            let mut s = Spill::open(dir.path()).unwrap();
            s.append(&recs[..3]).unwrap();
            s.append(&recs[3..]).unwrap();
            let first = s.read(2).unwrap();
            assert_eq!(ids(&first), want[..2]);
            s.commit(first[1].1, 2).unwrap();
            assert_eq!(s.pending(), 3);
        }
        // A second writer on the same folder is refused while one holds it.
        let s = Spill::open(dir.path()).unwrap();
        let err = Spill::open(dir.path()).err().unwrap().to_string();
        assert!(err.contains("another store writer"), "{err}");
        assert_eq!(s.pending(), 3);
        let rest = s.read(10).unwrap();
        assert_eq!(ids(&rest), want[2..]);
        let mut s = s;
        s.commit(rest[2].1, 3).unwrap();
        assert_eq!(s.pending(), 0);
        assert_eq!(std::fs::metadata(s.path()).unwrap().len(), 0);
    }

    #[test]
    fn test_torn_line_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let good = update(1);
        let mut bytes = serde_json::to_vec(&good).unwrap();
        bytes.extend_from_slice(b"\n{\"kind\":\"mess");
        std::fs::write(dir.path().join(SPILL_FILE), bytes).unwrap();
        let mut s = Spill::open(dir.path()).unwrap();
        assert_eq!(s.pending(), 2);
        let after = update(2);
        s.append(std::slice::from_ref(&after)).unwrap();
        let got = s.read(10).unwrap();
        assert_eq!(ids(&got), [good.id(), "bad", after.id()]);
    }
}
