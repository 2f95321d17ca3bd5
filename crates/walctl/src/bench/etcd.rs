//! `walctl bench etcd`: N tasks append to one `Wal` on `EtcdStore`, each
//! append awaited until durable (its txn committed by etcd), against raw
//! single puts on the same etcd in the same process and run.
//!
//! The raw peer (`--compare`) is DESIGN §9's "N clients doing raw single
//! puts": N tasks, each with ITS OWN etcd client (its own connection), each
//! doing one `put` of `--size` bytes at a time and awaiting it. With
//! `--writers 1` that is raw sequential puts. Keys are the same shape as the
//! log's (prefix, name, a 20-digit counter).
//!
//! The two run in alternating segments (`--rounds`, default 3: wal, raw,
//! wal, raw, wal, raw), each doing 1/ROUNDS of `--count` (or `--seconds`),
//! against one open Wal and one set of connected clients; each row sums its
//! segments. On a shared machine a burst of load then hits both alike.
//!
//! Every run uses a fresh log name, `walctl-bench-{pid}-{random}` under
//! `--prefix`, and deletes its keys (the log's and the raw peer's) at the
//! end, also when a run fails.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use hdrhistogram::Histogram;
use serde::Serialize;
use wal_core::{Wal, WalOptions};
use wal_etcd::{etcd_client, EtcdOptions, EtcdStore};

use super::stats::{self, Row};
use crate::{cmd::etcd::redact_endpoint, output::parse_size, target::TargetArgs};

/// `bench etcd` flags (the endpoints, prefix, TLS and auth come from the
/// global target flags; `--name` is ignored: every run uses a fresh name).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Concurrent writers: tokio tasks sharing one Wal; for the raw peer,
    /// tasks with one etcd client each.
    #[arg(long, default_value_t = 1)]
    pub writers: usize,
    /// Payload bytes per entry (e.g. 128, 64KiB).
    #[arg(long, value_parser = parse_size, default_value = "128")]
    pub size: u64,
    /// Entries per system, across all writers (default 5000 unless
    /// --seconds is given).
    #[arg(long, conflicts_with = "seconds")]
    pub count: Option<u64>,
    /// Run each system for this many seconds instead of a count.
    #[arg(long)]
    pub seconds: Option<f64>,
    /// Also run the peer: raw single puts, one client per writer.
    #[arg(long)]
    pub compare: bool,
    /// Alternate the systems in this many segments (wal, raw, wal, raw,
    /// ...), each doing 1/ROUNDS of the work, so that a change in the
    /// machine's load during the run hits both alike.
    #[arg(long, default_value_t = 3)]
    pub rounds: u64,
}

