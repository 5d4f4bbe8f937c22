//! The `switchyard.v1.Watch` service: a snapshot (or a replay from the node's event history),
//! then every matching change in revision order, with progress messages; a subscriber that
//! falls too far behind is disconnected with a status saying where to resume.

use std::collections::VecDeque;
use std::future::Future as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::Stream;
use tokio::sync::broadcast::{self, error::TryRecvError};
use tonic::{Request, Status};

use super::grpc_stream;
use crate::auth::limits::WatchPermit;
use crate::node::Node;
use crate::pb::v1 as pb;
use crate::pb::{convert, grpc_frame};
use crate::watch::bell::BellWaiter;
use crate::watch::hub::{Channel, StreamSlot};
use crate::watch::{Filter, Interruption, Published};

/// How often an idle stream gets a progress message.
///
/// Progress messages fall on instants shared by every stream of the same connection (a phase
/// drawn from the peer's address), so a process watching on many streams over one connection
/// gets theirs in one write and one read, not one each: spread over time, a progress message
/// per stream costs the node a system call and the peer a wake-up, and a few thousand streams
/// opened together would load the node for seconds.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(2);
/// The gap before a new stream's first progress message; it doubles up to [`PROGRESS_EVERY`],
/// so a new subscriber gets several clock samples in its first seconds. Each gap divides the
/// next, so the instants of streams at different steps coincide.
pub const FIRST_PROGRESS: Duration = Duration::from_micros(62_500);
/// How long a watch asked for a revision ahead of this node waits for it.
pub const AHEAD_WAIT: Duration = Duration::from_secs(5);
/// The watch service of one node. Served by hand rather than through tonic's generated
/// service, so that every subscriber's stream sends each event's one shared frame (see
/// [`grpc_stream`]), and reached through [`WatchRoute`] rather than tonic's router.
#[derive(Clone)]
pub struct WatchApi {
    node: Arc<Node>,
}

/// The service's one method.
const WATCH_PATH: &str = "/switchyard.v1.Watch/Watch";
/// Where the service's calls go.
const WATCH_PREFIX: &str = "/switchyard.v1.Watch/";

/// A layer that serves the watch service's calls itself and hands every other call to the
/// service it wraps (tonic's router).
///
/// Through the router, each frame a stream sends would pass up through the router's body
/// wrappers (axum's body and two error maps around it) before tonic's own: a move of the frame
/// (with room for a status and trailers, ~200 bytes) and a virtual call at each. Here the
/// stream's body is tonic's body around the frames, as a generated service's would be. On a
/// learner serving 50,000 streams, the wrappers took ~9% of its CPU during a fan-out through
/// the router and ~7% through this route (`perf`, a rough figure).
#[derive(Clone)]
pub(crate) struct WatchRoute {
    watch: Option<WatchApi>,
}

impl WatchRoute {
    /// Serves `node`'s watch service.
    pub(crate) fn serving(node: Arc<Node>) -> Self {
        WatchRoute {
            watch: Some(WatchApi::new(node)),
        }
    }

    /// Routes nothing itself (a listener without the watch service).
    pub(crate) fn none() -> Self {
        WatchRoute { watch: None }
    }
}

impl<S> tower::Layer<S> for WatchRoute {
    type Service = WatchRouted<S>;

    fn layer(&self, inner: S) -> WatchRouted<S> {
        WatchRouted {
            watch: self.watch.clone(),
            inner,
        }
    }
}

/// A service behind [`WatchRoute`].
#[derive(Clone)]
pub(crate) struct WatchRouted<S> {
    watch: Option<WatchApi>,
    inner: S,
}

impl<S> tower::Service<http::Request<tonic::body::Body>> for WatchRouted<S>
where
    S: tower::Service<
        http::Request<tonic::body::Body>,
        Response = http::Response<tonic::body::Body>,
        Error = std::convert::Infallible,
    >,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = futures::future::Either<BoxFuture<'static, Result<Self::Response, Self::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        match &mut self.watch {
            Some(watch) if request.uri().path().starts_with(WATCH_PREFIX) => {
                futures::future::Either::Left(watch.call(request))
            }
            _ => futures::future::Either::Right(self.inner.call(request)),
        }
    }
}

