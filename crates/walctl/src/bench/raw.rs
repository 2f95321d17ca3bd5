//! The raw baseline: what one file on this disk can do, one durable write
//! at a time: `fallocate` a file, then per entry `pwrite` at the next
//! offset and `fdatasync`.

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

/// Runs the loop for `count` entries or until `deadline`.
pub fn run(
    dir: &Path,
    size: u64,
    count: Option<u64>,
    seconds: Option<f64>,
    writers_label: usize,
) -> Result<Row> {
    let path = dir.join("raw.dat");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    let mut allocated = count.map_or(STEP, |c| c.saturating_mul(size).max(size));
    allocate(&file, allocated)?;
    file.sync_all().context("syncing the raw file")?;
    let payload = vec![0xa5u8; usize::try_from(size).context("entry size")?];
    let mut h = stats::histogram()?;
    let start = Instant::now();
    let deadline = seconds.map(|s| start + Duration::from_secs_f64(s));
    let mut off = 0u64;
    let mut n = 0u64;
    loop {
        if count.is_some_and(|c| n >= c) || deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        if off + size > allocated {
            allocated += STEP;
            allocate(&file, allocated)?;
        }
        let t = Instant::now();
        file.write_all_at(&payload, off).context("raw write")?;
        file.sync_data().context("raw fdatasync")?;
        stats::record(&mut h, t.elapsed());
        off += size;
        n += 1;
    }
    let elapsed = start.elapsed();
    drop(file);
    let _ = std::fs::remove_file(&path);
    let label = if writers_label > 1 {
        "raw-fdatasync*"
    } else {
        "raw-fdatasync"
    };
    Ok(Row::new(label, 1, size, elapsed, &h))
}

fn allocate(file: &std::fs::File, len: u64) -> Result<()> {
    match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, len) {
        Ok(()) => Ok(()),
        Err(_) => file.set_len(len).context("extending the raw file"),
    }
}
