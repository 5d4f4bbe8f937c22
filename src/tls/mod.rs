//! TLS with rustls, for every listener of a node and for calls between members.
//!
//! A node has one certificate (`--tls-cert`, `--tls-key`), served to clients and to peers and
//! presented as its client certificate when it calls a peer. Two CAs say who is who: the peer
//! CA (`--peer-ca`) signs member certificates, and only a caller with one may use the internal
//! Raft service; the client CA (`--client-ca`, optional) signs client certificates whose
//! identity an admin can map to a role. The certificate and key are read again on SIGHUP and
//! whenever their files change, without a restart; the CAs are read at start.
//!
//! - [`reload`]: the certificate resolver that reloads;
//! - [`identity`]: a certificate's identity, and recognising a member;
//! - [`certs`]: a throwaway CA and certificates for local use and tests (`switchyard certs`).

pub mod certs;
mod identity;
mod reload;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::error::{Error, Result};
pub(crate) use identity::{certificate_identity, PeerCheck};
pub(crate) use reload::ReloadingCert;

/// Longest a TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once on one listener; more wait to be accepted.
const MAX_HANDSHAKES: usize = 1024;

/// A node's TLS settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeTls {
    /// The node's certificate chain (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// The CA whose certificates members hold (PEM).
    pub peer_ca: PathBuf,
    /// The CA whose client certificates may be mapped to roles (PEM), if any.
    pub client_ca: Option<PathBuf>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::invalid(format!("cannot read the {what} {}: {e}", path.display())))
}

/// The certificates in a PEM file (at least one).
pub(crate) fn load_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let pem = read(path, what)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::invalid(format!("the {what} {} is not PEM: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(Error::invalid(format!(
            "the {what} {} holds no certificate",
            path.display()
        )));
    }
    Ok(certs)
}

/// The private key in a PEM file.
pub(crate) fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    let pem = read(path, "private key")?;
    PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| Error::invalid(format!("no private key in {}: {e}", path.display())))
}

/// A root store of the CA certificates in `path`.
pub(crate) fn load_roots(path: &Path, what: &str) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for c in load_certs(path, what)? {
        roots
            .add(c)
            .map_err(|e| Error::invalid(format!("the {what} {} is not a usable CA: {e}", path.display())))?;
    }
    Ok(roots)
}

/// What a node serves TLS with: the reloading certificate, the server configurations for gRPC
/// and HTTP, and the check that recognises members.
pub(crate) struct ServerTls {
    pub(crate) cert: Arc<ReloadingCert>,
    grpc: Arc<rustls::ServerConfig>,
    http: Arc<rustls::ServerConfig>,
    pub(crate) peers: Arc<PeerCheck>,
}

impl ServerTls {
    /// Loads everything, failing with a message naming the file that is wrong.
    pub(crate) fn load(config: &NodeTls) -> Result<ServerTls> {
        let cert = Arc::new(ReloadingCert::load(&config.cert, &config.key)?);
        let peer_roots = load_roots(&config.peer_ca, "peer CA")?;
        // Client certificates are asked for but not required at the handshake: clients may
        // authenticate by token instead; the internal service checks for a member's.
        let mut roots = peer_roots.clone();
        if let Some(ca) = &config.client_ca {
            for c in load_certs(ca, "client CA")? {
                roots.add(c).map_err(|e| {
                    Error::invalid(format!("the client CA {} is not usable: {e}", ca.display()))
                })?;
            }
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .allow_unauthenticated()
            .build()
            .map_err(|e| Error::invalid(format!("client certificate verifier: {e}")))?;
        let build = |alpn: Vec<Vec<u8>>| -> Result<Arc<rustls::ServerConfig>> {
            let mut c = rustls::ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| Error::invalid(format!("TLS settings: {e}")))?
                .with_client_cert_verifier(verifier.clone())
                .with_cert_resolver(cert.clone());
            c.alpn_protocols = alpn;
            Ok(Arc::new(c))
        };
        Ok(ServerTls {
            grpc: build(vec![b"h2".to_vec()])?,
            http: build(vec![b"http/1.1".to_vec()])?,
            peers: Arc::new(PeerCheck::new(peer_roots)?),
            cert,
        })
    }

