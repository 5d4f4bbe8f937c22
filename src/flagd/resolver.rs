//! Evaluation for callers without an SDK (flagd's rpc protocols v1 and v2, OFREP): the
//! definition of a toggle in effect now (a scheduled change counts from its `effective_at`),
//! compiled once per (feature, revision) and kept, so a request costs a lookup and an
//! evaluation. Such callers have no instance identity; they may name one in headers
//! ([`instance_from_headers`]) or under `instance` in their context, so rules on
//! `instance.*` (canaries) answer for them as for an SDK.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use futures::future::BoxFuture;
use parking_lot::Mutex;
use serde_json::Map;
use tokio::sync::broadcast;
use tonic::Status;

use crate::clock::now_ms;
use crate::error::Error;
use crate::eval::{Flag, InstanceFacts};
use crate::flagd::configuration::{build, in_effect, Configuration, Selector};
use crate::flagd::source::{Changes, FlagSource, ToggleState};
use crate::node::Node;
use crate::watch::hub::{Channel, Published, StreamSlot};
use crate::watch::Interruption;

pub use crate::flagd::source::Lookup;

/// Compiled flags kept, at most (the cache is emptied when full).
const CACHE_LIMIT: usize = 10_000;

/// The header naming the caller's service (gRPC metadata or HTTP).
pub const SERVICE_HEADER: &str = "x-switchyard-service";
/// The header naming the caller's version.
pub const VERSION_HEADER: &str = "x-switchyard-version";
/// The header naming the caller's labels, `k=v,k2=v2`.
pub const LABELS_HEADER: &str = "x-switchyard-labels";

/// A node as a source of flags: its replicated state, with compiled flags kept.
pub struct Resolver {
    node: Arc<Node>,
    compiled: Mutex<HashMap<(String, u64), Arc<Flag>>>,
}

impl Resolver {
    /// The resolver of `node`.
    pub fn new(node: Arc<Node>) -> Self {
        Resolver {
            node,
            compiled: Mutex::new(HashMap::new()),
        }
    }
}

/// The status ending a flagd stream whose live channel the hub interrupted.
pub(crate) fn interrupted(why: Interruption) -> Status {
    let why = match why {
        Interruption::ShuttingDown => "the node is shutting down",
        Interruption::Jumped(_) => "the node caught up by installing a snapshot",
        Interruption::CannotVouch => {
            "the node cannot vouch for its data (cut off from the leader, removed, or its storage failed)"
        }
    };
    Status::unavailable(format!("{why}; reconnect to another node"))
}

/// A stream's feed of a node's changes: the hub's channel, which the hub interrupts when the
/// node can no longer vouch for its copy, jumps ahead by a snapshot, or shuts down.
struct NodeChanges {
    node: Arc<Node>,
    receiver: broadcast::Receiver<Arc<Published>>,
    generation: u64,
    _slot: StreamSlot,
}

impl Changes for NodeChanges {
    fn next(&mut self) -> BoxFuture<'_, Result<Option<String>, Status>> {
        Box::pin(async move {
            loop {
                match self.receiver.recv().await {
                    Ok(p) => match p.event.feature() {
                        Some(f) => return Ok(Some(f.to_string())),
                        // Registry events change no flag (and the features channel carries
                        // none).
                        None => continue,
                    },
                    Err(broadcast::error::RecvError::Lagged(_)) => return Ok(None),
                    Err(broadcast::error::RecvError::Closed) => {
                        return Err(interrupted(self.node.hub().why_ended(self.generation)))
                    }
                }
            }
        })
    }
}

impl FlagSource for Resolver {
    fn can_serve(&self) -> Result<(), Error> {
        self.node.can_serve()
    }

    fn barrier(&self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(self.node.read_barrier(false))
    }

    fn flag(&self, key: &str, selector: &Selector) -> Result<Arc<Flag>, Lookup> {
        let now = now_ms();
        let found = self.node.read_state(|m| {
            if selector.picks(&m.state, key) {
                in_effect(&m.state, key, now)
            } else {
                None
            }
        });
        let found = found.ok_or(Lookup::NotFound)?;
        let cache_key = (key.to_string(), found.revision);
        if let Some(f) = self.compiled.lock().get(&cache_key) {
            return Ok(f.clone());
        }
        let flag = Flag::compile_value(key, found.revision, 0, &found.definition, &Map::new())
            .map(Arc::new)
            .map_err(|e| Lookup::Parse(e.to_string()))?;
        let mut cache = self.compiled.lock();
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(cache_key, flag.clone());
        Ok(flag)
    }

