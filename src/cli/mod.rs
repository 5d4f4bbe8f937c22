//! The `switchyard` command line: global flags, the command tree, and dispatch to one file per
//! command group. Every command prints a table or JSON (`--output`) and fails with one line.

// The doc comments are clap's help text, written for a terminal (`SERVICE<op>VERSION`).
#![allow(rustdoc::invalid_html_tags)]

pub mod activation;
pub mod agent;
pub mod auth;
pub mod certs;
pub mod cluster;
pub mod eval;
pub mod feature;
pub mod health;
pub mod local_cluster;
pub mod output;
pub mod registry;
pub mod rollout;
pub mod serve;
pub mod snapshot;
pub mod toggle;
pub mod watch;

use clap::{Parser, Subcommand};

use crate::client::Client;
use output::Format;

/// Switchyard: a replicated coordination cluster for feature toggles.
#[derive(Debug, Parser)]
#[command(name = "switchyard", version, about)]
pub struct Cli {
    /// Nodes to talk to, comma-separated host:port.
    #[arg(
        long,
        global = true,
        env = "SWITCHYARD_ENDPOINTS",
        default_value = "127.0.0.1:7700",
        value_delimiter = ','
    )]
    pub endpoints: Vec<String>,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value = "table")]
    pub output: Format,
    /// Who makes the change (recorded in history); defaults to $USER.
    #[arg(long, global = true, env = "SWITCHYARD_ACTOR")]
    pub actor: Option<String>,
    /// Serve reads from the asked node's applied state instead of a linearizable read.
    #[arg(long, global = true)]
    pub serializable: bool,
    /// Connect over TLS, trusting this CA (PEM) for the nodes' certificates.
    #[arg(long, global = true, env = "SWITCHYARD_CA")]
    pub ca: Option<std::path::PathBuf>,
    /// A client certificate (PEM) to present (with --key).
    #[arg(long, global = true, env = "SWITCHYARD_CERT", requires = "key")]
    pub cert: Option<std::path::PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, global = true, env = "SWITCHYARD_KEY", requires = "cert")]
    pub key: Option<std::path::PathBuf>,
    /// The token to authenticate with (`syt_...`); better from the environment than the
    /// command line, where other users can see it.
    #[arg(long, global = true, env = "SWITCHYARD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node.
    Serve(serve::ServeArgs),
    /// Run beside an instance of a service in any language: register it while it is healthy,
    /// and serve its flags on loopback over flagd's protocols and OFREP.
    Agent(agent::AgentArgs),
    /// Run a whole cluster (3 nodes by default) in this process, for trying Switchyard locally.
    LocalCluster(local_cluster::LocalClusterArgs),
    /// Show every member: role, term, log, applied index, revision, state digest.
    Status,
    /// Change the cluster's membership.
    #[command(subcommand)]
    Member(cluster::MemberCommand),
    /// Backups: save the cluster's state to a file, restore one into a new cluster.
    #[command(subcommand)]
    Snapshot(snapshot::SnapshotCommand),
    /// Probe a node's /readyz (or /livez) over HTTP; exits 0 only when it answers 200 (for
    /// container healthchecks).
    Health(health::HealthArgs),
    /// The feature catalog.
    #[command(subcommand)]
    Feature(feature::FeatureCommand),
    /// Toggle values.
    #[command(subcommand)]
    Toggle(toggle::ToggleCommand),
    /// Live instances, optionally of one service or with given labels.
    Instances {
        /// Only this service.
        #[arg(long, default_value = "")]
        service: String,
        /// Only instances with this label KEY=VALUE (repeatable).
        #[arg(long = "label")]
        labels: Vec<String>,
    },
    /// Register an instance and keep its lease alive until interrupted.
    Register(registry::RegisterArgs),
    /// Turn a feature on: now, at a time, or when every required instance has the code.
    Activate {
        /// Feature name.
        name: String,
        /// When.
        #[command(flatten)]
        when: activation::ActivationArgs,
        /// Why (recorded in history).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Whether a feature is ready, and every instance that blocks it.
    Readiness {
        /// Feature name.
        name: String,
        /// A required service with no live instance does not block.
        #[arg(long)]
        allow_empty: bool,
    },
    /// Activations waiting for readiness.
    Pending,
    /// Drop a pending activation.
    Cancel {
        /// Feature name.
        name: String,
        /// Why.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Restore a toggle as it was at an earlier revision (immediate by default).
    Rollback {
        /// Feature name.
        name: String,
        /// The revision to restore (default: the definition before the current one).
        #[arg(long)]
        to: Option<u64>,
        /// When.
        #[command(flatten)]
        when: activation::ActivationArgs,
        /// Why.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Every change to a feature: revision, time, actor, change, reason.
    History {
        /// Feature name.
        name: String,
    },
    /// A live tail of changes, resuming on another endpoint after a failure.
    Watch(watch::WatchArgs),
    /// For a feature's latest change: which live instances applied it, which lag, how late.
    RolloutStatus {
        /// Feature name.
        name: String,
    },
    /// Evaluate a toggle as an SDK would, for a caller's context on an instance.
    Eval(eval::EvalArgs),
    /// Authentication: tokens, certificate roles, on and off.
    #[command(subcommand)]
    Auth(auth::AuthCommand),
    /// Make a throwaway CA and certificates for a local cluster or tests (never production).
    Certs(certs::CertsArgs),
}

impl Cli {
    /// How many runtime threads the command wants: `None` for one per core.
    pub fn runtime_threads(&self) -> Option<usize> {
        match &self.command {
            Command::Serve(args) => args.threads,
            // A sidecar beside every instance: one thread serves one app (the flip clock has
            // its own), and costs the host less memory than one per core.
            Command::Agent(_) => Some(1),
            _ => None,
        }
    }

    /// How the CLI connects: TLS and token.
    pub fn connect_options(&self) -> crate::client::ConnectOptions {
        crate::client::ConnectOptions {
            tls: crate::tls::ClientTls {
                ca: self.ca.clone(),
                identity: self.cert.clone().zip(self.key.clone()),
                domain: None,
            },
            token: self.token.clone(),
        }
    }

    /// A client for the chosen endpoints and actor.
    pub fn client(&self) -> crate::Result<Client> {
        let client = Client::connect(&self.endpoints, &self.connect_options())?;
        Ok(match &self.actor {
            Some(a) => client.with_actor(a.clone()),
            None => client,
        })
    }
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Serve(args) => serve::run(args).await,
        Command::Agent(args) => agent::run(&cli, args).await,
        Command::LocalCluster(args) => local_cluster::run(args).await,
        Command::Status => cluster::status(&cli).await,
        Command::Member(cmd) => cluster::member(&cli, cmd).await,
        Command::Snapshot(cmd) => snapshot::run(&cli, cmd).await,
        Command::Health(args) => health::run(&cli, args).await,
        Command::Feature(cmd) => feature::run(&cli, cmd).await,
        Command::Toggle(cmd) => toggle::run(&cli, cmd).await,
        Command::Instances { service, labels } => registry::instances(&cli, service, labels).await,
        Command::Register(args) => registry::register(&cli, args).await,
        Command::Activate { name, when, reason } => activation::activate(&cli, name, when, reason).await,
        Command::Readiness { name, allow_empty } => activation::readiness(&cli, name, *allow_empty).await,
        Command::Pending => activation::pending(&cli).await,
        Command::RolloutStatus { name } => rollout::run(&cli, name).await,
        Command::Eval(args) => eval::run(&cli, args).await,
        Command::Cancel { name, reason } => activation::cancel(&cli, name, reason).await,
        Command::Rollback {
            name,
            to,
            when,
            reason,
        } => activation::rollback(&cli, name, *to, when, reason).await,
        Command::History { name } => activation::history(&cli, name).await,
        Command::Watch(args) => watch::run(&cli, args).await,
        Command::Auth(cmd) => auth::run(&cli, cmd).await,
        Command::Certs(args) => certs::run(args),
    }
}
