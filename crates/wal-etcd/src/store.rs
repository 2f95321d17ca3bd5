//! [`EtcdStore`]: the [`WalStore`] on etcd.

use async_trait::async_trait;
use bytes::Bytes;
use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, GetOptions, Txn, TxnOp, TxnOpResponse, TxnResponse,
};
use tracing::{debug, warn};
use wal_core::{Error, FailureSignal, Lsn, ReadLimit, Record, Result, StoreState, WalStore};

use crate::{
    client::Etcd,
    keepalive::OwnerLease,
    keys::{self, decode_head, encode_head, Descriptor, KeyLayout, PackBuilder, RecordValue},
    options::OP_OVERHEAD,
    owner::{self, owner_compare, owner_from_txn, FencingToken},
    read, EtcdOptions,
};

/// A write-ahead log stored in etcd, owned by one writer at a time.
///
/// [`open`](WalStore::open) claims the log (see the crate docs for the
/// protocol), removes what an interrupted append left above the head, and
/// reports what is stored. Use it through [`wal_core::Wal::open`]:
///
/// ```no_run
/// use wal_core::{Wal, WalOptions};
/// use wal_etcd::{EtcdOptions, EtcdStore};
///
/// # async fn run() -> wal_core::Result<()> {
/// let store = EtcdStore::new(EtcdOptions::new(["http://127.0.0.1:2379"], "orders"));
/// let (wal, recovery) = Wal::open(store, WalOptions::default()).await?;
/// // ... replay `recovery`, then:
/// wal.append(b"put a=1".to_vec()).await?; // a committed etcd txn
/// let lost = wal.failed(); // resolves with Error::Fenced if the lease is lost
/// # drop(lost); drop(recovery);
/// wal.close().await?; // revokes the lease: another writer may take over
/// # Ok(())
/// # }
/// ```
pub struct EtcdStore {
    options: EtcdOptions,
    client: Option<Client>,
    etcd: Option<Etcd>,
    owned: Option<Owned>,
}

/// State of a store that owns its log.
struct Owned {
    keys: KeyLayout,
    token: FencingToken,
    lease: OwnerLease,
    /// The last committed Lsn (the head key's value).
    head: Lsn,
    /// The head key's mod revision: appends compare it, so an append whose
    /// outcome is unknown can be made definitely void by bumping it.
    head_rev: i64,
    first: Option<Lsn>,
    last: Option<Lsn>,
}

impl Owned {
    fn state(&self) -> StoreState {
        StoreState {
            first_lsn: self.first,
            last_lsn: self.last,
        }
    }

    fn compares(&self) -> Vec<Compare> {
        vec![
            owner_compare(&self.keys, self.token),
            Compare::mod_revision(self.keys.head(), CompareOp::Equal, self.head_rev),
        ]
    }

    /// A txn guarded by this owner's token (and the head revision).
    fn fenced_txn(&self, ops: Vec<TxnOp>) -> Txn {
        Txn::new()
            .when(self.compares())
            .and_then(ops)
            .or_else([TxnOp::get(self.keys.owner(), None)])
    }

    fn fenced(&self, resp: &TxnResponse) -> Error {
        let reason = match owner_from_txn(resp) {
            Some(o) if o.token == self.token => format!(
                "the head key changed under fencing token {} (another process wrote this log)",
                self.token
            ),
            Some(o) => format!(
                "the log is now owned by {o}; this writer's token was {}",
                self.token
            ),
            None => format!(
                "the owner key is gone (lease expired or revoked); this writer's token was {}",
                self.token
            ),
        };
        Error::Fenced { reason }
    }
}

struct PutOp {
    key: Vec<u8>,
    value: Vec<u8>,
}

impl EtcdStore {
    /// A store for the log `options.name`; it connects and claims the log
    /// in [`open`](WalStore::open).
    pub fn new(options: EtcdOptions) -> EtcdStore {
        EtcdStore {
            options,
            client: None,
            etcd: None,
            owned: None,
        }
    }

    /// Like [`new`](Self::new), but on an existing client (its own connect
    /// options apply; `options.endpoints`, credentials and TLS are ignored).
    pub fn with_client(client: Client, options: EtcdOptions) -> EtcdStore {
        EtcdStore {
            options,
            client: Some(client),
            etcd: None,
            owned: None,
        }
    }

    /// The options.
    pub fn options(&self) -> &EtcdOptions {
        &self.options
    }

