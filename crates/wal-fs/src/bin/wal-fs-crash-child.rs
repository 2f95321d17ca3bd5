//! The writer process the crash test (`tests/crash.rs`) kills with SIGKILL.
//!
//! Usage: `wal-fs-crash-child <dir> <seed> <first seq> <every-batch|none>`
//!
//! Opens the log in `<dir>` with small segments and the given sync mode, and
//! runs the whole API forever: bursts of pipelined single entries, atomic
//! batches (awaited and pipelined), checkpoints (committed, aborted, dropped), trims, truncates and,
//! in `none` mode, explicit syncs, with self-checking payloads
//! (`tests/support/payload.rs`). After each acknowledgement it prints one
//! line and flushes it:
//!
//! - `READY` once the log is open;
//! - `D <seq> <lsn>`: a single data entry is acknowledged;
//! - `B <first seq> <n> <first lsn>`: an atomic batch of `n` entries is
//!   acknowledged (entry `i` has seq `first seq + i` and Lsn `first lsn + i`);
//! - `C <begin lsn> <n>`: a checkpoint of `n` entries is committed;
//! - `x <lsn>` before calling `truncate_after(lsn)`, then `X <lsn>` once it
//!   returned, or `x- <lsn>` if it was refused (below the last checkpoint);
//! - `T <asked> <clamped>`: a trim returned;
//! - `S`: a `sync()` returned (in `none` mode, `D`/`B`/`C` lines are durable
//!   only once an `S` line follows them).

use std::{
    error::Error,
    io::{self, Write},
    path::PathBuf,
};

use wal_core::{Lsn, Wal, WalOptions};
use wal_fs::{FsOptions, FsStore, SyncMode};

#[path = "../../tests/support/payload.rs"]
mod payload;

use payload::{encode, splitmix, Payload};

fn say(line: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(line.as_bytes())?;
    out.write_all(b"\n")?;
    out.flush()
}

struct Gen {
    rng: u64,
    seq: u64,
}

impl Gen {
    fn below(&mut self, n: u64) -> u64 {
        splitmix(&mut self.rng) % n
    }
    fn fill_len(&mut self) -> u32 {
        match self.below(20) {
            0 => 16_000 + self.below(48_000) as u32,
            1..=3 => self.below(4_000) as u32,
            _ => self.below(200) as u32,
        }
    }
    fn payload(&mut self, tag: u8, group: u64, idx: u32, n: u32) -> (u64, Vec<u8>) {
        let seq = self.seq;
        self.seq += 1;
        let fill_len = self.fill_len();
        let bytes = encode(Payload {
            tag,
            seq,
            group,
            idx,
            n,
            fill_len,
        });
        (seq, bytes)
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: wal-fs-crash-child <dir> <seed> <first seq> <every-batch|none>";
    let dir = PathBuf::from(args.next().ok_or(usage)?);
    let seed: u64 = args.next().ok_or(usage)?.parse()?;
    let first_seq: u64 = args.next().ok_or(usage)?.parse()?;
    let sync_mode = match args.next().as_deref() {
        Some("every-batch") => SyncMode::EveryBatch,
        Some("none") => SyncMode::None,
        _ => return Err(usage.into()),
    };
    let mut gen = Gen {
        rng: seed,
        seq: first_seq,
    };

    let options = FsOptions::default()
        .segment_bytes(256 << 10)
        .sync_mode(sync_mode);
    let (wal, recovery) = Wal::open(FsStore::new(dir, options), WalOptions::default()).await?;
    drop(recovery);
    say("READY")?;
    // The newest checkpoint commit this process made: truncates above it are
    // allowed; below it (or before any) they may be refused.
    let mut last_commit: Option<Lsn> = None;

    loop {
        if sync_mode == SyncMode::None && gen.below(3) == 0 {
            wal.sync().await?;
            say("S")?;
        }
        match gen.below(14) {
            0..=5 => {
                // A burst of pipelined appends: one group-commit batch or a few.
                let k = 1 + gen.below(8);
                let mut pending = Vec::new();
                for _ in 0..k {
                    let (seq, bytes) = gen.payload(b'D', 0, 0, 1);
                    let (lsn, done) = wal.submit(bytes).await?;
                    pending.push((seq, lsn, done));
                }
                for (seq, lsn, done) in pending {
                    done.await?;
                    say(&format!("D {seq} {lsn}"))?;
                }
            }
            6 => {
                let n = 2 + gen.below(6) as u32;
                let group = gen.seq;
                let items: Vec<Vec<u8>> =
                    (0..n).map(|i| gen.payload(b'D', group, i, n).1).collect();
                let lsns = wal.append_batch(items).await?;
                let first = lsns.first().ok_or("empty batch")?;
                say(&format!("B {group} {n} {first}"))?;
            }
            7 | 8 => {
                // Atomic batches pipelined: up to three submitted before the
                // first is awaited, each acknowledged once its completion
                // resolves.
                let mut pending = Vec::new();
                for _ in 0..1 + gen.below(3) {
                    let n = 2 + gen.below(6) as u32;
                    let group = gen.seq;
                    let items: Vec<Vec<u8>> =
                        (0..n).map(|i| gen.payload(b'D', group, i, n).1).collect();
                    let (lsns, done) = wal.submit_batch(items).await?;
                    pending.push((group, n, *lsns.start(), done));
                }
                for (group, n, first, done) in pending {
                    done.await?;
                    say(&format!("B {group} {n} {first}"))?;
                }
            }
            9 | 10 => {
                let last = wal.last_lsn().map_or(0, Lsn::get);
                let asked = Lsn(gen.below(last + 1));
                let clamped = wal.trim_before(asked).await?;
                say(&format!("T {asked} {clamped}"))?;
            }
            11 => {
                // Cut a random stretch above the last commit this process
                // made; with no such commit, anywhere (down to 0).
                let last = wal.last_lsn().map_or(0, Lsn::get);
                let floor = last_commit.map_or(0, Lsn::get).min(last);
                let at = Lsn(floor + gen.below(last - floor + 1));
                say(&format!("x {at}"))?;
                match wal.truncate_after(at).await {
                    Ok(()) => say(&format!("X {at}"))?,
                    Err(wal_core::Error::TruncateBelowCheckpoint { .. }) => {
                        say(&format!("x- {at}"))?
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            _ => {
                let mut cp = wal.begin_checkpoint().await?;
                let begin = cp.begin_lsn();
                let n = 1 + gen.below(4) as u32;
                for i in 0..n {
                    let (_, bytes) = gen.payload(b'K', begin.get(), i, n);
                    cp.append(bytes).await?;
                    if gen.below(2) == 0 {
                        // Data appends go on while a checkpoint is open.
                        let (seq, bytes) = gen.payload(b'D', 0, 0, 1);
                        let lsn = wal.append(bytes).await?;
                        say(&format!("D {seq} {lsn}"))?;
                    }
                }
                match gen.below(5) {
                    0 => cp.abort().await?,
                    1 => drop(cp), // dropped: aborted in the background
                    _ => {
                        last_commit = Some(cp.commit().await?);
                        say(&format!("C {begin} {n}"))?;
                    }
                }
            }
        }
    }
}
