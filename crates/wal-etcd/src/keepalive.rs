//! The owner's lease, kept alive by its own task, or a share of a
//! [`EtcdSession`]'s lease.
//!
//! Every TTL/3 the task sends a keep-alive and waits (at most TTL/3) for the
//! answer. Ownership is lost, and the failure signal fires with
//! [`Error::Fenced`], when:
//! - etcd answers a keep-alive with TTL 0 (the lease expired or was revoked),
//! - no keep-alive was acknowledged for a whole TTL, measured from the send
//!   time of the last acknowledged one (etcd may keep the lease a little
//!   longer; stopping early is the safe side),
//! - the owner key is deleted or replaced (a watch on it, re-created if it
//!   breaks, with a get to check nothing was missed). The get and the watch
//!   creation run beside the renewals, so a slow member never delays a
//!   keep-alive.
//!
//! A store on a session does not renew: the session's one task does, for
//! every log on it ([`SessionKeeper`]). Each log's task still watches its
//! own owner key, and forwards the session's loss, so every store on a lost
//! session fires.
//!
//! Safety does not depend on these tasks: etcd refuses every mutation of a
//! writer whose token no longer matches. The tasks only tell the
//! application promptly.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use etcd_client::{
    Compare, CompareOp, EventType, LeaseKeepAliveStream, LeaseKeeper, Txn, TxnOp, WatchOptions,
    WatchStream,
};
use futures::future::BoxFuture;
use tokio::{sync::watch, task::JoinHandle};
use tracing::{debug, warn};
use wal_core::Error;

use crate::{client::Etcd, keys::KeyLayout, owner::FencingToken, session::EtcdSession};

/// After a failed keep-alive (no answer within TTL/3, a broken stream, or
/// an error answer), the next one goes this soon instead of a whole TTL/3
/// later, so a lease gets several tries within its TTL (etcd's Go client
/// also retries after 500 ms). Measured with `walctl bench etcd-session`
/// (200 logs appending against etcd 3.4 on a loaded 2-core machine): etcd
/// answered keep-alives "waiting for the applied index took too long"
/// several times a run; retrying only every TTL/3, a 10 s lease was lost
/// in 4 of 9 runs (sessions and single-log leases alike); retrying after
/// 500 ms, 10 of 10 runs kept every lease (the load was lower in 8 of them,
/// so this is evidence, not proof).
pub(crate) const RETRY_AFTER_FAILURE: Duration = Duration::from_millis(500);

/// Whose lease an owner key is attached to.
pub(crate) enum LeaseKind {
    /// A lease granted for this log alone: this store renews and revokes
    /// it. `granted_at` is when the grant was sent.
    Own { id: i64, granted_at: Instant },
    /// The lease of a session shared by many logs: the session renews and
    /// revokes it; releasing the log deletes only its owner key.
    Shared(EtcdSession),
}

/// The lease behind an owner key, and the task that watches the owner key
/// (and, for a lease of its own, keeps it alive).
pub(crate) struct OwnerLease {
    id: i64,
    ttl: Duration,
    task: JoinHandle<()>,
    lost: watch::Receiver<Option<Error>>,
    /// The session, for a shared lease; taken by `release`.
    session: Option<EtcdSession>,
    /// To release a shared claim when dropped without `release`.
    owner_key: Vec<u8>,
    token: FencingToken,
    etcd: Etcd,
}

