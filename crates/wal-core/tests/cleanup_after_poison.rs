//! Nothing touches the log after a hole: checkpoint cleanup that was waiting
//! (for a recovery stream) when the Wal was poisoned never runs.

#![allow(clippy::unwrap_used)]

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use tokio::sync::oneshot;
use wal_core::{
    Error, Lsn, MemStore, ReadLimit, Record, RecordKind, Result, StoreState, Wal, WalOptions,
    WalStore,
};

const DEADLINE: Duration = Duration::from_secs(10);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Event {
    AppendFailed,
    RemoveBefore(Lsn),
}

/// One armed append: tell the test it started, wait for its go, then fail.
struct Trap {
    entered: oneshot::Sender<()>,
    release: oneshot::Receiver<()>,
}

/// A MemStore that logs the calls that change it and can hold one append
/// and fail it.
struct Gated {
    inner: MemStore,
    events: Arc<Mutex<Vec<Event>>>,
    trap: Arc<Mutex<Option<Trap>>>,
}

#[async_trait]
impl WalStore for Gated {
    async fn open(&mut self) -> Result<StoreState> {
        self.inner.open().await
    }
    fn max_payload_bytes(&self) -> usize {
        self.inner.max_payload_bytes()
    }
    async fn append(&mut self, records: &[Record]) -> Result<()> {
        let trap = self.trap.lock().unwrap().take();
        if let Some(t) = trap {
            let _ = t.entered.send(());
            let _ = t.release.await;
            self.events.lock().unwrap().push(Event::AppendFailed);
            return Err(std::io::Error::other("injected append failure").into());
        }
        self.inner.append(records).await
    }
    async fn read_from(&mut self, from: Lsn, limit: ReadLimit) -> Result<Vec<Record>> {
        self.inner.read_from(from, limit).await
    }
    async fn remove_before(&mut self, lsn: Lsn) -> Result<StoreState> {
        self.events.lock().unwrap().push(Event::RemoveBefore(lsn));
        self.inner.remove_before(lsn).await
    }
    async fn truncate_after(&mut self, lsn: Lsn, high_water: &Record) -> Result<StoreState> {
        self.inner.truncate_after(lsn, high_water).await
    }
    async fn close(&mut self) -> Result<()> {
        self.inner.close().await
    }
}

/// d1, d2, a checkpoint begun at 3 and committed at 5, d6: cleanup below 3
/// is due as soon as nothing pins it.
async fn seeded() -> MemStore {
    let mem = MemStore::new();
    let mut s = mem.clone();
    s.open().await.unwrap();
    s.append(&[
        Record::new(Lsn(1), RecordKind::Data, "d1"),
        Record::new(Lsn(2), RecordKind::Data, "d2"),
        Record::new(Lsn(3), RecordKind::CheckpointBegin, ""),
        Record::new(Lsn(4), RecordKind::Checkpoint, "state"),
        Record::marker(Lsn(5), RecordKind::CheckpointCommit, Lsn(3)),
        Record::new(Lsn(6), RecordKind::Data, "d6"),
    ])
    .await
    .unwrap();
    s.close().await.unwrap();
    mem
}

#[tokio::test]
async fn pending_cleanup_never_runs_after_poison() {
    let mem = seeded().await;
    let events = Arc::new(Mutex::new(Vec::new()));
    let trap = Arc::new(Mutex::new(None));
    let store = Gated {
        inner: mem.clone(),
        events: events.clone(),
        trap: trap.clone(),
    };
    // The live recovery stream holds the cleanup off.
    let (wal, recovery) = Wal::open(store, WalOptions::default()).await.unwrap();
    wal.sync().await.unwrap();
    assert_eq!(*events.lock().unwrap(), [], "cleanup waits for the stream");

    let (entered, entered_rx) = oneshot::channel();
    let (release, release_rx) = oneshot::channel();
    *trap.lock().unwrap() = Some(Trap {
        entered,
        release: release_rx,
    });
    let append = tokio::spawn({
        let wal = wal.clone();
        async move { wal.append("x").await }
    });
    tokio::time::timeout(DEADLINE, entered_rx)
        .await
        .expect("the append reaches the store")
        .unwrap();
    // The stream goes away while the failing append is in the store: the
    // cleanup is unpinned just as the hole appears.
    drop(recovery);
    release.send(()).unwrap();
    let e = tokio::time::timeout(DEADLINE, append)
        .await
        .expect("the append completes")
        .unwrap()
        .unwrap_err();
    assert!(matches!(e, Error::Poisoned { .. }), "{e:?}");
    tokio::time::timeout(DEADLINE, wal.close())
        .await
        .expect("close completes")
        .unwrap();

    let seen = events.lock().unwrap().clone();
    assert_eq!(seen, [Event::AppendFailed], "no removal after the hole");
    let first = mem.durable_records().first().map(|r| r.lsn);
    assert_eq!(first, Some(Lsn(1)), "nothing was removed");
}
