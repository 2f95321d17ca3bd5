//! `kvstore`: a redo-log key-value store on a write-ahead log directory.
//!
//! Every write is appended to the log (`wal::fs::FsStore`) and awaited, so it
//! is on disk, before it is applied to the in-memory map; every
//! `--checkpoint-every` writes the whole map is checkpointed in the
//! background. On open, the last committed checkpoint rebuilds the map and
//! the writes logged after it are re-applied. The store itself, and the byte
//! layout of its log entries, are in `kv.rs` beside this file.
//!
//! ```text
//! cargo run --release --example kvstore -- demo --dir /tmp/kvstore-demo
//! cargo run --release --example kvstore -- put --dir /tmp/kv greeting hello
//! cargo run --release --example kvstore -- get --dir /tmp/kv greeting
//! cargo run --release --example kvstore -- del --dir /tmp/kv greeting
//! cargo run --release --example kvstore -- list --dir /tmp/kv
//! cargo run --release --example kvstore -- checkpoint --dir /tmp/kv
//! ```
//!
//! `demo` is the crash test to watch: it starts a writer process (this
//! program again, hidden subcommand `serve`) that applies random puts and
//! deletes as fast as the disk acknowledges them, kills it with SIGKILL at a
//! random point, reopens the directory and checks that the recovered map is
//! exactly the one implied by every write the writer acknowledged. Rounds
//! repeat on the same directory.
//!
//! The writer speaks to the demo over its stdout, one line per event, each
//! printed only after the event is durable:
//!
//! - `READY <next seq> <keys>`: the log is open and recovered;
//! - `ACK <seq> <lsn>`: write number `seq` is durable at `lsn` and applied;
//! - `CKPT <begin lsn> <commit lsn> <keys> <seq>`: a checkpoint committed.
//!
//! Write number `seq` is `kv::demo_op(seed, seq, keys)`, so the demo can
//! recompute every write from the seed it gave the writer.
//!
//! ## On etcd
//!
//! Every command also runs on a log in etcd instead of a directory:
//! `--etcd ENDPOINTS --name LOG [--prefix P]` (build with `--features
//! etcd`). `get` and `list` then read the log without claiming it (beside a
//! running writer); `put`, `del` and `checkpoint` claim it, waiting up to
//! 30 s for another owner's lease to lapse.
//!
//! ```text
//! docker-compose up -d etcd
//! cargo run --release --example kvstore --features etcd -- demo --etcd http://127.0.0.1:2379
//! cargo run --release --example kvstore --features etcd -- list --etcd http://127.0.0.1:2379 --name kvstore
//! ```
//!
//! There `demo` runs a primary and a standby process on one log, takes the
//! primary down (SIGKILL, or SIGSTOP and later SIGCONT), and checks the
//! standby's takeover and the old primary's fencing: see `etcd.rs`.

#[cfg(feature = "etcd")]
mod etcd;
#[cfg(feature = "etcd")]
mod follower;
mod kv;

