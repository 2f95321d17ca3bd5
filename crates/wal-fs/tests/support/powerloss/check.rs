//! The promises a recovered log must keep, checked against the oracle.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use wal_core::{CheckpointInfo, EntryKind};

use super::workload::{CpEnd, Oracle};

/// One broken promise: a class (for grouping) and the details.
#[derive(Clone, Debug)]
pub struct Violation {
    pub class: &'static str,
    pub detail: String,
}

fn v(out: &mut Vec<Violation>, class: &'static str, detail: String) {
    out.push(Violation { class, detail });
}

fn parse_data(p: &Bytes) -> Option<usize> {
    if p.len() < 13 || p[0] != b'D' {
        return None;
    }
    Some(u32::from_le_bytes(p[1..5].try_into().ok()?) as usize)
}

/// Checks a recovered log: `cp` and `entries` from the recovery stream,
/// `next` the Lsn a probe append got after it.
pub fn check(
    o: &Oracle,
    cp: Option<CheckpointInfo>,
    entries: &[(u64, EntryKind, Bytes)],
    next: u64,
) -> (Vec<Violation>, BTreeSet<usize>) {
    let mut out = Vec::new();
    // -- the checkpoint: at least the last acknowledged commit, and whole.
    let required_cp = o
        .cps
        .iter()
        .enumerate()
        .filter(|(_, c)| o.counts_at(c.commit.map(|x| x.1), c.commit.map(|x| x.0)))
        .map(|(i, _)| i)
        .max();
    let got_cp = cp.and_then(|info| {
        let i = o.cps.iter().position(|c| c.begin == info.begin.0);
        if i.is_none() {
            v(
                &mut out,
                "unknown checkpoint recovered",
                format!("recovered checkpoint {info:?} was never begun"),
            );
        }
        i
    });
    if let (Some(i), Some(info)) = (got_cp, cp) {
        let c = &o.cps[i];
        if c.end != CpEnd::Commit || !c.end_issued {
            v(
                &mut out,
                "aborted checkpoint recovered",
                format!(
                    "checkpoint {i} ({:?}, begin {}) recovered as {info:?}",
                    c.end, c.begin
                ),
            );
        }
    }
    if let Some(req) = required_cp.filter(|r| got_cp < Some(*r)) {
        v(
            &mut out,
            "acknowledged checkpoint lost",
            format!(
                "commit of checkpoint {req} (begin {}) was acknowledged; recovered {:?}",
                o.cps[req].begin,
                got_cp.map(|i| (i, o.cps[i].begin))
            ),
        );
    }
    let cp_entries: Vec<&(u64, EntryKind, Bytes)> = entries
        .iter()
        .filter(|e| e.1 == EntryKind::Checkpoint)
        .collect();
    let want: Vec<(u64, Bytes)> = got_cp
        .map(|i| o.cps[i].entries.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|(p, l)| (l, p))
        .collect();
    let got: Vec<(u64, Bytes)> = cp_entries.iter().map(|e| (e.0, e.2.clone())).collect();
    if want != got {
        v(
            &mut out,
            "checkpoint not whole",
            format!(
                "checkpoint {got_cp:?}: want lsns {:?}, got {:?}",
                want.iter().map(|w| w.0).collect::<Vec<_>>(),
                got.iter().map(|w| w.0).collect::<Vec<_>>()
            ),
        );
    }
    let floor = cp.map_or(0, |c| c.begin.0);

    // -- data entries: known, byte-exact, in order, above the checkpoint.
    let mut present: BTreeMap<usize, u64> = BTreeMap::new();
    let mut prev = 0u64;
    for (lsn, kind, payload) in entries.iter().filter(|e| e.1 == EntryKind::Data) {
        let _ = kind;
        if *lsn <= prev {
            v(&mut out, "out of order", format!("lsn {lsn} after {prev}"));
        }
        prev = *lsn;
        if *lsn <= floor {
            v(
                &mut out,
                "entry below checkpoint",
                format!("data lsn {lsn} at or below the checkpoint's begin {floor}"),
            );
        }
        let op = parse_data(payload).filter(|op| *op < o.data.len());
        let Some(op) = op else {
            v(
                &mut out,
                "garbage entry",
                format!("lsn {lsn}: payload never appended"),
            );
            continue;
        };
        let d = &o.data[op];
        if d.payload != *payload {
            v(
                &mut out,
                "payload damaged",
                format!("op{op} at lsn {lsn}: bytes differ"),
            );
        }
        if d.lsn.is_some_and(|l| l != *lsn) {
            v(
                &mut out,
                "wrong lsn",
                format!("op{op} recovered at lsn {lsn}, acknowledged at {:?}", d.lsn),
            );
        }
        present.insert(op, *lsn);
    }

    // Which truncates cut which entries.
    let cut_by = |op: usize, t: &super::workload::TruncRec| -> bool {
        let d = &o.data[op];
        d.submitted < t.issued && d.lsn.is_some_and(|l| l > t.after)
    };
    let trimmed = |op: usize| -> bool {
        let d = &o.data[op];
        o.trims
            .iter()
            .any(|t| t.before_any_commit && d.lsn.is_some_and(|l| l < t.point))
    };
    let counted_cut = |op: usize| {
        o.truncates
            .iter()
            .any(|t| o.counts(t.acked) && cut_by(op, t))
    };
    let any_cut = |op: usize| o.truncates.iter().any(|t| cut_by(op, t));
    let required = |op: usize| -> bool {
        let d = &o.data[op];
        o.promised(d) && d.lsn.is_some_and(|l| l > floor) && !any_cut(op) && !trimmed(op)
    };

    for op in 0..o.data.len() {
        if required(op) && !present.contains_key(&op) {
            v(
                &mut out,
                "acknowledged entry lost",
                format!(
                    "op{op} lsn {:?} acknowledged, not recovered",
                    o.data[op].lsn
                ),
            );
        }
        if counted_cut(op) && present.contains_key(&op) {
            v(
                &mut out,
                "truncated entry came back",
                format!(
                    "op{op} lsn {:?} was cut by an acknowledged truncate",
                    o.data[op].lsn
                ),
            );
        }
    }
    // Interrupted (or, with SyncMode::None, unsynced) truncates: all or none.
    for t in o.truncates.iter().filter(|t| !o.counts(t.acked)) {
        let s: Vec<usize> = (0..o.data.len())
            .filter(|&op| {
                cut_by(op, t)
                    && o.promised(&o.data[op])
                    && o.data[op].lsn.is_some_and(|l| l > floor)
                    && !counted_cut(op)
                    && !trimmed(op)
            })
            .collect();
        let n = s.iter().filter(|op| present.contains_key(op)).count();
        if n != 0 && n != s.len() {
            v(
                &mut out,
                "interrupted truncate partial",
                format!(
                    "truncate_after({}) cut {} entries; {n} of them came back",
                    t.after,
                    s.len()
                ),
            );
        }
    }
    // Batches: all or none (unless a truncate cut into them).
    let mut batches: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (op, d) in o.data.iter().enumerate() {
        if d.count > 1 {
            batches.entry(d.batch).or_default().push(op);
        }
    }
    for (b, ops) in batches {
        if ops
            .iter()
            .any(|&op| any_cut(op) || trimmed(op) || o.data[op].lsn.is_some_and(|l| l <= floor))
        {
            continue;
        }
        let n = ops.iter().filter(|op| present.contains_key(op)).count();
        if n != 0 && n != ops.len() {
            v(
                &mut out,
                "batch split",
                format!("batch op{b}: {n} of {} entries recovered", ops.len()),
            );
        }
    }

    // -- the next Lsn is above every acknowledged one.
    let mut max = 0u64;
    for d in &o.data {
        if o.promised(d) {
            max = max.max(d.lsn.unwrap_or(0));
        }
    }
    for c in &o.cps {
        if let Some((l, t)) = c.commit {
            if o.counts_at(Some(t), Some(l)) {
                max = max.max(l);
            }
        }
    }
    let seen: BTreeSet<u64> = entries.iter().map(|e| e.0).collect();
    max = max.max(seen.iter().next_back().copied().unwrap_or(0));
    if next <= max {
        v(
            &mut out,
            "lsn reused",
            format!("next append got lsn {next}, an acknowledged or recovered lsn reaches {max}"),
        );
    }
    (out, present.into_keys().collect())
}
