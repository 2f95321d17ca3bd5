//! Entry points for the fuzz targets in the repository's `fuzz/` directory
//! (feature `fuzzing`, not part of the API): the decoders of every value the
//! store reads back from etcd.

use bytes::Bytes;
use wal_core::{Lsn, Record};

use crate::keys::{assemble_chunks, decode_head, decode_record_value, KeyLayout, RecordValue};

/// A record key's value with its checksum appended, so a fuzzer's bytes
/// reach the parser behind the checksum.
pub fn with_checksum(body: &[u8]) -> Bytes {
    let mut v = body.to_vec();
    v.extend_from_slice(&crc32fast::hash(body).to_be_bytes());
    Bytes::from(v)
}

/// Decodes a head value.
pub fn head(value: &[u8]) -> Option<Lsn> {
    decode_head(b"head", value).ok()
}

/// Parses a record key of the `/wal/` + `fuzz` layout.
pub fn record_key(key: &[u8]) -> Option<Lsn> {
    KeyLayout::new("/wal/", "fuzz").ok()?.parse_record(key).ok()
}

/// Decodes a record value named by `key_lsn`; for a chunked record's
/// descriptor, reassembles it from `chunks`. Returns the records.
pub fn record_value(key_lsn: Lsn, value: &Bytes, chunks: Vec<Bytes>) -> Option<Vec<Record>> {
    match decode_record_value(b"record", key_lsn, value).ok()? {
        RecordValue::Pack(records) => Some(records),
        RecordValue::Chunked(d) => assemble_chunks(b"record", &d, chunks).ok().map(|r| vec![r]),
    }
}
