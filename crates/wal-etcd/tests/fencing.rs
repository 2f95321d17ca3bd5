//! Fencing proven at etcd, not only by the store's local bookkeeping.
//!
//! - A zombie writer (its lease revoked, a successor may own the log) calls
//!   `append`, `truncate_after` and `remove_before` directly through the
//!   [`WalStore`] trait, so the `Wal`'s own poisoning is out of the way.
//!   In most rounds the zombie's keep-alive task is held off (its
//!   current-thread runtime is blocked while the takeover runs on another
//!   runtime), so the store's local "lease lost" flag is still clear and the
//!   txn IS sent: etcd's `create_revision(owner) == token` compare is what
//!   refuses it. Which rounds were refused by etcd and which locally is
//!   told apart by the error (a rejected txn names the current owner, or
//!   says the owner key is gone, and the zombie's token) and printed.
//! - An append split over many txns is interrupted between txns, for real
//!   (the lease revoked, or etcd paused, after its 20th record key landed):
//!   the keys it left above the head are invisible to readers and removed
//!   by the next owner, which recovers exactly what was acknowledged.
#![allow(clippy::unwrap_used)]

mod support;

use std::{
    future::Future,
    sync::OnceLock,
    time::{Duration, Instant},
};

use futures::StreamExt;
use wal_core::{
    Entry, Error, Lsn, ReadLimit, Record, RecordKind, Recovery, Wal, WalOptions, WalStore,
};
use wal_etcd::{
    etcd_client::{EventType, GetOptions, WatchOptions},
    Acquire, EtcdLimits, EtcdOptions, EtcdReader, EtcdStore,
};

// ---------------------------------------------------------------- helpers

async fn within<T>(what: &str, d: Duration, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(d, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: not within {d:?}"))
}

async fn collect(rec: Recovery) -> Vec<(Lsn, String)> {
    let entries: Vec<Entry> = rec.map(|e| e.unwrap()).collect().await;
    entries
        .iter()
        .map(|e| (e.lsn, String::from_utf8_lossy(&e.payload).into_owned()))
        .collect()
}

fn pairs(records: &[Record]) -> Vec<(Lsn, String)> {
    records
        .iter()
        .map(|r| (r.lsn, String::from_utf8_lossy(&r.payload).into_owned()))
        .collect()
}

async fn open_wal(options: EtcdOptions) -> (Wal, Recovery) {
    Wal::open(EtcdStore::new(options), WalOptions::default())
        .await
        .unwrap()
}

/// Every key under `base` with its value and revisions: equal snapshots
/// mean nothing under the log changed in between.
type Snapshot = Vec<(String, Vec<u8>, i64, i64)>;

async fn snapshot(eps: &[String], base: &str) -> Snapshot {
    let mut c = support::operator(eps).await;
    let r = c
        .get(base, Some(GetOptions::new().with_prefix()))
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

async fn revoke_lease(eps: &[String], lease: i64) {
    support::operator(eps)
        .await
        .lease_revoke(lease)
        .await
        .unwrap();
}

/// A runtime other than the test's: work run on it while the test's
/// current-thread runtime is blocked lets none of the test runtime's tasks
/// run meanwhile. Never dropped (a runtime may not be dropped in async
/// context, and successors' tasks live on it for the whole test).
fn other_runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    })
}

/// Runs `fut` on [`other_runtime`], BLOCKING the calling thread until it is
/// done. Called from a current-thread test runtime, this freezes every task
/// of that runtime, the zombie's keep-alive task (and its owner-key watch)
/// included, so the zombie cannot learn of its loss before its next call.
fn frozen_while<T: Send + 'static>(fut: impl Future<Output = T> + Send + 'static) -> T {
    let handle = other_runtime().handle().clone();
    std::thread::spawn(move || handle.block_on(fut))
        .join()
        .unwrap()
}

// ------------------------------------------------------- zombie writers

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Takeover {
    /// Revoke the zombie's lease and let a successor claim the log (its
    /// `Wal::open`, so a new owner key and a rewritten head), all while the
    /// zombie's runtime is frozen: its local lost flag is still clear, so
    /// its call is sent to etcd.
    Frozen,
    /// The same on the zombie's own runtime: its keep-alive task (a watch
    /// on the owner key) races the call, which is usually refused locally.
    Racing,
    /// Revoke the zombie's lease, nobody claims, zombie frozen. The head key
    /// is untouched, so the head-revision compare still matches and only
    /// `create_revision(owner) == token` can refuse the txn.
    VacantFrozen,
}

