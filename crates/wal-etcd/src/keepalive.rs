//! The owner's lease, kept alive by its own task.
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
//! Safety does not depend on this task: etcd refuses every mutation of a
//! writer whose token no longer matches. The task only tells the
//! application promptly.

use std::time::{Duration, Instant};

use etcd_client::{EventType, LeaseKeepAliveStream, LeaseKeeper, WatchOptions, WatchStream};
use futures::future::BoxFuture;
use tokio::{sync::watch, task::JoinHandle};
use tracing::{debug, warn};
use wal_core::Error;

use crate::{client::Etcd, keys::KeyLayout, owner::FencingToken};

/// The lease behind an owner key, and the task that keeps it alive.
pub(crate) struct OwnerLease {
    id: i64,
    ttl: Duration,
    task: JoinHandle<()>,
    lost: watch::Receiver<Option<Error>>,
}

impl OwnerLease {
    /// Starts keeping lease `id` alive. `granted_at` is when the grant was
    /// sent.
    pub(crate) fn start(
        etcd: Etcd,
        keys: &KeyLayout,
        token: FencingToken,
        id: i64,
        ttl: Duration,
        granted_at: Instant,
    ) -> OwnerLease {
        let (tx, lost) = watch::channel(None);
        let keeper = Keeper {
            etcd,
            owner_key: keys.owner(),
            token,
            id,
            ttl,
            renewed_at: granted_at,
            stream: None,
            watch: None,
            tx,
        };
        OwnerLease {
            id,
            ttl,
            task: tokio::spawn(keeper.run()),
            lost,
        }
    }

    /// The lease id.
    pub(crate) fn id(&self) -> i64 {
        self.id
    }

    /// Why ownership was lost, if it was.
    pub(crate) fn lost(&self) -> Option<Error> {
        self.lost.borrow().clone()
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

    /// Stops the task and revokes the lease, which deletes the owner key.
    /// A revoke is idempotent, so a failed one (a sick member answered) is
    /// sent again, for up to a TTL: a successor need not wait for it to
    /// lapse.
    pub(crate) async fn release(self, etcd: &Etcd) -> Result<(), Error> {
        self.task.abort();
        let deadline = Instant::now() + self.ttl;
        let mut pause = Duration::from_millis(50);
        loop {
            match etcd.revoke(self.id).await {
                Ok(()) => return Ok(()),
                // Already gone (expired or revoked by someone else): fine.
                Err(f) if f.error.to_string().contains("requested lease not found") => {
                    return Ok(())
                }
                Err(f) if f.outcome_known && !f.retryable => return Err(f.error),
                Err(_) if Instant::now() + pause < deadline => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
                Err(f) => return Err(f.error),
            }
        }
    }
}

impl Drop for OwnerLease {
    /// A dropped store (a crashed process) stops renewing; the lease then
    /// lapses after its TTL.
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Keeper {
    etcd: Etcd,
    owner_key: Vec<u8>,
    token: FencingToken,
    id: i64,
    ttl: Duration,
    renewed_at: Instant,
    stream: Option<(LeaseKeeper, LeaseKeepAliveStream)>,
    watch: Option<WatchStream>,
    tx: watch::Sender<Option<Error>>,
}

enum Renewal {
    Renewed,
    Failed(String),
    Lost(String),
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
            let expires = self.renewed_at + self.ttl;
            if Instant::now() >= expires {
                return self.fail(format!(
                    "no lease keep-alive acknowledged within the {:?} TTL",
                    self.ttl
                ));
            }
            let wake = next_tick.min(expires);
            tokio::select! {
                _ = tokio::time::sleep_until(wake.into()) => {
                    if Instant::now() < next_tick {
                        continue;
                    }
                    next_tick = Instant::now() + interval;
                    match self.renew(interval).await {
                        Renewal::Renewed => {}
                        Renewal::Failed(why) => debug!(lease = self.id, %why, "keep-alive failed; retrying"),
                        Renewal::Lost(why) => return self.fail(why),
                    }
                    if self.watch.is_none() && check.is_none() {
                        check = Some(self.owner_check(None));
                    }
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

    /// Sends one keep-alive and waits for its answer.
    async fn renew(&mut self, wait: Duration) -> Renewal {
        let sent_at = Instant::now();
        if self.stream.is_none() {
            let mut lease = self.etcd.client.lease_client();
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

    fn fail(&self, why: String) {
        warn!(lease = self.id, token = %self.token, %why, "ownership lost");
        self.tx.send_replace(Some(Error::Fenced { reason: why }));
    }
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
