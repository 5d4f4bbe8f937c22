//! The library's typed error. Every failure a user, a peer or the disk can cause ends up here;
//! `api::status` maps it to the gRPC status a client can act on, in one place.

use serde::{Deserialize, Serialize};

/// What went wrong, in terms a caller can act on.
///
/// It is serializable because the state machine returns it as the outcome of a rejected command
/// (a failed compare-and-set, an unknown feature), and a leader sends it back to the follower that
/// forwarded the write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum Error {
    /// The request itself is malformed (bad semver, bad name, bad flag definition).
    #[error("{0}")]
    InvalidArgument(String),
    /// The named object does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The object the request would create exists already.
    #[error("{0}")]
    AlreadyExists(String),
    /// A compare-and-set failed: the object changed since the caller read it.
    #[error("revision mismatch on {object}: expected revision {expected}, current revision {current}")]
    RevisionMismatch {
        /// The object compared.
        object: String,
        /// What the caller expected.
        expected: u64,
        /// What the object has now (0: it does not exist).
        current: u64,
    },
    /// The cluster's state does not allow the request now.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A request or a value is over a size limit.
    #[error("{0}")]
    TooLarge(String),
    /// No leader, or a peer did not answer in time: safe to retry.
    #[error("{0}")]
    Unavailable(String),
    /// The request's deadline passed before it completed; it may or may not have been applied.
    #[error("{0}")]
    Timeout(String),
    /// A bug or a broken disk: not the caller's fault.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// A short name of the kind of error, for metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::InvalidArgument(_) => "invalid_argument",
            Error::NotFound(_) => "not_found",
            Error::AlreadyExists(_) => "already_exists",
            Error::RevisionMismatch { .. } => "revision_mismatch",
            Error::FailedPrecondition(_) => "failed_precondition",
            Error::TooLarge(_) => "too_large",
            Error::Unavailable(_) => "unavailable",
            Error::Timeout(_) => "timeout",
            Error::Internal(_) => "internal",
        }
    }

    /// Shorthand for [`Error::InvalidArgument`].
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidArgument(msg.into())
    }

    /// Shorthand for [`Error::Unavailable`].
    pub fn unavailable(msg: impl Into<String>) -> Self {
        Error::Unavailable(msg.into())
    }

    /// Shorthand for [`Error::Internal`].
    pub fn internal(msg: impl std::fmt::Display) -> Self {
        Error::Internal(msg.to_string())
    }
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
