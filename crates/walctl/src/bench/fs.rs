//! `walctl bench fs`: N tasks append to one `Wal` on `FsStore` (default
//! options: preallocated 64 MiB segments, fdatasync per group-commit batch),
//! each append awaited until durable.

use std::{
    path::Path,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use serde::Serialize;
use wal_core::{Wal, WalOptions};
use wal_fs::{FsOptions, FsStore};

use super::{
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
    /// Payload bytes per entry (e.g. 128, 64KiB).
    #[arg(long, value_parser = parse_size, default_value = "128")]
    pub size: u64,
    /// Entries per system, across all writers (default 10000 unless
    /// --seconds is given).
    #[arg(long, conflicts_with = "seconds")]
    pub count: Option<u64>,
    /// Run each system for this many seconds instead of a count.
    #[arg(long)]
    pub seconds: Option<f64>,
    /// Also run the peers: a raw write+fdatasync loop and okaywal.
    #[arg(long)]
    pub compare: bool,
}

#[derive(Debug, Serialize)]
struct Ratios {
    /// Wal entries/s divided by the raw loop's.
    wal_vs_raw: Option<f64>,
    /// Wal entries/s divided by okaywal's.
    wal_vs_okaywal: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Output {
    benchmark: &'static str,
    writers: usize,
    entry_bytes: u64,
    rows: Vec<Row>,
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
    let mut rows = vec![wal_run(dir, args.writers, args.size, count, args.seconds)?];
    if !json {
        stats::print_table(&rows[..1]);
    }
    if args.compare {
        let r = raw::run(dir, args.size, count, args.seconds, args.writers)?;
        if !json {
            stats::print_table(std::slice::from_ref(&r));
        }
        rows.push(r);
        let o = okaywal_peer::run(dir, args.writers, args.size, count, args.seconds)?;
        if !json {
            stats::print_table(std::slice::from_ref(&o));
        }
        rows.push(o);
    }
    let wal = rows[0].entries_per_sec;
    let ratio = |system: &str| {
        rows.iter()
            .find(|r| r.system.starts_with(system))
            .map(|r| wal / r.entries_per_sec.max(1e-9))
    };
    let ratios = Ratios {
        wal_vs_raw: ratio("raw"),
        wal_vs_okaywal: ratio("okaywal"),
    };
    if json {
        output::json_line(
            &mut std::io::stdout().lock(),
            &Output {
                benchmark: "fs",
                writers: args.writers,
                entry_bytes: args.size,
                rows,
                ratios,
            },
        )?;
    } else if args.compare {
        if let Some(r) = ratios.wal_vs_raw {
            println!("wal-fs / raw-fdatasync: {r:.2}x (entries/s; raw is one thread, one file)");
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

fn wal_run(
    dir: &Path,
    writers: usize,
    size: u64,
    count: Option<u64>,
    seconds: Option<f64>,
) -> Result<Row> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    rt.block_on(async move {
        let store = FsStore::new(dir.join("wal"), FsOptions::default());
        let (wal, _recovery) = Wal::open(store, WalOptions::default())
            .await
            .context("opening the wal")?;
        let payload = Bytes::from(vec![0x3cu8; usize::try_from(size).context("size")?]);
        let next = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let deadline = seconds.map(|s| start + Duration::from_secs_f64(s));
        let tasks: Vec<_> = (0..writers)
            .map(|_| {
                let (wal, payload, next) = (wal.clone(), payload.clone(), next.clone());
                tokio::spawn(async move {
                    let mut h = stats::histogram()?;
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if count.is_some_and(|c| i >= c)
                            || deadline.is_some_and(|d| Instant::now() >= d)
                        {
                            break;
                        }
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
        wal.close().await.context("closing the wal")?;
        Ok(Row::new("wal-fs", writers, size, elapsed, &total))
    })
}
