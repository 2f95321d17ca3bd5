//! An [`EtcdReader`] racing the owner's trims: every pass reads at one etcd
//! revision, so a chunked record is never torn into a false `Corrupt`, and
//! records trimmed before the reader got to them are an
//! [`Error::Trimmed`], never a silent gap. An operator compacting etcd
//! under the reader makes it restart its pass, not fail.
#![allow(clippy::unwrap_used)]

mod support;

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use wal_core::{Error, Lsn, ReadLimit, Record, RecordKind, WalStore};
use wal_etcd::{EtcdLimits, EtcdReader, EtcdStore};

/// Packs of 64 bytes (records above 46 bytes are chunked), chunks of 32
/// bytes, and reads of 64 bytes at a time: one key per page and two chunks
/// per chunk read, so a pass makes many requests a trim can fall between.
fn tiny_limits() -> EtcdLimits {
    let mut l = EtcdLimits::default();
    l.pack_bytes = 64;
    l.chunk_bytes = 32;
    l.read_bytes = 64;
    l
}

/// A self-checking payload: its Lsn, its length, then bytes derived from
/// both. Every third record is small enough to be packed; the others are
/// chunked (4 to 12 chunks).
fn payload(lsn: u64) -> Bytes {
    let len = if lsn.is_multiple_of(3) {
        20
    } else {
        100 + (lsn as usize * 37) % 280
    };
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(&lsn.to_be_bytes());
    v.extend_from_slice(&(len as u32).to_be_bytes());
    let mut x = lsn.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.push(x as u8);
    }
    v.into()
}

