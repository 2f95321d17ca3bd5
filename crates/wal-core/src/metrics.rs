//! What a Wal reports through the [`metrics`](https://docs.rs/metrics)
//! facade (feature `metrics`; without it every call here compiles to
//! nothing). The names, types, units and labels are listed in the crate
//! docs ("Metrics") and the README; every metric carries the label
//! `wal` = [`WalOptions::metrics_name`](crate::WalOptions::metrics_name).
//! The handles are registered once, when the Wal opens, so a batch costs a
//! few atomic adds and no lookups.

use std::{sync::Arc, time::Duration};

use tokio::sync::Semaphore;

use crate::Error;

/// Who asked for a sync.
#[derive(Clone, Copy, Debug)]
pub(crate) enum SyncTrigger {
    /// `Wal::sync` or `Wal::wait_durable`.
    Explicit,
    /// The store's `Durability::Interval` ran out.
    Interval,
    /// The store's `Durability::Bytes` budget was reached.
    Bytes,
}

#[cfg(feature = "metrics")]
mod on {
    use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram, SharedString};

    pub(super) struct Handles {
        pub name: SharedString,
        pub batches: Counter,
        pub records: Counter,
        pub bytes: Counter,
        pub append_seconds: Histogram,
        pub batch_records: Histogram,
        pub syncs_explicit: Counter,
        pub syncs_interval: Counter,
        pub syncs_bytes: Counter,
        pub sync_seconds: Histogram,
        pub queued_bytes: Gauge,
        pub trims: Counter,
        pub truncates: Counter,
        pub checkpoint_commits: Counter,
        pub checkpoint_aborts: Counter,
    }

    /// Units and help texts, for exporters that show them (once per process).
    fn describe() {
        use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            describe_counter!(
                "wal_batches_total",
                Unit::Count,
                "store appends (group-commit or atomic batches) that returned Ok"
            );
            describe_counter!(
                "wal_records_total",
                Unit::Count,
                "records appended (data entries and markers)"
            );
            describe_counter!("wal_bytes_total", Unit::Bytes, "payload bytes appended");
            describe_histogram!(
                "wal_append_seconds",
                Unit::Seconds,
                "one store append: write + fdatasync on fs, the txn(s) on etcd"
            );
            describe_histogram!("wal_batch_records", Unit::Count, "records per store append");
            describe_counter!(
                "wal_syncs_total",
                Unit::Count,
                "store syncs that returned Ok, by trigger (explicit, interval, bytes)"
            );
            describe_histogram!("wal_sync_seconds", Unit::Seconds, "one store sync");
            describe_gauge!(
                "wal_queued_bytes",
                Unit::Bytes,
                "payload bytes submitted and not yet answered (backpressure at max_queued_bytes)"
            );
            describe_counter!(
                "wal_trims_total",
                Unit::Count,
                "trim_before calls that succeeded"
            );
            describe_counter!(
                "wal_truncates_total",
                Unit::Count,
                "truncate_after calls that succeeded"
            );
            describe_counter!(
                "wal_checkpoint_commits_total",
                Unit::Count,
                "checkpoint commit markers made durable"
            );
            describe_counter!(
                "wal_checkpoint_aborts_total",
                Unit::Count,
                "checkpoint abort markers made durable (abort or drop)"
            );
            describe_counter!(
                "wal_poisoned_total",
                Unit::Count,
                "poisonings, by the root cause's Error::kind"
            );
        });
    }

    impl Handles {
        pub(super) fn new(name: &str) -> Handles {
            describe();
            let name = SharedString::from(name.to_string());
            let l = || [("wal", name.clone())];
            let sync = |trigger: &'static str| counter!("wal_syncs_total", "wal" => name.clone(), "trigger" => trigger);
            Handles {
                batches: counter!("wal_batches_total", &l()),
                records: counter!("wal_records_total", &l()),
                bytes: counter!("wal_bytes_total", &l()),
                append_seconds: histogram!("wal_append_seconds", &l()),
                batch_records: histogram!("wal_batch_records", &l()),
                syncs_explicit: sync("explicit"),
                syncs_interval: sync("interval"),
                syncs_bytes: sync("bytes"),
                sync_seconds: histogram!("wal_sync_seconds", &l()),
                queued_bytes: gauge!("wal_queued_bytes", &l()),
                trims: counter!("wal_trims_total", &l()),
                truncates: counter!("wal_truncates_total", &l()),
                checkpoint_commits: counter!("wal_checkpoint_commits_total", &l()),
                checkpoint_aborts: counter!("wal_checkpoint_aborts_total", &l()),
                name,
            }
        }

        pub(super) fn poisoned(&self, cause: &'static str) {
            counter!("wal_poisoned_total", "wal" => self.name.clone(), "cause" => cause)
                .increment(1);
        }
    }
}

/// One Wal's metric handles, shared by its handles and its controller.
pub(crate) struct WalMetrics {
    #[cfg(feature = "metrics")]
    h: on::Handles,
    /// The queue budget, to report how much of it is taken.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    queue: Arc<Semaphore>,
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    queue_cap: usize,
}

impl WalMetrics {
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub(crate) fn new(name: &str, queue: Arc<Semaphore>, queue_cap: usize) -> WalMetrics {
        WalMetrics {
            #[cfg(feature = "metrics")]
            h: on::Handles::new(name),
            queue,
            queue_cap,
        }
    }

    /// A store append of `records` records and `bytes` payload bytes
    /// returned `Ok` after `took`.
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub(crate) fn batch(&self, records: usize, bytes: usize, took: Duration) {
        #[cfg(feature = "metrics")]
        {
            self.h.batches.increment(1);
            self.h.records.increment(records as u64);
            self.h.bytes.increment(bytes as u64);
            self.h.append_seconds.record(took.as_secs_f64());
            self.h.batch_records.record(records as f64);
        }
    }

    /// A store sync returned `Ok` after `took`.
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub(crate) fn sync(&self, trigger: SyncTrigger, took: Duration) {
        #[cfg(feature = "metrics")]
        {
            match trigger {
                SyncTrigger::Explicit => &self.h.syncs_explicit,
                SyncTrigger::Interval => &self.h.syncs_interval,
                SyncTrigger::Bytes => &self.h.syncs_bytes,
            }
            .increment(1);
            self.h.sync_seconds.record(took.as_secs_f64());
        }
    }

    /// Reports the payload bytes queued and not yet answered.
    pub(crate) fn queue_depth(&self) {
        #[cfg(feature = "metrics")]
        {
            let free = self.queue.available_permits().min(self.queue_cap);
            self.h.queued_bytes.set((self.queue_cap - free) as f64);
        }
    }

    pub(crate) fn trimmed(&self) {
        #[cfg(feature = "metrics")]
        self.h.trims.increment(1);
    }

    pub(crate) fn truncated(&self) {
        #[cfg(feature = "metrics")]
        self.h.truncates.increment(1);
    }

    pub(crate) fn checkpoint_committed(&self) {
        #[cfg(feature = "metrics")]
        self.h.checkpoint_commits.increment(1);
    }

    pub(crate) fn checkpoint_aborted(&self) {
        #[cfg(feature = "metrics")]
        self.h.checkpoint_aborts.increment(1);
    }

    /// The Wal was poisoned by `cause`.
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub(crate) fn poisoned(&self, cause: &Error) {
        #[cfg(feature = "metrics")]
        self.h.poisoned(cause.kind());
    }
}
