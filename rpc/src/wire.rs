//! The bodies of `Head` and `Trail` frames, encoded as MessagePack maps.
//!
//! Maps with field names, not arrays, so a later version can add fields and an older peer
//! skips what it does not know.
//!
//! Every call carries one head and one trail, so both are written field by field and read
//! back the same way, without serde's generic machinery. The few MessagePack forms they use
//! (maps, strings, unsigned integers) are written out below.
//!
//! The serde derives on [`Head`] and [`Trail`] still define the format. The bytes written
//! are those `rmp_serde` writes. A body the direct reader does not recognise in full (a
//! field it does not know, an array instead of a map, a repeated key) goes to `rmp_serde`,
//! which accepts or rejects it as it always did.

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
        if let Some(head) = read_head(body) {
            return Ok(head);
        }
        rmp_serde::from_slice(body)
            .map_err(|error| Status::invalid_argument(format!("invalid head frame: {error}")))
    }

    #[cfg(test)]
    pub(crate) fn fields(&self) -> HeadFields<'_> {
        HeadFields {
            service: &self.service,
            method: &self.method,
            timeout_us: self.timeout_us,
            metadata: &self.metadata,
            traceparent: self.traceparent.as_deref(),
        }
    }
}

/// A head's fields, borrowed, so a caller can write a head without building a [`Head`].
pub(crate) struct HeadFields<'a> {
    pub service: &'a str,
    pub method: &'a str,
    pub timeout_us: Option<u64>,
    pub metadata: &'a Metadata,
    pub traceparent: Option<&'a str>,
}

