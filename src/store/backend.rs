//! The storage trait: what the Raft log store and the snapshot store need from a disk, so the
//! engine under them (sled today) can be replaced without touching Raft code.

use std::io;

/// A durable, ordered store of log entries by index plus a few named metadata values.
///
/// Writes become durable only at [`Backend::flush`]; callers flush before they report an
/// append, a vote or a snapshot as saved.
pub trait Backend: Send + Sync + 'static {
    /// Reads a metadata value.
    fn get_meta(&self, key: &str) -> io::Result<Option<Vec<u8>>>;
    /// Writes a metadata value (durable after the next flush).
    fn put_meta(&self, key: &str, value: &[u8]) -> io::Result<()>;
    /// Writes log entries, each under its index (durable after the next flush).
    fn put_entries(&self, entries: &[(u64, Vec<u8>)]) -> io::Result<()>;
    /// Reads the entries with index in `start..end`, in order.
    fn entries(&self, start: u64, end: u64) -> io::Result<Vec<Vec<u8>>>;
    /// The entry with the highest index.
    fn last_entry(&self) -> io::Result<Option<Vec<u8>>>;
    /// Removes the entries with index in `start..end`.
    fn remove_entries(&self, start: u64, end: u64) -> io::Result<()>;
    /// Makes every earlier write of entries and metadata durable (fsync).
    fn flush(&self) -> io::Result<()>;
    /// Replaces the stored snapshot; durable when this returns. Kept apart from the log so a
    /// large snapshot write never delays a log flush.
    fn save_snapshot(&self, snapshot: &[u8]) -> io::Result<()>;
    /// The stored snapshot, if any.
    fn load_snapshot(&self) -> io::Result<Option<Vec<u8>>>;
    /// The highest log index this store has made durable before, as recorded apart from the
    /// log itself (none when it keeps no such record): a log that ends below it lost entries.
    fn flushed_through(&self) -> io::Result<Option<u64>> {
        Ok(None)
    }
}
