//! `switchyard auth ...`: tokens, certificate roles, turning authentication on and off.

use serde_json::json;

use crate::cli::output::{emit, table, time_ms};
use crate::cli::Cli;

/// Authentication commands.
#[derive(Debug, clap::Subcommand)]
pub enum AuthCommand {
    /// Require a credential on every call (needs an admin token or certificate first).
    Enable,
    /// Stop requiring credentials.
    Disable,
    /// Who the cluster takes you for.
    Whoami,
    /// Tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Roles of client-certificate identities.
    #[command(subcommand)]
    Certificate(CertificateCommand),
}

/// Token commands.
#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it (the only time it is shown).
    Create {
        /// Who holds it: recorded as the actor of its changes ("token:NAME").
        #[arg(long)]
        name: String,
        /// admin, release, read, or service:NAME.
        #[arg(long)]
        role: String,
        /// Expire after this long (e.g. 90d, 12h); default: never.
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<std::time::Duration>,
    },
    /// Revoke a token (by its id, or the whole token).
    Revoke {
        /// The id shown by `auth token list`.
        id: String,
    },
    /// List tokens (never their secrets).
    List,
}

/// Certificate role commands.
#[derive(Debug, clap::Subcommand)]
pub enum CertificateCommand {
    /// Give a certificate identity (its URI or DNS name, else its common name) a role.
    Map {
        /// The identity.
        identity: String,
        /// admin, release, read, or service:NAME.
        role: String,
    },
    /// Take a certificate identity's role away.
    Unmap {
        /// The identity.
        identity: String,
    },
    /// List certificate roles.
    List,
}

/// Runs an `auth` command.
pub async fn run(cli: &Cli, cmd: &AuthCommand) -> anyhow::Result<()> {
    let client = cli.client()?;
    match cmd {
        AuthCommand::Enable | AuthCommand::Disable => {
            let on = matches!(cmd, AuthCommand::Enable);
            client.set_auth_enabled(on).await?;
            let text = if on {
                "authentication is on: every call now needs a token or a mapped certificate"
            } else {
                "authentication is off: anyone who reaches a node may do anything"
            };
            emit(cli.output, json!({ "enabled": on }), || text.to_string());
        }
        AuthCommand::Whoami => {
            let w = client.who_am_i().await?;
            emit(
                cli.output,
                json!({ "identity": w.identity, "role": w.role, "auth_enabled": w.auth_enabled }),
                || {
                    format!(
                        "{} (role {}; authentication {})",
                        w.identity,
                        w.role,
                        if w.auth_enabled { "on" } else { "off" }
                    )
                },
            );
        }
        AuthCommand::Token(TokenCommand::Create { name, role, ttl }) => {
            let r = client.create_token(name, role, *ttl).await?;
            let t = r.token.unwrap_or_default();
            emit(
                cli.output,
                json!({ "id": t.id, "name": t.name, "role": t.role, "expires_at_ms": t.expires_at_ms, "token": r.secret }),
                || {
                    format!(
                        "{}\n\ntoken {} for {} (role {}). Keep it secret: it is not shown again; pass it as SWITCHYARD_TOKEN.",
                        r.secret, t.id, t.name, t.role
                    )
                },
            );
        }
        AuthCommand::Token(TokenCommand::Revoke { id }) => {
            client.revoke_token(id).await?;
            emit(cli.output, json!({ "revoked": true }), || "revoked".to_string());
        }
        AuthCommand::Token(TokenCommand::List) => {
            let r = client.list_tokens().await?;
            let rows: Vec<_> = r
                .tokens
                .iter()
                .map(|t| json!({ "id": t.id, "name": t.name, "role": t.role, "created_at_ms": t.created_at_ms, "expires_at_ms": t.expires_at_ms }))
                .collect();
            emit(cli.output, json!(rows), || {
                let mut tb = table(&["ID", "NAME", "ROLE", "CREATED", "EXPIRES"]);
                for t in &r.tokens {
                    tb.add_row(vec![
                        t.id.clone(),
                        t.name.clone(),
                        t.role.clone(),
                        time_ms(t.created_at_ms),
                        if t.expires_at_ms == 0 {
                            "never".to_string()
                        } else {
                            time_ms(t.expires_at_ms)
                        },
                    ]);
                }
                tb.to_string()
            });
        }
        AuthCommand::Certificate(CertificateCommand::Map { identity, role }) => {
            client.map_certificate(identity, role).await?;
            emit(cli.output, json!({ "identity": identity, "role": role }), || {
                format!("certificate {identity:?} has role {role}")
            });
        }
        AuthCommand::Certificate(CertificateCommand::Unmap { identity }) => {
            client.map_certificate(identity, "").await?;
            emit(cli.output, json!({ "identity": identity, "role": null }), || {
                format!("certificate {identity:?} has no role")
            });
        }
        AuthCommand::Certificate(CertificateCommand::List) => {
            let r = client.list_certificates().await?;
            let rows: Vec<_> = r
                .certificates
                .iter()
                .map(|c| json!({ "identity": c.identity, "role": c.role }))
                .collect();
            emit(cli.output, json!(rows), || {
                let mut tb = table(&["IDENTITY", "ROLE"]);
                for c in &r.certificates {
                    tb.add_row(vec![c.identity.clone(), c.role.clone()]);
                }
                tb.to_string()
            });
        }
    }
    Ok(())
}
