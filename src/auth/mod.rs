//! Who may do what. Authentication is off until an admin enables it (as etcd's is); from then
//! on every call names its caller, by a bearer token or a client certificate mapped to a role,
//! and each RPC needs one [`Permission`].
//!
//! - [`permission`]: the permission each RPC needs and the roles (`state::auth::Role`) that
//!   hold it;
//! - [`token`]: the token format (an opaque random secret; only its SHA-256 is stored);
//! - [`limits`]: per-caller request rate and open watches.
//!
//! The replicated part (tokens, certificate mappings, on/off) is `state::auth`; the layer in
//! front of every service that authenticates a call, checks its permission and limits, and hands
//! the [`Caller`] to the service is `api::guard`. This module depends on neither.

pub(crate) mod limits;
pub(crate) mod permission;
pub(crate) mod token;

pub(crate) use crate::state::auth::Role;
pub(crate) use permission::Permission;

/// Who made a call, as the node established it. Services read it from the request's
/// extensions ([`Caller::of`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// `token:<name>`, `cert:<identity>`, or empty while authentication is off.
    pub identity: String,
    /// What it may do (admin while authentication is off).
    pub role: Role,
}

impl Caller {
    /// The caller while authentication is off: anyone, with every permission but a peer's.
    pub fn anonymous() -> Caller {
        Caller {
            identity: String::new(),
            role: Role::Admin,
        }
    }

    /// The caller the guard attached to `request` (anonymous if none was: the service runs
    /// without the guard, as in unit tests).
    pub fn of<T>(request: &tonic::Request<T>) -> Caller {
        request
            .extensions()
            .get::<Caller>()
            .cloned()
            .unwrap_or_else(Caller::anonymous)
    }

    /// Whether authentication established this caller (false while it is off).
    pub fn is_authenticated(&self) -> bool {
        !self.identity.is_empty()
    }

    /// Leases and instances this caller may act on: `None` for any (an admin, or anyone while
    /// authentication is off), else only those it owns.
    pub fn owner_scope(&self) -> Option<String> {
        match self.role {
            Role::Admin => None,
            _ if !self.is_authenticated() => None,
            _ => Some(self.identity.clone()),
        }
    }

    /// The actor history records for a change: the identity, with the text the client gave
    /// (`--actor`) added after it, never in its place.
    pub fn actor(&self, given: &str) -> String {
        match (self.is_authenticated(), given.is_empty()) {
            (false, _) => given.to_string(),
            (true, true) => self.identity.clone(),
            (true, false) => format!("{} (as {given})", self.identity),
        }
    }

    /// The session id a client's `client_id` becomes: scoped to the identity, so one caller can
    /// neither replay nor shadow another's request ids.
    pub fn session(&self, client_id: &str) -> String {
        if self.is_authenticated() && !client_id.is_empty() {
            format!("{}/{client_id}", self.identity)
        } else {
            client_id.to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(role: Role) -> Caller {
        Caller {
            identity: "token:ci".into(),
            role,
        }
    }

    #[test]
    fn the_actor_is_the_identity_with_the_given_text_after_it() {
        assert_eq!(token(Role::Release).actor("alice"), "token:ci (as alice)");
        assert_eq!(token(Role::Release).actor(""), "token:ci");
        assert_eq!(Caller::anonymous().actor("alice"), "alice");
    }

    #[test]
    fn sessions_belong_to_identities() {
        assert_eq!(token(Role::Read).session("s1"), "token:ci/s1");
        assert_ne!(
            token(Role::Read).session("s1"),
            Caller {
                identity: "token:other".into(),
                role: Role::Read
            }
            .session("s1")
        );
        assert_eq!(Caller::anonymous().session("s1"), "s1");
    }

    #[test]
    fn only_admins_act_on_others_leases() {
        assert_eq!(token(Role::Admin).owner_scope(), None);
        assert_eq!(Caller::anonymous().owner_scope(), None);
        assert_eq!(
            token(Role::Service("cart".into())).owner_scope(),
            Some("token:ci".into())
        );
    }
}
