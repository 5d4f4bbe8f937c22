//! One schedule, start to finish: start the cluster in its namespaces, set up the fleet and the
//! gated activation, run the traffic while the nemesis works through its faults, heal
//! everything, wait for the cluster, the watchers and the SDKs to converge, then read every
//! node and run every checker.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use switchyard::pb::v1 as pb;

use crate::check::{self, Anomaly};
use crate::cluster::{Cluster, ClusterConfig};
use crate::nemesis::{self, Fault};
use crate::traffic::{self, Fleet, Nodes, Placement, Recorder, WatchProgress, WatchSpec};

/// How long convergence after the heal may take before it counts as an anomaly.
const CONVERGE_WITHIN: Duration = Duration::from_secs(30);
/// Search steps the linearizability checker may take per key.
const LINEARIZABILITY_STEPS: u64 = 20_000_000;

/// What to run.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub binary: PathBuf,
    pub seed: u64,
    /// How long the traffic and the faults last (the heal and the checks come after).
    pub length: Duration,
    /// Logs and disks go under here.
    pub dir: PathBuf,
    /// Keeps concurrent runs' namespaces apart (1..=250).
    pub run: u8,
    /// Extra `serve` flags.
    pub serve_args: Vec<String>,
    /// The kinds of fault the schedule draws from.
    pub faults: Vec<Fault>,
    /// Keep the logs and the recorded history even when nothing was found.
    pub keep: bool,
}

impl RunConfig {
    /// Snapshots every 50 entries with 10 kept behind: catching up by snapshot happens during
    /// nearly every fault.
    pub fn default_serve_args() -> Vec<String> {
        ["--snapshot-every", "50", "--keep-logs", "10"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }
}

/// What one schedule did and found.
#[derive(Debug, Default)]
pub struct Report {
    pub seed: u64,
    pub faults: Vec<Fault>,
    /// Operations checked for linearizability, watch messages, gate activations judged.
    pub ops_checked: usize,
    pub watch_messages: usize,
    pub activations: usize,
    pub anomalies: Vec<Anomaly>,
    /// Keys whose linearizability search ran out of steps.
    pub inconclusive: usize,
    /// From the heal to every node agreeing.
    pub cluster_converged: Option<Duration>,
    /// From the heal to every watcher holding the final revision.
    pub watches_converged: Option<Duration>,
    /// The slowest of `sdk_heals`.
    pub sdks_converged: Option<Duration>,
    /// After each fault's heal: until every SDK instance held every toggle's revision committed
    /// by the heal (from when each instance received it, so the harness's waits do not count).
    pub sdk_heals: Vec<(Fault, Duration)>,
    /// (instance, toggle) pairs `sdk_heals` judged.
    pub sdk_checks: usize,
    /// For each toggle change: until the last live SDK instance received it.
    pub sdk_change_lags: Vec<Duration>,
    /// After each loss of the leader: until the first write sent after it was acknowledged.
    pub write_resume: Vec<Duration>,
    /// Where the logs are (kept when something was found).
    pub dir: PathBuf,
}

/// The wall clock in unix microseconds: the clock SDK instances stamp what they receive with.
fn wall_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// When revisions were known committed: (revision, wall µs) of each acknowledged probe write,
/// by time. A revision is committed by the time a write at or past it was acknowledged (a
/// change's own history stamp is when it was proposed, and a proposal can wait seconds for a
/// new leader to commit it).
struct Commits(Vec<(u64, i64)>);

impl Commits {
    fn new(mut acked: Vec<(u64, i64)>) -> Commits {
        acked.sort_by_key(|&(_, at)| at);
        Commits(acked)
    }

    /// The highest revision known committed at `at`.
    fn by(&self, at: i64) -> u64 {
        self.0
            .iter()
            .take_while(|(_, t)| *t <= at)
            .map(|(r, _)| *r)
            .max()
            .unwrap_or(0)
    }

