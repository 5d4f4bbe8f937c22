//! `switchyard watch`: a live tail of changes. On a broken stream it resumes on the next
//! endpoint from the last revision it printed, so no change is skipped or printed twice.

use std::time::Duration;

use serde_json::json;

use crate::cli::output::{feature_json, toggle_json, Format};
use crate::cli::Cli;
use crate::pb::v1 as pb;
use crate::pb::v1::watch_client::WatchClient;
use crate::pb::v1::watch_response::Kind;

/// Settings of `watch`.
#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    /// Only this feature (repeatable; default: every feature).
    #[arg(long = "feature")]
    pub features: Vec<String>,
    /// Only features whose requirements involve this service (repeatable).
    #[arg(long = "service")]
    pub services: Vec<String>,
    /// Also show instances registering and leaving.
    #[arg(long)]
    pub registry: bool,
    /// Start after this revision (default: a snapshot of the current state first).
    #[arg(long)]
    pub from: Option<u64>,
    /// Stop after this many changes (default: run until interrupted).
    #[arg(long)]
    pub count: Option<u64>,
    /// Watch through the given endpoints only; by default the watch goes to a learner the
    /// cluster names, if it has any (then the given endpoints).
    #[arg(long)]
    pub no_discovery: bool,
}

fn line(format: Format, revision: u64, kind: &str, subject: &str, detail: serde_json::Value) {
    match format {
        Format::Json => println!(
            "{}",
            json!({"revision": revision, "kind": kind, "subject": subject, "detail": detail})
        ),
        Format::Table => println!("{revision:>8}  {kind:<14} {subject}  {detail}"),
    }
}

fn print_event(format: Format, e: &pb::WatchEvent) {
    use pb::watch_event::Change;
    match &e.change {
        Some(Change::Feature(f)) => line(format, e.revision, "feature", &f.name, feature_json(f)),
        Some(Change::FeatureDeleted(name)) => line(format, e.revision, "feature.deleted", name, json!(null)),
        Some(Change::Toggle(t)) => line(format, e.revision, "toggle", &t.feature, toggle_json(t)),
        Some(Change::Instance(i)) => line(
            format,
            e.revision,
            "instance",
            &i.id,
            json!({"service": i.service, "version": i.version, "labels": i.labels}),
        ),
        Some(Change::InstanceGone(g)) => line(
            format,
            e.revision,
            "instance.gone",
            &g.id,
            json!({"service": g.service}),
        ),
        None => {}
    }
}

/// Runs the tail until interrupted (or `--count` changes).
pub async fn run(cli: &Cli, args: &WatchArgs) -> anyhow::Result<()> {
    let filter = pb::WatchFilter {
        features: args.features.clone(),
        services: args.services.clone(),
        registry: args.registry,
    };
    // Learners first, by a choice of this process's own (as an SDK chooses by its instance),
    // then the given endpoints.
    let endpoints = if args.no_discovery {
        cli.endpoints.clone()
    } else {
        let seed = cli.client()?;
        crate::sdk::route::ranked_endpoints(&seed, &uuid::Uuid::new_v4().to_string()).await
    };
    let mut last = args.from;
    let mut printed = 0u64;
    let mut attempt = 0usize;
    // Why each endpoint of the current round refused a watch, when it refused for a reason
    // that retrying does not fix; every endpoint refusing ends the command.
    let mut refusals: Vec<String> = Vec::new();
    loop {
        if attempt > 0 && attempt.is_multiple_of(endpoints.len()) {
            if refusals.len() == endpoints.len() {
                anyhow::bail!("every endpoint refused the watch: {}", refusals.join("; "));
            }
            refusals.clear();
        }
        let endpoint = &endpoints[attempt % endpoints.len()];
        let opened = async {
            let channel = crate::client::Conn::new(endpoint, &cli.connect_options())?;
            let req = pb::WatchRequest {
                filter: Some(filter.clone()),
                start_revision: last,
            };
            anyhow::Ok(
                WatchClient::new(channel)
                    .max_decoding_message_size(crate::client::MAX_RESPONSE)
                    .watch(req)
                    .await?
                    .into_inner(),
            )
        };
        match opened.await {
            Ok(mut stream) => loop {
                match stream.message().await {
                    Ok(Some(msg)) => match msg.kind {
                        Some(Kind::Snapshot(s)) => {
                            for f in &s.features {
                                line(cli.output, f.revision, "feature", &f.name, feature_json(f));
                            }
                            for t in &s.toggles {
                                line(cli.output, t.revision, "toggle", &t.feature, toggle_json(t));
                            }
                            for i in &s.instances {
                                line(
                                    cli.output,
                                    i.revision,
                                    "instance",
                                    &i.id,
                                    json!({"service": i.service, "version": i.version, "labels": i.labels}),
                                );
                            }
                            eprintln!("-- snapshot at revision {}; following changes", s.revision);
                            last = Some(s.revision);
                        }
                        Some(Kind::Event(e)) => {
                            print_event(cli.output, &e);
                            last = Some(e.revision);
                            printed += 1;
                            if args.count.is_some_and(|c| printed >= c) {
                                return Ok(());
                            }
                        }
                        _ => {}
                    },
                    Ok(None) => break,
                    Err(status) if status.code() == tonic::Code::InvalidArgument => {
                        anyhow::bail!("{}", status.message())
                    }
                    Err(status) => {
                        eprintln!("-- stream from {endpoint} ended ({}); resuming", status.message());
                        break;
                    }
                }
            },
            Err(e) => {
                let refused = e.downcast_ref::<tonic::Status>().map(crate::Error::from_status);
                match refused {
                    Some(crate::Error::InvalidArgument(m)) => anyhow::bail!("{m}"),
                    // Refusals retrying does not fix: ahead of the cluster, over a limit, not
                    // allowed. Every endpoint saying so ends the command.
                    Some(
                        e @ (crate::Error::OutOfRange(_)
                        | crate::Error::ResourceExhausted(_)
                        | crate::Error::PermissionDenied(_)
                        | crate::Error::Unauthenticated(_)),
                    ) => {
                        eprintln!("-- {endpoint}: {e}");
                        refusals.push(format!("{endpoint}: {e}"));
                    }
                    _ => eprintln!("-- {endpoint}: {e:#}; trying the next endpoint"),
                }
            }
        }
        attempt += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
