//! [`EtcdReader`]: reads and follows a log without owning it.

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use bytes::Bytes;
use etcd_client::{Client, GetOptions, WatchOptions, WatchStream};
use futures::stream::{self, BoxStream, StreamExt};
use wal_core::{Error, Lsn, ReadLimit, Record, Result};

use crate::{
    client::Etcd,
    error::call,
    keys::{decode_record_value, KeyLayout, RecordValue},
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
        let mut pause = owner::RetryPause::new();
        loop {
            let resp = self.etcd.get("read owner", self.keys.owner(), None).await?;
            if resp.kvs().is_empty() {
                return Ok(true);
            }
            let rev = resp.header().map_or(0, |h| h.revision());
            match owner::wait_vacant(&self.etcd, &self.keys, rev, deadline).await? {
                owner::Vacancy::Vacant => pause.reset(),
                owner::Vacancy::WatchBroke => {
                    if let Some(p) = pause.next(deadline) {
                        tokio::time::sleep(p).await;
                    }
                }
                owner::Vacancy::TimedOut => return Ok(false),
            }
        }
    }

    /// The seconds left on lease `id` (e.g. [`OwnerInfo::lease`]), or `None`
    /// if the lease has expired or never existed. Read-only.
    pub async fn lease_ttl(&self, id: i64) -> Result<Option<Duration>> {
        let mut lease = self.etcd.client.lease_client();
        let resp = call(
            "lease time-to-live",
            self.etcd.timeout,
            lease.time_to_live(id, None),
        )
        .await?;
        Ok(u64::try_from(resp.ttl()).ok().map(Duration::from_secs))
    }

    /// Reads every committed record key of the log once, at one etcd
    /// revision (a consistent snapshot), decoding and checking each value:
    /// the tool behind `walctl inspect` and `walctl verify`. Unlike
    /// [`read_from`](Self::read_from) it does not stop at the first bad
    /// value: every committed record goes to `visit` with the record key
    /// that holds it, in Lsn order; every key that fails to decode or to
    /// match its checksum (or breaks Lsn order) is skipped and listed in
    /// [`ScanReport::problems`], and the scan goes on. Keys above the head (an append that never reached its
    /// commit point, which the next owner deletes) are counted, not read.
    /// Changes nothing; etcd errors (unreachable, compacted) end the scan.
    pub async fn scan<F>(&self, mut visit: F) -> Result<ScanReport>
    where
        F: FnMut(&str, Record),
    {
        let (head, revision) = self.head().await?;
        let keys = &self.keys;
        let count = |start: Vec<u8>, end: Vec<u8>, what: &'static str| {
            let etcd = self.etcd.clone();
            async move {
                let resp = etcd
                    .get(
                        what,
                        start,
                        Some(
                            GetOptions::new()
                                .with_range(end)
                                .with_count_only()
                                .with_revision(revision),
                        ),
                    )
                    .await?;
                Ok::<u64, Error>(u64::try_from(resp.count()).unwrap_or(0))
            }
        };
        let committed_end = read::committed_end(keys, head);
        let mut report = ScanReport {
            head,
            revision,
            ..ScanReport::default()
        };
        if head < Lsn::MAX {
            let above = head.next();
            report.uncommitted_record_keys = count(
                keys.record(above),
                keys.records_end(),
                "count uncommitted record keys",
            )
            .await?;
            report.uncommitted_chunk_keys = count(
                keys.chunk_from(above),
                keys.chunks_end(),
                "count uncommitted chunk keys",
            )
            .await?;
        }
        let limits = &self.options.limits;
        let page = (limits.read_bytes / limits.pack_bytes.max(1)).clamp(1, 1024) as i64;
        let mut start = Some(keys.records_start());
        let mut prev = Lsn::ZERO;
        while let Some(from_key) = start.take() {
            let (kvs, next) = read::range_page(
                &self.etcd,
                "scan records",
                from_key,
                &committed_end,
                page,
                revision,
            )
            .await?;
            start = next;
            for kv in kvs {
                let (key, value) = kv.into_key_value();
                report.record_keys += 1;
                let name = String::from_utf8_lossy(&key).into_owned();
                let decoded = match keys.parse_record(&key) {
                    Ok(key_lsn) => decode_record_value(&key, key_lsn, &Bytes::from(value)),
                    Err(e) => Err(e),
                };
                let records = match decoded {
                    Ok(RecordValue::Pack(records)) => Ok(records),
                    Ok(RecordValue::Chunked(d)) => {
                        read::read_chunks(&self.etcd, keys, limits, &key, &d, revision)
                            .await
                            .map(|(r, n)| {
                                report.chunk_keys += n;
                                vec![r]
                            })
                    }
                    Err(e) => Err(e),
                };
                match records {
                    Ok(records) => {
                        if let Some(first) = records.first().filter(|r| r.lsn <= prev) {
                            let why = format!(
                                "holds lsn {} but an earlier key already reached lsn {prev}",
                                first.lsn
                            );
                            report.problems.push(KeyProblem { key: name, why });
                            continue;
                        }
                        for r in records {
                            prev = r.lsn;
                            report.records += 1;
                            report.payload_bytes += r.payload.len() as u64;
                            report.first_lsn.get_or_insert(r.lsn);
                            report.last_lsn = Some(r.lsn);
                            visit(&name, r);
                        }
                    }
                    Err(Error::Corrupt { why, .. }) => {
                        report.problems.push(KeyProblem { key: name, why });
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(report)
    }

    /// Committed records with Lsn >= `from`, in order, within `limit`, all
    /// read at one etcd revision (a compaction of it restarts the read at a
    /// newer one, keeping what was read). If records from `from` on were
    /// trimmed away, fails with [`Error::Trimmed`] (carrying the first Lsn
    /// still stored) rather than skipping them; [`Lsn::ZERO`] asks for
    /// whatever is stored first. An Lsn in a gap that a truncation left
    /// (below its high-water marker) is not trimmed unless records below it
    /// were trimmed too.
    pub async fn read_from(&self, from: Lsn, limit: ReadLimit) -> Result<Vec<Record>> {
        read::read_following(
            &self.etcd,
            &self.keys,
            &self.options.limits,
            from,
            None,
            limit,
        )
        .await
    }

    /// Every committed record with Lsn >= `from`, then each new one as it
    /// commits (an etcd watch on the head key, with a re-read every
    /// [`EtcdOptions::tail_poll`] as a safety net). Records are raw: data,
    /// checkpoint entries and the core's markers. The stream never ends; a
    /// failed read yields an error item and is retried after `tail_poll`,
    /// except [`Error::Trimmed`] (records trimmed before the tail reached
    /// them): the stream yields it and ends.
    /// [`Lsn::ZERO`] starts at whatever is stored first.
    pub fn tail(&self, from: Lsn) -> BoxStream<'static, Result<Record>> {
        let state = Tail {
            etcd: self.etcd.clone(),
            keys: self.keys.clone(),
            options: self.options.clone(),
            next: from,
            buffered: VecDeque::new(),
            watch: None,
            failed: false,
            ended: false,
        };
        stream::unfold(state, |mut t| async move {
            if t.ended {
                return None;
            }
            let item = t.next().await;
            t.ended = matches!(item, Err(Error::Trimmed { .. }));
            Some((item, t))
        })
        .boxed()
    }
}

/// A key [`EtcdReader::scan`] could not read as committed records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyProblem {
    /// The etcd key (the record key; a chunked record's problems are
    /// reported under its descriptor key).
    pub key: String,
    /// What is wrong: checksum mismatch, bad encoding, missing chunks, Lsn
    /// out of order.
    pub why: String,
}

