//! Read-only access to a log directory for tools (`walctl`), and the
//! explicit repair.
//!
//! - [`verify`]: a full checksum and structure scan that reports *every*
//!   problem with its file and offset instead of stopping at the first, and
//!   changes nothing. It classifies each problem the way
//!   [`FsStore`](crate::FsStore)'s open would: a torn tail (open cuts it) or
//!   corruption (open refuses the log).
//! - [`LogReader`]: reads records in Lsn order without taking the directory
//!   lock and without repairing anything, so it can run next to a live
//!   writer (`walctl dump`, `walctl tail -f`). It only yields records of
//!   complete append batches.
//! - [`repair`]: the explicit cut of a damaged log. It plans the cut from a
//!   [`verify`] scan (a dry run changes nothing); applied, it takes the
//!   directory lock (so never under a live writer), cuts the first damaged
//!   segment after its last complete batch before the damage, deletes
//!   every later segment and ends the log with a `truncated` marker above
//!   every Lsn the directory held, all under the same lock.
//!
//! Neither [`verify`] nor [`LogReader`] takes the lock: run next to a live
//! writer they see a snapshot that may end in a batch being written (a
//! [`verify`] then reports a torn tail the writer is about to complete).

use std::{
    collections::VecDeque,
    fmt,
    fs::{File, OpenOptions},
    io,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    sync::Arc,
};

use bytes::Bytes;
use wal_core::{Error, Lsn, RecordKind};

use crate::{
    format::{FrameCrc, FrameHeader, SegmentHeader, ALIGN, FRAME_HEADER_LEN, SEGMENT_HEADER_LEN},
    io::{FileIo, StdFileIo},
    lock::DirLock,
    log::{decode_intent, read_from_disk, write_truncate_intent, SegmentLog, TRUNCATE_INTENT},
    options::FsOptions,
    segment::{
        corrupt, damage_scan, parse_segment_name, FrameRead, FrameReader, SEGMENT_SUFFIX,
        TMP_SUFFIX,
    },
};

/// How bad a [`Problem`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProblemKind {
    /// Bytes after the last complete batch of the last segment that open
    /// would cut off as a write torn by a crash (nothing acknowledged is
    /// lost), or an empty last segment that open would delete.
    TornTail,
    /// Damage that makes open fail with
    /// [`Error::Corrupt`].
    Corrupt,
    /// A leftover `*.wal.tmp` file, which open deletes.
    Leftover,
}

impl ProblemKind {
    /// A short lower-case name, for tools.
    pub const fn name(self) -> &'static str {
        match self {
            ProblemKind::TornTail => "torn-tail",
            ProblemKind::Corrupt => "corrupt",
            ProblemKind::Leftover => "leftover",
        }
    }
}

/// One problem [`verify`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// How bad it is.
    pub kind: ProblemKind,
    /// The file.
    pub path: PathBuf,
    /// Byte offset in the file where the bad bytes start.
    pub offset: u64,
    /// What is wrong.
    pub why: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} at offset {}: {}",
            self.kind.name(),
            self.path.display(),
            self.offset,
            self.why
        )
    }
}

/// What [`verify`] found in one segment file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentReport {
    /// The file.
    pub path: PathBuf,
    /// The first Lsn its name stands for.
    pub name_lsn: Lsn,
    /// The random id from its header, if the header is valid.
    pub segment_id: Option<u64>,
    /// The header's "previous last Lsn", if the header is valid.
    pub prev_last_lsn: Option<Lsn>,
    /// File size in bytes (the active segment is preallocated: this
    /// includes its unused zeros).
    pub file_bytes: u64,
    /// First record of a complete batch, if any.
    pub first_lsn: Option<Lsn>,
    /// Last record of a complete batch, if any.
    pub last_lsn: Option<Lsn>,
    /// Records in complete batches (including any found after damage).
    pub records: u64,
    /// Payload bytes of those records.
    pub payload_bytes: u64,
    /// End of the last complete batch: the bytes in use.
    pub data_end: u64,
    /// End of the last complete batch before the segment's first problem
    /// (0 if the header itself is bad): where [`repair`] would cut.
    pub valid_end: u64,
    /// Last Lsn before `valid_end`.
    pub valid_last_lsn: Option<Lsn>,
    /// Records before `valid_end`.
    pub valid_records: u64,
    /// True if the segment has at least one problem other than a leftover.
    pub damaged: bool,
    /// The highest Lsn of any frame in the file whose checksum holds, in a
    /// complete batch or not, before or after damage: an Lsn that may have
    /// been handed out, which [`repair`] never lets the log hand out again.
    /// If the header is unreadable, frames are checked against the segment
    /// id the damaged header still holds; if none checks out, this comes
    /// from well-formed frame headers whose checksum cannot be checked (see
    /// `max_lsn_unchecked`).
    pub max_lsn: Option<Lsn>,
    /// True if `max_lsn` comes from frame headers whose checksums could not
    /// be checked (the segment id is lost with the header). Such frames
    /// count only if they sit at an 8-byte aligned offset, fit in the file,
    /// say they were written after a durable prefix (synced-to at most
    /// their offset), and carry an Lsn from the file name's up to 2^48
    /// above it (a bound that keeps a stray byte pattern from using up the
    /// Lsn space).
    pub max_lsn_unchecked: bool,
}