    /// When `revision` was first known committed.
    fn when(&self, revision: u64) -> Option<i64> {
        self.0.iter().find(|(r, _)| *r >= revision).map(|(_, t)| *t)
    }
}

/// How long after a heal (wall µs) every SDK instance held, for each toggle, at least the
/// revision of the toggle's last change known committed by then (`histories`: each toggle's
/// change revisions). An instance that started after the heal is left out (it starts with
/// everything); one that never got there is left to the final convergence check.
fn sdk_convergence(
    changes: &[(String, switchyard::sdk::FlagChange)],
    histories: &BTreeMap<String, Vec<u64>>,
    commits: &Commits,
    heal_us: i64,
) -> (Duration, usize) {
    let committed = commits.by(heal_us);
    let mut checked = 0;
    let mut started: BTreeMap<&str, i64> = BTreeMap::new();
    for (who, c) in changes {
        started.entry(who.as_str()).or_insert(c.received_at_us);
    }
    let mut worst = 0i64;
    for (who, began) in started {
        if began > heal_us {
            continue;
        }
        for (feature, history) in histories {
            let Some(target) = history.iter().copied().filter(|r| *r <= committed).max() else {
                continue;
            };
            let got = changes
                .iter()
                .filter(|(w, c)| w == who && c.feature == *feature && c.revision >= target)
                .map(|(_, c)| c.received_at_us)
                .min();
            if let Some(t) = got {
                checked += 1;
                if t - heal_us > 2_000_000 {
                    tracing::debug!(
                        "{who} got {feature} at or past {target} (committed by the heal: {committed}) {} ms after the heal",
                        (t - heal_us) / 1000
                    );
                }
                worst = worst.max(t - heal_us);
            }
        }
    }
    (Duration::from_micros(worst.max(0) as u64), checked)
}

/// For every toggle change, how long from when it was known committed until the last SDK
/// instance live by then received it (faults included: an instance on a node that was cut off
/// gets it only once it has moved to another). Slightly short: "known committed" is when a
/// probe write past it was acknowledged, at most ~100 ms after the commit.
fn sdk_change_lags(
    changes: &[(String, switchyard::sdk::FlagChange)],
    histories: &BTreeMap<String, Vec<u64>>,
    commits: &Commits,
) -> Vec<Duration> {
    let mut started: BTreeMap<&str, i64> = BTreeMap::new();
    for (who, c) in changes {
        started.entry(who.as_str()).or_insert(c.received_at_us);
    }
    let mut lags = Vec::new();
    for (feature, history) in histories {
        for revision in history {
            let Some(at) = commits.when(*revision) else {
                continue;
            };
            let mut worst = None;
            for (who, began) in &started {
                if *began > at {
                    continue;
                }
                let got = changes
                    .iter()
                    .filter(|(w, c)| w == who && c.feature == *feature && c.revision >= *revision)
                    .map(|(_, c)| c.received_at_us)
                    .min();
                if let Some(t) = got {
                    worst = Some(worst.unwrap_or(0).max(t - at));
                }
            }
            if let Some(w) = worst {
                lags.push(Duration::from_micros(w.max(0) as u64));
            }
        }
    }
    lags
}

/// Runs one schedule.
pub async fn run(config: &RunConfig) -> Result<Report> {
    let dir = config.dir.join(format!("seed-{}", config.seed));
    let _ = std::fs::remove_dir_all(&dir);
    let mut cluster = Cluster::start(ClusterConfig {
        binary: config.binary.clone(),
        dir: dir.clone(),
        run: config.run,
        nodes: 3,
        serve_args: config.serve_args.clone(),
    })?;
    let mut report = Report {
        seed: config.seed,
        ..Default::default()
    };
    if let Err(e) = drive(&mut cluster, config, &mut report).await {
        report.anomalies.push(Anomaly::new("harness", format!("{e:#}")));
    }
    report.dir = dir.clone();
    if !report.anomalies.is_empty() {
        for id in cluster.ids() {
            tracing::warn!("node {id} log tail:\n{}", cluster.log_tail(id, 15));
        }
    }
    drop(cluster);
    if report.anomalies.is_empty() && !config.keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(report)
}

/// Tasks aborted when the run ends, however it ends (a harness error must not leave writers
/// or SDK instances of one schedule talking to the next).
struct Tasks(Vec<tokio::task::AbortHandle>);

impl Tasks {
    fn add<T: Send + 'static>(&mut self, h: tokio::task::JoinHandle<T>) -> tokio::task::JoinHandle<T> {
        self.0.push(h.abort_handle());
        h
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        for h in &self.0 {
            h.abort();
        }
    }
}

