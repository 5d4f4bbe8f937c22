//! `switchyard activate|readiness|pending|cancel|rollback|history`, and the timing flags that
//! every toggle change takes (`--now`, `--at`, `--when-ready`, `--immediate`).

use std::time::{Duration, UNIX_EPOCH};

use anyhow::Context;
use serde_json::json;

use crate::cli::output::{emit, table, toggle_json};
use crate::cli::Cli;
use crate::pb::v1 as pb;
use crate::pb::v1::activation::Mode;

/// When a toggle change takes effect.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ActivationArgs {
    /// At commit + switch delay: the fleet flips together (default for set, on, activate).
    #[arg(long, group = "when")]
    pub now: bool,
    /// At a time: RFC 3339 (2026-11-27T10:00:00Z) or +DURATION from now (+30s).
    #[arg(long, group = "when", value_name = "TIME")]
    pub at: Option<String>,
    /// When every live instance of every required service has the code, then + switch delay.
    #[arg(long, group = "when")]
    pub when_ready: bool,
    /// At commit, no delay (default for off and rollback).
    #[arg(long, group = "when")]
    pub immediate: bool,
    /// With --when-ready: a required service with no live instance does not block.
    #[arg(long)]
    pub allow_empty: bool,
    /// Delay from commit to the fleet-wide switch (default 500ms).
    #[arg(long, value_name = "DURATION")]
    pub switch_delay: Option<humantime::Duration>,
}

/// Parses `--at`: RFC 3339, or `+DURATION` from now.
pub fn parse_at(text: &str) -> anyhow::Result<i64> {
    if let Some(rel) = text.strip_prefix('+') {
        let d: Duration = humantime::parse_duration(rel).with_context(|| format!("--at {text}"))?;
        return Ok(crate::clock::now_ms() + d.as_millis() as i64);
    }
    let t = humantime::parse_rfc3339_weak(text)
        .with_context(|| format!("--at {text:?}: use RFC 3339 (2026-11-27T10:00:00Z) or +30s"))?;
    Ok(t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0))
}

impl ActivationArgs {
    /// The activation to send (`None`: the command's default).
    pub fn to_pb(&self) -> anyhow::Result<Option<pb::Activation>> {
        let mode = if self.now {
            Mode::Now
        } else if self.at.is_some() {
            Mode::At
        } else if self.when_ready {
            Mode::WhenReady
        } else if self.immediate {
            Mode::Immediate
        } else if self.switch_delay.is_some() {
            Mode::Default
        } else {
            return Ok(None);
        };
        Ok(Some(pb::Activation {
            mode: mode as i32,
            at_ms: self.at.as_deref().map(parse_at).transpose()?.unwrap_or(0),
            switch_delay_ms: self.switch_delay.map(|d| Duration::from(d).as_millis() as u64),
            allow_empty: self.allow_empty,
        }))
    }
}

/// Prints the answer to a toggle change: stored (with when it takes effect) or pending.
pub fn print_change(cli: &Cli, resp: &pb::SetToggleResponse, what: &str) {
    if let Some(p) = &resp.pending {
        emit(
            cli.output,
            json!({"pending": pending_json(p), "revision": resp.revision}),
            || {
                format!(
                "{what} {} is pending at revision {}: it fires when the feature is ready (see `switchyard readiness {}`)",
                p.feature, resp.revision, p.feature
            )
            },
        );
        return;
    }
    let t = resp.toggle.clone().unwrap_or_default();
    emit(cli.output, toggle_json(&t), || {
        let in_ms = t.effective_at_ms - crate::clock::now_ms();
        let when = if in_ms > 0 {
            format!("takes effect in {in_ms} ms")
        } else {
            "in effect".to_string()
        };
        format!(
            "{what} {} stored at revision {}; {when}",
            t.feature, resp.revision
        )
    });
}

fn pending_json(p: &pb::PendingActivation) -> serde_json::Value {
    json!({
        "feature": p.feature, "allow_empty": p.allow_empty, "switch_delay_ms": p.switch_delay_ms,
        "requested_revision": p.requested_revision, "requested_at_ms": p.requested_at_ms,
        "actor": p.actor, "reason": p.reason,
    })
}

