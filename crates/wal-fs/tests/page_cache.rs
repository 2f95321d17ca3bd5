//! Open reads the segment it appends to from the disk, not from the page
//! cache ("fsyncgate": after a failed `fdatasync` Linux may keep the lost
//! pages cached and clean). The power-loss explorer's model (e) proves what
//! that buys (`powerloss.rs`, `fsyncgate_after_failed_fdatasync`); these
//! tests pin down the real calls: which file, in which order, and that the
//! default `drop_page_cache` never loses a byte on a real file system.
#![allow(clippy::unwrap_used)]

mod support;

use std::{
    fs::{File, OpenOptions},
    io,
    os::unix::fs::{FileExt, MetadataExt},
    path::Path,
    sync::{Arc, Mutex},
};

use wal_core::{Lsn, WalStore};
use wal_fs::{FileIo, FsOptions, FsStore, StdFileIo};

use support::{rec, segments, write_log};

/// The real file layer, recording syncs and cache drops by inode.
#[derive(Debug, Default)]
struct Recorder {
    calls: Mutex<Vec<(&'static str, u64)>>,
}

impl FileIo for Recorder {
    fn sync_data(&self, file: &File) -> io::Result<()> {
        self.calls
            .lock()
            .unwrap()
            .push(("sync_data", file.metadata()?.ino()));
        StdFileIo.sync_data(file)
    }
    fn drop_page_cache(&self, file: &File) -> io::Result<()> {
        self.calls
            .lock()
            .unwrap()
            .push(("drop_page_cache", file.metadata()?.ino()));
        StdFileIo.drop_page_cache(file)
    }
}

fn ino(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().ino()
}

/// Every segment but the last was sealed by a successful `fdatasync`; the
/// last is synced, then its cache dropped, before the scan reads it.
#[tokio::test]
async fn open_syncs_then_drops_the_cache_of_the_last_segment_only() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = FsOptions::default().segment_bytes(1024);
    write_log(tmp.path(), opts.clone(), 30).await;
    let segs = segments(tmp.path());
    assert!(segs.len() > 3, "{segs:?}");
    let last = ino(segs.last().unwrap());

    let io = Arc::new(Recorder::default());
    let mut s = FsStore::new(tmp.path(), opts).with_file_io(io.clone());
    let st = s.open().await.unwrap();
    assert_eq!(st.last_lsn, Some(Lsn(30)));
    let calls = io.calls.lock().unwrap().clone();
    let drops: Vec<_> = calls
        .iter()
        .enumerate()
        .filter(|(_, c)| c.0 == "drop_page_cache")
        .collect();
    assert_eq!(drops.len(), 1, "{calls:?}");
    let (at, (_, dropped)) = drops[0];
    assert_eq!(*dropped, last, "the cache of another file was dropped");
    assert_eq!(
        calls[..at].last(),
        Some(&("sync_data", last)),
        "the cache was dropped without an fdatasync right before: dirty pages would stay cached: {calls:?}"
    );
    s.append(&[rec(31)]).await.unwrap();
    s.close().await.unwrap();
}

/// `POSIX_FADV_DONTNEED` drops clean pages only: bytes written and not yet
/// synced (dirty) read back unchanged, on the disk's file system and on
/// tmpfs, and so do synced ones.
#[test]
fn drop_page_cache_never_changes_what_reads_return() {
    let mut dirs = vec![tempfile::tempdir().unwrap()];
    if Path::new("/dev/shm").is_dir() {
        dirs.push(tempfile::tempdir_in("/dev/shm").unwrap());
    }
    for dir in &dirs {
        let path = dir.path().join("f");
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        let synced: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
        f.write_all_at(&synced, 0).unwrap();
        f.sync_data().unwrap();
        let dirty = vec![0x5au8; 300_000];
        f.write_all_at(&dirty, 700_000).unwrap();
        StdFileIo.drop_page_cache(&f).unwrap();
        let mut want = synced.clone();
        want[700_000..1_000_000].copy_from_slice(&dirty);
        assert_eq!(
            std::fs::read(&path).unwrap(),
            want,
            "{}",
            dir.path().display()
        );
    }
}
