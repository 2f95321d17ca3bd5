//! One segment file: its name, its in-memory summary (with the sparse
//! index), a streaming frame reader, and the scan that validates a segment
//! on open and tells a torn tail from corruption.

use std::{
    fs::File,
    io::{self, BufReader, Read, Seek, SeekFrom},
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    sync::Arc,
};

use wal_core::{Error, Location, Lsn};

use crate::format::{
    FrameCrc, FrameHeader, SegmentHeader, ALIGN, FRAME_HEADER_LEN, SEGMENT_HEADER_LEN,
};

/// Suffix of segment files.
pub(crate) const SEGMENT_SUFFIX: &str = ".wal";
/// Suffix of a segment being created (renamed into place when complete).
pub(crate) const TMP_SUFFIX: &str = ".wal.tmp";

/// The file name of the segment whose first record is `first`: the Lsn in
/// 20 decimal digits, so name order is Lsn order.
pub(crate) fn segment_file_name(first: Lsn) -> String {
    format!("{:020}{SEGMENT_SUFFIX}", first.get())
}

/// The first Lsn a segment file name stands for, if it is one.
pub(crate) fn parse_segment_name(name: &str) -> Option<Lsn> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().map(Lsn)
}

/// What the store remembers about one segment: enough to find any record
/// without scanning from the start, and nothing proportional to its records.
#[derive(Clone, Debug)]
pub(crate) struct Segment {
    pub path: PathBuf,
    pub header: SegmentHeader,
    /// Last record of the last complete batch; `None` if the segment is empty.
    pub last_lsn: Option<Lsn>,
    /// End of the last complete batch: where the next append goes.
    pub data_end: u64,
    /// Sparse (lsn, frame offset) pairs in Lsn order, one about every
    /// `index_interval_bytes`, always including the first record. Shared
    /// with the readers' view of the log (see `reader`), so publishing a
    /// segment to them copies no index.
    pub index: Arc<Vec<(Lsn, u64)>>,
}

impl Segment {
    /// The first Lsn this segment holds (its name).
    pub(crate) fn first_lsn(&self) -> Lsn {
        self.header.first_lsn
    }

    /// The offset of a frame at or before the first record >= `from`.
    pub(crate) fn seek_offset(&self, from: Lsn) -> u64 {
        let i = self.index.partition_point(|(l, _)| *l <= from);
        match i {
            0 => SEGMENT_HEADER_LEN,
            i => self.index[i - 1].1,
        }
    }

    /// Forgets index entries above `lsn` (after a truncation).
    pub(crate) fn truncate_index(&mut self, lsn: Lsn) {
        let keep = self.index.partition_point(|(l, _)| *l <= lsn);
        if keep < self.index.len() {
            Arc::make_mut(&mut self.index).truncate(keep);
        }
    }
}

/// Builds a segment's sparse index as frames go by; entries become
/// permanent only when their batch completes.
pub(crate) struct IndexBuilder {
    interval: u64,
    since: u64,
    pending: Vec<(Lsn, u64)>,
}

impl IndexBuilder {
    pub(crate) fn new(interval: u64, existing: &[(Lsn, u64)], data_end: u64) -> IndexBuilder {
        let since = match existing.last() {
            Some((_, off)) => data_end.saturating_sub(*off),
            None => u64::MAX,
        };
        IndexBuilder {
            interval,
            since,
            pending: Vec::new(),
        }
    }

    /// Notes a frame of `len` bytes at `offset`.
    pub(crate) fn frame(&mut self, lsn: Lsn, offset: u64, len: u64) {
        if self.since >= self.interval {
            self.pending.push((lsn, offset));
            self.since = 0;
        }
        self.since = self.since.saturating_add(len);
    }

    /// The batch so far completed: its entries join `index`.
    pub(crate) fn commit(&mut self, index: &mut Arc<Vec<(Lsn, u64)>>) {
        if !self.pending.is_empty() {
            // Copies the index only if a reader's view still holds it.
            Arc::make_mut(index).append(&mut self.pending);
        }
    }
}

