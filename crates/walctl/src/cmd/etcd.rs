//! The log commands on an etcd log, through [`EtcdReader`]: read-only, no
//! lease, no ownership, nothing deleted or repaired.
//!
//! - `inspect`: head, Lsn range, record/chunk key counts, keys above the
//!   head, checkpoints (followed through the records, as recovery does) and
//!   the owner (writer id, lease id, fencing token, TTL left on its lease).
//! - `dump`: committed records, same output as on a directory (without the
//!   file/offset fields).
//! - `verify`: reads every committed key at one etcd revision; exit 0
//!   clean, 3 only keys above the head (an append that never reached its
//!   commit point; the next owner deletes them on open, no acknowledged
//!   entry is lost), 4 a key that fails to decode or match its checksum.
//! - `tail`: the last records, then with `-f` an etcd watch on the head.
//! - `repair`: refused; see [`repair()`].
//!
//! Nothing here prints credentials: options are never printed, and the
//! endpoints are shown without any `user:password@` part.

use std::io::{self, Write};

use anyhow::{bail, Context, Result};
use futures::StreamExt;
use serde::Serialize;
use wal_core::{Lsn, ReadLimit};
use wal_etcd::{EtcdOptions, EtcdReader, ScanReport};

use crate::{
    cmd::{
        dump::{self, print_parts},
        inspect::{self, Checkpoints, Tracker},
        repair, tail, verify,
    },
    output::{self, PayloadFormat},
    EXIT_CORRUPT, EXIT_TORN_TAIL,
};

/// A current-thread runtime for one command.
fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")
}

/// `{prefix}{name}/`, how the log is named in messages.
fn log_name(o: &EtcdOptions) -> String {
    format!("{}{}/", o.prefix, o.name)
}

/// An endpoint without any `user:password@` part.
pub fn redact_endpoint(e: &str) -> String {
    match (e.find("://"), e.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}{}", &e[..s + 3], &e[at + 1..]),
        (None, Some(at)) => e[at + 1..].to_string(),
        _ => e.to_string(),
    }
}

fn endpoints(o: &EtcdOptions) -> Vec<String> {
    o.endpoints.iter().map(|e| redact_endpoint(e)).collect()
}

async fn connect(o: &EtcdOptions) -> Result<EtcdReader> {
    EtcdReader::connect(o.clone())
        .await
        .with_context(|| format!("connecting to etcd at {}", endpoints(o).join(",")))
}

#[derive(Debug, Serialize)]
struct OwnerJson {
    writer_id: String,
    lease_id: i64,
    /// The lease id as etcdctl prints it (hex).
    lease_hex: String,
    fencing_token: i64,
    /// Seconds left on the owner's lease; null if it has just expired.
    ttl_seconds: Option<u64>,
}

#[derive(Debug, Serialize)]
struct ProblemJson {
    kind: &'static str,
    key: String,
    why: String,
}

#[derive(Debug, Serialize)]
struct InspectJson {
    backend: &'static str,
    endpoints: Vec<String>,
    log: String,
    owner: Option<OwnerJson>,
    head: u64,
    revision: i64,
    first_lsn: Option<u64>,
    last_lsn: Option<u64>,
    records: u64,
    record_keys: u64,
    chunk_keys: u64,
    uncommitted_record_keys: u64,
    uncommitted_chunk_keys: u64,
    data_entries: u64,
    checkpoint_entries: u64,
    markers: u64,
    payload_bytes: u64,
    checkpoints: Checkpoints,
    problems: Vec<ProblemJson>,
    space: inspect::SpaceJson,
}

