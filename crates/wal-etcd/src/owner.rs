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
//!    up to the deadline, and go back to step 1.
//! 4. A claim whose outcome is unknown (timeout) revokes its lease: if the
//!    claim landed, that deletes the owner key again.

use std::{
    fmt,
    time::{Duration, Instant},
};

use etcd_client::{
    Compare, CompareOp, EventType, KeyValue, PutOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use tracing::{debug, info};
use wal_core::{Error, Result};

use crate::{client::Etcd, keys::KeyLayout, Acquire, EtcdOptions};

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
    pub lease: i64,
    /// When the grant was sent: the lease lives at least TTL from here.
    pub granted_at: Instant,
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

/// Pause between attempts after a transient failure while waiting.
const RETRY_PAUSE: Duration = Duration::from_millis(250);

/// Claims the log, per [`EtcdOptions::acquire`]. In wait mode, transient
/// failures (etcd unreachable) are retried until the deadline.
pub(crate) async fn acquire(etcd: &Etcd, keys: &KeyLayout, options: &EtcdOptions) -> Result<Claim> {
    let ttl = options.ttl_secs()?;
    let deadline = match options.acquire {
        Acquire::FailFast => None,
        Acquire::Wait(d) => Some(Instant::now() + d),
    };
    let retry = |e: &Error| match deadline {
        Some(d) => matches!(e, Error::Unavailable(_)) && Instant::now() + RETRY_PAUSE < d,
        None => false,
    };
    loop {
        let (holder, revision) = match try_claim(etcd, keys, options, ttl).await {
            Ok(Attempt::Claimed(c)) => return Ok(c),
            Ok(Attempt::Held { holder, revision }) => (holder, revision),
            Err(e) if retry(&e) => {
                debug!(log = keys.base(), error = %e, "claim failed; retrying");
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        let Some(deadline) = deadline else {
            return Err(Error::Locked { holder });
        };
        debug!(log = keys.base(), %holder, "log is owned; waiting for a vacancy");
        match wait_vacant(etcd, keys, revision, deadline).await {
            Ok(true) => {}
            Ok(false) => {
                return Err(Error::Locked {
                    holder: format!("{holder}; still held after waiting"),
                })
            }
            Err(e) if retry(&e) => tokio::time::sleep(RETRY_PAUSE).await,
            Err(e) => return Err(e),
        }
    }
}

async fn try_claim(
    etcd: &Etcd,
    keys: &KeyLayout,
    options: &EtcdOptions,
    ttl: i64,
) -> Result<Attempt> {
    let granted_at = Instant::now();
    let lease = etcd.grant(ttl).await?;
    let owner = keys.owner();
    let txn = Txn::new()
        .when([Compare::create_revision(owner.clone(), CompareOp::Equal, 0)])
        .and_then([TxnOp::put(
            owner.clone(),
            options.writer_id.as_bytes().to_vec(),
            Some(PutOptions::new().with_lease(lease)),
        )])
        .or_else([TxnOp::get(owner, None)]);
    let resp = match etcd.txn("claim ownership", txn).await {
        Ok(r) => r,
        Err(f) => {
            // If the claim landed, revoking its lease deletes the key again.
            let _ = etcd.revoke(lease).await;
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
            "claimed ownership"
        );
        return Ok(Attempt::Claimed(Claim {
            token: FencingToken(revision),
            lease,
            granted_at,
        }));
    }
    let _ = etcd.revoke(lease).await;
    let holder = owner_from_txn(&resp)
        .map(|o| o.to_string())
        .unwrap_or_else(|| "an unknown writer".into());
    Ok(Attempt::Held { holder, revision })
}

/// Waits until the owner key is deleted after `revision`, or `deadline`.
/// Returns false on timeout. A broken watch returns true, so that the caller
/// simply tries to claim again.
pub(crate) async fn wait_vacant(
    etcd: &Etcd,
    keys: &KeyLayout,
    revision: i64,
    deadline: Instant,
) -> Result<bool> {
    let remaining = deadline.saturating_duration_since(Instant::now());
    if remaining.is_zero() {
        return Ok(false);
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
            return Ok(false);
        }
        match tokio::time::timeout(remaining, stream.message()).await {
            Err(_) => return Ok(false),
            Ok(Ok(Some(resp))) => {
                if resp.canceled() {
                    return Ok(true);
                }
                if resp
                    .events()
                    .iter()
                    .any(|e| e.event_type() == EventType::Delete)
                {
                    return Ok(true);
                }
            }
            Ok(Ok(None)) | Ok(Err(_)) => {
                // The watch broke: let the caller re-try the claim, but not
                // in a hot loop.
                tokio::time::sleep(Duration::from_millis(200).min(remaining)).await;
                return Ok(true);
            }
        }
    }
}
