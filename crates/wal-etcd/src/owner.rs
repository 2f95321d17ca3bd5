//! Ownership: claiming the `owner` key under a lease, the fencing token, and
//! waiting for a vacancy.
//!
//! Protocol (step by step):
//! 1. Grant a lease with the configured TTL.
//! 2. Txn: `if create_revision(owner) == 0 then put(owner, writer_id, lease)
//!    else get(owner)`. Success: the txn's revision is the owner key's create
//!    revision, the [`FencingToken`]. Every later mutation compares
//!    `create_revision(owner) == token`, so once the key is deleted (lease
//!    expired or revoked, or an operator deleted it) or recreated by another
//!    writer, nothing this writer sends can land.
//! 3. Failure: revoke the unused lease; in [`Acquire::FailFast`] mode report
//!    [`Error::Locked`] naming the holder; in [`Acquire::Wait`] mode watch
//!    the owner key (from the revision the failed claim saw) for its deletion,
//!    up to the deadline, and go back to step 1. A transient failure
//!    (etcd unreachable, a broken watch) is retried after a [`RetryPause`]:
//!    growing, jittered, and never past the deadline.
//! 4. A claim whose outcome is unknown (timeout) revokes its lease: if the
//!    claim landed, that deletes the owner key again.
//!
//! On an [`EtcdSession`] step 1 is skipped: the claim puts the owner key
//! with the session's lease, a failed claim leaves the lease alone (other
//! logs hang on it), and a claim whose outcome is unknown deletes the owner
//! key instead, if it is attached to the session's lease (only this
//! process could have put it there). The token is still the owner key's
//! create revision: each claim of a log, even on the same lease, has its
//! own.

use std::{
    fmt,
    time::{Duration, Instant},
};

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use etcd_client::{
    Compare, CompareOp, EventType, KeyValue, PutOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use tracing::{debug, info};
use wal_core::{Error, Result};

use crate::{
    client::Etcd, keepalive::LeaseKind, keys::KeyLayout, session::EtcdSession, Acquire, EtcdOptions,
};

/// The create revision of the owner key when this writer claimed it. Every
/// mutation compares the owner key's create revision against it; a writer
/// that lost the key (or whose key was replaced) is fenced by etcd itself,
/// whatever its clock or pauses. Tokens of successive owners strictly
/// increase.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FencingToken(pub i64);

impl fmt::Display for FencingToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The fencing of one log's latest claim, for the application's own etcd
/// txns: [`compare`](Self::compare) is the owner-key compare every
/// mutation of the log carries, so a txn that includes it lands only while
/// this claim owns the log (not after the lease is lost, the store closed,
/// or another writer took over).
///
/// Take it from the store before handing the store to the Wal
/// ([`EtcdStore::fence`](crate::EtcdStore::fence)); it follows the store's
/// claims (a reopen claims anew). Before the first claim it yields `None`.
/// After the claim ends it keeps yielding the old compare, which etcd then
/// fails: a guarded txn never silently runs unguarded.
///
/// ```no_run
/// use wal_core::{Wal, WalOptions};
/// use wal_etcd::{etcd_client::{Client, Txn, TxnOp}, EtcdOptions, EtcdStore};
///
/// # async fn run(mut client: Client) -> Result<(), Box<dyn std::error::Error>> {
/// let store = EtcdStore::new(EtcdOptions::new(["http://127.0.0.1:2379"], "orders"));
/// let fence = store.fence();
/// let (wal, _recovery) = Wal::open(store, WalOptions::default()).await?;
/// let guard = fence.compare().ok_or("not claimed")?;
/// let txn = Txn::new()
///     .when([guard])
///     .and_then([TxnOp::put("/app/orders/leader", "me", None)]);
/// let landed = client.txn(txn).await?.succeeded(); // false once fenced
/// # drop((wal, landed));
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Default)]
pub struct OwnerFence {
    claim: std::sync::Arc<std::sync::Mutex<Option<ClaimedKey>>>,
}

/// The owner key and the token of a claim.
type ClaimedKey = (Vec<u8>, FencingToken);

impl OwnerFence {
    /// `create_revision(owner key) == token` of the latest claim, or `None`
    /// if the store never claimed its log.
    pub fn compare(&self) -> Option<Compare> {
        let claim = self.claim.lock().unwrap_or_else(|p| p.into_inner());
        claim
            .as_ref()
            .map(|(key, token)| Compare::create_revision(key.clone(), CompareOp::Equal, token.0))
    }