/// `inspect` on etcd.
pub fn inspect(o: EtcdOptions, json: bool, args: &inspect::Args) -> Result<u8> {
    let log = log_name(&o);
    let rt = runtime()?;
    let (report, tracker, owner, space) = rt.block_on(async {
        let reader = connect(&o).await?;
        let owner = match reader
            .owner()
            .await
            .with_context(|| format!("reading the owner of {log}"))?
        {
            Some(info) => {
                let ttl = reader
                    .lease_ttl(info.lease)
                    .await
                    .with_context(|| format!("reading the owner's lease of {log}"))?;
                Some(OwnerJson {
                    writer_id: info.writer_id,
                    lease_id: info.lease,
                    lease_hex: format!("{:x}", info.lease),
                    fencing_token: info.token.0,
                    ttl_seconds: ttl.map(|d| d.as_secs()),
                })
            }
            None => None,
        };
        let mut t = Tracker::default();
        let report = reader
            .scan(|_, r| t.record(r.lsn, r.kind, &r.payload))
            .await
            .with_context(|| format!("reading {log}"))?;
        t.finish();
        let space = wal_etcd::space(&o)
            .await
            .context("reading the etcd members' status")?;
        anyhow::Ok((report, t, owner, inspect::space_json(&space, args)))
    })?;
    let out = InspectJson {
        backend: "etcd",
        endpoints: endpoints(&o),
        log,
        owner,
        head: report.head.get(),
        revision: report.revision,
        first_lsn: report.first_lsn.map(Lsn::get),
        last_lsn: report.last_lsn.map(Lsn::get),
        records: report.records,
        record_keys: report.record_keys,
        chunk_keys: report.chunk_keys,
        uncommitted_record_keys: report.uncommitted_record_keys,
        uncommitted_chunk_keys: report.uncommitted_chunk_keys,
        data_entries: tracker.data,
        checkpoint_entries: tracker.cp_entries,
        markers: tracker.markers,
        payload_bytes: report.payload_bytes,
        checkpoints: tracker.cps,
        problems: problems_json(&report),
        space,
    };
    if json {
        output::json_pretty(&out)?;
        return Ok(0);
    }
    let r = &out;
    println!("log {} on etcd {}", r.log, r.endpoints.join(","));
    match &r.owner {
        Some(ow) => println!(
            "owner: writer {} (lease {}, fencing token {}), lease TTL left: {}",
            ow.writer_id,
            ow.lease_hex,
            ow.fencing_token,
            ow.ttl_seconds
                .map_or_else(|| "expired".into(), |s| format!("{s} s"))
        ),
        None => println!("owner: none (the log is vacant)"),
    }
    println!("head: lsn {} (etcd revision {})", r.head, r.revision);
    match (r.first_lsn, r.last_lsn) {
        (Some(a), Some(b)) => println!("lsn range: {a}..={b} ({} records)", r.records),
        _ => println!("lsn range: empty"),
    }
    println!(
        "keys: {} record keys, {} chunk keys",
        r.record_keys, r.chunk_keys
    );
    println!(
        "records: {} data, {} checkpoint entries, {} markers",
        r.data_entries, r.checkpoint_entries, r.markers
    );
    println!("size: {} payload", output::size(r.payload_bytes));
    if r.uncommitted_record_keys + r.uncommitted_chunk_keys > 0 {
        println!(
            "above head: {} record keys, {} chunk keys of an append that never committed (invisible; the next owner deletes them on open)",
            r.uncommitted_record_keys, r.uncommitted_chunk_keys
        );
    }
    inspect::print_checkpoints(&r.checkpoints);
    if r.problems.is_empty() {
        println!("problems: none");
    } else {
        println!("problems: {} (see `walctl verify`)", r.problems.len());
        for p in &r.problems {
            println!("  key {:?}: {}", p.key, p.why);
        }
    }
    inspect::print_space(&r.space);
    Ok(0)
}

