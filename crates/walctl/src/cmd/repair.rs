//! `walctl repair`: the explicit cut of a damaged log.
//!
//! Without `--yes` it is a dry run: it prints what would be cut and changes
//! nothing. With `--yes` it runs [`wal_fs::inspect::repair`], which does
//! everything under the directory lock (it fails if a writer has the log
//! open): it scans again, cuts, and writes the high-water marker. This
//! command only prints the report.

use anyhow::{Context, Result};
use serde::Serialize;
use wal_fs::inspect::{repair, RepairAction};

use crate::{output, target::TargetArgs};

/// `repair` flags.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Carry out the cut (default: dry run).
    #[arg(long)]
    pub yes: bool,
}

#[derive(Debug, Serialize)]
struct ActionJson {
    action: &'static str,
    file: String,
    /// New length (truncate) or size (delete), bytes.
    bytes: u64,
    /// Bytes removed.
    removed_bytes: u64,
}

#[derive(Debug, Serialize)]
struct RepairJson {
    dir: String,
    dry_run: bool,
    applied: bool,
    actions: Vec<ActionJson>,
    keep_last_lsn: Option<u64>,
    /// Lsn of the `truncated` marker written after the cut, so that the cut
    /// Lsns are never handed out again.
    high_water_lsn: Option<u64>,
    lost_records: u64,
    problems: Vec<String>,
}

/// Runs `repair`.
pub fn run(target: &TargetArgs, json: bool, args: &Args) -> Result<u8> {
    if let crate::target::Target::Etcd(options) = target.resolve()? {
        return crate::cmd::etcd::repair(*options, json, args);
    }
    let dir = target.dir()?;
    let plan = repair(&dir, args.yes).with_context(|| format!("repairing {}", dir.display()))?;
    if json {
        output::json_pretty(&RepairJson {
            dir: dir.display().to_string(),
            dry_run: !args.yes,
            applied: plan.applied,
            actions: plan
                .actions
                .iter()
                .map(|a| match a {
                    RepairAction::Truncate {
                        path,
                        len,
                        cut_bytes,
                    } => ActionJson {
                        action: "truncate",
                        file: path.display().to_string(),
                        bytes: *len,
                        removed_bytes: *cut_bytes,
                    },
                    RepairAction::Delete { path, bytes } => ActionJson {
                        action: "delete",
                        file: path.display().to_string(),
                        bytes: *bytes,
                        removed_bytes: *bytes,
                    },
                    _ => ActionJson {
                        action: "other",
                        file: String::new(),
                        bytes: 0,
                        removed_bytes: 0,
                    },
                })
                .collect(),
            keep_last_lsn: plan.keep_last_lsn.map(|l| l.get()),
            high_water_lsn: plan.marker_lsn.map(|l| l.get()),
            lost_records: plan.lost_records,
            problems: plan
                .report
                .problems
                .iter()
                .map(ToString::to_string)
                .collect(),
        })?;
        return Ok(0);
    }
    for p in &plan.report.problems {
        println!("found {p}");
    }
    if plan.is_noop() {
        println!("nothing to repair: {}", dir.display());
        return Ok(0);
    }
    let verb = if plan.applied { "did" } else { "would" };
    for a in &plan.actions {
        println!("{verb} {a}");
    }
    match plan.keep_last_lsn {
        Some(l) => println!(
            "the log {} at lsn {l}",
            if plan.applied {
                "now ends"
            } else {
                "would end"
            }
        ),
        None => println!(
            "the log {} empty",
            if plan.applied { "is now" } else { "would be" }
        ),
    }
    if plan.lost_records > 0 {
        println!(
            "{} {} readable records after the damage (acknowledged entries)",
            if plan.applied {
                "removed"
            } else {
                "WARNING: would remove"
            },
            plan.lost_records
        );
    }
    if let (Some(marker), Some(seen)) = (plan.marker_lsn, plan.high_water) {
        println!(
            "{} a high-water marker at lsn {marker} (lsns up to {seen} were in the log), so the cut lsns are never handed out again",
            if plan.applied { "wrote" } else { "would write" }
        );
    }
    if !plan.applied {
        println!("dry run: nothing changed; run again with --yes to cut");
    }
    Ok(0)
}
