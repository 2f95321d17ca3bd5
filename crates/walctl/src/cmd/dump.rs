//! `walctl dump`: the records in an Lsn range, markers included.
//!
//! Reads with [`LogReader`] (no lock, nothing repaired), so it works on a
//! live log; it shows complete append batches only. On etcd it reads with
//! `EtcdReader` (committed records only, no ownership needed).

use std::io::{self, Write};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use wal_core::{Lsn, RecordKind};
use wal_fs::inspect::{LogReader, ReadRecord};

use crate::{
    output::{self, PayloadFormat},
    target::{Target, TargetArgs},
};

/// `dump` flags.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// First Lsn to print.
    #[arg(long, default_value_t = 0)]
    pub from: u64,
    /// Last Lsn to print (inclusive).
    #[arg(long)]
    pub to: Option<u64>,
    /// How to print payloads. `raw` writes the payload bytes only, one
    /// after another (not with --json).
    #[arg(long, value_enum, default_value_t = PayloadFormat::Hex)]
    pub format: PayloadFormat,
    /// Only data and checkpoint entries (no checkpoint markers).
    #[arg(long)]
    pub entries_only: bool,
}

/// One dumped record as JSON.
#[derive(Debug, Serialize)]
pub struct RecordJson<'a> {
    /// Its Lsn.
    pub lsn: u64,
    /// Its kind (data, checkpoint, checkpoint-begin, ...).
    pub kind: &'static str,
    /// Payload length in bytes.
    pub len: usize,
    /// The payload, as `--format` says.
    pub payload: String,
    /// Where: segment file name (file backend only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<&'a str>,
    /// Byte offset of the frame in the file (file backend only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
}

/// Prints one record in the chosen style.
pub fn print_record(
    out: &mut impl Write,
    r: &ReadRecord,
    json: bool,
    format: PayloadFormat,
) -> Result<()> {
    if format == PayloadFormat::Raw {
        out.write_all(&r.payload).context("writing to stdout")?;
        return Ok(());
    }
    let name = r
        .path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    print_parts(
        out,
        r.lsn,
        r.kind,
        &r.payload,
        Some((&name, r.offset)),
        json,
        format,
    )
}

/// Prints one record from its parts; `at` is the file name and offset
/// where the file backend found it (none for etcd).
pub fn print_parts(
    out: &mut impl Write,
    lsn: Lsn,
    kind: RecordKind,
    payload: &[u8],
    at: Option<(&str, u64)>,
    json: bool,
    format: PayloadFormat,
) -> Result<()> {
    if format == PayloadFormat::Raw {
        out.write_all(payload).context("writing to stdout")?;
        return Ok(());
    }
    let text = output::payload_text(payload, format);
    if json {
        output::json_line(
            out,
            &RecordJson {
                lsn: lsn.get(),
                kind: kind.name(),
                len: payload.len(),
                payload: text,
                file: at.map(|(f, _)| f),
                offset: at.map(|(_, o)| o),
            },
        )
    } else {
        writeln!(
            out,
            "{:>10} {:<17} {:>8}  {}",
            lsn,
            kind.name(),
            payload.len(),
            text
        )
        .context("writing to stdout")
    }
}

/// Runs `dump`.
pub fn run(target: &TargetArgs, json: bool, args: &Args) -> Result<u8> {
    if json && args.format == PayloadFormat::Raw {
        bail!("--format raw cannot be combined with --json (use hex or utf8)");
    }
    if let Target::Etcd(options) = target.resolve()? {
        return crate::cmd::etcd::dump(*options, json, args);
    }
    let dir = target.dir()?;
    let to = Lsn(args.to.unwrap_or(u64::MAX));
    let mut reader = LogReader::new(&dir, Lsn(args.from));
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    while let Some(r) = reader
        .next_record()
        .with_context(|| format!("reading {}", dir.display()))?
    {
        if r.lsn > to {
            break;
        }
        if args.entries_only && r.kind.is_marker() {
            continue;
        }
        print_record(&mut out, &r, json, args.format)?;
    }
    out.flush().context("writing to stdout")?;
    Ok(0)
}
