//! Feeds arbitrary bytes to the frame decoder in arbitrary chunk sizes, and the bodies of
//! head and trail frames to their MessagePack decoders.
//!
//! Checks that nothing panics, that no frame exceeds the limits, and that chunked input
//! decodes to the same frames as the whole input at once. murmur reads heads and trails
//! directly and falls back to serde, so it also checks that they decode exactly as
//! `rmp_serde` alone decodes them.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use murmur_rpc::{Frame, FrameDecoder, FrameKind, Head, Trail};

const MAX_FRAME: u32 = 4096;
const MAX_HEAD: u32 = 512;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk_len, input)) = data.split_first() else {
        return;
    };
    let decoder = FrameDecoder::new(MAX_FRAME, MAX_HEAD);

    let chunked = decode_in_chunks(&decoder, input, usize::from(chunk_len).max(1));
    let whole = decode_in_chunks(&decoder, input, input.len().max(1));
    assert_eq!(chunked, whole, "chunking changed the decoded frames");

    for frame in chunked.0 {
        let limit = match frame.kind {
            FrameKind::Head => MAX_HEAD,
            FrameKind::Data | FrameKind::Trail => MAX_FRAME,
        };
        assert!(frame.body.len() <= limit as usize);
        match frame.kind {
            FrameKind::Head => assert_eq!(
                Head::decode(&frame.body).ok(),
                rmp_serde::from_slice::<Head>(&frame.body).ok()
            ),
            FrameKind::Trail => {
                let trail = Trail::decode(&frame.body).ok();
                assert_eq!(trail, rmp_serde::from_slice::<Trail>(&frame.body).ok());
                drop(trail.map(Trail::into_result));
            }
            FrameKind::Data => {}
        }
    }
});

/// Decodes `input` fed in pieces of `chunk_len` bytes, then the end of the stream. Returns
/// the frames and whether decoding stopped at an error.
fn decode_in_chunks(decoder: &FrameDecoder, input: &[u8], chunk_len: usize) -> (Vec<Frame>, bool) {
    let mut frames = Vec::new();
    let mut buf = BytesMut::new();
    for piece in input.chunks(chunk_len) {
        buf.extend_from_slice(piece);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(_) => return (frames, true),
            }
        }
    }
    loop {
        match decoder.decode_eof(&mut buf) {
            Ok(Some(frame)) => frames.push(frame),
            Ok(None) => return (frames, false),
            Err(_) => return (frames, true),
        }
    }
}
