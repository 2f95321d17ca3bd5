//! The blocking API on the file store, from plain threads.
#![allow(clippy::unwrap_used)]

use wal_core::{blocking::BlockingWal, Lsn, WalOptions};
use wal_fs::{FsOptions, FsStore};

#[test]
fn plain_threads_on_files() {
    let dir = tempfile::tempdir().unwrap();
    let open = || {
        let store = FsStore::new(dir.path(), FsOptions::default().segment_bytes(64 << 10));
        BlockingWal::open(store, WalOptions::default()).unwrap()
    };
    let (wal, recovery) = open();
    assert_eq!(recovery.count(), 0);
    std::thread::scope(|s| {
        for t in 0..4 {
            let wal = &wal;
            s.spawn(move || {
                for i in 0..100 {
                    let p = format!("t{t}-{i}-{}", "x".repeat(200));
                    let lsn = wal.append(p.clone()).unwrap();
                    assert_eq!(&wal.read(lsn).unwrap().unwrap().payload[..], p.as_bytes());
                }
            });
        }
    });
    assert_eq!(wal.read_from(Lsn::ZERO).count(), 400);
    wal.close().unwrap();
    let (wal, recovery) = open();
    let recovered: Vec<wal_core::Entry> = recovery.collect::<Result<_, _>>().unwrap();
    assert_eq!(recovered.len(), 400);
    wal.close().unwrap();
}
