//! Ownership and fencing on one shared etcd: racing writers, lease loss by
//! revocation with a waiting standby, a read-only follower, and the commit
//! point of multi-txn appends.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use futures::StreamExt;
use wal_core::{Entry, EntryKind, Error, Lsn, ReadLimit, Recovery, Wal, WalOptions};
use wal_etcd::{Acquire, EtcdOptions, EtcdReader, EtcdStore};

async fn open(options: EtcdOptions) -> wal_core::Result<(Wal, Recovery)> {
    Wal::open(EtcdStore::new(options), WalOptions::default()).await
}

async fn collect(rec: Recovery) -> Vec<Entry> {
    rec.map(|e| e.unwrap()).collect().await
}

fn texts(entries: &[Entry]) -> Vec<String> {
    entries
        .iter()
        .map(|e| String::from_utf8_lossy(&e.payload).into_owned())
        .collect()
}

async fn within<T>(what: &str, d: Duration, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(d, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: not within {d:?}"))
}

/// Two writers race for one log, 20 rounds. Each round exactly one wins
/// (the other gets Locked naming it), recovers everything acknowledged so
/// far, appends, and is then forced out by revoking its lease; it keeps
/// trying to append, and every one of those appends fails and never lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_writers_exactly_one_owner_and_fenced_loser_lands_nothing() {
    let eps = support::shared_endpoints().await;
    let prefix = format!("/{}/", support::unique("race"));
    let mut acked: Vec<(Lsn, String)> = Vec::new();
    let mut zombies = Vec::new();
    for round in 0..20 {
        let a = support::options(&eps, &prefix, "log").writer_id(format!("round{round}-a"));
        let b = support::options(&eps, &prefix, "log").writer_id(format!("round{round}-b"));
        let (ra, rb) = tokio::join!(tokio::spawn(open(a)), tokio::spawn(open(b)));
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        let (wal, rec, winner) = match (ra, rb) {
            (Ok((w, r)), Err(Error::Locked { holder })) => {
                assert!(holder.contains(&format!("round{round}-a")), "{holder}");
                (w, r, "a")
            }
            (Err(Error::Locked { holder }), Ok((w, r))) => {
                assert!(holder.contains(&format!("round{round}-b")), "{holder}");
                (w, r, "b")
            }
            (a, b) => panic!(
                "round {round}: expected exactly one owner, got {:?} / {:?}",
                a.map(|_| ()),
                b.map(|_| ())
            ),
        };
        let rec = collect(rec).await;
        let got: Vec<(Lsn, String)> = rec
            .iter()
            .map(|e| (e.lsn, String::from_utf8_lossy(&e.payload).into_owned()))
            .collect();
        assert_eq!(
            got, acked,
            "round {round}: the winner recovers every acknowledged entry"
        );
        // A third opener is refused while the winner owns the log.
        assert!(matches!(
            open(support::options(&eps, &prefix, "log")).await,
            Err(Error::Locked { .. })
        ));
        for i in 0..3 {
            let p = format!("r{round}-{winner}-{i}");
            acked.push((wal.append(p.clone()).await.unwrap(), p));
        }
        let batch: Vec<String> = (0..2)
            .map(|i| format!("r{round}-{winner}-batch{i}"))
            .collect();
        let lsns = wal.append_batch(batch.clone()).await.unwrap();
        acked.extend(lsns.into_iter().zip(batch));

        // Force the loss, as an expired TTL would.
        assert!(support::revoke_owner(&eps, &prefix, "log").await);
        let e = within("fenced after revoke", Duration::from_secs(5), wal.failed()).await;
        assert!(e.is_fenced(), "round {round}: {e:?}");
        // The loser keeps trying, concurrently with the next round.
        zombies.push(tokio::spawn(async move {
            for i in 0..10 {
                let r = wal.append(format!("zombie-{round}-{i}")).await;
                match r {
                    Err(e) if e.is_fenced() => {}
                    other => panic!("a fenced writer's append must fail: {other:?}"),
                }
            }
            let _ = wal.close().await;
        }));
    }
    for z in zombies {
        z.await.unwrap();
    }
    let (wal, rec) = open(support::options(&eps, &prefix, "log")).await.unwrap();
    let rec = collect(rec).await;
    assert!(texts(&rec).iter().all(|t| !t.starts_with("zombie")));
    let got: Vec<(Lsn, String)> = rec
        .iter()
        .map(|e| (e.lsn, String::from_utf8_lossy(&e.payload).into_owned()))
        .collect();
    assert_eq!(got, acked);
    wal.close().await.unwrap();
}