/// The outcome of reading one frame.
pub(crate) enum FrameRead {
    /// A valid frame; the payload is in the caller's buffer.
    Frame(FrameHeader),
    /// The reader reached its limit exactly at a frame boundary.
    End,
    /// The bytes at [`FrameReader::pos`] are not a valid frame: why.
    Invalid(String),
}

/// Reads frames sequentially from one segment through a buffer. Memory is
/// the buffer plus one payload.
pub(crate) struct FrameReader {
    reader: BufReader<File>,
    pos: u64,
    limit: u64,
    segment_id: u64,
}

impl FrameReader {
    /// A reader of the frames in `[from, limit)` of `file`.
    pub(crate) fn new(
        mut file: File,
        segment_id: u64,
        from: u64,
        limit: u64,
    ) -> io::Result<FrameReader> {
        file.seek(SeekFrom::Start(from))?;
        // A buffer no bigger than the range: a point read or a short tail
        // does not allocate (and fault in) 256 KiB.
        let range = usize::try_from(limit.saturating_sub(from)).unwrap_or(usize::MAX);
        Ok(FrameReader {
            reader: BufReader::with_capacity(range.clamp(4 << 10, 256 << 10), file),
            pos: from,
            limit,
            segment_id,
        })
    }

    /// Offset of the next frame (or of the invalid bytes just reported).
    pub(crate) fn pos(&self) -> u64 {
        self.pos
    }

    /// Reads the next frame's payload into `payload` and returns its header.
    /// After [`FrameRead::Invalid`] the reader must not be used again.
    pub(crate) fn next_frame(&mut self, payload: &mut Vec<u8>) -> io::Result<FrameRead> {
        self.next_frame_if(payload, |_| true)
    }

    /// Like [`next_frame`](Self::next_frame), but reads and checks the
    /// payload only if `want` accepts the header. Otherwise the payload is
    /// stepped over unread (a move within the buffer, or a seek) and
    /// unchecked, and `payload` is left empty: only the header's structure
    /// and the frame's bounds are checked.
    pub(crate) fn next_frame_if(
        &mut self,
        payload: &mut Vec<u8>,
        want: impl FnOnce(&FrameHeader) -> bool,
    ) -> io::Result<FrameRead> {
        if self.pos >= self.limit {
            return Ok(FrameRead::End);
        }
        if self.limit - self.pos < FRAME_HEADER_LEN as u64 {
            return Ok(FrameRead::Invalid("truncated frame header".into()));
        }
        let mut hb = [0u8; FRAME_HEADER_LEN];
        self.reader.read_exact(&mut hb)?;
        let Some(h) = FrameHeader::decode(&hb) else {
            let why = if hb.iter().all(|&b| b == 0) {
                "zeroed frame header"
            } else {
                "malformed frame header"
            };
            return Ok(FrameRead::Invalid(why.into()));
        };
        let flen = h.frame_len();
        if flen > self.limit - self.pos {
            return Ok(FrameRead::Invalid(format!(
                "frame of {} payload bytes runs past the end of the segment",
                h.len
            )));
        }
        payload.clear();
        if !want(&h) {
            let rest = flen - FRAME_HEADER_LEN as u64;
            let rest = i64::try_from(rest).map_err(io::Error::other)?;
            self.reader.seek_relative(rest)?;
            self.pos += flen;
            return Ok(FrameRead::Frame(h));
        }
        payload.resize(h.len as usize, 0);
        self.reader.read_exact(payload)?;
        let pad = flen - FRAME_HEADER_LEN as u64 - u64::from(h.len);
        let mut padding = [0u8; ALIGN as usize];
        self.reader.read_exact(&mut padding[..pad as usize])?;
        let mut crc = FrameCrc::new(self.segment_id, &hb);
        crc.update(payload);
        if crc.finish() != h.crc {
            return Ok(FrameRead::Invalid(format!(
                "checksum mismatch in the frame of lsn {}",
                h.lsn
            )));
        }
        self.pos += flen;
        Ok(FrameRead::Frame(h))
    }
}

