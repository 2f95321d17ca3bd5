//! Every outcome of an append whose answer is lost, produced with the fault
//! proxy (responses dropped, requests black-holed or delayed), and checked
//! against the truth: etcd read directly by an operator client, and the log
//! reopened.
//!
//! - committed, answer lost: the read-back confirms it, `append` is Ok;
//! - request lost before etcd: the store voids it (bumps the head's
//!   revision); an equivalent txn arriving late can never apply, and the
//!   caller is never told it committed unless it did (exactly once);
//! - ownership lost (lease revoked) while the answer of a landed append is
//!   lost: never `Fenced` (which promises nothing landed), outcome unknown;
//! - an old owner's txn delayed in the network arrives after a successor
//!   opened: the fencing compare rejects it and the successor's keys are
//!   untouched.
#![allow(clippy::unwrap_used)]

mod support;

use std::{
    future::Future,
    time::{Duration, Instant},
};

use futures::StreamExt;
use support::{
    proxy::{Fault, Proxy},
    unique,
};
use wal_core::{Entry, Error, Lsn, Record, RecordKind, Recovery, Wal, WalOptions, WalStore};
use wal_etcd::{
    etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp},
    Acquire, EtcdOptions, EtcdStore,
};

/// Big enough that the append's request dwarfs keep-alive traffic.
const BIG: usize = 8192;

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

/// The log as a new owner recovers it (through etcd directly).
async fn reopen_contents(eps: &[String], prefix: &str) -> Vec<String> {
    let (wal, rec) =
        open(support::options(eps, prefix, "log").acquire(Acquire::Wait(Duration::from_secs(30))))
            .await;
    let got = collect(rec).await;
    wal.close().await.unwrap();
    got
}

/// The head key as etcd has it: (committed Lsn, mod revision).
async fn head(eps: &[String], prefix: &str) -> (u64, i64) {
    let mut c = support::operator(eps).await;
    let r = c.get(format!("{prefix}log/head"), None).await.unwrap();
    let kv = r.kvs().first().expect("head key");
    let v = kv.value();
    assert_eq!((v.len(), v[0]), (9, 1), "head encoding");
    (
        u64::from_be_bytes(v[1..9].try_into().unwrap()),
        kv.mod_revision(),
    )
}

/// How many times the head key was written since it was created.
async fn head_version(eps: &[String], prefix: &str) -> i64 {
    let mut c = support::operator(eps).await;
    let r = c.get(format!("{prefix}log/head"), None).await.unwrap();
    r.kvs().first().expect("head key").version()
}

/// The owner key's create revision (the fencing token), if any.
async fn owner_token(eps: &[String], prefix: &str) -> Option<i64> {
    let mut c = support::operator(eps).await;
    let r = c.get(format!("{prefix}log/owner"), None).await.unwrap();
    r.kvs().first().map(|kv| kv.create_revision())
}

/// Waits, polling etcd directly, until the head's value is no longer `from`.
async fn wait_head_moved(eps: &[String], prefix: &str, from: u64, within: Duration) -> u64 {
    let deadline = Instant::now() + within;
    loop {
        let (h, _) = head(eps, prefix).await;
        if h != from {
            return h;
        }
        assert!(
            Instant::now() < deadline,
            "head still {from} after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every key under the log with its value and revisions.
async fn snapshot(eps: &[String], prefix: &str) -> Vec<(String, Vec<u8>, i64, i64)> {
    let mut c = support::operator(eps).await;
    let r = c
        .get(
            format!("{prefix}log/"),
            Some(GetOptions::new().with_prefix()),
        )
        .await
        .unwrap();
    r.kvs()
        .iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(kv.key()).into_owned(),
                kv.value().to_vec(),
                kv.create_revision(),
                kv.mod_revision(),
            )
        })
        .collect()
}

/// A writer whose every request goes through `proxy`.
fn via(proxy: &Proxy, prefix: &str) -> EtcdOptions {
    support::options(std::slice::from_ref(&proxy.endpoint), prefix, "log")
        .request_timeout(Duration::from_secs(2))
}

fn is_unknown(e: &Error) -> bool {
    matches!(e, Error::Unavailable(m) if m.contains("unknown"))
}

