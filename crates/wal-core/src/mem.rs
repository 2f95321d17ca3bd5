//! An in-memory store, for the core's own tests and for examples. It shares
//! its contents between clones, so a clone is "the same log opened again".

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, MutexGuard},
};

use async_trait::async_trait;

use crate::{
    store::{ReadLimit, StoreReader, StoreState},
    Error, Lsn, Record, Result, WalStore,
};

/// A fault to inject into a [`MemStore`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MemFault {
    /// The `n`th `append` from now (1 = the next one) fails with an I/O
    /// error before anything is written.
    FailAppend(u64),
    /// The `n`th `append` from now writes its records but fails to make them
    /// durable: they are lost at the next [`MemStore::crash`].
    FailSync(u64),
}

/// An in-memory [`WalStore`]. Clones share one log; only one clone may have
/// it open at a time ([`Error::Locked`] otherwise).
#[derive(Clone, Debug)]
pub struct MemStore {
    shared: Arc<Mutex<Shared>>,
    max_payload: usize,
    /// The generation this handle opened; a crash or close bumps the shared
    /// one, which fences this handle.
    opened: Option<u64>,
}

#[derive(Debug, Default)]
struct Shared {
    durable: BTreeMap<Lsn, Record>,
    volatile: BTreeMap<Lsn, Record>,
    owner: Option<u64>,
    generation: u64,
    appends: u64,
    faults: Vec<(u64, MemFault)>,
}

impl Default for MemStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemStore {
    /// An empty log. Largest payload: 16 MiB.
    pub fn new() -> MemStore {
        MemStore {
            shared: Arc::default(),
            max_payload: 16 << 20,
            opened: None,
        }
    }

    /// Sets the largest payload one record may carry, in bytes.
    pub fn with_max_payload(mut self, bytes: usize) -> MemStore {
        self.max_payload = bytes;
        self
    }

    /// Arms a fault.
    pub fn inject(&self, fault: MemFault) {
        let mut s = self.lock();
        let at = s.appends
            + match fault {
                MemFault::FailAppend(n) | MemFault::FailSync(n) => n,
            };
        s.faults.push((at, fault));
    }

    /// Simulates a machine crash: drops what was written but not durable,
    /// and releases ownership. The handle that had the log open is fenced.
    pub fn crash(&self) {
        let mut s = self.lock();
        s.volatile.clear();
        s.owner = None;
        s.generation += 1;
    }

    /// All durable records, for assertions.
    pub fn durable_records(&self) -> Vec<Record> {
        self.lock().durable.values().cloned().collect()
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn owned(&self) -> Result<MutexGuard<'_, Shared>> {
        let s = self.lock();
        match self.opened {
            Some(g) if s.owner == Some(g) => Ok(s),
            Some(_) => Err(Error::Fenced {
                reason: "memstore handle no longer owns the log".into(),
            }),
            None => Err(Error::Closed),
        }
    }
}

/// Durable records with Lsn >= `from`, within `limit`.
fn read_range(s: &Shared, from: Lsn, limit: ReadLimit) -> Vec<Record> {
    let mut out = Vec::new();
    let mut bytes = 0;
    for r in s.durable.range(from..) {
        if out.len() >= limit.max_records || (!out.is_empty() && bytes >= limit.max_bytes) {
            break;
        }
        bytes += r.1.payload.len();
        out.push(r.1.clone());
    }
    out
}

/// [`MemStore`]'s reader beside the writer: reads the shared log while the
/// handle that opened it still owns it.
struct MemReader {
    shared: Arc<Mutex<Shared>>,
    generation: u64,
}

#[async_trait]
impl StoreReader for MemReader {
    async fn read_from(&self, from: Lsn, limit: ReadLimit) -> Result<Vec<Record>> {
        let s = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        if s.owner != Some(self.generation) {
            return Err(Error::Closed);
        }
        Ok(read_range(&s, from, limit))
    }
}

fn state_of(s: &Shared) -> StoreState {
    StoreState {
        first_lsn: s.durable.keys().next().copied(),
        last_lsn: s.durable.keys().next_back().copied(),
    }
}

#[async_trait]
impl WalStore for MemStore {
    async fn open(&mut self) -> Result<StoreState> {
        let mut s = self.lock();
        if let Some(g) = s.owner {
            return Err(Error::Locked {
                holder: format!("memstore generation {g}"),
            });
        }
        s.generation += 1;
        let g = s.generation;
        s.owner = Some(g);
        let state = state_of(&s);
        drop(s);
        self.opened = Some(g);
        Ok(state)
    }

    fn max_payload_bytes(&self) -> usize {
        self.max_payload
    }

    async fn append(&mut self, records: &[Record]) -> Result<()> {
        let mut s = self.owned()?;
        s.appends += 1;
        let n = s.appends;
        let fault = s
            .faults
            .iter()
            .position(|(at, _)| *at == n)
            .map(|i| s.faults.remove(i).1);
        let last = s.durable.keys().next_back().copied().unwrap_or(Lsn::ZERO);
        crate::store::check_append(records, last, self.max_payload, usize::MAX)?;
        let io =
            |what: &str| Error::from(std::io::Error::other(format!("injected {what} failure")));
        match fault {
            Some(MemFault::FailAppend(_)) => Err(io("append")),
            Some(MemFault::FailSync(_)) => {
                s.volatile
                    .extend(records.iter().map(|r| (r.lsn, r.clone())));
                Err(io("sync"))
            }
            None => {
                s.durable.extend(records.iter().map(|r| (r.lsn, r.clone())));
                Ok(())
            }
        }
    }

    async fn read_from(&mut self, from: Lsn, limit: ReadLimit) -> Result<Vec<Record>> {
        Ok(read_range(&*self.owned()?, from, limit))
    }

    fn reader(&self) -> Option<Arc<dyn StoreReader>> {
        let generation = self.opened?;
        Some(Arc::new(MemReader {
            shared: self.shared.clone(),
            generation,
        }))
    }

    async fn remove_before(&mut self, lsn: Lsn) -> Result<StoreState> {
        let mut s = self.owned()?;
        s.durable = s.durable.split_off(&lsn);
        Ok(state_of(&s))
    }

    async fn truncate_after(&mut self, lsn: Lsn, high_water: &Record) -> Result<StoreState> {
        let mut s = self.owned()?;
        // Atomic: both happen under one lock.
        if let Some(above) = lsn.checked_add(1) {
            s.durable.split_off(&above);
        }
        s.durable.insert(high_water.lsn, high_water.clone());
        Ok(state_of(&s))
    }

    async fn close(&mut self) -> Result<()> {
        let mut s = self.owned()?;
        s.owner = None;
        drop(s);
        self.opened = None;
        Ok(())
    }
}

impl Drop for MemStore {
    /// A dropped handle releases the log, like a process whose file lock goes
    /// away with it.
    fn drop(&mut self) {
        if let Some(g) = self.opened {
            let mut s = self.lock();
            if s.owner == Some(g) {
                s.owner = None;
            }
        }
    }
}
