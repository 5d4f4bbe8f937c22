//! The node's certificate, read again from its files on SIGHUP and whenever they change, so a
//! renewed certificate takes effect with no restart. New handshakes get the new certificate;
//! connections already open keep theirs. A file that cannot be read or does not match its key
//! leaves the old certificate in place (and says so in the log).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::error::{Error, Result};

/// How often the files are checked for a change.
pub(crate) const CHECK_EVERY: Duration = Duration::from_secs(5);

/// The certificate being served.
pub(crate) struct ReloadingCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: ArcSwap<CertifiedKey>,
    /// The files' modification times when last loaded.
    loaded: Mutex<(Option<SystemTime>, Option<SystemTime>)>,
}

impl std::fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("cert", &self.cert_path)
            .finish()
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey> {
    let chain = super::load_certs(cert, "certificate")?;
    let key_der = super::load_key(key)?;
    let provider = rustls::crypto::ring::default_provider();
    let signer = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| Error::invalid(format!("the key {} is not usable: {e}", key.display())))?;
    let certified = CertifiedKey::new(chain, signer);
    certified.keys_match().map_err(|e| {
        Error::invalid(format!(
            "the key {} does not belong to the certificate {}: {e}",
            key.display(),
            cert.display()
        ))
    })?;
    Ok(certified)
}

impl ReloadingCert {
    /// Loads the certificate and key.
    pub(crate) fn load(cert: &Path, key: &Path) -> Result<ReloadingCert> {
        let stamps = (modified(cert), modified(key));
        Ok(ReloadingCert {
            cert_path: cert.to_path_buf(),
            key_path: key.to_path_buf(),
            current: ArcSwap::from_pointee(certified_key(cert, key)?),
            loaded: Mutex::new(stamps),
        })
    }

    /// Reads the files again if they changed since last loaded (or always, if `force`):
    /// whether a new certificate is now served.
    pub(crate) fn reload(&self, force: bool) -> Result<bool> {
        let stamps = (modified(&self.cert_path), modified(&self.key_path));
        if !force && *self.loaded.lock() == stamps {
            return Ok(false);
        }
        let fresh = certified_key(&self.cert_path, &self.key_path);
        // Remembered even on failure, so a broken file is reported once, not every check.
        *self.loaded.lock() = stamps;
        self.current.store(Arc::new(fresh?));
        Ok(true)
    }

    /// The DER of the leaf certificate being served.
    #[cfg(test)]
    pub(crate) fn leaf(&self) -> Option<Vec<u8>> {
        self.current.load().cert.first().map(|c| c.to_vec())
    }

    /// Reloads on SIGHUP and when the files change, until the process ends.
    pub(crate) fn watch(self: Arc<Self>) {
        tokio::spawn(async move {
            #[cfg(unix)]
            let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            let mut tick = tokio::time::interval(CHECK_EVERY);
            loop {
                #[cfg(unix)]
                let forced = match hup.as_mut() {
                    Some(h) => tokio::select! {
                        _ = h.recv() => true,
                        _ = tick.tick() => false,
                    },
                    None => {
                        tick.tick().await;
                        false
                    }
                };
                #[cfg(not(unix))]
                let forced = {
                    tick.tick().await;
                    false
                };
                match self.reload(forced) {
                    Ok(true) => tracing::info!(cert = %self.cert_path.display(), "TLS certificate reloaded"),
                    Ok(false) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "TLS certificate not reloaded; still serving the previous one")
                    }
                }
            }
        });
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}
