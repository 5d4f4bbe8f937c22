//! `switchyard agent`: the agent beside an instance of a service in any language (see
//! [`crate::agent`]). With a command after `--` it supervises the application: starts it once
//! the flags are served, forwards SIGTERM and SIGINT to it, and when it exits takes the
//! instance out of the registry at once and exits with its status.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;

use crate::agent::{Agent, AgentConfig, HealthCheck};
use crate::cli::Cli;
use crate::sdk::InstanceConfig;
use crate::state::registry::InstanceSpec;

/// How long a supervised application gets to exit after SIGTERM before it is killed.
const CHILD_GRACE: Duration = Duration::from_secs(20);

/// Settings of `agent`.
#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    /// The instance's service.
    #[arg(long, env = "SWITCHYARD_SERVICE")]
    pub service: String,
    /// The instance's version (semver), or read it from --version-file.
    #[arg(long, env = "SWITCHYARD_VERSION", required_unless_present = "version_file")]
    pub version: Option<String>,
    /// A file holding the version (as a container image may carry it).
    #[arg(long, env = "SWITCHYARD_VERSION_FILE", conflicts_with = "version")]
    pub version_file: Option<std::path::PathBuf>,
    /// The instance id (default: SERVICE-<random>).
    #[arg(long, env = "SWITCHYARD_INSTANCE_ID")]
    pub id: Option<String>,
    /// Labels KEY=VALUE (repeatable, or comma-separated in the environment).
    #[arg(long = "label", env = "SWITCHYARD_LABELS", value_delimiter = ',')]
    pub labels: Vec<String>,
    /// Lease TTL: a crashed or hung instance leaves the registry this long after its last
    /// keepalive.
    #[arg(long, env = "SWITCHYARD_TTL", default_value = "10s")]
    pub ttl: humantime::Duration,
    /// Follow these features too (repeatable, or comma-separated).
    #[arg(long = "feature", env = "SWITCHYARD_FEATURES", value_delimiter = ',')]
    pub features: Vec<String>,
    /// Follow the features requiring these services (default: the instance's own service).
    #[arg(
        long = "follow-service",
        env = "SWITCHYARD_FOLLOW_SERVICES",
        value_delimiter = ','
    )]
    pub follow_services: Vec<String>,
    /// Where to serve flagd's sync and evaluation protocols (gRPC), comma-separated: flagd's
    /// ports 8013 (rpc providers) and 8015 (in-process providers) by default.
    #[arg(
        long,
        env = "SWITCHYARD_AGENT_FLAGD_LISTEN",
        default_value = "127.0.0.1:8013,127.0.0.1:8015",
        value_delimiter = ','
    )]
    pub flagd_listen: Vec<SocketAddr>,
    /// Where to serve OFREP, /livez, /readyz and /status (HTTP); `none` for nowhere.
    #[arg(long, env = "SWITCHYARD_AGENT_HTTP_LISTEN", default_value = "127.0.0.1:8016")]
    pub http_listen: String,
    /// The application's health: healthy while GET of this http:// URL answers 2xx.
    #[arg(long, env = "SWITCHYARD_HEALTH_HTTP", conflicts_with = "health_tcp")]
    pub health_http: Option<String>,
    /// The application's health: healthy while a TCP connection to HOST:PORT opens.
    #[arg(long, env = "SWITCHYARD_HEALTH_TCP")]
    pub health_tcp: Option<String>,
    /// How often the health check runs.
    #[arg(long, env = "SWITCHYARD_HEALTH_INTERVAL", default_value = "1s")]
    pub health_interval: humantime::Duration,
    /// How long one check may take.
    #[arg(long, env = "SWITCHYARD_HEALTH_TIMEOUT", default_value = "1s")]
    pub health_timeout: humantime::Duration,
    /// Failed checks in a row that take the instance out of the registry.
    #[arg(long, env = "SWITCHYARD_UNHEALTHY_AFTER", default_value_t = 3)]
    pub unhealthy_after: u32,
    /// How long to wait for the cluster's flags at start.
    #[arg(long, env = "SWITCHYARD_START_TIMEOUT", default_value = "30s")]
    pub start_timeout: humantime::Duration,
    /// The application to supervise, after `--` (optional).
    #[arg(last = true)]
    pub command: Vec<String>,
}

