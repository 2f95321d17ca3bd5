//! `truncate_after` is all-or-none across segments and never lets an Lsn at
//! or below an acknowledged one be handed out again. The file layer here
//! "crashes" at the n-th mutating operation of a truncate (that operation
//! and every later one fail without effect), for every n until the
//! truncate completes; each time the log is reopened with the real layer
//! and must hold either the whole old log or the cut one with its
//! high-water marker.
#![allow(clippy::unwrap_used)]

mod support;

use std::{
    fs::File,
    io,
    path::Path,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
};

use support::rec;
use wal_core::{Lsn, ReadLimit, Record, RecordKind, WalStore};
use wal_fs::{FileIo, FsOptions, FsStore, StdFileIo};

/// Counts mutating operations once armed; from the `crash_at`-th on, each
/// fails without doing anything, as if the machine had stopped there.
#[derive(Debug)]
struct CrashAt {
    armed: AtomicBool,
    ops: AtomicU64,
    crash_at: u64,
}

impl CrashAt {
    fn step(&self) -> io::Result<()> {
        if !self.armed.load(Ordering::SeqCst) {
            return Ok(());
        }
        if self.ops.fetch_add(1, Ordering::SeqCst) >= self.crash_at {
            return Err(io::Error::other("injected crash"));
        }
        Ok(())
    }
    fn crashed(&self) -> bool {
        self.ops.load(Ordering::SeqCst) > self.crash_at
    }
}

impl FileIo for CrashAt {
    fn write_all_at(&self, file: &File, buf: &[u8], offset: u64) -> io::Result<()> {
        self.step()?;
        StdFileIo.write_all_at(file, buf, offset)
    }
    fn sync_data(&self, file: &File) -> io::Result<()> {
        self.step()?;
        StdFileIo.sync_data(file)
    }
    fn set_len(&self, file: &File, len: u64) -> io::Result<()> {
        self.step()?;
        StdFileIo.set_len(file, len)
    }
    fn allocate(&self, file: &File, len: u64) -> io::Result<()> {
        self.step()?;
        StdFileIo.allocate(file, len)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.step()?;
        StdFileIo.sync_dir(dir)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.step()?;
        StdFileIo.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.step()?;
        StdFileIo.remove_file(path)
    }
}

/// 300-byte records in 4 KiB segments: 12 per segment, segments start at
/// lsns 1, 13, 25 and 37.
const N: u64 = 40;

fn options() -> FsOptions {
    FsOptions::default().segment_bytes(4096)
}

fn record(lsn: u64) -> Record {
    Record::new(Lsn(lsn), RecordKind::Data, vec![lsn as u8; 300])
}

async fn read_all(store: &mut FsStore) -> Vec<Record> {
    let mut out = Vec::new();
    let mut from = Lsn(1);
    loop {
        let got = store.read_from(from, ReadLimit::default()).await.unwrap();
        let Some(last) = got.last() else { break };
        from = last.lsn.next();
        out.extend(got);
    }
    out
}

/// Crashes a truncate after `after` at every step; checks every outcome.
async fn crash_everywhere(after: u64) {
    let mut crash_at = 0;
    loop {
        let dir = tempfile::tempdir().unwrap();
        let io = Arc::new(CrashAt {
            armed: AtomicBool::new(false),
            ops: AtomicU64::new(0),
            crash_at,
        });
        let mut store = FsStore::new(dir.path(), options()).with_file_io(io.clone());
        store.open().await.unwrap();
        for l in 1..=N {
            store.append(&[record(l)]).await.unwrap(); // acknowledged
        }
        let marker = Record::marker(Lsn(N + 1), RecordKind::Truncated, Lsn(after));
        io.armed.store(true, Ordering::SeqCst);
        let result = store.truncate_after(Lsn(after), &marker).await;
        let crashed = io.crashed();
        drop(store); // the crash: no close

        let mut store = FsStore::new(dir.path(), options());
        let state = store.open().await.unwrap_or_else(|e| {
            panic!("truncate_after({after}), crash at op {crash_at}: the log does not open: {e}")
        });
        let got = read_all(&mut store).await;
        let ctx = format!("truncate_after({after}), crash at op {crash_at} ({result:?})");
        let data: Vec<u64> = got
            .iter()
            .filter(|r| r.kind == RecordKind::Data)
            .map(|r| r.lsn.get())
            .collect();
        let kept: Vec<u64> = (1..=after).collect();
        let all: Vec<u64> = (1..=N).collect();
        assert!(
            data == kept || data == all,
            "{ctx}: the cut is not all-or-none: data lsns {data:?}"
        );
        if data == kept {
            assert_eq!(
                got.last().map(|r| (r.lsn, r.kind)),
                Some((Lsn(N + 1), RecordKind::Truncated)),
                "{ctx}: cut without its high-water marker"
            );
        }
        if result.is_ok() {
            assert_eq!(data, kept, "{ctx}: reported done but not cut");
        }
        assert!(
            state.last_lsn >= Some(Lsn(N)),
            "{ctx}: the next append would reuse acknowledged lsn {}",
            state.last_lsn.map_or(1, |l| l.get() + 1)
        );
        // The reopened log appends after everything, and stays consistent.
        let next = state.last_lsn.unwrap().next();
        store.append(&[rec(next.get())]).await.unwrap();
        store.close().await.unwrap();
        let mut store = FsStore::new(dir.path(), options());
        let again = store.open().await.unwrap();
        assert_eq!(again.last_lsn, Some(next), "{ctx}");
        store.close().await.unwrap();
        assert!(
            !std::fs::read_dir(dir.path()).unwrap().any(|e| e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".tmp")),
            "{ctx}: a temporary file was left behind"
        );
        if !crashed {
            assert!(result.is_ok(), "{ctx}");
            break;
        }
        crash_at += 1;
        assert!(crash_at < 100, "truncate_after({after}) never completed");
    }
}

#[tokio::test]
async fn truncate_to_empty_is_atomic() {
    crash_everywhere(0).await;
}

#[tokio::test]
async fn truncate_inside_a_middle_segment_is_atomic() {
    crash_everywhere(17).await;
}

#[tokio::test]
async fn truncate_at_a_segment_boundary_is_atomic() {
    crash_everywhere(12).await;
}

#[tokio::test]
async fn truncate_inside_the_last_segment_is_atomic() {
    crash_everywhere(38).await;
}
