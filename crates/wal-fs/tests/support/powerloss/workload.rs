//! The seeded workload the explorer crashes, and the record of what it was
//! told (the oracle the checks compare a recovered log against).

use bytes::Bytes;
use wal_core::{Completion, Error, Lsn, Wal};
use wal_fs::SyncMode;

use super::disk::Rng;

/// A segment size small enough that a workload rotates often.
pub const SEGMENT_BYTES: u64 = 2048;

/// What to cut with `truncate_after`.
#[derive(Clone, Copy, Debug)]
pub enum Cut {
    /// The last entry of the last segment only.
    InsideLastSegment,
    /// Back across about `n` segments.
    AcrossSegments(u64),
    /// Below the first stored Lsn (after a trim).
    BelowFirstSegment,
    /// `truncate_after(0)`: everything.
    Everything,
}

/// How a checkpoint ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpEnd {
    Commit,
    Abort,
    Drop,
}

/// One step of a workload.
#[derive(Clone, Debug)]
pub enum Step {
    Append(usize),
    /// Several appends submitted before any is awaited (group commit).
    Pipelined(Vec<usize>),
    Batch(Vec<usize>),
    Checkpoint {
        during: Vec<usize>,
        entries: Vec<usize>,
        end: CpEnd,
    },
    Trim,
    Truncate(Cut),
    Sync,
}

/// Which operations a generated workload may use.
#[derive(Clone, Copy, Debug)]
pub struct Mix {
    pub truncates: bool,
    pub checkpoints: bool,
    pub trims: bool,
}

impl Mix {
    pub const ALL: Mix = Mix {
        truncates: true,
        checkpoints: true,
        trims: true,
    };
}

fn size(rng: &mut Rng) -> usize {
    match rng.below(10) {
        // A big entry: bigger than a segment, so it gets one of its own.
        0 => rng.range(SEGMENT_BYTES + 200, 2 * SEGMENT_BYTES) as usize,
        1..=3 => rng.range(300, 700) as usize,
        _ => rng.range(24, 200) as usize,
    }
}

fn fill(rng: &mut Rng, steps: &mut Vec<Step>, lo: u64, hi: u64) {
    let n = rng.range(lo, hi);
    for _ in 0..n {
        match rng.below(5) {
            0 => {
                let k = rng.range(2, 5);
                steps.push(Step::Batch((0..k).map(|_| size(rng)).collect()));
            }
            1 => {
                let k = rng.range(2, 6);
                steps.push(Step::Pipelined((0..k).map(|_| size(rng)).collect()));
            }
            _ => steps.push(Step::Append(size(rng))),
        }
        if rng.below(6) == 0 {
            steps.push(Step::Sync);
        }
    }
}

/// A workload of about 40 steps that uses every operation of `mix`.
pub fn generate(seed: u64, mix: Mix) -> Vec<Step> {
    let mut rng = Rng::new(seed.wrapping_mul(0x1000_0001));
    let mut s = Vec::new();
    let r = &mut rng;
    fill(r, &mut s, 5, 8);
    s.push(Step::Sync);
    if mix.truncates {
        s.push(Step::Truncate(Cut::InsideLastSegment));
        fill(r, &mut s, 4, 7);
        s.push(Step::Sync);
        s.push(Step::Truncate(Cut::AcrossSegments(r.range(1, 3))));
        fill(r, &mut s, 3, 3);
    }
    if mix.trims {
        s.push(Step::Sync);
        s.push(Step::Trim);
    }
    if mix.truncates {
        fill(r, &mut s, 2, 2);
        if mix.trims {
            s.push(Step::Truncate(Cut::BelowFirstSegment));
        }
        fill(r, &mut s, 3, 3);
        s.push(Step::Sync);
        s.push(Step::Truncate(Cut::Everything));
    }
    fill(r, &mut s, 2, 4);
    if mix.checkpoints {
        let mut ends = vec![CpEnd::Abort, CpEnd::Drop, CpEnd::Commit, CpEnd::Commit];
        // Shuffle, keeping the last commit last.
        let i = r.below(3) as usize;
        ends.swap(i, 2);
        for end in ends {
            let during = (0..r.below(3)).map(|_| size(r)).collect();
            let entries = (0..r.range(1, 3)).map(|_| size(r)).collect();
            s.push(Step::Checkpoint {
                during,
                entries,
                end,
            });
            fill(r, &mut s, 1, 3);
            if mix.trims && r.coin() {
                s.push(Step::Trim);
            }
            if mix.truncates && end == CpEnd::Commit {
                s.push(Step::Truncate(Cut::InsideLastSegment));
                fill(r, &mut s, 2, 2);
            }
        }
    }
    fill(r, &mut s, 2, 2);
    s.push(Step::Sync);
    s
}