/// (a) etcd applies the append and every answer is dropped: the read-back
/// (after the connection is cut and re-made) finds the head at the append's
/// Lsn. The caller is told Ok (or, at worst, "unknown"), never "did not
/// commit"; etcd and a reopen hold it exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answer_lost_after_commit_is_confirmed_by_read_back() {
    let eps = support::shared_endpoints().await;
    let proxy = Proxy::start(&eps[0]).await;
    let prefix = format!("/{}/", unique("lost-answer"));
    let (wal, _) = open(via(&proxy, &prefix)).await;
    let before = wal.append("before").await.unwrap();

    proxy.set(Fault::DropResponses);
    let big = "a".repeat(BIG);
    let append = tokio::spawn({
        let (wal, big) = (wal.clone(), big.clone());
        async move { wal.append(big).await }
    });
    let landed = wait_head_moved(&eps, &prefix, before.0, Duration::from_secs(10)).await;
    assert!(proxy.down_dropped() > 0, "the answer was dropped");
    proxy.pass();
    proxy.cut();
    let r = within("append resolved", Duration::from_secs(30), append)
        .await
        .unwrap();
    println!("committed append, answer lost: caller told {r:?}");
    match &r {
        Ok(lsn) => {
            assert_eq!(lsn.0, landed, "Ok names the Lsn etcd holds");
            assert_eq!(head(&eps, &prefix).await.0, landed);
            // Still the owner, still writing.
            let after = wal.append("after").await.unwrap();
            assert!(after > *lsn);
            wal.close().await.unwrap();
            assert_eq!(
                reopen_contents(&eps, &prefix).await,
                ["before".to_string(), big, "after".into()]
            );
        }
        Err(e) => {
            let root = e.root_cause();
            assert!(is_unknown(root), "landed, but the caller was told {root:?}");
            drop(wal);
            assert_eq!(
                reopen_contents(&eps, &prefix).await,
                ["before".to_string(), big]
            );
        }
    }
}

/// (b) The append's request never reaches etcd (black hole), then the
/// connection is cut. The store reads back (head unchanged) and voids the
/// lost txn by bumping the head's revision. Whatever the caller is told is
/// the truth: Ok means etcd holds it exactly once; an error that says it
/// did not commit means no reopen ever sees it. And the lost txn, had it
/// been delayed instead, could not apply afterwards: an equivalent txn with
/// the compares the store used is rejected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_lost_before_etcd_is_voided_and_never_lands() {
    let eps = support::shared_endpoints().await;
    let proxy = Proxy::start(&eps[0]).await;
    let prefix = format!("/{}/", unique("lost-request"));
    let (wal, _) = open(via(&proxy, &prefix)).await;
    let before = wal.append("before").await.unwrap();
    let (h0, rev0) = head(&eps, &prefix).await;
    assert_eq!(h0, before.0);
    let token = owner_token(&eps, &prefix).await.unwrap();

    proxy.set(Fault::BlackHole);
    let dropped = proxy.up_dropped();
    let big = "b".repeat(BIG);
    let append = tokio::spawn({
        let (wal, big) = (wal.clone(), big.clone());
        async move { wal.append(big).await }
    });
    proxy
        .wait_for(
            "the append's request swallowed",
            Duration::from_secs(10),
            |p| p.up_dropped() >= dropped + BIG as u64,
        )
        .await;
    assert_eq!(
        head(&eps, &prefix).await,
        (h0, rev0),
        "nothing reached etcd"
    );
    proxy.pass();
    proxy.cut();
    let r = within("append resolved", Duration::from_secs(30), append)
        .await
        .unwrap();
    println!("append lost before etcd: caller told {r:?}");

    // The lost txn arriving now: the same compares (this owner's token,
    // the head revision it was built on), the same head put.
    let late = Txn::new()
        .when([
            Compare::create_revision(format!("{prefix}log/owner"), CompareOp::Equal, token),
            Compare::mod_revision(format!("{prefix}log/head"), CompareOp::Equal, rev0),
        ])
        .and_then([TxnOp::put(
            format!("{prefix}log/head"),
            [&[1u8][..], &(before.0 + 1).to_be_bytes()].concat(),
            None,
        )]);
    let late = support::operator(&eps).await.txn(late).await.unwrap();
    assert!(
        !late.succeeded(),
        "the lost txn could still apply after the store resolved it"
    );

    match &r {
        Ok(lsn) => {
            // Voided, then sent again: exactly once.
            assert_eq!(head(&eps, &prefix).await.0, lsn.0);
            wal.close().await.unwrap();
            assert_eq!(
                reopen_contents(&eps, &prefix).await,
                ["before".to_string(), big]
            );
        }
        Err(e) => {
            let root = e.root_cause();
            assert!(
                matches!(root, Error::Unavailable(_)) && !root.is_fenced(),
                "{root:?}"
            );
            drop(wal);
            let got = reopen_contents(&eps, &prefix).await;
            if root.to_string().contains("did not commit") {
                assert_eq!(got, ["before".to_string()], "told it did not commit");
            } else {
                assert!(is_unknown(root), "{root:?}");
            }
        }
    }
}

