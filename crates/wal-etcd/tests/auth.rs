//! Authentication against a real etcd with auth enabled and simple tokens
//! that expire after 2 s: the store refreshes its token when etcd refuses
//! it (idle past the TTL, or forgotten by a restarted etcd).
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use support::{
    docker,
    secure::{self, ROOT_PASSWORD},
};
use wal_core::{Lsn, Wal, WalOptions};
use wal_etcd::{EtcdOptions, EtcdReader, EtcdStore};

const TOKEN_TTL: Duration = Duration::from_secs(2);

fn auth_options(endpoints: &[String], prefix: &str) -> EtcdOptions {
    support::options(endpoints, prefix, "log")
        .user("root", ROOT_PASSWORD)
        .lease_ttl(Duration::from_secs(5))
        .request_timeout(Duration::from_secs(2))
}

async fn within<T>(what: &str, d: Duration, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(d, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: not within {d:?}"))
}

/// A store and a reader idle past the token TTL: their next requests are
/// refused with "invalid auth token" unless the client re-authenticates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_and_reader_keep_working_after_the_token_expires() {
    let node = secure::start_auth_node("wal-etcd-auth-idle", 2).await;
    let eps = vec![node.endpoint.clone()];
    let opts = auth_options(&eps, "/auth-idle/");
    let (wal, _) = Wal::open(EtcdStore::new(opts.clone()), WalOptions::default())
        .await
        .unwrap();
    let reader = EtcdReader::connect(opts.clone()).await.unwrap();
    for text in [
        format!("{reader:?}"),
        format!("{:?}", EtcdStore::new(opts.clone())),
    ] {
        assert!(!text.contains(ROOT_PASSWORD), "password in {text}");
    }
    let first = wal.append("before idle").await.unwrap();
    assert_eq!(reader.head().await.unwrap().0, first);

    secure::wait_tokens_expired(&eps, TOKEN_TTL, Duration::from_secs(30)).await;

    let second = within(
        "append after idle",
        Duration::from_secs(10),
        wal.append("after idle"),
    )
    .await
    .unwrap_or_else(|e| panic!("append after the token expired: {e}"));
    assert_eq!(second, Lsn(first.0 + 1));
    let head = within("reader after idle", Duration::from_secs(10), reader.head())
        .await
        .unwrap_or_else(|e| panic!("reader after the token expired: {e}"));
    assert_eq!(head.0, second);
    wal.close().await.unwrap();
}

/// etcd restarts (simple tokens live in its memory): the store, whose lease
/// survives the restart, and a reader both keep working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_and_reader_keep_working_after_etcd_restarts() {
    // A long token TTL: only the restart invalidates the tokens.
    let node = secure::start_auth_node("wal-etcd-auth-restart", 300).await;
    let eps = vec![node.endpoint.clone()];
    let opts = auth_options(&eps, "/auth-restart/").lease_ttl(Duration::from_secs(30));
    let (wal, _) = Wal::open(EtcdStore::new(opts.clone()), WalOptions::default())
        .await
        .unwrap();
    let reader = EtcdReader::connect(opts.clone()).await.unwrap();
    let first = wal.append("before restart").await.unwrap();
    assert_eq!(reader.head().await.unwrap().0, first);

    docker(&["restart", "-t", "5", node.id()]);
    secure::wait_auth_ready(&eps, Duration::from_secs(60)).await;

    let second = within(
        "append after restart",
        Duration::from_secs(15),
        wal.append("after restart"),
    )
    .await
    .unwrap_or_else(|e| panic!("append after the etcd restart: {e}"));
    assert_eq!(second, Lsn(first.0 + 1));
    let head = within(
        "reader after restart",
        Duration::from_secs(10),
        reader.head(),
    )
    .await
    .unwrap_or_else(|e| panic!("reader after the etcd restart: {e}"));
    assert_eq!(head.0, second);
    wal.close().await.unwrap();
}
