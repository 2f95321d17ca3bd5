//! The log on disk: a directory of segments, recovered on open, appended
//! to, read, trimmed and truncated. Everything here is blocking; it runs on
//! the Wal controller's own thread (see `FsStore::blocking_io`).

use std::{
    collections::VecDeque,
    fs::{File, OpenOptions},
    io,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    sync::Arc,
};

use bytes::Bytes;
use tracing::{debug, info, warn};
use wal_core::{Error, Lsn, ReadLimit, Record, RecordKind, StoreState};

use crate::{
    format::{encode_frame, frame_len, SegmentHeader, SEGMENT_HEADER_LEN},
    io::FileIo,
    lock::DirLock,
    options::{FsOptions, SyncMode},
    reader::ReadView,
    segment::{
        corrupt, parse_segment_name, read_header, scan, segment_file_name, FrameRead, FrameReader,
        IndexBuilder, Segment, Tail, SEGMENT_SUFFIX, TMP_SUFFIX,
    },
};

/// The segment being appended to: the last one.
struct Active {
    file: File,
    /// Where the next frame goes (== the segment's `data_end`).
    write_pos: u64,
    /// Bytes of this file known durable.
    synced_to: u64,
    index: IndexBuilder,
}

/// An open, locked log directory.
pub(crate) struct SegmentLog {
    dir: PathBuf,
    io: Arc<dyn FileIo>,
    opts: FsOptions,
    /// Oldest first. Every segment holds at least one record.
    segments: VecDeque<Segment>,
    /// The last segment, open for writing; `None` when the log is empty.
    active: Option<Active>,
    /// Reused encode buffer for appends.
    buf: Vec<u8>,
    /// The first write, sync or layout failure: the files may not match the
    /// in-memory state any more, so nothing else is written.
    failed: Option<Error>,
    /// What readers beside the writer see; closed before the lock goes.
    view: Arc<ReadView>,
    _closed_on_drop: CloseView,
    _lock: DirLock,
}

/// Closes the readers' view when the log goes, before its lock does.
struct CloseView(Arc<ReadView>);

impl Drop for CloseView {
    fn drop(&mut self) {
        self.0.close();
    }
}

impl SegmentLog {
    /// Locks `dir` (creating it if needed), validates every segment, cuts a
    /// torn tail, and returns the log and what it holds.
    pub(crate) fn open(
        dir: PathBuf,
        opts: FsOptions,
        io: Arc<dyn FileIo>,
    ) -> Result<(SegmentLog, StoreState), Error> {
        create_dir_durably(&dir, io.as_ref())?;
        let lock = DirLock::acquire(&dir)?;
        SegmentLog::open_locked(dir, opts, io, lock)
    }

    /// [`open`](Self::open) of a directory whose lock the caller took
    /// (repair, which changes the log under the same lock first).
    pub(crate) fn open_locked(
        dir: PathBuf,
        opts: FsOptions,
        io: Arc<dyn FileIo>,
        lock: DirLock,
    ) -> Result<(SegmentLog, StoreState), Error> {
        let opts = opts.normalized();
        let view = Arc::new(ReadView::default());
        let mut log = SegmentLog {
            dir,
            io,
            opts,
            segments: VecDeque::new(),
            active: None,
            buf: Vec::new(),
            failed: None,
            view: view.clone(),
            _closed_on_drop: CloseView(view),
            _lock: lock,
        };
        log.recover()?;
        log.publish();
        let state = log.state();
        info!(
            dir = %log.dir.display(),
            segments = log.segments.len(),
            first = ?state.first_lsn,
            last = ?state.last_lsn,
            "wal-fs log opened"
        );
        Ok((log, state))
    }

