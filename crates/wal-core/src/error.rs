//! The one public error type.

use std::{fmt, io, path::PathBuf, sync::Arc};

use crate::Lsn;

/// Where corruption was found.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Location {
    /// A byte offset in a file.
    File {
        /// The file.
        path: PathBuf,
        /// Byte offset from the start of the file.
        offset: u64,
    },
    /// A key in a key-value store.
    Key(String),
    /// A record, by Lsn.
    Lsn(Lsn),
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::File { path, offset } => write!(f, "{} at offset {}", path.display(), offset),
            Location::Key(k) => write!(f, "key {k:?}"),
            Location::Lsn(l) => write!(f, "lsn {l}"),
        }
    }
}

/// Every error the WAL and its backends report. Match on the variant to decide
/// what to do; the message is for humans.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// This writer lost ownership of the log (its lease expired or another
    /// writer took over). Nothing it sends lands any more.
    #[error("fenced: this writer no longer owns the log ({reason})")]
    Fenced {
        /// What happened.
        reason: String,
    },
    /// Another owner holds the log.
    #[error("the log is locked by another owner ({holder})")]
    Locked {
        /// Who holds it, as far as the backend can tell.
        holder: String,
    },
    /// Stored data failed a checksum or structure check.
    #[error("corrupt log: {location}: {why}")]
    Corrupt {
        /// Where.
        location: Location,
        /// What is wrong.
        why: String,
    },
    /// An entry (or an atomic batch) is larger than the configured maximum.
    /// Nothing was written.
    #[error("entry of {size} bytes exceeds the limit of {max} bytes")]
    EntryTooLarge {
        /// Size of the rejected entry or batch, in bytes.
        size: usize,
        /// The limit, in bytes.
        max: usize,
    },
    /// An earlier write, sync or ownership check failed; the Wal accepts
    /// nothing more. Reopen it to recover.
    #[error("the wal is poisoned by an earlier failure: {cause}")]
    Poisoned {
        /// The failure that poisoned the Wal.
        cause: Arc<Error>,
    },
    /// A store method, or the Wal's controller itself, panicked. The Wal is
    /// poisoned with it ([`Error::Poisoned`] wraps it for every later
    /// operation): the panic may have left the store half-way through a call,
    /// so the Wal neither trusts nor uses it any more (it still closes it, to
    /// release ownership). A panic is a bug; reopen to recover what was
    /// acknowledged.
    #[error("the wal's controller panicked: {message}")]
    Panicked {
        /// The panic's message, or a note that it carried none.
        message: String,
    },
    /// The log has no Lsns left: `requested` more records after `last` would
    /// pass [`Lsn::LAST`]. Nothing was written, and the Wal is not poisoned:
    /// an atomic batch that does not fit is refused whole, and a smaller
    /// write may still fit. [`Wal::open`](crate::Wal::open) refuses a log
    /// whose last Lsn is `Lsn::LAST` or above with it (`requested` 1). No log
    /// gets there by appending; see [`Lsn::LAST`].
    #[error("no lsns left: {requested} more record(s) after lsn {last} would pass the largest lsn {max}", max = Lsn::LAST)]
    LsnExhausted {
        /// The last Lsn the log has used.
        last: Lsn,
        /// How many records the refused write needed.
        requested: u64,
    },
    /// The Wal was closed; from a store, the handle is closed or was never
    /// opened (every backend answers this, never `Fenced`, which means
    /// another writer took the log).
    #[error("the wal is closed")]
    Closed,
    /// Only one checkpoint may be open at a time.
    #[error("a checkpoint is already in progress")]
    CheckpointInProgress,
    /// `truncate_after` would remove the commit marker of the last committed
    /// checkpoint, and the checkpoint it would fall back to is already gone.
    #[error("cannot truncate after {requested}: the last committed checkpoint's commit marker is at {commit}")]
    TruncateBelowCheckpoint {
        /// The requested cut point.
        requested: Lsn,
        /// The commit marker's Lsn.
        commit: Lsn,
    },
    /// Records a reader asked for were trimmed away before it read them:
    /// the first record still stored is `first`, above the `requested`
    /// Lsn. Nothing was skipped silently; read from `first` to go on past
    /// the gap knowingly.
    #[error(
        "records from lsn {requested} were trimmed away: the first stored record is at lsn {first}"
    )]
    Trimmed {
        /// The first Lsn the reader asked for.
        requested: Lsn,
        /// The first Lsn still stored (the one after the head if none is).
        first: Lsn,
    },
    /// A transient backend failure (e.g. etcd unreachable). The operation's
    /// outcome is known not to have happened, unless stated otherwise.
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    /// The TLS connection to the backend could not be established: the
    /// server's certificate is not trusted (not signed by the configured
    /// CA, expired, issued for another name), the server refused this
    /// client's certificate (missing, or not signed by a CA it trusts), or
    /// the server does not speak TLS. A configuration problem, not a
    /// transient one: retrying does not help. Reported before any request
    /// was sent, so nothing was applied.
    #[error("tls: {0}")]
    Tls(String),
    /// The caller passed something the backend cannot accept.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// An I/O error from the operating system.
    #[error("i/o error: {0}")]
    Io(#[source] Arc<io::Error>),
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(Arc::new(e))
    }
}

impl Error {
    /// The failure behind a [`Error::Poisoned`], or this error itself.
    pub fn root_cause(&self) -> &Error {
        match self {
            Error::Poisoned { cause } => cause.root_cause(),
            e => e,
        }
    }

    /// A short, stable name of the variant (`"fenced"`, `"io"`,
    /// `"corrupt"`, ...), for logs and metric labels. A `Poisoned` error is
    /// named by its root cause.
    pub fn kind(&self) -> &'static str {
        match self.root_cause() {
            Error::Fenced { .. } => "fenced",
            Error::Locked { .. } => "locked",
            Error::Corrupt { .. } => "corrupt",
            Error::EntryTooLarge { .. } => "entry_too_large",
            Error::Poisoned { .. } => "poisoned",
            Error::Panicked { .. } => "panicked",
            Error::LsnExhausted { .. } => "lsn_exhausted",
            Error::Closed => "closed",
            Error::CheckpointInProgress => "checkpoint_in_progress",
            Error::TruncateBelowCheckpoint { .. } => "truncate_below_checkpoint",
            Error::Trimmed { .. } => "trimmed",
            Error::Unavailable(_) => "unavailable",
            Error::Tls(_) => "tls",
            Error::InvalidArgument(_) => "invalid_argument",
            Error::Io(_) => "io",
        }
    }

    /// True if this writer lost ownership (directly or as the poisoning cause).
    pub fn is_fenced(&self) -> bool {
        matches!(self.root_cause(), Error::Fenced { .. })
    }

    /// Wraps this error as the cause of a poisoned Wal (without nesting).
    pub fn poisoned(self) -> Error {
        match self {
            e @ Error::Poisoned { .. } => e,
            e => Error::Poisoned { cause: Arc::new(e) },
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
