//! A server-streaming gRPC method served without tonic's generated service: the request read
//! and checked here, the response a stream of whole, already-encoded message frames.
//!
//! tonic's generated service encodes each message of a response stream into a buffer of that
//! stream's own, so every event a node sends to N subscribers is copied N times into N cold
//! buffers, and the response body is polled through tonic's encoder on each send. The watch
//! service sends the same frame to every subscriber: here each stream hands the shared bytes
//! on as they are (see [`crate::pb::grpc_frame`]), and an idle stream holds no buffer at all.
//! The wire format is unchanged; clients use the generated client as before.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use futures::Stream;
use http::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
use http_body_util::BodyExt;
use hyper::body::Frame;
use tonic::body::Body;
use tonic::metadata::MetadataMap;
use tonic::{Request, Status};

use crate::pb::GRPC_HEADER;

/// The one request message of a call, with the call's metadata and extensions (the caller's
/// address, and what the guard put there), as a generated service would hand it over.
///
/// A compressed, truncated, oversized or undecodable message, or one that came with more bytes
/// after it, is refused with a status saying which. Reading stops at the first whole message;
/// the server's timeout bounds how long this waits for it.
pub(crate) async fn read_request<M>(request: http::Request<Body>, limit: usize) -> Result<Request<M>, Status>
where
    M: prost::Message + Default,
{
    let (parts, mut body) = request.into_parts();
    if let Some(encoding) = parts.headers.get("grpc-encoding") {
        if encoding != "identity" {
            return Err(Status::unimplemented(format!(
                "request compression {encoding:?} is not supported; send the request uncompressed"
            )));
        }
    }
    let mut bytes = BytesMut::new();
    let mut ended = false;
    while !ended {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    bytes.extend_from_slice(&data);
                }
            }
            Some(Err(status)) => return Err(status),
            None => ended = true,
        }
        // Stop reading at the first whole message (a client need not half-close first), and
        // refuse as soon as the declared length is over the limit.
        if let Some(len) = declared_len(&bytes) {
            if len > limit {
                return Err(too_large(len, limit));
            }
            if bytes.len() >= GRPC_HEADER + len {
                break;
            }
        }
    }
    let message = decode_one::<M>(bytes.freeze(), limit)?;
    Ok(Request::from_parts(
        MetadataMap::from_headers(parts.headers),
        parts.extensions,
        message,
    ))
}

/// The length a frame's header declares, once its header is all there.
fn declared_len(bytes: &[u8]) -> Option<usize> {
    let header: [u8; GRPC_HEADER] = bytes.get(..GRPC_HEADER)?.try_into().ok()?;
    Some(u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize)
}

fn too_large(len: usize, limit: usize) -> Status {
    Status::resource_exhausted(format!(
        "the request message is {len} bytes, over this node's limit of {limit}"
    ))
}

/// The single message in `bytes`, a request body read through its first message.
fn decode_one<M: prost::Message + Default>(mut bytes: Bytes, limit: usize) -> Result<M, Status> {
    let Some(len) = declared_len(&bytes) else {
        return Err(Status::invalid_argument(
            "the request ended before its message: a call to this method sends one message",
        ));
    };
    if len > limit {
        return Err(too_large(len, limit));
    }
    match bytes[0] {
        0 => {}
        1 => {
            return Err(Status::unimplemented(
                "the request message is compressed; send it uncompressed",
            ))
        }
        flag => {
            return Err(Status::invalid_argument(format!(
                "the request is not a gRPC message frame (flag byte {flag})"
            )))
        }
    }
    if bytes.len() < GRPC_HEADER + len {
        return Err(Status::invalid_argument(format!(
            "the request ended inside its message ({} of {len} bytes)",
            bytes.len() - GRPC_HEADER
        )));
    }
    if bytes.len() > GRPC_HEADER + len {
        return Err(Status::invalid_argument(
            "more than one request message: a call to this method sends one",
        ));
    }
    bytes.advance(GRPC_HEADER);
    M::decode(bytes)
        .map_err(|e| Status::invalid_argument(format!("the request message does not decode: {e}")))
}

/// The response of a call whose messages are `frames`, each a whole gRPC message frame; an
/// error ends the stream with its status, the end with `OK`.
pub(crate) fn response<S>(frames: S) -> http::Response<Body>
where
    S: Stream<Item = Result<Bytes, Status>> + Unpin + Send + 'static,
{
    let mut response = http::Response::new(Body::new(FrameBody {
        frames,
        state: State::Streaming,
    }));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    response
}

/// A response body of ready frames, then the status as trailers.
struct FrameBody<S> {
    frames: S,
    state: State,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Streaming,
    /// The trailers were given: nothing follows.
    Ended,
}

impl<S> hyper::body::Body for FrameBody<S>
where
    S: Stream<Item = Result<Bytes, Status>> + Unpin,
{
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        if this.state == State::Ended {
            return Poll::Ready(None);
        }
        let status = match ready!(Pin::new(&mut this.frames).poll_next(cx)) {
            Some(Ok(frame)) => return Poll::Ready(Some(Ok(Frame::data(frame)))),
            Some(Err(status)) => status,
            None => Status::ok(""),
        };
        this.state = State::Ended;
        Poll::Ready(Some(Ok(Frame::trailers(trailers(&status)))))
    }

    fn is_end_stream(&self) -> bool {
        self.state == State::Ended
    }
}

/// The trailers that end a call with `status`.
fn trailers(status: &Status) -> HeaderMap {
    let mut trailers = HeaderMap::new();
    if status.add_header(&mut trailers).is_err() {
        // Only details or metadata that cannot be header values fail; the code still goes.
        trailers.clear();
        trailers.insert(Status::GRPC_STATUS, HeaderValue::from(status.code() as i32));
    }
    trailers
}

