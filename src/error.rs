//! The library's typed error, and the one place it becomes a gRPC status and back.
//!
//! Each variant stands for exactly one gRPC code ([`Error::code`]), so an error keeps its code
//! across the wire: a node answers with [`Error::into_status`], a client rebuilds the same
//! variant with [`Error::from_status`] (the status's details carry the error itself, so even
//! structured ones such as [`Error::RevisionMismatch`] come back whole). Callers decide on the
//! variant, never on message text.

use serde::{Deserialize, Serialize};
use tonic::{Code, Status};

/// What went wrong, in terms a caller can act on.
///
/// It is serializable because the state machine returns it as the outcome of a rejected command
/// (a failed compare-and-set, an unknown feature), and a leader sends it back to the follower that
/// forwarded the write. New variants go at the end: stored answers refer to variants by position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum Error {
    /// The request itself is malformed (bad semver, bad name, bad flag definition).
    /// `INVALID_ARGUMENT`.
    #[error("{0}")]
    InvalidArgument(String),
    /// The named object does not exist. `NOT_FOUND`.
    #[error("{0}")]
    NotFound(String),
    /// The object the request would create exists already. `ALREADY_EXISTS`.
    #[error("{0}")]
    AlreadyExists(String),
    /// A compare-and-set failed: the object changed since the caller read it.
    /// `FAILED_PRECONDITION`, with the revisions in the status details.
    #[error("revision mismatch on {object}: expected revision {expected}, current revision {current}")]
    RevisionMismatch {
        /// The object compared.
        object: String,
        /// What the caller expected.
        expected: u64,
        /// What the object has now (0: it does not exist).
        current: u64,
    },
    /// The cluster's state does not allow the request now. `FAILED_PRECONDITION`.
    #[error("{0}")]
    FailedPrecondition(String),
    /// Over a limit: a request or value too large, too many watches, a subscriber too far
    /// behind. `RESOURCE_EXHAUSTED`.
    #[error("{0}")]
    ResourceExhausted(String),
    /// No leader, a node shutting down or cut off, a peer that did not answer: safe to retry,
    /// on another node. `UNAVAILABLE`.
    #[error("{0}")]
    Unavailable(String),
    /// The request's deadline passed before it completed; it may or may not have been applied.
    /// `DEADLINE_EXCEEDED`.
    #[error("{0}")]
    Timeout(String),
    /// A bug or a broken disk: not the caller's fault. `INTERNAL`.
    #[error("internal error: {0}")]
    Internal(String),
    /// Asked for something past the valid range, e.g. a watch from a revision the cluster has
    /// not reached. `OUT_OF_RANGE`.
    #[error("{0}")]
    OutOfRange(String),
    /// The call was cancelled (by the caller, or by a connection that went away). `CANCELLED`.
    #[error("{0}")]
    Cancelled(String),
    /// No credentials, or credentials that are not valid. `UNAUTHENTICATED`.
    #[error("{0}")]
    Unauthenticated(String),
    /// Valid credentials without the permission the call needs. `PERMISSION_DENIED`.
    #[error("{0}")]
    PermissionDenied(String),
    /// The server does not offer the call. `UNIMPLEMENTED`.
    #[error("{0}")]
    Unimplemented(String),
    /// Any other status a server answered (`UNKNOWN`, `ABORTED`, `DATA_LOSS`), with its code.
    #[error("{message}")]
    Other {
        /// The gRPC code, as a number.
        code: i32,
        /// What the server said.
        message: String,
    },
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
            Error::ResourceExhausted(_) => "resource_exhausted",
            Error::Unavailable(_) => "unavailable",
            Error::Timeout(_) => "timeout",
            Error::Internal(_) => "internal",
            Error::OutOfRange(_) => "out_of_range",
            Error::Cancelled(_) => "cancelled",
            Error::Unauthenticated(_) => "unauthenticated",
            Error::PermissionDenied(_) => "permission_denied",
            Error::Unimplemented(_) => "unimplemented",
            Error::Other { .. } => "other",
        }
    }

    /// The gRPC code this error travels as.
    pub fn code(&self) -> Code {
        match self {
            Error::InvalidArgument(_) => Code::InvalidArgument,
            Error::NotFound(_) => Code::NotFound,
            Error::AlreadyExists(_) => Code::AlreadyExists,
            Error::RevisionMismatch { .. } | Error::FailedPrecondition(_) => Code::FailedPrecondition,
            Error::ResourceExhausted(_) => Code::ResourceExhausted,
            Error::Unavailable(_) => Code::Unavailable,
            Error::Timeout(_) => Code::DeadlineExceeded,
            Error::Internal(_) => Code::Internal,
            Error::OutOfRange(_) => Code::OutOfRange,
            Error::Cancelled(_) => Code::Cancelled,
            Error::Unauthenticated(_) => Code::Unauthenticated,
            Error::PermissionDenied(_) => Code::PermissionDenied,
            Error::Unimplemented(_) => Code::Unimplemented,
            Error::Other { code, .. } => Code::from_i32(*code),
        }
    }

    /// Whether a call that failed with this error may be tried again, on the same or another
    /// node, and succeed: the node was unreachable, had no leader, or ran out of time. (A write
    /// is safe to retry: it carries a request id.) `UNKNOWN` counts: tonic answers it when a
    /// connection breaks in the middle of a call.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Unavailable(_) | Error::Timeout(_) | Error::Cancelled(_) => true,
            // What tonic answers when a connection breaks mid-call.
            Error::Other { code, .. } => *code == Code::Unknown as i32,
            _ => false,
        }
    }

    /// The status a node answers with: this error's code and message, and the error itself in
    /// metadata so a client rebuilds it exactly.
    pub fn into_status(self) -> Status {
        let mut status = Status::new(self.code(), self.to_string());
        if let Ok(json) = serde_json::to_vec(&self) {
            status
                .metadata_mut()
                .insert_bin(ERROR_METADATA, tonic::metadata::MetadataValue::from_bytes(&json));
        }
        status
    }

    /// The error a status stands for: the one it carries when a Switchyard node sent it, else
    /// the variant of its code.
    pub fn from_status(s: &Status) -> Error {
        let carried = s
            .metadata()
            .get_bin(ERROR_METADATA)
            .and_then(|v| v.to_bytes().ok())
            .and_then(|b| serde_json::from_slice::<Error>(&b).ok());
        if let Some(e) = carried {
            if e.code() == s.code() {
                return e;
            }
        }
        let msg = if s.message().is_empty() {
            s.code().description().to_string()
        } else {
            s.message().to_string()
        };
        match s.code() {
            Code::InvalidArgument => Error::InvalidArgument(msg),
            Code::NotFound => Error::NotFound(msg),
            Code::AlreadyExists => Error::AlreadyExists(msg),
            Code::FailedPrecondition => Error::FailedPrecondition(msg),
            Code::ResourceExhausted => Error::ResourceExhausted(msg),
            Code::Unavailable => Error::Unavailable(msg),
            Code::DeadlineExceeded => Error::Timeout(msg),
            Code::Internal => Error::Internal(msg),
            Code::OutOfRange => Error::OutOfRange(msg),
            Code::Cancelled => Error::Cancelled(msg),
            Code::Unauthenticated => Error::Unauthenticated(msg),
            Code::PermissionDenied => Error::PermissionDenied(msg),
            Code::Unimplemented => Error::Unimplemented(msg),
            code => Error::Other {
                code: code as i32,
                message: msg,
            },
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

/// The metadata entry carrying the error in a status.
const ERROR_METADATA: &str = "switchyard-error-bin";

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        e.into_status()
    }
}

