//! The bodies of `Head` and `Trail` frames, encoded as MessagePack maps.
//!
//! Maps with field names, not arrays, so a later version can add fields and an older peer
//! skips what it does not know.

use std::time::Duration;

use bytes::{BufMut, BytesMut};
use serde::{Deserialize, Serialize};

use crate::frame::{FRAME_HEADER_LEN, FrameKind, header_bytes};
use crate::metadata::Metadata;
use crate::status::{Code, Status};

/// The first frame of a request: which method to run, and the call's context.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Head {
    /// The service name, such as `orders`.
    pub service: String,
    /// The method name within the service, such as `place`.
    pub method: String,
    /// Time left until the caller's deadline when the head was sent, in microseconds;
    /// absent when the call has no deadline. A duration rather than an instant, so clock skew
    /// between nodes cannot shorten or stretch it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_us: Option<u64>,
    /// The caller's metadata.
    #[serde(default, skip_serializing_if = "Metadata::is_empty")]
    pub metadata: Metadata,
    /// The W3C `traceparent` of the caller's span, if it traces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

impl Head {
    /// Creates a head for a method with no deadline, metadata or trace context.
    pub fn new(service: impl Into<String>, method: impl Into<String>) -> Head {
        Head {
            service: service.into(),
            method: method.into(),
            ..Head::default()
        }
    }

    /// Returns the time left until the deadline, if the call has one.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout_us.map(Duration::from_micros)
    }

    /// Decodes a head frame's body.
    ///
    /// # Errors
    ///
    /// [`Code::InvalidArgument`] when the body is not a MessagePack head.
    pub fn decode(body: &[u8]) -> Result<Head, Status> {
        rmp_serde::from_slice(body)
            .map_err(|error| Status::invalid_argument(format!("invalid head frame: {error}")))
    }
}

/// The last frame of a reply: the call's outcome.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Trail {
    /// The status code's number; 0 means success.
    pub code: u32,
    /// The status message; empty on success.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// The server's trailing metadata.
    #[serde(default, skip_serializing_if = "Metadata::is_empty")]
    pub metadata: Metadata,
}

impl Trail {
    /// Creates the trail of a successful call.
    pub fn ok() -> Trail {
        Trail::default()
    }

    /// Decodes a trail frame's body.
    ///
    /// # Errors
    ///
    /// [`Code::Internal`] when the body is not a MessagePack trail; the server is at fault.
    pub fn decode(body: &[u8]) -> Result<Trail, Status> {
        rmp_serde::from_slice(body)
            .map_err(|error| Status::internal(format!("invalid trail frame: {error}")))
    }

    /// Converts the trail into the call's result: `Ok` with the trailing metadata, or the
    /// failure it reports.
    pub fn into_result(self) -> Result<Metadata, Status> {
        match Code::from_u32(self.code) {
            Code::Ok => Ok(self.metadata),
            code => Err(Status::new(code, self.message)
                .with_metadata(self.metadata)
                .received_from_peer()),
        }
    }
}

/// The MessagePack body of [`Trail::ok`]: a one-entry map `{"code": 0}`. Most replies end
/// with it, so senders copy these bytes instead of running the encoder.
pub(crate) const OK_TRAIL_BODY: [u8; 7] = [0x81, 0xa4, b'c', b'o', b'd', b'e', 0x00];

impl Trail {
    /// Returns whether this is the plain success trail, whose body is [`OK_TRAIL_BODY`].
    pub(crate) fn is_plain_ok(&self) -> bool {
        self.code == 0 && self.message.is_empty() && self.metadata.is_empty()
    }
}

impl From<Status> for Trail {
    fn from(status: Status) -> Trail {
        let (code, message, metadata) = status.into_parts();
        Trail {
            code: code.as_u32(),
            message,
            metadata,
        }
    }
}

