//! The replicated part of authentication: whether it is on, the tokens (their hashes), and
//! which client-certificate identities hold which role. Applied like everything else, so a
//! token revoked on one node is refused on all of them from the same log index.
//!
//! Authentication changes do not take a revision: watchers, SDKs and history never see them.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// What a token or certificate may do.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Role {
    /// Everything: membership, authentication, and all the rest.
    Admin,
    /// The feature manager: catalog, toggles, activations, rollback, cancel; and every read.
    Release,
    /// An instance of one service: register and keep alive instances of that service under its
    /// own leases, watch, evaluate, read toggles and features (flagd too).
    Service(String),
    /// Reads, watches, status, metrics.
    Read,
}

impl Role {
    /// Parses `admin`, `release`, `read` or `service:<name>`.
    pub fn parse(text: &str) -> Result<Role> {
        match text {
            "admin" => Ok(Role::Admin),
            "release" => Ok(Role::Release),
            "read" => Ok(Role::Read),
            other => match other.strip_prefix("service:") {
                Some(name) if !name.is_empty() => {
                    super::catalog::validate_name("service", name)?;
                    Ok(Role::Service(name.to_string()))
                }
                _ => Err(Error::invalid(format!(
                    "unknown role {other:?}: one of admin, release, read, service:<name>"
                ))),
            },
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Role::Admin => f.write_str("admin"),
            Role::Release => f.write_str("release"),
            Role::Read => f.write_str("read"),
            Role::Service(name) => write!(f, "service:{name}"),
        }
    }
}

/// Most tokens the cluster keeps.
pub const MAX_TOKENS: usize = 10_000;
/// Most certificate mappings.
pub const MAX_CERTIFICATES: usize = 10_000;
/// Longest token name or certificate identity.
pub const MAX_NAME: usize = 256;

/// A token as stored: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredToken {
    pub id: String,
    pub name: String,
    pub role: Role,
    /// SHA-256 of the secret, hex.
    pub secret_hash: String,
    pub created_ms: i64,
    /// 0: never.
    pub expires_ms: i64,
}

impl StoredToken {
    /// Whether it has expired at `now_ms`.
    pub fn expired(&self, now_ms: i64) -> bool {
        self.expires_ms != 0 && now_ms >= self.expires_ms
    }
}

/// Authentication settings and credentials.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuthState {
    enabled: bool,
    tokens: BTreeMap<String, StoredToken>,
    certificates: BTreeMap<String, Role>,
    /// Ids of revoked tokens (the latest [`MAX_TOKENS`], by revocation time), so a caller is
    /// told its token was revoked rather than unknown.
    revoked: BTreeMap<String, i64>,
}

fn check_name(what: &str, name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_NAME || name.chars().any(|c| c.is_control()) {
        return Err(Error::invalid(format!(
            "{what} must be 1 to {MAX_NAME} printable characters"
        )));
    }
    Ok(())
}

impl AuthState {
    /// Whether every call must name its caller.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// A token by its public id.
    pub fn token(&self, id: &str) -> Option<&StoredToken> {
        self.tokens.get(id)
    }

    /// Every token, by id.
    pub fn tokens(&self) -> impl Iterator<Item = &StoredToken> {
        self.tokens.values()
    }

    /// Whether the token `id` was revoked (recently enough to be remembered).
    pub fn was_revoked(&self, id: &str) -> bool {
        self.revoked.contains_key(id)
    }

    /// The role mapped to a certificate identity.
    pub fn certificate_role(&self, identity: &str) -> Option<&Role> {
        self.certificates.get(identity)
    }

    /// Every certificate mapping.
    pub fn certificates(&self) -> impl Iterator<Item = (&String, &Role)> {
        self.certificates.iter()
    }

    /// Whether some credential would still let an admin in at `now_ms`.
    fn admin_remains(&self, now_ms: i64) -> bool {
        self.tokens
            .values()
            .any(|t| t.role == Role::Admin && !t.expired(now_ms))
            || self.certificates.values().any(|r| *r == Role::Admin)
    }

    /// Turns enforcement on or off. On needs an admin credential, so nobody is locked out.
    pub fn set_enabled(&mut self, enabled: bool, now_ms: i64) -> Result<()> {
        if enabled && !self.admin_remains(now_ms) {
            return Err(Error::FailedPrecondition(
                "no admin credential exists: create one first (`switchyard auth token create --role admin --name NAME`), or nobody could turn authentication off again".into(),
            ));
        }
        self.enabled = enabled;
        Ok(())
    }

    /// Stores a new token.
    pub fn add_token(&mut self, token: StoredToken) -> Result<()> {
        check_name("a token name", &token.name)?;
        if self.tokens.contains_key(&token.id) {
            return Err(Error::AlreadyExists(format!(
                "token id {} exists already; create another",
                token.id
            )));
        }
        if self.tokens.len() >= MAX_TOKENS {
            return Err(Error::ResourceExhausted(format!(
                "the cluster holds {MAX_TOKENS} tokens, its most: revoke some first"
            )));
        }
        self.tokens.insert(token.id.clone(), token);
        Ok(())
    }

