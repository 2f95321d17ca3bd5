//! [`EtcdStore`]: the [`WalStore`] on etcd.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use async_trait::async_trait;
use bytes::Bytes;
use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, GetOptions, GetResponse, Txn, TxnOp, TxnOpResponse,
    TxnResponse,
};
use tracing::{debug, warn};
use wal_core::{
    Error, FailureSignal, Lsn, ReadLimit, Record, Result, StoreReader, StoreState, WalStore,
};

use crate::{
    client::Etcd,
    error::Failure,
    keepalive::OwnerLease,
    keys::{self, decode_head, encode_head, Descriptor, KeyLayout, PackBuilder, RecordValue},
    options::{EtcdLimits, OP_OVERHEAD},
    owner::{self, owner_compare, owner_from_txn, FencingToken, OwnerFence},
    read,
    session::EtcdSession,
    EtcdOptions,
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
    /// The session whose lease the owner key is claimed with, if any.
    session: Option<EtcdSession>,
    fence: OwnerFence,
    etcd: Option<Etcd>,
    owned: Option<Owned>,
    /// Why ownership was given up after a failed mutation, until the next
    /// open.
    abandoned: Option<Error>,
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
    /// `head`, published to the reader beside the writer.
    published_head: Arc<AtomicU64>,
}

impl Owned {
    /// What is stored. The last Lsn is the high-water mark: the last
    /// record, or the head if that is higher (every record up to the head
    /// was trimmed), so Lsns are never handed out twice.
    fn state(&self) -> StoreState {
        StoreState {
            first_lsn: self.first,
            last_lsn: high_water(self.last, self.head),
        }
    }

    /// An append up to `last` (starting at `first`) committed at `rev`.
    fn appended(&mut self, first: Option<Lsn>, last: Lsn, rev: i64) {
        self.head = last;
        self.published_head.store(last.get(), Ordering::Release);
        self.head_rev = rev;
        self.first = self.first.or(first);
        self.last = Some(last);
    }

