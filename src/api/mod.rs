//! The public gRPC services, one file each, plus the one place errors become statuses
//! ([`status`]) and protobuf becomes domain types ([`convert`]).

pub mod auth;
pub mod catalog;
pub mod cluster;
pub(crate) mod console;
mod grpc_stream;
pub(crate) mod guard;
pub(crate) mod http;
pub mod registry;
pub mod toggles;
pub mod watch;

use std::sync::Arc;

use tonic::transport::server::Router;

use crate::node::Node;
use crate::pb::v1::auth_server::AuthServer;
use crate::pb::v1::catalog_server::CatalogServer;
use crate::pb::v1::cluster_server::ClusterServer;
use crate::pb::v1::registry_server::RegistryServer;
use crate::pb::v1::toggles_server::TogglesServer;

/// Largest public request a node accepts; larger ones get `ResourceExhausted`.
pub const MAX_REQUEST: usize = 1024 * 1024;

/// Adds every public service (Switchyard's and flagd's) to `router`, but the watch service,
/// which [`watch::WatchRoute`] serves in front of the router.
pub fn add_services<L>(router: Router<L>, node: Arc<Node>) -> Router<L> {
    let router = router
        .add_service(
            CatalogServer::new(catalog::CatalogApi::new(node.clone())).max_decoding_message_size(MAX_REQUEST),
        )
        .add_service(
            TogglesServer::new(toggles::TogglesApi::new(node.clone())).max_decoding_message_size(MAX_REQUEST),
        )
        .add_service(
            RegistryServer::new(registry::RegistryApi::new(node.clone()))
                .max_decoding_message_size(MAX_REQUEST),
        )
        .add_service(
            ClusterServer::new(cluster::ClusterApi::new(node.clone())).max_decoding_message_size(MAX_REQUEST),
        )
        .add_service(
            AuthServer::new(auth::AuthApi::new(node.clone())).max_decoding_message_size(MAX_REQUEST),
        );
    add_flagd_services(router, node)
}

/// Adds flagd's services (sync, and evaluation v1 and v2, for OpenFeature flagd providers) to
/// `router`.
pub fn add_flagd_services<L>(router: Router<L>, node: Arc<Node>) -> Router<L> {
    crate::flagd::add_services(router, Arc::new(crate::flagd::resolver::Resolver::new(node)))
}
