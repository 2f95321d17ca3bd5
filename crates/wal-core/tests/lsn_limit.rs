//! The end of the Lsn space: a log whose last Lsn is near `u64::MAX` (only a
//! crafted or damaged one gets there) takes writes up to `Lsn::LAST`, then
//! refuses them with `LsnExhausted`: no panic, no wrap to low Lsns, nothing
//! acknowledged lost, and a batch that does not fit is refused whole.

#![allow(clippy::unwrap_used)]

use std::{future::Future, time::Duration};

use futures::StreamExt;
use wal_core::{Error, Lsn, MemStore, Record, RecordKind, Wal, WalOptions, WalStore};

const DEADLINE: Duration = Duration::from_secs(10);

async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(DEADLINE, f).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: still waiting after {DEADLINE:?}"),
    }
}

fn lsn_before_last(n: u64) -> Lsn {
    Lsn(Lsn::LAST.get() - n)
}

/// A MemStore holding one data record, "seed", at `lsn`.
async fn seeded(lsn: Lsn) -> MemStore {
    let mem = MemStore::new();
    let mut s = mem.clone();
    s.open().await.unwrap();
    s.append(&[Record::new(lsn, RecordKind::Data, "seed")])
        .await
        .unwrap();
    s.close().await.unwrap();
    mem
}

fn stored(mem: &MemStore) -> Vec<(Lsn, String)> {
    mem.durable_records()
        .into_iter()
        .map(|r| (r.lsn, String::from_utf8(r.payload.to_vec()).unwrap()))
        .collect()
}

fn assert_exhausted(what: &str, r: Result<impl std::fmt::Debug, Error>, last: Lsn, requested: u64) {
    match r {
        Err(Error::LsnExhausted {
            last: l,
            requested: n,
        }) => assert_eq!((l, n), (last, requested), "{what}"),
        other => panic!("{what}: {other:?}, expected LsnExhausted"),
    }
}

#[test]
fn last_leaves_room_for_the_lsn_after_it() {
    assert_eq!(Lsn::LAST.checked_add(1), Some(Lsn::MAX));
    assert_eq!(Lsn::MAX.checked_add(1), None);
    assert_eq!(Lsn(5).checked_add(3), Some(Lsn(8)));
}

#[tokio::test]
async fn appends_stop_at_the_last_lsn() {
    let start = lsn_before_last(3);
    let mem = seeded(start).await;
    let (wal, _) = within("open", Wal::open(mem.clone(), WalOptions::default()))
        .await
        .unwrap();
    let a = within("append a", wal.append("a")).await.unwrap();
    assert_eq!(a, lsn_before_last(2));

    // Three more would need LAST - 1, LAST and one past it: refused whole,
    // and the Wal stays healthy.
    let r = within("batch of 3", wal.append_batch(["b", "c", "d"])).await;
    assert_exhausted("batch of 3", r, a, 3);
    assert_eq!(
        stored(&mem),
        [(start, "seed".into()), (a, "a".into())],
        "nothing of the refused batch"
    );

    // Nothing acknowledged is lost across a reopen.
    within("close", wal.close()).await.unwrap();
    let (wal, recovery) = within("reopen", Wal::open(mem.clone(), WalOptions::default()))
        .await
        .unwrap();
    let got: Vec<String> = recovery
        .map(|e| String::from_utf8(e.unwrap().payload.to_vec()).unwrap())
        .collect()
        .await;
    assert_eq!(got, ["seed", "a"]);

    // Exactly the Lsns up to LAST are used.
    let (b, done) = wal.submit("b").await.unwrap();
    assert_eq!(within("b", done).await.unwrap(), b);
    let c = within("c", wal.append_batch(["c"])).await.unwrap();
    assert_eq!((b, c), (lsn_before_last(1), vec![Lsn::LAST]));
    assert_eq!(wal.durable_lsn(), Lsn::LAST);

    // Every write that needs an Lsn is refused now, and nothing wraps.
    assert_exhausted("append", wal.append("d").await, Lsn::LAST, 1);
    assert_exhausted("submit", wal.submit("d").await.map(|s| s.0), Lsn::LAST, 1);
    assert_exhausted(
        "checkpoint",
        wal.begin_checkpoint().await.map(|c| c.begin_lsn()),
        Lsn::LAST,
        1,
    );
    assert_exhausted(
        "truncate",
        within("truncate", wal.truncate_after(b)).await,
        Lsn::LAST,
        1,
    );
    assert_eq!(
        stored(&mem),
        [
            (start, "seed".into()),
            (a, "a".into()),
            (b, "b".into()),
            (Lsn::LAST, "c".into())
        ]
    );
    // Not poisoned: reads still work, at the very end too.
    let tail: Vec<_> = within("read_from", wal.read_from(b).collect::<Vec<_>>())
        .await
        .into_iter()
        .map(|e| e.unwrap().lsn)
        .collect();
    assert_eq!(tail, [b, Lsn::LAST]);
    assert!(wal.read(Lsn::MAX).await.unwrap().is_none());
    within("close", wal.close()).await.unwrap();

    // A full log is refused at open, and left unlocked.
    for _ in 0..2 {
        let r = within("open full", Wal::open(mem.clone(), WalOptions::default())).await;
        assert_exhausted("open full", r.map(drop), Lsn::LAST, 1);
    }
}

#[tokio::test]
async fn a_log_without_room_is_refused_at_open() {
    for last in [Lsn::LAST, Lsn::MAX] {
        let mem = seeded(last).await;
        let r = within("open", Wal::open(mem.clone(), WalOptions::default())).await;
        assert_exhausted("open", r.map(drop), last, 1);
        // The refused open released the store.
        let mut s = mem.clone();
        s.open().await.unwrap();
        s.close().await.unwrap();
    }
}

#[tokio::test]
async fn pipelined_writes_past_the_end_fail_alone() {
    let mem = seeded(lsn_before_last(2)).await;
    let (wal, _) = within("open", Wal::open(mem.clone(), WalOptions::default()))
        .await
        .unwrap();
    // Queued back to back, they land in one group-commit batch: the two that
    // fit are acknowledged, the rest refused at submit.
    let mut acked = Vec::new();
    let mut refused = 0;
    for i in 0..5 {
        match wal.submit(format!("p{i}")).await {
            Ok((lsn, done)) => acked.push((lsn, done)),
            Err(Error::LsnExhausted { .. }) => refused += 1,
            Err(e) => panic!("submit p{i}: {e:?}"),
        }
    }
    assert_eq!(refused, 3);
    let mut lsns = Vec::new();
    for (lsn, done) in acked {
        assert_eq!(within("completion", done).await.unwrap(), lsn);
        lsns.push(lsn);
    }
    assert_eq!(lsns, [lsn_before_last(1), Lsn::LAST]);
    assert_eq!(stored(&mem).len(), 3);
    within("close", wal.close()).await.unwrap();
}
