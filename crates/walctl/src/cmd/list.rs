//! `walctl list`: the logs under an etcd prefix, or the log directories
//! under a parent directory. Read-only: no lock, no lease, nothing changed.
//!
//! - etcd (`--endpoints URLS [--prefix P]`): every log under the prefix
//!   (see [`wal_etcd::list_logs`]: a keys-only scan, then each log's head
//!   and owner keys, at one revision): name, head Lsn, key counts, and the
//!   owner (writer id, lease, fencing token, and how many of the listed
//!   logs hang on the same lease: logs of one `EtcdSession` share it).
//! - a directory (`--dir PARENT`): every subdirectory that holds a wal-fs
//!   log ([`wal_fs::holds_log`]), each scanned the way `verify` does (every
//!   segment read once): first and last Lsn, segment count, bytes on disk,
//!   and whether the scan found problems (`walctl --dir D verify` says
//!   which). A subdirectory that cannot be scanned is listed with the
//!   error, not skipped.

use std::{collections::HashMap, path::Path};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::{cmd::etcd::redact_endpoint, output, target::TargetArgs};

/// `list` flags (none besides the target's).
#[derive(Debug, clap::Args)]
pub struct Args {}

#[derive(Debug, Serialize)]
struct EtcdOwnerJson {
    writer_id: String,
    lease_id: i64,
    lease_hex: String,
    fencing_token: i64,
    /// Listed logs whose owner key hangs on this lease (more than one: a
    /// session's logs).
    logs_on_lease: usize,
}

#[derive(Debug, Serialize)]
struct EtcdLogJson {
    name: String,
    head: u64,
    keys: u64,
    record_keys: u64,
    chunk_keys: u64,
    owner: Option<EtcdOwnerJson>,
}

#[derive(Debug, Serialize)]
struct EtcdListJson {
    backend: &'static str,
    endpoints: Vec<String>,
    prefix: String,
    logs: Vec<EtcdLogJson>,
}

