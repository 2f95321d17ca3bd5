//! Latency histograms, result rows, and the work a run's writers share.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use serde::Serialize;

/// The work a run's writers share: a number of entries, or until a
/// deadline (counted from when the budget is made).
#[derive(Debug)]
pub struct Budget {
    next: AtomicU64,
    count: Option<u64>,
    deadline: Option<Instant>,
}

impl Budget {
    /// `count` entries, or (without one) `seconds` from now.
    pub fn new(count: Option<u64>, seconds: Option<f64>) -> Budget {
        Budget {
            next: AtomicU64::new(0),
            count,
            deadline: seconds.map(|s| Instant::now() + Duration::from_secs_f64(s)),
        }
    }

    /// Claims the next entry: its index, or `None` once the budget is spent.
    pub fn take(&self) -> Option<u64> {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        let spent = self.count.is_some_and(|c| i >= c)
            || self.deadline.is_some_and(|d| Instant::now() >= d);
        (!spent).then_some(i)
    }
}

/// A latency histogram in microseconds, 1 us to 100 s, 3 significant digits.
pub fn histogram() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 100_000_000, 3).context("creating a latency histogram")
}

/// Records one latency.
pub fn record(h: &mut Histogram<u64>, d: Duration) {
    let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1);
    h.saturating_record(us);
}

/// One system's result in a throughput benchmark.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// What ran: `wal-fs`, `raw-fdatasync`, `okaywal`.
    pub system: String,
    /// Concurrent writers (threads or tasks).
    pub writers: usize,
    /// Payload bytes per entry.
    pub entry_bytes: u64,
    /// Entries made durable.
    pub entries: u64,
    /// Wall time, seconds.
    pub seconds: f64,
    /// Durable entries per second.
    pub entries_per_sec: f64,
    /// Payload MiB per second.
    pub mib_per_sec: f64,
    /// Median latency of one durable append, microseconds.
    pub p50_us: u64,
    /// 99th percentile latency, microseconds.
    pub p99_us: u64,
    /// Largest latency, microseconds.
    pub max_us: u64,
}

impl Row {
    /// A row from a run's totals.
    pub fn new(
        system: &str,
        writers: usize,
        entry_bytes: u64,
        elapsed: Duration,
        h: &Histogram<u64>,
    ) -> Row {
        let secs = elapsed.as_secs_f64().max(1e-9);
        let entries = h.len();
        Row {
            system: system.into(),
            writers,
            entry_bytes,
            entries,
            seconds: secs,
            entries_per_sec: entries as f64 / secs,
            mib_per_sec: (entries * entry_bytes) as f64 / secs / (1 << 20) as f64,
            p50_us: h.value_at_quantile(0.5),
            p99_us: h.value_at_quantile(0.99),
            max_us: h.max(),
        }
    }
}

/// Prints rows as a table.
pub fn print_table(rows: &[Row]) {
    println!(
        "{:<15} {:>7} {:>8} {:>9} {:>8} {:>12} {:>9} {:>8} {:>8} {:>9}",
        "system",
        "writers",
        "size",
        "entries",
        "secs",
        "entries/s",
        "MiB/s",
        "p50 us",
        "p99 us",
        "max us"
    );
    for r in rows {
        println!(
            "{:<15} {:>7} {:>8} {:>9} {:>8.2} {:>12.0} {:>9.2} {:>8} {:>8} {:>9}",
            r.system,
            r.writers,
            r.entry_bytes,
            r.entries,
            r.seconds,
            r.entries_per_sec,
            r.mib_per_sec,
            r.p50_us,
            r.p99_us,
            r.max_us
        );
    }
}

/// Peak resident set size of this process (VmHWM), in bytes, if known.
pub fn peak_rss() -> Option<u64> {
    proc_status_kib("VmHWM:").map(|k| k * 1024)
}

/// Current resident set size (VmRSS), in bytes, if known.
pub fn current_rss() -> Option<u64> {
    proc_status_kib("VmRSS:").map(|k| k * 1024)
}

fn proc_status_kib(field: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with(field))?;
    line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// Resets VmHWM to the current RSS (Linux >= 4.0), so a later
/// [`peak_rss`] measures one phase. Returns false if it could not.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}
