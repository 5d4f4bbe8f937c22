//! The `switchyard.v1.Toggles` service: set (a full flagd definition), on/off (activate and the
//! kill switch), rollback, pending activations, readiness, history, get and list.

use std::collections::BTreeSet;
use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::auth::Caller;
use crate::error::Error;
use crate::node::rollout::{summarize, LiveInstance, Standing};
use crate::node::Node;
use crate::pb::convert;
use crate::pb::v1 as pb;
use crate::pb::v1::toggles_server::Toggles;
use crate::state::activation::Timing;
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

const NOW: Timing = Timing::Synchronized {
    switch_delay_ms: None,
};

fn toggle_response(applied: Applied) -> Result<Response<pb::SetToggleResponse>, Status> {
    let mut resp = pb::SetToggleResponse {
        revision: applied.revision,
        committed_at_us: applied.committed_at_us,
        ..Default::default()
    };
    match applied.outcome {
        Outcome::Toggle(t) => resp.toggle = Some(convert::toggle(&t)),
        Outcome::Pending(p) => resp.pending = Some(convert::pending(&p)),
        other => return Err(Error::internal(format!("unexpected outcome {other:?}")).into()),
    }
    Ok(Response::new(resp))
}

#[tonic::async_trait]
impl Toggles for TogglesApi {
    async fn set_toggle(
        &self,
        request: Request<pb::SetToggleRequest>,
    ) -> Result<Response<pb::SetToggleResponse>, Status> {
        let caller = Caller::of(&request);
        let req = request.into_inner();
        validate_name("feature", &req.feature)?;
        let definition = FlagDefinition::parse(&req.definition_json)?;
        let cmd = Command::SetToggle {
            feature: req.feature,
            definition,
            expected_revision: req.expected_revision,
            timing: convert::timing(req.activation, NOW)?,
        };
        toggle_response(
            self.node
                .write(convert::request(&caller, req.write, cmd)?)
                .await?,
        )
    }

    async fn set_toggle_state(
        &self,
        request: Request<pb::SetToggleStateRequest>,
    ) -> Result<Response<pb::SetToggleResponse>, Status> {
        let caller = Caller::of(&request);
        let req = request.into_inner();
        validate_name("feature", &req.feature)?;
        // Stopping harm beats synchronizing it: off is immediate unless asked otherwise.
        let default = if req.enabled { NOW } else { Timing::Immediate };
        let cmd = Command::SetToggleState {
            feature: req.feature,
            enabled: req.enabled,
            expected_revision: req.expected_revision,
            timing: convert::timing(req.activation, default)?,
        };
        toggle_response(
            self.node
                .write(convert::request(&caller, req.write, cmd)?)
                .await?,
        )
    }

    async fn get_toggle(
        &self,
        request: Request<pb::GetToggleRequest>,
    ) -> Result<Response<pb::GetToggleResponse>, Status> {
        let req = request.into_inner();
        validate_name("feature", &req.feature)?;
        self.node.read_barrier(convert::serializable(&req.read)).await?;
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
        self.node.read_barrier(convert::serializable(&req.read)).await?;
        let (toggles, revision) = self.node.read_state(|m| {
            (
                m.state.toggles().map(convert::toggle).collect(),
                m.state.revision(),
            )
        });
        Ok(Response::new(pb::ListTogglesResponse { toggles, revision }))
    }

    async fn rollback(
        &self,
        request: Request<pb::RollbackRequest>,
    ) -> Result<Response<pb::SetToggleResponse>, Status> {
        let caller = Caller::of(&request);
        let req = request.into_inner();
        validate_name("feature", &req.feature)?;
        let timing = convert::timing(req.activation, Timing::Immediate)?;
        if matches!(timing, Timing::WhenReady { .. }) {
            return Err(Error::invalid("a rollback cannot wait for readiness").into());
        }
        let cmd = Command::Rollback {
            feature: req.feature,
            to_revision: req.to_revision,
            timing,
        };
        toggle_response(
            self.node
                .write(convert::request(&caller, req.write, cmd)?)
                .await?,
        )
    }

    async fn cancel_activation(
        &self,
        request: Request<pb::CancelActivationRequest>,
    ) -> Result<Response<pb::CancelActivationResponse>, Status> {
        let caller = Caller::of(&request);
        let req = request.into_inner();
        validate_name("feature", &req.feature)?;
        let cmd = Command::CancelActivation { feature: req.feature };
        let applied = self
            .node
            .write(convert::request(&caller, req.write, cmd)?)
            .await?;
        Ok(Response::new(pb::CancelActivationResponse {
            revision: applied.revision,
        }))
    }

