//! Sticky failure: a failed store call poisons the Wal; nothing after the
//! hole is acknowledged or written, and a reopen recovers what was acknowledged.

#![allow(clippy::unwrap_used)]

use async_trait::async_trait;
use futures::{future::BoxFuture, FutureExt, StreamExt};
use tokio::sync::oneshot;
use wal_core::{
    Error, FailureSignal, Lsn, MemFault, MemStore, ReadLimit, Record, Result, StoreState, Wal,
    WalOptions, WalStore,
};

async fn recovered(store: &MemStore) -> Vec<String> {
    let (wal, rec) = Wal::open(store.clone(), WalOptions::default())
        .await
        .unwrap();
    let out = rec
        .map(|e| String::from_utf8(e.unwrap().payload.to_vec()).unwrap())
        .collect()
        .await;
    wal.close().await.unwrap();
    out
}

fn is_poisoned_io(e: &Error) -> bool {
    matches!(e, Error::Poisoned { cause } if matches!(**cause, Error::Io(_)))
}

#[tokio::test]
async fn failed_append_poisons_and_loses_nothing_acknowledged() {
    for fault in [MemFault::FailAppend(1), MemFault::FailSync(1)] {
        let store = MemStore::new();
        let (wal, _) = Wal::open(store.clone(), WalOptions::default())
            .await
            .unwrap();
        wal.append("a").await.unwrap();
        wal.append("b").await.unwrap();
        store.inject(fault);
        let err = wal.append("c").await.unwrap_err();
        assert!(is_poisoned_io(&err), "{fault:?}: {err:?}");
        let later = wal.append("d").await.unwrap_err();
        assert!(
            is_poisoned_io(&later),
            "later ops fail with the cause: {later:?}"
        );
        assert!(matches!(
            wal.begin_checkpoint().await,
            Err(Error::Poisoned { .. })
        ));
        assert!(matches!(wal.sync().await, Err(Error::Poisoned { .. })));
        assert!(is_poisoned_io(&wal.failed().await));
        assert_eq!(wal.durable_lsn(), Lsn(2));
        wal.simulate_crash().await;
        store.crash();
        assert_eq!(recovered(&store).await, ["a", "b"], "{fault:?}");
    }
}

#[tokio::test]
async fn closing_a_poisoned_wal_releases_the_store() {
    let store = MemStore::new();
    let (wal, _) = Wal::open(store.clone(), WalOptions::default())
        .await
        .unwrap();
    wal.append("a").await.unwrap();
    store.inject(MemFault::FailAppend(1));
    assert!(wal.append("b").await.is_err());
    let keep = wal.clone(); // a live clone must not keep the store locked
    wal.close().await.expect("close works on a poisoned wal");
    assert!(matches!(
        keep.append("c").await,
        Err(Error::Poisoned { .. })
    ));
    assert_eq!(recovered(&store).await, ["a"]);
    drop(keep);
}

#[tokio::test]
async fn queued_ops_after_a_failure_all_fail_in_order() {
    let store = MemStore::new();
    let (wal, _) = Wal::open(store.clone(), WalOptions::default().max_batch_records(4))
        .await
        .unwrap();
    wal.append("first").await.unwrap();
    store.inject(MemFault::FailAppend(2));
    let mut pending = Vec::new();
    for i in 0..64 {
        pending.push(wal.submit(format!("p{i}")).await);
    }
    let mut acked = vec!["first".to_string()];
    let mut failed = false;
    for (i, p) in pending.into_iter().enumerate() {
        match p {
            Ok((_, done)) => match done.await {
                Ok(_) => {
                    assert!(!failed, "an entry after the hole was acknowledged");
                    acked.push(format!("p{i}"));
                }
                Err(e) => {
                    assert!(is_poisoned_io(&e), "{e:?}");
                    failed = true;
                }
            },
            Err(e) => {
                assert!(matches!(e, Error::Poisoned { .. }));
                failed = true;
            }
        }
    }
    assert!(failed, "the injected failure was hit");
    wal.simulate_crash().await;
    store.crash();
    assert_eq!(recovered(&store).await, acked);
}

/// A store whose failure signal the test fires, like a lost etcd lease.
struct Leased {
    inner: MemStore,
    lost: Option<oneshot::Receiver<()>>,
}

#[async_trait]
impl WalStore for Leased {
    async fn open(&mut self) -> Result<StoreState> {
        self.inner.open().await
    }
    fn max_payload_bytes(&self) -> usize {
        self.inner.max_payload_bytes()
    }
    async fn append(&mut self, records: &[Record]) -> Result<()> {
        self.inner.append(records).await
    }
    async fn read_from(&mut self, from: Lsn, limit: ReadLimit) -> Result<Vec<Record>> {
        self.inner.read_from(from, limit).await
    }
    async fn remove_before(&mut self, lsn: Lsn) -> Result<StoreState> {
        self.inner.remove_before(lsn).await
    }
    async fn truncate_after(&mut self, lsn: Lsn, high_water: &Record) -> Result<StoreState> {
        self.inner.truncate_after(lsn, high_water).await
    }
    async fn close(&mut self) -> Result<()> {
        self.inner.close().await
    }
    fn failure_signal(&mut self) -> Option<FailureSignal> {
        let rx = self.lost.take()?;
        let fut: BoxFuture<'static, Error> = async move {
            let _ = rx.await;
            Error::Fenced {
                reason: "lease lost".into(),
            }
        }
        .boxed();
        Some(fut)
    }
}

#[tokio::test]
async fn failure_signal_poisons_with_fenced() {
    let (fire, lost) = oneshot::channel();
    let store = Leased {
        inner: MemStore::new(),
        lost: Some(lost),
    };
    let (wal, _) = Wal::open(store, WalOptions::default()).await.unwrap();
    wal.append("a").await.unwrap();
    fire.send(()).unwrap();
    let e = wal.failed().await;
    assert!(e.is_fenced(), "{e:?}");
    let e = wal.append("b").await.unwrap_err();
    assert!(e.is_fenced(), "{e:?}");
}

#[tokio::test]
async fn entries_larger_than_the_queue_still_go_through() {
    let store = MemStore::new();
    let opts = WalOptions::default().max_queued_bytes(1024);
    let (wal, _) = Wal::open(store.clone(), opts).await.unwrap();
    let mut pending = Vec::new();
    for _ in 0..16 {
        pending.push(wal.submit(vec![1u8; 4096]).await.unwrap().1);
    }
    for p in pending {
        p.await.unwrap();
    }
    assert_eq!(wal.durable_lsn(), Lsn(16));
    wal.close().await.unwrap();
}

#[tokio::test]
async fn dropping_every_handle_closes_the_store() {
    let store = MemStore::new();
    let (wal, rec) = Wal::open(store.clone(), WalOptions::default())
        .await
        .unwrap();
    wal.append("a").await.unwrap();
    // The controller closes the store once the last handle (the recovery
    // stream holds one too) is gone.
    drop((wal, rec));
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match Wal::open(store.clone(), WalOptions::default()).await {
            Ok((wal, _)) => {
                wal.close().await.unwrap();
                break;
            }
            Err(Error::Locked { .. }) if tokio::time::Instant::now() < deadline => {
                tokio::task::yield_now().await
            }
            Err(e) => panic!("reopen after dropping every handle: {e:?}"),
        }
    }
}
