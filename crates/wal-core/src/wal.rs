//! The `Wal` handle.

use std::{
    future::Future,
    ops::RangeInclusive,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    task::{Context, Poll},
};

use bytes::Bytes;
use futures::stream::BoxStream;
use tokio::{
    sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore},
    task::JoinHandle,
};

use crate::{
    controller::{Controller, ControllerConfig, Maintenance, Op, Status, WriteOp},
    metrics::WalMetrics,
    recovery::{self, Recovery},
    store::{ReadLimit, StoreReader},
    Checkpoint, Entry, Error, Lsn, Record, RecordKind, Result, WalOptions, WalStore,
};

/// A write-ahead log. Cheap to clone; every clone talks to the same
/// controller task, which owns the store.
///
/// ```
/// use futures::StreamExt;
/// use wal_core::{EntryKind, MemStore, Wal, WalOptions};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> wal_core::Result<()> {
/// let store = MemStore::new();
/// let (wal, mut recovery) = Wal::open(store.clone(), WalOptions::default()).await?;
/// assert!(recovery.next().await.is_none()); // a new log recovers nothing
///
/// let lsn = wal.append(b"put a=1".to_vec()).await?; // durable when it returns
/// let mut cp = wal.begin_checkpoint().await?;
/// cp.append(b"state: a=1".to_vec()).await?;
/// wal.append(b"put b=2".to_vec()).await?; // appends go on during a checkpoint
/// cp.commit().await?;
/// wal.close().await?;
///
/// // After a restart: the checkpoint, then the data entries after its begin.
/// let (_wal, recovery) = Wal::open(store, WalOptions::default()).await?;
/// let entries: Vec<_> = recovery.map(|e| e.unwrap()).collect().await;
/// assert_eq!(entries[0].kind, EntryKind::Checkpoint);
/// assert_eq!(&entries[0].payload[..], b"state: a=1");
/// assert_eq!(&entries[1].payload[..], b"put b=2");
/// assert_eq!(entries.len(), 2);
/// # let _ = lsn;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Wal {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    /// Lsn assignment and sending happen under one lock, so channel order is
    /// Lsn order.
    submit: Mutex<Submitter>,
    queue: Arc<Semaphore>,
    queue_cap: usize,
    metrics: Arc<WalMetrics>,
    pub(crate) status: Arc<Status>,
    pub(crate) checkpoint_open: AtomicBool,
    max_entry_bytes: usize,
    max_append_bytes: usize,
    pub(crate) read_limit: ReadLimit,
    /// The store's reader beside the writer; `None`: reads are controller ops.
    reader: Option<Arc<dyn StoreReader>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

struct Submitter {
    next_lsn: Lsn,
    tx: mpsc::UnboundedSender<Op>,
}

/// Resolves to the Lsn once the submitted entry is durable (with a store
/// that does not sync on append, such as wal-fs in `SyncMode::None`: once it
/// is written; [`Wal::wait_durable`] then makes it durable). Completions
/// resolve in Lsn order.
#[must_use = "a completion does nothing unless awaited; drop it to not wait"]
pub struct Completion {
    rx: oneshot::Receiver<Result<Lsn>>,
    status: Arc<Status>,
    /// Set if the controller dropped the reply (it panicked or went away):
    /// waits for the reason, which it records as it stops.
    stopped: Option<Pin<Box<dyn Future<Output = Error> + Send + Sync>>>,
}

impl Completion {
    fn new(rx: oneshot::Receiver<Result<Lsn>>, status: Arc<Status>) -> Completion {
        Completion {
            rx,
            status,
            stopped: None,
        }
    }
}

impl std::fmt::Debug for Completion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Completion")
            .field("controller_stopped", &self.stopped.is_some())
            .finish_non_exhaustive()
    }
}

impl Future for Completion {
    type Output = Result<Lsn>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if this.stopped.is_none() {
            match Pin::new(&mut this.rx).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(r)) => return Poll::Ready(r),
                Poll::Ready(Err(_)) => {
                    let status = this.status.clone();
                    this.stopped = Some(Box::pin(async move { status.stopped().await }));
                }
            }
        }
        match this.stopped.as_mut() {
            Some(stopped) => stopped.as_mut().poll(cx).map(Err),
            None => Poll::Pending,
        }
    }
}

