//! Reads beside the writer. The log publishes its segments (paths, ids,
//! sparse indexes, the end of the last complete batch) to a [`ReadView`]
//! after every change; readers plan from it and read the files through
//! handles of their own, so a read never waits for an `fdatasync` and never
//! goes through the Wal's controller.
//!
//! Why this is safe without copying anything: a frame below a segment's
//! published `data_end` is never rewritten while the log is open, except by
//! a truncate (which rewrites the last segment and deletes later ones) and a
//! trim (which deletes whole segments). Those two hold [`ReadView`]'s layout
//! lock for writing while they change files, and a read holds it for reading
//! for its whole duration: a read sees the files before such a change or
//! after it, never in the middle. Appends only add bytes past `data_end`
//! and publish the new end after the write (and its `fdatasync`) returned.

use std::{
    collections::VecDeque,
    fs::File,
    sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard},
};

use async_trait::async_trait;
use bytes::Bytes;
use wal_core::{Error, Lsn, ReadLimit, Record, StoreReader};

use crate::segment::{corrupt, FrameRead, FrameReader, Segment};

/// The most records a marker scan returns without their payload in one
/// call: about 48 bytes each, so at most ~768 KiB.
pub(crate) const MAX_STRIPPED_RECORDS: usize = 16 << 10;

/// The readers' view of the log, shared by the log and its readers.
#[derive(Debug, Default)]
pub(crate) struct ReadView {
    /// Held for writing by a truncate or trim while it changes files, for
    /// reading by every read.
    layout: RwLock<()>,
    published: RwLock<Published>,
}

#[derive(Debug, Default)]
struct Published {
    /// Oldest first, as the log holds them after its last change.
    segments: Vec<Segment>,
    /// The log was closed (or dropped): its files may change under another
    /// owner now.
    closed: bool,
}

/// A segment to read: everything a read needs, copied out of the view.
struct Plan {
    segment: Segment,
    offset: u64,
}

fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

impl ReadView {
    /// Excludes reads while the caller changes the files below the
    /// published ends (a truncate or a trim).
    pub(crate) fn layout_change(&self) -> RwLockWriteGuard<'_, ()> {
        write(&self.layout)
    }

    /// Publishes the log's segments. After an append only the last one
    /// changed, and only it is copied (its index is shared, not copied).
    pub(crate) fn publish(&self, segments: &VecDeque<Segment>) {
        let mut p = write(&self.published);
        let id = |s: Option<&Segment>| s.map(|s| s.header.id);
        if p.segments.len() == segments.len()
            && id(p.segments.first()) == id(segments.front())
            && id(p.segments.last()) == id(segments.back())
        {
            if let (Some(last), Some(now)) = (p.segments.last_mut(), segments.back()) {
                last.clone_from(now);
            }
            return;
        }
        // Rebuilt after anything else (rotation, trim, truncate, open).
        p.segments = segments.iter().cloned().collect();
    }

    /// Marks the log closed: reads fail with [`Error::Closed`] from now on.
    /// Waits for reads in progress, so none outlives the directory lock.
    pub(crate) fn close(&self) {
        let _layout = write(&self.layout);
        let mut p = write(&self.published);
        p.closed = true;
        p.segments.clear();
    }

    /// The segment holding `next`, or the first one after it.
    fn plan(&self, next: Lsn) -> Result<Option<Plan>, Error> {
        let p = read(&self.published);
        if p.closed {
            return Err(Error::Closed);
        }
        let start = p
            .segments
            .partition_point(|s| s.first_lsn() <= next)
            .saturating_sub(1);
        Ok(p.segments[start..]
            .iter()
            .find(|s| s.last_lsn.is_some_and(|l| l >= next))
            .map(|s| Plan {
                segment: s.clone(),
                offset: s.seek_offset(next),
            }))
    }

    /// Reads records with Lsn >= `from` within `limit`, seeking by the
    /// sparse index. With `markers_only`, data and checkpoint records come
    /// with an empty payload, stepped over unread and unchecked (see
    /// `WalStore::read_markers_from`), at most [`MAX_STRIPPED_RECORDS`] of
    /// them per call.
    pub(crate) fn read_records(
        &self,
        from: Lsn,
        limit: ReadLimit,
        markers_only: bool,
    ) -> Result<Vec<Record>, Error> {
        let _layout = read(&self.layout);
        let mut out = Vec::new();
        // Records returned with their payload (all of them unless
        // `markers_only`), and the bytes of those payloads.
        let mut full = 0usize;
        let mut stripped = 0usize;
        let mut bytes = 0usize;
        let mut next = from;
        let mut scratch = Vec::new();
        while let Some(Plan {
            segment: seg,
            offset,
        }) = self.plan(next)?
        {
            let file = File::open(&seg.path)?;
            let mut reader = FrameReader::new(file, seg.header.id, offset, seg.data_end)?;
            loop {
                if full >= limit.max_records
                    || stripped >= MAX_STRIPPED_RECORDS
                    || (!out.is_empty() && bytes >= limit.max_bytes)
                {
                    return Ok(out);
                }
                let at = reader.pos();
                let frame = if markers_only {
                    reader.next_frame_if(&mut scratch, |h| h.lsn >= next && h.kind.is_marker())?
                } else {
                    reader.next_frame(&mut scratch)?
                };
                match frame {
                    FrameRead::End => break,
                    FrameRead::Invalid(why) => return Err(corrupt(&seg.path, at, why)),
                    FrameRead::Frame(h) if h.lsn < next => {}
                    FrameRead::Frame(h) if markers_only && !h.kind.is_marker() => {
                        stripped += 1;
                        out.push(Record {
                            lsn: h.lsn,
                            kind: h.kind,
                            payload: Bytes::new(),
                        });
                    }
                    FrameRead::Frame(h) => {
                        full += 1;
                        bytes += scratch.len();
                        out.push(Record {
                            lsn: h.lsn,
                            kind: h.kind,
                            payload: Bytes::from(std::mem::take(&mut scratch)),
                        });
                    }
                }
            }
            // The plan's segment is read up to its published end; what
            // follows is in a later segment or not published yet.
            match seg.last_lsn.and_then(|l| l.checked_add(1)) {
                Some(n) => next = n,
                None => break,
            }
        }
        Ok(out)
    }
}

/// [`FsStore`](crate::FsStore)'s reader beside the writer (see
/// `WalStore::reader`): file reads on tokio's blocking pool, through handles
/// of its own.
#[derive(Debug)]
pub(crate) struct FsReader(pub Arc<ReadView>);

#[async_trait]
impl StoreReader for FsReader {
    async fn read_from(&self, from: Lsn, limit: ReadLimit) -> wal_core::Result<Vec<Record>> {
        let view = self.0.clone();
        tokio::task::spawn_blocking(move || view.read_records(from, limit, false))
            .await
            .map_err(|e| Error::Io(Arc::new(std::io::Error::other(e))))?
    }
}