const MODES: [Takeover; 3] = [Takeover::Frozen, Takeover::Racing, Takeover::VacantFrozen];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ZombieOp {
    Append,
    TruncateAfter,
    RemoveBefore,
}

/// The zombie's mutation, sent straight through the `WalStore` trait.
/// `mine` are the Lsns the zombie appended while it owned the log (the
/// last records of the log).
async fn zombie_call(
    a: &mut EtcdStore,
    op: ZombieOp,
    round: usize,
    mine: &[Lsn],
) -> wal_core::Result<()> {
    let last = *mine.last().unwrap();
    match op {
        ZombieOp::Append => {
            // Three records in one txn (records + head), as a batch would.
            let records: Vec<Record> = (1..=3u64)
                .map(|i| {
                    Record::new(
                        Lsn(last.0 + i),
                        RecordKind::Data,
                        format!("ZOMBIE-r{round}-{i}"),
                    )
                })
                .collect();
            a.append(&records).await
        }
        ZombieOp::TruncateAfter => {
            // Cut the zombie's own last two records: a real truncate
            // (reads the pack at the cut, then one fenced txn that deletes,
            // rewrites, puts the marker and moves the head).
            let marker = Record::new(
                Lsn(last.0 + 1),
                RecordKind::Truncated,
                mine[0].0.to_be_bytes().to_vec(),
            );
            a.truncate_after(mine[0], &marker).await.map(|_| ())
        }
        ZombieOp::RemoveBefore => {
            // Would delete every record but the last one.
            a.remove_before(last).await.map(|_| ())
        }
    }
}

/// Who refused a zombie's call.
#[derive(Debug, PartialEq, Eq)]
enum RefusedBy {
    /// The txn was sent and its compare failed at etcd: the error is built
    /// from the txn's `or_else(get owner)` answer and names the zombie's
    /// token.
    Etcd(String),
    /// The store refused before sending (its keep-alive task had already
    /// flagged the loss).
    Local(String),
}

fn refused_by(e: &Error) -> RefusedBy {
    match e {
        Error::Fenced { reason } if reason.contains("this writer's token was") => {
            RefusedBy::Etcd(reason.clone())
        }
        Error::Fenced { reason } => RefusedBy::Local(reason.clone()),
        Error::Closed | Error::Unavailable(_) => RefusedBy::Local(e.to_string()),
        other => {
            panic!("a zombie's call must fail with Fenced (or Closed/Unavailable), got {other:?}")
        }
    }
}

