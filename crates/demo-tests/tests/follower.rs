//! The kvstore example's follower (`examples/kvstore/follower.rs`): the
//! state a reader that owns nothing rebuilds from a log's raw records must
//! be the state the writer has, from any point the reading stopped at, on a
//! log whose start was trimmed away after checkpoints, and across a
//! checkpoint cut off by a crash; and a write that does not follow the one
//! before it (what a fenced writer's write would look like) is refused.
#![allow(clippy::unwrap_used)]

#[allow(dead_code)]
#[path = "../../../examples/kvstore/kv.rs"]
mod kv;

#[allow(dead_code)]
#[path = "../../../examples/kvstore/follower.rs"]
mod follower;

use follower::Follower;
use kv::{demo_op, encode_op, KvState, KvStore};
use wal::{Lsn, MemStore, Record, RecordKind};

const KEYS: u64 = 40;

fn expected(seed: u64, n: u64) -> KvState {
    let mut s = KvState::default();
    for seq in 1..=n {
        s.apply(seq, &demo_op(seed, seq, KEYS));
    }
    s
}

/// Feeds `records` one by one; after each, a known state must be exactly
/// the writes up to its seq. Returns the follower.
fn follow_all(records: &[Record], seed: u64) -> Follower {
    let mut f = Follower::new();
    for r in records {
        f.apply(r).unwrap();
        if let Some(state) = f.state() {
            assert_eq!(state, &expected(seed, state.seq), "after lsn {}", r.lsn);
        }
    }
    f
}

async fn write(mem: &MemStore, seed: u64, from: u64, to: u64, checkpoint_every: u64) -> KvStore {
    let (mut store, _) = KvStore::open(mem.clone(), checkpoint_every).await.unwrap();
    assert_eq!(store.next_seq(), from);
    for seq in from..=to {
        store.apply(demo_op(seed, seq, KEYS)).await.unwrap();
    }
    store
}

#[tokio::test]
async fn follows_a_log_from_its_start() {
    let mem = MemStore::new();
    let store = write(&mem, 1, 1, 300, 0).await;
    let want = store.state().clone();
    store.close().await.unwrap();
    let records = mem.durable_records();
    assert_eq!(records.first().unwrap().lsn, Lsn::FIRST);
    let f = follow_all(&records, 1);
    assert_eq!(f.state(), Some(&want));
}

#[tokio::test]
async fn follows_a_trimmed_log_from_its_first_committed_checkpoint() {
    let mem = MemStore::new();
    let mut store = write(&mem, 2, 1, 400, 60).await;
    store.wait_checkpoint().await.unwrap();
    let want = store.state().clone();
    store.close().await.unwrap();
    let records = mem.durable_records();
    // The checkpoints let the store drop the log's start: the follower
    // must take its base from a checkpoint.
    assert!(
        records.first().unwrap().lsn > Lsn::FIRST,
        "nothing was trimmed"
    );
    let f = follow_all(&records, 2);
    assert_eq!(f.state(), Some(&want));
    // Every suffix that starts at a checkpoint's begin marker also works
    // (what a reader sees after a later trim).
    for (i, r) in records.iter().enumerate() {
        if r.kind == RecordKind::CheckpointBegin {
            let f = follow_all(&records[i..], 2);
            assert_eq!(f.state(), Some(&want), "from the begin marker at {}", r.lsn);
        }
    }
}

#[tokio::test]
async fn a_checkpoint_cut_off_by_a_crash_is_not_a_base() {
    let mem = MemStore::new();
    let mut store = write(&mem, 3, 1, 150, 50).await;
    store.wait_checkpoint().await.unwrap();
    // A checkpoint whose first entries are durable, then a crash.
    let snapshot = store.state().snapshot_entries();
    let wal = store.into_wal();
    let mut cp = wal.begin_checkpoint().await.unwrap();
    cp.append(snapshot[0].clone()).await.unwrap();
    wal.sync().await.unwrap();
    wal.simulate_crash().await;
    drop(cp);
    let store = write(&mem, 3, 151, 260, 0).await;
    let want = store.state().clone();
    store.close().await.unwrap();
    let records = mem.durable_records();
    let count = |kind| records.iter().filter(|r| r.kind == kind).count();
    assert!(
        count(RecordKind::CheckpointBegin) > count(RecordKind::CheckpointCommit),
        "the crash left no unfinished checkpoint"
    );
    let f = follow_all(&records, 3);
    assert_eq!(f.state(), Some(&want));
}

#[test]
fn a_write_that_does_not_follow_the_last_is_refused() {
    let op = |seq| encode_op(seq, &demo_op(4, seq, KEYS));
    let mut f = Follower::new();
    f.apply(&Record::new(Lsn(1), RecordKind::Data, op(1)))
        .unwrap();
    f.apply(&Record::new(Lsn(2), RecordKind::Data, op(2)))
        .unwrap();
    // A second write #2 (a writer that lost the log, had its write landed).
    let dup = f.apply(&Record::new(Lsn(3), RecordKind::Data, op(2)));
    assert!(dup.unwrap_err().contains("write #2 follows write #2"));
    let mut f = Follower::new();
    f.apply(&Record::new(Lsn(1), RecordKind::Data, op(1)))
        .unwrap();
    let gap = f.apply(&Record::new(Lsn(2), RecordKind::Data, op(3)));
    assert!(gap.unwrap_err().contains("write #3 follows write #1"));
    // Lsns must increase.
    let back = f.apply(&Record::new(Lsn(1), RecordKind::Data, op(2)));
    assert!(back.is_err());
}
