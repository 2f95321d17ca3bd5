//! Helpers shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used)]

pub mod payload;

use std::{
    fs::OpenOptions,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
};

use wal_core::{Lsn, Record, RecordKind, StoreState, WalStore};
use wal_fs::{FsOptions, FsStore};

/// A data record whose 100-byte payload is its Lsn's low byte, repeated.
pub fn rec(lsn: u64) -> Record {
    Record::new(Lsn(lsn), RecordKind::Data, vec![lsn as u8; 100])
}

/// The segment files of a log directory, in Lsn order.
pub fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    v.sort();
    v
}

/// Writes lsns 1..=n with [`rec`], one append each, and closes.
pub async fn write_log(dir: &Path, options: FsOptions, n: u64) {
    let mut s = FsStore::new(dir, options);
    s.open().await.unwrap();
    for l in 1..=n {
        s.append(&[rec(l)]).await.unwrap();
    }
    s.close().await.unwrap();
}

/// Flips one bit of the byte at `offset`.
pub fn flip(path: &Path, offset: u64) {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, offset).unwrap();
    f.write_all_at(&[b[0] ^ 0x40], offset).unwrap();
}

/// A store state holding `first..=last`.
pub fn state(first: u64, last: u64) -> StoreState {
    StoreState {
        first_lsn: Some(Lsn(first)),
        last_lsn: Some(Lsn(last)),
    }
}