impl Wal {
    /// Opens the log on `store`: claims it, scans it, and starts the
    /// controller task (on the current tokio runtime).
    ///
    /// The returned [`Recovery`] streams what the recovery contract promises:
    /// the entries of the last committed checkpoint, then every data entry
    /// after that checkpoint's begin marker. New appends may start at once;
    /// they are not part of the recovery stream. While the stream is alive,
    /// committing a new checkpoint does not remove the records it still has to
    /// read: the cleanup waits until the stream is dropped. (An explicit
    /// [`trim_before`](Self::trim_before) does not wait.)
    pub async fn open<S: WalStore>(mut store: S, options: WalOptions) -> Result<(Wal, Recovery)> {
        let state = store.open().await?;
        // No room for another record (only a crafted or damaged log gets
        // here): refused before anything reads or writes past the end.
        if let Some(last) = state.last_lsn.filter(|last| *last >= Lsn::LAST) {
            let _ = store.close().await;
            return Err(Error::LsnExhausted { last, requested: 1 });
        }
        let read_limit = ReadLimit {
            max_records: options.read_chunk_records.max(1),
            max_bytes: options.read_chunk_bytes.max(1),
        };
        let checkpoints = match recovery::scan(&mut store, state, read_limit).await {
            Ok(c) => c,
            Err(e) => {
                let _ = store.close().await;
                return Err(e);
            }
        };
        let end = state.last_lsn;
        // Exact: the end is below Lsn::LAST (checked above).
        let next_lsn = end.map_or(Lsn::FIRST, Lsn::next);
        let failure = store.failure_signal();
        let reader = store.reader();
        let blocking = store.blocking_io();
        let max_append_bytes = store.max_append_bytes();
        let max_entry_bytes = options
            .max_entry_bytes
            .min(store.max_payload_bytes())
            .min(max_append_bytes);
        let (tx, rx) = mpsc::unbounded_channel();
        let status = Arc::new(Status::new(state));
        let queue_cap = options.max_queued_bytes.clamp(1, u32::MAX as usize);
        let queue = Arc::new(Semaphore::new(queue_cap));
        let metrics = Arc::new(WalMetrics::new(
            &options.metrics_name,
            queue.clone(),
            queue_cap,
        ));
        let controller = Controller::new(
            store,
            rx,
            status.clone(),
            ControllerConfig {
                checkpoints,
                failure,
                max_batch_bytes: options.max_batch_bytes.min(max_append_bytes),
                max_batch_records: options.max_batch_records,
                own_thread: blocking,
                metrics: metrics.clone(),
            },
        );
        let task = if blocking {
            spawn_on_own_thread(controller.run())?
        } else {
            tokio::spawn(controller.run())
        };
        let wal = Wal {
            inner: Arc::new(Inner {
                submit: Mutex::new(Submitter { next_lsn, tx }),
                queue,
                metrics,
                queue_cap,
                status,
                checkpoint_open: AtomicBool::new(false),
                max_entry_bytes,
                max_append_bytes,
                read_limit,
                reader,
                task: Mutex::new(Some(task)),
            }),
        };
        let recovery = Recovery::new(wal.clone(), checkpoints.committed, end);
        Ok((wal, recovery))
    }

    /// Appends one data entry and returns its Lsn once it is durable (once
    /// written, for a store that does not sync on append; see
    /// [`wait_durable`](Self::wait_durable)).
    pub async fn append(&self, payload: impl Into<Bytes>) -> Result<Lsn> {
        self.submit(payload).await?.1.await
    }

    /// Queues one data entry and returns its Lsn at once, with a future that
    /// resolves when it is durable. Use it to pipeline many appends from one
    /// task. Waits only if the queue is full (backpressure).
    pub async fn submit(&self, payload: impl Into<Bytes>) -> Result<(Lsn, Completion)> {
        let payload = payload.into();
        self.check_entry_size(&payload)?;
        let (_, last, done) = self.enqueue(vec![(RecordKind::Data, payload)]).await?;
        Ok((last, done))
    }

