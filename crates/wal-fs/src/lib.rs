//! # wal-fs
//!
//! [`FsStore`]: the write-ahead log's backend on a local directory. Records
//! go into preallocated segment files; every `append` call is one write and
//! one `fdatasync` (group commit happens above, in `wal-core`'s controller);
//! a call's records survive a crash all together or not at all.
//!
//! ```text
//! wal_core::Wal ──ops──> controller ──append(&[Record])──> FsStore: write + fdatasync
//!                        (its own "wal-controller" thread, since FsStore::blocking_io)
//! ```
//!
//! FsStore does its file I/O inline. Because it reports
//! [`blocking_io`](wal_core::WalStore::blocking_io), the Wal runs its
//! controller on a dedicated thread: the application's async workers never
//! block on a write or an `fdatasync`, and a batch costs no thread hop.
//!
// Intra-doc targets of FORMAT.md's links. They come before the included
// text, so they win over its own definitions (which serve readers of the
// file on its own).
//! [`Error::Corrupt`]: wal_core::Error::Corrupt
//! [`Error::Locked`]: wal_core::Error::Locked
//! [`FsOptions`]: crate::FsOptions
//! [`FsOptions::index_interval_bytes`]: crate::FsOptions::index_interval_bytes
//! [`FileIo::drop_page_cache`]: crate::FileIo::drop_page_cache
#![doc = include_str!("../FORMAT.md")]
//!
//! ## Durability assumptions
//!
//! `fdatasync` returns only once written data, and the file size, are on
//! stable storage (honest `fdatasync`: no volatile write cache that ignores
//! flushes); a directory `fsync` does the same for the directory's
//! entries.
//!
//! **Powersafe overwrite.** Batches are packed back to back, so a batch
//! usually starts inside the sector (or flash page) that holds the end of
//! the previous, acknowledged batch, and its write rewrites that sector.
//! We assume that a write, even one torn by a power loss, never damages
//! durable bytes outside the byte range it changes, as PostgreSQL's WAL
//! and hashicorp's raft-wal assume (SQLite calls this "powersafe
//! overwrite"). A device that can corrupt a whole sector when power fails
//! during its write breaks this assumption: such a tear would show up as
//! damage to the last acknowledged batch and be cut like a torn write, or
//! reported as `Corrupt`. Aligning each batch to a sector would avoid it at
//! the cost of padding every batch; we do not. Nothing is assumed about the atomicity or order of writes
//! within one unsynced write (sectors may land in any order): that is what
//! the synced-to field and the batch-end flag are for. A failed `fdatasync`
//! is not retried: the store refuses every later write and the Wal is
//! poisoned; reopen to recover what is durable.
//!
//! **After a failed `fdatasync`** the page cache may disagree with the disk.
//! We assume that the kernel either keeps the failed pages dirty (a later
//! `fdatasync` writes them again, or fails again) or marks them clean, and
//! that `POSIX_FADV_DONTNEED` after a successful `fdatasync` then drops them
//! (Linux's generic `fadvise`, which ext4, XFS and btrfs use, drops every
//! clean page that no process has mapped and none holds locked at that
//! instant), so the reopen's scan of the last segment reads the disk. Not
//! covered: a segment some process has mapped (`mmap`), a page a lockless
//! reader (`walctl tail`) is reading at that very instant, and file systems
//! whose `fadvise` ignores `DONTNEED` while caching pages of their own
//! (some network file systems).
//!
//! Segments are created as `*.wal.tmp`, written, allocated, synced, renamed
//! into place, and the directory synced; deletions sync the directory one
//! by one, so a crash never leaves a gap in the middle of the log.
//!
//! ## Tools: verify, read and repair without opening
//!
//! [`inspect`] holds the read-only side for operators and tools
//! (`walctl`): [`inspect::verify`] reports every problem of a log with its
//! file and offset, classified the way open would treat it;
//! [`inspect::LogReader`] reads (and follows) a log without taking the lock;
//! [`inspect::repair`] is the explicit cut of a damaged log, with a dry run:
//! under the directory lock it cuts at the first damage and ends the log
//! with a high-water marker above every Lsn that was in the directory (in
//! any readable frame, or named by a cut segment), so no cut Lsn is handed
//! out again.
//!
//! ## Testing the file layer
//!
//! Every write, sync, resize, rename and delete goes through the [`FileIo`]
//! trait; [`FsStore::with_file_io`] swaps in an implementation that fails on
//! command (see the crate's `tests/faults.rs`).
// Library hygiene: every public type is Debug; nothing is `pub` that is
// not reachable from outside.
#![warn(missing_debug_implementations, unreachable_pub)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod format;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
#[cfg(test)]
mod golden_tests;
pub mod inspect;
mod io;
mod lock;
mod log;
mod options;
mod reader;
mod segment;
mod store;

pub use io::{FileIo, StdFileIo};
pub use options::{FsOptions, SyncMode};
pub use store::FsStore;

/// The name of the lock file inside a log directory.
pub const LOCK_FILE_NAME: &str = lock::LOCK_FILE_NAME;

/// Whether `dir` holds a log: a segment file (`*.wal`, or a `*.wal.tmp`
/// that a crash left behind) or the [lock file](LOCK_FILE_NAME) that every
/// open of the log creates. Tools use it to tell a directory with no log
/// (a mistyped path) from an empty log, which has the lock file. Fails if
/// `dir` cannot be listed.
pub fn holds_log(dir: &std::path::Path) -> std::io::Result<bool> {
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if name == LOCK_FILE_NAME
            || name.ends_with(segment::SEGMENT_SUFFIX)
            || name.ends_with(segment::TMP_SUFFIX)
        {
            return Ok(true);
        }
    }
    Ok(false)
}
