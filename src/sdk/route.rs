//! Where an SDK (or the CLI's `watch`) follows the cluster from: it learns the members from
//! the cluster (`Cluster.Members`) and ranks the learners for its own key (the instance id) by
//! rendezvous hashing; the configured endpoints (in their given order, usually the voters)
//! come after them. A fleet so divides evenly over the learners; an instance goes back to the
//! same learner after a reconnect; and when a learner goes away, only its subscribers move,
//! each to its own next choice, so they too spread evenly over the rest. Without learners, an
//! SDK follows the configured endpoints as it always did. Writes and registration stay on the
//! configured endpoints.
//!
//! A member that cannot be reached at its advertised address (behind a proxy, another
//! network) is skipped for a while, so an SDK that only reaches the configured endpoints
//! still follows through them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use sha2::{Digest, Sha256};

use crate::client::{Client, Conn};
use crate::error::{Error, Result};
use crate::pb::v1 as pb;

/// How often the member list is asked for again while all goes well.
const REFRESH_EVERY: Duration = Duration::from_secs(30);
/// How long a member that could not be reached is passed over.
const PASS_OVER: Duration = Duration::from_secs(30);
/// How long a member may take to open a watch before the next is tried: longer than a node
/// waits to catch up with a resumed stream's revision (`api::watch::AHEAD_WAIT`), so a member
/// that is merely behind answers first.
const OPEN_TIMEOUT: Duration = Duration::from_secs(8);
/// How long asking for the member list may take (a reconnect waits for it).
const MEMBERS_TIMEOUT: Duration = Duration::from_secs(1);

/// One place to follow from.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Place {
    /// A member at its advertised address.
    Member(String),
    /// The configured endpoints (with their own failover).
    Configured,
}

struct Ranking {
    /// Members in the order this key prefers them.
    members: Vec<String>,
    /// When the list was learned (`None`: never).
    learned: Option<Instant>,
    /// The place being tried or followed now: an index into `members`, or past them for the
    /// configured endpoints.
    at: usize,
    /// Members passed over until then.
    passed_over: HashMap<String, Instant>,
}

/// The ranked places of one follower.
pub(crate) struct WatchRoute {
    seed: Arc<Client>,
    key: String,
    discover: bool,
    ranking: Mutex<Ranking>,
}

