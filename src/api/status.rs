//! The one place library errors become gRPC statuses.

use tonic::{Code, Status};

use crate::error::Error;

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        let code = match &e {
            Error::InvalidArgument(_) => Code::InvalidArgument,
            Error::NotFound(_) => Code::NotFound,
            Error::AlreadyExists(_) => Code::AlreadyExists,
            Error::RevisionMismatch { .. } | Error::FailedPrecondition(_) => Code::FailedPrecondition,
            Error::TooLarge(_) => Code::ResourceExhausted,
            Error::Unavailable(_) => Code::Unavailable,
            Error::Timeout(_) => Code::DeadlineExceeded,
            Error::Internal(_) => Code::Internal,
        };
        Status::new(code, e.to_string())
    }
}

/// Turns a status received from a node back into a library error (for the client side).
pub fn from_status(s: &Status) -> Error {
    let msg = s.message().to_string();
    match s.code() {
        Code::InvalidArgument => Error::InvalidArgument(msg),
        // tonic answers OutOfRange to a message over the size limit.
        Code::OutOfRange => Error::TooLarge(msg),
        Code::NotFound => Error::NotFound(msg),
        Code::AlreadyExists => Error::AlreadyExists(msg),
        Code::FailedPrecondition | Code::Aborted => Error::FailedPrecondition(msg),
        Code::ResourceExhausted => Error::TooLarge(msg),
        Code::DeadlineExceeded => Error::Timeout(msg),
        Code::Unavailable | Code::Cancelled | Code::Unknown => {
            Error::Unavailable(if msg.is_empty() { s.code().to_string() } else { msg })
        }
        _ => Error::Internal(msg),
    }
}
