//! Rebuilding the store's state from the raw records of a log that another
//! process owns, as a reader that owns nothing sees them (data entries,
//! checkpoint entries and the core's markers, in Lsn order): what the
//! standby does while it waits to take over, and how the demo reads what a
//! log holds without claiming it.
//!
//! A log whose first stored record is Lsn 1 is read from the empty state.
//! Otherwise its beginning was trimmed after a checkpoint committed, and
//! the trim kept that checkpoint's begin marker and everything after it: the
//! first committed checkpoint read is the base, and the data entries logged
//! after its begin marker are applied on top of it.

use wal::{Lsn, Record, RecordKind};

use crate::kv::{decode_checkpoint_entry, decode_op, CheckpointEntry, KvState, Op};

/// A state kept up to date from a log's raw records.
#[derive(Default)]
pub struct Follower {
    /// The state, once known.
    state: Option<KvState>,
    /// The checkpoint being read.
    pending: Option<Pending>,
    /// Data entries read while the state was not known yet.
    early: Vec<(Lsn, u64, Op)>,
    /// The last record taken in.
    last: Lsn,
}

struct Pending {
    begin: Lsn,
    snapshot: KvState,
    announced: Option<u64>,
}

impl Follower {
    /// A follower that has read nothing.
    pub fn new() -> Follower {
        Follower::default()
    }

    /// The state, once a base is known.
    pub fn state(&self) -> Option<&KvState> {
        self.state.as_ref()
    }

    /// The last Lsn taken in (`Lsn::ZERO`: none).
    pub fn last_lsn(&self) -> Lsn {
        self.last
    }

    /// Takes in the next record. Returns the writes this applied to the
    /// state, in order (several at once when a checkpoint became the base
    /// and the writes after it were applied on top).
    pub fn apply(&mut self, r: &Record) -> Result<Vec<(u64, Op)>, String> {
        if r.lsn <= self.last {
            return Err(format!("lsn {} follows lsn {}", r.lsn, self.last));
        }
        if self.last == Lsn::ZERO && r.lsn == Lsn::FIRST {
            self.state = Some(KvState::default());
        }
        self.last = r.lsn;
        let at = |e: String| format!("lsn {}: {e}", r.lsn);
        let mut applied = Vec::new();
        match r.kind {
            RecordKind::Data => {
                let (seq, op) = decode_op(&r.payload).map_err(at)?;
                match &mut self.state {
                    Some(state) => {
                        apply_next(state, seq, &op).map_err(at)?;
                        applied.push((seq, op));
                    }
                    None => self.early.push((r.lsn, seq, op)),
                }
            }
            RecordKind::CheckpointBegin => {
                self.pending = Some(Pending {
                    begin: r.lsn,
                    snapshot: KvState::default(),
                    announced: None,
                });
            }
            RecordKind::Checkpoint => {
                // Entries of a checkpoint whose begin marker was not read
                // (cannot happen on a log trimmed by the core) are skipped.
                if let Some(p) = &mut self.pending {
                    match (
                        decode_checkpoint_entry(&r.payload).map_err(at)?,
                        p.announced,
                    ) {
                        (CheckpointEntry::Header { seq, keys }, None) => {
                            p.snapshot.seq = seq;
                            p.announced = Some(keys);
                        }
                        (CheckpointEntry::Pairs(pairs), Some(_)) => p.snapshot.map.extend(pairs),
                        _ => return Err(at("checkpoint entries out of order".into())),
                    }
                }
            }
            RecordKind::CheckpointCommit => {
                let begin = r.marker_target().map_err(|e| e.to_string())?;
                match self.pending.take() {
                    Some(p) if p.begin == begin && self.state.is_none() => {
                        if p.announced != Some(p.snapshot.map.len() as u64) {
                            return Err(at(format!(
                                "the checkpoint at {begin} announced {:?} keys but holds {}",
                                p.announced,
                                p.snapshot.map.len()
                            )));
                        }
                        let mut state = p.snapshot;
                        for (lsn, seq, op) in std::mem::take(&mut self.early) {
                            if lsn > begin {
                                apply_next(&mut state, seq, &op)
                                    .map_err(|e| format!("lsn {lsn}: {e}"))?;
                                applied.push((seq, op));
                            }
                        }
                        self.state = Some(state);
                    }
                    // The state is already known: the snapshot only repeats it.
                    _ => {}
                }
            }
            RecordKind::CheckpointAbort => self.pending = None,
            RecordKind::Truncated => {
                return Err(at(
                    "a truncated log: the follower does not handle truncation".into(),
                ))
            }
        }
        Ok(applied)
    }
}

/// Applies write `seq`, which must be the one after the state's last.
fn apply_next(state: &mut KvState, seq: u64, op: &Op) -> Result<(), String> {
    if seq != state.seq + 1 {
        return Err(format!(
            "write #{seq} follows write #{}: writes must be consecutive",
            state.seq
        ));
    }
    state.apply(seq, op);
    Ok(())
}

/// A digest of a state (FNV-1a over the seq and every pair), so that two
/// processes can compare maps in one line.
pub fn digest(state: &KvState) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    eat(&state.seq.to_le_bytes());
    for (k, v) in &state.map {
        eat(&(k.len() as u64).to_le_bytes());
        eat(k.as_bytes());
        eat(&(v.len() as u64).to_le_bytes());
        eat(v.as_bytes());
    }
    h
}
