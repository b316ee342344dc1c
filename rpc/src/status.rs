//! Status codes and the [`Status`] every failed call returns.
//!
//! The codes are gRPC's seventeen, with the same numbers, so a status maps one to one onto
//! gRPC, onto the HTTP gateway and onto what users already know.

use std::fmt;

use crate::metadata::Metadata;

/// The outcome class of a call, numbered as in gRPC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Code {
    /// The call succeeded.
    Ok,
    /// The call was cancelled, usually by the caller.
    Cancelled,
    /// An error with no better code, or a code number this version does not know.
    Unknown,
    /// The caller sent a request that is invalid whatever the state of the server.
    InvalidArgument,
    /// The deadline passed before the call finished.
    DeadlineExceeded,
    /// A requested entity, or the service or method itself, was not found.
    NotFound,
    /// The entity a caller tried to create already exists.
    AlreadyExists,
    /// The caller is known but may not do this.
    PermissionDenied,
    /// A limit was reached: frame size, in-flight calls, streams or quota.
    ResourceExhausted,
    /// The system is not in the state the operation requires.
    FailedPrecondition,
    /// The operation was aborted, typically by a concurrency conflict.
    Aborted,
    /// The operation went past a valid range.
    OutOfRange,
    /// The server does not implement this method.
    Unimplemented,
    /// An invariant that the system relies on is broken.
    Internal,
    /// The peer cannot be reached right now; retrying may help.
    Unavailable,
    /// Data was lost or corrupted beyond recovery.
    DataLoss,
    /// The peer could not be authenticated.
    Unauthenticated,
}

impl Code {
    /// Returns the code for a wire number, mapping numbers above 16 to [`Code::Unknown`].
    pub fn from_u32(value: u32) -> Code {
        match value {
            0 => Code::Ok,
            1 => Code::Cancelled,
            3 => Code::InvalidArgument,
            4 => Code::DeadlineExceeded,
            5 => Code::NotFound,
            6 => Code::AlreadyExists,
            7 => Code::PermissionDenied,
            8 => Code::ResourceExhausted,
            9 => Code::FailedPrecondition,
            10 => Code::Aborted,
            11 => Code::OutOfRange,
            12 => Code::Unimplemented,
            13 => Code::Internal,
            14 => Code::Unavailable,
            15 => Code::DataLoss,
            16 => Code::Unauthenticated,
            _ => Code::Unknown,
        }
    }

    /// Returns the wire number, the same as gRPC's.
    pub fn as_u32(self) -> u32 {
        match self {
            Code::Ok => 0,
            Code::Cancelled => 1,
            Code::Unknown => 2,
            Code::InvalidArgument => 3,
            Code::DeadlineExceeded => 4,
            Code::NotFound => 5,
            Code::AlreadyExists => 6,
            Code::PermissionDenied => 7,
            Code::ResourceExhausted => 8,
            Code::FailedPrecondition => 9,
            Code::Aborted => 10,
            Code::OutOfRange => 11,
            Code::Unimplemented => 12,
            Code::Internal => 13,
            Code::Unavailable => 14,
            Code::DataLoss => 15,
            Code::Unauthenticated => 16,
        }
    }

    /// Returns gRPC's name for the code, such as `DEADLINE_EXCEEDED`.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Ok => "OK",
            Code::Cancelled => "CANCELLED",
            Code::Unknown => "UNKNOWN",
            Code::InvalidArgument => "INVALID_ARGUMENT",
            Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Code::NotFound => "NOT_FOUND",
            Code::AlreadyExists => "ALREADY_EXISTS",
            Code::PermissionDenied => "PERMISSION_DENIED",
            Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Code::FailedPrecondition => "FAILED_PRECONDITION",
            Code::Aborted => "ABORTED",
            Code::OutOfRange => "OUT_OF_RANGE",
            Code::Unimplemented => "UNIMPLEMENTED",
            Code::Internal => "INTERNAL",
            Code::Unavailable => "UNAVAILABLE",
            Code::DataLoss => "DATA_LOSS",
            Code::Unauthenticated => "UNAUTHENTICATED",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The metadata key a server sets on a status it returned before any handler ran: over
/// its in-flight limit, or for a method it does not serve. Such a call can be sent to
/// another node whatever the method.
pub const UNPROCESSED_METADATA_KEY: &str = "murmur-unprocessed";

/// The result of a failed call: a code, a message for people and metadata for programs.
///
/// Handlers return a `Status` to fail a call, and callers receive one for every failure,
/// whether the server, the network or a local limit caused it; [`from_peer`](Self::from_peer)
/// tells which. Equality compares code, message and metadata.
#[derive(Clone, Debug)]
pub struct Status {
    code: Code,
    message: String,
    metadata: Metadata,
    from_peer: bool,
}

impl PartialEq for Status {
    fn eq(&self, other: &Status) -> bool {
        self.code == other.code && self.message == other.message && self.metadata == other.metadata
    }
}

impl Eq for Status {}

impl Status {
    /// Creates a status with a code and a message.
    pub fn new(code: Code, message: impl Into<String>) -> Status {
        Status {
            code,
            message: message.into(),
            metadata: Metadata::new(),
            from_peer: false,
        }
    }