    fn keys(&self, selector: &Selector) -> Vec<String> {
        self.node.read_state(|m| {
            m.state
                .toggles()
                .filter(|t| selector.picks(&m.state, &t.feature))
                .map(|t| t.feature.clone())
                .collect()
        })
    }

    fn instance(&self) -> Option<&InstanceFacts> {
        None
    }

    fn configuration(&self, selector: &Selector, now_ms: i64) -> Configuration {
        self.node.read_state(|m| build(&m.state, selector, now_ms))
    }

    fn toggles(&self, selector: &Selector, now_ms: i64) -> Vec<ToggleState> {
        self.node.read_state(|m| {
            m.state
                .toggles()
                .filter(|t| selector.picks(&m.state, &t.feature))
                .map(|t| {
                    let waiting = t.effective_at_ms > now_ms;
                    ToggleState {
                        feature: t.feature.clone(),
                        revision: in_effect(&m.state, &t.feature, now_ms).map_or(0, |e| e.revision),
                        since_ms: if waiting { 0 } else { t.effective_at_ms },
                        next_change_ms: waiting.then_some(t.effective_at_ms),
                    }
                })
                .collect()
        })
    }

    fn revision(&self) -> u64 {
        self.node.read_state(|m| m.state.revision())
    }

    fn open(&self) -> BoxFuture<'_, Result<Box<dyn Changes>, Status>> {
        Box::pin(async move {
            self.node.admit_reader().await?;
            let slot = self.node.admit_stream()?;
            let subscription = self
                .node
                .hub()
                // Registry events change no flag: the channel without them.
                .subscribe(Channel::Features, None)
                .map_err(|_| interrupted(Interruption::ShuttingDown))?;
            self.node.can_serve()?;
            Ok(Box::new(NodeChanges {
                node: self.node.clone(),
                receiver: subscription.receiver,
                generation: subscription.generation,
                _slot: slot,
            }) as Box<dyn Changes>)
        })
    }
}

/// The instance a caller names in its headers (service and version both, labels optional),
/// or `None` when it names none; an error says what is wrong with a partial or malformed one.
pub fn instance_from_headers<'h>(
    get: impl Fn(&str) -> Option<&'h str>,
) -> Result<Option<InstanceFacts>, String> {
    let (service, version) = (get(SERVICE_HEADER), get(VERSION_HEADER));
    let labels = get(LABELS_HEADER);
    let (service, version) = match (service, version) {
        (None, None) if labels.is_none() => return Ok(None),
        (Some(s), Some(v)) => (s.trim(), v.trim()),
        _ => {
            return Err(format!(
                "name the calling instance with both {SERVICE_HEADER} and {VERSION_HEADER}"
            ))
        }
    };
    crate::state::catalog::validate_name("service", service).map_err(|e| e.to_string())?;
    if semver::Version::parse(version).is_err() {
        return Err(format!("{VERSION_HEADER} {version:?} is not a semantic version"));
    }
    let mut parsed = BTreeMap::new();
    for pair in labels
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let Some((k, v)) = pair.split_once('=') else {
            return Err(format!("{LABELS_HEADER}: {pair:?} is not KEY=VALUE"));
        };
        parsed.insert(k.trim().to_string(), v.trim().to_string());
    }
    if parsed.len() > 64 {
        return Err(format!("{LABELS_HEADER}: at most 64 labels"));
    }
    Ok(Some(InstanceFacts {
        service: service.to_string(),
        version: version.to_string(),
        labels: parsed,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<&'a str> + 'a {
        move |name| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| *v)
    }

    #[test]
    fn an_instance_is_named_by_headers_or_not_at_all() {
        assert_eq!(instance_from_headers(headers(&[])).unwrap(), None);
        let i = instance_from_headers(headers(&[
            (SERVICE_HEADER, "cart"),
            (VERSION_HEADER, "2.1.0"),
            (LABELS_HEADER, "canary=true, zone=a"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(i.service, "cart");
        assert_eq!(i.labels.get("zone").map(String::as_str), Some("a"));
        assert!(instance_from_headers(headers(&[(SERVICE_HEADER, "cart")])).is_err());
        assert!(
            instance_from_headers(headers(&[(SERVICE_HEADER, "cart"), (VERSION_HEADER, "two")]))
                .unwrap_err()
                .contains("semantic version")
        );
        assert!(instance_from_headers(headers(&[
            (SERVICE_HEADER, "cart"),
            (VERSION_HEADER, "2.0.0"),
            (LABELS_HEADER, "canary")
        ]))
        .is_err());
    }
}