impl std::fmt::Display for KeyProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "key {:?}: {}", self.key, self.why)
    }
}

/// The totals of one [`EtcdReader::scan`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScanReport {
    /// The head (last committed Lsn) the scan read up to.
    pub head: Lsn,
    /// The etcd revision every read of the scan was made at.
    pub revision: i64,
    /// Committed record keys (packs and chunked-record descriptors),
    /// readable or not.
    pub record_keys: u64,
    /// Chunk keys of committed chunked records.
    pub chunk_keys: u64,
    /// Records read.
    pub records: u64,
    /// Their payload bytes.
    pub payload_bytes: u64,
    /// The first record's Lsn.
    pub first_lsn: Option<Lsn>,
    /// The last record's Lsn.
    pub last_lsn: Option<Lsn>,
    /// Record keys above the head: an append that never reached its commit
    /// point. Invisible to readers; the next owner deletes them on open.
    pub uncommitted_record_keys: u64,
    /// Chunk keys above the head, likewise.
    pub uncommitted_chunk_keys: u64,
    /// Every committed key that could not be read.
    pub problems: Vec<KeyProblem>,
}

async fn head(etcd: &Etcd, keys: &KeyLayout) -> Result<(Lsn, i64)> {
    read::read_head(etcd, keys).await
}

struct Tail {
    etcd: Etcd,
    keys: KeyLayout,
    options: EtcdOptions,
    next: Lsn,
    buffered: VecDeque<Record>,
    watch: Option<WatchStream>,
    failed: bool,
    /// The tail yielded [`Error::Trimmed`]: it cannot go on.
    ended: bool,
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
            let records = read::read_following(
                &self.etcd,
                &self.keys,
                &self.options.limits,
                self.next,
                Some((h, rev)),
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
