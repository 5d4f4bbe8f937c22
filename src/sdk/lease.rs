//! The lease task: grants a lease, registers the instance under it, keeps it alive on a
//! keepalive stream that also reports the changes the SDK put into effect, and registers again
//! after a lost session.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::client::Client;
use crate::clock::now_us;
use crate::error::{Error, Result};
use crate::pb::v1 as pb;
use crate::sdk::offset::server_us;
use crate::sdk::{FlagChange, InstanceConfig, Shared, RETRY_PAUSE};

/// How long after a flip its report waits, so one keepalive carries a burst of flips.
const REPORT_DELAY: Duration = Duration::from_millis(20);
/// Most applied changes sent in one keepalive message.
const REPORTS_PER_MESSAGE: usize = 1024;

fn report(change: &FlagChange, offset_ms: i64) -> pb::AppliedChange {
    pb::AppliedChange {
        feature: change.feature.clone(),
        revision: change.revision,
        late_ms: change.late_ms,
        applied_at_ms: change.applied_at_us / 1000 + offset_ms,
    }
}

/// Registers the instance and keeps its lease alive, reporting applied changes; registers again
/// after a lost session.
pub(super) async fn lease_loop(client: Arc<Client>, shared: Arc<Shared>, instance: InstanceConfig) {
    let mut wanted = shared.registered.subscribe();
    loop {
        // Out of the registry until asked in (an instance failing its health check).
        if wanted.wait_for(|on| *on).await.is_err() {
            return;
        }
        let lease = match register(&client, &shared, &instance).await {
            Ok(lease) => lease,
            Err(e) => {
                tracing::warn!(instance = %instance.id, error = %e, "cannot register; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        shared.lease.store(lease, Ordering::Release);
        tracing::info!(instance = %instance.id, lease, "registered");
        // Keep this lease alive over successive streams until it is lost, or the instance is
        // taken out of the registry.
        let taken_out = loop {
            let end = tokio::select! {
                end = keep_alive(&client, &shared, &instance, lease) => end,
                _ = wanted.wait_for(|on| !*on) => break true,
            };
            match end {
                KeepAliveEnd::LeaseLost => break false,
                KeepAliveEnd::StreamBroke => {
                    client.rotate();
                    tokio::time::sleep(RETRY_PAUSE).await
                }
            }
        };
        if taken_out {
            // Unless a caller of `leave_registry` revoked it first.
            let _revoking = shared.deregistering.lock().await;
            if shared.lease.swap(0, Ordering::AcqRel) == lease {
                deregister(&client, &instance, lease).await;
            }
        } else {
            shared.lease.store(0, Ordering::Release);
            tracing::warn!(instance = %instance.id, lease, "lease lost; registering again");
        }
    }
}

/// Takes the instance out of the registry at once: its lease is revoked (tried for a few
/// seconds; failing that, it expires after its TTL, as no keepalive renews it).
async fn deregister(client: &Client, instance: &InstanceConfig, lease: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        match client.revoke_lease(lease).await {
            Ok(_) | Err(Error::NotFound(_)) => {
                tracing::info!(instance = %instance.id, lease, "taken out of the registry");
                return;
            }
            Err(e) if tokio::time::Instant::now() >= deadline => {
                tracing::warn!(instance = %instance.id, lease, error = %e, "could not revoke the lease; the instance leaves the registry when its TTL runs out");
                return;
            }
            Err(_) => {
                client.rotate();
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }
}

/// Grants a lease and registers the instance under it. The lease is in `shared` from the moment
/// it is granted, so [`Sdk::close`] revokes it (and the instance with it) even when it comes in
/// the middle of a registration.
async fn register(client: &Client, shared: &Shared, instance: &InstanceConfig) -> Result<u64> {
    let lease = client.grant_lease(instance.ttl).await?.lease_id;
    shared.lease.store(lease, Ordering::Release);
    let pb_instance = pb::Instance {
        id: instance.id.clone(),
        service: instance.service.clone(),
        version: instance.version.clone(),
        labels: instance.labels.clone().into_iter().collect(),
        ..Default::default()
    };
    match client.register(pb_instance.clone(), lease).await {
        Ok(_) => Ok(lease),
        Err(Error::AlreadyExists(_)) => {
            // A previous session of ours still holds the id: take it over.
            client.deregister(&instance.id).await?;
            client.register(pb_instance, lease).await?;
            Ok(lease)
        }
        Err(e) => {
            shared.lease.store(0, Ordering::Release);
            let _ = client.revoke_lease(lease).await;
            Err(e)
        }
    }
}

enum KeepAliveEnd {
    LeaseLost,
    StreamBroke,
}

/// One keepalive stream: the first message reports every applied change, later ones what is
/// new. Renews every third of the TTL, and soon after a flip.
async fn keep_alive(client: &Client, shared: &Shared, instance: &InstanceConfig, lease: u64) -> KeepAliveEnd {
    let offset = shared.offset.offset_ms();
    let all: Vec<pb::AppliedChange> = {
        let applied = shared.applied.lock();
        shared.unreported.lock().clear();
        applied
            .values()
            .filter(|c| !c.removed)
            .map(|c| report(c, offset))
            .collect()
    };
    let mut batches: Vec<Vec<pb::AppliedChange>> =
        all.chunks(REPORTS_PER_MESSAGE).map(|c| c.to_vec()).collect();
    let first = pb::KeepAliveRequest {
        lease_id: lease,
        applied_revision: shared.received.load(Ordering::Acquire),
        instance_id: instance.id.clone(),
        applied: if batches.is_empty() {
            Vec::new()
        } else {
            batches.remove(0)
        },
    };
    let mut sent_at: VecDeque<i64> = VecDeque::new();
    sent_at.push_back(now_us());
    let (tx, mut answers) = match client.open_keep_alive(first).await {
        Ok(pair) => pair,
        Err(Error::NotFound(_)) => return KeepAliveEnd::LeaseLost,
        Err(e) => {
            tracing::debug!(error = %e, "cannot open a keepalive stream");
            return KeepAliveEnd::StreamBroke;
        }
    };
    let every = (instance.ttl / 3).max(Duration::from_millis(100));
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    let mut backlog: VecDeque<Vec<pb::AppliedChange>> = batches.into();
    loop {
        let send_now = tokio::select! {
            _ = tick.tick() => true,
            _ = shared.report_now.notified() => {
                tokio::time::sleep(REPORT_DELAY).await;
                true
            }
            answer = answers.message() => {
                match answer {
                    Ok(Some(a)) => {
                        if let Some(sent) = sent_at.pop_front() {
                            shared.offset.round_trip(sent, server_us(a.server_time_us, a.server_time_ms), now_us());
                        }
                        false
                    }
                    Ok(None) => return KeepAliveEnd::StreamBroke,
                    Err(status) if status.code() == tonic::Code::NotFound => return KeepAliveEnd::LeaseLost,
                    Err(status) => {
                        tracing::debug!(status = %status.message(), "keepalive stream broke");
                        return KeepAliveEnd::StreamBroke;
                    }
                }
            }
        };
        if !send_now {
            continue;
        }
        let applied = match backlog.pop_front() {
            Some(batch) => batch,
            None => {
                let offset = shared.offset.offset_ms();
                let mut unreported = shared.unreported.lock();
                let batch: Vec<pb::AppliedChange> = unreported
                    .values()
                    .take(REPORTS_PER_MESSAGE)
                    .map(|c| report(c, offset))
                    .collect();
                for c in &batch {
                    unreported.remove(&c.feature);
                }
                batch
            }
        };
        let msg = pb::KeepAliveRequest {
            lease_id: lease,
            applied_revision: shared.received.load(Ordering::Acquire),
            instance_id: instance.id.clone(),
            applied,
        };
        if sent_at.len() >= 64 {
            sent_at.pop_front();
        }
        sent_at.push_back(now_us());
        if tokio::time::timeout(Duration::from_secs(2), tx.send(msg))
            .await
            .is_err()
        {
            return KeepAliveEnd::StreamBroke;
        }
    }
}