/// The header every data payload starts with: `D`, op, batch, index, count.
const DATA_HEADER: usize = 13;

/// A data payload: a header naming it, then bytes derived from it.
pub fn data_payload(op: u32, batch: u32, idx: u16, count: u16, len: usize) -> Bytes {
    let mut v = Vec::with_capacity(len.max(DATA_HEADER));
    v.push(b'D');
    v.extend_from_slice(&op.to_le_bytes());
    v.extend_from_slice(&batch.to_le_bytes());
    v.extend_from_slice(&idx.to_le_bytes());
    v.extend_from_slice(&count.to_le_bytes());
    let mut i = 0u32;
    while v.len() < len {
        v.push((op.wrapping_mul(31).wrapping_add(i)) as u8);
        i += 1;
    }
    Bytes::from(v)
}

/// A checkpoint entry's payload: `C`, checkpoint number, index, count.
pub fn cp_payload(n: u32, idx: u16, count: u16, len: usize) -> Bytes {
    let mut v = vec![b'C'];
    v.extend_from_slice(&n.to_le_bytes());
    v.extend_from_slice(&idx.to_le_bytes());
    v.extend_from_slice(&count.to_le_bytes());
    while v.len() < len {
        v.push(n as u8 ^ v.len() as u8);
    }
    Bytes::from(v)
}

/// One data entry the workload submitted.
#[derive(Clone, Debug)]
pub struct DataRec {
    pub payload: Bytes,
    pub batch: u32,
    pub count: u16,
    /// Known once submitted (single appends) or acknowledged (batches).
    pub lsn: Option<u64>,
    /// Step time of the acknowledgement.
    pub acked: Option<u64>,
    pub submitted: u64,
    /// Made durable by a later session (the probe of an fsyncgate reopen,
    /// appended and synced there): promised whatever the sync mode.
    pub synced_later: bool,
}

/// One checkpoint the workload opened.
#[derive(Clone, Debug)]
pub struct CpRec {
    pub begin: u64,
    pub entries: Vec<(Bytes, u64)>,
    pub end: CpEnd,
    /// The commit (or abort) marker was queued.
    pub end_issued: bool,
    pub commit: Option<(u64, u64)>,
}

/// One truncate the workload issued.
#[derive(Clone, Debug)]
pub struct TruncRec {
    pub after: u64,
    pub issued: u64,
    pub acked: Option<u64>,
}

/// One trim the workload issued.
#[derive(Clone, Debug)]
pub struct TrimRec {
    /// The clamped point (acknowledged) or the requested one.
    pub point: u64,
    /// No checkpoint commit had been issued before it: it may drop data.
    pub before_any_commit: bool,
}

/// What the workload was told.
#[derive(Clone, Debug)]
pub struct Oracle {
    pub mode: SyncMode,
    pub t: u64,
    /// Step time of the last successful `sync()`.
    pub last_sync: u64,
    /// The highest `Wal::durable_lsn()` the workload saw: every entry
    /// acknowledged at or below it is promised, whatever the sync mode
    /// (the interval and byte-budget modes sync on their own).
    pub durable: u64,
    pub data: Vec<DataRec>,
    pub cps: Vec<CpRec>,
    pub truncates: Vec<TruncRec>,
    pub trims: Vec<TrimRec>,
    /// Steps and their outcomes.
    pub log: Vec<String>,
    /// The first error, if the run failed (the crash).
    pub failure: Option<String>,
}

impl Oracle {
    pub fn new(mode: SyncMode) -> Oracle {
        Oracle {
            mode,
            t: 0,
            last_sync: 0,
            durable: 0,
            data: Vec::new(),
            cps: Vec::new(),
            truncates: Vec::new(),
            trims: Vec::new(),
            log: Vec::new(),
            failure: None,
        }
    }

    /// Whether something acknowledged at `t` is promised to survive a power
    /// loss: always with EveryBatch; with SyncMode::None only if a sync
    /// returned after it.
    pub fn counts(&self, t: Option<u64>) -> bool {
        match t {
            None => false,
            Some(t) => self.mode == SyncMode::EveryBatch || t <= self.last_sync,
        }
    }

    /// Whether a record acknowledged at `t` with Lsn `lsn` is promised: as
    /// [`counts`](Self::counts), or at or below the durable watermark seen.
    pub fn counts_at(&self, t: Option<u64>, lsn: Option<u64>) -> bool {
        self.counts(t) || (t.is_some() && lsn.is_some_and(|l| l <= self.durable))
    }

    /// Whether a data entry is promised to survive a power loss.
    pub fn promised(&self, d: &DataRec) -> bool {
        d.synced_later || self.counts_at(d.acked, d.lsn)
    }

