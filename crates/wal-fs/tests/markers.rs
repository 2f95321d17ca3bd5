//! `FsStore::read_markers_from`: every record in order, markers whole, data
//! and checkpoint records without their payload, across segments.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use wal_core::{Lsn, ReadLimit, Record, RecordKind, WalStore};
use wal_fs::{FsOptions, FsStore, SyncMode};

/// Lsn `lsn`'s record: mostly data and checkpoint entries of varied sizes,
/// with every kind of marker sprinkled in.
fn rec(lsn: u64) -> Record {
    let marker = |kind| Record::new(Lsn(lsn), kind, (lsn - 1).to_be_bytes().to_vec());
    match lsn % 13 {
        3 => Record::new(Lsn(lsn), RecordKind::CheckpointBegin, Vec::new()),
        4 => marker(RecordKind::CheckpointCommit),
        8 => marker(RecordKind::CheckpointAbort),
        11 => marker(RecordKind::Truncated),
        k => {
            let len = (lsn * 37 % 300) as usize;
            let payload: Vec<u8> = (0..len).map(|i| (lsn as usize + i) as u8).collect();
            let kind = if k % 2 == 0 {
                RecordKind::Checkpoint
            } else {
                RecordKind::Data
            };
            Record::new(Lsn(lsn), kind, payload)
        }
    }
}

/// What `read_markers_from` should return for `r`.
fn stripped(r: &Record) -> Record {
    if r.kind.is_marker() {
        r.clone()
    } else {
        Record::new(r.lsn, r.kind, Vec::new())
    }
}

fn small() -> FsOptions {
    FsOptions::default()
        .segment_bytes(4096)
        .index_interval_bytes(512)
}

async fn open(dir: &Path, options: FsOptions) -> FsStore {
    let mut s = FsStore::new(dir, options);
    s.open().await.unwrap();
    s
}

/// Every call's result, from `from` to the end.
async fn markers_all(s: &mut FsStore, from: u64, limit: ReadLimit) -> Vec<Vec<Record>> {
    let mut calls = Vec::new();
    let mut next = Lsn(from);
    loop {
        let chunk = s.read_markers_from(next, limit).await.unwrap();
        let Some(last) = chunk.last() else { break };
        next = last.lsn.next();
        calls.push(chunk);
    }
    calls
}

#[tokio::test]
async fn markers_whole_payloads_omitted_across_segments() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let mut s = open(&dir, small()).await;
    // Lsns 2, 4, ... 800 (gaps), in batches of 3.
    let lsns: Vec<u64> = (1..=400).map(|i| i * 2).collect();
    for b in lsns.chunks(3) {
        let recs: Vec<Record> = b.iter().map(|&l| rec(l)).collect();
        s.append(&recs).await.unwrap();
    }
    let segments = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "wal")
        })
        .count();
    assert!(segments > 10, "expected many segments, got {segments}");
    let all: Vec<Record> = lsns.iter().map(|&l| rec(l)).collect();
    assert!(all.iter().any(|r| r.kind.is_marker()));
    assert!(all
        .iter()
        .any(|r| !r.kind.is_marker() && !r.payload.is_empty()));
    let want: Vec<Record> = all.iter().map(stripped).collect();

    // This pass and the full read agree on everything but omitted payloads,
    // on the live store and after a reopen.
    for reopen in [false, true] {
        if reopen {
            s.close().await.unwrap();
            s = open(&dir, small()).await;
        }
        for limit in [
            ReadLimit::default(),
            ReadLimit {
                max_records: 1,
                max_bytes: 1,
            },
            ReadLimit {
                max_records: 3,
                max_bytes: usize::MAX,
            },
        ] {
            let got: Vec<Record> = markers_all(&mut s, 0, limit)
                .await
                .into_iter()
                .flatten()
                .collect();
            assert_eq!(got, want, "limit {limit:?}, reopened: {reopen}");
        }
        // From every bound, the first record returned is the first at or
        // after it.
        let one = ReadLimit {
            max_records: 1,
            max_bytes: 1,
        };
        for from in 0..=805u64 {
            let got = s.read_markers_from(Lsn(from), one).await.unwrap();
            let expect: Vec<Record> = want
                .iter()
                .skip_while(|r| r.lsn.get() < from)
                .take_while(|r| !r.kind.is_marker())
                .chain(
                    want.iter()
                        .skip_while(|r| r.lsn.get() < from)
                        .find(|r| r.kind.is_marker()),
                )
                .cloned()
                .collect();
            // `limit` bounds the markers only: payload-less records up to
            // and including the next marker.
            assert_eq!(got, expect, "read_markers_from({from})");
        }
    }

    // The full read still returns every payload.
    let full = s
        .read_from(
            Lsn(0),
            ReadLimit {
                max_records: usize::MAX,
                max_bytes: usize::MAX,
            },
        )
        .await
        .unwrap();
    assert_eq!(full, all);
    s.close().await.unwrap();
}

#[tokio::test]
async fn payload_less_records_per_call_are_capped() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = FsOptions::default().sync_mode(SyncMode::None);
    let mut s = open(tmp.path(), opts.clone()).await;
    let total = 100_000u64;
    let lsns: Vec<u64> = (1..=total).collect();
    for b in lsns.chunks(5000) {
        let recs: Vec<Record> = b
            .iter()
            .map(|&l| Record::new(Lsn(l), RecordKind::Data, vec![l as u8; 16]))
            .collect();
        s.append(&recs).await.unwrap();
    }
    let commit = Record::new(
        Lsn(total + 1),
        RecordKind::CheckpointCommit,
        7u64.to_be_bytes().to_vec(),
    );
    s.append(std::slice::from_ref(&commit)).await.unwrap();
    s.close().await.unwrap();

    let mut s = open(tmp.path(), opts).await;
    let unlimited = ReadLimit {
        max_records: usize::MAX,
        max_bytes: usize::MAX,
    };
    let calls = markers_all(&mut s, 1, unlimited).await;
    assert!(calls.len() > 1, "one call returned all {total} records");
    assert!(calls.iter().all(|c| c.len() <= 64 << 10));
    let got: Vec<Record> = calls.into_iter().flatten().collect();
    assert_eq!(got.len() as u64, total + 1);
    for (i, r) in got[..total as usize].iter().enumerate() {
        assert_eq!((r.lsn, r.kind), (Lsn(i as u64 + 1), RecordKind::Data));
        assert!(r.payload.is_empty());
    }
    assert_eq!(got.last(), Some(&commit));
    s.close().await.unwrap();
}
