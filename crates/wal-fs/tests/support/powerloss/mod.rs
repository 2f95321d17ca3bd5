//! The crash-state explorer: runs a seeded workload on a modelled disk
//! ([`disk::PowerLossIo`]), crashes it at every file operation K, rebuilds
//! each legal post-power-loss state of the directory ([`disk::CrashModel`])
//! on a real temporary directory, reopens it with the real file layer and
//! checks every promise ([`check::check`]).
//!
//! Model (e), fsyncgate, for a crash at an `fdatasync`: the machine stays
//! up, the store is reopened on the page cache's view through a model
//! whose disk lacks the failed bytes ([`fsyncgate_states`]), appends and
//! syncs a probe entry, and then the power fails: the disk's state after
//! that is reopened with the real file layer and checked like any other,
//! with the probe acknowledged.
#![allow(dead_code, clippy::unwrap_used)]

pub mod check;
pub mod disk;
pub mod workload;

use std::{
    collections::{hash_map::DefaultHasher, BTreeMap, BTreeSet, HashMap, HashSet},
    hash::{Hash, Hasher},
    path::{Path, PathBuf},
    sync::Arc,
    time::Instant,
};

use futures::StreamExt;
use wal_core::{Wal, WalOptions};
use wal_fs::{FsOptions, FsStore, SyncMode};

use check::Violation;
use disk::{CrashModel, PowerLossIo};
use workload::{Mix, Oracle, Step};

/// One sweep: workloads of `seeds`, crashed at every operation.
#[derive(Clone, Debug)]
pub struct Sweep {
    pub mode: SyncMode,
    pub mix: Mix,
    pub seeds: Vec<u64>,
    /// Seeds of models (c) and (d) per crash point.
    pub random_states: u64,
    /// Self-test: a disk whose `sync_data` makes nothing durable.
    pub broken_sync: bool,
    /// Whether to check model (e), fsyncgate, at crashes on `sync_data`
    /// (each with the disk holding none of the failed bytes, and torn as in
    /// (c) with each of `random_states` seeds).
    pub fsyncgate: Gate,
}

/// Which crash states a sweep checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate {
    /// Models (a) to (d) at every crash point.
    Skip,
    /// Also (e) at every crash point that is an `fdatasync`.
    Also,
    /// Only (e), so only the crash points that are an `fdatasync`.
    Only,
}

/// The first (smallest K) example of one kind of violation.
#[derive(Clone, Debug)]
pub struct Found {
    pub seed: u64,
    pub k: u64,
    pub model: CrashModel,
    pub detail: String,
    pub ops: Vec<String>,
    pub steps: Vec<String>,
    pub failure: Option<String>,
    pub count: u64,
}

/// What a sweep explored and found.
#[derive(Debug, Default)]
pub struct Report {
    /// (mode, model) -> (crash states, distinct states checked).
    pub states: BTreeMap<(String, &'static str), (u64, u64)>,
    pub runs: u64,
    /// (mode, model, class, the interrupted operation) -> first example.
    pub found: BTreeMap<(String, &'static str, &'static str, String), Found>,
}

impl Report {
    pub fn merge(&mut self, other: Report) {
        self.runs += other.runs;
        for (k, (a, b)) in other.states {
            let e = self.states.entry(k).or_default();
            e.0 += a;
            e.1 += b;
        }
        for (k, f) in other.found {
            match self.found.get_mut(&k) {
                Some(mine) => {
                    let count = mine.count + f.count;
                    if f.k < mine.k {
                        *mine = f;
                    }
                    mine.count = count;
                }
                None => {
                    self.found.insert(k, f);
                }
            }
        }
    }

    pub fn total_states(&self) -> u64 {
        self.states.values().map(|s| s.0).sum()
    }

    pub fn classes(&self) -> HashSet<&'static str> {
        self.found.keys().map(|k| k.2).collect()
    }

