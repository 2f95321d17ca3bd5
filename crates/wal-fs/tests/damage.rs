//! Damaged logs: what open cuts (a torn tail) and what it refuses (anything
//! else), naming the file and offset.
#![allow(clippy::unwrap_used)]

mod support;

use std::{fs::OpenOptions, os::unix::fs::FileExt, path::Path};

use wal_core::{Error, Location, Lsn, ReadLimit, Record, StoreState, Wal, WalOptions, WalStore};
use wal_fs::{FsOptions, FsStore};

use support::{flip, rec, segments, state, write_log};

const HEADER: u64 = 48;
/// Frame size of a 100-byte payload: 32 + 100 rounded up to 8.
const FRAME: u64 = 136;

fn one_segment() -> FsOptions {
    FsOptions::default().segment_bytes(1 << 20)
}

async fn reopen(dir: &Path, options: FsOptions) -> Result<(FsStore, StoreState), Error> {
    let mut s = FsStore::new(dir, options);
    let st = s.open().await?;
    Ok((s, st))
}

async fn all(s: &mut FsStore) -> Vec<Record> {
    let limit = ReadLimit {
        max_records: usize::MAX,
        max_bytes: usize::MAX,
    };
    s.read_from(Lsn(0), limit).await.unwrap()
}

fn damage(path: &Path, offset: u64, bytes: &[u8]) {
    let f = OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, offset).unwrap();
    f.sync_all().unwrap();
}

fn expect_corrupt(r: Result<(FsStore, StoreState), Error>, path: &Path, offset: u64, why: &str) {
    match r {
        Err(Error::Corrupt {
            location: Location::File { path: p, offset: o },
            why: w,
        }) => {
            assert_eq!((p.as_path(), o), (path, offset), "wrong location ({w})");
            assert!(w.contains(why), "{w:?} does not mention {why:?}");
        }
        Err(e) => panic!("expected Corrupt at {}:{offset}, got {e}", path.display()),
        Ok((_, st)) => panic!(
            "expected Corrupt at {}:{offset}, opened {st:?}",
            path.display()
        ),
    }
}

#[tokio::test]
async fn flipped_byte_mid_log_is_corrupt_naming_file_and_offset() {
    let tmp = tempfile::tempdir().unwrap();
    write_log(tmp.path(), one_segment(), 20).await;
    let seg = &segments(tmp.path())[0];
    let frame5 = HEADER + 5 * FRAME;
    flip(seg, frame5 + 40); // a payload byte of lsn 6
    let r = reopen(tmp.path(), one_segment()).await;
    expect_corrupt(r, seg, frame5, "checksum mismatch");
    // Nothing was cut: restore the byte and everything is there.
    flip(seg, frame5 + 40);
    let (mut s, st) = reopen(tmp.path(), one_segment()).await.unwrap();
    assert_eq!(st, state(1, 20));
    assert_eq!(all(&mut s).await.len(), 20);
}

#[tokio::test]
async fn damage_in_a_sealed_segment_is_corrupt() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = FsOptions::default().segment_bytes(1024);
    write_log(tmp.path(), opts.clone(), 40).await;
    let segs = segments(tmp.path());
    assert!(segs.len() > 3);
    // The last frame of the second segment: only the chain check and the
    // sealed-segment rule can tell it apart from an end.
    let len = std::fs::metadata(&segs[1]).unwrap().len();
    flip(&segs[1], len - FRAME + 10);
    expect_corrupt(
        reopen(tmp.path(), opts.clone()).await,
        &segs[1],
        len - FRAME,
        "",
    );
    flip(&segs[1], len - FRAME + 10);
    // A header byte.
    flip(&segs[2], 17);
    expect_corrupt(reopen(tmp.path(), opts).await, &segs[2], 0, "checksum");
}

