//! FsStore through the WalStore API, on real files: round trips, rotation,
//! reopen, reads at every bound, trimming, truncation, locking.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;

use bytes::Bytes;
use wal_core::{Error, Lsn, ReadLimit, Record, RecordKind, StoreState, WalStore};
use wal_fs::{FsOptions, FsStore, SyncMode};

use support::{segments, state};

fn rec(lsn: u64) -> Record {
    // Sizes vary so frames cross segment and index boundaries unevenly.
    let len = (lsn * 37 % 300) as usize;
    let payload: Vec<u8> = (0..len).map(|i| (lsn as usize + i) as u8).collect();
    let kind = if lsn.is_multiple_of(11) {
        RecordKind::Checkpoint
    } else {
        RecordKind::Data
    };
    Record::new(Lsn(lsn), kind, payload)
}

fn small() -> FsOptions {
    FsOptions::default()
        .segment_bytes(4096)
        .index_interval_bytes(512)
}

async fn open(dir: &Path, options: FsOptions) -> (FsStore, StoreState) {
    let mut s = FsStore::new(dir, options);
    let state = s.open().await.unwrap();
    (s, state)
}

async fn read_all(s: &mut FsStore, from: u64) -> Vec<Record> {
    let mut out = Vec::new();
    let mut next = Lsn(from);
    loop {
        let chunk = s
            .read_from(
                next,
                ReadLimit {
                    max_records: 7,
                    max_bytes: 1000,
                },
            )
            .await
            .unwrap();
        let Some(last) = chunk.last() else { break };
        next = last.lsn.next();
        out.extend(chunk);
    }
    out
}

/// Appends lsns `range` in batches of `batch` records.
async fn append_range(s: &mut FsStore, range: std::ops::RangeInclusive<u64>, batch: usize) {
    let recs: Vec<Record> = range.map(rec).collect();
    for b in recs.chunks(batch) {
        s.append(b).await.unwrap();
    }
}

#[tokio::test]
async fn round_trip_rotation_and_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let (mut s, st) = open(&dir, small()).await;
    assert_eq!(st, StoreState::default());
    append_range(&mut s, 1..=400, 3).await;
    assert!(segments(&dir).len() > 10, "expected many segments");
    let expect: Vec<Record> = (1..=400).map(rec).collect();
    assert_eq!(read_all(&mut s, 1).await, expect);
    s.close().await.unwrap();

    let (mut s, st) = open(&dir, small()).await;
    assert_eq!(st, state(1, 400));
    assert_eq!(read_all(&mut s, 0).await, expect);
    // Appends continue after a reopen, with gaps allowed.
    s.append(&[rec(405), rec(406)]).await.unwrap();
    s.close().await.unwrap();
    let (mut s, st) = open(&dir, small()).await;
    assert_eq!(st, state(1, 406));
    assert_eq!(read_all(&mut s, 401).await, vec![rec(405), rec(406)]);
}

#[tokio::test]
async fn read_from_every_bound() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut s, _) = open(tmp.path(), small()).await;
    // Lsns 10, 12, 14, ... 400: gaps everywhere.
    let lsns: Vec<u64> = (5..=200).map(|i| i * 2).collect();
    for b in lsns.chunks(4) {
        let recs: Vec<Record> = b.iter().map(|&l| rec(l)).collect();
        s.append(&recs).await.unwrap();
    }
    let one = ReadLimit {
        max_records: 1,
        max_bytes: usize::MAX,
    };
    for from in 0..=405u64 {
        let got = s.read_from(Lsn(from), one).await.unwrap();
        let want: Vec<Record> = lsns
            .iter()
            .find(|&&l| l >= from)
            .map(|&l| rec(l))
            .into_iter()
            .collect();
        assert_eq!(got, want, "read_from({from})");
    }
    // Limits: records, and bytes (at least one record even if over).
    let limit = ReadLimit {
        max_records: 5,
        max_bytes: usize::MAX,
    };
    assert_eq!(s.read_from(Lsn(100), limit).await.unwrap().len(), 5);
    let limit = ReadLimit {
        max_records: 100,
        max_bytes: 1,
    };
    let got = s.read_from(Lsn(101), limit).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].lsn, Lsn(102));
    let limit = ReadLimit {
        max_records: 1000,
        max_bytes: 2000,
    };
    let got = s.read_from(Lsn(10), limit).await.unwrap();
    let bytes: usize = got.iter().map(|r| r.payload.len()).sum();
    let before_last = bytes - got.last().unwrap().payload.len();
    assert!(
        before_last < 2000 && bytes >= 2000,
        "stops once bytes reach the limit"
    );
}

