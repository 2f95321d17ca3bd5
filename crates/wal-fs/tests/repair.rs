//! `wal_fs::inspect::repair` cuts a damaged log and keeps its high-water
//! mark, all under the directory lock: after a repair, the next Lsn is above
//! every Lsn that was ever in the directory, whatever was damaged (a
//! segment header, a frame mid-segment, a middle segment with later ones
//! present), and a crash at any step of the repair leaves a log that opens
//! or that a second repair fixes, never one that reuses a cut Lsn. Real
//! files, real fsync.
//!
//! Were failing before fsgate: the repair wrote no marker itself (walctl
//! appended one after releasing the lock, and none when the damaged
//! segment's header was bad), so the next writer reused cut Lsns.
#![allow(clippy::unwrap_used)]

mod support;

use std::{
    fs::{File, OpenOptions},
    io,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use futures::StreamExt;
use wal_core::{Error, Lsn, Wal, WalOptions};
use wal_fs::{
    inspect::{repair, repair_with, verify, RepairAction},
    FileIo, FsOptions, FsStore, StdFileIo,
};

use support::{flip, segments, write_log};

const HEADER: u64 = 48;
/// A frame of [`support::rec`]: 32 + 100 bytes.
const FRAME: u64 = 136;
/// 7 frames per segment: Lsns 1-7, 8-14, ..., 36-40 for 40 records.
fn small() -> FsOptions {
    FsOptions::default().segment_bytes(1024)
}

fn name_lsn(path: &Path) -> u64 {
    path.file_stem().unwrap().to_str().unwrap().parse().unwrap()
}

/// Opens the log with a Wal, returns the Lsns recovered and the Lsn the
/// next append gets.
async fn reopen_and_append(dir: &Path) -> (Vec<u64>, u64) {
    let (wal, mut rec) = Wal::open(
        FsStore::new(dir, FsOptions::default()),
        WalOptions::default(),
    )
    .await
    .unwrap();
    let mut lsns = Vec::new();
    while let Some(e) = rec.next().await {
        lsns.push(e.unwrap().lsn.get());
    }
    drop(rec);
    let next = wal.append(b"after repair".to_vec()).await.unwrap().get();
    wal.close().await.unwrap();
    (lsns, next)
}

fn write_at(path: &Path, offset: u64, bytes: &[u8]) {
    let f = OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, offset).unwrap();
}

/// The last segment's header is damaged three ways: its checksum (the id
/// survives, so its frames still check out), the whole header zeroed (the
/// id is lost: its frame headers count, unchecked), and its whole first
/// sector zeroed (the first frames are gone too). Every time the segment
/// is cut whole and the next Lsn is above 40.
#[tokio::test]
async fn bad_header_on_the_last_segment() {
    for (what, offset, len) in [
        ("header checksum", 44, 1),
        ("header zeroed", 0, HEADER as usize),
        ("first sector zeroed", 0, 512),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        write_log(tmp.path(), small(), 40).await;
        let last = segments(tmp.path()).pop().unwrap();
        let first_of_last = name_lsn(&last);
        assert!(
            first_of_last < 40,
            "{what}: the last segment holds one record"
        );
        if len == 1 {
            flip(&last, offset);
        } else {
            write_at(&last, offset, &vec![0u8; len]);
        }
        let bytes = std::fs::metadata(&last).unwrap().len();
        let plan = repair(tmp.path(), true).unwrap();
        assert!(plan.applied, "{what}");
        assert_eq!(plan.keep_last_lsn, Some(Lsn(first_of_last - 1)), "{what}");
        assert_eq!(
            plan.actions,
            vec![RepairAction::Delete {
                path: last.clone(),
                bytes
            }],
            "{what}"
        );
        assert_eq!(plan.high_water, Some(Lsn(40)), "{what}");
        assert_eq!(plan.marker_lsn, Some(Lsn(41)), "{what}");
        let seg = plan.report.segments.last().unwrap();
        assert_eq!(seg.max_lsn, Some(Lsn(40)), "{what}");
        assert_eq!(seg.max_lsn_unchecked, len > 1, "{what}");
        let (lsns, next) = reopen_and_append(tmp.path()).await;
        assert_eq!(
            lsns,
            (1..first_of_last).collect::<Vec<_>>(),
            "{what}: the kept records"
        );
        assert!(next > 40, "{what}: next lsn {next} reuses a cut lsn");
        assert!(
            verify(tmp.path(), &mut |_| {}).unwrap().is_clean(),
            "{what}"
        );
    }
}

