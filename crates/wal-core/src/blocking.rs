//! The Wal for code that is not async: plain threads, no runtime of the
//! caller's own.
//!
//! [`BlockingWal`] is a [`Wal`] plus a small runtime it owns (one worker
//! thread, for stores whose I/O is async and for timers). Every method
//! blocks the calling thread until the async method it wraps completes;
//! many threads may call it at once, and their appends are group-committed
//! together exactly as async callers' are. Do not call it from inside async
//! code (that would block an async worker; tokio refuses it): use the
//! [`Wal`] it wraps ([`BlockingWal::wal`]) there.
//!
//! ```
//! use wal_core::{blocking::BlockingWal, MemStore, WalOptions};
//!
//! # fn main() -> wal_core::Result<()> {
//! let store = MemStore::new();
//! let (wal, recovery) = BlockingWal::open(store.clone(), WalOptions::default())?;
//! assert_eq!(recovery.count(), 0);
//! std::thread::scope(|s| {
//!     for t in 0..4 {
//!         let wal = &wal;
//!         s.spawn(move || wal.append(format!("from thread {t}")).unwrap());
//!     }
//! });
//! wal.close()?;
//!
//! let (wal, recovery) = BlockingWal::open(store, WalOptions::default())?;
//! assert_eq!(recovery.map(|e| e.unwrap()).count(), 4);
//! wal.close()?;
//! # Ok(())
//! # }
//! ```

use std::{future::Future, ops::RangeInclusive, sync::Arc};

use bytes::Bytes;
use futures::{stream::BoxStream, StreamExt};
use tokio::runtime::Runtime;

use crate::{
    Checkpoint, CheckpointInfo, Completion, Entry, Error, Lsn, Result, Wal, WalOptions, WalStore,
};

/// A [`Wal`] for plain threads; see the [module docs](self). Cheap to
/// clone; clones share the Wal and the runtime.
#[derive(Clone)]
pub struct BlockingWal {
    wal: Wal,
    rt: Arc<Runtime>,
}

impl std::fmt::Debug for BlockingWal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("BlockingWal").field(&self.wal).finish()
    }
}

impl BlockingWal {
    /// Opens the log like [`Wal::open`]; the recovery stream comes as an
    /// iterator.
    pub fn open<S: WalStore>(store: S, options: WalOptions) -> Result<(BlockingWal, BlockingIter)> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("wal-blocking")
            .enable_all()
            .build()?;
        let rt = Arc::new(rt);
        let (wal, recovery) = rt.block_on(Wal::open(store, options))?;
        let checkpoint = recovery.checkpoint();
        let end = recovery.end_lsn();
        let recovery = BlockingIter {
            stream: recovery.boxed(),
            rt: rt.clone(),
            checkpoint,
            end,
        };
        Ok((BlockingWal { wal, rt }, recovery))
    }

    /// The async handle onto the same Wal.
    pub fn wal(&self) -> &Wal {
        &self.wal
    }

    fn run<T>(&self, f: impl Future<Output = T>) -> T {
        self.rt.block_on(f)
    }

    /// [`Wal::append`]: returns once the entry is durable.
    pub fn append(&self, payload: impl Into<Bytes>) -> Result<Lsn> {
        self.run(self.wal.append(payload))
    }

    /// [`Wal::append_batch`]: all or none, durable when it returns.
    pub fn append_batch<I, P>(&self, payloads: I) -> Result<Vec<Lsn>>
    where
        I: IntoIterator<Item = P>,
        P: Into<Bytes>,
    {
        self.run(self.wal.append_batch(payloads))
    }

    /// [`Wal::submit_batch`]: the batch's Lsns now, durability later
    /// ([`wait`](Self::wait)).
    pub fn submit_batch<I, P>(&self, payloads: I) -> Result<(RangeInclusive<Lsn>, Completion)>
    where
        I: IntoIterator<Item = P>,
        P: Into<Bytes>,
    {
        self.run(self.wal.submit_batch(payloads))
    }

    /// [`Wal::submit`]: the Lsn now, durability later ([`wait`](Self::wait)).
    pub fn submit(&self, payload: impl Into<Bytes>) -> Result<(Lsn, Completion)> {
        self.run(self.wal.submit(payload))
    }

    /// Waits for a [`Completion`] from [`submit`](Self::submit).
    pub fn wait(&self, completion: Completion) -> Result<Lsn> {
        self.run(completion)
    }

    /// [`Wal::begin_checkpoint`].
    pub fn begin_checkpoint(&self) -> Result<BlockingCheckpoint> {
        let cp = self.run(self.wal.begin_checkpoint())?;
        Ok(BlockingCheckpoint {
            cp,
            rt: self.rt.clone(),
        })
    }

    /// [`Wal::read`].
    pub fn read(&self, lsn: Lsn) -> Result<Option<Entry>> {
        self.run(self.wal.read(lsn))
    }

    /// [`Wal::read_from`], as an iterator.
    pub fn read_from(&self, lsn: Lsn) -> BlockingIter {
        self.iter(self.wal.read_from(lsn))
    }

    /// [`Wal::tail`], as an iterator (each `next` blocks until an entry is
    /// durable or the Wal stops).
    pub fn tail(&self, lsn: Lsn) -> BlockingIter {
        self.iter(self.wal.tail(lsn))
    }

    fn iter(&self, stream: BoxStream<'static, Result<Entry>>) -> BlockingIter {
        BlockingIter {
            stream,
            rt: self.rt.clone(),
            checkpoint: None,
            end: None,
        }
    }

    /// [`Wal::truncate_after`].
    pub fn truncate_after(&self, lsn: Lsn) -> Result<()> {
        self.run(self.wal.truncate_after(lsn))
    }

    /// [`Wal::trim_before`].
    pub fn trim_before(&self, lsn: Lsn) -> Result<Lsn> {
        self.run(self.wal.trim_before(lsn))
    }

    /// [`Wal::sync`].
    pub fn sync(&self) -> Result<()> {
        self.run(self.wal.sync())
    }

    /// [`Wal::close`].
    pub fn close(&self) -> Result<()> {
        self.run(self.wal.close())
    }

    /// [`Wal::failed`]: blocks until the Wal stops, and says why.
    pub fn failed(&self) -> Error {
        self.run(self.wal.failed())
    }

    /// [`Wal::wait_durable`]: blocks until every record up to `lsn` is
    /// durable, syncing if the store needs it.
    pub fn wait_durable(&self, lsn: Lsn) -> Result<()> {
        self.run(self.wal.wait_durable(lsn))
    }

    /// [`Wal::durable_lsn`].
    pub fn durable_lsn(&self) -> Lsn {
        self.wal.durable_lsn()
    }

    /// [`Wal::first_lsn`].
    pub fn first_lsn(&self) -> Option<Lsn> {
        self.wal.first_lsn()
    }

    /// [`Wal::last_lsn`].
    pub fn last_lsn(&self) -> Option<Lsn> {
        self.wal.last_lsn()
    }

    /// [`Wal::max_entry_bytes`].
    pub fn max_entry_bytes(&self) -> usize {
        self.wal.max_entry_bytes()
    }
}

