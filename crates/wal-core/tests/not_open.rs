//! "Not open" is one answer on every backend: `Closed`, never `Fenced`
//! (which says another writer took the log).
#![allow(clippy::unwrap_used)]

use wal_core::{Error, Lsn, MemStore, Record, RecordKind, WalStore};

fn record(lsn: u64) -> Record {
    Record::new(Lsn(lsn), RecordKind::Data, "x")
}

#[tokio::test]
async fn memstore_not_open_is_closed_and_taken_over_is_fenced() {
    let mut never = MemStore::new();
    assert!(matches!(
        never.append(&[record(1)]).await,
        Err(Error::Closed)
    ));

    let mut first = never.clone();
    first.open().await.unwrap();
    first.append(&[record(1)]).await.unwrap();
    // The process "dies" without closing; a new handle takes the log over.
    never.crash();
    let mut second = never.clone();
    second.open().await.unwrap();
    assert!(
        matches!(first.append(&[record(2)]).await, Err(Error::Fenced { .. })),
        "a handle whose log another handle opened is fenced"
    );
    second.append(&[record(2)]).await.unwrap();
    second.close().await.unwrap();
    assert!(matches!(
        second.append(&[record(3)]).await,
        Err(Error::Closed)
    ));
}
