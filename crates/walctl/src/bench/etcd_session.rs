//! `walctl bench etcd-session`: many logs on one `EtcdSession` against the
//! same number of independent stores, against one etcd, in one run.
//!
//! Each system opens `--logs` Wals (fresh log names under `--prefix`), then
//! runs one task per log appending `--size`-byte entries, each awaited until
//! committed, for `--seconds`; then closes them and deletes their keys.
//!
//! - `session`: one `EtcdSession` (one lease, one keep-alive task) and
//!   `EtcdStore::with_session` for every log;
//! - `independent`: `EtcdStore::with_client` for every log on ONE shared
//!   client (so both systems use one connection, and the difference is the
//!   leases and keep-alives): each store grants its own lease and runs its
//!   own keep-alive task, as before sessions.
//!
//! Reported per system: leases granted while opening and leases alive
//! during the appends (etcd's lease list, minus those alive before), the
//! keep-alive traffic during the append phase (from etcd's `/metrics` on
//! the first endpoint, plain http only: the leader's renewed-lease counter
//! and the LeaseKeepAlive gRPC messages received, per second; the session
//! also counts what it sent), the time to open every log, and the total
//! append rate with its latencies.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wal_core::{Wal, WalOptions};
use wal_etcd::{etcd_client, EtcdOptions, EtcdSession, EtcdStore};

use super::stats::{self, Row};
use crate::{cmd::etcd::redact_endpoint, output::parse_size, target::TargetArgs};

/// `bench etcd-session` flags (endpoints, prefix, TLS and auth come from the
/// global target flags).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Logs per system, each with one appending task.
    #[arg(long, default_value_t = 200)]
    pub logs: usize,
    /// Seconds of appends per system.
    #[arg(long, default_value_t = 15.0)]
    pub seconds: f64,
    /// Payload bytes per entry.
    #[arg(long, value_parser = parse_size, default_value = "128")]
    pub size: u64,
    /// Lease TTL, whole seconds (keep-alives go every TTL/3).
    #[arg(long, default_value_t = 10)]
    pub ttl: u64,
    /// Run the independent stores first (default: the session first), to
    /// see whether the order matters on a busy machine.
    #[arg(long)]
    pub independent_first: bool,
    /// The independent stores' connections: `shared` (one client for all,
    /// like the session's) or `per-store` (each store connects its own
    /// client, as `EtcdStore::new` does).
    #[arg(long, value_enum, default_value_t = Clients::Shared)]
    pub independent_clients: Clients,
}

/// How the independent stores connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Clients {
    /// One client (one connection) for every store.
    Shared,
    /// A client of its own per store.
    PerStore,
}

#[derive(Debug, Serialize)]
struct KeepAlives {
    /// etcd_debugging_lease_renewed_total, per second of the append phase
    /// (renewals the leader applied).
    renewed_per_sec: Option<f64>,
    /// grpc_server_msg_received_total{grpc_method="LeaseKeepAlive"} per
    /// second: keep-alive requests etcd received.
    grpc_msgs_per_sec: Option<f64>,
    /// Keep-alives the library counted sending (sessions count theirs).
    sent_per_sec: Option<f64>,
}

#[derive(Debug, Serialize)]
struct SystemResult {
    system: &'static str,
    /// How the stores connect: one client for all, or one per store.
    clients: &'static str,
    logs: usize,
    /// etcd_debugging_lease_granted_total during the open phase (null if
    /// the metrics could not be read).
    leases_granted: Option<f64>,
    /// Leases alive during the appends, minus those alive before the run.
    leases_alive: i64,
    open_seconds: f64,
    keep_alives: KeepAlives,
    appends: Row,
}

#[derive(Debug, Serialize)]
struct Output {
    benchmark: &'static str,
    endpoints: Vec<String>,
    metrics: Option<String>,
    logs: usize,
    entry_bytes: u64,
    lease_ttl_seconds: u64,
    /// The machine's 1-minute load average when the run started (2 cores
    /// shared with other work make the append rates noisy).
    load_average_1m: Option<f64>,
    systems: Vec<SystemResult>,
    /// session appends/s divided by independent appends/s.
    append_rate_ratio: f64,
}

