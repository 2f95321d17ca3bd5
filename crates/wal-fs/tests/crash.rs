//! Kills a real writer process (`wal-fs-crash-child`) with SIGKILL at random
//! points, over and over on the same log, and checks after every kill that
//! the log opens, every acknowledged entry comes back intact, the last
//! acknowledged checkpoint (or a later one) is recovered whole, and no
//! atomic batch is split.
//!
//! `WAL_CRASH_ITERATIONS` sets the number of kills (default 200);
//! `WAL_CRASH_SEED` the random seed (default: from the clock, printed).
#![allow(clippy::unwrap_used)]

mod support;

use std::{
    collections::{BTreeMap, HashMap},
    io::{BufRead, BufReader},
    path::Path,
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use futures::StreamExt;
use support::payload::{decode, splitmix};
use wal_core::{EntryKind, Lsn, Wal, WalOptions};
use wal_fs::{FsOptions, FsStore};

const DEADLINE: Duration = Duration::from_secs(60);

/// What the child acknowledged, and so what must survive.
#[derive(Default)]
struct Expected {
    /// Data entries known durable: lsn -> seq.
    data: BTreeMap<Lsn, u64>,
    /// The newest checkpoint known committed: (begin lsn, entry count).
    checkpoint: Option<(Lsn, u32)>,
}

impl Expected {
    fn absorb(&mut self, line: &str) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let num =
            |i: usize| -> u64 { f[i].parse().unwrap_or_else(|_| panic!("bad line {line:?}")) };
        match f.first().copied() {
            Some("READY") => {}
            Some("D") => {
                self.data.insert(Lsn(num(2)), num(1));
            }
            Some("B") => {
                let (seq, n, lsn) = (num(1), num(2), num(3));
                for i in 0..n {
                    self.data.insert(Lsn(lsn + i), seq + i);
                }
            }
            Some("C") => {
                let begin = Lsn(num(1));
                if self.checkpoint.is_none_or(|(b, _)| b < begin) {
                    self.checkpoint = Some((begin, num(2) as u32));
                }
            }
            _ => panic!("unexpected line from the child: {line:?}"),
        }
    }
}

/// Opens the log, checks the recovery stream against what was acknowledged,
/// and makes the recovered state the new expectation.
fn verify(dir: &Path, expected: &mut Expected, iteration: usize) -> usize {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = FsStore::new(dir, FsOptions::default().segment_bytes(256 << 10));
        let (wal, recovery) = Wal::open(store, WalOptions::default())
            .await
            .unwrap_or_else(|e| panic!("iteration {iteration}: the log does not open: {e}"));
        let entries: Vec<_> = recovery
            .map(|e| e.unwrap_or_else(|e| panic!("iteration {iteration}: recovery: {e}")))
            .collect()
            .await;
        wal.close().await.unwrap();

        let mut cp_entries = Vec::new();
        let mut data = BTreeMap::new();
        let mut groups: HashMap<u64, (u32, u32)> = HashMap::new();
        for e in &entries {
            let p = decode(&e.payload)
                .unwrap_or_else(|why| panic!("iteration {iteration}: lsn {}: {why}", e.lsn));
            match e.kind {
                EntryKind::Checkpoint => {
                    assert_eq!(p.tag, b'K', "lsn {} is not a checkpoint payload", e.lsn);
                    cp_entries.push((e.lsn, p));
                }
                EntryKind::Data => {
                    assert_eq!(p.tag, b'D', "lsn {} is not a data payload", e.lsn);
                    if data.insert(e.lsn, p.seq).is_some() {
                        panic!("iteration {iteration}: lsn {} recovered twice", e.lsn);
                    }
                    if p.group != 0 {
                        let g = groups.entry(p.group).or_insert((p.n, 0));
                        g.1 += 1;
                    }
                }
            }
        }
        // The checkpoint: one, whole, not older than the last acknowledged.
        let recovered_cp = cp_entries.first().map(|(_, p)| (Lsn(p.group), p.n));
        if let Some((begin, n)) = recovered_cp {
            let idx: Vec<u32> = cp_entries.iter().map(|(_, p)| p.idx).collect();
            assert!(
                cp_entries.iter().all(|(_, p)| p.group == begin.get()),
                "iteration {iteration}: entries of several checkpoints recovered"
            );
            assert_eq!(
                idx,
                (0..n).collect::<Vec<_>>(),
                "iteration {iteration}: checkpoint {begin} incomplete"
            );
        }
        match (expected.checkpoint, recovered_cp) {
            (Some((b, _)), Some((rb, _))) => assert!(
                rb >= b,
                "iteration {iteration}: recovered checkpoint {rb} is older than acknowledged {b}"
            ),
            (Some((b, _)), None) => {
                panic!("iteration {iteration}: acknowledged checkpoint {b} not recovered")
            }
            _ => {}
        }
        let floor = recovered_cp.map_or(Lsn::ZERO, |(b, _)| b);
        // Every acknowledged data entry above the checkpoint, intact.
        for (lsn, seq) in expected.data.range(floor.next()..) {
            match data.get(lsn) {
                Some(s) if s == seq => {}
                Some(s) => {
                    panic!("iteration {iteration}: lsn {lsn} holds seq {s}, acknowledged {seq}")
                }
                None => panic!("iteration {iteration}: acknowledged lsn {lsn} (seq {seq}) lost"),
            }
        }
        assert!(
            data.keys().all(|l| *l > floor),
            "iteration {iteration}: data below the checkpoint recovered"
        );
        // No atomic batch split.
        for (group, (n, got)) in &groups {
            assert_eq!(
                n, got,
                "iteration {iteration}: batch {group} split: {got} of {n} recovered"
            );
        }
        expected.data = data;
        expected.checkpoint = recovered_cp;
        entries.len()
    })
}

