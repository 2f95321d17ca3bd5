//! Golden bytes of the etcd values (FORMAT.md): a head, a pack and a
//! chunked record's descriptor and chunks, as literal bytes, decoded field by
//! field against literal values and re-encoded byte for byte. A change to
//! the format that touches the encoder and the decoder alike passes every
//! round-trip test; it fails here. Pure encode/decode: no etcd server.
//!
//! How the bytes were produced: written out by hand from FORMAT.md's
//! layout, field by field (see the comments), with each CRC-32 computed by
//! Python's `zlib.crc32`, independently of this crate; the crate's encoders
//! then produced the same bytes.
//!
//! NEVER change these bytes or the expected values to make a test pass: a
//! failure here means the code no longer reads or writes version 1 of the
//! values (pack 0x01, chunked 0x02, head 0x01), and every log in etcd is in
//! it. Only a new value version gets new golden bytes, beside these.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use wal_core::{Lsn, Record, RecordKind};

use crate::keys::{
    assemble_chunks, decode_head, decode_record_value, encode_head, Descriptor, KeyLayout,
    PackBuilder, RecordValue,
};

/// `B head` = Lsn 5.
#[rustfmt::skip]
const HEAD: [u8; 9] = [
    0x01,                                           // head v1
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x05, // u64 lsn 5
];

/// A pack of five records ending at Lsn 5 (so under `B r/00000000000000000005`):
/// two entries (one empty), and a checkpoint: begin, one entry, commit
/// naming the begin marker.
#[rustfmt::skip]
const PACK: [u8; 99] = [
    0x01,                                           // pack v1
    0, 0, 0, 0, 0, 0, 0, 1,   0x01,   0, 0, 0, 11,  // lsn 1, data, 11 bytes
    b'f', b'i', b'r', b's', b't', b' ', b'e', b'n', b't', b'r', b'y',
    0, 0, 0, 0, 0, 0, 0, 2,   0x01,   0, 0, 0, 0,   // lsn 2, data, 0 bytes
    0, 0, 0, 0, 0, 0, 0, 3,   0x03,   0, 0, 0, 0,   // lsn 3, checkpoint-begin, 0 bytes
    0, 0, 0, 0, 0, 0, 0, 4,   0x02,   0, 0, 0, 10,  // lsn 4, checkpoint, 10 bytes
    b's', b't', b'a', b't', b'e', b':', b' ', b'a', b'=', b'1',
    0, 0, 0, 0, 0, 0, 0, 5,   0x04,   0, 0, 0, 8,   // lsn 5, checkpoint-commit, 8 bytes
    0, 0, 0, 0, 0, 0, 0, 3,                         //   the begin marker's lsn (core's encoding)
    0xbf, 0xf6, 0x95, 0xcb,                         // crc32 of the 95 bytes before
];

/// The payload of the chunked record, Lsn 6, in two chunks of 5 bytes.
const CHUNKS: [&[u8]; 2] = [b"01234", b"56789"];

/// The descriptor of chunked record Lsn 6 (under `B r/00000000000000000006`).
#[rustfmt::skip]
const DESCRIPTOR: [u8; 30] = [
    0x02,                                           // chunked record v1
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x06, // u64 lsn 6
    0x01,                                           // kind: data
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0a, // u64 payload length 10
    0x00, 0x00, 0x00, 0x02,                         // u32 chunks: 2
    0xa6, 0x84, 0xc7, 0xc6,                         // crc32 of "0123456789"
    0xa4, 0x12, 0x88, 0xec,                         // crc32 of bytes 0..26
];

/// The records in [`PACK`], as literals.
fn pack_records() -> Vec<(u64, RecordKind, &'static [u8])> {
    vec![
        (1, RecordKind::Data, b"first entry"),
        (2, RecordKind::Data, b""),
        (3, RecordKind::CheckpointBegin, b""),
        (4, RecordKind::Checkpoint, b"state: a=1"),
        (5, RecordKind::CheckpointCommit, &[0, 0, 0, 0, 0, 0, 0, 3]),
    ]
}