impl AgentArgs {
    /// The agent's configuration, or what is wrong with the arguments.
    fn config(&self, cli: &Cli) -> anyhow::Result<AgentConfig> {
        let version = match (&self.version, &self.version_file) {
            (Some(v), _) => v.trim().to_string(),
            (None, Some(path)) => std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the version file {}", path.display()))?
                .trim()
                .to_string(),
            (None, None) => anyhow::bail!("give --version or --version-file"),
        };
        let labels: BTreeMap<String, String> = self
            .labels
            .iter()
            .filter(|l| !l.trim().is_empty())
            .map(|l| InstanceSpec::parse_label(l.trim()))
            .collect::<crate::Result<_>>()?;
        let id = self.id.clone().unwrap_or_else(|| {
            let suffix = uuid::Uuid::new_v4().simple().to_string();
            format!("{}-{}", self.service.trim(), &suffix[..8])
        });
        let instance = InstanceConfig {
            id,
            service: self.service.trim().to_string(),
            version,
            labels,
            ttl: self.ttl.into(),
        };
        // Refused here, before anything starts: a version that is not semver, a bad name.
        InstanceSpec {
            id: instance.id.clone(),
            service: instance.service.clone(),
            version: instance.version.clone(),
            labels: instance.labels.clone(),
        }
        .validate()?;
        let health = match (&self.health_http, &self.health_tcp) {
            (Some(url), _) => Some(HealthCheck::http(url)?),
            (None, Some(addr)) => Some(HealthCheck::tcp(addr)?),
            (None, None) => None,
        };
        let http_listen = match self.http_listen.trim() {
            "" | "none" => None,
            addr => Some(
                addr.parse()
                    .with_context(|| format!("--http-listen {addr:?} is not HOST:PORT"))?,
            ),
        };
        Ok(AgentConfig {
            endpoints: cli.endpoints.clone(),
            connect: cli.connect_options(),
            instance,
            features: self
                .features
                .iter()
                .filter(|f| !f.trim().is_empty())
                .cloned()
                .collect(),
            services: self
                .follow_services
                .iter()
                .filter(|s| !s.trim().is_empty())
                .cloned()
                .collect(),
            flagd_listen: self.flagd_listen.clone(),
            http_listen,
            health,
            health_interval: self.health_interval.into(),
            health_timeout: self.health_timeout.into(),
            unhealthy_after: self.unhealthy_after,
            hold_registration: !self.command.is_empty(),
            start_timeout: self.start_timeout.into(),
        })
    }
}

/// Runs the agent until SIGTERM or Ctrl-C, or until the supervised application exits.
pub async fn run(cli: &Cli, args: &AgentArgs) -> anyhow::Result<()> {
    let config = args.config(cli)?;
    let agent = Agent::start(config).await?;
    if args.command.is_empty() {
        wait_for_signal().await;
        agent.stop().await;
        return Ok(());
    }
    let code = supervise(&agent, &args.command).await;
    agent.stop().await;
    match code {
        Ok(0) => Ok(()),
        Ok(code) => std::process::exit(code),
        Err(e) => Err(e),
    }
}

/// Completes on SIGTERM or SIGINT.
async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Runs the application until it exits (forwarding SIGTERM and SIGINT to it): its exit code,
/// or 128 + the signal that ended it. The application gets SIGTERM if the agent dies.
async fn supervise(agent: &Agent, command: &[String]) -> anyhow::Result<i32> {
    use std::os::unix::process::ExitStatusExt;
    let (program, rest) = command
        .split_first()
        .context("no command to supervise after --")?;
    let mut command_line = tokio::process::Command::new(program);
    command_line.args(rest).kill_on_drop(true);
    // SAFETY: between fork and exec the closure makes one async-signal-safe call, prctl(2),
    // touching no memory of the parent.
    unsafe {
        command_line.pre_exec(|| {
            // An agent killed with -9 must not leave its application running unregistered
            // (an old version the readiness gate no longer sees): it gets SIGTERM.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command_line
        .spawn()
        .with_context(|| format!("cannot start {program:?}"))?;
    let pid = child.id();
    tracing::info!(pid, command = %command.join(" "), "application started");
    agent.set_app_running(true);
    let status = tokio::select! {
        status = child.wait() => status?,
        _ = wait_for_signal() => {
            agent.set_app_running(false);
            if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
                // SAFETY: kill(2) on the child's pid, which this process still holds (it has
                // not been waited for), with a valid signal number.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
            match tokio::time::timeout(CHILD_GRACE, child.wait()).await {
                Ok(status) => status?,
                Err(_) => {
                    tracing::warn!("the application did not exit within {CHILD_GRACE:?} of SIGTERM; killing it");
                    child.kill().await?;
                    child.wait().await?
                }
            }
        }
    };
    agent.set_app_running(false);
    let code = status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    if status.success() {
        tracing::info!("application exited");
    } else {
        tracing::warn!(code, "application exited with a failure");
    }
    Ok(code)
}
