//! The frame codec: bytes in, frames out, with no I/O.
//!
//! Every frame is a 4-byte big-endian body length, a 1-byte kind and the body. The length
//! counts the body only, so an empty `Data` frame is the five bytes `00 00 00 00 02`. A
//! request is `Head Data* FIN` and a reply is `Data* Trail FIN`, for unary calls and for all
//! three streaming shapes.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use thiserror::Error;

/// Bytes before a frame's body: the 4-byte length and the 1-byte kind.
pub const FRAME_HEADER_LEN: usize = 5;

/// The type of a frame's body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FrameKind {
    /// A MessagePack [`Head`](crate::Head): service, method, deadline, metadata, trace context.
    Head,
    /// One message's payload, opaque to the framing.
    Data,
    /// A MessagePack [`Trail`](crate::Trail): the call's status code, message and metadata.
    Trail,
}

impl FrameKind {
    /// Returns the kind byte on the wire.
    pub fn as_u8(self) -> u8 {
        match self {
            FrameKind::Head => 1,
            FrameKind::Data => 2,
            FrameKind::Trail => 3,
        }
    }

    /// Returns the kind for a byte, or `None` for a byte no kind uses.
    pub fn from_u8(byte: u8) -> Option<FrameKind> {
        match byte {
            1 => Some(FrameKind::Head),
            2 => Some(FrameKind::Data),
            3 => Some(FrameKind::Trail),
            _ => None,
        }
    }
}

/// One decoded frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The type of the body.
    pub kind: FrameKind,
    /// The body, without the length and kind.
    pub body: Bytes,
}

/// The error returned when bytes cannot be decoded into a frame.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum FrameError {
    /// The kind byte matches none of `Head`, `Data` and `Trail`. The peer speaks another protocol
    /// or another version of this one.
    #[error("unknown frame kind {0:#04x}")]
    UnknownKind(u8),
    /// The frame's body is longer than the frame limit. Raise the limit on the receiver, or
    /// send smaller messages.
    #[error("frame of {size} bytes exceeds the {limit}-byte limit")]
    FrameTooLarge {
        /// The body length the frame announced.
        size: u64,
        /// The receiver's limit.
        limit: u64,
    },
    /// A head frame is longer than the head limit. Send less metadata.
    #[error("head of {size} bytes exceeds the {limit}-byte limit")]
    HeadTooLarge {
        /// The body length the head announced.
        size: u64,
        /// The receiver's limit.
        limit: u64,
    },
    /// The stream ended inside a frame, so the sender stopped or was cut off mid-write.
    #[error("stream ended inside a frame after {received} of {expected} bytes")]
    Truncated {
        /// Bytes of the frame received, header included.
        received: u64,
        /// Bytes the frame needed, header included, or 5 when the header itself was cut.
        expected: u64,
    },
}

/// Decodes frames from a byte buffer, checking kinds and size limits.
///
/// The decoder rejects an oversized frame as soon as its header arrives, so a receiver never
/// buffers more than `max_frame_size` bytes of body for a frame.
#[derive(Clone, Copy, Debug)]
pub struct FrameDecoder {
    max_frame_size: u32,
    max_head_size: u32,
}

impl FrameDecoder {
    /// Creates a decoder that accepts bodies up to `max_frame_size` bytes, and head bodies
    /// up to the smaller of `max_head_size` and `max_frame_size`.
    pub fn new(max_frame_size: u32, max_head_size: u32) -> FrameDecoder {
        FrameDecoder {
            max_frame_size,
            max_head_size,
        }
    }

