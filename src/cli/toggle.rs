//! `switchyard toggle set|on|off|get|list`.

use anyhow::Context;
use serde_json::json;

use crate::cli::activation::{print_change, ActivationArgs};
use crate::cli::output::{emit, toggle_json, toggles_table};
use crate::cli::Cli;

/// Toggle commands.
#[derive(Debug, clap::Subcommand)]
pub enum ToggleCommand {
    /// Set a toggle's flagd flag definition from a JSON file (`-` for stdin).
    Set {
        /// Feature name.
        name: String,
        /// The flag definition file.
        #[arg(long)]
        file: String,
        /// Only if the toggle's revision is this (0: only if it has none).
        #[arg(long)]
        expected_revision: Option<u64>,
        /// Why.
        #[arg(long, default_value = "")]
        reason: String,
        /// When it takes effect.
        #[command(flatten)]
        when: ActivationArgs,
    },
    /// Turn a toggle on (state ENABLED); creates an on/off boolean toggle if it has none.
    On {
        /// Feature name.
        name: String,
        /// Only if the toggle's revision is this.
        #[arg(long)]
        expected_revision: Option<u64>,
        /// Why.
        #[arg(long, default_value = "")]
        reason: String,
        /// When it takes effect.
        #[command(flatten)]
        when: ActivationArgs,
    },
    /// Turn a toggle off (state DISABLED): the kill switch.
    Off {
        /// Feature name.
        name: String,
        /// Only if the toggle's revision is this.
        #[arg(long)]
        expected_revision: Option<u64>,
        /// Why.
        #[arg(long, default_value = "")]
        reason: String,
        /// When it takes effect (default: immediately).
        #[command(flatten)]
        when: ActivationArgs,
    },
    /// Show a toggle.
    Get {
        /// Feature name.
        name: String,
    },
    /// List toggles.
    List,
}

/// Runs a toggle command.
pub async fn run(cli: &Cli, cmd: &ToggleCommand) -> anyhow::Result<()> {
    let client = cli.client()?;
    let set = match cmd {
        ToggleCommand::Set {
            name,
            file,
            expected_revision,
            reason,
            when,
        } => {
            let text = if file == "-" {
                std::io::read_to_string(std::io::stdin()).context("reading the definition from stdin")?
            } else {
                std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?
            };
            Some(
                client
                    .set_toggle_with(name, &text, *expected_revision, when.to_pb()?, reason)
                    .await?,
            )
        }
        ToggleCommand::On {
            name,
            expected_revision,
            reason,
            when,
        } => Some(
            client
                .set_toggle_state_with(name, true, *expected_revision, when.to_pb()?, reason)
                .await?,
        ),
        ToggleCommand::Off {
            name,
            expected_revision,
            reason,
            when,
        } => Some(
            client
                .set_toggle_state_with(name, false, *expected_revision, when.to_pb()?, reason)
                .await?,
        ),
        ToggleCommand::Get { name } => {
            let resp = client.get_toggle(name, cli.serializable).await?;
            let t = resp.toggle.unwrap_or_default();
            emit(cli.output, toggle_json(&t), || {
                toggles_table(std::slice::from_ref(&t))
            });
            None
        }
        ToggleCommand::List => {
            let resp = client.list_toggles(cli.serializable).await?;
            emit(
                cli.output,
                json!({"revision": resp.revision, "toggles": resp.toggles.iter().map(toggle_json).collect::<Vec<_>>()}),
                || toggles_table(&resp.toggles),
            );
            None
        }
    };
    if let Some(resp) = set {
        print_change(cli, &resp, "toggle");
    }
    Ok(())
}
