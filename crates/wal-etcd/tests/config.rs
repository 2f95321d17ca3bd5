//! Configurations refused at open, before any request is sent (the
//! endpoint is never contacted).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use wal_core::{Error, WalStore};
use wal_etcd::{EtcdOptions, EtcdStore};

fn opts(prefix: &str, name: &str) -> EtcdOptions {
    EtcdOptions::new(["http://127.0.0.1:1"], name).prefix(prefix)
}

async fn open_err(o: EtcdOptions) -> Error {
    EtcdStore::new(o).open().await.unwrap_err()
}

/// `/wal/` + `app` owns the ranges `/wal/app/r/...` and `/wal/app/c/...`;
/// a log at `/wal/app/` + `r` would live inside them, and the first log's
/// trims would delete its keys.
#[tokio::test]
async fn a_log_nested_inside_another_logs_ranges_is_refused() {
    for (prefix, name) in [("/wal/app/", "r"), ("/wal/app/", "c"), ("/wal/app/r/", "x")] {
        let e = open_err(opts(prefix, name)).await;
        assert!(
            matches!(&e, Error::InvalidArgument(m) if m.contains("inside")),
            "{prefix:?} + {name:?}: {e:?}"
        );
    }
}

/// One unanswered request may not outlive the lease.
#[tokio::test]
async fn request_timeout_not_shorter_than_the_lease_is_refused() {
    for (ttl, timeout) in [(2, 2), (3, 5), (10, 10)] {
        let o = opts("/wal/", "log")
            .lease_ttl(Duration::from_secs(ttl))
            .request_timeout(Duration::from_secs(timeout));
        let e = open_err(o).await;
        assert!(
            matches!(&e, Error::InvalidArgument(m) if m.contains("request_timeout")),
            "ttl {ttl}s, timeout {timeout}s: {e:?}"
        );
    }
}

/// A store used before it is opened answers `Closed`, as every backend
/// does; `Fenced` would say another writer took the log.
#[tokio::test]
async fn a_store_never_opened_is_closed_not_fenced() {
    let mut store = EtcdStore::new(opts("/wal/", "never"));
    let r = wal_core::Record::new(wal_core::Lsn(1), wal_core::RecordKind::Data, "x");
    assert!(matches!(store.append(&[r]).await, Err(Error::Closed)));
}
