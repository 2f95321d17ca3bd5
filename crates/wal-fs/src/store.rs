//! [`FsStore`]: the [`WalStore`] on a local directory.

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::Arc,
};

use async_trait::async_trait;
use wal_core::{
    Durability, Error, Lsn, ReadLimit, Record, Result, StoreReader, StoreState, WalStore,
};

use crate::{
    io::{FileIo, StdFileIo},
    log::SegmentLog,
    options::FsOptions,
    reader::FsReader,
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
    /// The open log; `None` before `open` and after `close`.
    log: Option<SegmentLog>,
}

impl fmt::Debug for FsStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FsStore")
            .field("dir", &self.dir)
            .field("options", &self.options)
            .field("io", &self.io)
            .field("open", &self.log.is_some())
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
            log: None,
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

    fn log(&mut self) -> Result<&mut SegmentLog> {
        self.log.as_mut().ok_or(Error::Closed)
    }
}

#[async_trait]
impl WalStore for FsStore {
    async fn open(&mut self) -> Result<StoreState> {
        if self.log.is_some() {
            return Err(Error::InvalidArgument(
                "this FsStore is already open".into(),
            ));
        }
        let (log, state) =
            SegmentLog::open(self.dir.clone(), self.options.clone(), self.io.clone())?;
        self.log = Some(log);
        Ok(state)
    }

    fn max_payload_bytes(&self) -> usize {
        self.options.max_entry_bytes
    }

    fn max_append_bytes(&self) -> usize {
        self.options.max_batch_bytes
    }

    /// File I/O runs inline: the Wal gives this store's controller a thread
    /// of its own, so one batch is one `write` + one `fdatasync` with no hop
    /// to another thread.
    fn blocking_io(&self) -> bool {
        true
    }

    /// What the [`SyncMode`](crate::SyncMode) says: durable on append only
    /// in `EveryBatch`; in the other modes an append is written, and durable
    /// after the next sync, which the Wal issues on the mode's timer or byte
    /// budget (or the application does, or close).
    fn durability(&self) -> Durability {
        self.options.sync_mode.durability()
    }

    async fn append(&mut self, records: &[Record]) -> Result<()> {
        self.log()?.append(records)
    }

    async fn sync(&mut self) -> Result<()> {
        self.log()?.sync()
    }

    async fn read_from(&mut self, from: Lsn, limit: ReadLimit) -> Result<Vec<Record>> {
        self.log()?.read_from(from, limit)
    }

    /// Steps over the payloads of data and checkpoint records instead of
    /// reading them (returned empty), without checking their checksums: open
    /// verified every frame, and the replay's `read_from` verifies again.
    async fn read_markers_from(&mut self, from: Lsn, limit: ReadLimit) -> Result<Vec<Record>> {
        self.log()?.read_markers_from(from, limit)
    }

    async fn remove_before(&mut self, lsn: Lsn) -> Result<StoreState> {
        self.log()?.remove_before(lsn)
    }

    async fn truncate_after(&mut self, lsn: Lsn, high_water: &Record) -> Result<StoreState> {
        self.log()?.truncate_after(lsn, high_water)
    }

    /// Reads beside the writer: planned from the segments the log publishes
    /// after each change, read through handles of their own on tokio's
    /// blocking pool.
    fn reader(&self) -> Option<Arc<dyn StoreReader>> {
        let view = self.log.as_ref()?.view().clone();
        Some(Arc::new(FsReader(view)))
    }

    async fn close(&mut self) -> Result<()> {
        // Dropping the log releases the directory lock.
        match self.log.take() {
            Some(mut log) => log.close(),
            None => Ok(()),
        }
    }
}