#[tokio::test]
async fn remove_before_deletes_whole_segments_only() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut s, _) = open(tmp.path(), small()).await;
    append_range(&mut s, 1..=300, 5).await;
    let before = segments(tmp.path()).len();
    let st = s.remove_before(Lsn(150)).await.unwrap();
    let first = st.first_lsn.unwrap();
    assert!(first <= Lsn(150) && first > Lsn(1), "first is now {first}");
    assert_eq!(st.last_lsn, Some(Lsn(300)));
    assert!(segments(tmp.path()).len() < before);
    assert_eq!(
        read_all(&mut s, 0).await,
        (first.get()..=300).map(rec).collect::<Vec<_>>()
    );
    // Never the active segment, even when asked to remove everything.
    let st = s.remove_before(Lsn(10_000)).await.unwrap();
    assert_eq!(segments(tmp.path()).len(), 1);
    assert_eq!(st.last_lsn, Some(Lsn(300)));
    assert!(!read_all(&mut s, 0).await.is_empty());
    s.close().await.unwrap();
    let (mut s, st2) = open(tmp.path(), small()).await;
    assert_eq!(st2, st);
    assert_eq!(read_all(&mut s, 0).await.last(), Some(&rec(300)));
}

#[tokio::test]
async fn truncate_after_across_segments_and_inside_a_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (mut s, _) = open(dir, small()).await;
    append_range(&mut s, 1..=300, 10).await;
    let n = segments(dir).len();
    // Inside a batch (batches are 1..=10, 11..=20, ...), several segments
    // back; the high-water marker ends the log in the same rewrite.
    let st = s.truncate_after(Lsn(155), &marker(301, 155)).await.unwrap();
    assert_eq!(st, state(1, 301));
    assert!(segments(dir).len() < n);
    let mut want: Vec<Record> = (1..=155).map(rec).collect();
    want.push(marker(301, 155));
    assert_eq!(read_all(&mut s, 0).await, want);
    // New appends land after the marker; the cut lsns are gone for good.
    s.append(&[rec(302), rec(303)]).await.unwrap();
    s.close().await.unwrap();
    let (mut s, st) = open(dir, small()).await;
    assert_eq!(st, state(1, 303), "the marker survives a reopen");
    want.extend([rec(302), rec(303)]);
    assert_eq!(read_all(&mut s, 0).await, want);
    // At a batch end; at the last record (nothing cut, only the marker);
    // and down to nothing (only the marker is left).
    assert_eq!(
        s.truncate_after(Lsn(150), &marker(304, 150)).await.unwrap(),
        state(1, 304)
    );
    assert_eq!(
        s.truncate_after(Lsn(304), &marker(305, 304)).await.unwrap(),
        state(1, 305)
    );
    assert_eq!(
        s.truncate_after(Lsn(0), &marker(306, 0)).await.unwrap(),
        state(306, 306)
    );
    s.append(&[rec(500)]).await.unwrap();
    drop(s);
    let (mut s, st) = open(dir, small()).await;
    assert_eq!(st, state(306, 500));
    assert_eq!(read_all(&mut s, 0).await, vec![marker(306, 0), rec(500)]);
}

