//! Storage: the [`Backend`] trait and its sled implementation, the Raft log store on top of it,
//! and the state machine store with its snapshots.

pub mod backend;
pub mod log_store;
#[cfg(test)]
mod mem_backend;
pub(crate) mod record;
pub(crate) mod seed;
pub mod sled_backend;
pub mod space;
pub mod state_machine;

pub use log_store::LogStore;
pub use sled_backend::SledBackend;
pub use state_machine::{Machine, StateMachineStore};

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use openraft::testing::log::{StoreBuilder, Suite};
    use openraft::StorageError;

    use super::backend::Backend;
    use super::mem_backend::MemBackend;
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

    fn blank_entries(term: u64, indexes: std::ops::Range<u64>) -> Vec<(u64, Vec<u8>)> {
        indexes
            .map(|i| {
                let e = openraft::testing::blank_ent::<TypeConfig>(term, 1, i);
                (i, crate::raft::encode(&e).expect("encode"))
            })
            .collect()
    }

    /// Opens the backend in `dir` again. A dropped sled database lets go of its file lock only
    /// once its background flusher thread has ended, a moment later, so a lock refusal is
    /// tried again for up to 5 s; any other error fails the test.
    fn reopen(dir: &std::path::Path) -> SledBackend {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match SledBackend::open(dir) {
                Ok(backend) => return backend,
                Err(e)
                    if e.to_string().contains("could not acquire lock")
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20))
                }
                Err(e) => panic!("reopen: {e:?}"),
            }
        }
    }

    /// sled recovers a damaged file by cutting the log at the damage: the log looks older but
    /// valid. The `flushed-through` record says it once reached further: the node refuses to
    /// start.
    #[test]
    fn a_log_cut_short_behind_what_was_made_durable_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let backend = Arc::new(SledBackend::open(dir.path()).expect("open"));
            backend.put_entries(&blank_entries(1, 0..700)).expect("append");
            backend.flush().expect("flush");
            backend.lose_entries_from(600).expect("lose");
        }
        let backend = Arc::new(reopen(dir.path()));
        let log = LogStore::new(backend).expect("log");
        let err = log.verify(None).expect_err("a log that lost entries is refused");
        assert!(err.contains("made durable through entry 699"), "{err}");
    }

    /// A purge cut short (the disk filled up after the purge mark was written, before the
    /// entries were removed: a follower installing a snapshot far ahead of its log) leaves
    /// entries below the mark. They are garbage: the log starts after the mark, and the node
    /// starts (it used to stop with "inverted log order ... the log store is corrupted").
    #[tokio::test]
    async fn a_purge_cut_short_leaves_only_garbage() {
        use openraft::entry::RaftEntry;
        use openraft::storage::RaftLogStorage;
        let dir = tempfile::tempdir().expect("tempdir");
        let snapshot = openraft::testing::blank_ent::<TypeConfig>(4, 1, 508).log_id();
        {
            let backend = Arc::new(SledBackend::open(dir.path()).expect("open"));
            backend.put_entries(&blank_entries(3, 0..466)).expect("append");
            backend
                .put_meta("last_purged", &crate::raft::encode(&snapshot).expect("encode"))
                .expect("purge mark");
            backend.flush().expect("flush");
        }
        let backend = Arc::new(reopen(dir.path()));
        let mut log = LogStore::new(backend).expect("log");
        let state = log.get_log_state().await.expect("log state");
        assert_eq!(state.last_purged_log_id, Some(snapshot));
        assert_eq!(state.last_log_id, Some(snapshot));
        assert_eq!(log.verify(Some(snapshot)), Ok(()));
    }

    /// A log cut by the leader (a conflict) is no loss: the record comes down with it.
    #[test]
    fn a_log_cut_by_the_leader_is_accepted() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let backend = Arc::new(SledBackend::open(dir.path()).expect("open"));
            backend.put_entries(&blank_entries(1, 0..100)).expect("append");
            backend.flush().expect("flush");
            backend.remove_entries(80, u64::MAX).expect("truncate");
            backend.flush().expect("flush");
        }
        let backend = Arc::new(reopen(dir.path()));
        assert_eq!(LogStore::new(backend).expect("log").verify(None), Ok(()));
    }

    /// A flipped byte inside a record is found when it is read.
    #[test]
    fn a_damaged_record_is_found() {
        let dir = tempfile::tempdir().expect("tempdir");
        let backend = SledBackend::open(dir.path()).expect("open");
        backend.put_meta("vote", b"some vote").expect("put");
        assert_eq!(
            backend.get_meta("vote").expect("get").as_deref(),
            Some(&b"some vote"[..])
        );
        backend.corrupt_meta("vote").expect("corrupt");
        let err = backend.get_meta("vote").expect_err("damaged");
        assert!(err.to_string().contains("the stored vote is damaged"), "{err}");
    }

    /// Builds the stores on the crash-modelling in-memory backend.
    struct MemStoreBuilder;

    impl StoreBuilder<TypeConfig, LogStore<MemBackend>, StateMachineStore, ()> for MemStoreBuilder {
        async fn build(
            &self,
        ) -> Result<((), LogStore<MemBackend>, StateMachineStore), StorageError<TypeConfig>> {
            let backend = Arc::new(MemBackend::default());
            let log = LogStore::new(backend.clone()).map_err(|e| read_err(&e))?;
            let sm = StateMachineStore::open(backend, Default::default()).map_err(|e| read_err(&e))?;
            Ok(((), log, sm))
        }
    }

    /// The same suite against the in-memory backend the crash tests use, so those tests run
    /// on a store that meets the contract.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn openraft_storage_suite_in_memory() {
        Suite::test_all(MemStoreBuilder).await.expect("storage suite");
    }

    mod crash {
        use std::sync::Arc;
        use std::time::Duration;

        use openraft::BasicNode;

        use crate::raft::network::{ChannelPool, Network};
        use crate::raft::Raft;
        use crate::state::catalog::FeatureSpec;
        use crate::state::command::{Command, Request};
        use crate::state::State;
        use crate::store::mem_backend::MemBackend;
        use crate::store::{LogStore, StateMachineStore};

        fn put(i: u64) -> Request {
            Request {
                client_id: "writer".into(),
                request_id: i + 1,
                proposed_at_ms: 1_000 + i as i64,
                actor: "tester".into(),
                reason: String::new(),
                command: Command::PutFeature {
                    feature: FeatureSpec {
                        name: format!("f{i}"),
                        ..Default::default()
                    },
                    expected_revision: None,
                },
            }
        }

        /// A single-node Raft on `backend`, snapshotting every `every` entries and keeping one
        /// entry behind each snapshot. `None` if it could not start (the disk failed first).
        async fn start(backend: Arc<MemBackend>, every: u64) -> Option<(Raft, StateMachineStore)> {
            let config = openraft::Config {
                heartbeat_interval: 20,
                election_timeout_min: 60,
                election_timeout_max: 120,
                snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(every),
                max_in_snapshot_log_to_keep: 1,
                purge_batch_size: 1,
                enable_leader_restore: Some(false),
                ..Default::default()
            }
            .validate()
            .ok()?;
            let log = LogStore::new(backend.clone()).ok()?;
            let sm = StateMachineStore::open(backend, Default::default()).ok()?;
            let network = Network::new(ChannelPool::new(None).ok()?);
            let raft = Raft::new(1, Arc::new(config), network, log, sm.clone())
                .await
                .ok()?;
            if !raft.is_initialized().await.ok()? {
                let members = [(
                    1u64,
                    BasicNode {
                        addr: "127.0.0.1:1".into(),
                    },
                )]
                .into_iter()
                .collect::<std::collections::BTreeMap<_, _>>();
                raft.initialize(members).await.ok()?;
            }
            Some((raft, sm))
        }

        /// Writes one by one until the disk "crashes" at its `crash_at`th operation (in the
        /// middle of an append, a flush, a purge, a snapshot being built), restarts on what the
        /// disk kept, and checks the restarted state: every acknowledged write is there, and the
        /// state equals a fresh replay of the writes it holds, which are a prefix of those sent.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_restart_after_a_crash_anywhere_replays_exactly_the_committed_log() {
            let mut cases = 0;
            for crash_at in (3u64..420).step_by(11) {
                for (every, keep) in [(5u64, 0usize), (9, 3), (4, 1000)] {
                    cases += 1;
                    let disk = Arc::new(MemBackend::crashing_at(Some(crash_at)));
                    let mut acked = Vec::new();
                    if let Some((raft, _)) = start(disk.clone(), every).await {
                        for i in 0..300u64 {
                            let w =
                                tokio::time::timeout(Duration::from_secs(2), raft.client_write(put(i))).await;
                            match w {
                                Ok(Ok(r)) => match r.data {
                                    Ok(applied) => acked.push((i, applied.revision)),
                                    Err(e) => panic!("write {i} rejected: {e}"),
                                },
                                _ => break,
                            }
                            if disk.has_crashed() {
                                break;
                            }
                        }
                        let _ = tokio::time::timeout(Duration::from_secs(2), raft.shutdown()).await;
                    }
                    let disk = Arc::new(disk.recovered(keep));
                    let (raft, sm) = start(disk, every).await.expect("restart on the recovered disk");
                    raft.wait(Some(Duration::from_secs(5)))
                        .state(openraft::ServerState::Leader, "leader after restart")
                        .await
                        .expect("the node leads again");
                    // Its blank entry is applied once everything before it is.
                    let last = openraft::async_runtime::WatchReceiver::borrow_watched(&raft.metrics())
                        .last_log_index;
                    raft.wait(Some(Duration::from_secs(5)))
                        .applied_index_at_least(last, "applied after restart")
                        .await
                        .expect("the log is applied");
                    let state = sm.read(|m| m.state.clone());
                    let held = (0u64..)
                        .take_while(|i| state.feature(&format!("f{i}")).is_some())
                        .count() as u64;
                    assert_eq!(
                        state.features().count() as u64,
                        held,
                        "crash at {crash_at} (every {every}, keep {keep}): the writes held are not a prefix"
                    );
                    for (i, revision) in &acked {
                        let f = state.feature(&format!("f{i}")).unwrap_or_else(|| {
                            panic!("crash at {crash_at} (every {every}, keep {keep}): acknowledged write {i} lost")
                        });
                        assert_eq!(f.revision, *revision);
                    }
                    let mut replay = State::default();
                    for i in 0..held {
                        replay.apply(&put(i)).expect("replay");
                    }
                    assert_eq!(
                        state.digest(),
                        replay.digest(),
                        "crash at {crash_at} (every {every}, keep {keep}): state differs from the replay of its log"
                    );
                    let _ = raft.shutdown().await;
                }
            }
            assert!(cases > 100);
        }
    }
}
