//! A throwaway certificate authority for local clusters and tests (`switchyard certs`): never
//! for production, where certificates come from the organisation's own CA.
//!
//! It writes, into one directory:
//! - `ca.pem`: the CA of the nodes (clients trust it with `--ca`; nodes use it as `--peer-ca`);
//! - `node-<i>.pem`, `node-<i>-key.pem`: a certificate per node, valid for every host name and
//!   address given, usable as server and client (a node calls its peers with it);
//! - `client-ca.pem`: a second CA for client certificates (`--client-ca`), kept apart so that
//!   no client certificate can pass as a member's;
//! - `client-<name>.pem`, `client-<name>-key.pem`: a client certificate whose identity is
//!   `<name>`, to map to a role with `switchyard auth certificate map <name> ROLE`.

use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};

use crate::error::{Error, Result};

fn failed(e: impl std::fmt::Display) -> Error {
    Error::internal(format!("making a certificate: {e}"))
}

fn write(dir: &Path, name: &str, text: &str, secret: bool) -> Result<()> {
    let path = dir.join(name);
    std::fs::write(&path, text).map_err(|e| Error::invalid(format!("writing {}: {e}", path.display())))?;
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| Error::invalid(format!("protecting {}: {e}", path.display())))?;
    }
    #[cfg(not(unix))]
    let _ = secret;
    Ok(())
}

struct Authority {
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn authority(name: &str) -> Result<Authority> {
    let key = KeyPair::generate().map_err(failed)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(failed)?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = params.self_signed(&key).map_err(failed)?;
    Ok(Authority { cert, key })
}

fn leaf(
    ca: &Authority,
    common_name: &str,
    names: &[String],
    usages: Vec<ExtendedKeyUsagePurpose>,
) -> Result<(String, String)> {
    let key = KeyPair::generate().map_err(failed)?;
    let mut params = CertificateParams::new(names.to_vec())
        .map_err(|e| Error::invalid(format!("a host name or address is not valid: {e}")))?;
    params.distinguished_name.push(DnType::CommonName, common_name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = usages;
    let cert = params.signed_by(&key, &ca.cert, &ca.key).map_err(failed)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Writes a CA, `nodes` node certificates valid for `hosts`, a client CA and a client
/// certificate per name in `clients`, into `dir` (created if missing).
pub fn create(dir: &Path, hosts: &[String], nodes: u64, clients: &[String]) -> Result<()> {
    if hosts.is_empty() {
        return Err(Error::invalid("name at least one host name or address (--host)"));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::invalid(format!("creating {}: {e}", dir.display())))?;
    let ca = authority("Switchyard throwaway node CA")?;
    write(dir, "ca.pem", &ca.cert.pem(), false)?;
    for i in 1..=nodes {
        let (cert, key) = leaf(
            &ca,
            &format!("switchyard node {i}"),
            hosts,
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        )?;
        write(dir, &format!("node-{i}.pem"), &cert, false)?;
        write(dir, &format!("node-{i}-key.pem"), &key, true)?;
    }
    let client_ca = authority("Switchyard throwaway client CA")?;
    write(dir, "client-ca.pem", &client_ca.cert.pem(), false)?;
    for name in clients {
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(Error::invalid(format!(
                "client name {name:?}: letters, digits, '-', '_' and '.' only"
            )));
        }
        let (cert, key) = leaf(&client_ca, name, &[], vec![ExtendedKeyUsagePurpose::ClientAuth])?;
        write(dir, &format!("client-{name}.pem"), &cert, false)?;
        write(dir, &format!("client-{name}-key.pem"), &key, true)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_certificates_load_and_name_their_holders() {
        let dir = tempfile::tempdir().unwrap();
        create(
            dir.path(),
            &["127.0.0.1".into(), "localhost".into()],
            2,
            &["ops".into()],
        )
        .unwrap();
        let node = super::super::ReloadingCert::load(
            &dir.path().join("node-1.pem"),
            &dir.path().join("node-1-key.pem"),
        )
        .unwrap();
        assert!(node.leaf().is_some());
        let client = super::super::load_certs(&dir.path().join("client-ops.pem"), "c").unwrap();
        assert_eq!(
            super::super::certificate_identity(&client[0]).as_deref(),
            Some("ops")
        );
        // A member's certificate passes the peer check; a client's does not.
        let check =
            super::super::PeerCheck::new(super::super::load_roots(&dir.path().join("ca.pem"), "ca").unwrap())
                .unwrap();
        let node_chain =
            std::sync::Arc::new(super::super::load_certs(&dir.path().join("node-2.pem"), "n").unwrap());
        assert!(check.is_member(&node_chain));
        assert!(check.is_member(&node_chain), "remembered");
        assert!(!check.is_member(&std::sync::Arc::new(client)));
        assert!(create(dir.path(), &[], 1, &[]).is_err());
        assert!(create(dir.path(), &["x".into()], 1, &["../evil".into()]).is_err());
    }
}
