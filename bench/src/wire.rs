//! `fanout --wire`: watch streams read straight off the socket.
//!
//! Every subscriber of the fan-out bench runs on this machine, beside the nodes it measures,
//! and a tonic client spends about as much CPU receiving a message as the node spends sending
//! it, so part of the lag the bench reports is the receivers' own. This reader takes that part
//! out: one thread per connection speaks just enough HTTP/2 (RFC 9113) to open `n` watch
//! streams and read their DATA frames, and stamps every message of one `read` with the same
//! instant. No task, waker or buffer per stream: the nodes' send path is what is measured.
//!
//! Written by hand because the point is to cost next to nothing per frame, which a general
//! HTTP/2 client (h2, with a task and a queue per stream) does not. It speaks plain HTTP/2
//! only (no TLS, no token), sends no request bigger than one frame, and keeps both flow-control
//! windows at their maximum. Like an SDK, a stream the node ends or refuses is opened again
//! after its last revision (on the same connection), pausing 100 ms, doubling to 2 s.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message;
use switchyard::pb::v1 as pb;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0;
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const PING: u8 = 6;
const GOAWAY: u8 = 7;
const WINDOW_UPDATE: u8 = 8;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
/// The largest flow-control window (2^31 - 1).
const MAX_WINDOW: u32 = 0x7fff_ffff;
/// Connection window handed back once this much data has been read.
const WINDOW_REFILL: usize = 16 << 20;
/// A node silent for this long (it sends progress every 2 s) ends the connection.
const SILENCE: Duration = Duration::from_secs(30);
/// How long a read waits before the reader looks at its retries.
const TICK: Duration = Duration::from_millis(50);

/// The streams of one connection, as the bench samples them.
#[derive(Default)]
pub struct WireStreams {
    /// Per stream: (revision of its latest event, unix µs it was read at).
    latest: parking_lot::Mutex<Vec<(u64, i64)>>,
    /// Streams open now (they have had their first message).
    pub open: AtomicUsize,
    /// Streams opened again after the node ended or refused them.
    pub reopened: AtomicUsize,
}

impl WireStreams {
    /// Every stream's latest event: (revision, read at).
    pub fn latest(&self) -> Vec<(u64, i64)> {
        self.latest.lock().clone()
    }
}

/// Opens `n` watch streams of `feature` on one connection to `addr` and follows them on a
/// thread of its own until the process ends.
pub fn follow(addr: &str, n: usize, feature: &str) -> anyhow::Result<Arc<WireStreams>> {
    let addr = addr.trim_start_matches("http://");
    let target = addr
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| anyhow::anyhow!("{addr}: no address"))?;
    let mut socket = TcpStream::connect_timeout(&target, Duration::from_secs(5))?;
    socket.set_nodelay(true)?;
    socket.set_read_timeout(Some(TICK))?;
    socket.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut out = PREFACE.to_vec();
    // ENABLE_PUSH 0, INITIAL_WINDOW_SIZE max.
    let mut settings = Vec::new();
    for (id, value) in [(2u16, 0u32), (4, MAX_WINDOW)] {
        settings.extend_from_slice(&id.to_be_bytes());
        settings.extend_from_slice(&value.to_be_bytes());
    }
    frame(&mut out, SETTINGS, 0, 0, &settings);
    frame(
        &mut out,
        WINDOW_UPDATE,
        0,
        0,
        &(MAX_WINDOW - 65_535).to_be_bytes(),
    );
    let streams = Arc::new(WireStreams {
        latest: parking_lot::Mutex::new(vec![(0, 0); n]),
        ..Default::default()
    });
    let mut reader = Reader::new(n, streams.clone(), request_headers(addr), feature);
    for k in 0..n {
        reader.open(k, &mut out);
    }
    socket.write_all(&out)?;
    std::thread::Builder::new()
        .name("wire-reader".into())
        .spawn(move || {
            if let Err(e) = reader.run(socket) {
                eprintln!("wire reader: {e}");
            }
        })?;
    Ok(streams)
}

fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
}

fn grpc_message(m: &impl Message) -> Vec<u8> {
    let body = m.encode_to_vec();
    let mut out = vec![0];
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// The request's header block: HPACK literals without indexing, no Huffman coding (so this
/// side keeps no table; the node's answers are never decoded, only their flags read).
fn request_headers(authority: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/switchyard.v1.Watch/Watch"),
        (":authority", authority),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ] {
        out.push(0);
        hpack_string(&mut out, name);
        hpack_string(&mut out, value);
    }
    out
}

fn hpack_string(out: &mut Vec<u8>, s: &str) {
    // A 7-bit prefix integer (RFC 7541 §5.1); every string here is short.
    let mut n = s.len();
    if n < 127 {
        out.push(n as u8);
    } else {
        out.push(127);
        n -= 127;
        while n >= 128 {
            out.push((n % 128) as u8 | 0x80);
            n /= 128;
        }
        out.push(n as u8);
    }
    out.extend_from_slice(s.as_bytes());
}

/// One subscriber's stream.
#[derive(Clone, Default)]
struct Subscriber {
    /// Its current stream has had a message.
    open: bool,
    /// Where to resume: the revision of its snapshot or latest event (0: none yet).
    revision: u64,
    /// Ended attempts in a row.
    failures: u32,
}

/// One connection's streams, read side.
struct Reader {
    streams: Arc<WireStreams>,
    subscribers: Vec<Subscriber>,
    /// Live stream ids, by subscriber.
    ids: HashMap<u32, usize>,
    next_id: u32,
    /// Subscribers to open again, and when.
    retries: Vec<(Instant, usize)>,
    headers: Vec<u8>,
    feature: String,
    /// Message bytes of a stream whose last frame ended mid-message.
    partial: HashMap<u32, Vec<u8>>,
    /// Events read from the current `read`: (subscriber, revision).
    events: Vec<(usize, u64)>,
    unacknowledged: usize,
}

impl Reader {
    fn new(n: usize, streams: Arc<WireStreams>, headers: Vec<u8>, feature: &str) -> Self {
        Reader {
            streams,
            subscribers: vec![Subscriber::default(); n],
            ids: HashMap::with_capacity(n),
            next_id: 1,
            retries: Vec::new(),
            headers,
            feature: feature.into(),
            partial: HashMap::new(),
            events: Vec::new(),
            unacknowledged: 0,
        }
    }

    /// Opens a stream for subscriber `k` (after its last revision, if it has one).
    fn open(&mut self, k: usize, out: &mut Vec<u8>) {
        let id = self.next_id;
        self.next_id += 2;
        self.ids.insert(id, k);
        let revision = self.subscribers[k].revision;
        let body = grpc_message(&pb::WatchRequest {
            filter: Some(pb::WatchFilter {
                features: vec![self.feature.clone()],
                ..Default::default()
            }),
            start_revision: (revision > 0).then_some(revision),
        });
        frame(out, HEADERS, END_HEADERS, id, &self.headers);
        frame(out, DATA, END_STREAM, id, &body);
    }

    fn run(mut self, mut socket: TcpStream) -> anyhow::Result<()> {
        let mut buf = vec![0u8; 1 << 20];
        let mut filled = 0;
        let mut heard = Instant::now();
        loop {
            if filled == buf.len() {
                buf.resize(buf.len() * 2, 0);
            }
            let got = match socket.read(&mut buf[filled..]) {
                Ok(0) => anyhow::bail!("the node closed the connection"),
                Ok(got) => got,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => 0,
                Err(e) => return Err(e.into()),
            };
            let now = Instant::now();
            let mut replies = Vec::new();
            if got > 0 {
                heard = now;
                let at = crate::now_us();
                filled += got;
                let used = self.frames(&buf[..filled], &mut replies)?;
                buf.copy_within(used..filled, 0);
                filled -= used;
                if !self.events.is_empty() {
                    let mut latest = self.streams.latest.lock();
                    for (k, revision) in self.events.drain(..) {
                        latest[k] = (revision, at);
                    }
                }
            } else if now - heard > SILENCE {
                anyhow::bail!("the node has sent nothing for {SILENCE:?}");
            }
            if self.unacknowledged >= WINDOW_REFILL {
                frame(
                    &mut replies,
                    WINDOW_UPDATE,
                    0,
                    0,
                    &(self.unacknowledged as u32).to_be_bytes(),
                );
                self.unacknowledged = 0;
            }
            let due: Vec<usize> = self
                .retries
                .iter()
                .filter(|(when, _)| *when <= now)
                .map(|(_, k)| *k)
                .collect();
            if !due.is_empty() {
                self.retries.retain(|(when, _)| *when > now);
                for k in due {
                    self.streams.reopened.fetch_add(1, Ordering::Relaxed);
                    self.open(k, &mut replies);
                }
            }
            if !replies.is_empty() {
                socket.write_all(&replies)?;
            }
        }
    }