    /// The latest claim's fencing token.
    pub fn token(&self) -> Option<FencingToken> {
        let claim = self.claim.lock().unwrap_or_else(|p| p.into_inner());
        claim.as_ref().map(|(_, t)| *t)
    }

    /// The owner key of the log, once claimed.
    pub fn owner_key(&self) -> Option<Vec<u8>> {
        let claim = self.claim.lock().unwrap_or_else(|p| p.into_inner());
        claim.as_ref().map(|(k, _)| k.clone())
    }

    pub(crate) fn set(&self, keys: &KeyLayout, token: FencingToken) {
        *self.claim.lock().unwrap_or_else(|p| p.into_inner()) = Some((keys.owner(), token));
    }
}

impl fmt::Debug for OwnerFence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnerFence")
            .field("token", &self.token())
            .finish()
    }
}

/// Who owns a log, as read from its owner key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnerInfo {
    /// The owner's [`EtcdOptions::writer_id`].
    pub writer_id: String,
    /// The lease the owner key is attached to.
    pub lease: i64,
    /// The owner's fencing token (the key's create revision).
    pub token: FencingToken,
}

impl OwnerInfo {
    pub(crate) fn from_kv(kv: &KeyValue) -> OwnerInfo {
        OwnerInfo {
            writer_id: String::from_utf8_lossy(kv.value()).into_owned(),
            lease: kv.lease(),
            token: FencingToken(kv.create_revision()),
        }
    }
}

impl fmt::Display for OwnerInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "writer {} (lease {:x}, fencing token {})",
            self.writer_id, self.lease, self.token
        )
    }
}

/// A successful claim.
pub(crate) struct Claim {
    pub token: FencingToken,
    /// The store's own lease (with when its grant was sent: it lives at
    /// least a TTL from there), or the session's.
    pub lease: LeaseKind,
}

/// The compare every mutation carries.
pub(crate) fn owner_compare(keys: &KeyLayout, token: FencingToken) -> Compare {
    Compare::create_revision(keys.owner(), CompareOp::Equal, token.0)
}

/// The owner named by a txn's `or_else(get(owner))` response, if any.
pub(crate) fn owner_from_txn(resp: &etcd_client::TxnResponse) -> Option<OwnerInfo> {
    resp.op_responses().into_iter().find_map(|r| match r {
        TxnOpResponse::Get(g) => g.kvs().first().map(OwnerInfo::from_kv),
        _ => None,
    })
}

/// One claim attempt's outcome.
enum Attempt {
    Claimed(Claim),
    Held { holder: String, revision: i64 },
}

/// Pauses between claim attempts after a transient failure (etcd
/// unreachable, a watch that broke). A fixed pause made every standby that
/// lost etcd at the same moment retry in the same instant, for as long as
/// the outage lasted; these grow from [`RetryPause::MIN`] by 2x to
/// [`RetryPause::MAX`], each with up to as much again of random jitter
/// (seeded per process), so standbys drift apart. A pause never runs past
/// the caller's deadline.
pub(crate) struct RetryPause {
    delays: ExponentialBackoff,
}

impl RetryPause {
    /// The first pause (before jitter).
    pub(crate) const MIN: Duration = Duration::from_millis(100);
    /// The longest pause (before jitter, which adds up to as much again).
    pub(crate) const MAX: Duration = Duration::from_secs(2);

    pub(crate) fn new() -> RetryPause {
        let delays = ExponentialBuilder::new()
            .with_min_delay(RetryPause::MIN)
            .with_max_delay(RetryPause::MAX)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times()
            .build();
        RetryPause { delays }
    }

    /// The next pause, cut to end at `deadline`; `None` if less than
    /// [`RetryPause::MIN`] is left, so the caller gives up.
    pub(crate) fn next(&mut self, deadline: Instant) -> Option<Duration> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining <= RetryPause::MIN {
            return None;
        }
        let pause = self.delays.next().unwrap_or(RetryPause::MAX);
        Some(pause.min(remaining))
    }

    /// Starts over from the shortest pause, after progress.
    pub(crate) fn reset(&mut self) {
        *self = RetryPause::new();
    }
}