/// Appends a frame whose body is `value` encoded as a MessagePack map, and returns the body
/// length.
///
/// # Errors
///
/// [`Code::Internal`] when serde cannot encode the value, and [`Code::ResourceExhausted`] when
/// the body is longer than `limit` bytes. Either way `dst` is left as it was.
pub(crate) fn encode_msgpack_frame<T: Serialize + ?Sized>(
    kind: FrameKind,
    value: &T,
    limit: u32,
    dst: &mut BytesMut,
) -> Result<usize, Status> {
    let start = dst.len();
    dst.put_bytes(0, FRAME_HEADER_LEN);

    let mut writer = dst.writer();
    let encoded = rmp_serde::encode::write_named(&mut writer, value);
    let dst = writer.into_inner();
    if let Err(error) = encoded {
        dst.truncate(start);
        return Err(Status::internal(format!(
            "failed to encode a {kind:?} frame: {error}"
        )));
    }

    let body_len = dst.len() - start - FRAME_HEADER_LEN;
    if body_len > limit as usize {
        dst.truncate(start);
        return Err(Status::resource_exhausted(format!(
            "{} frame of {body_len} bytes exceeds the {limit}-byte limit",
            kind_name(kind)
        )));
    }

    dst[start..start + FRAME_HEADER_LEN].copy_from_slice(&header_bytes(kind, body_len));
    Ok(body_len)
}

pub(crate) fn kind_name(kind: FrameKind) -> &'static str {
    match kind {
        FrameKind::Head => "head",
        FrameKind::Data => "data",
        FrameKind::Trail => "trail",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::FrameDecoder;

    #[test]
    fn trail_status_is_marked_from_peer() {
        let local = Status::unavailable("handler says no");
        assert!(!local.from_peer());
        let received = Trail::from(local.clone()).into_result().unwrap_err();
        assert!(received.from_peer());
        assert_eq!(received, local);
        assert!(!received.is_unprocessed());

        let refused = Status::resource_exhausted("full").mark_unprocessed();
        let received = Trail::from(refused).into_result().unwrap_err();
        assert!(received.is_unprocessed());
    }

    #[test]
    fn head_round_trips_through_a_frame() {
        let mut head = Head::new("orders", "place");
        head.timeout_us = Some(1_500);
        head.metadata.insert("x-user", "ann");
        head.traceparent = Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into());

        let mut buf = BytesMut::new();
        encode_msgpack_frame(FrameKind::Head, &head, 1024, &mut buf).unwrap();
        let frame = FrameDecoder::new(1024, 1024)
            .decode(&mut buf)
            .unwrap()
            .unwrap();

        assert_eq!(frame.kind, FrameKind::Head);
        assert_eq!(Head::decode(&frame.body).unwrap(), head);
    }

    #[test]
    fn ok_trail_body_matches_the_encoder() {
        let encoded = rmp_serde::to_vec_named(&Trail::ok()).unwrap();
        assert_eq!(encoded, OK_TRAIL_BODY);
        assert!(Trail::ok().is_plain_ok());
        assert_eq!(Trail::decode(&OK_TRAIL_BODY).unwrap(), Trail::ok());
    }

    #[test]
    fn head_is_a_map_with_field_names() {
        let bytes = rmp_serde::to_vec_named(&Head::new("a", "b")).unwrap();
        // fixmap of two entries, then the key "service".
        assert_eq!(bytes[0], 0x82);
        assert_eq!(&bytes[2..9], b"service");
    }

    #[test]
    fn head_ignores_fields_it_does_not_know() {
        #[derive(Serialize)]
        struct LaterHead {
            service: &'static str,
            method: &'static str,
            priority: u8,
        }
        let bytes = rmp_serde::to_vec_named(&LaterHead {
            service: "orders",
            method: "place",
            priority: 3,
        })
        .unwrap();
        assert_eq!(Head::decode(&bytes).unwrap(), Head::new("orders", "place"));
    }

    #[test]
    fn invalid_head_is_invalid_argument() {
        let error = Head::decode(&[0xc1]).unwrap_err();
        assert_eq!(error.code(), Code::InvalidArgument);
    }

    #[test]
    fn trail_carries_status() {
        let trail = Trail::from(Status::not_found("no order 9"));
        let decoded = Trail::decode(&rmp_serde::to_vec_named(&trail).unwrap()).unwrap();
        let status = decoded.into_result().unwrap_err();
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(status.message(), "no order 9");
    }

    #[test]
    fn oversized_encoded_frame_is_rejected_and_dropped() {
        let mut buf = BytesMut::from(&b"keep"[..]);
        let mut head = Head::new("orders", "place");
        head.metadata.insert("big", "x".repeat(100));
        let error = encode_msgpack_frame(FrameKind::Head, &head, 64, &mut buf).unwrap_err();
        assert_eq!(error.code(), Code::ResourceExhausted);
        assert!(
            error.message().contains("exceeds the 64-byte limit"),
            "{error}"
        );
        assert_eq!(&buf[..], b"keep");
    }
}
