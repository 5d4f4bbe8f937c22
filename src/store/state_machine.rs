//! The Raft state machine store: the in-memory [`State`] with the Raft bookkeeping around it
//! (last applied log id, membership), and its snapshots, which are persisted on the
//! [`Backend`] so a restarted node starts from its last snapshot plus the log after it.

use std::io;
use std::sync::Arc;

use futures::{Stream, TryStreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

use crate::failpoint::crash_point;
use crate::raft::{decode, encode, LogId, Snapshot, SnapshotMeta, StoredMembership, TypeConfig};
use crate::state::command::{Applied, Outcome};
use crate::state::event::Event;
use crate::state::State;
use crate::store::backend::Backend;
use crate::watch::{Published, WatchHub};

/// The applied state and what Raft needs to know about it.
#[derive(Debug, Clone, Default)]
pub struct Machine {
    /// The last log entry applied.
    pub last_applied: Option<LogId>,
    /// The membership in force at `last_applied`.
    pub membership: StoredMembership,
    /// The application state.
    pub state: State,
}

/// A snapshot as kept on disk, with the digest of the state it holds (checked when it is
/// read back).
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    data: Vec<u8>,
    digest: String,
}

/// A snapshot as kept before digests were stored.
#[derive(Deserialize)]
struct LegacySnapshot {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

impl StoredSnapshot {
    fn new(meta: SnapshotMeta, data: Vec<u8>, state: &State) -> StoredSnapshot {
        StoredSnapshot {
            meta,
            data,
            digest: state.digest(),
        }
    }

    fn with_digest(meta: SnapshotMeta, data: Vec<u8>, digest: String) -> StoredSnapshot {
        StoredSnapshot { meta, data, digest }
    }

    /// Reads a stored snapshot and its state, checking the state against the digest.
    fn decode(bytes: &[u8]) -> io::Result<(StoredSnapshot, State)> {
        let stored = match decode::<StoredSnapshot>(bytes) {
            Ok(s) => s,
            Err(_) => {
                let old: LegacySnapshot = decode(bytes)?;
                StoredSnapshot {
                    meta: old.meta,
                    data: old.data,
                    digest: String::new(),
                }
            }
        };
        let state: State = decode(&stored.data)?;
        if !stored.digest.is_empty() && stored.digest != state.digest() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the snapshot is damaged: the state in it does not match its digest",
            ));
        }
        Ok((stored, state))
    }
}

/// Writes a snapshot of `data` (an encoded state with `digest`) at `meta` as the one on disk,
/// for a data directory being seeded from a backup.
pub(crate) fn seed_snapshot(
    backend: &dyn Backend,
    meta: SnapshotMeta,
    data: Vec<u8>,
    digest: String,
) -> io::Result<()> {
    backend.save_snapshot(&encode(&StoredSnapshot::with_digest(meta, data, digest))?)
}

/// The state machine of one node. Cloning shares it: the API layer keeps a clone to read from.
#[derive(Clone)]
pub struct StateMachineStore {
    machine: Arc<RwLock<Machine>>,
    backend: Arc<dyn Backend>,
    hub: Arc<WatchHub>,
    /// The last log id covered by the snapshot on disk. Held while a snapshot is written, so a
    /// snapshot built from an older state (building runs beside installing) never replaces a
    /// newer one: the log behind the newer one may be purged already.
    saved: Arc<parking_lot::Mutex<Option<LogId>>>,
}

impl StateMachineStore {
    /// Opens the state machine on `backend`, restoring its last snapshot if there is one.
    pub fn open(backend: Arc<dyn Backend>, hub: Arc<WatchHub>) -> io::Result<Self> {
        let mut machine = Machine::default();
        let mut saved = None;
        if let Some(bytes) = backend.load_snapshot()? {
            let (stored, state) = StoredSnapshot::decode(&bytes)?;
            machine = Machine {
                last_applied: stored.meta.last_log_id,
                membership: stored.meta.last_membership.clone(),
                state,
            };
            saved = stored.meta.last_log_id;
            tracing::info!(last_applied = ?machine.last_applied, "restored state from snapshot");
        }
        // The history starts at the restored state: a subscriber resuming from before it gets a
        // snapshot; the log replayed after it refills the history.
        hub.reset(machine.state.revision());
        Ok(StateMachineStore {
            machine: Arc::new(RwLock::new(machine)),
            backend,
            hub,
            saved: Arc::new(parking_lot::Mutex::new(saved)),
        })
    }

    /// The last log id the snapshot on disk covers.
    pub fn snapshot_log_id(&self) -> Option<LogId> {
        *self.saved.lock()
    }

    /// Runs `f` with read access to the applied state. Keep `f` short: apply waits for it.
    pub fn read<T>(&self, f: impl FnOnce(&Machine) -> T) -> T {
        f(&self.machine.read())
    }

