//! Generated protobuf and gRPC code (from `proto/`, by `build.rs`). Only `api/`, `raft/` and
//! `client/` use these types; `api::convert` turns them into domain types.

#![allow(missing_docs, clippy::all)]

/// The public API, `switchyard.v1`.
pub mod v1 {
    tonic::include_proto!("switchyard.v1");
}

/// The node's side of `switchyard.v1.Watch`: the same wire format, with events pre-encoded as
/// bytes (proto/server/watch_wire.proto).
pub mod wire {
    include!(concat!(env!("OUT_DIR"), "/wire/switchyard.v1.rs"));
}

/// The internal node-to-node service, `switchyard.raft.v1`.
pub mod raft {
    tonic::include_proto!("switchyard.raft.v1");
}

/// flagd's protocols, served for OpenFeature flagd providers.
pub mod flagd {
    /// `flagd.sync.v1`: the flag configuration for in-process providers.
    pub mod sync {
        tonic::include_proto!("flagd.sync.v1");
    }
    /// `flagd.evaluation.v1`: remote evaluation for rpc providers.
    pub mod evaluation {
        tonic::include_proto!("flagd.evaluation.v1");
    }
}

/// The subset of etcd's KV API used by `bench put --target etcd`.
pub mod etcd {
    tonic::include_proto!("etcdserverpb");
}

/// The encoded descriptors of every service, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("switchyard_descriptor");