/// (c) The append lands, its answer is dropped, and the owner's lease is
/// revoked (by an operator) before the store can read back. `Fenced` would
/// promise that nothing landed: the caller must be told the outcome is
/// unknown, and in fact the append is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ownership_lost_while_answers_are_dropped_is_unknown_not_fenced() {
    let eps = support::shared_endpoints().await;
    let proxy = Proxy::start(&eps[0]).await;
    let prefix = format!("/{}/", unique("lost-owner"));
    let (wal, _) = open(via(&proxy, &prefix)).await;
    let before = wal.append("before").await.unwrap();

    proxy.set(Fault::DropResponses);
    let big = "c".repeat(BIG);
    let append = tokio::spawn({
        let (wal, big) = (wal.clone(), big.clone());
        async move { wal.append(big).await }
    });
    wait_head_moved(&eps, &prefix, before.0, Duration::from_secs(10)).await;
    assert!(support::revoke_owner(&eps, &prefix, "log").await);
    proxy.pass();
    proxy.cut();
    let r = within("append fails", Duration::from_secs(30), append)
        .await
        .unwrap();
    println!("landed append, owner revoked meanwhile: caller told {r:?}");
    let e = r.expect_err("the lease was revoked before any answer arrived");
    let root = e.root_cause();
    assert!(
        !root.is_fenced(),
        "reported as fenced, but it landed: {root:?}"
    );
    assert!(is_unknown(root), "{root:?}");
    drop(wal);
    assert_eq!(
        reopen_contents(&eps, &prefix).await,
        ["before".to_string(), big],
        "the append landed"
    );
}

/// An old owner's append is delayed in the network (the proxy holds its
/// request, the process is not frozen); meanwhile its lease is revoked and
/// a successor opens and writes. When the old txn finally reaches etcd the
/// fencing compare rejects it: the successor's keys are untouched, and the
/// old owner is told it was fenced (true: nothing landed) or that the
/// outcome is unknown, never Ok. The old owner is driven through the
/// `WalStore` trait, so its `append` returns only with etcd's answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_owners_delayed_txn_is_rejected_after_successor_opens() {
    let eps = support::shared_endpoints().await;
    let proxy = Proxy::start(&eps[0]).await;
    let prefix = format!("/{}/", unique("delayed-zombie"));
    const DELAY: Duration = Duration::from_secs(5);
    // The old owner waits longer than the delay, so it does not cancel the
    // request (and its lease outlives the delayed keep-alives).
    let old_opts = via(&proxy, &prefix)
        .writer_id("old")
        .lease_ttl(Duration::from_secs(20))
        .request_timeout(Duration::from_secs(15));
    let mut old = EtcdStore::new(old_opts);
    let state = old.open().await.unwrap();
    assert_eq!(state.last_lsn, None);
    old.append(&[Record::new(Lsn(1), RecordKind::Data, "old-1")])
        .await
        .unwrap();

    let sent = proxy.up_forwarded() + proxy.up_pending();
    proxy.set(Fault::DelayRequests(DELAY));
    let held_at = Instant::now();
    let zombie = tokio::spawn(async move {
        let r = old
            .append(&[Record::new(Lsn(2), RecordKind::Data, "z".repeat(BIG))])
            .await;
        (r, old)
    });
    proxy
        .wait_for("the old owner's append held", Duration::from_secs(5), |p| {
            p.up_forwarded() + p.up_pending() >= sent + BIG as u64
        })
        .await;
    // Nothing read from now on is delayed, but the old owner's connection
    // delivers in order: its later requests wait behind the held append.
    proxy.pass();

    assert!(support::revoke_owner(&eps, &prefix, "log").await);
    let (new, rec) = open(support::options(&eps, &prefix, "log").writer_id("new")).await;
    assert_eq!(collect(rec).await, ["old-1"]);
    new.append("new-1").await.unwrap();
    let snap = snapshot(&eps, &prefix).await;
    assert!(
        Instant::now() < held_at + DELAY && proxy.up_pending() >= BIG as u64,
        "the successor opened and wrote while the old txn was still held"
    );

    let (r, _old) = within(
        "the old owner's append answered",
        Duration::from_secs(30),
        zombie,
    )
    .await
    .unwrap();
    assert!(
        held_at.elapsed() >= DELAY && proxy.up_pending() < BIG as u64,
        "answered only after the held request was delivered"
    );
    println!(
        "old owner's append, delayed {:?}: told {r:?}",
        held_at.elapsed()
    );
    let e = r.expect_err("a fenced-off writer's append was acknowledged");
    assert!(e.is_fenced() || is_unknown(&e), "{e:?}");
    assert_eq!(
        snapshot(&eps, &prefix).await,
        snap,
        "the old owner's txn changed the successor's log"
    );
    new.close().await.unwrap();
    assert_eq!(reopen_contents(&eps, &prefix).await, ["old-1", "new-1"]);
}

