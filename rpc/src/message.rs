//! Payload encoding for `Data` frame bodies: MessagePack through serde, or raw bytes.

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::frame::{FRAME_HEADER_LEN, FrameKind, header_bytes};
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

/// Appends a `Data` frame holding `message`.
///
/// # Errors
///
/// [`Code::ResourceExhausted`](crate::Code::ResourceExhausted) when the encoded message is
/// longer than `limit`, and the message's own encoding errors. Either way `dst` is left as it
/// was.
pub(crate) fn encode_data_frame<M: Message>(
    message: &M,
    limit: u32,
    dst: &mut BytesMut,
) -> Result<(), Status> {
    let start = dst.len();
    dst.put_bytes(0, FRAME_HEADER_LEN);
    if let Err(status) = message.encode(dst) {
        dst.truncate(start);
        return Err(status);
    }

    let body_len = dst.len() - start - FRAME_HEADER_LEN;
    if body_len > limit as usize {
        dst.truncate(start);
        return Err(Status::resource_exhausted(format!(
            "frame of {body_len} bytes exceeds the {limit}-byte limit"
        )));
    }

    dst[start..start + FRAME_HEADER_LEN].copy_from_slice(&header_bytes(FrameKind::Data, body_len));
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;
    use crate::Code;

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
}
