//! Nodes as hosts: each node gets its own network namespace, joined to a bridge in the root
//! namespace by a veth pair, with its own address (`10.88.R.i`). The torture process itself
//! stays in the root namespace and reaches every node through the bridge (`10.88.R.254`), so a
//! client sees a node the way a client on another machine would.
//!
//! Faults are real packet loss: `iptables` rules inside a node's namespace drop what comes from
//! a peer (one direction, or both), and `tc netem` on the node's interface delays and drops
//! packets. Dropping (not rejecting) is what a dead link or a partitioned switch does: TCP
//! connections hang until their timeouts, and nothing tells either side.
//!
//! Everything made here is named after the run (`sy<R>...`) and removed on drop; a run that
//! crashed leaves names the next run with the same R removes before it starts.

use std::net::Ipv4Addr;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The namespaces, veths and bridge of one run.
pub struct Network {
    run: u8,
    hosts: usize,
    /// Held while the run lives: another process (a second `torture`, the CI test) never takes
    /// the same run number, so it never removes this run's namespaces as leftovers.
    _claim: std::fs::File,
}

/// Claims a run number, starting at `first`: the first one whose lock file this process can
/// lock exclusively.
fn claim(first: u8) -> Result<(u8, std::fs::File)> {
    use fs2::FileExt;
    for i in 0..250u16 {
        let run = ((u16::from(first) - 1 + i) % 250 + 1) as u8;
        let path = std::env::temp_dir().join(format!("switchyard-torture-net-{run}.lock"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        if file.try_lock_exclusive().is_ok() {
            return Ok((run, file));
        }
    }
    bail!("every run number is taken by another process")
}

/// Runs a command, failing with its stderr if it fails.
pub(crate) fn sh(program: &str, args: &[&str]) -> Result<()> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Runs a command and ignores its failure (for clean-up of what may not exist).
fn sh_quiet(program: &str, args: &[&str]) {
    let _ = Command::new(program).args(args).output();
}

impl Network {
    /// Creates `hosts` namespaces on a fresh bridge, under the first free run number from `run`
    /// (1..=250; runs of concurrent processes are kept apart). Needs root (CAP_NET_ADMIN).
    pub fn create(run: u8, hosts: usize) -> Result<Network> {
        let (run, claim) = claim(run.max(1))?;
        let net = Network {
            run,
            hosts,
            _claim: claim,
        };
        net.remove_leftovers();
        let br = net.bridge();
        sh("ip", &["link", "add", &br, "type", "bridge"])?;
        sh(
            "ip",
            &["addr", "add", &format!("{}/24", net.client_ip()), "dev", &br],
        )?;
        sh("ip", &["link", "set", &br, "up"])?;
        // With br_netfilter loaded (Docker loads it), bridged packets pass the root namespace's
        // FORWARD chain, whose policy Docker sets to DROP: let this bridge's traffic through.
        sh(
            "iptables",
            &["-I", "FORWARD", "-i", &br, "-o", &br, "-j", "ACCEPT"],
        )?;
        for i in 1..=hosts {
            let ns = net.namespace(i);
            let veth = format!("sy{run}v{i}");
            sh("ip", &["netns", "add", &ns])?;
            sh(
                "ip",
                &[
                    "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
                ],
            )?;
            sh("ip", &["link", "set", &veth, "master", &br, "up"])?;
            sh(
                "ip",
                &[
                    "-n",
                    &ns,
                    "addr",
                    "add",
                    &format!("{}/24", net.ip(i)),
                    "dev",
                    "eth0",
                ],
            )?;
            sh("ip", &["-n", &ns, "link", "set", "eth0", "up"])?;
            sh("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(net)
    }

    fn bridge(&self) -> String {
        format!("sy{}br", self.run)
    }

    /// The namespace of host `i` (1-based).
    pub fn namespace(&self, i: usize) -> String {
        format!("sy{}n{i}", self.run)
    }

    /// Host `i`'s address.
    pub fn ip(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 88, self.run, i as u8)
    }

    /// The address clients (this process) use on the bridge.
    pub fn client_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 88, self.run, 254)
    }

    /// Host `to` stops receiving anything host `from` sends (a one-way cut).
    pub fn cut(&self, from: usize, to: usize) -> Result<()> {
        let from_ip = self.ip(from).to_string();
        sh(
            "ip",
            &[
                "netns",
                "exec",
                &self.namespace(to),
                "iptables",
                "-A",
                "INPUT",
                "-s",
                &from_ip,
                "-j",
                "DROP",
            ],
        )
    }

    /// Cuts both directions between every host of `a` and every host of `b`.
    pub fn partition(&self, a: &[usize], b: &[usize]) -> Result<()> {
        for &x in a {
            for &y in b {
                self.cut(x, y)?;
                self.cut(y, x)?;
            }
        }
        Ok(())
    }

    /// Makes host `i`'s link slow and lossy: what it sends is shaped to `kbit` kbit/s (a token
    /// bucket, so bursts queue up to `queue_ms` and wait) and `loss_pct` % of what it receives
    /// is dropped. (`tc netem` would add plain delay, but this machine's kernel has no netem.)
    pub fn degrade(&self, i: usize, kbit: u32, queue_ms: u32, loss_pct: u32) -> Result<()> {
        let ns = self.namespace(i);
        sh(
            "ip",
            &[
                "netns",
                "exec",
                &ns,
                "tc",
                "qdisc",
                "replace",
                "dev",
                "eth0",
                "root",
                "tbf",
                "rate",
                &format!("{kbit}kbit"),
                "burst",
                "16kb",
                "latency",
                &format!("{queue_ms}ms"),
            ],
        )?;
        let p = format!("{:.3}", f64::from(loss_pct) / 100.0);
        sh(
            "ip",
            &[
                "netns",
                "exec",
                &ns,
                "iptables",
                "-A",
                "INPUT",
                "-m",
                "statistic",
                "--mode",
                "random",
                "--probability",
                &p,
                "-j",
                "DROP",
            ],
        )
    }

    /// Removes every cut and every delay.
    pub fn heal(&self) -> Result<()> {
        for i in 1..=self.hosts {
            let ns = self.namespace(i);
            sh("ip", &["netns", "exec", &ns, "iptables", "-F", "INPUT"])?;
            sh_quiet(
                "ip",
                &["netns", "exec", &ns, "tc", "qdisc", "del", "dev", "eth0", "root"],
            );
        }
        Ok(())
    }

    fn remove_leftovers(&self) {
        for i in 1..=8 {
            sh_quiet("ip", &["netns", "del", &self.namespace(i)]);
        }
        let br = self.bridge();
        while Command::new("iptables")
            .args(["-D", "FORWARD", "-i", &br, "-o", &br, "-j", "ACCEPT"])
            .output()
            .is_ok_and(|o| o.status.success())
        {}
        sh_quiet("ip", &["link", "del", &br]);
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        self.remove_leftovers();
    }
}

/// Whether this process may create namespaces (root, with `ip` and `iptables` present).
pub fn available() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    root && ["ip", "iptables", "tc"]
        .iter()
        .all(|p| Command::new(p).arg("-V").output().is_ok() || Command::new(p).arg("help").output().is_ok())
}