/// A record seen by a scan: where it is and what it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScannedRecord {
    /// The segment file.
    pub path: PathBuf,
    /// Byte offset of the record's frame in the file.
    pub offset: u64,
    /// Bytes the frame takes on disk, padding included.
    pub frame_bytes: u64,
    /// The record's Lsn.
    pub lsn: Lsn,
    /// The record's kind.
    pub kind: RecordKind,
    /// The payload.
    pub payload: Bytes,
}

/// What a [`verify`] scan reports as it goes, for progress and for tools
/// that look at every record (e.g. to find checkpoints).
#[derive(Debug)]
#[non_exhaustive]
pub enum ScanEvent<'a> {
    /// A segment file is about to be scanned.
    SegmentStart {
        /// The file.
        path: &'a Path,
        /// Its size in bytes.
        file_bytes: u64,
    },
    /// A record of a complete batch (records of a batch are reported when
    /// its last record has been read).
    Record(&'a ScannedRecord),
    /// A segment file is done.
    SegmentEnd(&'a SegmentReport),
}

/// A `truncate_after` that a crash interrupted after its intent was
/// durable (the `wal.truncate` file): open finishes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PendingTruncate {
    /// Records above this Lsn are cut.
    pub after: Lsn,
    /// The Lsn of the `truncated` marker that ends the cut log.
    pub marker: Lsn,
}

/// The result of a [`verify`] scan.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogReport {
    /// The log directory.
    pub dir: PathBuf,
    /// Every segment file, in Lsn order.
    pub segments: Vec<SegmentReport>,
    /// Every problem, in log order.
    pub problems: Vec<Problem>,
    /// An interrupted truncate that open would finish, if any. (A
    /// `wal.truncate` that does not decode is a [`ProblemKind::Corrupt`]
    /// problem instead: open refuses the log.)
    pub pending_truncate: Option<PendingTruncate>,
}

impl LogReport {
    /// True if no problem at all was found.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }

    /// True if open would refuse the log.
    pub fn has_corruption(&self) -> bool {
        self.problems.iter().any(|p| p.kind == ProblemKind::Corrupt)
    }

    /// First Lsn of the log (of the first segment with records).
    pub fn first_lsn(&self) -> Option<Lsn> {
        self.segments.iter().find_map(|s| s.first_lsn)
    }

    /// Last Lsn of a complete batch anywhere in the log.
    pub fn last_lsn(&self) -> Option<Lsn> {
        self.segments.iter().rev().find_map(|s| s.last_lsn)
    }

    /// The highest Lsn the directory shows any trace of: any frame whose
    /// checksum holds (see [`SegmentReport::max_lsn`]), any segment's name
    /// (its first Lsn) and "previous last Lsn", and a pending truncate's
    /// marker. Every Lsn the log ever handed out and still has a trace of is
    /// at or below it.
    pub fn high_water(&self) -> Option<Lsn> {
        let segments = self.segments.iter().flat_map(|s| {
            [
                Some(s.name_lsn),
                s.max_lsn,
                s.prev_last_lsn.filter(|l| *l != Lsn::ZERO),
            ]
        });
        segments
            .chain([self.pending_truncate.map(|t| t.marker)])
            .flatten()
            .max()
    }
}

/// Lists the `*.wal` segment files of `dir` in Lsn order, and the problems
/// with the other files open cares about (`*.wal.tmp` leftovers, `*.wal`
/// files whose name is not a segment name).
/// Segment files by first Lsn, and problems with other files.
type Listing = (Vec<(Lsn, PathBuf)>, Vec<Problem>);

fn list_dir(dir: &Path) -> Result<Listing, Error> {
    let mut found = Vec::new();
    let mut problems = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let path = entry.path();
        if name.ends_with(TMP_SUFFIX) {
            problems.push(Problem {
                kind: ProblemKind::Leftover,
                path,
                offset: 0,
                why: "an unfinished segment file (open deletes it)".into(),
            });
        } else if name.ends_with(SEGMENT_SUFFIX) {
            match parse_segment_name(name) {
                Some(lsn) => found.push((lsn, path)),
                None => problems.push(Problem {
                    kind: ProblemKind::Corrupt,
                    path,
                    offset: 0,
                    why: "a .wal file whose name is not a segment name (20 decimal digits + .wal)"
                        .into(),
                }),
            }
        }
    }
    found.sort();
    Ok((found, problems))
}

