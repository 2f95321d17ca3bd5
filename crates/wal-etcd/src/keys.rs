//! The key layout and the value encodings, byte by byte. The prose version
//! is `FORMAT.md` (in the crate docs); `golden_tests` pins the bytes.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use wal_core::{Error, Location, Lsn, Record, RecordKind};

/// Digits of an Lsn in a key: `u64::MAX` has 20 decimal digits.
const LSN_DIGITS: usize = 20;
/// Digits of a chunk index in a key.
const CHUNK_DIGITS: usize = 10;

/// First byte of a record-key value holding packed records.
pub(crate) const PACK_V1: u8 = 0x01;
/// First byte of a record-key value describing one chunked record.
pub(crate) const CHUNKED_V1: u8 = 0x02;
/// First byte of the head value.
pub(crate) const HEAD_V1: u8 = 0x01;

/// Bytes a packed record adds besides its payload: lsn (8), kind (1), len (4).
pub(crate) const PACK_ENTRY_HEADER: usize = 13;
/// Bytes a pack adds besides its records: version (1) and crc32 (4).
pub(crate) const PACK_FRAME: usize = 5;
/// Size of a chunked-record descriptor value.
pub(crate) const DESCRIPTOR_LEN: usize = 30;
/// Size of the head value.
pub(crate) const HEAD_LEN: usize = 9;

/// The keys of one log, all under `{prefix}{name}/`.
#[derive(Clone, Debug)]
pub(crate) struct KeyLayout {
    base: String,
}

impl KeyLayout {
    /// Validates the name and builds the layout.
    pub(crate) fn new(prefix: &str, name: &str) -> Result<KeyLayout, Error> {
        if name.is_empty() || name.contains('/') {
            return Err(Error::InvalidArgument(format!(
                "wal name {name:?} must be non-empty and contain no '/'"
            )));
        }
        let base = format!("{prefix}{name}/");
        // Another log's record and chunk ranges are `{its base}r/...` and
        // `{its base}c/...`: a base with `.../x/r/` or `.../x/c/` in it
        // lies inside the ranges of the log whose base is `.../x/`, whose
        // trims and truncates would delete this log's keys.
        let b = base.as_bytes();
        for i in 1..b.len().saturating_sub(2) {
            if b[i] == b'/'
                && b[i - 1] != b'/'
                && matches!(b[i + 1], b'r' | b'c')
                && b[i + 2] == b'/'
            {
                return Err(Error::InvalidArgument(format!(
                    "wal keys {base:?} lie inside the {} range of the log whose keys start with {:?} \
                     (prefix and name of that log would delete them); choose a prefix without a \
                     path segment \"r\" or \"c\"",
                    if b[i + 1] == b'r' { "record" } else { "chunk" },
                    &base[..=i]
                )));
            }
        }
        Ok(KeyLayout { base })
    }

    /// `{base}`: every key of the log starts with it.
    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    /// The ownership key.
    pub(crate) fn owner(&self) -> Vec<u8> {
        format!("{}owner", self.base).into_bytes()
    }

    /// The commit-point key.
    pub(crate) fn head(&self) -> Vec<u8> {
        format!("{}head", self.base).into_bytes()
    }

    /// The record key named by `lsn` (the last Lsn of a pack, or the Lsn of a
    /// chunked record).
    pub(crate) fn record(&self, lsn: Lsn) -> Vec<u8> {
        format!("{}r/{:0w$}", self.base, lsn.get(), w = LSN_DIGITS).into_bytes()
    }

    /// The first key after every record key.
    pub(crate) fn records_end(&self) -> Vec<u8> {
        format!("{}r0", self.base).into_bytes()
    }

    /// The first record key.
    pub(crate) fn records_start(&self) -> Vec<u8> {
        format!("{}r/", self.base).into_bytes()
    }

    /// Chunk `index` of the chunked record `lsn`.
    pub(crate) fn chunk(&self, lsn: Lsn, index: u32) -> Vec<u8> {
        format!(
            "{}c/{:0w$}/{:0c$}",
            self.base,
            lsn.get(),
            index,
            w = LSN_DIGITS,
            c = CHUNK_DIGITS
        )
        .into_bytes()
    }

    /// The range `[start, end)` holding every chunk of record `lsn`.
    pub(crate) fn chunks_of(&self, lsn: Lsn) -> (Vec<u8>, Vec<u8>) {
        let start = format!("{}c/{:0w$}/", self.base, lsn.get(), w = LSN_DIGITS);
        let end = format!("{}c/{:0w$}0", self.base, lsn.get(), w = LSN_DIGITS);
        (start.into_bytes(), end.into_bytes())
    }