impl OwnerLease {
    /// Starts watching the claim `token` of `keys`' owner key (and keeping
    /// its lease alive, if it is the store's own).
    pub(crate) fn start(
        etcd: Etcd,
        keys: &KeyLayout,
        token: FencingToken,
        lease: LeaseKind,
        ttl: Duration,
    ) -> OwnerLease {
        let (tx, lost) = watch::channel(None);
        let (id, renewer, session) = match lease {
            LeaseKind::Own { id, granted_at } => (
                id,
                Some(Renewer::new(etcd.clone(), id, ttl, granted_at, None)),
                None,
            ),
            LeaseKind::Shared(s) => (s.lease_id(), None, Some(s)),
        };
        let keeper = Keeper {
            etcd: etcd.clone(),
            owner_key: keys.owner(),
            token,
            id,
            ttl,
            renewer,
            session_lost: session.as_ref().map(|s| s.subscribe()),
            watch: None,
            tx,
        };
        OwnerLease {
            id,
            ttl,
            task: tokio::spawn(keeper.run()),
            lost,
            session,
            owner_key: keys.owner(),
            token,
            etcd,
        }
    }

    /// The lease id.
    pub(crate) fn id(&self) -> i64 {
        self.id
    }

    /// Why ownership was lost, if it was (the session's loss counts at
    /// once, before this log's task has forwarded it).
    pub(crate) fn lost(&self) -> Option<Error> {
        self.lost
            .borrow()
            .clone()
            .or_else(|| self.session.as_ref().and_then(|s| s.lost()))
    }

    /// A future that resolves when ownership is lost; never, if the lease
    /// is released first.
    pub(crate) fn signal(&self) -> BoxFuture<'static, Error> {
        let mut rx = self.lost.clone();
        Box::pin(async move {
            loop {
                if let Some(e) = rx.borrow_and_update().clone() {
                    return e;
                }
                if rx.changed().await.is_err() {
                    // Released on purpose: never fire.
                    futures::future::pending::<()>().await;
                }
            }
        })
    }

    /// Gives the log up. A lease of its own: stops the task and revokes
    /// the lease, which deletes the owner key. A session's lease: deletes
    /// only the owner key, in a txn fenced by this claim's token (so it
    /// never deletes a successor's key); the session lives on. Both are
    /// idempotent, so a failed attempt (a sick member answered) is sent
    /// again, for up to a TTL: a successor need not wait for the lease to
    /// lapse.
    pub(crate) async fn release(mut self, etcd: &Etcd) -> Result<(), Error> {
        self.task.abort();
        match self.session.take() {
            Some(_) => delete_owner(etcd, &self.owner_key, self.token, self.ttl).await,
            None => revoke(etcd, self.id, self.ttl).await,
        }
    }
}

impl Drop for OwnerLease {
    /// A dropped store stops renewing its own lease, which then lapses
    /// after its TTL (a crashed process). A store on a session that is
    /// dropped without `release` (its Wal's task aborted) still gives its
    /// log up, in the background, if a runtime is there to run it:
    /// otherwise the log would stay claimed for as long as the session
    /// lives.
    fn drop(&mut self) {
        self.task.abort();
        if self.session.take().is_some() {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                let (etcd, key, token, ttl) = (
                    self.etcd.clone(),
                    self.owner_key.clone(),
                    self.token,
                    self.ttl,
                );
                rt.spawn(async move {
                    if let Err(e) = delete_owner(&etcd, &key, token, ttl).await {
                        warn!(error = %e, "could not release a dropped store's log; it stays claimed until its session ends");
                    }
                });
            }
        }
    }
}

/// Revokes lease `id`, again for up to `ttl` after failures that may be
/// transient. Already gone (expired or revoked by someone else) is fine.
pub(crate) async fn revoke(etcd: &Etcd, id: i64, ttl: Duration) -> Result<(), Error> {
    let deadline = Instant::now() + ttl;
    let mut pause = Duration::from_millis(50);
    loop {
        match etcd.revoke(id).await {
            Ok(()) => return Ok(()),
            Err(f) if f.error.to_string().contains("requested lease not found") => return Ok(()),
            Err(f) if f.outcome_known && !f.retryable => return Err(f.error),
            Err(_) if Instant::now() + pause < deadline => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(500));
            }
            Err(f) => return Err(f.error),
        }
    }
}

