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
//! ## Directory layout
//!
//! | file | what |
//! | --- | --- |
//! | `wal.lock` | holds the owner's `pid <n>`; the lock itself is an exclusive `flock` on the directory |
//! | `<first lsn, 20 digits>.wal` | a segment, e.g. `00000000000000000001.wal`: name order is Lsn order |
//! | `<first lsn>.wal.tmp` | a segment being created or rewritten; deleted on open |
//! | `wal.truncate` | a `truncate_after` in progress (see below); open finishes it |
//! | `wal.truncate.tmp` | that file being written; deleted on open |
//!
//! Other files are ignored. A `*.wal` file whose name is not 20 digits, or
//! whose header is not a segment header, makes open fail with
//! [`Error::Corrupt`](wal_core::Error::Corrupt).
//!
//! ## Segment file format (version 1)
//!
//! All integers are little-endian. CRC-32 is the IEEE polynomial
//! (`crc32fast`, as in zlib/gzip).
//!
//! **Segment header**, 48 bytes at offset 0:
//!
//! | offset | size | field |
//! | ---: | ---: | --- |
//! | 0 | 8 | magic, ASCII `WALFSSEG` |
//! | 8 | 4 | format version, `u32` = 1 |
//! | 12 | 4 | reserved, zero |
//! | 16 | 8 | segment id, `u64`: random, fresh for every segment file |
//! | 24 | 8 | first Lsn, `u64`: the Lsn of the segment's first record, equal to the file name |
//! | 32 | 8 | previous last Lsn, `u64`: the last Lsn of the segment before this one when this one was created (0 if none) |
//! | 40 | 4 | reserved, zero |
//! | 44 | 4 | header checksum, `u32`: CRC-32 of bytes 0..44 |
//!
//! **Record frames** follow from offset 48, back to back. Each starts at a
//! multiple of 8:
//!
//! | offset | size | field |
//! | ---: | ---: | --- |
//! | 0 | 4 | checksum, `u32`: CRC-32 of the segment id (8 bytes, LE) ‖ frame bytes 4..32 ‖ the payload |
//! | 4 | 4 | payload length `n`, `u32`, in bytes |
//! | 8 | 1 | kind: the `wal_core::RecordKind` byte (1 data, 2 checkpoint, 3 checkpoint-begin, 4 checkpoint-commit, 5 checkpoint-abort, 6 truncated) |
//! | 9 | 1 | flags: bit 0 = batch end (the last record of one `append` call); other bits zero |
//! | 10 | 6 | reserved, zero |
//! | 16 | 8 | Lsn, `u64`, non-zero, strictly increasing through the log |
//! | 24 | 8 | synced-to, `u64`: bytes of this file known durable (`fdatasync`ed) when the frame was written |
//! | 32 | `n` | payload |
//! | 32 + `n` | 0..7 | zero padding to a multiple of 8 (not checksummed) |
//!
//! A frame of an `n`-byte payload takes `32 + n` bytes rounded up to 8.
//! After the last frame, the active segment holds zeros up to its
//! preallocated size (a clean close cuts them off again, so the next open
//! need not read them); a sealed segment ends right after its last frame (it
//! is cut to its data when the next one is started).
//!
//! Why the checksum includes the segment id: a preallocated or reused file
//! may hold stale bytes from an earlier life, and a stale frame must never
//! check out. With the id in the checksum, only frames written into *this*
//! segment do.
//!
//! ## Atomic appends: the batch-end flag
//!
//! Each `append(&[Record])` call writes its records as consecutive frames
//! in one write, the last with the batch-end flag set, then `fdatasync`s.
//! On open, a segment is read frame by frame and the log ends after the
//! last frame that has the batch-end flag: records after it, valid or not,
//! belong to a call that did not finish and are cut off. So a call's
//! records come back all together or not at all. A call never spans two
//! segments (the segment rotates first; a batch bigger than a segment gets
//! a segment of its own).
//!
//! `truncate_after` can cut inside a batch; the kept part must then end
//! with the flag. The segment is rewritten with the flag set under a
//! temporary name, synced and renamed over the old one, so a crash leaves
//! the old file or the new one.
//!
//! ## Truncate: all or none, across segments
//!
//! `truncate_after(lsn, marker)` must remove every record above `lsn` and
//! add the core's `Truncated` marker (the Lsn high-water mark) together,
//! even when whole segments go. It first syncs what was written, then makes
//! its intent durable: `wal.truncate` (28 bytes: ASCII `WALFSTRC`, the cut
//! point `u64`, the marker's Lsn `u64`, CRC-32 of bytes 0..24; written as
//! `wal.truncate.tmp`, synced, renamed, directory synced). Then it deletes
//! later segments newest first, rewrites the segment holding `lsn` to end
//! with the marker (or appends and syncs the marker), and deletes the
//! intent. Every state in between is a valid shorter log; open, finding
//! the intent, finishes the truncate (unless the marker is already there)
//! before it reports the log's state. So a crash anywhere leaves the old
//! log or the cut one with its marker, and a cut Lsn is never handed out
//! again.
//!
//! ## Open and recovery
//!
//! 0. Create the directory if it is missing, with every missing ancestor;
//!    the parent of each level created is fsynced, so the new entries are
//!    durable before anything is written into them.
//! 1. Lock the directory (`flock` on a descriptor of the directory itself,
//!    non-blocking, so deleting or replacing `wal.lock` cannot let a second
//!    writer in); a second opener, in this or
//!    another process, gets [`Error::Locked`](wal_core::Error::Locked) naming
//!    the holder's pid. Delete `*.wal.tmp` leftovers.
//! 2. `fdatasync` the last segment, then drop its pages from the page cache
//!    ([`FileIo::drop_page_cache`]), so that what the scan reads of it is
//!    what the disk holds. After a failed `fdatasync` Linux may keep the
//!    failed pages cached and marked clean; a reopen in the same boot would
//!    otherwise adopt a batch the disk does not hold and append after it,
//!    and a later power loss would leave a hole before acknowledged
//!    entries ("fsyncgate"). Every other segment was sealed by a successful
//!    `fdatasync` after its last write, so it is read from the cache as is.
//! 3. For each segment in Lsn order, streaming (memory: one read buffer and
//!    one payload, whatever the log's size): check the header; check that
//!    its "previous last Lsn" equals the last Lsn of the segment before it
//!    (otherwise a segment is missing, or was cut: `Corrupt`); check every
//!    frame (checksum, Lsn order, first Lsn equal to the name). Remember a
//!    sparse index: one (Lsn, offset) pair about every
//!    [`FsOptions::index_interval_bytes`].
//! 4. In a segment that is not the last, any invalid frame, or an end inside
//!    a batch, is `Corrupt` naming the file and offset.
//! 5. In the last segment, the first invalid frame is either a torn write
//!    (the crash came during the last write) or damage. Open looks at every
//!    8-byte-aligned offset after it for a frame of this segment whose
//!    checksum holds and whose synced-to is past the end of the last complete
//!    batch: such a frame was written after the bad bytes had been made
//!    durable, so the bad bytes are damage: `Corrupt`. Otherwise the tail is
//!    torn: it is cut off (truncate + `fdatasync`) and logged with
//!    `tracing::warn!`. A tail of zeros after a complete batch is just the
//!    unused, preallocated part of the segment.
//! 6. An empty last segment (a crash between its creation and its first
//!    batch) is deleted.
//! 7. A `wal.truncate` intent left by a crash is carried out, then deleted.
//!
//! Damage to the very last record of the log cannot be told from a torn
//! write and is cut like one. Deleting whole segments at the end (or the
//! start) of the log cannot be detected from the files alone.
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
#![cfg_attr(docsrs, feature(doc_cfg))]

mod format;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
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