/// The rendezvous score of `address` for `key`: the highest score wins.
fn score(key: &str, address: &str) -> u64 {
    let mut h = Sha256::new();
    h.update(key.as_bytes());
    h.update([0u8]);
    h.update(address.as_bytes());
    let d = h.finalize();
    u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

/// The learners among `members`, in the order `key` prefers them.
fn rank(key: &str, members: &[pb::Member]) -> Vec<String> {
    let mut ranked: Vec<(u64, &str)> = members
        .iter()
        .filter(|m| !m.voter && !m.address.is_empty())
        .map(|m| (u64::MAX - score(key, &m.address), m.address.as_str()))
        .collect();
    ranked.sort();
    ranked.into_iter().map(|(_, a)| a.to_string()).collect()
}

/// The learners `seed` names, in `key`'s order, then the configured endpoints: where the
/// CLI's `watch` tries, in turn. With the members unknown (an older node, none reachable), the
/// configured endpoints alone.
pub(crate) async fn ranked_endpoints(seed: &Client, key: &str) -> Vec<String> {
    let mut out = match tokio::time::timeout(MEMBERS_TIMEOUT, seed.members()).await {
        Ok(Ok(m)) => rank(key, &m.members),
        _ => Vec::new(),
    };
    for e in seed.endpoints() {
        if !out.contains(e) {
            out.push(e.clone());
        }
    }
    out
}

impl WatchRoute {
    /// The route of the follower named `key` (its instance id), which reaches the cluster
    /// through `seed` (and its members with `seed`'s settings, over connections shared by
    /// all that use it); with `discover` off, it follows through the configured endpoints
    /// alone.
    pub(crate) fn new(seed: Arc<Client>, key: String, discover: bool) -> Self {
        WatchRoute {
            seed,
            key,
            discover,
            ranking: Mutex::new(Ranking {
                members: Vec::new(),
                learned: None,
                at: 0,
                passed_over: HashMap::new(),
            }),
        }
    }

    /// Learns the members again if it is time (or `now_anyway`).
    async fn refresh(&self, now_anyway: bool) {
        if !self.discover {
            return;
        }
        let due = {
            let r = self.ranking.lock();
            now_anyway || r.learned.is_none_or(|t| t.elapsed() >= REFRESH_EVERY)
        };
        if !due {
            return;
        }
        match tokio::time::timeout(MEMBERS_TIMEOUT, self.seed.members()).await {
            Ok(Ok(m)) => {
                let ranked = rank(&self.key, &m.members);
                let mut r = self.ranking.lock();
                if ranked != r.members {
                    tracing::debug!(members = ?ranked, "the cluster's members, in this instance's order");
                    r.members = ranked;
                    r.at = 0;
                }
                r.learned = Some(Instant::now());
            }
            // An older node, or none reachable now: keep what is known, and ask later.
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "cannot learn the cluster's members");
                self.ranking.lock().learned = Some(Instant::now());
            }
            Err(_) => self.ranking.lock().learned = Some(Instant::now()),
        }
    }

    /// The place to try now: the first member in this key's order not passed over, from `at`.
    fn place(&self) -> (Place, Option<Conn>) {
        let mut r = self.ranking.lock();
        let now = Instant::now();
        r.passed_over.retain(|_, until| *until > now);
        while r.at < r.members.len() && r.passed_over.contains_key(&r.members[r.at]) {
            r.at += 1;
        }
        let Some(address) = r.members.get(r.at).cloned() else {
            return (Place::Configured, None);
        };
        drop(r);
        match self.seed.conn_to(&address) {
            Ok(conn) => (Place::Member(address), Some(conn)),
            // An address this process cannot use: pass it over.
            Err(e) => {
                tracing::debug!(member = %address, error = %e, "cannot connect to this member");
                let mut r = self.ranking.lock();
                r.passed_over.insert(address, Instant::now() + PASS_OVER);
                drop(r);
                self.place()
            }
        }
    }

    /// Opens a watch at the first place that takes it, in this key's order; returns the stream
    /// and the address it is on (the configured endpoints: `None`).
    pub(crate) async fn open(
        &self,
        req: pb::WatchRequest,
    ) -> Result<(tonic::Streaming<pb::WatchResponse>, Option<String>)> {
        self.refresh(false).await;
        loop {
            let (place, conn) = self.place();
            let (Place::Member(address), Some(conn)) = (place, conn) else {
                // Every member tried (or none known): the configured endpoints, as before
                // discovery; the next attempt starts again from this key's first choice.
                self.ranking.lock().at = 0;
                return self.seed.watch(req).await.map(|s| (s, None));
            };
            let opened = tokio::time::timeout(
                OPEN_TIMEOUT,
                crate::pb::v1::watch_client::WatchClient::new(conn)
                    .max_decoding_message_size(crate::client::MAX_RESPONSE)
                    .watch(req.clone()),
            )
            .await;
            // Whether the member could not be reached at all (the status came from this side
            // of the connection, not from the member), or did not answer in time.
            let (e, unreachable) = match opened {
                Ok(Ok(stream)) => return Ok((stream.into_inner(), Some(address))),
                Ok(Err(status)) => (
                    Error::from_status(&status),
                    std::error::Error::source(&status).is_some(),
                ),
                Err(_) => (
                    Error::Timeout(format!("{address} did not open a watch within {OPEN_TIMEOUT:?}")),
                    true,
                ),
            };
            // Whatever a member answers (at its bound, behind, not yet holding a new token),
            // the next place may serve: only the configured endpoints give a final answer.
            tracing::debug!(member = %address, error = %e, "cannot watch there; trying this instance's next choice");
            let mut r = self.ranking.lock();
            if unreachable {
                r.passed_over.insert(address, Instant::now() + PASS_OVER);
            }
            r.at += 1;
        }
    }

    /// The stream from `address` broke: the next attempt starts again from this key's first
    /// choice (a reconnect goes back to the same place when it can), and the member list is
    /// asked for again (a member may have left or joined).
    pub(crate) async fn broke(&self) {
        self.ranking.lock().at = 0;
        self.refresh(true).await;
    }

    /// The configured endpoints' client, for an endpoint rotation after a broken stream there.
    pub(crate) fn seed(&self) -> &Client {
        &self.seed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: u64, voter: bool) -> pb::Member {
        pb::Member {
            id,
            address: format!("10.0.0.{id}:7700"),
            voter,
        }
    }

    #[test]
    fn a_fleet_divides_evenly_over_the_learners() {
        let members: Vec<pb::Member> = (1..=3)
            .map(|i| member(i, true))
            .chain((4..=7).map(|i| member(i, false)))
            .collect();
        let mut first = HashMap::<String, usize>::new();
        for i in 0..4000 {
            let order = rank(&format!("instance-{i}"), &members);
            assert_eq!(
                order.len(),
                4,
                "the learners alone (voters: the configured endpoints)"
            );
            *first.entry(order[0].clone()).or_default() += 1;
        }
        assert_eq!(first.len(), 4);
        for (learner, n) in first {
            assert!((900..=1100).contains(&n), "{learner}: {n} of 4000");
        }
    }

    #[test]
    fn a_choice_is_stable_and_only_the_leavers_subscribers_move() {
        let all: Vec<pb::Member> = (4..=7).map(|i| member(i, false)).collect();
        let without_5: Vec<pb::Member> = all.iter().filter(|m| m.id != 5).cloned().collect();
        let mut moved_to = HashMap::<String, usize>::new();
        for i in 0..3000 {
            let key = format!("instance-{i}");
            let before = rank(&key, &all);
            assert_eq!(before, rank(&key, &all), "the same order every time");
            let after = rank(&key, &without_5);
            if before[0] == "10.0.0.5:7700" {
                // Its next choice, which is spread like any first choice.
                assert_eq!(after[0], before[1]);
                *moved_to.entry(after[0].clone()).or_default() += 1;
            } else {
                assert_eq!(after[0], before[0], "{key} stays where it was");
            }
        }
        assert_eq!(
            moved_to.len(),
            3,
            "the leaver's subscribers spread over every other learner"
        );
        let total: usize = moved_to.values().sum();
        for n in moved_to.values() {
            assert!(*n * 3 > total * 2 / 3 && *n * 3 < total * 4 / 3, "{moved_to:?}");
        }
    }
}
