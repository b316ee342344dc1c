//! Payload encoding for `Data` frame bodies: MessagePack through serde, or raw bytes.

use std::cell::RefCell;

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::frame::{FrameKind, header_bytes};
use crate::status::Status;

/// A request or reply payload that can travel in a `Data` frame.
///
/// Every type with serde's `Serialize` and `DeserializeOwned` is a `Message`, encoded as
/// MessagePack with structs as maps keyed by field name. A peer can then add fields without
/// breaking older peers, as long as the new fields have `#[serde(default)]`. Wrap bytes in
/// [`Raw`] to send them as they are.
pub trait Message: Sized + Send + 'static {
    /// Appends the encoded payload to `dst`.
    ///
    /// # Errors
    ///
    /// A [`Status`] with [`Code::Internal`](crate::Code::Internal) when the value cannot be
    /// encoded.
    fn encode(&self, dst: &mut BytesMut) -> Result<(), Status>;

    /// Decodes a payload.
    ///
    /// # Errors
    ///
    /// A [`Status`] with [`Code::InvalidArgument`](crate::Code::InvalidArgument) when the
    /// bytes are not a valid encoding of this type.
    fn decode(body: Bytes) -> Result<Self, Status>;

    /// Returns the encoded bytes when the message already contains them, as [`Raw`] does, so
    /// they are copied once into their frame. `None`, the default, means [`encode`]
    /// writes them.
    ///
    /// [`encode`]: Message::encode
    fn as_encoded(&self) -> Option<&[u8]> {
        None
    }
}

impl<T: Serialize + DeserializeOwned + Send + 'static> Message for T {
    fn encode(&self, dst: &mut BytesMut) -> Result<(), Status> {
        rmp_serde::encode::write_named(&mut dst.writer(), self)
            .map_err(|error| Status::internal(format!("failed to encode message: {error}")))
    }

    fn decode(body: Bytes) -> Result<Self, Status> {
        rmp_serde::from_slice(&body).map_err(|error| {
            Status::invalid_argument(format!(
                "invalid message for {}: {error}",
                std::any::type_name::<T>()
            ))
        })
    }
}

/// A payload of raw bytes, for callers that bring their own encoding.
///
/// `Raw` bypasses MessagePack: the bytes are the `Data` frame's body, unchanged.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Raw(pub Bytes);

impl Message for Raw {
    fn encode(&self, dst: &mut BytesMut) -> Result<(), Status> {
        dst.extend_from_slice(&self.0);
        Ok(())
    }

    fn decode(body: Bytes) -> Result<Self, Status> {
        Ok(Raw(body))
    }

    fn as_encoded(&self) -> Option<&[u8]> {
        Some(&self.0)
    }
}

impl From<Bytes> for Raw {
    fn from(bytes: Bytes) -> Raw {
        Raw(bytes)
    }
}

impl From<Vec<u8>> for Raw {
    fn from(bytes: Vec<u8>) -> Raw {
        Raw(Bytes::from(bytes))
    }
}

impl From<&'static [u8]> for Raw {
    fn from(bytes: &'static [u8]) -> Raw {
        Raw(Bytes::from_static(bytes))
    }
}

