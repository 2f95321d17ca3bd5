//! etcd's request limits: chunked entries, batches above the txn op limit,
//! oversize entries, and limits that do not match the cluster.
#![allow(clippy::unwrap_used)]

mod support;

use bytes::Bytes;
use futures::StreamExt;
use wal_core::{Entry, Error, Lsn, ReadLimit, Wal, WalOptions};
use wal_etcd::{EtcdLimits, EtcdReader, EtcdStore};

/// Deterministic, position-dependent bytes, so a misplaced chunk shows.
fn payload(len: usize, seed: u64) -> Bytes {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

async fn recover(store: EtcdStore) -> (Wal, Vec<Entry>) {
    let (wal, rec) = Wal::open(store, WalOptions::default()).await.unwrap();
    (wal, rec.map(|e| e.unwrap()).collect().await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_at_and_above_the_chunking_threshold_recover_intact() {
    let eps = support::shared_endpoints().await;
    let prefix = format!("/{}/", support::unique("chunks"));
    let opts = support::options(&eps, &prefix, "log");
    let limits = EtcdLimits::default();
    let t = limits.chunk_threshold();
    let c = limits.chunk_bytes;
    let sizes = [
        0,
        1,
        t - 1,
        t,
        t + 1,
        c - 1,
        c,
        c + 1,
        3 * c + 17,
        limits.max_payload_bytes,
    ];
    let (wal, _) = recover(EtcdStore::new(opts.clone())).await;
    assert_eq!(wal.max_entry_bytes(), limits.max_payload_bytes);
    let mut expect = Vec::new();
    for (i, &n) in sizes.iter().enumerate() {
        let p = payload(n, i as u64);
        wal.append(p.clone()).await.unwrap();
        expect.push(p);
    }
    // One atomic batch mixing packed and chunked entries over several txns.
    let batch: Vec<Bytes> = [t + 1, 10, 2 * c + 5, 10, t]
        .iter()
        .enumerate()
        .map(|(i, &n)| payload(n, 100 + i as u64))
        .collect();
    wal.append_batch(batch.clone()).await.unwrap();
    expect.extend(batch);
    // Too large: refused, nothing changes, not poisoned.
    let max = wal.max_entry_bytes();
    match wal.append(payload(max + 1, 9)).await {
        Err(Error::EntryTooLarge { size, max: m }) => assert_eq!((size, m), (max + 1, max)),
        other => panic!("oversize: {other:?}"),
    }
    wal.append("after").await.unwrap();
    expect.push(Bytes::from_static(b"after"));

    let reader = EtcdReader::connect(opts.clone()).await.unwrap();
    let mut read = Vec::new();
    let mut next = Lsn(1);
    loop {
        let chunk = reader.read_from(next, ReadLimit::default()).await.unwrap();
        let Some(last) = chunk.last() else { break };
        next = last.lsn.next();
        read.extend(chunk.into_iter().map(|r| r.payload));
    }
    assert!(read == expect, "the reader sees every entry intact");
    wal.simulate_crash().await;
    support::revoke_owner(&eps, &prefix, "log").await;

    let (wal, rec) = recover(EtcdStore::new(opts)).await;
    let got: Vec<Bytes> = rec.into_iter().map(|e| e.payload).collect();
    assert_eq!(got.len(), expect.len());
    for (i, (g, e)) in got.iter().zip(&expect).enumerate() {
        assert!(
            g == e,
            "entry {i} ({} bytes) differs after recovery",
            e.len()
        );
    }
    wal.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_above_the_txn_op_limit_recover_intact() {
    let eps = support::shared_endpoints().await;
    // One key per record: a 300-entry batch needs 300 puts, over 128 per txn.
    let prefix = format!("/{}/", support::unique("ops"));
    let mut limits = EtcdLimits::default();
    limits.pack_bytes = 64;
    let opts = support::options(&eps, &prefix, "log").limits(limits);
    let (wal, _) = recover(EtcdStore::new(opts.clone())).await;
    let batch: Vec<Bytes> = (0..300).map(|i| payload(100, i)).collect();
    let lsns = wal.append_batch(batch.clone()).await.unwrap();
    assert_eq!(lsns.len(), 300);
    // Default limits: 150 chunked entries of 70 KiB (300 keys, ~10 MiB).
    let big: Vec<Bytes> = (0..150).map(|i| payload(70 << 10, 1000 + i)).collect();
    wal.append_batch(big.clone()).await.unwrap();
    wal.simulate_crash().await;
    support::revoke_owner(&eps, &prefix, "log").await;
    let (wal, rec) = recover(EtcdStore::new(opts)).await;
    let got: Vec<Bytes> = rec.into_iter().map(|e| e.payload).collect();
    let expect: Vec<Bytes> = batch.into_iter().chain(big).collect();
    assert!(got == expect, "both batches recover whole and in order");
    wal.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_payload_limit_and_mismatched_cluster_limits_are_errors() {
    let eps = support::shared_endpoints().await;
    let prefix = format!("/{}/", support::unique("mismatch"));

    // A smaller configured payload limit is what the Wal enforces.
    let mut limits = EtcdLimits::default();
    limits.max_payload_bytes = 1 << 20;
    let (wal, _) = recover(EtcdStore::new(
        support::options(&eps, &prefix, "small").limits(limits),
    ))
    .await;
    assert_eq!(wal.max_entry_bytes(), 1 << 20);
    assert!(matches!(
        wal.append(payload((1 << 20) + 1, 1)).await,
        Err(Error::EntryTooLarge { max, .. }) if max == 1 << 20
    ));
    wal.append(payload(1 << 20, 2)).await.unwrap();
    wal.close().await.unwrap();

    // Limits above the cluster's (--max-request-bytes 1.5 MiB): etcd refuses
    // the request; reported as InvalidArgument naming the setting.
    let mut limits = EtcdLimits::default();
    limits.max_request_bytes = 4 << 20;
    limits.chunk_bytes = 2 << 20;
    let (wal, _) = recover(EtcdStore::new(
        support::options(&eps, &prefix, "big-requests").limits(limits),
    ))
    .await;
    let err = wal.append(payload(3 << 20, 3)).await.unwrap_err();
    match err.root_cause() {
        Error::InvalidArgument(m) => assert!(m.contains("max_request_bytes"), "{m}"),
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
    let _ = wal.close().await;

    // More ops per txn than the cluster's --max-txn-ops 128.
    let mut limits = EtcdLimits::default();
    limits.max_txn_ops = 1000;
    limits.pack_bytes = 64;
    let (wal, _) = recover(EtcdStore::new(
        support::options(&eps, &prefix, "many-ops").limits(limits),
    ))
    .await;
    let batch: Vec<Bytes> = (0..300).map(|i| payload(100, i)).collect();
    let err = wal.append_batch(batch).await.unwrap_err();
    match err.root_cause() {
        Error::InvalidArgument(m) => assert!(m.contains("max_txn_ops"), "{m}"),
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
    let _ = wal.close().await;
    // Nothing of the refused batch is visible.
    let (wal, rec) = recover(EtcdStore::new(support::options(&eps, &prefix, "many-ops"))).await;
    assert!(rec.is_empty());
    wal.close().await.unwrap();
}
