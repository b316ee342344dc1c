//! Message streams of a call: [`Streaming`] to receive, [`ReplySink`] and [`RequestSink`] to
//! send.

use std::fmt;
use std::future::poll_fn;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};

use futures_core::Stream;
use tokio::sync::oneshot;
use tokio::time::{Instant, Sleep};

use crate::context::Context as CallContext;
use crate::frame::FrameKind;
use crate::message::Message;
use crate::metadata::Metadata;
use crate::stats::Counters;
use crate::status::Status;
use crate::stream::{
    FrameReader, FrameWriter, ReadFailure, is_stopped, status_from_frame_error, status_from_io,
    stream_code,
};
use crate::wire::{Trail, kind_name};

/// The side of the call that a [`Streaming`] reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    /// The server reads the caller's request messages: `Data* FIN`.
    Request,
    /// The caller reads the server's reply: `Data* Trail FIN`.
    Reply,
}

enum State {
    Open,
    Ended,
    Failed(Status),
}

/// A stream of incoming messages: the requests a handler receives, or the replies a caller
/// receives.
///
/// Read it with [`message`](Self::message) or as a [`Stream`]. On the caller's side the
/// stream ends with the server's status: `Ok(None)` when the call succeeded, otherwise the
/// server's error. The caller's deadline applies to every read.
pub struct Streaming<T> {
    reader: FrameReader,
    side: Side,
    state: State,
    deadline: Option<Pin<Box<Sleep>>>,
    trailers: Option<Metadata>,
    counters: Arc<Counters>,
    failure: Option<Arc<OnceLock<Status>>>,
    cancel_on_loss: Option<CallContext>,
    _message: PhantomData<fn() -> T>,
}

impl<T: Message> Streaming<T> {
    pub(crate) fn new(
        reader: FrameReader,
        side: Side,
        deadline: Option<Instant>,
        counters: Arc<Counters>,
        failure: Option<Arc<OnceLock<Status>>>,
    ) -> Streaming<T> {
        Streaming {
            reader,
            side,
            state: State::Open,
            deadline: deadline.map(|deadline| Box::pin(tokio::time::sleep_until(deadline))),
            trailers: None,
            counters,
            failure,
            cancel_on_loss: None,
            _message: PhantomData,
        }
    }

    /// Cancels the call of `context` when the sender resets the stream or the connection is
    /// lost, which on a request stream means the caller abandoned the call.
    pub(crate) fn cancel_on_loss(mut self, context: CallContext) -> Streaming<T> {
        self.cancel_on_loss = Some(context);
        self
    }

    /// Receives the next message, or `None` once the stream has ended successfully.
    ///
    /// # Errors
    ///
    /// - the server's status when it ends the call with an error;
    /// - `DeadlineExceeded` when the caller's deadline passes;
    /// - `InvalidArgument`, `ResourceExhausted` or `Internal` for frames that break the
    ///   protocol or a limit;
    /// - `Unavailable` or `Cancelled` when the connection or stream is lost.
    ///
    /// After an error every further call returns it again.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a message is never lost when the future is dropped before it completes.
    pub async fn message(&mut self) -> Result<Option<T>, Status> {
        poll_fn(|cx| self.poll_message(cx)).await
    }

    /// Returns the server's trailing metadata once a reply stream has ended successfully.
    pub fn trailers(&self) -> Option<&Metadata> {
        self.trailers.as_ref()
    }