    /// TLS connections accepted on `listener` for gRPC (HTTP/2).
    pub(crate) fn grpc_incoming(
        &self,
        listener: TcpListener,
    ) -> impl futures::Stream<Item = std::io::Result<TlsStream<TcpStream>>> + Send + 'static {
        incoming(listener, TlsAcceptor::from(self.grpc.clone()))
    }

    /// The acceptor for the HTTP listener (metrics, health).
    pub(crate) fn http_acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.http.clone())
    }
}

/// Accepts TCP connections and completes their handshakes concurrently (each bounded by
/// [`HANDSHAKE_TIMEOUT`], at most [`MAX_HANDSHAKES`] at once), so a client that connects and
/// says nothing holds up no one. Failed handshakes are dropped (and logged at debug).
fn incoming(
    listener: TcpListener,
    acceptor: TlsAcceptor,
) -> impl futures::Stream<Item = std::io::Result<TlsStream<TcpStream>>> + Send + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            let Ok(permit) = handshakes.clone().acquire_owned().await else {
                return;
            };
            let (tcp, from) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(error = %e, "accepting a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let accepted = tx.clone();
            tokio::spawn(async move {
                let _permit = permit;
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = accepted.send(Ok(tls)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%from, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%from, "TLS handshake timed out"),
                }
            });
            if tx.is_closed() {
                return;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// What a client (the CLI, the SDK, a node calling its peers) connects with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// The CA that signed the nodes' certificates (PEM); none: plain connections.
    pub ca: Option<PathBuf>,
    /// A client certificate and key (PEM) to present, if any.
    pub identity: Option<(PathBuf, PathBuf)>,
    /// The name to check the node's certificate against, when not the endpoint's host.
    pub domain: Option<String>,
}

impl ClientTls {
    /// A rustls client configuration (for plain HTTPS, e.g. a health probe), the files read
    /// now; none without a CA.
    pub(crate) fn rustls_config(&self) -> Result<Option<Arc<rustls::ClientConfig>>> {
        let Some(ca) = &self.ca else {
            return Ok(None);
        };
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::internal(format!("TLS: {e}")))?
            .with_root_certificates(load_roots(ca, "CA certificate")?);
        let config = match &self.identity {
            Some((cert, key)) => builder
                .with_client_auth_cert(load_certs(cert, "client certificate")?, load_key(key)?)
                .map_err(|e| {
                    Error::invalid(format!("the client certificate and key do not go together: {e}"))
                })?,
            None => builder.with_no_client_auth(),
        };
        Ok(Some(Arc::new(config)))
    }

    /// Whether connections use TLS.
    pub fn enabled(&self) -> bool {
        self.ca.is_some()
    }

    /// tonic's client configuration, the files read now.
    pub fn tonic_config(&self) -> Result<Option<tonic::transport::ClientTlsConfig>> {
        let Some(ca) = &self.ca else {
            return Ok(None);
        };
        let mut c = tonic::transport::ClientTlsConfig::new().ca_certificate(
            tonic::transport::Certificate::from_pem(read(ca, "CA certificate")?),
        );
        // Checked now, so a bad file fails here rather than on the first call.
        load_roots(ca, "CA certificate")?;
        if let Some((cert, key)) = &self.identity {
            load_certs(cert, "client certificate")?;
            load_key(key)?;
            c = c.identity(tonic::transport::Identity::from_pem(
                read(cert, "client certificate")?,
                read(key, "client key")?,
            ));
        }
        if let Some(d) = &self.domain {
            c = c.domain_name(d.clone());
        }
        Ok(Some(c))
    }
}