    /// Notes the Wal's durable watermark as it is now.
    fn observe(&mut self, wal: &Wal) {
        self.durable = self.durable.max(wal.durable_lsn().0);
    }

    /// Records `payload` as data entry `op`, appended at `lsn` and synced
    /// by a later session (see [`DataRec::synced_later`]).
    pub fn record_synced_later(&mut self, payload: Bytes, lsn: u64) {
        let t = self.tick();
        let op = self.data.len() as u32;
        self.data.push(DataRec {
            payload,
            batch: op,
            count: 1,
            lsn: Some(lsn),
            acked: Some(t),
            submitted: t,
            synced_later: true,
        });
    }

    fn tick(&mut self) -> u64 {
        self.t += 1;
        self.t
    }

    fn last_known_lsn(&self) -> u64 {
        let d = self.data.iter().filter_map(|d| d.lsn).max().unwrap_or(0);
        let c = self
            .cps
            .iter()
            .flat_map(|c| {
                std::iter::once(c.begin)
                    .chain(c.entries.iter().map(|e| e.1))
                    .chain(c.commit.map(|x| x.0))
            })
            .max()
            .unwrap_or(0);
        d.max(c)
    }
}

fn fail<T>(o: &mut Oracle, what: &str, e: &Error) -> Result<T, ()> {
    o.log.push(format!("  {what} -> Err({e})"));
    o.failure = Some(format!("{what}: {e}"));
    Err(())
}

/// Runs `steps` on `wal` until the first error (the crash).
pub async fn run(wal: &Wal, steps: &[Step], o: &mut Oracle) {
    let _ = run_steps(wal, steps, o).await;
    o.observe(wal);
}

/// Submits one data entry and records it in the oracle (not yet
/// acknowledged): its op number, Lsn and completion.
async fn submit_one(wal: &Wal, o: &mut Oracle, len: usize) -> Result<(u32, Lsn, Completion), ()> {
    let op = o.data.len() as u32;
    let payload = data_payload(op, op, 0, 1, len);
    let t = o.tick();
    match wal.submit(payload.clone()).await {
        Ok((lsn, done)) => {
            o.data.push(DataRec {
                payload,
                batch: op,
                count: 1,
                lsn: Some(lsn.0),
                acked: None,
                submitted: t,
                synced_later: false,
            });
            Ok((op, lsn, done))
        }
        Err(e) => fail(o, &format!("submit op{op}"), &e),
    }
}

async fn append_one(wal: &Wal, o: &mut Oracle, len: usize) -> Result<(), ()> {
    let (op, lsn, done) = submit_one(wal, o, len).await?;
    match done.await {
        Ok(_) => {
            let t = o.tick();
            o.data[op as usize].acked = Some(t);
            o.log
                .push(format!("  append op{op} {len}B -> lsn {}", lsn.0));
            Ok(())
        }
        Err(e) => fail(o, &format!("append op{op} {len}B lsn {}", lsn.0), &e),
    }
}

