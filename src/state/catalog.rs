//! The feature catalog: a feature's name, description, owner and its requirements
//! `(service, semver requirement)`, and the input checks for them.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Longest feature or service name accepted.
pub const MAX_NAME_LEN: usize = 128;
/// Longest description or owner accepted.
pub const MAX_TEXT_LEN: usize = 4096;
/// Most requirements one feature may have.
pub const MAX_REQUIREMENTS: usize = 64;

/// One requirement: every live instance of `service` must run a version matching `version_req`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requirement {
    /// The service name.
    pub service: String,
    /// A semver requirement as written by the user (checked to parse).
    pub version_req: String,
}

impl Requirement {
    /// Parses `service<op>version` as written on the command line, e.g. `cart>=2.3.0` or
    /// `payment^1.8`: the service name runs until the first operator character.
    pub fn parse_cli(text: &str) -> Result<Self> {
        let text = text.trim();
        let split = text
            .find(['>', '<', '=', '^', '~', '*', ' ', '@'])
            .ok_or_else(|| {
                Error::invalid(format!(
                    "requirement {text:?} has no version: write it as SERVICE>=VERSION, e.g. cart>=2.3.0"
                ))
            })?;
        let service = text[..split].to_string();
        let version_req = text[split..].trim_start_matches(['@', ' ']).to_string();
        let req = Requirement { service, version_req };
        req.validate()?;
        Ok(req)
    }

    /// Checks the service name and that the requirement parses as semver.
    pub fn validate(&self) -> Result<semver::VersionReq> {
        validate_name("service", &self.service)?;
        semver::VersionReq::parse(&self.version_req).map_err(|e| {
            Error::invalid(format!(
                "requirement for service {:?}: {:?} is not a semver requirement: {e}",
                self.service, self.version_req
            ))
        })
    }
}

impl std::fmt::Display for Requirement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", self.service, self.version_req)
    }
}

/// What a client writes for a feature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct FeatureSpec {
    /// Unique name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Owning team or person.
    pub owner: String,
    /// The services and versions that must carry the feature's code.
    pub requirements: Vec<Requirement>,
}

impl FeatureSpec {
    /// Checks every field; the first problem is returned with the field it concerns.
    pub fn validate(&self) -> Result<()> {
        validate_name("feature", &self.name)?;
        if self.description.len() > MAX_TEXT_LEN {
            return Err(Error::ResourceExhausted(format!(
                "description is {} bytes; the limit is {MAX_TEXT_LEN}",
                self.description.len()
            )));
        }
        if self.owner.len() > MAX_TEXT_LEN {
            return Err(Error::ResourceExhausted(format!(
                "owner is {} bytes; the limit is {MAX_TEXT_LEN}",
                self.owner.len()
            )));
        }
        if self.requirements.len() > MAX_REQUIREMENTS {
            return Err(Error::ResourceExhausted(format!(
                "{} requirements; the limit is {MAX_REQUIREMENTS}",
                self.requirements.len()
            )));
        }
        let mut seen = std::collections::BTreeSet::new();
        for r in &self.requirements {
            r.validate()?;
            if !seen.insert(r.service.as_str()) {
                return Err(Error::invalid(format!(
                    "service {:?} is required twice; combine the requirements into one (e.g. \">=1.2, <2\")",
                    r.service
                )));
            }
        }
        Ok(())
    }
}

/// A catalog entry as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Feature {
    /// What the client wrote.
    pub spec: FeatureSpec,
    /// Revision of the last change.
    pub revision: u64,
    /// Revision that created it.
    pub created_revision: u64,
}

/// Checks a feature or service name: 1 to 128 characters of letters, digits, `.`, `_`, `-`,
/// starting with a letter or digit.
pub fn validate_name(what: &str, name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::invalid(format!("{what} name is empty")));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(Error::invalid(format!(
            "{what} name is {} characters; the limit is {MAX_NAME_LEN}",
            name.len()
        )));
    }
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if !name.chars().all(ok_char) || !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(Error::invalid(format!(
            "{what} name {name:?} is not allowed: use letters, digits, '.', '_' and '-', starting with a letter or digit"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cli_requirements() {
        let r = Requirement::parse_cli("cart>=2.3.0").unwrap();
        assert_eq!(r.service, "cart");
        assert_eq!(r.version_req, ">=2.3.0");
        let r = Requirement::parse_cli("payment^1.8").unwrap();
        assert_eq!(r.version_req, "^1.8");
        assert!(Requirement::parse_cli("cart").is_err());
        assert!(Requirement::parse_cli("cart>=banana").is_err());
        assert!(Requirement::parse_cli(">=1.0").is_err());
    }

    #[test]
    fn rejects_bad_names() {
        assert!(validate_name("feature", "").is_err());
        assert!(validate_name("feature", &"x".repeat(129)).is_err());
        assert!(validate_name("feature", "has space").is_err());
        assert!(validate_name("feature", "-leading").is_err());
        assert!(validate_name("feature", "checkout.v2_new-flow").is_ok());
    }

    #[test]
    fn rejects_duplicate_services() {
        let spec = FeatureSpec {
            name: "f".into(),
            requirements: vec![
                Requirement::parse_cli("cart>=1").unwrap(),
                Requirement::parse_cli("cart<3").unwrap(),
            ],
            ..Default::default()
        };
        assert!(matches!(spec.validate(), Err(Error::InvalidArgument(_))));
    }
}
