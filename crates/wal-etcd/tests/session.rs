//! Many logs on one `EtcdSession` (one lease, one keep-alive), against real
//! etcd containers:
//!
//! - 20 logs on one session open, append and recover, and etcd holds
//!   exactly one lease for all of them (its lease list, on a cluster of its
//!   own); each log has its own fencing token;
//! - closing one store frees only its log: a second session claims it at
//!   once while the others keep appending on the first;
//! - revoking the session's lease fires `Wal::failed()` on every Wal with
//!   `Fenced`, and nothing lands afterwards (keys counted);
//! - a second session is refused (FailFast) or waits (Acquire::Wait) and
//!   takes over when the log is released;
//! - an application txn guarded by `OwnerFence::compare` lands while the
//!   store owns the log, and not after another writer took it, nor after
//!   the log was released and claimed again on the same session;
//! - dropping the last handle of a session revokes its lease;
//! - the wal-core conformance suite on stores that share one session.
#![allow(clippy::unwrap_used)]

mod support;

use std::{
    future::Future,
    time::{Duration, Instant},
};

use futures::StreamExt;
use wal_core::{Entry, Error, Recovery, Wal, WalOptions};
use wal_etcd::{
    etcd_client::{self, Client, GetOptions, Txn, TxnOp},
    Acquire, EtcdOptions, EtcdSession, EtcdStore,
};

