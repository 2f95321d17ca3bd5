//! The crash-state explorer: runs a seeded workload on a modelled disk
//! ([`disk::PowerLossIo`]), crashes it at every file operation K, rebuilds
//! each legal post-power-loss state of the directory ([`disk::CrashModel`])
//! on a real temporary directory, reopens it with the real file layer and
//! checks every promise ([`check::check`]).
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
    /// Also check model (e), fsyncgate, at crashes on `sync_data`.
    pub fsyncgate: bool,
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

/// Reopens `dir` with the real file layer and checks it.
async fn reopen_and_check(
    dir: &Path,
    mode: SyncMode,
    seed: u64,
    o: &Oracle,
) -> (Vec<Violation>, BTreeSet<usize>) {
    let store = FsStore::new(dir, options(mode, seed));
    let (wal, mut rec) = match Wal::open(store, WalOptions::default()).await {
        Ok(x) => x,
        Err(e) => {
            let mut v = vec![Violation {
                class: "open failed",
                detail: format!("reopen failed: {e}"),
            }];
            let acked = o.data.iter().filter(|d| o.counts(d.acked)).count();
            if acked > 0 {
                v.push(Violation {
                    class: "acknowledged entry lost",
                    detail: format!(
                        "{acked} acknowledged entries unreadable: the log does not open"
                    ),
                });
            }
            return (v, BTreeSet::new());
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
                );
            }
        }
    }
    drop(rec);
    let next = match wal.append(&b"probe"[..]).await {
        Ok(l) => l.0,
        Err(e) => {
            let _ = wal.close().await;
            return (
                vec![Violation {
                    class: "append after reopen failed",
                    detail: format!("{e}"),
                }],
                BTreeSet::new(),
            );
        }
    };
    let _ = wal.close().await;
    check::check(o, cp, &entries, next)
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
        let total = {
            let dir = tempdir();
            let (io, _) = run_once(dir.path(), s, seed, &steps, None).await;
            io.ops()
        };
        for k in 0..=total {
            let dir = tempdir();
            let (io, oracle) = run_once(dir.path(), s, seed, &steps, Some(k)).await;
            report.runs += 1;
            let mut models = vec![CrashModel::LoseUnsynced, CrashModel::KeepAll];
            for r in 0..s.random_states {
                models.push(CrashModel::TornSectors(r));
                models.push(CrashModel::DirRandom(r));
            }
            let mut seen: HashMap<u64, BTreeSet<usize>> = HashMap::new();
            let mut present_of: HashMap<CrashModel, BTreeSet<usize>> = HashMap::new();
            if s.fsyncgate && io.crashed_at_sync_data() {
                models.push(CrashModel::FsyncGate);
            }
            for model in models {
                let state_seed = seed
                    .wrapping_mul(1_000_003)
                    .wrapping_add(k.wrapping_mul(7919))
                    .wrapping_add(match model {
                        CrashModel::TornSectors(r) => 2 * r,
                        CrashModel::DirRandom(r) => 2 * r + 1,
                        _ => 0,
                    });
                let entry = report
                    .states
                    .entry((mode.clone(), model.name()))
                    .or_default();
                entry.0 += 1;
                let mut violations = Vec::new();
                if model == CrashModel::FsyncGate {
                    // The page cache's view is (b)'s state, checked above;
                    // what it shows beyond the durable state (a) must not
                    // be handed out.
                    let (Some(kept), Some(durable)) = (
                        present_of.get(&CrashModel::KeepAll),
                        present_of.get(&CrashModel::LoseUnsynced),
                    ) else {
                        continue;
                    };
                    entry.1 += 1;
                    let trusted: Vec<_> = kept
                        .difference(durable)
                        .filter(|op| !oracle.counts(oracle.data[**op].acked))
                        .collect();
                    if !trusted.is_empty() {
                        violations.push(Violation {
                            class: "fsyncgate: unsynced bytes trusted",
                            detail: format!(
                                "after the failed fdatasync, a reopen without power loss recovers ops {trusted:?}, which were never durable"
                            ),
                        });
                    }
                } else {
                    let files = io.rebuild(model, state_seed);
                    let h = hash_of(&files);
                    if let Some(p) = seen.get(&h) {
                        present_of.insert(model, p.clone());
                        continue;
                    }
                    entry.1 += 1;
                    let out = tempdir();
                    write_dir(out.path(), &files);
                    let (v, present) = reopen_and_check(out.path(), s.mode, seed, &oracle).await;
                    violations = v;
                    seen.insert(h, present.clone());
                    present_of.insert(model, present);
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
                        ops: io.log(),
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
