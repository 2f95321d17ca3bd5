//! The kvstore on etcd (`--etcd ENDPOINTS --name LOG [--prefix P]`), and the
//! distributed demo: a primary and a standby process on one etcd log.
//!
//! ```text
//! docker-compose up -d etcd
//! cargo run --release --example kvstore --features etcd -- demo --etcd http://127.0.0.1:2379
//! ```
//!
//! Each round, the primary (hidden subcommand `serve`) applies demo writes
//! while a fresh standby (hidden subcommand `standby`) tails the log with an
//! [`EtcdReader`] (it owns nothing), keeps its own map up to date, and waits
//! for ownership with [`Acquire::Wait`]. The demo then takes the primary
//! down, in turn: SIGKILL; SIGSTOP between two writes; SIGSTOP wherever it
//! is (nearly always with a write in flight). A paused primary is the
//! zombie: alive, holding a lease it no longer renews. Once the lease lapses
//! the standby claims the log, recovers it, checks that the map it kept by
//! tailing is the recovered one, and reports READY; the demo checks that the
//! recovered map is exactly the one implied by the writes the primary
//! acknowledged (one more that was durable but not yet acknowledged is
//! allowed, except after a pause between writes). A paused primary is then
//! resumed (SIGCONT): paused between writes, its next write must be refused
//! as fenced; paused mid-write, the write in flight may instead end as
//! "outcome unknown" (ownership lost), and the standby's recovery shows
//! whether it landed. Either way it exits, and the demo reads the log with a
//! reader of its own to check that every write in it is the write of the
//! process that owned the log at the time. The standby is the next round's
//! primary.
//!
//! Besides the lines of `serve` (`READY`, `ACK`, `CKPT`; here `READY <next
//! seq> <keys> <digest>`), the etcd processes print:
//!
//! - `STANDBY <seq> <lsn>`: the standby's tail caught up with the log (its
//!   map is at write `seq`, record `lsn`);
//! - `OWNER <token> <waited ms> <seq> <lsn>`: the standby claimed the log
//!   with this fencing token, after waiting this long, its tail at write
//!   `seq` (record `lsn`);
//! - `FENCED <seq>`: write `seq` (and every later one) was refused: this
//!   writer lost the log; it exits with code 3;
//! - `HELD <seq>`: after the line `HOLD` on its standard input, the
//!   writer finished write `seq` and starts no other until the line `GO`
//!   (so that the demo can pause it between two writes);
//! - `LOST <seq>`: the writer lost the log with write `seq` in flight and
//!   the store could not tell whether it landed (see the README's etcd
//!   section); it exits with code 3 too;
//! - `CLOSED <seq>`: standard input closed (the demo's way to stop a
//!   writer): the log was closed cleanly after write `seq`, and the lease
//!   revoked.