/// `rounds` rounds on one log: a writer opens it (through the trait),
/// appends three records, loses it per [`MODES`], and at once tries `ops`
/// (cycled). Every call must fail and change nothing under the log; the
/// successor recovers exactly what was acknowledged and writes on; at the
/// end a fresh `Wal::open` recovers exactly the acknowledged entries.
async fn zombie_rounds(tag: &str, ops: &[ZombieOp], rounds: usize) {
    let eps = support::shared_endpoints().await;
    let prefix = format!("/{}/", support::unique(tag));
    let base = format!("{prefix}log/");
    let mut acked: Vec<(Lsn, String)> = Vec::new();
    let mut tally: Vec<(usize, ZombieOp, Takeover, RefusedBy)> = Vec::new();
    for round in 0..rounds {
        let op = ops[round % ops.len()];
        let mode = MODES[round % MODES.len()];
        let ctx = format!("round {round} ({op:?}, {mode:?})");

        let mut a = EtcdStore::new(
            support::options(&eps, &prefix, "log").writer_id(format!("zombie-{round}")),
        );
        let state = a.open().await.unwrap();
        assert_eq!(state.last_lsn, acked.last().map(|(l, _)| *l), "{ctx}");
        let next = acked.last().map_or(1, |(l, _)| l.0 + 1);
        let records: Vec<Record> = (0..3u64)
            .map(|i| Record::new(Lsn(next + i), RecordKind::Data, format!("a-r{round}-{i}")))
            .collect();
        a.append(&records).await.unwrap();
        acked.extend(pairs(&records));
        let mine: Vec<Lsn> = records.iter().map(|r| r.lsn).collect();
        let lease = a.lease_id().unwrap();
        let token = a.fencing_token().unwrap();

        let successor_id = format!("successor-{round}");
        let b_opts = support::options(&eps, &prefix, "log")
            .writer_id(successor_id.clone())
            .acquire(Acquire::Wait(Duration::from_secs(10)));
        let (successor, before) = match mode {
            Takeover::Frozen | Takeover::VacantFrozen => {
                let (eps2, base2) = (eps.clone(), base.clone());
                let claim = mode == Takeover::Frozen;
                // Nothing awaits on this runtime between here and the
                // zombie's call: its keep-alive task cannot run.
                frozen_while(async move {
                    revoke_lease(&eps2, lease).await;
                    let b = if claim {
                        Some(open_wal(b_opts).await)
                    } else {
                        None
                    };
                    (b, snapshot(&eps2, &base2).await)
                })
            }
            Takeover::Racing => {
                revoke_lease(&eps, lease).await;
                let b = open_wal(b_opts).await;
                (Some(b), snapshot(&eps, &base).await)
            }
        };
        if let Some(owner) = before.iter().find(|(k, ..)| k.ends_with("/owner")) {
            assert!(owner.2 > token.0, "{ctx}: the successor's token is newer");
        }

        let result = zombie_call(&mut a, op, round, &mine).await;

        let err = match result {
            Ok(()) => panic!("{ctx}: a zombie's {op:?} succeeded"),
            Err(e) => e,
        };
        let after = snapshot(&eps, &base).await;
        assert_eq!(
            before, after,
            "{ctx}: the zombie's {op:?} changed the log in etcd (its error: {err})"
        );
        assert!(
            after
                .iter()
                .all(|(_, v, ..)| !v.windows(6).any(|w| w == b"ZOMBIE")),
            "{ctx}: a zombie payload is stored"
        );
        let by = refused_by(&err);
        match (mode, &by) {
            (Takeover::Frozen, RefusedBy::Etcd(reason)) => assert!(
                reason.contains(&successor_id) && reason.contains(&token.to_string()),
                "{ctx}: {reason}"
            ),
            (Takeover::VacantFrozen, RefusedBy::Etcd(reason)) => {
                assert!(reason.contains("owner key is gone"), "{ctx}: {reason}")
            }
            (Takeover::Racing, _) => {}
            (_, RefusedBy::Local(reason)) => panic!(
                "{ctx}: the zombie's runtime was frozen, so its call should have reached etcd, \
                 but it was refused locally: {reason}"
            ),
        }
        tally.push((round, op, mode, by));
        // The failed mutation made the zombie let go.
        assert_eq!(a.fencing_token(), None, "{ctx}");
        a.close().await.unwrap();

        if let Some((b, rec)) = successor {
            assert_eq!(
                collect(rec).await,
                acked,
                "{ctx}: the successor recovers exactly the acknowledged entries"
            );
            for i in 0..2 {
                let p = format!("b-r{round}-{i}");
                let lsn = b.append(p.clone()).await.unwrap();
                acked.push((lsn, p));
            }
            b.close().await.unwrap();
        }
    }

    let (wal, rec) = open_wal(support::options(&eps, &prefix, "log")).await;
    assert_eq!(collect(rec).await, acked, "final recovery");
    wal.close().await.unwrap();

    let etcd = tally
        .iter()
        .filter(|t| matches!(t.3, RefusedBy::Etcd(_)))
        .count();
    println!(
        "{tag}: {} zombie calls, {etcd} sent and rejected by etcd, {} refused locally",
        tally.len(),
        tally.len() - etcd
    );
    for (round, op, mode, by) in &tally {
        println!("  round {round:2} {op:?} {mode:?}: {by:?}");
    }
    let frozen = tally.iter().filter(|t| t.2 != Takeover::Racing).count();
    assert!(etcd >= frozen);
}

/// A zombie's appends, sent straight to the store right after its lease
/// was revoked (and, in most rounds, a successor claimed the log), land
/// nothing. 21 rounds; 14 of them provably reach etcd.
#[tokio::test]
async fn zombie_append_is_rejected_by_etcd_and_lands_nothing() {
    zombie_rounds("zombie-append", &[ZombieOp::Append], 21).await;
}

/// The same for a zombie's truncate_after and remove_before: rejected,
/// nothing deleted, the successor's (and everyone's) records intact.
#[tokio::test]
async fn zombie_truncate_and_remove_are_rejected_by_etcd_and_delete_nothing() {
    zombie_rounds(
        "zombie-cut",
        &[ZombieOp::TruncateAfter, ZombieOp::RemoveBefore],
        18,
    )
    .await;
}

// ------------------------------------------- interrupted multi-txn append

/// At most 3 puts per txn (plus the head put in the last one); packs so
/// small that each record of the big append is its own key; chunks of 32
/// bytes.
fn tiny_limits() -> EtcdLimits {
    let mut l = EtcdLimits::default();
    l.max_txn_ops = 4;
    l.pack_bytes = 64;
    l.chunk_bytes = 32;
    l
}

/// Records in the interrupted append: ~1000 txns, far more than can land
/// before the interruption.
const BIG: u64 = 3000;
/// The interruption starts once the record key of the append's record
/// number TRIGGER (from 0) has landed.
const TRIGGER: u64 = 20;