    fn poll_message(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<T>, Status>> {
        match &self.state {
            State::Open => {}
            State::Ended => return Poll::Ready(Ok(None)),
            State::Failed(status) => return Poll::Ready(Err(status.clone())),
        }

        let polled = self.reader.poll_frame(cx);
        let read = match polled {
            Poll::Ready(read) => read,
            Poll::Pending => {
                if let Some(deadline) = &mut self.deadline {
                    ready!(deadline.as_mut().poll(cx));
                    let status = Status::deadline_exceeded("deadline exceeded while reading");
                    return Poll::Ready(Err(self.fail(status, stream_code::DEADLINE_EXCEEDED)));
                }
                return Poll::Pending;
            }
        };

        Poll::Ready(match read {
            Ok(Some(frame)) => self.accept_frame(frame.kind, frame.body),
            Ok(None) if self.side == Side::Request => {
                self.state = State::Ended;
                Ok(None)
            }
            Ok(None) => {
                let status = Status::internal("the reply stream ended without a trail frame");
                Err(self.fail(status, stream_code::PROTOCOL_ERROR))
            }
            Err(ReadFailure::Frame(error)) => {
                self.counters.count_frame_error(&error);
                let status = status_from_frame_error(&error);
                Err(self.fail(status, stream_code::PROTOCOL_ERROR))
            }
            Err(ReadFailure::Stream(error)) => {
                if let Some(context) = &self.cancel_on_loss {
                    context.cancel();
                }
                let status = status_from_io(&error);
                Err(self.fail(status, stream_code::CANCELLED))
            }
        })
    }

    fn accept_frame(&mut self, kind: FrameKind, body: bytes::Bytes) -> Result<Option<T>, Status> {
        match (self.side, kind) {
            (_, FrameKind::Data) => match T::decode(body) {
                Ok(message) => Ok(Some(message)),
                Err(status) => {
                    let status = match self.side {
                        Side::Request => status,
                        Side::Reply => Status::internal(status.message()),
                    };
                    Err(self.fail(status, stream_code::PROTOCOL_ERROR))
                }
            },
            (Side::Reply, FrameKind::Trail) => {
                let outcome = Trail::decode(&body).and_then(Trail::into_result);
                match outcome {
                    Ok(trailers) => {
                        self.trailers = Some(trailers);
                        self.state = State::Ended;
                        Ok(None)
                    }
                    Err(status) => {
                        self.state = State::Failed(status.clone());
                        Err(status)
                    }
                }
            }
            (side, kind) => {
                Counters::add(&self.counters.unexpected_frames);
                let place = match side {
                    Side::Request => "request",
                    Side::Reply => "reply",
                };
                let status = Status::invalid_argument(format!(
                    "unexpected {} frame in a {place}",
                    kind_name(kind)
                ));
                Err(self.fail(status, stream_code::PROTOCOL_ERROR))
            }
        }
    }

    /// Ends the stream with `status`, asks the sender to stop, and returns the status.
    fn fail(&mut self, status: Status, stop_code: u32) -> Status {
        self.reader.stop(stop_code);
        if let Some(failure) = &self.failure {
            let _ = failure.set(status.clone());
        }
        self.state = State::Failed(status.clone());
        status
    }
}

impl<T: Message> Stream for Streaming<T> {
    type Item = Result<T, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if matches!(this.state, State::Failed(_)) {
            return Poll::Ready(None);
        }
        this.poll_message(cx).map(Result::transpose)
    }
}

impl<T> Drop for Streaming<T> {
    fn drop(&mut self) {
        if self.side == Side::Request && matches!(self.state, State::Open) {
            self.reader.stop(stream_code::REQUEST_NOT_READ);
        }
    }
}

impl<T> fmt::Debug for Streaming<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Streaming")
            .field("side", &self.side)
            .finish_non_exhaustive()
    }
}

/// The writer that a [`ReplySink`] returns to the server when the handler drops it.
pub(crate) struct ReturnedWriter {
    pub(crate) writer: FrameWriter,
    pub(crate) failure: Option<Status>,
}

/// Sends a handler's reply messages on a streaming call.
///
/// Each [`send`](Self::send) waits until QUIC flow control accepts the message, so a slow
/// caller slows the handler instead of making the server buffer without bound. The server
/// writes the call's status after the handler has returned and dropped the sink.
pub struct ReplySink<T> {
    writer: Option<FrameWriter>,
    home: Option<oneshot::Sender<ReturnedWriter>>,
    failure: Option<Status>,
    _message: PhantomData<fn(T)>,
}

impl<T: Message> ReplySink<T> {
    pub(crate) fn new(writer: FrameWriter, home: oneshot::Sender<ReturnedWriter>) -> ReplySink<T> {
        ReplySink {
            writer: Some(writer.for_stream()),
            home: Some(home),
            failure: None,
            _message: PhantomData,
        }
    }

    /// Sends one reply message.
    ///
    /// # Errors
    ///
    /// `ResourceExhausted` when the encoded message is over the frame limit; the call then
    /// ends with that status. `Cancelled` or `Unavailable` when the caller went away. After
    /// an error every further call returns it again, and the handler should return.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: dropping the future can leave part of a message sent, so the server
    /// then resets the stream instead of ending it with a status.
    pub async fn send(&mut self, message: &T) -> Result<(), Status> {
        if let Some(failure) = &self.failure {
            return Err(failure.clone());
        }
        let Some(writer) = self.writer.as_mut() else {
            return Err(Status::internal("reply sink used after it was closed"));
        };

        if let Err(status) = writer.push_message(message) {
            self.failure = Some(status.clone());
            return Err(status);
        }
        if let Err(error) = writer.flush().await {
            let status = if is_stopped(&error) {
                Status::cancelled("the caller stopped reading the reply")
            } else {
                status_from_io(&error)
            };
            self.failure = Some(status.clone());
            return Err(status);
        }
        Ok(())
    }
}