impl WatchApi {
    /// The service for `node`.
    pub fn new(node: Arc<Node>) -> Self {
        WatchApi { node }
    }
}

fn filter_of(f: Option<pb::WatchFilter>) -> crate::Result<Filter> {
    let f = f.unwrap_or_default();
    let filter = Filter {
        features: f.features.into_iter().collect(),
        services: f.services.into_iter().collect(),
        registry: f.registry,
    };
    filter.validate()?;
    Ok(filter)
}

/// A snapshot or progress message as the frame its stream sends, encoded straight into it
/// (one allocation; events come framed from the hub).
fn message(kind: pb::watch_response::Kind) -> Bytes {
    grpc_frame(&pb::WatchResponse { kind: Some(kind) })
}

impl tower::Service<http::Request<tonic::body::Body>> for WatchApi {
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let api = self.clone();
        Box::pin(async move {
            if request.uri().path() != WATCH_PATH {
                let path = request.uri().path().to_owned();
                return Ok(Status::unimplemented(format!("no method {path}")).into_http());
            }
            let opened = match grpc_stream::read_request(request, super::MAX_REQUEST).await {
                Ok(request) => api.watch(request).await,
                Err(status) => Err(status),
            };
            Ok(match opened {
                Ok(follow) => grpc_stream::response(follow),
                Err(status) => status.into_http(),
            })
        })
    }
}

impl WatchApi {
    /// Opens a watch: checks the request and this node, and subscribes.
    async fn watch(&self, request: Request<pb::WatchRequest>) -> Result<Follow, Status> {
        let phase_us = request.remote_addr().map(progress_phase_us);
        // Counted against the caller's open watches until the stream ends.
        let permit = request.extensions().get::<WatchPermit>().cloned();
        let req = request.into_inner();
        let filter = filter_of(req.filter)?;
        let resume_from = req.start_revision.unwrap_or(0);
        self.node
            .admit_reader()
            .await
            .map_err(|e| resume_elsewhere(e, resume_from))?;
        let slot = self.node.admit_stream()?;
        if let Some(start) = req.start_revision {
            // Resuming on a node behind the one seen before must not go back in time.
            if start > self.node.revision() {
                self.node
                    .wait_for_revision(start, AHEAD_WAIT)
                    .await
                    .map_err(|e| {
                        Status::out_of_range(format!("start_revision {start} is ahead of this node: {e}"))
                    })?;
            }
        }
        // A subscriber not watching the registry reads the channel without its events.
        let channel = Channel::for_registry(filter.registry);
        let subscription = self
            .node
            .hub()
            .subscribe(channel, req.start_revision)
            .map_err(|_| shutting_down(resume_from))?;
        // Checked again once subscribed: should the node stop vouching from here on, the hub
        // interrupts this subscription too.
        self.node
            .can_serve()
            .map_err(|e| resume_elsewhere(e, resume_from))?;
        let first = match phase_us {
            Some(phase) => next_progress_in(crate::clock::now_us(), phase, FIRST_PROGRESS),
            // With no peer address to share instants by, streams opened together are spread
            // over 50 ms, so they do not all send at once.
            None => {
                static OPENED: AtomicUsize = AtomicUsize::new(0);
                FIRST_PROGRESS
                    + Duration::from_millis((OPENED.fetch_add(1, Ordering::Relaxed) * 37 % 50) as u64)
            }
        };
        let mut follow = Follow {
            node: self.node.clone(),
            generation: subscription.generation,
            channel,
            events: subscription.receiver,
            taken: subscription.sent_before,
            bell: None,
            replay: VecDeque::new(),
            snapshot: None,
            skip_through: 0,
            last_sent: req.start_revision.unwrap_or(0),
            covered: req.start_revision.unwrap_or(0),
            gap: FIRST_PROGRESS,
            phase_us,
            progress: ProgressTimer::new(first),
            done: false,
            _slot: slot,
            _permit: permit,
            filter,
        };
        match subscription.replay {
            Some(replay) => follow.replay = replay.into(),
            None => {
                let snapshot = snapshot(&self.node, &follow.filter);
                follow.skip_through = snapshot.revision;
                follow.last_sent = snapshot.revision;
                follow.covered = snapshot.revision;
                follow.snapshot = Some(snapshot);
            }
        }
        Ok(follow)
    }
}