/// The owner's lease is revoked (an operator, or a TTL that lapsed): the
/// writer learns it (`failed()` resolves with Fenced) and a standby that was
/// following with an EtcdReader and waiting to acquire takes over with
/// every acknowledged entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_lease_fences_writer_and_waiting_standby_takes_over() {
    let eps = support::shared_endpoints().await;
    let prefix = format!("/{}/", support::unique("revoke"));
    let opts = support::options(&eps, &prefix, "log")
        .lease_ttl(Duration::from_secs(2))
        .request_timeout(Duration::from_secs(1));
    let (primary, _) = open(opts.clone().writer_id("primary")).await.unwrap();
    let mut acked = Vec::new();
    for i in 0..20 {
        acked.push(format!("e{i}"));
        primary.append(format!("e{i}")).await.unwrap();
    }

    // The standby follows the log without owning it...
    let reader = EtcdReader::connect(opts.clone()).await.unwrap();
    assert_eq!(reader.owner().await.unwrap().unwrap().writer_id, "primary");
    let mut tail = reader.tail(Lsn(1));
    for i in 0..20 {
        let r = within("tail", Duration::from_secs(10), tail.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&r.payload[..], format!("e{i}").as_bytes());
    }
    primary.append("e20").await.unwrap();
    acked.push("e20".into());
    let r = within("tail follows", Duration::from_secs(10), tail.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&r.payload[..], b"e20");

    // ...and waits to acquire it.
    let standby = tokio::spawn(open(
        opts.clone()
            .writer_id("standby")
            .acquire(Acquire::Wait(Duration::from_secs(30))),
    ));
    assert!(!standby.is_finished());
    let t0 = Instant::now();
    assert!(support::revoke_owner(&eps, &prefix, "log").await);
    let e = within("fenced", Duration::from_secs(10), primary.failed()).await;
    let fenced_after = t0.elapsed();
    println!("lease revoked -> writer fenced after {fenced_after:?}");
    assert!(e.is_fenced(), "{e:?}");
    assert!(primary.append("late").await.unwrap_err().is_fenced());

    let (standby, rec) = within("standby takes over", Duration::from_secs(30), standby)
        .await
        .unwrap()
        .unwrap();
    println!(
        "lease revoked -> standby owns the log after {:?}",
        t0.elapsed()
    );
    assert_eq!(texts(&collect(rec).await), acked);
    standby.append("from standby").await.unwrap();
    let r = within("tail after takeover", Duration::from_secs(10), tail.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&r.payload[..], b"from standby");
    assert_eq!(reader.owner().await.unwrap().unwrap().writer_id, "standby");
    let _ = primary.close().await;
    standby.close().await.unwrap();
}

