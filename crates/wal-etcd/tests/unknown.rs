//! Unknown outcomes made on purpose with the fault proxy: etcd applies an
//! append and its answer is dropped (the connection cut). The store must
//! resolve it by reading back, keep its bounds right, report lost ownership
//! during the read-back as "outcome unknown" (not "fenced": the append may
//! have landed), and retry what etcd certainly did not apply.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use futures::StreamExt;
use support::{proxy::Proxy, unique};
use wal_core::{Entry, Error, Lsn, Recovery, Wal, WalOptions};
use wal_etcd::{Acquire, EtcdOptions, EtcdStore};

/// Entries this big make the only request DATA frames over [`ARM`] bytes.
const BIG: usize = 4096;
const ARM: usize = 2048;

async fn open(options: EtcdOptions) -> (Wal, Recovery) {
    Wal::open(EtcdStore::new(options), WalOptions::default())
        .await
        .unwrap()
}

async fn collect(rec: Recovery) -> Vec<(Lsn, String)> {
    rec.map(|e| {
        let e: Entry = e.unwrap();
        (e.lsn, String::from_utf8(e.payload.to_vec()).unwrap())
    })
    .collect()
    .await
}

async fn within<T>(what: &str, d: Duration, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(d, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: not within {d:?}"))
}

/// The first append of a log lands but its answer is lost: the store reads
/// the head back and acknowledges it. Its bounds must include it: two trims
/// (each clamped by the Wal to the last record) keep it, and a reopen
/// recovers it and goes on above its Lsn. (Before the fix the store's last
/// Lsn stayed unset, the second trim deleted the record, and the reopened
/// log handed out Lsn 1 again: "append out of order".)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_resolved_as_committed_keeps_the_bounds_right() {
    let eps = support::shared_endpoints().await;
    let proxy = Proxy::start(&eps[0]).await;
    let prefix = format!("/{}/", unique("resolved"));
    let opts = support::options(std::slice::from_ref(&proxy.endpoint), &prefix, "log")
        .request_timeout(Duration::from_secs(2));
    let (wal, _) = open(opts.clone()).await;
    proxy.drop_next_response_over(ARM, false);
    let big = "b".repeat(BIG);
    let lsn = within(
        "append resolved by read-back",
        Duration::from_secs(20),
        wal.append(big.clone()),
    )
    .await
    .unwrap();
    assert!(proxy.fired(), "the proxy dropped the append's answer");
    wal.trim_before(Lsn::MAX).await.unwrap();
    wal.trim_before(Lsn::MAX).await.unwrap();
    wal.close().await.unwrap();

    let (wal, rec) = open(opts.clone()).await;
    assert_eq!(collect(rec).await, vec![(lsn, big)]);
    let next = wal.append("next").await.unwrap();
    assert!(next > lsn, "{next} after {lsn}");
    wal.close().await.unwrap();
}

/// The append lands, its answer is lost, and the writer's lease is revoked
/// before the store can read back. The append must not be reported as
/// `Fenced` (which promises nothing landed): it is outcome-unknown, and in
/// fact it landed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ownership_lost_during_an_unknown_outcome_is_not_reported_as_fenced() {
    let eps = support::shared_endpoints().await;
    let proxy = Proxy::start(&eps[0]).await;
    let prefix = format!("/{}/", unique("lost-unknown"));
    let opts = support::options(std::slice::from_ref(&proxy.endpoint), &prefix, "log")
        .request_timeout(Duration::from_secs(5));
    let (wal, _) = open(opts.clone()).await;
    wal.append("before").await.unwrap();
    // Drop the answer, cut the connection, and hold the reconnect.
    proxy.drop_next_response_over(ARM, true);
    let big = "b".repeat(BIG);
    let append = tokio::spawn({
        let (wal, big) = (wal.clone(), big.clone());
        async move { wal.append(big).await }
    });
    within(
        "answer dropped",
        Duration::from_secs(10),
        proxy.wait_fired(),
    )
    .await;
    assert!(support::revoke_owner(&eps, &prefix, "log").await);
    proxy.release();
    let e = within("append fails", Duration::from_secs(30), append)
        .await
        .unwrap()
        .unwrap_err();
    let root = e.root_cause();
    println!("append after losing ownership mid-flight: {root}");
    assert!(!root.is_fenced(), "reported as fenced: {root:?}");
    let msg = root.to_string();
    assert!(
        matches!(root, Error::Unavailable(_)) && msg.contains("unknown"),
        "{root:?}"
    );
    drop(wal);

    let (wal, rec) = open(
        support::options(&eps, &prefix, "log").acquire(Acquire::Wait(Duration::from_secs(30))),
    )
    .await;
    let got: Vec<String> = collect(rec).await.into_iter().map(|(_, p)| p).collect();
    assert_eq!(got, vec!["before".to_string(), big], "the append landed");
    wal.close().await.unwrap();
}

/// The member refuses connections for half a second while an append is
/// due: the request never left, so the store sends it again, and the
/// append is acknowledged once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_refused_is_retried_not_fatal() {
    let eps = support::shared_endpoints().await;
    let proxy = Proxy::start(&eps[0]).await;
    let prefix = format!("/{}/", unique("refused"));
    let opts = support::options(std::slice::from_ref(&proxy.endpoint), &prefix, "log")
        .request_timeout(Duration::from_secs(2));
    let (wal, _) = open(opts.clone()).await;
    wal.append("a").await.unwrap();
    proxy.refuse();
    let append = tokio::spawn({
        let wal = wal.clone();
        async move { wal.append("b").await }
    });
    // The fault lasts 500 ms; then the member is back.
    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.listen().await;
    within("append after refusal", Duration::from_secs(20), append)
        .await
        .unwrap()
        .unwrap();
    wal.append("c").await.unwrap();
    wal.close().await.unwrap();
    let (wal, rec) = open(opts).await;
    let got: Vec<String> = collect(rec).await.into_iter().map(|(_, p)| p).collect();
    assert_eq!(got, ["a", "b", "c"]);
    wal.close().await.unwrap();
}