    /// Writes `stored` as the snapshot on disk unless a newer one is there; true if written.
    fn save_snapshot(&self, stored: &StoredSnapshot) -> io::Result<bool> {
        let mut saved = self.saved.lock();
        if stored.meta.last_log_id < *saved {
            return Ok(false);
        }
        self.backend.save_snapshot(&encode(stored)?)?;
        *saved = stored.meta.last_log_id;
        Ok(true)
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        // Encode under the read lock (fast, in memory); write to disk after releasing it.
        let stored = {
            let m = self.machine.read();
            let meta = SnapshotMeta {
                last_log_id: m.last_applied,
                last_membership: m.membership.clone(),
            };
            StoredSnapshot::with_digest(meta, encode(&m.state)?, m.state.digest())
        };
        let meta = stored.meta.clone();
        crash_point!("snapshot.build");
        let this = self.clone();
        let (stored, written) =
            tokio::task::spawn_blocking(move || this.save_snapshot(&stored).map(|w| (stored, w)))
                .await
                .map_err(io::Error::other)??;
        if written {
            tracing::info!(last_log_id = ?meta.last_log_id, bytes = stored.data.len(), "built snapshot");
        } else {
            // Raft ignores a built snapshot older than the one it has.
            tracing::info!(last_log_id = ?meta.last_log_id, "built snapshot superseded by an installed one");
        }
        Ok(Snapshot {
            meta,
            snapshot: stored.data,
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotData = Vec<u8>;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let m = self.machine.read();
        Ok((m.last_applied, m.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        while let Some((entry, responder)) = entries.try_next().await? {
            let (response, published, revision) = {
                let mut m = self.machine.write();
                // An entry applied twice would give this replica a state no other has.
                if m.last_applied
                    .is_some_and(|last| entry.log_id.index() <= last.index())
                {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "asked to apply entry {} again (applied up to {:?})",
                            entry.log_id.index(),
                            m.last_applied.map(|l| l.index())
                        ),
                    ));
                }
                m.last_applied = Some(entry.log_id);
                let response = match entry.payload {
                    EntryPayload::Blank => None,
                    EntryPayload::Normal(req) => Some(m.state.apply(&req)),
                    EntryPayload::Membership(mem) => {
                        m.membership = StoredMembership::new(Some(entry.log_id), mem);
                        None
                    }
                };
                let events: Vec<(Event, Vec<String>)> = m
                    .state
                    .take_events()
                    .into_iter()
                    .map(|event| {
                        let services = event
                            .feature()
                            .and_then(|f| m.state.feature(f))
                            .map(|f| f.spec.requirements.iter().map(|r| r.service.clone()).collect())
                            .unwrap_or_default();
                        (event, services)
                    })
                    .collect();
                let revision = m.state.revision();
                (response, events, revision)
            };
            crash_point!("sm.apply");
            if let Some(responder) = responder {
                // Blank and membership entries change no application data.
                let mut response = response.unwrap_or_else(|| {
                    Ok(Applied {
                        revision: self.machine.read().state.revision(),
                        outcome: Outcome::Internal,
                        committed_at_us: 0,
                    })
                });
                if let Ok(applied) = &mut response {
                    applied.committed_at_us = crate::clock::now_us();
                }
                // Answered first: waking thousands of watchers must not delay the writer.
                // A watch opened on the answer still gets the event (the hub hands out each
                // event exactly once, from its history or its ring).
                responder.send(response);
            }
            // Encoded and published outside the state lock; never waits for subscribers.
            self.hub.publish(
                published.into_iter().map(|(e, s)| Published::new(e, s)).collect(),
                revision,
            );
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: Vec<u8>) -> Result<(), io::Error> {
        let state: State = decode(&snapshot)?;
        let stored = StoredSnapshot::new(meta.clone(), snapshot, &state);
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.save_snapshot(&stored))
            .await
            .map_err(io::Error::other)??;
        crash_point!("snapshot.install");
        let mut m = self.machine.write();
        *m = Machine {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            state,
        };
        self.hub.reset(m.state.revision());
        tracing::info!(last_log_id = ?meta.last_log_id, "installed snapshot");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        match self.backend.load_snapshot()? {
            Some(bytes) => {
                let (stored, _) = StoredSnapshot::decode(&bytes)?;
                Ok(Some(Snapshot {
                    meta: stored.meta,
                    snapshot: stored.data,
                }))
            }
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::mem_backend::MemBackend;

    fn snapshot_at(index: u64) -> StoredSnapshot {
        StoredSnapshot::new(
            SnapshotMeta {
                last_log_id: Some(openraft::testing::log_id::<TypeConfig>(1, 1, index)),
                last_membership: Default::default(),
            },
            encode(&State::default()).expect("encode"),
            &State::default(),
        )
    }

    /// Building runs beside installing: a snapshot built from the state before an install
    /// finishes after it. It must not replace the installed one, whose log may be purged.
    #[tokio::test]
    async fn an_older_snapshot_never_replaces_a_newer_one() {
        let backend = Arc::new(MemBackend::default());
        let mut sm = StateMachineStore::open(backend.clone(), Default::default()).expect("open");
        assert!(sm.save_snapshot(&snapshot_at(9)).expect("save"));
        assert!(!sm.save_snapshot(&snapshot_at(5)).expect("save"));
        let current = sm
            .get_current_snapshot()
            .await
            .expect("read")
            .expect("a snapshot");
        assert_eq!(current.meta.last_log_id.map(|l| l.index()), Some(9));
        // A restarted node starts from the newer one too.
        let reopened = StateMachineStore::open(backend, Default::default()).expect("reopen");
        assert_eq!(reopened.read(|m| m.last_applied.map(|l| l.index())), Some(9));
    }
}