#[derive(Debug, Serialize)]
struct DirLogJson {
    name: String,
    path: String,
    first_lsn: Option<u64>,
    last_lsn: Option<u64>,
    segments: usize,
    bytes: u64,
    /// No problem found by the scan (see `verify`).
    clean: bool,
    /// Why the directory could not be scanned.
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct DirListJson {
    backend: &'static str,
    dir: String,
    logs: Vec<DirLogJson>,
}

/// Runs `list`.
pub fn run(target: &TargetArgs, json: bool, _args: &Args) -> Result<u8> {
    if let Some(dir) = &target.dir {
        return list_dir(dir, json);
    }
    if !target.endpoints.is_empty() {
        return list_etcd(target, json);
    }
    bail!("list needs --dir PARENT (log directories under it) or --endpoints URLS [--prefix P] (logs on etcd)")
}

fn list_etcd(target: &TargetArgs, json: bool) -> Result<u8> {
    // The name is not used by a listing.
    let options = target.etcd_options("list")?;
    let endpoints: Vec<String> = options
        .endpoints
        .iter()
        .map(|e| redact_endpoint(e))
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let logs = rt
        .block_on(wal_etcd::list_logs(&options))
        .with_context(|| {
            format!(
                "listing the logs under {:?} at {}",
                options.prefix,
                endpoints.join(",")
            )
        })?;
    let mut per_lease: HashMap<i64, usize> = HashMap::new();
    for l in &logs {
        if let Some(o) = &l.owner {
            *per_lease.entry(o.lease).or_default() += 1;
        }
    }
    let report = EtcdListJson {
        backend: "etcd",
        endpoints,
        prefix: options.prefix.clone(),
        logs: logs
            .iter()
            .map(|l| EtcdLogJson {
                name: l.name.clone(),
                head: l.head.get(),
                keys: l.keys,
                record_keys: l.record_keys,
                chunk_keys: l.chunk_keys,
                owner: l.owner.as_ref().map(|o| EtcdOwnerJson {
                    writer_id: o.writer_id.clone(),
                    lease_id: o.lease,
                    lease_hex: format!("{:x}", o.lease),
                    fencing_token: o.token.0,
                    logs_on_lease: per_lease.get(&o.lease).copied().unwrap_or(1),
                }),
            })
            .collect(),
    };
    if json {
        output::json_pretty(&report)?;
        return Ok(0);
    }
    println!(
        "{} log(s) under {:?} at {}",
        report.logs.len(),
        report.prefix,
        report.endpoints.join(",")
    );
    if report.logs.is_empty() {
        return Ok(0);
    }
    let width = report
        .logs
        .iter()
        .map(|l| l.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    println!("{:<width$}  {:>20}  {:>8}  OWNER", "NAME", "HEAD", "KEYS");
    for l in &report.logs {
        let owner = match &l.owner {
            Some(o) => format!(
                "{} (lease {}, token {}{})",
                o.writer_id,
                o.lease_hex,
                o.fencing_token,
                if o.logs_on_lease > 1 {
                    format!(", {} logs on this lease", o.logs_on_lease)
                } else {
                    String::new()
                }
            ),
            None => "-".into(),
        };
        println!("{:<width$}  {:>20}  {:>8}  {owner}", l.name, l.head, l.keys);
    }
    Ok(0)
}

fn list_dir(parent: &Path, json: bool) -> Result<u8> {
    let entries =
        std::fs::read_dir(parent).with_context(|| format!("listing {}", parent.display()))?;
    let mut dirs = Vec::new();
    for e in entries {
        let e = e.with_context(|| format!("listing {}", parent.display()))?;
        let path = e.path();
        if !path.is_dir() {
            continue;
        }
        let holds =
            wal_fs::holds_log(&path).with_context(|| format!("listing {}", path.display()))?;
        if holds {
            dirs.push(path);
        }
    }
    dirs.sort();
    let logs: Vec<DirLogJson> = dirs.iter().map(|d| dir_log(d)).collect();
    let report = DirListJson {
        backend: "fs",
        dir: parent.display().to_string(),
        logs,
    };
    if json {
        output::json_pretty(&report)?;
        return Ok(0);
    }
    println!("{} log(s) under {}", report.logs.len(), report.dir);
    if report.logs.is_empty() {
        return Ok(0);
    }
    let width = report
        .logs
        .iter()
        .map(|l| l.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    println!(
        "{:<width$}  {:>20}  {:>20}  {:>8}  {:>10}  STATE",
        "NAME", "FIRST", "LAST", "SEGMENTS", "SIZE"
    );
    let lsn = |l: Option<u64>| l.map_or("-".to_string(), |l| l.to_string());
    for l in &report.logs {
        let state = match &l.error {
            Some(e) => format!("error: {e}"),
            None if l.clean => "clean".into(),
            None => "problems (see verify)".into(),
        };
        println!(
            "{:<width$}  {:>20}  {:>20}  {:>8}  {:>10}  {state}",
            l.name,
            lsn(l.first_lsn),
            lsn(l.last_lsn),
            l.segments,
            output::size(l.bytes),
        );
    }
    Ok(0)
}

/// One log directory's summary.
fn dir_log(dir: &Path) -> DirLogJson {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let bytes = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0);
    let mut out = DirLogJson {
        name,
        path: dir.display().to_string(),
        first_lsn: None,
        last_lsn: None,
        segments: 0,
        bytes,
        clean: false,
        error: None,
    };
    match wal_fs::inspect::verify(dir, &mut |_| {}) {
        Ok(report) => {
            out.first_lsn = report.first_lsn().map(|l| l.get());
            out.last_lsn = report.last_lsn().map(|l| l.get());
            out.segments = report.segments.len();
            out.clean = report.is_clean();
        }
        Err(e) => out.error = Some(e.to_string()),
    }
    out
}
