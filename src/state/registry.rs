//! The live service registry: leases (TTL-bound sessions kept alive by their holders) and the
//! instances registered under them (service, semver version, labels). When a lease is revoked,
//! every instance under it disappears, like a ZooKeeper ephemeral node.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::state::catalog::validate_name;

/// Shortest lease TTL accepted.
pub const MIN_TTL_MS: u64 = 1_000;
/// Longest lease TTL accepted.
pub const MAX_TTL_MS: u64 = 10 * 60 * 1_000;
/// Most labels on one instance.
pub const MAX_LABELS: usize = 32;
/// Most instances registered at once (a registry watch of every instance stays within a
/// client's message limit).
pub const MAX_INSTANCES: usize = 250_000;
/// Longest label key or value.
pub const MAX_LABEL_LEN: usize = 128;

/// A lease: the instances under it live as long as its holder keeps it alive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// Cluster-unique id: random, chosen by the node that proposed the grant, so nobody can
    /// guess another holder's.
    pub id: u64,
    /// The identity that granted it (empty while authentication is off): only it (or an admin)
    /// may register under it, keep it alive or revoke it.
    pub owner: String,
    /// Time to live without a keepalive.
    pub ttl_ms: u64,
    /// Revision that granted it.
    pub granted_revision: u64,
    /// Instances registered under it.
    pub instances: BTreeSet<String>,
}

/// What an instance registers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct InstanceSpec {
    /// Unique instance id, e.g. `cart-7f9c`.
    pub id: String,
    /// The service it runs.
    pub service: String,
    /// Its version (semver).
    pub version: String,
    /// Labels such as `zone=eu-1`, `canary=true`.
    pub labels: BTreeMap<String, String>,
}

impl InstanceSpec {
    /// Checks the id, service, version and labels.
    pub fn validate(&self) -> Result<semver::Version> {
        validate_name("instance", &self.id)?;
        validate_name("service", &self.service)?;
        let version = semver::Version::parse(&self.version).map_err(|e| {
            Error::invalid(format!(
                "instance {:?}: version {:?} is not semver (e.g. 2.3.1): {e}",
                self.id, self.version
            ))
        })?;
        if self.labels.len() > MAX_LABELS {
            return Err(Error::ResourceExhausted(format!(
                "instance {:?} has {} labels; the limit is {MAX_LABELS}",
                self.id,
                self.labels.len()
            )));
        }
        for (k, v) in &self.labels {
            validate_name("label", k)?;
            if v.len() > MAX_LABEL_LEN {
                return Err(Error::ResourceExhausted(format!(
                    "label {k:?} value is {} bytes; the limit is {MAX_LABEL_LEN}",
                    v.len()
                )));
            }
        }
        Ok(version)
    }

    /// Parses `key=value`.
    pub fn parse_label(text: &str) -> Result<(String, String)> {
        let (k, v) = text
            .split_once('=')
            .ok_or_else(|| Error::invalid(format!("label {text:?} is not KEY=VALUE")))?;
        Ok((k.to_string(), v.to_string()))
    }
}

/// A registered instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// What it registered.
    pub spec: InstanceSpec,
    /// Its parsed version.
    pub version: semver::Version,
    /// The lease it lives under.
    pub lease: u64,
    /// Revision of its last registration.
    pub revision: u64,
}

/// Leases and instances, with an index by service.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Registry {
    leases: BTreeMap<u64, Lease>,
    instances: BTreeMap<String, Instance>,
    by_service: BTreeMap<String, BTreeSet<String>>,
}

impl Registry {
    /// Grants lease `id` (random, chosen by the proposer) to `owner`.
    pub fn grant(&mut self, id: u64, ttl_ms: u64, owner: &str, revision: u64) -> Result<Lease> {
        if !(MIN_TTL_MS..=MAX_TTL_MS).contains(&ttl_ms) {
            return Err(Error::invalid(format!(
                "lease TTL {ttl_ms} ms is out of range ({MIN_TTL_MS} to {MAX_TTL_MS} ms)"
            )));
        }
        if id == 0 {
            return Err(Error::invalid("lease id 0 is not valid"));
        }
        if self.leases.contains_key(&id) {
            return Err(Error::AlreadyExists(format!("lease {id} exists already")));
        }
        if self.leases.len() >= MAX_INSTANCES {
            return Err(Error::ResourceExhausted(format!(
                "{MAX_INSTANCES} leases are held; the registry holds no more"
            )));
        }
        let lease = Lease {
            id,
            owner: owner.to_string(),
            ttl_ms,
            granted_revision: revision,
            instances: BTreeSet::new(),
        };
        self.leases.insert(lease.id, lease.clone());
        Ok(lease)
    }

