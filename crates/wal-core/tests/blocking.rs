//! The blocking API from plain threads, with no runtime of the caller's.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use wal_core::{blocking::BlockingWal, EntryKind, Error, Lsn, MemStore, WalOptions};

#[test]
fn plain_threads_append_checkpoint_recover_and_tail() {
    let store = MemStore::new();
    let (wal, recovery) = BlockingWal::open(store.clone(), WalOptions::default()).unwrap();
    assert_eq!(recovery.count(), 0);

    let tail = {
        let wal = wal.clone();
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            for e in wal.tail(Lsn::ZERO) {
                let e = e.unwrap();
                seen.push(e.lsn);
                if &e.payload[..] == b"after" {
                    return seen;
                }
            }
            panic!("the tail ended before the last entry");
        })
    };
    let lsns: BTreeSet<Lsn> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let wal = &wal;
                s.spawn(move || {
                    (0..50)
                        .map(|i| wal.append(format!("t{t}-{i}")).unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert_eq!(lsns.len(), 200, "every append got its own lsn");
    for lsn in &lsns {
        assert!(wal.read(*lsn).unwrap().is_some());
    }

    assert_eq!(wal.read_from(Lsn::ZERO).count(), 200);

    let mut cp = wal.begin_checkpoint().unwrap();
    cp.append("state").unwrap();
    let (after, done) = wal.submit("after").unwrap();
    assert_eq!(wal.wait(done).unwrap(), after);
    cp.commit().unwrap();
    // The commit's cleanup removes what the checkpoint supersedes, in the
    // background (reads do not queue behind it): wait for it, with a deadline.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let left = wal.read_from(Lsn::ZERO).count();
        if left == 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the cleanup left {left} records, not 2"
        );
        std::thread::yield_now();
    }
    let tailed = tail.join().unwrap();
    assert!(
        tailed.windows(2).all(|w| w[0] < w[1]),
        "the tail is in lsn order"
    );
    assert_eq!(tailed.last(), Some(&after));
    let mut ended = wal.tail(after.next());
    wal.close().unwrap();
    assert!(matches!(wal.append("late"), Err(Error::Closed)));
    assert!(
        matches!(ended.next(), Some(Err(Error::Closed)) | None),
        "a tail ends when the wal closes"
    );

    let (wal, recovery) = BlockingWal::open(store, WalOptions::default()).unwrap();
    assert!(recovery.checkpoint().is_some());
    let got: Vec<_> = recovery.map(|e| e.unwrap()).collect();
    assert_eq!(got.len(), 2);
    assert_eq!(
        (got[0].kind, &got[0].payload[..]),
        (EntryKind::Checkpoint, &b"state"[..])
    );
    assert_eq!(&got[1].payload[..], b"after");
    wal.close().unwrap();
}
