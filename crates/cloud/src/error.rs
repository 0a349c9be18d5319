//! The errors the built-in cloud answers with, each mapped to EC2's error
//! code and HTTP status in one exhaustive `match`, and the errors of
//! starting the server.
//!
//! Not here: the error document itself (`endstate_wire::ErrorResponse`
//! writes it) and the protocol's own parse errors (`WireError`, wrapped).

use axum::http::StatusCode;
use endstate_wire::WireError;

/// An error an EC2 API call answers with. The `Display` text is the message
/// the client sees, except for [`ApiError::Internal`], whose text is logged
/// and replaced by EC2's generic message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// The request does not follow the protocol (missing, unknown or
    /// unreadable parameters, an unknown action).
    #[error(transparent)]
    Wire(#[from] WireError),
    /// A parameter's value is not acceptable (EC2's `InvalidParameterValue`).
    #[error("{0}")]
    InvalidParameterValue(String),
    /// Parameters that cannot be given together.
    #[error("{0}")]
    InvalidParameterCombination(String),
    /// An instance id that is well formed but names no (visible) instance.
    #[error("{0}")]
    InstanceNotFound(String),
    /// An instance id that is not of the form `i-` and 8 or 17 hex digits.
    #[error("Invalid id: \"{0}\"")]
    InstanceIdMalformed(String),
    /// A resource id of a kind this cloud does not hold.
    #[error("The ID '{0}' is not valid")]
    InvalidId(String),
    /// An image id that names no image.
    #[error("The image id '[{0}]' does not exist")]
    ImageNotFound(String),
    /// An image that exists but is not `available` (pending, or failed).
    #[error("The image id '[{0}]' is not available: its state is {1}")]
    ImageUnavailable(String, String),
    /// An image id not of the form `ami-` and 8 or 17 hex digits.
    #[error("Invalid id: \"{0}\" (expecting \"ami-...\")")]
    ImageIdMalformed(String),
    /// A snapshot id that names no snapshot (EC2's message).
    #[error("The snapshot '{0}' does not exist.")]
    SnapshotNotFound(String),
    /// A snapshot id not of the form `snap-` and 8 or 17 hex digits.
    #[error("Invalid id: \"{0}\" (expecting \"snap-...\")")]
    SnapshotIdMalformed(String),
    /// The same ClientToken with different parameters.
    #[error("{0}")]
    IdempotentParameterMismatch(String),
    /// An instance not in a state the action applies to.
    #[error("{0}")]
    IncorrectInstanceState(String),
    /// An action this backend does not offer (EC2's `UnsupportedOperation`).
    #[error("{0}")]
    UnsupportedOperation(String),
    /// A value that breaks a rule of EC2's (a duplicate image name, ...).
    #[error("{0}")]
    InvalidAmiNameDuplicate(String),
    /// Tags that would take a resource over EC2's 50 per resource.
    #[error("{0}")]
    TagLimitExceeded(String),
    /// A token bucket is empty.
    #[error("Request limit exceeded.")]
    RequestLimitExceeded,
    /// No capacity for the instance type in the zone.
    #[error("{0}")]
    InsufficientInstanceCapacity(String),
    /// An injected fault, or any failure EC2 itself would report as its own.
    #[error("An internal error has occurred")]
    InternalError,
    /// A bug or broken invariant of this server: logged, never sent.
    #[error("internal: {0}")]
    Internal(String),
    /// No signature, or an access key this cloud does not know.
    #[error("{0}")]
    AuthFailure(String),
    /// An Authorization header that cannot be read.
    #[error("{0}")]
    IncompleteSignature(String),
    /// The signature does not match the request.
    #[error("The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.")]
    SignatureDoesNotMatch,
    /// The request's date is more than 15 minutes from the server's clock.
    #[error("Request has expired.")]
    RequestExpired,
}