    /// This writer's fencing token, while it owns the log.
    pub fn fencing_token(&self) -> Option<FencingToken> {
        self.owned.as_ref().map(|o| o.token)
    }

    /// The id of the lease the owner key is attached to, while it owns the
    /// log.
    pub fn lease_id(&self) -> Option<i64> {
        self.owned.as_ref().map(|o| o.lease.id())
    }

    fn owned(&self) -> Result<(&Etcd, &Owned)> {
        match (&self.etcd, &self.owned) {
            (Some(e), Some(o)) => {
                if let Some(lost) = o.lease.lost() {
                    return Err(lost);
                }
                Ok((e, o))
            }
            _ => Err(Error::Fenced {
                reason: "the store is not open".into(),
            }),
        }
    }

    async fn connect(&mut self) -> Result<Etcd> {
        if let Some(e) = &self.etcd {
            return Ok(e.clone());
        }
        let etcd = match &self.client {
            Some(c) => Etcd::from_client(c.clone(), self.options.request_timeout),
            None => Etcd::connect(&self.options).await?,
        };
        self.etcd = Some(etcd.clone());
        Ok(etcd)
    }

    /// After a claim: removes the leftovers of an interrupted append (keys
    /// above the head), makes sure the head exists, and reads the bounds.
    async fn recover(
        &self,
        etcd: &Etcd,
        keys: &KeyLayout,
        token: FencingToken,
    ) -> Result<(Lsn, i64, StoreState)> {
        let head_key = keys.head();
        let resp = etcd.get("read head", head_key.clone(), None).await?;
        let head = match resp.kvs().first() {
            Some(kv) => decode_head(kv.key(), kv.value())?,
            None => {
                // A log is born with its head; records without one were not
                // written by this crate (or the head was deleted by hand).
                let any = etcd
                    .get(
                        "probe records",
                        keys.records_start(),
                        Some(
                            GetOptions::new()
                                .with_range(keys.records_end())
                                .with_keys_only()
                                .with_limit(1),
                        ),
                    )
                    .await?;
                if let Some(kv) = any.kvs().first() {
                    return Err(Error::Corrupt {
                        location: wal_core::Location::Key(String::from_utf8_lossy(&head_key).into_owned()),
                        why: format!(
                            "the head key is missing but record key {} exists; refusing to guess the commit point",
                            String::from_utf8_lossy(kv.key())
                        ),
                    });
                }
                Lsn::ZERO
            }
        };
        let mut ops = Vec::new();
        if head < Lsn::MAX {
            let above = head.next();
            ops.push(TxnOp::delete(
                keys.record(above),
                Some(DeleteOptions::new().with_range(keys.records_end())),
            ));
            ops.push(TxnOp::delete(
                keys.chunk_from(above),
                Some(DeleteOptions::new().with_range(keys.chunks_end())),
            ));
        }
        // Rewriting the head gives this owner a known head revision.
        ops.push(TxnOp::put(head_key, encode_head(head), None));
        let txn = Txn::new()
            .when([owner_compare(keys, token)])
            .and_then(ops)
            .or_else([TxnOp::get(keys.owner(), None)]);
        let resp = etcd.txn("open cleanup", txn).await?;
        if !resp.succeeded() {
            return Err(Error::Fenced {
                reason: format!(
                    "lost ownership while opening: {}",
                    owner_from_txn(&resp).map_or("owner key gone".into(), |o| o.to_string())
                ),
            });
        }
        let removed: i64 = resp
            .op_responses()
            .iter()
            .map(|r| match r {
                TxnOpResponse::Delete(d) => d.deleted(),
                _ => 0,
            })
            .sum();
        if removed > 0 {
            warn!(log = keys.base(), %head, removed, "removed keys of an uncommitted append above the head");
        }
        let head_rev = resp.header().map_or(0, |h| h.revision());
        let first = read::first_lsn(etcd, keys, head).await?;
        let last = match first {
            None => None,
            Some(_) => read::last_lsn(etcd, keys, read::committed_end(keys, head)).await?,
        };
        Ok((
            head,
            head_rev,
            StoreState {
                first_lsn: first,
                last_lsn: last,
            },
        ))
    }

