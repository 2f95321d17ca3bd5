//! Power loss, tested: a workload is crashed at every file operation on a
//! modelled disk, every legal post-power-loss state of the directory is
//! rebuilt (unsynced writes lost, kept, torn per 512-byte sector; unsynced
//! directory changes lost, kept, or each at random), reopened with the real
//! file layer, and checked: open succeeds, the last acknowledged checkpoint
//! comes back whole, every acknowledged entry above it byte-exact, batches
//! all or none, acknowledged truncates stay, interrupted ones are all or
//! none, and no acknowledged Lsn is handed out again.
//!
//! `WAL_POWERLOSS_SOAK=<n>` runs `n` seeds of the full mix in every sync
//! mode (`cargo test -p wal-fs --test powerloss soak -- --nocapture`);
//! `WAL_POWERLOSS_SEEDS=5,6` reruns the other sweeps on chosen seeds. Each
//! violation is printed with the smallest crash point K that shows it, the
//! workload's steps and the file operations up to K.
//!
//! Model (e), fsyncgate (a failed `fdatasync`, then a reopen in the same
//! boot and a later power loss), has its own sweep over the crash points
//! that are an `fdatasync`; `WAL_POWERLOSS_FSYNCGATE=1` adds it to the soak.
#![allow(clippy::unwrap_used)]

#[path = "support/powerloss/mod.rs"]
mod powerloss;

use std::time::{Duration, Instant};

use powerloss::{
    sweep,
    workload::{Mix, Step},
    Gate, Report, Sweep,
};
use wal_fs::SyncMode;

/// `WAL_POWERLOSS_SEEDS=5,6` replaces a sweep's seeds (to reproduce one).
async fn run(title: &str, mut s: Sweep) -> Report {
    if let Ok(v) = std::env::var("WAL_POWERLOSS_SEEDS") {
        s.seeds = v.split(',').filter_map(|x| x.trim().parse().ok()).collect();
    }
    let started = Instant::now();
    let r = sweep(&s).await;
    r.print(title, started);
    r
}

fn assert_clean(r: &Report) {
    assert!(
        r.found.is_empty(),
        "power-loss violations (see the report above): {:?}",
        r.found.keys().collect::<Vec<_>>()
    );
}

const APPENDS_ONLY: Mix = Mix {
    truncates: false,
    checkpoints: false,
    trims: false,
};

/// Was failing before fs-fixes f35cccf (truncate across segments, at a
/// segment boundary, below the first segment and after 0 not atomic with its
/// marker: cut entries partly back, cut Lsns reused).
#[tokio::test]
async fn every_batch_full_mix() {
    let r = run(
        "EveryBatch, full mix",
        Sweep {
            mode: SyncMode::EveryBatch,
            mix: Mix::ALL,
            seeds: vec![5, 6],
            random_states: 2,
            broken_sync: false,
            fsyncgate: Gate::Skip,
        },
    )
    .await;
    assert!(r.total_states() > 2000, "{}", r.total_states());
    assert_clean(&r);
}

/// Was failing before fs-fixes 2591ac0 (SyncMode::None: checkpoint cleanup
/// and trims deleted segments before the commit marker was durable) and
/// f35cccf (truncate).
#[tokio::test]
async fn sync_none_full_mix() {
    let r = run(
        "None, full mix",
        Sweep {
            mode: SyncMode::None,
            mix: Mix::ALL,
            seeds: vec![7, 8],
            random_states: 2,
            broken_sync: false,
            fsyncgate: Gate::Skip,
        },
    )
    .await;
    assert_clean(&r);
}

/// The byte-budget mode: the Wal syncs on its own after the batch that
/// brings the unsynced payload to 1500 bytes (most workload steps cross it
/// within a few appends), so promises come from the durable watermark the
/// workload saw between its explicit syncs.
#[tokio::test]
async fn every_bytes_full_mix() {
    let r = run(
        "EveryBytes(1500), full mix",
        Sweep {
            mode: SyncMode::EveryBytes(1500),
            mix: Mix::ALL,
            seeds: vec![9],
            random_states: 2,
            broken_sync: false,
            fsyncgate: Gate::Skip,
        },
    )
    .await;
    assert_clean(&r);
}

