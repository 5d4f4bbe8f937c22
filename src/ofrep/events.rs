//! OFREP's event stream (`GET /ofrep/v1/events`, Server-Sent Events, as OFREP's ADR 8 has
//! it): a `refetchEvaluation` message whenever the flags a client evaluates change *in
//! effect* — at once for a change that takes effect now, at `effective_at` for a scheduled one
//! — so web and mobile clients re-fetch together instead of polling.
//!
//! An event's id names the state of the client's flags in effect (a digest of each picked
//! flag's in-effect revision), the same on every node. A client that reconnects with
//! `Last-Event-ID` (or the `since` the bulk answer put in its URL) gets a message at once when
//! its flags changed meanwhile, so nothing is missed across a reconnect or between the bulk
//! fetch and the stream opening. Like a watch, the stream ends when the node stops vouching for
//! its data or shuts down; the client reconnects (to another node, behind a balancer).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use sha2::Digest;
use tokio::sync::mpsc;

use crate::auth::limits::WatchPermit;
use crate::clock::now_ms;
use crate::flagd::configuration::Selector;
use crate::flagd::source::{Changes, FlagSource};

/// Frames buffered per stream.
pub(crate) const STREAM_BUFFER: usize = 8;
/// How long a frame may wait for a client that does not read before the stream ends.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// How often an idle stream sends a comment, so proxies keep it open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How long a client waits before reconnecting (SSE `retry`), ms.
const RETRY_MS: u64 = 1000;

/// The state of the flags `selector` picks, in effect at `now`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InEffect {
    /// The event id: a digest of every picked flag's in-effect revision.
    pub id: String,
    /// When the latest of those took effect (unix s; 0: unknown).
    pub last_modified_s: i64,
    /// When a scheduled change to a picked flag takes effect next (unix ms).
    pub next_change_ms: Option<i64>,
}

/// The in-effect state of `selector`'s flags in `source` at `now`.
pub(crate) fn in_effect_state(source: &dyn FlagSource, selector: &Selector, now: i64) -> InEffect {
    let mut toggles = source.toggles(selector, now);
    toggles.sort_by(|a, b| a.feature.cmp(&b.feature));
    let mut h = sha2::Sha256::new();
    let mut last_modified_ms = 0i64;
    let mut next_change_ms: Option<i64> = None;
    for t in &toggles {
        if let Some(at) = t.next_change_ms {
            next_change_ms = Some(next_change_ms.map_or(at, |n| n.min(at)));
        }
        last_modified_ms = last_modified_ms.max(t.since_ms);
        h.update(t.feature.as_bytes());
        h.update([0]);
        h.update(t.revision.to_be_bytes());
    }
    InEffect {
        id: hex::encode(&h.finalize()[..12]),
        last_modified_s: last_modified_ms.max(0) / 1000,
        next_change_ms,
    }
}

/// One `refetchEvaluation` message.
fn message(state: &InEffect) -> Bytes {
    let mut data = json!({"type": "refetchEvaluation"});
    if state.last_modified_s > 0 {
        data["lastModified"] = state.last_modified_s.into();
    }
    Bytes::from(format!("id: {}\nevent: message\ndata: {data}\n\n", state.id))
}

/// Clears the connection's streaming mark when the stream ends.
struct Streaming(Arc<std::sync::atomic::AtomicBool>);

impl Drop for Streaming {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// What one stream holds until it ends.
pub(crate) struct Held {
    pub permit: Option<WatchPermit>,
    pub streaming: Arc<std::sync::atomic::AtomicBool>,
}

/// Feeds one stream's frames into `tx` until the client leaves or the source stops serving it.
pub(crate) async fn follow(
    source: Arc<dyn FlagSource>,
    selector: Selector,
    since: Option<String>,
    tx: mpsc::Sender<Bytes>,
    mut changes: Box<dyn Changes>,
    held: Held,
) {
    held.streaming.store(true, Ordering::Release);
    let _held = (held.permit, Streaming(held.streaming));
    let send = |frame: Bytes| {
        let tx = tx.clone();
        async move {
            matches!(
                tokio::time::timeout(SEND_TIMEOUT, tx.send(frame)).await,
                Ok(Ok(()))
            )
        }
    };
    if !send(Bytes::from(format!("retry: {RETRY_MS}\n\n"))).await {
        return;
    }
    let mut state = in_effect_state(&*source, &selector, now_ms());
    if since.as_deref().is_some_and(|s| s != state.id) && !send(message(&state)).await {
        return;
    }
    let mut keep_alive = tokio::time::interval(KEEP_ALIVE);
    keep_alive.tick().await;
    loop {
        let now = now_ms();
        let until_change = state
            .next_change_ms
            .map(|at| Duration::from_millis((at - now).max(0) as u64 + 1));
        let recheck = tokio::select! {
            change = changes.next() => match change {
                Ok(_) => true,
                // The source stopped vouching for its data, jumped ahead, or shuts down.
                Err(_) => return,
            },
            _ = tokio::time::sleep(until_change.unwrap_or(KEEP_ALIVE)), if until_change.is_some() => true,
            _ = keep_alive.tick() => {
                if !send(Bytes::from_static(b": keep-alive\n\n")).await {
                    return;
                }
                false
            }
            _ = tx.closed() => return,
        };
        if recheck {
            let now_state = in_effect_state(&*source, &selector, now_ms());
            let changed = now_state.id != state.id;
            state = now_state;
            if changed && !send(message(&state)).await {
                return;
            }
        }
    }
}
