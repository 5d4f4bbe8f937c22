//! The nemesis: a schedule of faults drawn from a seed, and how each is done and undone.
//!
//! A schedule is a list of faults, one at a time, each held for a few seconds and then healed,
//! with a quiet gap before the next. The same seed gives the same schedule (which node is the
//! leader when a fault begins depends on the run, so "the leader" is resolved at that moment).

use std::time::Duration;

use anyhow::{Context, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::cluster::Cluster;

/// One kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fault {
    /// kill -9 the leader; restart it at the heal.
    KillLeader,
    /// kill -9 a follower; restart it at the heal.
    KillFollower,
    /// kill -9 every node at once; restart them all at the heal.
    KillAll,
    /// SIGSTOP the leader (a long pause); SIGCONT at the heal.
    PauseLeader,
    /// SIGSTOP a follower.
    PauseFollower,
    /// Cut the leader off from its peers (clients still reach it).
    IsolateLeader,
    /// Cut a follower off from its peers.
    IsolateFollower,
    /// The leader hears nothing from its peers, but they hear it.
    DeafLeader,
    /// The followers hear nothing from the leader, but it hears them.
    MuteLeader,
    /// Every link slow (a 2-8 Mbit/s token bucket, queueing up to 200 ms) and lossy (2-10 %).
    SlowNetwork,
    /// A follower's disk fills up; space comes back at the heal.
    FollowerDiskFull,
    /// The leader's disk fills up.
    LeaderDiskFull,
    /// A member (the leader half the time) is removed while it runs and left running 6-9 s
    /// (clients still reach it), then wiped, started empty, re-added as a learner (catching up
    /// by snapshot) and promoted.
    Replace,
}

impl Fault {
    pub const ALL: [Fault; 13] = [
        Fault::KillLeader,
        Fault::KillFollower,
        Fault::KillAll,
        Fault::PauseLeader,
        Fault::PauseFollower,
        Fault::IsolateLeader,
        Fault::IsolateFollower,
        Fault::DeafLeader,
        Fault::MuteLeader,
        Fault::SlowNetwork,
        Fault::FollowerDiskFull,
        Fault::LeaderDiskFull,
        Fault::Replace,
    ];

    /// Whether the fault takes the leader away (the run measures how soon writes resume).
    pub fn loses_leader(self) -> bool {
        matches!(
            self,
            Fault::KillLeader | Fault::PauseLeader | Fault::IsolateLeader
        )
    }

    /// The fault named `name` (as [`Fault::name`] or its short form, e.g. `kill-leader`).
    pub fn parse(name: &str) -> Option<Fault> {
        Fault::ALL
            .into_iter()
            .find(|f| f.short() == name || f.name() == name)
    }

    /// A name without spaces, for the command line.
    pub fn short(self) -> &'static str {
        match self {
            Fault::KillLeader => "kill-leader",
            Fault::KillFollower => "kill-follower",
            Fault::KillAll => "kill-all",
            Fault::PauseLeader => "pause-leader",
            Fault::PauseFollower => "pause-follower",
            Fault::IsolateLeader => "isolate-leader",
            Fault::IsolateFollower => "isolate-follower",
            Fault::DeafLeader => "deaf-leader",
            Fault::MuteLeader => "mute-leader",
            Fault::SlowNetwork => "slow-network",
            Fault::FollowerDiskFull => "follower-disk-full",
            Fault::LeaderDiskFull => "leader-disk-full",
            Fault::Replace => "replace",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Fault::KillLeader => "kill leader",
            Fault::KillFollower => "kill follower",
            Fault::KillAll => "kill all",
            Fault::PauseLeader => "pause leader",
            Fault::PauseFollower => "pause follower",
            Fault::IsolateLeader => "isolate leader",
            Fault::IsolateFollower => "isolate follower",
            Fault::DeafLeader => "one-way: leader deaf",
            Fault::MuteLeader => "one-way: leader mute",
            Fault::SlowNetwork => "slow, lossy links",
            Fault::FollowerDiskFull => "follower disk full",
            Fault::LeaderDiskFull => "leader disk full",
            Fault::Replace => "remove, wipe, re-add",
        }
    }
}

/// A fault at a time into the run, held for a while.
#[derive(Debug, Clone)]
pub struct Step {
    pub at: Duration,
    pub fault: Fault,
    pub hold: Duration,
}

/// The schedule of a seed: faults of the given kinds one after another until `length`.
pub fn schedule(seed: u64, length: Duration, kinds: &[Fault]) -> Vec<Step> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut steps = Vec::new();
    let mut t = Duration::from_millis(rng.gen_range(1500..3000));
    while t < length && !kinds.is_empty() {
        let fault = kinds[rng.gen_range(0..kinds.len())];
        // A removed member is left running long enough that one still serving its frozen
        // state would be caught (the staleness bound is 5 s).
        let hold = match fault {
            Fault::Replace => Duration::from_millis(rng.gen_range(6000..9000)),
            _ => Duration::from_millis(rng.gen_range(2000..5000)),
        };
        steps.push(Step { at: t, fault, hold });
        t += hold + Duration::from_millis(rng.gen_range(1500..3500));
    }
    steps
}

/// What a fault did, for the heal and the report.
#[derive(Debug, Clone)]
pub struct Injected {
    pub fault: Fault,
    /// The node it hit (0: all or none in particular).
    pub node: u64,
    /// What went wrong doing it, when the cluster did not do what it was asked (a member
    /// removal that never completed): an anomaly, and the heal leaves that node's data alone.
    pub failed: Option<String>,
}

