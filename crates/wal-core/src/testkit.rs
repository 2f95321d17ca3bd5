//! The conformance suite every [`WalStore`] must pass: the contract as code.
//!
//! Each check is an async function taking a [`StoreFactory`]. Backends call
//! them through [`conformance_tests!`](crate::conformance_tests), which
//! expands to one `#[tokio::test]` per check:
//!
//! ```text
//! async fn factory() -> MyFactory { MyFactory::new() }
//! wal_core::conformance_tests!(factory);
//! ```
//!
//! Checks panic with a message on failure, like any test.
#![allow(clippy::unwrap_used, missing_docs)]

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;

use crate::{Entry, EntryKind, Error, Lsn, Recovery, Wal, WalOptions, WalStore};

/// Makes store handles onto one log, so a check can "restart the process".
#[async_trait]
pub trait StoreFactory: Send + Sync {
    /// The backend under test.
    type Store: WalStore;
    /// A new handle onto the same log, not yet opened.
    async fn store(&self) -> Self::Store;
    /// Called after a simulated crash and before the next open, for backends
    /// whose ownership outlives a crashed process (an etcd lease): release it
    /// the way an operator or a timeout would. The default does nothing.
    async fn after_crash(&self) {}
}

/// Every check's name, for the macro and for tools.
pub const CHECKS: &[&str] = &[
    "ordering",
    "concurrent_appends",
    "atomic_batch",
    "pipelined_batches",
    "recovery_without_checkpoint",
    "checkpoint_commit",
    "checkpoint_abort",
    "checkpoint_crash_before_commit",
    "several_checkpoints",
    "checkpoint_in_progress",
    "trim",
    "truncate",
    "reopen_after_close",
    "second_opener_locked",
    "oversize_entry",
    "reads_at_bounds",
    "tail_follows",
    "reads_beside_writes",
];

/// Expands to one `#[tokio::test]` per conformance check. The argument is
/// an async fn (path) returning a [`StoreFactory`]; each test gets a fresh one.
#[macro_export]
macro_rules! conformance_tests {
    ($make:path) => {
        $crate::conformance_tests!(@each $make;
            ordering, concurrent_appends, atomic_batch, pipelined_batches,
            recovery_without_checkpoint,
            checkpoint_commit, checkpoint_abort, checkpoint_crash_before_commit,
            several_checkpoints, checkpoint_in_progress, trim, truncate,
            reopen_after_close, second_opener_locked, oversize_entry, reads_at_bounds,
            tail_follows, reads_beside_writes);
    };
    (@each $make:path; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let factory = $make().await;
                $crate::testkit::$check(&factory).await;
            }
        )*
    };
}

// ---- helpers ----

async fn open<F: StoreFactory>(f: &F) -> (Wal, Vec<Entry>) {
    let (wal, rec) = Wal::open(f.store().await, WalOptions::default())
        .await
        .expect("open the log");
    (wal, collect(rec).await)
}

async fn collect(rec: Recovery) -> Vec<Entry> {
    rec.map(|e| e.expect("recovery entry")).collect().await
}

async fn crash<F: StoreFactory>(f: &F, wal: Wal) {
    wal.simulate_crash().await;
    f.after_crash().await;
}

fn payloads(entries: &[Entry]) -> Vec<(EntryKind, String)> {
    entries
        .iter()
        .map(|e| (e.kind, String::from_utf8_lossy(&e.payload).into_owned()))
        .collect()
}

fn data(items: &[&str]) -> Vec<(EntryKind, String)> {
    items
        .iter()
        .map(|s| (EntryKind::Data, s.to_string()))
        .collect()
}

fn with_state(state: &[&str], rest: &[&str]) -> Vec<(EntryKind, String)> {
    let mut v: Vec<_> = state
        .iter()
        .map(|s| (EntryKind::Checkpoint, s.to_string()))
        .collect();
    v.extend(data(rest));
    v
}