/// A Corrupt error at a byte of a file.
pub(crate) fn corrupt(path: &Path, offset: u64, why: impl Into<String>) -> Error {
    Error::Corrupt {
        location: Location::File {
            path: path.to_path_buf(),
            offset,
        },
        why: why.into(),
    }
}

/// Reads and checks a segment's header, and that it matches the file name.
pub(crate) fn read_header(path: &Path, file: &File, name_lsn: Lsn) -> Result<SegmentHeader, Error> {
    let len = file.metadata()?.len();
    if len < SEGMENT_HEADER_LEN {
        return Err(corrupt(
            path,
            0,
            format!(
                "{len}-byte file is too short for a segment header ({SEGMENT_HEADER_LEN} bytes)"
            ),
        ));
    }
    let mut b = [0u8; SEGMENT_HEADER_LEN as usize];
    file.read_exact_at(&mut b, 0)?;
    let header = SegmentHeader::decode(&b).map_err(|why| corrupt(path, 0, why))?;
    if header.first_lsn != name_lsn {
        return Err(corrupt(
            path,
            24,
            format!(
                "header says the first lsn is {}, the file name says {name_lsn}",
                header.first_lsn
            ),
        ));
    }
    Ok(header)
}

/// How a scanned segment ends.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Tail {
    /// Complete batches, then the end of the file or zeros only.
    Clean,
    /// Bytes after the last complete batch that must be cut off: a write
    /// torn by a crash. `why` describes the first bad frame.
    Torn { at: u64, why: String },
}

/// Scans a whole segment, checking every frame. A segment that is not the
/// last must end exactly after a complete batch; the last one may end in a
/// torn write, which [`Tail::Torn`] reports (the caller cuts it). Anything
/// invalid that is followed by data written after it was durable is
/// [`Error::Corrupt`].
pub(crate) fn scan(
    path: &Path,
    file: &File,
    header: SegmentHeader,
    is_last: bool,
    index_interval: u64,
) -> Result<(Segment, Tail), Error> {
    let file_len = file.metadata()?.len();
    let mut reader = FrameReader::new(file.try_clone()?, header.id, SEGMENT_HEADER_LEN, file_len)?;
    let mut payload = Vec::new();
    let mut segment = Segment {
        path: path.to_path_buf(),
        header,
        last_lsn: None,
        data_end: SEGMENT_HEADER_LEN,
        index: Arc::default(),
    };
    let mut builder = IndexBuilder::new(index_interval, &[], SEGMENT_HEADER_LEN);
    let mut prev: Option<Lsn> = None;
    let invalid = loop {
        let at = reader.pos();
        match reader.next_frame(&mut payload)? {
            FrameRead::End => break None,
            FrameRead::Invalid(why) => break Some((at, why)),
            FrameRead::Frame(h) => {
                let in_order = match prev {
                    None => h.lsn == header.first_lsn,
                    Some(p) => h.lsn > p,
                };
                if !in_order {
                    return Err(corrupt(
                        path,
                        at,
                        format!(
                            "lsn {} out of order (after {})",
                            h.lsn,
                            prev.map_or_else(|| "the segment start".to_string(), |p| p.to_string())
                        ),
                    ));
                }
                prev = Some(h.lsn);
                builder.frame(h.lsn, at, h.frame_len());
                if h.batch_end() {
                    builder.commit(&mut segment.index);
                    segment.last_lsn = Some(h.lsn);
                    segment.data_end = reader.pos();
                }
            }
        }
    };
    let good_end = segment.data_end;
    let end = reader.pos();
    if !is_last {
        return match invalid {
            Some((at, why)) => Err(corrupt(path, at, why)),
            None if end != good_end => Err(corrupt(
                path,
                good_end,
                "segment ends inside an append batch",
            )),
            None => Ok((segment, Tail::Clean)),
        };
    }
    let tail = match invalid {
        None if end == good_end => Tail::Clean,
        None => Tail::Torn {
            at: good_end,
            why: "the last append batch is incomplete".into(),
        },
        Some((at, why)) => {
            let (later, all_zero) = damage_scan(file, header.id, at, file_len, good_end)?;
            if let Some(later) = later {
                return Err(corrupt(
                    path,
                    at,
                    format!("{why}, followed by a valid record at offset {later}"),
                ));
            }
            if all_zero && at == good_end {
                Tail::Clean
            } else {
                Tail::Torn { at, why }
            }
        }
    };
    Ok((segment, tail))
}