    async fn list_pending(
        &self,
        request: Request<pb::ListPendingRequest>,
    ) -> Result<Response<pb::ListPendingResponse>, Status> {
        let req = request.into_inner();
        self.node.read_barrier(convert::serializable(&req.read)).await?;
        let (pending, revision) = self.node.read_state(|m| {
            (
                m.state.pending().map(convert::pending).collect(),
                m.state.revision(),
            )
        });
        Ok(Response::new(pb::ListPendingResponse { pending, revision }))
    }

    async fn readiness(
        &self,
        request: Request<pb::ReadinessRequest>,
    ) -> Result<Response<pb::ReadinessResponse>, Status> {
        let req = request.into_inner();
        validate_name("feature", &req.feature)?;
        self.node.read_barrier(convert::serializable(&req.read)).await?;
        let (readiness, revision) = self.node.read_state(|m| {
            (
                m.state.readiness(&req.feature, req.allow_empty),
                m.state.revision(),
            )
        });
        let readiness = readiness?;
        Ok(Response::new(pb::ReadinessResponse {
            ready: readiness.ready,
            blockers: readiness.blockers.iter().map(convert::blocker).collect(),
            revision,
        }))
    }

    async fn history(
        &self,
        request: Request<pb::HistoryRequest>,
    ) -> Result<Response<pb::HistoryResponse>, Status> {
        let req = request.into_inner();
        validate_name("feature", &req.feature)?;
        self.node.read_barrier(convert::serializable(&req.read)).await?;
        let (entries, known, revision) = self.node.read_state(|m| {
            (
                m.state
                    .history(&req.feature)
                    .map(|h| h.entries().map(convert::history_entry).collect::<Vec<_>>()),
                m.state.feature(&req.feature).is_some(),
                m.state.revision(),
            )
        });
        if !known {
            return Err(Error::NotFound(format!("feature {:?} is not in the catalog", req.feature)).into());
        }
        Ok(Response::new(pb::HistoryResponse {
            entries: entries.unwrap_or_default(),
            revision,
        }))
    }

    async fn rollout_status(
        &self,
        request: Request<pb::RolloutStatusRequest>,
    ) -> Result<Response<pb::RolloutStatusResponse>, Status> {
        let req = request.into_inner();
        validate_name("feature", &req.feature)?;
        let (toggle, live) = self.node.read_state(|m| {
            let s = &m.state;
            let services: BTreeSet<&str> = s
                .feature(&req.feature)
                .map(|f| f.spec.requirements.iter().map(|r| r.service.as_str()).collect())
                .unwrap_or_default();
            let live: Vec<LiveInstance> = s
                .registry()
                .instances()
                .map(|i| LiveInstance {
                    id: i.spec.id.clone(),
                    service: i.spec.service.clone(),
                    version: i.spec.version.clone(),
                    involved: services.is_empty() || services.contains(i.spec.service.as_str()),
                })
                .collect();
            (
                s.toggle(&req.feature).map(|t| (t.revision, t.effective_at_ms)),
                live,
            )
        });
        let (revision, effective_at_ms) = toggle.ok_or_else(|| {
            Error::NotFound(format!(
                "feature {:?} has no toggle: there is no change to roll out",
                req.feature
            ))
        })?;
        let (reports, unreachable_members) = self.node.collect_reports(&req.feature).await;
        let rows = summarize(revision, &live, reports);
        let mut resp = pb::RolloutStatusResponse {
            feature: req.feature,
            revision,
            effective_at_ms,
            unreachable_members,
            ..Default::default()
        };
        for row in rows {
            use pb::instance_rollout::State;
            let mut line = pb::InstanceRollout {
                instance_id: row.instance.id,
                service: row.instance.service,
                version: row.instance.version,
                received_revision: row.received_revision,
                reported_via: row.via,
                ..Default::default()
            };
            match row.standing {
                Standing::Applied(a) => {
                    resp.applied += 1;
                    if a.late_ms > 0 {
                        resp.late += 1;
                        resp.max_late_ms = resp.max_late_ms.max(a.late_ms);
                    }
                    line.late_ms = a.late_ms;
                    line.applied_at_ms = a.applied_at_ms;
                    line.set_state(State::Applied);
                }
                Standing::Scheduled => {
                    resp.scheduled += 1;
                    line.set_state(State::Scheduled);
                }
                Standing::Behind => {
                    resp.behind += 1;
                    line.set_state(State::Behind);
                }
                Standing::Unknown => {
                    resp.unknown += 1;
                    line.set_state(State::Unknown);
                }
            }
            resp.instances.push(line);
        }
        Ok(Response::new(resp))
    }
}