use std::{
    error::Error,
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Command, ExitCode, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use clap::{Args, Parser, Subcommand};
use kv::{demo_op, splitmix64, KvState, KvStore, Op, RecoveryReport};

type BoxError = Box<dyn Error + Send + Sync>;

/// A key-value store whose every write goes to a write-ahead log first.
#[derive(Parser)]
#[command(name = "kvstore")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Crash a writer with SIGKILL, recover, check that every acknowledged
    /// write is back; a few rounds on the same directory.
    ///
    /// With `--etcd`: a primary and a standby process share one etcd log;
    /// the primary is SIGKILLed or paused (SIGSTOP), the standby takes over
    /// once the lease lapses and checks every acknowledged write; a paused
    /// primary is resumed and must be fenced.
    Demo {
        /// Where the log is (an existing store is continued).
        #[command(flatten)]
        backend: BackendArgs,
        /// Kill/recover rounds.
        #[arg(long, default_value_t = 3)]
        rounds: u32,
        /// Checkpoint the map after this many writes.
        #[arg(long, default_value_t = 500)]
        checkpoint_every: u64,
        /// Number of distinct keys the writer uses.
        #[arg(long, default_value_t = 1000)]
        keys: u64,
        /// Seed of the writes and kill points (default: from the clock).
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Set KEY to VALUE.
    Put {
        #[command(flatten)]
        store: StoreArgs,
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Print the value of KEY.
    Get {
        #[command(flatten)]
        store: StoreArgs,
        /// The key.
        key: String,
    },
    /// Remove KEY.
    Del {
        #[command(flatten)]
        store: StoreArgs,
        /// The key.
        key: String,
    },
    /// Write a checkpoint of the whole map now.
    Checkpoint {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Print every key and value, in key order.
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// The demo's writer process (internal).
    #[command(hide = true)]
    Serve {
        #[command(flatten)]
        backend: BackendArgs,
        #[arg(long)]
        seed: u64,
        #[arg(long)]
        checkpoint_every: u64,
        #[arg(long)]
        keys: u64,
    },
    /// The etcd demo's standby process (internal): tails the log, waits
    /// for the owner's lease to lapse, takes over and becomes the writer.
    #[command(hide = true)]
    Standby {
        #[command(flatten)]
        backend: BackendArgs,
        #[arg(long)]
        seed: u64,
        #[arg(long)]
        checkpoint_every: u64,
        #[arg(long)]
        keys: u64,
    },
}

/// Where the log is: a directory, or a log on etcd.
#[derive(Args, Clone)]
struct BackendArgs {
    #[command(flatten)]
    at: BackendChoice,
    /// etcd: the log's name; its keys are PREFIX NAME/... Default: kvstore.
    #[arg(long, conflicts_with = "dir")]
    name: Option<String>,
    /// etcd: the key prefix of the log. Default: /wal/.
    #[arg(long, conflicts_with = "dir")]
    prefix: Option<String>,
    /// etcd: the owner's lease TTL in whole seconds (at least 2): how long
    /// a writer that stopped renewing it keeps the log. Default: 10 (3 for
    /// `demo`).
    #[arg(long, value_name = "SECS", conflicts_with = "dir")]
    lease_ttl: Option<u64>,
}

#[derive(Args, Clone)]
#[group(required = true, multiple = false)]
struct BackendChoice {
    /// The log directory (created if missing).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// etcd endpoints, comma-separated (e.g. http://127.0.0.1:2379); needs
    /// a build with the `etcd` feature.
    #[arg(long, value_name = "ENDPOINTS", value_delimiter = ',')]
    etcd: Option<Vec<String>>,
}

/// A log on etcd, as named on the command line.
#[derive(Clone, Debug)]
#[cfg_attr(not(feature = "etcd"), allow(dead_code))]
struct EtcdTarget {
    endpoints: Vec<String>,
    name: String,
    prefix: String,
    lease_ttl: Option<u64>,
}

/// The backend a command runs on.
#[cfg_attr(not(feature = "etcd"), allow(dead_code))]
enum Backend {
    Dir(PathBuf),
    Etcd(EtcdTarget),
}

impl BackendArgs {
    fn backend(self) -> Backend {
        match (self.at.dir, self.at.etcd) {
            (Some(dir), _) => Backend::Dir(dir),
            (None, endpoints) => Backend::Etcd(EtcdTarget {
                endpoints: endpoints.unwrap_or_default(),
                name: self.name.unwrap_or_else(|| "kvstore".into()),
                prefix: self.prefix.unwrap_or_else(|| "/wal/".into()),
                lease_ttl: self.lease_ttl,
            }),
        }
    }
}

#[derive(Args)]
struct StoreArgs {
    #[command(flatten)]
    backend: BackendArgs,
    /// Checkpoint the map once this many writes are in the log after the
    /// last checkpoint.
    #[arg(long, default_value_t = 100)]
    checkpoint_every: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.cmd) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kvstore: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, BoxError> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn run(cmd: Cmd) -> Result<ExitCode, BoxError> {
    match cmd {
        Cmd::Demo {
            backend,
            rounds,
            checkpoint_every,
            keys,
            seed,
        } => match backend.backend() {
            Backend::Dir(dir) => {
                demo(&dir, rounds, checkpoint_every, keys, seed).map(|()| ExitCode::SUCCESS)
            }
            #[cfg(feature = "etcd")]
            Backend::Etcd(target) => etcd::demo(&target, rounds, checkpoint_every, keys, seed)
                .map(|()| ExitCode::SUCCESS),
            #[cfg(not(feature = "etcd"))]
            Backend::Etcd(_) => Err(no_etcd()),
        },
        Cmd::Serve {
            backend,
            seed,
            checkpoint_every,
            keys,
        } => match backend.backend() {
            Backend::Dir(dir) => runtime()?
                .block_on(serve(&dir, seed, checkpoint_every, keys))
                .map(|()| ExitCode::SUCCESS),
            #[cfg(feature = "etcd")]
            Backend::Etcd(target) => {
                runtime()?.block_on(etcd::serve(&target, seed, checkpoint_every, keys))
            }
            #[cfg(not(feature = "etcd"))]
            Backend::Etcd(_) => Err(no_etcd()),
        },
        Cmd::Standby {
            backend,
            seed,
            checkpoint_every,
            keys,
        } => match backend.backend() {
            Backend::Dir(_) => Err("standby runs on --etcd only".into()),
            #[cfg(feature = "etcd")]
            Backend::Etcd(target) => {
                runtime()?.block_on(etcd::standby(&target, seed, checkpoint_every, keys))
            }
            #[cfg(not(feature = "etcd"))]
            Backend::Etcd(_) => {
                let _ = (seed, checkpoint_every, keys);
                Err(no_etcd())
            }
        },
        Cmd::Put { store, key, value } => runtime()?.block_on(async {
            let (mut kv, _) = open_kv(store.backend.backend(), store.checkpoint_every).await?;
            let (seq, lsn) = kv.apply(Op::Put { key, value }).await?;
            println!("ok: write #{seq}, durable at lsn {lsn}");
            report_checkpoints(kv.close().await?);
            Ok(ExitCode::SUCCESS)
        }),
        Cmd::Del { store, key } => runtime()?.block_on(async {
            let (mut kv, _) = open_kv(store.backend.backend(), store.checkpoint_every).await?;
            let code = if kv.get(&key).is_some() {
                let (seq, lsn) = kv.apply(Op::Del { key }).await?;
                println!("ok: write #{seq}, durable at lsn {lsn}");
                ExitCode::SUCCESS
            } else {
                eprintln!("{key}: not found");
                ExitCode::FAILURE
            };
            report_checkpoints(kv.close().await?);
            Ok(code)
        }),
        Cmd::Checkpoint { store } => runtime()?.block_on(async {
            let (mut kv, report) = open_kv(store.backend.backend(), 0).await?;
            eprintln!("{}", describe_recovery(&report));
            let cp = kv.checkpoint().await?;
            kv.close().await?;
            report_checkpoints(vec![cp]);
            Ok(ExitCode::SUCCESS)
        }),
        Cmd::Get { store, key } => runtime()?.block_on(async {
            let found = match store.backend.backend() {
                Backend::Dir(dir) => {
                    let (kv, _) = KvStore::open_dir(&dir, 0).await?;
                    let found = kv.get(&key).map(str::to_owned);
                    kv.close().await?;
                    found
                }
                // Read without claiming the log: works beside its writer.
                #[cfg(feature = "etcd")]
                Backend::Etcd(target) => etcd::read_state(&target).await?.state.map.remove(&key),
                #[cfg(not(feature = "etcd"))]
                Backend::Etcd(_) => return Err(no_etcd()),
            };
            match found {
                Some(v) => {
                    println!("{v}");
                    Ok(ExitCode::SUCCESS)
                }
                None => {
                    eprintln!("{key}: not found");
                    Ok(ExitCode::FAILURE)
                }
            }
        }),
        Cmd::List { store } => runtime()?.block_on(async {
            let (state, how) = match store.backend.backend() {
                Backend::Dir(dir) => {
                    let (kv, report) = KvStore::open_dir(&dir, 0).await?;
                    let state = kv.state().clone();
                    kv.close().await?;
                    (state, describe_recovery(&report))
                }
                #[cfg(feature = "etcd")]
                Backend::Etcd(target) => {
                    let read = etcd::read_state(&target).await?;
                    let how = read.describe();
                    (read.state, how)
                }
                #[cfg(not(feature = "etcd"))]
                Backend::Etcd(_) => return Err(no_etcd()),
            };
            let mut out = std::io::stdout().lock();
            for (k, v) in &state.map {
                writeln!(out, "{k}\t{v}")?;
            }
            eprintln!("{} keys after {} writes; {how}", state.map.len(), state.seq);
            Ok(ExitCode::SUCCESS)
        }),
    }
}

#[cfg(not(feature = "etcd"))]
fn no_etcd() -> BoxError {
    "this kvstore was built without the etcd backend: run it with \
     `cargo run --release --example kvstore --features etcd -- ...`"
        .into()
}

/// Opens the store on either backend and recovers; on etcd it claims the
/// log, waiting for a previous owner's lease to lapse.
async fn open_kv(
    backend: Backend,
    checkpoint_every: u64,
) -> Result<(KvStore, RecoveryReport), BoxError> {
    match backend {
        Backend::Dir(dir) => Ok(KvStore::open_dir(&dir, checkpoint_every).await?),
        #[cfg(feature = "etcd")]
        Backend::Etcd(target) => etcd::open_kv(&target, checkpoint_every).await,
        #[cfg(not(feature = "etcd"))]
        Backend::Etcd(_) => Err(no_etcd()),
    }
}

fn report_checkpoints(done: Vec<kv::CheckpointDone>) {
    for cp in done {
        println!(
            "checkpoint committed: {} keys as of write #{} (lsn {}..={})",
            cp.keys, cp.seq, cp.begin, cp.commit
        );
    }
}

fn describe_recovery(r: &RecoveryReport) -> String {
    match r.checkpoint {
        Some(cp) => format!(
            "recovered from the checkpoint at lsn {}..={} ({} keys as of write #{}) + {} writes replayed",
            cp.begin, cp.commit, r.checkpoint_keys, r.checkpoint_seq, r.replayed
        ),
        None => format!("no checkpoint yet; {} writes replayed", r.replayed),
    }
}

// ---- the writer process ----

async fn serve(dir: &Path, seed: u64, checkpoint_every: u64, keys: u64) -> Result<(), BoxError> {
    let (mut kv, _) = KvStore::open_dir(dir, checkpoint_every).await?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "READY {} {}", kv.next_seq(), kv.state().map.len())?;
    out.flush()?;
    drop(out);
    loop {
        write_one(&mut kv, seed, keys).await?;
    }
}

/// The writer's step: the next demo write, reported once it is durable
/// (`ACK`), with the checkpoints that committed meanwhile (`CKPT`).
async fn write_one(kv: &mut KvStore, seed: u64, keys: u64) -> Result<(), BoxError> {
    let seq = kv.next_seq();
    let (acked, lsn) = kv.apply(demo_op(seed, seq, keys)).await?;
    debug_assert_eq!(acked, seq);
    let mut out = std::io::stdout().lock();
    writeln!(out, "ACK {seq} {lsn}")?;
    for cp in kv.take_finished() {
        writeln!(
            out,
            "CKPT {} {} {} {}",
            cp.begin, cp.commit, cp.keys, cp.seq
        )?;
    }
    out.flush()?;
    Ok(())
}

// ---- the demo ----

/// What the writer reported before it died.
#[derive(Default)]
struct Reported {
    next_seq: Option<u64>,
    /// (seq, lsn) of the last acknowledged write.
    last_ack: Option<(u64, u64)>,
    acks: u64,
    checkpoints: u64,
}

impl Reported {
    /// Takes in one line; prints checkpoints as they come.
    fn line(&mut self, line: &str) -> Result<(), BoxError> {
        let mut words = line.split_ascii_whitespace();
        let tag = words.next().unwrap_or_default();
        let nums = words
            .map(str::parse::<u64>)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("writer said {line:?}: {e}"))?;
        match (tag, nums.as_slice()) {
            ("READY", [next, _keys]) => self.next_seq = Some(*next),
            ("ACK", [seq, lsn]) => {
                let expected = match self.last_ack {
                    Some((s, _)) => s + 1,
                    None => self.next_seq.ok_or("ACK before READY")?,
                };
                if *seq != expected {
                    return Err(format!("writer acknowledged #{seq}, expected #{expected}").into());
                }
                self.last_ack = Some((*seq, *lsn));
                self.acks += 1;
            }
            ("CKPT", [begin, commit, keys, seq]) => {
                self.checkpoints += 1;
                println!(
                    "  checkpoint committed: {keys} keys as of write #{seq} (lsn {begin}..={commit})"
                );
            }
            _ => return Err(format!("writer said {line:?}").into()),
        }
        Ok(())
    }
}

fn clock_seed() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut s = nanos ^ (u64::from(std::process::id()) << 32);
    splitmix64(&mut s)
}

