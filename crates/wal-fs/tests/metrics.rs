//! Feature `metrics` on real files: segment rotations, and the syncs the
//! Wal issues on its own, counted by trigger (interval, bytes), read back
//! through a debugging recorder.
#![cfg(feature = "metrics")]
#![allow(clippy::unwrap_used)]

#[path = "../../wal-core/tests/support/recorder.rs"]
mod recorder;

use std::time::Duration;

use recorder::{counter, histogram, until};
use wal_core::{Wal, WalOptions};
use wal_fs::{FsOptions, FsStore, SyncMode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotations_and_background_syncs_are_counted() {
    recorder::install();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("bytes");
    let options = FsOptions::default()
        .segment_bytes(4096)
        .sync_mode(SyncMode::EveryBytes(1000));
    let (wal, _) = Wal::open(
        FsStore::new(&dir, options),
        WalOptions::default().metrics_name("bytes"),
    )
    .await
    .unwrap();
    let bytes = [("wal", "bytes")];
    for _ in 0..40 {
        wal.append(vec![1u8; 250]).await.unwrap(); // 10 KB: a sync every 4
    }
    let last = wal.last_lsn().unwrap();
    until("the last byte-budget sync", Duration::from_secs(10), || {
        wal.durable_lsn() >= last
    })
    .await;
    assert_eq!(
        counter("wal_syncs_total", &[("wal", "bytes"), ("trigger", "bytes")]),
        10
    );
    assert_eq!(
        counter(
            "wal_syncs_total",
            &[("wal", "bytes"), ("trigger", "interval")]
        ),
        0
    );
    assert_eq!(counter("wal_batches_total", &bytes), 40);
    // 40 frames of about 270 bytes in 4 KiB segments: a rotation every ~14.
    let rotations = counter(
        "wal_fs_segment_rotations_total",
        &[("dir", &dir.display().to_string())],
    );
    assert!((2..=4).contains(&rotations), "{rotations} rotations");
    wal.close().await.unwrap();

    let dir = tmp.path().join("interval");
    let options = FsOptions::default().sync_mode(SyncMode::Interval(Duration::from_millis(5)));
    let (wal, _) = Wal::open(
        FsStore::new(&dir, options),
        WalOptions::default().metrics_name("interval"),
    )
    .await
    .unwrap();
    let lsn = wal.append("x").await.unwrap();
    until("the interval sync", Duration::from_secs(10), || {
        wal.durable_lsn() >= lsn
    })
    .await;
    assert_eq!(
        counter(
            "wal_syncs_total",
            &[("wal", "interval"), ("trigger", "interval")]
        ),
        1
    );
    assert_eq!(
        histogram("wal_sync_seconds", &[("wal", "interval")]).len(),
        1
    );
    assert_eq!(
        counter(
            "wal_fs_segment_rotations_total",
            &[("dir", &dir.display().to_string())]
        ),
        0
    );
    wal.close().await.unwrap();
}
