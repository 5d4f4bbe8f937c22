//! [`Backend`] on sled: one tree for log entries keyed by big-endian index (so key order is
//! index order), one tree per metadata key, and a second sled database for the snapshot (so
//! writing a snapshot of many megabytes never sits in the path of a log flush).
//!
//! One tree per metadata key because sled rewrites a tree's page when it changes: with the
//! snapshot blob beside the committed id (updated on every commit), each commit rewrote the
//! snapshot, multiplying the bytes written per write many times over.

use std::io;
use std::path::Path;

use crate::store::backend::Backend;

/// A sled database holding one node's Raft log, vote, committed id and snapshot.
pub struct SledBackend {
    db: sled::Db,
    snapshots: sled::Db,
    log: sled::Tree,
    meta: parking_lot::Mutex<std::collections::HashMap<String, sled::Tree>>,
}

fn io_err(e: sled::Error) -> io::Error {
    io::Error::other(e)
}

impl SledBackend {
    /// Opens (or creates) the database in `dir`.
    pub fn open(dir: &Path) -> io::Result<Self> {
        let snapshots = sled::Config::new()
            .path(dir.join("snapshots"))
            .cache_capacity(16 * 1024 * 1024)
            .open()
            .map_err(io_err)?;
        let db = sled::Config::new()
            .path(dir.join("log"))
            .cache_capacity(64 * 1024 * 1024)
            // Favour write throughput over space: the log is append-mostly and purged behind
            // snapshots, so less eager page consolidation costs little disk.
            .mode(sled::Mode::HighThroughput)
            // Durability comes from our own flushes (a log append is acknowledged only after
            // one); sled's timer flush would only make what a crash keeps depend on timing.
            .flush_every_ms(None)
            .open()
            .map_err(io_err)?;
        let log = db.open_tree("log").map_err(io_err)?;
        Ok(SledBackend {
            db,
            snapshots,
            log,
            meta: Default::default(),
        })
    }

    fn meta_tree(&self, key: &str) -> io::Result<sled::Tree> {
        let mut trees = self.meta.lock();
        if let Some(t) = trees.get(key) {
            return Ok(t.clone());
        }
        let tree = self.db.open_tree(format!("meta/{key}")).map_err(io_err)?;
        trees.insert(key.to_string(), tree.clone());
        Ok(tree)
    }
}

impl Backend for SledBackend {
    fn get_meta(&self, key: &str) -> io::Result<Option<Vec<u8>>> {
        Ok(self
            .meta_tree(key)?
            .get(b"v")
            .map_err(io_err)?
            .map(|v| v.to_vec()))
    }

    fn put_meta(&self, key: &str, value: &[u8]) -> io::Result<()> {
        self.meta_tree(key)?.insert(b"v", value).map_err(io_err)?;
        Ok(())
    }

    fn put_entries(&self, entries: &[(u64, Vec<u8>)]) -> io::Result<()> {
        let mut batch = sled::Batch::default();
        for (index, bytes) in entries {
            batch.insert(&index.to_be_bytes(), bytes.as_slice());
        }
        self.log.apply_batch(batch).map_err(io_err)
    }

    fn entries(&self, start: u64, end: u64) -> io::Result<Vec<Vec<u8>>> {
        if start >= end {
            return Ok(Vec::new());
        }
        self.log
            .range(start.to_be_bytes()..end.to_be_bytes())
            .values()
            .map(|v| v.map(|v| v.to_vec()).map_err(io_err))
            .collect()
    }

    fn last_entry(&self) -> io::Result<Option<Vec<u8>>> {
        Ok(self.log.last().map_err(io_err)?.map(|(_, v)| v.to_vec()))
    }

    fn remove_entries(&self, start: u64, end: u64) -> io::Result<()> {
        if start >= end {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        for key in self.log.range(start.to_be_bytes()..end.to_be_bytes()).keys() {
            batch.remove(key.map_err(io_err)?);
        }
        self.log.apply_batch(batch).map_err(io_err)
    }

    fn flush(&self) -> io::Result<()> {
        self.db.flush().map_err(io_err)?;
        Ok(())
    }

    fn save_snapshot(&self, snapshot: &[u8]) -> io::Result<()> {
        self.snapshots.insert(b"snapshot", snapshot).map_err(io_err)?;
        self.snapshots.flush().map_err(io_err)?;
        Ok(())
    }

    fn load_snapshot(&self) -> io::Result<Option<Vec<u8>>> {
        Ok(self
            .snapshots
            .get(b"snapshot")
            .map_err(io_err)?
            .map(|v| v.to_vec()))
    }
}
