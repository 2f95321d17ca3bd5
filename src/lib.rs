//! # wal
//!
//! A write-ahead log with pluggable storage backends: applications append
//! opaque entries, checkpoint their state from time to time, and after a
//! crash get back exactly the last committed checkpoint plus every
//! acknowledged entry after it.
//!
//! This crate is the facade: it re-exports the core ([`Wal`], [`Checkpoint`],
//! [`Recovery`], [`WalStore`], [`MemStore`], [`Error`], ...) from `wal-core`
//! at its root, and each backend as a module behind a feature:
//!
//! | feature | default | module | backend |
//! | --- | --- | --- | --- |
//! | `fs` | yes | [`wal::fs`](crate::fs) | `wal-fs`: segment files in a local directory (the embedded default) |
//! | `etcd` | no | `wal::etcd` | `wal-etcd`: records in etcd, lease ownership and fencing |
//! | `testkit` | no | `wal::testkit` | the backend conformance suite of `wal-core` |
//!
//! Depend on `wal-core` plus one backend crate instead if you prefer; the
//! types are the same.
//!
//! ```
//! use futures::StreamExt;
//! use wal::{fs::{FsOptions, FsStore}, Wal, WalOptions};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let tmp = tempfile::tempdir()?;
//! # let dir = tmp.path().join("log");
//! let (wal, mut recovery) = Wal::open(FsStore::new(&dir, FsOptions::default()), WalOptions::default()).await?;
//! while let Some(entry) = recovery.next().await {
//!     let _entry = entry?; // re-apply it to your state
//! }
//! let lsn = wal.append(&b"put a=1"[..]).await?; // durable (fdatasync'ed) when it returns
//! # let _ = lsn;
//! wal.close().await?;
//! # Ok(())
//! # }
//! ```
//!
//! `examples/kvstore` is a complete redo-log key-value store with
//! checkpoints; `cargo run --release --example kvstore -- demo --dir DIR`
//! crashes it with SIGKILL a few times and shows that every acknowledged
//! write comes back.
#![cfg_attr(docsrs, feature(doc_cfg))]

pub use wal_core::*;

/// The file backend: [`FsStore`](fs::FsStore) on a local directory
/// (re-export of the `wal-fs` crate).
#[cfg(feature = "fs")]
#[cfg_attr(docsrs, doc(cfg(feature = "fs")))]
pub use wal_fs as fs;

/// The etcd backend: `EtcdStore`, with lease ownership and fencing
/// (re-export of the `wal-etcd` crate).
#[cfg(feature = "etcd")]
#[cfg_attr(docsrs, doc(cfg(feature = "etcd")))]
pub use wal_etcd as etcd;
