//! flagd's protocols, served by every node so OpenFeature flagd providers use Switchyard as
//! their flag source without a line of change.
//!
//! - [`sync`]: `flagd.sync.v1.FlagSyncService` — the flag configuration as a flagd document,
//!   again after every change, for in-process providers (which evaluate locally).
//! - [`evaluation`]: `flagd.evaluation.v1.Service` — remote evaluation for rpc providers, with
//!   the same evaluator as the SDK, and an event stream of changes; [`evaluation_v2`], the
//!   same as `flagd.evaluation.v2.Service` (optional values: code defaults), which current
//!   providers speak;
//! - [`source`]: where the services take their flags from: a node ([`resolver`], its
//!   replicated state with compiled flags kept) or an agent's local copy ([`crate::agent`]);
//!   OFREP ([`crate::ofrep`]) takes them from the same.
//! - [`configuration`]: what a provider is sent: the toggles a selector picks, each as in effect
//!   now, with a change scheduled for later folded in ahead of time behind a
//!   `$flagd.timestamp` condition, so in-process providers flip together too.
//! - [`structs`]: `google.protobuf.Struct` to and from JSON.
//!
//! These protocols carry no instance identity or acknowledgement: instances that want the
//! readiness gate and convergence reports use the Switchyard SDK, or run `switchyard agent`
//! beside them ([`crate::agent`]), which serves these protocols on loopback as the instance.

pub mod configuration;
pub mod evaluation;
pub mod evaluation_v2;
pub mod resolver;
pub(crate) mod source;
pub mod sync;

use std::sync::Arc;

use tonic::transport::server::Router;

use crate::pb::flagd::evaluation::service_server::ServiceServer as EvaluationServer;
use crate::pb::flagd::evaluation_v2::service_server::ServiceServer as EvaluationV2Server;
use crate::pb::flagd::sync::flag_sync_service_server::FlagSyncServiceServer;
use source::FlagSource;

/// Largest request a flagd service reads.
const MAX_REQUEST: usize = 1024 * 1024;

/// Adds flagd's services (sync, and evaluation v1 and v2) serving `source`'s flags to `router`.
pub(crate) fn add_services<L>(router: Router<L>, source: Arc<dyn FlagSource>) -> Router<L> {
    router
        .add_service(
            FlagSyncServiceServer::new(sync::FlagSync::new(source.clone()))
                .max_decoding_message_size(MAX_REQUEST),
        )
        .add_service(
            EvaluationServer::new(evaluation::FlagdEvaluation::new(source.clone()))
                .max_decoding_message_size(MAX_REQUEST),
        )
        .add_service(
            EvaluationV2Server::new(evaluation_v2::FlagdEvaluationV2::new(source))
                .max_decoding_message_size(MAX_REQUEST),
        )
}
