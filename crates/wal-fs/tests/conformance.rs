//! The wal-core conformance suite on FsStore, on real files.

use async_trait::async_trait;
use wal_core::testkit::StoreFactory;
use wal_fs::{FsOptions, FsStore};

struct FsFactory {
    dir: tempfile::TempDir,
    options: FsOptions,
}

#[async_trait]
impl StoreFactory for FsFactory {
    type Store = FsStore;
    async fn store(&self) -> FsStore {
        FsStore::new(self.dir.path().join("log"), self.options.clone())
    }
}

/// Small segments, so every check also crosses segment boundaries.
async fn factory() -> FsFactory {
    FsFactory {
        dir: tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}")),
        options: FsOptions::default().segment_bytes(4096),
    }
}

wal_core::conformance_tests!(factory);

mod default_options {
    use super::*;

    async fn factory() -> FsFactory {
        FsFactory {
            dir: tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}")),
            options: FsOptions::default(),
        }
    }

    wal_core::conformance_tests!(factory);
}
