//! Switchyard: a Raft-replicated coordination cluster for feature toggles.
//!
//! Layout (one concept per module):
//! - [`state`]: the replicated state machine — revision, catalog, toggles, history — and the
//!   commands that change it; `apply` is a pure function.
//! - [`store`]: the storage trait and its sled implementation, the Raft log store, the state
//!   machine store and its snapshots.
//! - [`raft`]: openraft's type configuration, the network client and the internal Raft service.
//! - [`node`]: a node's settings and startup, writes through the leader, read barriers, status,
//!   membership changes.
//! - [`watch`]: the event history and the hub fanning applied events out to subscribers.
//! - [`api`]: the public gRPC services, error-to-status mapping, protobuf conversion.
//! - [`client`]: a client of the public API with endpoint failover, and the SDK for service
//!   instances (local evaluation, fleet-wide flips).
//! - [`metrics`]: the node's Prometheus metrics and their HTTP endpoint.
//! - [`cli`]: the `switchyard` command line, one file per command group.
//! - [`pb`]: generated protobuf code.
//! - [`clock`]: the local wall clock (never read inside apply).
//! - [`error`]: the typed error.

#![warn(missing_docs)]

pub mod api;
pub mod cli;
pub mod client;
pub mod clock;
pub mod error;
pub mod failpoint;
pub mod flagd;
pub mod metrics;
pub mod node;
pub mod pb;
pub mod raft;
pub mod state;
pub mod store;
pub mod targeting;
pub mod watch;

pub use error::{Error, Result};