async fn within<T>(what: &str, d: Duration, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(d, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: not within {d:?}"))
}

async fn open_on(session: &EtcdSession, options: EtcdOptions) -> wal_core::Result<(Wal, Recovery)> {
    Wal::open(
        EtcdStore::with_session(session.clone(), options),
        WalOptions::default(),
    )
    .await
}

async fn texts(rec: Recovery) -> Vec<String> {
    rec.map(|e| {
        let e: Entry = e.unwrap();
        String::from_utf8(e.payload.to_vec()).unwrap()
    })
    .collect()
    .await
}

/// Every lease etcd holds.
async fn leases(c: &mut Client) -> Vec<i64> {
    let mut ids: Vec<i64> = c
        .leases()
        .await
        .unwrap()
        .leases()
        .iter()
        .map(|l| l.id())
        .collect();
    ids.sort_unstable();
    ids
}

/// Whether lease `id` still exists.
async fn lease_alive(c: &mut Client, id: i64) -> bool {
    c.lease_time_to_live(id, None).await.unwrap().ttl() > 0
}

/// The owner key's (lease, create revision) of log `name`.
async fn owner(c: &mut Client, prefix: &str, name: &str) -> Option<(i64, i64)> {
    let r = c.get(format!("{prefix}{name}/owner"), None).await.unwrap();
    r.kvs().first().map(|kv| (kv.lease(), kv.create_revision()))
}

/// Keys under `prefix`, and their mod revisions summed (any write moves it).
async fn keys_under(c: &mut Client, prefix: &str) -> (i64, i64) {
    let r = c
        .get(prefix, Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    let sum = r.kvs().iter().map(|kv| kv.mod_revision()).sum();
    (r.kvs().len() as i64, sum)
}

fn log(i: usize) -> String {
    format!("shard-{i:02}")
}

/// Twenty logs on one session, on an etcd of their own so its lease list
/// is this test's alone: exactly one lease is granted for all of them, every
/// owner key hangs on it with a token of its own, every log appends and
/// recovers (closed and reopened on the same session), and closing the
/// session revokes the lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_logs_share_one_lease_and_recover() {
    const N: usize = 20;
    let node =
        support::start_node(support::NodeSpec::single(&support::unique("session-one"))).await;
    let eps = vec![node.endpoint.clone()];
    support::wait_ready(&eps, Duration::from_secs(60)).await;
    let mut op = support::operator(&eps).await;
    let prefix = "/fleet/";
    assert_eq!(leases(&mut op).await, Vec::<i64>::new(), "a fresh cluster");

    let session = EtcdSession::connect(&support::options(&eps, prefix, "unused"))
        .await
        .unwrap();
    let mut wals = Vec::new();
    for i in 0..N {
        let (wal, rec) = open_on(&session, support::options(&eps, prefix, &log(i)))
            .await
            .unwrap();
        assert!(texts(rec).await.is_empty());
        wals.push(wal);
    }
    assert_eq!(
        leases(&mut op).await,
        vec![session.lease_id()],
        "one lease for {N} logs"
    );
    let mut tokens = Vec::new();
    for i in 0..N {
        let (lease, token) = owner(&mut op, prefix, &log(i)).await.expect("owner key");
        assert_eq!(
            lease,
            session.lease_id(),
            "{} is on the session's lease",
            log(i)
        );
        tokens.push(token);
    }
    tokens.sort_unstable();
    tokens.dedup();
    assert_eq!(tokens.len(), N, "every log has a fencing token of its own");

    // Every log appends, concurrently.
    let appends = wals.iter().enumerate().map(|(i, w)| async move {
        for k in 0..3 {
            w.append(format!("{}-{k}", log(i))).await.unwrap();
        }
    });
    futures::future::join_all(appends).await;
    for w in &wals {
        w.close().await.unwrap();
    }
    for i in 0..N {
        assert_eq!(
            owner(&mut op, prefix, &log(i)).await,
            None,
            "closed: released"
        );
    }
    assert!(
        lease_alive(&mut op, session.lease_id()).await,
        "closing stores leaves the session"
    );

    // Reopen every log on the same session: each recovers its own entries.
    for (i, slot) in wals.iter_mut().enumerate() {
        let (wal, rec) = open_on(&session, support::options(&eps, prefix, &log(i)))
            .await
            .unwrap();
        let want: Vec<String> = (0..3).map(|k| format!("{}-{k}", log(i))).collect();
        assert_eq!(texts(rec).await, want, "{} recovers", log(i));
        *slot = wal;
    }
    assert_eq!(
        leases(&mut op).await,
        vec![session.lease_id()],
        "still one lease"
    );
    assert!(
        session.keep_alives_sent() >= 1,
        "the session's one task renews the lease"
    );

    let lease = session.lease_id();
    session.close().await.unwrap();
    assert_eq!(
        leases(&mut op).await,
        Vec::<i64>::new(),
        "close revokes the lease"
    );
    for (i, w) in wals.iter().enumerate() {
        let e = within(
            "Wal::failed after session close",
            Duration::from_secs(10),
            w.failed(),
        )
        .await;
        assert!(e.is_fenced(), "{}: {e}", log(i));
    }
    assert!(!lease_alive(&mut op, lease).await);
}

/// Closing one store of a session frees that log at once: a second session
/// claims it with FailFast (no wait for any TTL) while the first session's
/// other logs keep appending, and the first session's lease is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_one_store_frees_only_its_log() {
    let eps = support::shared_endpoints().await;
    let prefix = format!("/{}/", support::unique("session-close"));
    let mut op = support::operator(&eps).await;
    let a = EtcdSession::connect(&support::options(&eps, &prefix, "x").writer_id("proc-a"))
        .await
        .unwrap();
    let b = EtcdSession::connect(&support::options(&eps, &prefix, "x").writer_id("proc-b"))
        .await
        .unwrap();
    let mut wals = Vec::new();
    for i in 0..5 {
        let (w, _) = open_on(
            &a,
            support::options(&eps, &prefix, &log(i)).writer_id("proc-a"),
        )
        .await
        .unwrap();
        w.append(format!("a-{i}")).await.unwrap();
        wals.push(w);
    }
    wals[2].close().await.unwrap();
    let (taken, rec) = open_on(
        &b,
        support::options(&eps, &prefix, &log(2)).writer_id("proc-b"),
    )
    .await
    .expect("the released log is free at once");
    assert_eq!(texts(rec).await, vec!["a-2".to_string()]);
    taken.append("b-2").await.unwrap();
    assert_eq!(
        owner(&mut op, &prefix, &log(2)).await.unwrap().0,
        b.lease_id()
    );
    for (i, w) in wals.iter().enumerate().filter(|(i, _)| *i != 2) {
        w.append(format!("a-{i}-after")).await.unwrap();
        assert_eq!(
            owner(&mut op, &prefix, &log(i)).await.unwrap().0,
            a.lease_id()
        );
    }
    assert!(lease_alive(&mut op, a.lease_id()).await);
    // The closed Wal is done; nothing of it lands.
    assert!(wals[2].append("late").await.is_err());
    for w in &wals {
        let _ = w.close().await;
    }
    taken.close().await.unwrap();
    a.close().await.unwrap();
    b.close().await.unwrap();
}

