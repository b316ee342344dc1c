//! The byte streams a call runs on, and frame reading and writing over them.
//!
//! A call's stream is either a QUIC stream pair, the fast path, or any `AsyncRead` and
//! `AsyncWrite` pair. The frame logic itself lives in [`crate::frame`]; this module only
//! moves bytes and turns transport failures into [`Status`] values.

use std::future::poll_fn;
use std::io;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use quinn::{ConnectionError, VarInt};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tracing::trace;

use crate::config::RpcConfig;
use crate::frame::{FRAME_HEADER_LEN, Frame, FrameDecoder, FrameError, FrameKind, encode_frame};
use crate::message::{Message, put_data_frame, with_encoded};
use crate::status::{Code, Status};
use crate::wire::{HeadFields, OK_TRAIL_BODY, Trail, encode_head_frame, encode_trail_frame};

/// Application error codes for QUIC `RESET_STREAM` and `STOP_SENDING`.
pub(crate) mod stream_code {
    /// The reader went away without a reason; quinn sends this when a stream is dropped.
    pub const DROPPED: u32 = 0;
    /// The call was cancelled: the caller dropped it, or the server dropped the handler.
    pub const CANCELLED: u32 = 1;
    /// The server dropped the handler because the call's deadline passed.
    pub const DEADLINE_EXCEEDED: u32 = 2;
    /// The stream carried bytes that break the protocol, and the reader gave up on it.
    pub const PROTOCOL_ERROR: u32 = 3;
    /// The server stopped reading a request stream because its handler finished; the reply
    /// carries the call's status.
    pub const REQUEST_NOT_READ: u32 = 4;
}

/// Bytes to have free in the read buffer before each read from a transport other than QUIC.
const READ_CHUNK: usize = 16 * 1024;

/// Room a frame writer leaves after a message for the plain success trail that usually
/// follows it (12 bytes), so a unary reply is one allocation.
const TRAIL_ROOM: usize = 16;

/// Bytes a streaming call's writer allocates at a time (8 KiB), so that a stream of small
/// messages shares one allocation among several instead of allocating once per message.
/// An idle stream keeps up to this much until its next message or its end.
const STREAM_BUFFER: usize = 8 * 1024;

/// The receiving half of a call's stream.
pub(crate) enum RecvHalf {
    Quic(quinn::RecvStream),
    Io(Pin<Box<dyn AsyncRead + Send>>),
}

impl RecvHalf {
    /// Tells the sender to stop, where the transport can; other transports just drop.
    pub(crate) fn stop(&mut self, code: u32) {
        if let RecvHalf::Quic(stream) = self {
            let _ = stream.stop(VarInt::from_u32(code));
        }
    }
}

impl AsyncRead for RecvHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            RecvHalf::Quic(stream) => Pin::new(stream).poll_read(cx, buf),
            RecvHalf::Io(stream) => stream.as_mut().poll_read(cx, buf),
        }
    }
}

/// A QUIC send stream that is reset, not finished, when dropped before `finish`.
///
/// quinn finishes a dropped send stream, which would make a half-written request look
/// complete to the server. Resetting it signals to the server that the call was abandoned.
pub(crate) struct QuicSend {
    stream: quinn::SendStream,
    done: bool,
}

impl QuicSend {
    pub(crate) fn new(stream: quinn::SendStream) -> QuicSend {
        QuicSend {
            stream,
            done: false,
        }
    }

    /// Returns a future that resolves when the peer stops reading or the connection ends.
    pub(crate) fn stopped(
        &self,
    ) -> impl Future<Output = Result<Option<VarInt>, quinn::StoppedError>> + Send + 'static + use<>
    {
        self.stream.stopped()
    }
}

impl Drop for QuicSend {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.stream.reset(VarInt::from_u32(stream_code::CANCELLED));
        }
    }
}

/// The sending half of a call's stream.
pub(crate) enum SendHalf {
    Quic(QuicSend),
    Io(Pin<Box<dyn AsyncWrite + Send>>),
}

impl SendHalf {
    /// Sends all of `bytes`.
    async fn write(&mut self, bytes: Bytes) -> io::Result<()> {
        match self {
            SendHalf::Quic(send) => send
                .stream
                .write_chunk(bytes)
                .await
                .map_err(io::Error::from),
            SendHalf::Io(stream) => stream.write_all(&bytes).await,
        }
    }

