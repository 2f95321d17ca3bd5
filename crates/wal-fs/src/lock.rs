//! Exclusive ownership of a log directory: `flock` on the directory itself.
//!
//! The lock is taken on a file descriptor of the directory, not of a file
//! inside it: deleting or replacing `wal.lock` while a writer holds the log
//! cannot let a second writer in, since the lock belongs to the directory's
//! inode. `flock` locks belong to an open file description, so a second
//! open of the same directory fails even inside the same process, and the
//! lock goes away with the file descriptor: when the store is dropped or
//! the process dies, however it dies.
//!
//! `wal.lock` only holds the owner's pid, so that the [`Error::Locked`] of
//! a second opener can name it; a stale pid left by a crashed process is
//! harmless, since the lock itself is gone.

use std::{
    fs::{File, OpenOptions},
    io::{self, Write},
    path::Path,
};

use rustix::fs::{flock, FlockOperation};
use wal_core::Error;

/// Name of the pid file inside the log directory.
pub(crate) const LOCK_FILE_NAME: &str = "wal.lock";

/// Holds the directory lock until dropped.
#[derive(Debug)]
pub(crate) struct DirLock {
    _dir: File,
}

impl DirLock {
    /// Takes the lock on `dir`, or fails with [`Error::Locked`] naming the
    /// holder.
    pub(crate) fn acquire(dir: &Path) -> Result<DirLock, Error> {
        // Opening a directory read-only gives a descriptor flock accepts.
        let handle = File::open(dir)?;
        if !handle.metadata()?.is_dir() {
            return Err(Error::InvalidArgument(format!(
                "{} is not a directory",
                dir.display()
            )));
        }
        let path = dir.join(LOCK_FILE_NAME);
        match flock(&handle, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
                // Best effort: the holder may be rewriting the file right now,
                // or someone deleted it.
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                let holder = holder.trim();
                return Err(Error::Locked {
                    holder: if holder.is_empty() {
                        format!("unknown process holding {}", dir.display())
                    } else {
                        format!("{holder} holding {}", dir.display())
                    },
                });
            }
            Err(e) => return Err(io::Error::from(e).into()),
        }
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        file.write_all(format!("pid {}\n", std::process::id()).as_bytes())?;
        Ok(DirLock { _dir: handle })
    }
}
