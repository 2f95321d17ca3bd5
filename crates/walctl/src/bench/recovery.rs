//! `walctl bench recovery`: how fast a log comes back.
//!
//! 1. Writes `--recovery-bytes` of payload in `--size` entries through the
//!    Wal (not synced per batch: this is setup, not the thing measured;
//!    one sync at the end).
//! 2. Raw: reads every segment file sequentially (1 MiB reads).
//! 3. Wal: `Wal::open` (which scans and checks every frame) plus draining
//!    the `Recovery` stream, counting entries; peak RSS of this phase
//!    (VmHWM, reset before it) shows memory does not grow with the log.
//!
//! Both reads are warm (the files were just written) unless
//! `--drop-caches` is given, which needs root: `sync` then
//! `/proc/sys/vm/drop_caches` before each read.

use std::{collections::VecDeque, io::Read, path::Path, time::Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use futures::StreamExt;
use serde::Serialize;
use wal_core::{Wal, WalOptions};
use wal_fs::{FsOptions, FsStore, SyncMode};

use super::stats;
use crate::output::{self, parse_size};

/// `bench recovery` flags.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Payload bytes to write before recovering (e.g. 256MiB, 1GiB; KiB =
    /// 1024, KB = 1000).
    #[arg(long, value_parser = parse_size, default_value = "256MiB")]
    pub recovery_bytes: u64,
    /// Payload bytes per entry (KiB = 1024, KB = 1000).
    #[arg(long, value_parser = parse_size, default_value = "1KiB")]
    pub size: u64,
    /// Drop the page cache before each read (root only), for cold reads.
    #[arg(long)]
    pub drop_caches: bool,
}

#[derive(Debug, Serialize)]
struct Output {
    benchmark: &'static str,
    entry_bytes: u64,
    entries: u64,
    payload_bytes: u64,
    file_bytes: u64,
    segments: usize,
    cold_cache: bool,
    write_seconds: f64,
    raw_read_seconds: f64,
    raw_read_mib_per_sec: f64,
    recovery_seconds: f64,
    recovery_mib_per_sec: f64,
    recovery_entries_per_sec: f64,
    /// Recovery speed divided by raw read speed (file bytes per second).
    ratio_vs_raw_read: f64,
    /// Peak RSS during the recovery phase, bytes (VmHWM after a reset).
    recovery_peak_rss_bytes: Option<u64>,
    /// RSS just before the recovery phase, bytes.
    rss_before_recovery_bytes: Option<u64>,
}

