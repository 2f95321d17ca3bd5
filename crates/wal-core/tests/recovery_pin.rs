//! A live recovery stream holds checkpoint cleanup off, so a checkpoint
//! committed while the application is still replaying never removes entries
//! the stream has yet to yield.

use futures::StreamExt;
use wal_core::{EntryKind, Lsn, MemStore, Wal, WalOptions};

#[tokio::test]
async fn checkpoint_during_recovery_does_not_cut_the_stream() {
    let store = MemStore::new();
    let (wal, _) = Wal::open(store.clone(), WalOptions::default())
        .await
        .expect("open");
    let mut cp = wal.begin_checkpoint().await.expect("begin");
    cp.append("old-state").await.expect("cp append");
    cp.commit().await.expect("commit");
    for i in 0..10 {
        wal.append(format!("d{i}")).await.expect("append");
    }
    wal.close().await.expect("close");

    // Reopen with a tiny read chunk so the stream reads lazily, then commit a
    // new checkpoint before consuming anything.
    let opts = WalOptions::default().read_chunk(2, 16);
    let (wal, recovery) = Wal::open(store.clone(), opts).await.expect("reopen");
    let mut cp = wal.begin_checkpoint().await.expect("begin");
    cp.append("new-state").await.expect("cp append");
    let new_begin = cp.begin_lsn();
    cp.commit().await.expect("commit");
    wal.append("after").await.expect("append");
    assert!(
        wal.first_lsn().expect("not empty") < new_begin,
        "cleanup waits while the recovery stream is alive"
    );

    let got: Vec<(EntryKind, String)> = recovery
        .map(|e| {
            let e = e.expect("entry");
            (e.kind, String::from_utf8(e.payload.to_vec()).expect("utf8"))
        })
        .collect()
        .await;
    let mut expect = vec![(EntryKind::Checkpoint, "old-state".to_string())];
    expect.extend((0..10).map(|i| (EntryKind::Data, format!("d{i}"))));
    assert_eq!(got, expect, "the whole recovery view, as of open");

    // The stream is gone (consumed and dropped): the next op lets cleanup run.
    wal.append("next").await.expect("append");
    wal.sync().await.expect("sync");
    assert!(wal.first_lsn().expect("not empty") >= new_begin.min(Lsn::MAX));
    wal.close().await.expect("close");

    let (wal, recovery) = Wal::open(store, WalOptions::default())
        .await
        .expect("reopen");
    let got: Vec<String> = recovery
        .map(|e| String::from_utf8(e.expect("entry").payload.to_vec()).expect("utf8"))
        .collect()
        .await;
    assert_eq!(got, ["new-state", "after", "next"]);
    wal.close().await.expect("close");
}

/// An explicit trim while the recovery stream is live clamps to what the
/// stream still reads, so the stream is never silently cut short.
#[tokio::test]
async fn trim_during_recovery_does_not_cut_the_stream() {
    let store = MemStore::new();
    let (wal, _) = Wal::open(store.clone(), WalOptions::default())
        .await
        .expect("open");
    wal.append("d1").await.expect("append");
    let mut cp = wal.begin_checkpoint().await.expect("begin");
    for i in 0..5 {
        cp.append(format!("old-state-{i}"))
            .await
            .expect("cp append");
    }
    cp.commit().await.expect("commit");
    wal.append("d2").await.expect("append");
    wal.close().await.expect("close");

    let (wal, recovery) = Wal::open(store.clone(), WalOptions::default())
        .await
        .expect("reopen");
    let mut cp = wal.begin_checkpoint().await.expect("begin");
    cp.append("new-state").await.expect("cp append");
    cp.commit().await.expect("commit");
    wal.trim_before(Lsn::MAX).await.expect("trim");
    let got: Vec<_> = recovery.map(|e| e.expect("entry")).collect().await;
    let state = got
        .iter()
        .filter(|e| e.kind == EntryKind::Checkpoint)
        .count();
    let data = got.iter().filter(|e| e.kind == EntryKind::Data).count();
    assert_eq!((state, data), (5, 1), "recovery stream complete: {got:?}");
    wal.close().await.expect("close");
}