use std::{
    io::{BufRead, BufReader, Write},
    process::{Child, ChildStdin, Command, ExitCode, ExitStatus, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use futures::{stream::BoxStream, StreamExt};
use tokio::sync::watch;
use wal::{
    etcd::{Acquire, EtcdOptions, EtcdReader, EtcdStore},
    Error, Lsn, ReadLimit, Record,
};

use crate::{
    clock_seed,
    follower::{digest, Follower},
    kv::{demo_op, splitmix64, KvError, KvState, KvStore, Op, RecoveryReport},
    write_one, BoxError, EtcdTarget,
};

/// Lease TTL of `put`, `del`, `checkpoint` (seconds).
const DEFAULT_TTL: u64 = 10;
/// Lease TTL of the demo (seconds): how long a takeover waits.
const DEMO_TTL: u64 = 3;
/// How long a writer waits to claim a log another owner holds.
const CLAIM_WAIT: Duration = Duration::from_secs(30);
/// How long a standby waits to take over.
const STANDBY_WAIT: Duration = Duration::from_secs(120);
/// The exit code of a writer that was fenced.
const EXIT_FENCED: u8 = 3;

/// The store options for `t`.
fn options(t: &EtcdTarget, default_ttl: u64) -> Result<EtcdOptions, BoxError> {
    if t.endpoints.iter().all(|e| e.trim().is_empty()) {
        return Err("--etcd needs at least one endpoint, e.g. http://127.0.0.1:2379".into());
    }
    let ttl = Duration::from_secs(t.lease_ttl.unwrap_or(default_ttl));
    // Every request must end well before the lease could lapse.
    let request_timeout = (ttl / 2).min(Duration::from_secs(5));
    Ok(EtcdOptions::new(
        t.endpoints.iter().map(|e| e.trim().to_string()),
        t.name.clone(),
    )
    .prefix(t.prefix.clone())
    .lease_ttl(ttl)
    .request_timeout(request_timeout))
}

/// Opens the store on etcd, claiming the log (waiting up to 30 s for a
/// previous owner's lease to lapse), and recovers.
pub async fn open_kv(
    t: &EtcdTarget,
    checkpoint_every: u64,
) -> Result<(KvStore, RecoveryReport), BoxError> {
    let store = EtcdStore::new(options(t, DEFAULT_TTL)?.acquire(Acquire::Wait(CLAIM_WAIT)));
    Ok(KvStore::open(store, checkpoint_every).await?)
}

/// What a log holds, read without claiming it.
pub struct LogState {
    /// The state its records rebuild.
    pub state: KvState,
    /// The last record read.
    pub lsn: Lsn,
    /// Who owns the log, if anyone.
    pub owner: Option<String>,
}

impl LogState {
    /// One line on where the state came from.
    pub fn describe(&self) -> String {
        format!(
            "read up to lsn {} without claiming the log (owner: {})",
            self.lsn,
            self.owner.as_deref().unwrap_or("none")
        )
    }
}

/// Reads the log once with a reader that owns nothing (it may be written
/// meanwhile) and rebuilds the store's state.
pub async fn read_state(t: &EtcdTarget) -> Result<LogState, BoxError> {
    read_log(t, |_, _| Ok(())).await
}

/// [`read_state`], showing `check` every write applied (a restarted read
/// shows some twice).
async fn read_log(
    t: &EtcdTarget,
    mut check: impl FnMut(u64, &Op) -> Result<(), String>,
) -> Result<LogState, BoxError> {
    let reader = EtcdReader::connect(options(t, DEFAULT_TTL)?).await?;
    'read: loop {
        let (head, _) = reader.head().await?;
        let mut follower = Follower::new();
        while follower.last_lsn() < head {
            let from = match follower.last_lsn() {
                Lsn::ZERO => Lsn::ZERO,
                last => last.next(),
            };
            let records = match reader.read_from(from, ReadLimit::default()).await {
                Ok(records) => records,
                // The owner trimmed what this read had not reached yet
                // (after a checkpoint): read again from the new start.
                Err(Error::Trimmed { .. }) => continue 'read,
                Err(e) => return Err(e.into()),
            };
            if records.is_empty() {
                break;
            }
            for r in &records {
                for (seq, op) in follower.apply(r)? {
                    check(seq, &op)?;
                }
            }
        }
        let state = match follower.state() {
            Some(s) => s.clone(),
            None if follower.last_lsn() == Lsn::ZERO => KvState::default(),
            None => {
                return Err(format!(
                    "log {}{}: read up to lsn {} and found neither its start nor a committed checkpoint",
                    t.prefix,
                    t.name,
                    follower.last_lsn()
                )
                .into())
            }
        };
        let owner = reader.owner().await?.map(|o| o.to_string());
        return Ok(LogState {
            state,
            lsn: follower.last_lsn(),
            owner,
        });
    }
}

/// What the demo tells a writer on its standard input.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Control {
    /// Write (the start, and the line `GO`).
    Run,
    /// The line `HOLD`: finish the write under way, say `HELD`, and start
    /// no other until `GO`.
    Hold,
    /// Standard input closed: close the log and exit. Also how a child
    /// notices that the demo is gone.
    Stop,
}

/// Follows standard input (`HOLD`, `GO`, end of input).
fn control() -> watch::Receiver<Control> {
    let (tx, rx) = watch::channel(Control::Run);
    thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            let c = match line.trim() {
                "HOLD" => Control::Hold,
                "GO" => Control::Run,
                _ => continue,
            };
            if tx.send(c).is_err() {
                return;
            }
        }
        let _ = tx.send(Control::Stop);
    });
    rx
}

/// Demo writes, one at a time, as `control` allows. Ends when it says stop.
async fn write_loop(
    kv: &mut KvStore,
    seed: u64,
    keys: u64,
    control: &mut watch::Receiver<Control>,
) -> Result<(), BoxError> {
    loop {
        let now = *control.borrow_and_update();
        match now {
            Control::Run => write_one(kv, seed, keys).await?,
            Control::Stop => return Ok(()),
            Control::Hold => {
                let mut out = std::io::stdout().lock();
                writeln!(out, "HELD {}", kv.state().seq)?;
                out.flush()?;
                drop(out);
                // No write is under way: wait for the next word.
                if control.changed().await.is_err() {
                    return Ok(());
                }
            }
        }
    }
}

fn print_ready(kv: &KvStore) -> Result<(), BoxError> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "READY {} {} {:016x}",
        kv.next_seq(),
        kv.state().map.len(),
        digest(kv.state())
    )?;
    out.flush()?;
    Ok(())
}

/// The demo's primary: claims the log and writes until fenced or stopped.
pub async fn serve(
    t: &EtcdTarget,
    seed: u64,
    checkpoint_every: u64,
    keys: u64,
) -> Result<ExitCode, BoxError> {
    let control = control();
    let options = options(t, DEMO_TTL)?;
    let store = EtcdStore::new(options.clone().acquire(Acquire::Wait(CLAIM_WAIT)));
    let (kv, _) = KvStore::open(store, checkpoint_every).await?;
    print_ready(&kv)?;
    write_until_stopped(kv, seed, keys, control, &options).await
}