/// The progress phase of the connection from `peer` (unix µs modulo [`PROGRESS_EVERY`]).
fn progress_phase_us(peer: std::net::SocketAddr) -> i64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    peer.hash(&mut h);
    (h.finish() % PROGRESS_EVERY.as_micros() as u64) as i64
}

/// How long from `now_us` (unix µs) until the next progress instant, `gap` apart, of the
/// connection with phase `phase_us`: at least half a gap away, so no two come in a row.
fn next_progress_in(now_us: i64, phase_us: i64, gap: Duration) -> Duration {
    let period = gap.as_micros().max(1) as i64;
    let mut next = now_us - (now_us - phase_us).rem_euclid(period) + period;
    if next - now_us < period / 2 {
        next += period;
    }
    Duration::from_micros((next - now_us) as u64)
}

/// A refusal, saying where to resume.
fn resume_elsewhere(e: crate::Error, resume_from: u64) -> Status {
    let code = e.code();
    Status::new(
        code,
        format!("{e}; resume on another node with start_revision {resume_from}"),
    )
}

/// The status ending a watch whose live channel the hub interrupted.
fn interrupted(why: Interruption, resume_from: u64) -> Status {
    match why {
        Interruption::ShuttingDown => shutting_down(resume_from),
        Interruption::Jumped(to) => Status::unavailable(format!(
            "this node caught up by installing a snapshot at revision {to}, past events it never had; resume with start_revision {resume_from}"
        )),
        Interruption::CannotVouch => Status::unavailable(format!(
            "this node cannot vouch for its data (cut off from the leader, removed, or its storage failed); resume on another node with start_revision {resume_from}"
        )),
    }
}

/// The matching state of `node` now, for a new subscriber.
fn snapshot(node: &Node, filter: &Filter) -> pb::WatchSnapshot {
    node.read_state(|m| {
        let s = &m.state;
        let services_of = |name: &str| -> Vec<String> {
            s.feature(name)
                .map(|f| f.spec.requirements.iter().map(|r| r.service.clone()).collect())
                .unwrap_or_default()
        };
        let now = crate::clock::now_us();
        pb::WatchSnapshot {
            revision: s.revision(),
            features: s
                .features()
                .filter(|f| filter.feature_matches(&f.spec.name, &services_of(&f.spec.name)))
                .map(convert::feature)
                .collect(),
            toggles: s
                .toggles()
                .filter(|t| filter.feature_matches(&t.feature, &services_of(&t.feature)))
                .map(convert::toggle)
                .collect(),
            instances: s
                .registry()
                .instances()
                .filter(|i| filter.instance_matches(&i.spec.service))
                .map(convert::instance)
                .collect(),
            server_time_ms: now / 1000,
            server_time_us: now,
        }
    })
}

/// The status ending a watch on a node shutting down.
fn shutting_down(resume_from: u64) -> Status {
    Status::unavailable(format!(
        "this node is shutting down; resume on another node with start_revision {resume_from}"
    ))
}