    /// Removes one whole frame from the front of `buf`.
    ///
    /// Returns `Ok(None)` when `buf` holds only part of a frame; the caller reads more bytes
    /// and calls again. In that case the decoder reserves room in `buf` for the rest of the
    /// frame, so the next read can fill it without reallocating.
    ///
    /// # Errors
    ///
    /// [`FrameError::UnknownKind`], [`FrameError::FrameTooLarge`] or
    /// [`FrameError::HeadTooLarge`] as soon as the 5-byte header shows them. The stream
    /// cannot be resynchronised after an error, so the caller ends it.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if buf.len() < FRAME_HEADER_LEN {
            return Ok(None);
        }

        let size = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        let kind = FrameKind::from_u8(buf[4]).ok_or(FrameError::UnknownKind(buf[4]))?;
        self.check_size(kind, size)?;

        let total = FRAME_HEADER_LEN + size as usize;
        if buf.len() < total {
            buf.reserve(total - buf.len());
            return Ok(None);
        }

        buf.advance(FRAME_HEADER_LEN);
        let body = buf.split_to(size as usize).freeze();
        Ok(Some(Frame { kind, body }))
    }

    /// Splits one whole frame off the front of `buf` without copying its body.
    ///
    /// Returns `Ok(None)` and leaves `buf` as it was when `buf` contains only part of a
    /// frame. The caller then copies the rest into a [`BytesMut`] and goes on with
    /// [`decode`](Self::decode).
    ///
    /// # Errors
    ///
    /// The errors of [`decode`](Self::decode), as soon as the 5-byte header shows them.
    pub(crate) fn decode_shared(&self, buf: &mut Bytes) -> Result<Option<Frame>, FrameError> {
        if buf.len() < FRAME_HEADER_LEN {
            return Ok(None);
        }

        let size = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        let kind = FrameKind::from_u8(buf[4]).ok_or(FrameError::UnknownKind(buf[4]))?;
        self.check_size(kind, size)?;

        let total = FRAME_HEADER_LEN + size as usize;
        if buf.len() < total {
            return Ok(None);
        }

        buf.advance(FRAME_HEADER_LEN);
        let body = buf.split_to(size as usize);
        Ok(Some(Frame { kind, body }))
    }

    /// Returns the length, header included, of the frame that starts `bytes`, or the header
    /// length when `bytes` is shorter than a header. Only for a frame whose header
    /// [`decode_shared`](Self::decode_shared) has accepted, so its size is within the limits.
    pub(crate) fn partial_frame_len(bytes: &[u8]) -> usize {
        match bytes.first_chunk::<4>() {
            Some(size) if bytes.len() >= FRAME_HEADER_LEN => {
                FRAME_HEADER_LEN + u32::from_be_bytes(*size) as usize
            }
            _ => FRAME_HEADER_LEN,
        }
    }

    /// Removes one whole frame from `buf` after the stream has ended.
    ///
    /// Returns `Ok(None)` when `buf` is empty, meaning the stream ended cleanly between frames.
    ///
    /// # Errors
    ///
    /// [`FrameError::Truncated`] when bytes of an unfinished frame remain, and the errors of
    /// [`decode`](Self::decode).
    pub fn decode_eof(&self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if let Some(frame) = self.decode(buf)? {
            return Ok(Some(frame));
        }
        if buf.is_empty() {
            return Ok(None);
        }

        let expected = if buf.len() < FRAME_HEADER_LEN {
            FRAME_HEADER_LEN as u64
        } else {
            FRAME_HEADER_LEN as u64
                + u64::from(u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]))
        };
        Err(FrameError::Truncated {
            received: buf.len() as u64,
            expected,
        })
    }

    fn check_size(&self, kind: FrameKind, size: u32) -> Result<(), FrameError> {
        if size > self.max_frame_size {
            return Err(FrameError::FrameTooLarge {
                size: size.into(),
                limit: self.max_frame_size.into(),
            });
        }
        if kind == FrameKind::Head && size > self.max_head_size {
            return Err(FrameError::HeadTooLarge {
                size: size.into(),
                limit: self.max_head_size.into(),
            });
        }
        Ok(())
    }
}

/// Appends a frame header for a body of `body_len` bytes.
///
/// # Panics
///
/// Panics if `body_len` does not fit in 32 bits. Senders check their frame limit, which is a
/// `u32`, before they get here.
pub fn encode_header(kind: FrameKind, body_len: usize, dst: &mut BytesMut) {
    dst.reserve(FRAME_HEADER_LEN + body_len);
    dst.put_slice(&header_bytes(kind, body_len));
}

/// Returns the 5 header bytes of a frame with a body of `body_len` bytes.
///
/// # Panics
///
/// Panics if `body_len` does not fit in 32 bits, as [`encode_header`] does.
pub(crate) fn header_bytes(kind: FrameKind, body_len: usize) -> [u8; FRAME_HEADER_LEN] {
    let len = u32::try_from(body_len).expect("frame body length was checked against a u32 limit");
    let [a, b, c, d] = len.to_be_bytes();
    [a, b, c, d, kind.as_u8()]
}

