//! The wal-core conformance suite on EtcdStore, against a real etcd (one
//! container shared by every check; each check has its own key prefix).

mod support;

use async_trait::async_trait;
use wal_core::testkit::StoreFactory;
use wal_etcd::EtcdStore;

struct EtcdFactory {
    endpoints: Vec<String>,
    prefix: String,
}

#[async_trait]
impl StoreFactory for EtcdFactory {
    type Store = EtcdStore;

    async fn store(&self) -> EtcdStore {
        EtcdStore::new(support::options(&self.endpoints, &self.prefix, "log"))
    }

    /// The crashed writer's lease outlives it; revoke it from a second
    /// client, as an operator (or the TTL) would.
    async fn after_crash(&self) {
        support::revoke_owner(&self.endpoints, &self.prefix, "log").await;
    }
}

async fn factory() -> EtcdFactory {
    EtcdFactory {
        endpoints: support::shared_endpoints().await,
        prefix: format!("/{}/", support::unique("conformance")),
    }
}

wal_core::conformance_tests!(factory);

/// The same checks with tiny packs and chunks, so every check also crosses
/// pack, chunk and multi-txn boundaries.
mod small_limits {
    use super::*;
    use wal_etcd::EtcdLimits;

    struct SmallFactory(EtcdFactory);

    #[async_trait]
    impl StoreFactory for SmallFactory {
        type Store = EtcdStore;
        async fn store(&self) -> EtcdStore {
            let mut limits = EtcdLimits::default();
            limits.pack_bytes = 64;
            limits.chunk_bytes = 7;
            limits.max_txn_ops = 4;
            EtcdStore::new(
                support::options(&self.0.endpoints, &self.0.prefix, "log").limits(limits),
            )
        }
        async fn after_crash(&self) {
            self.0.after_crash().await;
        }
    }

    async fn factory() -> SmallFactory {
        SmallFactory(super::factory().await)
    }

    wal_core::conformance_tests!(factory);
}