    /// Counts, then every violation with its op log.
    pub fn print(&self, title: &str, started: Instant) {
        eprintln!(
            "== power-loss sweep {title}: {} workload runs, {} crash states, {:.1?}",
            self.runs,
            self.total_states(),
            started.elapsed()
        );
        for ((mode, model), (n, distinct)) in &self.states {
            eprintln!("   {mode:<10} {model:<16} {n:>6} states ({distinct} distinct checked)");
        }
        for ((mode, model, class, during), f) in &self.found {
            eprintln!(
                "!! VIOLATION [{class}] during {during}, mode {mode}, model {model}: minimal K = {} (seed {}, {:?}), {} states\n   {}",
                f.k, f.seed, f.model, f.count, f.detail
            );
            if let Some(e) = &f.failure {
                eprintln!("   the crashed operation: {e}");
            }
            eprintln!("   workload steps:");
            for s in &f.steps {
                eprintln!("   {s}");
            }
            eprintln!("   file operations up to the crash:");
            let skip = f.ops.len().saturating_sub(60);
            if skip > 0 {
                eprintln!("     ... {skip} earlier operations");
            }
            for s in &f.ops[skip..] {
                eprintln!("     {s}");
            }
        }
    }
}

fn base_dir() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("wal-powerloss-")
        .tempdir_in(base_dir())
        .unwrap()
}

fn options(mode: SyncMode, seed: u64) -> FsOptions {
    FsOptions::default()
        .segment_bytes(workload::SEGMENT_BYTES)
        .sync_mode(mode)
        .preallocate(seed.is_multiple_of(2))
}

fn mode_name(m: SyncMode) -> String {
    format!("{m:?}")
}

/// Runs the workload once, crashing at operation `k`.
async fn run_once(
    dir: &Path,
    sweep: &Sweep,
    seed: u64,
    steps: &[Step],
    k: Option<u64>,
) -> (Arc<PowerLossIo>, Oracle) {
    let io = Arc::new(PowerLossIo::new(dir, k, sweep.broken_sync));
    let store = FsStore::new(dir, options(sweep.mode, seed)).with_file_io(io.clone());
    let mut oracle = Oracle::new(sweep.mode);
    match Wal::open(store, WalOptions::default()).await {
        Ok((wal, rec)) => {
            drop(rec);
            workload::run(&wal, steps, &mut oracle).await;
            io.power_off();
            wal.simulate_crash().await;
        }
        Err(e) => {
            oracle.failure = Some(format!("open: {e}"));
            io.power_off();
        }
    }
    (io, oracle)
}

/// The entry a reopen appends and syncs after recovery: a data payload of
/// the next op number, so that a later check knows it.
pub struct Probe {
    pub lsn: u64,
    pub payload: bytes::Bytes,
}

