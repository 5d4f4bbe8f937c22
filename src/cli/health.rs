//! `switchyard health`: probes a node's `/readyz` (or `/livez`) over HTTP(S) and exits 0 only
//! on 200, for a container healthcheck where no curl exists (the image holds one binary).

use std::time::Duration;

use anyhow::{bail, Context};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;

use crate::cli::Cli;

/// How long the whole probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// Most of the answer read.
const MAX_BODY: usize = 64 * 1024;

/// Settings of `health`.
#[derive(Debug, clap::Args)]
pub struct HealthArgs {
    /// The node's HTTP listener (its --metrics-listen), host:port.
    #[arg(long, env = "SWITCHYARD_HEALTH_ADDR", default_value = "127.0.0.1:9700")]
    pub addr: String,
    /// Ask whether the process serves at all (`/livez`) rather than whether it is ready.
    #[arg(long)]
    pub live: bool,
}

/// `health`.
pub async fn run(cli: &Cli, args: &HealthArgs) -> anyhow::Result<()> {
    let path = if args.live { "/livez" } else { "/readyz" };
    let (status, body) = tokio::time::timeout(PROBE_TIMEOUT, probe(cli, &args.addr, path))
        .await
        .with_context(|| format!("{} did not answer within {PROBE_TIMEOUT:?}", args.addr))??;
    let text = String::from_utf8_lossy(&body);
    println!("{}", text.trim_end());
    if status != 200 {
        bail!("{path} answered {status}");
    }
    Ok(())
}

async fn probe(cli: &Cli, addr: &str, path: &str) -> anyhow::Result<(u16, Bytes)> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let tls = cli.connect_options().tls.rustls_config()?;
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h).to_string();
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, &host)
        .header(hyper::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())?;
    let response = match tls {
        None => send(hyper_util::rt::TokioIo::new(tcp), request).await?,
        Some(config) => {
            let name = rustls::pki_types::ServerName::try_from(host.clone())
                .with_context(|| format!("{host} is not a name a certificate can have"))?;
            let stream = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .with_context(|| format!("TLS with {addr}"))?;
            send(hyper_util::rt::TokioIo::new(stream), request).await?
        }
    };
    let status = response.status().as_u16();
    let body = http_body_util::Limited::new(response.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!("reading the answer: {e}"))?
        .to_bytes();
    Ok((status, body))
}

async fn send<T>(
    io: T,
    request: hyper::Request<Empty<Bytes>>,
) -> anyhow::Result<hyper::Response<hyper::body::Incoming>>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(conn);
    Ok(sender.send_request(request).await?)
}