impl<T> Drop for ReplySink<T> {
    fn drop(&mut self) {
        if let (Some(writer), Some(home)) = (self.writer.take(), self.home.take()) {
            let _ = home.send(ReturnedWriter {
                writer,
                failure: self.failure.take(),
            });
        }
    }
}

impl<T> fmt::Debug for ReplySink<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplySink").finish_non_exhaustive()
    }
}

/// Sends a caller's request messages on a client-streaming or bidirectional call.
///
/// Call [`finish`](Self::finish) after the last message. Dropping the sink without
/// finishing resets the stream, and the server cancels the call.
pub struct RequestSink<T> {
    writer: FrameWriter,
    deadline: Option<Instant>,
    state: SinkState,
    stopped_by_server: bool,
    _message: PhantomData<fn(T)>,
}

enum SinkState {
    Open,
    Finished,
    Failed(Status),
}

impl<T: Message> RequestSink<T> {
    pub(crate) fn new(writer: FrameWriter, deadline: Option<Instant>) -> RequestSink<T> {
        RequestSink {
            writer: writer.for_stream(),
            deadline,
            state: SinkState::Open,
            stopped_by_server: false,
            _message: PhantomData,
        }
    }

    /// Returns whether a write failed because the server stopped reading, in which case
    /// its reply carries the reason.
    pub(crate) fn stopped_by_server(&self) -> bool {
        self.stopped_by_server
    }

    /// Sends one request message, waiting while QUIC flow control blocks it.
    ///
    /// # Errors
    ///
    /// `ResourceExhausted` when the encoded message is over the frame limit, which resets
    /// the stream. `DeadlineExceeded` when the deadline passes. When the server stopped
    /// reading, the error only reports that (`Aborted` after the handler returned early,
    /// `Internal` after a malformed frame), and the reply stream carries the server's
    /// status with the reason. After an error every further call returns it again.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: dropping the future can leave part of a message sent. Drop the
    /// whole call then.
    pub async fn send(&mut self, message: &T) -> Result<(), Status> {
        self.check_open()?;
        if let Err(status) = self.writer.push_message(message) {
            self.writer.reset(stream_code::CANCELLED);
            self.state = SinkState::Failed(status.clone());
            return Err(status);
        }
        self.flush(false).await
    }

    /// Ends the request stream, so the server learns that no more messages follow.
    ///
    /// # Errors
    ///
    /// As for [`send`](Self::send).
    pub async fn finish(&mut self) -> Result<(), Status> {
        if matches!(self.state, SinkState::Finished) {
            return Ok(());
        }
        self.check_open()?;
        self.flush(true).await?;
        self.state = SinkState::Finished;
        Ok(())
    }

    fn check_open(&self) -> Result<(), Status> {
        match &self.state {
            SinkState::Open => Ok(()),
            SinkState::Finished => Err(Status::new(
                crate::Code::FailedPrecondition,
                "the request stream is already finished",
            )),
            SinkState::Failed(status) => Err(status.clone()),
        }
    }

    async fn flush(&mut self, finish: bool) -> Result<(), Status> {
        let write = async {
            if finish {
                self.writer.finish().await
            } else {
                self.writer.flush().await
            }
        };
        let written = match self.deadline {
            Some(deadline) => match tokio::time::timeout_at(deadline, write).await {
                Ok(written) => written,
                Err(_) => {
                    let status = Status::deadline_exceeded("deadline exceeded while sending");
                    self.writer.reset(stream_code::DEADLINE_EXCEEDED);
                    self.state = SinkState::Failed(status.clone());
                    return Err(status);
                }
            },
            None => write.await,
        };
        written.map_err(|error| {
            self.stopped_by_server = is_stopped(&error);
            let status = status_from_io(&error);
            self.state = SinkState::Failed(status.clone());
            status
        })
    }
}

impl<T> fmt::Debug for RequestSink<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestSink").finish_non_exhaustive()
    }
}