fn big_append(first: u64) -> Vec<Record> {
    (0..BIG)
        .map(|i| {
            let lsn = first + i;
            // The first two are chunked (over the 46-byte threshold): their
            // chunk keys land in the first txns.
            let payload = if i < 2 {
                format!("lost-chunked-{lsn:020}-").repeat(3)
            } else {
                format!("lost-{lsn:030}")
            };
            Record::new(Lsn(lsn), RecordKind::Data, payload)
        })
        .collect()
}

fn record_lsn(base: &str, key: &[u8]) -> Option<u64> {
    std::str::from_utf8(key)
        .ok()?
        .strip_prefix(base)?
        .strip_prefix("r/")?
        .parse()
        .ok()
}

/// Record keys above `head`, and every chunk key, under `base`.
async fn above_head(eps: &[String], base: &str, head: Lsn) -> (Vec<u64>, usize) {
    let mut c = support::operator(eps).await;
    let keys_only = || Some(GetOptions::new().with_prefix().with_keys_only());
    let records = c.get(format!("{base}r/"), keys_only()).await.unwrap();
    let above = records
        .kvs()
        .iter()
        .filter_map(|kv| record_lsn(base, kv.key()))
        .filter(|l| *l > head.0)
        .collect();
    let chunks = c.get(format!("{base}c/"), keys_only()).await.unwrap();
    (above, chunks.kvs().len())
}

enum Interrupt {
    /// Revoke the writer's lease from another client.
    RevokeLease,
    /// `docker pause` the (single-member) etcd container.
    PauseEtcd { container: String },
}

