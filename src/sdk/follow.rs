//! The follow task: a watch stream on one endpoint after another, resuming from the last
//! revision received, with what arrives handed to the [`Applier`] where it is read.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::clock::now_us;
use crate::error::Error;
use crate::eval::Flag;
use crate::pb::v1 as pb;
use crate::sdk::applier::{Applier, Incoming, Unread};
use crate::sdk::offset::server_us;
use crate::sdk::route::WatchRoute;
use crate::sdk::{Shared, RETRY_PAUSE};

/// Tells [`Sdk::start`] that the first copy is in effect (or why there will be none).
pub(super) type Ready = watch::Sender<Option<std::result::Result<(), Error>>>;

/// Longest pause between attempts when watches keep failing: short, so an instance holds the
/// cluster's latest within about a second of a partition healing (a failed attempt costs a
/// node one refused connection or one refusal).
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// What an SDK's follow task is doing; read it with [`Sdk::follow_state`](crate::sdk::Sdk::follow_state)
/// or wait on changes with [`Sdk::follow_states`](crate::sdk::Sdk::follow_states).
#[derive(Debug, Clone, PartialEq)]
pub enum FollowState {
    /// Opening its first watch.
    Starting,
    /// Following a watch stream: changes arrive.
    Following,
    /// Its watch failed; it retries on the next endpoint, pausing longer after each failure
    /// (up to 1 s, so it is back soon after the cluster is). Evaluations go on with the flags
    /// it holds.
    Retrying {
        /// Why the last attempt failed.
        error: Error,
        /// Failed attempts in a row.
        attempts: u32,
    },
    /// Stopped for good: the cluster refused what retrying cannot change (the filter, or the
    /// credentials). Evaluations go on with the flags it holds; no change will arrive.
    Stopped {
        /// Why.
        error: Error,
    },
}

/// Whether retrying cannot fix `e`: the request itself or the caller's credentials were
/// refused. Everything else (a node down, behind, at its limit, cut off) may pass.
fn is_permanent(e: &Error) -> bool {
    matches!(
        e,
        Error::InvalidArgument(_)
            | Error::Unauthenticated(_)
            | Error::PermissionDenied(_)
            | Error::Unimplemented(_)
    )
}

/// The pause after `attempts` failures in a row: 200 ms, doubling, at most [`MAX_BACKOFF`].
fn backoff(attempts: u32) -> Duration {
    RETRY_PAUSE
        .saturating_mul(1 << attempts.saturating_sub(1).min(5))
        .min(MAX_BACKOFF)
}

/// Follows the watch stream, resuming where it left off, and puts what it receives into effect
/// (one task: a delivery is handled where it is read, with no queue or second wake between).
pub(super) async fn follow_loop(
    route: Arc<WatchRoute>,
    shared: Arc<Shared>,
    filter: pb::WatchFilter,
    ready: Arc<Ready>,
) {
    use pb::watch_response::Kind;
    let mut applier = Applier::new(shared.clone());
    let mut timer = Box::pin(tokio::time::sleep(Duration::ZERO));
    let mut resume: Option<u64> = None;
    let mut failures = 0u32;
    loop {
        let req = pb::WatchRequest {
            filter: Some(filter.clone()),
            start_revision: resume,
        };
        let (mut stream, on) = match applier.run_while(&mut timer, route.open(req)).await {
            Ok(s) => s,
            Err(e) if is_permanent(&e) => {
                tracing::error!(error = %e, "the cluster refused this SDK's watch; it stops following (evaluations use the flags it holds)");
                shared
                    .follow
                    .send_replace(FollowState::Stopped { error: e.clone() });
                if ready.borrow().is_none() {
                    let _ = ready.send(Some(Err(e)));
                }
                return;
            }
            Err(e) => {
                failures += 1;
                if failures == 3 {
                    tracing::warn!(error = %e, "cannot open a watch on any endpoint; still retrying");
                } else {
                    tracing::debug!(error = %e, "cannot open a watch; retrying on the next endpoint");
                }
                shared.follow.send_replace(FollowState::Retrying {
                    error: e,
                    attempts: failures,
                });
                // A node at its limit, behind, or cut off: another may serve.
                route.seed().rotate();
                applier
                    .run_while(&mut timer, tokio::time::sleep(backoff(failures)))
                    .await;
                continue;
            }
        };
        *shared.watching.lock() = on.clone();
        loop {
            let msg = match applier.run_while(&mut timer, stream.message()).await {
                Ok(Some(m)) => m,
                Ok(None) => {
                    if on.is_none() {
                        route.seed().rotate();
                    }
                    break;
                }
                Err(status) => {
                    tracing::debug!(status = %status.message(), "watch stream broke; resuming");
                    shared.follow.send_replace(FollowState::Retrying {
                        error: Error::from_status(&status),
                        attempts: 0,
                    });
                    if status.code() != tonic::Code::ResourceExhausted && on.is_none() {
                        // The node may be down or frozen: resume on the next one.
                        route.seed().rotate();
                    }
                    break;
                }
            };
            if failures > 0 || !matches!(*shared.follow.borrow(), FollowState::Following) {
                failures = 0;
                shared.follow.send_replace(FollowState::Following);
            }
            let received_us = now_us();
            let incoming = match msg.kind {
                Some(Kind::Snapshot(s)) => {
                    shared
                        .offset
                        .one_way(server_us(s.server_time_us, s.server_time_ms), received_us);
                    let mut flags = Vec::with_capacity(s.toggles.len());
                    for t in &s.toggles {
                        match Flag::compile(&t.feature, t.revision, t.effective_at_ms, &t.definition_json) {
                            Ok(mut f) => {
                                f.received_at_us = received_us;
                                flags.push(f)
                            }
                            Err(e) => tracing::warn!(error = %e, "skipping a toggle this SDK cannot read"),
                        }
                    }
                    resume = Some(s.revision);
                    Some(Incoming::Snapshot(s.revision, flags))
                }
                Some(Kind::Event(e)) => {
                    use pb::watch_event::Change;
                    resume = Some(e.revision);
                    match e.change {
                        Some(Change::Toggle(t)) => {
                            applier.take(Unread {
                                feature: t.feature,
                                revision: t.revision,
                                effective_at_ms: t.effective_at_ms,
                                definition: t.definition_json,
                                received_at_us: received_us,
                            });
                            None
                        }
                        Some(Change::FeatureDeleted(name)) => Some(Incoming::Removed(name, e.revision)),
                        _ => None,
                    }
                }
                Some(Kind::Progress(p)) => {
                    shared
                        .offset
                        .one_way(server_us(p.server_time_us, p.server_time_ms), received_us);
                    None
                }
                None => None,
            };
            if let Some(incoming) = incoming {
                let snapshot = matches!(incoming, Incoming::Snapshot(..));
                applier.receive(incoming);
                applier.apply_due();
                if snapshot && ready.borrow().is_none() {
                    // What is due is in effect; scheduled changes wait for their instant.
                    let _ = ready.send(Some(Ok(())));
                }
            }
            if let Some(r) = resume {
                shared.received.fetch_max(r, Ordering::AcqRel);
            }
        }
        *shared.watching.lock() = None;
        applier
            .run_while(&mut timer, async {
                tokio::time::sleep(RETRY_PAUSE).await;
                route.broke().await;
            })
            .await;
    }
}