impl HeadFields<'_> {
    /// Returns an upper bound on the encoded body's length, for sizing a buffer.
    pub(crate) fn encoded_len_bound(&self) -> usize {
        // Every string costs at most 5 bytes of marker and length. The map markers, the keys
        // and the timeout fit in 64.
        let text = |text: &str| text.len() + 5;
        64 + text(self.service)
            + text(self.method)
            + self.traceparent.map_or(0, text)
            + self
                .metadata
                .iter()
                .map(|(key, value)| text(key) + text(value))
                .sum::<usize>()
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
        if body == OK_TRAIL_BODY {
            return Ok(Trail::ok());
        }
        if let Some(trail) = read_trail(body) {
            return Ok(trail);
        }
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

/// Appends a head frame and returns its body length.
///
/// # Errors
///
/// [`Code::ResourceExhausted`] when the body is longer than `limit` bytes; `dst` is then left
/// as it was.
pub(crate) fn encode_head_frame(
    head: &HeadFields<'_>,
    limit: u32,
    dst: &mut BytesMut,
) -> Result<usize, Status> {
    encode_map_frame(FrameKind::Head, limit, dst, |body| {
        let fields = 2
            + usize::from(head.timeout_us.is_some())
            + usize::from(!head.metadata.is_empty())
            + usize::from(head.traceparent.is_some());
        put_map_len(body, fields);
        put_str(body, "service");
        put_str(body, head.service);
        put_str(body, "method");
        put_str(body, head.method);
        if let Some(timeout_us) = head.timeout_us {
            put_str(body, "timeout_us");
            put_uint(body, timeout_us);
        }
        if !head.metadata.is_empty() {
            put_str(body, "metadata");
            put_metadata(body, head.metadata);
        }
        if let Some(traceparent) = head.traceparent {
            put_str(body, "traceparent");
            put_str(body, traceparent);
        }
    })
}

/// Appends a trail frame and returns its body length.
///
/// # Errors
///
/// [`Code::ResourceExhausted`] when the body is longer than `limit` bytes; `dst` is then left
/// as it was.
pub(crate) fn encode_trail_frame(
    trail: &Trail,
    limit: u32,
    dst: &mut BytesMut,
) -> Result<usize, Status> {
    encode_map_frame(FrameKind::Trail, limit, dst, |body| {
        let fields =
            1 + usize::from(!trail.message.is_empty()) + usize::from(!trail.metadata.is_empty());
        put_map_len(body, fields);
        put_str(body, "code");
        put_uint(body, u64::from(trail.code));
        if !trail.message.is_empty() {
            put_str(body, "message");
            put_str(body, &trail.message);
        }
        if !trail.metadata.is_empty() {
            put_str(body, "metadata");
            put_metadata(body, &trail.metadata);
        }
    })
}

fn put_metadata(body: &mut BytesMut, metadata: &Metadata) {
    put_map_len(body, metadata.len());
    for (key, value) in metadata.iter() {
        put_str(body, key);
        put_str(body, value);
    }
}

/// Appends a frame whose body `write` produces, then checks the body against `limit` and
/// fills in the frame header.
fn encode_map_frame(
    kind: FrameKind,
    limit: u32,
    dst: &mut BytesMut,
    write: impl FnOnce(&mut BytesMut),
) -> Result<usize, Status> {
    let start = dst.len();
    dst.put_bytes(0, FRAME_HEADER_LEN);
    write(dst);

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

// The MessagePack forms heads and trails use, each in its shortest encoding, as the
// specification recommends and `rmp_serde` writes. A length beyond 32 bits is written as
// `u32::MAX`, and such a body is far over any frame limit, which then rejects it.

fn put_map_len(dst: &mut BytesMut, len: usize) {
    match u32::try_from(len) {
        Ok(len @ 0..16) => dst.put_u8(0x80 | len as u8),
        Ok(len @ 16..=0xffff) => {
            dst.put_u8(0xde);
            dst.put_u16(len as u16);
        }
        Ok(len) => {
            dst.put_u8(0xdf);
            dst.put_u32(len);
        }
        Err(_) => {
            dst.put_u8(0xdf);
            dst.put_u32(u32::MAX);
        }
    }
}

fn put_str(dst: &mut BytesMut, text: &str) {
    match u32::try_from(text.len()) {
        Ok(len @ 0..32) => dst.put_u8(0xa0 | len as u8),
        Ok(len @ 32..=0xff) => {
            dst.put_u8(0xd9);
            dst.put_u8(len as u8);
        }
        Ok(len @ 0x100..=0xffff) => {
            dst.put_u8(0xda);
            dst.put_u16(len as u16);
        }
        Ok(len) => {
            dst.put_u8(0xdb);
            dst.put_u32(len);
        }
        Err(_) => {
            dst.put_u8(0xdb);
            dst.put_u32(u32::MAX);
        }
    }
    dst.put_slice(text.as_bytes());
}

fn put_uint(dst: &mut BytesMut, value: u64) {
    match value {
        0..0x80 => dst.put_u8(value as u8),
        0x80..=0xff => {
            dst.put_u8(0xcc);
            dst.put_u8(value as u8);
        }
        0x100..=0xffff => {
            dst.put_u8(0xcd);
            dst.put_u16(value as u16);
        }
        0x1_0000..=0xffff_ffff => {
            dst.put_u8(0xce);
            dst.put_u32(value as u32);
        }
        _ => {
            dst.put_u8(0xcf);
            dst.put_u64(value);
        }
    }
}

/// Reads a head written as [`encode_head_frame`] writes it, in any field order. Returns
/// `None` for anything else, including bodies that are invalid, and leaves those to serde.
fn read_head(body: &[u8]) -> Option<Head> {
    let mut rest = body;
    let fields = read_map_len(&mut rest)?;
    let mut head = Head::default();
    let (mut service, mut method) = (false, false);
    for _ in 0..fields {
        match read_key(&mut rest)? {
            b"service" if !service => {
                head.service = read_str(&mut rest)?.to_owned();
                service = true;
            }
            b"method" if !method => {
                head.method = read_str(&mut rest)?.to_owned();
                method = true;
            }
            b"timeout_us" if head.timeout_us.is_none() => {
                head.timeout_us = Some(read_u64(&mut rest)?);
            }
            b"metadata" if head.metadata.is_empty() => head.metadata = read_metadata(&mut rest)?,
            b"traceparent" if head.traceparent.is_none() => {
                head.traceparent = Some(read_str(&mut rest)?.to_owned());
            }
            _ => return None,
        }
    }
    (service && method && rest.is_empty()).then_some(head)
}

/// Reads a trail written as [`encode_trail_frame`] writes it, and returns `None` as
/// [`read_head`] does.
fn read_trail(body: &[u8]) -> Option<Trail> {
    let mut rest = body;
    let fields = read_map_len(&mut rest)?;
    let mut trail = Trail::default();
    let (mut code, mut message) = (false, false);
    for _ in 0..fields {
        match read_key(&mut rest)? {
            b"code" if !code => {
                trail.code = u32::try_from(read_u64(&mut rest)?).ok()?;
                code = true;
            }
            b"message" if !message => {
                trail.message = read_str(&mut rest)?.to_owned();
                message = true;
            }
            b"metadata" if trail.metadata.is_empty() => trail.metadata = read_metadata(&mut rest)?,
            _ => return None,
        }
    }
    (code && rest.is_empty()).then_some(trail)
}

/// Reads a map of string pairs. A repeated key, for which serde keeps the last value, is
/// left to serde as well, so that one rule applies.
fn read_metadata(rest: &mut &[u8]) -> Option<Metadata> {
    let pairs = read_map_len(rest)?;
    let mut metadata = Metadata::new();
    for _ in 0..pairs {
        let key = read_str(rest)?;
        let value = read_str(rest)?;
        if metadata.insert(key, value).is_some() {
            return None;
        }
    }
    // An empty map would leave the field looking unset, so this reader would accept a second
    // `metadata` key that serde rejects. Such a body goes to serde instead.
    (!metadata.is_empty()).then_some(metadata)
}

/// Reads a MessagePack string (fixstr, str 8, str 16 or str 32) borrowed from `rest`.
fn read_str<'a>(rest: &mut &'a [u8]) -> Option<&'a str> {
    std::str::from_utf8(read_key(rest)?).ok()
}

