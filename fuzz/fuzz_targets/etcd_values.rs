//! Every value wal-etcd reads back from etcd: head values, record keys, pack
//! values, chunked-record descriptors and their chunks. Half the inputs get a
//! correct checksum appended, so the parsers behind it are reached.
#![no_main]

use arbitrary::Arbitrary;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use wal_core::Lsn;
use wal_etcd::fuzzing::{head, record_key, record_value, with_checksum};

#[derive(Arbitrary, Debug)]
struct Input {
    head: Vec<u8>,
    key: Vec<u8>,
    key_lsn: u64,
    value: Vec<u8>,
    fix_checksum: bool,
    chunks: Vec<Vec<u8>>,
}

fuzz_target!(|input: Input| {
    let _ = head(&input.head);
    let _ = record_key(&input.key);
    let value = if input.fix_checksum {
        with_checksum(&input.value)
    } else {
        Bytes::from(input.value)
    };
    let chunks = input.chunks.into_iter().map(Bytes::from).collect();
    if let Some(records) = record_value(Lsn(input.key_lsn), &value, chunks) {
        // Decoded records are in strictly increasing Lsn order and the
        // last one is the Lsn the key names.
        assert!(records.windows(2).all(|w| w[0].lsn < w[1].lsn));
        assert_eq!(records.last().map(|r| r.lsn), Some(Lsn(input.key_lsn)));
    }
});