thread_local! {
    /// The buffer a message is encoded into before it is copied into its frame, so that the
    /// frame buffer is allocated once at its final size instead of growing while serde
    /// writes. Kept for the thread's next message.
    static SCRATCH: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

/// The size past which a scratch buffer is released after use: 1 MiB. One very large
/// message then does not pin its size to the thread. Messages up to this size reuse the
/// buffer instead of growing a new one each time.
const SCRATCH_KEEP: usize = 1024 * 1024;

/// Encodes `message` and passes the bytes to `write`, which copies them into a frame.
///
/// # Errors
///
/// [`Code::ResourceExhausted`](crate::Code::ResourceExhausted) when the encoded message is
/// longer than `limit`, and the message's own encoding errors. `write` is not called then.
pub(crate) fn with_encoded<M: Message, T>(
    message: &M,
    limit: u32,
    write: impl FnOnce(&[u8]) -> T,
) -> Result<T, Status> {
    if let Some(body) = message.as_encoded() {
        check_limit(body, limit)?;
        return Ok(write(body));
    }
    // The buffer is taken out of the thread's slot while it is in use, so a message whose
    // own `encode` calls back in here finds the slot empty and starts a fresh buffer. The
    // slot is gone only while the thread exits, and a fresh buffer serves then too.
    let mut body = SCRATCH.try_with(RefCell::take).unwrap_or_default();
    body.clear();
    let outcome = message.encode(&mut body).and_then(|()| {
        check_limit(&body, limit)?;
        Ok(write(&body))
    });
    if body.capacity() <= SCRATCH_KEEP {
        let _ = SCRATCH.try_with(|scratch| scratch.replace(body));
    }
    outcome
}

fn check_limit(body: &[u8], limit: u32) -> Result<(), Status> {
    if body.len() > limit as usize {
        return Err(Status::resource_exhausted(format!(
            "frame of {} bytes exceeds the {limit}-byte limit",
            body.len()
        )));
    }
    Ok(())
}

/// Appends a `Data` frame whose body is `body`.
pub(crate) fn put_data_frame(body: &[u8], dst: &mut BytesMut) {
    dst.put_slice(&header_bytes(FrameKind::Data, body.len()));
    dst.put_slice(body);
}

/// Appends a `Data` frame holding `message`.
///
/// # Errors
///
/// As for [`with_encoded`], and `dst` is then left as it was.
#[cfg(test)]
pub(crate) fn encode_data_frame<M: Message>(
    message: &M,
    limit: u32,
    dst: &mut BytesMut,
) -> Result<(), Status> {
    with_encoded(message, limit, |body| put_data_frame(body, dst))
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;
    use crate::Code;
    use crate::frame::FRAME_HEADER_LEN;

    #[derive(Serialize, Deserialize)]
    struct Echo {
        payload: Bytes,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct OrderV1 {
        id: u64,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct OrderV2 {
        id: u64,
        #[serde(default)]
        note: String,
    }

    fn encode<M: Message>(message: &M) -> Bytes {
        let mut buf = BytesMut::new();
        message.encode(&mut buf).unwrap();
        buf.freeze()
    }

    #[test]
    fn struct_encodes_as_map() {
        let bytes = encode(&OrderV1 { id: 7 });
        assert_eq!(bytes[0], 0x81, "a fixmap of one entry");
    }

    #[test]
    fn added_field_reads_old_and_new_peers() {
        let old = OrderV2::decode(encode(&OrderV1 { id: 7 })).unwrap();
        assert_eq!(
            old,
            OrderV2 {
                id: 7,
                note: String::new()
            }
        );
        let new = encode(&OrderV2 {
            id: 8,
            note: "rush".into(),
        });
        assert_eq!(OrderV1::decode(new).unwrap(), OrderV1 { id: 8 });
    }

    #[test]
    fn raw_bytes_pass_unchanged() {
        let bytes = Bytes::from_static(b"\x00\xffnot msgpack");
        assert_eq!(encode(&Raw(bytes.clone())), bytes);
        assert_eq!(Raw::decode(bytes.clone()).unwrap(), Raw(bytes));
    }

    #[test]
    fn invalid_message_is_invalid_argument() {
        let error = OrderV1::decode(Bytes::from_static(b"\xc1")).unwrap_err();
        assert_eq!(error.code(), Code::InvalidArgument);
    }

    #[test]
    fn data_frame_over_limit_names_size_and_limit() {
        let mut buf = BytesMut::new();
        let error = encode_data_frame(&Raw(Bytes::from(vec![0; 100])), 64, &mut buf).unwrap_err();
        assert_eq!(error.code(), Code::ResourceExhausted);
        assert_eq!(
            error.message(),
            "frame of 100 bytes exceeds the 64-byte limit"
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn large_scratch_is_released_and_small_kept() {
        let mut buf = BytesMut::new();
        let large = SCRATCH_KEEP + 1;
        let message = Echo {
            payload: Bytes::from(vec![1; large]),
        };
        encode_data_frame(&message, u32::MAX, &mut buf).unwrap();
        assert!(buf.len() > FRAME_HEADER_LEN + large);
        assert_eq!(SCRATCH.with_borrow(BytesMut::capacity), 0);

        let message = Echo {
            payload: Bytes::from(vec![2; 1000]),
        };
        encode_data_frame(&message, u32::MAX, &mut buf).unwrap();
        assert!(SCRATCH.with_borrow(BytesMut::capacity) >= 1000);
        assert_eq!(&buf[buf.len() - 1000..], &[2; 1000][..]);
    }

    #[test]
    fn raw_bytes_skip_the_scratch_buffer() {
        SCRATCH.with_borrow_mut(|scratch| *scratch = BytesMut::new());
        let mut buf = BytesMut::new();
        encode_data_frame(&Raw(Bytes::from(vec![3; 500])), u32::MAX, &mut buf).unwrap();
        assert_eq!(buf.len(), FRAME_HEADER_LEN + 500);
        assert_eq!(SCRATCH.with_borrow(BytesMut::capacity), 0);
    }
}
