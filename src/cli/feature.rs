//! `switchyard feature put|get|list|delete`.

use serde_json::json;

use crate::cli::output::{emit, feature_json, features_table};
use crate::cli::Cli;
use crate::pb::v1 as pb;
use crate::state::catalog::Requirement;

/// Catalog commands.
#[derive(Debug, clap::Subcommand)]
pub enum FeatureCommand {
    /// Create or replace a feature.
    Put {
        /// Feature name.
        name: String,
        /// A requirement SERVICE<op>VERSION, e.g. cart>=2.3.0 (repeatable).
        #[arg(long = "requires")]
        requires: Vec<String>,
        /// Description.
        #[arg(long, default_value = "")]
        description: String,
        /// Owner.
        #[arg(long, default_value = "")]
        owner: String,
        /// Only if the feature's revision is this (0: only if it does not exist).
        #[arg(long)]
        expected_revision: Option<u64>,
        /// Why (recorded in history).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Show a feature.
    Get {
        /// Feature name.
        name: String,
    },
    /// List features.
    List,
    /// Delete a feature, its toggle and history.
    Delete {
        /// Feature name.
        name: String,
        /// Only if the feature's revision is this.
        #[arg(long)]
        expected_revision: Option<u64>,
        /// Why.
        #[arg(long, default_value = "")]
        reason: String,
    },
}

/// Runs a catalog command.
pub async fn run(cli: &Cli, cmd: &FeatureCommand) -> anyhow::Result<()> {
    let client = cli.client()?;
    match cmd {
        FeatureCommand::Put {
            name,
            requires,
            description,
            owner,
            expected_revision,
            reason,
        } => {
            let requirements = requires
                .iter()
                .map(|r| {
                    Requirement::parse_cli(r).map(|r| pb::Requirement {
                        service: r.service,
                        version_req: r.version_req,
                    })
                })
                .collect::<crate::Result<Vec<_>>>()?;
            let feature = pb::Feature {
                name: name.clone(),
                description: description.clone(),
                owner: owner.clone(),
                requirements,
                ..Default::default()
            };
            let resp = client.put_feature(feature, *expected_revision, reason).await?;
            let f = resp.feature.unwrap_or_default();
            emit(cli.output, feature_json(&f), || {
                format!("feature {} stored at revision {}", f.name, resp.revision)
            });
        }
        FeatureCommand::Get { name } => {
            let resp = client.get_feature(name, cli.serializable).await?;
            let f = resp.feature.unwrap_or_default();
            emit(cli.output, feature_json(&f), || {
                features_table(std::slice::from_ref(&f))
            });
        }
        FeatureCommand::List => {
            let resp = client.list_features(cli.serializable).await?;
            emit(
                cli.output,
                json!({"revision": resp.revision, "features": resp.features.iter().map(feature_json).collect::<Vec<_>>()}),
                || features_table(&resp.features),
            );
        }
        FeatureCommand::Delete {
            name,
            expected_revision,
            reason,
        } => {
            let resp = client.delete_feature(name, *expected_revision, reason).await?;
            emit(
                cli.output,
                json!({"deleted": name, "revision": resp.revision}),
                || format!("feature {name} deleted at revision {}", resp.revision),
            );
        }
    }
    Ok(())
}
