//! The key-value store behind the `kvstore` example: a redo log on a [`Wal`].
//!
//! Every write is appended to the log and awaited (durable) *before* it is
//! applied to the in-memory map, so whatever a caller was told succeeded is
//! recovered after a crash. Every `checkpoint_every` writes the whole map is
//! written as a checkpoint, in the background while writes go on; after it
//! commits, the log before it is garbage and the backend deletes it.
//!
//! Recovery replays [`Recovery`]: the last committed checkpoint's entries
//! rebuild the map, then the data entries after it are re-applied in order.
//!
//! ## Entry encoding
//!
//! Integers are little-endian; a string is a `u32` byte length followed by its
//! UTF-8 bytes.
//!
//! | entry | kind | bytes |
//! | --- | --- | --- |
//! | put | data | `b'P'`, seq `u64`, key, value |
//! | delete | data | `b'D'`, seq `u64`, key |
//! | snapshot header | checkpoint (first) | `b'S'`, seq `u64`, number of keys `u64` |
//! | snapshot chunk | checkpoint (the rest) | `b'K'`, then (key, value) pairs back to back, up to ~64 KiB |
//!
//! `seq` numbers the writes 1, 2, 3, ... in the order they were applied; the
//! snapshot header holds the seq of the last write the snapshot includes. The
//! Lsn is the log's own position; seq is the store's, so a reader can tell
//! exactly which writes a recovered map contains.

use std::{collections::BTreeMap, path::Path};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::StreamExt;
use tokio::task::JoinHandle;
use wal::{
    fs::{FsOptions, FsStore},
    CheckpointInfo, Entry, EntryKind, Lsn, Recovery, Wal, WalOptions, WalStore,
};

const TAG_PUT: u8 = b'P';
const TAG_DEL: u8 = b'D';
const TAG_SNAPSHOT: u8 = b'S';
const TAG_CHUNK: u8 = b'K';
/// A snapshot chunk is closed once it holds this many bytes.
const CHUNK_BYTES: usize = 64 << 10;

/// What can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    /// The log failed.
    #[error(transparent)]
    Wal(#[from] wal::Error),
    /// An entry in the log is not one this store wrote.
    #[error("bad entry at lsn {lsn}: {why}")]
    BadEntry {
        /// Where.
        lsn: Lsn,
        /// What is wrong.
        why: String,
    },
    /// The background checkpoint task panicked or was cancelled.
    #[error("checkpoint task: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// One write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Set `key` to `value`.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Remove `key` (a no-op if it is absent).
    Del {
        /// The key.
        key: String,
    },
}

fn put_str(buf: &mut BytesMut, s: &str) {
    buf.put_u32_le(s.len() as u32);
    buf.put_slice(s.as_bytes());
}

/// Encodes write number `seq` as a data entry.
pub fn encode_op(seq: u64, op: &Op) -> Bytes {
    let mut buf = BytesMut::new();
    match op {
        Op::Put { key, value } => {
            buf.put_u8(TAG_PUT);
            buf.put_u64_le(seq);
            put_str(&mut buf, key);
            put_str(&mut buf, value);
        }
        Op::Del { key } => {
            buf.put_u8(TAG_DEL);
            buf.put_u64_le(seq);
            put_str(&mut buf, key);
        }
    }
    buf.freeze()
}

/// A cursor over an entry's payload that reports short or malformed input.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn need(&self, n: usize) -> Result<(), String> {
        if self.0.remaining() < n {
            return Err(format!(
                "truncated: need {n} more bytes, have {}",
                self.0.remaining()
            ));
        }
        Ok(())
    }
    fn u8(&mut self) -> Result<u8, String> {
        self.need(1)?;
        Ok(self.0.get_u8())
    }
    fn u64(&mut self) -> Result<u64, String> {
        self.need(8)?;
        Ok(self.0.get_u64_le())
    }
    fn string(&mut self) -> Result<String, String> {
        self.need(4)?;
        let len = self.0.get_u32_le() as usize;
        self.need(len)?;
        let (s, rest) = self.0.split_at(len);
        self.0 = rest;
        String::from_utf8(s.to_vec()).map_err(|e| format!("string is not UTF-8: {e}"))
    }
    fn end(&self) -> Result<(), String> {
        match self.0.len() {
            0 => Ok(()),
            n => Err(format!("{n} unexpected trailing bytes")),
        }
    }
}

