//! What the log stores: records (for backends) and entries (for users).

use bytes::Bytes;

use crate::{Error, Lsn};

/// The kind of a stored record. Backends store the kind byte as is and never
/// interpret it; the checkpoint protocol lives in the core.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum RecordKind {
    /// An application data entry.
    Data = 1,
    /// An entry of a checkpoint's state.
    Checkpoint = 2,
    /// Opens a checkpoint. Empty payload.
    CheckpointBegin = 3,
    /// Commits the checkpoint whose begin Lsn is the payload (8 bytes, big-endian).
    CheckpointCommit = 4,
    /// Aborts the checkpoint whose begin Lsn is the payload (8 bytes, big-endian).
    CheckpointAbort = 5,
    /// Written after `truncate_after`, so that a reopened log never reuses the
    /// Lsns that were cut. Payload: the cut point (8 bytes, big-endian).
    Truncated = 6,
}

impl RecordKind {
    /// The byte stored on disk / in etcd.
    pub const fn as_u8(self) -> u8 {
        self as u8
    }

    /// Parses a stored kind byte.
    pub const fn from_u8(b: u8) -> Option<RecordKind> {
        Some(match b {
            1 => RecordKind::Data,
            2 => RecordKind::Checkpoint,
            3 => RecordKind::CheckpointBegin,
            4 => RecordKind::CheckpointCommit,
            5 => RecordKind::CheckpointAbort,
            6 => RecordKind::Truncated,
            _ => return None,
        })
    }

    /// True for records written by the core for its own bookkeeping.
    pub const fn is_marker(self) -> bool {
        !matches!(self, RecordKind::Data | RecordKind::Checkpoint)
    }

    /// A short lower-case name, for tools.
    pub const fn name(self) -> &'static str {
        match self {
            RecordKind::Data => "data",
            RecordKind::Checkpoint => "checkpoint",
            RecordKind::CheckpointBegin => "checkpoint-begin",
            RecordKind::CheckpointCommit => "checkpoint-commit",
            RecordKind::CheckpointAbort => "checkpoint-abort",
            RecordKind::Truncated => "truncated",
        }
    }
}

/// One stored record: what a [`WalStore`](crate::WalStore) persists, in Lsn order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Position in the log.
    pub lsn: Lsn,
    /// What the record is.
    pub kind: RecordKind,
    /// Opaque bytes.
    pub payload: Bytes,
}

impl Record {
    /// A record with the given parts.
    pub fn new(lsn: Lsn, kind: RecordKind, payload: impl Into<Bytes>) -> Record {
        Record {
            lsn,
            kind,
            payload: payload.into(),
        }
    }

    /// A marker record whose payload is an Lsn: a checkpoint commit or abort
    /// naming its begin marker, or a `Truncated` marker naming the cut point.
    pub fn marker(lsn: Lsn, kind: RecordKind, target: Lsn) -> Record {
        Record::new(lsn, kind, lsn_payload(target))
    }

    /// The Lsn carried in a commit, abort or truncated marker's payload.
    pub fn marker_target(&self) -> Result<Lsn, Error> {
        let raw: [u8; 8] = self
            .payload
            .as_ref()
            .try_into()
            .map_err(|_| Error::Corrupt {
                location: crate::Location::Lsn(self.lsn),
                why: format!(
                    "{} marker has a {}-byte payload, expected 8",
                    self.kind.name(),
                    self.payload.len()
                ),
            })?;
        Ok(Lsn(u64::from_be_bytes(raw)))
    }

    /// The user-visible entry for this record, or `None` for a marker.
    pub fn into_entry(self) -> Option<Entry> {
        let kind = match self.kind {
            RecordKind::Data => EntryKind::Data,
            RecordKind::Checkpoint => EntryKind::Checkpoint,
            _ => return None,
        };
        Some(Entry {
            lsn: self.lsn,
            kind,
            payload: self.payload,
        })
    }
}

/// The payload of a marker that names `target`: 8 bytes, big-endian.
pub(crate) fn lsn_payload(target: Lsn) -> Bytes {
    Bytes::copy_from_slice(&target.get().to_be_bytes())
}

/// Whether an entry is application data or part of a checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// Appended with [`Wal::append`](crate::Wal::append) and friends.
    Data,
    /// Appended to a checkpoint with [`Checkpoint::append`](crate::Checkpoint::append).
    Checkpoint,
}

/// An entry as the application sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Position in the log.
    pub lsn: Lsn,
    /// Data or checkpoint.
    pub kind: EntryKind,
    /// The bytes the application appended.
    pub payload: Bytes,
}