#[cfg(test)]
mod tests {
    use futures::stream;
    use http_body_util::BodyExt;
    use prost::Message;

    use super::*;
    use crate::pb::{grpc_frame, v1 as wire};

    fn request_with(chunks: Vec<Vec<u8>>) -> http::Request<Body> {
        let frames = stream::iter(
            chunks
                .into_iter()
                .map(|c| Ok::<_, Status>(Frame::data(Bytes::from(c)))),
        );
        http::Request::new(Body::new(http_body_util::StreamBody::new(frames)))
    }

    fn watch_request(revision: u64) -> wire::WatchRequest {
        wire::WatchRequest {
            filter: None,
            start_revision: Some(revision),
        }
    }

    #[tokio::test]
    async fn a_request_split_anywhere_reads_as_its_message() {
        let frame = grpc_frame(&watch_request(42)).to_vec();
        for cut in 0..=frame.len() {
            let req = request_with(vec![frame[..cut].to_vec(), frame[cut..].to_vec()]);
            let got = read_request::<wire::WatchRequest>(req, 1024).await.unwrap();
            assert_eq!(got.into_inner().start_revision, Some(42), "cut at {cut}");
        }
    }

    #[tokio::test]
    async fn bad_requests_are_refused_saying_why() {
        let good = grpc_frame(&watch_request(7)).to_vec();
        let mut compressed = good.clone();
        compressed[0] = 1;
        let mut garbage_flag = good.clone();
        garbage_flag[0] = 9;
        let mut two = good.clone();
        two.extend_from_slice(&good);
        let mut undecodable = vec![0, 0, 0, 0, 3];
        undecodable.extend_from_slice(&[0xff, 0xff, 0xff]);
        let cases: Vec<(Vec<u8>, tonic::Code, &str)> = vec![
            (vec![], tonic::Code::InvalidArgument, "ended before its message"),
            (
                good[..3].to_vec(),
                tonic::Code::InvalidArgument,
                "ended before its message",
            ),
            (
                good[..good.len() - 1].to_vec(),
                tonic::Code::InvalidArgument,
                "ended inside",
            ),
            (compressed, tonic::Code::Unimplemented, "compressed"),
            (garbage_flag, tonic::Code::InvalidArgument, "flag byte 9"),
            (two, tonic::Code::InvalidArgument, "more than one"),
            (undecodable, tonic::Code::InvalidArgument, "does not decode"),
            (
                vec![0, 0, 1, 0, 0],
                tonic::Code::ResourceExhausted,
                "over this node's limit",
            ),
        ];
        for (body, code, says) in cases {
            let err = read_request::<wire::WatchRequest>(request_with(vec![body.clone()]), 1024)
                .await
                .unwrap_err();
            assert_eq!(err.code(), code, "{body:?}: {err}");
            assert!(err.message().contains(says), "{body:?}: {err}");
        }
        let mut compressed_call = request_with(vec![good]);
        compressed_call
            .headers_mut()
            .insert("grpc-encoding", HeaderValue::from_static("gzip"));
        let err = read_request::<wire::WatchRequest>(compressed_call, 1024)
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unimplemented);
    }

    #[tokio::test]
    async fn an_oversized_request_is_refused_before_it_is_all_read() {
        // Declares 1 MiB and sends 10 bytes of it, then never ends: refused from the header.
        let mut head = vec![0];
        head.extend_from_slice(&(1u32 << 20).to_be_bytes());
        head.extend_from_slice(&[0; 10]);
        let frames = futures::StreamExt::chain(
            stream::iter([Ok::<_, Status>(Frame::data(Bytes::from(head)))]),
            stream::pending(),
        );
        let req = http::Request::new(Body::new(http_body_util::StreamBody::new(frames)));
        let err = read_request::<wire::WatchRequest>(req, 1024).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    }

    #[tokio::test]
    async fn a_response_is_its_frames_then_the_status() {
        let frames = vec![
            Bytes::from_static(b"\0\0\0\0\x01a"),
            Bytes::from_static(b"\0\0\0\0\x01b"),
        ];
        for (end, code) in [
            (None, tonic::Code::Ok),
            (
                Some(Status::unavailable(
                    "resume on another node with start_revision 9",
                )),
                tonic::Code::Unavailable,
            ),
        ] {
            let items = frames.iter().cloned().map(Ok).chain(end.map(Err));
            let response = response(stream::iter(items.collect::<Vec<_>>()));
            assert_eq!(response.headers()[CONTENT_TYPE], "application/grpc");
            let mut body = response.into_body();
            let mut data = Vec::new();
            let mut trailers = None;
            while let Some(frame) = body.frame().await {
                let frame = frame.unwrap();
                match frame.into_data() {
                    Ok(d) => data.push(d),
                    Err(frame) => trailers = frame.into_trailers().ok(),
                }
            }
            assert_eq!(data, frames, "frames handed on as they are");
            let status = Status::from_header_map(&trailers.unwrap()).unwrap();
            assert_eq!(status.code(), code);
            assert!(hyper::body::Body::is_end_stream(&body));
        }
    }

    #[test]
    fn frames_are_length_prefixed_messages() {
        let m = watch_request(5);
        let frame = grpc_frame(&m);
        assert_eq!(frame[0], 0);
        assert_eq!(declared_len(&frame), Some(m.encoded_len()));
        assert_eq!(wire::WatchRequest::decode(&frame[GRPC_HEADER..]).unwrap(), m);
    }
}
