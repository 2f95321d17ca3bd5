//! The read-only tools API (`wal_fs::inspect`): verify reports every
//! problem with file and offset and agrees with open; the reader works
//! without the lock and follows a growing log; repair cuts what open would
//! refuse or cut, and only with the lock.
#![allow(clippy::unwrap_used)]

mod support;

use std::{fs::OpenOptions, os::unix::fs::FileExt, path::Path};

use wal_core::{Error, Lsn, WalStore};
use wal_fs::{
    inspect::{repair, verify, LogReader, ProblemKind, RepairAction, ScanEvent},
    FsOptions, FsStore,
};

use support::{flip, rec, segments, write_log};

const HEADER: u64 = 48;
const FRAME: u64 = 136; // 32 + 100

fn reader_all(dir: &Path, from: u64) -> Vec<u64> {
    let mut r = LogReader::new(dir, Lsn(from));
    let mut v = Vec::new();
    while let Some(rec) = r.next_record().unwrap() {
        v.push(rec.lsn.get());
    }
    v
}

#[tokio::test]
async fn clean_log_verifies_and_reports_every_record() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = FsOptions::default().segment_bytes(1024);
    write_log(tmp.path(), opts, 40).await;
    let mut seen = Vec::new();
    let report = verify(tmp.path(), &mut |ev| {
        if let ScanEvent::Record(r) = ev {
            seen.push(r.lsn.get());
        }
    })
    .unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    assert_eq!(seen, (1..=40).collect::<Vec<_>>());
    assert_eq!(report.first_lsn(), Some(Lsn(1)));
    assert_eq!(report.last_lsn(), Some(Lsn(40)));
    assert!(report.segments.len() > 3);
    assert_eq!(report.segments.iter().map(|s| s.records).sum::<u64>(), 40);
}

#[tokio::test]
async fn verify_reports_every_damaged_frame_and_open_agrees_on_the_first() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = FsOptions::default().segment_bytes(1 << 20);
    write_log(tmp.path(), opts.clone(), 20).await;
    let seg = &segments(tmp.path())[0];
    flip(seg, HEADER + 3 * FRAME + 40);
    flip(seg, HEADER + 9 * FRAME + 40);
    let report = verify(tmp.path(), &mut |_| {}).unwrap();
    let offsets: Vec<_> = report.problems.iter().map(|p| (p.kind, p.offset)).collect();
    assert_eq!(
        offsets,
        vec![
            (ProblemKind::Corrupt, HEADER + 3 * FRAME),
            (ProblemKind::Corrupt, HEADER + 9 * FRAME)
        ]
    );
    assert!(report.problems[0].why.contains("checksum mismatch"));
    // Records after the damage are still found (18 of 20).
    assert_eq!(report.segments[0].records, 18);
    assert_eq!(report.segments[0].valid_records, 3);
    let mut s = FsStore::new(tmp.path(), opts);
    match s.open().await {
        Err(Error::Corrupt { location, .. }) => assert!(
            location
                .to_string()
                .ends_with(&format!("at offset {}", HEADER + 3 * FRAME)),
            "{location}"
        ),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[tokio::test]
async fn torn_tail_is_reported_and_repaired_like_open_would() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = FsOptions::default();
    write_log(tmp.path(), opts.clone(), 5).await;
    let seg = segments(tmp.path()).pop().unwrap();
    let len = std::fs::metadata(&seg).unwrap().len();
    let f = OpenOptions::new().write(true).open(&seg).unwrap();
    f.write_all_at(&[7u8; 20], len).unwrap();
    let report = verify(tmp.path(), &mut |_| {}).unwrap();
    assert_eq!(report.problems.len(), 1);
    assert_eq!(report.problems[0].kind, ProblemKind::TornTail);
    assert_eq!(report.problems[0].offset, len);
    assert!(!report.has_corruption());

    let plan = repair(tmp.path(), false).unwrap();
    assert!(!plan.applied);
    assert_eq!(
        plan.actions,
        vec![RepairAction::Truncate {
            path: seg.clone(),
            len,
            cut_bytes: 20
        }]
    );
    assert_eq!(plan.lost_records, 0);
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), len + 20);
    let plan = repair(tmp.path(), true).unwrap();
    assert!(plan.applied);
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), len);
    assert!(verify(tmp.path(), &mut |_| {}).unwrap().is_clean());
    assert!(repair(tmp.path(), false).unwrap().is_noop());
}

#[tokio::test]
async fn repair_cuts_mid_log_damage_and_the_log_opens_again() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = FsOptions::default().segment_bytes(1024);
    write_log(tmp.path(), opts.clone(), 40).await;
    let segs = segments(tmp.path());
    flip(&segs[1], HEADER + FRAME + 40); // second record of the second segment
    let first_of_second = segs[1]
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse::<u64>()
        .unwrap();
    let plan = repair(tmp.path(), true).unwrap();
    assert_eq!(plan.keep_last_lsn, Some(Lsn(first_of_second)));
    assert_eq!(plan.lost_records, 40 - first_of_second - 1);
    assert_eq!(plan.high_water, Some(Lsn(40)));
    assert_eq!(plan.marker_lsn, Some(Lsn(41)));
    let mut s = FsStore::new(tmp.path(), opts);
    let st = s.open().await.unwrap();
    // The kept records, then the high-water marker.
    assert_eq!(st.last_lsn, Some(Lsn(41)));
    let kept = s
        .read_from(Lsn(1), wal_core::ReadLimit::default())
        .await
        .unwrap();
    let lsns: Vec<u64> = kept.iter().map(|r| r.lsn.get()).collect();
    let mut want: Vec<u64> = (1..=first_of_second).collect();
    want.push(41);
    assert_eq!(lsns, want);
    s.close().await.unwrap();
}

#[tokio::test]
async fn repair_with_apply_needs_the_lock() {
    let tmp = tempfile::tempdir().unwrap();
    write_log(tmp.path(), FsOptions::default(), 3).await;
    let mut s = FsStore::new(tmp.path(), FsOptions::default());
    s.open().await.unwrap();
    assert!(matches!(
        repair(tmp.path(), true),
        Err(Error::Locked { .. })
    ));
    // A dry run, verify and the reader work next to the writer.
    assert!(repair(tmp.path(), false).unwrap().is_noop());
    assert!(verify(tmp.path(), &mut |_| {}).unwrap().is_clean());
    assert_eq!(reader_all(tmp.path(), 0), vec![1, 2, 3]);
    s.close().await.unwrap();
}

#[tokio::test]
async fn reader_follows_a_live_writer_across_segments() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = FsOptions::default().segment_bytes(1024);
    let mut s = FsStore::new(tmp.path(), opts);
    s.open().await.unwrap();
    let mut reader = LogReader::new(tmp.path(), Lsn(0));
    assert!(reader.next_record().unwrap().is_none());
    let mut got = Vec::new();
    for l in 1..=30u64 {
        // Batches of two records: the reader sees whole batches only.
        if l % 2 == 0 {
            s.append(&[rec(l - 1), rec(l)]).await.unwrap();
            while let Some(r) = reader.next_record().unwrap() {
                got.push(r.lsn.get());
            }
            assert_eq!(got.len() as u64, l, "after appending up to {l}");
        }
    }
    assert_eq!(got, (1..=30).collect::<Vec<_>>());
    s.close().await.unwrap();
    // From the middle, over segment boundaries.
    assert_eq!(reader_all(tmp.path(), 17), (17..=30).collect::<Vec<_>>());
}
