//! `walctl verify`: a full checksum and structure scan.
//!
//! Exit codes: 0 clean; 3 only a torn tail or leftover files, which opening
//! the log cleans up by itself; 4 corruption, which makes opening fail
//! (see `walctl repair`). Every problem is printed with its file and offset.
//! A progress bar (bytes scanned) is drawn on stderr when it is a terminal.

use std::io::IsTerminal;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use wal_fs::inspect::{verify, ProblemKind, ScanEvent};

use crate::{output, target::TargetArgs, EXIT_CORRUPT, EXIT_TORN_TAIL};

/// `verify` flags.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Never draw the progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

#[derive(Debug, Serialize)]
struct ProblemJson {
    kind: &'static str,
    file: String,
    offset: u64,
    why: String,
}

#[derive(Debug, Serialize)]
struct VerifyJson {
    dir: String,
    ok: bool,
    status: &'static str,
    segments: usize,
    records: u64,
    bytes_scanned: u64,
    first_lsn: Option<u64>,
    last_lsn: Option<u64>,
    problems: Vec<ProblemJson>,
}

/// Runs `verify`.
pub fn run(target: &TargetArgs, json: bool, args: &Args) -> Result<u8> {
    if let crate::target::Target::Etcd(options) = target.resolve()? {
        return crate::cmd::etcd::verify(*options, json, args);
    }
    let dir = target.dir()?;
    let total: u64 = std::fs::read_dir(&dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".wal"))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    let bar = if !json && !args.no_progress && std::io::stderr().is_terminal() {
        let b = ProgressBar::new(total);
        if let Ok(style) = ProgressStyle::with_template(
            "{spinner} verifying [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
        ) {
            b.set_style(style.progress_chars("=> "));
        }
        b
    } else {
        ProgressBar::hidden()
    };
    let mut done_before = 0u64;
    let mut records = 0u64;
    let report = verify(&dir, &mut |ev| match ev {
        ScanEvent::Record(r) => {
            records += 1;
            if records.is_multiple_of(1024) {
                bar.set_position(done_before + r.offset + r.frame_bytes);
            }
        }
        ScanEvent::SegmentEnd(s) => {
            done_before += s.file_bytes;
            bar.set_position(done_before);
        }
        _ => {}
    })
    .with_context(|| format!("verifying {}", dir.display()))?;
    bar.finish_and_clear();

    let (code, status) = if report.has_corruption() {
        (EXIT_CORRUPT, "corrupt")
    } else if report.is_clean() {
        (0, "clean")
    } else {
        (EXIT_TORN_TAIL, "torn-tail")
    };
    if json {
        output::json_pretty(&VerifyJson {
            dir: dir.display().to_string(),
            ok: code == 0,
            status,
            segments: report.segments.len(),
            records,
            bytes_scanned: total,
            first_lsn: report.first_lsn().map(|l| l.get()),
            last_lsn: report.last_lsn().map(|l| l.get()),
            problems: report
                .problems
                .iter()
                .map(|p| ProblemJson {
                    kind: p.kind.name(),
                    file: p.path.display().to_string(),
                    offset: p.offset,
                    why: p.why.clone(),
                })
                .collect(),
        })?;
    } else {
        let range = match (report.first_lsn(), report.last_lsn()) {
            (Some(a), Some(b)) => format!("lsn {a}..={b}"),
            _ => "no records".into(),
        };
        println!(
            "{}: {} segments, {records} records, {range}, {} scanned",
            dir.display(),
            report.segments.len(),
            output::size(total)
        );
        for p in &report.problems {
            println!("{p}");
        }
        match status {
            "clean" => println!("ok: no problems"),
            "torn-tail" => {
                let leftovers = report
                    .problems
                    .iter()
                    .all(|p| p.kind == ProblemKind::Leftover);
                println!(
                    "{}: opening the log cleans this up by itself (no acknowledged entry is lost); `walctl repair` does it explicitly",
                    if leftovers { "leftover files" } else { "torn tail" }
                );
            }
            _ => println!(
                "CORRUPT: opening the log will fail; `walctl repair` shows what a cut after the last good batch would remove"
            ),
        }
    }
    Ok(code)
}