    /// Ends the stream cleanly: QUIC's FIN, or shutdown for other transports.
    async fn finish(&mut self) -> io::Result<()> {
        match self {
            SendHalf::Quic(send) => {
                send.done = true;
                // quinn reports an error only when the stream was already finished or reset,
                // and then there is nothing left to end.
                let _ = send.stream.finish();
                Ok(())
            }
            SendHalf::Io(stream) => stream.shutdown().await,
        }
    }

    /// Abandons the stream: QUIC's RESET_STREAM with `code`. Other transports can only drop.
    pub(crate) fn reset(&mut self, code: u32) {
        if let SendHalf::Quic(send) = self {
            send.done = true;
            let _ = send.stream.reset(VarInt::from_u32(code));
        }
    }
}

/// The error returned when reading a frame fails.
#[derive(Debug)]
pub(crate) enum ReadFailure {
    /// The bytes break the framing.
    Frame(FrameError),
    /// The transport failed or the peer reset the stream.
    Stream(io::Error),
}

/// Reads frames from a call's receiving half.
///
/// On QUIC, the reader takes quinn's received chunks as they are, so a frame that lies whole
/// in one chunk reaches the caller without a copy. Only a frame split across chunks is
/// copied into `buf`, and only then does `buf` allocate.
pub(crate) struct FrameReader {
    recv: RecvHalf,
    buf: BytesMut,
    /// The undecoded rest of the last QUIC chunk. Empty whenever `buf` is not.
    chunk: Bytes,
    decoder: FrameDecoder,
    eof: bool,
}

impl FrameReader {
    pub(crate) fn new(recv: RecvHalf, config: &RpcConfig) -> FrameReader {
        FrameReader {
            recv,
            buf: BytesMut::new(),
            chunk: Bytes::new(),
            decoder: FrameDecoder::new(config.max_frame_size, config.effective_head_limit()),
            eof: false,
        }
    }

    /// Polls for the next frame; `None` means the stream ended cleanly between frames.
    pub(crate) fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Frame>, ReadFailure>> {
        loop {
            match self.decode_next() {
                Ok(Some(frame)) => {
                    trace!(kind = ?frame.kind, len = frame.body.len(), "frame received");
                    return Poll::Ready(Ok(Some(frame)));
                }
                Ok(None) if self.eof => return Poll::Ready(Ok(None)),
                Ok(None) => {}
                Err(error) => return Poll::Ready(Err(ReadFailure::Frame(error))),
            }

            if let Err(error) = ready!(self.poll_fill(cx)) {
                return Poll::Ready(Err(ReadFailure::Stream(error)));
            }
        }
    }

    /// Decodes the next frame from the bytes already received: first from the QUIC chunk
    /// without copying, then from `buf`.
    fn decode_next(&mut self) -> Result<Option<Frame>, FrameError> {
        if !self.chunk.is_empty() {
            if let Some(frame) = self.decoder.decode_shared(&mut self.chunk)? {
                return Ok(Some(frame));
            }
            // The chunk ends inside a frame, so the frame's next bytes must join it in `buf`,
            // which gets room for the whole frame at once when its header is in the chunk.
            self.buf
                .reserve(FrameDecoder::partial_frame_len(&self.chunk).max(self.chunk.len()));
            self.buf.extend_from_slice(&self.chunk);
            self.chunk.clear();
        }
        if self.eof {
            self.decoder.decode_eof(&mut self.buf)
        } else {
            self.decoder.decode(&mut self.buf)
        }
    }

