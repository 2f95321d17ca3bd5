//! [`EtcdSession`]: one lease and one keep-alive for many logs of one
//! process.

use std::{
    fmt,
    sync::{atomic::AtomicU64, Arc},
    time::{Duration, Instant},
};

use etcd_client::Client;
use futures::future::BoxFuture;
use tokio::{sync::watch, task::JoinHandle};
use tracing::{info, warn};
use wal_core::{Error, Result};

use crate::{
    client::Etcd,
    keepalive::{self, Renewer, SessionKeeper},
    EtcdOptions,
};

/// One etcd lease, kept alive by one task, that many logs of one process
/// claim their owner keys with (etcd's Go `concurrency.Session` is the
/// model). A control plane with hundreds of shards then holds one lease and
/// sends one keep-alive per TTL/3, instead of one of each per log.
///
/// Each log on a session is still claimed and fenced on its own: its owner
/// key's create revision is its [`FencingToken`](crate::FencingToken), so a
/// log released and claimed again on the same session fences the old
/// claim's txns, exactly as between processes. What the logs share is the
/// lease's fate:
///
/// - [`EtcdStore::with_session`](crate::EtcdStore::with_session) makes a
///   store claim its log with the session's lease. Closing such a store
///   deletes only its owner key (in a txn fenced by its token): the log is
///   free at once, the session and its other logs live on.
/// - When the lease is lost (a keep-alive answered "not found" because the
///   lease expired or an operator revoked it, or no keep-alive was
///   acknowledged for a whole TTL), [`failed`](Self::failed) resolves, every
///   store on the session fires its failure signal (so every
///   [`Wal::failed`](wal_core::Wal::failed) resolves with
///   [`Error::Fenced`]), and etcd refuses their txns anyway: the owner keys
///   went with the lease. A lost session stays lost; connect a new one.
/// - [`close`](Self::close), or dropping the last handle (stores on the
///   session hold one each), revokes the lease.
///
/// The handle is cheap to clone (an `Arc`).
///
/// ```no_run
/// use wal_core::{Wal, WalOptions};
/// use wal_etcd::{EtcdOptions, EtcdSession, EtcdStore};
///
/// # async fn run() -> wal_core::Result<()> {
/// let base = EtcdOptions::new(["http://127.0.0.1:2379"], "unused").prefix("/shards/");
/// let session = EtcdSession::connect(&base).await?; // one lease grant
/// let mut wals = Vec::new();
/// for shard in 0..200 {
///     let options = base.clone().name(format!("shard-{shard}"));
///     let store = EtcdStore::with_session(session.clone(), options);
///     let (wal, _recovery) = Wal::open(store, WalOptions::default()).await?;
///     wals.push(wal);
/// }
/// wals[7].append(b"put a=1".to_vec()).await?;
/// wals[7].close().await?; // frees shard-7 only
/// let lost = session.failed(); // resolves if the shared lease is lost
/// # drop(lost);
/// session.close().await?; // revokes the lease: every other log is released
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct EtcdSession {
    inner: Arc<Inner>,
}

struct Inner {
    etcd: Etcd,
    id: i64,
    ttl: Duration,
    writer_id: String,
    tx: Arc<watch::Sender<Option<Error>>>,
    task: JoinHandle<()>,
    keep_alives: Arc<AtomicU64>,
}

impl EtcdSession {
    /// Connects with `options`' endpoints, credentials and TLS, grants one
    /// lease of `options.lease_ttl` and starts keeping it alive.
    /// `options.name` is not used; `options.writer_id` is reported as the
    /// session's writer (stores on it use their own options' writer id in
    /// their owner keys).
    pub async fn connect(options: &EtcdOptions) -> Result<EtcdSession> {
        options.validate()?;
        let etcd = Etcd::connect(options).await?;
        EtcdSession::start(etcd, options).await
    }

    /// Like [`connect`](Self::connect), on an existing client (its own
    /// connect options apply; `options.endpoints`, credentials and TLS are
    /// ignored).
    pub async fn with_client(client: Client, options: &EtcdOptions) -> Result<EtcdSession> {
        options.ttl_secs()?;
        EtcdSession::start(Etcd::from_client(client, options.request_timeout), options).await
    }

