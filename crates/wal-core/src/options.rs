//! Tuning knobs of the Wal itself (backends have their own).

/// Options for [`Wal::open`](crate::Wal::open). Every field documents its
/// default and unit.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct WalOptions {
    /// Largest payload of one entry, in bytes. The effective limit is the
    /// smaller of this and the store's own. Default: 16 MiB.
    pub max_entry_bytes: usize,
    /// A group-commit batch stops growing at this many payload bytes.
    /// Default: 4 MiB.
    pub max_batch_bytes: usize,
    /// A group-commit batch stops growing at this many records. Default: 4096.
    pub max_batch_records: usize,
    /// Payload bytes that may wait for the controller before callers are made
    /// to wait (backpressure). Default: 64 MiB.
    pub max_queued_bytes: usize,
    /// Records per read request during recovery and `read_from`. Default: 1024.
    pub read_chunk_records: usize,
    /// Payload bytes per read request during recovery and `read_from`.
    /// Default: 4 MiB.
    pub read_chunk_bytes: usize,
    /// The value of the `wal` label on every metric this Wal emits (feature
    /// `metrics`), to tell the logs of one process apart. Default: `"wal"`.
    pub metrics_name: String,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            max_entry_bytes: 16 << 20,
            max_batch_bytes: 4 << 20,
            max_batch_records: 4096,
            max_queued_bytes: 64 << 20,
            read_chunk_records: 1024,
            read_chunk_bytes: 4 << 20,
            metrics_name: "wal".to_string(),
        }
    }
}

impl WalOptions {
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
    /// Sets [`max_batch_records`](Self::max_batch_records).
    pub fn max_batch_records(mut self, v: usize) -> Self {
        self.max_batch_records = v;
        self
    }
    /// Sets [`max_queued_bytes`](Self::max_queued_bytes).
    pub fn max_queued_bytes(mut self, v: usize) -> Self {
        self.max_queued_bytes = v;
        self
    }
    /// Sets [`metrics_name`](Self::metrics_name).
    pub fn metrics_name(mut self, name: impl Into<String>) -> Self {
        self.metrics_name = name.into();
        self
    }
    /// Sets both read chunk bounds.
    pub fn read_chunk(mut self, records: usize, bytes: usize) -> Self {
        self.read_chunk_records = records;
        self.read_chunk_bytes = bytes;
        self
    }
}