async fn append_all(wal: &Wal, items: &[&str]) -> Vec<Lsn> {
    let mut out = Vec::new();
    for s in items {
        out.push(wal.append(s.to_string()).await.expect("append"));
    }
    out
}

async fn read_all(wal: &Wal, from: Lsn) -> Vec<Entry> {
    wal.read_from(from)
        .map(|e| e.expect("read entry"))
        .collect()
        .await
}

async fn next_within(
    tail: &mut futures::stream::BoxStream<'static, crate::Result<Entry>>,
) -> Option<crate::Result<Entry>> {
    tokio::time::timeout(Duration::from_secs(10), tail.next())
        .await
        .expect("tail yields within 10 s")
}

// ---- checks ----

/// Lsns start at 1 and strictly increase; pipelined completions resolve in
/// Lsn order; reads and recovery return entries in order.
pub async fn ordering<F: StoreFactory>(f: &F) {
    let (wal, rec) = open(f).await;
    assert!(rec.is_empty(), "a new log recovers nothing");
    let first = wal.append("e0").await.unwrap();
    assert_eq!(first, Lsn(1), "the first lsn is 1");
    let mut pending = Vec::new();
    for i in 1..50 {
        pending.push(wal.submit(format!("e{i}")).await.unwrap());
    }
    let mut prev = first;
    for (lsn, done) in pending {
        assert!(lsn > prev, "submit lsns strictly increase");
        assert_eq!(done.await.unwrap(), lsn, "completion resolves to its lsn");
        assert!(
            wal.durable_lsn() >= lsn,
            "durable watermark covers a completed lsn"
        );
        prev = lsn;
    }
    let expect: Vec<String> = (0..50).map(|i| format!("e{i}")).collect();
    let expect: Vec<&str> = expect.iter().map(String::as_str).collect();
    let read = read_all(&wal, Lsn(1)).await;
    assert_eq!(payloads(&read), data(&expect));
    assert!(read.windows(2).all(|w| w[0].lsn < w[1].lsn));
    wal.close().await.unwrap();
    let (wal, rec) = open(f).await;
    assert_eq!(payloads(&rec), data(&expect), "recovery after close");
    let next = wal.append("after").await.unwrap();
    assert!(next > prev, "lsns continue after reopen");
    wal.close().await.unwrap();
}