#[test]
fn sigkill_at_random_points() {
    let iterations: usize = std::env::var("WAL_CRASH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let seed: u64 = std::env::var("WAL_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("crash test: {iterations} kills, WAL_CRASH_SEED={seed}");
    let mut rng = seed;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let mut expected = Expected::default();
    let started = Instant::now();
    let mut acked_total = 0usize;
    for iteration in 0..iterations {
        let mut child = Command::new(env!("CARGO_BIN_EXE_wal-fs-crash-child"))
            .arg(&dir)
            .arg(splitmix(&mut rng).to_string())
            .arg(((iteration as u64 + 1) * 1_000_000_000).to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut line = String::new();
            loop {
                line.clear();
                match r.read_line(&mut line) {
                    // Only whole lines count: a line cut by the kill was
                    // never fully printed, so its ack may not have happened.
                    Ok(n) if n > 0 && line.ends_with('\n') => {
                        if tx.send(line.trim_end().to_string()).is_err() {
                            break;
                        }
                    }
                    _ => break,
                }
            }
        });
        // Kill after a random number of acknowledgements (0 = right after
        // open), plus a random sub-millisecond to few-millisecond delay.
        let acks_before_kill = splitmix(&mut rng) % 40;
        let deadline = Instant::now() + DEADLINE;
        let mut seen = 0u64;
        let mut ready = false;
        while !ready || seen < acks_before_kill {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx.recv_timeout(left).unwrap_or_else(|e| {
                let _ = child.kill();
                panic!("iteration {iteration}: no progress from the child ({e}); {seen} acks")
            });
            if line == "READY" {
                ready = true;
            } else {
                seen += 1;
            }
            expected.absorb(&line);
        }
        let delay_us = splitmix(&mut rng) % 3000;
        if delay_us > 0 {
            // A random kill point, not a wait for anything to settle.
            std::thread::sleep(Duration::from_micros(delay_us));
        }
        child.kill().unwrap(); // SIGKILL on unix
        let status = child.wait().unwrap();
        assert!(!status.success(), "the child exited on its own: {status}");
        reader.join().unwrap();
        // Lines printed before the kill are acknowledgements too.
        for line in rx.try_iter() {
            seen += 1;
            expected.absorb(&line);
        }
        acked_total += seen as usize;
        verify(&dir, &mut expected, iteration);
    }
    eprintln!(
        "crash test: {iterations} kills, {acked_total} acknowledgements verified in {:.1}s",
        started.elapsed().as_secs_f64()
    );
}
