//! The waiting line's files under `[store] state_dir`, one pair per event:
//!
//! - `line-EVENT.mark`: the highest ticket number reserved. A number is
//!   handed out only once the mark covering it is on disk (written to a
//!   temporary file, fsync'd, renamed, directory fsync'd), so after any
//!   crash numbering resumes above it and no number is ever handed out
//!   twice. Reserved but unused numbers are gaps: never live, skipped.
//! - `line-EVENT.snap`: the line itself (see `Line::snapshot`), written the
//!   same way every second and at shutdown.
//! - `line.lock`: held with `flock` while a process uses the directory.
//!
//! `EVENT` is the event's 64-bit id in hex. The mark file is
//! `USHM`, the mark (u64 LE), CRC-32 of the twelve bytes before (u32 LE).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::store::crc32;

/// Numbers reserved per write of the mark: one fsync per this many tickets.
pub const RESERVE_BLOCK: u64 = 4096;

const MARK_MAGIC: &[u8; 4] = b"USHM";
const LOCK_FILE: &str = "line.lock";

/// Why the line's files could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LineFilesError {
    /// A file or the directory could not be opened, read or written.
    #[error("{path}: {cause}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        cause: io::Error,
    },
    /// Another process holds the directory.
    #[error("{0} is locked by another usher process")]
    Locked(PathBuf),
    /// The mark file is damaged: the next safe number is unknown.
    #[error("{0} is damaged; the next safe ticket number is unknown (restore it from a backup, or remove it only if no ticket of this event is in anyone's hands)")]
    BadMark(PathBuf),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> LineFilesError + '_ {
    move |cause| LineFilesError::Io {
        path: path.to_path_buf(),
        cause,
    }
}

/// The line's files of one directory, locked for this process.
#[derive(Debug)]
pub struct LineFiles {
    dir: PathBuf,
    _lock: File,
}

/// What was found at open.
#[derive(Debug, Default)]
pub struct Found {
    /// The reserved mark (0 for a new event).
    pub mark: u64,
    /// The last snapshot's bytes, if any.
    pub snapshot: Option<Vec<u8>>,
}

impl LineFiles {
    /// Creates the directory if needed and takes its lock.
    pub fn open(dir: &Path) -> Result<LineFiles, LineFilesError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err(&path))?;
        // SAFETY: flock on a descriptor we own; no memory is involved.
        let rc = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Err(LineFilesError::Locked(path));
            }
            return Err(LineFilesError::Io { path, cause: e });
        }
        Ok(LineFiles {
            dir: dir.to_path_buf(),
            _lock: lock,
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, event: u64, ext: &str) -> PathBuf {
        self.dir.join(format!("line-{event:016x}.{ext}"))
    }

    /// Reads the mark and the snapshot of `event`.
    pub fn load(&self, event: u64) -> Result<Found, LineFilesError> {
        let mark_path = self.path(event, "mark");
        let mark = match fs::read(&mark_path) {
            Ok(b) => decode_mark(&b).ok_or(LineFilesError::BadMark(mark_path))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(io_err(&mark_path)(e)),
        };
        let snap_path = self.path(event, "snap");
        let snapshot = match fs::read(&snap_path) {
            Ok(b) => Some(b),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err(&snap_path)(e)),
        };
        Ok(Found { mark, snapshot })
    }

    /// Durably records that numbers up to `mark` may be handed out.
    pub fn reserve(&self, event: u64, mark: u64) -> Result<(), LineFilesError> {
        let mut b = Vec::with_capacity(16);
        b.extend_from_slice(MARK_MAGIC);
        b.extend_from_slice(&mark.to_le_bytes());
        let crc = crc32(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        self.replace(&self.path(event, "mark"), &b)
    }

    /// Durably replaces the snapshot of `event`.
    pub fn write_snapshot(&self, event: u64, bytes: &[u8]) -> Result<(), LineFilesError> {
        self.replace(&self.path(event, "snap"), bytes)
    }

    /// Write to a temporary file, fsync, rename over, fsync the directory:
    /// a crash leaves either the old file or the new one, never a mix.
    fn replace(&self, path: &Path, bytes: &[u8]) -> Result<(), LineFilesError> {
        let tmp = path.with_extension("tmp");
        let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(bytes).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
        drop(f);
        fs::rename(&tmp, path).map_err(io_err(path))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(&self.dir))
    }
}

fn decode_mark(b: &[u8]) -> Option<u64> {
    if b.len() != 16 || &b[..4] != MARK_MAGIC {
        return None;
    }
    let mut crc = [0u8; 4];
    crc.copy_from_slice(&b[12..]);
    if crc32(&b[..12]) != u32::from_le_bytes(crc) {
        return None;
    }
    let mut m = [0u8; 8];
    m.copy_from_slice(&b[4..12]);
    Some(u64::from_le_bytes(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("usher-linefiles-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn mark_and_snapshot_round_trip_and_damage_is_refused() {
        let d = dir("rt");
        let f = LineFiles::open(&d).unwrap();
        assert_eq!(f.load(7).unwrap().mark, 0);
        f.reserve(7, 8192).unwrap();
        f.write_snapshot(7, b"abc").unwrap();
        let found = f.load(7).unwrap();
        assert_eq!(
            (found.mark, found.snapshot.as_deref()),
            (8192, Some(&b"abc"[..]))
        );
        assert_eq!(f.load(8).unwrap().mark, 0, "per event");
        assert!(matches!(
            LineFiles::open(&d),
            Err(LineFilesError::Locked(_))
        ));
        let mark = d.join(format!("line-{:016x}.mark", 7));
        let mut b = fs::read(&mark).unwrap();
        b[5] ^= 1;
        fs::write(&mark, b).unwrap();
        assert!(matches!(f.load(7), Err(LineFilesError::BadMark(_))));
        drop(f);
        assert!(
            LineFiles::open(&d).is_ok(),
            "the lock goes with the process"
        );
        let _ = fs::remove_dir_all(&d);
    }
}