/// `activate NAME`: turn a toggle on, now, at a time or when ready.
pub async fn activate(cli: &Cli, name: &str, when: &ActivationArgs, reason: &str) -> anyhow::Result<()> {
    let resp = cli
        .client()?
        .set_toggle_state_with(name, true, None, when.to_pb()?, reason)
        .await?;
    print_change(cli, &resp, "activation of");
    Ok(())
}

/// `readiness NAME`.
pub async fn readiness(cli: &Cli, name: &str, allow_empty: bool) -> anyhow::Result<()> {
    let r = cli.client()?.readiness(name, allow_empty).await?;
    let blockers: Vec<_> = r
        .blockers
        .iter()
        .map(|b| json!({"service": b.service, "requirement": b.requirement, "instance": b.instance, "version": b.version}))
        .collect();
    emit(
        cli.output,
        json!({"feature": name, "ready": r.ready, "blockers": blockers, "revision": r.revision}),
        || {
            if r.ready {
                return format!("{name} is ready (revision {})", r.revision);
            }
            let mut t = table(&["service", "instance", "version", "needs"]);
            for b in &r.blockers {
                t.add_row(vec![
                    b.service.clone(),
                    if b.instance.is_empty() {
                        "(no live instance)".into()
                    } else {
                        b.instance.clone()
                    },
                    b.version.clone(),
                    b.requirement.clone(),
                ]);
            }
            format!(
                "{name} is NOT ready (revision {}): {} blocker(s)\n{t}",
                r.revision,
                r.blockers.len()
            )
        },
    );
    Ok(())
}

/// `pending`.
pub async fn pending(cli: &Cli) -> anyhow::Result<()> {
    let r = cli.client()?.list_pending(cli.serializable).await?;
    emit(
        cli.output,
        json!({"pending": r.pending.iter().map(pending_json).collect::<Vec<_>>(), "revision": r.revision}),
        || {
            let mut t = table(&[
                "feature",
                "since revision",
                "switch delay",
                "allow empty",
                "actor",
                "reason",
            ]);
            for p in &r.pending {
                t.add_row(vec![
                    p.feature.clone(),
                    p.requested_revision.to_string(),
                    format!("{} ms", p.switch_delay_ms),
                    p.allow_empty.to_string(),
                    p.actor.clone(),
                    p.reason.clone(),
                ]);
            }
            t.to_string()
        },
    );
    Ok(())
}

/// `cancel NAME`.
pub async fn cancel(cli: &Cli, name: &str, reason: &str) -> anyhow::Result<()> {
    let r = cli.client()?.cancel_activation(name, reason).await?;
    emit(
        cli.output,
        json!({"cancelled": name, "revision": r.revision}),
        || {
            format!(
                "pending activation of {name} cancelled at revision {}",
                r.revision
            )
        },
    );
    Ok(())
}

/// `rollback NAME [--to REV]`.
pub async fn rollback(
    cli: &Cli,
    name: &str,
    to: Option<u64>,
    when: &ActivationArgs,
    reason: &str,
) -> anyhow::Result<()> {
    let resp = cli.client()?.rollback(name, to, when.to_pb()?, reason).await?;
    print_change(cli, &resp, "rollback of");
    Ok(())
}

/// `history NAME`.
pub async fn history(cli: &Cli, name: &str) -> anyhow::Result<()> {
    let r = cli.client()?.history(name).await?;
    emit(
        cli.output,
        json!({"feature": name, "revision": r.revision, "entries": r.entries.iter().map(|e| json!({
            "revision": e.revision, "at_ms": e.at_ms, "actor": e.actor, "change": e.change,
            "reason": e.reason,
            "definition": serde_json::from_str::<serde_json::Value>(&e.definition_json).ok(),
        })).collect::<Vec<_>>()}),
        || {
            let mut t = table(&["revision", "time", "actor", "change", "reason"]);
            for e in &r.entries {
                let at = UNIX_EPOCH + Duration::from_millis(e.at_ms.max(0) as u64);
                t.add_row(vec![
                    e.revision.to_string(),
                    humantime::format_rfc3339_millis(at).to_string(),
                    e.actor.clone(),
                    e.change.clone(),
                    e.reason.clone(),
                ]);
            }
            t.to_string()
        },
    );
    Ok(())
}
