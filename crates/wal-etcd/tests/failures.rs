//! Failures of etcd itself, each on its own containers: a paused member
//! (lease loss), a killed and restarted member, and a partitioned member of
//! a three-node cluster.
#![allow(clippy::unwrap_used)]

mod support;

use std::{
    collections::HashSet,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use futures::StreamExt;
use support::{docker, start_node, unique, wait_ready, NodeSpec};
use wal_core::{Entry, Lsn, Recovery, Wal, WalOptions};
use wal_etcd::{etcd_client, Acquire, EtcdOptions, EtcdStore};

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

/// Waits until `cond` holds, checking every 20 ms, up to `d`.
async fn wait_until(what: &str, d: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + d;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within {d:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The single etcd member is paused (SIGSTOP-like freeze) past the lease
/// TTL: the writer is told (`failed()` resolves with Fenced) within about
/// one TTL, and a standby waiting to acquire takes over, after the unpause,
/// with every acknowledged entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_etcd_fences_writer_and_waiting_standby_takes_over() {
    let node = start_node(NodeSpec::single(&unique("wal-etcd-pause"))).await;
    let eps = vec![node.endpoint.clone()];
    wait_ready(&eps, Duration::from_secs(60)).await;
    let ttl = Duration::from_secs(2);
    let opts = support::options(&eps, "/pause/", "log")
        .lease_ttl(ttl)
        .request_timeout(Duration::from_secs(1));
    let (primary, _) = open(opts.clone().writer_id("primary")).await.unwrap();
    let mut acked = Vec::new();
    for i in 0..20 {
        primary.append(format!("e{i}")).await.unwrap();
        acked.push(format!("e{i}"));
    }
    let standby = tokio::spawn(open(
        opts.clone()
            .writer_id("standby")
            .acquire(Acquire::Wait(Duration::from_secs(60))),
    ));

    let t0 = Instant::now();
    docker(&["pause", node.id()]);
    let e = within(
        "fenced while paused",
        Duration::from_secs(10),
        primary.failed(),
    )
    .await;
    let fenced_after = t0.elapsed();
    println!("etcd paused -> writer fenced after {fenced_after:?} (lease TTL {ttl:?})");
    assert!(e.is_fenced(), "{e:?}");
    assert!(
        fenced_after <= ttl + Duration::from_secs(1),
        "{fenced_after:?}"
    );
    docker(&["unpause", node.id()]);

    let (standby, rec) = within("standby takes over", Duration::from_secs(30), standby)
        .await
        .unwrap()
        .unwrap();
    println!(
        "etcd paused -> standby owns the log after {:?}",
        t0.elapsed()
    );
    assert_eq!(texts(&collect(rec).await), acked);
    assert!(primary.append("late").await.is_err());
    standby.append("from standby").await.unwrap();
    standby.close().await.unwrap();
    let (wal, rec) = open(opts).await.unwrap();
    let mut expect = acked.clone();
    expect.push("from standby".into());
    assert_eq!(texts(&collect(rec).await), expect);
    wal.close().await.unwrap();
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// etcd is killed (SIGKILL) and restarted while four tasks append. The
/// writer either continues or fails cleanly (poisoned); a reopen recovers
/// every acknowledged entry exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_killed_and_restarted_during_writes_loses_no_acknowledged_entry() {
    let port = free_port();
    let node = start_node(NodeSpec {
        name: unique("wal-etcd-kill"),
        initial_cluster: None,
        host_port: Some(port),
        args: Vec::new(),
        tls: None,
    })
    .await;
    let eps = vec![node.endpoint.clone()];
    wait_ready(&eps, Duration::from_secs(60)).await;
    let opts = support::options(&eps, "/kill/", "log")
        .lease_ttl(Duration::from_secs(3))
        .request_timeout(Duration::from_secs(2));
    let (wal, _) = open(opts.clone()).await.unwrap();

    let acked = Arc::new(Mutex::new(Vec::<(Lsn, String)>::new()));
    let attempted = Arc::new(Mutex::new(HashSet::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for t in 0..4 {
        let (wal, acked, attempted, stop) =
            (wal.clone(), acked.clone(), attempted.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let p = format!("w{t}-{i}");
                attempted.lock().unwrap().insert(p.clone());
                match wal.append(p.clone()).await {
                    Ok(lsn) => acked.lock().unwrap().push((lsn, p)),
                    Err(e) => return Some(e),
                }
                i += 1;
            }
            None
        }));
    }
    let count = || acked.lock().unwrap().len();
    wait_until(
        "40 appends before the kill",
        Duration::from_secs(30),
        || count() >= 40,
    )
    .await;
    docker(&["kill", node.id()]);
    let at_kill = count();
    docker(&["start", node.id()]);
    wait_ready(&eps, Duration::from_secs(60)).await;
    let t_ready = Instant::now();
    // Let the writer go on (if it can) for 20 more appends.
    wait_until("writer continues or fails", Duration::from_secs(30), || {
        count() >= at_kill + 20 || tasks.iter().all(|t| t.is_finished())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let mut errors = Vec::new();
    for t in tasks {
        if let Some(e) = t.await.unwrap() {
            errors.push(e);
        }
    }
    let acked = acked.lock().unwrap().clone();
    if errors.is_empty() {
        println!(
            "writer continued across the restart: {} acknowledged",
            acked.len()
        );
        wal.close().await.unwrap();
    } else {
        println!(
            "writer failed cleanly: {} acknowledged ({} after the restart), first error: {}",
            acked.len(),
            acked.len() - at_kill.min(acked.len()),
            errors[0]
        );
        // Poisoned: every later operation fails, nothing more is written.
        assert!(wal.append("after poison").await.is_err());
        drop(wal);
    }
    let _ = t_ready;

    let (wal, rec) = open(opts.acquire(Acquire::Wait(Duration::from_secs(30))))
        .await
        .unwrap();
    let rec = collect(rec).await;
    assert!(rec.windows(2).all(|w| w[0].lsn < w[1].lsn), "lsns increase");
    let got = texts(&rec);
    let unique_got: HashSet<&String> = got.iter().collect();
    assert_eq!(unique_got.len(), got.len(), "no duplicates");
    let attempted = attempted.lock().unwrap().clone();
    assert!(
        got.iter().all(|p| attempted.contains(p)),
        "only appended payloads"
    );
    let by_payload: std::collections::HashMap<&String, Lsn> =
        rec.iter().zip(&got).map(|(e, p)| (p, e.lsn)).collect();
    for (lsn, p) in &acked {
        assert_eq!(
            by_payload.get(p),
            Some(lsn),
            "acknowledged {p} at {lsn} recovered"
        );
    }
    println!(
        "recovered {} entries ({} acknowledged, {} in flight at the failure)",
        got.len(),
        acked.len(),
        got.len() - acked.len()
    );
    wal.close().await.unwrap();
}

/// Removes a docker network when dropped.
struct Network(String);

impl Drop for Network {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["network", "rm", &self.0])
            .output();
    }
}

/// A three-node cluster; one follower is cut off from its peers (docker
/// network disconnect) while the host can still reach it. A writer through
/// the majority continues; a writer connected only to the partitioned node
/// cannot land anything, and its log is taken over through the majority
/// with exactly its acknowledged entries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_member_cannot_write_and_majority_continues() {
    support::preflight();
    let net = Network(unique("wal-etcd-peer"));
    docker(&["network", "create", &net.0]);
    let names: Vec<String> = (1..=3).map(|i| format!("{}-n{i}", net.0)).collect();
    let cluster = names
        .iter()
        .map(|n| format!("{n}=http://{n}:2380"))
        .collect::<Vec<_>>()
        .join(",");
    let mut nodes = Vec::new();
    for n in &names {
        let node = start_node(NodeSpec {
            name: n.clone(),
            initial_cluster: Some(cluster.clone()),
            host_port: None,
            args: Vec::new(),
            tls: None,
        })
        .await;
        // Peers talk on their own network; the host uses the published port
        // on the default bridge, which the partition leaves alone.
        docker(&["network", "connect", &net.0, node.id()]);
        nodes.push(node);
    }
    let eps: Vec<String> = nodes.iter().map(|n| n.endpoint.clone()).collect();
    wait_ready(&eps, Duration::from_secs(60)).await;

    // Partition a follower (pausing or cutting off the leader would make a
    // new leader renew every lease).
    let mut victim = None;
    for (i, ep) in eps.iter().enumerate() {
        let mut c = etcd_client::Client::connect([ep.as_str()], None)
            .await
            .unwrap();
        let s = c.status().await.unwrap();
        let member = s.header().map(|h| h.member_id()).unwrap();
        if s.leader() != member {
            victim = Some(i);
            break;
        }
    }
    let victim = victim.unwrap();
    let majority: Vec<String> = eps
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != victim)
        .map(|(_, e)| e.clone())
        .collect();
    let lonely = vec![eps[victim].clone()];
    let fast = |eps: &[String], name: &str| {
        support::options(eps, "/partition/", name)
            .lease_ttl(Duration::from_secs(3))
            .request_timeout(Duration::from_secs(2))
    };

    let (b, _) = open(fast(&lonely, "b").writer_id("b-via-partitioned-node"))
        .await
        .unwrap();
    let mut b_acked = Vec::new();
    for i in 0..10 {
        b.append(format!("b{i}")).await.unwrap();
        b_acked.push(format!("b{i}"));
    }

    // A writer given all three endpoints: the partitioned one among them
    // must not stop it (requests it refuses are retried, unanswered ones
    // resolved through the others).
    let (c, _) = open(
        support::options(&eps, "/partition/", "all")
            .lease_ttl(Duration::from_secs(6))
            .request_timeout(Duration::from_secs(2))
            .writer_id("c-via-all-endpoints"),
    )
    .await
    .unwrap();
    c.append("c-before").await.unwrap();

    docker(&["network", "disconnect", &net.0, nodes[victim].id()]);
    let t0 = Instant::now();
    let mut c_acked = vec!["c-before".to_string()];
    for i in 0..30 {
        let r = within(
            "an append via all three endpoints",
            Duration::from_secs(20),
            c.append(format!("c{i}")),
        )
        .await;
        assert!(r.is_ok(), "append {i} via all endpoints failed: {r:?}");
        c_acked.push(format!("c{i}"));
    }
    println!(
        "writer via all three endpoints: 30 appends during the partition in {:?}",
        t0.elapsed()
    );
    c.close().await.unwrap();
    let (c, rec) = open(fast(&majority, "all").acquire(Acquire::Wait(Duration::from_secs(15))))
        .await
        .unwrap();
    assert_eq!(texts(&collect(rec).await), c_acked);
    c.close().await.unwrap();

    let (a, _) = open(fast(&majority, "a")).await.unwrap();
    for i in 0..30 {
        a.append(format!("a{i}")).await.unwrap();
    }
    println!(
        "majority writer: 30 appends during the partition in {:?}",
        t0.elapsed()
    );

    for i in 0..5 {
        let r = within(
            "a write through the partitioned node fails",
            Duration::from_secs(15),
            b.append(format!("lost{i}")),
        )
        .await;
        assert!(r.is_err(), "write via the partitioned node landed: {r:?}");
    }
    let e = within("b fails", Duration::from_secs(15), b.failed()).await;
    println!(
        "writer via the partitioned node failed after {:?}: {e}",
        t0.elapsed()
    );

    // Take b over through the majority once its lease lapses.
    let (b2, rec) = open(fast(&majority, "b").acquire(Acquire::Wait(Duration::from_secs(30))))
        .await
        .unwrap();
    println!("b taken over through the majority after {:?}", t0.elapsed());
    assert_eq!(texts(&collect(rec).await), b_acked);
    b2.append("b-after-takeover").await.unwrap();
    // Close the writers before healing: the rejoining member has a higher
    // term (etcd 3.4 has no pre-vote by default) and forces an election,
    // during which no keep-alive is acknowledged; with a 3 s TTL a writer
    // would (conservatively) report its ownership lost.
    b2.close().await.unwrap();
    a.close().await.unwrap();
    drop(b);

    // Heal: the member catches up, and still nothing of "lost*" exists.
    docker(&["network", "connect", &net.0, nodes[victim].id()]);
    wait_ready(&lonely, Duration::from_secs(60)).await;
    let reader = wal_etcd::EtcdReader::connect(fast(&lonely, "b"))
        .await
        .unwrap();
    let seen: Vec<String> = within(
        "read via the healed member",
        Duration::from_secs(20),
        async {
            loop {
                let rs = reader.read_from(Lsn(1), Default::default()).await;
                if let Ok(rs) = rs {
                    let v: Vec<String> = rs
                        .iter()
                        .map(|r| String::from_utf8_lossy(&r.payload).into_owned())
                        .collect();
                    if v.last().map(String::as_str) == Some("b-after-takeover") {
                        return v;
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        },
    )
    .await;
    assert!(seen.iter().all(|p| !p.starts_with("lost")), "{seen:?}");
    assert_eq!(seen.len(), b_acked.len() + 1);
    drop(nodes);
}