#[tokio::test]
async fn zeroed_or_truncated_tail_is_cut() {
    let tmp = tempfile::tempdir().unwrap();
    write_log(tmp.path(), one_segment(), 20).await;
    let seg = segments(tmp.path())[0].clone();
    let last = HEADER + 19 * FRAME;
    damage(&seg, last, &[0u8; FRAME as usize]);
    let (mut s, st) = reopen(tmp.path(), one_segment()).await.unwrap();
    assert_eq!(st, state(1, 19));
    assert_eq!(all(&mut s).await, (1..=19).map(rec).collect::<Vec<_>>());
    // The log goes on from there, and reopens.
    s.append(&[rec(30)]).await.unwrap();
    drop(s);
    let (s, st) = reopen(tmp.path(), one_segment()).await.unwrap();
    assert_eq!(st, state(1, 30));
    drop(s);

    // Truncated in the middle of the last frame (lsn 30, at the old spot).
    let f = OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(last + 50).unwrap();
    drop(f);
    let (mut s2, st) = reopen(tmp.path(), one_segment()).await.unwrap();
    assert_eq!(st, state(1, 19));
    assert_eq!(all(&mut s2).await.len(), 19);
    // Truncated inside the last frame's header.
    drop(s2);
    let f = OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(HEADER + 18 * FRAME + 7).unwrap();
    drop(f);
    let (mut s3, st) = reopen(tmp.path(), one_segment()).await.unwrap();
    assert_eq!(st, state(1, 18));
    assert_eq!(all(&mut s3).await.len(), 18);
}

#[tokio::test]
async fn torn_final_batch_recovers_none_of_it() {
    // Three ways a crash can tear the last batch (lsns 11..=15, one append).
    for case in 0..4 {
        let tmp = tempfile::tempdir().unwrap();
        let opts = one_segment();
        write_log(tmp.path(), opts.clone(), 10).await;
        let (mut s, _) = reopen(tmp.path(), opts.clone()).await.unwrap();
        s.append(&(11..=15).map(rec).collect::<Vec<_>>())
            .await
            .unwrap();
        s.close().await.unwrap();
        let seg = segments(tmp.path())[0].clone();
        let batch = HEADER + 10 * FRAME;
        match case {
            // Only the first 3.5 records landed.
            0 => OpenOptions::new()
                .write(true)
                .open(&seg)
                .unwrap()
                .set_len(batch + 3 * FRAME + 60)
                .unwrap(),
            // Every record but the last (which carries the batch-end flag).
            1 => damage(&seg, batch + 4 * FRAME, &[0u8; FRAME as usize]),
            // A middle record did not land; later ones did.
            2 => damage(&seg, batch + FRAME, &[0u8; FRAME as usize]),
            // Garbage in the middle of the batch.
            _ => flip(&seg, batch + 2 * FRAME + 50),
        }
        let (mut s, st) = reopen(tmp.path(), opts.clone())
            .await
            .unwrap_or_else(|e| panic!("case {case}: {e}"));
        assert_eq!(st, state(1, 10), "case {case}");
        assert_eq!(
            all(&mut s).await,
            (1..=10).map(rec).collect::<Vec<_>>(),
            "case {case}"
        );
        // The cut is durable and the log goes on.
        s.append(&[rec(16)]).await.unwrap();
        drop(s);
        let (_, st) = reopen(tmp.path(), opts).await.unwrap();
        assert_eq!(st, state(1, 16), "case {case}");
    }
}

#[tokio::test]
async fn deleted_middle_segment_is_corrupt() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = FsOptions::default().segment_bytes(1024);
    write_log(tmp.path(), opts.clone(), 40).await;
    let segs = segments(tmp.path());
    assert!(segs.len() > 3);
    std::fs::remove_file(&segs[1]).unwrap();
    expect_corrupt(
        reopen(tmp.path(), opts).await,
        &segs[2],
        32,
        "a segment is missing",
    );
}

