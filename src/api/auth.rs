//! The `switchyard.v1.Auth` service: tokens, certificate mappings, turning enforcement on and
//! off, and who-am-i. A token's secret leaves the node once, in the answer to its creation;
//! the cluster keeps only its hash.

use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response, Status};

use crate::auth::token::Token;
use crate::auth::{Caller, Role};
use crate::error::Error;
use crate::node::Node;
use crate::pb::convert;
use crate::pb::v1 as pb;
use crate::pb::v1::auth_server::Auth;
use crate::state::auth::StoredToken;
use crate::state::command::{Applied, Command};

/// Longest token lifetime accepted (ten years).
const MAX_TTL: Duration = Duration::from_secs(10 * 366 * 24 * 3600);

/// The authentication service of one node.
pub struct AuthApi {
    node: Arc<Node>,
}

impl AuthApi {
    /// The service for `node`.
    pub fn new(node: Arc<Node>) -> Self {
        AuthApi { node }
    }

    async fn change(
        &self,
        caller: &Caller,
        write: Option<pb::WriteOptions>,
        command: Command,
    ) -> Result<Applied, Status> {
        Ok(self.node.write(convert::request(caller, write, command)?).await?)
    }
}

fn token_info(t: &StoredToken) -> pb::TokenInfo {
    pb::TokenInfo {
        id: t.id.clone(),
        name: t.name.clone(),
        role: t.role.to_string(),
        created_at_ms: t.created_ms,
        expires_at_ms: t.expires_ms,
    }
}

#[tonic::async_trait]
impl Auth for AuthApi {
    async fn set_auth_enabled(
        &self,
        request: Request<pb::SetAuthEnabledRequest>,
    ) -> Result<Response<pb::SetAuthEnabledResponse>, Status> {
        let caller = Caller::of(&request);
        let req = request.into_inner();
        let applied = self
            .change(
                &caller,
                req.write,
                Command::SetAuthEnabled { enabled: req.enabled },
            )
            .await?;
        tracing::info!(enabled = req.enabled, by = %caller.actor(""), "authentication switched");
        Ok(Response::new(pb::SetAuthEnabledResponse {
            revision: applied.revision,
        }))
    }

    async fn create_token(
        &self,
        request: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        let caller = Caller::of(&request);
        let req = request.into_inner();
        let role = Role::parse(&req.role)?;
        let ttl = Duration::from_secs(req.ttl_seconds);
        if ttl > MAX_TTL {
            return Err(Error::invalid("a token lives at most ten years (--ttl)").into());
        }
        let now = crate::clock::now_ms();
        let token = Token::generate();
        let stored = StoredToken {
            id: token.id.clone(),
            name: req.name,
            role,
            secret_hash: token.secret_hash(),
            created_ms: now,
            expires_ms: if req.ttl_seconds == 0 {
                0
            } else {
                now + ttl.as_millis() as i64
            },
        };
        let info = token_info(&stored);
        let applied = self
            .change(&caller, req.write, Command::CreateToken { token: stored })
            .await?;
        Ok(Response::new(pb::CreateTokenResponse {
            token: Some(info),
            secret: token.expose(),
            revision: applied.revision,
        }))
    }

    async fn revoke_token(
        &self,
        request: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::RevokeTokenResponse>, Status> {
        let caller = Caller::of(&request);
        let req = request.into_inner();
        // Accept the whole token too (the id is its second part), never storing or echoing it.
        let id = match Token::parse(&req.id) {
            Ok(t) => t.id,
            Err(_) => req.id,
        };
        let applied = self
            .change(&caller, req.write, Command::RevokeToken { id })
            .await?;
        Ok(Response::new(pb::RevokeTokenResponse {
            revision: applied.revision,
        }))
    }

    async fn list_tokens(
        &self,
        _request: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        self.node.read_barrier(false).await?;
        let tokens = self
            .node
            .read_state(|m| m.state.auth().tokens().map(token_info).collect());
        Ok(Response::new(pb::ListTokensResponse { tokens }))
    }

    async fn map_certificate(
        &self,
        request: Request<pb::MapCertificateRequest>,
    ) -> Result<Response<pb::MapCertificateResponse>, Status> {
        let caller = Caller::of(&request);
        let req = request.into_inner();
        let role = if req.role.is_empty() {
            None
        } else {
            Some(Role::parse(&req.role)?)
        };
        let applied = self
            .change(
                &caller,
                req.write,
                Command::MapCertificate {
                    identity: req.identity,
                    role,
                },
            )
            .await?;
        Ok(Response::new(pb::MapCertificateResponse {
            revision: applied.revision,
        }))
    }

    async fn list_certificates(
        &self,
        _request: Request<pb::ListCertificatesRequest>,
    ) -> Result<Response<pb::ListCertificatesResponse>, Status> {
        self.node.read_barrier(false).await?;
        let certificates = self.node.read_state(|m| {
            m.state
                .auth()
                .certificates()
                .map(|(identity, role)| pb::CertificateRole {
                    identity: identity.clone(),
                    role: role.to_string(),
                })
                .collect()
        });
        Ok(Response::new(pb::ListCertificatesResponse { certificates }))
    }

    async fn who_am_i(
        &self,
        request: Request<pb::WhoAmIRequest>,
    ) -> Result<Response<pb::WhoAmIResponse>, Status> {
        let caller = Caller::of(&request);
        let enabled = self.node.read_state(|m| m.state.auth().enabled());
        Ok(Response::new(pb::WhoAmIResponse {
            identity: if caller.is_authenticated() {
                caller.identity
            } else {
                "anonymous".into()
            },
            role: caller.role.to_string(),
            auth_enabled: enabled,
        }))
    }
}