/// Writes until standard input closes (then closes the log cleanly) or the
/// log is lost (then says which write failed and exits with code 3).
async fn write_until_stopped(
    mut kv: KvStore,
    seed: u64,
    keys: u64,
    mut control: watch::Receiver<Control>,
    options: &EtcdOptions,
) -> Result<ExitCode, BoxError> {
    match write_loop(&mut kv, seed, keys, &mut control).await {
        Ok(()) => {
            let seq = kv.state().seq;
            kv.close().await?;
            println!("CLOSED {seq}");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => match e.downcast_ref::<KvError>() {
            Some(KvError::Wal(w)) if w.is_fenced() => {
                // The state holds every write whose append succeeded; the
                // next one is the first that was refused.
                println!("FENCED {}", kv.next_seq());
                eprintln!("kvstore: pid {}: {w}", std::process::id());
                Ok(ExitCode::from(EXIT_FENCED))
            }
            // Any other failure of a writer that another process has
            // replaced: the write in flight when the log was lost (e.g.
            // across a pause longer than the lease) may or may not have
            // landed, and the store says so; the Wal is poisoned, so
            // nothing after it is even sent.
            Some(KvError::Wal(w)) if lost_the_log(options).await => {
                println!("LOST {}", kv.next_seq());
                eprintln!("kvstore: pid {}: {w}", std::process::id());
                Ok(ExitCode::from(EXIT_FENCED))
            }
            _ => Err(e),
        },
    }
}

/// True if the owner key no longer names this writer (read with a reader
/// that owns nothing; false if that read fails).
async fn lost_the_log(options: &EtcdOptions) -> bool {
    let read = async {
        let reader = EtcdReader::connect(options.clone()).await?;
        reader.owner().await
    };
    match tokio::time::timeout(Duration::from_secs(10), read).await {
        Ok(Ok(owner)) => owner.is_none_or(|o| o.writer_id != options.writer_id),
        _ => false,
    }
}

/// The demo's standby: tails the log into its own map while it waits for
/// ownership; once it owns the log, checks that map against recovery, and
/// becomes the writer.
pub async fn standby(
    t: &EtcdTarget,
    seed: u64,
    checkpoint_every: u64,
    keys: u64,
) -> Result<ExitCode, BoxError> {
    let mut control = control();
    let options = options(t, DEMO_TTL)?;
    let reader = EtcdReader::connect(options.clone()).await?;
    let (head, _) = reader.head().await?;
    let started = Instant::now();
    let mut follower = Follower::new();
    let mut tail = reader.tail(Lsn::ZERO);
    let mut announced = false;
    let store = EtcdStore::new(options.clone().acquire(Acquire::Wait(STANDBY_WAIT)));
    let open = KvStore::open(store, checkpoint_every);
    tokio::pin!(open);
    let (kv, report) = loop {
        if !announced
            && follower.last_lsn() >= head
            && (head == Lsn::ZERO || follower.state().is_some())
        {
            println!(
                "STANDBY {} {}",
                follower.state().map_or(0, |s| s.seq),
                follower.last_lsn()
            );
            std::io::stdout().flush()?;
            announced = true;
        }
        tokio::select! {
            opened = &mut open => break opened?,
            item = tail.next() => follow(&mut follower, &mut tail, &reader, item)?,
            _ = control.changed() => {
                if *control.borrow() == Control::Stop {
                    return Ok(ExitCode::SUCCESS);
                }
            }
        }
    };
    let waited = started.elapsed();
    let (tailed_seq, tailed_lsn) = (follower.state().map_or(0, |s| s.seq), follower.last_lsn());
    let owner = reader
        .owner()
        .await?
        .filter(|o| o.writer_id == options.writer_id)
        .ok_or("the standby took the log over, but its owner key names another writer")?;
    println!(
        "OWNER {} {} {tailed_seq} {tailed_lsn}",
        owner.token,
        waited.as_millis()
    );
    // Nobody writes the log now but this process: tail it to the end that
    // recovery saw, and compare the two maps.
    let end = report.end_lsn.unwrap_or(Lsn::ZERO);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while follower.last_lsn() < end {
        match tokio::time::timeout_at(deadline, tail.next()).await {
            Ok(item) => follow(&mut follower, &mut tail, &reader, item)?,
            Err(_) => {
                return Err(format!(
                    "the standby's tail did not reach lsn {end} within 30 s (at {})",
                    follower.last_lsn()
                )
                .into())
            }
        }
    }
    drop(tail);
    let tailed = match follower.state() {
        Some(s) => s.clone(),
        None if end == Lsn::ZERO => KvState::default(),
        None => return Err(format!("the standby's tail found no base up to lsn {end}").into()),
    };
    if &tailed != kv.state() {
        return Err(format!(
            "the standby's own map (write #{}, {} keys, tailed to lsn {}) differs from the recovered one (write #{}, {} keys)",
            tailed.seq,
            tailed.map.len(),
            follower.last_lsn(),
            kv.state().seq,
            kv.state().map.len()
        )
        .into());
    }
    print_ready(&kv)?;
    write_until_stopped(kv, seed, keys, control, &options).await
}

/// Takes one item of the standby's tail into its map.
fn follow(
    follower: &mut Follower,
    tail: &mut BoxStream<'static, wal::Result<Record>>,
    reader: &EtcdReader,
    item: Option<wal::Result<Record>>,
) -> Result<(), BoxError> {
    match item {
        Some(Ok(r)) => {
            follower.apply(&r)?;
        }
        // The owner trimmed records the tail had not reached (the tail
        // ends): read the log again from its new start.
        Some(Err(Error::Trimmed { .. })) | None => {
            eprintln!("kvstore standby: the tail fell behind a trim; reading the log again");
            *follower = Follower::new();
            *tail = reader.tail(Lsn::ZERO);
        }
        // A failed read; the tail retries it.
        Some(Err(e)) => eprintln!("kvstore standby: tail: {e} (retrying)"),
    }
    Ok(())
}

// ---- the demo ----

/// How the demo takes the primary down.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Victim {
    /// SIGKILL: the process is gone.
    Kill,
    /// SIGSTOP between two writes (after `HOLD`), and SIGCONT after the
    /// takeover: a zombie that wakes up and tries its next write.
    PauseBetweenWrites,
    /// SIGSTOP wherever the writer is (nearly always with a write in
    /// flight), and SIGCONT after the takeover.
    PauseMidWrite,
}

