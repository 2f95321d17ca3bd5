//! `walctl inspect`: what a log holds.
//!
//! Reads every segment once (read-only, no lock), the way `verify` does,
//! and follows the checkpoint markers with the same rules as recovery: a
//! commit counts only for the checkpoint that is open at that point.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use serde::Serialize;
use wal_core::{Lsn, RecordKind};
use wal_fs::inspect::{verify, ScanEvent};

use crate::{output, target::TargetArgs};

/// `inspect` flags.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// etcd only: the cluster's --quota-backend-bytes, for the space
    /// warning when the server does not report its quota (etcd before 3.6).
    /// Default: etcd's default quota, 2 GiB.
    #[arg(long, value_name = "BYTES")]
    pub quota_bytes: Option<u64>,
}

/// etcd's default `--quota-backend-bytes`.
pub const ETCD_DEFAULT_QUOTA: u64 = 2 << 30;

/// Warn when a member's database reaches this share of its quota.
pub const QUOTA_WARN_RATIO: f64 = 0.8;

/// One etcd member's database size against its quota, as printed.
#[derive(Debug, Serialize)]
pub struct MemberSpaceJson {
    pub endpoint: String,
    pub db_size: u64,
    pub db_size_in_use: u64,
    pub quota: u64,
    /// Where the quota came from: "server", "--quota-bytes" or "etcd default".
    pub quota_source: &'static str,
    pub used_ratio: f64,
}

/// The cluster's space, as printed by `inspect` on etcd.
#[derive(Debug, Serialize)]
pub struct SpaceJson {
    pub members: Vec<MemberSpaceJson>,
    pub nospace_alarm: bool,
    /// Operator warnings: near the quota, NOSPACE raised, members that
    /// did not answer.
    pub warnings: Vec<String>,
}

/// The space part of `inspect` on etcd, from [`wal_etcd::space`].
pub fn space_json(report: &wal_etcd::SpaceReport, args: &Args) -> SpaceJson {
    let mut warnings = Vec::new();
    let members: Vec<MemberSpaceJson> = report
        .members
        .iter()
        .map(|m| {
            let (quota, quota_source) = match (m.quota, args.quota_bytes) {
                (Some(q), _) => (q.max(0) as u64, "server"),
                (None, Some(q)) => (q, "--quota-bytes"),
                (None, None) => (ETCD_DEFAULT_QUOTA, "etcd default"),
            };
            let db_size = m.db_size.max(0) as u64;
            let used_ratio = if quota == 0 {
                0.0
            } else {
                db_size as f64 / quota as f64
            };
            if used_ratio >= QUOTA_WARN_RATIO {
                warnings.push(format!(
                    "etcd member {}: database {} is {:.0}% of its quota {} ({quota_source}); \
                     at the quota etcd refuses every write (NOSPACE): compact, defragment, or raise \
                     --quota-backend-bytes",
                    m.endpoint,
                    crate::output::size(db_size),
                    used_ratio * 100.0,
                    crate::output::size(quota),
                ));
            }
            MemberSpaceJson {
                endpoint: m.endpoint.clone(),
                db_size,
                db_size_in_use: m.db_size_in_use.max(0) as u64,
                quota,
                quota_source,
                used_ratio,
            }
        })
        .collect();
    if report.nospace_alarm {
        warnings.push(
            "etcd NOSPACE alarm raised: every write is refused until an operator compacts, \
             defragments and runs `etcdctl alarm disarm`"
                .into(),
        );
    }
    for (ep, why) in &report.unreachable {
        warnings.push(format!("etcd member {ep}: no status ({why})"));
    }
    SpaceJson {
        members,
        nospace_alarm: report.nospace_alarm,
        warnings,
    }
}

/// Prints the space part of `inspect` on etcd; warnings go to stderr too.
pub fn print_space(space: &SpaceJson) {
    for m in &space.members {
        println!(
            "etcd db {}: {} ({} in use), quota {} ({}), {:.1}% used",
            m.endpoint,
            crate::output::size(m.db_size),
            crate::output::size(m.db_size_in_use),
            crate::output::size(m.quota),
            m.quota_source,
            m.used_ratio * 100.0
        );
    }
    for w in &space.warnings {
        println!("warning: {w}");
        eprintln!("warning: {w}");
    }
}