/// The interval mode: the Wal syncs on its own once the oldest unsynced
/// append is 300 us old (a timer between batches), so background syncs land
/// at crash points the workload does not choose.
#[tokio::test]
async fn interval_full_mix() {
    let r = run(
        "Interval(300us), full mix",
        Sweep {
            mode: SyncMode::Interval(Duration::from_micros(300)),
            mix: Mix::ALL,
            seeds: vec![10],
            random_states: 2,
            broken_sync: false,
            fsyncgate: Gate::Skip,
        },
    )
    .await;
    assert_clean(&r);
}

/// Model (e) at every `fdatasync` of the full mix, both sync modes: after
/// the failed sync the machine stays up, the log is reopened on the page
/// cache's view (the failed bytes cached and clean) through a model whose
/// disk lacks them, a probe is appended and synced, and then the power
/// fails. Was failing before fsgate (open trusted the cached bytes, appended
/// the probe after them, and the power loss left a hole before it: the log
/// no longer opened).
#[tokio::test]
async fn fsyncgate_after_failed_fdatasync() {
    let started = Instant::now();
    let mut total = Report::default();
    for (mode, seeds) in [(SyncMode::EveryBatch, vec![21]), (SyncMode::None, vec![23])] {
        total.merge(
            run(
                &format!("{mode:?}, full mix, fsyncgate only"),
                Sweep {
                    mode,
                    mix: Mix::ALL,
                    seeds,
                    random_states: 1,
                    broken_sync: false,
                    fsyncgate: Gate::Only,
                },
            )
            .await,
        );
    }
    total.print("full mix, fsyncgate", started);
    let gate = |mode: &str| {
        total
            .states
            .get(&(mode.to_string(), "e:fsyncgate"))
            .map_or(0, |s| s.0)
    };
    assert!(
        gate("EveryBatch") > 50 && gate("None") > 50,
        "{:?}",
        total.states
    );
    assert_clean(&total);
}

/// The explorer finds lost entries when the disk's fdatasync makes nothing
/// durable: it can see a broken promise.
#[tokio::test]
async fn explorer_finds_lost_entries_when_sync_does_nothing() {
    let r = run(
        "self-test (sync_data does nothing)",
        Sweep {
            mode: SyncMode::EveryBatch,
            mix: APPENDS_ONLY,
            seeds: vec![9],
            random_states: 1,
            broken_sync: true,
            fsyncgate: Gate::Skip,
        },
    )
    .await;
    assert!(
        r.classes().contains("acknowledged entry lost"),
        "the explorer missed lost entries: {:?}",
        r.found.keys().collect::<Vec<_>>()
    );
}

/// Every workload uses every operation its mix allows.
#[test]
fn workloads_cover_the_mix() {
    for seed in 0..20 {
        let steps = powerloss::workload::generate(seed, Mix::ALL);
        let has = |f: &dyn Fn(&Step) -> bool| steps.iter().any(f);
        assert!(has(&|s| matches!(s, Step::Batch(_))));
        assert!(has(&|s| matches!(s, Step::Pipelined(_))));
        assert!(has(&|s| matches!(s, Step::Trim)));
        assert!(has(&|s| matches!(s, Step::Sync)));
        assert!(has(&|s| matches!(s, Step::Truncate(_))));
        assert!(has(&|s| matches!(s, Step::Checkpoint { .. })));
    }
}

/// `WAL_POWERLOSS_SOAK=<n>`: n seeds of the full mix, every sync mode
/// (`WAL_POWERLOSS_FSYNCGATE=1` adds model (e) at every `fdatasync`).
#[tokio::test]
async fn soak() {
    let Some(n) = std::env::var("WAL_POWERLOSS_SOAK")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    else {
        eprintln!("soak: set WAL_POWERLOSS_SOAK=<seeds> to run");
        return;
    };
    let started = Instant::now();
    let mut total = Report::default();
    for mode in [
        SyncMode::EveryBatch,
        SyncMode::None,
        SyncMode::EveryBytes(1500),
        SyncMode::Interval(Duration::from_micros(300)),
    ] {
        let r = sweep(&Sweep {
            mode,
            mix: Mix::ALL,
            seeds: (100..100 + n).collect(),
            random_states: 3,
            broken_sync: false,
            fsyncgate: if std::env::var_os("WAL_POWERLOSS_FSYNCGATE").is_some() {
                Gate::Also
            } else {
                Gate::Skip
            },
        })
        .await;
        total.merge(r);
    }
    total.print(&format!("soak, {n} seeds"), started);
    assert_clean(&total);
}