/// Scans every segment of the log in `dir`: every header, every frame's
/// checksum, Lsn order within and across segments, batch completeness.
/// Reports every problem (see [`LogReport::problems`]) instead of failing
/// at the first; fails only if the directory or a file cannot be read.
/// Read-only: takes no lock and changes nothing. Memory: one read buffer
/// plus one append batch.
///
/// After damage inside a segment the scan looks for the next valid frame
/// of that segment (at 8-byte aligned offsets) and goes on from there, so
/// later problems are reported too.
///
/// ```
/// # fn main() -> Result<(), wal_core::Error> {
/// let dir = tempfile::tempdir()?;
/// let report = wal_fs::inspect::verify(dir.path(), &mut |_event| {})?;
/// assert!(report.is_clean());
/// # Ok(())
/// # }
/// ```
pub fn verify(dir: &Path, visit: &mut dyn FnMut(ScanEvent<'_>)) -> Result<LogReport, Error> {
    let (segments, mut problems) = list_dir(dir)?;
    // Problems with names come first: they concern no particular Lsn.
    let mut report = LogReport {
        dir: dir.to_path_buf(),
        segments: Vec::new(),
        problems: Vec::new(),
        pending_truncate: None,
    };
    report.problems.append(&mut problems);
    let intent = dir.join(TRUNCATE_INTENT);
    match std::fs::read(&intent) {
        Ok(bytes) => match decode_intent(&bytes) {
            Some((after, marker)) => {
                report.pending_truncate = Some(PendingTruncate { after, marker });
            }
            None => report.problems.push(Problem {
                kind: ProblemKind::Corrupt,
                path: intent,
                offset: 0,
                why: "malformed truncate intent".into(),
            }),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    let count = segments.len();
    let mut prev_last: Option<Lsn> = None;
    let mut prev_known = true;
    for (i, (name_lsn, path)) in segments.into_iter().enumerate() {
        let is_last = i + 1 == count;
        let seg = scan_segment(
            &path,
            name_lsn,
            is_last,
            prev_known.then_some(prev_last),
            &mut report.problems,
            visit,
        )?;
        prev_known = seg.segment_id.is_some();
        if seg.last_lsn.is_some() {
            prev_last = seg.last_lsn;
        }
        visit(ScanEvent::SegmentEnd(&seg));
        report.segments.push(seg);
    }
    Ok(report)
}

/// A frame read but not yet reported: its batch is not complete yet.
struct Pending {
    offset: u64,
    header: FrameHeader,
    payload: Vec<u8>,
}

/// Scans one segment; see [`verify`]. `prev_last` is the last Lsn of the
/// segments before it (`None` inside: no records yet; outer `None`: not
/// known because the previous header was bad, so no chain check).
fn scan_segment(
    path: &Path,
    name_lsn: Lsn,
    is_last: bool,
    prev_last: Option<Option<Lsn>>,
    problems: &mut Vec<Problem>,
    visit: &mut dyn FnMut(ScanEvent<'_>),
) -> Result<SegmentReport, Error> {
    let file = File::open(path)?;
    let file_len = file.metadata()?.len();
    visit(ScanEvent::SegmentStart {
        path,
        file_bytes: file_len,
    });
    let mut seg = SegmentReport {
        path: path.to_path_buf(),
        name_lsn,
        segment_id: None,
        prev_last_lsn: None,
        file_bytes: file_len,
        first_lsn: None,
        last_lsn: None,
        records: 0,
        payload_bytes: 0,
        data_end: 0,
        valid_end: 0,
        valid_last_lsn: None,
        valid_records: 0,
        damaged: false,
        max_lsn: None,
        max_lsn_unchecked: false,
    };
    let mut problem = |seg: &mut SegmentReport, kind: ProblemKind, offset: u64, why: String| {
        seg.damaged = true;
        problems.push(Problem {
            kind,
            path: path.to_path_buf(),
            offset,
            why,
        });
    };
    if file_len < SEGMENT_HEADER_LEN {
        problem(
            &mut seg,
            ProblemKind::Corrupt,
            0,
            format!(
                "{file_len}-byte file is too short for a segment header ({SEGMENT_HEADER_LEN} bytes)"
            ),
        );
        return Ok(seg);
    }
    let mut hb = [0u8; SEGMENT_HEADER_LEN as usize];
    file.read_exact_at(&mut hb, 0)?;
    let header = match SegmentHeader::decode(&hb) {
        Ok(h) => h,
        Err(why) => {
            problem(&mut seg, ProblemKind::Corrupt, 0, why);
            // The id field may have survived what broke the header.
            let id = u64::from_le_bytes(hb[16..24].try_into().unwrap_or_default());
            seg.max_lsn = max_checked_lsn(&file, id, SEGMENT_HEADER_LEN, file_len)?;
            if seg.max_lsn.is_none() {
                seg.max_lsn = max_unchecked_lsn(&file, name_lsn, file_len)?;
                seg.max_lsn_unchecked = seg.max_lsn.is_some();
            }
            return Ok(seg);
        }
    };
    seg.segment_id = Some(header.id);
    seg.prev_last_lsn = Some(header.prev_last_lsn);
    seg.data_end = SEGMENT_HEADER_LEN;
    let mut frozen = false;
    if header.first_lsn != name_lsn {
        frozen = true;
        problem(
            &mut seg,
            ProblemKind::Corrupt,
            24,
            format!(
                "header says the first lsn is {}, the file name says {name_lsn}",
                header.first_lsn
            ),
        );
    }
    if let Some(prev_last) = prev_last {
        let prev_last = prev_last.unwrap_or(Lsn::ZERO);
        if prev_last != Lsn::ZERO
            && (header.prev_last_lsn != prev_last || header.first_lsn <= prev_last)
        {
            frozen = true;
            problem(
                &mut seg,
                ProblemKind::Corrupt,
                32,
                format!(
                    "segment was started after lsn {}, but the segments before it end at lsn {prev_last}: a segment is missing or was cut",
                    header.prev_last_lsn
                ),
            );
        }
    }
    if !frozen {
        seg.valid_end = SEGMENT_HEADER_LEN;
    }

    let mut start = SEGMENT_HEADER_LEN;
    let mut prev: Option<Lsn> = None;
    let mut pending: Vec<Pending> = Vec::new();
    let mut good_end = SEGMENT_HEADER_LEN;
    'segment: loop {
        let mut reader = FrameReader::new(file.try_clone()?, header.id, start, file_len)?;
        pending.clear();
        loop {
            let at = reader.pos();
            let mut payload = Vec::new();
            match reader.next_frame(&mut payload)? {
                FrameRead::End => {
                    if at != good_end {
                        let (kind, why) = if is_last {
                            (ProblemKind::TornTail, "the last append batch is incomplete")
                        } else {
                            (ProblemKind::Corrupt, "segment ends inside an append batch")
                        };
                        problem(&mut seg, kind, good_end, why.into());
                    }
                    break 'segment;
                }
                FrameRead::Frame(h) => {
                    seg.max_lsn = seg.max_lsn.max(Some(h.lsn));
                    let in_order = match prev {
                        None => h.lsn == header.first_lsn,
                        Some(p) => h.lsn > p,
                    };
                    if !in_order {
                        problem(
                            &mut seg,
                            ProblemKind::Corrupt,
                            at,
                            format!(
                                "lsn {} out of order (after {})",
                                h.lsn,
                                prev.map_or_else(
                                    || "the segment start".to_string(),
                                    |p| p.to_string()
                                )
                            ),
                        );
                        frozen = true;
                    }
                    prev = Some(h.lsn);
                    let batch_end = h.batch_end();
                    pending.push(Pending {
                        offset: at,
                        header: h,
                        payload,
                    });
                    if batch_end {
                        good_end = reader.pos();
                        for p in pending.drain(..) {
                            let r = ScannedRecord {
                                path: path.to_path_buf(),
                                offset: p.offset,
                                frame_bytes: p.header.frame_len(),
                                lsn: p.header.lsn,
                                kind: p.header.kind,
                                payload: Bytes::from(p.payload),
                            };
                            seg.first_lsn.get_or_insert(r.lsn);
                            seg.last_lsn = Some(r.lsn);
                            seg.records += 1;
                            seg.payload_bytes += r.payload.len() as u64;
                            if !frozen {
                                seg.valid_records += 1;
                                seg.valid_last_lsn = Some(r.lsn);
                            }
                            visit(ScanEvent::Record(&r));
                        }
                        seg.data_end = good_end;
                        if !frozen {
                            seg.valid_end = good_end;
                        }
                    }
                }
                FrameRead::Invalid(why) => {
                    // Open's rule: in the last segment, damage followed by
                    // nothing written after it was durable is a torn tail.
                    if is_last {
                        let (later, all_zero) =
                            damage_scan(&file, header.id, at, file_len, good_end)?;
                        match later {
                            None if all_zero && at == good_end => {}
                            None => {
                                problem(&mut seg, ProblemKind::TornTail, at, why);
                            }
                            Some(later) => {
                                problem(
                                    &mut seg,
                                    ProblemKind::Corrupt,
                                    at,
                                    format!("{why}, followed by a valid record at offset {later}"),
                                );
                            }
                        }
                        if later.is_none() {
                            // A torn tail: nothing after it counts, but a
                            // frame of it may have landed out of order.
                            let rest = max_checked_lsn(&file, header.id, at + ALIGN, file_len)?;
                            seg.max_lsn = seg.max_lsn.max(rest);
                            break 'segment;
                        }
                    } else {
                        problem(&mut seg, ProblemKind::Corrupt, at, why);
                    }
                    frozen = true;
                    // Go on from the next valid frame, to report what else
                    // is wrong (and what a cut here would lose).
                    match next_valid_frame(&file, header.id, at + ALIGN, file_len)? {
                        Some(p) => {
                            start = p;
                            good_end = p;
                            continue 'segment;
                        }
                        None => break 'segment,
                    }
                }
            }
        }
    }
    if seg.records == 0 && seg.segment_id.is_some() {
        if is_last {
            problem(
                &mut seg,
                ProblemKind::TornTail,
                SEGMENT_HEADER_LEN,
                "the last segment holds no complete batch (open deletes it)".into(),
            );
        } else {
            problem(
                &mut seg,
                ProblemKind::Corrupt,
                SEGMENT_HEADER_LEN,
                "segment holds no records".into(),
            );
        }
    }
    Ok(seg)
}

/// The first 8-byte aligned offset at or after `from` where a complete
/// frame of this segment checks out, if any.
fn next_valid_frame(
    file: &File,
    segment_id: u64,
    from: u64,
    file_len: u64,
) -> io::Result<Option<u64>> {
    const CHUNK: u64 = 1 << 20;
    let header_len = FRAME_HEADER_LEN as u64;
    let mut buf = vec![0u8; (CHUNK + header_len) as usize];
    let mut chunk_start = from.div_ceil(ALIGN) * ALIGN;
    while chunk_start < file_len {
        let want = (CHUNK + header_len).min(file_len - chunk_start) as usize;
        file.read_exact_at(&mut buf[..want], chunk_start)?;
        let own = (CHUNK as usize).min(want);
        let mut off = 0usize;
        while off < own && off + FRAME_HEADER_LEN <= want {
            let mut hb = [0u8; FRAME_HEADER_LEN];
            hb.copy_from_slice(&buf[off..off + FRAME_HEADER_LEN]);
            if hb.iter().any(|&b| b != 0) {
                if let Some(h) = FrameHeader::decode(&hb) {
                    let p = chunk_start + off as u64;
                    if h.frame_len() <= file_len - p && frame_crc_ok(file, segment_id, p, &hb, &h)?
                    {
                        return Ok(Some(p));
                    }
                }
            }
            off += ALIGN as usize;
        }
        chunk_start += CHUNK;
    }
    Ok(None)
}

fn frame_crc_ok(
    file: &File,
    segment_id: u64,
    at: u64,
    hb: &[u8; FRAME_HEADER_LEN],
    h: &FrameHeader,
) -> io::Result<bool> {
    let mut crc = FrameCrc::new(segment_id, hb);
    let mut payload = vec![0u8; h.len as usize];
    file.read_exact_at(&mut payload, at + FRAME_HEADER_LEN as u64)?;
    crc.update(&payload);
    Ok(crc.finish() == h.crc)
}

/// The highest Lsn of a frame of segment `segment_id` whose checksum holds,
/// at or after `from`: read frame by frame, and past invalid bytes from the
/// next 8-byte aligned offset where a frame checks out.
fn max_checked_lsn(
    file: &File,
    segment_id: u64,
    mut from: u64,
    file_len: u64,
) -> io::Result<Option<Lsn>> {
    let mut max = None;
    let mut payload = Vec::new();
    'restart: loop {
        let mut reader = FrameReader::new(file.try_clone()?, segment_id, from, file_len)?;
        loop {
            let at = reader.pos();
            match reader.next_frame(&mut payload)? {
                FrameRead::Frame(h) => max = max.max(Some(h.lsn)),
                FrameRead::End => return Ok(max),
                FrameRead::Invalid(_) => {
                    match next_valid_frame(file, segment_id, at + ALIGN, file_len)? {
                        Some(p) => {
                            from = p;
                            continue 'restart;
                        }
                        None => return Ok(max),
                    }
                }
            }
        }
    }
}

/// Lsns of frames whose checksum cannot be checked above the name's are
/// believed up to this far (see [`SegmentReport::max_lsn_unchecked`]).
const UNCHECKED_LSN_SPAN: u64 = 1 << 48;

/// For a segment whose id is lost: the highest Lsn of a well-formed frame
/// header at an 8-byte aligned offset after the segment header, whose frame
/// fits in the file, whose synced-to is a durable prefix before it, and
/// whose Lsn is in `[name_lsn, name_lsn + 2^48)`. Reads in fixed-size
/// chunks.
fn max_unchecked_lsn(file: &File, name_lsn: Lsn, file_len: u64) -> io::Result<Option<Lsn>> {
    const CHUNK: u64 = 1 << 20;
    let header_len = FRAME_HEADER_LEN as u64;
    let ceiling = name_lsn.get().saturating_add(UNCHECKED_LSN_SPAN);
    let mut buf = vec![0u8; (CHUNK + header_len) as usize];
    let mut max = None;
    let mut chunk_start = SEGMENT_HEADER_LEN;
    while chunk_start + header_len <= file_len {
        let want = (CHUNK + header_len).min(file_len - chunk_start) as usize;
        file.read_exact_at(&mut buf[..want], chunk_start)?;
        let mut off = 0usize;
        while off < CHUNK as usize && off + FRAME_HEADER_LEN <= want {
            let p = chunk_start + off as u64;
            let mut hb = [0u8; FRAME_HEADER_LEN];
            hb.copy_from_slice(&buf[off..off + FRAME_HEADER_LEN]);
            if let Some(h) = FrameHeader::decode(&hb) {
                if h.frame_len() <= file_len - p
                    && (SEGMENT_HEADER_LEN..=p).contains(&h.synced_to)
                    && (name_lsn.get()..ceiling).contains(&h.lsn.get())
                {
                    max = max.max(Some(h.lsn));
                }
            }
            off += ALIGN as usize;
        }
        chunk_start += CHUNK;
    }
    Ok(max)
}

// ---------------------------------------------------------------------------
// Repair

/// One step of a [`RepairPlan`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RepairAction {
    /// Cut the file to `len` bytes (the end of its last good batch).
    Truncate {
        /// The segment.
        path: PathBuf,
        /// New length in bytes.
        len: u64,
        /// Bytes cut off.
        cut_bytes: u64,
    },
    /// Delete the file.
    Delete {
        /// The file.
        path: PathBuf,
        /// Its size in bytes.
        bytes: u64,
    },
}

impl fmt::Display for RepairAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RepairAction::Truncate {
                path,
                len,
                cut_bytes,
            } => write!(
                f,
                "truncate {} to {len} bytes (cutting {cut_bytes} bytes)",
                path.display()
            ),
            RepairAction::Delete { path, bytes } => {
                write!(f, "delete {} ({bytes} bytes)", path.display())
            }
        }
    }
}

