//! The backend contract.

use std::sync::Arc;

use async_trait::async_trait;
use futures::future::BoxFuture;

use crate::{Error, Lsn, Record, Result};

/// What a store holds, as reported by [`WalStore::open`] and after removals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreState {
    /// The first stored record, or `None` if the store is empty.
    pub first_lsn: Option<Lsn>,
    /// The last stored record, or `None` if the store is empty.
    pub last_lsn: Option<Lsn>,
}

/// Bounds on one [`WalStore::read_from`] call. A store returns at least one
/// record if any exists at or after the start, even if that record alone
/// exceeds `max_bytes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadLimit {
    /// At most this many records.
    pub max_records: usize,
    /// Stop adding records once their payloads reach this many bytes.
    pub max_bytes: usize,
}

impl Default for ReadLimit {
    fn default() -> Self {
        ReadLimit {
            max_records: 1024,
            max_bytes: 4 << 20,
        }
    }
}

/// The checks every [`WalStore::append`] makes before it writes a byte, in
/// one place for every backend: each record's Lsn above `after` (the last
/// Lsn the store holds or has ever handed out) and above the record before
/// it, each payload at most `max_entry` bytes, and all payloads together at
/// most `max_append` bytes. Returns the total payload bytes.
///
/// Errors: [`Error::InvalidArgument`] for an Lsn out of order (a bug in the
/// caller: the Wal never sends one), [`Error::EntryTooLarge`] for a payload
/// or a batch over its limit. Nothing is written when this fails.
///
/// ```
/// use wal_core::{check_append, Error, Lsn, Record, RecordKind};
/// let r = |lsn, p: &'static str| Record::new(Lsn(lsn), RecordKind::Data, p);
/// assert_eq!(check_append(&[r(3, "ab"), r(4, "c")], Lsn(2), 8, 8).unwrap(), 3);
/// assert!(matches!(check_append(&[r(2, "x")], Lsn(2), 8, 8), Err(Error::InvalidArgument(_))));
/// assert!(matches!(check_append(&[r(3, "too long")], Lsn(2), 4, 8), Err(Error::EntryTooLarge { .. })));
/// assert!(matches!(check_append(&[r(3, "abc"), r(4, "abc")], Lsn(2), 4, 5), Err(Error::EntryTooLarge { .. })));
/// ```
pub fn check_append(
    records: &[Record],
    after: Lsn,
    max_entry: usize,
    max_append: usize,
) -> Result<usize> {
    let mut prev = after;
    let mut total = 0usize;
    for r in records {
        if r.lsn <= prev {
            return Err(Error::InvalidArgument(format!(
                "append out of order: lsn {} after {prev}",
                r.lsn
            )));
        }
        if r.payload.len() > max_entry {
            return Err(Error::EntryTooLarge {
                size: r.payload.len(),
                max: max_entry,
            });
        }
        total = total.saturating_add(r.payload.len());
        prev = r.lsn;
    }
    if total > max_append {
        return Err(Error::EntryTooLarge {
            size: total,
            max: max_append,
        });
    }
    Ok(total)
}

/// A future that resolves if the store loses its ability to write (e.g. an
/// etcd lease expired). See [`WalStore::failure_signal`].
pub type FailureSignal = BoxFuture<'static, Error>;

/// When a store's appends become durable ([`WalStore::durability`]). In
/// every mode but `OnAppend`, an append (and its [`Completion`]) returns
/// once written, [`Wal::durable_lsn`](crate::Wal::durable_lsn) is the honest
/// watermark (it moves only on a successful sync), and
/// [`Wal::wait_durable`](crate::Wal::wait_durable) awaits a given Lsn. A
/// failed sync poisons the Wal, whoever issued it.
///
/// [`Completion`]: crate::Completion
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Durability {
    /// Each append is durable when it returns.
    OnAppend,
    /// The Wal syncs once the oldest unsynced append is this old (and at
    /// close): a power loss loses at most about this much acknowledged
    /// time. Checked between batches; with a busy controller a sync may
    /// come a batch later than the interval.
    Interval(std::time::Duration),
    /// The Wal syncs after a batch that brings the payload bytes written
    /// since the last sync to at least this many (and at close): a power
    /// loss loses at most about this many acknowledged bytes (plus one
    /// batch).
    Bytes(u64),
    /// Only when the application asks ([`Wal::sync`](crate::Wal::sync),
    /// [`Wal::wait_durable`](crate::Wal::wait_durable)) and at close.
    Manual,
}

