//! The on-disk format: segment header and record frame, byte by byte. The
//! prose version is `FORMAT.md` (in the [crate docs](crate));
//! `golden_tests` pins the bytes.

use wal_core::{Lsn, Record, RecordKind};

/// First bytes of every segment file.
pub(crate) const MAGIC: [u8; 8] = *b"WALFSSEG";
/// Format version written by this code.
pub(crate) const VERSION: u32 = 1;
/// Size of the segment header, in bytes.
pub(crate) const SEGMENT_HEADER_LEN: u64 = 48;
/// Size of a record frame's header, in bytes.
pub(crate) const FRAME_HEADER_LEN: usize = 32;
/// Frames start at multiples of this, so the damage scan can look for
/// surviving frames at aligned offsets only.
pub(crate) const ALIGN: u64 = 8;
/// Frame flag: the last record of one `append` call.
pub(crate) const FLAG_BATCH_END: u8 = 1;

/// A parsed segment header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    /// Random per-segment id that seeds every frame checksum.
    pub id: u64,
    /// Lsn of the segment's first record (also its file name).
    pub first_lsn: Lsn,
    /// Last Lsn of the preceding segment when this one was created (0: none).
    /// Open checks it, so a missing middle segment is detected.
    pub prev_last_lsn: Lsn,
}

impl SegmentHeader {
    /// The header bytes.
    pub(crate) fn encode(&self) -> [u8; SEGMENT_HEADER_LEN as usize] {
        let mut b = [0u8; SEGMENT_HEADER_LEN as usize];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&VERSION.to_le_bytes());
        b[16..24].copy_from_slice(&self.id.to_le_bytes());
        b[24..32].copy_from_slice(&self.first_lsn.get().to_le_bytes());
        b[32..40].copy_from_slice(&self.prev_last_lsn.get().to_le_bytes());
        let crc = crc32fast::hash(&b[0..44]);
        b[44..48].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Parses header bytes; `Err` says what is wrong.
    pub(crate) fn decode(b: &[u8; SEGMENT_HEADER_LEN as usize]) -> Result<SegmentHeader, String> {
        if b[0..8] != MAGIC {
            return Err(format!(
                "not a wal-fs segment: bad magic {:02x?} (expected {:02x?})",
                &b[0..8],
                MAGIC
            ));
        }
        let version = u32_at(b, 8);
        if version != VERSION {
            return Err(format!(
                "unsupported segment format version {version} (this build reads {VERSION})"
            ));
        }
        let crc = u32_at(b, 44);
        if crc != crc32fast::hash(&b[0..44]) {
            return Err("segment header checksum mismatch".into());
        }
        if u32_at(b, 12) != 0 || u32_at(b, 40) != 0 {
            return Err("segment header reserved bytes are not zero".into());
        }
        Ok(SegmentHeader {
            id: u64_at(b, 16),
            first_lsn: Lsn(u64_at(b, 24)),
            prev_last_lsn: Lsn(u64_at(b, 32)),
        })
    }
}

/// A parsed frame header (not yet checked against its payload).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FrameHeader {
    pub crc: u32,
    pub len: u32,
    pub kind: RecordKind,
    pub flags: u8,
    pub lsn: Lsn,
    /// Bytes of the segment known durable when this frame was written.
    pub synced_to: u64,
}

impl FrameHeader {
    /// Parses and structurally checks a frame header; `None` if it cannot be
    /// one (unknown kind or flags, non-zero reserved bytes, Lsn 0).
    pub(crate) fn decode(b: &[u8; FRAME_HEADER_LEN]) -> Option<FrameHeader> {
        let kind = RecordKind::from_u8(b[8])?;
        let flags = b[9];
        if flags & !FLAG_BATCH_END != 0 || b[10..16].iter().any(|&x| x != 0) {
            return None;
        }
        let lsn = Lsn(u64_at(b, 16));
        if lsn == Lsn::ZERO {
            return None;
        }
        Some(FrameHeader {
            crc: u32_at(b, 0),
            len: u32_at(b, 4),
            kind,
            flags,
            lsn,
            synced_to: u64_at(b, 24),
        })
    }

    /// True if this is the last record of its `append` call.
    pub(crate) fn batch_end(&self) -> bool {
        self.flags & FLAG_BATCH_END != 0
    }