/// One segment; a frame in its middle is damaged and valid frames follow
/// (open refuses it as corruption). The cut keeps the records before it;
/// the marker goes above the last record after it.
#[tokio::test]
async fn bad_frame_mid_segment() {
    let tmp = tempfile::tempdir().unwrap();
    write_log(tmp.path(), FsOptions::default(), 40).await;
    assert_eq!(segments(tmp.path()).len(), 1);
    let seg = segments(tmp.path()).pop().unwrap();
    flip(&seg, HEADER + 19 * FRAME + 40); // the payload of lsn 20
    assert!(matches!(
        FsStore::new(tmp.path(), FsOptions::default())
            .open_for_test()
            .await,
        Err(Error::Corrupt { .. })
    ));
    let plan = repair(tmp.path(), true).unwrap();
    assert_eq!(plan.keep_last_lsn, Some(Lsn(19)));
    assert_eq!(plan.lost_records, 20, "lsns 21..=40 were readable");
    assert_eq!(plan.high_water, Some(Lsn(40)));
    let (lsns, next) = reopen_and_append(tmp.path()).await;
    assert_eq!(lsns, (1..=19).collect::<Vec<_>>());
    assert!(next > 40, "next lsn {next} reuses a cut lsn");
}

/// Damage in a middle segment with later segments present: a bad frame,
/// and a bad header. The later segments are deleted; their names and
/// frames count.
#[tokio::test]
async fn damage_in_a_middle_segment_with_later_segments() {
    for header in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        write_log(tmp.path(), small(), 40).await;
        let segs = segments(tmp.path());
        assert!(segs.len() >= 5, "{segs:?}");
        let mid = &segs[2];
        let first_of_mid = name_lsn(mid);
        if header {
            write_at(mid, 0, &[0u8; HEADER as usize]);
        } else {
            flip(mid, HEADER + FRAME + 40); // its second record
        }
        let plan = repair(tmp.path(), true).unwrap();
        let kept = if header {
            first_of_mid - 1
        } else {
            first_of_mid
        };
        assert_eq!(plan.keep_last_lsn, Some(Lsn(kept)), "header {header}");
        let deleted = plan
            .actions
            .iter()
            .filter(|a| matches!(a, RepairAction::Delete { .. }))
            .count();
        assert_eq!(
            deleted,
            segs.len() - 3 + usize::from(header),
            "header {header}: {:?}",
            plan.actions
        );
        assert_eq!(plan.high_water, Some(Lsn(40)), "header {header}");
        let (lsns, next) = reopen_and_append(tmp.path()).await;
        assert_eq!(lsns, (1..=kept).collect::<Vec<_>>(), "header {header}");
        assert!(
            next > 40,
            "header {header}: next lsn {next} reuses a cut lsn"
        );
    }
}

/// A writer holds the log (and damage appears behind its back): repair
/// refuses with `Locked`, naming the holder, and changes nothing. Once the
/// writer is gone it repairs.
#[tokio::test]
async fn repair_while_a_writer_holds_the_lock_fails_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    write_log(tmp.path(), small(), 20).await;
    let (wal, rec) = Wal::open(FsStore::new(tmp.path(), small()), WalOptions::default())
        .await
        .unwrap();
    drop(rec);
    let segs = segments(tmp.path());
    flip(&segs[1], HEADER + 40);
    let before = snapshot(tmp.path());
    match repair(tmp.path(), true) {
        Err(Error::Locked { holder }) => assert!(
            holder.contains(&std::process::id().to_string()),
            "the error names no holder: {holder}"
        ),
        other => panic!("expected Locked, got {other:?}"),
    }
    assert_eq!(
        snapshot(tmp.path()),
        before,
        "a refused repair changed files"
    );
    // A dry run works beside the writer and says what it would do.
    let plan = repair(tmp.path(), false).unwrap();
    assert!(!plan.applied && !plan.is_noop());
    assert_eq!(plan.marker_lsn, Some(Lsn(21)));
    wal.close().await.unwrap();
    let plan = repair(tmp.path(), true).unwrap();
    assert!(plan.applied);
    let (_, next) = reopen_and_append(tmp.path()).await;
    assert!(next > 20, "next lsn {next}");
}