/// What [`repair`] does (or did) to a log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RepairPlan {
    /// The scan the plan was made from.
    pub report: LogReport,
    /// The file changes, in the order they run (after the intent, before
    /// the marker; see [`repair`]).
    pub actions: Vec<RepairAction>,
    /// The last Lsn the log keeps, if any.
    pub keep_last_lsn: Option<Lsn>,
    /// Records in complete batches (readable, checksums good) that the cut
    /// removes: acknowledged entries after the damage. Zero for a torn tail.
    pub lost_records: u64,
    /// The highest Lsn the directory shows any trace of
    /// ([`LogReport::high_water`]): the cut Lsns are at or below it.
    pub high_water: Option<Lsn>,
    /// The Lsn of the `truncated` marker that ends the repaired log, one
    /// above [`high_water`](Self::high_water), so that the next writer hands
    /// out no Lsn that was cut; `None` if nothing above the kept records
    /// was ever there.
    pub marker_lsn: Option<Lsn>,
    /// Whether the actions were carried out and the marker written.
    pub applied: bool,
}

impl RepairPlan {
    /// True if there is nothing to do.
    pub fn is_noop(&self) -> bool {
        self.actions.is_empty() && self.marker_lsn.is_none()
    }
}

/// Plans, and with `apply` carries out, the cut of a damaged log: the log
/// keeps every complete batch before its first problem in Lsn order, loses
/// everything after it (later segments are deleted, newest first), and
/// ends with a `truncated` marker above every Lsn the directory shows any
/// trace of ([`RepairPlan::marker_lsn`]), so no cut Lsn is handed out
/// again. Leftover `*.wal.tmp` files are deleted too. A truncate a crash
/// interrupted ([`LogReport::pending_truncate`]) is finished: the log
/// keeps nothing above its cut point either.
///
/// With `apply == false` (a dry run) nothing is changed and no lock is
/// taken. With `apply == true`, all under the directory lock (so a live
/// writer makes this fail with [`Error::Locked`] before anything changes):
///
/// 1. every segment is synced and its page cache dropped
///    ([`FileIo::drop_page_cache`]), so the scan judges what the disk
///    holds, then the log is scanned again;
/// 2. if a marker is due, its intent is made durable first (`wal.truncate`:
///    the kept last Lsn and the marker's Lsn, written as a temporary file,
///    synced, renamed, directory synced), as `truncate_after` does;
/// 3. the actions run, each durable before the next (`fdatasync` of a cut
///    file, directory `fsync` after each deletion);
/// 4. the log is opened, still under the same lock, which carries out the
///    intent: the marker is appended and synced, the intent deleted.
///
/// A crash anywhere leaves a log that either opens (open finishes the
/// intent and writes the marker) or is still damaged (run repair again: it
/// counts the intent's marker in the high-water mark).
///
/// Entries after the cut are lost: look at [`RepairPlan::lost_records`]
/// before applying. A `*.wal` file whose name is not a segment name is not
/// deleted (it may not be the log's); with `apply` it is refused with
/// [`Error::InvalidArgument`] before anything changes, since open would
/// refuse the log while it is there.
pub fn repair(dir: &Path, apply: bool) -> Result<RepairPlan, Error> {
    repair_with(dir, apply, Arc::new(StdFileIo))
}

