//! Liveness when etcd is slow or refuses requests, produced with the fault
//! proxy in front of a real etcd:
//!
//! - every request but the lease keep-alives answered late (longer, in
//!   all, than the lease TTL) while an owner is idle and its keep-alive task
//!   re-checks the owner key: the renewals stay on time, the lease never
//!   lapses, the owner still appends afterwards;
//! - a trim whose first attempts etcd refuses up front ("no leader", "too
//!   many requests": certainly not applied) is sent again and removes;
//! - the lease revoke on close, refused the same way, is sent again, so a
//!   standby takes over at once instead of after the TTL.
#![allow(clippy::unwrap_used)]

mod support;

use std::{
    future::Future,
    time::{Duration, Instant},
};

use futures::{FutureExt, StreamExt};
use support::{
    proxy::{Fault, Proxy, Refusal},
    unique,
};
use wal_core::{Entry, Recovery, Wal, WalOptions};
use wal_etcd::{etcd_client, EtcdOptions, EtcdStore};

async fn within<T>(what: &str, d: Duration, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(d, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: not within {d:?}"))
}

async fn open(options: EtcdOptions) -> (Wal, Recovery) {
    Wal::open(EtcdStore::new(options), WalOptions::default())
        .await
        .unwrap()
}

async fn collect(rec: Recovery) -> Vec<String> {
    rec.map(|e| {
        let e: Entry = e.unwrap();
        String::from_utf8(e.payload.to_vec()).unwrap()
    })
    .collect()
    .await
}

/// The owner key's (lease, create revision), read directly from etcd.
async fn owner(c: &mut etcd_client::Client, prefix: &str) -> Option<(i64, i64)> {
    let r = c.get(format!("{prefix}log/owner"), None).await.unwrap();
    r.kvs().first().map(|kv| (kv.lease(), kv.create_revision()))
}

/// The Wal has not stopped (poisoned or closed).
fn still_running(wal: &Wal) -> bool {
    wal.failed().now_or_never().is_none()
}

/// Every request but the keep-alives is answered 3.5 s late (each within
/// the 5 s request timeout), so one owner check (a get of the owner key,
/// then a watch on it) takes 7 s, more than the 6 s TTL. The proxy cuts the
/// connections twice, which breaks the keep-alive task's watch and makes it
/// check the owner again through the slow path (a cut also costs the
/// keep-alive stream one renewal: with renewals every 2 s the lease then
/// has 2 s of margin). Renewals run beside the
/// check: the lease's TTL, read by another client, stays positive and keeps
/// being refreshed for the whole time, the Wal is not poisoned, and the
/// owner appends afterwards under the same fencing token. (With the check
/// inline between renewals, the first slow check outlasts the TTL and the
/// owner is fenced.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_renews_on_time_while_owner_checks_are_slow() {
    const TTL: Duration = Duration::from_secs(6);
    const SLOW: Duration = Duration::from_millis(3500);
    let eps = support::shared_endpoints().await;
    let proxy = Proxy::start(&eps[0]).await;
    let prefix = format!("/{}/", unique("slow-check"));
    let opts = support::options(std::slice::from_ref(&proxy.endpoint), &prefix, "log")
        .lease_ttl(TTL)
        .request_timeout(Duration::from_secs(5));
    let (wal, _) = open(opts).await;
    wal.append("before").await.unwrap();
    let mut op = support::operator(&eps).await;
    let (lease, token) = owner(&mut op, &prefix).await.expect("owner key");

    proxy.set(Fault::DelayAllButKeepAlives(SLOW));
    for round in 0..2 {
        let slowed = proxy.slowed();
        proxy.cut();
        // Watch the lease until the owner check went through the slow path
        // (its get and its watch creation: two delayed requests) and for
        // at least two TTLs.
        let start = Instant::now();
        let mut ttls = Vec::new();
        loop {
            let ttl = op.lease_time_to_live(lease, None).await.unwrap().ttl();
            assert!(
                ttl > 0,
                "round {round}: the lease lapsed {:?} after the cut (TTLs seen: {ttls:?})",
                start.elapsed()
            );
            assert!(
                still_running(&wal),
                "round {round}: the owner was fenced {:?} after the cut: {}",
                start.elapsed(),
                wal.failed().await
            );
            ttls.push(ttl);
            if proxy.slowed() >= slowed + 2 && start.elapsed() >= 2 * TTL {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "round {round}: the owner check did not go through the slow proxy ({} delayed requests)",
                proxy.slowed() - slowed
            );
            // The polling interval of the observation, not a settling wait.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(
            ttls.windows(2).any(|w| w[1] > w[0]),
            "round {round}: the lease was never refreshed: {ttls:?}"
        );
        println!(
            "round {round}: {} delayed requests; lease TTLs seen over {:?}: {ttls:?}",
            proxy.slowed() - slowed,
            start.elapsed()
        );
    }
    proxy.pass();
    within(
        "append after the slow period",
        Duration::from_secs(10),
        wal.append("after"),
    )
    .await
    .unwrap();
    assert_eq!(owner(&mut op, &prefix).await, Some((lease, token)));
    wal.close().await.unwrap();
    let (wal, rec) = open(support::options(&eps, &prefix, "log")).await;
    assert_eq!(collect(rec).await, ["before", "after"]);
    wal.close().await.unwrap();
}

