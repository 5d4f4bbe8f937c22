//! The `switchyard.v1.Toggles` service: set (a full flagd definition), on/off, get and list.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::api::convert;
use crate::error::Error;
use crate::node::Node;
use crate::pb::v1 as pb;
use crate::pb::v1::toggles_server::Toggles;
use crate::state::catalog::validate_name;
use crate::state::command::{Applied, Command, Outcome};
use crate::state::definition::FlagDefinition;

/// The toggle service of one node.
pub struct TogglesApi {
    node: Arc<Node>,
}

impl TogglesApi {
    /// The service for `node`.
    pub fn new(node: Arc<Node>) -> Self {
        TogglesApi { node }
    }
}

fn toggle_response(applied: Applied) -> Result<Response<pb::SetToggleResponse>, Status> {
    match applied.outcome {
        Outcome::Toggle(t) => Ok(Response::new(pb::SetToggleResponse {
            toggle: Some(convert::toggle(&t)),
            revision: applied.revision,
        })),
        other => Err(Error::internal(format!("unexpected outcome {other:?}")).into()),
    }
}

#[tonic::async_trait]
impl Toggles for TogglesApi {
    async fn set_toggle(
        &self,
        request: Request<pb::SetToggleRequest>,
    ) -> Result<Response<pb::SetToggleResponse>, Status> {
        let req = request.into_inner();
        validate_name("feature", &req.feature)?;
        let definition = FlagDefinition::parse(&req.definition_json)?;
        let cmd = Command::SetToggle {
            feature: req.feature,
            definition,
            expected_revision: req.expected_revision,
        };
        toggle_response(self.node.write(convert::request(req.write, cmd)?).await?)
    }

    async fn set_toggle_state(
        &self,
        request: Request<pb::SetToggleStateRequest>,
    ) -> Result<Response<pb::SetToggleResponse>, Status> {
        let req = request.into_inner();
        validate_name("feature", &req.feature)?;
        let cmd = Command::SetToggleState {
            feature: req.feature,
            enabled: req.enabled,
            expected_revision: req.expected_revision,
        };
        toggle_response(self.node.write(convert::request(req.write, cmd)?).await?)
    }

    async fn get_toggle(
        &self,
        request: Request<pb::GetToggleRequest>,
    ) -> Result<Response<pb::GetToggleResponse>, Status> {
        let req = request.into_inner();
        validate_name("feature", &req.feature)?;
        self.node
            .read_barrier(req.read.as_ref().is_some_and(|r| r.serializable))
            .await?;
        let (toggle, known, revision) = self.node.read_state(|m| {
            (
                m.state.toggle(&req.feature).map(convert::toggle),
                m.state.feature(&req.feature).is_some(),
                m.state.revision(),
            )
        });
        let toggle = toggle.ok_or_else(|| {
            Error::NotFound(if known {
                format!("feature {:?} has no toggle yet", req.feature)
            } else {
                format!("feature {:?} is not in the catalog", req.feature)
            })
        })?;
        Ok(Response::new(pb::GetToggleResponse {
            toggle: Some(toggle),
            revision,
        }))
    }

    async fn list_toggles(
        &self,
        request: Request<pb::ListTogglesRequest>,
    ) -> Result<Response<pb::ListTogglesResponse>, Status> {
        let req = request.into_inner();
        self.node
            .read_barrier(req.read.as_ref().is_some_and(|r| r.serializable))
            .await?;
        let (toggles, revision) = self.node.read_state(|m| {
            (
                m.state.toggles().map(convert::toggle).collect(),
                m.state.revision(),
            )
        });
        Ok(Response::new(pb::ListTogglesResponse { toggles, revision }))
    }
}