    /// Chunk keys of records with Lsn >= `lsn`, as a range start.
    pub(crate) fn chunk_from(&self, lsn: Lsn) -> Vec<u8> {
        format!("{}c/{:0w$}", self.base, lsn.get(), w = LSN_DIGITS).into_bytes()
    }

    /// The first chunk key.
    pub(crate) fn chunks_start(&self) -> Vec<u8> {
        format!("{}c/", self.base).into_bytes()
    }

    /// The first key after every chunk key.
    pub(crate) fn chunks_end(&self) -> Vec<u8> {
        format!("{}c0", self.base).into_bytes()
    }

    /// The Lsn a record key is named by. Chunk keys are not record keys.
    pub(crate) fn parse_record(&self, key: &[u8]) -> Result<Lsn, Error> {
        let corrupt = |why: &str| Error::Corrupt {
            location: Location::Key(String::from_utf8_lossy(key).into_owned()),
            why: why.to_string(),
        };
        let rest = key
            .strip_prefix(self.base.as_bytes())
            .and_then(|k| k.strip_prefix(b"r/"))
            .ok_or_else(|| corrupt("not a record key of this log"))?;
        if rest.len() != LSN_DIGITS || !rest.iter().all(u8::is_ascii_digit) {
            return Err(corrupt("record key does not end in a 20-digit lsn"));
        }
        let s = std::str::from_utf8(rest).map_err(|_| corrupt("record key is not ascii"))?;
        s.parse::<u64>()
            .map(Lsn)
            .map_err(|_| corrupt("record key lsn out of range"))
    }
}

/// The head value: version byte, then the last committed Lsn (big-endian).
pub(crate) fn encode_head(lsn: Lsn) -> Vec<u8> {
    let mut v = Vec::with_capacity(HEAD_LEN);
    v.push(HEAD_V1);
    v.extend_from_slice(&lsn.get().to_be_bytes());
    v
}

/// Parses a head value.
pub(crate) fn decode_head(key: &[u8], value: &[u8]) -> Result<Lsn, Error> {
    match value {
        [HEAD_V1, rest @ ..] if rest.len() == 8 => {
            let mut raw = [0u8; 8];
            raw.copy_from_slice(rest);
            Ok(Lsn(u64::from_be_bytes(raw)))
        }
        _ => Err(corrupt_key(
            key,
            format!(
                "head value is {} bytes / version {:?}, expected 9 bytes / version 1",
                value.len(),
                value.first()
            ),
        )),
    }
}

/// Builds pack values: records appended in Lsn order, finished with a crc.
pub(crate) struct PackBuilder {
    buf: BytesMut,
    last: Option<Lsn>,
    count: usize,
}

impl PackBuilder {
    pub(crate) fn new() -> PackBuilder {
        let mut buf = BytesMut::new();
        buf.put_u8(PACK_V1);
        PackBuilder {
            buf,
            last: None,
            count: 0,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The size the pack would have, crc included, with `payload_len` more.
    pub(crate) fn size_with(&self, payload_len: usize) -> usize {
        self.buf.len() + PACK_ENTRY_HEADER + payload_len + 4
    }

    pub(crate) fn push(&mut self, r: &Record) {
        self.buf.put_u64(r.lsn.get());
        self.buf.put_u8(r.kind.as_u8());
        // Callers keep payloads far below 4 GiB (max_payload_bytes is a u32).
        self.buf.put_u32(r.payload.len() as u32);
        self.buf.put_slice(&r.payload);
        self.last = Some(r.lsn);
        self.count += 1;
    }

    /// Finishes the pack: its key's Lsn and its value. `None` if empty.
    pub(crate) fn finish(mut self) -> Option<(Lsn, Bytes)> {
        let last = self.last?;
        let crc = crc32fast::hash(&self.buf);
        self.buf.put_u32(crc);
        Some((last, self.buf.freeze()))
    }
}

/// What a record key's value holds.
pub(crate) enum RecordValue {
    /// Whole records, in Lsn order.
    Pack(Vec<Record>),
    /// One record whose payload is in chunk keys.
    Chunked(Descriptor),
}

/// The descriptor of a chunked record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Descriptor {
    pub lsn: Lsn,
    pub kind: RecordKind,
    pub total_len: u64,
    pub chunks: u32,
    pub payload_crc: u32,
}

impl Descriptor {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(DESCRIPTOR_LEN);
        v.push(CHUNKED_V1);
        v.extend_from_slice(&self.lsn.get().to_be_bytes());
        v.push(self.kind.as_u8());
        v.extend_from_slice(&self.total_len.to_be_bytes());
        v.extend_from_slice(&self.chunks.to_be_bytes());
        v.extend_from_slice(&self.payload_crc.to_be_bytes());
        let crc = crc32fast::hash(&v);
        v.extend_from_slice(&crc.to_be_bytes());
        v
    }
}