/// Reopens `dir` with the real file layer (or through `io`), checks it,
/// then appends and syncs a probe entry and closes.
async fn reopen_and_check(
    dir: &Path,
    mode: SyncMode,
    seed: u64,
    o: &Oracle,
    io: Option<Arc<PowerLossIo>>,
) -> (Vec<Violation>, BTreeSet<usize>, Option<Probe>) {
    let mut store = FsStore::new(dir, options(mode, seed));
    if let Some(io) = io {
        store = store.with_file_io(io);
    }
    let (wal, mut rec) = match Wal::open(store, WalOptions::default()).await {
        Ok(x) => x,
        Err(e) => {
            let mut v = vec![Violation {
                class: "open failed",
                detail: format!("reopen failed: {e}"),
            }];
            let acked = o.data.iter().filter(|d| o.promised(d)).count();
            if acked > 0 {
                v.push(Violation {
                    class: "acknowledged entry lost",
                    detail: format!(
                        "{acked} acknowledged entries unreadable: the log does not open"
                    ),
                });
            }
            return (v, BTreeSet::new(), None);
        }
    };
    let cp = rec.checkpoint();
    let mut entries = Vec::new();
    while let Some(e) = rec.next().await {
        match e {
            Ok(e) => entries.push((e.lsn.0, e.kind, e.payload)),
            Err(e) => {
                drop(rec);
                let _ = wal.close().await;
                return (
                    vec![Violation {
                        class: "recovery read failed",
                        detail: format!("recovery stream: {e}"),
                    }],
                    BTreeSet::new(),
                    None,
                );
            }
        }
    }
    drop(rec);
    let op = o.data.len() as u32;
    let payload = workload::data_payload(op, op, 0, 1, 40);
    let appended = match wal.append(payload.clone()).await {
        Ok(l) => wal.sync().await.map(|()| l.0),
        Err(e) => Err(e),
    };
    let next = match appended {
        Ok(l) => l,
        Err(e) => {
            let _ = wal.close().await;
            return (
                vec![Violation {
                    class: "append after reopen failed",
                    detail: format!("{e}"),
                }],
                BTreeSet::new(),
                None,
            );
        }
    };
    let closed = wal.close().await;
    let (mut v, present) = check::check(o, cp, &entries, next);
    if let Err(e) = closed {
        v.push(Violation {
            class: "close after reopen failed",
            detail: format!("{e}"),
        });
    }
    (v, present, Some(Probe { lsn: next, payload }))
}

/// Model (e) after a run that crashed at a failed `fdatasync`: the store is
/// reopened in the same boot on the page cache's view, through a model
/// whose disk holds only what reached it (`truth`, see
/// [`CrashModel::FsyncGate`]); it recovers, appends and syncs a probe and
/// closes, and is checked. Then the power fails: the disk's state (every
/// unsynced write and directory change lost) is reopened with the real
/// file layer and checked with the probe acknowledged. A store that trusts
/// the cached bytes appends the probe after bytes the disk does not hold,
/// and the second check finds the hole.
async fn fsyncgate_states(
    io: &PowerLossIo,
    mode: SyncMode,
    seed: u64,
    o: &Oracle,
    truth: Option<u64>,
) -> (Vec<Violation>, Vec<String>) {
    let same_boot = tempdir();
    let io2 = Arc::new(io.fork_after_failed_sync(same_boot.path(), truth));
    let (mut out, _, probe) =
        reopen_and_check(same_boot.path(), mode, seed, o, Some(io2.clone())).await;
    for viol in &mut out {
        viol.detail = format!("reopen in the same boot: {}", viol.detail);
    }
    for b in io2.bypasses() {
        out.push(Violation {
            class: "write bypassed FileIo",
            detail: b,
        });
    }
    io2.power_off();
    if let Some(probe) = probe {
        let mut o2 = o.clone();
        o2.record_synced_later(probe.payload, probe.lsn);
        let later = tempdir();
        write_dir(later.path(), &io2.rebuild(CrashModel::LoseUnsynced, 0));
        let (v, _, _) = reopen_and_check(later.path(), mode, seed, &o2, None).await;
        out.extend(v.into_iter().map(|viol| Violation {
            class: viol.class,
            detail: format!("after the reopen, a power loss: {}", viol.detail),
        }));
    }
    (out, io2.log())
}