async fn interrupted_append(eps: Vec<String>, interrupt: Interrupt) {
    let prefix = format!("/{}/", support::unique("interrupted"));
    let base = format!("{prefix}log/");
    let opts = support::options(&eps, &prefix, "log")
        .limits(tiny_limits())
        .lease_ttl(Duration::from_secs(2))
        .request_timeout(Duration::from_secs(1));
    let mut a = EtcdStore::new(opts.clone().writer_id("interrupted"));
    a.open().await.unwrap();
    let mut acked = Vec::new();
    for i in 1..=5u64 {
        let r = Record::new(Lsn(i), RecordKind::Data, format!("acked-{i}"));
        a.append(std::slice::from_ref(&r)).await.unwrap();
        acked.push(r);
    }
    // A multi-txn append that does commit (10 keys: 4 txns).
    let batch: Vec<Record> = (6..=15u64)
        .map(|i| Record::new(Lsn(i), RecordKind::Data, format!("acked-batch-{i}")))
        .collect();
    a.append(&batch).await.unwrap();
    acked.extend(batch);
    let acked = pairs(&acked);
    let head = Lsn(15);
    let lease = a.lease_id().unwrap();

    // Watch the record keys from now on; interrupt once the big append's
    // TRIGGER-th record key landed (several txns in, its commit point far
    // away).
    let mut op = support::operator(&eps).await;
    let rev = op
        .get(base.clone(), None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    let mut events = op
        .watch(
            format!("{base}r/"),
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(rev + 1),
            ),
        )
        .await
        .unwrap();
    let big = big_append(head.0 + 1);
    let trigger = head.0 + 1 + TRIGGER;
    let t0 = Instant::now();
    let append = tokio::spawn(async move {
        let r = a.append(&big).await;
        (a, r, Instant::now())
    });
    within(
        "the big append's trigger record key lands",
        Duration::from_secs(10),
        async {
            loop {
                let resp = events.message().await.unwrap().unwrap();
                let seen = resp.events().iter().any(|e| {
                    e.event_type() == EventType::Put
                        && e.kv()
                            .and_then(|kv| record_lsn(&base, kv.key()))
                            .is_some_and(|l| l >= trigger)
                });
                if seen {
                    return;
                }
            }
        },
    )
    .await;
    let interrupted_at = t0.elapsed();
    match &interrupt {
        Interrupt::RevokeLease => op.lease_revoke(lease).await.map(|_| ()).unwrap(),
        Interrupt::PauseEtcd { container } => {
            let id = container.clone();
            tokio::task::spawn_blocking(move || support::docker(&["pause", &id]))
                .await
                .map(|_| ())
                .unwrap()
        }
    }
    let (mut a, result, done) = within(
        "the interrupted append returns",
        Duration::from_secs(20),
        append,
    )
    .await
    .unwrap();
    let err = match result {
        Ok(()) => panic!(
            "the {BIG}-record append committed before the interruption landed \
             (interrupted {interrupted_at:?} in, append done {:?} in): raise BIG",
            done - t0
        ),
        Err(e) => e,
    };
    println!(
        "interrupted {interrupted_at:?} into the append; it failed {:?} in with: {err}",
        done - t0
    );
    match &interrupt {
        // A later txn of the append was refused by etcd's owner compare
        // (the head compare still matched: nothing moved the head), or the
        // owner-key watch saw the key go before that txn was sent. Either
        // way Fenced: nothing landed, which the checks below verify.
        Interrupt::RevokeLease => assert!(
            matches!(&err, Error::Fenced { reason }
                if reason.contains("owner key is gone")
                    || reason.contains("owner key was deleted or replaced")),
            "{err:?}"
        ),
        // A non-final txn got no answer: not committed.
        Interrupt::PauseEtcd { container } => {
            assert!(
                matches!(&err, Error::Unavailable(m) if m.contains("before its commit point")),
                "{err:?}"
            );
            let id = container.clone();
            tokio::task::spawn_blocking(move || support::docker(&["unpause", &id]))
                .await
                .unwrap();
            support::wait_ready(&eps, Duration::from_secs(30)).await;
        }
    }
    assert_eq!(a.fencing_token(), None, "the failed append let go");
    a.close().await.unwrap();

    // The interruption was real: the append left keys above the head.
    let (above, chunks) = above_head(&eps, &base, head).await;
    println!(
        "left above head {head}: {} record keys (up to lsn {:?}), {chunks} chunk keys",
        above.len(),
        above.iter().max()
    );
    assert!(
        above.len() as u64 >= TRIGGER - 1 && chunks > 0,
        "the interrupted append left {} record keys and {chunks} chunk keys above the head",
        above.len()
    );
    assert!(above.iter().all(|l| *l < head.0 + 1 + BIG), "not all of it");

    // No reader sees any of it.
    let reader = EtcdReader::connect(opts.clone()).await.unwrap();
    assert_eq!(reader.head().await.unwrap().0, head);
    let all = ReadLimit {
        max_records: 100_000,
        max_bytes: 64 << 20,
    };
    let seen = reader.read_from(Lsn(1), all).await.unwrap();
    assert_eq!(
        pairs(&seen),
        acked,
        "a reader sees exactly the committed records"
    );
    assert!(reader.read_from(head.next(), all).await.unwrap().is_empty());

    // The next owner removes the leftovers and recovers exactly the
    // acknowledged entries.
    let next_opts = opts
        .clone()
        .writer_id("next-owner")
        .acquire(Acquire::Wait(Duration::from_secs(20)));
    let (wal, rec) = within(
        "the next owner opens",
        Duration::from_secs(25),
        open_wal(next_opts.clone()),
    )
    .await;
    assert_eq!(collect(rec).await, acked);
    let (above, chunks) = above_head(&eps, &base, head).await;
    assert!(
        above.is_empty() && chunks == 0,
        "the next owner left {} record keys above head {head} and {chunks} chunk keys",
        above.len()
    );
    // The uncommitted Lsns are handed out again, with the new payloads.
    assert_eq!(wal.append("after").await.unwrap(), head.next());
    wal.close().await.unwrap();
    let seen = reader.read_from(head.next(), all).await.unwrap();
    assert_eq!(pairs(&seen), [(head.next(), "after".to_string())]);
    let (wal, rec) = open_wal(next_opts).await;
    let mut expected = acked.clone();
    expected.push((head.next(), "after".into()));
    assert_eq!(collect(rec).await, expected);
    wal.close().await.unwrap();
}

/// A multi-txn append whose writer's lease is revoked between its txns:
/// the next txn is refused by etcd, nothing of it is visible, and the next
/// owner cleans up and recovers exactly the acknowledged entries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_interrupted_by_lease_revocation_between_txns_commits_nothing() {
    let eps = support::shared_endpoints().await;
    interrupted_append(eps, Interrupt::RevokeLease).await;
}

/// A multi-txn append during which the etcd member is paused: a non-final
/// txn gets no answer, the append fails as not committed, and after the
/// unpause readers see none of it and the next owner cleans up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_interrupted_by_paused_etcd_between_txns_commits_nothing() {
    let node = support::start_node(support::NodeSpec::single(&support::unique(
        "wal-etcd-fencing-pause",
    )))
    .await;
    let eps = vec![node.endpoint.clone()];
    support::wait_ready(&eps, Duration::from_secs(60)).await;
    interrupted_append(
        eps,
        Interrupt::PauseEtcd {
            container: node.id().to_string(),
        },
    )
    .await;
}
