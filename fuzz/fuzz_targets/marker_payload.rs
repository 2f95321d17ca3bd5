//! Marker payloads (checkpoint begin/commit/abort, truncated): the Lsn they
//! name, decoded from arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wal_core::{Lsn, Record, RecordKind};

fuzz_target!(|data: &[u8]| {
    for kind in [
        RecordKind::CheckpointBegin,
        RecordKind::CheckpointCommit,
        RecordKind::CheckpointAbort,
        RecordKind::Truncated,
    ] {
        let r = Record::new(Lsn(1), kind, data.to_vec());
        if let Ok(target) = r.marker_target() {
            // What decodes re-encodes to the same bytes.
            assert_eq!(Record::marker(Lsn(1), kind, target).payload, data);
        }
    }
});