#[derive(Debug, Serialize)]
struct Ratios {
    /// Wal entries/s divided by the raw puts' (same writers, same etcd).
    wal_vs_raw: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Output {
    benchmark: &'static str,
    endpoints: Vec<String>,
    writers: usize,
    entry_bytes: u64,
    /// Segments each system ran in, alternating.
    rounds: u64,
    /// How the raw peer connects.
    raw_clients: &'static str,
    rows: Vec<Row>,
    ratios: Ratios,
}

const RAW_CLIENTS: &str = "one etcd client (connection) per writer task";

/// Runs `bench etcd`.
pub fn run(target: &TargetArgs, json: bool, args: &Args) -> Result<u8> {
    if args.writers == 0 {
        bail!("--writers must be at least 1");
    }
    if args.size == 0 || args.size > 1 << 20 {
        bail!("--size must be between 1 byte and 1 MiB");
    }
    if target.endpoints.is_empty() {
        bail!("bench etcd needs --endpoints URL[,URL...] (or WALCTL_ETCD_ENDPOINTS)");
    }
    let count = match (args.count, args.seconds) {
        (Some(c), _) => Some(c),
        (None, None) => Some(5_000),
        (None, Some(_)) => None,
    };
    let name = format!(
        "walctl-bench-{}-{:08x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
    );
    let options = target.etcd_options(&name)?;
    let endpoints = target.etcd_endpoints()?;
    let connect = target.etcd_connect_options()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let wal_prefix = format!("{}{}/", options.prefix, name);
    let raw_prefix = format!("{}{}-raw/", options.prefix, name);
    let rounds = args.rounds.max(1);
    let result = rt.block_on(run_rounds(
        options,
        &endpoints,
        connect.clone(),
        &raw_prefix,
        args,
        count,
        rounds,
    ));
    // Clean up whatever happened above.
    let cleanup = rt.block_on(async {
        let mut c = etcd_client::Client::connect(endpoints.clone(), Some(connect.clone()))
            .await
            .context("connecting to clean up")?;
        for p in [&wal_prefix, &raw_prefix] {
            tokio::time::timeout(
                Duration::from_secs(30),
                c.delete(
                    p.as_str(),
                    Some(etcd_client::DeleteOptions::new().with_prefix()),
                ),
            )
            .await
            .context("deleting the benchmark's keys: timed out")?
            .with_context(|| format!("deleting the benchmark's keys under {p}"))?;
        }
        anyhow::Ok(())
    });
    let rows = result?;
    cleanup?;
    if !json {
        stats::print_table(&rows);
    }

    let wal = rows[0].entries_per_sec;
    let ratios = Ratios {
        wal_vs_raw: rows
            .iter()
            .find(|r| r.system.starts_with("raw"))
            .map(|r| wal / r.entries_per_sec.max(1e-9)),
    };
    if json {
        crate::output::json_line(
            &mut std::io::stdout().lock(),
            &Output {
                benchmark: "etcd",
                endpoints: endpoints.iter().map(|e| redact_endpoint(e)).collect(),
                writers: args.writers,
                entry_bytes: args.size,
                rounds,
                raw_clients: RAW_CLIENTS,
                rows,
                ratios,
            },
        )?;
    } else if let Some(r) = ratios.wal_vs_raw {
        println!(
            "wal-etcd / raw-put: {r:.2}x (entries/s, {} writers; raw: {RAW_CLIENTS})",
            args.writers
        );
    }
    Ok(0)
}

/// How much one segment of a run does: a number of entries or a time.
#[derive(Clone, Copy)]
enum Amount {
    Count(u64),
    Seconds(f64),
}

/// Runs `writers` tasks, each calling `op` until `amount` is used up;
/// returns the merged latency histogram and the wall time.
async fn drive<S, F, Fut>(
    states: Vec<S>,
    amount: Amount,
    op: F,
) -> Result<(Vec<S>, Histogram<u64>, Duration)>
where
    S: Send + 'static,
    F: Fn(S, u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = (S, Result<()>)> + Send,
{
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let (count, deadline) = match amount {
        Amount::Count(c) => (Some(c), None),
        Amount::Seconds(s) => (None, Some(start + Duration::from_secs_f64(s))),
    };
    let tasks: Vec<_> = states
        .into_iter()
        .map(|mut state| {
            let (next, op) = (next.clone(), op.clone());
            tokio::spawn(async move {
                let mut h = stats::histogram()?;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if count.is_some_and(|c| i >= c)
                        || deadline.is_some_and(|d| Instant::now() >= d)
                    {
                        break;
                    }
                    let t = Instant::now();
                    let (s, r) = op(state, i).await;
                    state = s;
                    r?;
                    stats::record(&mut h, t.elapsed());
                }
                anyhow::Ok((state, h))
            })
        })
        .collect();
    let mut total = stats::histogram()?;
    let mut states = Vec::with_capacity(tasks.len());
    let mut failed = None;
    for t in tasks {
        match t.await.context("a writer task panicked").and_then(|r| r) {
            Ok((s, h)) => {
                total.add(&h).context("merging histograms")?;
                states.push(s);
            }
            Err(e) => failed = failed.or(Some(e)),
        }
    }
    let elapsed = start.elapsed();
    match failed {
        Some(e) => Err(e),
        None => Ok((states, total, elapsed)),
    }
}

/// The measured systems, run in alternating segments.
#[allow(clippy::too_many_arguments)]
async fn run_rounds(
    options: EtcdOptions,
    endpoints: &[String],
    connect: etcd_client::ConnectOptions,
    raw_prefix: &str,
    args: &Args,
    count: Option<u64>,
    rounds: u64,
) -> Result<Vec<Row>> {
    let (wal, _recovery) = Wal::open(EtcdStore::new(options), WalOptions::default())
        .await
        .context("opening the wal on etcd")?;
    let result = async {
        let payload = Bytes::from(vec![0x3cu8; usize::try_from(args.size).context("size")?]);
        let mut clients = Vec::new();
        if args.compare {
            for _ in 0..args.writers {
                let mut c = etcd_client::Client::connect(endpoints, Some(connect.clone()))
                    .await
                    .context("connecting a raw-put client")?;
                // One round trip per client before timing: the connection is up.
                c.get(format!("{raw_prefix}warmup"), None)
                    .await
                    .context("raw-put client warm-up")?;
                clients.push(c);
            }
        }
        let segment = |round: u64| match (count, args.seconds) {
            (Some(c), _) => Amount::Count(c / rounds + u64::from(round < c % rounds)),
            (None, Some(s)) => Amount::Seconds(s / rounds as f64),
            (None, None) => Amount::Count(0),
        };
        let (mut wal_h, mut raw_h) = (stats::histogram()?, stats::histogram()?);
        let (mut wal_t, mut raw_t) = (Duration::ZERO, Duration::ZERO);
        for round in 0..rounds {
            let amount = segment(round);
            let states = vec![(wal.clone(), payload.clone()); args.writers];
            let (_, h, t) = drive(states, amount, |(wal, p): (Wal, Bytes), _| async move {
                let r = wal.append(p.clone()).await.map(|_| ()).context("append");
                ((wal, p), r)
            })
            .await?;
            wal_h.add(&h).context("merging histograms")?;
            wal_t += t;
            if args.compare {
                let states: Vec<_> = std::mem::take(&mut clients)
                    .into_iter()
                    .map(|c| (c, payload.clone(), format!("{raw_prefix}{round}/")))
                    .collect();
                let (states, h, t) = drive(
                    states,
                    amount,
                    |(mut c, p, prefix): (etcd_client::Client, Bytes, String), i| async move {
                        let key = format!("{prefix}{i:020}");
                        let r = match tokio::time::timeout(
                            Duration::from_secs(10),
                            c.put(key, p.to_vec(), None),
                        )
                        .await
                        {
                            Ok(r) => r.map(|_| ()).context("raw put"),
                            Err(_) => Err(anyhow::anyhow!("raw put: no answer within 10 s")),
                        };
                        ((c, p, prefix), r)
                    },
                )
                .await?;
                clients = states.into_iter().map(|(c, _, _)| c).collect();
                raw_h.add(&h).context("merging histograms")?;
                raw_t += t;
            }
        }
        let mut rows = vec![Row::new("wal-etcd", args.writers, args.size, wal_t, &wal_h)];
        if args.compare {
            rows.push(Row::new("raw-put", args.writers, args.size, raw_t, &raw_h));
        }
        anyhow::Ok(rows)
    }
    .await;
    let closed = wal.close().await.context("closing the wal");
    let rows = result?;
    closed?;
    Ok(rows)
}