    async fn start(etcd: Etcd, options: &EtcdOptions) -> Result<EtcdSession> {
        let ttl_secs = options.ttl_secs()?;
        if options.request_timeout >= options.lease_ttl {
            return Err(Error::InvalidArgument(format!(
                "request_timeout {:?} must be shorter than lease_ttl {:?}",
                options.request_timeout, options.lease_ttl
            )));
        }
        let granted_at = Instant::now();
        let id = etcd.grant(ttl_secs).await?;
        let (tx, _) = watch::channel(None);
        let tx = Arc::new(tx);
        let keep_alives = Arc::new(AtomicU64::new(0));
        let keeper = SessionKeeper {
            renewer: Renewer::new(
                etcd.clone(),
                id,
                options.lease_ttl,
                granted_at,
                Some(keep_alives.clone()),
            ),
            tx: tx.clone(),
        };
        info!(lease = format_args!("{id:x}"), ttl = ?options.lease_ttl, "session started");
        Ok(EtcdSession {
            inner: Arc::new(Inner {
                etcd,
                id,
                ttl: options.lease_ttl,
                writer_id: options.writer_id.clone(),
                tx,
                task: tokio::spawn(keeper.run()),
                keep_alives,
            }),
        })
    }

    /// The session's lease id (as etcdctl prints it: `{:x}`).
    pub fn lease_id(&self) -> i64 {
        self.inner.id
    }

    /// The lease TTL.
    pub fn ttl(&self) -> Duration {
        self.inner.ttl
    }

    /// The writer id of the options the session was made with.
    pub fn writer_id(&self) -> &str {
        &self.inner.writer_id
    }

    /// Keep-alive requests this session has sent so far (one per TTL/3
    /// while etcd answers), for monitoring.
    pub fn keep_alives_sent(&self) -> u64 {
        self.inner
            .keep_alives
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Why the session was lost ([`Error::Fenced`]), if it was.
    pub fn lost(&self) -> Option<Error> {
        self.inner.tx.borrow().clone()
    }

    /// Resolves with [`Error::Fenced`] when the session's lease is lost (or
    /// the session was closed); by then every store on it is fenced.
    pub fn failed(&self) -> BoxFuture<'static, Error> {
        let mut rx = self.inner.tx.subscribe();
        Box::pin(async move {
            match rx.wait_for(Option::is_some).await {
                Ok(e) => e.clone().unwrap_or(Error::Closed),
                // The sender lives in the session, which this does not
                // keep alive; it is gone only with the last handle.
                Err(_) => Error::Closed,
            }
        })
    }

    /// Revokes the lease: every log still on the session loses its owner
    /// key and is fenced (its [`Wal::failed`](wal_core::Wal::failed)
    /// resolves). Close the stores first to release them cleanly. Other
    /// handles of the session see it lost.
    pub async fn close(self) -> Result<()> {
        self.inner.task.abort();
        self.inner.tx.send_if_modified(|lost| {
            if lost.is_none() {
                *lost = Some(Error::Fenced {
                    reason: "the session was closed".into(),
                });
                true
            } else {
                false
            }
        });
        keepalive::revoke(&self.inner.etcd, self.inner.id, self.inner.ttl).await
    }

    pub(crate) fn etcd(&self) -> &Etcd {
        &self.inner.etcd
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<Option<Error>> {
        self.inner.tx.subscribe()
    }
}

impl Drop for Inner {
    /// The last handle is gone: stop renewing, and revoke the lease in the
    /// background if a runtime is there to run it (otherwise it lapses
    /// after its TTL, like a crashed process's).
    fn drop(&mut self) {
        self.task.abort();
        if self.tx.borrow().is_some() {
            // Lost or closed already.
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let (etcd, id, ttl) = (self.etcd.clone(), self.id, self.ttl);
            rt.spawn(async move {
                if let Err(e) = keepalive::revoke(&etcd, id, ttl).await {
                    warn!(lease = format_args!("{id:x}"), error = %e, "could not revoke a dropped session's lease; it lapses after its TTL");
                }
            });
        }
    }
}

impl fmt::Debug for EtcdSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdSession")
            .field("lease", &format_args!("{:x}", self.inner.id))
            .field("ttl", &self.inner.ttl)
            .field("writer_id", &self.inner.writer_id)
            .field("lost", &self.lost())
            .finish_non_exhaustive()
    }
}