/// The lease is left to expire on its own (the process died): a standby
/// waiting to acquire takes over after the TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashed_owner_lease_lapses_and_standby_takes_over() {
    let eps = support::shared_endpoints().await;
    let prefix = format!("/{}/", support::unique("lapse"));
    let opts = support::options(&eps, &prefix, "log")
        .lease_ttl(Duration::from_secs(2))
        .request_timeout(Duration::from_secs(1));
    let (primary, _) = open(opts.clone()).await.unwrap();
    primary.append_batch(["a", "b", "c"]).await.unwrap();
    let t0 = Instant::now();
    primary.simulate_crash().await; // stops renewing, releases nothing
    let (standby, rec) = open(opts.acquire(Acquire::Wait(Duration::from_secs(20))))
        .await
        .unwrap();
    let waited = t0.elapsed();
    println!("crashed owner -> standby owns the log after {waited:?} (TTL 2 s)");
    assert!(
        waited >= Duration::from_millis(1500),
        "took over before the TTL: {waited:?}"
    );
    assert_eq!(texts(&collect(rec).await), ["a", "b", "c"]);
    standby.close().await.unwrap();
}

/// A multi-txn append that died before its commit point: its keys above
/// the head are invisible to readers and removed by the next owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uncommitted_keys_above_head_are_invisible_and_cleaned_by_next_owner() {
    let eps = support::shared_endpoints().await;
    let prefix = format!("/{}/", support::unique("commit-point"));
    let opts = support::options(&eps, &prefix, "log");
    let (wal, _) = open(opts.clone()).await.unwrap();
    wal.append_batch(["a", "b"]).await.unwrap();
    wal.simulate_crash().await;
    support::revoke_owner(&eps, &prefix, "log").await;

    // What the first txns of a crashed 3-record append would have left:
    // a pack for Lsns 3..=4 and a chunked record 5 (descriptor + chunk),
    // but no head update.
    let mut c = support::operator(&eps).await;
    let base = format!("{prefix}log/");
    let mut pack = vec![0x01u8];
    for (lsn, p) in [(3u64, "ghost3"), (4, "ghost4")] {
        pack.extend_from_slice(&lsn.to_be_bytes());
        pack.push(1);
        pack.extend_from_slice(&(p.len() as u32).to_be_bytes());
        pack.extend_from_slice(p.as_bytes());
    }
    let crc = crc32fast::hash(&pack);
    pack.extend_from_slice(&crc.to_be_bytes());
    c.put(format!("{base}r/{:020}", 4), pack, None)
        .await
        .unwrap();
    c.put(format!("{base}c/{:020}/{:010}", 5, 0), "ghost5", None)
        .await
        .unwrap();

    let reader = EtcdReader::connect(opts.clone()).await.unwrap();
    let seen = reader
        .read_from(Lsn(1), ReadLimit::default())
        .await
        .unwrap();
    assert_eq!(
        seen.len(),
        2,
        "records above the head are invisible to readers"
    );
    assert_eq!(reader.head().await.unwrap().0, Lsn(2));

    let (wal, rec) = open(opts).await.unwrap();
    assert_eq!(texts(&collect(rec).await), ["a", "b"]);
    let keys = c
        .get(
            format!("{base}r/"),
            Some(
                etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_keys_only(),
            ),
        )
        .await
        .unwrap();
    assert_eq!(
        keys.kvs().len(),
        1,
        "the next owner removed the uncommitted pack"
    );
    let chunks = c
        .get(
            format!("{base}c/"),
            Some(
                etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_keys_only(),
            ),
        )
        .await
        .unwrap();
    assert!(chunks.kvs().is_empty(), "and the orphan chunk");
    // New appends reuse nothing that was visible and commit normally.
    let lsn = wal.append("c").await.unwrap();
    assert_eq!(lsn, Lsn(3));
    wal.close().await.unwrap();
    let (wal, rec) = open(support::options(&eps, &prefix, "log")).await.unwrap();
    assert_eq!(texts(&collect(rec).await), ["a", "b", "c"]);
    assert!(rec_kinds_all_data(&wal).await);
    wal.close().await.unwrap();
}

async fn rec_kinds_all_data(wal: &Wal) -> bool {
    wal.read_from(Lsn(1))
        .map(|e| e.unwrap().kind == EntryKind::Data)
        .all(|b| async move { b })
        .await
}

use wal_etcd::etcd_client;