/// Decodes a data entry into (seq, op).
pub fn decode_op(payload: &[u8]) -> Result<(u64, Op), String> {
    let mut r = Reader(payload);
    let tag = r.u8()?;
    let seq = r.u64()?;
    let op = match tag {
        TAG_PUT => Op::Put {
            key: r.string()?,
            value: r.string()?,
        },
        TAG_DEL => Op::Del { key: r.string()? },
        t => return Err(format!("unknown data tag {t:#04x}")),
    };
    r.end()?;
    Ok((seq, op))
}

/// One checkpoint entry, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckpointEntry {
    /// The snapshot header: the seq of the last write the snapshot includes
    /// and the number of keys it holds.
    Header {
        /// Seq of the last write included.
        seq: u64,
        /// Keys in the snapshot.
        keys: u64,
    },
    /// A chunk of (key, value) pairs.
    Pairs(Vec<(String, String)>),
}

impl CheckpointEntry {
    fn name(&self) -> &'static str {
        match self {
            CheckpointEntry::Header { .. } => "a second snapshot header",
            CheckpointEntry::Pairs(_) => "a chunk before the snapshot header",
        }
    }
}

/// Decodes a checkpoint entry (a snapshot header or a chunk of pairs).
pub fn decode_checkpoint_entry(payload: &[u8]) -> Result<CheckpointEntry, String> {
    let mut r = Reader(payload);
    match r.u8()? {
        TAG_SNAPSHOT => {
            let seq = r.u64()?;
            let keys = r.u64()?;
            r.end()?;
            Ok(CheckpointEntry::Header { seq, keys })
        }
        TAG_CHUNK => {
            let mut pairs = Vec::new();
            while !r.0.is_empty() {
                let key = r.string()?;
                let value = r.string()?;
                pairs.push((key, value));
            }
            Ok(CheckpointEntry::Pairs(pairs))
        }
        t => Err(format!("unknown checkpoint tag {t:#04x}")),
    }
}

/// The store's state: the map and the seq of the last write applied to it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvState {
    /// The key-value map.
    pub map: BTreeMap<String, String>,
    /// The seq of the last write applied (0: none).
    pub seq: u64,
}

impl KvState {
    /// Applies write number `seq`.
    pub fn apply(&mut self, seq: u64, op: &Op) {
        match op {
            Op::Put { key, value } => {
                self.map.insert(key.clone(), value.clone());
            }
            Op::Del { key } => {
                self.map.remove(key);
            }
        }
        self.seq = seq;
    }

    /// The checkpoint entries that rebuild this state: a header, then the
    /// pairs in chunks.
    pub fn snapshot_entries(&self) -> Vec<Bytes> {
        let mut header = BytesMut::with_capacity(17);
        header.put_u8(TAG_SNAPSHOT);
        header.put_u64_le(self.seq);
        header.put_u64_le(self.map.len() as u64);
        let mut entries = vec![header.freeze()];
        let mut chunk = BytesMut::new();
        for (k, v) in &self.map {
            if chunk.is_empty() {
                chunk.put_u8(TAG_CHUNK);
            }
            put_str(&mut chunk, k);
            put_str(&mut chunk, v);
            if chunk.len() >= CHUNK_BYTES {
                entries.push(chunk.split().freeze());
            }
        }
        if !chunk.is_empty() {
            entries.push(chunk.freeze());
        }
        entries
    }
}

/// What recovery found.
#[derive(Clone, Debug, Default)]
pub struct RecoveryReport {
    /// The committed checkpoint recovery started from, if any.
    pub checkpoint: Option<CheckpointInfo>,
    /// Keys the checkpoint held.
    pub checkpoint_keys: usize,
    /// Seq of the last write the checkpoint included (0 without one).
    pub checkpoint_seq: u64,
    /// Data entries re-applied after the checkpoint.
    pub replayed: usize,
    /// The last Lsn in the log at open.
    pub end_lsn: Option<Lsn>,
}

fn bad(entry: &Entry, why: impl Into<String>) -> KvError {
    bad_at(entry.lsn, why)
}

fn bad_at(lsn: Lsn, why: impl Into<String>) -> KvError {
    KvError::BadEntry {
        lsn,
        why: why.into(),
    }
}

