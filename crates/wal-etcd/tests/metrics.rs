//! Feature `metrics` on a real etcd: lease renewals are counted as they
//! happen, and an operator revoking the lease counts one ownership loss
//! (and one poisoning, cause `fenced`, of the Wal).
#![cfg(feature = "metrics")]
#![allow(clippy::unwrap_used)]

#[path = "../../wal-core/tests/support/recorder.rs"]
mod recorder;
mod support;

use std::time::Duration;

use recorder::{counter, until};
use wal_core::{Error, Wal, WalOptions};
use wal_etcd::EtcdStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewals_and_a_lost_lease_are_counted() {
    recorder::install();
    let eps = support::shared_endpoints().await;
    let prefix = format!("/{}/", support::unique("metrics"));
    let opts = support::options(&eps, &prefix, "log")
        .lease_ttl(Duration::from_secs(2))
        .request_timeout(Duration::from_secs(1));
    let (wal, _) = Wal::open(
        EtcdStore::new(opts),
        WalOptions::default().metrics_name("etcd-metrics"),
    )
    .await
    .unwrap();
    wal.append("x").await.unwrap();
    // A 2 s TTL renews about every 0.7 s.
    until("two renewals", Duration::from_secs(20), || {
        counter("wal_etcd_lease_renewals_total", &[("result", "renewed")]) >= 2
    })
    .await;
    assert_eq!(counter("wal_etcd_ownership_losses_total", &[]), 0);
    assert!(support::revoke_owner(&eps, &prefix, "log").await);
    let failed = tokio::time::timeout(Duration::from_secs(20), wal.failed())
        .await
        .expect("the Wal saw the revoked lease");
    assert!(failed.is_fenced(), "{failed:?}");
    until("the ownership loss", Duration::from_secs(20), || {
        counter("wal_etcd_ownership_losses_total", &[]) == 1
    })
    .await;
    assert_eq!(
        counter(
            "wal_poisoned_total",
            &[("wal", "etcd-metrics"), ("cause", "fenced")]
        ),
        1
    );
    assert!(matches!(wal.append("y").await, Err(Error::Poisoned { .. })));
    let _ = wal.close().await;
}
