//! # wal-etcd
//!
//! [`EtcdStore`]: the write-ahead log's [`WalStore`](wal_core::WalStore)
//! backend on etcd (v3 API, etcd >= 3.4). Many processes may compete to be
//! the single writer of a log; ownership moves between them safely, and a
//! writer that lost it cannot land anything. [`EtcdReader`] reads and
//! follows a log without owning it (a standby).
//!
//! ## Key layout
//!
//! Every key of a log starts with `B = {prefix}{name}/` (default prefix
//! `/wal/`; the name may not contain `/`). Keys are bytes; the Lsns in them
//! are fixed-width, zero-padded decimal (20 digits, enough for `u64::MAX`),
//! so etcd's byte order of keys is Lsn order.
//!
//! | key | value | lease |
//! |---|---|---|
//! | `B owner` | the owner's writer id (UTF-8) | the owner's lease |
//! | `B head` | the commit point: last committed Lsn | none |
//! | `B r/{L:020}` | a *pack* whose last record has Lsn `L`, or the *descriptor* of chunked record `L` | none |
//! | `B c/{L:020}/{i:010}` | chunk `i` (from 0) of chunked record `L`'s payload | none |
//!
//! A pack is named by its LAST Lsn, so the pack holding any Lsn `x` is the
//! first record key `>= B r/{x:020}`: reads are plain ascending range reads.
//! Record keys never carry a lease: a lost writer never loses data.
//!
//! ## Value encoding, byte by byte
//!
//! All integers are big-endian. `crc32` is CRC-32/ISO-HDLC (the zlib /
//! `crc32fast` one).
//!
//! **head** (9 bytes): `[0] = 0x01` (format version) `| [1..9] = u64 Lsn`.
//!
//! **pack** (value of `B r/{L}`, 5 + Σ(13 + len) bytes):
//!
//! ```text
//! [0]          0x01                       format: pack v1
//! then, per record, in strictly increasing Lsn order (the last one is L):
//!   [+0..+8]   u64  lsn
//!   [+8]       u8   kind (1 data, 2 checkpoint, 3 checkpoint-begin,
//!                         4 checkpoint-commit, 5 checkpoint-abort, 6 truncated)
//!   [+9..+13]  u32  payload length n
//!   [+13..]    n bytes of payload
//! last 4       u32  crc32 of every preceding byte of the value
//! ```
//!
//! **descriptor** of a chunked record (value of `B r/{L}`, 30 bytes):
//!
//! ```text
//! [0]       0x02       format: chunked record v1
//! [1..9]    u64  lsn (= L)
//! [9]       u8   kind
//! [10..18]  u64  payload length
//! [18..22]  u32  number of chunks
//! [22..26]  u32  crc32 of the whole payload
//! [26..30]  u32  crc32 of bytes 0..26
//! ```
//!
//! **chunk** (value of `B c/{L}/{i}`): raw payload bytes; the payload is the
//! concatenation of the chunks in key order (all but the last have the
//! writer's [`EtcdLimits::chunk_bytes`]; readers do not need to know it).
//!
//! Records whose payload exceeds [`EtcdLimits::chunk_threshold`] (pack size
//! 64 KiB minus 18 bytes of framing, by default) are chunked; smaller ones
//! are packed, several per key, up to [`EtcdLimits::pack_bytes`] per value.
//! A record's kind byte is stored as is; the backend never interprets
//! checkpoints.
//!
//! ## Commit point: all-or-nothing appends over several txns
//!
//! One `append` (a group-commit batch, or an atomic `append_batch`) is
//! encoded as put ops (packs, descriptors, chunks), then split into txns of
//! at most [`EtcdLimits::max_txn_ops`] − 1 ops and
//! [`EtcdLimits::max_request_bytes`] bytes (framing included). The LAST txn
//! also puts `B head` = the append's last Lsn. That put is the commit point:
//!
//! - readers (the owner's and [`EtcdReader`]'s) only read record keys at
//!   or below the head, so records of an append that has not reached its
//!   commit point are invisible;
//! - a writer that dies between txns leaves keys above the head; the next
//!   owner deletes them (`B r/{head+1}..` and `B c/{head+1}..`) in a fenced
//!   txn when it opens. Only the owner deletes; readers never repair;
//! - a small append is exactly one txn (records + head), one round trip.
//!
//! `truncate_after(x)` deletes every record key above `x` (rewriting the
//! pack that straddles `x`), puts the `truncated` high-water marker (its Lsn
//! is above every Lsn ever handed out) and sets the head to the marker's Lsn,
//! all in one txn, so cut Lsns are never reused.
//! `remove_before(x)` deletes the record keys (whole packs) and chunk keys
//! below `x` in one txn.
//!
//! ## Ownership and fencing
//!
//! See [`owner`](crate::FencingToken) for the claim protocol: a lease (TTL
//! [`EtcdOptions::lease_ttl`], default 10 s, at least 2 s), a txn that
//! creates `B owner` only if absent, and the key's create revision as the
//! [`FencingToken`]. EVERY mutation (append, truncate, trim, open-time
//! cleanup) is a txn whose compares include `create_revision(B owner) ==
//! token`; appends and truncates also compare `mod_revision(B head)` with
//! the revision of this owner's last head write. A failed compare is
//! [`Error::Fenced`](wal_core::Error::Fenced). The keep-alive runs in its own
//! task at TTL/3; when the lease is lost (expired/revoked, no acknowledged
//! keep-alive for a TTL, or the owner key deleted, seen by a watch) the
//! store's failure signal fires `Fenced` and the `Wal` poisons itself:
//! applications await [`Wal::failed`](wal_core::Wal::failed).
//!
//! [`Acquire::FailFast`] reports [`Error::Locked`](wal_core::Error::Locked)
//! naming the holder's writer id; [`Acquire::Wait`] watches the owner key
//! for its deletion up to a deadline and then claims it.
//!
//! ## Unknown outcomes
//!
//! A txn that times out, loses its connection, or is answered "database
//! space exceeded" may or may not have been applied (etcd applies the txn
//! that crosses `--quota-backend-bytes` and still answers NOSPACE). Such a
//! txn is never blindly re-sent:
//!
//! - a non-final txn of an append only puts keys above the head (invisible)
//!   and compares the head's revision, so it is sent again (same keys, same
//!   values) until the mutation's deadline (one lease TTL); if that fails the
//!   append did not commit (its head put was never applied);
//! - if the final txn of an append (or a truncate) has no definite answer,
//!   the store reads the owner key and the head back (retrying the read up
//!   to the deadline). Head moved to the target Lsn: committed, the append is
//!   acknowledged. Head unchanged after a NOSPACE answer: not committed (etcd
//!   answered, so it cannot apply later). Head unchanged after a timeout: the
//!   store bumps the head's revision with a fenced txn, so the lost txn
//!   (which compares that revision) can never apply, and then sends the
//!   mutation again;
//! - if the owner key is gone or replaced when reading back, the outcome is
//!   unknown (the txn may have landed before the lease went, and a new owner
//!   may have moved the head since): [`Error::Unavailable`](wal_core::Error::Unavailable)
//!   saying "outcome ... is unknown", never `Fenced`.
//!
//! Requests etcd certainly did not apply ("no leader", "too many requests",
//! a connection refused before anything was sent) are retried with a short
//! backoff up to the same deadline, so one sick member in the endpoint list
//! does not poison the writer.
//!
//! ## Errors: did my write happen?
//!
//! Every failed mutation poisons the `Wal` (whatever its outcome); a reopen
//! recovers exactly what committed.
//!
//! - `Fenced`: etcd evaluated the txn and its token compare failed (or the
//!   lease was already known lost before sending): nothing of it landed.
//! - `Unavailable("... did not commit ...")`, or `Unavailable` from a
//!   request etcd refused up front: it did not land, and never will.
//! - `Unavailable("outcome of the append up to lsn N is unknown ...")`: it
//!   may have landed; reopen and look (entries up to N are recovered iff it
//!   committed).
//! - `InvalidArgument`: etcd "request too large" / "too many operations in
//!   txn" name the [`EtcdLimits`] field to set (the store's own splitting
//!   keeps requests under the configured limits, so these mean the limits do
//!   not match the cluster); nothing landed. `EntryTooLarge`: payloads above
//!   `max_payload_bytes`; nothing was sent.
//!
//! Every request has a deadline ([`EtcdOptions::request_timeout`], which
//! must be shorter than the lease TTL): a paused member never hangs a
//! writer.
//!
//! ## Compaction and space: what the cluster needs
//!
//! etcd keeps every revision of every key until it is compacted. Each
//! append rewrites `B head` (one revision) and each trim deletes record keys
//! (their old values stay in the history), so a busy log grows etcd's
//! database without bound unless the cluster compacts:
//!
//! - run etcd with auto-compaction, e.g. `--auto-compaction-mode=periodic
//!   --auto-compaction-retention=1h` (or `revision` mode with a revision
//!   count). The store never reads old revisions; a reader pins one
//!   revision for each pass, and a compaction past it fails that pass with
//!   an error (a tail re-reads on its next poll), so any retention longer
//!   than one read pass works;
//! - compaction frees space inside the database file but does not shrink
//!   it: run `etcdctl defrag` (one member at a time) from time to time;
//! - size `--quota-backend-bytes` (default 2 GiB, at most 8 GiB
//!   recommended) for the live data (the records between trims) plus the
//!   history the retention keeps. When the quota is reached, etcd raises the
//!   NOSPACE alarm and refuses every put: appends fail (see above) and no
//!   writer can even claim a log. Recover with compact, defrag, `etcdctl
//!   alarm disarm`.
//!
//! [`space`] reports each member's database size (and the quota, where the
//! server says) and the NOSPACE alarm. `walctl inspect` on etcd reports the
//! database size and warns when it is
//! near the quota (the quota is in etcd's status answer from etcd 3.6 on;
//! for older servers pass the cluster's `--quota-backend-bytes`, default
//! 2 GiB) or when a NOSPACE alarm is raised.
//!
//! ## Key layout constraints
//!
//! A log's keys are `{prefix}{name}/...`, and its record and chunk ranges
//! are `{prefix}{name}/r/...` and `{prefix}{name}/c/...`. A prefix/name pair
//! whose keys would lie inside another log's ranges (`/wal/` + `app` and
//! `/wal/app/` + `r`) is refused with `InvalidArgument`: the other log's
//! trims would delete its keys.
//!
//! ## Credentials
//!
//! TLS ([`EtcdOptions::tls`] with an [`EtcdTls`]: the CA and, for
//! `--client-cert-auth` clusters, a client certificate and key; feature
//! `tls`, on by default) and user / password auth ([`EtcdOptions::user`])
//! are passed to etcd-client's `ConnectOptions`. `Debug` of the options
//! redacts them and nothing logs them. Connecting with TLS checks one
//! handshake per endpoint first, so that an untrusted server certificate,
//! a refused client certificate or a port without TLS fails at once with
//! [`Error::Tls`](wal_core::Error::Tls) instead of a timeout or a bare
//! "operation was canceled".
#![cfg_attr(docsrs, feature(doc_cfg))]

mod client;
mod error;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod keepalive;
mod keys;
mod options;
mod owner;
mod read;
mod reader;
mod space;
mod store;
#[cfg(feature = "tls")]
mod tls;

pub use etcd_client;
pub use options::{Acquire, EtcdLimits, EtcdOptions};
pub use owner::{FencingToken, OwnerInfo};
pub use reader::{EtcdReader, KeyProblem, ScanReport};
pub use space::{space, MemberSpace, SpaceReport};
pub use store::EtcdStore;
#[cfg(feature = "tls")]
#[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
pub use tls::EtcdTls;