/// Claims the log, per [`EtcdOptions::acquire`]. In wait mode, transient
/// failures (etcd unreachable) are retried, after a [`RetryPause`], until
/// the deadline.
pub(crate) async fn acquire(
    etcd: &Etcd,
    keys: &KeyLayout,
    options: &EtcdOptions,
    session: Option<&EtcdSession>,
) -> Result<Claim> {
    // On a session the lease (and its TTL) is the session's.
    let ttl = match session {
        Some(_) => 0,
        None => options.ttl_secs()?,
    };
    let deadline = match options.acquire {
        Acquire::FailFast => None,
        Acquire::Wait(d) => Some(Instant::now() + d),
    };
    let mut pause = RetryPause::new();
    // The pause before retrying after `e`, or `None` to give up with it.
    let retry = |pause: &mut RetryPause, e: &Error| match deadline {
        Some(d) if matches!(e, Error::Unavailable(_)) => pause.next(d),
        _ => None,
    };
    loop {
        let (holder, revision) = match try_claim(etcd, keys, options, ttl, session).await {
            Ok(Attempt::Claimed(c)) => return Ok(c),
            Ok(Attempt::Held { holder, revision }) => (holder, revision),
            Err(e) => match retry(&mut pause, &e) {
                Some(p) => {
                    debug!(log = keys.base(), error = %e, pause = ?p, "claim failed; retrying");
                    tokio::time::sleep(p).await;
                    continue;
                }
                None => return Err(e),
            },
        };
        let Some(deadline) = deadline else {
            return Err(Error::Locked { holder });
        };
        debug!(log = keys.base(), %holder, "log is owned; waiting for a vacancy");
        match wait_vacant(etcd, keys, revision, deadline).await {
            // Progress: the next failure starts from the shortest pause.
            Ok(Vacancy::Vacant) => pause.reset(),
            Ok(Vacancy::WatchBroke) => {
                // Not in a hot loop, and not in step with other standbys.
                if let Some(p) = pause.next(deadline) {
                    tokio::time::sleep(p).await;
                }
            }
            Ok(Vacancy::TimedOut) => {
                return Err(Error::Locked {
                    holder: format!("{holder}; still held after waiting"),
                })
            }
            Err(e) => match retry(&mut pause, &e) {
                Some(p) => tokio::time::sleep(p).await,
                None => return Err(e),
            },
        }
    }
}

async fn try_claim(
    etcd: &Etcd,
    keys: &KeyLayout,
    options: &EtcdOptions,
    ttl: i64,
    session: Option<&EtcdSession>,
) -> Result<Attempt> {
    let granted_at = Instant::now();
    let lease = match session {
        Some(s) => {
            if let Some(lost) = s.lost() {
                return Err(lost);
            }
            s.lease_id()
        }
        None => etcd.grant(ttl).await?,
    };
    let owner = keys.owner();
    let txn = Txn::new()
        .when([Compare::create_revision(owner.clone(), CompareOp::Equal, 0)])
        .and_then([TxnOp::put(
            owner.clone(),
            options.writer_id.as_bytes().to_vec(),
            Some(PutOptions::new().with_lease(lease)),
        )])
        .or_else([TxnOp::get(owner.clone(), None)]);
    let resp = match etcd.txn("claim ownership", txn).await {
        Ok(r) => r,
        Err(f) => {
            match session {
                // If the claim landed, revoking its lease deletes the key again.
                None => {
                    let _ = etcd.revoke(lease).await;
                }
                Some(s) => {
                    if f.error.to_string().contains("requested lease not found") {
                        return Err(Error::Fenced {
                            reason: format!("the session's lease {lease:x} expired or was revoked"),
                        });
                    }
                    if !f.outcome_known {
                        // If the claim landed, the key is on the session's
                        // lease: delete it again (the lease stays).
                        let undo = Txn::new()
                            .when([Compare::lease(
                                owner.clone(),
                                CompareOp::Equal,
                                s.lease_id(),
                            )])
                            .and_then([TxnOp::delete(owner, None)]);
                        let _ = etcd.txn("undo claim", undo).await;
                    }
                }
            }
            return Err(f.error);
        }
    };
    let revision = resp.header().map_or(0, |h| h.revision());
    if resp.succeeded() {
        info!(
            log = keys.base(),
            writer = %options.writer_id,
            token = revision,
            lease = format_args!("{lease:x}"),
            shared = session.is_some(),
            "claimed ownership"
        );
        return Ok(Attempt::Claimed(Claim {
            token: FencingToken(revision),
            lease: match session {
                Some(s) => LeaseKind::Shared(s.clone()),
                None => LeaseKind::Own {
                    id: lease,
                    granted_at,
                },
            },
        }));
    }
    if session.is_none() {
        let _ = etcd.revoke(lease).await;
    }
    let holder = owner_from_txn(&resp)
        .map(|o| o.to_string())
        .unwrap_or_else(|| "an unknown writer".into());
    Ok(Attempt::Held { holder, revision })
}

