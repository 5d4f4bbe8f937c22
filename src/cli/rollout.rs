//! `switchyard rollout-status NAME`: for a feature's latest change, which live instances put it
//! into effect, which hold it waiting for `effective_at`, which have not received it, and how
//! late the late ones were.

use serde_json::json;

use crate::cli::output::{emit, table};
use crate::cli::Cli;
use crate::pb::v1 as pb;
use crate::pb::v1::instance_rollout::State;

fn state_name(s: State) -> &'static str {
    match s {
        State::Applied => "applied",
        State::Scheduled => "scheduled",
        State::Behind => "behind",
        State::Unknown => "unknown",
        State::Unspecified => "-",
    }
}

fn line_json(i: &pb::InstanceRollout) -> serde_json::Value {
    json!({
        "instance": i.instance_id,
        "service": i.service,
        "version": i.version,
        "state": state_name(i.state()),
        "received_revision": i.received_revision,
        "late_ms": i.late_ms,
        "applied_at_ms": i.applied_at_ms,
        "reported_via": i.reported_via,
    })
}

/// Renders the people's view: a summary line, then every instance not on time.
pub fn render(r: &pb::RolloutStatusResponse) -> String {
    let total = r.instances.len();
    let mut out = format!(
        "{}: change at revision {} (effective {})\n{} of {} instances applied it ({} late, worst {} ms), {} scheduled, {} behind, {} unknown",
        r.feature,
        r.revision,
        crate::cli::output::time_ms(r.effective_at_ms),
        r.applied,
        total,
        r.late,
        r.max_late_ms,
        r.scheduled,
        r.behind,
        r.unknown,
    );
    if !r.unreachable_members.is_empty() {
        out.push_str(&format!(
            "\nmembers not answering (their instances show as unknown): {:?}",
            r.unreachable_members
        ));
    }
    let notable: Vec<&pb::InstanceRollout> = r
        .instances
        .iter()
        .filter(|i| i.state() != State::Applied || i.late_ms > 0)
        .collect();
    if !notable.is_empty() {
        let mut t = table(&["instance", "service", "version", "state", "received", "late"]);
        for i in notable {
            t.add_row(vec![
                i.instance_id.clone(),
                i.service.clone(),
                i.version.clone(),
                state_name(i.state()).to_string(),
                i.received_revision.to_string(),
                if i.state() == State::Applied {
                    format!("{} ms", i.late_ms)
                } else {
                    "-".into()
                },
            ]);
        }
        out.push('\n');
        out.push_str(&t.to_string());
    }
    out
}

/// `rollout-status NAME`.
pub async fn run(cli: &Cli, name: &str) -> anyhow::Result<()> {
    let r = cli.client()?.rollout_status(name).await?;
    emit(
        cli.output,
        json!({
            "feature": r.feature,
            "revision": r.revision,
            "effective_at_ms": r.effective_at_ms,
            "applied": r.applied,
            "scheduled": r.scheduled,
            "behind": r.behind,
            "unknown": r.unknown,
            "late": r.late,
            "max_late_ms": r.max_late_ms,
            "unreachable_members": r.unreachable_members,
            "instances": r.instances.iter().map(line_json).collect::<Vec<_>>(),
        }),
        || render(&r),
    );
    Ok(())
}
