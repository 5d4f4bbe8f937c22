//! The application's health, as the agent checks it: an HTTP GET that must answer 2xx, or a TCP
//! connection that must open, each within a timeout. The agent keeps the instance in the
//! registry only while these pass.

use std::time::Duration;

use http_body_util::Empty;
use hyper::body::Bytes;

use crate::error::{Error, Result};

/// How the agent checks the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthCheck {
    /// `GET` this `http://` URL; healthy on a 2xx answer.
    Http(hyper::Uri),
    /// Open a TCP connection to this address; healthy when it opens.
    Tcp(String),
}

impl HealthCheck {
    /// An HTTP check of `url` (plain `http://`: the application is beside the agent).
    pub fn http(url: &str) -> Result<HealthCheck> {
        let uri: hyper::Uri = url
            .parse()
            .map_err(|e| Error::invalid(format!("health check URL {url:?}: {e}")))?;
        if uri.scheme_str() != Some("http") || uri.host().is_none() {
            return Err(Error::invalid(format!(
                "health check URL {url:?}: use http://HOST[:PORT]/PATH (the application beside the agent)"
            )));
        }
        Ok(HealthCheck::Http(uri))
    }

    /// A TCP check of `addr` (`host:port`).
    pub fn tcp(addr: &str) -> Result<HealthCheck> {
        match addr.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                Ok(HealthCheck::Tcp(addr.to_string()))
            }
            _ => Err(Error::invalid(format!(
                "health check address {addr:?}: use HOST:PORT"
            ))),
        }
    }

    /// Checks once: `Ok` when healthy, else why not.
    pub async fn probe(&self, timeout: Duration) -> std::result::Result<(), String> {
        match tokio::time::timeout(timeout, self.probe_inner()).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {timeout:?}")),
        }
    }

    async fn probe_inner(&self) -> std::result::Result<(), String> {
        match self {
            HealthCheck::Tcp(addr) => tokio::net::TcpStream::connect(addr.as_str())
                .await
                .map(|_| ())
                .map_err(|e| format!("cannot connect to {addr}: {e}")),
            HealthCheck::Http(uri) => {
                let host = uri.host().unwrap_or("127.0.0.1");
                let port = uri.port_u16().unwrap_or(80);
                let stream = tokio::net::TcpStream::connect((host, port))
                    .await
                    .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
                let (mut sender, conn) =
                    hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                        .await
                        .map_err(|e| format!("{uri}: {e}"))?;
                let driver = tokio::spawn(conn);
                let path = uri.path_and_query().map_or("/", |p| p.as_str());
                let req = hyper::Request::get(path)
                    .header(hyper::header::HOST, format!("{host}:{port}"))
                    .body(Empty::<Bytes>::new())
                    .map_err(|e| format!("{uri}: {e}"))?;
                let answer = sender.send_request(req).await;
                driver.abort();
                let status = answer.map_err(|e| format!("{uri}: {e}"))?.status();
                if status.is_success() {
                    Ok(())
                } else {
                    Err(format!("{uri} answered {status}"))
                }
            }
        }
    }
}

/// Whether the checks say healthy, given the last result and the failures in a row: healthy
/// after one pass, unhealthy after `unhealthy_after` failures in a row (a single slow answer
/// does not take an instance out).
pub(crate) fn judge(was_healthy: bool, passed: bool, failures_in_a_row: u32, unhealthy_after: u32) -> bool {
    if passed {
        true
    } else {
        was_healthy && failures_in_a_row < unhealthy_after.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_are_read_or_refused_with_why() {
        assert!(HealthCheck::http("http://127.0.0.1:8080/healthz").is_ok());
        assert!(HealthCheck::http("https://127.0.0.1/healthz")
            .unwrap_err()
            .to_string()
            .contains("http://"));
        assert!(HealthCheck::http("not a url").is_err());
        assert!(HealthCheck::tcp("127.0.0.1:8080").is_ok());
        assert!(HealthCheck::tcp("localhost").is_err());
        assert!(HealthCheck::tcp(":80").is_err());
    }

    #[test]
    fn one_failure_is_not_enough_to_be_unhealthy() {
        assert!(judge(true, false, 1, 3));
        assert!(judge(true, false, 2, 3));
        assert!(!judge(true, false, 3, 3));
        assert!(!judge(false, false, 1, 3), "not healthy until a check passes");
        assert!(judge(false, true, 0, 3));
    }

    #[tokio::test]
    async fn probes_tell_a_closed_port_and_a_bad_status() {
        // A port nobody listens on.
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        let check = HealthCheck::tcp(&addr.to_string()).unwrap();
        assert!(check.probe(Duration::from_secs(1)).await.is_err());
        // An HTTP server answering 503, then one answering 200.
        for (status, healthy) in [(503u16, false), (200, true)] {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move {
                if let Ok((mut s, _)) = listener.accept().await {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let mut buf = [0u8; 1024];
                    let _ = s.read(&mut buf).await;
                    let _ = s
                        .write_all(format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n").as_bytes())
                        .await;
                }
            });
            let check = HealthCheck::http(&format!("http://{addr}/healthz")).unwrap();
            assert_eq!(
                check.probe(Duration::from_secs(2)).await.is_ok(),
                healthy,
                "{status}"
            );
        }
        // A server that accepts and never answers: a timeout.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let check = HealthCheck::http(&format!("http://{}/", silent.local_addr().unwrap())).unwrap();
        let why = check.probe(Duration::from_millis(200)).await.unwrap_err();
        assert!(why.contains("no answer"), "{why}");
    }
}