/// Every file of `dir` and its bytes.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    v.sort();
    v
}

/// The real file layer until operation `fail_at`; that one and every later
/// one fail (a crash of the repairing process, as far as the files go).
#[derive(Debug)]
struct CrashAt {
    ops: AtomicU64,
    fail_at: u64,
}

impl CrashAt {
    fn step(&self) -> io::Result<()> {
        if self.ops.fetch_add(1, Ordering::SeqCst) >= self.fail_at {
            return Err(io::Error::other("crash (injected)"));
        }
        Ok(())
    }
}

impl FileIo for CrashAt {
    fn write_all_at(&self, file: &File, buf: &[u8], offset: u64) -> io::Result<()> {
        self.step()?;
        StdFileIo.write_all_at(file, buf, offset)
    }
    fn sync_data(&self, file: &File) -> io::Result<()> {
        self.step()?;
        StdFileIo.sync_data(file)
    }
    fn set_len(&self, file: &File, len: u64) -> io::Result<()> {
        self.step()?;
        StdFileIo.set_len(file, len)
    }
    fn allocate(&self, file: &File, len: u64) -> io::Result<()> {
        self.step()?;
        StdFileIo.allocate(file, len)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.step()?;
        StdFileIo.sync_dir(dir)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.step()?;
        StdFileIo.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.step()?;
        StdFileIo.remove_file(path)
    }
    fn drop_page_cache(&self, file: &File) -> io::Result<()> {
        self.step()?;
        StdFileIo.drop_page_cache(file)
    }
}

/// A repair that crashes at its file operation K, for every K: the log
/// then either opens (open finishes the repair's intent) or a second
/// repair fixes it; either way the kept records are there and the next Lsn
/// is above every Lsn that was in the directory.
#[tokio::test]
async fn a_repair_interrupted_at_any_step_is_finished_by_open_or_a_second_repair() {
    let mut k = 0;
    loop {
        let tmp = tempfile::tempdir().unwrap();
        write_log(tmp.path(), small(), 40).await;
        let segs = segments(tmp.path());
        flip(&segs[2], HEADER + FRAME + 40);
        let kept = name_lsn(&segs[2]);
        let io = Arc::new(CrashAt {
            ops: AtomicU64::new(0),
            fail_at: k,
        });
        let first = repair_with(tmp.path(), true, io.clone());
        let done = first.is_ok();
        let mut store = FsStore::new(tmp.path(), FsOptions::default());
        match store.open_for_test().await {
            Ok(()) => {}
            Err(Error::Corrupt { .. }) => {
                repair(tmp.path(), true).unwrap_or_else(|e| panic!("K={k}: second repair: {e}"));
            }
            Err(e) => panic!("K={k}: open after an interrupted repair: {e}"),
        }
        let (lsns, next) = reopen_and_append(tmp.path()).await;
        assert_eq!(lsns, (1..=kept).collect::<Vec<_>>(), "K={k}");
        assert!(next > 40, "K={k}: next lsn {next} reuses a cut lsn");
        if done {
            assert!(k > 5, "the repair did only {k} file operations");
            break;
        }
        k += 1;
    }
}

/// Opens the store and closes it again: `Ok` if the log opens.
trait OpenForTest {
    async fn open_for_test(&mut self) -> Result<(), Error>;
}

impl OpenForTest for FsStore {
    async fn open_for_test(&mut self) -> Result<(), Error> {
        use wal_core::WalStore;
        self.open().await?;
        self.close().await
    }
}