    /// Appends entries atomically: after a crash all or none of them are
    /// recovered. Returns their Lsns (consecutive) once durable. A batch that
    /// would pass [`Lsn::LAST`] is refused whole with
    /// [`Error::LsnExhausted`]. An empty batch appends nothing and returns no
    /// Lsns.
    pub async fn append_batch<I, P>(&self, payloads: I) -> Result<Vec<Lsn>>
    where
        I: IntoIterator<Item = P>,
        P: Into<Bytes>,
    {
        let items = self.batch_items(payloads)?;
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let (first, last, done) = self.enqueue(items).await?;
        done.await?;
        Ok((first.get()..=last.get()).map(Lsn).collect())
    }

    /// Queues entries as one atomic batch and returns their Lsns at once,
    /// with a future that resolves when the whole batch is durable: the
    /// pipelined form of [`append_batch`](Self::append_batch), for callers
    /// (a Raft log, a replication stream) that keep several batches in
    /// flight. After a crash all or none of the batch is recovered; it is
    /// ordered after everything submitted before it, and its completion
    /// resolves after theirs. Waits only if the queue is full
    /// (backpressure).
    ///
    /// Errors before anything is queued: [`Error::InvalidArgument`] for an
    /// empty batch (it would have no Lsn range), [`Error::EntryTooLarge`] for
    /// an entry over [`max_entry_bytes`](Self::max_entry_bytes) or a batch
    /// over the store's largest atomic append, [`Error::LsnExhausted`] for a
    /// batch that would pass [`Lsn::LAST`].
    ///
    /// ```
    /// use wal_core::{MemStore, Wal, WalOptions};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> wal_core::Result<()> {
    /// let (wal, _) = Wal::open(MemStore::new(), WalOptions::default()).await?;
    /// let (first, a) = wal.submit_batch(["x1", "x2"]).await?;
    /// let (second, b) = wal.submit_batch(["y1"]).await?;
    /// assert_eq!(*second.start(), first.end().next());
    /// assert_eq!(a.await?, *first.end());
    /// assert_eq!(b.await?, *second.end());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn submit_batch<I, P>(&self, payloads: I) -> Result<(RangeInclusive<Lsn>, Completion)>
    where
        I: IntoIterator<Item = P>,
        P: Into<Bytes>,
    {
        let items = self.batch_items(payloads)?;
        if items.is_empty() {
            return Err(Error::InvalidArgument(
                "submit_batch: an empty batch has no Lsns".into(),
            ));
        }
        let (first, last, done) = self.enqueue(items).await?;
        Ok((first..=last, done))
    }

    /// The checks every atomic batch passes before it is queued: each entry
    /// within [`max_entry_bytes`](Self::max_entry_bytes), the whole within
    /// the store's largest atomic append.
    fn batch_items<I, P>(&self, payloads: I) -> Result<Vec<(RecordKind, Bytes)>>
    where
        I: IntoIterator<Item = P>,
        P: Into<Bytes>,
    {
        let mut items = Vec::new();
        let mut total = 0usize;
        for p in payloads {
            let p = p.into();
            self.check_entry_size(&p)?;
            total += p.len();
            items.push((RecordKind::Data, p));
        }
        if total > self.inner.max_append_bytes {
            return Err(Error::EntryTooLarge {
                size: total,
                max: self.inner.max_append_bytes,
            });
        }
        Ok(items)
    }

    /// The largest payload one entry may carry, in bytes: the smaller of
    /// [`WalOptions::max_entry_bytes`] and the store's own limit.
    pub fn max_entry_bytes(&self) -> usize {
        self.inner.max_entry_bytes
    }

    /// Every record at or below this Lsn is durable.
    pub fn durable_lsn(&self) -> Lsn {
        *self.inner.status.durable.borrow()
    }

