//! Kills a real writer process (`wal-fs-crash-child`) with SIGKILL at random
//! points, over and over on the same log, in both sync modes. The child runs
//! the whole API: appends, atomic batches, checkpoints committed, aborted and
//! dropped, trims, truncates, and in `SyncMode::None` explicit syncs. After
//! every kill the test checks that the log opens, every acknowledged entry
//! comes back intact (in `SyncMode::None`: acknowledged before the last
//! `sync()`), the last acknowledged checkpoint (or a later one) is recovered
//! whole, no atomic batch is split, no entry cut by an acknowledged truncate
//! comes back, an interrupted truncate is all or none, and the next append
//! gets an Lsn above every Lsn ever acknowledged.
//!
//! `WAL_CRASH_ITERATIONS` sets the number of kills per sync mode (default
//! 150); `WAL_CRASH_SEED` the random seed (default: from the clock, printed).
#![allow(clippy::unwrap_used)]

mod support;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    io::{BufRead, BufReader},
    path::Path,
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use futures::StreamExt;
use support::payload::{decode, encode, splitmix, Payload};
use wal_core::{EntryKind, Lsn, Wal, WalOptions};
use wal_fs::{FsOptions, FsStore};

const DEADLINE: Duration = Duration::from_secs(60);

/// An acknowledgement that makes entries or a checkpoint count.
enum Ack {
    Data(Lsn, u64),
    Checkpoint(Lsn, u32),
}

/// What the child acknowledged, and so what must survive.
#[derive(Default)]
struct Expected {
    /// `SyncMode::None`: acknowledgements count only once a sync follows.
    deferred: bool,
    /// Acknowledgements waiting for the next `S` line.
    pending: Vec<Ack>,
    /// Data entries known durable: lsn -> seq.
    data: BTreeMap<Lsn, u64>,
    /// The newest checkpoint known committed: (begin lsn, entry count).
    checkpoint: Option<(Lsn, u32)>,
    /// Seqs of acknowledged entries that an acknowledged truncate cut: they
    /// must never come back.
    cut: HashSet<u64>,
    /// A truncate the child started and has not seen return.
    truncating: Option<Lsn>,
    /// The highest Lsn ever acknowledged (cut or not): never to be reused.
    high_water: Lsn,
}