    /// Encodes `records` as put ops: packs, and chunked records.
    fn encode(&self, keys: &KeyLayout, records: &[Record]) -> Vec<PutOp> {
        let limits = &self.options.limits;
        let threshold = limits.chunk_threshold();
        let mut ops = Vec::new();
        let mut pack = PackBuilder::new();
        let flush = |pack: PackBuilder, ops: &mut Vec<PutOp>| {
            if let Some((last, value)) = pack.finish() {
                ops.push(PutOp {
                    key: keys.record(last),
                    value: value.to_vec(),
                });
            }
        };
        for r in records {
            let len = r.payload.len();
            if len > threshold {
                flush(std::mem::replace(&mut pack, PackBuilder::new()), &mut ops);
                let chunk = limits.chunk_bytes.max(1);
                let pieces: Vec<Bytes> = (0..len)
                    .step_by(chunk)
                    .map(|at| r.payload.slice(at..(at + chunk).min(len)))
                    .collect();
                let d = Descriptor {
                    lsn: r.lsn,
                    kind: r.kind,
                    total_len: len as u64,
                    chunks: pieces.len() as u32,
                    payload_crc: crc32fast::hash(&r.payload),
                };
                for (i, p) in pieces.into_iter().enumerate() {
                    ops.push(PutOp {
                        key: keys.chunk(r.lsn, i as u32),
                        value: p.to_vec(),
                    });
                }
                ops.push(PutOp {
                    key: keys.record(r.lsn),
                    value: d.encode(),
                });
            } else {
                if !pack.is_empty() && pack.size_with(len) > limits.pack_bytes {
                    flush(std::mem::replace(&mut pack, PackBuilder::new()), &mut ops);
                }
                pack.push(r);
            }
        }
        flush(pack, &mut ops);
        ops
    }

    /// Splits put ops into txns that each leave room for the compares and
    /// the head put, within the op and byte limits.
    fn split(&self, keys: &KeyLayout, ops: Vec<PutOp>) -> Vec<Vec<PutOp>> {
        let limits = &self.options.limits;
        let head_cost = keys.head().len() + keys::HEAD_LEN + OP_OVERHEAD;
        let compare_cost = 2 * (keys.owner().len() + keys.head().len() + OP_OVERHEAD);
        let budget = limits.txn_budget().saturating_sub(head_cost + compare_cost);
        let max_ops = limits.max_txn_ops.saturating_sub(1).max(1);
        let mut groups = Vec::new();
        let mut cur: Vec<PutOp> = Vec::new();
        let mut bytes = 0usize;
        for op in ops {
            let cost = op.key.len() + op.value.len() + OP_OVERHEAD;
            if !cur.is_empty() && (cur.len() >= max_ops || bytes + cost > budget) {
                groups.push(std::mem::take(&mut cur));
                bytes = 0;
            }
            bytes += cost;
            cur.push(op);
        }
        if !cur.is_empty() {
            groups.push(cur);
        }
        groups
    }