/// One segment, as printed.
#[derive(Debug, Serialize)]
pub struct SegmentRow {
    name: String,
    first_lsn: Option<u64>,
    last_lsn: Option<u64>,
    records: u64,
    payload_bytes: u64,
    data_bytes: u64,
    file_bytes: u64,
    damaged: bool,
}

/// A checkpoint, as printed.
#[derive(Debug, Serialize, Clone, Copy)]
pub struct CheckpointRow {
    begin: u64,
    /// Commit or abort marker, if any.
    end: Option<u64>,
    entries: u64,
    bytes: u64,
}

/// Checkpoints found in the log.
#[derive(Debug, Serialize, Default)]
pub struct Checkpoints {
    committed: Vec<CheckpointRow>,
    aborted: Vec<CheckpointRow>,
    /// A checkpoint begun and neither committed nor aborted (at most one
    /// can be open; earlier unfinished ones were abandoned by a crash).
    unfinished: Vec<CheckpointRow>,
    /// The committed checkpoint recovery would use.
    recovery_uses: Option<CheckpointRow>,
}

/// The whole `inspect` output.
#[derive(Debug, Serialize)]
pub struct Report {
    dir: String,
    segments: Vec<SegmentRow>,
    first_lsn: Option<u64>,
    last_lsn: Option<u64>,
    records: u64,
    data_entries: u64,
    checkpoint_entries: u64,
    markers: u64,
    payload_bytes: u64,
    data_bytes: u64,
    file_bytes: u64,
    checkpoints: Checkpoints,
    problems: Vec<String>,
}

/// Follows checkpoint markers the way recovery does (shared with etcd).
#[derive(Default)]
pub struct Tracker {
    open: Option<CheckpointRow>,
    /// Checkpoints so far.
    pub cps: Checkpoints,
    /// Data entries.
    pub data: u64,
    /// Checkpoint entries.
    pub cp_entries: u64,
    /// Core markers.
    pub markers: u64,
}

impl Tracker {
    /// Ends the scan: a checkpoint still open is unfinished.
    pub fn finish(&mut self) {
        if let Some(o) = self.open.take() {
            self.cps.unfinished.push(o);
        }
    }

    /// Feeds one record.
    pub fn record(&mut self, lsn: Lsn, kind: RecordKind, payload: &[u8]) {
        let target = <[u8; 8]>::try_from(payload).map(u64::from_be_bytes).ok();
        match kind {
            RecordKind::Data => self.data += 1,
            RecordKind::Checkpoint => {
                self.cp_entries += 1;
                if let Some(o) = self.open.as_mut() {
                    o.entries += 1;
                    o.bytes += payload.len() as u64;
                }
            }
            RecordKind::CheckpointBegin => {
                self.markers += 1;
                if let Some(prev) = self.open.take() {
                    self.cps.unfinished.push(prev);
                }
                self.open = Some(CheckpointRow {
                    begin: lsn.get(),
                    end: None,
                    entries: 0,
                    bytes: 0,
                });
            }
            RecordKind::CheckpointCommit | RecordKind::CheckpointAbort => {
                self.markers += 1;
                if let Some(mut o) = self.open.filter(|o| Some(o.begin) == target) {
                    self.open = None;
                    o.end = Some(lsn.get());
                    if kind == RecordKind::CheckpointCommit {
                        self.cps.committed.push(o);
                        self.cps.recovery_uses = Some(o);
                    } else {
                        self.cps.aborted.push(o);
                    }
                }
            }
            RecordKind::Truncated => self.markers += 1,
        }
    }
}