    fn recover(&mut self) -> Result<(), Error> {
        let mut found: Vec<(Lsn, PathBuf)> = Vec::new();
        let mut removed_tmp = false;
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let path = entry.path();
            if name.ends_with(TMP_SUFFIX) {
                // A segment whose creation or rewrite a crash interrupted:
                // never renamed into place, so never part of the log.
                warn!(path = %path.display(), "removing an unfinished segment file");
                self.io.remove_file(&path)?;
                removed_tmp = true;
            } else if name.ends_with(SEGMENT_SUFFIX) {
                match parse_segment_name(name) {
                    Some(lsn) => found.push((lsn, path)),
                    None => return Err(corrupt(
                        &path,
                        0,
                        "a .wal file whose name is not a segment name (20 decimal digits + .wal)",
                    )),
                }
            }
        }
        let intent_tmp = self.dir.join(TRUNCATE_INTENT_TMP);
        if intent_tmp.exists() {
            // Never renamed into place: the truncate never started.
            self.io.remove_file(&intent_tmp)?;
            removed_tmp = true;
        }
        if removed_tmp {
            self.io.sync_dir(&self.dir)?;
        }
        found.sort();
        let count = found.len();
        for (i, (name_lsn, path)) in found.into_iter().enumerate() {
            let is_last = i + 1 == count;
            let file = File::open(&path)?;
            if is_last {
                read_from_disk(self.io.as_ref(), &file)?;
            }
            let header = read_header(&path, &file, name_lsn)?;
            if let Some(prev) = self.segments.back() {
                let prev_last = prev.last_lsn.unwrap_or(Lsn::ZERO);
                if header.prev_last_lsn != prev_last || header.first_lsn <= prev_last {
                    return Err(corrupt(
                        &path,
                        32,
                        format!(
                            "segment was started after lsn {}, but the segment before it ({}) ends at lsn {prev_last}: a segment is missing or was cut",
                            header.prev_last_lsn,
                            prev.path.display()
                        ),
                    ));
                }
            }
            let (mut segment, tail) = scan(
                &path,
                &file,
                header,
                is_last,
                self.opts.index_interval_bytes,
            )?;
            drop(file);
            if let Tail::Torn { at, why } = tail {
                warn!(
                    path = %path.display(),
                    offset = at,
                    cut_at = segment.data_end,
                    why = %why,
                    "cutting a torn write off the end of the log"
                );
                let file = OpenOptions::new().write(true).open(&path)?;
                self.io.set_len(&file, segment.data_end)?;
                self.io.sync_data(&file)?;
            }
            if segment.last_lsn.is_none() {
                if !is_last {
                    return Err(corrupt(
                        &path,
                        SEGMENT_HEADER_LEN,
                        "segment holds no records",
                    ));
                }
                // Created at a rotation, then the crash came before its
                // first batch was complete.
                debug!(path = %path.display(), "removing an empty last segment");
                self.io.remove_file(&path)?;
                self.io.sync_dir(&self.dir)?;
                continue;
            }
            Arc::make_mut(&mut segment.index).shrink_to_fit();
            self.segments.push_back(segment);
        }
        self.open_active()?;
        self.finish_pending_truncate()
    }

    /// What the log holds.
    pub(crate) fn state(&self) -> StoreState {
        StoreState {
            first_lsn: self.segments.front().map(Segment::first_lsn),
            last_lsn: self.last_lsn(),
        }
    }

    fn last_lsn(&self) -> Option<Lsn> {
        self.segments.back().and_then(|s| s.last_lsn)
    }

    fn check_usable(&self) -> Result<(), Error> {
        match &self.failed {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// Runs a mutation; its failure makes the log refuse further writes.
    fn mutate<R>(&mut self, f: impl FnOnce(&mut Self) -> Result<R, Error>) -> Result<R, Error> {
        self.check_usable()?;
        let r = f(self);
        if let Err(e) = &r {
            warn!(error = %e, "wal-fs write failed; the log accepts no more writes");
            self.failed = Some(e.clone());
        }
        r
    }

    /// A mutation that deletes or rewrites published bytes (a trim, a
    /// truncate): runs while no read is in progress, then publishes.
    fn relayout<R>(&mut self, f: impl FnOnce(&mut Self) -> Result<R, Error>) -> Result<R, Error> {
        let view = self.view.clone();
        let _no_reads = view.layout_change();
        let r = self.mutate(f);
        self.publish();
        r
    }

    /// Opens the last segment for appending, allocates its full size, and
    /// makes what it holds durable (a previous owner in
    /// [`SyncMode::None`] may have left unsynced data).
    fn open_active(&mut self) -> Result<(), Error> {
        self.active = None;
        let Some(seg) = self.segments.back() else {
            return Ok(());
        };
        let file = OpenOptions::new().read(true).write(true).open(&seg.path)?;
        if self.opts.preallocate && file.metadata()?.len() < self.opts.segment_bytes {
            self.io.allocate(&file, self.opts.segment_bytes)?;
        }
        self.io.sync_data(&file)?;
        self.active = Some(Active {
            file,
            write_pos: seg.data_end,
            synced_to: seg.data_end,
            index: IndexBuilder::new(self.opts.index_interval_bytes, &seg.index, seg.data_end),
        });
        Ok(())
    }

    /// Appends `records` as one batch: one write and (in
    /// [`SyncMode::EveryBatch`]) one `fdatasync`.
    pub(crate) fn append(&mut self, records: &[Record]) -> Result<(), Error> {
        self.check_usable()?;
        let Some(first) = records.first() else {
            return Ok(());
        };
        wal_core::check_append(
            records,
            self.last_lsn().unwrap_or(Lsn::ZERO),
            self.opts.max_entry_bytes,
            self.opts.max_batch_bytes,
        )?;
        let size = records.iter().map(|r| frame_len(r.payload.len())).sum();
        let first_lsn = first.lsn;
        self.mutate(|log| log.write_batch(records, first_lsn, size))?;
        // Readers see the batch only now: written and (in EveryBatch) synced.
        self.publish();
        Ok(())
    }

    fn write_batch(&mut self, records: &[Record], first: Lsn, size: u64) -> Result<(), Error> {
        let rotate = match &self.active {
            // A batch never spans segments; an oversized one gets a segment
            // of its own.
            Some(a) => {
                a.write_pos > SEGMENT_HEADER_LEN && a.write_pos + size > self.opts.segment_bytes
            }
            None => true,
        };
        if rotate {
            #[cfg(feature = "metrics")]
            let rotation = self.active.is_some();
            self.seal_active()?;
            self.create_segment(first)?;
            #[cfg(feature = "metrics")]
            if rotation {
                metrics::counter!(
                    "wal_fs_segment_rotations_total",
                    "dir" => self.dir.display().to_string()
                )
                .increment(1);
            }
        }
        let (Some(active), Some(seg)) = (self.active.as_mut(), self.segments.back_mut()) else {
            return Err(io::Error::other("wal-fs: no active segment after rotation").into());
        };
        self.buf.clear();
        let last = records.len() - 1;
        for (i, r) in records.iter().enumerate() {
            encode_frame(&mut self.buf, seg.header.id, r, i == last, active.synced_to);
        }
        self.io
            .write_all_at(&active.file, &self.buf, active.write_pos)?;
        if self.opts.sync_mode == SyncMode::EveryBatch {
            self.io.sync_data(&active.file)?;
        }
        let mut at = active.write_pos;
        for r in records {
            let len = frame_len(r.payload.len());
            active.index.frame(r.lsn, at, len);
            at += len;
        }
        active.index.commit(&mut seg.index);
        active.write_pos = at;
        if self.opts.sync_mode == SyncMode::EveryBatch {
            active.synced_to = at;
        }
        seg.data_end = at;
        seg.last_lsn = Some(records[last].lsn);
        if self.buf.capacity() > (4 << 20) {
            // Do not keep a huge buffer around after one huge batch.
            self.buf = Vec::new();
        }
        Ok(())
    }

    /// Finishes the active segment: cut to its data and made durable, so a
    /// segment that is not the last always ends exactly after its last
    /// batch.
    fn seal_active(&mut self) -> Result<(), Error> {
        if let Some(a) = self.active.take() {
            if a.file.metadata()?.len() > a.write_pos {
                self.io.set_len(&a.file, a.write_pos)?;
            }
            self.io.sync_data(&a.file)?;
        }
        Ok(())
    }

    /// Creates the segment whose first record is `first`: written under a
    /// temporary name, allocated, synced, then renamed into place and the
    /// directory synced, so a crash never leaves a half-made segment.
    fn create_segment(&mut self, first: Lsn) -> Result<(), Error> {
        let header = SegmentHeader {
            id: new_segment_id()?,
            first_lsn: first,
            prev_last_lsn: self.last_lsn().unwrap_or(Lsn::ZERO),
        };
        let path = self.dir.join(segment_file_name(first));
        let tmp = tmp_path(&path);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        self.io.write_all_at(&file, &header.encode(), 0)?;
        if self.opts.preallocate {
            self.io.allocate(&file, self.opts.segment_bytes)?;
        }
        self.io.sync_data(&file)?;
        self.io.rename(&tmp, &path)?;
        self.io.sync_dir(&self.dir)?;
        debug!(path = %path.display(), "segment created");
        self.segments.push_back(Segment {
            path,
            header,
            last_lsn: None,
            data_end: SEGMENT_HEADER_LEN,
            index: Arc::default(),
        });
        self.active = Some(Active {
            file,
            write_pos: SEGMENT_HEADER_LEN,
            synced_to: SEGMENT_HEADER_LEN,
            index: IndexBuilder::new(self.opts.index_interval_bytes, &[], SEGMENT_HEADER_LEN),
        });
        Ok(())
    }

    /// `fdatasync` of whatever was written since the last one.
    pub(crate) fn sync(&mut self) -> Result<(), Error> {
        self.mutate(Self::sync_active)
    }

    /// `fdatasync` of the active segment if it holds unsynced writes.
    fn sync_active(&mut self) -> Result<(), Error> {
        if let Some(a) = self.active.as_mut() {
            if a.synced_to < a.write_pos {
                self.io.sync_data(&a.file)?;
                a.synced_to = a.write_pos;
            }
        }
        Ok(())
    }

    /// Reads records with Lsn >= `from`, seeking by the sparse index.
    pub(crate) fn read_from(&self, from: Lsn, limit: ReadLimit) -> Result<Vec<Record>, Error> {
        self.view.read_records(from, limit, false)
    }

    /// Like [`read_from`](Self::read_from), but data and checkpoint records
    /// come with an empty payload, stepped over on disk rather than read,
    /// copied and checksummed (see `WalStore::read_markers_from`). Skipping
    /// their checksums is sound: [`open`](Self::open) verified every frame's
    /// checksum moments before the core's marker scan, and the replay reads
    /// the records it yields through `read_from`, which verifies them again.
    /// `limit` bounds the marker records; payload-less records are capped at
    /// [`MAX_STRIPPED_RECORDS`](crate::reader::MAX_STRIPPED_RECORDS) per call.
    pub(crate) fn read_markers_from(
        &self,
        from: Lsn,
        limit: ReadLimit,
    ) -> Result<Vec<Record>, Error> {
        self.view.read_records(from, limit, true)
    }

    /// The readers' view of this log (see [`crate::reader`]).
    pub(crate) fn view(&self) -> &Arc<ReadView> {
        &self.view
    }

    /// Publishes the segments to the readers' view.
    fn publish(&self) {
        self.view.publish(&self.segments);
    }

    /// Deletes whole segments whose records are all below `lsn`, oldest
    /// first, never the last one.
    pub(crate) fn remove_before(&mut self, lsn: Lsn) -> Result<StoreState, Error> {
        let removable = |log: &Self| log.segments.len() > 1 && log.segments[1].first_lsn() <= lsn;
        if !removable(self) {
            // Nothing to delete: readers are not held up for nothing.
            self.check_usable()?;
            return Ok(self.state());
        }
        self.relayout(|log| {
            // What justifies the deletion (a checkpoint's commit marker, the
            // records kept) must be durable before the deletion can be: in
            // SyncMode::None it may be in the page cache only.
            log.sync_active()?;
            while removable(log) {
                let path = log.segments[0].path.clone();
                log.io.remove_file(&path)?;
                // One directory sync per deletion: were several deletions
                // persisted out of order, a crash could leave a gap.
                log.io.sync_dir(&log.dir)?;
                log.segments.pop_front();
                debug!(path = %path.display(), "segment removed");
            }
            Ok(log.state())
        })
    }

    /// Removes every record above `lsn` and appends `high_water` (the core's
    /// `Truncated` marker), all or none, even across segments and crashes:
    ///
    /// 1. everything written so far is synced;
    /// 2. the intent ([`TRUNCATE_INTENT`]: the cut point and the marker's
    ///    Lsn) is written under a temporary name, synced, renamed into place
    ///    and the directory synced: from here on the truncate happens;
    /// 3. later segments are deleted newest first, the segment holding `lsn`
    ///    is cut after it and ends with the marker (rewritten and renamed
    ///    into place), or the marker is appended and synced;
    /// 4. the intent is deleted (directory synced).
    ///
    /// A crash before step 2 is durable leaves the old log; after it, every
    /// intermediate state is a valid shorter log, and open finishes the
    /// truncate from the intent before it reports the log's state. So no
    /// Lsn that was cut is handed out again.
    pub(crate) fn truncate_after(
        &mut self,
        lsn: Lsn,
        high_water: &Record,
    ) -> Result<StoreState, Error> {
        self.relayout(|log| {
            // Nothing is deleted before every byte written so far is durable.
            log.sync_active()?;
            if log.last_lsn().is_some_and(|l| l > lsn) {
                log.write_intent(lsn, high_water.lsn)?;
                log.apply_truncate(lsn, high_water)?;
                log.remove_intent()?;
            } else {
                log.append_synced(high_water)?;
            }
            Ok(log.state())
        })
    }

    /// Appends `record` as its own batch and syncs it, whatever the sync
    /// mode.
    fn append_synced(&mut self, record: &Record) -> Result<(), Error> {
        self.append(std::slice::from_ref(record))?;
        self.sync_active()
    }

    /// Steps 3 of [`truncate_after`](Self::truncate_after): cuts every
    /// record above `lsn` and ends the log with `marker`. Each file change is
    /// durable before the next, so every intermediate state is a valid log.
    fn apply_truncate(&mut self, lsn: Lsn, marker: &Record) -> Result<(), Error> {
        let mut marker_written = false;
        if self.last_lsn().is_some_and(|l| l > lsn) {
            self.active = None;
            while self.segments.back().is_some_and(|s| s.first_lsn() > lsn) {
                if let Some(seg) = self.segments.back() {
                    self.io.remove_file(&seg.path)?;
                    self.io.sync_dir(&self.dir)?;
                }
                self.segments.pop_back();
            }
            if self.last_lsn().is_some_and(|l| l > lsn) {
                self.cut_last_segment(lsn, marker)?;
                marker_written = true;
            }
            self.open_active()?;
        }
        if !marker_written {
            self.append_synced(marker)?;
        }
        Ok(())
    }

    fn write_intent(&mut self, after: Lsn, marker: Lsn) -> Result<(), Error> {
        write_truncate_intent(&self.dir, self.io.as_ref(), after, marker)
    }

    fn remove_intent(&mut self) -> Result<(), Error> {
        self.io.remove_file(&self.dir.join(TRUNCATE_INTENT))?;
        self.io.sync_dir(&self.dir)?;
        Ok(())
    }

    /// On open: finishes a truncate a crash interrupted after its intent
    /// was durable.
    fn finish_pending_truncate(&mut self) -> Result<(), Error> {
        let path = self.dir.join(TRUNCATE_INTENT);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let (after, marker) =
            decode_intent(&bytes).ok_or_else(|| corrupt(&path, 0, "malformed truncate intent"))?;
        // Only the marker has its Lsn: if it is there, the truncate is done
        // (the crash came before the intent was deleted).
        if self.last_lsn().is_none_or(|l| l < marker) {
            warn!(%after, %marker, "finishing a truncate interrupted by a crash");
            let record = Record::marker(marker, RecordKind::Truncated, after);
            self.apply_truncate(after, &record)?;
        }
        self.remove_intent()
    }

    /// Cuts the last segment after the record `lsn` (which it holds or
    /// passes) and ends it with `marker`. The kept part of the batch the cut
    /// falls in and the marker are written as one batch, the marker with the
    /// batch-end flag (without it recovery would drop the kept records as
    /// incomplete). The segment is always rewritten: the bytes before that
    /// batch are copied to a temporary file, the batch written after them,
    /// the file synced and renamed over the original, so a crash leaves
    /// either the old or the new file.
    fn cut_last_segment(&mut self, lsn: Lsn, marker: &Record) -> Result<(), Error> {
        let Some(seg) = self.segments.back() else {
            return Ok(());
        };
        let (path, id, data_end) = (seg.path.clone(), seg.header.id, seg.data_end);
        let mut reader = FrameReader::new(File::open(&path)?, id, SEGMENT_HEADER_LEN, data_end)?;
        let mut batch_start = SEGMENT_HEADER_LEN;
        let mut batch: Vec<Record> = Vec::new();
        let mut cut_end = SEGMENT_HEADER_LEN;
        let mut payload = Vec::new();
        loop {
            let at = reader.pos();
            match reader.next_frame(&mut payload)? {
                FrameRead::End => break,
                FrameRead::Invalid(why) => return Err(corrupt(&path, at, why)),
                FrameRead::Frame(h) if h.lsn > lsn => break,
                FrameRead::Frame(h) => {
                    cut_end = reader.pos();
                    if h.batch_end() {
                        batch.clear();
                        batch_start = cut_end;
                    } else {
                        batch.push(Record {
                            lsn: h.lsn,
                            kind: h.kind,
                            payload: Bytes::from(std::mem::take(&mut payload)),
                        });
                    }
                }
            }
        }
        drop(reader);
        // The kept part of a cut batch and the marker form the last batch.
        batch.push(marker.clone());
        {
            let tmp = tmp_path(&path);
            let src = File::open(&path)?;
            let dst = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)?;
            let mut chunk = vec![0u8; 1 << 20];
            let mut at = 0u64;
            while at < batch_start {
                let n = (batch_start - at).min(chunk.len() as u64) as usize;
                src.read_exact_at(&mut chunk[..n], at)?;
                self.io.write_all_at(&dst, &chunk[..n], at)?;
                at += n as u64;
            }
            self.buf.clear();
            let last = batch.len() - 1;
            for (i, r) in batch.iter().enumerate() {
                encode_frame(&mut self.buf, id, r, i == last, batch_start);
            }
            self.io.write_all_at(&dst, &self.buf, batch_start)?;
            self.io.sync_data(&dst)?;
            self.io.rename(&tmp, &path)?;
            self.io.sync_dir(&self.dir)?;
        }
        let new_end = batch_start + self.buf.len() as u64;
        if let Some(seg) = self.segments.back_mut() {
            seg.last_lsn = Some(marker.lsn);
            seg.data_end = new_end;
            seg.truncate_index(lsn);
        }
        debug!(path = %path.display(), %lsn, cut_end, "segment cut");
        Ok(())
    }

    /// Makes everything durable before the lock is released, and gives back
    /// the unused preallocated end of the active segment, so the next open
    /// finds the end of the data without scanning zeros (open allocates it
    /// again).
    pub(crate) fn close(&mut self) -> Result<(), Error> {
        self.sync()?;
        self.mutate(|log| {
            if let Some(a) = log.active.take() {
                if a.file.metadata()?.len() > a.write_pos {
                    log.io.set_len(&a.file, a.write_pos)?;
                    log.io.sync_data(&a.file)?;
                }
            }
            Ok(())
        })
    }
}

