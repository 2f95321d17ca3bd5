//! [`EtcdReader`]: reads and follows a log without owning it.

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use etcd_client::{Client, WatchOptions, WatchStream};
use futures::stream::{self, BoxStream, StreamExt};
use wal_core::{Lsn, ReadLimit, Record, Result};

use crate::{
    client::Etcd,
    keys::{decode_head, KeyLayout},
    owner::{self, OwnerInfo},
    read, EtcdOptions,
};

/// A read-only view of a log that another process may own: a standby reads
/// and tails it, and takes over with [`EtcdStore`](crate::EtcdStore) and
/// [`Acquire::Wait`](crate::Acquire::Wait) when the owner goes away.
///
/// It sees only committed records (at or below the head key), never
/// deletes or repairs anything, and needs no lease.
///
/// ```no_run
/// use futures::StreamExt;
/// use wal_core::{Lsn, Wal, WalOptions};
/// use wal_etcd::{Acquire, EtcdOptions, EtcdReader, EtcdStore};
/// # use std::time::Duration;
///
/// # async fn standby() -> wal_core::Result<()> {
/// let options = EtcdOptions::new(["http://127.0.0.1:2379"], "orders");
/// let reader = EtcdReader::connect(options.clone()).await?;
/// let mut tail = reader.tail(Lsn(1));
/// while let Some(record) = tail.next().await {
///     let record = record?; // apply it to the standby's state...
///     # let _ = record;
///     # break;
/// }
/// // The primary is gone (or going): take over once its lease lapses.
/// let store = EtcdStore::new(options.acquire(Acquire::Wait(Duration::from_secs(30))));
/// let (wal, recovery) = Wal::open(store, WalOptions::default()).await?;
/// # drop((wal, recovery));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct EtcdReader {
    etcd: Etcd,
    keys: KeyLayout,
    options: EtcdOptions,
}

impl std::fmt::Debug for EtcdReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdReader")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl EtcdReader {
    /// Connects to the log `options.name`.
    pub async fn connect(options: EtcdOptions) -> Result<EtcdReader> {
        options.validate()?;
        let keys = KeyLayout::new(&options.prefix, &options.name)?;
        let etcd = Etcd::connect(&options).await?;
        Ok(EtcdReader {
            etcd,
            keys,
            options,
        })
    }

    /// A reader on an existing client.
    pub fn with_client(client: Client, options: EtcdOptions) -> Result<EtcdReader> {
        let keys = KeyLayout::new(&options.prefix, &options.name)?;
        Ok(EtcdReader {
            etcd: Etcd::from_client(client, options.request_timeout),
            keys,
            options,
        })
    }

    /// The last committed Lsn ([`Lsn::ZERO`] for an empty log), and the
    /// etcd revision it was read at.
    pub async fn head(&self) -> Result<(Lsn, i64)> {
        head(&self.etcd, &self.keys).await
    }

    /// The current owner, if any.
    pub async fn owner(&self) -> Result<Option<OwnerInfo>> {
        let resp = self.etcd.get("read owner", self.keys.owner(), None).await?;
        Ok(resp.kvs().first().map(OwnerInfo::from_kv))
    }

    /// Waits up to `timeout` until nobody owns the log. Returns whether it
    /// is vacant (another standby may still claim it first).
    pub async fn wait_vacant(&self, timeout: Duration) -> Result<bool> {
        let deadline = Instant::now() + timeout;
        loop {
            let resp = self.etcd.get("read owner", self.keys.owner(), None).await?;
            if resp.kvs().is_empty() {
                return Ok(true);
            }
            let rev = resp.header().map_or(0, |h| h.revision());
            if !owner::wait_vacant(&self.etcd, &self.keys, rev, deadline).await? {
                return Ok(false);
            }
        }
    }

    /// Committed records with Lsn >= `from`, in order, within `limit`.
    pub async fn read_from(&self, from: Lsn, limit: ReadLimit) -> Result<Vec<Record>> {
        let (h, _) = self.head().await?;
        read::read_committed(&self.etcd, &self.keys, &self.options.limits, from, h, limit).await
    }

    /// Every committed record with Lsn >= `from`, then each new one as it
    /// commits (an etcd watch on the head key, with a re-read every
    /// [`EtcdOptions::tail_poll`] as a safety net). Records are raw: data,
    /// checkpoint entries and the core's markers. The stream never ends; a
    /// failed read yields an error item and is retried after `tail_poll`.
    /// Records trimmed before the tail reaches them are skipped.
    pub fn tail(&self, from: Lsn) -> BoxStream<'static, Result<Record>> {
        let state = Tail {
            etcd: self.etcd.clone(),
            keys: self.keys.clone(),
            options: self.options.clone(),
            next: from,
            buffered: VecDeque::new(),
            watch: None,
            failed: false,
        };
        stream::unfold(state, |mut t| async move {
            let item = t.next().await;
            Some((item, t))
        })
        .boxed()
    }
}

async fn head(etcd: &Etcd, keys: &KeyLayout) -> Result<(Lsn, i64)> {
    let resp = etcd.get("read head", keys.head(), None).await?;
    let rev = resp.header().map_or(0, |h| h.revision());
    match resp.kvs().first() {
        Some(kv) => Ok((decode_head(kv.key(), kv.value())?, rev)),
        None => Ok((Lsn::ZERO, rev)),
    }
}

struct Tail {
    etcd: Etcd,
    keys: KeyLayout,
    options: EtcdOptions,
    next: Lsn,
    buffered: VecDeque<Record>,
    watch: Option<WatchStream>,
    failed: bool,
}

impl Tail {
    async fn next(&mut self) -> Result<Record> {
        loop {
            if let Some(r) = self.buffered.pop_front() {
                self.next = r.lsn.next();
                return Ok(r);
            }
            if std::mem::take(&mut self.failed) {
                tokio::time::sleep(self.options.tail_poll).await;
            }
            if let Err(e) = self.fill().await {
                self.failed = true;
                self.watch = None;
                return Err(e);
            }
        }
    }

    /// Reads what is committed from `next` on; if nothing is, waits for the
    /// head to move (or the poll interval).
    async fn fill(&mut self) -> Result<()> {
        let (h, rev) = head(&self.etcd, &self.keys).await?;
        if h >= self.next {
            let records = read::read_committed(
                &self.etcd,
                &self.keys,
                &self.options.limits,
                self.next,
                h,
                ReadLimit::default(),
            )
            .await?;
            if !records.is_empty() {
                self.buffered.extend(records);
                return Ok(());
            }
        }
        if self.watch.is_none() {
            let mut client = self.etcd.client.watch_client();
            let opts = WatchOptions::new().with_start_revision(rev + 1);
            self.watch = tokio::time::timeout(
                self.etcd.timeout,
                client.watch(self.keys.head(), Some(opts)),
            )
            .await
            .ok()
            .and_then(|r| r.ok());
        }
        let poll = self.options.tail_poll;
        match self.watch.as_mut() {
            Some(w) => match tokio::time::timeout(poll, w.message()).await {
                Ok(Ok(Some(resp))) if !resp.canceled() => {}
                Ok(_) => self.watch = None,
                Err(_) => {}
            },
            None => tokio::time::sleep(poll).await,
        }
        Ok(())
    }
}
