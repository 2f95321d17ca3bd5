//! The store's I/O thread. Every blocking file operation of an open store
//! runs here, one at a time, so the async workers never block on a write or
//! an `fdatasync`. A dedicated thread costs one channel send and one wake-up
//! per call, and keeps the open files and the directory lock in one place:
//! dropping the store joins the thread, so the lock is released only after
//! the last operation has finished touching the files.

use std::{
    io,
    sync::mpsc,
    thread::{self, JoinHandle},
};

use tokio::sync::oneshot;
use wal_core::{Error, Result};

use crate::log::SegmentLog;

type Job = Box<dyn FnOnce(&mut Option<SegmentLog>) + Send>;

/// A thread that owns the open log and runs jobs on it in order.
pub(crate) struct IoWorker {
    tx: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

fn stopped() -> Error {
    io::Error::other("wal-fs: the I/O thread has stopped").into()
}

impl IoWorker {
    pub(crate) fn spawn() -> Result<IoWorker> {
        let (tx, rx) = mpsc::channel::<Job>();
        let thread = thread::Builder::new()
            .name("wal-fs-io".into())
            .spawn(move || {
                let mut log = None;
                while let Ok(job) = rx.recv() {
                    job(&mut log);
                }
            })?;
        Ok(IoWorker {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Runs `f` on the I/O thread and waits for its result without blocking
    /// the async worker.
    pub(crate) async fn run<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut Option<SegmentLog>) -> Result<R> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let job: Job = Box::new(move |log| {
            let _ = reply.send(f(log));
        });
        self.tx
            .as_ref()
            .ok_or_else(stopped)?
            .send(job)
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// Stops the thread after the jobs already sent, and waits for it.
    pub(crate) fn stop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for IoWorker {
    fn drop(&mut self) {
        self.stop();
    }
}