impl Durability {
    /// True if an append is durable when it returns.
    pub fn on_append(self) -> bool {
        self == Durability::OnAppend
    }
}

/// A storage backend: an ordered, durable sequence of [`Record`]s owned by one
/// writer.
///
/// The [`Wal`](crate::Wal) drives a store from a single task, so methods take
/// `&mut self` and are never called concurrently. Backends store records
/// opaquely: they never interpret checkpoints.
///
/// Contract (checked by [`testkit`](crate#testkit)):
/// - [`open`](Self::open) claims exclusive ownership, or fails with
///   [`Error::Locked`]; every other method is called only after a successful open.
/// - [`append`](Self::append) receives records with strictly increasing Lsns,
///   all above every stored Lsn. When it returns `Ok`, all of them are durable
///   (written only, if [`durability`](Self::durability) says so: then
///   durable after the next successful [`sync`](Self::sync)); after a crash,
///   all or none of one call's records are found.
/// - Any error from a mutating method may leave the store in an unknown state;
///   the Wal stops using the store after it.
#[async_trait]
pub trait WalStore: Send + Sync + 'static {
    /// Claims exclusive ownership, repairs what the format allows (a torn
    /// tail), and reports what is stored.
    async fn open(&mut self) -> Result<StoreState>;

    /// The largest payload one record may carry, in bytes.
    fn max_payload_bytes(&self) -> usize;

    /// The largest total payload one `append` call may carry, in bytes. The
    /// Wal never builds a larger group-commit batch, and refuses an atomic
    /// batch above it with [`Error::EntryTooLarge`].
    fn max_append_bytes(&self) -> usize {
        usize::MAX
    }

    /// True if this store's methods block the calling thread on I/O (a file
    /// store doing `write` + `fdatasync` inline). The Wal then runs its
    /// controller on a dedicated thread with its own single-threaded runtime:
    /// the blocking never stalls the application's async workers, and a batch
    /// costs no extra thread hop. The default is `false`: methods are truly
    /// async and the controller is a task on the caller's runtime.
    fn blocking_io(&self) -> bool {
        false
    }

    /// When this store's appends become durable, and so when the Wal syncs
    /// it. The default, [`Durability::OnAppend`]: a successful
    /// [`append`](Self::append) is durable. A store configured to write
    /// without syncing (wal-fs with a `SyncMode` other than `EveryBatch`)
    /// answers one of the other modes: the Wal then advances
    /// [`Wal::durable_lsn`](crate::Wal::durable_lsn) only after a successful
    /// [`sync`](Self::sync), which it issues itself on the mode's timer or
    /// byte budget, so the watermark never claims more than was made
    /// durable.
    fn durability(&self) -> Durability {
        Durability::OnAppend
    }

    /// Durably appends `records`, atomically.
    async fn append(&mut self, records: &[Record]) -> Result<()>;

    /// Makes everything appended so far durable, for stores configured not to
    /// sync on every append. The default does nothing.
    async fn sync(&mut self) -> Result<()> {
        Ok(())
    }

    /// Reads records with Lsn >= `from`, in order, within `limit`. An empty
    /// result means there is nothing at or after `from`.
    async fn read_from(&mut self, from: Lsn, limit: ReadLimit) -> Result<Vec<Record>>;

    /// Like [`read_from`](Self::read_from), for a scan that looks only at
    /// marker records (the open-time scan for the last committed checkpoint).
    ///
    /// Returns every record with Lsn >= `from`, in order, exactly as
    /// `read_from` would, except that a store may return
    /// [`Data`](crate::RecordKind::Data) and
    /// [`Checkpoint`](crate::RecordKind::Checkpoint) records with an empty
    /// payload instead of reading and copying theirs. Marker records
    /// ([`RecordKind::is_marker`](crate::RecordKind::is_marker)) always come
    /// whole. No record may be left out: the caller checks that Lsns strictly
    /// increase and that the scan reaches the store's last Lsn.
    ///
    /// `limit` bounds the records returned with their payload as for
    /// `read_from`; a record returned with its payload omitted counts towards
    /// neither bound, so a store that omits payloads must cap how many such
    /// records one call returns itself, keeping memory bounded. As for
    /// `read_from`, an empty result means there is nothing at or after
    /// `from`. A store need not verify the payloads it omits if it has
    /// verified them already (e.g. while opening); `read_from` still must.
    ///
    /// The default calls `read_from`.
    async fn read_markers_from(&mut self, from: Lsn, limit: ReadLimit) -> Result<Vec<Record>> {
        self.read_from(from, limit).await
    }

    /// Removes records below `lsn`. The store may keep more (whole segments);
    /// it never removes a record at or above `lsn`.
    async fn remove_before(&mut self, lsn: Lsn) -> Result<StoreState>;

    /// Durably removes every record above `lsn`, then appends `high_water`: a
    /// [`RecordKind::Truncated`](crate::RecordKind::Truncated) marker whose Lsn
    /// is above every record the store held. The marker keeps a reopened log
    /// from handing out the cut Lsns again, so a store should make the cut and
    /// the marker atomic: after a crash it must not come back with records
    /// above `lsn` gone but `high_water` missing.
    async fn truncate_after(&mut self, lsn: Lsn, high_water: &Record) -> Result<StoreState>;

    /// Flushes and releases ownership. The store is not used afterwards.
    async fn close(&mut self) -> Result<()>;

    /// Called once after [`open`](Self::open): a future that resolves with the
    /// reason if the store loses the right to write on its own (e.g. a lease
    /// lapsed). The Wal then poisons itself with that error. The default never
    /// fires.
    fn failure_signal(&mut self) -> Option<FailureSignal> {
        None
    }

    /// Called once after [`open`](Self::open): a reader that serves
    /// [`Wal::read`](crate::Wal::read), [`read_from`](crate::Wal::read_from),
    /// [`tail`](crate::Wal::tail) and the recovery stream beside the writer,
    /// so a reader never waits for a batch's sync and never cuts a batch
    /// short. The default is `None`: reads are then ops of the controller,
    /// between batches, through [`read_from`](Self::read_from).
    fn reader(&self) -> Option<Arc<dyn StoreReader>> {
        None
    }
}

