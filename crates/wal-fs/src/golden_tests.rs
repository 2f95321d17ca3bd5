//! Golden bytes: a segment file written once by the real writer and checked
//! in (`tests/golden/segment-v1.wal`), decoded field by field against literal
//! values and re-encoded byte for byte. A change to the format that touches
//! the encoder and the decoder alike passes every round-trip test; it fails
//! here.
//!
//! How the file was produced: `WAL_FS_WRITE_GOLDEN=1 cargo test -p wal-fs
//! --lib golden_tests::write_golden_segment -- --ignored` ran
//! [`write_golden_segment`] once: an [`FsStore`] (preallocation off, so the
//! file ends at its last frame) appended [`batches`] and closed, and the
//! segment file was copied here. Its random segment id was then written
//! into [`SEGMENT_ID`] and every other literal below was read off the file
//! with `xxd` and checked against FORMAT.md by hand.
//!
//! NEVER regenerate or edit the file, or change a literal here, to make a
//! test pass: a failure here means the code no longer reads or writes
//! format version 1, and every log on disk is in it. Only a new format
//! version gets a new file (`segment-v2.wal`, with its own test), and the
//! generator refuses to overwrite an existing one.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use wal_core::{Lsn, ReadLimit, Record, RecordKind, WalStore};

use crate::{
    format::{encode_frame, FrameHeader, SegmentHeader, FRAME_HEADER_LEN, SEGMENT_HEADER_LEN},
    inspect::{self, ScanEvent},
    FsOptions, FsStore,
};

fn golden_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/segment-v1.wal")
}

/// The records of the golden segment, as the `append` calls that wrote them:
/// a single entry; an atomic batch of three (an empty payload, a payload of
/// exactly 8 bytes, binary bytes); a checkpoint (begin, one entry, commit
/// naming the begin marker) in one call; one more entry after it.
fn batches() -> Vec<Vec<Record>> {
    vec![
        vec![Record::new(Lsn(1), RecordKind::Data, &b"first entry"[..])],
        vec![
            Record::new(Lsn(2), RecordKind::Data, &b""[..]),
            Record::new(Lsn(3), RecordKind::Data, &b"8 bytes!"[..]),
            Record::new(
                Lsn(4),
                RecordKind::Data,
                &[0x00, 0xff, 0x80, 0x7f, 0x01][..],
            ),
        ],
        vec![
            Record::new(Lsn(5), RecordKind::CheckpointBegin, &b""[..]),
            Record::new(Lsn(6), RecordKind::Checkpoint, &b"state: a=1"[..]),
            Record::marker(Lsn(7), RecordKind::CheckpointCommit, Lsn(5)),
        ],
        vec![Record::new(
            Lsn(8),
            RecordKind::Data,
            &b"after checkpoint"[..],
        )],
    ]
}

