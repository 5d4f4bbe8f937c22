//! Switchyard: a Raft-replicated coordination cluster for feature toggles.
//!
//! What a library user needs:
//! - [`sdk`]: what a service instance embeds: it registers the instance under a lease, keeps a
//!   local copy of the toggles it watches, evaluates them with no network call, and flips each
//!   change at its `effective_at` with the rest of the fleet; [`sdk::openfeature`] is an
//!   OpenFeature provider backed by it;
//! - [`client`]: the admin client (catalog, toggles, activations, registry, cluster) with
//!   endpoint failover and retried writes that apply once;
//! - [`eval`]: flag definitions compiled once and evaluated exactly as flagd does;
//! - [`server`]: starting a node ([`server::start`] with a [`node::NodeConfig`]), or a whole
//!   cluster in one process ([`server::LocalCluster`]);
//! - [`error`]: the error type, one variant per gRPC code; [`pb`]: the wire types;
//! - [`tls`]: TLS settings for nodes and clients, and a throwaway CA for local use;
//! - [`agent`]: the agent beside an instance of a service in any language: it registers the
//!   instance while the application is healthy and serves its flags on loopback over flagd's
//!   protocols and OFREP;
//! - [`backup`]: backup files (taken from a running cluster) and restoring one into a new
//!   cluster's data directories.
//!
//! Inside a node (one concept per module; arrows point down):
//! - `cli`: the `switchyard` command line, one file per command group;
//! - `api`: the public gRPC services (one file each), the guard in front of them
//!   (authentication, permissions, per-caller limits) and the HTTP listener; `flagd`: flagd's
//!   sync and evaluation protocols and `ofrep`: OFREP, both served from a node's state or an
//!   agent's copy;
//! - `auth`: who may do what: roles' permissions per RPC, tokens, per-caller limits (the
//!   tokens themselves are replicated state, in `state::auth`);
//! - [`node`]: a running member: writes through the leader, reads, membership, status, lease
//!   expiry, contact with the leader, rollout reports;
//! - `raft`: openraft's types, the network client and the internal service (openraft stays
//!   inside `raft` and `store`); `store`: the storage trait, its sled backend, the Raft log and
//!   the state machine store with its snapshots;
//! - `watch`: the event history and the hub fanning events out to subscribers, filters;
//! - `state`: the replicated state machine (`apply` is a pure function): revision, catalog,
//!   toggles, history, registry and leases, activations and the readiness gate;
//! - `metrics`: the node's Prometheus metrics; `clock`: the local wall clock (never read
//!   inside apply); [`failpoint`]: crash points for fault tests (feature `failpoints`).

#![warn(missing_docs)]

pub mod agent;
pub(crate) mod api;
pub(crate) mod auth;
pub mod backup;
pub mod cli;
pub mod client;
pub(crate) mod clock;
pub mod error;
pub mod eval;
pub mod failpoint;
pub(crate) mod flagd;
pub(crate) mod metrics;
pub mod node;
pub(crate) mod ofrep;
pub mod pb;
pub(crate) mod raft;
pub mod sdk;
pub mod server;
pub(crate) mod state;
pub(crate) mod store;
pub mod tls;
pub(crate) mod watch;

pub use error::{Error, Result};
