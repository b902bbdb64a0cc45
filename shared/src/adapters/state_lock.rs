//! One `relay serve` per state directory: an exclusive OS advisory lock on
//! `<state>/relay.lock`, held for the life of the process. Two dispatchers on one SQLite
//! store would send the same deliveries twice; readers (`relay deliveries`, `replay`,
//! `birthdays run`) do not take it and stay allowed beside a running relay.
//!
//! The file stays when the relay stops: what counts is the lock, which the OS drops with the
//! process however it ends (even SIGKILL), so a stale file never blocks a restart. Deleting
//! it would let a second process lock a new file while the first still holds the old one.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};

/// The lock file's name inside the state directory.
pub const LOCK_FILE: &str = "relay.lock";

/// At most this much of a holder's note is read back (the file is ours, but need not be sane).
const NOTE_LIMIT: u64 = 1024;

/// Why the state directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum StateLockError {
    /// Another process holds the lock; `holder` is what it recorded (its pid and more).
    #[error("the state directory {} is locked by another process ({holder})", dir.display())]
    Held {
        /// The state directory.
        dir: PathBuf,
        /// The holder's note, e.g. `pid 4242, listening on 127.0.0.1:8080`.
        holder: String,
    },
    /// The directory or the lock file could not be created, locked, read or written.
    #[error("cannot lock {}: {source}", path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
}

/// The exclusive lock on a state directory, released when dropped or when the process ends.
#[derive(Debug)]
pub struct StateLock {
    file: File,
    path: PathBuf,
}

impl StateLock {
    /// Takes the lock on `dir` (created if missing) without waiting, and records this
    /// process's id and `note` (say, its address) for whoever finds the lock taken.
    pub fn acquire(dir: &Path, note: &str) -> Result<StateLock, StateLockError> {
        let path = dir.join(LOCK_FILE);
        let io = |source| StateLockError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        // Not truncated on open: the holder's note must survive a second process opening it.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(StateLockError::Held {
                    dir: dir.to_path_buf(),
                    holder: read_note(&mut file),
                })
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        let mut lock = StateLock { file, path };
        lock.record(note)?;
        Ok(lock)
    }

    /// Replaces the recorded note (say, once the address actually bound is known).
    pub fn record(&mut self, note: &str) -> Result<(), StateLockError> {
        let text = format!("pid {}, {note}\n", std::process::id());
        let write = |file: &mut File| -> std::io::Result<()> {
            file.set_len(0)?;
            file.seek(SeekFrom::Start(0))?;
            file.write_all(text.as_bytes())?;
            file.flush()
        };
        write(&mut self.file).map_err(|source| StateLockError::Io {
            path: self.path.clone(),
            source,
        })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// What the holder recorded, or a placeholder when it cannot be read (it may not have
/// written it yet, or the OS bars reading a locked file, as Windows does).
fn read_note(file: &mut File) -> String {
    let mut text = String::new();
    let read = file
        .seek(SeekFrom::Start(0))
        .and_then(|_| file.take(NOTE_LIMIT).read_to_string(&mut text));
    match read {
        Ok(_) if !text.trim().is_empty() => text.trim().to_string(),
        _ => "its pid is not recorded".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_directory_is_refused_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let mut first = StateLock::acquire(dir.path(), "listening on 127.0.0.1:0").unwrap();
        first.record("listening on 127.0.0.1:8080").unwrap();
        match StateLock::acquire(dir.path(), "listening on 127.0.0.1:8081") {
            Err(StateLockError::Held { dir: held, holder }) => {
                assert_eq!(held, dir.path());
                assert_eq!(
                    holder,
                    format!("pid {}, listening on 127.0.0.1:8080", std::process::id())
                );
            }
            other => panic!("expected Held, got {other:?}"),
        }
    }

    #[test]
    fn the_lock_is_free_again_once_dropped_though_the_file_stays() {
        let dir = tempfile::tempdir().unwrap();
        let first = StateLock::acquire(dir.path(), "first").unwrap();
        let path = first.path().to_path_buf();
        drop(first);
        assert!(path.exists());
        let second = StateLock::acquire(dir.path(), "second").unwrap();
        let text = std::fs::read_to_string(second.path()).unwrap();
        assert!(text.ends_with(", second\n"), "{text}");
    }

    #[test]
    fn a_missing_state_directory_is_created() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("a/b");
        let lock = StateLock::acquire(&state, "x").unwrap();
        assert_eq!(lock.path(), state.join(LOCK_FILE));
    }
}
