//! A panic inside the controller (in a store method, or in the controller's
//! own code) poisons the Wal with `Panicked`: every waiter wakes, every queued
//! op fails with the cause, and nothing passes for a clean close. Each check
//! runs with an async store (controller on the caller's runtime) and with a
//! blocking one (controller on its own thread).

#![allow(clippy::unwrap_used)]

use std::{
    future::Future,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use futures::{future::BoxFuture, FutureExt, StreamExt};
use tokio::sync::oneshot;
use wal_core::{
    Error, FailureSignal, Lsn, MemStore, ReadLimit, Record, Result, StoreState, Wal, WalOptions,
    WalStore,
};

/// Long enough for any healthy run; a regression fails here instead of hanging.
const DEADLINE: Duration = Duration::from_secs(10);

async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(DEADLINE, f).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: still waiting after {DEADLINE:?}"),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Call {
    Append,
    Read,
}

/// Which call panics: the method and how many calls of it from now (1 = the
/// next one).
type Trap = Arc<Mutex<Option<(Call, u64)>>>;

/// A MemStore that panics on the `n`th call of one method once armed, and
/// whose failure signal, if asked for, panics when the test fires it.
struct Panicky {
    inner: MemStore,
    blocking: bool,
    trap: Trap,
    signal: Option<oneshot::Receiver<()>>,
}

const MESSAGE: &str = "injected panic";

impl Panicky {
    fn new(inner: MemStore, blocking: bool) -> (Panicky, Trap) {
        let trap = Arc::new(Mutex::new(None));
        let store = Panicky {
            inner,
            blocking,
            trap: trap.clone(),
            signal: None,
        };
        (store, trap)
    }

    fn maybe_panic(&self, call: Call) {
        let fire = {
            let mut t = self.trap.lock().unwrap();
            match *t {
                Some((c, n)) if c == call && n <= 1 => {
                    *t = None;
                    true
                }
                Some((c, n)) if c == call => {
                    *t = Some((c, n - 1));
                    false
                }
                _ => false,
            }
        };
        if fire {
            panic!("{MESSAGE} in {call:?}");
        }
    }
}

#[async_trait]
impl WalStore for Panicky {
    async fn open(&mut self) -> Result<StoreState> {
        self.inner.open().await
    }
    fn max_payload_bytes(&self) -> usize {
        self.inner.max_payload_bytes()
    }
    fn blocking_io(&self) -> bool {
        self.blocking
    }
    async fn append(&mut self, records: &[Record]) -> Result<()> {
        self.maybe_panic(Call::Append);
        self.inner.append(records).await
    }
    async fn read_from(&mut self, from: Lsn, limit: ReadLimit) -> Result<Vec<Record>> {
        self.maybe_panic(Call::Read);
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
        let rx = self.signal.take()?;
        let fut: BoxFuture<'static, Error> = async move {
            let _ = rx.await;
            panic!("{MESSAGE} in the failure signal");
        }
        .boxed();
        Some(fut)
    }
}

/// `Poisoned { Panicked }` carrying the injected message.
fn assert_panicked(what: &str, e: &Error) {
    match e {
        Error::Poisoned { cause } => match &**cause {
            Error::Panicked { message } => {
                assert!(message.contains(MESSAGE), "{what}: message {message:?}")
            }
            other => panic!("{what}: poisoned by {other:?}, not by the panic"),
        },
        other => panic!("{what}: {other:?}, expected Poisoned {{ Panicked }}"),
    }
}

async fn recovered(store: &MemStore) -> Vec<String> {
    let (wal, rec) = within("reopen", Wal::open(store.clone(), WalOptions::default()))
        .await
        .unwrap();
    let out = rec
        .map(|e| String::from_utf8(e.unwrap().payload.to_vec()).unwrap())
        .collect()
        .await;
    wal.close().await.unwrap();
    out
}