/// Makes the reads of `file` that follow show what the disk holds, not what
/// only the page cache does: an `fdatasync` (anything a previous owner left
/// unsynced is made durable now, or the open fails), then the cache is
/// dropped ([`FileIo::drop_page_cache`]).
///
/// After an `fdatasync` fails, Linux may keep the failed pages cached and
/// marked clean: a reopen in the same boot would read the failed batch as
/// complete, adopt it, and acknowledge new entries after it, and a later
/// power loss would leave a hole before them. Open does this for the last
/// segment only: every other segment was sealed by an `fdatasync` that
/// succeeded after its last write (a store writes nothing after a failed
/// sync, and rotates only after the seal), and no other file is trusted
/// without being synced first (`*.tmp` files are deleted, the truncate
/// intent is synced before it is renamed into place). Dropping the last
/// segment costs a read of at most one segment from the disk on open.
pub(crate) fn read_from_disk(io: &dyn FileIo, file: &File) -> Result<(), Error> {
    io.sync_data(file)?;
    io.drop_page_cache(file)?;
    Ok(())
}

/// Creates `dir` and every missing ancestor, then fsyncs the parent of each
/// directory it created (deepest first), so every new level's entry is
/// durable before the log is written into it.
pub(crate) fn create_dir_durably(dir: &Path, io: &dyn FileIo) -> Result<(), Error> {
    if dir.is_dir() {
        return Ok(());
    }
    // The levels that do not exist yet, deepest first.
    let mut missing = Vec::new();
    let mut at = Some(dir);
    while let Some(p) = at.filter(|p| !p.as_os_str().is_empty() && !p.exists()) {
        missing.push(p.to_path_buf());
        at = p.parent();
    }
    std::fs::create_dir_all(dir)?;
    for created in &missing {
        let parent = match created.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        io.sync_dir(parent)?;
    }
    Ok(())
}

