//! flagd's protocols, served by every node so OpenFeature flagd providers use Switchyard as
//! their flag source without a line of change.
//!
//! - [`sync`]: `flagd.sync.v1.FlagSyncService` — the flag configuration as a flagd document,
//!   again after every change, for in-process providers (which evaluate locally).
//! - [`evaluation`]: `flagd.evaluation.v1.Service` — remote evaluation for rpc providers, with
//!   the same evaluator as the SDK, and an event stream of changes; [`evaluation_v2`], the
//!   same as `flagd.evaluation.v2.Service` (optional values: code defaults), which current
//!   providers speak;
//! - [`resolver`]: the compiled flags both evaluate with (and OFREP, [`crate::ofrep`]).
//! - [`configuration`]: what a provider is sent: the toggles a selector picks, each as in effect
//!   now, with a change scheduled for later folded in ahead of time behind a
//!   `$flagd.timestamp` condition, so in-process providers flip together too.
//! - [`structs`]: `google.protobuf.Struct` to and from JSON.
//!
//! These protocols carry no instance identity or acknowledgement: instances that want the
//! readiness gate and convergence reports use the Switchyard SDK (or register beside their
//! flagd provider).

pub mod configuration;
pub mod evaluation;
pub mod evaluation_v2;
pub mod resolver;
pub mod sync;