#[tokio::test]
async fn a_wal_file_that_is_not_a_segment_is_corrupt() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let bogus = dir.join("00000000000000000001.wal");
    std::fs::write(&bogus, vec![b'x'; 4096]).unwrap();
    expect_corrupt(reopen(dir, one_segment()).await, &bogus, 0, "bad magic");
    std::fs::write(&bogus, b"short").unwrap();
    expect_corrupt(reopen(dir, one_segment()).await, &bogus, 0, "too short");
    std::fs::remove_file(&bogus).unwrap();
    let named = dir.join("my.wal");
    std::fs::write(&named, b"").unwrap();
    expect_corrupt(
        reopen(dir, one_segment()).await,
        &named,
        0,
        "not a segment name",
    );
    std::fs::remove_file(&named).unwrap();
    // A real segment under the wrong name.
    write_log(dir, one_segment(), 3).await;
    let seg = segments(dir)[0].clone();
    let renamed = dir.join("00000000000000000002.wal");
    std::fs::rename(&seg, &renamed).unwrap();
    expect_corrupt(
        reopen(dir, one_segment()).await,
        &renamed,
        24,
        "file name says 2",
    );
}

#[tokio::test]
async fn stale_frames_from_another_segment_never_read_as_valid() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = FsOptions::default().segment_bytes(4096);
    write_log(tmp.path(), opts.clone(), 60).await;
    let segs = segments(tmp.path());
    let last = segs.last().unwrap();
    let (mut s, st) = reopen(tmp.path(), opts.clone()).await.unwrap();
    let want = all(&mut s).await;
    drop(s);
    // Copy frames of the first segment (a perfect stale record, lsn 1..) to
    // the end of the last segment's data, and past it.
    let first = std::fs::read(&segs[0]).unwrap();
    let data_end = std::fs::metadata(last).unwrap().len();
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(last)
        .unwrap();
    // Find the data end: the last segment is preallocated, so scan for it.
    let mut buf = vec![0u8; data_end as usize];
    f.read_exact_at(&mut buf, 0).unwrap();
    let used = buf
        .iter()
        .rposition(|&b| b != 0)
        .map_or(HEADER, |p| (p as u64 + 8) / 8 * 8);
    let stale = &first[HEADER as usize..(HEADER + 3 * FRAME) as usize];
    f.write_all_at(stale, used).unwrap();
    f.write_all_at(stale, used + 5 * FRAME).unwrap();
    drop(f);
    let (mut s, st2) = reopen(tmp.path(), opts).await.unwrap();
    assert_eq!(st2, st);
    assert_eq!(all(&mut s).await, want);
}

/// A lost first segment that held the last committed checkpoint's begin
/// marker is `Corrupt`, not a silently smaller recovery.
#[tokio::test]
async fn missing_segment_with_the_checkpoint_begin_is_corrupt() {
    use futures::StreamExt as _;
    let dir = tempfile::tempdir().unwrap();
    let opts = FsOptions::default().segment_bytes(4096).preallocate(false);
    let store = FsStore::new(dir.path().join("log"), opts.clone());
    let (wal, _) = Wal::open(store, WalOptions::default()).await.unwrap();
    for i in 0..50 {
        wal.append(format!("pre-{i:04}-{}", "x".repeat(100)))
            .await
            .unwrap();
    }
    let mut cp = wal.begin_checkpoint().await.unwrap();
    for i in 0..200 {
        cp.append(format!("state-{i:04}-{}", "y".repeat(100)))
            .await
            .unwrap();
        wal.sync().await.unwrap(); // a batch boundary, so segments can rotate
    }
    cp.commit().await.unwrap();
    wal.append("after").await.unwrap();
    wal.close().await.unwrap();
    let mut segs: Vec<_> = std::fs::read_dir(dir.path().join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    segs.sort();
    assert!(segs.len() > 3, "{segs:?}");
    std::fs::remove_file(&segs[0]).unwrap(); // holds the begin marker
    let store = FsStore::new(dir.path().join("log"), opts);
    match Wal::open(store, WalOptions::default()).await {
        Err(Error::Corrupt { why, .. }) => assert!(why.contains("missing"), "{why}"),
        Err(e) => panic!("expected Corrupt, got {e}"),
        Ok((_wal, rec)) => {
            let n = rec.count().await;
            panic!("opened silently, recovering {n} entries");
        }
    }
}
