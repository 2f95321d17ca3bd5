//! `Wal::durable_lsn` and `Wal::wait_durable` on real files, under a modelled
//! power loss: in `SyncMode::None` the watermark stays where the last sync
//! left it, `wait_durable` syncs, and after a power loss that drops every
//! unsynced write, everything at or below the watermark comes back.
#![allow(clippy::unwrap_used, dead_code)]

#[path = "support/powerloss/mod.rs"]
mod powerloss;

use std::sync::Arc;

use futures::StreamExt;
use powerloss::disk::{CrashModel, PowerLossIo};
use wal_core::{Error, Lsn, Wal, WalOptions};
use wal_fs::{FsOptions, FsStore, SyncMode};

fn options(mode: SyncMode) -> FsOptions {
    FsOptions::default().segment_bytes(64 << 10).sync_mode(mode)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_sync_mode_watermark_is_honest_across_power_loss() {
    let tmp = tempfile::tempdir().unwrap();
    let io = Arc::new(PowerLossIo::new(tmp.path(), None, false));
    let store = FsStore::new(tmp.path(), options(SyncMode::None)).with_file_io(io.clone());
    let (wal, _) = Wal::open(store, WalOptions::default()).await.unwrap();

    let mut lsns = Vec::new();
    for i in 0..20 {
        lsns.push(wal.append(format!("e{i}")).await.unwrap());
    }
    assert_eq!(
        wal.durable_lsn(),
        Lsn::ZERO,
        "nothing was synced: the watermark must not claim durability"
    );
    wal.wait_durable(lsns[9]).await.unwrap();
    let durable = wal.durable_lsn();
    assert!(durable >= lsns[9], "wait_durable returned below its lsn");
    assert!(durable <= lsns[19]);
    for i in 20..30 {
        lsns.push(wal.append(format!("e{i}")).await.unwrap());
    }
    assert_eq!(
        wal.durable_lsn(),
        durable,
        "unsynced appends moved the watermark"
    );
    assert!(matches!(
        wal.wait_durable(lsns[29].next()).await,
        Err(Error::InvalidArgument(_))
    ));

    // Power loss: every write since the last sync is gone.
    io.power_off();
    wal.simulate_crash().await;
    let files = io.rebuild(CrashModel::LoseUnsynced, 0);
    let after = tempfile::tempdir().unwrap();
    for (name, bytes) in &files {
        std::fs::write(after.path().join(name), bytes).unwrap();
    }
    let store = FsStore::new(after.path(), options(SyncMode::None));
    let (wal, rec) = Wal::open(store, WalOptions::default()).await.unwrap();
    let got: Vec<Lsn> = rec.map(|e| e.unwrap().lsn).collect().await;
    let promised: Vec<Lsn> = lsns.iter().copied().filter(|l| *l <= durable).collect();
    assert!(
        got.starts_with(&promised),
        "every entry at or below the watermark ({durable}) must survive: got {got:?}"
    );
    wal.close().await.unwrap();
}

#[tokio::test]
async fn every_batch_watermark_follows_appends_and_close_syncs() {
    let tmp = tempfile::tempdir().unwrap();
    let store = FsStore::new(tmp.path(), options(SyncMode::EveryBatch));
    let (wal, _) = Wal::open(store, WalOptions::default()).await.unwrap();
    let lsn = wal.append("x").await.unwrap();
    assert_eq!(wal.durable_lsn(), lsn);
    wal.wait_durable(lsn).await.unwrap();
    wal.close().await.unwrap();

    let store = FsStore::new(tmp.path(), options(SyncMode::None));
    let (wal, _) = Wal::open(store, WalOptions::default()).await.unwrap();
    let lsn = wal.append("y").await.unwrap();
    assert!(wal.durable_lsn() < lsn);
    wal.close().await.unwrap();
    assert_eq!(wal.durable_lsn(), lsn, "close syncs what was written");
}

/// Waits (with a deadline) until the Wal's durable watermark reaches `lsn`
/// without anyone asking for a sync: the mode's own sync must get there.
async fn wait_watermark(wal: &Wal, lsn: Lsn, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while wal.durable_lsn() < lsn {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: durable_lsn stayed at {} below {lsn} for 10 s",
            wal.durable_lsn()
        );
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
}

/// Power loss after the watermark moved: everything at or below it is back.
async fn power_loss_keeps_watermark(io: &PowerLossIo, wal: Wal, lsns: &[Lsn], mode: SyncMode) {
    let durable = wal.durable_lsn();
    io.power_off();
    wal.simulate_crash().await;
    let after = tempfile::tempdir().unwrap();
    for (name, bytes) in &io.rebuild(CrashModel::LoseUnsynced, 0) {
        std::fs::write(after.path().join(name), bytes).unwrap();
    }
    let (wal, rec) = Wal::open(
        FsStore::new(after.path(), options(mode)),
        WalOptions::default(),
    )
    .await
    .unwrap();
    let got: Vec<Lsn> = rec.map(|e| e.unwrap().lsn).collect().await;
    let promised: Vec<Lsn> = lsns.iter().copied().filter(|l| *l <= durable).collect();
    assert!(!promised.is_empty());
    assert!(
        got.starts_with(&promised),
        "{mode:?}: every entry at or below the watermark ({durable}) must survive: got {got:?}"
    );
    wal.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bytes_mode_syncs_when_the_budget_is_reached() {
    let tmp = tempfile::tempdir().unwrap();
    let io = Arc::new(PowerLossIo::new(tmp.path(), None, false));
    let mode = SyncMode::EveryBytes(1000);
    let store = FsStore::new(tmp.path(), options(mode)).with_file_io(io.clone());
    let (wal, _) = Wal::open(store, WalOptions::default()).await.unwrap();
    let mut lsns = Vec::new();
    for _ in 0..9 {
        lsns.push(wal.append(vec![7u8; 100]).await.unwrap());
    }
    // 900 bytes written: below the budget, nothing may have been synced.
    assert_eq!(wal.durable_lsn(), Lsn::ZERO, "synced below the byte budget");
    lsns.push(wal.append(vec![7u8; 100]).await.unwrap());
    // The 10th entry reaches 1000 bytes: the Wal syncs on its own.
    wait_watermark(&wal, lsns[9], "EveryBytes(1000) after 1000 bytes").await;
    // A few more below the next budget stay unsynced.
    for _ in 0..3 {
        lsns.push(wal.append(vec![7u8; 100]).await.unwrap());
    }
    assert_eq!(wal.durable_lsn(), lsns[9]);
    power_loss_keeps_watermark(&io, wal, &lsns, mode).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interval_mode_syncs_on_its_timer() {
    let tmp = tempfile::tempdir().unwrap();
    let io = Arc::new(PowerLossIo::new(tmp.path(), None, false));
    let mode = SyncMode::Interval(std::time::Duration::from_millis(20));
    let store = FsStore::new(tmp.path(), options(mode)).with_file_io(io.clone());
    let (wal, _) = Wal::open(store, WalOptions::default()).await.unwrap();
    let mut lsns = Vec::new();
    for i in 0..5 {
        lsns.push(wal.append(format!("e{i}")).await.unwrap());
    }
    // Nobody syncs, and no further op arrives: the controller's timer must.
    wait_watermark(&wal, lsns[4], "Interval(20ms) while idle").await;
    // And again for a second burst (the timer restarts with the next write).
    for i in 5..8 {
        lsns.push(wal.append(format!("e{i}")).await.unwrap());
    }
    wait_watermark(&wal, lsns[7], "Interval(20ms), second burst").await;
    power_loss_keeps_watermark(&io, wal, &lsns, mode).await;
}