/// Reads a string's bytes without checking that they are UTF-8: field names are only
/// compared with the names above, and [`read_str`] checks values.
///
/// Every `read_` function here leaves `rest` wherever it stopped when it returns `None`,
/// since the whole body then goes to serde.
fn read_key<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = match read_marker(rest)? {
        marker @ 0xa0..=0xbf => u64::from(marker & 0x1f),
        0xd9 => read_be::<1>(rest)?,
        0xda => read_be::<2>(rest)?,
        0xdb => read_be::<4>(rest)?,
        _ => return None,
    };
    let (bytes, tail) = rest.split_at_checked(usize::try_from(len).ok()?)?;
    *rest = tail;
    Some(bytes)
}

/// Reads a map's length (fixmap, map 16 or map 32).
fn read_map_len(rest: &mut &[u8]) -> Option<usize> {
    let len = match read_marker(rest)? {
        marker @ 0x80..=0x8f => u64::from(marker & 0x0f),
        0xde => read_be::<2>(rest)?,
        0xdf => read_be::<4>(rest)?,
        _ => return None,
    };
    usize::try_from(len).ok()
}

/// Reads an unsigned integer (positive fixint, uint 8, 16, 32 or 64). Signed forms, which
/// `rmp_serde` never writes for unsigned fields, are left to serde.
fn read_u64(rest: &mut &[u8]) -> Option<u64> {
    match read_marker(rest)? {
        marker @ 0x00..=0x7f => Some(u64::from(marker)),
        0xcc => read_be::<1>(rest),
        0xcd => read_be::<2>(rest),
        0xce => read_be::<4>(rest),
        0xcf => read_be::<8>(rest),
        _ => None,
    }
}

fn read_marker(rest: &mut &[u8]) -> Option<u8> {
    let (&marker, tail) = rest.split_first()?;
    *rest = tail;
    Some(marker)
}

