//! etcd with authentication: simple tokens expire (`--auth-token-ttl`) and
//! vanish when etcd restarts; the store and the reader must re-authenticate.
#![allow(clippy::unwrap_used)]

#[path = "support/secure.rs"]
mod secure;
mod support;

use std::time::{Duration, Instant};

use futures::StreamExt;
use secure::{AuthEtcd, WAL_PASSWORD, WAL_USER};
use support::unique;
use wal_core::{Lsn, ReadLimit, Wal, WalOptions};
use wal_etcd::{etcd_client, EtcdReader, EtcdStore};

const PREFIX: &str = "/auth/";

/// Idles until a token obtained at the start of the wait is refused as
/// expired by the server (simple tokens are extended on every use, so the
/// probe's token is used once at the start and once at the end): the
/// server-side condition the idle owner and reader must survive.
async fn wait_token_expired(endpoint: &str) {
    let key = format!("{PREFIX}probe");
    let mut idle = Duration::from_secs(3);
    for _ in 0..4 {
        let opts = etcd_client::ConnectOptions::new().with_user(WAL_USER, WAL_PASSWORD);
        let mut raw = etcd_client::Client::connect([endpoint], Some(opts))
            .await
            .unwrap();
        tokio::time::sleep(idle).await;
        match raw.get(key.as_str(), None).await {
            Ok(_) => idle *= 2,
            Err(e) => {
                assert!(e.to_string().contains("invalid auth token"), "{e}");
                return;
            }
        }
    }
    panic!("a token idle for {idle:?} was never refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_owner_and_reader_survive_token_expiry_and_etcd_restart() {
    let node = AuthEtcd::start(&unique("wal-etcd-auth"), 2, PREFIX).await;
    let opts = support::options(std::slice::from_ref(&node.endpoint), PREFIX, "log")
        .user(WAL_USER, WAL_PASSWORD)
        .lease_ttl(Duration::from_secs(10))
        .request_timeout(Duration::from_secs(3));
    let (wal, _rec) = Wal::open(EtcdStore::new(opts.clone()), WalOptions::default())
        .await
        .unwrap();
    let reader = EtcdReader::connect(opts.clone()).await.unwrap();
    wal.append("before").await.unwrap();
    assert_eq!(
        reader
            .read_from(Lsn(1), ReadLimit::default())
            .await
            .unwrap()
            .len(),
        1
    );

    // Idle past the token TTL: the tokens of both are now expired.
    wait_token_expired(&node.endpoint).await;
    wal.append("after expiry").await.unwrap();
    let got = reader
        .read_from(Lsn(1), ReadLimit::default())
        .await
        .unwrap();
    assert_eq!(got.len(), 2, "reader after token expiry");

    // A restart forgets every simple token.
    node.restart().await;
    wal.append("after restart").await.unwrap();
    let got = reader
        .read_from(Lsn(1), ReadLimit::default())
        .await
        .unwrap();
    let texts: Vec<_> = got
        .iter()
        .map(|r| String::from_utf8_lossy(&r.payload).into_owned())
        .collect();
    assert!(texts.iter().any(|t| t == "after restart"), "{texts:?}");
    let mut tail = reader.tail(Lsn(1));
    let first = tokio::time::timeout(Duration::from_secs(10), tail.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.lsn, Lsn(1));
    wal.close().await.unwrap();
}
