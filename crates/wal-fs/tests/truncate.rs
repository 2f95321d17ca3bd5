//! `truncate_after` writes the cut and its high-water marker together: a
//! failure anywhere in it leaves the old log, and a reopened log never hands
//! out an Lsn that was already acknowledged.
#![allow(clippy::unwrap_used)]

use std::{
    fs::File,
    io,
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

use futures::StreamExt;
use wal_core::{Lsn, Wal, WalOptions};
use wal_fs::{FileIo, FsOptions, FsStore};

/// Fails the first rename, or every write into a `*.tmp` file, once armed.
#[derive(Debug, Default)]
struct FailTruncate {
    armed: AtomicBool,
    on_rename: bool,
}

impl FileIo for FailTruncate {
    fn write_all_at(&self, file: &File, buf: &[u8], offset: u64) -> io::Result<()> {
        if !self.on_rename && self.armed.load(Ordering::SeqCst) {
            return Err(io::Error::other("injected: write during truncate"));
        }
        std::os::unix::fs::FileExt::write_all_at(file, buf, offset)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        if self.on_rename && self.armed.swap(false, Ordering::SeqCst) {
            return Err(io::Error::other("injected: rename during truncate"));
        }
        std::fs::rename(from, to)
    }
}

async fn truncate_fails_then_no_reuse(on_rename: bool) {
    let dir = tempfile::tempdir().unwrap();
    let io = Arc::new(FailTruncate {
        armed: AtomicBool::new(false),
        on_rename,
    });
    let store = FsStore::new(dir.path(), FsOptions::default()).with_file_io(io.clone());
    let (wal, _) = Wal::open(store, WalOptions::default()).await.unwrap();
    for p in ["a", "b", "c", "d"] {
        wal.append(p).await.unwrap(); // lsns 1..=4, acknowledged
    }
    io.armed.store(true, Ordering::SeqCst);
    assert!(
        wal.truncate_after(Lsn(2)).await.is_err(),
        "the failure is reported"
    );
    // Close still releases the directory (it reports the earlier failure).
    let _ = wal.close().await;

    let store = FsStore::new(dir.path(), FsOptions::default());
    let (wal, rec) = Wal::open(store, WalOptions::default()).await.unwrap();
    let got: Vec<String> = rec
        .map(|e| String::from_utf8(e.unwrap().payload.to_vec()).unwrap())
        .collect()
        .await;
    assert_eq!(
        got,
        ["a", "b", "c", "d"],
        "a failed truncate changes nothing"
    );
    let x = wal.append("x").await.unwrap();
    assert!(x > Lsn(4), "lsn {x} reused");
    wal.close().await.unwrap();
}

#[tokio::test]
async fn failed_rename_leaves_the_old_log() {
    truncate_fails_then_no_reuse(true).await;
}

#[tokio::test]
async fn failed_write_leaves_the_old_log() {
    truncate_fails_then_no_reuse(false).await;
}

#[tokio::test]
async fn truncate_then_crash_never_reuses_lsns() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(
        FsStore::new(dir.path(), FsOptions::default()),
        WalOptions::default(),
    )
    .await
    .unwrap();
    for p in ["a", "b", "c", "d"] {
        wal.append(p).await.unwrap();
    }
    wal.truncate_after(Lsn(2)).await.unwrap();
    wal.simulate_crash().await;
    let (wal, rec) = Wal::open(
        FsStore::new(dir.path(), FsOptions::default()),
        WalOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(rec.count().await, 2);
    let x = wal.append("x").await.unwrap();
    assert!(x > Lsn(4), "lsn {x} reused after a crash");
    wal.close().await.unwrap();
}
