//! The `switchyard.v1.Catalog` service: put, get, list and delete features.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::auth::Caller;
use crate::error::Error;
use crate::node::Node;
use crate::pb::convert;
use crate::pb::v1 as pb;
use crate::pb::v1::catalog_server::Catalog;
use crate::state::catalog::validate_name;
use crate::state::command::{Command, Outcome};

/// The catalog service of one node.
pub struct CatalogApi {
    node: Arc<Node>,
}

impl CatalogApi {
    /// The service for `node`.
    pub fn new(node: Arc<Node>) -> Self {
        CatalogApi { node }
    }
}

#[tonic::async_trait]
impl Catalog for CatalogApi {
    async fn put_feature(
        &self,
        request: Request<pb::PutFeatureRequest>,
    ) -> Result<Response<pb::PutFeatureResponse>, Status> {
        let caller = Caller::of(&request);
        let req = request.into_inner();
        let spec = convert::feature_spec(
            req.feature
                .ok_or_else(|| Error::invalid("the request carries no feature"))?,
        );
        spec.validate()?;
        let cmd = Command::PutFeature {
            feature: spec,
            expected_revision: req.expected_revision,
        };
        let applied = self
            .node
            .write(convert::request(&caller, req.write, cmd)?)
            .await?;
        match applied.outcome {
            Outcome::Feature(f) => Ok(Response::new(pb::PutFeatureResponse {
                feature: Some(convert::feature(&f)),
                revision: applied.revision,
            })),
            other => Err(Error::internal(format!("unexpected outcome {other:?}")).into()),
        }
    }

    async fn get_feature(
        &self,
        request: Request<pb::GetFeatureRequest>,
    ) -> Result<Response<pb::GetFeatureResponse>, Status> {
        let req = request.into_inner();
        validate_name("feature", &req.name)?;
        self.node.read_barrier(convert::serializable(&req.read)).await?;
        let (feature, revision) = self.node.read_state(|m| {
            (
                m.state.feature(&req.name).map(convert::feature),
                m.state.revision(),
            )
        });
        let feature = feature
            .ok_or_else(|| Error::NotFound(format!("feature {:?} is not in the catalog", req.name)))?;
        Ok(Response::new(pb::GetFeatureResponse {
            feature: Some(feature),
            revision,
        }))
    }

    async fn list_features(
        &self,
        request: Request<pb::ListFeaturesRequest>,
    ) -> Result<Response<pb::ListFeaturesResponse>, Status> {
        let req = request.into_inner();
        self.node.read_barrier(convert::serializable(&req.read)).await?;
        let (features, revision) = self.node.read_state(|m| {
            (
                m.state.features().map(convert::feature).collect(),
                m.state.revision(),
            )
        });
        Ok(Response::new(pb::ListFeaturesResponse { features, revision }))
    }

    async fn delete_feature(
        &self,
        request: Request<pb::DeleteFeatureRequest>,
    ) -> Result<Response<pb::DeleteFeatureResponse>, Status> {
        let caller = Caller::of(&request);
        let req = request.into_inner();
        validate_name("feature", &req.name)?;
        let cmd = Command::DeleteFeature {
            name: req.name,
            expected_revision: req.expected_revision,
        };
        let applied = self
            .node
            .write(convert::request(&caller, req.write, cmd)?)
            .await?;
        Ok(Response::new(pb::DeleteFeatureResponse {
            revision: applied.revision,
        }))
    }
}
