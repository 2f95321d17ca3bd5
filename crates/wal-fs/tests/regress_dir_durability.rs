//! Opening a log in a directory that does not exist yet creates every
//! missing level, and makes each new level's entry durable: the parent
//! directory of every newly created directory is fsynced before open
//! returns, so a power loss cannot make the log's directory vanish.
#![allow(clippy::unwrap_used)]

use std::{
    io,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use wal_core::WalStore;
use wal_fs::{FileIo, FsOptions, FsStore, StdFileIo};

/// The real file layer, recording every directory it syncs.
#[derive(Debug, Default)]
struct DirSyncs(Mutex<Vec<PathBuf>>);

impl FileIo for DirSyncs {
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.0.lock().unwrap().push(dir.to_path_buf());
        StdFileIo.sync_dir(dir)
    }
}

#[tokio::test]
async fn every_created_level_has_its_parent_synced() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap();
    let log_dir = root.join("a").join("b").join("c");
    let io = Arc::new(DirSyncs::default());
    let mut store = FsStore::new(&log_dir, FsOptions::default()).with_file_io(io.clone());
    store.open().await.unwrap();
    let synced = io.0.lock().unwrap().clone();
    for parent in [root.clone(), root.join("a"), root.join("a").join("b")] {
        assert!(
            synced.contains(&parent),
            "{} was not synced after a directory was created in it; synced: {synced:?}",
            parent.display()
        );
    }
    store.close().await.unwrap();
}

#[tokio::test]
async fn an_existing_directory_needs_no_directory_sync() {
    let tmp = tempfile::tempdir().unwrap();
    let io = Arc::new(DirSyncs::default());
    let mut store = FsStore::new(tmp.path(), FsOptions::default()).with_file_io(io.clone());
    store.open().await.unwrap();
    assert!(io.0.lock().unwrap().is_empty());
    store.close().await.unwrap();
}
