//! `walctl bench`: the DESIGN §9 workloads, with their peers measured in
//! the same process and run, so the ratios compare like with like.
//!
//! - `bench fs`: N writers append entries of one size, each append awaited
//!   until durable. `--compare` also runs (a) a raw loop: one thread, one
//!   preallocated file, `pwrite` + `fdatasync` per entry (the hardware limit
//!   for one durable write at a time; the same baseline whatever N is), and
//!   (b) okaywal with N threads, each entry committed (`EntryWriter::commit`).
//! - `bench etcd`: N tasks append to one Wal on etcd, each append awaited
//!   until committed; `--compare` also runs N etcd clients doing raw single
//!   puts against the same etcd (see [`etcd`]).
//! - `bench etcd-session`: many logs on one `EtcdSession` against as many
//!   independent stores (see [`etcd_session`]).
//! - `bench recovery`: writes a log, then times `Wal::open` plus draining the
//!   recovery stream against a raw sequential read of the same files, and
//!   reports the peak RSS of the recovery phase.
//!
//! Benchmark files go into a fresh directory under `--dir` (default: the
//! system temp directory), removed afterwards.

mod batches;
mod etcd;
mod etcd_session;
mod fs;
mod okaywal_peer;
mod raw;
mod recovery;
mod stats;

use std::path::Path;

use anyhow::{Context, Result};
use clap::Subcommand;

use crate::target::TargetArgs;

/// `bench` subcommands.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Append throughput and latency on a local directory.
    Fs(fs::Args),
    /// Recovery (open + replay) speed against a raw sequential read.
    Recovery(recovery::Args),
    /// Append throughput on etcd (--endpoints), against raw single puts.
    Etcd(etcd::Args),
    /// Many logs on one EtcdSession against as many independent stores:
    /// leases, keep-alive traffic, total append rate.
    EtcdSession(etcd_session::Args),
}

/// Runs a benchmark.
pub fn run(target: &TargetArgs, json: bool, cmd: BenchCommand) -> Result<u8> {
    match cmd {
        BenchCommand::Fs(a) => fs::run(&work_dir(target)?, json, &a),
        BenchCommand::Recovery(a) => recovery::run(&work_dir(target)?, json, &a),
        BenchCommand::Etcd(a) => etcd::run(target, json, &a),
        BenchCommand::EtcdSession(a) => etcd_session::run(target, json, &a),
    }
}

/// A fresh directory for one benchmark run (`walctl-bench-*` under the
/// base directory), removed when dropped.
pub struct WorkDir {
    dir: tempfile::TempDir,
}

impl WorkDir {
    /// The directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

fn work_dir(target: &TargetArgs) -> Result<WorkDir> {
    let base = target.dir.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
    let dir = tempfile::Builder::new()
        .prefix("walctl-bench-")
        .tempdir_in(&base)
        .with_context(|| format!("creating a work directory in {}", base.display()))?;
    Ok(WorkDir { dir })
}