    /// Handles the whole frames at the start of `data`; returns how many bytes they took.
    fn frames(&mut self, data: &[u8], replies: &mut Vec<u8>) -> anyhow::Result<usize> {
        let mut at = 0;
        while data.len() - at >= 9 {
            let h = &data[at..at + 9];
            let len = u32::from_be_bytes([0, h[0], h[1], h[2]]) as usize;
            if data.len() - at - 9 < len {
                break;
            }
            let (kind, flags) = (h[3], h[4]);
            let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
            let payload = &data[at + 9..at + 9 + len];
            at += 9 + len;
            match kind {
                DATA => {
                    self.unacknowledged += len;
                    let payload = if flags & PADDED != 0 {
                        let pad = *payload.first().unwrap_or(&0) as usize;
                        payload.get(1..len.saturating_sub(pad)).unwrap_or_default()
                    } else {
                        payload
                    };
                    self.data(stream, payload)?;
                    if flags & END_STREAM != 0 {
                        self.ended(stream);
                    }
                }
                HEADERS if flags & END_STREAM != 0 => self.ended(stream),
                RST_STREAM => self.ended(stream),
                SETTINGS if flags & ACK == 0 => frame(replies, SETTINGS, ACK, 0, &[]),
                PING if flags & ACK == 0 => frame(replies, PING, ACK, 0, payload),
                GOAWAY => anyhow::bail!("the node sent GOAWAY"),
                _ => {}
            }
        }
        Ok(at)
    }

    /// The gRPC messages in one DATA frame of `stream` (a message may span frames).
    fn data(&mut self, stream: u32, payload: &[u8]) -> anyhow::Result<()> {
        let Some(&k) = self.ids.get(&stream) else {
            return Ok(());
        };
        match self.partial.remove(&stream) {
            Some(mut joined) => {
                joined.extend_from_slice(payload);
                self.messages(k, stream, &joined)
            }
            None => self.messages(k, stream, payload),
        }
    }

    fn messages(&mut self, k: usize, stream: u32, mut bytes: &[u8]) -> anyhow::Result<()> {
        use pb::watch_response::Kind;
        while bytes.len() >= 5 {
            let len = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
            if bytes.len() - 5 < len {
                break;
            }
            let m = pb::WatchResponse::decode(&bytes[5..5 + len])?;
            bytes = &bytes[5..][len..];
            let s = &mut self.subscribers[k];
            s.failures = 0;
            if !s.open {
                s.open = true;
                self.streams.open.fetch_add(1, Ordering::Relaxed);
            }
            match m.kind {
                Some(Kind::Event(e)) => {
                    s.revision = e.revision;
                    self.events.push((k, e.revision));
                }
                Some(Kind::Snapshot(snap)) => s.revision = snap.revision,
                _ => {}
            }
        }
        if !bytes.is_empty() {
            self.partial.insert(stream, bytes.to_vec());
        }
        Ok(())
    }

