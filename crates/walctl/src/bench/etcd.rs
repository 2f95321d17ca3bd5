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
//! `--compare` also runs two more peers: the same puts from N tasks sharing
//! ONE client (one connection, as the Wal's writers share one), and the
//! fenced group-commit limit: one task looping txns of the Wal's shape
//! (compare an owner key's create revision; put one value carrying N
//! entries; put a head key), N entries per txn.
//!
//! The systems run in alternating segments (`--rounds`, default 3: wal, raw,
//! wal, raw, wal, raw), each doing 1/ROUNDS of `--count` (or `--seconds`),
//! against one open Wal and one set of connected clients; each row sums its
//! segments. On a shared machine a burst of load then hits both alike.
//!
//! Every run uses a fresh log name, `walctl-bench-{pid}-{random}` under
//! `--prefix`, and deletes its keys (the log's and the raw peer's) at the
//! end, also when a run fails.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use hdrhistogram::Histogram;
use serde::Serialize;
use wal_core::{Wal, WalOptions};
use wal_etcd::{etcd_client, EtcdOptions, EtcdStore};

use super::{
    batches::{BatchStats, Batches, Counting},
    stats::{self, Row},
};
use crate::{cmd::etcd::redact_endpoint, output::parse_size, target::TargetArgs};

/// `bench etcd` flags (the endpoints, prefix, TLS and auth come from the
/// global target flags; `--name` is ignored: every run uses a fresh name).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Concurrent writers: tokio tasks sharing one Wal; for the raw peer,
    /// tasks with one etcd client each.
    #[arg(long, default_value_t = 1)]
    pub writers: usize,
    /// Payload bytes per entry (e.g. 128, 64KiB; KiB = 1024, KB = 1000).
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
    /// Wal entries/s divided by the raw puts' over one shared client.
    wal_vs_raw_shared: Option<f64>,
    /// Wal entries/s divided by the fenced group-commit limit's.
    wal_vs_fenced_limit: Option<f64>,
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
    /// Entries per txn of the Wal's runs.
    batches: BatchStats,
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
    let (rows, batches) = result?;
    cleanup?;
    if !json {
        stats::print_table(&rows);
    }

    let wal = rows[0].entries_per_sec;
    let ratio = |system: &str| {
        rows.iter()
            .find(|r| r.system == system)
            .map(|r| wal / r.entries_per_sec.max(1e-9))
    };
    let ratios = Ratios {
        wal_vs_raw: ratio("raw-put"),
        wal_vs_raw_shared: ratio("raw-put-shared"),
        wal_vs_fenced_limit: ratio("raw-fenced-txn"),
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
                batches,
                ratios,
            },
        )?;
    } else {
        println!(
            "entries per txn: median {}, p10 {}, p90 {}, mean {:.1}, max {} ({} txns)",
            batches.p50, batches.p10, batches.p90, batches.mean, batches.max, batches.batches
        );
        if let Some(r) = ratios.wal_vs_raw {
            println!(
                "wal-etcd / raw-put: {r:.2}x (entries/s, {} writers; raw: {RAW_CLIENTS})",
                args.writers
            );
        }
        if let Some(r) = ratios.wal_vs_raw_shared {
            println!("wal-etcd / raw-put-shared: {r:.2}x (entries/s; one client for all tasks)");
        }
        if let Some(r) = ratios.wal_vs_fenced_limit {
            println!(
                "wal-etcd / raw-fenced-txn: {r:.2}x (entries/s; {} entries per txn)",
                args.writers
            );
        }
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
    let start = Instant::now();
    let budget = Arc::new(match amount {
        Amount::Count(c) => stats::Budget::new(Some(c), None),
        Amount::Seconds(s) => stats::Budget::new(None, Some(s)),
    });
    let tasks: Vec<_> = states
        .into_iter()
        .map(|mut state| {
            let (budget, op) = (budget.clone(), op.clone());
            tokio::spawn(async move {
                let mut h = stats::histogram()?;
                while let Some(i) = budget.take() {
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
) -> Result<(Vec<Row>, BatchStats)> {
    let batches = Batches::new()?;
    let store = Counting::new(EtcdStore::new(options), batches.clone());
    let (wal, _recovery) = Wal::open(store, WalOptions::default())
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
        let (mut shared_h, mut fenced_h) = (stats::histogram()?, stats::histogram()?);
        let (mut shared_t, mut fenced_t) = (Duration::ZERO, Duration::ZERO);
        let mut shared = None;
        let mut fenced = None;
        if args.compare {
            let c = etcd_client::Client::connect(endpoints, Some(connect.clone()))
                .await
                .context("connecting the shared raw client")?;
            shared = Some(c.clone());
            fenced = Some(Fenced::new(c, &format!("{raw_prefix}fenced/"), args).await?);
        }
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
                let (states, h, t) = drive(states, amount, raw_put).await?;
                clients = states.into_iter().map(|(c, _, _)| c).collect();
                raw_h.add(&h).context("merging histograms")?;
                raw_t += t;
            }
            if let Some(c) = &shared {
                let prefix = format!("{raw_prefix}shared-{round}/");
                let states = vec![(c.clone(), payload.clone(), prefix); args.writers];
                let (_, h, t) = drive(states, amount, raw_put).await?;
                shared_h.add(&h).context("merging histograms")?;
                shared_t += t;
            }
            if let Some(f) = fenced.as_mut() {
                let t = f.run(amount, &mut fenced_h).await?;
                fenced_t += t;
            }
        }
        let mut rows = vec![Row::new("wal-etcd", args.writers, args.size, wal_t, &wal_h)];
        if args.compare {
            rows.push(Row::new("raw-put", args.writers, args.size, raw_t, &raw_h));
            let w = args.writers;
            rows.push(Row::new(
                "raw-put-shared",
                w,
                args.size,
                shared_t,
                &shared_h,
            ));
            rows.push(Row::new(
                "raw-fenced-txn",
                w,
                args.size,
                fenced_t,
                &fenced_h,
            ));
        }
        anyhow::Ok((rows, batches.stats()))
    }
    .await;
    let closed = wal.close().await.context("closing the wal");
    let rows = result?;
    closed?;
    Ok(rows)
}

/// One raw put of the peer: `p` under `prefix` + the op's counter.
async fn raw_put(
    (mut c, p, prefix): (etcd_client::Client, Bytes, String),
    i: u64,
) -> ((etcd_client::Client, Bytes, String), Result<()>) {
    let key = format!("{prefix}{i:020}");
    let r = match tokio::time::timeout(Duration::from_secs(10), c.put(key, p.to_vec(), None)).await
    {
        Ok(r) => r.map(|_| ()).context("raw put"),
        Err(_) => Err(anyhow::anyhow!("raw put: no answer within 10 s")),
    };
    ((c, p, prefix), r)
}

/// The fenced group-commit limit: txns of the Wal's shape, one at a time.
struct Fenced {
    client: etcd_client::Client,
    owner: String,
    owner_rev: i64,
    prefix: String,
    /// One value carrying `per_txn` entries of the payload size.
    value: Vec<u8>,
    per_txn: u64,
    next: u64,
}

impl Fenced {
    async fn new(mut client: etcd_client::Client, prefix: &str, args: &Args) -> Result<Fenced> {
        let owner = format!("{prefix}owner");
        let r = client
            .put(owner.as_str(), "bench", None)
            .await
            .context("creating the fenced peer's owner key")?;
        let owner_rev = r.header().map_or(0, |h| h.revision());
        let per_txn = u64::try_from(args.writers).context("writers")?;
        let len = usize::try_from(args.size * per_txn).context("value size")?;
        Ok(Fenced {
            client,
            owner,
            owner_rev,
            prefix: prefix.to_string(),
            value: vec![0x5au8; len],
            per_txn,
            next: 0,
        })
    }

    /// Loops txns for `amount` of entries (or time); each entry is recorded
    /// with its txn's latency.
    async fn run(&mut self, amount: Amount, h: &mut Histogram<u64>) -> Result<Duration> {
        use etcd_client::{Compare, CompareOp, Txn, TxnOp};
        let start = Instant::now();
        let mut done = 0u64;
        loop {
            let over = match amount {
                Amount::Count(c) => done >= c,
                Amount::Seconds(s) => start.elapsed().as_secs_f64() >= s,
            };
            if over {
                break;
            }
            // The last txn of a counted segment carries only what is left.
            let n = match amount {
                Amount::Count(c) => self.per_txn.min(c - done),
                Amount::Seconds(_) => self.per_txn,
            };
            let len = usize::try_from(n).context("entries")? * self.value.len()
                / usize::try_from(self.per_txn).context("entries")?;
            self.next += 1;
            let txn = Txn::new()
                .when([Compare::create_revision(
                    self.owner.as_str(),
                    CompareOp::Equal,
                    self.owner_rev,
                )])
                .and_then([
                    TxnOp::put(
                        format!("{}{:020}", self.prefix, self.next),
                        self.value[..len].to_vec(),
                        None,
                    ),
                    TxnOp::put(format!("{}head", self.prefix), self.next.to_string(), None),
                ]);
            let t = Instant::now();
            let r = tokio::time::timeout(Duration::from_secs(10), self.client.txn(txn))
                .await
                .map_err(|_| anyhow::anyhow!("fenced txn: no answer within 10 s"))?
                .context("fenced txn")?;
            if !r.succeeded() {
                bail!("fenced txn: the owner compare failed");
            }
            let took = t.elapsed();
            for _ in 0..n {
                stats::record(h, took);
            }
            done += n;
        }
        Ok(start.elapsed())
    }
}