    /// Creates a [`Code::Cancelled`] status.
    pub fn cancelled(message: impl Into<String>) -> Status {
        Status::new(Code::Cancelled, message)
    }

    /// Creates a [`Code::InvalidArgument`] status.
    pub fn invalid_argument(message: impl Into<String>) -> Status {
        Status::new(Code::InvalidArgument, message)
    }

    /// Creates a [`Code::DeadlineExceeded`] status.
    pub fn deadline_exceeded(message: impl Into<String>) -> Status {
        Status::new(Code::DeadlineExceeded, message)
    }

    /// Creates a [`Code::NotFound`] status.
    pub fn not_found(message: impl Into<String>) -> Status {
        Status::new(Code::NotFound, message)
    }

    /// Creates a [`Code::ResourceExhausted`] status.
    pub fn resource_exhausted(message: impl Into<String>) -> Status {
        Status::new(Code::ResourceExhausted, message)
    }

    /// Creates a [`Code::Unimplemented`] status.
    pub fn unimplemented(message: impl Into<String>) -> Status {
        Status::new(Code::Unimplemented, message)
    }

    /// Creates a [`Code::Internal`] status.
    pub fn internal(message: impl Into<String>) -> Status {
        Status::new(Code::Internal, message)
    }

    /// Creates a [`Code::Unavailable`] status.
    pub fn unavailable(message: impl Into<String>) -> Status {
        Status::new(Code::Unavailable, message)
    }

    /// Creates a [`Code::Unauthenticated`] status.
    pub fn unauthenticated(message: impl Into<String>) -> Status {
        Status::new(Code::Unauthenticated, message)
    }

    /// Returns whether the peer sent this status in its trail. `false` for statuses this
    /// side produced: a lost connection, a passed deadline, a local limit. Callers tell
    /// an application's error from a failure of the path to it this way.
    pub fn from_peer(&self) -> bool {
        self.from_peer
    }

    /// Returns whether the server refused the call before any handler ran, so that the
    /// call can safely go to another node; see [`UNPROCESSED_METADATA_KEY`].
    pub fn is_unprocessed(&self) -> bool {
        self.from_peer && self.metadata.get(UNPROCESSED_METADATA_KEY) == Some("true")
    }

    pub(crate) fn received_from_peer(mut self) -> Status {
        self.from_peer = true;
        self
    }

    pub(crate) fn mark_unprocessed(mut self) -> Status {
        self.metadata.insert(UNPROCESSED_METADATA_KEY, "true");
        self
    }

    /// Replaces the metadata, which travels to the caller in the trail.
    pub fn with_metadata(mut self, metadata: Metadata) -> Status {
        self.metadata = metadata;
        self
    }

    /// Returns the code.
    pub fn code(&self) -> Code {
        self.code
    }

    /// Returns the message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Returns the metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// Returns the metadata for changing.
    pub fn metadata_mut(&mut self) -> &mut Metadata {
        &mut self.metadata
    }

    pub(crate) fn into_parts(self) -> (Code, String, Metadata) {
        (self.code, self.message, self.metadata)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.message.is_empty() {
            write!(f, "{}", self.code)
        } else {
            write!(f, "{}: {}", self.code, self.message)
        }
    }
}

impl std::error::Error for Status {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_numbers_round_trip() {
        for value in 0..=16 {
            assert_eq!(Code::from_u32(value).as_u32(), value);
        }
    }

    #[test]
    fn unknown_code_number_maps_to_unknown() {
        assert_eq!(Code::from_u32(17), Code::Unknown);
        assert_eq!(Code::from_u32(u32::MAX), Code::Unknown);
    }

    #[test]
    fn status_display_names_code_and_message() {
        let status = Status::not_found("no user 7");
        assert_eq!(status.to_string(), "NOT_FOUND: no user 7");
        assert_eq!(Status::new(Code::Aborted, "").to_string(), "ABORTED");
    }
}