impl Expected {
    fn absorb(&mut self, line: &str) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let num =
            |i: usize| -> u64 { f[i].parse().unwrap_or_else(|_| panic!("bad line {line:?}")) };
        let mut acks = Vec::new();
        match f.first().copied() {
            Some("READY") | Some("T") => {}
            Some("D") => acks.push(Ack::Data(Lsn(num(2)), num(1))),
            Some("B") => {
                let (seq, n, lsn) = (num(1), num(2), num(3));
                acks.extend((0..n).map(|i| Ack::Data(Lsn(lsn + i), seq + i)));
            }
            Some("C") => acks.push(Ack::Checkpoint(Lsn(num(1)), num(2) as u32)),
            Some("S") => {
                for ack in std::mem::take(&mut self.pending) {
                    self.accept(ack);
                }
            }
            Some("x") => self.truncating = Some(Lsn(num(1))),
            Some("x-") => self.truncating = None,
            Some("X") => {
                let at = Lsn(num(1));
                self.truncating = None;
                self.cut_after(at);
                // Unsynced acknowledgements above the cut are gone too.
                let cut = &mut self.cut;
                self.pending.retain(|a| match a {
                    Ack::Data(lsn, seq) if *lsn > at => {
                        cut.insert(*seq);
                        false
                    }
                    _ => true,
                });
            }
            _ => panic!("unexpected line from the child: {line:?}"),
        }
        for ack in acks {
            if self.deferred {
                self.pending.push(ack);
            } else {
                self.accept(ack);
            }
        }
    }

    fn accept(&mut self, ack: Ack) {
        match ack {
            Ack::Data(lsn, seq) => {
                self.data.insert(lsn, seq);
                self.high_water = self.high_water.max(lsn);
            }
            Ack::Checkpoint(begin, n) => {
                if self.checkpoint.is_none_or(|(b, _)| b < begin) {
                    self.checkpoint = Some((begin, n));
                }
                self.high_water = self.high_water.max(begin);
            }
        }
    }

    /// Entries above `at` are cut: they must never come back.
    fn cut_after(&mut self, at: Lsn) {
        let above = self.data.split_off(&at.next());
        self.cut.extend(above.into_values());
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

        // The next Lsn is above every Lsn ever acknowledged, even cut ones.
        let probe_seq = u64::MAX - iteration as u64;
        let probe = encode(Payload {
            tag: b'D',
            seq: probe_seq,
            group: 0,
            idx: 0,
            n: 1,
            fill_len: 8,
        });
        let probe_lsn = wal.append(probe).await.unwrap();
        assert!(
            probe_lsn > expected.high_water,
            "iteration {iteration}: next append got lsn {probe_lsn}, \
             but lsn {} was acknowledged before (truncate in flight at the kill: {:?})",
            expected.high_water,
            expected.truncating
        );
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
        for (lsn, seq) in &data {
            assert!(
                !expected.cut.contains(seq),
                "iteration {iteration}: lsn {lsn} (seq {seq}) was cut by an acknowledged \
                 truncate and came back"
            );
        }
        // A truncate interrupted by the kill: all of it or none of it.
        if let Some(at) = expected.truncating.take() {
            let above: Vec<_> = expected.data.range(at.next()..).collect();
            let back = above.iter().filter(|(l, _)| data.contains_key(l)).count();
            assert!(
                back == 0 || back == above.len(),
                "iteration {iteration}: interrupted truncate_after({at}) half done: \
                 {back} of {} acknowledged entries above it came back",
                above.len()
            );
            if back == 0 {
                expected.cut_after(at);
                // The truncate may have landed: unsynced acknowledgements
                // above it (SyncMode::None) are cut too, which may split a
                // batch it cut into.
                for ack in &expected.pending {
                    if let Ack::Data(lsn, seq) = ack {
                        if *lsn > at && !data.values().any(|s| s == seq) {
                            expected.cut.insert(*seq);
                        }
                    }
                }
            }
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
        // No atomic batch split, except by a truncate that cut into it.
        let recovered_seqs: HashSet<u64> = data.values().copied().collect();
        for (group, (n, got)) in &groups {
            if got == n {
                continue;
            }
            let missing: Vec<u64> = (0..u64::from(*n))
                .map(|i| group + i)
                .filter(|s| !recovered_seqs.contains(s))
                .collect();
            assert!(
                missing.iter().all(|s| expected.cut.contains(s)),
                "iteration {iteration}: batch {group} split: {got} of {n} recovered, \
                 and no truncate cut seqs {missing:?}"
            );
        }
        // Unsynced acknowledgements that were not recovered are simply gone
        // (SyncMode::None promised nothing for them); any that were are in
        // `data` now.
        expected.pending.clear();
        expected.data = data;
        expected.data.insert(probe_lsn, probe_seq);
        expected.high_water = expected.high_water.max(probe_lsn);
        expected.checkpoint = recovered_cp;
        entries.len()
    })
}

/// Both sync modes, one after the other: run in parallel, one run's child
/// could inherit (between fork and exec) the other run's directory-lock
/// descriptor and hold that lock for an instant.
#[test]
fn sigkill_at_random_points() {
    sigkill_at_random_points_in("every-batch");
    sigkill_at_random_points_in("none");
}

fn sigkill_at_random_points_in(mode: &str) {
    let iterations: usize = std::env::var("WAL_CRASH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(150);
    let seed: u64 = std::env::var("WAL_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("crash test ({mode}): {iterations} kills, WAL_CRASH_SEED={seed}");
    let mut rng = seed;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let mut expected = Expected {
        deferred: mode == "none",
        ..Expected::default()
    };
    let started = Instant::now();
    let mut acked_total = 0usize;
    for iteration in 0..iterations {
        let mut child = Command::new(env!("CARGO_BIN_EXE_wal-fs-crash-child"))
            .arg(&dir)
            .arg(splitmix(&mut rng).to_string())
            .arg(((iteration as u64 + 1) * 1_000_000_000).to_string())
            .arg(mode)
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
        "crash test ({mode}): {iterations} kills, {acked_total} acknowledgements verified in {:.1}s",
        started.elapsed().as_secs_f64()
    );
}