async fn run_steps(wal: &Wal, steps: &[Step], o: &mut Oracle) -> Result<(), ()> {
    for step in steps {
        o.observe(wal);
        match step {
            Step::Append(len) => append_one(wal, o, *len).await?,
            Step::Pipelined(lens) => {
                let mut pending = Vec::new();
                for len in lens {
                    pending.push(submit_one(wal, o, *len).await?);
                }
                for (op, lsn, done) in pending {
                    match done.await {
                        Ok(_) => {
                            let t = o.tick();
                            o.data[op as usize].acked = Some(t);
                            o.log.push(format!("  pipelined op{op} -> lsn {}", lsn.0));
                        }
                        Err(e) => return fail(o, &format!("pipelined op{op} lsn {}", lsn.0), &e),
                    }
                }
            }
            Step::Batch(lens) => {
                let first = o.data.len() as u32;
                let count = lens.len() as u16;
                let t = o.tick();
                let payloads: Vec<Bytes> = lens
                    .iter()
                    .enumerate()
                    .map(|(i, l)| data_payload(first + i as u32, first, i as u16, count, *l))
                    .collect();
                for p in &payloads {
                    o.data.push(DataRec {
                        payload: p.clone(),
                        batch: first,
                        count,
                        lsn: None,
                        acked: None,
                        submitted: t,
                        synced_later: false,
                    });
                }
                match wal.append_batch(payloads).await {
                    Ok(lsns) => {
                        let t = o.tick();
                        for (i, l) in lsns.iter().enumerate() {
                            let d = &mut o.data[first as usize + i];
                            d.lsn = Some(l.0);
                            d.acked = Some(t);
                        }
                        o.log
                            .push(format!("  batch op{first}+{count} -> lsns {lsns:?}"));
                    }
                    Err(e) => return fail(o, &format!("batch op{first}+{count}"), &e),
                }
            }
            Step::Sync => match wal.sync().await {
                Ok(()) => {
                    o.last_sync = o.tick();
                    o.log.push("  sync".into());
                }
                Err(e) => return fail(o, "sync", &e),
            },
            Step::Trim => {
                // Ask for about half of what is stored.
                let target = Lsn(o.last_known_lsn() / 2 + 1);
                let before_any_commit =
                    !o.cps.iter().any(|c| c.end_issued && c.end == CpEnd::Commit);
                o.tick();
                match wal.trim_before(target).await {
                    Ok(p) => {
                        o.trims.push(TrimRec {
                            point: p.0,
                            before_any_commit,
                        });
                        o.tick();
                        o.log
                            .push(format!("  trim_before({}) -> {}", target.0, p.0));
                    }
                    Err(e) => {
                        o.trims.push(TrimRec {
                            point: target.0,
                            before_any_commit,
                        });
                        return fail(o, &format!("trim_before({})", target.0), &e);
                    }
                }
            }
            Step::Truncate(cut) => {
                let last = o.last_known_lsn();
                let first = wal.first_lsn().map_or(0, |l| l.0);
                let after = match cut {
                    Cut::InsideLastSegment => last.saturating_sub(1),
                    Cut::AcrossSegments(n) => {
                        // Walk back over entries until about n segments of
                        // bytes are behind the cut.
                        let mut bytes = 0u64;
                        let mut at = last;
                        for d in o.data.iter().rev() {
                            if bytes > n * SEGMENT_BYTES {
                                break;
                            }
                            if let Some(l) = d.lsn {
                                bytes += d.payload.len() as u64 + 32;
                                at = l.saturating_sub(1);
                            }
                        }
                        at.max(first)
                    }
                    Cut::BelowFirstSegment => first.saturating_sub(1),
                    Cut::Everything => 0,
                };
                let issued = o.tick();
                o.truncates.push(TruncRec {
                    after,
                    issued,
                    acked: None,
                });
                match wal.truncate_after(Lsn(after)).await {
                    Ok(()) => {
                        let t = o.tick();
                        o.truncates.last_mut().unwrap().acked = Some(t);
                        o.log.push(format!("  truncate_after({after}) [{cut:?}]"));
                    }
                    Err(Error::TruncateBelowCheckpoint { .. }) => {
                        // Refused, changed nothing.
                        o.truncates.pop();
                        o.log
                            .push(format!("  truncate_after({after}) [{cut:?}] refused"));
                    }
                    Err(e) => return fail(o, &format!("truncate_after({after}) [{cut:?}]"), &e),
                }
            }
            Step::Checkpoint {
                during,
                entries,
                end,
            } => {
                let n = o.cps.len() as u32;
                o.tick();
                let mut cp = match wal.begin_checkpoint().await {
                    Ok(cp) => cp,
                    Err(e) => return fail(o, &format!("begin checkpoint {n}"), &e),
                };
                o.cps.push(CpRec {
                    begin: cp.begin_lsn().0,
                    entries: Vec::new(),
                    end: *end,
                    end_issued: false,
                    commit: None,
                });
                o.log.push(format!(
                    "  begin checkpoint {n} at lsn {}",
                    cp.begin_lsn().0
                ));
                for len in during {
                    append_one(wal, o, *len).await?;
                }
                let count = entries.len() as u16;
                for (i, len) in entries.iter().enumerate() {
                    let p = cp_payload(n, i as u16, count, *len);
                    match cp.append(p.clone()).await {
                        Ok(l) => o.cps[n as usize].entries.push((p, l.0)),
                        Err(e) => return fail(o, &format!("checkpoint {n} append"), &e),
                    }
                }
                o.cps[n as usize].end_issued = true;
                o.tick();
                match end {
                    CpEnd::Commit => match cp.commit().await {
                        Ok(l) => {
                            let t = o.tick();
                            o.cps[n as usize].commit = Some((l.0, t));
                            o.log
                                .push(format!("  commit checkpoint {n} at lsn {}", l.0));
                        }
                        Err(e) => return fail(o, &format!("commit checkpoint {n}"), &e),
                    },
                    CpEnd::Abort => match cp.abort().await {
                        Ok(()) => o.log.push(format!("  abort checkpoint {n}")),
                        Err(e) => return fail(o, &format!("abort checkpoint {n}"), &e),
                    },
                    CpEnd::Drop => {
                        drop(cp);
                        o.log.push(format!("  drop checkpoint {n}"));
                    }
                }
            }
        }
    }
    Ok(())
}