async fn append_panic(blocking: bool) {
    let mem = MemStore::new();
    let (store, trap) = Panicky::new(mem.clone(), blocking);
    let (wal, _) = Wal::open(store, WalOptions::default()).await.unwrap();
    wal.append("a").await.unwrap();

    // A tail waiting at the end of the log.
    let mut tail = wal.tail(Lsn(2));
    let tail = tokio::spawn(async move { tail.next().await });
    tokio::task::yield_now().await;

    // An open checkpoint whose entries are still queued when the store panics.
    let mut cp = wal.begin_checkpoint().await.unwrap();
    cp.append("state").await.unwrap();

    *trap.lock().unwrap() = Some((Call::Append, 1));
    let commit = tokio::spawn(cp.commit());
    let (_, b) = wal.submit("b").await.unwrap();
    let (_, c) = wal.submit("c").await.unwrap();
    let sync = tokio::spawn({
        let wal = wal.clone();
        async move { wal.sync().await }
    });
    let read = tokio::spawn({
        let wal = wal.clone();
        async move { wal.read(Lsn(1)).await }
    });
    let trim = tokio::spawn({
        let wal = wal.clone();
        async move { wal.trim_before(Lsn(1)).await }
    });

    assert_panicked("failed()", &within("failed()", wal.failed()).await);
    assert_panicked(
        "checkpoint commit",
        &within("commit", commit).await.unwrap().unwrap_err(),
    );
    assert_panicked("append b", &within("append b", b).await.unwrap_err());
    assert_panicked("append c", &within("append c", c).await.unwrap_err());
    assert_panicked(
        "queued sync",
        &within("sync", sync).await.unwrap().unwrap_err(),
    );
    assert_panicked(
        "queued read",
        &within("read", read).await.unwrap().unwrap_err(),
    );
    assert_panicked(
        "queued trim",
        &within("trim", trim).await.unwrap().unwrap_err(),
    );
    match within("tail", tail).await.unwrap() {
        Some(Err(e)) => assert_panicked("tail", &e),
        other => panic!("tail: {other:?}"),
    }
    assert_panicked("later append", &wal.append("d").await.unwrap_err());
    assert_panicked(
        "later checkpoint",
        &wal.begin_checkpoint().await.unwrap_err(),
    );
    assert_panicked(
        "later read",
        &within("later read", wal.read(Lsn(1))).await.unwrap_err(),
    );
    match within("later tail", wal.tail(Lsn(1)).next()).await {
        Some(Err(e)) => assert_panicked("later tail", &e),
        other => panic!("later tail: {other:?}"),
    }
    // Close still releases the store; what was acknowledged survives.
    within("close", wal.close()).await.unwrap();
    assert_eq!(recovered(&mem).await, ["a"]);
}

#[tokio::test]
async fn append_panic_poisons_async_store() {
    append_panic(false).await;
}

#[tokio::test]
async fn append_panic_poisons_store_on_own_thread() {
    append_panic(true).await;
}

async fn read_panic(blocking: bool) {
    let mem = MemStore::new();
    let (store, trap) = Panicky::new(mem.clone(), blocking);
    let (wal, _) = Wal::open(store, WalOptions::default()).await.unwrap();
    wal.append("a").await.unwrap();
    *trap.lock().unwrap() = Some((Call::Read, 1));
    // A failed read would not poison; a panicking one must.
    let e = within("read", wal.read(Lsn(1))).await.unwrap_err();
    assert_panicked("read", &e);
    assert_panicked("failed()", &within("failed()", wal.failed()).await);
    assert_panicked("later append", &wal.append("b").await.unwrap_err());
    within("close", wal.close()).await.unwrap();
    assert_eq!(recovered(&mem).await, ["a"]);
}

#[tokio::test]
async fn read_panic_poisons_async_store() {
    read_panic(false).await;
}

#[tokio::test]
async fn read_panic_poisons_store_on_own_thread() {
    read_panic(true).await;
}

/// The failure signal is polled by the controller outside any store call: a
/// panic there is a panic in the controller's own loop.
async fn controller_panic(blocking: bool) {
    let mem = MemStore::new();
    let (mut store, _) = Panicky::new(mem.clone(), blocking);
    let (fire, rx) = oneshot::channel();
    store.signal = Some(rx);
    let (wal, _) = Wal::open(store, WalOptions::default()).await.unwrap();
    wal.append("a").await.unwrap();
    let mut tail = wal.tail(Lsn(2));
    let tail = tokio::spawn(async move { tail.next().await });
    let failed = tokio::spawn({
        let wal = wal.clone();
        async move { wal.failed().await }
    });
    tokio::task::yield_now().await;

    fire.send(()).unwrap();
    assert_panicked("failed()", &within("failed()", failed).await.unwrap());
    match within("tail", tail).await.unwrap() {
        Some(Err(e)) => assert_panicked("tail", &e),
        other => panic!("tail: {other:?}"),
    }
    assert_panicked("later append", &wal.append("b").await.unwrap_err());
    assert_panicked("later sync", &within("sync", wal.sync()).await.unwrap_err());
    within("close", wal.close()).await.unwrap();
    assert_eq!(recovered(&mem).await, ["a"]);
}

#[tokio::test]
async fn controller_panic_poisons_async_store() {
    controller_panic(false).await;
}

#[tokio::test]
async fn controller_panic_poisons_store_on_own_thread() {
    controller_panic(true).await;
}

/// A controller that goes away without closing (its task aborted here; a
/// runtime shutting down does the same) reads as closed: waiters wake.
#[tokio::test]
async fn controller_that_goes_away_reads_as_closed() {
    for blocking in [false, true] {
        let (store, _) = Panicky::new(MemStore::new(), blocking);
        let (wal, _) = Wal::open(store, WalOptions::default()).await.unwrap();
        wal.append("a").await.unwrap();
        let other = wal.clone();
        let mut tail = other.tail(Lsn(2));
        within("simulate_crash", wal.simulate_crash()).await;
        let e = within("failed()", other.failed()).await;
        assert!(matches!(e, Error::Closed), "{e:?}");
        match within("tail", tail.next()).await {
            Some(Err(Error::Closed)) => {}
            other => panic!("tail: {other:?}"),
        }
        assert!(matches!(other.append("b").await, Err(Error::Closed)));
    }
}