#[test]
fn golden_keys() {
    let k = KeyLayout::new("/wal/", "orders").unwrap();
    assert_eq!(k.owner(), b"/wal/orders/owner");
    assert_eq!(k.head(), b"/wal/orders/head");
    assert_eq!(k.record(Lsn(5)), b"/wal/orders/r/00000000000000000005");
    assert_eq!(
        k.record(Lsn(u64::MAX)),
        b"/wal/orders/r/18446744073709551615"
    );
    assert_eq!(
        k.chunk(Lsn(6), 1),
        b"/wal/orders/c/00000000000000000006/0000000001"
    );
    assert_eq!(
        k.parse_record(b"/wal/orders/r/00000000000000000006")
            .unwrap(),
        Lsn(6)
    );
}

#[test]
fn golden_head() {
    assert_eq!(decode_head(b"head", &HEAD).unwrap(), Lsn(5));
    assert_eq!(encode_head(Lsn(5)), HEAD);
}

#[test]
fn golden_pack_decodes_field_by_field() {
    assert_eq!(crc32fast::hash(&PACK[..95]).to_be_bytes(), PACK[95..]);
    let value = Bytes::from_static(&PACK);
    let RecordValue::Pack(records) = decode_record_value(b"r/5", Lsn(5), &value).unwrap() else {
        panic!("the golden pack does not decode as a pack")
    };
    let got: Vec<_> = records
        .iter()
        .map(|r| (r.lsn.get(), r.kind, r.payload.to_vec()))
        .collect();
    let want: Vec<_> = pack_records()
        .into_iter()
        .map(|(l, k, p)| (l, k, p.to_vec()))
        .collect();
    assert_eq!(got, want);
    assert_eq!(records[4].marker_target().unwrap(), Lsn(3));
    // The key must name the pack's last Lsn.
    assert!(decode_record_value(b"r/4", Lsn(4), &value).is_err());
}

#[test]
fn golden_pack_re_encodes_byte_for_byte() {
    let mut pack = PackBuilder::new();
    for (lsn, kind, payload) in pack_records() {
        pack.push(&Record::new(Lsn(lsn), kind, payload));
    }
    let (last, value) = pack.finish().unwrap();
    assert_eq!(last, Lsn(5));
    assert_eq!(&value[..], &PACK[..]);
}

#[test]
fn golden_descriptor_and_chunks_decode_field_by_field() {
    assert_eq!(
        crc32fast::hash(&DESCRIPTOR[..26]).to_be_bytes(),
        DESCRIPTOR[26..]
    );
    let value = Bytes::from_static(&DESCRIPTOR);
    let RecordValue::Chunked(d) = decode_record_value(b"r/6", Lsn(6), &value).unwrap() else {
        panic!("the golden descriptor does not decode as a chunked record")
    };
    assert_eq!(
        (d.lsn, d.kind, d.total_len, d.chunks, d.payload_crc),
        (Lsn(6), RecordKind::Data, 10, 2, 0xa684_c7c6)
    );
    let chunks = CHUNKS.iter().map(|c| Bytes::from_static(c)).collect();
    let r = assemble_chunks(b"r/6", &d, chunks).unwrap();
    assert_eq!(
        (r.lsn, r.kind, &r.payload[..]),
        (Lsn(6), RecordKind::Data, &b"0123456789"[..])
    );
}

#[test]
fn golden_descriptor_re_encodes_byte_for_byte() {
    let payload: Vec<u8> = CHUNKS.concat();
    let d = Descriptor {
        lsn: Lsn(6),
        kind: RecordKind::Data,
        total_len: payload.len() as u64,
        chunks: CHUNKS.len() as u32,
        payload_crc: crc32fast::hash(&payload),
    };
    assert_eq!(d.encode(), DESCRIPTOR);
}
