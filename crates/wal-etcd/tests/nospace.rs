//! etcd's space quota: a txn may be applied and still be answered
//! "database space exceeded" (the txn that crosses `--quota-backend-bytes`).
//! The store must not report such an append as failed: it reads the head
//! back, and a reopen recovers exactly what was acknowledged.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use futures::StreamExt;
use support::{start_node, unique, wait_ready, NodeSpec};
use wal_core::{Error, Wal, WalOptions};
use wal_etcd::{
    etcd_client::{self, AlarmAction, AlarmOptions, AlarmType, DeleteOptions},
    EtcdStore,
};

const QUOTA: usize = 16 << 20;
const WRITERS: usize = 8;
const FILLER: usize = 16 << 10;
const BALLAST_VALUE: usize = 128 << 10;
/// 13 MiB of the 16 MiB quota. etcd refreshes the size its quota check uses
/// only when its backend commits (every 100 ms), so the writers overshoot
/// the quota by whatever they land in that window (about 1.5 MiB was seen);
/// the margin left after the ballast is deleted must hold all of it, or the
/// reopen's lease grant is refused NOSPACE too.
const BALLAST_VALUES: usize = 104;

fn payload(name: &str, i: usize) -> String {
    format!("{name}-{i}:{}", "x".repeat(FILLER))
}

/// What one writer saw: every acknowledged payload, and the error that
/// stopped it.
struct Run {
    name: String,
    acked: Vec<String>,
    last_attempt: String,
    error: Error,
}

async fn writer(eps: Vec<String>, name: String) -> Run {
    let store = EtcdStore::new(support::options(&eps, "/nospace/", &name));
    let (wal, _) = Wal::open(store, WalOptions::default()).await.unwrap();
    let mut acked = Vec::new();
    for i in 0.. {
        let p = payload(&name, i);
        match wal.append(p.clone()).await {
            Ok(_) => acked.push(p),
            Err(error) => {
                let _ = wal.close().await;
                return Run {
                    name,
                    acked,
                    last_attempt: p,
                    error,
                };
            }
        }
    }
    unreachable!()
}

/// Deletes the ballast, compacts, defragments and disarms the alarm, as an
/// operator recovering from NOSPACE would.
async fn free_space(c: &mut etcd_client::Client) {
    c.delete("/ballast/", Some(DeleteOptions::new().with_prefix()))
        .await
        .unwrap();
    let rev = c.get("x", None).await.unwrap().header().unwrap().revision();
    c.compact(rev, None).await.unwrap();
    c.defragment().await.unwrap();
    let alarms = c
        .alarm(AlarmAction::Get, AlarmType::None, None)
        .await
        .unwrap();
    for a in alarms.alarms() {
        let mut o = AlarmOptions::new();
        o.with_member(a.member_id());
        c.alarm(AlarmAction::Deactivate, AlarmType::Nospace, Some(o))
            .await
            .unwrap();
    }
}

/// Eight writers (eight logs) append 16 KiB entries until the quota stops
/// them. Each writer's last error must say the append did not commit (or
/// that its outcome is unknown), never claim a known failure of an append
/// that landed; after the operator frees space, every log recovers exactly
/// its acknowledged entries, no duplicates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_crossing_the_space_quota_reports_the_truth() {
    let quota = format!("--quota-backend-bytes={QUOTA}");
    let node = start_node(NodeSpec::single_with(
        &unique("wal-etcd-nospace"),
        &[&quota],
    ))
    .await;
    let eps = vec![node.endpoint.clone()];
    wait_ready(&eps, Duration::from_secs(60)).await;
    let mut op = support::operator(&eps).await;
    // Ballast the operator deletes afterwards, so there is room to reopen:
    // most of the quota, so that what the writers fill (and what stays live
    // after compaction and defragmentation) is well below it.
    for i in 0..BALLAST_VALUES {
        op.put(format!("/ballast/{i}"), vec![b'b'; BALLAST_VALUE], None)
            .await
            .unwrap();
    }
    // The quota check sees the ballast only once the backend has committed
    // it: wait until the reported db size holds it, so that the writers'
    // overshoot is bounded by what they write, not by the ballast too.
    let ballast = (BALLAST_VALUES * BALLAST_VALUE) as i64;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let size = op.status().await.unwrap().db_size();
        if size >= ballast {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the ballast ({ballast} B) never showed in the db size ({size} B)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let t0 = Instant::now();
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| tokio::spawn(writer(eps.clone(), format!("w{w}"))))
        .collect();
    let mut runs = Vec::new();
    for t in tasks {
        let run = tokio::time::timeout(Duration::from_secs(120), t)
            .await
            .expect("writers stop at the quota within 120 s")
            .unwrap();
        runs.push(run);
    }
    println!(
        "quota reached after {:?}: {} entries acknowledged",
        t0.elapsed(),
        runs.iter().map(|r| r.acked.len()).sum::<usize>()
    );

    let mut unknown = Vec::new();
    for r in &runs {
        let e = r.error.root_cause();
        println!("{}: {} acked, then: {e}", r.name, r.acked.len());
        let msg = e.to_string();
        assert!(
            msg.contains("database space exceeded"),
            "{}: not a NOSPACE error: {e:?}",
            r.name
        );
        // Reads are never refused over the quota, so the read-back that
        // settles a NOSPACE answer must work.
        assert!(
            !msg.contains("reading it back failed"),
            "{}: the read-back must settle a NOSPACE answer: {e:?}",
            r.name
        );
        let is_unknown = msg.contains("outcome") && msg.contains("unknown");
        assert!(
            matches!(e, Error::Unavailable(_)) && (msg.contains("did not commit") || is_unknown),
            "{}: the error must say whether the append committed: {e:?}",
            r.name
        );
        if is_unknown {
            unknown.push(r.last_attempt.clone());
        }
    }

    free_space(&mut op).await;
    for r in &runs {
        let store = EtcdStore::new(support::options(&eps, "/nospace/", &r.name));
        let (wal, rec) = Wal::open(store, WalOptions::default()).await.unwrap();
        let got: Vec<String> = rec
            .map(|e| String::from_utf8(e.unwrap().payload.to_vec()).unwrap())
            .collect()
            .await;
        let mut want = r.acked.clone();
        if got.len() == want.len() + 1 && unknown.contains(&r.last_attempt) {
            want.push(r.last_attempt.clone());
        }
        assert_eq!(
            got.len(),
            want.len(),
            "{}: recovered {} entries, acknowledged {}",
            r.name,
            got.len(),
            r.acked.len()
        );
        assert!(got == want, "{}: recovered entries differ", r.name);
        wal.append("after the quota was lifted").await.unwrap();
        wal.close().await.unwrap();
    }
}