/// An operator revokes the session's lease: `Wal::failed()` of every one of
/// twenty Wals resolves with Fenced (each waited on with a deadline), the
/// session's own `failed()` too, every later append fails, and no key under
/// the logs' prefix is written afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_the_session_lease_fences_every_wal() {
    const N: usize = 20;
    let eps = support::shared_endpoints().await;
    let prefix = format!("/{}/", support::unique("session-revoke"));
    let mut op = support::operator(&eps).await;
    let session = EtcdSession::connect(&support::options(&eps, &prefix, "x"))
        .await
        .unwrap();
    let mut wals = Vec::new();
    for i in 0..N {
        let (w, _) = open_on(&session, support::options(&eps, &prefix, &log(i)))
            .await
            .unwrap();
        w.append(format!("{i}-before")).await.unwrap();
        wals.push(w);
    }
    op.lease_revoke(session.lease_id()).await.unwrap();
    let failures = futures::future::join_all(wals.iter().map(|w| w.failed()));
    let failures = within("every Wal::failed()", Duration::from_secs(10), failures).await;
    for (i, e) in failures.iter().enumerate() {
        assert!(e.is_fenced(), "{}: {e}", log(i));
    }
    let e = within(
        "session.failed()",
        Duration::from_secs(10),
        session.failed(),
    )
    .await;
    assert!(matches!(e, Error::Fenced { .. }), "{e}");
    assert!(session.lost().is_some());

    let before = keys_under(&mut op, &prefix).await;
    // No owner keys any more: only heads and records.
    assert_eq!(before.0, 2 * N as i64, "{before:?}");
    for (i, w) in wals.iter().enumerate() {
        match w.append(format!("{i}-after")).await {
            Err(e) if e.is_fenced() => {}
            other => panic!("{}: an append after the loss: {other:?}", log(i)),
        }
    }
    assert_eq!(keys_under(&mut op, &prefix).await, before, "nothing landed");
    // A lost session claims nothing new.
    match open_on(&session, support::options(&eps, &prefix, "new-log")).await {
        Err(e) if e.is_fenced() => {}
        other => panic!("a claim on a lost session: {:?}", other.map(|_| ())),
    }
    assert_eq!(owner(&mut op, &prefix, "new-log").await, None);
}

/// Session B finds log owned by session A: FailFast is Locked naming A's
/// writer; Acquire::Wait waits, and takes over (recovering A's entries) as
/// soon as A closes the store, while A's session lives on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_session_is_locked_or_waits_and_takes_over() {
    let eps = support::shared_endpoints().await;
    let prefix = format!("/{}/", support::unique("session-wait"));
    let a = EtcdSession::connect(&support::options(&eps, &prefix, "x"))
        .await
        .unwrap();
    let b = EtcdSession::connect(&support::options(&eps, &prefix, "x"))
        .await
        .unwrap();
    let (wa, _) = open_on(
        &a,
        support::options(&eps, &prefix, "log").writer_id("writer-a"),
    )
    .await
    .unwrap();
    wa.append("one").await.unwrap();
    match open_on(
        &b,
        support::options(&eps, &prefix, "log").writer_id("writer-b"),
    )
    .await
    {
        Err(Error::Locked { holder }) => assert!(holder.contains("writer-a"), "{holder}"),
        other => panic!("expected Locked, got {:?}", other.map(|_| ())),
    }
    assert!(
        b.lost().is_none(),
        "a refused claim leaves the session alone"
    );
    let waiting = {
        let b = b.clone();
        let o = support::options(&eps, &prefix, "log")
            .writer_id("writer-b")
            .acquire(Acquire::Wait(Duration::from_secs(30)));
        tokio::spawn(async move { open_on(&b, o).await })
    };
    wa.append("two").await.unwrap();
    assert!(
        !waiting.is_finished(),
        "the standby waits while the log is owned"
    );
    let released = Instant::now();
    wa.close().await.unwrap();
    let (wb, rec) = within("take-over", Duration::from_secs(10), waiting)
        .await
        .unwrap()
        .unwrap();
    assert!(
        released.elapsed() < Duration::from_secs(5),
        "took over on release, not after a TTL: {:?}",
        released.elapsed()
    );
    assert_eq!(texts(rec).await, vec!["one", "two"]);
    wb.append("three").await.unwrap();
    assert!(a.lost().is_none());
    wb.close().await.unwrap();
    a.close().await.unwrap();
    b.close().await.unwrap();
}