/// A trim whose first two attempts etcd refuses before applying anything
/// ("no leader", then "too many requests"; the proxy answers them and
/// never forwards the request) is sent again and removes the records; the
/// Wal stays healthy and a reopen holds only what was kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trim_refused_up_front_is_sent_again_and_removes() {
    let eps = support::shared_endpoints().await;
    let proxy = Proxy::start(&eps[0]).await;
    let prefix = format!("/{}/", unique("trim-refused"));
    let opts = support::options(std::slice::from_ref(&proxy.endpoint), &prefix, "log")
        .request_timeout(Duration::from_secs(2));
    let (wal, _) = open(opts).await;
    let mut lsns = Vec::new();
    for i in 0..6 {
        lsns.push(wal.append(format!("e{i}")).await.unwrap());
    }
    for (cut, with) in [(2, Refusal::NoLeader), (4, Refusal::TooManyRequests)] {
        let refused = proxy.refused();
        proxy.refuse_next(2, with);
        let r = within("trim", Duration::from_secs(10), wal.trim_before(lsns[cut])).await;
        assert_eq!(
            proxy.refused() - refused,
            2,
            "the trim's first two attempts were refused with {with:?}"
        );
        assert_eq!(r.unwrap(), lsns[cut], "trim refused with {with:?}");
        assert_eq!(wal.first_lsn(), Some(lsns[cut]));
        assert!(still_running(&wal), "{}", wal.failed().await);
    }
    wal.append("after").await.unwrap();
    wal.close().await.unwrap();
    let (wal, rec) = open(support::options(&eps, &prefix, "log")).await;
    assert_eq!(collect(rec).await, ["e4", "e5", "after"]);
    wal.close().await.unwrap();
}

/// Close revokes the lease; etcd refuses the first two revokes up front
/// ("no leader", answered by the proxy, never forwarded). The revoke is
/// sent again, so the owner key is gone when close returns and a standby
/// that does not wait claims the log at once, long before the 30 s TTL
/// would have freed it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_sends_a_refused_revoke_again_so_a_standby_takes_over_at_once() {
    let eps = support::shared_endpoints().await;
    let proxy = Proxy::start(&eps[0]).await;
    let prefix = format!("/{}/", unique("revoke-refused"));
    let opts = support::options(std::slice::from_ref(&proxy.endpoint), &prefix, "log")
        .lease_ttl(Duration::from_secs(30))
        .request_timeout(Duration::from_secs(2));
    let (wal, _) = open(opts).await;
    wal.append("a").await.unwrap();
    let mut op = support::operator(&eps).await;
    let (lease, _) = owner(&mut op, &prefix).await.expect("owner key");

    proxy.refuse_next(2, Refusal::NoLeader);
    let closed_at = Instant::now();
    within("close", Duration::from_secs(10), wal.close())
        .await
        .unwrap();
    assert_eq!(
        owner(&mut op, &prefix).await,
        None,
        "the owner key outlived close ({} revokes refused)",
        proxy.refused()
    );
    assert_eq!(proxy.refused(), 2, "close's first two revokes were refused");
    let ttl = op.lease_time_to_live(lease, None).await.unwrap().ttl();
    assert!(
        ttl <= 0,
        "the lease is still alive ({ttl} s left) after close"
    );
    // FailFast: a standby that does not wait for the TTL.
    let (standby, rec) = open(support::options(&eps, &prefix, "log")).await;
    println!(
        "standby took over {:?} after close began",
        closed_at.elapsed()
    );
    assert!(closed_at.elapsed() < Duration::from_secs(10));
    assert_eq!(collect(rec).await, ["a"]);
    standby.close().await.unwrap();
}