    /// `stream` ended (trailers, reset or end of data): its subscriber opens another after a
    /// pause.
    fn ended(&mut self, stream: u32) {
        self.partial.remove(&stream);
        let Some(k) = self.ids.remove(&stream) else {
            return;
        };
        let s = &mut self.subscribers[k];
        if s.open {
            s.open = false;
            self.streams.open.fetch_sub(1, Ordering::Relaxed);
        }
        s.failures += 1;
        let pause = Duration::from_millis(100 << s.failures.min(5)).min(Duration::from_secs(2));
        self.retries.push((Instant::now() + pause, k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(revision: u64) -> Vec<u8> {
        grpc_message(&pb::WatchResponse {
            kind: Some(pb::watch_response::Kind::Event(pb::WatchEvent {
                revision,
                change: None,
            })),
        })
    }

    /// The start_revision of each request (DATA frame with END_STREAM) in `out`.
    fn requests(out: &[u8]) -> Vec<(u32, Option<u64>)> {
        let mut found = Vec::new();
        let mut at = 0;
        while at < out.len() {
            let len = u32::from_be_bytes([0, out[at], out[at + 1], out[at + 2]]) as usize;
            let id = u32::from_be_bytes([out[at + 5], out[at + 6], out[at + 7], out[at + 8]]);
            if out[at + 3] == DATA {
                let req = pb::WatchRequest::decode(&out[at + 9 + 5..at + 9 + len]).unwrap();
                found.push((id, req.start_revision));
            }
            at += 9 + len;
        }
        found
    }

    #[test]
    fn frames_are_read_whole_and_messages_across_frames() {
        let mut r = Reader::new(2, Arc::default(), request_headers("n1:7700"), "f");
        let mut opening = Vec::new();
        r.open(0, &mut opening);
        r.open(1, &mut opening);
        assert_eq!(requests(&opening), vec![(1, None), (3, None)]);
        let mut wire = Vec::new();
        frame(&mut wire, SETTINGS, 0, 0, &[]);
        frame(&mut wire, HEADERS, END_HEADERS, 1, &[0x88]);
        frame(&mut wire, DATA, 0, 1, &event(7));
        let split = event(9);
        frame(&mut wire, DATA, 0, 3, &split[..4]);
        frame(&mut wire, DATA, 0, 3, &split[4..]);
        frame(&mut wire, PING, 0, 0, &[1, 2, 3, 4, 5, 6, 7, 8]);
        let cut = wire.len() - 3;
        let mut replies = Vec::new();
        let used = r.frames(&wire[..cut], &mut replies).unwrap();
        assert_eq!(r.events, vec![(0, 7), (1, 9)]);
        assert_eq!(r.streams.open.load(Ordering::Relaxed), 2);
        // The PING is incomplete: not taken, and not answered yet.
        assert_eq!(used, cut - 9 - 8 + 3);
        let mut settings_ack = Vec::new();
        frame(&mut settings_ack, SETTINGS, ACK, 0, &[]);
        assert_eq!(replies, settings_ack);
        replies.clear();
        assert_eq!(r.frames(&wire[used..], &mut replies).unwrap(), wire.len() - used);
        let mut pong = Vec::new();
        frame(&mut pong, PING, ACK, 0, &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(replies, pong);
        // Trailers end a stream, once; its subscriber is opened again after its revision.
        let mut end = Vec::new();
        frame(&mut end, HEADERS, END_HEADERS | END_STREAM, 3, &[0x88]);
        frame(&mut end, RST_STREAM, 0, 3, &[0, 0, 0, 8]);
        r.frames(&end, &mut replies).unwrap();
        assert_eq!(r.streams.open.load(Ordering::Relaxed), 1);
        assert_eq!(r.retries.len(), 1);
        let (_, k) = r.retries[0];
        let mut again = Vec::new();
        r.open(k, &mut again);
        assert_eq!(requests(&again), vec![(5, Some(9))]);
        // A frame of the ended stream is ignored.
        r.events.clear();
        let mut late = Vec::new();
        frame(&mut late, DATA, 0, 3, &event(10));
        r.frames(&late, &mut replies).unwrap();
        assert!(r.events.is_empty());
    }
}
