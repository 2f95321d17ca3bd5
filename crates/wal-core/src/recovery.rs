//! Recovery: the open-time scan and the streams that read the log in chunks,
//! with memory bounded by the chunk size, never by the log size.

use std::{
    collections::VecDeque,
    pin::Pin,
    sync::{atomic::Ordering, Arc},
    task::{Context, Poll},
};

use futures::{
    stream::{self, BoxStream},
    Stream, StreamExt,
};

use crate::{
    controller::{CheckpointInfo, CheckpointTracker, Status},
    store::{ReadLimit, StoreState},
    Entry, Error, Location, Lsn, Record, RecordKind, Result, Wal, WalStore,
};

/// Scans the whole log once, in chunks, to find the last committed
/// checkpoint and check that Lsns strictly increase. Only markers are
/// interpreted, so it reads through [`WalStore::read_markers_from`], which
/// lets a store skip the payloads of data and checkpoint records.
pub(crate) async fn scan<S: WalStore>(
    store: &mut S,
    state: StoreState,
    limit: ReadLimit,
) -> Result<CheckpointTracker> {
    let mut tracker = CheckpointTracker::default();
    let (Some(first), Some(last)) = (state.first_lsn, state.last_lsn) else {
        return Ok(tracker);
    };
    let mut next = first;
    let mut prev = Lsn::ZERO;
    loop {
        let chunk = store.read_markers_from(next, limit).await?;
        let Some(tail) = chunk.last() else { break };
        let after = tail.lsn.checked_add(1);
        for r in &chunk {
            if r.lsn <= prev {
                return Err(Error::Corrupt {
                    location: Location::Lsn(r.lsn),
                    why: format!("lsn {} follows lsn {prev}: lsns must increase", r.lsn),
                });
            }
            prev = r.lsn;
            tracker.observe(r)?;
        }
        match after {
            Some(n) if n <= last => next = n,
            _ => break,
        }
    }
    if prev != last {
        return Err(Error::Corrupt {
            location: Location::Lsn(last),
            why: format!("the store reports last lsn {last} but the scan ended at {prev}"),
        });
    }
    // The last commit marker names a begin marker below the first stored
    // record: the records recovery needs were lost (e.g. a missing segment).
    // Trimming never removes the last committed checkpoint, so this is damage.
    if let Some((commit, begin)) = tracker.orphan_commit {
        if begin < first {
            return Err(Error::Corrupt {
                location: Location::Lsn(commit),
                why: format!(
                    "the last checkpoint commit names begin marker {begin}, below the first stored record {first}: records it needs are missing"
                ),
            });
        }
    }
    // A checkpoint left open by a crash can never commit now.
    tracker.open = None;
    Ok(tracker)
}

/// What [`Wal::open`] found, and the entries to replay.
///
/// A [`Stream`] of entries following the recovery contract: the entries of the
/// last committed checkpoint (kind [`Checkpoint`](crate::EntryKind::Checkpoint)),
/// then every data entry after that checkpoint's begin marker, each group in
/// Lsn order. Memory use is bounded by the read chunk size.
pub struct Recovery {
    checkpoint: Option<CheckpointInfo>,
    end: Option<Lsn>,
    inner: BoxStream<'static, Result<Entry>>,
    /// Holds checkpoint cleanup off until this stream is dropped.
    _pin: RecoveryPin,
}

struct RecoveryPin(Arc<Status>);

impl RecoveryPin {
    fn new(status: Arc<Status>) -> RecoveryPin {
        status.recovery_pins.fetch_add(1, Ordering::AcqRel);
        RecoveryPin(status)
    }
}