/// An application txn guarded by the store's `OwnerFence` lands while the
/// store owns the log; after the log was released and claimed again on the
/// SAME session (same lease), the old claim's compare fails and the new
/// one's lands; after another writer took the log, neither lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_txn_guard_follows_ownership() {
    let eps = support::shared_endpoints().await;
    let prefix = format!("/{}/", support::unique("session-guard"));
    let app_key = format!("{prefix}app/state");
    let mut op = support::operator(&eps).await;
    let session = EtcdSession::connect(&support::options(&eps, &prefix, "x"))
        .await
        .unwrap();
    let guarded_put = |guard: etcd_client::Compare, value: &str| {
        Txn::new()
            .when([guard])
            .and_then([TxnOp::put(app_key.clone(), value, None)])
    };
    let app_value = |mut op: Client| {
        let key = app_key.clone();
        async move {
            let r = op.get(key, None).await.unwrap();
            r.kvs()
                .first()
                .map(|kv| kv.value_str().unwrap().to_string())
        }
    };

    let store = EtcdStore::with_session(session.clone(), support::options(&eps, &prefix, "log"));
    let fence = store.fence();
    assert!(fence.compare().is_none(), "no claim before open");
    let (wal, _) = Wal::open(store, WalOptions::default()).await.unwrap();
    let first = fence.compare().unwrap();
    let r = op.txn(guarded_put(first.clone(), "v1")).await.unwrap();
    assert!(r.succeeded(), "guarded txn lands while owning");
    assert_eq!(app_value(op.clone()).await.as_deref(), Some("v1"));

    // Released and claimed again on the same session and lease.
    wal.close().await.unwrap();
    let store = EtcdStore::with_session(session.clone(), support::options(&eps, &prefix, "log"));
    let fence2 = store.fence();
    let (wal2, _) = Wal::open(store, WalOptions::default()).await.unwrap();
    assert_ne!(fence.token(), fence2.token(), "a new claim, a new token");
    assert_eq!(
        owner(&mut op, &prefix, "log").await.unwrap().0,
        session.lease_id()
    );
    let r = op.txn(guarded_put(first.clone(), "stale")).await.unwrap();
    assert!(
        !r.succeeded(),
        "the old claim's guard fails on the same lease"
    );
    let second = fence2.compare().unwrap();
    assert!(op
        .txn(guarded_put(second.clone(), "v2"))
        .await
        .unwrap()
        .succeeded());
    assert_eq!(app_value(op.clone()).await.as_deref(), Some("v2"));

    // Another writer (its own lease) takes the log over.
    wal2.close().await.unwrap();
    let (other, _) = Wal::open(
        EtcdStore::new(support::options(&eps, &prefix, "log")),
        WalOptions::default(),
    )
    .await
    .unwrap();
    for g in [first, second] {
        assert!(!op.txn(guarded_put(g, "zombie")).await.unwrap().succeeded());
    }
    assert_eq!(
        app_value(op.clone()).await.as_deref(),
        Some("v2"),
        "nothing landed"
    );
    other.close().await.unwrap();
    session.close().await.unwrap();
}