/// Writes the golden segment with the real writer (see the module docs).
/// Run once per format version; it never overwrites a file.
#[tokio::test]
#[ignore = "writes the golden file; run once per format version, never to make a test pass"]
async fn write_golden_segment() {
    assert!(
        std::env::var_os("WAL_FS_WRITE_GOLDEN").is_some(),
        "set WAL_FS_WRITE_GOLDEN=1 to write the golden file"
    );
    let target = golden_path();
    assert!(
        !target.exists(),
        "{} exists: golden files are never regenerated",
        target.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let mut store = FsStore::new(dir.path(), FsOptions::default().preallocate(false));
    store.open().await.unwrap();
    for batch in batches() {
        store.append(&batch).await.unwrap();
    }
    store.close().await.unwrap();
    drop(store);
    let segment = dir.path().join("00000000000000000001.wal");
    std::fs::copy(&segment, &target).unwrap();
}

/// The segment id the writer drew at random for the golden file.
const SEGMENT_ID: u64 = 0x2d72_fe7b_fc27_5981;
/// The header's checksum, bytes 44..48.
const HEADER_CRC: u32 = 0x3e75_6d76;
/// The file's size: the end of the last frame.
const FILE_LEN: u64 = 376;

/// One frame of the golden file, as FORMAT.md lays it out.
struct Frame {
    offset: u64,
    crc: u32,
    kind: RecordKind,
    batch_end: bool,
    lsn: u64,
    synced_to: u64,
    payload: &'static [u8],
    frame_len: u64,
}

#[rustfmt::skip]
const FRAMES: [Frame; 8] = [
    Frame { offset: 48,  crc: 0xf4c5_41fd, kind: RecordKind::Data,             batch_end: true,  lsn: 1, synced_to: 48,  payload: b"first entry",      frame_len: 48 },
    Frame { offset: 96,  crc: 0x974c_e207, kind: RecordKind::Data,             batch_end: false, lsn: 2, synced_to: 96,  payload: b"",                 frame_len: 32 },
    Frame { offset: 128, crc: 0xdbb0_dd80, kind: RecordKind::Data,             batch_end: false, lsn: 3, synced_to: 96,  payload: b"8 bytes!",         frame_len: 40 },
    Frame { offset: 168, crc: 0xb5d4_a9fd, kind: RecordKind::Data,             batch_end: true,  lsn: 4, synced_to: 96,  payload: &[0x00, 0xff, 0x80, 0x7f, 0x01], frame_len: 40 },
    Frame { offset: 208, crc: 0x6578_00da, kind: RecordKind::CheckpointBegin,  batch_end: false, lsn: 5, synced_to: 208, payload: b"",                 frame_len: 32 },
    Frame { offset: 240, crc: 0x79b8_a570, kind: RecordKind::Checkpoint,       batch_end: false, lsn: 6, synced_to: 208, payload: b"state: a=1",       frame_len: 48 },
    Frame { offset: 288, crc: 0x2bdf_b1c6, kind: RecordKind::CheckpointCommit, batch_end: true,  lsn: 7, synced_to: 208, payload: &[0, 0, 0, 0, 0, 0, 0, 5], frame_len: 40 },
    Frame { offset: 328, crc: 0xef5a_15db, kind: RecordKind::Data,             batch_end: true,  lsn: 8, synced_to: 328, payload: b"after checkpoint", frame_len: 48 },
];

/// The kind bytes FORMAT.md gives, independent of `RecordKind::as_u8`.
fn kind_byte(kind: RecordKind) -> u8 {
    match kind {
        RecordKind::Data => 1,
        RecordKind::Checkpoint => 2,
        RecordKind::CheckpointBegin => 3,
        RecordKind::CheckpointCommit => 4,
        RecordKind::CheckpointAbort => 5,
        RecordKind::Truncated => 6,
    }
}

fn golden() -> Vec<u8> {
    std::fs::read(golden_path()).unwrap()
}

fn le32(b: &[u8], at: u64) -> u32 {
    let at = at as usize;
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn le64(b: &[u8], at: u64) -> u64 {
    let at = at as usize;
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// A log directory holding a copy of the golden segment (open may change
/// the files it opens).
fn golden_log(bytes: &[u8]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("00000000000000000001.wal"), bytes).unwrap();
    dir
}

/// Every byte of the file, read at the offsets FORMAT.md gives and through
/// the crate's decoders, against literal values.
#[test]
fn golden_segment_bytes_are_the_documented_format() {
    let b = golden();
    assert_eq!(b.len() as u64, FILE_LEN);

    // Header.
    assert_eq!(&b[0..8], b"WALFSSEG");
    assert_eq!(le32(&b, 8), 1, "format version");
    assert_eq!(le32(&b, 12), 0, "reserved");
    assert_eq!(le64(&b, 16), SEGMENT_ID);
    assert_eq!(le64(&b, 24), 1, "first lsn");
    assert_eq!(le64(&b, 32), 0, "previous last lsn");
    assert_eq!(le32(&b, 40), 0, "reserved");
    assert_eq!(le32(&b, 44), HEADER_CRC);
    assert_eq!(crc32fast::hash(&b[0..44]), HEADER_CRC);
    let raw: [u8; SEGMENT_HEADER_LEN as usize] =
        b[..SEGMENT_HEADER_LEN as usize].try_into().unwrap();
    assert_eq!(
        SegmentHeader::decode(&raw),
        Ok(SegmentHeader {
            id: SEGMENT_ID,
            first_lsn: Lsn(1),
            prev_last_lsn: Lsn(0),
        })
    );

    // Frames, back to back from offset 48 to the end of the file.
    let mut at = SEGMENT_HEADER_LEN;
    for f in &FRAMES {
        assert_eq!(
            f.offset, at,
            "frame {} is not where the previous one ends",
            f.lsn
        );
        let n = f.payload.len() as u64;
        assert_eq!(le32(&b, at), f.crc, "checksum of {}", f.lsn);
        assert_eq!(le32(&b, at + 4) as u64, n, "length of {}", f.lsn);
        assert_eq!(b[at as usize + 8], kind_byte(f.kind), "kind of {}", f.lsn);
        assert_eq!(
            b[at as usize + 9],
            u8::from(f.batch_end),
            "flags of {}",
            f.lsn
        );
        assert_eq!(&b[at as usize + 10..at as usize + 16], &[0; 6], "reserved");
        assert_eq!(le64(&b, at + 16), f.lsn);
        assert_eq!(le64(&b, at + 24), f.synced_to, "synced-to of {}", f.lsn);
        let payload = &b[(at + 32) as usize..(at + 32 + n) as usize];
        assert_eq!(payload, f.payload);
        assert_eq!(f.frame_len, (32 + n).div_ceil(8) * 8);
        assert!(
            b[(at + 32 + n) as usize..(at + f.frame_len) as usize]
                .iter()
                .all(|&x| x == 0),
            "padding of {} is not zero",
            f.lsn
        );
        // The checksum covers the segment id, header bytes 4..32, payload.
        let mut crc = crc32fast::Hasher::new();
        crc.update(&SEGMENT_ID.to_le_bytes());
        crc.update(&b[at as usize + 4..at as usize + 32]);
        crc.update(payload);
        assert_eq!(crc.finalize(), f.crc, "checksum of {} recomputed", f.lsn);

        let raw: [u8; FRAME_HEADER_LEN] = b[at as usize..at as usize + 32].try_into().unwrap();
        let h = FrameHeader::decode(&raw).unwrap();
        assert_eq!(
            (
                h.crc,
                h.len as u64,
                h.kind,
                h.batch_end(),
                h.lsn,
                h.synced_to
            ),
            (f.crc, n, f.kind, f.batch_end, Lsn(f.lsn), f.synced_to)
        );
        assert_eq!(h.frame_len(), f.frame_len);
        at += f.frame_len;
    }
    assert_eq!(at, FILE_LEN);
}

/// The crate's own open, verify and reader read the golden file as the
/// literals say.
#[tokio::test]
async fn golden_segment_opens_verifies_and_reads() {
    let b = golden();

    // verify: the header's fields and every record where it is.
    let dir = golden_log(&b);
    let mut seen = Vec::new();
    let report = inspect::verify(dir.path(), &mut |e| {
        if let ScanEvent::Record(r) = e {
            seen.push((r.offset, r.frame_bytes, r.lsn, r.kind, r.payload.to_vec()));
        }
    })
    .unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    assert_eq!(report.segments.len(), 1);
    let s = &report.segments[0];
    assert_eq!(s.segment_id, Some(SEGMENT_ID));
    assert_eq!(s.prev_last_lsn, Some(Lsn(0)));
    assert_eq!((s.first_lsn, s.last_lsn), (Some(Lsn(1)), Some(Lsn(8))));
    assert_eq!(
        (s.records, s.data_end, s.file_bytes),
        (8, FILE_LEN, FILE_LEN)
    );
    let want: Vec<_> = FRAMES
        .iter()
        .map(|f| {
            (
                f.offset,
                f.frame_len,
                Lsn(f.lsn),
                f.kind,
                f.payload.to_vec(),
            )
        })
        .collect();
    assert_eq!(seen, want);

    // The lock-free reader.
    let mut reader = inspect::LogReader::new(dir.path(), Lsn(1));
    let mut read = Vec::new();
    while let Some(r) = reader.next_record().unwrap() {
        read.push((r.offset, r.lsn, r.kind, r.payload.to_vec()));
    }
    let want_read: Vec<_> = FRAMES
        .iter()
        .map(|f| (f.offset, Lsn(f.lsn), f.kind, f.payload.to_vec()))
        .collect();
    assert_eq!(read, want_read);

    // Open, and read everything back.
    let mut store = FsStore::new(dir.path(), FsOptions::default());
    let state = store.open().await.unwrap();
    assert_eq!(
        (state.first_lsn, state.last_lsn),
        (Some(Lsn(1)), Some(Lsn(8)))
    );
    let records = store
        .read_from(
            Lsn(1),
            ReadLimit {
                max_records: 100,
                max_bytes: 1 << 20,
            },
        )
        .await
        .unwrap();
    let got: Vec<_> = records
        .iter()
        .map(|r| (r.lsn, r.kind, r.payload.to_vec()))
        .collect();
    let want_open: Vec<_> = FRAMES
        .iter()
        .map(|f| (Lsn(f.lsn), f.kind, f.payload.to_vec()))
        .collect();
    assert_eq!(got, want_open);
    store.close().await.unwrap();
}

/// The batch-end flags in the golden bytes are what open goes by: cut
/// inside the checkpoint's batch (after Lsn 6), the log ends at Lsn 4, the
/// end of the last flagged frame, and the torn bytes are cut off.
#[tokio::test]
async fn golden_segment_cut_inside_a_batch_opens_at_the_last_batch_end() {
    let b = golden();
    let dir = golden_log(&b[..288]);
    let mut store = FsStore::new(dir.path(), FsOptions::default());
    let state = store.open().await.unwrap();
    assert_eq!(
        (state.first_lsn, state.last_lsn),
        (Some(Lsn(1)), Some(Lsn(4)))
    );
    store.close().await.unwrap();
    let len = std::fs::metadata(dir.path().join("00000000000000000001.wal"))
        .unwrap()
        .len();
    assert_eq!(len, 208, "the torn batch was not cut off");
}

/// The encoder, given the same records, batch ends and synced-to values,
/// writes the golden bytes exactly.
#[test]
fn golden_segment_re_encodes_byte_for_byte() {
    let header = SegmentHeader {
        id: SEGMENT_ID,
        first_lsn: Lsn(1),
        prev_last_lsn: Lsn(0),
    };
    let mut out = header.encode().to_vec();
    // What each batch's frames say was durable when they were written: the
    // header, then the end of each earlier batch.
    let synced_to = [48, 96, 208, 328];
    for (batch, synced) in batches().iter().zip(synced_to) {
        for (i, r) in batch.iter().enumerate() {
            encode_frame(&mut out, SEGMENT_ID, r, i + 1 == batch.len(), synced);
        }
    }
    let golden = golden();
    if out != golden {
        let at = out.iter().zip(&golden).position(|(a, b)| a != b);
        panic!(
            "encoding differs from the golden file at byte {at:?} (lengths {} and {})",
            out.len(),
            golden.len()
        );
    }
}

/// The `wal.truncate` intent, 28 bytes (magic, cut point, marker Lsn,
/// CRC-32; FORMAT.md): these bytes were computed from the layout with
/// Python's `zlib.crc32`, independently of this crate.
#[test]
fn golden_truncate_intent() {
    let golden: [u8; 28] = [
        0x57, 0x41, 0x4c, 0x46, 0x53, 0x54, 0x52, 0x43, // "WALFSTRC"
        0x03, 0, 0, 0, 0, 0, 0, 0, // cut after Lsn 3
        0x09, 0, 0, 0, 0, 0, 0, 0, // marker Lsn 9
        0xa0, 0x1f, 0xb3, 0x1c, // CRC-32 of the 24 bytes before
    ];
    assert_eq!(crate::log::encode_intent(Lsn(3), Lsn(9)), golden);
    assert_eq!(crate::log::decode_intent(&golden), Some((Lsn(3), Lsn(9))));
}
