//! Exclusive ownership of a log directory: `flock` on a lock file.
//!
//! `flock` locks belong to an open file description, so a second open of
//! the same directory fails even inside the same process, and the lock goes
//! away with the file descriptor: when the store is dropped or the process
//! dies, however it dies. The holder's pid is written into the file only so
//! that the [`Error::Locked`] of a second opener can name it; a stale pid
//! left by a crashed process is harmless, since the lock itself is gone.

use std::{
    fs::{File, OpenOptions},
    io::{self, Read},
    os::unix::fs::FileExt,
    path::Path,
};

use rustix::fs::{flock, FlockOperation};
use wal_core::Error;

/// Name of the lock file inside the log directory.
pub(crate) const LOCK_FILE_NAME: &str = "wal.lock";

/// Holds the directory lock until dropped.
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: File,
}

impl DirLock {
    /// Takes the lock on `dir`, or fails with [`Error::Locked`] naming the
    /// holder.
    pub(crate) fn acquire(dir: &Path) -> Result<DirLock, Error> {
        let path = dir.join(LOCK_FILE_NAME);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
                let mut holder = String::new();
                // Best effort: the holder may be rewriting the file right now.
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(Error::Locked {
                    holder: if holder.is_empty() {
                        format!("unknown process holding {}", path.display())
                    } else {
                        format!("{holder} holding {}", path.display())
                    },
                });
            }
            Err(e) => return Err(io::Error::from(e).into()),
        }
        let me = format!("pid {}\n", std::process::id());
        file.set_len(0)?;
        file.write_all_at(me.as_bytes(), 0)?;
        Ok(DirLock { _file: file })
    }
}