/// (d) The append's txn is held in the network past its timeout; the
/// store's read-back sees the head unchanged; then the txn lands, just
/// before the store's void arrives. The void's compare (the head's
/// revision) fails, the store reads again and finds the append committed:
/// the caller is told Ok (or "unknown"), never "did not commit", and etcd
/// holds the entry exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_landing_between_read_back_and_void_is_reported_committed() {
    let eps = support::shared_endpoints().await;
    let proxy = Proxy::start(&eps[0]).await;
    let prefix = format!("/{}/", unique("late-landing"));
    // Renewals far apart: only the append's own calls cross the proxy.
    let (wal, _) = open(via(&proxy, &prefix).lease_ttl(Duration::from_secs(30))).await;
    let before = wal.append("before").await.unwrap();
    let (h0, rev0) = head(&eps, &prefix).await;
    assert_eq!(h0, before.0);
    let v0 = head_version(&eps, &prefix).await;

    proxy.land_late(BIG / 2);
    let big = "d".repeat(BIG);
    let r = within(
        "append resolved",
        Duration::from_secs(30),
        wal.append(big.clone()),
    )
    .await;
    println!("append landing between read-back and void: caller told {r:?}");
    assert!(
        proxy.landed_late(),
        "the held txn was delivered and answered"
    );
    let (h1, rev1) = head(&eps, &prefix).await;
    assert!(rev1 > rev0);
    // One head write since: the late txn's. The void (sent after it) was
    // refused by its compare; a void that landed first would make two
    // (void, then the re-sent append).
    assert_eq!(
        head_version(&eps, &prefix).await,
        v0 + 1,
        "the void was not refused: the late txn did not land between read-back and void"
    );
    match &r {
        Ok(lsn) => {
            assert_eq!(lsn.0, h1, "Ok names the Lsn etcd holds");
            wal.close().await.unwrap();
        }
        Err(e) => {
            let root = e.root_cause();
            assert!(
                is_unknown(root),
                "it landed, but the caller was told {root:?}"
            );
            drop(wal);
        }
    }
    assert_eq!(
        reopen_contents(&eps, &prefix).await,
        ["before".to_string(), big],
        "exactly once"
    );
}

/// (c, the other way) The append's request is swallowed (it never reaches
/// etcd) and the owner's lease is revoked before the store can read back.
/// Whatever the caller is told, it must not claim a commit: an error
/// (fenced or unknown), and the entry is not in the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ownership_lost_while_the_request_is_swallowed_never_claims_a_commit() {
    let eps = support::shared_endpoints().await;
    let proxy = Proxy::start(&eps[0]).await;
    let prefix = format!("/{}/", unique("lost-owner-unlanded"));
    let (wal, _) = open(via(&proxy, &prefix)).await;
    let before = wal.append("before").await.unwrap();
    let h0 = head(&eps, &prefix).await;

    proxy.set(Fault::BlackHole);
    let dropped = proxy.up_dropped();
    let append = tokio::spawn({
        let wal = wal.clone();
        async move { wal.append("e".repeat(BIG)).await }
    });
    proxy
        .wait_for(
            "the append's request swallowed",
            Duration::from_secs(10),
            |p| p.up_dropped() >= dropped + BIG as u64,
        )
        .await;
    assert!(support::revoke_owner(&eps, &prefix, "log").await);
    proxy.pass();
    proxy.cut();
    let r = within("append fails", Duration::from_secs(30), append)
        .await
        .unwrap();
    println!("swallowed append, owner revoked meanwhile: caller told {r:?}");
    let e = r.expect_err("acknowledged an append etcd never saw");
    let root = e.root_cause();
    assert!(root.is_fenced() || is_unknown(root), "{root:?}");
    assert_eq!(head(&eps, &prefix).await, h0, "nothing moved the head");
    drop(wal);
    assert_eq!(reopen_contents(&eps, &prefix).await, ["before"]);
    assert_eq!(before, Lsn(1));
}
