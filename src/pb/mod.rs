//! Protobuf: the code generated from `proto/` (by `build.rs`); `convert`, the one place
//! protobuf messages become domain types and back; [`structs`], `google.protobuf.Struct` (flagd's
//! contexts and values) to and from JSON.

pub(crate) mod convert;
pub mod structs;

/// The public API, `switchyard.v1`.
#[allow(missing_docs, clippy::all)]
pub mod v1 {
    tonic::include_proto!("switchyard.v1");
}

/// `m` as one uncompressed gRPC message frame: a zero flag byte, the message's length
/// (big-endian, four bytes), then the message. What a response stream sends for each message.
pub(crate) fn grpc_frame(m: &impl prost::Message) -> bytes::Bytes {
    let len = m.encoded_len();
    let mut frame = Vec::with_capacity(GRPC_HEADER + len);
    frame.push(0);
    // A message is at most a snapshot of the node's state, far below 4 GiB.
    frame.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
    // Encoding into a Vec cannot run out of room: it grows.
    let _ = m.encode(&mut frame);
    bytes::Bytes::from(frame)
}

/// The bytes before each gRPC message: its compression flag and its length.
pub(crate) const GRPC_HEADER: usize = 5;

/// The internal node-to-node service, `switchyard.raft.v1` (public for tests that play a
/// misbehaving peer).
#[doc(hidden)]
#[allow(missing_docs, clippy::all)]
pub mod raft {
    tonic::include_proto!("switchyard.raft.v1");
}

/// flagd's protocols, served for OpenFeature flagd providers.
#[allow(missing_docs, clippy::all)]
pub mod flagd {
    /// `flagd.sync.v1`: the flag configuration for in-process providers.
    pub mod sync {
        tonic::include_proto!("flagd.sync.v1");
    }
    /// `flagd.evaluation.v1`: remote evaluation for rpc providers.
    pub mod evaluation {
        tonic::include_proto!("flagd.evaluation.v1");
    }
    /// `flagd.evaluation.v2`: remote evaluation with optional values (code defaults).
    #[allow(missing_docs)]
    pub mod evaluation_v2 {
        tonic::include_proto!("flagd.evaluation.v2");
    }
}

/// The encoded descriptors of every service, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("switchyard_descriptor");