/// Applies a fault now. `pick` chooses among candidate nodes.
pub async fn inject(cluster: &mut Cluster, fault: Fault, rng: &mut ChaCha8Rng) -> Result<Injected> {
    let ids = cluster.ids();
    let leader = cluster.leader().await;
    let follower = {
        let others: Vec<u64> = ids.iter().copied().filter(|&i| Some(i) != leader).collect();
        others[rng.gen_range(0..others.len())]
    };
    // With no leader at this moment, "the leader" is any node.
    let leader = leader.unwrap_or(follower);
    let others = |x: u64| -> Vec<usize> { ids.iter().filter(|&&i| i != x).map(|&i| i as usize).collect() };
    let node = match fault {
        Fault::KillLeader => {
            cluster.kill(leader);
            leader
        }
        Fault::KillFollower => {
            cluster.kill(follower);
            follower
        }
        Fault::KillAll => {
            for &i in &ids {
                cluster.kill(i);
            }
            0
        }
        Fault::PauseLeader => {
            cluster.pause(leader);
            leader
        }
        Fault::PauseFollower => {
            cluster.pause(follower);
            follower
        }
        Fault::IsolateLeader => {
            cluster.net().partition(&[leader as usize], &others(leader))?;
            leader
        }
        Fault::IsolateFollower => {
            cluster.net().partition(&[follower as usize], &others(follower))?;
            follower
        }
        Fault::DeafLeader => {
            for o in others(leader) {
                cluster.net().cut(o, leader as usize)?;
            }
            leader
        }
        Fault::MuteLeader => {
            for o in others(leader) {
                cluster.net().cut(leader as usize, o)?;
            }
            leader
        }
        Fault::SlowNetwork => {
            for &i in &ids {
                let kbit = rng.gen_range(2000..8000);
                cluster
                    .net()
                    .degrade(i as usize, kbit, 200, rng.gen_range(2..10))?;
            }
            0
        }
        Fault::FollowerDiskFull => {
            cluster.fill_disk(follower)?;
            follower
        }
        Fault::LeaderDiskFull => {
            cluster.fill_disk(leader)?;
            leader
        }
        Fault::Replace => {
            let victim = if rng.gen_bool(0.5) { leader } else { follower };
            let admin = cluster.client()?;
            // The change may outlive one call (a member catching up): ask, then wait until the
            // leader's membership no longer has it (the removed node itself may never learn).
            let _ = tokio::time::timeout(Duration::from_secs(5), admin.remove_member(victim)).await;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            loop {
                let mut gone = false;
                for id in ids.iter().copied().filter(|&i| i != victim) {
                    let Some(s) = cluster.local_status(id).await else {
                        continue;
                    };
                    if s.role != "leader" {
                        continue;
                    }
                    if let Ok(Ok(st)) =
                        tokio::time::timeout(Duration::from_secs(3), cluster.client_of(id)?.status()).await
                    {
                        gone = !st.members.iter().any(|m| m.id == victim && m.voter);
                    }
                }
                if gone {
                    break;
                }
                if tokio::time::Instant::now() > deadline {
                    return Ok(Injected {
                        fault,
                        node: victim,
                        failed: Some(format!(
                            "node {victim} was still a member 30 s after its removal was asked"
                        )),
                    });
                }
                let _ = tokio::time::timeout(Duration::from_secs(3), admin.remove_member(victim)).await;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            victim
        }
    };
    Ok(Injected {
        fault,
        node,
        failed: None,
    })
}

/// Undoes a fault. For a replaced member: it kept running after its removal (clients may
/// still reach it); now it is wiped, started empty, added as a learner and promoted.
pub async fn heal(cluster: &mut Cluster, injected: &Injected) -> Result<()> {
    if injected.fault == Fault::Replace && injected.failed.is_none() {
        let id = injected.node;
        cluster.wipe_and_join(id)?;
        let addr = cluster.addr(id);
        let admin = cluster.client()?;
        retry(Duration::from_secs(30), || admin.add_learner(id, &addr))
            .await
            .context("re-adding the member as a learner")?;
        retry(Duration::from_secs(30), || admin.promote(id))
            .await
            .context("promoting the re-added member")?;
    }
    cluster.heal()
}

/// Retries an admin call until it succeeds or `within` has passed.
async fn retry<T, F, Fut>(within: Duration, mut call: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = switchyard::error::Result<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), call()).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) if tokio::time::Instant::now() > deadline => return Err(e.into()),
            Err(_) if tokio::time::Instant::now() > deadline => anyhow::bail!("no answer within {within:?}"),
            _ => tokio::time::sleep(Duration::from_millis(300)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_the_same_schedule() {
        let a = schedule(42, Duration::from_secs(60), &Fault::ALL);
        let b = schedule(42, Duration::from_secs(60), &Fault::ALL);
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
        let c = schedule(43, Duration::from_secs(60), &Fault::ALL);
        assert_ne!(format!("{a:?}"), format!("{c:?}"));
    }

    #[test]
    fn faults_do_not_overlap_and_end_before_the_run() {
        for seed in 0..50 {
            let steps = schedule(seed, Duration::from_secs(40), &Fault::ALL);
            for w in steps.windows(2) {
                assert!(w[0].at + w[0].hold < w[1].at, "seed {seed}: {w:?}");
            }
            assert!(steps.iter().all(|s| s.at < Duration::from_secs(40)));
        }
    }
}
