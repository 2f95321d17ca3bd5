//! Segment header and frame header decoding on raw bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wal_fs::fuzzing::{decode_frame_header, decode_segment_header};

fuzz_target!(|data: &[u8]| {
    let _ = decode_segment_header(data);
    if let Some((lsn, len)) = decode_frame_header(data) {
        // A decoded header names a real Lsn and a length that covers itself.
        assert!(lsn.get() > 0);
        assert!(len >= 32 && len % 8 == 0);
    }
});
