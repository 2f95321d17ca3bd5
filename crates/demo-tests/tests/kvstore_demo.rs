//! The kvstore example's demos, run end to end as a user runs them: the
//! example's own binary (built from `examples/kvstore` as this crate's
//! `kvstore` bin), real processes, real signals, and for the etcd demo a
//! real etcd container (started through wal-etcd's test support, or the
//! cluster named by `WAL_ETCD_ENDPOINTS`).
#![allow(clippy::unwrap_used)]

#[path = "../../wal-etcd/tests/support/mod.rs"]
mod support;

use std::{
    io::Read,
    os::unix::process::CommandExt,
    process::{Command, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant},
};

const KVSTORE: &str = env!("CARGO_BIN_EXE_kvstore");

/// Runs the kvstore binary in a process group of its own; kills the group
/// (the demo and its writers, stopped ones included) and fails the test if
/// it runs past `limit`. Returns its status, stdout and stderr.
fn kvstore(args: &[&str], limit: Duration) -> (ExitStatus, String, String) {
    let mut child = Command::new(KVSTORE)
        .args(args)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {KVSTORE}: {e}"));
    let drain = |mut pipe: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut s = String::new();
            let _ = pipe.read_to_string(&mut s);
            s
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let status = match rx.recv_timeout(limit) {
        Ok(status) => status.unwrap(),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .status();
            panic!(
                "kvstore {args:?} ran past {limit:?}\n--- stdout\n{}\n--- stderr\n{}",
                out.join().unwrap(),
                err.join().unwrap()
            );
        }
    };
    (status, out.join().unwrap(), err.join().unwrap())
}

/// The numbers of the etcd demo's closing line: (takeovers, after SIGKILL,
/// after SIGSTOP, acknowledged writes, keys).
fn closing_line(out: &str) -> (u64, u64, u64, u64, u64) {
    let line = out
        .lines()
        .find(|l| l.starts_with("OK: ") && l.contains("takeovers"))
        .unwrap_or_else(|| panic!("no closing OK line in:\n{out}"));
    let nums: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|w| !w.is_empty())
        .map(|w| w.parse().unwrap())
        .collect();
    // "OK: T takeovers (K after SIGKILL, P after SIGSTOP), A acknowledged
    // writes, ...; the store has N keys."
    (nums[0], nums[1], nums[2], nums[3], *nums.last().unwrap())
}

/// Three rounds on one etcd log: the primary is SIGKILLed (round 1); the
/// next one is paused with SIGSTOP between two writes (round 2); the next
/// one is paused wherever it is, nearly always mid-write (round 3). Each
/// time the standby, which tails the log without owning it, must take over
/// once the lease lapses, with its tailed map equal to the recovered one and
/// exactly the state of the acknowledged writes. Resumed, the primary paused
/// between writes must have its next write refused as fenced; the one paused
/// mid-write must lose the log too (fenced, or its in-flight write reported
/// unknown). After each round the log, read back by a process that owns
/// nothing, must hold only writes of the process that owned it at the time.
/// Checkpoints every 100 writes, so the standbys start on a trimmed log and
/// rebuild from a checkpoint.
#[tokio::test(flavor = "multi_thread")]
async fn etcd_demo_standby_takes_over_from_killed_and_paused_primaries() {
    let endpoints = support::shared_endpoints().await.join(",");
    let name = support::unique("kvstore-demo");
    let started = Instant::now();
    let (status, out, err) = {
        let (endpoints, name) = (endpoints.clone(), name.clone());
        tokio::task::spawn_blocking(move || {
            kvstore(
                &[
                    "demo",
                    "--etcd",
                    &endpoints,
                    "--name",
                    &name,
                    "--rounds",
                    "3",
                    "--lease-ttl",
                    "2",
                    "--checkpoint-every",
                    "100",
                    "--keys",
                    "200",
                    "--seed",
                    "20261207",
                ],
                Duration::from_secs(50),
            )
        })
        .await
        .unwrap()
    };
    let shown = format!("--- stdout\n{out}\n--- stderr\n{err}");
    assert!(status.success(), "the etcd demo failed ({status})\n{shown}");
    for round in [
        "round 1/3: the primary (pid",
        "will be killed with SIGKILL",
        "round 2/3: the primary (pid",
        "will be paused with SIGSTOP between two writes",
        "round 3/3: the primary (pid",
        "will be paused with SIGSTOP in the middle of its writes",
    ] {
        assert!(out.contains(round), "{round:?} missing\n{shown}");
    }
    for each_round in [
        "the standby's tailed map caught up and equals the recovered one",
        "OK: every acknowledged write recovered",
        "each one made by the process that owned the log at the time",
    ] {
        assert_eq!(
            out.matches(each_round).count(),
            3,
            "{each_round:?}\n{shown}"
        );
    }
    // Paused between writes: the next write is refused as fenced. Paused
    // mid-write: fenced too, or the write in flight ends as unknown.
    let fenced = out
        .matches("was refused as fenced and it exited with code 3")
        .count();
    let unknown = out
        .matches("failed with \"outcome unknown: ownership lost\" and it exited with code 3")
        .count();
    assert!(
        fenced >= 1 && fenced + unknown == 2,
        "fenced {fenced}, unknown {unknown}\n{shown}"
    );
    assert_eq!(
        out.matches("nothing from the old primary after the takeover")
            .count(),
        2,
        "{shown}"
    );
    assert!(out.contains("owner now: none (lease revoked)"), "{shown}");
    let (takeovers, kills, pauses, acked, keys) = closing_line(&out);
    assert_eq!((takeovers, kills, pauses), (3, 1, 2), "{shown}");
    assert!(acked >= 100, "{acked} writes acknowledged\n{shown}");

    // A second path to the same log: `list` reads it without claiming it.
    let (status, listed, list_err) = tokio::task::spawn_blocking(move || {
        kvstore(
            &["list", "--etcd", &endpoints, "--name", &name],
            Duration::from_secs(20),
        )
    })
    .await
    .unwrap();
    assert!(status.success(), "list failed: {list_err}");
    assert_eq!(listed.lines().count() as u64, keys, "list: {list_err}");
    assert!(list_err.contains("owner: none"), "list: {list_err}");
    eprintln!(
        "etcd demo: {acked} acknowledged writes, {keys} keys, in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// The file demo through the same binary: one SIGKILL round, its output as
/// before the etcd mode existed.
#[test]
fn fs_demo_recovers_after_sigkill() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("kv");
    let dir = dir.to_str().unwrap();
    let (status, out, err) = kvstore(
        &["demo", "--dir", dir, "--rounds", "1", "--seed", "5"],
        Duration::from_secs(50),
    );
    assert!(status.success(), "{status}\n{out}\n{err}");
    assert!(
        out.contains("  OK: every acknowledged write recovered"),
        "{out}"
    );
    assert!(out.contains("\nOK: 1 crashes, "), "{out}");
}