    /// The lease `id`, if `scope` (an owner, or `None` for anyone) may act on it.
    pub fn owned_lease(&self, id: u64, scope: Option<&str>) -> Result<&Lease> {
        let lease = self
            .leases
            .get(&id)
            .ok_or_else(|| Error::NotFound(format!("lease {id} does not exist (expired or revoked?)")))?;
        match scope {
            Some(owner) if owner != lease.owner => Err(Error::PermissionDenied(format!(
                "lease {id} belongs to another identity: only its owner or an admin may use it"
            ))),
            _ => Ok(lease),
        }
    }

    /// Revokes a lease and removes its instances, which it returns.
    pub fn revoke(&mut self, id: u64, scope: Option<&str>) -> Result<Vec<Instance>> {
        self.owned_lease(id, scope)?;
        let lease = self
            .leases
            .remove(&id)
            .ok_or_else(|| Error::NotFound(format!("lease {id} does not exist (expired or revoked?)")))?;
        Ok(lease
            .instances
            .iter()
            .filter_map(|i| self.remove_instance(i))
            .collect())
    }

    /// Registers (or re-registers under the same lease, e.g. after an in-place upgrade) an
    /// instance.
    pub fn register(
        &mut self,
        spec: InstanceSpec,
        lease: u64,
        scope: Option<&str>,
        revision: u64,
    ) -> Result<Instance> {
        let version = spec.validate()?;
        self.owned_lease(lease, scope)?;
        if let Some(existing) = self.instances.get(&spec.id) {
            if existing.lease != lease {
                return Err(Error::AlreadyExists(format!(
                    "instance {:?} is already registered under another lease",
                    spec.id
                )));
            }
            self.remove_instance(&spec.id.clone());
        } else if self.instances.len() >= MAX_INSTANCES {
            return Err(Error::ResourceExhausted(format!(
                "{MAX_INSTANCES} instances are registered; the registry holds no more"
            )));
        }
        let instance = Instance {
            spec,
            version,
            lease,
            revision,
        };
        let id = instance.spec.id.clone();
        self.by_service
            .entry(instance.spec.service.clone())
            .or_default()
            .insert(id.clone());
        if let Some(l) = self.leases.get_mut(&lease) {
            l.instances.insert(id.clone());
        }
        self.instances.insert(id, instance.clone());
        Ok(instance)
    }

    /// Deregisters an instance (under a lease `scope` owns, unless `None`).
    pub fn deregister(&mut self, id: &str, scope: Option<&str>) -> Result<Instance> {
        if let Some(owner) = scope {
            let lease = self
                .instances
                .get(id)
                .ok_or_else(|| Error::NotFound(format!("instance {id:?} is not registered")))?
                .lease;
            if self.leases.get(&lease).is_some_and(|l| l.owner != owner) {
                return Err(Error::PermissionDenied(format!(
                    "instance {id:?} is under a lease of another identity: only its owner or an admin may deregister it"
                )));
            }
        }
        let instance = self
            .remove_instance(id)
            .ok_or_else(|| Error::NotFound(format!("instance {id:?} is not registered")))?;
        if let Some(l) = self.leases.get_mut(&instance.lease) {
            l.instances.remove(id);
        }
        Ok(instance)
    }

    fn remove_instance(&mut self, id: &str) -> Option<Instance> {
        let instance = self.instances.remove(id)?;
        if let Some(set) = self.by_service.get_mut(&instance.spec.service) {
            set.remove(id);
            if set.is_empty() {
                self.by_service.remove(&instance.spec.service);
            }
        }
        Some(instance)
    }

    /// A lease.
    pub fn lease(&self, id: u64) -> Option<&Lease> {
        self.leases.get(&id)
    }

    /// Every lease.
    pub fn leases(&self) -> impl Iterator<Item = &Lease> {
        self.leases.values()
    }

    /// An instance.
    pub fn instance(&self, id: &str) -> Option<&Instance> {
        self.instances.get(id)
    }

    /// Every instance, by id.
    pub fn instances(&self) -> impl Iterator<Item = &Instance> {
        self.instances.values()
    }

    /// The live instances of a service, by id.
    pub fn instances_of<'a>(&'a self, service: &str) -> impl Iterator<Item = &'a Instance> + 'a {
        self.by_service
            .get(service)
            .into_iter()
            .flatten()
            .filter_map(move |id| self.instances.get(id))
    }
}