/// The disk model allows exactly what it claims: unsynced data lands in
/// whole 512-byte sectors, bytes outside a pending write keep their durable
/// value (powersafe overwrite), the size is old or new, and unsynced
/// directory changes are each kept or lost, a rename atomically.
#[test]
fn disk_model_allows_what_it_states() {
    use std::fs::OpenOptions;

    use powerloss::disk::{CrashModel, PowerLossIo, SECTOR};
    use wal_fs::FileIo;

    let tmp = tempfile::tempdir().unwrap();
    let io = PowerLossIo::new(tmp.path(), None, false);
    let path = tmp.path().join("f.tmp");
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .unwrap();
    io.write_all_at(&f, &[1u8; 3 * SECTOR], 0).unwrap();
    io.sync_data(&f).unwrap();
    io.rename(&path, &tmp.path().join("f")).unwrap();
    io.sync_dir(tmp.path()).unwrap();
    // Pending: bytes 100..1100 (three sectors, partly), an append past the
    // end, and a new file that no directory fsync covered.
    io.write_all_at(&f, &[2u8; 1000], 100).unwrap();
    io.write_all_at(&f, &[3u8; 100], 3 * SECTOR as u64).unwrap();
    std::fs::write(tmp.path().join("g"), b"new").unwrap();
    io.power_off();
    assert_eq!(f.metadata().unwrap().len(), 3 * SECTOR as u64 + 100);

    let lost = io.rebuild(CrashModel::LoseUnsynced, 0);
    assert_eq!(lost.keys().collect::<Vec<_>>(), ["f"]);
    assert_eq!(lost["f"], vec![1u8; 3 * SECTOR]);
    let kept = io.rebuild(CrashModel::KeepAll, 0);
    assert_eq!(kept.keys().collect::<Vec<_>>(), ["f", "g"]);
    let mut want = vec![1u8; 3 * SECTOR];
    want[100..1100].fill(2);
    want.extend_from_slice(&[3u8; 100]);
    assert_eq!(kept["f"], want);

    let (mut torn, mut sizes, mut g_kept) = (0, std::collections::HashSet::new(), 0);
    for seed in 0..200 {
        for model in [CrashModel::TornSectors(seed), CrashModel::DirRandom(seed)] {
            let s = io.rebuild(
                model,
                seed * 2 + matches!(model, CrashModel::DirRandom(_)) as u64,
            );
            g_kept += s.contains_key("g") as u32;
            let got = &s["f"];
            sizes.insert(got.len());
            assert!(got.len() == 3 * SECTOR || got.len() == 3 * SECTOR + 100);
            assert!(
                got[..100].iter().all(|b| *b == 1),
                "durable bytes outside the write changed"
            );
            assert!(got[1100..3 * SECTOR].iter().all(|b| *b == 1));
            for sector in 0..3 {
                let r = (sector * SECTOR).max(100)..((sector + 1) * SECTOR).min(1100);
                let new = got[r.clone()].iter().all(|b| *b == 2);
                let old = got[r].iter().all(|b| *b == 1);
                assert!(new || old, "sector {sector} is neither old nor new");
                torn += (new != (got[100] == 2)) as u32;
            }
            if got.len() > 3 * SECTOR {
                assert!(got[3 * SECTOR..].iter().all(|b| *b == 3 || *b == 0));
            }
        }
    }
    assert!(torn > 0, "sectors never landed independently");
    assert_eq!(sizes.len(), 2, "the size was never old and new");
    assert!(
        g_kept > 0 && g_kept < 400,
        "an unsynced create was always or never kept"
    );
}