/// `dump` on etcd.
pub fn dump(o: EtcdOptions, json: bool, args: &dump::Args) -> Result<u8> {
    let log = log_name(&o);
    let to = Lsn(args.to.unwrap_or(u64::MAX));
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    runtime()?.block_on(async {
        let reader = connect(&o).await?;
        let mut from = Lsn(args.from);
        'pages: loop {
            let page = reader
                .read_from(from, ReadLimit::default())
                .await
                .with_context(|| format!("reading {log}"))?;
            let Some(last) = page.last().map(|r| r.lsn) else {
                break;
            };
            for r in &page {
                if r.lsn > to {
                    break 'pages;
                }
                if args.entries_only && r.kind.is_marker() {
                    continue;
                }
                print_parts(&mut out, r.lsn, r.kind, &r.payload, None, json, args.format)?;
            }
            if last == Lsn::MAX {
                break;
            }
            from = last.next();
        }
        anyhow::Ok(())
    })?;
    out.flush().context("writing to stdout")?;
    Ok(0)
}

#[derive(Debug, Serialize)]
struct VerifyJson {
    backend: &'static str,
    log: String,
    ok: bool,
    status: &'static str,
    head: u64,
    revision: i64,
    record_keys: u64,
    chunk_keys: u64,
    records: u64,
    first_lsn: Option<u64>,
    last_lsn: Option<u64>,
    uncommitted_record_keys: u64,
    uncommitted_chunk_keys: u64,
    problems: Vec<ProblemJson>,
}

/// `verify` on etcd.
pub fn verify(o: EtcdOptions, json: bool, _args: &verify::Args) -> Result<u8> {
    let log = log_name(&o);
    let report = runtime()?.block_on(async {
        let reader = connect(&o).await?;
        reader
            .scan(|_, _| {})
            .await
            .with_context(|| format!("verifying {log}"))
    })?;
    let uncommitted = report.uncommitted_record_keys + report.uncommitted_chunk_keys;
    let (code, status) = if !report.problems.is_empty() {
        (EXIT_CORRUPT, "corrupt")
    } else if uncommitted > 0 {
        (EXIT_TORN_TAIL, "uncommitted-keys")
    } else {
        (0, "clean")
    };
    if json {
        output::json_pretty(&VerifyJson {
            backend: "etcd",
            log,
            ok: code == 0,
            status,
            head: report.head.get(),
            revision: report.revision,
            record_keys: report.record_keys,
            chunk_keys: report.chunk_keys,
            records: report.records,
            first_lsn: report.first_lsn.map(Lsn::get),
            last_lsn: report.last_lsn.map(Lsn::get),
            uncommitted_record_keys: report.uncommitted_record_keys,
            uncommitted_chunk_keys: report.uncommitted_chunk_keys,
            problems: problems_json(&report),
        })?;
        return Ok(code);
    }
    let range = match (report.first_lsn, report.last_lsn) {
        (Some(a), Some(b)) => format!("lsn {a}..={b}"),
        _ => "no records".into(),
    };
    println!(
        "{log}: head {}, {} record keys, {} chunk keys, {} records, {range} (etcd revision {})",
        report.head, report.record_keys, report.chunk_keys, report.records, report.revision
    );
    for p in &report.problems {
        println!("corrupt: key {:?}: {}", p.key, p.why);
    }
    match status {
        "clean" => println!("ok: no problems"),
        "uncommitted-keys" => println!(
            "{} record keys and {} chunk keys above the head: an append that never reached its commit point; \
             readers never see them and the next owner deletes them on open (no acknowledged entry is lost)",
            report.uncommitted_record_keys, report.uncommitted_chunk_keys
        ),
        _ => println!(
            "CORRUPT: {} keys cannot be read; recovery will fail on them",
            report.problems.len()
        ),
    }
    Ok(code)
}

/// `repair` on etcd: refused. Changing shared state needs ownership, and
/// walctl never takes ownership implicitly (that would fence the live
/// writer). What an etcd log can need repairing from (keys above the head
/// left by a writer that died mid-append) is removed by the next owner
/// when it opens the log; anything else is a corrupt committed key, which
/// `verify` names.
pub fn repair(o: EtcdOptions, _json: bool, _args: &repair::Args) -> Result<u8> {
    bail!(
        "repair is not supported on etcd ({}): only the log's owner may change it and walctl never takes ownership implicitly; \
         uncommitted keys above the head are removed by the next owner when it opens the log (run `walctl verify` to check it)",
        log_name(&o)
    )
}