/// Makes the intent of a truncate durable in `dir`: [`TRUNCATE_INTENT`]
/// holding `after` and the marker's Lsn, whole or absent (written as
/// [`TRUNCATE_INTENT_TMP`], synced, renamed into place, directory synced).
/// The next open carries it out.
pub(crate) fn write_truncate_intent(
    dir: &Path,
    io: &dyn FileIo,
    after: Lsn,
    marker: Lsn,
) -> Result<(), Error> {
    let path = dir.join(TRUNCATE_INTENT);
    let tmp = dir.join(TRUNCATE_INTENT_TMP);
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)?;
    io.write_all_at(&file, &encode_intent(after, marker), 0)?;
    io.sync_data(&file)?;
    io.rename(&tmp, &path)?;
    io.sync_dir(dir)?;
    Ok(())
}

/// The file recording a truncate in progress (see
/// [`SegmentLog::truncate_after`]).
pub(crate) const TRUNCATE_INTENT: &str = "wal.truncate";
/// The intent being written.
pub(crate) const TRUNCATE_INTENT_TMP: &str = "wal.truncate.tmp";
const INTENT_MAGIC: [u8; 8] = *b"WALFSTRC";
const INTENT_LEN: usize = 28;

/// Intent bytes: magic, cut point (u64 LE), marker Lsn (u64 LE), CRC-32 of
/// the first 24 bytes.
pub(crate) fn encode_intent(after: Lsn, marker: Lsn) -> [u8; INTENT_LEN] {
    let mut b = [0u8; INTENT_LEN];
    b[0..8].copy_from_slice(&INTENT_MAGIC);
    b[8..16].copy_from_slice(&after.get().to_le_bytes());
    b[16..24].copy_from_slice(&marker.get().to_le_bytes());
    let crc = crc32fast::hash(&b[0..24]);
    b[24..28].copy_from_slice(&crc.to_le_bytes());
    b
}