impl Victim {
    fn for_round(round: u32) -> Victim {
        match round % 3 {
            1 => Victim::Kill,
            2 => Victim::PauseBetweenWrites,
            _ => Victim::PauseMidWrite,
        }
    }

    fn is_pause(self) -> bool {
        self != Victim::Kill
    }
}

#[derive(Clone, Copy)]
struct Ready {
    next_seq: u64,
    keys: u64,
    digest: u64,
}

#[derive(Clone, Copy)]
struct Owner {
    token: u64,
    waited_ms: u64,
    tailed_seq: u64,
}

/// What one child process said.
#[derive(Default)]
struct Said {
    ready: Option<Ready>,
    standby: Option<(u64, u64)>,
    owner: Option<Owner>,
    /// (seq, lsn) of the last acknowledged write.
    last_ack: Option<(u64, u64)>,
    acks: u64,
    checkpoints: u64,
    fenced: Option<u64>,
    /// It held between writes after this one (`HELD`).
    held: Option<u64>,
    /// The write whose outcome this writer could not know (it lost the log
    /// with that write in flight).
    lost: Option<u64>,
    closed: Option<u64>,
    /// Its standard output ended.
    eof: bool,
}

/// A child process of the demo. Dropping it kills it (a stopped one too).
struct Proc {
    role: &'static str,
    child: Child,
    pid: u32,
    stdin: Option<ChildStdin>,
    said: Said,
    status: Option<ExitStatus>,
    /// It was told to end (killed, resumed to be fenced, stdin closed).
    may_exit: bool,
    /// When it said READY (it owned the log from then on).
    started: Instant,
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Proc {
    fn name(&self) -> String {
        format!("{} (pid {})", self.role, self.pid)
    }

    /// Takes in one line of its output.
    fn line(&mut self, line: &str) -> Result<(), BoxError> {
        let who = self.name();
        let bad = || -> BoxError { format!("the {who} said {line:?}").into() };
        let mut words = line.split_ascii_whitespace();
        let tag = words.next().unwrap_or_default();
        let words: Vec<&str> = words.collect();
        let num = |i: usize| -> Result<u64, BoxError> {
            words.get(i).and_then(|w| w.parse().ok()).ok_or_else(bad)
        };
        let s = &mut self.said;
        match (tag, words.len()) {
            ("READY", 3) => {
                self.started = Instant::now();
                s.ready = Some(Ready {
                    next_seq: num(0)?,
                    keys: num(1)?,
                    digest: u64::from_str_radix(words[2], 16).map_err(|_| bad())?,
                })
            }
            ("STANDBY", 2) => s.standby = Some((num(0)?, num(1)?)),
            ("OWNER", 4) => {
                s.owner = Some(Owner {
                    token: num(0)?,
                    waited_ms: num(1)?,
                    tailed_seq: num(2)?,
                })
            }
            ("ACK", 2) => {
                let (seq, lsn) = (num(0)?, num(1)?);
                let expected = match s.last_ack {
                    Some((last, _)) => last + 1,
                    None => s.ready.ok_or("ACK before READY")?.next_seq,
                };
                if seq != expected {
                    return Err(
                        format!("the {who} acknowledged #{seq}, expected #{expected}").into(),
                    );
                }
                s.last_ack = Some((seq, lsn));
                s.acks += 1;
            }
            ("CKPT", 4) => {
                s.checkpoints += 1;
                println!(
                    "  checkpoint committed: {} keys as of write #{} (lsn {}..={})",
                    num(2)?,
                    num(3)?,
                    num(0)?,
                    num(1)?
                );
            }
            ("FENCED", 1) => s.fenced = Some(num(0)?),
            ("LOST", 1) => s.lost = Some(num(0)?),
            ("HELD", 1) => s.held = Some(num(0)?),
            ("CLOSED", 1) => s.closed = Some(num(0)?),
            _ => return Err(bad()),
        }
        Ok(())
    }

    /// Writes a line to its standard input.
    fn send(&mut self, line: &str) -> Result<(), BoxError> {
        let stdin = self.stdin.as_mut().ok_or("standard input already closed")?;
        writeln!(stdin, "{line}")?;
        stdin.flush()?;
        Ok(())
    }

    /// Waits for the process to exit (its output has ended).
    fn reap(&mut self) -> Result<ExitStatus, BoxError> {
        if let Some(s) = self.status {
            return Ok(s);
        }
        let s = self.child.wait()?;
        self.status = Some(s);
        Ok(s)
    }
}

/// Sends `sig` (e.g. "STOP") to `pid` with kill(1).
fn signal(pid: u32, sig: &str) -> Result<(), BoxError> {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .map_err(|e| format!("kill -{sig} {pid}: {e}"))?;
    if !status.success() {
        return Err(format!("kill -{sig} {pid}: {status}").into());
    }
    Ok(())
}

/// Which process wrote which writes: the demo's expectations.
struct Book {
    /// The state the demo started from.
    base: KvState,
    /// (first seq, seed) of each writer, in order.
    writers: Vec<(u64, u64)>,
    keys: u64,
}

impl Book {
    fn seed_for(&self, seq: u64) -> Option<u64> {
        if seq <= self.base.seq {
            return None;
        }
        self.writers
            .iter()
            .rev()
            .find(|(first, _)| *first <= seq)
            .map(|(_, seed)| *seed)
    }