/// `tail` on etcd.
pub fn tail(o: EtcdOptions, json: bool, args: &tail::Args) -> Result<u8> {
    if json && args.format == PayloadFormat::Raw {
        bail!("--format raw cannot be combined with --json (use hex or utf8)");
    }
    let log = log_name(&o);
    let keep = |r: &wal_core::Record| !(args.entries_only && r.kind.is_marker());
    runtime()?.block_on(async {
        let reader = connect(&o).await?;
        let stdout = io::stdout();
        let mut next = match args.from {
            Some(from) => Lsn(from),
            None => {
                // The last `-n` records: read from `lines` Lsns below the
                // head (fewer records if Lsns were skipped), keep the last
                // `lines` that pass the filter.
                let (head, _) = reader
                    .head()
                    .await
                    .with_context(|| format!("reading the head of {log}"))?;
                let lines = args.lines as u64;
                let mut from = Lsn(head.get().saturating_sub(lines.saturating_sub(1)).max(1));
                let mut last = std::collections::VecDeque::new();
                while from <= head {
                    let page = match reader.read_from(from, ReadLimit::default()).await {
                        // The last `-n` Lsns reach below what is stored
                        // (trimmed, or a truncate's gap): start at the first
                        // stored record instead.
                        Err(wal_core::Error::Trimmed { first, .. }) if first > from => {
                            from = first;
                            continue;
                        }
                        r => r.with_context(|| format!("reading {log}"))?,
                    };
                    let Some(l) = page.last().map(|r| r.lsn) else {
                        break;
                    };
                    for r in page.into_iter().filter(|r| r.lsn <= head) {
                        if keep(&r) {
                            last.push_back(r);
                            if last.len() > args.lines {
                                last.pop_front();
                            }
                        }
                    }
                    if l >= head {
                        break;
                    }
                    from = l.next();
                }
                let mut out = stdout.lock();
                for r in &last {
                    print_parts(&mut out, r.lsn, r.kind, &r.payload, None, json, args.format)?;
                }
                out.flush().context("writing to stdout")?;
                if head == Lsn::MAX {
                    return Ok(0);
                }
                head.next()
            }
        };
        let mut stream = if args.follow {
            reader.tail(next)
        } else {
            // Without -f: what is committed now, then stop.
            let (head, _) = reader
                .head()
                .await
                .with_context(|| format!("reading the head of {log}"))?;
            let mut out = stdout.lock();
            while next <= head {
                let page = reader
                    .read_from(next, ReadLimit::default())
                    .await
                    .with_context(|| format!("reading {log}"))?;
                let Some(l) = page.last().map(|r| r.lsn) else {
                    break;
                };
                for r in page.iter().filter(|r| r.lsn <= head && keep(r)) {
                    print_parts(&mut out, r.lsn, r.kind, &r.payload, None, json, args.format)?;
                }
                if l >= head || l == Lsn::MAX {
                    break;
                }
                next = l.next();
            }
            out.flush().context("writing to stdout")?;
            return Ok(0);
        };
        while let Some(item) = stream.next().await {
            match item {
                Ok(r) => {
                    if keep(&r) {
                        let mut out = stdout.lock();
                        print_parts(&mut out, r.lsn, r.kind, &r.payload, None, json, args.format)?;
                        out.flush().context("writing to stdout")?;
                    }
                }
                // The stream retries by itself; say so once per failure.
                Err(e) => eprintln!("walctl: warning: reading {log}: {e} (retrying)"),
            }
        }
        Ok(0)
    })
}

/// The scan's key problems, as JSON rows.
fn problems_json(report: &ScanReport) -> Vec<ProblemJson> {
    report
        .problems
        .iter()
        .map(|p| ProblemJson {
            kind: "corrupt",
            key: p.key.clone(),
            why: p.why.clone(),
        })
        .collect()
}