    /// Receives more bytes, setting `eof` when the stream has ended.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let RecvHalf::Quic(stream) = &mut self.recv {
            // `read_chunk` keeps no state between polls, so a fresh future per poll loses
            // nothing when it is pending.
            let read = pin!(stream.read_chunk(usize::MAX, true));
            match ready!(read.poll(cx)) {
                Ok(Some(chunk)) if self.buf.is_empty() => self.chunk = chunk.bytes,
                Ok(Some(chunk)) => self.buf.extend_from_slice(&chunk.bytes),
                Ok(None) => self.eof = true,
                Err(error) => return Poll::Ready(Err(error.into())),
            }
            return Poll::Ready(Ok(()));
        }

        if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
            self.buf.reserve(READ_CHUNK);
        }
        match ready!(tokio_util::io::poll_read_buf(
            Pin::new(&mut self.recv),
            cx,
            &mut self.buf
        )) {
            Ok(0) => self.eof = true,
            Ok(_) => {}
            Err(error) => return Poll::Ready(Err(error)),
        }
        Poll::Ready(Ok(()))
    }

    /// Reads the next frame; `None` means the stream ended cleanly between frames.
    pub(crate) async fn next_frame(&mut self) -> Result<Option<Frame>, ReadFailure> {
        poll_fn(|cx| self.poll_frame(cx)).await
    }

    /// Tells the sender to stop sending, where the transport can.
    pub(crate) fn stop(&mut self, code: u32) {
        self.recv.stop(code);
    }

    /// Takes the end of the stream if it has already arrived, without waiting, for a reader
    /// done with its last frame. A QUIC stream dropped before its end is read tells the
    /// sender to stop, which costs a frame each way, though the end usually arrives in the
    /// same packet as the last frame.
    pub(crate) fn take_end_if_ready(&mut self) {
        let quic = matches!(self.recv, RecvHalf::Quic(_));
        if !quic || self.eof || !self.chunk.is_empty() || !self.buf.is_empty() {
            return;
        }
        let mut cx = Context::from_waker(std::task::Waker::noop());
        // Bytes past the last frame break the protocol, and dropping the reader then stops
        // the sender.
        let _ = self.poll_fill(&mut cx);
    }
}

/// Writes frames to a call's sending half, batching frames queued between flushes.
///
/// The buffer is sized before each head or message is pushed, from what the push writes, so
/// such a push allocates at most once instead of growing the buffer piece by piece.
pub(crate) struct FrameWriter {
    send: SendHalf,
    buf: BytesMut,
    max_frame_size: u32,
    max_head_size: u32,
    /// The minimum size of an allocation when a push finds the buffer full: 0 for a unary
    /// call's writer, [`STREAM_BUFFER`] for a stream's.
    min_allocation: usize,
}

impl FrameWriter {
    pub(crate) fn new(send: SendHalf, config: &RpcConfig) -> FrameWriter {
        FrameWriter {
            send,
            buf: BytesMut::new(),
            max_frame_size: config.max_frame_size,
            max_head_size: config.effective_head_limit(),
            min_allocation: 0,
        }
    }

    /// Makes the writer allocate [`STREAM_BUFFER`] bytes at a time, for a call that sends
    /// many messages.
    pub(crate) fn for_stream(mut self) -> FrameWriter {
        self.min_allocation = STREAM_BUFFER;
        self
    }

    /// Makes room for `len` more bytes, allocating at least `min_allocation` when the buffer
    /// has too little left.
    fn make_room(&mut self, len: usize) {
        if self.buf.capacity() - self.buf.len() < len {
            self.buf.reserve(len.max(self.min_allocation));
        }
    }

    /// Queues a head frame.
    pub(crate) fn push_head(&mut self, head: &HeadFields<'_>) -> Result<(), Status> {
        self.make_room(FRAME_HEADER_LEN + head.encoded_len_bound());
        let len = encode_head_frame(head, self.max_head_size, &mut self.buf)?;
        trace!(len, "head frame queued");
        Ok(())
    }

    /// Queues a head frame and a data frame holding `message`: a whole request of a unary or
    /// server-streaming call.
    pub(crate) fn push_request<M: Message>(
        &mut self,
        head: &HeadFields<'_>,
        message: &M,
    ) -> Result<(), Status> {
        with_encoded(message, self.max_frame_size, |body| {
            self.buf
                .reserve(2 * FRAME_HEADER_LEN + head.encoded_len_bound() + body.len());
            let len = encode_head_frame(head, self.max_head_size, &mut self.buf)?;
            trace!(len, "head frame queued");
            put_data_frame(body, &mut self.buf);
            Ok(())
        })?
    }

    /// Queues a data frame holding `message`.
    pub(crate) fn push_message<M: Message>(&mut self, message: &M) -> Result<(), Status> {
        with_encoded(message, self.max_frame_size, |body| {
            self.make_room(FRAME_HEADER_LEN + body.len() + TRAIL_ROOM);
            put_data_frame(body, &mut self.buf);
        })
    }