    /// A truncate after `lsn`, with its marker at `marker`, committed at
    /// `rev`.
    fn truncated(&mut self, lsn: Lsn, marker: Lsn, rev: i64) {
        self.head = marker;
        self.published_head.store(marker.get(), Ordering::Release);
        self.head_rev = rev;
        self.last = Some(marker);
        self.first = match self.first {
            Some(f) if f <= lsn => Some(f),
            _ => Some(marker),
        };
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

/// The higher of the last record and the head (a head of zero is no Lsn).
fn high_water(last: Option<Lsn>, head: Lsn) -> Option<Lsn> {
    last.max((head > Lsn::ZERO).then_some(head))
}

/// An error's text without the "backend unavailable" preamble.
fn why(e: &Error) -> String {
    match e {
        Error::Unavailable(why) => why.clone(),
        other => other.to_string(),
    }
}

/// How a mutation whose final txn got no definite answer ended.
enum Resolved {
    /// It landed: the head reads `target`, at this revision.
    Committed(i64),
    /// It did not land, and never can (etcd answered it, or the head's
    /// revision was bumped so its compare fails).
    NotCommitted,
}

/// Pauses between attempts of a request etcd certainly did not apply.
const FIRST_PAUSE: Duration = Duration::from_millis(50);
const MAX_PAUSE: Duration = Duration::from_millis(500);

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
            session: None,
            fence: OwnerFence::default(),
            etcd: None,
            owned: None,
            abandoned: None,
        }
    }

    /// Like [`new`](Self::new), but on an existing client (its own connect
    /// options apply; `options.endpoints`, credentials and TLS are ignored).
    pub fn with_client(client: Client, options: EtcdOptions) -> EtcdStore {
        EtcdStore {
            options,
            client: Some(client),
            session: None,
            fence: OwnerFence::default(),
            etcd: None,
            owned: None,
            abandoned: None,
        }
    }

    /// A store for the log `options.name` that claims it with `session`'s
    /// lease instead of granting one of its own, over the session's client
    /// (`options.endpoints`, credentials, TLS and `lease_ttl` are ignored:
    /// the session's apply). The log is still claimed and fenced on its own
    /// (its own owner key and [`FencingToken`]); closing the store deletes
    /// its owner key and leaves the session alone; losing the session
    /// fences this store (see [`EtcdSession`]).
    pub fn with_session(session: EtcdSession, options: EtcdOptions) -> EtcdStore {
        EtcdStore {
            options,
            client: None,
            session: Some(session),
            fence: OwnerFence::default(),
            etcd: None,
            owned: None,
            abandoned: None,
        }
    }

    /// The session this store claims its log with, if any.
    pub fn session(&self) -> Option<&EtcdSession> {
        self.session.as_ref()
    }

    /// The fencing of this store's claims, for the application's own txns
    /// (see [`OwnerFence`]); a handle that outlives the store being moved
    /// into a [`Wal`](wal_core::Wal).
    pub fn fence(&self) -> OwnerFence {
        self.fence.clone()
    }

    /// The owner-key compare of the current claim (`None` before open):
    /// `self.fence().compare()`.
    pub fn fence_compare(&self) -> Option<Compare> {
        self.fence.compare()
    }

    /// The lease TTL in force: the session's, or the options'.
    fn lease_ttl(&self) -> Duration {
        self.session
            .as_ref()
            .map_or(self.options.lease_ttl, |s| s.ttl())
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
            _ => Err(match &self.abandoned {
                // Gave the log up after a failed mutation: say why, never
                // "closed" (the caller did not close it).
                Some(e) => e.clone().poisoned(),
                // Never opened, or closed: the same answer as every backend's.
                None => Error::Closed,
            }),
        }
    }

    async fn connect(&mut self) -> Result<Etcd> {
        if let Some(e) = &self.etcd {
            return Ok(e.clone());
        }
        let etcd = match (&self.session, &self.client) {
            (Some(s), _) => s.etcd().clone(),
            (None, Some(c)) => Etcd::from_client(c.clone(), self.options.request_timeout),
            (None, None) => Etcd::connect(&self.options).await?,
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

    /// How long one mutation keeps retrying requests etcd certainly did not
    /// apply, and keeps trying to read back an unknown outcome: one lease
    /// TTL (past it the lease is likely lost anyway).
    fn deadline(&self) -> Instant {
        Instant::now() + self.lease_ttl()
    }

    /// Sends `txn`, again and again while etcd certainly did not apply it
    /// (no leader, too many requests, connection refused), up to `deadline`
    /// and while the lease holds.
    async fn send(
        &self,
        what: &str,
        txn: &Txn,
        deadline: Instant,
    ) -> std::result::Result<TxnResponse, Failure> {
        let Some(etcd) = self.etcd.as_ref() else {
            return Err(Failure::from_error(Error::Closed));
        };
        let mut pause = FIRST_PAUSE;
        loop {
            match etcd.txn(what, txn.clone()).await {
                Err(f)
                    if f.retryable
                        && Instant::now() + pause < deadline
                        && self
                            .owned
                            .as_ref()
                            .is_some_and(|o| o.lease.lost().is_none()) =>
                {
                    debug!(error = %f.error, "{what}: not applied; sending it again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_PAUSE);
                }
                r => return r,
            }
        }
    }

    /// The owner key and the head key, read at one revision.
    async fn read_back(
        &self,
        etcd: &Etcd,
        keys: &KeyLayout,
    ) -> std::result::Result<[GetResponse; 2], Failure> {
        let owner = etcd.get("read back owner", keys.owner(), None).await?;
        let rev = owner.header().map_or(0, |h| h.revision());
        let at = GetOptions::new().with_revision(rev);
        let head = etcd.get("read back head", keys.head(), Some(at)).await?;
        Ok([owner, head])
    }

    /// A txn that moves the head to `target` got no definite answer: find
    /// out whether it landed by reading the head back. If it did not, make
    /// sure it never can: after a timeout by bumping the head's revision
    /// (its compare then fails); after a NOSPACE answer nothing is needed,
    /// since etcd answered, the request is finished. Never re-sends the txn
    /// itself.
    async fn resolve(&mut self, what: &str, target: Lsn, cause: &Failure) -> Result<Resolved> {
        let (etcd, owned) = match (&self.etcd, &self.owned) {
            (Some(e), Some(o)) => (e.clone(), o),
            _ => return Err(cause.error.clone()),
        };
        let keys = owned.keys.clone();
        let (token, head, head_rev) = (owned.token, owned.head, owned.head_rev);
        let cause_why = why(&cause.error);
        let unknown = |detail: String| {
            Error::Unavailable(format!(
                "outcome of the {what} up to lsn {target} is unknown: it may or may not have \
                 committed ({cause_why}); {detail}; reopen the log to see what it holds"
            ))
        };
        let deadline = self.deadline();
        let mut pause = FIRST_PAUSE;
        loop {
            // Two ranges at one revision, not a read-only txn: etcd's quota
            // check refuses every txn (even one that only reads) once the
            // database is over its quota, which is exactly when a NOSPACE
            // answer needs reading back. Ranges are never refused.
            let gets = match self.read_back(&etcd, &keys).await {
                Ok(g) => g,
                Err(f) if Instant::now() + pause < deadline => {
                    debug!(error = %f.error, "read-back failed; trying again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_PAUSE);
                    continue;
                }
                Err(f) => return Err(unknown(format!("reading it back failed: {}", f.error))),
            };
            let [owner_resp, head_resp] = &gets;
            let owner_kv = owner_resp.kvs().first();
            if owner_kv.map(|kv| kv.create_revision()) != Some(token.0) {
                // The txn compared this token; it may have landed before
                // the key went, and a new owner may have moved the head
                // since, so the head no longer tells.
                return Err(unknown(format!(
                    "ownership (fencing token {token}) was lost before it could be read back"
                )));
            }
            let Some(head_kv) = head_resp.kvs().first() else {
                return Err(unknown("the head key is gone".into()));
            };
            let now = decode_head(head_kv.key(), head_kv.value())?;
            let rev = head_kv.mod_revision();
            if rev != head_rev {
                // Only this owner writes the head: either the txn landed,
                // or an earlier bump did (and then the txn never can).
                if now == target {
                    debug!(%target, "{what} outcome resolved by read-back: committed");
                    return Ok(Resolved::Committed(rev));
                }
                if now == head {
                    if let Some(o) = self.owned.as_mut() {
                        o.head_rev = rev;
                    }
                    return Ok(Resolved::NotCommitted);
                }
                return Err(unknown(format!("the head moved to {now} unexpectedly")));
            }
            if cause.nospace {
                debug!(%target, "{what} answered NOSPACE and the head did not move: not committed");
                return Ok(Resolved::NotCommitted);
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
                    return Ok(Resolved::NotCommitted);
                }
                // It landed meanwhile, or we were fenced, or the bump's
                // outcome is unknown: read again.
                _ if Instant::now() + pause < deadline => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_PAUSE);
                }
                Ok(_) => return Err(unknown("read-back did not settle it".into())),
                Err(f) => return Err(unknown(format!("voiding it failed: {}", f.error))),
            }
        }
    }
}