/// One subscriber's stream: the snapshot or the replay, then live events and progress. It is
/// polled by the connection as the subscriber's flow-control window allows, so a subscriber
/// costs no task of its own and holds no queue: live events wait in the hub's shared ring, and
/// one that falls a ring behind is told so and ended.
///
/// Written as a plain [`Stream`] rather than an `async` loop with `select!`: a commit wakes
/// every subscriber of the node at once, and this way taking an event costs one poll of the
/// ring, with the progress timer looked at only when no event is ready. The stream needs no
/// stop signal of its own: when the node shuts down, the hub closes the ring, which ends every
/// stream after what it has not sent yet.
struct Follow {
    node: Arc<Node>,
    /// The hub's generation this stream was fed from.
    generation: u64,
    /// The hub's channel it reads.
    channel: Channel,
    filter: Filter,
    events: broadcast::Receiver<Arc<Published>>,
    /// Events taken from `events`, counted from the hub's count when it was made (see
    /// [`crate::watch::hub::WatchHub::quiet`]).
    taken: u64,
    /// Where this stream waits when the ring has nothing for it (taken on the thread it is
    /// first polled on: see [`crate::watch::bell`]).
    bell: Option<BellWaiter>,
    replay: VecDeque<Arc<Published>>,
    snapshot: Option<pb::WatchSnapshot>,
    /// Events at or below this revision are already covered by the snapshot.
    skip_through: u64,
    last_sent: u64,
    /// What the subscriber holds without this stream's events: its resume point, or the
    /// snapshot's revision.
    covered: u64,
    gap: Duration,
    /// This stream's connection's progress phase (unix µs modulo [`PROGRESS_EVERY`]); none
    /// when the peer's address is unknown.
    phase_us: Option<i64>,
    progress: ProgressTimer,
    done: bool,
    _slot: StreamSlot,
    /// The caller's open-watch count, held until the stream ends.
    _permit: Option<WatchPermit>,
}

impl Follow {
    /// Ends the stream with `status` (the next poll gives its end).
    fn end(&mut self, status: Status) -> Poll<Option<Result<Bytes, Status>>> {
        self.done = true;
        Poll::Ready(Some(Err(status)))
    }

    /// The progress message now, saying every event through `through` was sent, and when the
    /// next one is due.
    fn progress(&mut self, through: u64) -> Bytes {
        let now = crate::clock::now_us();
        self.gap = (self.gap * 2).min(PROGRESS_EVERY);
        let wait = match self.phase_us {
            Some(phase) => next_progress_in(now, phase, self.gap),
            _ => self.gap,
        };
        self.progress.reset(tokio::time::Instant::now() + wait);
        let progress = pb::WatchProgress {
            // Never below what the subscriber already holds (the hub's mark can trail its
            // resume point or snapshot by a moment). Not `last_sent`: one revision can carry
            // several events, and a revision whose publication is under way may be half sent;
            // `through` is below it until it is all in the ring.
            revision: through.max(self.covered),
            server_time_ms: now / 1000,
            server_time_us: now,
        };
        message(pb::watch_response::Kind::Progress(progress))
    }
}

/// A stream's progress timer, looked at cheaply.
///
/// A stream is polled each time an event is published, and returns pending after sending it.
/// Polling a timer there each time re-registers the task's waker with it (an atomic exchange,
/// and a waker clone and drop on the task's cold header): ~9% of a learner's CPU during a
/// fan-out to 50,000 streams (`perf`). Once the timer holds this task's waker, it wakes the
/// task when it fires, so until then a look at whether it has fired is enough (~2%).
/// Comparing the clock with the deadline instead cost about as much as the polling: a clock
/// read per stream.
struct ProgressTimer {
    sleep: Pin<Box<tokio::time::Sleep>>,
    /// The waker the timer holds since it was last set, if it was polled since.
    armed_for: Option<std::task::Waker>,
}

impl ProgressTimer {
    fn new(after: Duration) -> ProgressTimer {
        ProgressTimer {
            sleep: Box::pin(tokio::time::sleep(after)),
            armed_for: None,
        }
    }

    /// Sets the timer to `at` (the next [`ProgressTimer::poll_due`] arms it).
    fn reset(&mut self, at: tokio::time::Instant) {
        self.sleep.as_mut().reset(at);
        self.armed_for = None;
    }

    /// Whether the timer is due; if not, it wakes `cx`'s task when it is.
    fn poll_due(&mut self, cx: &mut Context<'_>) -> bool {
        let armed = self.armed_for.as_ref().is_some_and(|w| w.will_wake(cx.waker()));
        if armed && !self.sleep.is_elapsed() {
            return false;
        }
        let due = self.sleep.as_mut().poll(cx).is_ready();
        self.armed_for = (!due).then(|| cx.waker().clone());
        due
    }
}