    /// Revokes a token. The last admin credential cannot go while enforcement is on.
    pub fn revoke_token(&mut self, id: &str, now_ms: i64) -> Result<()> {
        let removed = self
            .tokens
            .remove(id)
            .ok_or_else(|| Error::NotFound(format!("no token has id {id}")))?;
        if self.enabled && !self.admin_remains(now_ms) {
            self.tokens.insert(removed.id.clone(), removed);
            return Err(Error::FailedPrecondition(
                "that is the last admin credential while authentication is on: create another admin token first, or turn authentication off".into(),
            ));
        }
        self.revoked.insert(removed.id, now_ms);
        if self.revoked.len() > MAX_TOKENS {
            if let Some(oldest) = self
                .revoked
                .iter()
                .min_by_key(|(id, at)| (**at, (*id).clone()))
                .map(|(id, _)| id.clone())
            {
                self.revoked.remove(&oldest);
            }
        }
        Ok(())
    }

    /// Maps a certificate identity to a role, or removes the mapping (`None`).
    pub fn map_certificate(&mut self, identity: &str, role: Option<Role>, now_ms: i64) -> Result<()> {
        check_name("a certificate identity", identity)?;
        match role {
            Some(role) => {
                if !self.certificates.contains_key(identity) && self.certificates.len() >= MAX_CERTIFICATES {
                    return Err(Error::ResourceExhausted(format!(
                        "the cluster holds {MAX_CERTIFICATES} certificate mappings, its most"
                    )));
                }
                let old = self.certificates.insert(identity.to_string(), role);
                if self.enabled && !self.admin_remains(now_ms) {
                    match old {
                        Some(r) => self.certificates.insert(identity.to_string(), r),
                        None => self.certificates.remove(identity),
                    };
                    return Err(Error::FailedPrecondition(
                        "that would leave no admin credential while authentication is on".into(),
                    ));
                }
            }
            None => {
                let old = self
                    .certificates
                    .remove(identity)
                    .ok_or_else(|| Error::NotFound(format!("no mapping for certificate {identity:?}")))?;
                if self.enabled && !self.admin_remains(now_ms) {
                    self.certificates.insert(identity.to_string(), old);
                    return Err(Error::FailedPrecondition(
                        "that would leave no admin credential while authentication is on".into(),
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(id: &str, role: Role) -> StoredToken {
        StoredToken {
            id: id.into(),
            name: format!("n-{id}"),
            role,
            secret_hash: "00".into(),
            created_ms: 0,
            expires_ms: 0,
        }
    }

    #[test]
    fn roles_parse_and_print_back() {
        for text in ["admin", "release", "read", "service:cart"] {
            assert_eq!(Role::parse(text).unwrap().to_string(), text);
        }
        for bad in ["", "root", "service:", "service:no spaces", "Admin"] {
            assert!(Role::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn enabling_needs_an_admin_credential() {
        let mut a = AuthState::default();
        assert!(matches!(
            a.set_enabled(true, 0),
            Err(Error::FailedPrecondition(_))
        ));
        a.add_token(token("r", Role::Read)).unwrap();
        assert!(a.set_enabled(true, 0).is_err());
        a.add_token(token("a", Role::Admin)).unwrap();
        a.set_enabled(true, 0).unwrap();
        assert!(a.enabled());
    }

    #[test]
    fn the_last_admin_cannot_be_revoked_while_enabled() {
        let mut a = AuthState::default();
        a.add_token(token("a", Role::Admin)).unwrap();
        a.set_enabled(true, 0).unwrap();
        let before = a.clone();
        assert!(a.revoke_token("a", 0).is_err());
        assert_eq!(a, before);
        a.map_certificate("ops", Some(Role::Admin), 0).unwrap();
        a.revoke_token("a", 0).unwrap();
        assert!(a.was_revoked("a"));
        assert!(!a.was_revoked("b"));
        assert!(a.map_certificate("ops", None, 0).is_err());
        assert!(a.map_certificate("ops", Some(Role::Read), 0).is_err());
        assert_eq!(a.certificate_role("ops"), Some(&Role::Admin));
    }

    #[test]
    fn expired_admins_do_not_count() {
        let mut a = AuthState::default();
        let mut t = token("a", Role::Admin);
        t.expires_ms = 100;
        a.add_token(t).unwrap();
        assert!(a.set_enabled(true, 50).is_ok());
        a.set_enabled(false, 50).unwrap();
        assert!(a.set_enabled(true, 100).is_err());
    }

    #[test]
    fn names_are_checked() {
        let mut a = AuthState::default();
        let mut t = token("a", Role::Read);
        t.name = "x\u{0}".into();
        assert!(a.add_token(t).is_err());
        assert!(a
            .map_certificate(&"c".repeat(MAX_NAME + 1), Some(Role::Read), 0)
            .is_err());
        assert!(a.add_token(token("b", Role::Read)).is_ok());
        assert!(matches!(
            a.add_token(token("b", Role::Read)),
            Err(Error::AlreadyExists(_))
        ));
    }
}
