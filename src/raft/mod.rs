//! Raft, as the rest of Switchyard sees it: the openraft type configuration and aliases, the
//! network client ([`network`]) and the internal gRPC service peers call ([`service`]).
//! openraft's types do not leave `raft/` and `store/`.

pub mod network;
pub mod service;

use crate::state::command::{Request, Response};

openraft::declare_raft_types!(
    /// Switchyard's Raft type configuration: log entries carry a [`Request`], applying one
    /// answers a [`Response`]; members are addressed by `host:port`.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = u64,
        Node = openraft::BasicNode,
);

/// A node id.
pub type NodeId = u64;
/// The Raft handle of a node.
pub type Raft = openraft::Raft<TypeConfig, crate::store::StateMachineStore>;
/// A log id.
pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
/// A log entry.
pub type Entry = openraft::alias::EntryOf<TypeConfig>;
/// A vote.
pub type Vote = openraft::alias::VoteOf<TypeConfig>;
/// Snapshot metadata.
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
/// A snapshot with its bytes.
pub type Snapshot = openraft::alias::SnapshotOf<TypeConfig, Vec<u8>>;
/// The membership stored with the state machine.
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;

/// Encodes an internal message for the wire or the disk.
pub fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, std::io::Error> {
    bincode::serialize(value).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Decodes an internal message; garbage gives an error, never a panic.
pub fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, std::io::Error> {
    // A limit keeps a hostile length prefix from making bincode allocate without bound.
    use bincode::Options;
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .allow_trailing_bytes()
        .with_limit(256 * 1024 * 1024)
        .deserialize(bytes)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}
