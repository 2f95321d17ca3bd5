//! In `SyncMode::None` appends only reach the page cache, but deletions
//! must never become durable before what justifies them: checkpoint
//! cleanup, trim and truncate unlink segments only once every written byte
//! (the commit marker, the truncate marker, the records a trim keeps) has
//! been `fdatasync`ed. The file layer here records which files hold
//! unsynced writes and flags every unlink made while another file does.
#![allow(clippy::unwrap_used)]

use std::{
    collections::HashMap,
    fs::File,
    io,
    os::unix::fs::MetadataExt,
    path::Path,
    sync::{Arc, Mutex},
};

use wal_core::{Lsn, Wal, WalOptions};
use wal_fs::{FileIo, FsOptions, FsStore, StdFileIo, SyncMode};

#[derive(Debug, Default)]
struct Tracker {
    /// Inodes written since their last fdatasync (with a handle, to tell
    /// whether the file is still linked: an unlinked or replaced file's
    /// unsynced bytes do not matter).
    dirty: Mutex<HashMap<u64, File>>,
    /// Unlinks made while another file held unsynced writes.
    violations: Mutex<Vec<String>>,
}

fn ino(file: &File) -> u64 {
    file.metadata().unwrap().ino()
}

impl Tracker {
    /// Linked files holding unsynced writes, other than `except`.
    fn dirty_files(&self, except: Option<u64>) -> Vec<u64> {
        self.dirty
            .lock()
            .unwrap()
            .iter()
            .filter(|(i, f)| Some(**i) != except && f.metadata().unwrap().nlink() > 0)
            .map(|(i, _)| *i)
            .collect()
    }
}

impl FileIo for Tracker {
    fn write_all_at(&self, file: &File, buf: &[u8], offset: u64) -> io::Result<()> {
        self.dirty
            .lock()
            .unwrap()
            .insert(ino(file), file.try_clone()?);
        StdFileIo.write_all_at(file, buf, offset)
    }
    fn sync_data(&self, file: &File) -> io::Result<()> {
        StdFileIo.sync_data(file)?;
        self.dirty.lock().unwrap().remove(&ino(file));
        Ok(())
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let victim = std::fs::metadata(path)?.ino();
        let dirty = self.dirty_files(Some(victim));
        if !dirty.is_empty() {
            self.violations.lock().unwrap().push(format!(
                "{} unlinked while inodes {dirty:?} hold unsynced writes",
                path.display()
            ));
        }
        self.dirty.lock().unwrap().remove(&victim);
        StdFileIo.remove_file(path)
    }
}

fn payload(i: u32) -> Vec<u8> {
    vec![i as u8; 300]
}

async fn open(dir: &Path, io: Arc<Tracker>) -> Wal {
    let options = FsOptions::default()
        .segment_bytes(4096)
        .sync_mode(SyncMode::None);
    let store = FsStore::new(dir, options).with_file_io(io);
    Wal::open(store, WalOptions::default()).await.unwrap().0
}

fn violations(io: &Tracker) -> Vec<String> {
    io.violations.lock().unwrap().clone()
}

#[tokio::test]
async fn checkpoint_cleanup_waits_for_the_commit_marker() {
    let dir = tempfile::tempdir().unwrap();
    let io = Arc::new(Tracker::default());
    let wal = open(dir.path(), io.clone()).await;
    for i in 0..40 {
        wal.append(payload(i)).await.unwrap();
    }
    let mut cp = wal.begin_checkpoint().await.unwrap();
    cp.append(payload(1000)).await.unwrap();
    cp.commit().await.unwrap();
    // One more op, so a deferred cleanup has run.
    wal.append(payload(41)).await.unwrap();
    let first = wal.first_lsn().unwrap();
    assert!(first > Lsn(1), "the cleanup removed nothing");
    wal.close().await.unwrap();
    assert_eq!(violations(&io), Vec::<String>::new());
}

#[tokio::test]
async fn trim_waits_for_the_records_it_keeps() {
    let dir = tempfile::tempdir().unwrap();
    let io = Arc::new(Tracker::default());
    let wal = open(dir.path(), io.clone()).await;
    let mut last = Lsn::ZERO;
    for i in 0..40 {
        last = wal.append(payload(i)).await.unwrap();
    }
    wal.trim_before(last).await.unwrap();
    assert!(
        wal.first_lsn().unwrap() > Lsn(1),
        "the trim removed nothing"
    );
    wal.close().await.unwrap();
    assert_eq!(violations(&io), Vec::<String>::new());
}

#[tokio::test]
async fn truncate_syncs_before_it_unlinks() {
    let dir = tempfile::tempdir().unwrap();
    let io = Arc::new(Tracker::default());
    let wal = open(dir.path(), io.clone()).await;
    for i in 0..40 {
        wal.append(payload(i)).await.unwrap();
    }
    // Lsn 12 ends the first segment: the cut keeps it whole and drops the
    // rest, and the marker goes after lsn 12.
    let first_segment_end = Lsn(12);
    wal.truncate_after(first_segment_end).await.unwrap();
    assert_eq!(
        wal.last_lsn(),
        Some(Lsn(41)),
        "the marker is the last record"
    );
    assert!(
        io.dirty_files(None).is_empty(),
        "the truncate marker is not synced"
    );
    wal.close().await.unwrap();
    assert_eq!(violations(&io), Vec::<String>::new());
}

#[tokio::test]
async fn truncate_inside_the_active_segment_syncs_its_marker() {
    let dir = tempfile::tempdir().unwrap();
    let io = Arc::new(Tracker::default());
    let wal = open(dir.path(), io.clone()).await;
    for i in 0..40 {
        wal.append(payload(i)).await.unwrap();
    }
    wal.truncate_after(Lsn(38)).await.unwrap();
    assert!(
        io.dirty_files(None).is_empty(),
        "the truncate marker is not synced"
    );
    wal.close().await.unwrap();
    assert_eq!(violations(&io), Vec::<String>::new());
}