fn corrupt_key(key: &[u8], why: String) -> Error {
    Error::Corrupt {
        location: Location::Key(String::from_utf8_lossy(key).into_owned()),
        why,
    }
}

/// Decodes a record key's value. `key_lsn` is the Lsn the key is named by:
/// the last record of a pack, or the chunked record's Lsn.
pub(crate) fn decode_record_value(
    key: &[u8],
    key_lsn: Lsn,
    value: &Bytes,
) -> Result<RecordValue, Error> {
    let corrupt = |why: String| corrupt_key(key, why);
    if value.len() < PACK_FRAME {
        return Err(corrupt(format!(
            "value of {} bytes is too short",
            value.len()
        )));
    }
    let (body, crc_bytes) = value.split_at(value.len() - 4);
    let mut crc_raw = [0u8; 4];
    crc_raw.copy_from_slice(crc_bytes);
    let stored = u32::from_be_bytes(crc_raw);
    if crc32fast::hash(body) != stored {
        return Err(corrupt("value checksum mismatch".into()));
    }
    match body[0] {
        PACK_V1 => {
            let mut records = Vec::new();
            let mut at = 1usize;
            let mut prev = Lsn::ZERO;
            while at < body.len() {
                if body.len() - at < PACK_ENTRY_HEADER {
                    return Err(corrupt(format!("truncated record header at byte {at}")));
                }
                let mut h = &body[at..at + PACK_ENTRY_HEADER];
                let lsn = Lsn(h.get_u64());
                let kind_byte = h.get_u8();
                let len = h.get_u32() as usize;
                let start = at + PACK_ENTRY_HEADER;
                let end = start
                    .checked_add(len)
                    .filter(|e| *e <= body.len())
                    .ok_or_else(|| corrupt(format!("record at byte {at} overruns the value")))?;
                let kind = RecordKind::from_u8(kind_byte).ok_or_else(|| {
                    corrupt(format!("unknown record kind {kind_byte} at byte {at}"))
                })?;
                if lsn <= prev {
                    return Err(corrupt(format!("lsn {lsn} follows {prev} in a pack")));
                }
                prev = lsn;
                records.push(Record {
                    lsn,
                    kind,
                    payload: value.slice(start..end),
                });
                at = end;
            }
            match records.last() {
                Some(r) if r.lsn == key_lsn => Ok(RecordValue::Pack(records)),
                Some(r) => Err(corrupt(format!(
                    "pack ends at lsn {} but its key names {key_lsn}",
                    r.lsn
                ))),
                None => Err(corrupt("empty pack".into())),
            }
        }
        CHUNKED_V1 => {
            if value.len() != DESCRIPTOR_LEN {
                return Err(corrupt(format!(
                    "chunked-record descriptor of {} bytes, expected {DESCRIPTOR_LEN}",
                    value.len()
                )));
            }
            let mut b = &body[1..];
            let lsn = Lsn(b.get_u64());
            let kind_byte = b.get_u8();
            let total_len = b.get_u64();
            let chunks = b.get_u32();
            let payload_crc = b.get_u32();
            let kind = RecordKind::from_u8(kind_byte)
                .ok_or_else(|| corrupt(format!("unknown record kind {kind_byte}")))?;
            if lsn != key_lsn {
                return Err(corrupt(format!(
                    "descriptor of lsn {lsn} under a key naming {key_lsn}"
                )));
            }
            Ok(RecordValue::Chunked(Descriptor {
                lsn,
                kind,
                total_len,
                chunks,
                payload_crc,
            }))
        }
        v => Err(corrupt(format!("unknown value version {v}"))),
    }
}