/// Runs `inspect`.
pub fn run(target: &TargetArgs, json: bool, args: &Args) -> Result<u8> {
    if let crate::target::Target::Etcd(options) = target.resolve()? {
        return crate::cmd::etcd::inspect(*options, json, args);
    }
    let dir = target.dir()?;
    let mut t = Tracker::default();
    let log = verify(&dir, &mut |ev| {
        if let ScanEvent::Record(r) = ev {
            t.record(r.lsn, r.kind, &r.payload);
        }
    })
    .with_context(|| format!("reading {}", dir.display()))?;
    t.finish();
    let segments: Vec<SegmentRow> = log
        .segments
        .iter()
        .map(|s| SegmentRow {
            name: s
                .path
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
            first_lsn: s.first_lsn.map(Lsn::get),
            last_lsn: s.last_lsn.map(Lsn::get),
            records: s.records,
            payload_bytes: s.payload_bytes,
            data_bytes: s.data_end,
            file_bytes: s.file_bytes,
            damaged: s.damaged,
        })
        .collect();
    let report = Report {
        dir: dir.display().to_string(),
        first_lsn: log.first_lsn().map(Lsn::get),
        last_lsn: log.last_lsn().map(Lsn::get),
        records: segments.iter().map(|s| s.records).sum(),
        data_entries: t.data,
        checkpoint_entries: t.cp_entries,
        markers: t.markers,
        payload_bytes: segments.iter().map(|s| s.payload_bytes).sum(),
        data_bytes: segments.iter().map(|s| s.data_bytes).sum(),
        file_bytes: segments.iter().map(|s| s.file_bytes).sum(),
        segments,
        checkpoints: t.cps,
        problems: log.problems.iter().map(ToString::to_string).collect(),
    };
    if json {
        output::json_pretty(&report)?;
    } else {
        print_human(&report);
    }
    Ok(0)
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

fn print_human(r: &Report) {
    println!("log {}", r.dir);
    println!("segments: {}", r.segments.len());
    if !r.segments.is_empty() {
        println!(
            "  {:<26} {:>12} {:>12} {:>10} {:>12} {:>12}",
            "NAME", "FIRST LSN", "LAST LSN", "RECORDS", "DATA", "FILE"
        );
        for s in &r.segments {
            println!(
                "  {:<26} {:>12} {:>12} {:>10} {:>12} {:>12}{}",
                s.name,
                opt(s.first_lsn),
                opt(s.last_lsn),
                s.records,
                output::size(s.data_bytes),
                output::size(s.file_bytes),
                if s.damaged { "  DAMAGED" } else { "" }
            );
        }
    }
    match (r.first_lsn, r.last_lsn) {
        (Some(a), Some(b)) => println!("lsn range: {a}..={b} ({} records)", r.records),
        _ => println!("lsn range: empty"),
    }
    println!(
        "records: {} data, {} checkpoint entries, {} markers",
        r.data_entries, r.checkpoint_entries, r.markers
    );
    println!(
        "size: {} payload, {} in frames, {} on disk",
        output::size(r.payload_bytes),
        output::size(r.data_bytes),
        output::size(r.file_bytes)
    );
    print_checkpoints(&r.checkpoints);
    if r.problems.is_empty() {
        println!("problems: none");
    } else {
        println!("problems: {} (see `walctl verify`)", r.problems.len());
        for p in &r.problems {
            println!("  {p}");
        }
    }
}

/// The checkpoint lines of the human output.
pub fn print_checkpoints(c: &Checkpoints) {
    println!(
        "checkpoints: {} committed, {} aborted, {} unfinished",
        c.committed.len(),
        c.aborted.len(),
        c.unfinished.len()
    );
    let show = |label: &str, rows: &[CheckpointRow]| {
        // Only the last few of each: a long-lived log can have many.
        let mut by_begin: BTreeMap<u64, CheckpointRow> = BTreeMap::new();
        for row in rows.iter().rev().take(5) {
            by_begin.insert(row.begin, *row);
        }
        for row in by_begin.values() {
            println!(
                "  {label:<10} begin {} end {} ({} entries, {})",
                row.begin,
                opt(row.end),
                row.entries,
                output::size(row.bytes)
            );
        }
    };
    show("committed", &c.committed);
    show("aborted", &c.aborted);
    show("unfinished", &c.unfinished);
    if let Some(u) = c.recovery_uses {
        println!(
            "recovery uses the checkpoint begun at lsn {} (committed at {}), then data after lsn {}",
            u.begin,
            opt(u.end),
            u.begin
        );
    }
}