fn segment_files(dir: &Path) -> (usize, u64) {
    let mut n = 0;
    let mut bytes = 0;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.path().extension().is_some_and(|x| x == "wal") {
                n += 1;
                bytes += e.metadata().map_or(0, |m| m.len());
            }
        }
    }
    (n, bytes)
}

fn demo(
    dir: &Path,
    rounds: u32,
    checkpoint_every: u64,
    keys: u64,
    seed: Option<u64>,
) -> Result<(), BoxError> {
    let rt = runtime()?;
    let seed = seed.unwrap_or_else(clock_seed);
    let mut rng = seed;
    let exe = std::env::current_exe()?;

    println!(
        "kvstore demo: a key-value store that logs every write to {} before applying it",
        dir.display()
    );
    println!("each round: a writer process applies random puts/deletes over {keys} keys (checkpoint every {checkpoint_every} writes),");
    println!("is killed with SIGKILL at a random moment, and the store is recovered and checked (seed {seed})");

    let (mut expected, report) = rt.block_on(recover(dir))?;
    if expected.seq == 0 {
        println!("starting from an empty store");
    } else {
        println!(
            "starting from the store already in {}: {} keys after {} writes",
            dir.display(),
            expected.map.len(),
            expected.seq
        );
        println!("  {}", describe_recovery(&report));
    }

    let mut total_acked = 0;
    for round in 1..=rounds {
        let writer_seed = splitmix64(&mut rng);
        // Kill once the writer has acknowledged this many writes, plus a
        // random 0-400 ms: sometimes mid-write, sometimes mid-checkpoint.
        let kill_after_acks = 50 + splitmix64(&mut rng) % 1000;
        let extra = Duration::from_millis(splitmix64(&mut rng) % 400);

        println!("\nround {round}/{rounds}");
        let mut child = Command::new(&exe)
            .arg("serve")
            .arg("--dir")
            .arg(dir)
            .args(["--seed", &writer_seed.to_string()])
            .args(["--checkpoint-every", &checkpoint_every.to_string()])
            .args(["--keys", &keys.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let pid = child.id();
        let stdout = child.stdout.take().ok_or("no stdout pipe")?;
        let (tx, rx) = mpsc::channel::<String>();
        let reader = thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });

        let started = Instant::now();
        let deadline = started + Duration::from_secs(60);
        let mut seen = Reported::default();
        let mut kill_at: Option<Instant> = None;
        // Read the writer's lines until it is time to kill it.
        let result: Result<(), BoxError> = loop {
            let now = Instant::now();
            if kill_at.is_some_and(|t| now >= t) {
                break Ok(());
            }
            if now >= deadline {
                break Err("the writer acknowledged too few writes within 60 s".into());
            }
            let wait = kill_at.unwrap_or(deadline).saturating_duration_since(now);
            match rx.recv_timeout(wait) {
                Ok(line) => {
                    if let Err(e) = seen.line(&line) {
                        break Err(e);
                    }
                    if line.starts_with("READY") {
                        println!(
                            "  writer pid {pid} started at write #{}",
                            seen.next_seq.unwrap_or(0)
                        );
                    }
                    if kill_at.is_none() && seen.acks >= kill_after_acks {
                        kill_at = Some(Instant::now() + extra);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    break Err("the writer exited on its own".into())
                }
            }
        };
        // SIGKILL: no chance to flush, close or finish a checkpoint.
        let _ = child.kill();
        let status = child.wait()?;
        let ran = started.elapsed();
        let _ = reader.join();
        // Lines the writer printed before it died are acknowledgements too.
        for line in rx.try_iter() {
            seen.line(&line)?;
        }
        result.map_err(|e| format!("{e} (writer {status})"))?;

        let next_seq = seen.next_seq.ok_or("the writer never became ready")?;
        if next_seq != expected.seq + 1 {
            return Err(format!(
                "the writer started at write #{next_seq}, expected #{}",
                expected.seq + 1
            )
            .into());
        }
        let (last_seq, last_lsn) = seen.last_ack.ok_or("no write was acknowledged")?;
        println!(
            "  killed with SIGKILL after {:.2} s: {} writes acknowledged (#{next_seq}..=#{last_seq}, up to lsn {last_lsn}, ~{:.0}/s), {} checkpoint(s) committed",
            ran.as_secs_f64(),
            seen.acks,
            seen.acks as f64 / ran.as_secs_f64(),
            seen.checkpoints
        );

        let (state, report) = rt.block_on(recover(dir))?;
        println!(
            "  reopened: {} keys after {} writes; {}",
            state.map.len(),
            state.seq,
            describe_recovery(&report)
        );
        if state.seq < last_seq {
            return Err(format!(
                "FAILED: recovered up to write #{}, but #{last_seq} was acknowledged",
                state.seq
            )
            .into());
        }
        // One write may have been in flight: durable, not yet acknowledged.
        if state.seq > last_seq + 1 {
            return Err(format!(
                "FAILED: recovered write #{}, but only #{last_seq} was acknowledged and the writer does one write at a time",
                state.seq
            )
            .into());
        }
        for seq in next_seq..=state.seq {
            expected.apply(seq, &demo_op(writer_seed, seq, keys));
        }
        if let Some(diff) = first_difference(&expected, &state) {
            return Err(format!(
                "FAILED: the recovered map differs from the acknowledged writes: {diff}"
            )
            .into());
        }
        let (segments, bytes) = segment_files(dir);
        println!(
            "  log: {segments} segment file(s), {:.1} MiB (segments before the last checkpoint are deleted)",
            bytes as f64 / (1 << 20) as f64
        );
        if state.seq > last_seq {
            println!("  (+1 write that was durable but not yet acknowledged when the writer died: allowed)");
        }
        println!("  OK: every acknowledged write recovered");
        total_acked += seen.acks;
    }
    println!(
        "\nOK: {rounds} crashes, {total_acked} acknowledged writes, all recovered; the store has {} keys.",
        expected.map.len()
    );
    println!(
        "Look inside: cargo run --release --example kvstore -- list --dir {}",
        dir.display()
    );
    Ok(())
}

/// Opens the store, recovers, closes.
async fn recover(dir: &Path) -> Result<(KvState, RecoveryReport), BoxError> {
    let (kv, report) = KvStore::open_dir(dir, 0).await?;
    let state = kv.state().clone();
    kv.close().await?;
    Ok((state, report))
}

fn first_difference(expected: &KvState, got: &KvState) -> Option<String> {
    for (k, v) in &expected.map {
        match got.map.get(k) {
            None => return Some(format!("{k} is missing")),
            Some(g) if g != v => return Some(format!("{k} = {g:?}, expected {v:?}")),
            Some(_) => {}
        }
    }
    got.map
        .keys()
        .find(|k| !expected.map.contains_key(*k))
        .map(|k| format!("{k} should not exist"))
        .or_else(|| {
            (expected.seq != got.seq)
                .then(|| format!("at write #{}, expected #{}", got.seq, expected.seq))
        })
}