/// Runs `bench etcd-session`.
pub fn run(target: &TargetArgs, json: bool, args: &Args) -> Result<u8> {
    if args.logs == 0 {
        bail!("--logs must be at least 1");
    }
    if args.size == 0 || args.size > 1 << 20 {
        bail!("--size must be between 1 byte and 1 MiB");
    }
    if !args.seconds.is_finite() || args.seconds <= 0.0 {
        bail!("--seconds must be positive");
    }
    if target.endpoints.is_empty() {
        bail!("bench etcd-session needs --endpoints URL[,URL...] (or WALCTL_ETCD_ENDPOINTS)");
    }
    let run_id = format!(
        "walctl-session-bench-{}-{:08x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
    );
    let endpoints = target.etcd_endpoints()?;
    let connect = target.etcd_connect_options()?;
    let base = target
        .etcd_options("unused")?
        .lease_ttl(Duration::from_secs(args.ttl));
    let prefix = format!("{}{run_id}/", base.prefix);
    let base = base.prefix(prefix.clone());
    let metrics = endpoints
        .first()
        .filter(|e| e.starts_with("http://"))
        .map(|e| format!("{}/metrics", e.trim_end_matches('/')));
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let result = rt.block_on(async {
        let client = etcd_client::Client::connect(endpoints.clone(), Some(connect.clone()))
            .await
            .context("connecting to etcd")?;
        let mut systems = Vec::new();
        let order = if args.independent_first {
            ["independent", "session"]
        } else {
            ["session", "independent"]
        };
        for system in order {
            let r = run_system(system, &client, &base, metrics.as_deref(), args).await?;
            systems.push(r);
        }
        anyhow::Ok(systems)
    });
    let cleanup = rt.block_on(async {
        let mut c = etcd_client::Client::connect(endpoints.clone(), Some(connect))
            .await
            .context("connecting to clean up")?;
        tokio::time::timeout(
            Duration::from_secs(30),
            c.delete(
                prefix.as_str(),
                Some(etcd_client::DeleteOptions::new().with_prefix()),
            ),
        )
        .await
        .context("deleting the benchmark's keys: timed out")?
        .with_context(|| format!("deleting the benchmark's keys under {prefix}"))?;
        anyhow::Ok(())
    });
    let systems = result?;
    cleanup?;
    let rate = |s: &str| {
        systems
            .iter()
            .find(|r| r.system == s)
            .map_or(0.0, |r| r.appends.entries_per_sec)
    };
    let out = Output {
        benchmark: "etcd-session",
        endpoints: endpoints.iter().map(|e| redact_endpoint(e)).collect(),
        metrics: metrics.clone(),
        logs: args.logs,
        entry_bytes: args.size,
        lease_ttl_seconds: args.ttl,
        load_average_1m: load,
        append_rate_ratio: rate("session") / rate("independent").max(1e-9),
        systems,
    };
    if json {
        crate::output::json_line(&mut std::io::stdout().lock(), &out)?;
        return Ok(0);
    }
    let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
    println!(
        "{} logs, {} B entries, lease TTL {} s, {} s of appends per system",
        args.logs, args.size, args.ttl, args.seconds
    );
    println!(
        "{:<12} {:>8} {:>8} {:>8} {:>12} {:>12} {:>10} {:>10} {:>9}",
        "system",
        "granted",
        "alive",
        "open s",
        "renewed/s",
        "ka msgs/s",
        "appends/s",
        "p50 us",
        "p99 us"
    );
    for s in &out.systems {
        println!(
            "{:<12} {:>8} {:>8} {:>8.2} {:>12} {:>12} {:>10.0} {:>10} {:>9}",
            s.system,
            opt(s.leases_granted),
            s.leases_alive,
            s.open_seconds,
            opt(s.keep_alives.renewed_per_sec),
            opt(s.keep_alives.grpc_msgs_per_sec),
            s.appends.entries_per_sec,
            s.appends.p50_us,
            s.appends.p99_us
        );
    }
    println!(
        "session / independent appends/s: {:.2}x",
        out.append_rate_ratio
    );
    Ok(0)
}

/// The counters read from etcd's metrics.
#[derive(Clone, Copy, Default)]
struct Counters {
    granted: f64,
    renewed: f64,
    keepalive_msgs: f64,
}

async fn counters(url: Option<&str>) -> Option<Counters> {
    let text = fetch_metrics(url?).await.ok()?;
    let sum = |name: &str, label: Option<&str>| -> f64 {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .filter(|l| label.is_none_or(|lb| l.contains(lb)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    Some(Counters {
        granted: sum("etcd_debugging_lease_granted_total", None),
        renewed: sum("etcd_debugging_lease_renewed_total", None),
        keepalive_msgs: sum(
            "grpc_server_msg_received_total",
            Some("grpc_method=\"LeaseKeepAlive\""),
        ),
    })
}

/// GET `url` (plain http) with HTTP/1.0: the body.
async fn fetch_metrics(url: &str) -> Result<String> {
    let rest = url
        .strip_prefix("http://")
        .context("metrics need an http:// endpoint")?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let host = host.rsplit('@').next().unwrap_or(host);
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect(host).await?;
        let req = format!("GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n");
        s.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        std::io::Result::Ok(buf)
    };
    let buf = tokio::time::timeout(Duration::from_secs(5), fetch)
        .await
        .context("metrics: no answer within 5 s")?
        .context("metrics")?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    match text.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.") && head.contains(" 200 ") => {
            Ok(body.to_string())
        }
        _ => bail!("metrics: not a 200 answer"),
    }
}