/// [`repair`] with the file operations routed through `io` (fault
/// injection in tests).
pub fn repair_with(dir: &Path, apply: bool, io: Arc<dyn FileIo>) -> Result<RepairPlan, Error> {
    if !dir.is_dir() {
        return Err(Error::InvalidArgument(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    let lock = if apply {
        Some(DirLock::acquire(dir)?)
    } else {
        None
    };
    if lock.is_some() {
        let (segments, _) = list_dir(dir)?;
        for (_, path) in &segments {
            read_from_disk(io.as_ref(), &File::open(path)?)?;
        }
    }
    let mut plan = plan_repair(verify(dir, &mut |_| {})?)?;
    let Some(lock) = lock else {
        return Ok(plan);
    };
    if let Some(p) = plan.report.problems.iter().find(|p| {
        p.kind == ProblemKind::Corrupt
            && p.path.extension().is_some_and(|e| e == "wal")
            && parse_segment_name_of(&p.path).is_none()
    }) {
        return Err(Error::InvalidArgument(format!(
            "{} is not a segment name (20 decimal digits + .wal): open refuses the log while it is there, and repair does not delete a file it does not know; move it out of {}",
            p.path.display(),
            dir.display()
        )));
    }
    if let Some(marker) = plan.marker_lsn {
        let after = plan.keep_last_lsn.unwrap_or(Lsn::ZERO);
        write_truncate_intent(dir, io.as_ref(), after, marker)?;
    }
    for a in &plan.actions {
        match a {
            RepairAction::Delete { path, .. } => {
                io.remove_file(path)?;
                io.sync_dir(dir)?;
            }
            RepairAction::Truncate { path, len, .. } => {
                let f = OpenOptions::new().write(true).open(path)?;
                io.set_len(&f, *len)?;
                io.sync_data(&f)?;
            }
        }
    }
    if let Some(marker) = plan.marker_lsn {
        // The log is whole again; opening it carries out the intent.
        let (mut log, state) =
            SegmentLog::open_locked(dir.to_path_buf(), FsOptions::default(), io, lock)?;
        log.close()?;
        if state.last_lsn != Some(marker) {
            return Err(Error::Corrupt {
                location: wal_core::Location::File {
                    path: dir.join(TRUNCATE_INTENT),
                    offset: 0,
                },
                why: format!(
                    "the repaired log ends at {:?}, not at its high-water marker {marker}",
                    state.last_lsn
                ),
            });
        }
    }
    plan.applied = true;
    Ok(plan)
}

/// The first Lsn a file's name stands for, if it is a segment name.
fn parse_segment_name_of(path: &Path) -> Option<Lsn> {
    parse_segment_name(path.file_name()?.to_str()?)
}

/// The plan for a scanned log; see [`repair`].
fn plan_repair(report: LogReport) -> Result<RepairPlan, Error> {
    let mut plan = RepairPlan::default();
    for p in &report.problems {
        if p.kind == ProblemKind::Leftover {
            plan.actions.push(RepairAction::Delete {
                path: p.path.clone(),
                bytes: std::fs::metadata(&p.path).map_or(0, |m| m.len()),
            });
        }
        // A badly named *.wal file is not part of the log: leave it to the
        // operator rather than delete an unknown file.
    }
    let damaged = report.segments.iter().position(|s| s.damaged);
    let mut cut = Vec::new();
    if let Some(k) = damaged {
        plan.keep_last_lsn = report.segments[..k].iter().rev().find_map(|s| s.last_lsn);
        for s in report.segments[k + 1..].iter().rev() {
            plan.lost_records += s.records;
            cut.push(RepairAction::Delete {
                path: s.path.clone(),
                bytes: s.file_bytes,
            });
        }
        let s = &report.segments[k];
        plan.lost_records += s.records - s.valid_records;
        if s.valid_records == 0 {
            cut.push(RepairAction::Delete {
                path: s.path.clone(),
                bytes: s.file_bytes,
            });
        } else {
            plan.keep_last_lsn = s.valid_last_lsn;
            cut.push(RepairAction::Truncate {
                path: s.path.clone(),
                len: s.valid_end,
                cut_bytes: s.file_bytes - s.valid_end,
            });
        }
    } else {
        plan.keep_last_lsn = report.last_lsn();
    }
    plan.actions.extend(cut);
    if let Some(t) = report.pending_truncate {
        // The interrupted truncate happens: its intent was durable.
        plan.keep_last_lsn = plan.keep_last_lsn.map(|k| k.min(t.after));
    }
    let intent = report.dir.join(TRUNCATE_INTENT);
    let broken_intent = report
        .problems
        .iter()
        .any(|p| p.kind == ProblemKind::Corrupt && p.path == intent);
    plan.high_water = report.high_water();
    let kept = plan.keep_last_lsn.unwrap_or(Lsn::ZERO);
    if let Some(hw) = plan.high_water.filter(|hw| *hw > kept) {
        let marker = hw
            .checked_add(1)
            .filter(|m| *m <= Lsn::LAST)
            .ok_or(Error::LsnExhausted {
                last: hw,
                requested: 1,
            })?;
        plan.marker_lsn = Some(marker);
    } else if broken_intent {
        // No marker's intent replaces it.
        plan.actions.push(RepairAction::Delete {
            path: intent,
            bytes: std::fs::metadata(report.dir.join(TRUNCATE_INTENT)).map_or(0, |m| m.len()),
        });
    }
    plan.report = report;
    Ok(plan)
}

// ---------------------------------------------------------------------------
// Reader

/// A record read by a [`LogReader`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadRecord {
    /// The record's Lsn.
    pub lsn: Lsn,
    /// The record's kind.
    pub kind: RecordKind,
    /// The payload.
    pub payload: Bytes,
    /// The segment file it was read from.
    pub path: PathBuf,
    /// Byte offset of its frame in that file.
    pub offset: u64,
}

/// Where a [`LogReader`] is.
struct ReaderCursor {
    path: PathBuf,
    name_lsn: Lsn,
    segment_id: u64,
    /// Offset of the next unread batch.
    offset: u64,
    reader: Option<FrameReader>,
}

/// Reads the records of a log directory in Lsn order, read-only and without
/// the directory lock, so it works next to a live writer; also follows the
/// log as it grows.
///
/// [`next_record`](Self::next_record) returns `Ok(None)` when it has caught
/// up with what is written; call it again later to see newer records (for a
/// `tail -f`, poll it). Only records of complete append batches are
/// returned; a batch being written is returned once its last frame is
/// there. Damage in a segment that later segments follow is reported as
/// [`Error::Corrupt`]; bytes after the last complete batch of the last
/// segment are taken as "not written yet".
///
/// Memory: one read buffer plus one append batch.
pub struct LogReader {
    dir: PathBuf,
    next: Lsn,
    cursor: Option<ReaderCursor>,
    pending: VecDeque<ReadRecord>,
    batch: Vec<ReadRecord>,
}

impl fmt::Debug for LogReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogReader")
            .field("dir", &self.dir)
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl LogReader {
    /// A reader of the records with Lsn >= `from` in `dir`. Touches nothing
    /// until the first read.
    pub fn new(dir: impl Into<PathBuf>, from: Lsn) -> LogReader {
        LogReader {
            dir: dir.into(),
            next: from,
            cursor: None,
            pending: VecDeque::new(),
            batch: Vec::new(),
        }
    }

    /// The lowest Lsn the next record may have.
    pub fn next_lsn(&self) -> Lsn {
        self.next
    }

    /// The next record, or `None` if every complete batch written so far has
    /// been returned.
    pub fn next_record(&mut self) -> Result<Option<ReadRecord>, Error> {
        loop {
            if let Some(r) = self.pending.pop_front() {
                self.next = r.lsn.next();
                return Ok(Some(r));
            }
            if self.cursor.is_none() && !self.position()? {
                return Ok(None);
            }
            if self.fill()? {
                continue;
            }
            // Nothing more in this segment right now. Move on only if a
            // later segment exists: the writer seals a segment before it
            // creates the next, so reading once more after seeing the next
            // one cannot miss a batch.
            let Some(cur) = self.cursor.as_ref() else {
                continue;
            };
            let (segments, _) = list_dir(&self.dir)?;
            let Some((lsn, path)) = segments.into_iter().find(|(l, _)| *l > cur.name_lsn) else {
                return Ok(None);
            };
            if self.fill()? {
                continue;
            }
            if let Some(cur) = self.cursor.as_ref() {
                let len = std::fs::metadata(&cur.path).map_or(0, |m| m.len());
                if cur.offset < len {
                    return Err(corrupt(
                        &cur.path,
                        cur.offset,
                        "invalid frame or incomplete batch in a segment that later segments follow",
                    ));
                }
            }
            self.open_segment(lsn, path)?;
        }
    }

    /// Picks the segment holding `next` (or the first one after it).
    /// Returns false if the log has no segments.
    fn position(&mut self) -> Result<bool, Error> {
        let (segments, _) = list_dir(&self.dir)?;
        let i = segments
            .partition_point(|(l, _)| *l <= self.next)
            .saturating_sub(1);
        match segments.into_iter().nth(i) {
            Some((lsn, path)) => {
                self.open_segment(lsn, path)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn open_segment(&mut self, name_lsn: Lsn, path: PathBuf) -> Result<(), Error> {
        let file = File::open(&path)?;
        let mut hb = [0u8; SEGMENT_HEADER_LEN as usize];
        file.read_exact_at(&mut hb, 0)
            .map_err(|e| corrupt(&path, 0, format!("cannot read the segment header: {e}")))?;
        let header = SegmentHeader::decode(&hb).map_err(|why| corrupt(&path, 0, why))?;
        self.batch.clear();
        self.cursor = Some(ReaderCursor {
            path,
            name_lsn,
            segment_id: header.id,
            offset: SEGMENT_HEADER_LEN,
            reader: None,
        });
        Ok(())
    }

    /// Reads complete batches from the current segment into `pending`, up
    /// to about 4 MiB. Returns true if it found any record, complete batch
    /// or not (so the caller goes on reading).
    fn fill(&mut self) -> Result<bool, Error> {
        let Some(cur) = self.cursor.as_mut() else {
            return Ok(false);
        };
        let reader = match cur.reader.as_mut() {
            Some(r) => r,
            None => {
                let file = match File::open(&cur.path) {
                    Ok(f) => f,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        // Trimmed away under us: find where `next` is now.
                        self.cursor = None;
                        return Ok(true);
                    }
                    Err(e) => return Err(e.into()),
                };
                let len = file.metadata()?.len();
                self.batch.clear();
                cur.reader
                    .insert(FrameReader::new(file, cur.segment_id, cur.offset, len)?)
            }
        };
        let mut got = false;
        let mut bytes = 0usize;
        loop {
            let at = reader.pos();
            let mut payload = Vec::new();
            let frame = match reader.next_frame(&mut payload) {
                Ok(FrameRead::Frame(h)) => h,
                // The end of what is there, or a batch being written (or a
                // file cut under us): read again next time from the last
                // complete batch.
                Ok(_) | Err(_) => {
                    cur.reader = None;
                    self.batch.clear();
                    return Ok(got);
                }
            };
            bytes += payload.len();
            self.batch.push(ReadRecord {
                lsn: frame.lsn,
                kind: frame.kind,
                payload: Bytes::from(payload),
                path: cur.path.clone(),
                offset: at,
            });
            if frame.batch_end() {
                cur.offset = reader.pos();
                let next = self.next;
                self.pending
                    .extend(self.batch.drain(..).filter(|r| r.lsn >= next));
                got = true;
                if bytes >= 4 << 20 {
                    return Ok(true);
                }
            }
        }
    }
}
