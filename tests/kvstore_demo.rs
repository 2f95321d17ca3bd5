//! The `kvstore` example's store (`examples/kvstore/kv.rs`), end to end:
//! writes, background checkpoints, reopen and recovery on the file backend,
//! and a crash that cuts off everything not yet durable.

#[allow(dead_code)]
#[path = "../examples/kvstore/kv.rs"]
mod kv;

use kv::{decode_op, demo_op, encode_op, KvState, KvStore, Op};
use wal::MemStore;

const KEYS: u64 = 50;

/// The state `n` demo writes from `seed` produce.
fn expected(seed: u64, n: u64) -> KvState {
    let mut s = KvState::default();
    for seq in 1..=n {
        s.apply(seq, &demo_op(seed, seq, KEYS));
    }
    s
}

#[test]
fn op_encoding_round_trips() {
    for seq in 1..200 {
        let op = demo_op(7, seq, KEYS);
        assert_eq!(decode_op(&encode_op(seq, &op)).unwrap(), (seq, op));
    }
    let del = Op::Del { key: "k".into() };
    let bytes = encode_op(3, &del);
    assert_eq!(&bytes[..], b"D\x03\0\0\0\0\0\0\0\x01\0\0\0k");
    assert!(decode_op(&bytes[..bytes.len() - 1]).is_err());
    assert!(decode_op(b"X\x01\0\0\0\0\0\0\0").is_err());
}

#[tokio::test]
async fn writes_and_checkpoints_survive_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("kv");
    let seed = 42;

    let (mut store, report) = KvStore::open_dir(&dir, 40).await.unwrap();
    assert!(report.checkpoint.is_none());
    assert_eq!(store.state(), &KvState::default());
    for seq in 1..=250 {
        let (s, _lsn) = store.apply(demo_op(seed, seq, KEYS)).await.unwrap();
        assert_eq!(s, seq);
    }
    let mut done = store.take_finished();
    done.extend(store.close().await.unwrap());
    assert!(done.len() >= 3, "checkpoints: {done:?}");
    let last = *done.last().unwrap();

    let (store, report) = KvStore::open_dir(&dir, 40).await.unwrap();
    assert_eq!(store.state(), &expected(seed, 250));
    let cp = report.checkpoint.expect("a committed checkpoint");
    assert_eq!((cp.begin, cp.commit), (last.begin, last.commit));
    assert_eq!(report.checkpoint_seq, last.seq);
    assert_eq!(report.checkpoint_keys, last.keys);
    assert_eq!(report.replayed as u64, 250 - last.seq);
    store.close().await.unwrap();
}

#[tokio::test]
async fn explicit_checkpoint_then_more_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("kv");
    let (mut store, _) = KvStore::open_dir(&dir, 0).await.unwrap();
    for (k, v) in [("a", "1"), ("b", "2"), ("c", "3")] {
        store
            .apply(Op::Put {
                key: k.into(),
                value: v.into(),
            })
            .await
            .unwrap();
    }
    let cp = store.checkpoint().await.unwrap();
    assert_eq!((cp.keys, cp.seq), (3, 3));
    store.apply(Op::Del { key: "b".into() }).await.unwrap();
    store
        .apply(Op::Put {
            key: "a".into(),
            value: "9".into(),
        })
        .await
        .unwrap();
    store.close().await.unwrap();

    let (store, report) = KvStore::open_dir(&dir, 0).await.unwrap();
    assert_eq!(report.checkpoint_keys, 3);
    assert_eq!(report.replayed, 2);
    assert_eq!(store.get("a"), Some("9"));
    assert_eq!(store.get("b"), None);
    assert_eq!(store.get("c"), Some("3"));
    assert_eq!(store.state().seq, 5);
    store.close().await.unwrap();
}

/// A crash in the middle of everything (writes in flight, a checkpoint
/// being written): every acknowledged write comes back, and whatever else
/// came back is a prefix of the writes that were attempted.
#[tokio::test]
async fn crash_recovers_every_acknowledged_write() {
    let seed = 9;
    for crash_after in [0u64, 1, 17, 60, 61, 99, 150] {
        let mem = MemStore::new();
        let (mut store, _) = KvStore::open(mem.clone(), 30).await.unwrap();
        for seq in 1..=crash_after {
            store.apply(demo_op(seed, seq, KEYS)).await.unwrap();
        }
        // Queue more writes behind the last acknowledged one without
        // waiting for them, then crash.
        let wal = store.into_wal();
        for seq in crash_after + 1..=crash_after + 5 {
            let _ = wal
                .submit(encode_op(seq, &demo_op(seed, seq, KEYS)))
                .await
                .unwrap();
        }
        wal.simulate_crash().await;

        let (store, _) = KvStore::open(mem.clone(), 30).await.unwrap();
        let got = store.state().clone();
        assert!(
            (crash_after..=crash_after + 5).contains(&got.seq),
            "crash after {crash_after}: recovered up to #{}",
            got.seq
        );
        assert_eq!(got, expected(seed, got.seq), "crash after {crash_after}");
        store.close().await.unwrap();
    }
}

/// The same on the file backend: the directory holds only what was durable.
#[tokio::test]
async fn crash_on_fs_keeps_checkpoint_and_acknowledged_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("kv");
    let seed = 5;
    let (mut store, _) = KvStore::open_dir(&dir, 25).await.unwrap();
    for seq in 1..=140 {
        store.apply(demo_op(seed, seq, KEYS)).await.unwrap();
    }
    // A checkpoint may still be running in the background: the crash cuts
    // it off, and recovery falls back to the previous committed one.
    store.into_wal().simulate_crash().await;

    let (store, report) = KvStore::open_dir(&dir, 25).await.unwrap();
    assert_eq!(store.state(), &expected(seed, 140));
    assert!(report.checkpoint.is_some());
    assert_eq!(
        report.checkpoint_seq + report.replayed as u64,
        140,
        "the checkpoint plus the replayed writes are every write"
    );
    store.close().await.unwrap();
}
