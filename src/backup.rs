//! Backups: a consistent copy of the replicated state, taken from a running cluster at a
//! linearizable point and written to a file with its revision and digest, and restored into
//! the data directories of a new cluster, as `etcdutl snapshot restore` does.
//!
//! A backup file is a first line naming the format, a second line of JSON ([`BackupHeader`]:
//! revision, Raft position, digest, sizes, checksums), then the state itself (the same
//! encoding as a Raft snapshot). `head -2 FILE` shows what a backup holds. A restore checks
//! the length, the checksum of the bytes and the digest of the decoded state before it writes
//! anything, so a damaged or truncated file changes nothing.
//!
//! Restoring seeds each member of the new cluster with the state as a snapshot at the backup's
//! Raft position, and the new cluster's membership: every member restored from the same file
//! with the same `--initial-cluster` starts with the same state and elects a leader among
//! themselves. Leases in the backup keep their ids; an instance whose lease is not renewed
//! after the restore expires as it would have.

use std::io::{self, Read, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::node::Node;
use crate::raft::{decode, encode, NodeId};
use crate::state::State;
use crate::store::seed::Position;

/// The first line of a backup file.
const MAGIC: &[u8] = b"switchyard-backup 1\n";
/// Longest header line accepted.
const MAX_HEADER: usize = 64 * 1024;
/// Largest state accepted (as a Raft snapshot).
pub const MAX_STATE: u64 = 1024 * 1024 * 1024;

/// What a backup holds, and how to check it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupHeader {
    /// The storage format of the state (see `store::record`); a version that does not know
    /// it refuses the backup.
    pub storage_format: u8,
    /// The Switchyard version that took it.
    pub version: String,
    /// The node it was taken from.
    pub node_id: NodeId,
    /// When (unix ms).
    pub taken_at_ms: i64,
    /// The cluster revision of the state.
    pub revision: u64,
    /// The term of the last Raft log entry the state includes.
    pub log_term: u64,
    /// The leader that wrote that entry.
    pub log_leader: NodeId,
    /// Its index.
    pub log_index: u64,
    /// SHA-256 of the state (the same digest `status` shows).
    pub digest: String,
    /// Length of the encoded state, bytes.
    pub state_bytes: u64,
    /// SHA-256 of the encoded state's bytes (hex).
    pub state_sha256: String,
    /// Features in it (for people).
    pub features: u64,
    /// Live instances in it (for people).
    pub instances: u64,
}

/// A backup read into memory and checked.
#[derive(Debug)]
pub struct Backup {
    /// What it holds.
    pub header: BackupHeader,
    /// The encoded state.
    pub data: Vec<u8>,
    state: State,
}

impl Node {
    /// A consistent copy of this node's state: after a linearizable read barrier (so it holds
    /// every write acknowledged before the call), encoded under the state's read lock.
    pub async fn take_backup(&self) -> Result<(BackupHeader, Vec<u8>)> {
        self.read_barrier(false).await?;
        let id = self.id();
        let taken = self.read_state(|m| -> Result<(BackupHeader, Vec<u8>)> {
            let data = encode(&m.state).map_err(|e| Error::internal(format!("encoding the state: {e}")))?;
            let at = m
                .last_applied
                .as_ref()
                .map(Position::of)
                .ok_or_else(|| Error::unavailable("this node has applied nothing yet"))?;
            let header = BackupHeader {
                storage_format: crate::store::record::FORMAT,
                version: env!("CARGO_PKG_VERSION").to_string(),
                node_id: id,
                taken_at_ms: crate::clock::now_us() / 1000,
                revision: m.state.revision(),
                log_term: at.term,
                log_leader: at.leader,
                log_index: at.index,
                digest: m.state.digest(),
                state_bytes: data.len() as u64,
                state_sha256: String::new(),
                features: m.state.features().count() as u64,
                instances: m.state.registry().instances().count() as u64,
            };
            Ok((header, data))
        })?;
        let (mut header, data) = taken;
        header.state_sha256 = hex::encode(Sha256::digest(&data));
        Ok((header, data))
    }
}

/// Writes a backup file: the format line, the header line, the state.
pub fn write_backup(out: &mut impl Write, header: &BackupHeader) -> io::Result<()> {
    out.write_all(MAGIC)?;
    serde_json::to_writer(&mut *out, header)?;
    out.write_all(b"\n")
}

