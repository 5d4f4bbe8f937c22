//! [`Backend`] on sled: one tree for log entries keyed by big-endian index (so key order is
//! index order), one tree per metadata key, and a second sled database for the snapshot (so
//! writing a snapshot of many megabytes never sits in the path of a log flush).
//!
//! One tree per metadata key because sled rewrites a tree's page when it changes: with the
//! snapshot blob beside the committed id (updated on every commit), each commit rewrote the
//! snapshot, multiplying the bytes written per write many times over.
//!
//! Every value is a sealed [`record`](crate::store::record) (format version and checksum).
//! Beside sled, a small file (`flushed-through`) records how far the log was made durable:
//! sled recovers a damaged file by cutting it at the damage, which looks like an older but
//! valid log; the file says the log once reached further, so the node refuses to start instead
//! of serving a state it no longer has (see [`crate::store::log_store::LogStore::verify`]).

use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::store::backend::Backend;
use crate::store::record::{seal, unseal};

/// A sled database holding one node's Raft log, vote, committed id and snapshot.
pub struct SledBackend {
    db: sled::Db,
    snapshots: sled::Db,
    log: sled::Tree,
    meta: parking_lot::Mutex<std::collections::HashMap<String, sled::Tree>>,
    /// The highest log index written since (and not truncated), for the next flush to record.
    written_through: AtomicU64,
    /// The log index the `flushed-through` file says is durable (0: none).
    flushed_through: AtomicU64,
    watermark: std::fs::File,
}

/// The `flushed-through` file: the index, and its CRC-32 (little endian).
fn encode_watermark(index: u64) -> [u8; 12] {
    let mut out = [0u8; 12];
    out[..8].copy_from_slice(&index.to_le_bytes());
    out[8..].copy_from_slice(&crc32fast::hash(&index.to_le_bytes()).to_le_bytes());
    out
}

fn decode_watermark(bytes: &[u8]) -> io::Result<u64> {
    if bytes.is_empty() {
        return Ok(0);
    }
    let index = bytes
        .get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_le_bytes);
    let crc = bytes
        .get(8..12)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_le_bytes);
    match (index, crc) {
        (Some(i), Some(c)) if crc32fast::hash(&i.to_le_bytes()) == c => Ok(i),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the flushed-through file is damaged",
        )),
    }
}