impl ApiError {
    /// EC2's error code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Wire(e) => e.code(),
            ApiError::InvalidParameterValue(_) => "InvalidParameterValue",
            ApiError::InvalidParameterCombination(_) => "InvalidParameterCombination",
            ApiError::InstanceNotFound(_) => "InvalidInstanceID.NotFound",
            ApiError::InstanceIdMalformed(_) => "InvalidInstanceID.Malformed",
            ApiError::InvalidId(_) => "InvalidID",
            ApiError::ImageNotFound(_) => "InvalidAMIID.NotFound",
            ApiError::ImageUnavailable(..) => "InvalidAMIID.Unavailable",
            ApiError::ImageIdMalformed(_) => "InvalidAMIID.Malformed",
            ApiError::SnapshotNotFound(_) => "InvalidSnapshot.NotFound",
            ApiError::SnapshotIdMalformed(_) => "InvalidSnapshotID.Malformed",
            ApiError::IdempotentParameterMismatch(_) => "IdempotentParameterMismatch",
            ApiError::IncorrectInstanceState(_) => "IncorrectInstanceState",
            ApiError::UnsupportedOperation(_) => "UnsupportedOperation",
            ApiError::InvalidAmiNameDuplicate(_) => "InvalidAMIName.Duplicate",
            ApiError::TagLimitExceeded(_) => "TagLimitExceeded",
            ApiError::RequestLimitExceeded => "RequestLimitExceeded",
            ApiError::InsufficientInstanceCapacity(_) => "InsufficientInstanceCapacity",
            ApiError::InternalError | ApiError::Internal(_) => "InternalError",
            ApiError::AuthFailure(_) => "AuthFailure",
            ApiError::IncompleteSignature(_) => "IncompleteSignature",
            ApiError::SignatureDoesNotMatch => "SignatureDoesNotMatch",
            ApiError::RequestExpired => "RequestExpired",
        }
    }

    /// The HTTP status EC2 answers this error with.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Wire(_)
            | ApiError::InvalidParameterValue(_)
            | ApiError::InvalidParameterCombination(_)
            | ApiError::InstanceNotFound(_)
            | ApiError::InstanceIdMalformed(_)
            | ApiError::InvalidId(_)
            | ApiError::ImageNotFound(_)
            | ApiError::ImageUnavailable(..)
            | ApiError::ImageIdMalformed(_)
            | ApiError::SnapshotNotFound(_)
            | ApiError::SnapshotIdMalformed(_)
            | ApiError::IdempotentParameterMismatch(_)
            | ApiError::IncorrectInstanceState(_)
            | ApiError::UnsupportedOperation(_)
            | ApiError::InvalidAmiNameDuplicate(_)
            | ApiError::TagLimitExceeded(_)
            | ApiError::IncompleteSignature(_)
            | ApiError::RequestExpired => StatusCode::BAD_REQUEST,
            ApiError::AuthFailure(_) => StatusCode::UNAUTHORIZED,
            ApiError::SignatureDoesNotMatch => StatusCode::FORBIDDEN,
            ApiError::RequestLimitExceeded => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::InsufficientInstanceCapacity(_)
            | ApiError::InternalError
            | ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The message the client sees: internal details stay in the log.
    pub fn client_message(&self) -> String {
        match self {
            ApiError::Internal(_) => ApiError::InternalError.to_string(),
            other => other.to_string(),
        }
    }
}

/// Starting or stopping the server.
#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    /// The listening socket could not be bound.
    #[error("binding 127.0.0.1:{port}: {source}")]
    Bind {
        port: u16,
        #[source]
        source: std::io::Error,
    },
    /// The server stopped with an I/O error.
    #[error("serving: {0}")]
    Serve(#[source] std::io::Error),
    /// The server task panicked or was cancelled.
    #[error("the server task ended abnormally: {0}")]
    Task(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_codes_follow_ec2() {
        let cases = [
            (
                ApiError::InvalidParameterValue("x".into()),
                "InvalidParameterValue",
                400,
            ),
            (
                ApiError::InstanceNotFound("x".into()),
                "InvalidInstanceID.NotFound",
                400,
            ),
            (
                ApiError::InstanceIdMalformed("x".into()),
                "InvalidInstanceID.Malformed",
                400,
            ),
            (
                ApiError::IdempotentParameterMismatch("x".into()),
                "IdempotentParameterMismatch",
                400,
            ),
            (ApiError::InvalidId("x".into()), "InvalidID", 400),
            (
                ApiError::SnapshotNotFound("snap-1".into()),
                "InvalidSnapshot.NotFound",
                400,
            ),
            (
                ApiError::SnapshotIdMalformed("snap-x".into()),
                "InvalidSnapshotID.Malformed",
                400,
            ),
            (
                ApiError::TagLimitExceeded("x".into()),
                "TagLimitExceeded",
                400,
            ),
            (ApiError::RequestLimitExceeded, "RequestLimitExceeded", 503),
            (
                ApiError::InsufficientInstanceCapacity("x".into()),
                "InsufficientInstanceCapacity",
                500,
            ),
            (ApiError::AuthFailure("x".into()), "AuthFailure", 401),
            (
                ApiError::SignatureDoesNotMatch,
                "SignatureDoesNotMatch",
                403,
            ),
            (
                WireError::InvalidAction("Frob".into()).into(),
                "InvalidAction",
                400,
            ),
        ];
        for (error, code, status) in cases {
            assert_eq!((error.code(), error.status().as_u16()), (code, status));
        }
    }

    #[test]
    fn internal_details_are_not_sent() {
        let error = ApiError::Internal("the id index names a missing instance 7".into());
        assert_eq!(error.client_message(), "An internal error has occurred");
        assert_eq!(error.code(), "InternalError");
    }
}