/// Rebuilds the state from a recovery stream: checkpoint entries first, then
/// data entries, as the recovery contract delivers them.
pub async fn replay(mut recovery: Recovery) -> Result<(KvState, RecoveryReport), KvError> {
    let mut report = RecoveryReport {
        checkpoint: recovery.checkpoint(),
        end_lsn: recovery.end_lsn(),
        ..RecoveryReport::default()
    };
    let mut state = KvState::default();
    // Keys the snapshot header announced, checked once the snapshot ends.
    let mut announced: Option<u64> = None;
    let mut in_checkpoint = report.checkpoint.is_some();
    while let Some(entry) = recovery.next().await {
        let entry = entry?;
        match entry.kind {
            EntryKind::Checkpoint => {
                if !in_checkpoint {
                    return Err(bad(&entry, "checkpoint entry after data entries"));
                }
                match (
                    decode_checkpoint_entry(&entry.payload).map_err(|e| bad(&entry, e))?,
                    announced,
                ) {
                    (CheckpointEntry::Header { seq, keys }, None) => {
                        state.seq = seq;
                        announced = Some(keys);
                        report.checkpoint_seq = state.seq;
                    }
                    (CheckpointEntry::Pairs(pairs), Some(_)) => state.map.extend(pairs),
                    (e, _) => {
                        return Err(bad(
                            &entry,
                            format!("unexpected checkpoint entry ({})", e.name()),
                        ))
                    }
                }
            }
            EntryKind::Data => {
                if in_checkpoint {
                    in_checkpoint = false;
                    check_snapshot(entry.lsn, announced, &state)?;
                }
                let (seq, op) = decode_op(&entry.payload).map_err(|e| bad(&entry, e))?;
                if seq <= state.seq {
                    return Err(bad(
                        &entry,
                        format!("write seq {seq} does not follow seq {}", state.seq),
                    ));
                }
                state.apply(seq, &op);
                report.replayed += 1;
            }
        }
    }
    if in_checkpoint {
        check_snapshot(report.end_lsn.unwrap_or(Lsn::ZERO), announced, &state)?;
    }
    report.checkpoint_keys = if report.checkpoint.is_some() {
        announced.unwrap_or(0) as usize
    } else {
        0
    };
    Ok((state, report))
}

fn check_snapshot(at: Lsn, announced: Option<u64>, state: &KvState) -> Result<(), KvError> {
    match announced {
        Some(n) if n == state.map.len() as u64 => Ok(()),
        Some(n) => Err(bad_at(
            at,
            format!(
                "the checkpoint announced {n} keys but held {}",
                state.map.len()
            ),
        )),
        None => Err(bad_at(at, "the checkpoint has no snapshot header")),
    }
}

/// A checkpoint that committed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckpointDone {
    /// Lsn of its begin marker: it covers every write logged below it.
    pub begin: Lsn,
    /// Lsn of its commit marker.
    pub commit: Lsn,
    /// Keys it holds.
    pub keys: usize,
    /// Seq of the last write it includes.
    pub seq: u64,
}

/// The file-backend options the example uses: small (256 KiB) segments, so
/// that old segments visibly go away once a checkpoint covers them.
pub fn fs_options() -> FsOptions {
    FsOptions::default().segment_bytes(256 << 10)
}

/// The store: a [`Wal`] plus the map it protects.
pub struct KvStore {
    wal: Wal,
    state: KvState,
    checkpoint_every: u64,
    since_checkpoint: u64,
    running: Option<JoinHandle<Result<CheckpointDone, KvError>>>,
    finished: Vec<CheckpointDone>,
}

impl KvStore {
    /// Opens the store on a log directory (created if missing) and recovers.
    pub async fn open_dir(
        dir: &Path,
        checkpoint_every: u64,
    ) -> Result<(KvStore, RecoveryReport), KvError> {
        KvStore::open(FsStore::new(dir, fs_options()), checkpoint_every).await
    }

    /// Opens the store on any backend and recovers. A checkpoint starts after
    /// every `checkpoint_every` writes (0: only when asked).
    pub async fn open<S: WalStore>(
        store: S,
        checkpoint_every: u64,
    ) -> Result<(KvStore, RecoveryReport), KvError> {
        let (wal, recovery) = Wal::open(store, WalOptions::default()).await?;
        let (state, report) = match replay(recovery).await {
            Ok(r) => r,
            Err(e) => {
                let _ = wal.close().await;
                return Err(e);
            }
        };
        let store = KvStore {
            wal,
            state,
            checkpoint_every,
            since_checkpoint: report.replayed as u64,
            running: None,
            finished: Vec::new(),
        };
        Ok((store, report))
    }