impl Drop for RecoveryPin {
    fn drop(&mut self) {
        self.0.recovery_pins.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Recovery {
    pub(crate) fn new(wal: Wal, checkpoint: Option<CheckpointInfo>, end: Option<Lsn>) -> Recovery {
        let pin = RecoveryPin::new(wal.status().clone());
        let inner = match end {
            None => stream::empty().boxed(),
            Some(end) => {
                let data_from = checkpoint.map_or(Lsn::ZERO, |c| c.begin).next();
                let data = kind_filter(
                    records(wal.clone(), data_from, Some(end), false),
                    RecordKind::Data,
                );
                match checkpoint {
                    Some(cp) => {
                        let state = records(wal, cp.begin.next(), Some(cp.commit.prev()), false);
                        kind_filter(state, RecordKind::Checkpoint)
                            .chain(data)
                            .boxed()
                    }
                    None => data.boxed(),
                }
            }
        };
        Recovery {
            checkpoint,
            end,
            inner,
            _pin: pin,
        }
    }

    /// The checkpoint being recovered, if any committed.
    pub fn checkpoint(&self) -> Option<CheckpointInfo> {
        self.checkpoint
    }

    /// The last Lsn in the log at open; recovery yields nothing above it.
    pub fn end_lsn(&self) -> Option<Lsn> {
        self.end
    }
}

impl Stream for Recovery {
    type Item = Result<Entry>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

impl std::fmt::Debug for Recovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recovery")
            .field("checkpoint", &self.checkpoint)
            .field("end", &self.end)
            .finish_non_exhaustive()
    }
}

fn kind_filter(
    s: BoxStream<'static, Result<Record>>,
    kind: RecordKind,
) -> BoxStream<'static, Result<Entry>> {
    s.filter_map(move |r| {
        futures::future::ready(match r {
            Ok(r) if r.kind == kind => r.into_entry().map(Ok),
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        })
    })
    .boxed()
}

/// Entries (markers skipped) of a record stream.
pub(crate) fn entries(s: BoxStream<'static, Result<Record>>) -> BoxStream<'static, Result<Entry>> {
    s.filter_map(|r| futures::future::ready(r.map(Record::into_entry).transpose()))
        .boxed()
}

struct Cursor {
    wal: Wal,
    next: Lsn,
    until: Lsn,
    buf: VecDeque<Record>,
    follow: bool,
    done: bool,
}

/// Records from `from` up to `until` (inclusive), read in chunks through the
/// controller. With `follow`, waits for new records at the end instead of
/// ending, until the Wal closes or is poisoned.
pub(crate) fn records(
    wal: Wal,
    from: Lsn,
    until: Option<Lsn>,
    follow: bool,
) -> BoxStream<'static, Result<Record>> {
    let cursor = Cursor {
        wal,
        next: from,
        until: until.unwrap_or(Lsn::MAX),
        buf: VecDeque::new(),
        follow,
        done: from > until.unwrap_or(Lsn::MAX),
    };
    stream::unfold(cursor, |mut c| async move {
        loop {
            if let Some(r) = c.buf.pop_front() {
                if r.lsn > c.until {
                    return None;
                }
                return Some((Ok(r), c));
            }
            if c.done {
                return None;
            }
            match c.wal.read_chunk(c.next, c.wal.inner.read_limit).await {
                Err(e) => {
                    c.done = true;
                    return Some((Err(e), c));
                }
                Ok(chunk) if chunk.is_empty() => {
                    if !c.follow {
                        return None;
                    }
                    if let Err(e) = wait_written(&c.wal, c.next).await {
                        c.done = true;
                        return Some((Err(e), c));
                    }
                }
                Ok(chunk) => {
                    if let Some(last) = chunk.last() {
                        match last.lsn.checked_add(1) {
                            Some(n) => c.next = n,
                            // Nothing can follow Lsn::MAX.
                            None => c.done = true,
                        }
                    }
                    c.buf.extend(chunk);
                }
            }
        }
    })
    .boxed()
}

/// Waits until a record at or above `lsn` is written (and so readable), or
/// the Wal stops.
async fn wait_written(wal: &Wal, lsn: Lsn) -> Result<()> {
    let status = wal.status();
    let mut durable = status.written.subscribe();
    let mut fault = status.fault.subscribe();
    tokio::select! {
        r = durable.wait_for(|d| *d >= lsn) => r.map(drop).map_err(|_| Error::Closed),
        f = fault.wait_for(Option::is_some) => Err(match f {
            Ok(f) => f.clone().unwrap_or(Error::Closed),
            Err(_) => Error::Closed,
        }),
    }
}
