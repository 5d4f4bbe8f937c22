//! What a subscriber watches: named features, the features whose requirements involve given
//! services, and (optionally) the registry instances of those services or of all services.

use std::collections::BTreeSet;

use crate::error::{Error, Result};
use crate::state::catalog::validate_name;
use crate::watch::hub::Published;

/// Most names in one filter.
pub const MAX_FILTER_NAMES: usize = 1024;

/// A subscriber's filter. Empty feature and service sets mean "every feature".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only these features.
    pub features: BTreeSet<String>,
    /// Only features whose requirements involve one of these services (and, with `registry`,
    /// only these services' instances).
    pub services: BTreeSet<String>,
    /// Also deliver registry events (instances up and gone).
    pub registry: bool,
}

impl Filter {
    /// Checks every name.
    pub fn validate(&self) -> Result<()> {
        if self.features.len() + self.services.len() > MAX_FILTER_NAMES {
            return Err(Error::ResourceExhausted(format!(
                "a filter names at most {MAX_FILTER_NAMES} features and services"
            )));
        }
        for f in &self.features {
            validate_name("feature", f)?;
        }
        for s in &self.services {
            validate_name("service", s)?;
        }
        Ok(())
    }

    fn all_features(&self) -> bool {
        self.features.is_empty() && self.services.is_empty()
    }

    /// Whether a feature (requiring `services`) passes the filter.
    pub fn feature_matches(&self, name: &str, services: &[String]) -> bool {
        self.all_features()
            || self.features.contains(name)
            || services.iter().any(|s| self.services.contains(s))
    }

    /// Whether an instance of `service` passes the filter.
    pub fn instance_matches(&self, service: &str) -> bool {
        self.registry && (self.services.is_empty() || self.services.contains(service))
    }

    /// Whether a published event passes the filter.
    pub fn matches(&self, p: &Published) -> bool {
        match (p.event.feature(), p.event.service()) {
            (Some(feature), _) => self.feature_matches(feature, &p.services),
            (None, Some(service)) => self.instance_matches(service),
            (None, None) => false,
        }
    }
}