/// Reads and checks a backup file: format, header, length, checksum and digest. `progress` is
/// told the bytes of state read so far.
pub fn read_backup(input: &mut impl Read, mut progress: impl FnMut(u64)) -> Result<Backup> {
    let damaged = |why: String| Error::invalid(format!("not a usable backup: {why}"));
    let mut magic = vec![0u8; MAGIC.len()];
    input
        .read_exact(&mut magic)
        .map_err(|_| damaged("the file is shorter than a backup's first line".into()))?;
    if magic != MAGIC {
        return Err(damaged(
            "it does not start with a Switchyard backup's first line".into(),
        ));
    }
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        input
            .read_exact(&mut byte)
            .map_err(|_| damaged("the header line is cut short".into()))?;
        if byte[0] == b'\n' {
            break;
        }
        line.push(byte[0]);
        if line.len() > MAX_HEADER {
            return Err(damaged("the header line is too long".into()));
        }
    }
    let header: BackupHeader =
        serde_json::from_slice(&line).map_err(|e| damaged(format!("the header does not parse: {e}")))?;
    if header.storage_format != crate::store::record::FORMAT {
        return Err(Error::FailedPrecondition(format!(
            "the backup holds state in storage format {}, which this version of Switchyard (format {}) does not know: restore it with the version that took it ({})",
            header.storage_format,
            crate::store::record::FORMAT,
            header.version
        )));
    }
    if header.state_bytes > MAX_STATE {
        return Err(damaged(format!(
            "it claims {} bytes of state",
            header.state_bytes
        )));
    }
    let mut data = Vec::with_capacity(header.state_bytes as usize);
    let mut hasher = Sha256::new();
    let mut chunk = vec![0u8; 1 << 20];
    while (data.len() as u64) < header.state_bytes {
        let want = chunk.len().min((header.state_bytes - data.len() as u64) as usize);
        let n = input
            .read(&mut chunk[..want])
            .map_err(|e| damaged(e.to_string()))?;
        if n == 0 {
            return Err(damaged(format!(
                "it is truncated: {} of {} bytes of state",
                data.len(),
                header.state_bytes
            )));
        }
        hasher.update(&chunk[..n]);
        data.extend_from_slice(&chunk[..n]);
        progress(data.len() as u64);
    }
    if input.read(&mut byte).map_err(|e| damaged(e.to_string()))? != 0 {
        return Err(damaged("it has bytes after the state".into()));
    }
    if hex::encode(hasher.finalize()) != header.state_sha256 {
        return Err(damaged(
            "its bytes do not match their checksum (the file is damaged)".into(),
        ));
    }
    let state: State = decode(&data).map_err(|e| damaged(format!("the state does not decode: {e}")))?;
    if state.digest() != header.digest {
        return Err(damaged("the state does not match its digest".into()));
    }
    Ok(Backup { header, data, state })
}

impl Backup {
    /// The decoded state.
    pub fn state(&self) -> &State {
        &self.state
    }
}

/// Seeds `data_dir` as member `id` of a new cluster of `members` holding the backup's state
/// (see the module's notes). Refuses a data directory that already holds a node's data.
pub async fn restore(
    backup: &Backup,
    data_dir: &Path,
    id: NodeId,
    members: &[(NodeId, String)],
) -> Result<()> {
    if !members.iter().any(|(m, _)| *m == id) {
        return Err(Error::invalid(format!(
            "node {id} is not in the new cluster's members"
        )));
    }
    let h = &backup.header;
    crate::store::seed::seed(
        data_dir,
        Position {
            term: h.log_term,
            leader: h.log_leader,
            index: h.log_index,
        },
        members,
        backup.data.clone(),
        h.digest.clone(),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (BackupHeader, Vec<u8>) {
        let state = State::default();
        let data = encode(&state).expect("encode");
        let header = BackupHeader {
            storage_format: crate::store::record::FORMAT,
            version: "test".into(),
            node_id: 1,
            taken_at_ms: 0,
            revision: state.revision(),
            log_term: 3,
            log_leader: 1,
            log_index: 40,
            digest: state.digest(),
            state_bytes: data.len() as u64,
            state_sha256: hex::encode(Sha256::digest(&data)),
            features: 0,
            instances: 0,
        };
        (header, data)
    }

    fn file(header: &BackupHeader, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        write_backup(&mut out, header).expect("write");
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn a_backup_reads_back_as_written() {
        let (header, data) = sample();
        let bytes = file(&header, &data);
        let backup = read_backup(&mut bytes.as_slice(), |_| {}).expect("read");
        assert_eq!(backup.header, header);
        assert_eq!(backup.data, data);
    }

    #[test]
    fn damaged_and_truncated_backups_are_refused() {
        let (header, data) = sample();
        let good = file(&header, &data);
        let refused = |bytes: &[u8]| {
            read_backup(&mut &bytes[..], |_| {})
                .expect_err("refused")
                .to_string()
        };
        assert!(refused(&good[..good.len() - 1]).contains("truncated"));
        assert!(refused(&good[..10]).contains("first line"));
        assert!(refused(b"hello world, this is not a backup at all\n").contains("first line"));
        let mut flipped = good.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x01;
        assert!(refused(&flipped).contains("checksum"));
        let mut longer = good.clone();
        longer.push(0);
        assert!(refused(&longer).contains("after the state"));
        // A header whose checksum matches altered bytes, but whose digest does not.
        let mut forged = header.clone();
        forged.digest = "0".repeat(64);
        assert!(refused(&file(&forged, &data)).contains("digest"));
        let mut future = header.clone();
        future.storage_format += 1;
        assert!(refused(&file(&future, &data)).contains("does not know"));
    }
}