    /// The current state.
    pub fn state(&self) -> &KvState {
        &self.state
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.state.map.get(key).map(String::as_str)
    }

    /// The seq the next write will get.
    pub fn next_seq(&self) -> u64 {
        self.state.seq + 1
    }

    /// Logs `op`, waits until it is durable, then applies it. Returns its seq
    /// and Lsn. Starts a background checkpoint when one is due.
    pub async fn apply(&mut self, op: Op) -> Result<(u64, Lsn), KvError> {
        let seq = self.next_seq();
        let lsn = self.wal.append(encode_op(seq, &op)).await?;
        self.state.apply(seq, &op);
        self.since_checkpoint += 1;
        self.reap().await?;
        if self.checkpoint_every > 0
            && self.since_checkpoint >= self.checkpoint_every
            && self.running.is_none()
        {
            self.start_checkpoint().await?;
        }
        Ok((seq, lsn))
    }

    /// Starts a checkpoint of the current state; it is written and committed
    /// by a background task while writes go on.
    pub async fn start_checkpoint(&mut self) -> Result<(), KvError> {
        self.wait_checkpoint().await?;
        // No write of ours is in flight (we hold `&mut self`), so the
        // snapshot is exactly the writes logged below the begin marker.
        let mut cp = self.wal.begin_checkpoint().await?;
        let snapshot = self.state.clone();
        self.since_checkpoint = 0;
        self.running = Some(tokio::spawn(async move {
            for entry in snapshot.snapshot_entries() {
                cp.append(entry).await?;
            }
            let begin = cp.begin_lsn();
            let commit = cp.commit().await?;
            Ok(CheckpointDone {
                begin,
                commit,
                keys: snapshot.map.len(),
                seq: snapshot.seq,
            })
        }));
        Ok(())
    }

    /// Writes a checkpoint of the current state and waits for its commit.
    pub async fn checkpoint(&mut self) -> Result<CheckpointDone, KvError> {
        self.start_checkpoint().await?;
        self.wait_checkpoint().await?;
        self.finished.pop().ok_or(KvError::Wal(wal::Error::Closed))
    }

    /// Collects the running checkpoint if it has finished.
    async fn reap(&mut self) -> Result<(), KvError> {
        if self.running.as_ref().is_some_and(JoinHandle::is_finished) {
            self.wait_checkpoint().await?;
        }
        Ok(())
    }

    /// Waits for the running checkpoint, if any.
    pub async fn wait_checkpoint(&mut self) -> Result<(), KvError> {
        if let Some(task) = self.running.take() {
            self.finished.push(task.await??);
        }
        Ok(())
    }

    /// The checkpoints that committed since the last call.
    pub fn take_finished(&mut self) -> Vec<CheckpointDone> {
        std::mem::take(&mut self.finished)
    }

    /// Waits for a running checkpoint, then closes the log cleanly.
    pub async fn close(mut self) -> Result<Vec<CheckpointDone>, KvError> {
        let waited = self.wait_checkpoint().await;
        self.wal.close().await?;
        waited?;
        Ok(self.finished)
    }

    /// The log, e.g. to simulate a crash in tests. A running checkpoint task
    /// goes on with its own handle.
    #[allow(dead_code)] // used by tests/kvstore_demo.rs
    pub fn into_wal(self) -> Wal {
        self.wal
    }
}

/// The demo's write number `seq` for a writer seeded with `seed`: a put
/// (4 in 5) or a delete of one of `keys` keys. Deterministic, so the process
/// that checks recovery can recompute what the writer did.
pub fn demo_op(seed: u64, seq: u64, keys: u64) -> Op {
    let mut rng = seed ^ seq.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let r = splitmix64(&mut rng);
    let key = format!("key-{:04}", r % keys.max(1));
    if (r >> 32).is_multiple_of(5) {
        return Op::Del { key };
    }
    let r2 = splitmix64(&mut rng);
    let len = if r2.is_multiple_of(16) {
        256 + (r2 >> 8) % 2048
    } else {
        (r2 >> 8) % 32
    };
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut value = format!("w{seq}:");
    for _ in 0..len {
        let c = ALPHABET[(splitmix64(&mut rng) % ALPHABET.len() as u64) as usize];
        value.push(char::from(c));
    }
    Op::Put { key, value }
}

/// SplitMix64: a tiny, well-mixed, deterministic generator.
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
