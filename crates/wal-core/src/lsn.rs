//! Log sequence numbers.

use std::fmt;

/// A log sequence number: the position of a record in the log.
///
/// Lsns are assigned by the [`Wal`](crate::Wal) in submission order, start at 1,
/// strictly increase and are never reused. Gaps appear only where the log was
/// truncated or trimmed on purpose, or where an operation was refused after its
/// Lsn was assigned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl Lsn {
    /// The Lsn before every record; no record ever has it.
    pub const ZERO: Lsn = Lsn(0);
    /// The Lsn of the first record of a new log.
    pub const FIRST: Lsn = Lsn(1);
    /// The largest representable Lsn.
    pub const MAX: Lsn = Lsn(u64::MAX);

    /// The raw number.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The Lsn right after this one.
    pub const fn next(self) -> Lsn {
        Lsn(self.0.saturating_add(1))
    }

    /// The Lsn right before this one (saturating at zero).
    pub const fn prev(self) -> Lsn {
        Lsn(self.0.saturating_sub(1))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl From<u64> for Lsn {
    fn from(v: u64) -> Self {
        Lsn(v)
    }
}

impl From<Lsn> for u64 {
    fn from(v: Lsn) -> Self {
        v.0
    }
}
