//! # wal-core
//!
//! A write-ahead log with pluggable storage backends. Applications append
//! opaque entries, checkpoint their state from time to time, and after a crash
//! get back exactly the last committed checkpoint plus every acknowledged entry
//! after it.
//!
//! - [`Wal`]: the handle. `append` returns once the entry is durable; `submit`
//!   pipelines; `append_batch` is atomic; [`Checkpoint`] is the checkpoint
//!   transaction.
//! - The controller: one task owns the store. Callers' operations queue on a
//!   channel (the op list); the task drains what is queued into one batch,
//!   makes it durable with one store call (one write and one fdatasync on the
//!   file backend), then completes the callers in Lsn order. While a batch is
//!   being made durable the next one accumulates: that is group commit.
//! - [`WalStore`]: what a backend implements (seven methods); [`MemStore`] is
//!   the in-memory one.
//! - [`Recovery`]: the stream [`Wal::open`] returns.
//!
//! ## Recovery contract
//! On open, the recovery stream yields the entries of the last committed
//! checkpoint in Lsn order, then every data entry with an Lsn above that
//! checkpoint's begin marker, in Lsn order. Entries of aborted or unfinished
//! checkpoints never appear. With no committed checkpoint it yields every data
//! entry. After any failed write the Wal is poisoned: every later operation
//! fails with [`Error::Poisoned`] and nothing is written after the hole. A
//! panic in a store method or in the controller poisons it the same way, with
//! [`Error::Panicked`] as the cause: it never passes for a clean close.
//!
//! ## Metrics
//! With the `metrics` feature, a Wal reports batches, records and bytes
//! appended, append and sync latency histograms, the batch-size histogram,
//! queued bytes, syncs by trigger, trims, truncates, checkpoint commits and
//! aborts, and poisonings by cause through the `metrics` facade, each with
//! the label `wal` = [`WalOptions::metrics_name`]. The README's "Metrics"
//! table lists names, types and units.
//!
//! ## Testkit
//! With the `testkit` feature, `testkit` holds the conformance suite every
//! backend runs, and `conformance_tests!` expands to one `#[tokio::test]`
//! per check.
// Library hygiene: every public type is Debug; nothing is `pub` that is
// not reachable from outside.
#![warn(missing_debug_implementations, unreachable_pub)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod blocking;
mod checkpoint;
mod controller;
mod error;
mod lsn;
mod mem;
mod metrics;
mod options;
mod record;
mod recovery;
mod store;
mod wal;

#[cfg(feature = "testkit")]
pub mod testkit;

pub use checkpoint::Checkpoint;
pub use controller::CheckpointInfo;
pub use error::{Error, Location, Result};
pub use lsn::Lsn;
pub use mem::{MemFault, MemStore};
pub use options::WalOptions;
pub use record::{Entry, EntryKind, Record, RecordKind};
pub use recovery::Recovery;
pub use store::{
    check_append, Durability, FailureSignal, ReadLimit, StoreReader, StoreState, WalStore,
};
pub use wal::{Completion, Wal};
