//! Switchyard's fault-injection suite: it breaks a real cluster on purpose and checks that
//! nothing acknowledged was lost and no client or subscriber was told a lie.
//!
//! - [`net`]: every node its own host (network namespace) on a bridge; cuts, one-way cuts,
//!   delay and loss.
//! - [`cluster`]: the node processes, each with its data on its own small disk; kill, pause,
//!   restart, fill the disk, wipe and replace.
//! - [`nemesis`]: schedules of faults drawn from a seed, and how each is done and undone.
//! - [`traffic`]: writers, readers, watchers and an SDK fleet under a rolling upgrade, all
//!   recorded.
//! - [`check`]: the checkers (linearizability, lost writes, watch guarantees, the readiness
//!   gate, SDKs).
//! - [`run`]: one schedule from start to verdict.
//!
//! The `torture` binary runs many schedules and prints a table; `tests/ci.rs` runs a few.

pub mod check;
pub mod cluster;
pub mod nemesis;
pub mod net;
pub mod run;
pub mod traffic;