/// Rounds of the owner: each appends `PER_ROUND` records and trims all but
/// the last `KEEP`.
const ROUNDS: u64 = 400;
const PER_ROUND: u64 = 3;
const KEEP: u64 = 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_racing_trims_and_compaction_sees_no_torn_records_and_no_silent_gaps() {
    let eps = support::shared_endpoints().await;
    let prefix = format!("/{}/", support::unique("reader-races"));
    let opts = support::options(&eps, &prefix, "log").limits(tiny_limits());
    let deadline = Instant::now() + Duration::from_secs(120);

    let mut store = EtcdStore::new(opts.clone());
    store.open().await.unwrap();
    let reader = EtcdReader::connect(opts.clone()).await.unwrap();

    // What the owner has committed (last Lsn) and trimmed (first Lsn kept).
    let appended = Arc::new(AtomicU64::new(0));
    let trimmed_to = Arc::new(AtomicU64::new(1));
    // Set before each trim is sent: no reader can see a trim above it.
    let trim_target = Arc::new(AtomicU64::new(1));
    let done = Arc::new(AtomicBool::new(false));

    let owner = {
        let (appended, trimmed_to, done) = (appended.clone(), trimmed_to.clone(), done.clone());
        let trim_target = trim_target.clone();
        tokio::spawn(async move {
            let mut next = 1u64;
            for _ in 0..ROUNDS {
                if Instant::now() > deadline {
                    break;
                }
                let batch: Vec<Record> = (next..next + PER_ROUND)
                    .map(|l| Record::new(Lsn(l), RecordKind::Data, payload(l)))
                    .collect();
                store.append(&batch).await.unwrap();
                next += PER_ROUND;
                appended.store(next - 1, Ordering::SeqCst);
                let keep_from = next.saturating_sub(KEEP).max(1);
                trim_target.store(keep_from, Ordering::SeqCst);
                store.remove_before(Lsn(keep_from)).await.unwrap();
                trimmed_to.store(keep_from, Ordering::SeqCst);
            }
            done.store(true, Ordering::SeqCst);
            store
        })
    };

    // An operator compacting etcd at its latest revision, over and over.
    let compactor = {
        let (eps, done) = (eps.clone(), done.clone());
        tokio::spawn(async move {
            let mut client = support::operator(&eps).await;
            let mut compactions = 0u64;
            while !done.load(Ordering::SeqCst) && Instant::now() < deadline {
                let rev = client
                    .get("compactor-probe", None)
                    .await
                    .unwrap()
                    .header()
                    .unwrap()
                    .revision();
                if client.compact(rev, None).await.is_ok() {
                    compactions += 1;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            compactions
        })
    };

    // The reader: reads from the Lsn after the last one it delivered; one or
    // four records a call, so it falls behind the trims now and then. Every
    // 25th pass it waits (on the owner's progress, with the deadline) until
    // its next record is certainly trimmed, so falling behind is exercised
    // every run.
    let limit = ReadLimit {
        max_records: 4,
        ..ReadLimit::default()
    };
    let mut next = Lsn(1);
    let (mut delivered, mut trimmed_errors, mut passes) = (0u64, 0u64, 0u64);
    let mut problems: Vec<String> = Vec::new();
    loop {
        passes += 1;
        if passes % 25 == 0 {
            while trimmed_to.load(Ordering::SeqCst) <= next.get()
                && !done.load(Ordering::SeqCst)
                && Instant::now() < deadline
            {
                tokio::task::yield_now().await;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        let finished = done.load(Ordering::SeqCst);
        match reader.read_from(next, limit).await {
            Ok(records) => {
                for r in records {
                    if r.lsn != next {
                        problems.push(format!(
                            "silent gap: expected lsn {next}, got lsn {} (trimmed to {})",
                            r.lsn,
                            trimmed_to.load(Ordering::SeqCst)
                        ));
                    }
                    if r.payload != payload(r.lsn.get()) {
                        problems.push(format!("lsn {}: payload differs", r.lsn));
                    }
                    delivered += 1;
                    next = r.lsn.next();
                }
            }
            Err(Error::Trimmed { requested, first }) => {
                trimmed_errors += 1;
                let kept = trim_target.load(Ordering::SeqCst);
                if requested != next || first <= next || first.get() > kept {
                    problems.push(format!(
                        "Trimmed {{ requested: {requested}, first: {first} }} at next {next}, \
                         owner trimmed to {kept}"
                    ));
                }
                // Skipping the gap knowingly.
                next = first;
            }
            Err(e) => problems.push(format!("read_from({next}): {e}")),
        }
        if problems.len() > 20 || Instant::now() > deadline {
            break;
        }
        if finished && next.get() > appended.load(Ordering::SeqCst) {
            break;
        }
    }
    done.store(true, Ordering::SeqCst);
    let mut store = owner.await.unwrap();
    let compactions = compactor.await.unwrap();
    let last = appended.load(Ordering::SeqCst);
    eprintln!(
        "{passes} reads, {delivered} records delivered, {trimmed_errors} Trimmed errors, \
         {compactions} compactions, {last} records appended"
    );
    assert!(
        problems.is_empty(),
        "{} problems: {problems:#?}",
        problems.len()
    );
    assert_eq!(last, ROUNDS * PER_ROUND, "the owner finished every round");
    assert_eq!(next.get(), last + 1, "the reader reached the end");
    assert!(trimmed_errors > 0, "the reader never fell behind a trim");
    assert!(
        delivered >= 20, // tiny reads: most passes fall behind a trim
        "the reader delivered only {delivered} records"
    );

    // The tail reports the trim too, once, and then ends.
    let mut tail = reader.tail(Lsn(1));
    let first = Lsn(trimmed_to.load(Ordering::SeqCst));
    let within = Duration::from_secs(20);
    let item = tokio::time::timeout(within, futures::StreamExt::next(&mut tail)).await;
    match item.unwrap() {
        Some(Err(Error::Trimmed {
            requested,
            first: f,
        })) => {
            assert_eq!((requested, f), (Lsn(1), first));
        }
        other => panic!("tail(1) after the trims: {other:?}"),
    }
    let item = tokio::time::timeout(within, futures::StreamExt::next(&mut tail)).await;
    assert!(item.unwrap().is_none(), "the tail ends after Trimmed");
    // Lsn::ZERO asks for whatever is stored, however much was trimmed.
    let rs = reader
        .read_from(Lsn::ZERO, ReadLimit::default())
        .await
        .unwrap();
    assert_eq!(rs.first().map(|r| r.lsn), Some(first));
    store.close().await.unwrap();
}