/// How [`wait_vacant`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Vacancy {
    /// The owner key was deleted: try to claim it.
    Vacant,
    /// The watch broke or was cancelled before anything was seen: pause
    /// (a [`RetryPause`]) and look again.
    WatchBroke,
    /// The deadline passed with the key still held.
    TimedOut,
}

/// Waits until the owner key is deleted after `revision`, or `deadline`.
pub(crate) async fn wait_vacant(
    etcd: &Etcd,
    keys: &KeyLayout,
    revision: i64,
    deadline: Instant,
) -> Result<Vacancy> {
    let remaining = deadline.saturating_duration_since(Instant::now());
    if remaining.is_zero() {
        return Ok(Vacancy::TimedOut);
    }
    let mut watch_client = etcd.client.watch_client();
    let watch = tokio::time::timeout(
        etcd.timeout.min(remaining),
        watch_client.watch(
            keys.owner(),
            Some(WatchOptions::new().with_start_revision(revision + 1)),
        ),
    )
    .await;
    let mut stream = match watch {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(crate::error::map("watch owner", e).error),
        Err(_) => {
            return Err(Error::Unavailable(format!(
                "etcd watch owner: no answer within {:?}",
                etcd.timeout.min(remaining)
            )))
        }
    };
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Ok(Vacancy::TimedOut);
        }
        match tokio::time::timeout(remaining, stream.message()).await {
            Err(_) => return Ok(Vacancy::TimedOut),
            Ok(Ok(Some(resp))) => {
                if resp
                    .events()
                    .iter()
                    .any(|e| e.event_type() == EventType::Delete)
                {
                    return Ok(Vacancy::Vacant);
                }
                if resp.canceled() {
                    return Ok(Vacancy::WatchBroke);
                }
            }
            Ok(Ok(None)) | Ok(Err(_)) => return Ok(Vacancy::WatchBroke),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(3600)
    }

    #[test]
    fn retry_pauses_double_up_to_the_cap_with_jitter() {
        let mut p = RetryPause::new();
        let mut base = RetryPause::MIN;
        for _ in 0..12 {
            let d = p.next(far()).unwrap();
            // Jitter adds up to as much again: [base, 2 * base).
            assert!(d >= base && d < base * 2, "{d:?} for base {base:?}");
            base = (base * 2).min(RetryPause::MAX);
        }
        assert_eq!(base, RetryPause::MAX);
        p.reset();
        let d = p.next(far()).unwrap();
        assert!(d < RetryPause::MIN * 2, "{d:?} after reset");
    }

    /// Two standbys that start retrying together do not stay in step.
    #[test]
    fn retry_pauses_of_two_standbys_differ() {
        let (mut a, mut b) = (RetryPause::new(), RetryPause::new());
        let pa: Vec<Duration> = (0..8).map(|_| a.next(far()).unwrap()).collect();
        let pb: Vec<Duration> = (0..8).map(|_| b.next(far()).unwrap()).collect();
        assert_ne!(pa, pb);
    }

    #[test]
    fn retry_pauses_end_at_the_deadline() {
        let mut p = RetryPause::new();
        for _ in 0..10 {
            p.next(far());
        }
        let left = Duration::from_millis(700);
        let d = p.next(Instant::now() + left).unwrap();
        assert!(d <= left, "{d:?} runs past the deadline");
        // Less than the shortest pause left: give up.
        assert_eq!(p.next(Instant::now() + RetryPause::MIN / 2), None);
        assert_eq!(p.next(Instant::now()), None);
    }
}