    /// The final txn of an append did not answer: find out whether it
    /// landed by reading the head back; if it did not, bump the head's
    /// revision (fenced), so that it never can. Never re-sends the append.
    async fn resolve_unknown(&mut self, last: Lsn, cause: Error) -> Result<()> {
        let (etcd, owned) = match (&self.etcd, &self.owned) {
            (Some(e), Some(o)) => (e.clone(), o),
            _ => return Err(cause),
        };
        let keys = owned.keys.clone();
        let (token, head, head_rev) = (owned.token, owned.head, owned.head_rev);
        let unknown = |why: String| {
            Error::Unavailable(format!(
                "outcome of the append up to lsn {last} is unknown ({cause}); {why}"
            ))
        };
        for _ in 0..3 {
            let read = Txn::new().and_then([
                TxnOp::get(keys.owner(), None),
                TxnOp::get(keys.head(), None),
            ]);
            let resp = match etcd.txn("read back head", read).await {
                Ok(r) => r,
                Err(f) => return Err(unknown(format!("reading it back failed: {}", f.error))),
            };
            let gets: Vec<_> = resp
                .op_responses()
                .into_iter()
                .filter_map(|r| match r {
                    TxnOpResponse::Get(g) => Some(g),
                    _ => None,
                })
                .collect();
            let owner_kv = gets.first().and_then(|g| g.kvs().first());
            if owner_kv.map(|kv| kv.create_revision()) != Some(token.0) {
                return Err(Error::Fenced {
                    reason: format!(
                        "ownership lost while the outcome of the append up to lsn {last} was unknown ({cause})"
                    ),
                });
            }
            let Some(head_kv) = gets.get(1).and_then(|g| g.kvs().first()) else {
                return Err(unknown("the head key is gone".into()));
            };
            let now = decode_head(head_kv.key(), head_kv.value())?;
            if head_kv.mod_revision() != head_rev {
                if now == last {
                    debug!(%last, "append outcome resolved by read-back: committed");
                    if let Some(o) = self.owned.as_mut() {
                        o.head = last;
                        o.head_rev = head_kv.mod_revision();
                    }
                    return Ok(());
                }
                return Err(Error::Unavailable(format!(
                    "the append up to lsn {last} did not commit ({cause}); the wal must be reopened"
                )));
            }
            // Not landed yet: make sure it never does.
            let bump = Txn::new()
                .when([
                    owner_compare(&keys, token),
                    Compare::mod_revision(keys.head(), CompareOp::Equal, head_rev),
                ])
                .and_then([TxnOp::put(keys.head(), encode_head(head), None)]);
            match etcd.txn("void unknown append", bump).await {
                Ok(r) if r.succeeded() => {
                    if let Some(o) = self.owned.as_mut() {
                        o.head_rev = r.header().map_or(o.head_rev, |h| h.revision());
                    }
                    return Err(Error::Unavailable(format!(
                        "the append up to lsn {last} did not commit ({cause}); the wal must be reopened"
                    )));
                }
                // It landed meanwhile, or we were fenced: read again.
                Ok(_) => continue,
                Err(f) if f.outcome_known => return Err(unknown(f.error.to_string())),
                Err(_) => continue,
            }
        }
        Err(unknown("read-back did not settle it".into()))
    }
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("options", &self.options)
            .field("token", &self.fencing_token())
            .field("lease", &self.lease_id())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl WalStore for EtcdStore {
    async fn open(&mut self) -> Result<StoreState> {
        if self.owned.is_some() {
            return Err(Error::InvalidArgument("the store is already open".into()));
        }
        self.options.validate()?;
        let keys = KeyLayout::new(&self.options.prefix, &self.options.name)?;
        self.options
            .limits
            .validate(keys.chunk(Lsn::MAX, u32::MAX).len())?;
        let etcd = self.connect().await?;
        let claim = owner::acquire(&etcd, &keys, &self.options).await?;
        let lease = OwnerLease::start(
            etcd.clone(),
            &keys,
            claim.token,
            claim.lease,
            self.options.lease_ttl,
            claim.granted_at,
        );
        match self.recover(&etcd, &keys, claim.token).await {
            Ok((head, head_rev, state)) => {
                debug!(log = keys.base(), %head, ?state, token = %claim.token, "opened");
                self.owned = Some(Owned {
                    keys,
                    token: claim.token,
                    lease,
                    head,
                    head_rev,
                    first: state.first_lsn,
                    last: state.last_lsn,
                });
                Ok(state)
            }
            Err(e) => {
                let _ = lease.release(&etcd).await;
                Err(e)
            }
        }
    }

    fn max_payload_bytes(&self) -> usize {
        self.options.limits.max_payload_bytes
    }

    fn max_append_bytes(&self) -> usize {
        self.options.limits.max_append_bytes
    }

    async fn append(&mut self, records: &[Record]) -> Result<()> {
        let r = self.append_inner(records).await;
        self.abandon_on_error(r).await
    }

    async fn read_from(&mut self, from: Lsn, limit: ReadLimit) -> Result<Vec<Record>> {
        let (etcd, owned) = self.owned()?;
        read::read_committed(
            etcd,
            &owned.keys,
            &self.options.limits,
            from,
            owned.head,
            limit,
        )
        .await
    }

    async fn remove_before(&mut self, lsn: Lsn) -> Result<StoreState> {
        let r = self.remove_before_inner(lsn).await;
        self.abandon_on_error(r).await
    }

    async fn truncate_after(&mut self, lsn: Lsn, high_water: &Record) -> Result<StoreState> {
        let r = self.truncate_after_inner(lsn, high_water).await;
        self.abandon_on_error(r).await
    }

    async fn close(&mut self) -> Result<()> {
        self.release().await;
        Ok(())
    }

    fn failure_signal(&mut self) -> Option<FailureSignal> {
        self.owned.as_ref().map(|o| o.lease.signal())
    }
}

impl EtcdStore {
    /// Revokes the lease (deleting the owner key) and forgets ownership.
    async fn release(&mut self) {
        if let (Some(owned), Some(etcd)) = (self.owned.take(), self.etcd.as_ref()) {
            if let Err(e) = owned.lease.release(etcd).await {
                warn!(log = owned.keys.base(), error = %e, "could not revoke the owner lease; it lapses after its TTL");
            }
        }
    }

