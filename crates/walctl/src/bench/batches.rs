//! Group-commit batch sizes: a store wrapper that counts the records of
//! every `append` call (one call is one write + one `fdatasync` on wal-fs,
//! one txn on etcd), so a benchmark can report how full its batches were.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use hdrhistogram::Histogram;
use serde::Serialize;
use wal_core::{
    Durability, FailureSignal, Lsn, ReadLimit, Record, Result, StoreReader, StoreState, WalStore,
};

/// Records per `append` call, collected by [`Counting`].
#[derive(Clone)]
pub struct Batches(Arc<Mutex<Histogram<u64>>>);

impl Batches {
    /// An empty histogram (1 to 1M records per batch).
    pub fn new() -> anyhow::Result<Batches> {
        let h = Histogram::new_with_bounds(1, 1 << 20, 3)?;
        Ok(Batches(Arc::new(Mutex::new(h))))
    }

    fn record(&self, n: usize) {
        let mut h = self.0.lock().unwrap_or_else(|p| p.into_inner());
        h.saturating_record(u64::try_from(n).unwrap_or(u64::MAX).max(1));
    }

    /// The distribution so far.
    pub fn stats(&self) -> BatchStats {
        let h = self.0.lock().unwrap_or_else(|p| p.into_inner());
        BatchStats {
            batches: h.len(),
            mean: h.mean(),
            p10: h.value_at_quantile(0.1),
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            max: h.max(),
        }
    }
}

/// Entries per group-commit batch (per `fdatasync` on wal-fs, per txn on
/// etcd).
#[derive(Clone, Copy, Debug, Serialize)]
pub struct BatchStats {
    /// Batches (store `append` calls).
    pub batches: u64,
    /// Mean entries per batch.
    pub mean: f64,
    /// 10th percentile of entries per batch.
    pub p10: u64,
    /// Median entries per batch.
    pub p50: u64,
    /// 90th percentile of entries per batch.
    pub p90: u64,
    /// Largest batch.
    pub max: u64,
}

/// A store that counts the records of each `append` call into [`Batches`]
/// and otherwise is `S`.
pub struct Counting<S> {
    inner: S,
    batches: Batches,
}

impl<S> Counting<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, batches: Batches) -> Counting<S> {
        Counting { inner, batches }
    }
}

#[async_trait]
impl<S: WalStore> WalStore for Counting<S> {
    async fn open(&mut self) -> Result<StoreState> {
        self.inner.open().await
    }
    fn max_payload_bytes(&self) -> usize {
        self.inner.max_payload_bytes()
    }
    fn max_append_bytes(&self) -> usize {
        self.inner.max_append_bytes()
    }
    fn blocking_io(&self) -> bool {
        self.inner.blocking_io()
    }
    fn durability(&self) -> Durability {
        self.inner.durability()
    }
    async fn append(&mut self, records: &[Record]) -> Result<()> {
        let r = self.inner.append(records).await;
        if r.is_ok() {
            self.batches.record(records.len());
        }
        r
    }
    async fn sync(&mut self) -> Result<()> {
        self.inner.sync().await
    }
    async fn read_from(&mut self, from: Lsn, limit: ReadLimit) -> Result<Vec<Record>> {
        self.inner.read_from(from, limit).await
    }
    async fn read_markers_from(&mut self, from: Lsn, limit: ReadLimit) -> Result<Vec<Record>> {
        self.inner.read_markers_from(from, limit).await
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
        self.inner.failure_signal()
    }
    fn reader(&self) -> Option<Arc<dyn StoreReader>> {
        self.inner.reader()
    }
}
