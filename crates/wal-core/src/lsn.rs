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
    /// The largest Lsn a record may have: `u64::MAX - 1`.
    ///
    /// The Wal assigns Lsns up to and including it, then refuses further
    /// writes with [`Error::LsnExhausted`](crate::Error::LsnExhausted) (nothing
    /// is written: Lsns never wrap). [`Wal::open`](crate::Wal::open) refuses a
    /// log whose last Lsn is `LAST` or above with the same error, since it has
    /// no room for another record; its records stay readable through the
    /// store. No log gets there by appending (at ten million records a second
    /// that takes 58,000 years): a log near it was crafted or damaged.
    pub const LAST: Lsn = Lsn(u64::MAX - 1);
    /// The largest representable Lsn. No record has it (see [`Lsn::LAST`]):
    /// it serves as an open upper bound, and it keeps the Lsn after `LAST`
    /// representable.
    pub const MAX: Lsn = Lsn(u64::MAX);

    /// The raw number.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The Lsn right after this one, saturating at [`Lsn::MAX`]. Exact for
    /// every record's Lsn (they stop at [`Lsn::LAST`]); use
    /// [`checked_add`](Self::checked_add) where the Lsn may come from outside.
    pub const fn next(self) -> Lsn {
        Lsn(self.0.saturating_add(1))
    }

    /// The Lsn `n` after this one, or `None` if that overflows `u64`. It does
    /// not check against [`Lsn::LAST`]; the Wal does.
    pub const fn checked_add(self, n: u64) -> Option<Lsn> {
        match self.0.checked_add(n) {
            Some(v) => Some(Lsn(v)),
            None => None,
        }
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