    /// Write `seq` read from the log is the one its writer made.
    fn check(&self, seq: u64, op: &Op) -> Result<(), String> {
        match self.seed_for(seq) {
            Some(seed) if demo_op(seed, seq, self.keys) != *op => Err(format!(
                "FAILED: write #{seq} in the log is not the write of the process that owned the log then: {op:?}"
            )),
            _ => Ok(()),
        }
    }

    /// The state after write `seq`.
    fn expected_at(&self, seq: u64) -> KvState {
        let mut s = self.base.clone();
        for q in self.base.seq + 1..=seq {
            if let Some(seed) = self.seed_for(q) {
                s.apply(q, &demo_op(seed, q, self.keys));
            }
        }
        s
    }
}

/// Starts child processes and routes their output lines.
struct Children {
    exe: std::path::PathBuf,
    target: EtcdTarget,
    checkpoint_every: u64,
    keys: u64,
    tx: mpsc::Sender<(u32, Option<String>)>,
    rx: mpsc::Receiver<(u32, Option<String>)>,
}

impl Children {
    fn spawn(&self, role: &'static str, sub: &str, seed: u64) -> Result<Proc, BoxError> {
        let t = &self.target;
        let mut child = Command::new(&self.exe)
            .arg(sub)
            .args(["--etcd", &t.endpoints.join(",")])
            .args(["--name", &t.name])
            .args(["--prefix", &t.prefix])
            .args(["--lease-ttl", &t.lease_ttl.unwrap_or(DEMO_TTL).to_string()])
            .args(["--seed", &seed.to_string()])
            .args(["--checkpoint-every", &self.checkpoint_every.to_string()])
            .args(["--keys", &self.keys.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let pid = child.id();
        let stdout = child.stdout.take().ok_or("no stdout pipe")?;
        let stdin = child.stdin.take();
        let tx = self.tx.clone();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send((pid, Some(line))).is_err() {
                    return;
                }
            }
            let _ = tx.send((pid, None));
        });
        Ok(Proc {
            role,
            child,
            pid,
            stdin,
            said: Said::default(),
            status: None,
            may_exit: false,
            started: Instant::now(),
        })
    }

