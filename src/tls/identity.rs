//! Who a certificate names, and whether it is a member's.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use x509_parser::extensions::GeneralName;

use crate::error::{Error, Result};

/// The identity of a certificate: its first URI subject alternative name, else its first DNS
/// name, else its subject's common name.
pub(crate) fn certificate_identity(der: &CertificateDer<'_>) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        let names = &san.value.general_names;
        let uri = names.iter().find_map(|n| match n {
            GeneralName::URI(u) => Some(u.to_string()),
            _ => None,
        });
        let dns = || {
            names.iter().find_map(|n| match n {
                GeneralName::DNSName(d) => Some(d.to_string()),
                _ => None,
            })
        };
        if let Some(name) = uri.or_else(dns) {
            return Some(name);
        }
    }
    let common_name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string);
    common_name
}

/// How long a member's certificate, once checked, is trusted without checking it again.
const REMEMBER: Duration = Duration::from_secs(60);
/// Most certificates remembered.
const MAX_REMEMBERED: usize = 1024;

/// Recognises members: a chain that verifies against the peer CA. The check (a signature
/// verification) runs once per connection a minute, not on every Raft message: a connection's
/// certificates are one shared vector, remembered by its address (the entry holds the vector,
/// so the address cannot be reused by another connection's while remembered).
pub(crate) struct PeerCheck {
    verifier: Arc<dyn ClientCertVerifier>,
    seen: Mutex<HashMap<usize, (Chain, Instant)>>,
}

/// The certificates a connection presented, shared by all its requests.
type Chain = Arc<Vec<CertificateDer<'static>>>;

impl PeerCheck {
    pub(crate) fn new(roots: RootCertStore) -> Result<PeerCheck> {
        let verifier = WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .map_err(|e| Error::invalid(format!("peer certificate verifier: {e}")))?;
        Ok(PeerCheck {
            verifier,
            seen: Mutex::new(HashMap::new()),
        })
    }

    /// Whether `chain` (leaf first, as presented on a connection) is a member's.
    pub(crate) fn is_member(&self, chain: &Chain) -> bool {
        let Some((leaf, intermediates)) = chain.split_first() else {
            return false;
        };
        let key = Arc::as_ptr(chain) as usize;
        let now = Instant::now();
        if let Some((_, at)) = self.seen.lock().get(&key) {
            if now.duration_since(*at) < REMEMBER {
                return true;
            }
        }
        let ok = self
            .verifier
            .verify_client_cert(leaf, intermediates, UnixTime::now())
            .is_ok();
        if ok {
            let mut seen = self.seen.lock();
            if seen.len() >= MAX_REMEMBERED {
                seen.retain(|_, (_, at)| now.duration_since(*at) < REMEMBER);
                if seen.len() >= MAX_REMEMBERED {
                    seen.clear();
                }
            }
            seen.insert(key, (chain.clone(), now));
        }
        ok
    }
}
