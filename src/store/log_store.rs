//! The Raft log store: entries, vote, committed id and last purged id on a [`Backend`].
//!
//! Appends are acknowledged to Raft only after they are flushed. A dedicated flusher thread does
//! the flushing: it takes every append waiting since its last flush, flushes once (group commit)
//! and then completes their callbacks in the order they were appended.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::mpsc;
use std::sync::Arc;

use openraft::entry::RaftEntry as _;
use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::{LogState, OptionalSend, RaftLogReader};

use crate::failpoint::crash_point;
use crate::raft::{decode, encode, Entry, LogId, TypeConfig, Vote};
use crate::store::backend::Backend;

const KEY_VOTE: &str = "vote";
const KEY_COMMITTED: &str = "committed";
const KEY_PURGED: &str = "last_purged";

/// Appends waiting for the flusher, at most; a full queue makes `append` wait (back-pressure).
const FLUSH_QUEUE: usize = 16 * 1024;

/// One node's Raft log on a [`Backend`].
pub struct LogStore<B: Backend> {
    backend: Arc<B>,
    flusher: mpsc::SyncSender<IOFlushed<TypeConfig>>,
}

impl<B: Backend> Clone for LogStore<B> {
    fn clone(&self) -> Self {
        LogStore {
            backend: self.backend.clone(),
            flusher: self.flusher.clone(),
        }
    }
}

impl<B: Backend> LogStore<B> {
    /// A log store on `backend`, with its flusher thread.
    pub fn new(backend: Arc<B>) -> io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel::<IOFlushed<TypeConfig>>(FLUSH_QUEUE);
        let disk = backend.clone();
        std::thread::Builder::new()
            .name("switchyard-log-flush".into())
            .spawn(move || flush_loop(disk, rx))?;
        Ok(LogStore { backend, flusher: tx })
    }

    /// Checks, before the node serves anything, that the log on disk is one it can vouch for:
    /// every record intact, no hole, and reaching as far as it is known to have reached (the
    /// `flushed-through` record, the committed id); the snapshot (covering entries through
    /// `snapshot`) joins the log with no gap; the vote is not behind the log. Returns what is
    /// wrong, for the operator.
    pub fn verify(&self, snapshot: Option<LogId>) -> Result<(), String> {
        let read = |e: io::Error| e.to_string();
        let purged: Option<LogId> = self.get(KEY_PURGED).map_err(read)?;
        let committed: Option<LogId> = self.get::<Option<LogId>>(KEY_COMMITTED).map_err(read)?.flatten();
        let vote: Option<Vote> = self.get(KEY_VOTE).map_err(read)?;
        let snapshot_index = snapshot.map(|l| l.index());
        let purged_index = purged.map(|l| l.index());
        if purged_index > snapshot_index {
            return Err(format!(
                "the log is purged through entry {} but the snapshot only covers entries through {}: the entries between are gone",
                purged_index.unwrap_or(0),
                snapshot_index.map_or("none".to_string(), |i| i.to_string())
            ));
        }
        // Every entry, in chunks: intact, decodable, one after another.
        let mut last: Option<LogId> = None;
        let mut start = purged_index.map_or(0, |i| i + 1);
        loop {
            let chunk = self
                .backend
                .entries(start, start.saturating_add(4096))
                .map_err(read)?;
            if chunk.is_empty() {
                break;
            }
            for bytes in &chunk {
                let entry =
                    decode::<Entry>(bytes).map_err(|e| format!("a log entry does not decode: {e}"))?;
                if let Some(prev) = last {
                    if entry.index() != prev.index() + 1 {
                        return Err(format!(
                            "the log is missing entries {} to {}",
                            prev.index() + 1,
                            entry.index() - 1
                        ));
                    }
                }
                last = Some(entry.log_id());
            }
            start = last.map_or(start, |l| l.index() + 1);
        }
        let reach = [last.map(|l| l.index()), snapshot_index, purged_index]
            .into_iter()
            .flatten()
            .max();
        let shown = |i: Option<u64>| i.map_or("nothing".to_string(), |i| format!("entry {i}"));
        if let Some(flushed) = self.backend.flushed_through().map_err(read)? {
            if reach < Some(flushed) {
                return Err(format!(
                    "the log reaches {} but it was made durable through entry {flushed} before: entries were lost",
                    shown(reach)
                ));
            }
        }
        if let Some(c) = committed {
            if reach < Some(c.index()) {
                return Err(format!(
                    "the log reaches {} but entries through {} were committed",
                    shown(reach),
                    c.index()
                ));
            }
        }
        if let (Some(vote), Some(last)) = (vote, last) {
            let (voted, logged) = (vote.leader_id().term, last.committed_leader_id().term);
            if voted < logged {
                return Err(format!(
                    "the stored vote (term {voted}) is behind the log's last entry (term {logged})"
                ));
            }
        }
        Ok(())
    }

    fn get<T: serde::de::DeserializeOwned>(&self, key: &str) -> io::Result<Option<T>> {
        match self.backend.get_meta(key)? {
            Some(bytes) => Ok(Some(decode(&bytes)?)),
            None => Ok(None),
        }
    }
}