    /// Takes in the children's lines until `done` holds, failing at
    /// `deadline` (`what` says what was awaited) or when a child exits
    /// that was not told to. With `done` never true, runs until `deadline`.
    fn pump(
        &self,
        procs: &mut [&mut Proc],
        deadline: Instant,
        what: &str,
        done: impl Fn(&[&mut Proc]) -> bool,
    ) -> Result<(), BoxError> {
        loop {
            if done(procs) {
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(format!("timed out waiting for {what}").into());
            }
            let (pid, line) = match self.rx.recv_timeout(deadline - now) {
                Ok(event) => event,
                Err(mpsc::RecvTimeoutError::Timeout) => continue,
                Err(mpsc::RecvTimeoutError::Disconnected) => return Err("no children".into()),
            };
            // Lines of processes no longer watched are ignored.
            let Some(p) = procs.iter_mut().find(|p| p.pid == pid) else {
                continue;
            };
            match line {
                Some(line) => p.line(&line)?,
                None => {
                    p.said.eof = true;
                    if !p.may_exit {
                        let status = p.reap()?;
                        return Err(format!(
                            "the {} exited ({status}) while waiting for {what}",
                            p.name()
                        )
                        .into());
                    }
                }
            }
        }
    }

    /// Like [`pump`](Self::pump) with nothing awaited: runs until `until`.
    fn pump_until(&self, procs: &mut [&mut Proc], until: Instant) -> Result<(), BoxError> {
        match self.pump(procs, until, "", |_| false) {
            Err(e) if Instant::now() >= until && e.to_string().starts_with("timed out") => Ok(()),
            other => other,
        }
    }
}

fn ensure(ok: bool, why: impl FnOnce() -> String) -> Result<(), BoxError> {
    if ok {
        Ok(())
    } else {
        Err(why().into())
    }
}