async fn drive(cluster: &mut Cluster, config: &RunConfig, report: &mut Report) -> Result<()> {
    let seed = config.seed;
    let mut guard = Tasks(Vec::new());
    cluster.wait_leader(Duration::from_secs(30)).await?;
    let rec = Recorder::new();
    let ids = cluster.ids();
    let nodes = Nodes {
        channels: ids.iter().map(|&i| cluster.channel(i)).collect::<Result<_>>()?,
        endpoints: cluster.endpoints(),
        ids: ids.clone(),
    };
    let admin = cluster.client()?;

    // The gated feature, the fleet on the old version, and the activation waiting for it.
    admin
        .put_feature(
            pb::Feature {
                name: traffic::GATED.into(),
                description: "gated".into(),
                requirements: vec![pb::Requirement {
                    service: traffic::SERVICE.into(),
                    version_req: format!(">={}", traffic::NEW_VERSION),
                }],
                ..Default::default()
            },
            None,
            "torture set-up",
        )
        .await
        .context("creating the gated feature")?;
    // The toggles the toggler flips (plain features: no requirements).
    for i in 0..traffic::TOGGLES {
        admin
            .put_feature(
                pb::Feature {
                    name: traffic::toggle_key(i),
                    description: "flipped by the toggler".into(),
                    ..Default::default()
                },
                None,
                "torture set-up",
            )
            .await
            .context("creating the toggled features")?;
    }
    let mut fleet = Fleet::new(nodes.endpoints.clone(), rec.clone(), seed);
    let setup_deadline = Instant::now() + Duration::from_secs(30);
    fleet.add(traffic::OLD_VERSION, setup_deadline).await?;
    fleet.add(traffic::OLD_VERSION, setup_deadline).await?;
    fleet.add(traffic::NEW_VERSION, setup_deadline).await?;
    admin
        .set_toggle_state_with(
            traffic::GATED,
            true,
            None,
            Some(pb::Activation {
                mode: pb::activation::Mode::WhenReady as i32,
                switch_delay_ms: Some(300),
                ..Default::default()
            }),
            "torture: turn on when the fleet is upgraded",
        )
        .await
        .context("activating the gated feature when ready")?;

    // Traffic.
    let stop = Arc::new(AtomicBool::new(false));
    let stop_watches = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for c in 0..3 {
        tasks.push(guard.add(tokio::spawn(traffic::writer(
            c,
            nodes.clone(),
            rec.clone(),
            stop.clone(),
            seed,
        ))));
    }
    tasks.push(guard.add(tokio::spawn(traffic::serial_reader(
        nodes.clone(),
        rec.clone(),
        stop.clone(),
        seed,
    ))));
    tasks.push(guard.add(tokio::spawn(traffic::prober(
        nodes.clone(),
        rec.clone(),
        stop.clone(),
        seed,
    ))));
    tasks.push(guard.add(tokio::spawn(traffic::toggler(
        nodes.clone(),
        rec.clone(),
        stop.clone(),
        seed,
    ))));
    let specs = [
        ("pinned-1-all", vec![], true, Placement::Pinned(0)),
        ("pinned-2-features", vec![], false, Placement::Pinned(1)),
        (
            "pinned-3-some",
            vec![traffic::hot_key(0), traffic::toggle_key(0)],
            false,
            Placement::Pinned(2),
        ),
        ("moving-all", vec![], true, Placement::Moving),
        (
            "moving-some",
            vec![
                traffic::hot_key(1),
                traffic::toggle_key(1),
                traffic::GATED.to_string(),
            ],
            false,
            Placement::Moving,
        ),
    ];
    let mut watchers = Vec::new();
    for (i, (name, features, registry, placement)) in specs.into_iter().enumerate() {
        let progress = Arc::new(WatchProgress::default());
        let spec = WatchSpec {
            name: name.to_string(),
            features,
            registry,
            placement,
        };
        let handle = guard.add(tokio::spawn(traffic::watcher(
            spec,
            nodes.clone(),
            rec.clone(),
            progress.clone(),
            stop_watches.clone(),
            seed + i as u64,
        )));
        watchers.push((name, progress, handle));
    }
    let length = config.length;
    let began = Instant::now();
    let fleet_task = guard.add(tokio::spawn(async move {
        for at in [0.35, 0.7] {
            tokio::time::sleep_until((began + length.mul_f64(at)).into()).await;
            let deadline = Instant::now() + length;
            if let Err(e) = fleet.upgrade_one(deadline).await {
                tracing::warn!("upgrade step: {e:#}");
            }
        }
        fleet
    }));

    // The faults.
    let start = Instant::now();
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x4e45_4d45);
    let mut loss_times = Vec::new();
    let mut heals = Vec::new();
    for step in nemesis::schedule(seed, length, &config.faults) {
        while Instant::now() < start + step.at {
            cluster.supervise()?;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let t = rec.now_us();
        report.faults.push(step.fault);
        let injected = nemesis::inject(cluster, step.fault, &mut rng)
            .await
            .with_context(|| format!("injecting {}", step.fault.name()))?;
        tracing::info!("seed {seed}: {} (node {})", step.fault.name(), injected.node);
        if let Some(why) = &injected.failed {
            report.anomalies.push(Anomaly::new("membership", why.clone()));
        }
        if step.fault.loses_leader() {
            loss_times.push(t);
        }
        let until = tokio::time::Instant::now() + step.hold;
        while tokio::time::Instant::now() < until {
            cluster.supervise()?;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        nemesis::heal(cluster, &injected)
            .await
            .with_context(|| format!("healing {}", step.fault.name()))?;
        heals.push((wall_us(), step.fault));
    }
    tokio::time::sleep_until((start + length).into()).await;

    // Heal and converge.
    cluster.heal()?;
    let healed = Instant::now();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    // Every write answered before the final states are read, so none is acknowledged after.
    let _ = eventually(Duration::from_secs(10), || {
        match rec.probes_in_flight.load(Ordering::Relaxed) {
            0 => Vec::new(),
            n => vec![format!("{n} probes")],
        }
    })
    .await;
    let fleet = fleet_task.await.context("the fleet task")?;
    // A toggler that never got a write through would leave the SDK checks nothing to judge.
    if !rec.acked.lock().iter().any(|a| a.key.starts_with("toggle/")) {
        report.anomalies.push(Anomaly::new(
            "harness",
            "the toggler got no write through in the whole run",
        ));
    }
    let (converged, statuses) = wait_cluster(cluster).await;
    report.cluster_converged = converged.then(|| healed.elapsed());
    if !converged {
        report.anomalies.push(Anomaly::new(
            "converge",
            format!("the nodes did not agree within {CONVERGE_WITHIN:?} of the heal: {statuses:?}"),
        ));
    }
    let final_revision = statuses.iter().map(|s| s.revision).max().unwrap_or(0);
    let behind = eventually(CONVERGE_WITHIN, || {
        watchers
            .iter()
            .filter(|(_, p, _)| p.known.load(Ordering::Relaxed) < final_revision)
            .map(|(n, p, _)| format!("{n} at {}", p.known.load(Ordering::Relaxed)))
            .collect::<Vec<_>>()
    })
    .await;
    match behind {
        Ok(()) => report.watches_converged = Some(healed.elapsed()),
        Err(left) => report.anomalies.push(Anomaly::new(
            "watch-converge",
            format!(
                "{} after the heal, watchers behind revision {final_revision}: {}",
                CONVERGE_WITHIN.as_secs(),
                left.join(", ")
            ),
        )),
    }
    // The admin client fails over by itself; a connection broken by the last fault can still
    // fail one call, so the harness asks again for a while.
    let mut listed = admin.list_toggles(false).await;
    for _ in 0..20 {
        if listed.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        listed = admin.list_toggles(false).await;
    }
    let final_toggles: BTreeMap<String, u64> = match listed {
        Ok(r) => r.toggles.into_iter().map(|t| (t.feature, t.revision)).collect(),
        Err(e) => {
            report
                .anomalies
                .push(Anomaly::new("harness", format!("listing toggles: {e}")));
            BTreeMap::new()
        }
    };
    let sdk_behind = eventually(CONVERGE_WITHIN, || {
        let mut left = Vec::new();
        for (id, _, sdk) in &fleet.instances {
            for (feature, revision) in &final_toggles {
                let have = sdk.last_applied(feature).map_or(0, |c| c.revision);
                if have < *revision {
                    left.push(format!("{id} holds {feature} at {have}, not {revision}"));
                }
            }
        }
        left
    })
    .await;
    match sdk_behind {
        Ok(()) => {
            let mut histories = BTreeMap::new();
            for feature in final_toggles.keys() {
                if let Ok(h) = admin.history(feature).await {
                    let changes = h
                        .entries
                        .into_iter()
                        .filter(|e| !e.definition_json.is_empty())
                        .map(|e| e.revision)
                        .collect::<Vec<_>>();
                    histories.insert(feature.clone(), changes);
                }
            }
            let changes = rec.sdk_changes.lock().clone();
            let wall_at_t0 = wall_us() - rec.now_us() as i64;
            let commits = Commits::new(
                rec.probes_acked
                    .lock()
                    .iter()
                    .map(|(r, t)| (*r, wall_at_t0 + *t as i64))
                    .collect(),
            );
            for (at, fault) in &heals {
                let (took, checked) = sdk_convergence(&changes, &histories, &commits, *at);
                report.sdk_heals.push((*fault, took));
                report.sdk_checks += checked;
            }
            report.sdk_change_lags = sdk_change_lags(&changes, &histories, &commits);
            report.sdks_converged = report.sdk_heals.iter().map(|(_, d)| *d).max();
        }
        Err(left) => report.anomalies.push(Anomaly::new(
            "sdk-converge",
            format!(
                "{} s after the heal: {}",
                CONVERGE_WITHIN.as_secs(),
                left.join("; ")
            ),
        )),
    }
    // Once every old instance is gone, the gated feature must be on.
    let upgraded = fleet.instances.iter().all(|(_, v, _)| v == traffic::NEW_VERSION);
    if upgraded && converged {
        let on = admin
            .get_toggle(traffic::GATED, false)
            .await
            .ok()
            .and_then(|t| t.toggle)
            .is_some_and(|t| t.definition_json.contains("ENABLED"));
        if !on {
            report.anomalies.push(Anomaly::new(
                "gate-liveness",
                "every old instance is gone, yet the when-ready activation did not take effect",
            ));
        }
    }

    stop_watches.store(true, Ordering::Relaxed);
    let mut records = Vec::new();
    for (_, _, h) in watchers {
        records.push(h.await.context("a watcher task")?);
    }
    fleet.close().await;

    // Final states, node by node, read again until every node is at the same applied index
    // (an entry committed during the reads, e.g. a lease expiring, would make them differ).
    let mut states = Vec::new();
    for _ in 0..50 {
        states = final_states(cluster, &ids).await?;
        if states.iter().all(|s| s.applied_index == states[0].applied_index) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The checkers.
    let ops = rec.ops.lock().clone();
    let acked = rec.acked.lock().clone();
    report.ops_checked = ops.len();
    for (key, verdict) in check::linearizable::check(&ops, LINEARIZABILITY_STEPS) {
        match verdict {
            check::linearizable::Verdict::Linearizable => {}
            check::linearizable::Verdict::Inconclusive => report.inconclusive += 1,
            check::linearizable::Verdict::Violation { explanation } => report
                .anomalies
                .push(Anomaly::new("linearizable", format!("{key}: {explanation}"))),
        }
    }
    report
        .anomalies
        .extend(check::state::lost_writes(&acked, &states));
    report.anomalies.extend(check::state::agreement(&states));
    let reads: Vec<_> = rec
        .serial_reads
        .lock()
        .iter()
        .map(|r| (r.node, r.key.clone(), r.value.clone(), r.revision))
        .collect();
    report.anomalies.extend(check::state::phantom_reads(&ops, &reads));
    report.anomalies.extend(check::state::stale_serving(
        &acked_at(&rec),
        &rec.served.lock(),
        check::state::STALENESS_BOUND_US,
    ));
    report.watch_messages = records
        .iter()
        .flat_map(|r| &r.segments)
        .map(|s| s.messages.len())
        .sum();
    for a in check::watch::check(&records, &acked) {
        report
            .anomalies
            .push(Anomaly::new(a.checker, format!("{}: {}", a.watcher, a.detail)));
    }
    let requirement = semver::VersionReq::parse(&format!(">={}", traffic::NEW_VERSION))?;
    let (gate, judged) = check::gate::check(
        &records,
        &check::gate::Gate {
            feature: traffic::GATED,
            service: traffic::SERVICE,
            requirement: &requirement,
        },
    );
    report.activations = judged;
    report.anomalies.extend(gate);
    report
        .anomalies
        .extend(check::sdk::check(&rec.sdk_changes.lock()));
    if !report.anomalies.is_empty() || config.keep {
        save_history(&config.dir.join(format!("seed-{seed}")), &ops, &records, &rec);
    }

    // How soon writes resumed after each loss of the leader.
    let probes = rec.probes.lock().clone();
    for t in loss_times {
        let first = probes
            .iter()
            .filter(|(sent, _)| *sent >= t)
            .map(|(_, done)| *done)
            .min();
        if let Some(done) = first {
            report.write_resume.push(Duration::from_micros(done - t));
        }
    }
    Ok(())
}

/// Every acknowledged write's revision and when its answer arrived (µs into the run).
fn acked_at(rec: &Recorder) -> Vec<(u64, u64)> {
    let mut v: Vec<(u64, u64)> = rec
        .ops
        .lock()
        .iter()
        .filter_map(|o| match (o.result.clone(), o.completed_us) {
            (check::linearizable::Outcome::Written { revision }, Some(at)) => Some((revision, at)),
            _ => None,
        })
        .collect();
    v.extend(rec.probes_acked.lock().iter().copied());
    v
}

/// Every node's features, toggles, applied index and digest.
async fn final_states(cluster: &Cluster, ids: &[u64]) -> Result<Vec<check::state::NodeState>> {
    let mut states = Vec::new();
    for &id in ids {
        let client = cluster.client_of(id)?;
        let mut st = check::state::NodeState {
            node: id,
            ..Default::default()
        };
        let Some(before) = cluster.local_status(id).await else {
            states.push(st);
            continue;
        };
        if let Ok(f) = client.list_features(true).await {
            for f in f.features {
                st.values
                    .insert(format!("feature/{}", f.name), (f.description, f.revision));
            }
        }
        if let Ok(t) = client.list_toggles(true).await {
            for t in t.toggles {
                st.values
                    .insert(format!("toggle/{}", t.feature), (t.definition_json, t.revision));
            }
        }
        // Read between two status calls that agree, so the values belong to that state.
        match cluster.local_status(id).await {
            Some(after) if after.applied_index == before.applied_index => {
                st.applied_index = after.applied_index;
                st.digest = after.digest;
            }
            _ => st.applied_index = u64::MAX,
        }
        states.push(st);
    }
    Ok(states)
}

/// Waits until every node answers with the same applied index and digest and one leads.
async fn wait_cluster(cluster: &mut Cluster) -> (bool, Vec<pb::MemberStatus>) {
    let deadline = Instant::now() + CONVERGE_WITHIN;
    loop {
        let _ = cluster.supervise();
        let mut statuses = Vec::new();
        for id in cluster.ids() {
            if let Some(s) = cluster.local_status(id).await {
                statuses.push(s);
            }
        }
        let all = statuses.len() == cluster.ids().len();
        let leader = statuses.iter().any(|s| s.role == "leader");
        let same = statuses
            .iter()
            .all(|s| s.applied_index == statuses[0].applied_index && s.digest == statuses[0].digest);
        if all && leader && same {
            return (true, statuses);
        }
        if Instant::now() > deadline {
            return (false, statuses);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `left` (what is still missing) until it is empty, or gives up with the last answer.
async fn eventually(within: Duration, mut left: impl FnMut() -> Vec<String>) -> Result<(), Vec<String>> {
    let deadline = Instant::now() + within;
    loop {
        let l = left();
        if l.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(l);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Writes what the run recorded beside the logs, for a post-mortem of a failing seed.
fn save_history(
    dir: &std::path::Path,
    ops: &[check::linearizable::Op],
    records: &[check::watch::WatchRecord],
    rec: &Recorder,
) {
    use std::fmt::Write;
    let mut text = String::new();
    for op in ops {
        let _ = writeln!(text, "{op:?}");
    }
    let _ = std::fs::write(dir.join("operations.txt"), text);
    let mut text = String::new();
    for r in records {
        for s in &r.segments {
            let _ = writeln!(
                text,
                "== {} on {} resumed from {:?}, ended {:?}",
                r.watcher, s.node, s.resumed_from, s.ended
            );
            for m in &s.messages {
                let _ = writeln!(text, "{m:?}");
            }
        }
    }
    let _ = std::fs::write(dir.join("watches.txt"), text);
    let mut text = String::new();
    for (who, c) in rec.sdk_changes.lock().iter() {
        let _ = writeln!(text, "{who} {c:?}");
    }
    let _ = std::fs::write(dir.join("sdk-changes.txt"), text);
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard::sdk::FlagChange;

    fn got(who: &str, feature: &str, revision: u64, at: i64) -> (String, FlagChange) {
        (
            who.into(),
            FlagChange {
                feature: feature.into(),
                revision,
                effective_at_ms: 0,
                received_at_us: at,
                applied_at_us: at,
                late_ms: 0,
                removed: false,
            },
        )
    }

    #[test]
    fn convergence_is_until_the_slowest_instance_holds_what_was_committed_by_the_heal() {
        // f changed at revisions 7 and 9; probes past them were acknowledged at 500 and 2_000.
        let histories = BTreeMap::from([("f".to_string(), vec![1, 7, 9])]);
        let commits = Commits::new(vec![(8, 500), (10, 2_000)]);
        let changes = [
            got("a", "f", 1, 0),
            got("b", "f", 1, 0),
            got("a", "f", 7, 600),
            got("b", "f", 9, 3_500),
            // Started after the heal: left out.
            got("c", "f", 1, 1_200),
        ];
        // At the heal (1_000) revision 7 was known committed: b got it (as 9) at 3_500.
        assert_eq!(
            sdk_convergence(&changes, &histories, &commits, 1_000),
            (Duration::from_micros(2_500), 2)
        );
        // A heal after b got revision 9: nothing to wait for (a, which never got it, is left
        // to the final convergence check).
        assert_eq!(
            sdk_convergence(&changes, &histories, &commits, 4_000),
            (Duration::ZERO, 1)
        );
        // Revision 9, known committed at 2_000, reached b last, at 3_500.
        let lags = sdk_change_lags(&changes, &histories, &commits);
        assert!(lags.contains(&Duration::from_micros(1_500)), "{lags:?}");
    }

    #[test]
    fn a_change_proposed_before_a_heal_but_committed_after_it_is_not_counted_against_the_heal() {
        // Revision 7 was proposed before the heal at 1_000, but no write past it was
        // acknowledged until 5_000 (a new leader committed it then).
        let histories = BTreeMap::from([("f".to_string(), vec![1, 7])]);
        let commits = Commits::new(vec![(3, 100), (8, 5_000)]);
        let changes = [got("a", "f", 1, 0), got("a", "f", 7, 5_050)];
        assert_eq!(
            sdk_convergence(&changes, &histories, &commits, 1_000),
            (Duration::ZERO, 1)
        );
        let lags = sdk_change_lags(&changes, &histories, &commits);
        assert_eq!(lags.iter().max(), Some(&Duration::from_micros(50)), "{lags:?}");
    }
}