impl From<Status> for Error {
    fn from(s: Status) -> Self {
        Error::from_status(&s)
    }
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    fn every_variant() -> Vec<Error> {
        let m = || "why".to_string();
        vec![
            Error::InvalidArgument(m()),
            Error::NotFound(m()),
            Error::AlreadyExists(m()),
            Error::RevisionMismatch {
                object: "feature checkout".into(),
                expected: 3,
                current: 7,
            },
            Error::FailedPrecondition(m()),
            Error::ResourceExhausted(m()),
            Error::Unavailable(m()),
            Error::Timeout(m()),
            Error::Internal(m()),
            Error::OutOfRange(m()),
            Error::Cancelled(m()),
            Error::Unauthenticated(m()),
            Error::PermissionDenied(m()),
            Error::Unimplemented(m()),
            Error::Other {
                code: Code::Aborted as i32,
                message: m(),
            },
        ]
    }

    #[test]
    fn every_error_comes_back_from_the_wire_as_it_left() {
        for e in every_variant() {
            let status = e.clone().into_status();
            assert_eq!(status.code(), e.code());
            assert_eq!(Error::from_status(&status), e);
        }
    }

    #[test]
    fn every_code_from_any_server_keeps_its_code() {
        for code in 1..=16 {
            let status = Status::new(Code::from_i32(code), "from elsewhere");
            let e = Error::from_status(&status);
            assert_eq!(e.code(), status.code(), "{e:?}");
        }
        // A status without a message still says something.
        assert!(!Error::from_status(&Status::new(Code::Unavailable, ""))
            .to_string()
            .is_empty());
    }

    #[test]
    fn stored_answers_keep_their_variant() {
        // The state machine stores rejections (bincode, by variant position): the early
        // variants must keep their places.
        let stored = crate::raft::encode(&Error::RevisionMismatch {
            object: "x".into(),
            expected: 1,
            current: 2,
        })
        .expect("encode");
        assert_eq!(&stored[..4], &3u32.to_le_bytes());
        let stored = crate::raft::encode(&Error::ResourceExhausted("big".into())).expect("encode");
        assert_eq!(&stored[..4], &5u32.to_le_bytes());
    }
}
