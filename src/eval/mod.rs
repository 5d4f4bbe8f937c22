//! Evaluation: a toggle's flagd definition compiled once per change ([`Flag`]), the set of
//! flags in effect ([`FlagSet`]), and evaluating a flag for a caller's [`Context`] exactly as
//! flagd does. The SDK evaluates locally with it; the node evaluates with it for flagd's
//! evaluation protocol. It depends on neither.
//!
//! - [`flag`]: a compiled flag, the caller's context, the evaluation and its reason;
//! - [`flag_set`]: the immutable set in effect, with changes staged ahead for a [`Flip`];
//! - [`flip`]: the moment a staged change takes effect;
//! - `targeting`: JsonLogic rules with flagd's operators (`fractional`, `sem_ver`,
//!   `starts_with`, `ends_with`, `$ref`), compiled once and evaluated in a per-thread arena.

pub mod flag;
pub mod flag_set;
pub mod flip;
pub(crate) mod targeting;

pub use flag::{Context, ErrorCode, Evaluation, Flag, Reason, ValueType};
pub use flag_set::{FeatureFlags, FlagSet};
pub use flip::Flip;
pub use targeting::InstanceFacts;
