//! `switchyard status` and `switchyard member ...`.

use crate::cli::output::{emit, status_json, status_table};
use crate::cli::Cli;

/// Membership changes.
#[derive(Debug, clap::Subcommand)]
pub enum MemberCommand {
    /// Add a non-voting member (it replicates, then can be promoted).
    AddLearner {
        /// The new node's id.
        id: u64,
        /// Its address, host:port.
        address: String,
    },
    /// Make a learner a voter.
    Promote {
        /// The node's id.
        id: u64,
    },
    /// Remove a member.
    Remove {
        /// The node's id.
        id: u64,
    },
}

/// `status`.
pub async fn status(cli: &Cli) -> anyhow::Result<()> {
    let s = cli.client()?.status().await?;
    emit(cli.output, status_json(&s), || status_table(&s));
    Ok(())
}

/// `member ...`.
pub async fn member(cli: &Cli, cmd: &MemberCommand) -> anyhow::Result<()> {
    let client = cli.client()?;
    let resp = match cmd {
        MemberCommand::AddLearner { id, address } => client.add_learner(*id, address).await?,
        MemberCommand::Promote { id } => client.promote(*id).await?,
        MemberCommand::Remove { id } => client.remove_member(*id).await?,
    };
    let s = resp.status.unwrap_or_default();
    emit(cli.output, status_json(&s), || status_table(&s));
    Ok(())
}