/// [`EtcdStore`]'s reader beside the writer (see `WalStore::reader`).
struct OwnerReader {
    etcd: Etcd,
    keys: KeyLayout,
    limits: EtcdLimits,
    head: Arc<AtomicU64>,
}

#[async_trait]
impl StoreReader for OwnerReader {
    async fn read_from(&self, from: Lsn, limit: ReadLimit) -> Result<Vec<Record>> {
        let head = Lsn(self.head.load(Ordering::Acquire));
        read::read_committed(&self.etcd, &self.keys, &self.limits, from, head, limit).await
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
        match &self.session {
            None => self.options.validate()?,
            // The session's client and lease: endpoints and TTL are its.
            Some(_) => {
                if self.options.writer_id.is_empty() {
                    return Err(Error::InvalidArgument("empty writer_id".into()));
                }
            }
        }
        let ttl = self.lease_ttl();
        if self.options.request_timeout >= ttl {
            // One unanswered request would outlive the lease: the writer
            // could not even learn an outcome while it still owns the log.
            return Err(Error::InvalidArgument(format!(
                "request_timeout {:?} must be shorter than lease_ttl {:?}",
                self.options.request_timeout, ttl
            )));
        }
        let keys = KeyLayout::new(&self.options.prefix, &self.options.name)?;
        self.options
            .limits
            .validate(keys.chunk(Lsn::MAX, u32::MAX).len())?;
        let etcd = self.connect().await?;
        let claim = owner::acquire(&etcd, &keys, &self.options, self.session.as_ref()).await?;
        let lease = OwnerLease::start(etcd.clone(), &keys, claim.token, claim.lease, ttl);
        self.fence.set(&keys, claim.token);
        match self.recover(&etcd, &keys, claim.token).await {
            Ok((head, head_rev, state)) => {
                debug!(log = keys.base(), %head, ?state, token = %claim.token, "opened");
                let owned = Owned {
                    keys,
                    token: claim.token,
                    lease,
                    head,
                    head_rev,
                    first: state.first_lsn,
                    last: state.last_lsn,
                    published_head: Arc::new(AtomicU64::new(head.get())),
                };
                // The head counts as the Lsn high-water mark even when every
                // record up to it is gone.
                let state = owned.state();
                self.owned = Some(owned);
                self.abandoned = None;
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

    /// Plain range reads beside the writer, bounded by the last head this
    /// owner committed: no op of the controller, no wait for a txn.
    fn reader(&self) -> Option<Arc<dyn StoreReader>> {
        let (etcd, owned) = (self.etcd.as_ref()?, self.owned.as_ref()?);
        Some(Arc::new(OwnerReader {
            etcd: etcd.clone(),
            keys: owned.keys.clone(),
            limits: self.options.limits.clone(),
            head: owned.published_head.clone(),
        }))
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
            self.abandoned = Some(e.clone());
        }
        r
    }

    async fn append_inner(&mut self, records: &[Record]) -> Result<()> {
        let (_, owned) = self.owned()?;
        let Some(last) = records.last().map(|r| r.lsn) else {
            return Ok(());
        };
        wal_core::check_append(
            records,
            owned.last.unwrap_or(Lsn::ZERO).max(owned.head),
            self.options.limits.max_payload_bytes,
            self.options.limits.max_append_bytes,
        )?;
        let keys = owned.keys.clone();
        let groups = self.split(&keys, self.encode(&keys, records));
        let first = records.first().map(|r| r.lsn);
        let n = groups.len();
        let deadline = self.deadline();
        for (i, group) in groups.into_iter().enumerate() {
            let final_txn = i + 1 == n;
            let mut ops: Vec<TxnOp> = group
                .into_iter()
                .map(|p| TxnOp::put(p.key, p.value, None))
                .collect();
            if final_txn {
                // The commit point: the whole append becomes visible here.
                ops.push(TxnOp::put(keys.head(), encode_head(last), None));
            }
            loop {
                let Some(owned) = self.owned.as_ref() else {
                    return Err(Error::Closed);
                };
                if let Some(lost) = owned.lease.lost() {
                    return Err(lost);
                }
                // Built anew each attempt: the head revision may have moved.
                let txn = owned.fenced_txn(ops.clone());
                let f = match self.send("append", &txn, deadline).await {
                    Ok(resp) if resp.succeeded() => {
                        if final_txn {
                            if let Some(o) = self.owned.as_mut() {
                                let rev = resp.header().map_or(o.head_rev, |h| h.revision());
                                o.appended(first, last, rev);
                            }
                        }
                        break;
                    }
                    Ok(resp) => return Err(owned.fenced(&resp)),
                    Err(f) => f,
                };
                if f.outcome_known {
                    return Err(f.error);
                }
                if !final_txn {
                    // Its puts sit above the head, invisible until the head
                    // moves, and it compares the head's revision: sending it
                    // again is safe (the same keys, the same values).
                    if !f.nospace && Instant::now() < deadline {
                        debug!(error = %f.error, "txn {} of {n} of an append: outcome unknown; sending it again", i + 1);
                        continue;
                    }
                    return Err(Error::Unavailable(format!(
                        "{}; txn {} of {n} of the append up to lsn {last} failed before its commit point, \
                         so none of it is committed",
                        why(&f.error),
                        i + 1
                    )));
                }
                match self.resolve("append", last, &f).await? {
                    Resolved::Committed(rev) => {
                        if let Some(o) = self.owned.as_mut() {
                            o.appended(first, last, rev);
                        }
                        break;
                    }
                    // Void: it can never land, so sending it again is safe.
                    Resolved::NotCommitted if !f.nospace && Instant::now() < deadline => {
                        debug!(error = %f.error, %last, "append did not commit; sending it again");
                    }
                    Resolved::NotCommitted => {
                        return Err(Error::Unavailable(format!(
                            "the append up to lsn {last} did not commit (read back after: {})",
                            why(&f.error)
                        )))
                    }
                }
            }
        }
        Ok(())
    }

    async fn remove_before_inner(&mut self, lsn: Lsn) -> Result<StoreState> {
        let (_, owned) = self.owned()?;
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
        // Deleting below a point is idempotent: a txn with an unknown
        // outcome is simply sent again.
        let deadline = self.deadline();
        let resp = loop {
            match self.send("remove records", &txn, deadline).await {
                Ok(r) => break r,
                Err(f) if !f.outcome_known && !f.nospace && Instant::now() < deadline => {
                    debug!(error = %f.error, "remove records: outcome unknown; sending it again");
                }
                Err(f) => return Err(f.error),
            }
        };
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
        let deadline = self.deadline();
        loop {
            let Some(owned) = self.owned.as_ref() else {
                return Err(Error::Closed);
            };
            let f = match self
                .send("truncate", &owned.fenced_txn(ops.clone()), deadline)
                .await
            {
                Ok(resp) if resp.succeeded() => {
                    let rev = resp.header().map_or(owned.head_rev, |h| h.revision());
                    break self.truncated(lsn, new_head, rev);
                }
                Ok(resp) => return Err(owned.fenced(&resp)),
                Err(f) if f.outcome_known => return Err(f.error),
                Err(f) => f,
            };
            match self.resolve("truncate", new_head, &f).await? {
                Resolved::Committed(rev) => break self.truncated(lsn, new_head, rev),
                Resolved::NotCommitted if !f.nospace && Instant::now() < deadline => {
                    debug!(error = %f.error, "truncate did not commit; sending it again");
                }
                Resolved::NotCommitted => {
                    return Err(Error::Unavailable(format!(
                        "the truncate after lsn {lsn} did not commit (read back after: {})",
                        why(&f.error)
                    )))
                }
            }
        }
    }

    fn truncated(&mut self, lsn: Lsn, marker: Lsn, rev: i64) -> Result<StoreState> {
        let Some(o) = self.owned.as_mut() else {
            return Err(Error::Closed);
        };
        o.truncated(lsn, marker, rev);
        Ok(o.state())
    }
}