/// Reads a store beside its writer; see [`WalStore::reader`].
///
/// Contract (checked by [`testkit`](crate#testkit)):
/// - [`read_from`](Self::read_from) returns what [`WalStore::read_from`]
///   would return at some moment during the call: records with Lsn >=
///   `from`, in order, within `limit`, each one whole and byte-exact.
/// - Every record of an `append` call that returned `Ok` before `read_from`
///   was called is visible (read your writes); nothing is visible before its
///   `append` returned `Ok`, so a reader never hands out a record that a
///   crash could take back.
/// - Records a concurrent [`remove_before`](WalStore::remove_before) or
///   [`truncate_after`](WalStore::truncate_after) takes away are either
///   returned whole or not at all; such a race is never reported as
///   corruption.
/// - After [`close`](WalStore::close) it may fail with [`Error::Closed`].
#[async_trait]
pub trait StoreReader: Send + Sync + 'static {
    /// Reads records with Lsn >= `from`, in order, within `limit`. An empty
    /// result means there is nothing at or after `from`.
    async fn read_from(&self, from: Lsn, limit: ReadLimit) -> Result<Vec<Record>>;
}

#[async_trait]
impl<S: WalStore + ?Sized> WalStore for Box<S> {
    async fn open(&mut self) -> Result<StoreState> {
        (**self).open().await
    }
    fn max_payload_bytes(&self) -> usize {
        (**self).max_payload_bytes()
    }
    fn max_append_bytes(&self) -> usize {
        (**self).max_append_bytes()
    }
    fn blocking_io(&self) -> bool {
        (**self).blocking_io()
    }
    fn durability(&self) -> Durability {
        (**self).durability()
    }
    async fn append(&mut self, records: &[Record]) -> Result<()> {
        (**self).append(records).await
    }
    async fn sync(&mut self) -> Result<()> {
        (**self).sync().await
    }
    async fn read_from(&mut self, from: Lsn, limit: ReadLimit) -> Result<Vec<Record>> {
        (**self).read_from(from, limit).await
    }
    async fn read_markers_from(&mut self, from: Lsn, limit: ReadLimit) -> Result<Vec<Record>> {
        (**self).read_markers_from(from, limit).await
    }
    async fn remove_before(&mut self, lsn: Lsn) -> Result<StoreState> {
        (**self).remove_before(lsn).await
    }
    async fn truncate_after(&mut self, lsn: Lsn, high_water: &Record) -> Result<StoreState> {
        (**self).truncate_after(lsn, high_water).await
    }
    async fn close(&mut self) -> Result<()> {
        (**self).close().await
    }
    fn failure_signal(&mut self) -> Option<FailureSignal> {
        (**self).failure_signal()
    }
    fn reader(&self) -> Option<Arc<dyn StoreReader>> {
        (**self).reader()
    }
}
