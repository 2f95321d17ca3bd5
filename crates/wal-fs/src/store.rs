//! [`FsStore`]: the [`WalStore`] on a local directory.

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::Arc,
};

use async_trait::async_trait;
use wal_core::{Error, Lsn, ReadLimit, Record, Result, StoreState, WalStore};

use crate::{
    io::{FileIo, StdFileIo},
    log::SegmentLog,
    options::FsOptions,
    worker::IoWorker,
};

/// A [`WalStore`] on a local directory of segment files (format: see the
/// [crate docs](crate)).
///
/// Creating the value touches nothing; [`WalStore::open`] (called by
/// [`Wal::open`](wal_core::Wal::open)) creates the directory if needed, locks
/// it, and recovers it. The lock is held until [`WalStore::close`] or until
/// the value is dropped.
///
/// ```
/// use futures::StreamExt;
/// use wal_core::{Wal, WalOptions};
/// use wal_fs::{FsOptions, FsStore};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> wal_core::Result<()> {
/// let dir = tempfile::tempdir()?;
/// let store = FsStore::new(dir.path().join("log"), FsOptions::default());
/// let (wal, _recovery) = Wal::open(store, WalOptions::default()).await?;
/// wal.append(b"put a=1".to_vec()).await?; // written and fdatasync'd
/// wal.close().await?;
///
/// let store = FsStore::new(dir.path().join("log"), FsOptions::default());
/// let (wal, recovery) = Wal::open(store, WalOptions::default()).await?;
/// let entries: Vec<_> = recovery.collect().await;
/// assert_eq!(&entries[0].as_ref().unwrap().payload[..], b"put a=1");
/// wal.close().await?;
/// # Ok(())
/// # }
/// ```
pub struct FsStore {
    dir: PathBuf,
    options: FsOptions,
    io: Arc<dyn FileIo>,
    worker: Option<IoWorker>,
}

impl fmt::Debug for FsStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FsStore")
            .field("dir", &self.dir)
            .field("options", &self.options)
            .field("io", &self.io)
            .field("open", &self.worker.is_some())
            .finish()
    }
}

impl FsStore {
    /// A store on `dir`, not yet opened.
    pub fn new(dir: impl Into<PathBuf>, options: FsOptions) -> FsStore {
        FsStore {
            dir: dir.into(),
            options: options.normalized(),
            io: Arc::new(StdFileIo),
            worker: None,
        }
    }

    /// Routes every write, sync, resize, rename and delete through `io`
    /// (for fault injection in tests).
    pub fn with_file_io(mut self, io: Arc<dyn FileIo>) -> FsStore {
        self.io = io;
        self
    }

    /// The log directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The options in force (out-of-range values already brought into range).
    pub fn options(&self) -> &FsOptions {
        &self.options
    }

    async fn call<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut SegmentLog) -> Result<R> + Send + 'static,
    {
        let worker = self.worker.as_ref().ok_or(Error::Closed)?;
        worker
            .run(move |slot| match slot {
                Some(log) => f(log),
                None => Err(Error::Closed),
            })
            .await
    }
}

#[async_trait]
impl WalStore for FsStore {
    async fn open(&mut self) -> Result<StoreState> {
        if self.worker.is_some() {
            return Err(Error::InvalidArgument(
                "this FsStore is already open".into(),
            ));
        }
        let worker = IoWorker::spawn()?;
        let (dir, options, io) = (self.dir.clone(), self.options.clone(), self.io.clone());
        let state = worker
            .run(move |slot| {
                let (log, state) = SegmentLog::open(dir, options, io)?;
                *slot = Some(log);
                Ok(state)
            })
            .await?;
        self.worker = Some(worker);
        Ok(state)
    }

    fn max_payload_bytes(&self) -> usize {
        self.options.max_entry_bytes
    }

    fn max_append_bytes(&self) -> usize {
        self.options.max_batch_bytes
    }

    async fn append(&mut self, records: &[Record]) -> Result<()> {
        // Cloning a record clones a `Bytes` handle, not the payload.
        let records = records.to_vec();
        self.call(move |log| log.append(&records)).await
    }

    async fn sync(&mut self) -> Result<()> {
        self.call(SegmentLog::sync).await
    }

    async fn read_from(&mut self, from: Lsn, limit: ReadLimit) -> Result<Vec<Record>> {
        self.call(move |log| log.read_from(from, limit)).await
    }

    async fn remove_before(&mut self, lsn: Lsn) -> Result<StoreState> {
        self.call(move |log| log.remove_before(lsn)).await
    }

    async fn truncate_after(&mut self, lsn: Lsn) -> Result<StoreState> {
        self.call(move |log| log.truncate_after(lsn)).await
    }

    async fn close(&mut self) -> Result<()> {
        let Some(mut worker) = self.worker.take() else {
            return Ok(());
        };
        let r = worker
            .run(|slot| {
                let r = slot.as_mut().map_or(Ok(()), SegmentLog::close);
                // Dropping the log releases the directory lock.
                *slot = None;
                r
            })
            .await;
        worker.stop();
        r
    }
}
