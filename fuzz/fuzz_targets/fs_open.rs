//! Opening a directory of arbitrary segment files with the real store and
//! the lock-free verifier, then reading everything back. Segments are either
//! built by the crate's own encoder (checksums hold, so the structural checks
//! behind them are reached) and then damaged, or raw bytes.
#![no_main]

use std::{path::Path, sync::OnceLock};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use wal_core::{Lsn, ReadLimit, Record, RecordKind, WalStore};
use wal_fs::{fuzzing, inspect, FsOptions, FsStore};

#[derive(Arbitrary, Debug)]
enum Segment {
    Raw {
        first_lsn: u8,
        bytes: Vec<u8>,
    },
    Built {
        id: u64,
        first_lsn: u8,
        prev_last_lsn: u8,
        frames: Vec<Frame>,
        /// Byte flips: (offset, xor) applied after encoding.
        flips: Vec<(u16, u8)>,
        /// Cut the file to this many bytes (if shorter).
        cut: Option<u16>,
    },
}

#[derive(Arbitrary, Debug)]
struct Frame {
    lsn: u8,
    kind: u8,
    payload: Vec<u8>,
    batch_end: bool,
    synced_to: u16,
}

fn kind(k: u8) -> RecordKind {
    match k % 6 {
        0 => RecordKind::Data,
        1 => RecordKind::Checkpoint,
        2 => RecordKind::CheckpointBegin,
        3 => RecordKind::CheckpointCommit,
        4 => RecordKind::CheckpointAbort,
        _ => RecordKind::Truncated,
    }
}

fn write_segments(dir: &Path, segments: Vec<Segment>) {
    for seg in segments.into_iter().take(4) {
        let (first, bytes) = match seg {
            Segment::Raw { first_lsn, bytes } => (first_lsn, bytes),
            Segment::Built {
                id,
                first_lsn,
                prev_last_lsn,
                frames,
                flips,
                cut,
            } => {
                let frames: Vec<_> = frames
                    .into_iter()
                    .take(64)
                    .map(|f| {
                        let r = Record::new(Lsn(f.lsn.into()), kind(f.kind), f.payload);
                        (r, f.batch_end, u64::from(f.synced_to))
                    })
                    .collect();
                let mut b = fuzzing::segment_bytes(
                    id,
                    Lsn(first_lsn.into()),
                    Lsn(prev_last_lsn.into()),
                    &frames,
                );
                for (at, x) in flips {
                    if let Some(byte) = b.get_mut(usize::from(at)) {
                        *byte ^= x;
                    }
                }
                if let Some(c) = cut {
                    b.truncate(usize::from(c));
                }
                (first_lsn, b)
            }
        };
        let name = fuzzing::segment_file_name(Lsn(first.into()));
        std::fs::write(dir.join(name), bytes).expect("write segment");
    }
}

fn runtime_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    // tmpfs when there is one: the target is about parsing, not the disk.
    DIR.get_or_init(|| {
        let base = Path::new("/dev/shm");
        if base.is_dir() {
            tempfile::tempdir_in(base)
        } else {
            tempfile::tempdir()
        }
        .expect("temp dir")
    })
    .path()
}

fuzz_target!(|segments: Vec<Segment>| {
    let dir = tempfile::tempdir_in(runtime_dir()).expect("temp dir");
    write_segments(dir.path(), segments);

    // The lock-free verifier must not panic on anything.
    let _ = inspect::verify(dir.path(), &mut |_| {});

    let options = FsOptions::default()
        .segment_bytes(64 << 10)
        .preallocate(false);
    let mut store = FsStore::new(dir.path(), options);
    futures::executor::block_on(async {
        let Ok(state) = store.open().await else {
            return;
        };
        // Everything an open accepted reads back, in order, without error.
        let limit = ReadLimit {
            max_records: 16,
            max_bytes: 1 << 16,
        };
        let mut next = state.first_lsn.unwrap_or(Lsn(1));
        let mut seen = 0u64;
        loop {
            let batch = store
                .read_from(next, limit)
                .await
                .expect("read what open accepted");
            let Some(last) = batch.last() else { break };
            assert!(batch.windows(2).all(|w| w[0].lsn < w[1].lsn));
            assert!(batch[0].lsn >= next);
            next = Lsn(last.lsn.get() + 1);
            seen += batch.len() as u64;
            assert!(seen <= 4 * 64, "more records than were written");
        }
        if seen > 0 {
            let last = state
                .last_lsn
                .expect("records read from a log open called empty");
            assert!(
                next.get() - 1 <= last.get(),
                "read past the last Lsn open reported"
            );
        }
        let _ = store
            .read_markers_from(state.first_lsn.unwrap_or(Lsn(1)), limit)
            .await;
        let _ = store.close().await;
    });
});
