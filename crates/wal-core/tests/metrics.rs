//! Feature `metrics`: what a Wal reports, read back through metrics-util's
//! debugging recorder (installed once for this test process). Two Wals with
//! different `metrics_name`s run side by side, so each check also proves
//! that the `wal` label keeps them apart.
#![cfg(feature = "metrics")]
#![allow(clippy::unwrap_used)]

#[path = "support/recorder.rs"]
mod recorder;

use recorder::{counter, gauge, histogram};
use wal_core::{Error, Lsn, MemFault, MemStore, Wal, WalOptions};

#[tokio::test]
async fn a_wal_reports_batches_syncs_checkpoints_trims_truncates_and_poisoning() {
    recorder::install();
    let store = MemStore::new();
    let faults = store.clone();
    let (wal, _) = Wal::open(store, WalOptions::default().metrics_name("orders"))
        .await
        .unwrap();
    // A second Wal in the same process: its appends must not count for "orders".
    let (other, _) = Wal::open(MemStore::new(), WalOptions::default().metrics_name("other"))
        .await
        .unwrap();
    other.append("x").await.unwrap();

    let orders = [("wal", "orders")];
    for i in 0..10 {
        wal.append(format!("entry {i}")).await.unwrap(); // 7 bytes each
    }
    wal.append_batch(["ab", "cd", "ef"]).await.unwrap();
    assert_eq!(counter("wal_batches_total", &orders), 11);
    assert_eq!(counter("wal_records_total", &orders), 13);
    assert_eq!(counter("wal_bytes_total", &orders), 10 * 7 + 6);
    assert_eq!(counter("wal_records_total", &[("wal", "other")]), 1);
    let sizes = histogram("wal_batch_records", &orders);
    assert_eq!(sizes.len(), 11);
    assert!(sizes.contains(&3.0), "{sizes:?}");
    let latencies = histogram("wal_append_seconds", &orders);
    assert_eq!(latencies.len(), 11);
    assert!(latencies.iter().all(|s| *s >= 0.0 && *s < 60.0));
    // Every answered append gave its queue budget back.
    assert_eq!(gauge("wal_queued_bytes", &orders), 0.0);

    wal.sync().await.unwrap();
    assert_eq!(
        counter(
            "wal_syncs_total",
            &[("wal", "orders"), ("trigger", "explicit")]
        ),
        1
    );
    assert_eq!(histogram("wal_sync_seconds", &orders).len(), 1);

    let mut cp = wal.begin_checkpoint().await.unwrap();
    cp.append("snapshot").await.unwrap();
    cp.commit().await.unwrap();
    let cp = wal.begin_checkpoint().await.unwrap();
    cp.abort().await.unwrap();
    let cp = wal.begin_checkpoint().await.unwrap();
    drop(cp); // dropping aborts too
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while counter("wal_checkpoint_aborts_total", &orders) < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the dropped checkpoint's abort was never counted"
        );
        tokio::task::yield_now().await;
    }
    assert_eq!(counter("wal_checkpoint_commits_total", &orders), 1);
    assert_eq!(counter("wal_checkpoint_aborts_total", &orders), 2);

    let last = wal.append("after").await.unwrap();
    wal.truncate_after(last).await.unwrap();
    assert_eq!(counter("wal_truncates_total", &orders), 1);
    wal.trim_before(Lsn(3)).await.unwrap();
    assert_eq!(counter("wal_trims_total", &orders), 1);
    assert_eq!(counter("wal_poisoned_total", &orders), 0);

    faults.inject(MemFault::FailAppend(1));
    assert!(wal.append("fails").await.is_err());
    assert!(matches!(
        wal.append("after").await,
        Err(Error::Poisoned { .. })
    ));
    assert_eq!(
        counter("wal_poisoned_total", &[("wal", "orders"), ("cause", "io")]),
        1,
        "one poisoning, counted once, by its cause"
    );
    assert_eq!(counter("wal_poisoned_total", &[("wal", "other")]), 0);
    wal.close().await.unwrap();
    other.close().await.unwrap();
}