/// Looks past invalid bytes at `start` for a frame of this segment that was
/// written after `good_end` had been made durable (its `synced_to` says
/// so): if one exists, the bytes at `start` were durable once and are now
/// damaged, which is corruption, not a torn write. Also reports whether
/// every byte from `start` on is zero. Reads in fixed-size chunks.
pub(crate) fn damage_scan(
    file: &File,
    segment_id: u64,
    start: u64,
    file_len: u64,
    good_end: u64,
) -> io::Result<(Option<u64>, bool)> {
    const CHUNK: u64 = 1 << 20;
    let header_len = FRAME_HEADER_LEN as u64;
    let mut buf = vec![0u8; (CHUNK + header_len) as usize];
    let mut all_zero = true;
    let mut chunk_start = start;
    while chunk_start < file_len {
        let want = (CHUNK + header_len).min(file_len - chunk_start) as usize;
        file.read_exact_at(&mut buf[..want], chunk_start)?;
        if is_zero(&buf[..want]) {
            // The unused, preallocated end of a segment: no frame starts here.
            chunk_start += CHUNK;
            continue;
        }
        let own = (CHUNK as usize).min(want);
        if all_zero && !is_zero(&buf[..own]) {
            all_zero = false;
        }
        let mut off = 0usize;
        while off < own && off + FRAME_HEADER_LEN <= want {
            let p = chunk_start + off as u64;
            let mut hb = [0u8; FRAME_HEADER_LEN];
            hb.copy_from_slice(&buf[off..off + FRAME_HEADER_LEN]);
            if p != start {
                if let Some(h) = FrameHeader::decode(&hb) {
                    if h.synced_to > good_end
                        && h.synced_to <= p
                        && h.frame_len() <= file_len - p
                        && frame_checks_out(file, segment_id, p, &hb, &h)?
                    {
                        return Ok((Some(p), false));
                    }
                }
            }
            off += ALIGN as usize;
        }
        chunk_start += CHUNK;
    }
    Ok((None, all_zero))
}

/// True if every byte is zero (written to let the compiler vectorize it).
fn is_zero(b: &[u8]) -> bool {
    b.chunks(4096)
        .all(|c| c.iter().fold(0u8, |acc, &x| acc | x) == 0)
}

fn frame_checks_out(
    file: &File,
    segment_id: u64,
    at: u64,
    hb: &[u8; FRAME_HEADER_LEN],
    h: &FrameHeader,
) -> io::Result<bool> {
    let mut crc = FrameCrc::new(segment_id, hb);
    let mut buf = vec![0u8; 64 << 10];
    let mut done = 0u64;
    let len = u64::from(h.len);
    while done < len {
        let n = (len - done).min(buf.len() as u64) as usize;
        file.read_exact_at(&mut buf[..n], at + FRAME_HEADER_LEN as u64 + done)?;
        crc.update(&buf[..n]);
        done += n as u64;
    }
    Ok(crc.finish() == h.crc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(segment_file_name(Lsn(1)), "00000000000000000001.wal");
        assert_eq!(parse_segment_name("00000000000000000001.wal"), Some(Lsn(1)));
        assert_eq!(
            parse_segment_name(&segment_file_name(Lsn(u64::MAX))),
            Some(Lsn(u64::MAX))
        );
        assert_eq!(parse_segment_name("1.wal"), None);
        assert_eq!(parse_segment_name("0000000000000000000a.wal"), None);
        assert_eq!(parse_segment_name("00000000000000000001.wal.tmp"), None);
        assert_eq!(parse_segment_name("99999999999999999999.wal"), None);
    }
}