/// The distributed demo (see the module docs).
pub fn demo(
    target: &EtcdTarget,
    rounds: u32,
    checkpoint_every: u64,
    keys: u64,
    seed: Option<u64>,
) -> Result<(), BoxError> {
    let rt = crate::runtime()?;
    let seed = seed.unwrap_or_else(clock_seed);
    let mut rng = seed;
    let ttl = target.lease_ttl.unwrap_or(DEMO_TTL);
    let target = EtcdTarget {
        lease_ttl: Some(ttl),
        ..target.clone()
    };
    let (tx, rx) = mpsc::channel();
    let children = Children {
        exe: std::env::current_exe()?,
        target: target.clone(),
        checkpoint_every,
        keys,
        tx,
        rx,
    };

    println!(
        "kvstore demo on etcd: log {}{} at {}; a primary and a standby process share it",
        target.prefix,
        target.name,
        target.endpoints.join(",")
    );
    println!("each round: the primary applies random puts/deletes over {keys} keys (checkpoint every {checkpoint_every} writes)");
    println!("while a standby tails the log and waits for the primary's {ttl} s lease; the primary is SIGKILLed or paused (SIGSTOP),");
    println!("the standby takes over and checks every acknowledged write; a paused primary is resumed and must land nothing (seed {seed})");

    let start = rt.block_on(read_state(&target))?;
    if start.state.seq == 0 {
        println!("starting from an empty log");
    } else {
        println!(
            "starting from the log already there: {} keys after {} writes (lsn {})",
            start.state.map.len(),
            start.state.seq,
            start.lsn
        );
    }
    let first_seed = splitmix64(&mut rng);
    let mut book = Book {
        writers: vec![(start.state.seq + 1, first_seed)],
        base: start.state,
        keys,
    };

    let mut primary = children.spawn("primary", "serve", first_seed)?;
    children.pump(
        &mut [&mut primary],
        Instant::now() + CLAIM_WAIT + Duration::from_secs(10),
        "the first primary to claim the log",
        |p| p[0].said.ready.is_some(),
    )?;
    let ready = primary.said.ready.ok_or("no READY")?;
    let expected = book.expected_at(book.base.seq);
    ensure(
        ready.next_seq == book.base.seq + 1 && ready.digest == digest(&expected),
        || {
            format!(
                "the primary recovered to write #{}, expected #{}",
                ready.next_seq - 1,
                book.base.seq
            )
        },
    )?;
    println!(
        "primary pid {} owns the log, starting at write #{}",
        primary.pid, ready.next_seq
    );

    let (mut kills, mut pauses, mut fenced_rounds, mut total_acked) = (0, 0, 0, 0);
    for round in 1..=rounds {
        let how = Victim::for_round(round);
        println!(
            "\nround {round}/{rounds}: the primary (pid {}) will be {}",
            primary.pid,
            match how {
                Victim::Kill => "killed with SIGKILL",
                Victim::PauseBetweenWrites =>
                    "paused with SIGSTOP between two writes, then resumed after the takeover",
                Victim::PauseMidWrite =>
                    "paused with SIGSTOP in the middle of its writes, then resumed after the takeover",
            }
        );
        let standby_seed = splitmix64(&mut rng);
        let kill_after_acks = 50 + splitmix64(&mut rng) % 1000;
        let extra = Duration::from_millis(splitmix64(&mut rng) % 400);

        let mut standby = children.spawn("standby", "standby", standby_seed)?;
        children.pump(
            &mut [&mut primary, &mut standby],
            Instant::now() + Duration::from_secs(30),
            "the standby to catch up with the log",
            |p| p[1].said.standby.is_some(),
        )?;
        let (tailed_seq, tailed_lsn) = standby.said.standby.ok_or("no STANDBY")?;
        println!(
            "  standby pid {} is tailing the log (caught up at write #{tailed_seq}, lsn {tailed_lsn}) and waits for the lease",
            standby.pid
        );

        let acks_before = primary.said.acks;
        children.pump(
            &mut [&mut primary, &mut standby],
            Instant::now() + Duration::from_secs(60),
            "the primary to acknowledge enough writes",
            |p| p[0].said.acks - acks_before >= kill_after_acks,
        )?;
        children.pump_until(&mut [&mut primary, &mut standby], Instant::now() + extra)?;
        let down_at = Instant::now();
        match how {
            Victim::Kill => {
                primary.may_exit = true;
                primary.child.kill()?;
                primary.reap()?;
                children.pump(
                    &mut [&mut primary, &mut standby],
                    Instant::now() + Duration::from_secs(10),
                    "the killed primary's output to end",
                    |p| p[0].said.eof,
                )?;
                kills += 1;
            }
            Victim::PauseBetweenWrites => {
                // The write under way finishes; no other starts.
                primary.send("HOLD")?;
                children.pump(
                    &mut [&mut primary, &mut standby],
                    Instant::now() + Duration::from_secs(10),
                    "the primary to hold between writes",
                    |p| p[0].said.held.is_some(),
                )?;
                signal(primary.pid, "STOP")?;
                pauses += 1;
            }
            Victim::PauseMidWrite => {
                signal(primary.pid, "STOP")?;
                pauses += 1;
            }
        }
        let ran = down_at - primary.started;
        let acked = primary.said.acks;
        let first_seq = primary.said.ready.map_or(0, |r| r.next_seq);
        let (last_seq, last_lsn) = primary.said.last_ack.ok_or("no write was acknowledged")?;
        println!(
            "  {} the primary after {:.2} s: it acknowledged {acked} writes (#{first_seq}..=#{last_seq}, up to lsn {last_lsn}, ~{:.0}/s), {} checkpoint(s) committed",
            match how {
                Victim::Kill => "killed",
                Victim::PauseBetweenWrites | Victim::PauseMidWrite => "paused",
            },
            ran.as_secs_f64(),
            acked as f64 / ran.as_secs_f64(),
            primary.said.checkpoints
        );

        children.pump(
            &mut [&mut primary, &mut standby],
            Instant::now() + Duration::from_secs(ttl + 30),
            "the standby to take over",
            |p| p[1].said.ready.is_some(),
        )?;
        let took = down_at.elapsed();
        let owner = standby.said.owner.ok_or("READY without OWNER")?;
        let ready = standby.said.ready.ok_or("no READY")?;
        let recovered = ready.next_seq - 1;
        println!(
            "  standby pid {} took over {:.2} s after the {} (waited {:.2} s in all; fencing token {}); its own map, kept by tailing, was at write #{} when it got the log",
            standby.pid,
            took.as_secs_f64(),
            if how.is_pause() { "pause" } else { "kill" },
            owner.waited_ms as f64 / 1000.0,
            owner.token,
            owner.tailed_seq
        );
        println!(
            "  recovered: {} keys after {recovered} writes; the standby's tailed map caught up and equals the recovered one",
            ready.keys
        );
        ensure(recovered >= last_seq, || {
            format!("FAILED: the standby recovered up to write #{recovered}, but #{last_seq} was acknowledged")
        })?;
        if how == Victim::Kill {
            ensure(recovered <= last_seq + 1, || {
                format!("FAILED: the standby recovered write #{recovered}, but only #{last_seq} was acknowledged and the writer does one write at a time")
            })?;
        }
        if let Some(held) = primary
            .said
            .held
            .filter(|_| how == Victim::PauseBetweenWrites)
        {
            // Nothing was in flight: the log ends exactly at the last write.
            ensure(held == last_seq && recovered == held, || {
                format!("FAILED: the primary held after write #{held} (acknowledged #{last_seq}), the standby recovered #{recovered}")
            })?;
        }
        let expected = book.expected_at(recovered);
        ensure(
            ready.digest == digest(&expected) && ready.keys == expected.map.len() as u64,
            || {
                format!("FAILED: the recovered map (digest {:016x}, {} keys) is not the one the writes up to #{recovered} make ({:016x}, {} keys)",
                ready.digest, ready.keys, digest(&expected), expected.map.len())
            },
        )?;

        if how.is_pause() {
            primary.may_exit = true;
            signal(primary.pid, "CONT")?;
            if how == Victim::PauseBetweenWrites {
                // Its next write is the first after the takeover.
                primary.send("GO")?;
            }
            children.pump(
                &mut [&mut primary, &mut standby],
                Instant::now() + Duration::from_secs(30),
                "the resumed primary to exit",
                |p| p[0].said.eof,
            )?;
            let status = primary.reap()?;
            let (last_seq, _) = primary.said.last_ack.ok_or("no write was acknowledged")?;
            ensure(status.code() == Some(i32::from(EXIT_FENCED)), || {
                format!("FAILED: the resumed primary was not fenced: it exited with {status}")
            })?;
            ensure(last_seq <= recovered, || {
                format!("FAILED: the old primary acknowledged write #{last_seq} after resuming, but the standby recovered only up to #{recovered}")
            })?;
            ensure(recovered <= last_seq + 1, || {
                format!("FAILED: the standby recovered write #{recovered}, but the old primary acknowledged only up to #{last_seq}")
            })?;
            match (primary.said.fenced, primary.said.lost) {
                (Some(refused), _) => {
                    ensure(refused == recovered + 1, || {
                        format!("FAILED: the old primary says write #{refused} was refused, but the standby recovered up to #{recovered}")
                    })?;
                    fenced_rounds += 1;
                    println!(
                        "  resumed the old primary (SIGCONT): its write #{refused} was refused as fenced and it exited with code {EXIT_FENCED}; it had acknowledged up to #{last_seq}"
                    );
                }
                (None, Some(in_flight)) if how == Victim::PauseMidWrite => {
                    ensure(in_flight == last_seq + 1 && recovered >= last_seq, || {
                        format!("FAILED: the old primary lost write #{in_flight} in flight, acknowledged #{last_seq}, the standby recovered #{recovered}")
                    })?;
                    println!(
                        "  resumed the old primary (SIGCONT): its write #{in_flight}, in flight across the pause, failed with \"outcome unknown: ownership lost\" and it exited with code {EXIT_FENCED}; the standby's recovery {} it",
                        if recovered == in_flight { "holds" } else { "does not hold" }
                    );
                }
                (None, Some(seq)) => {
                    return Err(format!(
                        "FAILED: the old primary, paused between writes, was not refused as fenced: its write #{seq} failed otherwise"
                    )
                    .into())
                }
                (None, None) => {
                    return Err(
                        "the resumed primary exited without saying which write failed".into(),
                    )
                }
            }
        }

        // Read the log as it is now (the new primary is writing) with a
        // reader that owns nothing: every write in it must be the one
        // the process that owned the log at the time made.
        book.writers.push((recovered + 1, standby_seed));
        let log = rt.block_on(read_log(&target, |seq, op| book.check(seq, op)))?;
        ensure(log.state.seq >= recovered, || {
            format!(
                "FAILED: the log holds writes up to #{}, the standby recovered #{recovered}",
                log.state.seq
            )
        })?;
        ensure(log.state == book.expected_at(log.state.seq), || {
            format!(
                "FAILED: the log's map at write #{} is not the one its writers made",
                log.state.seq
            )
        })?;
        println!(
            "  read back without owning the log: writes up to #{} (lsn {}), each one made by the process that owned the log at the time{}",
            log.state.seq,
            log.lsn,
            if how.is_pause() {
                "; nothing from the old primary after the takeover"
            } else {
                ""
            }
        );
        println!("  OK: every acknowledged write recovered; the standby is the primary now");
        total_acked += primary.said.acks;
        drop(std::mem::replace(&mut primary, standby));
    }

    // Stop the last primary cleanly: it closes the log and revokes its lease.
    primary.may_exit = true;
    drop(primary.stdin.take());
    children.pump(
        &mut [&mut primary],
        Instant::now() + Duration::from_secs(30),
        "the last primary to close the log",
        |p| p[0].said.eof,
    )?;
    let status = primary.reap()?;
    let closed = primary
        .said
        .closed
        .ok_or_else(|| format!("the last primary did not close the log cleanly ({status})"))?;
    ensure(status.success(), || {
        format!("the last primary exited with {status}")
    })?;
    total_acked += primary.said.acks;
    let log = rt.block_on(read_log(&target, |seq, op| book.check(seq, op)))?;
    ensure(
        log.state.seq == closed && log.state == book.expected_at(closed),
        || {
            format!(
                "FAILED: after the last primary closed at write #{closed}, the log holds write #{}",
                log.state.seq
            )
        },
    )?;
    println!(
        "\nthe last primary (pid {}) closed the log after write #{closed}; owner now: {}",
        primary.pid,
        log.owner.as_deref().unwrap_or("none (lease revoked)")
    );
    println!(
        "OK: {rounds} takeovers ({kills} after SIGKILL, {pauses} after SIGSTOP), {total_acked} acknowledged writes, all recovered; the {pauses} resumed primar{} landed nothing after the takeover ({fenced_rounds} refused as fenced, {} with the write in flight reported unknown); the store has {} keys.",
        if pauses == 1 { "y" } else { "ies" },
        pauses - fenced_rounds,
        log.state.map.len()
    );
    println!(
        "Look inside: cargo run --release --example kvstore --features etcd -- list --etcd {} --name {}",
        target.endpoints.join(","),
        target.name
    );
    Ok(())
}