    /// Queues a trail frame. A trail over the frame limit, which only a huge message or
    /// huge metadata can make, is replaced by a short `ResourceExhausted` trail.
    pub(crate) fn push_trail(&mut self, trail: &Trail) {
        if trail.is_plain_ok() {
            encode_frame(FrameKind::Trail, &OK_TRAIL_BODY, &mut self.buf);
            return;
        }
        if let Err(status) = encode_trail_frame(trail, self.max_frame_size, &mut self.buf) {
            // The replacement holds only a code and a message of about 60 bytes.
            let fallback = Trail::from(status);
            let _ = encode_trail_frame(&fallback, u32::MAX, &mut self.buf);
        }
    }

    /// Sends the queued frames, waiting while flow control blocks them.
    pub(crate) async fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let bytes = self.buf.split().freeze();
        trace!(len = bytes.len(), "frames sent");
        self.send.write(bytes).await
    }

    /// Sends the queued frames and ends the stream cleanly.
    pub(crate) async fn finish(&mut self) -> io::Result<()> {
        self.flush().await?;
        self.send.finish().await
    }

    /// Abandons the stream, dropping anything queued.
    pub(crate) fn reset(&mut self, code: u32) {
        self.buf.clear();
        self.send.reset(code);
    }
}

/// Returns whether a write failed because the peer stopped reading, in which case its reply
/// usually explains why.
pub(crate) fn is_stopped(error: &io::Error) -> bool {
    if let Some(error) = inner::<quinn::WriteError>(error) {
        return matches!(error, quinn::WriteError::Stopped(_));
    }
    matches!(
        error.kind(),
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
    )
}

/// Converts a transport failure on a call's stream into the caller's status.
pub(crate) fn status_from_io(error: &io::Error) -> Status {
    if let Some(error) = inner::<quinn::ReadError>(error) {
        return match error {
            quinn::ReadError::Reset(code) => status_from_reset(code.into_inner()),
            quinn::ReadError::ConnectionLost(error) => status_from_connection(error),
            other => Status::internal(format!("failed to read stream: {other}")),
        };
    }
    if let Some(error) = inner::<quinn::WriteError>(error) {
        return match error {
            quinn::WriteError::Stopped(code) => status_from_reset(code.into_inner()),
            quinn::WriteError::ConnectionLost(error) => status_from_connection(error),
            other => Status::internal(format!("failed to write stream: {other}")),
        };
    }
    Status::unavailable(format!("stream failed: {error}"))
}

/// Converts the code a peer reset or stopped a stream with into a status.
pub(crate) fn status_from_reset(code: u64) -> Status {
    match u32::try_from(code) {
        Ok(stream_code::DEADLINE_EXCEEDED) => {
            Status::deadline_exceeded("the peer dropped the call at its deadline")
        }
        Ok(stream_code::PROTOCOL_ERROR) => {
            Status::internal("the peer rejected the stream as malformed")
        }
        Ok(stream_code::REQUEST_NOT_READ) => Status::new(
            Code::Aborted,
            "the server stopped reading the request stream; its reply carries the status",
        ),
        Ok(stream_code::DROPPED | stream_code::CANCELLED) => {
            Status::cancelled("the peer cancelled the call")
        }
        _ => Status::cancelled(format!("the peer reset the stream with code {code}")),
    }
}

/// Converts the reason a connection ended into a status.
///
/// TLS alerts become `Unauthenticated`: the peer rejected our certificate or we rejected
/// theirs. TLS 1.3 lets a client finish its handshake before the server has checked the
/// client's certificate, so the server's rejection only shows here, on first use.
pub(crate) fn status_from_connection(error: &ConnectionError) -> Status {
    match error {
        ConnectionError::TransportError(error) if is_crypto_code(u64::from(error.code)) => {
            Status::unauthenticated(format!("TLS handshake failed: {error}"))
        }
        ConnectionError::ConnectionClosed(close) if is_crypto_code(u64::from(close.error_code)) => {
            Status::unauthenticated(format!("the peer rejected the TLS handshake: {close}"))
        }
        ConnectionError::Reset => Status::unavailable(
            "connection reset by the peer, which has probably restarted without it",
        ),
        ConnectionError::TimedOut => Status::unavailable("connection timed out"),
        ConnectionError::LocallyClosed => Status::unavailable("endpoint closed"),
        ConnectionError::ApplicationClosed(close) => {
            Status::unavailable(format!("the peer closed the connection: {close}"))
        }
        other => Status::unavailable(format!("connection lost: {other}")),
    }
}