/// Each item a whole gRPC frame.
impl Stream for Follow {
    type Item = Result<Bytes, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        if let Some(s) = this.snapshot.take() {
            return Poll::Ready(Some(Ok(message(pb::watch_response::Kind::Snapshot(s)))));
        }
        while let Some(p) = this.replay.pop_front() {
            if this.filter.matches(&p) {
                this.last_sent = p.event.revision;
                return Poll::Ready(Some(Ok(p.frame.clone())));
            }
        }
        // Read before the ring is drained: every event through this revision is in the ring
        // then, so once the ring has nothing more for this stream, a progress message saying
        // "sent through `through`" is true. (Read after, an event published in between would
        // follow a progress message that already claimed its revision.)
        let through = this.node.hub().through();
        let mut waiting = false;
        loop {
            // The hub's counters say when there is nothing new without asking the channel,
            // which takes the lock of its tail (shared by every stream of the node).
            let next = if this.node.hub().quiet(this.channel, this.generation, this.taken) {
                Err(TryRecvError::Empty)
            } else {
                this.events.try_recv()
            };
            match next {
                Ok(p) => {
                    this.taken += 1;
                    if p.event.revision <= this.skip_through || !this.filter.matches(&p) {
                        continue;
                    }
                    this.last_sent = p.event.revision;
                    return Poll::Ready(Some(Ok(p.frame.clone())));
                }
                Err(TryRecvError::Lagged(missed)) => {
                    this.node.metrics().watch_ended("slow_subscriber");
                    let status = Status::resource_exhausted(format!(
                        "this subscriber fell {missed} events behind and was disconnected; resume with start_revision {}",
                        this.last_sent
                    ));
                    return this.end(status);
                }
                // The hub interrupted the live channel, or closed it.
                Err(TryRecvError::Closed) => {
                    let why = this.node.hub().why_ended(this.generation);
                    if why == Interruption::CannotVouch {
                        this.node.metrics().watch_ended("lost_contact");
                    }
                    let status = interrupted(why, this.last_sent);
                    return this.end(status);
                }
                // Nothing new: wait at the bell, then look once more (a publication between
                // the first look and the wait would otherwise go unnoticed until the next).
                // Also between an interruption's new generation and its closing the channel.
                Err(TryRecvError::Empty) if !waiting => {
                    let (hub, channel) = (this.node.hub(), this.channel);
                    this.bell
                        .get_or_insert_with(|| hub.bell_waiter(channel))
                        .wait(cx.waker());
                    waiting = true;
                }
                Err(TryRecvError::Empty) => break,
            }
        }
        if this.progress.poll_due(cx) {
            if this.node.contact().is_current() {
                return Poll::Ready(Some(Ok(this.progress(through))));
            }
            // Behind, out of contact, or just woken from a stall: no "you are current" now;
            // look again after the next contact check (which ends the stream if it must).
            let again = tokio::time::Instant::now() + crate::node::contact::CHECK_EVERY;
            this.progress.reset(again);
            // Registers the wake-up; a timer just set is not due.
            let _ = this.progress.poll_due(cx);
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::pb::GRPC_HEADER;

    #[test]
    fn frames_are_whole_typed_responses() {
        let typed_frame = |frame: &[u8]| {
            assert_eq!(frame[0], 0, "uncompressed");
            let len = u32::from_be_bytes(frame[1..GRPC_HEADER].try_into().unwrap()) as usize;
            assert_eq!(len, frame.len() - GRPC_HEADER, "one whole message");
            pb::WatchResponse::decode(&frame[GRPC_HEADER..]).unwrap()
        };
        let snapshot = pb::WatchSnapshot {
            revision: 6,
            features: vec![pb::Feature {
                name: "checkout".into(),
                ..Default::default()
            }],
            server_time_ms: 123,
            ..Default::default()
        };
        let progress = pb::WatchProgress {
            revision: 7,
            server_time_ms: 456,
            server_time_us: 456_789,
        };
        for kind in [
            pb::watch_response::Kind::Snapshot(snapshot),
            pb::watch_response::Kind::Progress(progress),
        ] {
            assert_eq!(typed_frame(&message(kind.clone())).kind, Some(kind));
        }
        // The frame a published event carries, shared by every stream.
        let applied = crate::state::event::Event {
            revision: 9,
            change: crate::state::event::Change::FeatureDeleted("search".into()),
        };
        let published = Published::new(applied.clone(), Vec::new());
        assert_eq!(
            typed_frame(&published.frame).kind,
            Some(pb::watch_response::Kind::Event(convert::event(&applied)))
        );
    }

    /// Waits for `timer` to be due; how long that took on the test's (paused) clock. A timer
    /// that does not wake the waiting task is looked at again only when a 60 s timer wakes it.
    async fn until_due(timer: &mut ProgressTimer) -> Duration {
        let started = tokio::time::Instant::now();
        let backstop = tokio::time::sleep(Duration::from_secs(60));
        tokio::pin!(backstop);
        std::future::poll_fn(|cx| {
            let _ = backstop.as_mut().poll(cx);
            match timer.poll_due(cx) {
                true => Poll::Ready(()),
                false => Poll::Pending,
            }
        })
        .await;
        started.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn the_progress_timer_wakes_its_stream_when_due() {
        let mut timer = ProgressTimer::new(Duration::from_secs(2));
        assert_eq!(until_due(&mut timer).await, Duration::from_secs(2));
        // Reset (as after a progress message): due again after the new gap.
        timer.reset(tokio::time::Instant::now() + Duration::from_millis(500));
        assert_eq!(until_due(&mut timer).await, Duration::from_millis(500));
        // Looked at first from another task (say, through a waker that is gone): it still
        // wakes the task that waits on it when due.
        timer.reset(tokio::time::Instant::now() + Duration::from_secs(1));
        let mut elsewhere = Context::from_waker(futures::task::noop_waker_ref());
        assert!(!timer.poll_due(&mut elsewhere));
        assert!(!timer.poll_due(&mut elsewhere), "not due: only the clock is read");
        assert_eq!(until_due(&mut timer).await, Duration::from_secs(1));
        // Looked at once it has fired, it is due.
        timer.reset(tokio::time::Instant::now() + Duration::from_millis(10));
        assert!(!timer.poll_due(&mut elsewhere));
        tokio::time::advance(Duration::from_millis(10)).await;
        assert!(timer.poll_due(&mut elsewhere));
    }

    #[test]
    fn progress_falls_on_the_connections_instants() {
        let period = PROGRESS_EVERY.as_micros() as i64;
        let phase = 700_000;
        for now in [
            10 * period,
            10 * period + 650_000,
            10 * period + 1_300_000,
            11 * period - 1,
        ] {
            let wait = next_progress_in(now, phase, PROGRESS_EVERY).as_micros() as i64;
            assert_eq!((now + wait - phase).rem_euclid(period), 0, "now {now}");
            assert!(
                wait >= period / 2 && wait <= period * 3 / 2,
                "now {now}: wait {wait}"
            );
        }
        // The quick first gaps divide the period: a stream still in its first seconds sends on
        // instants of its connection's period too.
        let mut gap = FIRST_PROGRESS;
        while gap < PROGRESS_EVERY {
            assert_eq!(PROGRESS_EVERY.as_micros() % gap.as_micros(), 0, "{gap:?}");
            let now = 10 * period + 123_456;
            let wait = next_progress_in(now, phase, gap).as_micros() as i64;
            assert_eq!((now + wait - phase).rem_euclid(gap.as_micros() as i64), 0);
            gap *= 2;
        }
        assert_eq!(gap, PROGRESS_EVERY);
        // Streams of one connection share a phase; other connections spread over the period.
        let a: std::net::SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let b: std::net::SocketAddr = "127.0.0.1:40001".parse().unwrap();
        assert_eq!(progress_phase_us(a), progress_phase_us(a));
        assert_ne!(progress_phase_us(a), progress_phase_us(b));
        assert!((0..period).contains(&progress_phase_us(a)));
    }
}