/// Appends from many tasks at once all land, each exactly once.
pub async fn concurrent_appends<F: StoreFactory>(f: &F) {
    let (wal, _) = open(f).await;
    let mut tasks = Vec::new();
    for t in 0..8 {
        let wal = wal.clone();
        tasks.push(tokio::spawn(async move {
            let mut lsns = Vec::new();
            for i in 0..25 {
                lsns.push((
                    wal.append(format!("t{t}-{i}")).await.unwrap(),
                    format!("t{t}-{i}"),
                ));
            }
            lsns
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    acked.sort();
    assert_eq!(acked.len(), 200);
    assert!(acked.windows(2).all(|w| w[0].0 < w[1].0), "lsns are unique");
    crash(f, wal).await;
    let (wal, rec) = open(f).await;
    let got: Vec<(Lsn, String)> = rec
        .iter()
        .map(|e| (e.lsn, String::from_utf8_lossy(&e.payload).into_owned()))
        .collect();
    assert_eq!(
        got, acked,
        "every acknowledged entry is recovered after a crash"
    );
    wal.close().await.unwrap();
}

/// An atomic batch gets consecutive Lsns and survives a crash whole.
pub async fn atomic_batch<F: StoreFactory>(f: &F) {
    let (wal, _) = open(f).await;
    assert!(wal
        .append_batch(Vec::<Bytes>::new())
        .await
        .unwrap()
        .is_empty());
    wal.append("before").await.unwrap();
    let lsns = wal
        .append_batch(["b0", "b1", "b2", "b3", "b4"])
        .await
        .unwrap();
    assert_eq!(lsns.len(), 5);
    assert!(
        lsns.windows(2).all(|w| w[1] == w[0].next()),
        "batch lsns are consecutive"
    );
    crash(f, wal).await;
    let (wal, rec) = open(f).await;
    assert_eq!(
        payloads(&rec),
        data(&["before", "b0", "b1", "b2", "b3", "b4"])
    );
    assert_eq!(rec[1].lsn, lsns[0]);
    wal.close().await.unwrap();
}

/// Batches submitted without waiting ([`Wal::submit_batch`]) get
/// consecutive Lsn ranges in submission order, interleave correctly with
/// single submits, complete in order, refuse empty and oversized batches up
/// front, and survive a crash whole once their completions resolved.
pub async fn pipelined_batches<F: StoreFactory>(f: &F) {
    let (wal, _) = open(f).await;
    assert!(
        matches!(
            wal.submit_batch(Vec::<Bytes>::new()).await,
            Err(Error::InvalidArgument(_))
        ),
        "an empty batch is refused"
    );
    let too_big = Bytes::from(vec![b'x'; wal.max_entry_bytes() + 1]);
    assert!(
        matches!(
            wal.submit_batch([Bytes::from_static(b"ok"), too_big]).await,
            Err(Error::EntryTooLarge { .. })
        ),
        "an oversized entry refuses the whole batch"
    );
    let mut ranges = Vec::new();
    let mut done = Vec::new();
    let mut want = Vec::new();
    for b in 0..8 {
        let items: Vec<String> = (0..=b % 3).map(|i| format!("p{b}-{i}")).collect();
        let (range, completion) = wal.submit_batch(items.clone()).await.unwrap();
        assert_eq!(
            range.end().get() - range.start().get() + 1,
            items.len() as u64,
            "one Lsn per entry"
        );
        want.extend(items);
        let (single, c) = wal.submit(format!("s{b}")).await.unwrap();
        want.push(format!("s{b}"));
        ranges.push(range.clone());
        done.push((c, single));
        done.push((completion, *range.end()));
        ranges.push(single..=single);
    }
    // A completion resolves to the batch's last Lsn; every range follows the
    // one submitted before it.
    let mut lsns: Vec<Lsn> = ranges.iter().flat_map(|r| [*r.start(), *r.end()]).collect();
    lsns.dedup();
    assert!(
        lsns.windows(2).all(|w| w[0] < w[1]),
        "ranges in order: {ranges:?}"
    );
    for w in ranges.windows(2) {
        assert_eq!(*w[1].start(), w[0].end().next(), "ranges are dense");
    }
    for (c, lsn) in done {
        assert_eq!(c.await.unwrap(), lsn);
    }
    crash(f, wal).await;
    let (wal, rec) = open(f).await;
    let want: Vec<&str> = want.iter().map(String::as_str).collect();
    assert_eq!(payloads(&rec), data(&want));
    assert_eq!(rec[0].lsn, *ranges[0].start());
    wal.close().await.unwrap();
}

/// Without a checkpoint, recovery yields every data entry.
pub async fn recovery_without_checkpoint<F: StoreFactory>(f: &F) {
    let (wal, _) = open(f).await;
    append_all(&wal, &["a", "b", "c"]).await;
    crash(f, wal).await;
    let (wal, rec) = open(f).await;
    assert_eq!(payloads(&rec), data(&["a", "b", "c"]));
    append_all(&wal, &["d"]).await;
    wal.close().await.unwrap();
    let (wal, rec) = open(f).await;
    assert_eq!(payloads(&rec), data(&["a", "b", "c", "d"]));
    wal.close().await.unwrap();
}

/// A committed checkpoint replaces the entries below its begin marker; data
/// appended while it was open comes after its state.
pub async fn checkpoint_commit<F: StoreFactory>(f: &F) {
    let (wal, _) = open(f).await;
    append_all(&wal, &["a", "b"]).await;
    let mut cp = wal.begin_checkpoint().await.unwrap();
    cp.append("s1").await.unwrap();
    append_all(&wal, &["c"]).await;
    cp.append("s2").await.unwrap();
    let begin = cp.begin_lsn();
    let commit = cp.commit().await.unwrap();
    assert!(commit > begin);
    append_all(&wal, &["d"]).await;
    let first = wal.first_lsn().unwrap();
    assert!(first <= begin, "nothing recovery needs was removed");
    wal.close().await.unwrap();
    let (wal, rec) = open(f).await;
    assert_eq!(payloads(&rec), with_state(&["s1", "s2"], &["c", "d"]));
    crash(f, wal).await;
    let (wal, rec) = open(f).await;
    assert_eq!(
        payloads(&rec),
        with_state(&["s1", "s2"], &["c", "d"]),
        "again after a crash"
    );
    wal.close().await.unwrap();
}

/// Aborted checkpoints, by `abort` or by drop, never appear.
pub async fn checkpoint_abort<F: StoreFactory>(f: &F) {
    let (wal, _) = open(f).await;
    append_all(&wal, &["a"]).await;
    let mut cp = wal.begin_checkpoint().await.unwrap();
    cp.append("lost1").await.unwrap();
    cp.abort().await.unwrap();
    append_all(&wal, &["b"]).await;
    let mut cp = wal.begin_checkpoint().await.unwrap();
    cp.append("lost2").await.unwrap();
    drop(cp);
    append_all(&wal, &["c"]).await;
    wal.close().await.unwrap();
    let (wal, rec) = open(f).await;
    assert_eq!(payloads(&rec), data(&["a", "b", "c"]));
    wal.close().await.unwrap();
}

/// A crash before commit leaves the previous committed checkpoint in force.
pub async fn checkpoint_crash_before_commit<F: StoreFactory>(f: &F) {
    let (wal, _) = open(f).await;
    append_all(&wal, &["a"]).await;
    let mut cp = wal.begin_checkpoint().await.unwrap();
    cp.append("old-state").await.unwrap();
    cp.commit().await.unwrap();
    append_all(&wal, &["b"]).await;
    let mut cp = wal.begin_checkpoint().await.unwrap();
    cp.append("new-state").await.unwrap();
    append_all(&wal, &["c"]).await;
    wal.sync().await.unwrap();
    crash(f, wal).await;
    drop(cp); // after the crash: its abort marker cannot land
    let (wal, rec) = open(f).await;
    assert_eq!(payloads(&rec), with_state(&["old-state"], &["b", "c"]));
    // A new checkpoint after the crash works and wins.
    let mut cp = wal.begin_checkpoint().await.unwrap();
    cp.append("newer-state").await.unwrap();
    cp.commit().await.unwrap();
    append_all(&wal, &["d"]).await;
    wal.close().await.unwrap();
    let (wal, rec) = open(f).await;
    assert_eq!(payloads(&rec), with_state(&["newer-state"], &["d"]));
    wal.close().await.unwrap();
}

/// With several committed checkpoints, the last one wins.
pub async fn several_checkpoints<F: StoreFactory>(f: &F) {
    let (wal, _) = open(f).await;
    for round in 0..4 {
        append_all(&wal, &[&format!("d{round}")]).await;
        let mut cp = wal.begin_checkpoint().await.unwrap();
        for i in 0..3 {
            cp.append(format!("s{round}-{i}")).await.unwrap();
        }
        cp.commit().await.unwrap();
    }
    append_all(&wal, &["tail"]).await;
    wal.close().await.unwrap();
    let (wal, rec) = open(f).await;
    assert_eq!(
        payloads(&rec),
        with_state(&["s3-0", "s3-1", "s3-2"], &["tail"])
    );
    wal.close().await.unwrap();
}

/// One checkpoint at a time.
pub async fn checkpoint_in_progress<F: StoreFactory>(f: &F) {
    let (wal, _) = open(f).await;
    let cp = wal.begin_checkpoint().await.unwrap();
    assert!(matches!(
        wal.begin_checkpoint().await,
        Err(Error::CheckpointInProgress)
    ));
    assert!(matches!(
        wal.truncate_after(Lsn(1)).await,
        Err(Error::CheckpointInProgress)
    ));
    cp.commit().await.unwrap();
    let cp = wal
        .begin_checkpoint()
        .await
        .expect("a new checkpoint after commit");
    cp.abort().await.unwrap();
    wal.begin_checkpoint()
        .await
        .expect("a new checkpoint after abort");
    wal.close().await.unwrap();
}

/// Trimming removes old data but never what the committed checkpoint needs.
pub async fn trim<F: StoreFactory>(f: &F) {
    let (wal, _) = open(f).await;
    let items: Vec<String> = (1..=20).map(|i| format!("e{i}")).collect();
    for s in &items {
        wal.append(s.clone()).await.unwrap();
    }
    let point = wal.trim_before(Lsn(10)).await.unwrap();
    assert_eq!(point, Lsn(10));
    let first = wal.first_lsn().unwrap();
    assert!(first <= Lsn(10));
    assert!(
        wal.read(Lsn(10)).await.unwrap().is_some(),
        "trim keeps the point itself"
    );
    let mut cp = wal.begin_checkpoint().await.unwrap();
    cp.append("state").await.unwrap();
    let begin = cp.begin_lsn();
    cp.commit().await.unwrap();
    append_all(&wal, &["after"]).await;
    let clamped = wal.trim_before(Lsn(1_000)).await.unwrap();
    assert!(clamped <= begin, "trim clamps to the checkpoint's begin");
    wal.close().await.unwrap();
    let (wal, rec) = open(f).await;
    assert_eq!(payloads(&rec), with_state(&["state"], &["after"]));
    wal.close().await.unwrap();
}

/// Truncation cuts the tail durably, never reuses Lsns, and refuses to cut
/// the last committed checkpoint.
pub async fn truncate<F: StoreFactory>(f: &F) {
    let (wal, _) = open(f).await;
    let lsns = append_all(&wal, &["a", "b", "c", "d"]).await;
    wal.truncate_after(lsns[1]).await.unwrap();
    assert!(wal.read(lsns[2]).await.unwrap().is_none());
    assert!(wal.read(lsns[1]).await.unwrap().is_some());
    let e = wal.append("e").await.unwrap();
    assert!(e > lsns[3], "cut lsns are not reused");
    wal.close().await.unwrap();
    let (wal, rec) = open(f).await;
    assert_eq!(payloads(&rec), data(&["a", "b", "e"]));
    wal.truncate_after(e).await.unwrap();
    let f_lsn = wal.append("f").await.unwrap();
    assert!(f_lsn > e);
    let mut cp = wal.begin_checkpoint().await.unwrap();
    cp.append("state").await.unwrap();
    let commit = cp.commit().await.unwrap();
    match wal.truncate_after(f_lsn).await {
        Err(Error::TruncateBelowCheckpoint { commit: c, .. }) => assert_eq!(c, commit),
        other => panic!("truncating below a commit marker: {other:?}"),
    }
    wal.append("g")
        .await
        .expect("a refused truncate does not poison");
    wal.truncate_after(commit).await.unwrap();
    wal.close().await.unwrap();
    let (wal, rec) = open(f).await;
    assert_eq!(payloads(&rec), with_state(&["state"], &[]));
    let h = wal.append("h").await.unwrap();
    assert!(h > commit.next(), "no reuse after reopen");
    wal.close().await.unwrap();
}

/// A closed Wal refuses work; reopening recovers everything.
pub async fn reopen_after_close<F: StoreFactory>(f: &F) {
    let (wal, _) = open(f).await;
    let last = *append_all(&wal, &["a", "b"]).await.last().unwrap();
    wal.close().await.unwrap();
    assert!(matches!(wal.append("late").await, Err(Error::Closed)));
    assert!(matches!(wal.read(Lsn(1)).await, Err(Error::Closed)));
    assert!(matches!(wal.failed().await, Error::Closed));
    for _ in 0..3 {
        let (wal, rec) = open(f).await;
        assert_eq!(payloads(&rec), data(&["a", "b"]));
        assert_eq!(wal.last_lsn(), Some(last));
        assert_eq!(wal.durable_lsn(), last);
        wal.close().await.unwrap();
    }
}

/// A second opener is refused while the first holds the log.
pub async fn second_opener_locked<F: StoreFactory>(f: &F) {
    let (wal, _) = open(f).await;
    wal.append("mine").await.unwrap();
    match Wal::open(f.store().await, WalOptions::default()).await {
        Err(Error::Locked { .. }) => {}
        other => panic!(
            "second opener: expected Locked, got {:?}",
            other.map(|_| ())
        ),
    }
    wal.append("still mine")
        .await
        .expect("the first owner is unaffected");
    wal.close().await.unwrap();
    let (wal, rec) = open(f).await;
    assert_eq!(payloads(&rec), data(&["mine", "still mine"]));
    wal.close().await.unwrap();
}

/// Oversize entries and batches are refused and change nothing.
pub async fn oversize_entry<F: StoreFactory>(f: &F) {
    let (wal, _) = open(f).await;
    wal.append("small").await.unwrap();
    let max = wal.max_entry_bytes();
    let last = wal.last_lsn();
    let big = Bytes::from(vec![7u8; max + 1]);
    match wal.append(big.clone()).await {
        Err(Error::EntryTooLarge { size, max: m }) => assert_eq!((size, m), (max + 1, max)),
        other => panic!("oversize append: {other:?}"),
    }
    assert!(matches!(
        wal.append_batch([Bytes::from_static(b"ok"), big.clone()])
            .await,
        Err(Error::EntryTooLarge { .. })
    ));
    let mut cp = wal.begin_checkpoint().await.unwrap();
    assert!(matches!(
        cp.append(big).await,
        Err(Error::EntryTooLarge { .. })
    ));
    cp.abort().await.unwrap();
    assert!(wal.last_lsn() > last || wal.last_lsn() == last);
    wal.append("after").await.expect("not poisoned");
    wal.close().await.unwrap();
    let (wal, rec) = open(f).await;
    assert_eq!(payloads(&rec), data(&["small", "after"]));
    wal.close().await.unwrap();
}

/// Reads at and beyond both ends of the log.
pub async fn reads_at_bounds<F: StoreFactory>(f: &F) {
    let (wal, _) = open(f).await;
    assert_eq!((wal.first_lsn(), wal.last_lsn()), (None, None));
    assert!(wal.read(Lsn(1)).await.unwrap().is_none());
    assert!(read_all(&wal, Lsn(1)).await.is_empty());
    let lsns = append_all(&wal, &["a", "b", "c", "d", "e"]).await;
    let (first, last) = (lsns[0], lsns[4]);
    assert_eq!((wal.first_lsn(), wal.last_lsn()), (Some(first), Some(last)));
    assert!(wal.read(Lsn::ZERO).await.unwrap().is_none());
    assert!(wal.read(last.next()).await.unwrap().is_none());
    assert!(wal.read(Lsn::MAX).await.unwrap().is_none());
    assert_eq!(&wal.read(first).await.unwrap().unwrap().payload[..], b"a");
    assert_eq!(&wal.read(last).await.unwrap().unwrap().payload[..], b"e");
    assert_eq!(payloads(&read_all(&wal, last).await), data(&["e"]));
    assert!(read_all(&wal, last.next()).await.is_empty());
    assert_eq!(read_all(&wal, Lsn::ZERO).await.len(), 5);
    wal.close().await.unwrap();
}

/// `tail` yields existing entries, then new ones as they become durable, and
/// ends with `Closed` when the Wal closes.
pub async fn tail_follows<F: StoreFactory>(f: &F) {
    let (wal, _) = open(f).await;
    append_all(&wal, &["a"]).await;
    let mut tail = wal.tail(Lsn(1));
    assert_eq!(
        &next_within(&mut tail).await.unwrap().unwrap().payload[..],
        b"a"
    );
    let writer = {
        let wal = wal.clone();
        tokio::spawn(async move { append_all(&wal, &["b", "c"]).await })
    };
    assert_eq!(
        &next_within(&mut tail).await.unwrap().unwrap().payload[..],
        b"b"
    );
    assert_eq!(
        &next_within(&mut tail).await.unwrap().unwrap().payload[..],
        b"c"
    );
    writer.await.unwrap();
    wal.close().await.unwrap();
    match next_within(&mut tail).await {
        Some(Err(Error::Closed)) | None => {}
        other => panic!("tail after close: {other:?}"),
    }
}

/// Reads racing appends, trims and a truncate: every append is readable as
/// soon as it returns (read your writes); a reader streaming the log over
/// and over never fails and sees each record byte-exact, in Lsn order.
pub async fn reads_beside_writes<F: StoreFactory>(f: &F) {
    use std::{
        collections::BTreeMap,
        sync::{
            atomic::{AtomicBool, Ordering},
            Arc, Mutex,
        },
    };
    const WRITERS: usize = 4;
    const EACH: usize = 60;
    let (wal, _) = open(f).await;
    let written: Arc<Mutex<BTreeMap<Lsn, String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (wal, stop) = (wal.clone(), stop.clone());
        tokio::spawn(async move {
            let mut seen: BTreeMap<Lsn, Bytes> = BTreeMap::new();
            let mut passes = 0u32;
            // Passes until one that began after the writers stopped: a
            // reader thread preempted for the whole write phase still reads
            // the final log once.
            loop {
                let last = stop.load(Ordering::Acquire);
                let mut prev = Lsn::ZERO;
                let mut pass = wal.read_from(Lsn::ZERO);
                while let Some(e) = pass.next().await {
                    let e = e.expect("a read racing writes, trims and truncates never fails");
                    assert!(e.lsn > prev, "lsn {} after {prev} in one pass", e.lsn);
                    prev = e.lsn;
                    seen.insert(e.lsn, e.payload);
                }
                passes += 1;
                if last {
                    break;
                }
            }
            (seen, passes)
        })
    };
    let write = |w: usize, n: usize| {
        let (wal, written) = (wal.clone(), written.clone());
        tokio::spawn(async move {
            for i in 0..n {
                let p = format!("w{w}-{i}");
                let lsn = wal.append(p.clone()).await.expect("append");
                let got = wal.read(lsn).await.expect("read after append");
                let got = got.expect("an acknowledged append is readable at once");
                assert_eq!(&got.payload[..], p.as_bytes(), "read back lsn {lsn}");
                written.lock().unwrap().insert(lsn, p);
                // The first writer trims as it goes, while the others append.
                if w == 0 && i % 12 == 11 {
                    wal.trim_before(Lsn(lsn.get() / 2)).await.expect("trim");
                }
            }
        })
    };
    let writers: Vec<_> = (0..WRITERS).map(|w| write(w, EACH)).collect();
    for w in writers {
        w.await.expect("writer");
    }
    // A truncate while the reader streams, then more appends.
    let last = wal.last_lsn().expect("records were appended");
    wal.truncate_after(Lsn(last.get() - 10))
        .await
        .expect("truncate");
    write(WRITERS, 10).await.expect("writer after the truncate");
    stop.store(true, Ordering::Release);
    let (seen, passes) = reader.await.expect("reader");
    assert!(passes > 0);
    let written = written.lock().unwrap().clone();
    assert!(
        !seen.is_empty(),
        "the reader saw no records in {passes} passes ({} written)",
        written.len()
    );
    for (lsn, payload) in &seen {
        let want = written
            .get(lsn)
            .unwrap_or_else(|| panic!("the reader saw lsn {lsn}, which no append returned"));
        assert_eq!(&payload[..], want.as_bytes(), "lsn {lsn} read byte-exact");
    }
    wal.close().await.unwrap();
}