fn write_dir(dir: &Path, files: &BTreeMap<String, Vec<u8>>) {
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

fn hash_of(files: &BTreeMap<String, Vec<u8>>) -> u64 {
    let mut h = DefaultHasher::new();
    files.hash(&mut h);
    h.finish()
}

/// Crashes every seed's workload at every operation and checks every
/// rebuilt state.
pub async fn sweep(s: &Sweep) -> Report {
    let mut report = Report::default();
    let mode = mode_name(s.mode);
    for &seed in &s.seeds {
        let steps = workload::generate(seed, s.mix);
        let (total, syncs) = {
            let dir = tempdir();
            let (io, _) = run_once(dir.path(), s, seed, &steps, None).await;
            (io.ops(), io.sync_data_ops())
        };
        let points: Vec<u64> = match s.fsyncgate {
            Gate::Only => syncs,
            Gate::Skip | Gate::Also => (0..=total).collect(),
        };
        for k in points {
            let dir = tempdir();
            let (io, oracle) = run_once(dir.path(), s, seed, &steps, Some(k)).await;
            report.runs += 1;
            let mut models = Vec::new();
            if s.fsyncgate != Gate::Only {
                models.extend([CrashModel::LoseUnsynced, CrashModel::KeepAll]);
                for r in 0..s.random_states {
                    models.push(CrashModel::TornSectors(r));
                    models.push(CrashModel::DirRandom(r));
                }
            }
            let mut seen: HashMap<u64, BTreeSet<usize>> = HashMap::new();
            if s.fsyncgate != Gate::Skip && io.crashed_at_sync_data() {
                models.push(CrashModel::FsyncGate(None));
                for r in 0..s.random_states {
                    models.push(CrashModel::FsyncGate(Some(r)));
                }
            }
            for model in models {
                let state_seed = seed
                    .wrapping_mul(1_000_003)
                    .wrapping_add(k.wrapping_mul(7919))
                    .wrapping_add(match model {
                        CrashModel::TornSectors(r) | CrashModel::FsyncGate(Some(r)) => 2 * r,
                        CrashModel::DirRandom(r) => 2 * r + 1,
                        _ => 0,
                    });
                let entry = report
                    .states
                    .entry((mode.clone(), model.name()))
                    .or_default();
                entry.0 += 1;
                let mut violations;
                let mut ops = None;
                if let CrashModel::FsyncGate(truth) = model {
                    entry.1 += 1;
                    let truth = truth.map(|_| state_seed);
                    let (v, log) = fsyncgate_states(&io, s.mode, seed, &oracle, truth).await;
                    violations = v;
                    ops = Some(log);
                } else {
                    let files = io.rebuild(model, state_seed);
                    let h = hash_of(&files);
                    if seen.contains_key(&h) {
                        continue;
                    }
                    entry.1 += 1;
                    let out = tempdir();
                    write_dir(out.path(), &files);
                    let (v, present, _) =
                        reopen_and_check(out.path(), s.mode, seed, &oracle, None).await;
                    violations = v;
                    seen.insert(h, present);
                    for b in io.bypasses() {
                        violations.push(Violation {
                            class: "write bypassed FileIo",
                            detail: b,
                        });
                    }
                }
                let mut classes = HashSet::new();
                for viol in violations {
                    if !classes.insert(viol.class) {
                        continue;
                    }
                    let key = (mode.clone(), model.name(), viol.class, scenario(&oracle));
                    let f = report.found.entry(key).or_insert_with(|| Found {
                        seed,
                        k,
                        model,
                        detail: viol.detail.clone(),
                        ops: ops.clone().unwrap_or_else(|| io.log()),
                        steps: oracle.log.clone(),
                        failure: oracle.failure.clone(),
                        count: 0,
                    });
                    f.count += 1;
                }
            }
        }
    }
    report
}

/// The operation a crash interrupted, without its numbers: violations are
/// grouped by it.
fn scenario(o: &Oracle) -> String {
    match &o.failure {
        None => "no crash (after the workload)".into(),
        Some(f) => {
            let op = f.split(": ").next().unwrap_or(f);
            let mut out = String::new();
            for w in op.split_whitespace() {
                if w.chars().any(|c| c.is_ascii_digit()) && !w.starts_with('[') {
                    let stem: String = w.chars().take_while(|c| !c.is_ascii_digit()).collect();
                    if !stem.is_empty() && stem != "op" {
                        out.push_str(&stem);
                        out.push_str("..) ");
                    }
                    continue;
                }
                if w == "lsn" {
                    continue;
                }
                let w: String = w.chars().filter(|c| !c.is_ascii_digit()).collect();
                out.push_str(&w);
                out.push(' ');
            }
            out.trim_end().to_string()
        }
    }
}
