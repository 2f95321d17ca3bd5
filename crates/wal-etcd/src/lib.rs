//! # wal-etcd
//!
//! [`EtcdStore`]: the write-ahead log's [`WalStore`](wal_core::WalStore)
//! backend on etcd (v3 API, etcd >= 3.4). Many processes may compete to be
//! the single writer of a log; ownership moves between them safely, and a
//! writer that lost it cannot land anything. [`EtcdReader`] reads and
//! follows a log without owning it (a standby). [`EtcdSession`] carries
//! many logs of one process on one lease and one keep-alive
//! ([`EtcdStore::with_session`]); [`OwnerFence`] fences the application's
//! own txns with a log's ownership; [`list_logs`] lists the logs under a
//! prefix.
//!
// Intra-doc targets of FORMAT.md's links. They come before the included
// text, so they win over its own definitions (which serve readers of the
// file on its own).
//! [`EtcdLimits`]: crate::EtcdLimits
//! [`EtcdLimits::chunk_bytes`]: crate::EtcdLimits::chunk_bytes
//! [`EtcdLimits::chunk_threshold`]: crate::EtcdLimits::chunk_threshold
//! [`EtcdLimits::pack_bytes`]: crate::EtcdLimits::pack_bytes
//! [`EtcdLimits::max_txn_ops`]: crate::EtcdLimits::max_txn_ops
//! [`EtcdLimits::max_request_bytes`]: crate::EtcdLimits::max_request_bytes
//! [`EtcdOptions::lease_ttl`]: crate::EtcdOptions::lease_ttl
//! [`EtcdOptions::request_timeout`]: crate::EtcdOptions::request_timeout
//! [`Acquire::FailFast`]: crate::Acquire::FailFast
//! [`Acquire::Wait`]: crate::Acquire::Wait
//! [`EtcdReader`]: crate::EtcdReader
//! [`EtcdReader::read_from`]: crate::EtcdReader::read_from
//! [`EtcdReader::tail`]: crate::EtcdReader::tail
//! [`FencingToken`]: crate::FencingToken
//! [`OwnerFence::compare`]: crate::OwnerFence::compare
//! [`EtcdSession`]: crate::EtcdSession
//! [`space`]: crate::space()
//! [`Error::Fenced`]: wal_core::Error::Fenced
//! [`Error::Locked`]: wal_core::Error::Locked
//! [`Error::Unavailable`]: wal_core::Error::Unavailable
//! [`Wal::failed`]: wal_core::Wal::failed
#![doc = include_str!("../FORMAT.md")]
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
// Library hygiene: every public type is Debug; nothing is `pub` that is
// not reachable from outside.
#![warn(missing_debug_implementations, unreachable_pub)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod client;
mod error;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
#[cfg(test)]
mod golden_tests;
mod keepalive;
mod keys;
mod list;
mod options;
mod owner;
mod read;
mod reader;
mod session;
mod space;
mod store;
#[cfg(feature = "tls")]
mod tls;

pub use etcd_client;
pub use list::{list_logs, list_logs_with_client, LogSummary};
pub use options::{Acquire, EtcdLimits, EtcdOptions};
pub use owner::{FencingToken, OwnerFence, OwnerInfo};
pub use reader::{EtcdReader, KeyProblem, ScanReport};
pub use session::EtcdSession;
pub use space::{space, MemberSpace, SpaceReport};
pub use store::EtcdStore;
#[cfg(feature = "tls")]
#[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
pub use tls::EtcdTls;
