//! After the heal: nothing acknowledged is missing on any node, the nodes agree, and no
//! serializable read returned a value nobody wrote.

use std::collections::{BTreeMap, BTreeSet};

use super::linearizable::{Call, Op, Outcome};
use super::watch::Acked;
use super::Anomaly;

/// A node's final state as read from it: key -> (value, modification revision), and its
/// applied index and digest.
#[derive(Debug, Clone, Default)]
pub struct NodeState {
    pub node: u64,
    pub values: BTreeMap<String, (String, u64)>,
    pub applied_index: u64,
    pub digest: String,
}

/// Every acknowledged write (key, value, revision) must be on every node: the node holds the
/// key at that revision with that value, or at a later revision.
pub fn lost_writes(acked: &[Acked], nodes: &[NodeState]) -> Vec<Anomaly> {
    let mut out = Vec::new();
    for n in nodes {
        let mut missing = 0;
        let mut first = None;
        for a in acked {
            let ok = match n.values.get(&a.key) {
                Some((v, r)) => *r > a.revision || (*r == a.revision && *v == a.value),
                None => false,
            };
            if !ok {
                missing += 1;
                first.get_or_insert_with(|| {
                    format!(
                        "{} = {:?} acknowledged at revision {}, node holds {:?}",
                        a.key,
                        a.value,
                        a.revision,
                        n.values.get(&a.key)
                    )
                });
            }
        }
        if let Some(first) = first {
            out.push(Anomaly::new(
                "lost-write",
                format!(
                    "node {}: {missing} acknowledged writes missing; first: {first}",
                    n.node
                ),
            ));
        }
    }
    out
}

