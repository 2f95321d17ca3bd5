//! Reads never wait behind writes: while a batch's fdatasync is held up,
//! `read`, `read_from` and `tail` answer from what is already durable, and
//! the held batch becomes visible only once its fdatasync returned.
#![allow(clippy::unwrap_used)]

use std::{
    fs::File,
    io,
    sync::{Condvar, Mutex},
    time::Duration,
};

use futures::StreamExt;
use wal_core::{Lsn, Wal, WalOptions};
use wal_fs::{FileIo, FsOptions, FsStore};

/// The real file layer, whose fdatasync can be held at a gate.
#[derive(Debug, Default)]
struct GatedSync {
    state: Mutex<Gate>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct Gate {
    closed: bool,
    /// A sync is waiting at the closed gate.
    waiting: bool,
}

impl GatedSync {
    fn close(&self) {
        self.state.lock().unwrap().closed = true;
    }

    fn open(&self) {
        self.state.lock().unwrap().closed = false;
        self.changed.notify_all();
    }

    /// Waits (with a deadline) until a sync is held at the gate.
    fn wait_held(&self) {
        let g = self.state.lock().unwrap();
        let (g, timeout) = self
            .changed
            .wait_timeout_while(g, Duration::from_secs(10), |g| !g.waiting)
            .unwrap();
        assert!(
            !timeout.timed_out() && g.waiting,
            "no fdatasync reached the gate"
        );
    }
}

impl FileIo for GatedSync {
    fn sync_data(&self, file: &File) -> io::Result<()> {
        let mut g = self.state.lock().unwrap();
        if g.closed {
            g.waiting = true;
            self.changed.notify_all();
            g = self.changed.wait_while(g, |g| g.closed).unwrap();
            g.waiting = false;
        }
        drop(g);
        file.sync_data()
    }
}

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not answer within 10 s while a sync was held"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_answer_while_a_sync_is_held() {
    let dir = tempfile::tempdir().unwrap();
    let gate = std::sync::Arc::new(GatedSync::default());
    let store = FsStore::new(dir.path(), FsOptions::default()).with_file_io(gate.clone());
    let (wal, _) = Wal::open(store, WalOptions::default()).await.unwrap();
    let a = wal.append("a").await.unwrap();
    let mut tail = wal.tail(Lsn::ZERO);
    assert_eq!(
        &within("tail", tail.next()).await.unwrap().unwrap().payload[..],
        b"a"
    );

    gate.close();
    let held = {
        let wal = wal.clone();
        tokio::spawn(async move { wal.append("b").await })
    };
    gate.wait_held();

    let got = within("read", wal.read(a)).await.unwrap().unwrap();
    assert_eq!(&got.payload[..], b"a");
    let all: Vec<_> = within("read_from", wal.read_from(Lsn::ZERO).collect::<Vec<_>>()).await;
    let all: Vec<_> = all.into_iter().map(|e| e.unwrap().payload).collect();
    assert_eq!(
        all,
        vec![bytes::Bytes::from("a")],
        "the held batch is not visible yet"
    );
    assert!(!held.is_finished(), "the append waits for its fdatasync");

    gate.open();
    let b = held.await.unwrap().unwrap();
    let got = within("read", wal.read(b)).await.unwrap().unwrap();
    assert_eq!(&got.payload[..], b"b");
    assert_eq!(
        &within("tail", tail.next()).await.unwrap().unwrap().payload[..],
        b"b"
    );
    wal.close().await.unwrap();
}