fn index_of(key: &[u8]) -> u64 {
    key.try_into().map(u64::from_be_bytes).unwrap_or(0)
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
        let watermark = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join("flushed-through"))?;
        let mut stored = Vec::new();
        std::io::Read::read_to_end(&mut &watermark, &mut stored)?;
        let flushed = decode_watermark(&stored)?;
        let last = log.last().map_err(io_err)?.map_or(0, |(k, _)| index_of(&k));
        Ok(SledBackend {
            db,
            snapshots,
            log,
            meta: Default::default(),
            written_through: AtomicU64::new(last),
            flushed_through: AtomicU64::new(flushed),
            watermark,
        })
    }

    fn write_watermark(&self, index: u64) -> io::Result<()> {
        // Not synced: a process crash keeps it (the OS has it), and after a power loss an older
        // value only makes the check looser, never wrong.
        self.watermark.write_all_at(&encode_watermark(index), 0)?;
        self.flushed_through.store(index, Ordering::Release);
        Ok(())
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
        match self.meta_tree(key)?.get(b"v").map_err(io_err)? {
            Some(v) => Ok(Some(unseal(&v, &|| format!("the stored {key}"))?.to_vec())),
            None => Ok(None),
        }
    }

    fn put_meta(&self, key: &str, value: &[u8]) -> io::Result<()> {
        self.meta_tree(key)?.insert(b"v", seal(value)).map_err(io_err)?;
        Ok(())
    }

    fn put_entries(&self, entries: &[(u64, Vec<u8>)]) -> io::Result<()> {
        let mut batch = sled::Batch::default();
        let mut last = 0;
        for (index, bytes) in entries {
            batch.insert(&index.to_be_bytes(), seal(bytes));
            last = last.max(*index);
        }
        self.log.apply_batch(batch).map_err(io_err)?;
        self.written_through.fetch_max(last, Ordering::AcqRel);
        Ok(())
    }

    fn entries(&self, start: u64, end: u64) -> io::Result<Vec<Vec<u8>>> {
        if start >= end {
            return Ok(Vec::new());
        }
        self.log
            .range(start.to_be_bytes()..end.to_be_bytes())
            .map(|kv| {
                let (k, v) = kv.map_err(io_err)?;
                Ok(unseal(&v, &|| format!("log entry {}", index_of(&k)))?.to_vec())
            })
            .collect()
    }

    fn last_entry(&self) -> io::Result<Option<Vec<u8>>> {
        match self.log.last().map_err(io_err)? {
            Some((k, v)) => Ok(Some(
                unseal(&v, &|| format!("log entry {}", index_of(&k)))?.to_vec(),
            )),
            None => Ok(None),
        }
    }

    fn flushed_through(&self) -> io::Result<Option<u64>> {
        Ok(match self.flushed_through.load(Ordering::Acquire) {
            0 => None,
            i => Some(i),
        })
    }

    fn remove_entries(&self, start: u64, end: u64) -> io::Result<()> {
        if start >= end {
            return Ok(());
        }
        if end == u64::MAX {
            // Cutting the log's end (a conflict with the leader): the watermark comes down
            // first, so a crash between never leaves it above the log.
            let keep = start.saturating_sub(1);
            if self.flushed_through.load(Ordering::Acquire) > keep {
                self.write_watermark(keep)?;
            }
            self.written_through.fetch_min(keep, Ordering::AcqRel);
        }
        let mut batch = sled::Batch::default();
        for key in self.log.range(start.to_be_bytes()..end.to_be_bytes()).keys() {
            batch.remove(key.map_err(io_err)?);
        }
        self.log.apply_batch(batch).map_err(io_err)
    }

    fn flush(&self) -> io::Result<()> {
        let through = self.written_through.load(Ordering::Acquire);
        self.db.flush().map_err(io_err)?;
        if through > self.flushed_through.load(Ordering::Acquire) {
            self.write_watermark(through)?;
        }
        Ok(())
    }

    fn save_snapshot(&self, snapshot: &[u8]) -> io::Result<()> {
        self.snapshots
            .insert(b"snapshot", seal(snapshot))
            .map_err(io_err)?;
        self.snapshots.flush().map_err(io_err)?;
        Ok(())
    }

    fn load_snapshot(&self) -> io::Result<Option<Vec<u8>>> {
        match self.snapshots.get(b"snapshot").map_err(io_err)? {
            Some(v) => Ok(Some(unseal(&v, &|| "the snapshot".to_string())?.to_vec())),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
impl SledBackend {
    /// Drops the log's entries from `start` on as a damaged file cut short by sled's recovery
    /// would: without lowering the `flushed-through` record.
    pub(crate) fn lose_entries_from(&self, start: u64) -> io::Result<()> {
        let mut batch = sled::Batch::default();
        for key in self.log.range(start.to_be_bytes()..).keys() {
            batch.remove(key.map_err(io_err)?);
        }
        self.log.apply_batch(batch).map_err(io_err)?;
        self.db.flush().map_err(io_err)?;
        Ok(())
    }

    /// Flips a bit in the middle of a stored metadata value.
    pub(crate) fn corrupt_meta(&self, key: &str) -> io::Result<()> {
        let tree = self.meta_tree(key)?;
        if let Some(v) = tree.get(b"v").map_err(io_err)? {
            let mut v = v.to_vec();
            let at = (v.len() / 2 + 4).min(v.len() - 1);
            v[at] ^= 0x10;
            tree.insert(b"v", v).map_err(io_err)?;
        }
        Ok(())
    }
}