/// A [`Checkpoint`] for plain threads.
pub struct BlockingCheckpoint {
    cp: Checkpoint,
    rt: Arc<Runtime>,
}

impl std::fmt::Debug for BlockingCheckpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockingCheckpoint")
            .field("begin", &self.cp.begin_lsn())
            .finish_non_exhaustive()
    }
}

impl BlockingCheckpoint {
    /// [`Checkpoint::begin_lsn`].
    pub fn begin_lsn(&self) -> Lsn {
        self.cp.begin_lsn()
    }

    /// [`Checkpoint::append`].
    pub fn append(&mut self, payload: impl Into<Bytes>) -> Result<Lsn> {
        self.rt.clone().block_on(self.cp.append(payload))
    }

    /// [`Checkpoint::commit`].
    pub fn commit(self) -> Result<Lsn> {
        self.rt.block_on(self.cp.commit())
    }

    /// [`Checkpoint::abort`].
    pub fn abort(self) -> Result<()> {
        self.rt.block_on(self.cp.abort())
    }
}

/// Entries of a stream of the Wal, one blocking `next` at a time: the
/// recovery stream, [`BlockingWal::read_from`], [`BlockingWal::tail`].
pub struct BlockingIter {
    stream: BoxStream<'static, Result<Entry>>,
    rt: Arc<Runtime>,
    checkpoint: Option<CheckpointInfo>,
    end: Option<Lsn>,
}

impl std::fmt::Debug for BlockingIter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockingIter")
            .field("checkpoint", &self.checkpoint)
            .field("end", &self.end)
            .finish_non_exhaustive()
    }
}

impl BlockingIter {
    /// For the recovery stream: [`Recovery::checkpoint`](crate::Recovery::checkpoint).
    pub fn checkpoint(&self) -> Option<CheckpointInfo> {
        self.checkpoint
    }

    /// For the recovery stream: [`Recovery::end_lsn`](crate::Recovery::end_lsn).
    pub fn end_lsn(&self) -> Option<Lsn> {
        self.end
    }
}

impl Iterator for BlockingIter {
    type Item = Result<Entry>;

    fn next(&mut self) -> Option<Self::Item> {
        self.rt.block_on(self.stream.next())
    }
}