    /// After a failed mutation the Wal never uses this store again (it is
    /// poisoned), so hand the log over at once instead of holding it until
    /// every Wal handle is dropped: a successor (or this process, reopening)
    /// need not wait for the TTL. In-flight txns stay fenced by the token.
    async fn abandon_on_error<T>(&mut self, r: Result<T>) -> Result<T> {
        if let Err(e) = &r {
            if let Some(o) = &self.owned {
                warn!(log = o.keys.base(), error = %e, "mutation failed; releasing ownership");
            }
            self.release().await;
        }
        r
    }

    async fn append_inner(&mut self, records: &[Record]) -> Result<()> {
        let (etcd, owned) = self.owned()?;
        let Some(last) = records.last().map(|r| r.lsn) else {
            return Ok(());
        };
        let max = self.options.limits.max_payload_bytes;
        let mut prev = owned.last.unwrap_or(Lsn::ZERO).max(owned.head);
        let mut total = 0usize;
        for r in records {
            if r.lsn <= prev {
                return Err(Error::InvalidArgument(format!(
                    "append out of order: lsn {} after {prev}",
                    r.lsn
                )));
            }
            if r.payload.len() > max {
                return Err(Error::EntryTooLarge {
                    size: r.payload.len(),
                    max,
                });
            }
            total += r.payload.len();
            prev = r.lsn;
        }
        if total > self.options.limits.max_append_bytes {
            return Err(Error::EntryTooLarge {
                size: total,
                max: self.options.limits.max_append_bytes,
            });
        }
        let etcd = etcd.clone();
        let keys = owned.keys.clone();
        let groups = self.split(&keys, self.encode(&keys, records));
        let n = groups.len();
        for (i, group) in groups.into_iter().enumerate() {
            let Some(owned) = self.owned.as_ref() else {
                return Err(Error::Closed);
            };
            let final_txn = i + 1 == n;
            let mut ops: Vec<TxnOp> = group
                .into_iter()
                .map(|p| TxnOp::put(p.key, p.value, None))
                .collect();
            if final_txn {
                // The commit point: the whole append becomes visible here.
                ops.push(TxnOp::put(keys.head(), encode_head(last), None));
            }
            let txn = owned.fenced_txn(ops);
            match etcd.txn("append", txn).await {
                Ok(resp) if resp.succeeded() => {
                    if final_txn {
                        if let Some(o) = self.owned.as_mut() {
                            o.head = last;
                            o.head_rev = resp.header().map_or(o.head_rev, |h| h.revision());
                            o.first = o.first.or(records.first().map(|r| r.lsn));
                            o.last = Some(last);
                        }
                    }
                }
                Ok(resp) => return Err(owned.fenced(&resp)),
                Err(f) if f.outcome_known => return Err(f.error),
                Err(f) if !final_txn => {
                    return Err(Error::Unavailable(format!(
                        "{}; txn {} of {n} of the append up to lsn {last} failed before its commit point, \
                         so none of it is committed",
                        match &f.error {
                            Error::Unavailable(why) => why.clone(),
                            other => other.to_string(),
                        },
                        i + 1
                    )))
                }
                Err(f) => return self.resolve_unknown(last, f.error).await,
            }
        }
        Ok(())
    }

    async fn remove_before_inner(&mut self, lsn: Lsn) -> Result<StoreState> {
        let (etcd, owned) = self.owned()?;
        let keys = &owned.keys;
        let ops = vec![
            TxnOp::delete(
                keys.records_start(),
                Some(DeleteOptions::new().with_range(keys.record(lsn))),
            ),
            TxnOp::delete(
                keys.chunks_start(),
                Some(DeleteOptions::new().with_range(keys.chunk_from(lsn))),
            ),
            TxnOp::get(
                keys.records_start(),
                Some(
                    GetOptions::new()
                        .with_range(read::committed_end(keys, owned.head))
                        .with_limit(1),
                ),
            ),
        ];
        let txn = Txn::new()
            .when([owner_compare(keys, owned.token)])
            .and_then(ops)
            .or_else([TxnOp::get(keys.owner(), None)]);
        let resp = etcd.txn("remove records", txn).await?;
        if !resp.succeeded() {
            return Err(owned.fenced(&resp));
        }
        let mut first = None;
        for r in resp.op_responses() {
            if let TxnOpResponse::Get(g) = r {
                if let Some(kv) = g.kvs().first() {
                    let key_lsn = keys.parse_record(kv.key())?;
                    let value = Bytes::copy_from_slice(kv.value());
                    first = match keys::decode_record_value(kv.key(), key_lsn, &value)? {
                        RecordValue::Pack(rs) => rs.first().map(|r| r.lsn),
                        RecordValue::Chunked(d) => Some(d.lsn),
                    };
                }
            }
        }
        if let Some(o) = self.owned.as_mut() {
            o.first = first;
            if first.is_none() {
                o.last = None;
            }
            return Ok(o.state());
        }
        Err(Error::Closed)
    }