/// Appends a whole frame to `dst`.
///
/// # Panics
///
/// Panics if `body` is 4 GiB or longer, as [`encode_header`] does.
pub fn encode_frame(kind: FrameKind, body: &[u8], dst: &mut BytesMut) {
    encode_header(kind, body.len(), dst);
    dst.extend_from_slice(body);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoder() -> FrameDecoder {
        FrameDecoder::new(1024, 64)
    }

    #[test]
    fn decode_returns_frames_in_order() {
        let mut buf = BytesMut::new();
        encode_frame(FrameKind::Head, b"head", &mut buf);
        encode_frame(FrameKind::Data, b"", &mut buf);
        encode_frame(FrameKind::Trail, b"trail", &mut buf);

        let first = decoder().decode(&mut buf).unwrap().unwrap();
        assert_eq!(first.kind, FrameKind::Head);
        assert_eq!(&first.body[..], b"head");
        let second = decoder().decode(&mut buf).unwrap().unwrap();
        assert_eq!(second.kind, FrameKind::Data);
        assert!(second.body.is_empty());
        let third = decoder().decode(&mut buf).unwrap().unwrap();
        assert_eq!(third.kind, FrameKind::Trail);
        assert_eq!(decoder().decode(&mut buf).unwrap(), None);
        assert!(buf.is_empty());
    }

    #[test]
    fn empty_data_frame_is_five_bytes() {
        let mut buf = BytesMut::new();
        encode_frame(FrameKind::Data, b"", &mut buf);
        assert_eq!(&buf[..], &[0, 0, 0, 0, 2]);
    }

    #[test]
    fn partial_frame_waits_for_more_bytes() {
        let mut whole = BytesMut::new();
        encode_frame(FrameKind::Data, b"payload", &mut whole);

        let mut buf = BytesMut::new();
        for (i, byte) in whole.iter().enumerate() {
            assert_eq!(decoder().decode(&mut buf).unwrap(), None, "after {i} bytes");
            buf.put_u8(*byte);
        }
        let frame = decoder().decode(&mut buf).unwrap().unwrap();
        assert_eq!(&frame.body[..], b"payload");
    }

    #[test]
    fn unknown_kind_is_rejected() {
        let mut buf = BytesMut::from(&[0, 0, 0, 1, 9, 0][..]);
        assert_eq!(decoder().decode(&mut buf), Err(FrameError::UnknownKind(9)));
    }

    #[test]
    fn oversized_frame_is_rejected_from_its_header() {
        let mut buf = BytesMut::from(&[0, 0, 4, 1, 2][..]);
        let error = decoder().decode(&mut buf).unwrap_err();
        assert_eq!(
            error,
            FrameError::FrameTooLarge {
                size: 1025,
                limit: 1024
            }
        );
        assert_eq!(
            error.to_string(),
            "frame of 1025 bytes exceeds the 1024-byte limit"
        );
    }

    #[test]
    fn oversized_head_is_rejected() {
        let mut buf = BytesMut::from(&[0, 0, 0, 65, 1][..]);
        assert_eq!(
            decoder().decode(&mut buf),
            Err(FrameError::HeadTooLarge {
                size: 65,
                limit: 64
            })
        );
    }

    #[test]
    fn frame_at_limit_is_accepted() {
        let mut buf = BytesMut::new();
        encode_frame(FrameKind::Data, &[7; 1024], &mut buf);
        assert_eq!(
            decoder().decode(&mut buf).unwrap().unwrap().body.len(),
            1024
        );
    }

    #[test]
    fn eof_inside_frame_is_truncated() {
        let mut buf = BytesMut::from(&[0, 0, 0, 4, 2, 1, 2][..]);
        assert_eq!(
            decoder().decode_eof(&mut buf),
            Err(FrameError::Truncated {
                received: 7,
                expected: 9
            })
        );
        let mut buf = BytesMut::from(&[0, 0][..]);
        assert_eq!(
            decoder().decode_eof(&mut buf),
            Err(FrameError::Truncated {
                received: 2,
                expected: 5
            })
        );
    }

    #[test]
    fn decode_shared_leaves_partial_frame() {
        let mut wire = BytesMut::new();
        encode_frame(FrameKind::Head, b"head", &mut wire);
        encode_frame(FrameKind::Data, b"payload", &mut wire);
        let mut whole = wire.freeze();
        let mut partial = whole.slice(..whole.len() - 1);

        let head = decoder().decode_shared(&mut whole).unwrap().unwrap();
        assert_eq!(head.kind, FrameKind::Head);
        assert_eq!(&head.body[..], b"head");
        let data = decoder().decode_shared(&mut whole).unwrap().unwrap();
        assert_eq!(&data.body[..], b"payload");
        assert!(whole.is_empty());

        decoder().decode_shared(&mut partial).unwrap().unwrap();
        let left = partial.len();
        assert_eq!(decoder().decode_shared(&mut partial).unwrap(), None);
        assert_eq!(partial.len(), left);
    }

    #[test]
    fn decode_shared_rejects_like_decode() {
        let mut oversized = Bytes::from_static(&[0, 0, 4, 1, 2]);
        assert!(matches!(
            decoder().decode_shared(&mut oversized),
            Err(FrameError::FrameTooLarge { size: 1025, .. })
        ));
        let mut unknown = Bytes::from_static(&[0, 0, 0, 1, 9, 0]);
        assert_eq!(
            decoder().decode_shared(&mut unknown),
            Err(FrameError::UnknownKind(9))
        );
    }

    #[test]
    fn eof_between_frames_is_clean() {
        let mut buf = BytesMut::new();
        assert_eq!(decoder().decode_eof(&mut buf), Ok(None));
    }

    /// A small deterministic generator so the randomized test needs no dependency and every
    /// failure can be replayed from its printed seed.
    struct SplitMix64(u64);

    impl SplitMix64 {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        fn below(&mut self, bound: u64) -> u64 {
            self.next() % bound
        }
    }

    /// Feeds valid frame sequences in random chunk sizes and checks that they decode back
    /// unchanged, then feeds random bytes and checks that the decoder never panics and never
    /// returns a frame over its limits.
    #[test]
    fn randomized_chunks_decode_like_whole_input() {
        let decoder = FrameDecoder::new(300, 40);
        for seed in 0..500u64 {
            let mut rng = SplitMix64(seed);

            let mut frames = Vec::new();
            let mut wire = BytesMut::new();
            for _ in 0..rng.below(8) {
                let kind = FrameKind::from_u8(1 + rng.below(3) as u8).unwrap();
                let limit = if kind == FrameKind::Head { 40 } else { 300 };
                let body: Vec<u8> = (0..rng.below(limit + 1))
                    .map(|_| rng.next() as u8)
                    .collect();
                encode_frame(kind, &body, &mut wire);
                frames.push(Frame {
                    kind,
                    body: Bytes::from(body),
                });
            }

            let mut decoded = Vec::new();
            let mut buf = BytesMut::new();
            let mut rest = wire.freeze();
            while !rest.is_empty() {
                let chunk = 1 + rng.below(rest.len() as u64) as usize;
                buf.extend_from_slice(&rest.split_to(chunk));
                while let Some(frame) = decoder.decode(&mut buf).unwrap() {
                    decoded.push(frame);
                }
            }
            assert_eq!(decoder.decode_eof(&mut buf), Ok(None), "seed {seed}");
            assert_eq!(decoded, frames, "seed {seed}");
        }
    }

    #[test]
    fn randomized_garbage_never_panics() {
        let decoder = FrameDecoder::new(300, 40);
        for seed in 0..2000u64 {
            let mut rng = SplitMix64(seed);
            let len = rng.below(64) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            if len >= 4 && rng.below(2) == 0 {
                // Keep lengths small half the time so that whole frames also appear.
                bytes[0] = 0;
                bytes[1] = 0;
                bytes[2] = 0;
            }

            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(frame)) = decoder.decode_eof(&mut buf) {
                let limit = if frame.kind == FrameKind::Head {
                    40
                } else {
                    300
                };
                assert!(frame.body.len() <= limit, "seed {seed}");
            }
        }
    }
}