/// Runs `bench recovery` in `dir`.
pub fn run(work: &super::WorkDir, json: bool, args: &Args) -> Result<u8> {
    if args.size == 0 || args.size > 16 << 20 {
        bail!("--size must be between 1 byte and 16 MiB");
    }
    let dir = work.path().join("wal");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let entries = args.recovery_bytes.div_ceil(args.size);
    let t = Instant::now();
    rt.block_on(write_log(&dir, entries, args.size))?;
    let write_seconds = t.elapsed().as_secs_f64();
    let files = segment_files(&dir)?;
    let file_bytes: u64 = files
        .iter()
        .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
        .sum();

    if args.drop_caches {
        drop_caches()?;
    }
    let t = Instant::now();
    let raw_bytes = raw_read(&files)?;
    let raw_secs = t.elapsed().as_secs_f64().max(1e-9);

    if args.drop_caches {
        drop_caches()?;
    }
    let rss_before = stats::current_rss();
    let reset = stats::reset_peak_rss();
    let t = Instant::now();
    let (got, got_bytes) = rt.block_on(recover(&dir))?;
    let rec_secs = t.elapsed().as_secs_f64().max(1e-9);
    let peak = if reset { stats::peak_rss() } else { None };
    if got != entries || got_bytes != entries * args.size {
        bail!("recovery returned {got} entries ({got_bytes} bytes), expected {entries}");
    }
    let mib = (1u64 << 20) as f64;
    let out = Output {
        benchmark: "recovery",
        entry_bytes: args.size,
        entries,
        payload_bytes: entries * args.size,
        file_bytes,
        segments: files.len(),
        cold_cache: args.drop_caches,
        write_seconds,
        raw_read_seconds: raw_secs,
        raw_read_mib_per_sec: raw_bytes as f64 / raw_secs / mib,
        recovery_seconds: rec_secs,
        recovery_mib_per_sec: file_bytes as f64 / rec_secs / mib,
        recovery_entries_per_sec: got as f64 / rec_secs,
        ratio_vs_raw_read: raw_secs / rec_secs,
        recovery_peak_rss_bytes: peak,
        rss_before_recovery_bytes: rss_before,
    };
    if json {
        output::json_line(&mut std::io::stdout().lock(), &out)?;
    } else {
        println!(
            "log: {} entries of {} B, {} in {} segments (written in {:.1} s), {} cache",
            out.entries,
            out.entry_bytes,
            output::size(out.file_bytes),
            out.segments,
            out.write_seconds,
            if out.cold_cache { "cold" } else { "warm" }
        );
        println!(
            "raw sequential read: {:>7.2} s {:>9.1} MiB/s",
            out.raw_read_seconds, out.raw_read_mib_per_sec
        );
        println!(
            "wal open + replay:   {:>7.2} s {:>9.1} MiB/s {:>11.0} entries/s",
            out.recovery_seconds, out.recovery_mib_per_sec, out.recovery_entries_per_sec
        );
        println!("wal / raw read: {:.2}x", out.ratio_vs_raw_read);
        match (peak, rss_before) {
            (Some(p), Some(b)) => println!(
                "peak RSS during recovery: {} (RSS before: {})",
                output::size(p),
                output::size(b)
            ),
            _ => println!("peak RSS during recovery: unknown"),
        }
    }
    Ok(0)
}

async fn write_log(dir: &Path, entries: u64, size: u64) -> Result<()> {
    let store = FsStore::new(dir, FsOptions::default().sync_mode(SyncMode::None));
    let (wal, _) = Wal::open(store, WalOptions::default())
        .await
        .context("opening the wal")?;
    let payload = Bytes::from(vec![0x77u8; usize::try_from(size).context("size")?]);
    let mut inflight = VecDeque::new();
    for _ in 0..entries {
        let (_, done) = wal.submit(payload.clone()).await.context("submit")?;
        inflight.push_back(done);
        if inflight.len() >= 4096 {
            if let Some(d) = inflight.pop_front() {
                d.await.context("append")?;
            }
        }
    }
    for d in inflight {
        d.await.context("append")?;
    }
    wal.sync().await.context("sync")?;
    wal.close().await.context("close")?;
    Ok(())
}

async fn recover(dir: &Path) -> Result<(u64, u64)> {
    let store = FsStore::new(dir, FsOptions::default());
    let (wal, mut recovery) = Wal::open(store, WalOptions::default())
        .await
        .context("opening the wal")?;
    let (mut n, mut bytes) = (0u64, 0u64);
    while let Some(e) = recovery.next().await {
        let e = e.context("recovery")?;
        n += 1;
        bytes += e.payload.len() as u64;
    }
    drop(recovery);
    wal.close().await.context("close")?;
    Ok((n, bytes))
}

fn segment_files(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    v.sort();
    Ok(v)
}

fn raw_read(files: &[std::path::PathBuf]) -> Result<u64> {
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    for p in files {
        let mut f = std::fs::File::open(p).with_context(|| format!("opening {}", p.display()))?;
        loop {
            let n = f.read(&mut buf).context("raw read")?;
            if n == 0 {
                break;
            }
            total += n as u64;
        }
    }
    Ok(total)
}

fn drop_caches() -> Result<()> {
    rustix::fs::sync();
    std::fs::write("/proc/sys/vm/drop_caches", "3")
        .context("dropping the page cache (--drop-caches needs root)")
}
