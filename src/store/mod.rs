//! Storage: the [`Backend`] trait and its sled implementation, the Raft log store on top of it,
//! and the state machine store with its snapshots.

pub mod backend;
pub mod log_store;
pub mod sled_backend;
pub mod state_machine;

pub use backend::Backend;
pub use log_store::LogStore;
pub use sled_backend::SledBackend;
pub use state_machine::{Machine, StateMachineStore};
