//! A [`Backend`] in memory that models a crash, for the storage crash tests: writes are only
//! buffered until [`Backend::flush`] (as in sled's log database), a snapshot is durable when
//! saved (sled's separate snapshot database is flushed at once), and after the crash point
//! every call fails. What survives a crash ([`MemBackend::recovered`]) is what was flushed plus
//! some prefix of the writes after it, since a store may have written part of its buffer.

use std::collections::BTreeMap;
use std::io;

use parking_lot::Mutex;

use crate::store::backend::Backend;

#[derive(Debug, Clone, Default)]
struct Image {
    meta: BTreeMap<String, Vec<u8>>,
    log: BTreeMap<u64, Vec<u8>>,
    snapshot: Option<Vec<u8>>,
}

#[derive(Debug, Clone)]
enum Write {
    Meta(String, Vec<u8>),
    Entries(Vec<(u64, Vec<u8>)>),
    Remove(u64, u64),
}

impl Image {
    fn apply(&mut self, w: &Write) {
        match w {
            Write::Meta(k, v) => {
                self.meta.insert(k.clone(), v.clone());
            }
            Write::Entries(entries) => {
                for (i, e) in entries {
                    self.log.insert(*i, e.clone());
                }
            }
            Write::Remove(start, end) => {
                let keys: Vec<u64> = self.log.range(*start..*end).map(|(k, _)| *k).collect();
                for k in keys {
                    self.log.remove(&k);
                }
            }
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    /// What reads see.
    written: Image,
    /// What a crash keeps for sure.
    durable: Image,
    /// Writes since the last flush, in order.
    unflushed: Vec<Write>,
    /// Calls that change something, counted.
    ops: u64,
    /// The call at which the crash happens (it and every later call fail).
    crash_at: Option<u64>,
}

/// An in-memory backend with a crash point.
#[derive(Debug, Default)]
pub(crate) struct MemBackend {
    inner: Mutex<Inner>,
}

fn crashed() -> io::Error {
    io::Error::other("crashed")
}

impl MemBackend {
    /// A backend that crashes at its `n`th write, flush or snapshot save (counting from 1).
    pub(crate) fn crashing_at(n: Option<u64>) -> Self {
        MemBackend {
            inner: Mutex::new(Inner {
                crash_at: n,
                ..Default::default()
            }),
        }
    }

    /// Whether the crash point has been reached.
    pub(crate) fn has_crashed(&self) -> bool {
        let i = self.inner.lock();
        i.crash_at.is_some_and(|c| i.ops >= c)
    }

    /// The disk as a restarted process finds it: the flushed image plus the first `keep` of the
    /// writes after it (clamped).
    pub(crate) fn recovered(&self, keep: usize) -> MemBackend {
        let i = self.inner.lock();
        let mut image = i.durable.clone();
        for w in i.unflushed.iter().take(keep) {
            image.apply(w);
        }
        MemBackend {
            inner: Mutex::new(Inner {
                written: image.clone(),
                durable: image,
                ..Default::default()
            }),
        }
    }

    /// Counts a changing call; fails once the crash point is reached.
    fn tick(i: &mut Inner) -> io::Result<()> {
        if i.crash_at.is_some_and(|c| i.ops + 1 >= c) {
            i.ops = i.ops.max(i.crash_at.unwrap_or(0));
            return Err(crashed());
        }
        i.ops += 1;
        Ok(())
    }

    fn write(&self, w: Write) -> io::Result<()> {
        let mut i = self.inner.lock();
        Self::tick(&mut i)?;
        i.written.apply(&w);
        i.unflushed.push(w);
        Ok(())
    }

    fn read<T>(&self, f: impl FnOnce(&Image) -> T) -> io::Result<T> {
        let i = self.inner.lock();
        if i.crash_at.is_some_and(|c| i.ops >= c) {
            return Err(crashed());
        }
        Ok(f(&i.written))
    }
}

impl Backend for MemBackend {
    fn get_meta(&self, key: &str) -> io::Result<Option<Vec<u8>>> {
        self.read(|img| img.meta.get(key).cloned())
    }

    fn put_meta(&self, key: &str, value: &[u8]) -> io::Result<()> {
        self.write(Write::Meta(key.to_string(), value.to_vec()))
    }

    fn put_entries(&self, entries: &[(u64, Vec<u8>)]) -> io::Result<()> {
        self.write(Write::Entries(entries.to_vec()))
    }

    fn entries(&self, start: u64, end: u64) -> io::Result<Vec<Vec<u8>>> {
        if start >= end {
            return Ok(Vec::new());
        }
        self.read(|img| img.log.range(start..end).map(|(_, v)| v.clone()).collect())
    }

    fn last_entry(&self) -> io::Result<Option<Vec<u8>>> {
        self.read(|img| img.log.values().next_back().cloned())
    }

    fn remove_entries(&self, start: u64, end: u64) -> io::Result<()> {
        if start >= end {
            return Ok(());
        }
        self.write(Write::Remove(start, end))
    }

    fn flush(&self) -> io::Result<()> {
        let mut i = self.inner.lock();
        Self::tick(&mut i)?;
        let pending = std::mem::take(&mut i.unflushed);
        for w in &pending {
            i.durable.apply(w);
        }
        Ok(())
    }

    fn save_snapshot(&self, snapshot: &[u8]) -> io::Result<()> {
        let mut i = self.inner.lock();
        Self::tick(&mut i)?;
        i.written.snapshot = Some(snapshot.to_vec());
        i.durable.snapshot = Some(snapshot.to_vec());
        Ok(())
    }

    fn load_snapshot(&self) -> io::Result<Option<Vec<u8>>> {
        self.read(|img| img.snapshot.clone())
    }
}
