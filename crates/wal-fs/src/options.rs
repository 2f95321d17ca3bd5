//! Tuning knobs of [`FsStore`](crate::FsStore). Every field documents its
//! default and unit.

/// When [`FsStore`](crate::FsStore) makes appended records durable: the
/// trade between an append's latency and how much a power loss may take.
///
/// In every mode but `EveryBatch` an append returns once written (to the
/// page cache), a process crash loses nothing, and a power loss may lose
/// acknowledged records written since the last sync.
/// [`Wal::durable_lsn`](wal_core::Wal::durable_lsn) is the honest watermark
/// (it moves only when a sync succeeds), and
/// [`Wal::wait_durable`](wal_core::Wal::wait_durable) awaits (and if need
/// be forces) the durability of one Lsn. A failed sync poisons the Wal.
/// Whatever the mode, nothing is deleted before what justifies the deletion
/// is durable: checkpoint cleanup and trim sync the active segment before
/// they unlink a segment, and `truncate_after` syncs before it cuts and
/// always syncs its high-water marker.
///
/// ```
/// use std::time::Duration;
/// use wal_fs::{FsOptions, SyncMode};
///
/// // At most ~10 ms of acknowledged appends at risk on power loss.
/// let timed = FsOptions::default().sync_mode(SyncMode::Interval(Duration::from_millis(10)));
/// // At most ~1 MiB of acknowledged payload at risk.
/// let budget = FsOptions::default().sync_mode(SyncMode::EveryBytes(1 << 20));
/// # let _ = (timed, budget);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum SyncMode {
    /// Every `append` call ends with one `fdatasync` of the active segment:
    /// an acknowledged append is durable. The default.
    #[default]
    EveryBatch,
    /// The Wal syncs once the oldest unsynced append is this old, so about
    /// this much acknowledged time is at risk. Between syncs, group commit
    /// costs no `fdatasync` at all.
    Interval(std::time::Duration),
    /// The Wal syncs after the batch that brings the payload written since
    /// the last sync to at least this many bytes.
    EveryBytes(u64),
    /// `append` only writes. Records become durable when the application
    /// calls [`Wal::sync`](wal_core::Wal::sync) or
    /// [`Wal::wait_durable`](wal_core::Wal::wait_durable), at a segment
    /// rotation, or on close.
    None,
}

impl SyncMode {
    /// The mode as the Wal's controller sees it.
    pub(crate) fn durability(self) -> wal_core::Durability {
        use wal_core::Durability;
        match self {
            SyncMode::EveryBatch => Durability::OnAppend,
            SyncMode::Interval(every) => Durability::Interval(every),
            SyncMode::EveryBytes(n) => Durability::Bytes(n),
            SyncMode::None => Durability::Manual,
        }
    }
}

/// Options for [`FsStore`](crate::FsStore).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct FsOptions {
    /// A segment file is closed and a new one started once the next append
    /// would take it past this size, in bytes. One append never spans two
    /// segments, so a single batch larger than this makes one larger
    /// segment. Default: 64 MiB.
    pub segment_bytes: u64,
    /// Allocate each segment's full size (`fallocate`) when it is created,
    /// so that `fdatasync` after an append does not also have to persist a
    /// new file size. Default: `true`.
    pub preallocate: bool,
    /// Largest payload of one record, in bytes; larger ones fail with
    /// [`Error::EntryTooLarge`](wal_core::Error::EntryTooLarge). At most
    /// 4 GiB - 1 (the length field is 32 bits). Default: 16 MiB.
    pub max_entry_bytes: usize,
    /// Largest total payload of one `append` call, in bytes (reported as
    /// [`WalStore::max_append_bytes`](wal_core::WalStore::max_append_bytes):
    /// the Wal's group-commit batches and atomic batches stay below it).
    /// Never below `max_entry_bytes`. Default: 64 MiB.
    pub max_batch_bytes: usize,
    /// When appends are made durable. Default: [`SyncMode::EveryBatch`].
    pub sync_mode: SyncMode,
    /// The in-memory index remembers the position of one record about every
    /// this many bytes of a segment, so `read_from` seeks close to its start
    /// without scanning. Smaller is faster to seek and uses more memory
    /// (16 bytes per entry). Default: 64 KiB.
    pub index_interval_bytes: u64,
}

impl Default for FsOptions {
    fn default() -> Self {
        FsOptions {
            segment_bytes: 64 << 20,
            preallocate: true,
            max_entry_bytes: 16 << 20,
            max_batch_bytes: 64 << 20,
            sync_mode: SyncMode::EveryBatch,
            index_interval_bytes: 64 << 10,
        }
    }
}

impl FsOptions {
    /// Sets [`segment_bytes`](Self::segment_bytes).
    pub fn segment_bytes(mut self, v: u64) -> Self {
        self.segment_bytes = v;
        self
    }
    /// Sets [`preallocate`](Self::preallocate).
    pub fn preallocate(mut self, v: bool) -> Self {
        self.preallocate = v;
        self
    }
    /// Sets [`max_entry_bytes`](Self::max_entry_bytes).
    pub fn max_entry_bytes(mut self, v: usize) -> Self {
        self.max_entry_bytes = v;
        self
    }
    /// Sets [`max_batch_bytes`](Self::max_batch_bytes).
    pub fn max_batch_bytes(mut self, v: usize) -> Self {
        self.max_batch_bytes = v;
        self
    }
    /// Sets [`sync_mode`](Self::sync_mode).
    pub fn sync_mode(mut self, v: SyncMode) -> Self {
        self.sync_mode = v;
        self
    }
    /// Sets [`index_interval_bytes`](Self::index_interval_bytes).
    pub fn index_interval_bytes(mut self, v: u64) -> Self {
        self.index_interval_bytes = v;
        self
    }

    /// The options with out-of-range values brought into range.
    pub(crate) fn normalized(&self) -> FsOptions {
        let mut o = self.clone();
        o.max_entry_bytes = o.max_entry_bytes.clamp(1, u32::MAX as usize);
        o.max_batch_bytes = o.max_batch_bytes.max(o.max_entry_bytes);
        o.segment_bytes = o.segment_bytes.max(crate::format::SEGMENT_HEADER_LEN + 64);
        o.index_interval_bytes = o.index_interval_bytes.max(1);
        o
    }
}
