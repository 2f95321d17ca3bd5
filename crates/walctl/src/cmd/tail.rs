//! `walctl tail`: the last entries, and with `-f` every new one.
//!
//! Following polls the directory with [`LogReader`] every `--interval-ms`
//! (default 100 ms): it reads without taking the writer's lock and changes
//! nothing, so it runs next to a live writer (and works on any file
//! system, where inotify-style notification would not, e.g. NFS). A new
//! batch shows up within one interval after its write; it is shown once
//! its last frame is in the file (it may not be fdatasync'd yet).

use std::{
    collections::VecDeque,
    io::{self, Write},
    time::Duration,
};

use anyhow::{bail, Context, Result};
use wal_core::Lsn;
use wal_fs::inspect::LogReader;

use crate::{cmd::dump::print_record, output::PayloadFormat, target::TargetArgs};

/// `tail` flags.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Follow: keep printing new entries until interrupted.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// How many of the last records to print first (looks in the last
    /// segment only). Ignored with --from.
    #[arg(short = 'n', long, default_value_t = 10)]
    pub lines: usize,
    /// Start at this Lsn instead.
    #[arg(long)]
    pub from: Option<u64>,
    /// How to print payloads.
    #[arg(long, value_enum, default_value_t = PayloadFormat::Hex)]
    pub format: PayloadFormat,
    /// Poll interval when following, in milliseconds.
    #[arg(long, default_value_t = 100)]
    pub interval_ms: u64,
    /// Only data and checkpoint entries (no checkpoint markers).
    #[arg(long)]
    pub entries_only: bool,
}

/// The first Lsn of the newest segment (where the last `n` records are
/// looked for), or 0 if there is none.
fn last_segment_start(dir: &std::path::Path) -> Result<Lsn> {
    let mut best = Lsn::ZERO;
    for e in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let name = e?.file_name();
        let name = name.to_string_lossy();
        if let Some(d) = name.strip_suffix(".wal") {
            if d.len() == 20 {
                if let Ok(v) = d.parse::<u64>() {
                    best = best.max(Lsn(v));
                }
            }
        }
    }
    Ok(best)
}

/// Runs `tail`.
pub fn run(target: &TargetArgs, json: bool, args: &Args) -> Result<u8> {
    if json && args.format == PayloadFormat::Raw {
        bail!("--format raw cannot be combined with --json (use hex or utf8)");
    }
    if let crate::target::Target::Etcd(options) = target.resolve()? {
        return crate::cmd::etcd::tail(*options, json, args);
    }
    let dir = target.dir()?;
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let mut reader;
    let keep = |r: &wal_fs::inspect::ReadRecord| !(args.entries_only && r.kind.is_marker());
    if let Some(from) = args.from {
        reader = LogReader::new(&dir, Lsn(from));
    } else {
        reader = LogReader::new(&dir, last_segment_start(&dir)?);
        let mut last: VecDeque<_> = VecDeque::with_capacity(args.lines.min(4096) + 1);
        while let Some(r) = reader.next_record()? {
            if !keep(&r) {
                continue;
            }
            last.push_back(r);
            if last.len() > args.lines {
                last.pop_front();
            }
        }
        for r in &last {
            print_record(&mut out, r, json, args.format)?;
        }
        out.flush().context("writing to stdout")?;
    }
    let interval = Duration::from_millis(args.interval_ms.max(1));
    loop {
        let mut any = false;
        while let Some(r) = reader
            .next_record()
            .with_context(|| format!("reading {}", dir.display()))?
        {
            if keep(&r) {
                print_record(&mut out, &r, json, args.format)?;
                any = true;
            }
        }
        if any {
            out.flush().context("writing to stdout")?;
        }
        if !args.follow {
            return Ok(0);
        }
        std::thread::sleep(interval);
    }
}