    /// One fenced txn: delete everything above `lsn`, rewrite the pack that
    /// straddles the cut, put the `high_water` marker and move head to it. So
    /// the cut and the marker land together or not at all.
    async fn truncate_after_inner(&mut self, lsn: Lsn, high_water: &Record) -> Result<StoreState> {
        let (etcd, owned) = self.owned()?;
        if owned.last.is_none_or(|l| l <= lsn) && owned.head <= lsn {
            return self
                .append_inner(std::slice::from_ref(high_water))
                .await
                .map(|()| self.owned.as_ref().map(|o| o.state()).unwrap_or_default());
        }
        let keys = owned.keys.clone();
        let etcd = etcd.clone();
        let cut = keys.record(lsn.next());
        let end = read::committed_end(&keys, owned.head);
        // The pack holding lsn + 1 may also hold records at or below lsn.
        let mut resp = etcd
            .get(
                "read pack at cut",
                cut.clone(),
                Some(GetOptions::new().with_range(end).with_limit(1)),
            )
            .await?;
        let mut rewrite = None;
        if let Some(kv) = resp.take_kvs().into_iter().next() {
            let (key, value) = kv.into_key_value();
            let key_lsn = keys.parse_record(&key)?;
            if let RecordValue::Pack(rs) =
                keys::decode_record_value(&key, key_lsn, &Bytes::from(value))?
            {
                let mut pack = PackBuilder::new();
                for r in rs.iter().filter(|r| r.lsn <= lsn) {
                    pack.push(r);
                }
                rewrite = pack.finish();
            }
        }
        let Some(owned) = self.owned.as_ref() else {
            return Err(Error::Closed);
        };
        let mut marker_pack = PackBuilder::new();
        marker_pack.push(high_water);
        let Some((marker_lsn, marker_value)) = marker_pack.finish() else {
            return Err(Error::InvalidArgument(
                "empty high-water marker pack".into(),
            ));
        };
        let new_head = marker_lsn;
        // etcd refuses a txn that puts a key inside one of its delete ranges,
        // so the record range is deleted on both sides of the marker's key
        // (the marker's Lsn is above every stored record).
        let marker_key = keys.record(marker_lsn);
        let mut after_marker = marker_key.clone();
        after_marker.push(0);
        let mut ops = vec![
            TxnOp::delete(
                cut,
                Some(DeleteOptions::new().with_range(marker_key.clone())),
            ),
            TxnOp::delete(
                after_marker,
                Some(DeleteOptions::new().with_range(keys.records_end())),
            ),
            TxnOp::delete(
                keys.chunk_from(lsn.next()),
                Some(DeleteOptions::new().with_range(keys.chunks_end())),
            ),
        ];
        if let Some((l, value)) = rewrite {
            ops.push(TxnOp::put(keys.record(l), value.to_vec(), None));
        }
        ops.push(TxnOp::put(marker_key, marker_value.to_vec(), None));
        ops.push(TxnOp::put(keys.head(), encode_head(new_head), None));
        let resp = etcd.txn("truncate", owned.fenced_txn(ops)).await?;
        if !resp.succeeded() {
            return Err(owned.fenced(&resp));
        }
        let Some(o) = self.owned.as_mut() else {
            return Err(Error::Closed);
        };
        o.head = new_head;
        o.head_rev = resp.header().map_or(o.head_rev, |h| h.revision());
        o.last = Some(marker_lsn);
        o.first = match o.first {
            Some(f) if f <= lsn => Some(f),
            _ => Some(marker_lsn),
        };
        Ok(o.state())
    }
}
