//! # walctl
//!
//! The operator's tool for write-ahead logs: look at a log, check it, cut a
//! damaged tail, follow it, and benchmark the backends.
//!
//! ```text
//! walctl --dir DIR inspect                 segments, Lsn range, checkpoints, sizes
//! walctl --dir DIR dump [--from L] [--to L] [--format hex|utf8|raw]
//! walctl --dir DIR verify                  full scan; exit 0 clean, 3 torn tail, 4 corrupt
//! walctl --dir DIR repair [--yes]          dry run by default
//! walctl --dir DIR tail [-n N] [-f]        follow new entries (polls, no lock)
//! walctl --dir PARENT list                 the log directories under PARENT
//! walctl --endpoints URLS [--prefix P] list   the logs under P: head, keys, owner
//! walctl bench fs --writers N --size B --count N [--compare]
//! walctl bench recovery --recovery-bytes 256MiB
//! walctl --endpoints URLS --name N inspect|dump|verify|tail     the same on etcd
//! walctl --endpoints URLS bench etcd --writers N [--compare]
//! walctl --endpoints URLS bench etcd-session --logs N [--seconds S]
//! ```
//!
//! Every command prints human-readable text by default and JSON with
//! `--json` (one object, or one object per line for `dump`/`tail`). Errors
//! are one line on stderr and exit code 1; usage errors exit 2. A `--dir`
//! that holds no log (no segment file `*.wal` and no `wal.lock`, or no such
//! directory) is an error, not an empty report.
//!
//! Sizes in flags (`--size`, `--recovery-bytes`) are bytes, or a number with
//! a unit: `KiB`, `MiB`, `GiB` are powers of 1024; `KB`, `MB`, `GB` and the
//! bare `k`, `m`, `g` are powers of 1000 (case-insensitive). Reports print
//! sizes in binary units.
//!
//! The backend is chosen by the target flags: `--dir` for a local directory
//! (wal-fs); `--endpoints`/`--prefix`/`--name` (with `--cacert`, `--cert`,
//! `--key`, `--user` and the password in `WALCTL_ETCD_PASSWORD`) for etcd
//! (wal-etcd). On etcd every command reads through `EtcdReader`: it needs no
//! ownership and changes nothing; `repair` is refused (the owner repairs an
//! etcd log when it opens it, and walctl never takes ownership).

mod bench;
mod cmd;
mod output;
mod target;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::target::TargetArgs;

/// Exit code for a failed command (I/O error, bad input, locked log, ...).
pub const EXIT_ERROR: u8 = 1;
/// `verify`: the only problems are a torn tail or leftovers, which opening
/// the log repairs on its own (no acknowledged entry is lost).
pub const EXIT_TORN_TAIL: u8 = 3;
/// `verify`: corruption that makes opening the log fail; see `repair`.
pub const EXIT_CORRUPT: u8 = 4;

/// Inspect, verify, repair, follow and benchmark write-ahead logs.
#[derive(Debug, Parser)]
#[command(name = "walctl", version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    target: TargetArgs,

    /// Print JSON instead of text (one object per line for dump and tail).
    #[arg(long, global = true)]
    json: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Segments, Lsn range, checkpoints and sizes of a log.
    Inspect(cmd::inspect::Args),
    /// Print the records in an Lsn range.
    Dump(cmd::dump::Args),
    /// Check every checksum and the log's structure; report every problem.
    Verify(cmd::verify::Args),
    /// Cut a damaged log after its last good batch (dry run unless --yes).
    Repair(cmd::repair::Args),
    /// Print the last entries, and with -f follow new ones.
    Tail(cmd::tail::Args),
    /// The logs under an etcd prefix, or the log directories under --dir.
    List(cmd::list::Args),
    /// Benchmarks (DESIGN §9), with peers measured in the same run.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

fn main() -> ExitCode {
    sigpipe::reset();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect(a) => cmd::inspect::run(&cli.target, cli.json, &a),
        Command::Dump(a) => cmd::dump::run(&cli.target, cli.json, &a),
        Command::Verify(a) => cmd::verify::run(&cli.target, cli.json, &a),
        Command::Repair(a) => cmd::repair::run(&cli.target, cli.json, &a),
        Command::Tail(a) => cmd::tail::run(&cli.target, cli.json, &a),
        Command::List(a) => cmd::list::run(&cli.target, cli.json, &a),
        Command::Bench(b) => bench::run(&cli.target, cli.json, b),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            // One line: the error and its causes.
            eprintln!("walctl: error: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}