/// The (cut point, marker Lsn) of intent bytes, if they are whole.
pub(crate) fn decode_intent(b: &[u8]) -> Option<(Lsn, Lsn)> {
    if b.len() != INTENT_LEN || b[0..8] != INTENT_MAGIC {
        return None;
    }
    let crc = u32::from_le_bytes(b[24..28].try_into().ok()?);
    if crc != crc32fast::hash(&b[0..24]) {
        return None;
    }
    let after = u64::from_le_bytes(b[8..16].try_into().ok()?);
    let marker = u64::from_le_bytes(b[16..24].try_into().ok()?);
    (marker > after).then_some((Lsn(after), Lsn(marker)))
}

fn tmp_path(segment: &Path) -> PathBuf {
    let mut s = segment.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

/// A fresh random segment id from the OS's randomness. It only has to
/// differ between segment files (it seeds every frame checksum, so frames
/// left in a reused or preallocated file do not check out under a new
/// header); any value, zero included, is valid in the format.
fn new_segment_id() -> io::Result<u64> {
    Ok(getrandom::u64()?)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    /// Ids come from the OS's randomness, not from a clock that two
    /// segments created in the same tick would share.
    #[test]
    fn segment_ids_differ() {
        let ids: HashSet<u64> = (0..1000)
            .map(|_| super::new_segment_id().unwrap())
            .collect();
        assert_eq!(ids.len(), 1000);
    }
}