/// Nodes at the same applied index hold the same state (after the heal all must be equal).
pub fn agreement(nodes: &[NodeState]) -> Vec<Anomaly> {
    let distinct: BTreeSet<(u64, &str)> = nodes
        .iter()
        .map(|n| (n.applied_index, n.digest.as_str()))
        .collect();
    if distinct.len() > 1 {
        let detail = nodes
            .iter()
            .map(|n| {
                format!(
                    "node {}: applied {} digest {:.12}",
                    n.node, n.applied_index, n.digest
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        return vec![Anomaly::new("agreement", detail)];
    }
    Vec::new()
}

/// A serializable read may be stale, but it must return a value some write wrote (with the
/// revision it was acknowledged with, when it was), never one that was never written.
pub fn phantom_reads(ops: &[Op], reads: &[(u64, String, Option<String>, u64)]) -> Vec<Anomaly> {
    let mut written: BTreeMap<(&str, &str), Option<u64>> = BTreeMap::new();
    for op in ops {
        if let Call::Put { value } | Call::Cas { value, .. } = &op.call {
            let rev = match op.result {
                Outcome::Written { revision } => Some(revision),
                _ => None,
            };
            let e = written.entry((op.key.as_str(), value.as_str())).or_insert(rev);
            if e.is_none() {
                *e = rev;
            }
        }
    }
    let mut out = Vec::new();
    for (node, key, value, revision) in reads {
        let Some(value) = value else { continue };
        match written.get(&(key.as_str(), value.as_str())) {
            None => out.push(Anomaly::new(
                "phantom-read",
                format!("node {node}: serializable read of {key} returned {value:?}, which no client wrote"),
            )),
            Some(Some(r)) if r != revision => out.push(Anomaly::new(
                "phantom-read",
                format!("node {node}: {key} = {value:?} read at revision {revision}, acknowledged at {r}"),
            )),
            _ => {}
        }
        if out.len() >= 5 {
            break;
        }
    }
    out
}

/// How far behind the cluster a node may be while it serves: it stops serving within 3 s of
/// losing the leader (checked every 100 ms), and a watch's progress reports go out every few
/// seconds, so 5 s of slack.
pub const STALENESS_BOUND_US: u64 = 5_000_000;

/// No node serves a view staler than `bound`: a watch progress or serializable read at revision
/// P, answered at time T, is stale when some write with a revision above P had been
/// acknowledged before T - bound. (A removed or cut-off member that keeps serving its frozen
/// state is what this finds.) `acked` is (revision, when acknowledged); `served` is (node,
/// when, revision served), all in µs into the run.
pub fn stale_serving(acked: &[(u64, u64)], served: &[(u64, u64, u64)], bound: u64) -> Vec<Anomaly> {
    let mut acked = acked.to_vec();
    acked.sort_by_key(|&(_, at)| at);
    // The highest revision acknowledged by each time.
    let mut high = Vec::with_capacity(acked.len());
    let mut max = 0;
    for (rev, at) in acked {
        max = max.max(rev);
        high.push((at, max));
    }
    let committed_by = |t: u64| -> u64 {
        let i = high.partition_point(|&(at, _)| at <= t);
        if i == 0 {
            0
        } else {
            high[i - 1].1
        }
    };
    let mut worst: BTreeMap<u64, (usize, u64, u64, u64)> = BTreeMap::new();
    for &(node, at, revision) in served {
        let committed = committed_by(at.saturating_sub(bound));
        if committed > revision {
            let e = worst.entry(node).or_insert((0, at, revision, committed));
            e.0 += 1;
        }
    }
    worst
        .into_iter()
        .map(|(node, (count, at, revision, committed))| {
            Anomaly::new(
                "stale",
                format!(
                    "node {node} served revision {revision} at {:.1} s into the run although revision {committed} had been \
                     acknowledged more than {} s before ({count} such answers)",
                    at as f64 / 1e6,
                    bound / 1_000_000
                ),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: u64, values: &[(&str, &str, u64)]) -> NodeState {
        NodeState {
            node: id,
            values: values
                .iter()
                .map(|(k, v, r)| (k.to_string(), (v.to_string(), *r)))
                .collect(),
            applied_index: 10,
            digest: "d".into(),
        }
    }

    fn acked(key: &str, value: &str, revision: u64) -> Acked {
        Acked {
            revision,
            key: key.into(),
            value: value.into(),
        }
    }

    #[test]
    fn a_write_overwritten_later_is_not_lost() {
        let a = [acked("k", "a", 3), acked("k", "b", 5)];
        assert!(lost_writes(&a, &[node(1, &[("k", "b", 5)])]).is_empty());
    }

    #[test]
    fn a_missing_or_different_write_is_lost() {
        let a = [acked("k", "a", 3), acked("j", "x", 4)];
        let found = lost_writes(
            &a,
            &[
                node(1, &[("k", "a", 3)]),
                node(2, &[("k", "z", 3), ("j", "x", 4)]),
            ],
        );
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].detail.contains("node 1"));
        assert!(found[1].detail.contains("node 2"));
    }

    #[test]
    fn serving_a_frozen_state_for_long_is_stale() {
        let acked = [(10, 1_000_000), (20, 2_000_000), (30, 9_000_000)];
        // A node at 20 at 6 s: revision 30 came later, and 20 was acknowledged only 4 s before.
        assert!(stale_serving(&acked, &[(1, 6_000_000, 20)], 5_000_000).is_empty());
        // Still at 10 at 8 s, while 20 was acknowledged at 2 s: stale.
        let found = stale_serving(&acked, &[(1, 8_000_000, 10), (1, 8_500_000, 10)], 5_000_000);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].detail.contains("2 such answers"), "{found:?}");
    }

    #[test]
    fn different_digests_disagree() {
        let mut b = node(2, &[]);
        assert!(agreement(&[node(1, &[]), b.clone()]).is_empty());
        b.digest = "e".into();
        assert_eq!(agreement(&[node(1, &[]), b]).len(), 1);
    }

    #[test]
    fn a_read_of_an_unwritten_value_is_a_phantom() {
        let ops = vec![Op {
            client: 1,
            key: "k".into(),
            call: Call::Put { value: "a".into() },
            invoked_us: 0,
            completed_us: Some(5),
            result: Outcome::Written { revision: 3 },
        }];
        let ok = vec![(1, "k".to_string(), Some("a".to_string()), 3)];
        assert!(phantom_reads(&ops, &ok).is_empty());
        let wrong_rev = vec![(1, "k".to_string(), Some("a".to_string()), 4)];
        assert_eq!(phantom_reads(&ops, &wrong_rev).len(), 1);
        let invented = vec![(1, "k".to_string(), Some("zz".to_string()), 3)];
        assert_eq!(phantom_reads(&ops, &invented).len(), 1);
    }
}
