//! The raw baselines: what one file on this disk can do. `fallocate` a
//! file, then in a loop `pwrite` at the next offset and `fdatasync`: one
//! entry per write (one durable write at a time), or a group of entries per
//! write, each framed as wal-fs frames them (the group-commit limit: one
//! `fdatasync` carrying every waiting writer).

use std::{
    fs::OpenOptions,
    os::unix::fs::FileExt,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

use super::stats::{self, Row};

/// Preallocation step when the entry count is not known up front.
const STEP: u64 = 256 << 20;

/// wal-fs's frame header, and the alignment of its frames.
const FRAME_HEADER: u64 = 32;
const FRAME_ALIGN: u64 = 8;

/// Runs the one-entry-per-write loop for `count` entries or until
/// `deadline`.
pub fn run(
    dir: &Path,
    size: u64,
    count: Option<u64>,
    seconds: Option<f64>,
    writers_label: usize,
) -> Result<Row> {
    let label = if writers_label > 1 {
        "raw-fdatasync*"
    } else {
        "raw-fdatasync"
    };
    run_loop(dir, label, size, size, 1, count, seconds)
}

/// Runs the group-commit limit: `group` frames of a `size`-byte entry per
/// write + `fdatasync`, for `count` entries or until `deadline`.
pub fn run_group(
    dir: &Path,
    size: u64,
    group: u64,
    count: Option<u64>,
    seconds: Option<f64>,
) -> Result<Row> {
    let frame = (FRAME_HEADER + size).div_ceil(FRAME_ALIGN) * FRAME_ALIGN;
    run_loop(dir, "raw-group-commit", size, frame, group, count, seconds)
}

/// The loop: writes of `per_write` chunks of `chunk` bytes (each an entry
/// of `size` payload bytes), one `fdatasync` each. Every entry of a write
/// is recorded with that write's latency.
fn run_loop(
    dir: &Path,
    label: &str,
    size: u64,
    chunk: u64,
    per_write: u64,
    count: Option<u64>,
    seconds: Option<f64>,
) -> Result<Row> {
    let path = dir.join("raw.dat");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    let write_len = chunk * per_write;
    let mut allocated = count.map_or(STEP, |c| c.saturating_mul(chunk).max(write_len));
    allocate(&file, allocated)?;
    file.sync_all().context("syncing the raw file")?;
    let payload = vec![0xa5u8; usize::try_from(write_len).context("entry size")?];
    let mut h = stats::histogram()?;
    let start = Instant::now();
    let deadline = seconds.map(|s| start + Duration::from_secs_f64(s));
    let mut off = 0u64;
    let mut n = 0u64;
    loop {
        if count.is_some_and(|c| n >= c) || deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        if off + write_len > allocated {
            allocated += STEP.max(write_len);
            allocate(&file, allocated)?;
        }
        let t = Instant::now();
        file.write_all_at(&payload, off).context("raw write")?;
        file.sync_data().context("raw fdatasync")?;
        let took = t.elapsed();
        for _ in 0..per_write {
            stats::record(&mut h, took);
        }
        off += write_len;
        n += per_write;
    }
    let elapsed = start.elapsed();
    drop(file);
    let _ = std::fs::remove_file(&path);
    let writers = usize::try_from(per_write).unwrap_or(usize::MAX);
    Ok(Row::new(label, writers, size, elapsed, &h))
}

fn allocate(file: &std::fs::File, len: u64) -> Result<()> {
    match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, len) {
        Ok(()) => Ok(()),
        Err(_) => file.set_len(len).context("extending the raw file"),
    }
}
