//! `switchyard status` and `switchyard member ...`.

use crate::cli::output::{emit, member_table, status_json, status_table};
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
    /// Every member: id, address, voter or learner, role, health.
    List,
    /// Hand leadership to another voter (before restarting the leader; `serve` also does it
    /// by itself on SIGTERM). Answers once another node leads.
    TransferLeader {
        /// The voter to lead next (default: the most caught-up one).
        #[arg(long)]
        to: Option<u64>,
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
        MemberCommand::TransferLeader { to } => client.transfer_leader(*to).await?,
        MemberCommand::List => {
            let s = client.status().await?;
            emit(cli.output, status_json(&s), || member_table(&s));
            return Ok(());
        }
    };
    let s = resp.status.unwrap_or_default();
    emit(cli.output, status_json(&s), || status_table(&s));
    Ok(())
}
