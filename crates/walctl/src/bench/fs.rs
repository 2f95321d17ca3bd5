//! `walctl bench fs`: N tasks append to one `Wal` on `FsStore` (default
//! options: preallocated 64 MiB segments, fdatasync per group-commit batch),
//! each append awaited until durable.

use std::{
    io::Read,
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Instant,
};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use futures::StreamExt;
use serde::Serialize;
use wal_core::{blocking::BlockingWal, Lsn, Wal, WalOptions};
use wal_fs::{FsOptions, FsStore, SyncMode};

use super::{
    batches::{BatchStats, Batches, Counting},
    okaywal_peer, raw,
    stats::{self, Row},
};
use crate::output::{self, parse_size};

/// `bench fs` flags.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Concurrent writers (tokio tasks for the Wal, threads for okaywal).
    #[arg(long, default_value_t = 1)]
    pub writers: usize,
    /// Payload bytes per entry (e.g. 128, 64KiB; KiB = 1024, KB = 1000).
    #[arg(long, value_parser = parse_size, default_value = "128")]
    pub size: u64,
    /// Entries per system, across all writers (default 10000 unless
    /// --seconds is given).
    #[arg(long, conflicts_with = "seconds")]
    pub count: Option<u64>,
    /// Run each system for this many seconds instead of a count.
    #[arg(long)]
    pub seconds: Option<f64>,
    /// Also run the peers: a raw write+fdatasync loop, the raw group-commit
    /// limit (--writers frames per write+fdatasync) and okaywal.
    #[arg(long)]
    pub compare: bool,
    /// Also run the Wal again with one reader streaming the log from the
    /// start, over and over, while the writers append; and a raw sequential
    /// read of the same files (warm cache) for the reader's bandwidth.
    #[arg(long)]
    pub reader: bool,
    /// Also run the Wal's blocking API: the writers are plain threads
    /// calling `BlockingWal::append`.
    #[arg(long)]
    pub blocking: bool,
    /// The Wal's sync mode: `every-batch` (the default: each append awaited
    /// until durable), `interval:<duration>` (e.g. interval:10ms),
    /// `every-bytes:<size>` (e.g. every-bytes:1MiB) or `none`. In every mode
    /// but every-batch an append is awaited until written and the rows
    /// measure that; the peers always fdatasync.
    #[arg(long, value_parser = parse_sync_mode, default_value = "every-batch")]
    pub sync: SyncMode,
}

/// Parses `--sync`.
fn parse_sync_mode(s: &str) -> Result<SyncMode, String> {
    let (kind, arg) = s.split_once(':').unwrap_or((s, ""));
    match (kind, arg) {
        ("every-batch", "") => Ok(SyncMode::EveryBatch),
        ("none", "") => Ok(SyncMode::None),
        ("interval", d) => humantime::parse_duration(d)
            .map(SyncMode::Interval)
            .map_err(|e| format!("{s:?}: {d:?} is not a duration (e.g. 10ms, 500us): {e}")),
        ("every-bytes", n) => parse_size(n).map(SyncMode::EveryBytes),
        _ => Err(format!(
            "{s:?}: expected every-batch, none, interval:<duration> or every-bytes:<size>"
        )),
    }
}

/// How `--sync` is shown in reports.
fn sync_name(mode: SyncMode) -> String {
    match mode {
        SyncMode::EveryBatch => "every-batch".into(),
        SyncMode::None => "none".into(),
        SyncMode::Interval(d) => format!("interval:{}", humantime::format_duration(d)),
        SyncMode::EveryBytes(n) => format!("every-bytes:{n}"),
        other => format!("{other:?}"),
    }
}

/// What the reader beside the writers got.
#[derive(Debug, Serialize)]
struct ReaderStats {
    /// Entries read, over every pass.
    entries: u64,
    /// Complete passes over the log from its start.
    passes: u64,
    /// Payload MiB/s the reader got.
    mib_per_sec: f64,
    /// A raw sequential read of the log's files afterwards (warm cache),
    /// MiB/s of file bytes.
    raw_read_mib_per_sec: f64,
}