    /// The first stored Lsn, if any (trimming may leave more than asked).
    pub fn first_lsn(&self) -> Option<Lsn> {
        self.inner.status.store_state().first_lsn
    }

    /// The last durable Lsn, if any. It may be a checkpoint marker.
    pub fn last_lsn(&self) -> Option<Lsn> {
        self.inner.status.store_state().last_lsn
    }

    /// Opens a checkpoint. Only one may be open at a time
    /// ([`Error::CheckpointInProgress`]); data appends go on meanwhile.
    pub async fn begin_checkpoint(&self) -> Result<Checkpoint> {
        self.health()?;
        if self
            .inner
            .checkpoint_open
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Err(Error::CheckpointInProgress);
        }
        match self.enqueue_now(vec![(RecordKind::CheckpointBegin, Bytes::new())], None) {
            Ok((begin, _, done)) => Ok(Checkpoint::new(self.clone(), begin, done)),
            Err(e) => {
                self.inner.checkpoint_open.store(false, Ordering::Release);
                Err(e)
            }
        }
    }

    /// Reads the data or checkpoint entry at `lsn`, if it is stored.
    pub async fn read(&self, lsn: Lsn) -> Result<Option<Entry>> {
        let limit = ReadLimit {
            max_records: 1,
            max_bytes: 1,
        };
        let records = self.read_chunk(lsn, limit).await?;
        Ok(records
            .into_iter()
            .next()
            .filter(|r| r.lsn == lsn)
            .and_then(Record::into_entry))
    }

    /// Streams the stored data and checkpoint entries from `lsn` on, in Lsn
    /// order, up to the end of the log at the time each chunk is read.
    /// Checkpoint markers are skipped; entries of aborted checkpoints are
    /// included (this is the raw log, not the recovery view).
    pub fn read_from(&self, lsn: Lsn) -> BoxStream<'static, Result<Entry>> {
        recovery::entries(recovery::records(self.clone(), lsn, None, false))
    }

    /// Like [`read_from`](Self::read_from), but waits for new entries at the
    /// end instead of ending. Ends with an error when the Wal is closed or
    /// poisoned.
    pub fn tail(&self, lsn: Lsn) -> BoxStream<'static, Result<Entry>> {
        recovery::entries(recovery::records(self.clone(), lsn, None, true))
    }

    /// Durably removes every record after `lsn`. Later appends still get new
    /// Lsns: the cut Lsns are never reused. Refused with
    /// [`Error::TruncateBelowCheckpoint`] if it would cut the last committed
    /// checkpoint, and with [`Error::CheckpointInProgress`] while one is open.
    pub async fn truncate_after(&self, lsn: Lsn) -> Result<()> {
        if self.inner.checkpoint_open.load(Ordering::Acquire) {
            return Err(Error::CheckpointInProgress);
        }
        let (reply, rx) = oneshot::channel();
        self.send_with_lsn(1, |marker, _| {
            Op::Maintenance(Maintenance::Truncate {
                after: lsn,
                marker,
                reply,
            })
        })?;
        self.await_reply(rx).await
    }

    /// Asks the store to drop records below `lsn`, never below what recovery
    /// needs (it clamps to the last committed checkpoint's begin, an open
    /// checkpoint, and the last record). Returns the clamped point. The store
    /// may keep more.
    pub async fn trim_before(&self, lsn: Lsn) -> Result<Lsn> {
        let (reply, rx) = oneshot::channel();
        self.send(Op::Maintenance(Maintenance::Trim { before: lsn, reply }))?;
        self.await_reply(rx).await
    }

    /// Makes everything appended so far durable (for stores that do not sync
    /// every batch).
    pub async fn sync(&self) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.send(Op::Maintenance(Maintenance::Sync { reply }))?;
        self.await_reply(rx).await
    }

    /// Returns once every record up to `lsn` is durable: at once if
    /// [`durable_lsn`](Self::durable_lsn) is already there; otherwise after
    /// the record is written, syncing the store if its appends are not
    /// durable by themselves (wal-fs in `SyncMode::None`). With the default
    /// sync-every-batch stores this is the same wait as the record's own
    /// [`Completion`].
    ///
    /// Errors: [`Error::InvalidArgument`] for an Lsn this Wal has not handed
    /// out (it would never become durable); the Wal's error if it is
    /// poisoned or closed before `lsn` is durable.
    pub async fn wait_durable(&self, lsn: Lsn) -> Result<()> {
        let next = self
            .inner
            .submit
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .next_lsn;
        if lsn >= next {
            return Err(Error::InvalidArgument(format!(
                "wait_durable({lsn}): the next lsn to be handed out is {next}"
            )));
        }
        let status = self.inner.status.clone();
        let mut written = status.written.subscribe();
        let mut fault = status.fault.subscribe();
        loop {
            if *status.durable.borrow() >= lsn {
                return Ok(());
            }
            if let Some(e) = status.fault() {
                return Err(e);
            }
            if *status.written.borrow() >= lsn {
                // Written, not yet durable: a sync covers it.
                self.sync().await?;
                continue;
            }
            tokio::select! {
                r = written.wait_for(|w| *w >= lsn) => {
                    if r.is_err() {
                        return Err(status.terminal_error());
                    }
                }
                _ = fault.wait_for(Option::is_some) => {}
            }
        }
    }

    /// Drains queued operations, closes the store (releasing ownership: the
    /// directory lock, the etcd lease) and stops the controller. Works on a
    /// poisoned Wal too. Later calls get [`Error::Closed`].
    pub async fn close(&self) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        {
            // No health check: a poisoned Wal must still release its store.
            let s = self.inner.submit.lock().unwrap_or_else(|p| p.into_inner());
            s.tx.send(Op::Close { reply }).map_err(|_| Error::Closed)?;
        }
        let r = self.await_reply(rx).await;
        let task = self
            .inner
            .task
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(task) = task {
            let _ = task.await;
        }
        r
    }

    /// Resolves when the Wal stops accepting operations: with the poisoning
    /// error (e.g. [`Error::Fenced`] when an etcd lease is lost, or
    /// [`Error::Panicked`] when a store method panicked), or with
    /// [`Error::Closed`] (also when the controller went away unclosed, e.g.
    /// its runtime shut down).
    pub async fn failed(&self) -> Error {
        self.inner.status.stopped().await
    }

    /// Simulates a crash: stops the controller at once, without closing the
    /// store, aborting an open checkpoint or finishing queued operations.
    /// Only what was durable survives. For tests.
    #[cfg(feature = "testkit")]
    pub async fn simulate_crash(self) {
        let task = self
            .inner
            .task
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
    }

    // ---- internals ----

    fn health(&self) -> Result<()> {
        match self.inner.status.fault() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    pub(crate) fn check_entry_size(&self, payload: &Bytes) -> Result<()> {
        if payload.len() > self.inner.max_entry_bytes {
            return Err(Error::EntryTooLarge {
                size: payload.len(),
                max: self.inner.max_entry_bytes,
            });
        }
        Ok(())
    }

    /// Waits for queue budget, then assigns Lsns and queues the records as
    /// one atomic write. Returns the first and last Lsn.
    pub(crate) async fn enqueue(
        &self,
        items: Vec<(RecordKind, Bytes)>,
    ) -> Result<(Lsn, Lsn, Completion)> {
        self.health()?;
        let bytes: usize = items.iter().map(|(_, p)| p.len()).sum();
        let permits = bytes.clamp(1, self.inner.queue_cap) as u32;
        let permit = self
            .inner
            .queue
            .clone()
            .acquire_many_owned(permits)
            .await
            .map_err(|_| Error::Closed)?;
        self.inner.metrics.queue_depth();
        self.enqueue_now(items, Some(permit))
    }

    /// Queues without waiting for budget (for small markers, and from `Drop`).
    pub(crate) fn enqueue_now(
        &self,
        items: Vec<(RecordKind, Bytes)>,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Result<(Lsn, Lsn, Completion)> {
        let (reply, rx) = oneshot::channel();
        let count = items.len() as u64;
        let (first, last) = self.send_with_lsn(count, move |first, last| {
            let records = (first.get()..=last.get())
                .zip(items)
                .map(|(lsn, (kind, payload))| Record::new(Lsn(lsn), kind, payload))
                .collect::<Vec<_>>();
            Op::Write(WriteOp {
                records,
                reply,
                permit,
            })
        })?;
        Ok((first, last, Completion::new(rx, self.inner.status.clone())))
    }

    /// Assigns `count` consecutive Lsns to the op that `make` builds from the
    /// first and last of them, and sends it, atomically with respect to other
    /// submitters. Returns the first and last Lsn. If the Lsns would pass
    /// [`Lsn::LAST`], nothing is sent and nothing is assigned.
    fn send_with_lsn(&self, count: u64, make: impl FnOnce(Lsn, Lsn) -> Op) -> Result<(Lsn, Lsn)> {
        let mut s = self.inner.submit.lock().unwrap_or_else(|p| p.into_inner());
        self.health()?;
        let first = s.next_lsn;
        let exhausted = || Error::LsnExhausted {
            last: first.prev(),
            requested: count,
        };
        let Some(span) = count.checked_sub(1) else {
            return Err(Error::InvalidArgument("a write of no records".into()));
        };
        let last = first
            .checked_add(span)
            .filter(|last| *last <= Lsn::LAST)
            .ok_or_else(exhausted)?;
        // At most Lsn::MAX, since last <= Lsn::LAST.
        let next = last.checked_add(1).ok_or_else(exhausted)?;
        s.tx.send(make(first, last))
            .map_err(|_| self.inner.status.terminal_error())?;
        s.next_lsn = next;
        Ok((first, last))
    }

    fn send(&self, op: Op) -> Result<()> {
        self.health()?;
        let s = self.inner.submit.lock().unwrap_or_else(|p| p.into_inner());
        s.tx.send(op)
            .map_err(|_| self.inner.status.terminal_error())
    }

    async fn await_reply<T>(&self, rx: oneshot::Receiver<Result<T>>) -> Result<T> {
        match rx.await {
            Ok(r) => r,
            // The controller dropped the reply: it panicked or went away, and
            // records why as it stops.
            Err(_) => Err(self.inner.status.stopped().await),
        }
    }

    pub(crate) async fn read_chunk(&self, from: Lsn, limit: ReadLimit) -> Result<Vec<Record>> {
        if let Some(reader) = &self.inner.reader {
            // Beside the writer: no op, no wait for a batch. A poisoned or
            // closed Wal reads nothing, as through the controller.
            self.health()?;
            return reader.read_from(from, limit).await;
        }
        let (reply, rx) = oneshot::channel();
        self.send(Op::Maintenance(Maintenance::Read { from, limit, reply }))?;
        self.await_reply(rx).await
    }

    pub(crate) fn status(&self) -> &Arc<Status> {
        &self.inner.status
    }
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("durable_lsn", &self.durable_lsn())
            .field("fault", &self.inner.status.fault())
            .finish_non_exhaustive()
    }
}

/// Runs the controller of a blocking store on its own thread and
/// single-threaded runtime. The returned handle aborts and joins it like any
/// task; the thread ends when the controller does.
fn spawn_on_own_thread<F>(controller: F) -> Result<JoinHandle<()>>
where
    F: Future<Output = ()> + Send + 'static,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (finished, wait) = oneshot::channel::<()>();
    let task = runtime.spawn(async move {
        controller.await;
        drop(finished);
    });
    // If the task is aborted, `finished` is dropped with it and the thread
    // ends too.
    std::thread::Builder::new()
        .name("wal-controller".into())
        .spawn(move || {
            let _ = runtime.block_on(wait);
        })?;
    Ok(task)
}

#[cfg(test)]
mod tests {
    fn send_sync<T: Send + Sync>() {}

    #[test]
    fn handles_are_send_and_sync() {
        send_sync::<super::Wal>();
        send_sync::<super::Completion>();
    }
}