async fn leases_alive(client: &etcd_client::Client) -> Result<i64> {
    let mut c = client.clone();
    let r = c.leases().await.context("listing leases")?;
    Ok(r.leases().len() as i64)
}

async fn run_system(
    system: &'static str,
    client: &etcd_client::Client,
    base: &EtcdOptions,
    metrics: Option<&str>,
    args: &Args,
) -> Result<SystemResult> {
    let leases_before = leases_alive(client).await?;
    let before_open = counters(metrics).await;
    let opened_at = Instant::now();
    let session = match system {
        "session" => Some(
            EtcdSession::with_client(client.clone(), base)
                .await
                .context("starting the session")?,
        ),
        _ => None,
    };
    let mut wals = Vec::with_capacity(args.logs);
    let mut opening = Vec::new();
    for i in 0..args.logs {
        let options = base.clone().name(format!("{system}-{i:04}"));
        let store = match &session {
            Some(s) => EtcdStore::with_session(s.clone(), options),
            None if args.independent_clients == Clients::PerStore => EtcdStore::new(options),
            None => EtcdStore::with_client(client.clone(), options),
        };
        opening.push(tokio::spawn(Wal::open(store, WalOptions::default())));
        // Bounded concurrency of opens: 16 at a time.
        if opening.len() == 16 {
            for o in opening.drain(..) {
                let (wal, _) = o
                    .await
                    .context("an open panicked")?
                    .context("opening a log")?;
                wals.push(wal);
            }
        }
    }
    for o in opening.drain(..) {
        let (wal, _) = o
            .await
            .context("an open panicked")?
            .context("opening a log")?;
        wals.push(wal);
    }
    let open_seconds = opened_at.elapsed().as_secs_f64();
    let after_open = counters(metrics).await;
    let leases_alive = leases_alive(client).await? - leases_before;
    let sent_before = session.as_ref().map(|s| s.keep_alives_sent());

    let payload = Bytes::from(vec![0x5au8; usize::try_from(args.size).context("size")?]);
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(args.seconds);
    let tasks: Vec<_> = wals
        .iter()
        .enumerate()
        .map(|(i, wal)| {
            let (wal, payload) = (wal.clone(), payload.clone());
            tokio::spawn(async move {
                let mut h = stats::histogram()?;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    wal.append(payload.clone()).await.with_context(|| {
                        format!(
                            "{system}: append to log {i} after {:.1} s of appends",
                            start.elapsed().as_secs_f64()
                        )
                    })?;
                    stats::record(&mut h, t.elapsed());
                }
                anyhow::Ok(h)
            })
        })
        .collect();
    let mut total = stats::histogram()?;
    let mut failed = None;
    for t in tasks {
        match t.await.context("a writer task panicked").and_then(|r| r) {
            Ok(h) => total.add(&h).context("merging histograms")?,
            Err(e) => failed = failed.or(Some(e)),
        }
    }
    let elapsed = start.elapsed();
    let after_run = counters(metrics).await;
    let sent = session
        .as_ref()
        .zip(sent_before)
        .map(|(s, b)| (s.keep_alives_sent() - b) as f64 / elapsed.as_secs_f64());
    let closes = futures::future::join_all(wals.iter().map(|w| w.close())).await;
    if let Some(s) = session {
        s.close().await.context("closing the session")?;
    }
    if let Some(e) = failed {
        return Err(e);
    }
    for c in closes {
        c.context("closing a log")?;
    }
    let per_sec = |f: fn(&Counters) -> f64| {
        after_open
            .zip(after_run)
            .map(|(a, b)| (f(&b) - f(&a)) / elapsed.as_secs_f64())
    };
    Ok(SystemResult {
        system,
        clients: match (system, args.independent_clients) {
            ("independent", Clients::PerStore) => "one client per store",
            _ => "one shared client",
        },
        logs: args.logs,
        leases_granted: before_open
            .zip(after_open)
            .map(|(a, b)| b.granted - a.granted),
        leases_alive,
        open_seconds,
        keep_alives: KeepAlives {
            renewed_per_sec: per_sec(|c| c.renewed),
            grpc_msgs_per_sec: per_sec(|c| c.keepalive_msgs),
            sent_per_sec: sent,
        },
        appends: Row::new(system, args.logs, args.size, elapsed, &total),
    })
}