    /// Total bytes of this frame on disk, padding included.
    pub(crate) fn frame_len(&self) -> u64 {
        frame_len(self.len as usize)
    }
}

/// Bytes a frame with a payload of `payload_len` takes on disk.
pub(crate) fn frame_len(payload_len: usize) -> u64 {
    align_up(FRAME_HEADER_LEN as u64 + payload_len as u64)
}

/// Rounds up to [`ALIGN`].
pub(crate) fn align_up(v: u64) -> u64 {
    v.div_ceil(ALIGN) * ALIGN
}

/// A running frame checksum: CRC-32 over the segment id, frame bytes 4..32
/// and the payload.
pub(crate) struct FrameCrc(crc32fast::Hasher);

impl FrameCrc {
    pub(crate) fn new(segment_id: u64, header: &[u8; FRAME_HEADER_LEN]) -> FrameCrc {
        let mut h = crc32fast::Hasher::new();
        h.update(&segment_id.to_le_bytes());
        h.update(&header[4..]);
        FrameCrc(h)
    }
    pub(crate) fn update(&mut self, payload: &[u8]) {
        self.0.update(payload);
    }
    pub(crate) fn finish(self) -> u32 {
        self.0.finalize()
    }
}

/// Appends one record's frame (header, payload, zero padding) to `out`.
pub(crate) fn encode_frame(
    out: &mut Vec<u8>,
    segment_id: u64,
    record: &Record,
    batch_end: bool,
    synced_to: u64,
) {
    let mut h = [0u8; FRAME_HEADER_LEN];
    // The caller checked the payload against max_entry_bytes (<= u32::MAX).
    let len = u32::try_from(record.payload.len()).unwrap_or(u32::MAX);
    h[4..8].copy_from_slice(&len.to_le_bytes());
    h[8] = record.kind.as_u8();
    h[9] = if batch_end { FLAG_BATCH_END } else { 0 };
    h[16..24].copy_from_slice(&record.lsn.get().to_le_bytes());
    h[24..32].copy_from_slice(&synced_to.to_le_bytes());
    let mut crc = FrameCrc::new(segment_id, &h);
    crc.update(&record.payload);
    h[0..4].copy_from_slice(&crc.finish().to_le_bytes());
    let start = out.len();
    out.extend_from_slice(&h);
    out.extend_from_slice(&record.payload);
    let end = start as u64 + frame_len(record.payload.len());
    out.resize(end as usize, 0);
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_damage() {
        let h = SegmentHeader {
            id: 0x1234_5678_9abc_def0,
            first_lsn: Lsn(42),
            prev_last_lsn: Lsn(41),
        };
        let b = h.encode();
        assert_eq!(SegmentHeader::decode(&b), Ok(h));
        for i in 0..b.len() {
            let mut d = b;
            d[i] ^= 0x10;
            assert!(SegmentHeader::decode(&d).is_err(), "flip at {i} undetected");
        }
    }

    #[test]
    fn frame_round_trip_and_seeded_checksum() {
        let rec = Record::new(Lsn(7), RecordKind::Checkpoint, &b"hello"[..]);
        let mut out = Vec::new();
        encode_frame(&mut out, 99, &rec, true, 48);
        assert_eq!(out.len() as u64, frame_len(5));
        assert_eq!(out.len() % ALIGN as usize, 0);
        let mut hb = [0u8; FRAME_HEADER_LEN];
        hb.copy_from_slice(&out[..FRAME_HEADER_LEN]);
        let h = FrameHeader::decode(&hb).unwrap();
        assert_eq!(
            (h.len, h.kind, h.lsn, h.synced_to),
            (5, rec.kind, Lsn(7), 48)
        );
        assert!(h.batch_end());
        let mut crc = FrameCrc::new(99, &hb);
        crc.update(&out[FRAME_HEADER_LEN..FRAME_HEADER_LEN + 5]);
        assert_eq!(crc.finish(), h.crc);
        // The same bytes under another segment id do not check out.
        let mut crc = FrameCrc::new(100, &hb);
        crc.update(&out[FRAME_HEADER_LEN..FRAME_HEADER_LEN + 5]);
        assert_ne!(crc.finish(), h.crc);
        // All zeros is never a frame.
        assert!(FrameHeader::decode(&[0u8; FRAME_HEADER_LEN]).is_none());
    }
}
