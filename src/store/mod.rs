//! Storage: the [`Backend`] trait and its sled implementation, the Raft log store on top of it,
//! and the state machine store with its snapshots.

pub mod backend;
pub mod log_store;
pub mod sled_backend;
pub mod state_machine;

pub use backend::Backend;
pub use log_store::LogStore;
pub use sled_backend::SledBackend;
pub use state_machine::{Machine, StateMachineStore};

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use openraft::testing::log::{StoreBuilder, Suite};
    use openraft::StorageError;

    use super::*;
    use crate::raft::TypeConfig;

    fn read_err<E: std::error::Error + 'static>(e: &E) -> StorageError<TypeConfig> {
        StorageError::read(openraft::errors::ErrorSource::from_error(e))
    }

    /// Builds a fresh sled-backed log store and state machine in a temporary directory.
    struct SledStoreBuilder;

    impl StoreBuilder<TypeConfig, LogStore<SledBackend>, StateMachineStore, tempfile::TempDir>
        for SledStoreBuilder
    {
        async fn build(
            &self,
        ) -> Result<(tempfile::TempDir, LogStore<SledBackend>, StateMachineStore), StorageError<TypeConfig>>
        {
            let dir = tempfile::tempdir().map_err(|e| read_err(&e))?;
            let backend = Arc::new(SledBackend::open(dir.path()).map_err(|e| read_err(&e))?);
            let log = LogStore::new(backend.clone()).map_err(|e| read_err(&e))?;
            let sm = StateMachineStore::open(backend, Default::default()).map_err(|e| read_err(&e))?;
            Ok((dir, log, sm))
        }
    }

    /// openraft's storage conformance suite against our sled store.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn openraft_storage_suite() {
        Suite::test_all(SledStoreBuilder).await.expect("storage suite");
    }
}