/// Deletes the owner key if it is still claim `token`'s. A failed compare
/// means it is gone or a successor's: nothing to do.
async fn delete_owner(
    etcd: &Etcd,
    key: &[u8],
    token: FencingToken,
    ttl: Duration,
) -> Result<(), Error> {
    let txn = Txn::new()
        .when([Compare::create_revision(
            key.to_vec(),
            CompareOp::Equal,
            token.0,
        )])
        .and_then([TxnOp::delete(key.to_vec(), None)]);
    let deadline = Instant::now() + ttl;
    let mut pause = Duration::from_millis(50);
    loop {
        match etcd.txn("release owner key", txn.clone()).await {
            Ok(_) => return Ok(()),
            Err(f) if f.outcome_known && !f.retryable => return Err(f.error),
            Err(_) if Instant::now() + pause < deadline => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(500));
            }
            Err(f) => return Err(f.error),
        }
    }
}

/// Renews one lease: one keep-alive per call, over a stream opened on
/// first use and again after it broke.
pub(crate) struct Renewer {
    etcd: Etcd,
    id: i64,
    ttl: Duration,
    /// Send time of the last acknowledged keep-alive (or of the grant).
    renewed_at: Instant,
    stream: Option<(LeaseKeeper, LeaseKeepAliveStream)>,
    /// Keep-alive requests sent, if someone counts them.
    sent: Option<Arc<AtomicU64>>,
}

pub(crate) enum Renewal {
    Renewed,
    Failed(String),
    Lost(String),
}

impl Renewer {
    pub(crate) fn new(
        etcd: Etcd,
        id: i64,
        ttl: Duration,
        granted_at: Instant,
        sent: Option<Arc<AtomicU64>>,
    ) -> Renewer {
        Renewer {
            etcd,
            id,
            ttl,
            renewed_at: granted_at,
            stream: None,
            sent,
        }
    }

    /// When the lease may be gone, unless renewed before.
    pub(crate) fn expires(&self) -> Instant {
        self.renewed_at + self.ttl
    }