#[derive(Debug, Serialize)]
struct Ratios {
    /// Wal entries/s divided by the raw loop's.
    wal_vs_raw: Option<f64>,
    /// Wal entries/s divided by the raw group-commit limit's.
    wal_vs_group_commit: Option<f64>,
    /// Wal entries/s divided by okaywal's.
    wal_vs_okaywal: Option<f64>,
    /// The blocking API's entries/s divided by the raw loop's.
    blocking_vs_raw: Option<f64>,
    /// The blocking API's entries/s divided by okaywal's.
    blocking_vs_okaywal: Option<f64>,
    /// Wal entries/s with the reader streaming, divided by without.
    with_reader_vs_without: Option<f64>,
    /// The reader's MiB/s divided by the raw sequential read's.
    reader_vs_raw_read: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Output {
    benchmark: &'static str,
    /// The Wal's sync mode (`--sync`).
    sync: String,
    writers: usize,
    entry_bytes: u64,
    rows: Vec<Row>,
    /// Entries per store append of the Wal's run (without the reader): per
    /// fdatasync with `--sync every-batch`.
    batches: BatchStats,
    #[serde(skip_serializing_if = "Option::is_none")]
    reader: Option<ReaderStats>,
    ratios: Ratios,
}

/// Runs `bench fs` in `dir`.
pub fn run(work: &super::WorkDir, json: bool, args: &Args) -> Result<u8> {
    if args.writers == 0 {
        bail!("--writers must be at least 1");
    }
    if args.size == 0 || args.size > 16 << 20 {
        bail!("--size must be between 1 byte and 16 MiB");
    }
    let count = match (args.count, args.seconds) {
        (Some(c), _) => Some(c),
        (None, None) => Some(10_000),
        (None, Some(_)) => None,
    };
    let dir = work.path();
    let (row, batches, _) = wal_run(&dir.join("wal"), args, count, false)?;
    let mut rows = vec![row];
    let show = |rows: &Vec<Row>| {
        if !json {
            stats::print_table(&rows[rows.len() - 1..]);
        }
    };
    show(&rows);
    if !json {
        println!(
            "entries per {}: median {}, p10 {}, p90 {}, mean {:.1}, max {} ({} batches)",
            if args.sync == SyncMode::EveryBatch {
                "fdatasync"
            } else {
                "write (--sync does not fdatasync every batch)"
            },
            batches.p50,
            batches.p10,
            batches.p90,
            batches.mean,
            batches.max,
            batches.batches
        );
    }
    if args.blocking {
        rows.push(blocking_run(&dir.join("wal-blocking"), args, count)?);
        show(&rows);
    }
    let mut reader = None;
    if args.reader {
        let (row, _, r) = wal_run(&dir.join("wal-read"), args, count, true)?;
        rows.push(row);
        show(&rows);
        reader = r;
    }
    if args.compare {
        rows.push(raw::run(dir, args.size, count, args.seconds, args.writers)?);
        show(&rows);
        if args.writers > 1 {
            let group = u64::try_from(args.writers).context("writers")?;
            rows.push(raw::run_group(dir, args.size, group, count, args.seconds)?);
            show(&rows);
        }
        rows.push(okaywal_peer::run(
            dir,
            args.writers,
            args.size,
            count,
            args.seconds,
        )?);
        show(&rows);
    }
    let rate = |system: &str| {
        rows.iter()
            .find(|r| r.system.trim_end_matches('*') == system)
            .map(|r| r.entries_per_sec.max(1e-9))
    };
    let wal = rows[0].entries_per_sec;
    let ratio = |system: &str| rate(system).map(|r| wal / r);
    let blocking = |system: &str| Some(rate("wal-fs-blocking")? / rate(system)?);
    let ratios = Ratios {
        blocking_vs_raw: blocking("raw-fdatasync"),
        blocking_vs_okaywal: blocking("okaywal"),
        wal_vs_raw: ratio("raw-fdatasync"),
        wal_vs_group_commit: ratio("raw-group-commit"),
        wal_vs_okaywal: ratio("okaywal"),
        with_reader_vs_without: ratio("wal-fs+reader").map(|r| 1.0 / r),
        reader_vs_raw_read: reader
            .as_ref()
            .map(|r| r.mib_per_sec / r.raw_read_mib_per_sec.max(1e-9)),
    };
    if json {
        output::json_line(
            &mut std::io::stdout().lock(),
            &Output {
                benchmark: "fs",
                sync: sync_name(args.sync),
                writers: args.writers,
                entry_bytes: args.size,
                rows,
                batches,
                reader,
                ratios,
            },
        )?;
    } else {
        if let Some(r) = &reader {
            println!(
                "reader beside the writers: {:.1} MiB/s over {} passes ({} entries); raw sequential read {:.1} MiB/s",
                r.mib_per_sec, r.passes, r.entries, r.raw_read_mib_per_sec
            );
        }
        if let Some(r) = ratios.with_reader_vs_without {
            println!("wal-fs with reader / without: {r:.2}x (entries/s)");
        }
        if let Some(r) = ratios.reader_vs_raw_read {
            println!("reader / raw read:      {r:.2}x (MiB/s)");
        }
        if let Some(r) = ratios.wal_vs_raw {
            println!("wal-fs / raw-fdatasync: {r:.2}x (entries/s; raw is one thread, one file)");
        }
        if let Some(r) = ratios.blocking_vs_raw {
            println!("wal-fs blocking / raw-fdatasync: {r:.2}x (entries/s)");
        }
        if let Some(r) = ratios.blocking_vs_okaywal {
            println!("wal-fs blocking / okaywal: {r:.2}x (entries/s)");
        }
        if let Some(r) = ratios.wal_vs_group_commit {
            println!(
                "wal-fs / raw-group-commit: {r:.2}x (entries/s; {} frames per write+fdatasync)",
                args.writers
            );
        }
        if let Some(r) = ratios.wal_vs_okaywal {
            println!(
                "wal-fs / okaywal:       {r:.2}x (entries/s, {} writers each)",
                args.writers
            );
        }
    }
    Ok(0)
}

/// One run of the Wal: `args.writers` tasks appending, each append
/// awaited; with `with_reader`, one more task streaming the log from its
/// start over and over until the writers are done.
fn wal_run(
    dir: &Path,
    args: &Args,
    count: Option<u64>,
    with_reader: bool,
) -> Result<(Row, BatchStats, Option<ReaderStats>)> {
    let (writers, size, seconds) = (args.writers, args.size, args.seconds);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    rt.block_on(async move {
        let batches = Batches::new()?;
        let options = FsOptions::default().sync_mode(args.sync);
        let store = Counting::new(FsStore::new(dir, options), batches.clone());
        let (wal, _recovery) = Wal::open(store, WalOptions::default())
            .await
            .context("opening the wal")?;
        let payload = Bytes::from(vec![0x3cu8; usize::try_from(size).context("size")?]);
        let done = Arc::new(AtomicBool::new(false));
        let reader = with_reader.then(|| {
            let (wal, done) = (wal.clone(), done.clone());
            tokio::spawn(async move {
                let (mut entries, mut bytes, mut passes) = (0u64, 0u64, 0u64);
                let start = Instant::now();
                while !done.load(Ordering::Acquire) {
                    let mut pass = wal.read_from(Lsn::ZERO);
                    while let Some(e) = pass.next().await {
                        let e = e.context("reading beside the writers")?;
                        entries += 1;
                        bytes += e.payload.len() as u64;
                    }
                    passes += 1;
                }
                anyhow::Ok((entries, bytes, passes, start.elapsed()))
            })
        });
        let start = Instant::now();
        let budget = Arc::new(stats::Budget::new(count, seconds));
        let tasks: Vec<_> = (0..writers)
            .map(|_| {
                let (wal, payload, budget) = (wal.clone(), payload.clone(), budget.clone());
                tokio::spawn(async move {
                    let mut h = stats::histogram()?;
                    while budget.take().is_some() {
                        let t = Instant::now();
                        wal.append(payload.clone()).await.context("append")?;
                        stats::record(&mut h, t.elapsed());
                    }
                    anyhow::Ok(h)
                })
            })
            .collect();
        let mut total = stats::histogram()?;
        for t in tasks {
            let h = t.await.context("a writer task failed")??;
            total.add(&h).context("merging histograms")?;
        }
        let elapsed = start.elapsed();
        done.store(true, Ordering::Release);
        let read = match reader {
            None => None,
            Some(r) => Some(r.await.context("the reader task failed")??),
        };
        // Closing gives back the preallocated tail, so the raw read below
        // reads the log's bytes, not unwritten extents.
        wal.close().await.context("closing the wal")?;
        let reader = match read {
            None => None,
            Some((entries, bytes, passes, took)) => Some(ReaderStats {
                entries,
                passes,
                mib_per_sec: bytes as f64 / took.as_secs_f64().max(1e-9) / MIB,
                raw_read_mib_per_sec: raw_read(dir)?,
            }),
        };
        let system = if with_reader {
            "wal-fs+reader"
        } else {
            "wal-fs"
        };
        let row = Row::new(system, writers, size, elapsed, &total);
        Ok((row, batches.stats(), reader))
    })
}

/// One run of the blocking API: `args.writers` plain threads appending.
fn blocking_run(dir: &Path, args: &Args, count: Option<u64>) -> Result<Row> {
    let store = FsStore::new(dir, FsOptions::default().sync_mode(args.sync));
    let (wal, _recovery) =
        BlockingWal::open(store, WalOptions::default()).context("opening the wal")?;
    let payload = Bytes::from(vec![0x3cu8; usize::try_from(args.size).context("size")?]);
    let start = Instant::now();
    let budget = stats::Budget::new(count, args.seconds);
    let total = std::thread::scope(|s| {
        let threads: Vec<_> = (0..args.writers)
            .map(|_| {
                let (wal, payload, budget) = (&wal, &payload, &budget);
                s.spawn(move || {
                    let mut h = stats::histogram()?;
                    while budget.take().is_some() {
                        let t = Instant::now();
                        wal.append(payload.clone()).context("append")?;
                        stats::record(&mut h, t.elapsed());
                    }
                    anyhow::Ok(h)
                })
            })
            .collect();
        let mut total = stats::histogram()?;
        for t in threads {
            let h = t
                .join()
                .map_err(|_| anyhow::anyhow!("a writer thread panicked"))??;
            total.add(&h).context("merging histograms")?;
        }
        anyhow::Ok(total)
    })?;
    let elapsed = start.elapsed();
    wal.close().context("closing the wal")?;
    Ok(Row::new(
        "wal-fs-blocking",
        args.writers,
        args.size,
        elapsed,
        &total,
    ))
}

const MIB: f64 = (1u64 << 20) as f64;

/// Reads every file of `dir` sequentially in 1 MiB reads; MiB/s.
fn raw_read(dir: &Path) -> Result<f64> {
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    let start = Instant::now();
    for entry in std::fs::read_dir(dir).context("listing the log")? {
        let mut f = std::fs::File::open(entry?.path()).context("opening a segment")?;
        loop {
            let n = f.read(&mut buf).context("reading a segment")?;
            if n == 0 {
                break;
            }
            bytes += n as u64;
        }
    }
    Ok(bytes as f64 / start.elapsed().as_secs_f64().max(1e-9) / MIB)
}
