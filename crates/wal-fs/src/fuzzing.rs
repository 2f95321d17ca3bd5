//! Entry points for the fuzz targets in the repository's `fuzz/` directory
//! (feature `fuzzing`, not part of the API). They expose the segment format's
//! encoders, so a fuzzer can build files whose checksums hold and reach the
//! structural checks behind them, and its decoders, so it can feed them raw
//! bytes.

use wal_core::{Lsn, Record};

use crate::format::{
    encode_frame, FrameHeader, SegmentHeader, FRAME_HEADER_LEN, SEGMENT_HEADER_LEN,
};

/// One frame to encode: the record, its batch-end flag, its `synced_to`.
pub type FrameSpec = (Record, bool, u64);

/// A segment file's bytes: a valid header, then the frames, each with a
/// correct checksum.
pub fn segment_bytes(id: u64, first_lsn: Lsn, prev_last_lsn: Lsn, frames: &[FrameSpec]) -> Vec<u8> {
    let header = SegmentHeader {
        id,
        first_lsn,
        prev_last_lsn,
    };
    let mut out = header.encode().to_vec();
    for (record, batch_end, synced_to) in frames {
        encode_frame(&mut out, id, record, *batch_end, *synced_to);
    }
    out
}

/// The file name a segment starting at `first` has.
pub fn segment_file_name(first: Lsn) -> String {
    crate::segment::segment_file_name(first)
}

/// Decodes a segment header from the first bytes of `b` (if there are
/// enough), returning its first Lsn.
pub fn decode_segment_header(b: &[u8]) -> Option<Result<Lsn, String>> {
    let raw: &[u8; SEGMENT_HEADER_LEN as usize] =
        b.get(..SEGMENT_HEADER_LEN as usize)?.try_into().ok()?;
    Some(SegmentHeader::decode(raw).map(|h| h.first_lsn))
}

/// Decodes a frame header from the first bytes of `b`, returning its Lsn
/// and on-disk length.
pub fn decode_frame_header(b: &[u8]) -> Option<(Lsn, u64)> {
    let raw: &[u8; FRAME_HEADER_LEN] = b.get(..FRAME_HEADER_LEN)?.try_into().ok()?;
    FrameHeader::decode(raw).map(|h| (h.lsn, h.frame_len()))
}
