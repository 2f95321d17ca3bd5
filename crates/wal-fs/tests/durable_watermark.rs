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