/// Reassembles a chunked record from its chunk values (in key order) and
/// checks it against its descriptor.
pub(crate) fn assemble_chunks(
    key: &[u8],
    d: &Descriptor,
    chunks: Vec<Bytes>,
) -> Result<Record, Error> {
    if chunks.len() != d.chunks as usize {
        return Err(corrupt_key(
            key,
            format!(
                "chunked record {} has {} chunk keys, its descriptor says {}",
                d.lsn,
                chunks.len(),
                d.chunks
            ),
        ));
    }
    let total: usize = chunks.iter().map(Bytes::len).sum();
    if total as u64 != d.total_len {
        return Err(corrupt_key(
            key,
            format!(
                "chunked record {} has {total} bytes, its descriptor says {}",
                d.lsn, d.total_len
            ),
        ));
    }
    let payload = if chunks.len() == 1 {
        chunks.into_iter().next().unwrap_or_default()
    } else {
        let mut buf = BytesMut::with_capacity(total);
        for c in chunks {
            buf.put_slice(&c);
        }
        buf.freeze()
    };
    if crc32fast::hash(&payload) != d.payload_crc {
        return Err(corrupt_key(
            key,
            format!("chunked record {} payload checksum mismatch", d.lsn),
        ));
    }
    Ok(Record {
        lsn: d.lsn,
        kind: d.kind,
        payload,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn key_order_is_lsn_order() {
        let k = KeyLayout::new("/p/", "log").unwrap();
        let mut keys = vec![
            k.record(Lsn(10)),
            k.record(Lsn(9)),
            k.record(Lsn(u64::MAX)),
            k.record(Lsn(1)),
        ];
        keys.sort();
        assert_eq!(
            keys,
            vec![
                k.record(Lsn(1)),
                k.record(Lsn(9)),
                k.record(Lsn(10)),
                k.record(Lsn(u64::MAX))
            ]
        );
        assert!(k.record(Lsn(u64::MAX)) < k.records_end());
        assert!(k.records_start() < k.record(Lsn(0)));
        assert!(k.chunk(Lsn(5), 0) < k.chunk(Lsn(5), 1));
        assert!(k.chunk(Lsn(5), u32::MAX) < k.chunk_from(Lsn(6)));
        let (s, e) = k.chunks_of(Lsn(5));
        assert!(s <= k.chunk(Lsn(5), 0) && k.chunk(Lsn(5), u32::MAX) < e);
        assert_eq!(k.parse_record(&k.record(Lsn(42))).unwrap(), Lsn(42));
        assert!(KeyLayout::new("/p/", "a/b").is_err());
    }

    #[test]
    fn layouts_nested_in_another_logs_ranges_are_refused() {
        // `/wal/` + `app` owns `/wal/app/r/...` and `/wal/app/c/...`.
        for (prefix, name) in [
            ("/wal/app/", "r"),
            ("/wal/app/", "c"),
            ("/wal/app/r/", "x"),
            ("/wal/app/c/0000/", "x"),
            ("wal/app/", "r"),
            // `/` + `c` owns `/c/r/...`, `/` + `wal` owns `/wal/r/...`.
            ("/c/", "r"),
            ("/wal/", "r"),
        ] {
            let e = KeyLayout::new(prefix, name).err();
            assert!(
                matches!(e, Some(Error::InvalidArgument(_))),
                "{prefix:?} + {name:?}: {e:?}"
            );
        }
        for (prefix, name) in [
            ("/wal/", "app"),
            ("/r/", "x"),
            ("", "r"),
            ("/wal/app/", "rr"),
            ("/wal/app/r", "x"),
            ("/wal//r/", "x"),
        ] {
            assert!(
                KeyLayout::new(prefix, name).is_ok(),
                "{prefix:?} + {name:?}"
            );
        }
    }

    #[test]
    fn pack_round_trip() {
        let mut p = PackBuilder::new();
        p.push(&Record::new(Lsn(3), RecordKind::Data, "abc"));
        p.push(&Record::new(Lsn(5), RecordKind::CheckpointBegin, ""));
        let (last, value) = p.finish().unwrap();
        assert_eq!(last, Lsn(5));
        let RecordValue::Pack(rs) = decode_record_value(b"k", last, &value).unwrap() else {
            panic!("not a pack")
        };
        assert_eq!(rs.len(), 2);
        assert_eq!(&rs[0].payload[..], b"abc");
        let mut bad = value.to_vec();
        bad[3] ^= 1;
        assert!(decode_record_value(b"k", last, &Bytes::from(bad)).is_err());
    }

    #[test]
    fn descriptor_round_trip() {
        let d = Descriptor {
            lsn: Lsn(7),
            kind: RecordKind::Checkpoint,
            total_len: 10,
            chunks: 2,
            payload_crc: crc32fast::hash(b"0123456789"),
        };
        let v = Bytes::from(d.encode());
        let RecordValue::Chunked(back) = decode_record_value(b"k", Lsn(7), &v).unwrap() else {
            panic!("not chunked")
        };
        assert_eq!(back, d);
        let r = assemble_chunks(
            b"k",
            &d,
            vec![Bytes::from_static(b"01234"), Bytes::from_static(b"56789")],
        )
        .unwrap();
        assert_eq!(&r.payload[..], b"0123456789");
        assert_eq!(encode_head(Lsn(9)).len(), HEAD_LEN);
        assert_eq!(decode_head(b"h", &encode_head(Lsn(9))).unwrap(), Lsn(9));
    }
}