/// Runs until every sender is gone: waits for appends, flushes once per batch, completes them.
fn flush_loop<B: Backend>(backend: Arc<B>, rx: mpsc::Receiver<IOFlushed<TypeConfig>>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        crash_point!("log.flush");
        let started = std::time::Instant::now();
        let result = flush(backend.as_ref());
        tracing::trace!(appends = batch.len(), elapsed = ?started.elapsed(), "log flushed");
        for callback in batch {
            let r = match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
            };
            callback.io_completed(r);
        }
    }
}

/// One flush of the backend (in test builds, failpoint `log.flush.full` makes it fail as a full
/// disk does: the appends waiting for it are never acknowledged).
fn flush<B: Backend>(backend: &B) -> io::Result<()> {
    #[cfg(feature = "failpoints")]
    fail::fail_point!("log.flush.full", |_| Err(io::Error::new(
        io::ErrorKind::StorageFull,
        "no space left on device (failpoint log.flush.full)"
    )));
    backend.flush()
}

fn missing_entries(expected: u64, found: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("the Raft log is missing entries {expected}..{found}: the data directory is damaged"),
    )
}

fn range_to_bounds(range: &impl RangeBounds<u64>) -> (u64, u64) {
    let start = match range.start_bound() {
        Bound::Included(x) => *x,
        Bound::Excluded(x) => x.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(x) => x.saturating_add(1),
        Bound::Excluded(x) => *x,
        Bound::Unbounded => u64::MAX,
    };
    (start, end)
}

impl<B: Backend> RaftLogReader<TypeConfig> for LogStore<B> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let (start, end) = range_to_bounds(&range);
        // Entries may be missing only at the start (purged; those still present up to the purge
        // mark are leftovers of a purge a crash cut short) or past the last append. A hole
        // anywhere else means the disk lost entries: applying around it would silently give
        // this replica a state no other has, so it is an error instead. (A log that lost its
        // first entries shows at apply, where the state machine expects the next index.)
        let floor = start.max(self.get::<LogId>(KEY_PURGED)?.map_or(0, |l| l.index() + 1));
        let mut entries: Vec<Entry> = Vec::new();
        for bytes in self.backend.entries(floor, end)? {
            let entry = decode::<Entry>(&bytes)?;
            if let Some(prev) = entries.last() {
                if entry.index() != prev.index() + 1 {
                    return Err(missing_entries(prev.index() + 1, entry.index()));
                }
            }
            entries.push(entry);
        }
        Ok(entries)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        self.get(KEY_VOTE)
    }
}

impl<B: Backend> RaftLogStorage<TypeConfig> for LogStore<B> {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let last_purged_log_id: Option<LogId> = self.get(KEY_PURGED)?;
        let last = match self.backend.last_entry()? {
            Some(bytes) => Some(decode::<Entry>(&bytes)?.log_id()),
            None => None,
        };
        // Entries at or below the purge mark are garbage: a purge cut short (the disk filled up
        // between writing the mark and removing the entries) leaves some behind.
        let last_log_id = match (last, last_purged_log_id) {
            (Some(l), Some(p)) if l.index() <= p.index() => Some(p),
            (l, p) => l.or(p),
        };
        Ok(LogState {
            last_log_id,
            last_purged_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        self.backend.put_meta(KEY_VOTE, &encode(vote)?)?;
        let backend = self.backend.clone();
        tokio::task::spawn_blocking(move || backend.flush())
            .await
            .map_err(io::Error::other)?
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        // Not flushed here: the next append or vote flushes it, and a committed id that lags
        // after a crash only means replaying a little more of the log on restart.
        self.backend.put_meta(KEY_COMMITTED, &encode(&committed)?)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.get::<Option<LogId>>(KEY_COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let encoded = entries
            .into_iter()
            .map(|e| Ok((e.index(), encode(&e)?)))
            .collect::<io::Result<Vec<_>>>()?;
        // Written now (readable when this returns), acknowledged when the flusher has synced it.
        self.backend.put_entries(&encoded)?;
        self.flusher
            .send(callback)
            .map_err(|_| io::Error::other("log flusher thread stopped"))
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let start = last_log_id.map_or(0, |id| id.index() + 1);
        self.backend.remove_entries(start, u64::MAX)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        // The purge mark goes first: entries at or below it are ignored from then on, so a crash
        // between the two steps leaves only garbage, never a hole.
        self.backend.put_meta(KEY_PURGED, &encode(&log_id)?)?;
        self.backend.remove_entries(0, log_id.index() + 1)
    }
}
