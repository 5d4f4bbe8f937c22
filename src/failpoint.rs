//! Failpoints for fault tests, as etcd's gofail: named places on the storage and apply paths
//! where a test makes a node crash exactly there. They exist only in builds with the cargo
//! feature `failpoints` (the test suite's builds); elsewhere `crash_point!` compiles to nothing.
//!
//! A failpoint is armed at start with the `FAILPOINTS` environment variable
//! (`name=action;name=action`, the `fail` crate's syntax) or at run time through the node's
//! metrics listener: `PUT /failpoints/NAME` with the action as the body, `DELETE` to disarm.
//! The action `return` crashes the node at that point as `kill -9` would (SIGKILL to itself:
//! nothing buffered in the process reaches the disk); `return(MS)` stalls MS milliseconds first
//! (so peers act on what the node sent meanwhile), then crashes.
//!
//! The points:
//! - `log.flush`: the log flusher is about to make appends durable;
//! - `log.flush.full` (action `return`): the flush fails as on a full disk (no crash);
//! - `sm.apply`: an entry is applied to the state, its answer not yet sent;
//! - `snapshot.build`: a snapshot is encoded, not yet saved;
//! - `snapshot.install`: a received snapshot is saved, the state not yet replaced.

/// Crashes the node here when the failpoint `$name` is armed (see the module doc).
macro_rules! crash_point {
    ($name:literal) => {
        #[cfg(feature = "failpoints")]
        fail::fail_point!($name, |arg: Option<String>| $crate::failpoint::crash($name, arg))
    };
}
pub(crate) use crash_point;

/// Stalls for `arg` milliseconds, if given, then kills this process with SIGKILL.
#[cfg(feature = "failpoints")]
pub(crate) fn crash(name: &str, arg: Option<String>) -> ! {
    if let Some(ms) = arg.and_then(|a| a.trim().parse::<u64>().ok()) {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
    eprintln!("failpoint {name}: crashing");
    // SAFETY: getpid and kill have no memory-safety preconditions.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
    // SIGKILL cannot be caught; should it somehow return, stop here all the same.
    std::process::abort()
}

/// Arms every failpoint named in the `FAILPOINTS` environment variable. Call once at start;
/// the returned guard keeps them armed.
#[cfg(feature = "failpoints")]
pub fn setup() -> fail::FailScenario<'static> {
    fail::FailScenario::setup()
}

/// Handles `PUT /failpoints/NAME` (arm with the body as action) and `DELETE /failpoints/NAME`
/// (disarm). Returns the status and a one-line answer.
#[cfg(feature = "failpoints")]
pub(crate) fn handle(method: &hyper::Method, name: &str, body: &str) -> (u16, String) {
    match *method {
        hyper::Method::PUT => match fail::cfg(name, body.trim()) {
            Ok(()) => (200, format!("{name} = {}\n", body.trim())),
            Err(e) => (400, format!("{e}\n")),
        },
        hyper::Method::DELETE => {
            fail::remove(name);
            (200, format!("{name} removed\n"))
        }
        _ => (405, "PUT or DELETE\n".into()),
    }
}