    fn count(&self) {
        if let Some(c) = &self.sent {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Sends one keep-alive and waits for its answer; with the `metrics`
    /// feature, counts it in `wal_etcd_lease_renewals_total{result}`.
    pub(crate) async fn renew(&mut self, wait: Duration) -> Renewal {
        let r = self.renew_once(wait).await;
        #[cfg(feature = "metrics")]
        metrics::counter!(
            "wal_etcd_lease_renewals_total",
            "result" => match &r {
                Renewal::Renewed => "renewed",
                Renewal::Failed(_) => "failed",
                Renewal::Lost(_) => "lost",
            }
        )
        .increment(1);
        r
    }

    async fn renew_once(&mut self, wait: Duration) -> Renewal {
        let sent_at = Instant::now();
        if self.stream.is_none() {
            let mut lease = self.etcd.client.lease_client();
            self.count();
            match tokio::time::timeout(wait, lease.keep_alive(self.id)).await {
                // etcd-client sent one keep-alive and checked its answer.
                Ok(Ok(s)) => {
                    self.stream = Some(s);
                    self.renewed_at = sent_at;
                    return Renewal::Renewed;
                }
                Ok(Err(etcd_client::Error::LeaseKeepAliveError(m))) if m.contains("not found") => {
                    return Renewal::Lost("the lease expired or was revoked".into())
                }
                Ok(Err(e)) => return Renewal::Failed(e.to_string()),
                Err(_) => return Renewal::Failed("keep-alive stream not opened in time".into()),
            }
        }
        self.count();
        let Some((keeper, stream)) = self.stream.as_mut() else {
            return Renewal::Failed("no keep-alive stream".into());
        };
        let exchange = async {
            keeper.keep_alive().await?;
            stream.message().await
        };
        match tokio::time::timeout(wait, exchange).await {
            Ok(Ok(Some(resp))) if resp.ttl() > 0 => {
                self.renewed_at = sent_at;
                Renewal::Renewed
            }
            Ok(Ok(Some(_))) => Renewal::Lost("the lease expired or was revoked".into()),
            Ok(Ok(None)) => {
                self.stream = None;
                Renewal::Failed("keep-alive stream closed".into())
            }
            Ok(Err(e)) => {
                self.stream = None;
                Renewal::Failed(e.to_string())
            }
            Err(_) => {
                self.stream = None;
                Renewal::Failed("no keep-alive answer in time".into())
            }
        }
    }
}

/// A session's task: keeps the one lease alive, and reports its loss to
/// every log on it.
pub(crate) struct SessionKeeper {
    pub(crate) renewer: Renewer,
    pub(crate) tx: Arc<watch::Sender<Option<Error>>>,
}

impl SessionKeeper {
    pub(crate) async fn run(mut self) {
        let interval = self.renewer.ttl / 3;
        let id = self.renewer.id;
        let mut next_tick = Instant::now();
        loop {
            let expires = self.renewer.expires();
            if Instant::now() >= expires {
                return self.fail(format!(
                    "no keep-alive of the session's lease acknowledged within the {:?} TTL",
                    self.renewer.ttl
                ));
            }
            tokio::time::sleep_until(next_tick.min(expires).into()).await;
            if Instant::now() < next_tick {
                continue;
            }
            next_tick = Instant::now() + interval;
            match self.renewer.renew(interval).await {
                Renewal::Renewed => {}
                Renewal::Failed(why) => {
                    debug!(lease = id, %why, "session keep-alive failed; retrying");
                    next_tick = next_tick.min(Instant::now() + RETRY_AFTER_FAILURE);
                }
                Renewal::Lost(why) => {
                    return self.fail(format!("the session's lease is gone: {why}"))
                }
            }
        }
    }

    fn fail(&self, why: String) {
        warn!(lease = self.renewer.id, %why, "session lost: every log on it is fenced");
        self.tx.send_if_modified(|lost| {
            if lost.is_none() {
                *lost = Some(Error::Fenced { reason: why });
                true
            } else {
                false
            }
        });
    }
}

struct Keeper {
    etcd: Etcd,
    owner_key: Vec<u8>,
    token: FencingToken,
    id: i64,
    ttl: Duration,
    /// `None` on a session: the session renews.
    renewer: Option<Renewer>,
    /// The session's loss, on a session.
    session_lost: Option<watch::Receiver<Option<Error>>>,
    watch: Option<WatchStream>,
    tx: watch::Sender<Option<Error>>,
}

/// The result of an owner check run beside the renewals.
enum Check {
    /// The owner key is still this writer's (or it could not be read: the
    /// TTL deadline decides); a watch on it, if one could be opened.
    Watch(Option<Box<WatchStream>>),
    /// The owner key is gone or replaced.
    Lost(String),
}

impl Keeper {
    async fn run(mut self) {
        let interval = self.ttl / 3;
        let mut next_tick = Instant::now();
        // Watch from the claim on, so a deletion right after it is seen.
        // Owner checks and watch creation run beside the renewals, never
        // between them: a slow member must not delay a keep-alive.
        let mut check: Option<BoxFuture<'static, Check>> =
            Some(self.owner_check(Some(self.token.0 + 1)));
        loop {
            let expires = self.renewer.as_ref().map(Renewer::expires);
            if expires.is_some_and(|e| Instant::now() >= e) {
                return self.fail(format!(
                    "no lease keep-alive acknowledged within the {:?} TTL",
                    self.ttl
                ));
            }
            let wake = expires.map_or(next_tick, |e| next_tick.min(e));
            tokio::select! {
                _ = tokio::time::sleep_until(wake.into()) => {
                    if Instant::now() < next_tick {
                        continue;
                    }
                    next_tick = Instant::now() + interval;
                    if let Some(renewer) = self.renewer.as_mut() {
                        match renewer.renew(interval).await {
                            Renewal::Renewed => {}
                            Renewal::Failed(why) => {
                                debug!(lease = self.id, %why, "keep-alive failed; retrying");
                                next_tick = next_tick.min(Instant::now() + RETRY_AFTER_FAILURE);
                            }
                            Renewal::Lost(why) => return self.fail(why),
                        }
                    }
                    if self.watch.is_none() && check.is_none() {
                        check = Some(self.owner_check(None));
                    }
                }
                e = session_lost(&mut self.session_lost) => {
                    return self.fail_with(e);
                }
                c = next_check(&mut check) => {
                    check = None;
                    match c {
                        Check::Watch(w) => self.watch = w.map(|w| *w),
                        Check::Lost(why) => return self.fail(why),
                    }
                }
                msg = next_watch(&mut self.watch) => match msg {
                    Some(Ok(resp)) => {
                        for e in resp.events() {
                            let gone = match e.event_type() {
                                EventType::Delete => true,
                                EventType::Put => e.kv().is_some_and(|kv| kv.create_revision() != self.token.0),
                            };
                            if gone {
                                return self.fail("the owner key was deleted or replaced".into());
                            }
                        }
                        if resp.canceled() {
                            self.watch = None;
                        }
                    }
                    _ => self.watch = None,
                },
            }
        }
    }

    /// Checks the owner key with a get (unless `from` is given: the claim
    /// itself was the check), then opens a watch on it from there.
    fn owner_check(&self, from: Option<i64>) -> BoxFuture<'static, Check> {
        let (etcd, key, token) = (self.etcd.clone(), self.owner_key.clone(), self.token);
        Box::pin(async move {
            let from = match from {
                Some(r) => r,
                None => {
                    let resp = match etcd.get("check owner", key.clone(), None).await {
                        Ok(r) => r,
                        // Unreachable: the TTL deadline decides.
                        Err(_) => return Check::Watch(None),
                    };
                    match resp.kvs().first() {
                        Some(kv) if kv.create_revision() == token.0 => {}
                        _ => return Check::Lost("the owner key was deleted or replaced".into()),
                    }
                    resp.header().map_or(0, |h| h.revision()) + 1
                }
            };
            let mut client = etcd.client.watch_client();
            let opts = WatchOptions::new().with_start_revision(from);
            match tokio::time::timeout(etcd.timeout, client.watch(key, Some(opts))).await {
                Ok(Ok(w)) => Check::Watch(Some(Box::new(w))),
                _ => Check::Watch(None),
            }
        })
    }

    fn fail(&self, why: String) {
        self.fail_with(Error::Fenced { reason: why });
    }

    fn fail_with(&self, e: Error) {
        warn!(lease = self.id, token = %self.token, error = %e, "ownership lost");
        #[cfg(feature = "metrics")]
        metrics::counter!("wal_etcd_ownership_losses_total").increment(1);
        self.tx.send_replace(Some(e));
    }
}

/// The session's loss, once it is known; never without a session (or if
/// the session's task is gone without a loss: its lease is then revoked by
/// the last handle, and the owner watch sees the key go).
async fn session_lost(rx: &mut Option<watch::Receiver<Option<Error>>>) -> Error {
    if let Some(rx) = rx.as_mut() {
        if let Ok(e) = rx.wait_for(Option::is_some).await {
            if let Some(e) = e.clone() {
                return e;
            }
        }
    }
    futures::future::pending().await
}

async fn next_check(check: &mut Option<BoxFuture<'static, Check>>) -> Check {
    match check.as_mut() {
        Some(c) => c.as_mut().await,
        None => futures::future::pending().await,
    }
}

async fn next_watch(
    watch: &mut Option<WatchStream>,
) -> Option<Result<etcd_client::WatchResponse, etcd_client::Error>> {
    match watch.as_mut() {
        Some(w) => w.message().await.transpose(),
        None => futures::future::pending().await,
    }
}
