//! The permission each RPC needs (one table, read top to bottom) and which roles hold it.

use crate::state::auth::Role;

/// What a call needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Nothing: health checks, for orchestrators and load balancers.
    Open,
    /// Any authenticated caller (who-am-i, reflection).
    Authenticated,
    /// What a service instance reads to follow the cluster: watch, toggles, features, flagd,
    /// the leader and status.
    Follow,
    /// Every other read: history, readiness, rollout status, instances, pending activations,
    /// metrics.
    Read,
    /// Leases and instances (scoped to the caller's service and leases unless admin).
    Register,
    /// Catalog and toggle changes.
    Release,
    /// Membership and authentication.
    Admin,
    /// The internal service: only other members, by their certificate.
    Peer,
}

impl Permission {
    /// Whether `role` holds this permission.
    pub fn granted_to(self, role: &Role) -> bool {
        use Permission::*;
        match role {
            Role::Admin => self != Peer,
            Role::Release => matches!(self, Release | Read | Follow | Authenticated | Open),
            Role::Service(_) => matches!(self, Register | Follow | Authenticated | Open),
            Role::Read => matches!(self, Read | Follow | Authenticated | Open),
        }
    }

    /// The name used in errors.
    pub fn name(self) -> &'static str {
        match self {
            Permission::Open => "open",
            Permission::Authenticated => "authenticated",
            Permission::Follow => "follow",
            Permission::Read => "read",
            Permission::Register => "register",
            Permission::Release => "release",
            Permission::Admin => "admin",
            Permission::Peer => "peer",
        }
    }

    /// The permission the gRPC method at `path` (`/package.Service/Method`) needs. A path this
    /// table does not know needs admin.
    pub fn for_method(path: &str) -> Permission {
        let (service, method) = path.trim_start_matches('/').split_once('/').unwrap_or((path, ""));
        match (service, method) {
            ("grpc.health.v1.Health", _) => Permission::Open,
            ("grpc.reflection.v1.ServerReflection" | "grpc.reflection.v1alpha.ServerReflection", _) => {
                Permission::Authenticated
            }
            ("switchyard.raft.v1.Raft", _) => Permission::Peer,
            ("switchyard.v1.Auth", "WhoAmI") => Permission::Authenticated,
            ("switchyard.v1.Auth", _) => Permission::Admin,
            ("switchyard.v1.Cluster", "Status" | "LocalStatus" | "Leader" | "Members") => Permission::Follow,
            ("switchyard.v1.Cluster", _) => Permission::Admin,
            ("switchyard.v1.Catalog", "GetFeature" | "ListFeatures") => Permission::Follow,
            ("switchyard.v1.Catalog", "PutFeature" | "DeleteFeature") => Permission::Release,
            ("switchyard.v1.Toggles", "GetToggle" | "ListToggles") => Permission::Follow,
            ("switchyard.v1.Toggles", "ListPending" | "Readiness" | "History" | "RolloutStatus") => {
                Permission::Read
            }
            ("switchyard.v1.Toggles", "SetToggle" | "SetToggleState" | "Rollback" | "CancelActivation") => {
                Permission::Release
            }
            ("switchyard.v1.Registry", "ListInstances") => Permission::Read,
            (
                "switchyard.v1.Registry",
                "GrantLease" | "RevokeLease" | "KeepAlive" | "Register" | "Deregister",
            ) => Permission::Register,
            ("switchyard.v1.Watch", "Watch") => Permission::Follow,
            (
                "flagd.sync.v1.FlagSyncService"
                | "flagd.evaluation.v1.Service"
                | "flagd.evaluation.v2.Service",
                _,
            ) => Permission::Follow,
            _ => Permission::Admin,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_role_is_a_peer() {
        for role in [Role::Admin, Role::Release, Role::Read, Role::Service("a".into())] {
            assert!(!Permission::Peer.granted_to(&role), "{role}");
        }
    }

    #[test]
    fn unknown_methods_need_admin() {
        assert_eq!(
            Permission::for_method("/switchyard.v1.Catalog/Nope"),
            Permission::Admin
        );
        assert_eq!(Permission::for_method("/x.Y/Z"), Permission::Admin);
        assert_eq!(Permission::for_method("garbage"), Permission::Admin);
        assert_eq!(
            Permission::for_method("/switchyard.raft.v1.Raft/Vote"),
            Permission::Peer
        );
    }
}