/// Returns whether a QUIC transport error code carries a TLS alert (RFC 9001, section 4.8:
/// codes 0x100 to 0x1ff).
fn is_crypto_code(code: u64) -> bool {
    (0x100..=0x1ff).contains(&code)
}

fn inner<E: std::error::Error + 'static>(error: &io::Error) -> Option<&E> {
    error.get_ref().and_then(|inner| inner.downcast_ref::<E>())
}

/// Converts a framing error into the status that ends the stream.
pub(crate) fn status_from_frame_error(error: &FrameError) -> Status {
    let code = match error {
        FrameError::FrameTooLarge { .. } | FrameError::HeadTooLarge { .. } => {
            Code::ResourceExhausted
        }
        FrameError::UnknownKind(_) | FrameError::Truncated { .. } => Code::InvalidArgument,
    };
    Status::new(code, error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Raw;
    use crate::wire::Head;
    use tokio::io::AsyncWriteExt;

    fn pair() -> (FrameReader, FrameWriter) {
        let (a, b) = tokio::io::duplex(64);
        let config = RpcConfig::default();
        let reader = FrameReader::new(RecvHalf::Io(Box::pin(a)), &config);
        let writer = FrameWriter::new(SendHalf::Io(Box::pin(b)), &config);
        (reader, writer)
    }

    #[tokio::test]
    async fn frames_cross_a_small_duplex_pipe() {
        let (mut reader, mut writer) = pair();
        let sender = tokio::spawn(async move {
            writer.push_head(&Head::new("s", "m").fields()).unwrap();
            writer
                .push_message(&Raw(Bytes::from(vec![9; 1000])))
                .unwrap();
            writer.push_trail(&Trail::ok());
            writer.finish().await.unwrap();
        });

        let head = reader.next_frame().await.unwrap().unwrap();
        assert_eq!(head.kind, FrameKind::Head);
        let data = reader.next_frame().await.unwrap().unwrap();
        assert_eq!(data.body.len(), 1000);
        let trail = reader.next_frame().await.unwrap().unwrap();
        assert_eq!(trail.kind, FrameKind::Trail);
        assert!(reader.next_frame().await.unwrap().is_none());
        sender.await.unwrap();
    }

    #[test]
    fn oversized_head_queues_nothing() {
        let mut config = RpcConfig::default();
        config.max_head_size(64);
        let (_, duplex) = tokio::io::duplex(64);
        let mut writer = FrameWriter::new(SendHalf::Io(Box::pin(duplex)), &config);
        let mut head = Head::new("orders", "place");
        head.metadata.insert("big", "x".repeat(100));

        let error = writer
            .push_request(&head.fields(), &Raw(Bytes::from_static(b"order")))
            .unwrap_err();
        assert_eq!(error.code(), Code::ResourceExhausted);
        assert!(error.message().contains("head frame"), "{error}");
        assert!(writer.buf.is_empty());
    }

    #[tokio::test]
    async fn stream_ending_mid_frame_is_truncated() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut reader = FrameReader::new(RecvHalf::Io(Box::pin(a)), &RpcConfig::default());
        let mut bytes = BytesMut::new();
        encode_frame(FrameKind::Data, b"abcdef", &mut bytes);
        b.write_all(&bytes[..8]).await.unwrap();
        drop(b);

        match reader.next_frame().await {
            Err(ReadFailure::Frame(FrameError::Truncated { received, expected })) => {
                assert_eq!(received, 8);
                assert_eq!(expected, 11);
            }
            other => panic!("expected a truncated frame, got {other:?}"),
        }
    }

    #[test]
    fn tls_alert_codes_are_crypto() {
        assert!(is_crypto_code(0x100 + 42));
        assert!(!is_crypto_code(0x0a));
    }
}
