//! The conformance suite on MemStore.

use async_trait::async_trait;
use wal_core::{testkit::StoreFactory, MemStore};

struct MemFactory(MemStore);

#[async_trait]
impl StoreFactory for MemFactory {
    type Store = MemStore;
    async fn store(&self) -> MemStore {
        self.0.clone()
    }
    async fn after_crash(&self) {
        self.0.crash();
    }
}

async fn factory() -> MemFactory {
    MemFactory(MemStore::new())
}

wal_core::conformance_tests!(factory);