#[tokio::test]
async fn second_opener_is_locked_and_drop_releases() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut a, _) = open(tmp.path(), small()).await;
    a.append(&[rec(1)]).await.unwrap();
    let mut b = FsStore::new(tmp.path(), small());
    match b.open().await {
        Err(Error::Locked { holder }) => {
            assert!(
                holder.contains(&format!("pid {}", std::process::id())),
                "{holder}"
            );
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    // The first owner is unaffected.
    a.append(&[rec(2)]).await.unwrap();
    // A crash: dropped without close. The lock goes with it.
    drop(a);
    let (mut c, st) = open(tmp.path(), small()).await;
    assert_eq!(st, state(1, 2));
    assert_eq!(read_all(&mut c, 0).await, vec![rec(1), rec(2)]);
    c.close().await.unwrap();
    // And close releases it too.
    let (_d, _) = open(tmp.path(), small()).await;
}

#[tokio::test]
async fn bad_appends_change_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = small().max_entry_bytes(100).max_batch_bytes(150);
    let (mut s, _) = open(tmp.path(), opts.clone()).await;
    s.append(&[Record::new(Lsn(5), RecordKind::Data, &b"x"[..])])
        .await
        .unwrap();
    let big = Record::new(Lsn(6), RecordKind::Data, vec![0u8; 101]);
    assert!(matches!(
        s.append(&[big]).await,
        Err(Error::EntryTooLarge {
            size: 101,
            max: 100
        })
    ));
    let r = |l: u64| Record::new(Lsn(l), RecordKind::Data, vec![1u8; 80]);
    assert!(matches!(
        s.append(&[r(6), r(7)]).await,
        Err(Error::EntryTooLarge {
            size: 160,
            max: 150
        })
    ));
    assert!(matches!(
        s.append(&[r(5)]).await,
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        s.append(&[r(8), r(7)]).await,
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(s.max_payload_bytes(), 100);
    assert_eq!(s.max_append_bytes(), 150);
    // Still usable.
    s.append(&[r(6)]).await.unwrap();
    s.close().await.unwrap();
    let (mut s, st) = open(tmp.path(), opts).await;
    assert_eq!(st, state(5, 6));
    assert_eq!(read_all(&mut s, 0).await.len(), 2);
}

#[tokio::test]
async fn big_batch_gets_a_segment_of_its_own() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut s, _) = open(tmp.path(), small()).await;
    s.append(&[rec(1)]).await.unwrap();
    let big: Vec<Record> = (2..=6)
        .map(|l| Record::new(Lsn(l), RecordKind::Data, Bytes::from(vec![l as u8; 3000])))
        .collect();
    s.append(&big).await.unwrap();
    s.append(&[rec(7)]).await.unwrap();
    assert_eq!(segments(tmp.path()).len(), 3);
    drop(s);
    let (mut s, st) = open(tmp.path(), small()).await;
    assert_eq!(st, state(1, 7));
    let got = read_all(&mut s, 0).await;
    assert_eq!(got.len(), 7);
    assert_eq!(got[1..6], big[..]);
}

#[tokio::test]
async fn sync_mode_none_syncs_on_demand() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = small().sync_mode(SyncMode::None).preallocate(false);
    let (mut s, _) = open(tmp.path(), opts.clone()).await;
    append_range(&mut s, 1..=50, 4).await;
    s.sync().await.unwrap();
    append_range(&mut s, 51..=60, 4).await;
    s.close().await.unwrap();
    let (mut s, st) = open(tmp.path(), opts).await;
    assert_eq!(st, state(1, 60));
    assert_eq!(
        read_all(&mut s, 0).await,
        (1..=60).map(rec).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn unknown_files_are_ignored_and_tmp_leftovers_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("README"), "not a log").unwrap();
    std::fs::write(dir.join("notes.txt"), "").unwrap();
    std::fs::create_dir(dir.join("sub")).unwrap();
    std::fs::write(dir.join("00000000000000000009.wal.tmp"), "half made").unwrap();
    let (mut s, st) = open(dir, small()).await;
    assert_eq!(st, StoreState::default());
    assert!(!dir.join("00000000000000000009.wal.tmp").exists());
    s.append(&[rec(1)]).await.unwrap();
    s.close().await.unwrap();
    assert!(dir.join("README").exists());
}

#[tokio::test]
async fn store_is_usable_through_the_wal() {
    use futures::StreamExt;
    use wal_core::{Wal, WalOptions};
    let tmp = tempfile::tempdir().unwrap();
    let store = FsStore::new(tmp.path(), small());
    let (wal, _) = Wal::open(store, WalOptions::default()).await.unwrap();
    let mut done = Vec::new();
    for i in 0..200u32 {
        done.push(wal.submit(i.to_le_bytes().to_vec()).await.unwrap().1);
    }
    for d in done {
        d.await.unwrap();
    }
    wal.close().await.unwrap();
    let (wal, rec) = Wal::open(FsStore::new(tmp.path(), small()), WalOptions::default())
        .await
        .unwrap();
    let got: Vec<u32> = rec
        .map(|e| u32::from_le_bytes(e.unwrap().payload[..].try_into().unwrap()))
        .collect()
        .await;
    assert_eq!(got, (0..200).collect::<Vec<_>>());
    wal.close().await.unwrap();
}

/// The core's `Truncated` high-water marker at `lsn` for a cut after `cut`.
fn marker(lsn: u64, cut: u64) -> Record {
    Record::new(Lsn(lsn), RecordKind::Truncated, cut.to_be_bytes().to_vec())
}