/// Dropping the last handle of a session (after its stores closed, which
/// dropped theirs) revokes its lease in the background.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_last_handle_revokes_the_lease() {
    let eps = support::shared_endpoints().await;
    let prefix = format!("/{}/", support::unique("session-drop"));
    let mut op = support::operator(&eps).await;
    let session = EtcdSession::connect(&support::options(&eps, &prefix, "x"))
        .await
        .unwrap();
    let lease = session.lease_id();
    let (wal, _) = open_on(&session, support::options(&eps, &prefix, "log"))
        .await
        .unwrap();
    wal.append("x").await.unwrap();
    drop(session);
    assert!(
        lease_alive(&mut op, lease).await,
        "the store still holds the session"
    );
    wal.close().await.unwrap();
    drop(wal);
    let deadline = Instant::now() + Duration::from_secs(10);
    while lease_alive(&mut op, lease).await {
        assert!(
            Instant::now() < deadline,
            "the lease was not revoked within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The wal-core conformance suite on stores that share one session. A
/// "crash" loses the whole process, session included: the factory revokes
/// the session's lease (as its TTL would) and starts a new session.
mod conformance_on_session {
    use super::*;
    use async_trait::async_trait;
    use tokio::sync::Mutex;
    use wal_core::testkit::StoreFactory;

    struct SessionFactory {
        endpoints: Vec<String>,
        prefix: String,
        session: Mutex<EtcdSession>,
    }

    #[async_trait]
    impl StoreFactory for SessionFactory {
        type Store = EtcdStore;

        async fn store(&self) -> EtcdStore {
            let session = self.session.lock().await.clone();
            EtcdStore::with_session(
                session,
                support::options(&self.endpoints, &self.prefix, "log"),
            )
        }

        async fn after_crash(&self) {
            let mut s = self.session.lock().await;
            let mut op = support::operator(&self.endpoints).await;
            op.lease_revoke(s.lease_id()).await.unwrap();
            *s = EtcdSession::connect(&support::options(&self.endpoints, &self.prefix, "x"))
                .await
                .unwrap();
        }
    }

    async fn factory() -> SessionFactory {
        let endpoints = support::shared_endpoints().await;
        let prefix = format!("/{}/", support::unique("conformance-session"));
        let session = EtcdSession::connect(&support::options(&endpoints, &prefix, "x"))
            .await
            .unwrap();
        SessionFactory {
            endpoints,
            prefix,
            session: Mutex::new(session),
        }
    }

    wal_core::conformance_tests!(factory);
}

/// The session's keep-alives go unanswered past the TTL (etcd paused, so no
/// owner watch can see a key go either): the session's own deadline fires
/// its loss, and every Wal on it fails with Fenced, within a deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_keepalives_past_the_ttl_fence_every_wal() {
    const TTL: Duration = Duration::from_secs(3);
    let node =
        support::start_node(support::NodeSpec::single(&support::unique("session-pause"))).await;
    let eps = vec![node.endpoint.clone()];
    support::wait_ready(&eps, Duration::from_secs(60)).await;
    let prefix = "/paused/";
    let base = support::options(&eps, prefix, "x")
        .lease_ttl(TTL)
        .request_timeout(Duration::from_secs(2));
    let session = EtcdSession::connect(&base).await.unwrap();
    let mut wals = Vec::new();
    for i in 0..5 {
        let (w, _) = open_on(&session, base.clone().name(log(i))).await.unwrap();
        w.append("x").await.unwrap();
        wals.push(w);
    }
    support::docker(&["pause", node.id()]);
    let paused_at = Instant::now();
    let failures = futures::future::join_all(wals.iter().map(|w| w.failed()));
    let failures = within("every Wal::failed()", 4 * TTL, failures).await;
    let waited = paused_at.elapsed();
    support::docker(&["unpause", node.id()]);
    for (i, e) in failures.iter().enumerate() {
        assert!(e.is_fenced(), "{}: {e}", log(i));
    }
    let lost = session.lost().expect("the session is lost");
    assert!(lost.to_string().contains("TTL"), "{lost}");
    assert!(waited <= 2 * TTL, "fenced {waited:?} after the pause");
}