/// Reads the `N`-byte big-endian number that follows a marker: a length or a value.
fn read_be<const N: usize>(rest: &mut &[u8]) -> Option<u64> {
    let (bytes, tail) = rest.split_first_chunk::<N>()?;
    *rest = tail;
    Some(
        bytes
            .iter()
            .fold(0, |value, &byte| value << 8 | u64::from(byte)),
    )
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
        encode_head_frame(&head.fields(), 1024, &mut buf).unwrap();
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

    fn full_head() -> Head {
        let mut head = Head::new("orders", "place");
        head.timeout_us = Some(70_000_000_000);
        head.metadata.insert("x-user", "ann");
        head.metadata.insert("x-request-id", "r-1");
        head.traceparent = Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into());
        head
    }

    fn body_of(frame: &BytesMut) -> &[u8] {
        &frame[FRAME_HEADER_LEN..]
    }

    #[test]
    fn encoding_reads_back_with_both_readers() {
        // Strings of every MessagePack length form: fixstr, str 8, str 16 and str 32.
        let mut long = full_head();
        long.metadata.insert("x-str16", "v".repeat(300));
        long.metadata.insert("x-str32", "w".repeat(70_000));
        for head in [Head::new("a", "b"), full_head(), long] {
            let mut frame = BytesMut::new();
            encode_head_frame(&head.fields(), u32::MAX, &mut frame).unwrap();
            let body = body_of(&frame);
            assert!(body.len() <= head.fields().encoded_len_bound());
            assert_eq!(rmp_serde::from_slice::<Head>(body).unwrap(), head);
            assert_eq!(read_head(body), Some(head.clone()));
            assert_eq!(body, rmp_serde::to_vec_named(&head).unwrap());
        }

        let mut failed = Trail::from(Status::not_found("no order 9"));
        failed.metadata.insert("retry-after", "3");
        for trail in [Trail::ok(), failed] {
            let mut frame = BytesMut::new();
            encode_trail_frame(&trail, u32::MAX, &mut frame).unwrap();
            let body = body_of(&frame);
            assert_eq!(rmp_serde::from_slice::<Trail>(body).unwrap(), trail);
            assert_eq!(read_trail(body), Some(trail.clone()));
            assert_eq!(body, rmp_serde::to_vec_named(&trail).unwrap());
        }
    }

    /// Every body the direct reader accepts, serde accepts too, with the same result. So
    /// handing the rest to serde changes nothing a peer can observe.
    #[test]
    fn mutated_bodies_decode_as_serde_does() {
        let mut frame = BytesMut::new();
        encode_head_frame(&full_head().fields(), u32::MAX, &mut frame).unwrap();
        let head_body = body_of(&frame).to_vec();
        let mut frame = BytesMut::new();
        let mut trail = Trail::from(Status::unavailable("draining"));
        trail.metadata.insert("murmur-unprocessed", "1");
        encode_trail_frame(&trail, u32::MAX, &mut frame).unwrap();
        let trail_body = body_of(&frame).to_vec();

        // A fixed-seed xorshift, so a failure repeats.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let (mut head_direct, mut trail_direct) = (0, 0);
        for round in 0..20_000 {
            let original = if round % 2 == 0 {
                &head_body
            } else {
                &trail_body
            };
            let mut body = original.clone();
            for _ in 0..=next() % 3 {
                let at = (next() % body.len() as u64) as usize;
                match next() % 3 {
                    0 => body[at] = next() as u8,
                    1 => body.truncate(at),
                    _ => body.insert(at, next() as u8),
                }
                if body.is_empty() {
                    break;
                }
            }
            if let Some(head) = read_head(&body) {
                head_direct += 1;
                assert_eq!(
                    rmp_serde::from_slice::<Head>(&body).ok(),
                    Some(head),
                    "{body:x?}"
                );
            }
            if let Some(trail) = read_trail(&body) {
                trail_direct += 1;
                assert_eq!(
                    rmp_serde::from_slice::<Trail>(&body).ok(),
                    Some(trail),
                    "{body:x?}"
                );
            }
        }
        // Single-byte changes inside strings keep many bodies valid, so both readers ran.
        assert!(
            head_direct > 100 && trail_direct > 100,
            "{head_direct} {trail_direct}"
        );
    }

    #[test]
    fn form_bounds_match_rmp_serde() {
        for value in [
            0,
            0x7f,
            0x80,
            0xff,
            0x100,
            0xffff,
            0x1_0000,
            0xffff_ffff,
            1 << 32,
            u64::MAX,
        ] {
            let mut bytes = BytesMut::new();
            put_uint(&mut bytes, value);
            assert_eq!(bytes, rmp_serde::to_vec(&value).unwrap(), "{value}");
            assert_eq!(read_u64(&mut &bytes[..]), Some(value));
        }
        for len in [0, 31, 32, 0xff, 0x100, 0xffff, 0x1_0000] {
            let text = "t".repeat(len);
            let mut bytes = BytesMut::new();
            put_str(&mut bytes, &text);
            assert_eq!(bytes, rmp_serde::to_vec(&text).unwrap(), "{len}");
            assert_eq!(read_str(&mut &bytes[..]), Some(text.as_str()));

            let map: std::collections::BTreeMap<u32, u8> =
                (0..len as u32).map(|k| (k, 0)).collect();
            let expected = rmp_serde::to_vec(&map).unwrap();
            let mut bytes = BytesMut::new();
            put_map_len(&mut bytes, len);
            assert_eq!(bytes, expected[..bytes.len()], "{len}");
            assert_eq!(read_map_len(&mut &bytes[..]), Some(len));
        }
    }

    #[test]
    fn other_shapes_go_to_serde() {
        #[derive(Serialize)]
        struct Repeated {
            service: &'static str,
            method: &'static str,
        }
        let as_array = rmp_serde::to_vec(&Repeated {
            service: "a",
            method: "b",
        })
        .unwrap();
        assert_eq!(read_head(&as_array), None);
        assert_eq!(Head::decode(&as_array).unwrap(), Head::new("a", "b"));

        // {"service": "a", "method": "b", "method": "c"}
        let mut repeated = BytesMut::from(&[0x83][..]);
        for text in ["service", "a", "method", "b", "method", "c"] {
            put_str(&mut repeated, text);
        }
        assert_eq!(read_head(&repeated), None);
        let error = Head::decode(&repeated).unwrap_err();
        assert!(error.message().contains("duplicate field"), "{error}");
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
        let error = encode_head_frame(&head.fields(), 64, &mut buf).unwrap_err();
        assert_eq!(error.code(), Code::ResourceExhausted);
        assert!(
            error.message().contains("exceeds the 64-byte limit"),
            "{error}"
        );
        assert_eq!(&buf[..], b"keep");
    }
}
