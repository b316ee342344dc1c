//! The caller's side of one call's stream, for all four call shapes.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::{Unconstrained, unconstrained};
use tokio::time::{Instant, Sleep};
use tracing::trace;

use crate::config::RpcConfig;
use crate::context::CallOptions;
use crate::frame::{Frame, FrameKind};
use crate::message::Message;
use crate::stats::Counters;
use crate::status::{Code, Status};
use crate::stream::{
    FrameReader, FrameWriter, ReadFailure, RecvHalf, SendHalf, is_stopped, status_from_frame_error,
    status_from_io,
};
use crate::streaming::{RequestSink, Side, Streaming};
use crate::wire::{HeadFields, Trail};

/// One call's stream, seen from the caller: a fresh bidirectional stream that carries
/// exactly one call.
///
/// [`Endpoint`](crate::Endpoint) opens these on its QUIC connections. Build one with
/// [`new`](Self::new) to make a call over another transport, such as a libp2p stream or
/// an in-memory pipe.
pub struct CallStream {
    reader: FrameReader,
    writer: FrameWriter,
    counters: Arc<Counters>,
}

impl CallStream {
    /// Wraps any byte stream pair, applying `config`'s frame limits.
    ///
    /// Such transports cannot reset a stream, so dropping a call only shuts down `writer`;
    /// the server notices when its next write fails.
    pub fn new<R, W>(reader: R, writer: W, config: &RpcConfig) -> CallStream
    where
        R: AsyncRead + Send + 'static,
        W: AsyncWrite + Send + 'static,
    {
        CallStream::from_parts(
            FrameReader::new(RecvHalf::Io(Box::pin(reader)), config),
            FrameWriter::new(SendHalf::Io(Box::pin(writer)), config),
            Arc::new(Counters::default()),
        )
    }

    pub(crate) fn from_parts(
        reader: FrameReader,
        writer: FrameWriter,
        counters: Arc<Counters>,
    ) -> CallStream {
        Counters::add(&counters.calls_made);
        CallStream {
            reader,
            writer,
            counters,
        }
    }

    /// Makes a unary call: sends one request and returns the one reply.
    ///
    /// # Errors
    ///
    /// The server's status, `DeadlineExceeded` when the deadline in `options` passes, and
    /// the statuses of transport and protocol failures.
    pub async fn unary<Req: Message, Resp: Message>(
        self,
        service: &str,
        method: &str,
        request: &Req,
        options: CallOptions,
    ) -> Result<Resp, Status> {
        let deadline = options.deadline();
        with_deadline(
            deadline,
            self.unary_within(service, method, request, options),
        )
        .await
    }

    /// Starts a server-streaming call: sends one request and returns the stream of replies.
    ///
    /// # Errors
    ///
    /// `ResourceExhausted` when the head or request is over a limit, `DeadlineExceeded`
    /// when the deadline has passed, and transport failures while sending.
    pub async fn server_streaming<Req: Message, Resp: Message>(
        mut self,
        service: &str,
        method: &str,
        request: &Req,
        options: CallOptions,
    ) -> Result<Streaming<Resp>, Status> {
        let deadline = options.deadline();
        self.push_request(service, method, options, Some(request))?;
        let sent = with_deadline(deadline, async {
            self.writer
                .finish()
                .await
                .or_else(|error| ignore_stopped(&error))
        })
        .await;
        sent?;
        Ok(self.into_reply_stream(deadline))
    }

    /// Starts a client-streaming call: returns a [`ClientStreaming`] to send requests on
    /// and then await the one reply.
    ///
    /// # Errors
    ///
    /// `ResourceExhausted` when the head is over the head limit, `DeadlineExceeded` when
    /// the deadline has passed, and transport failures while sending the head.
    pub async fn client_streaming<Req: Message, Resp: Message>(
        self,
        service: &str,
        method: &str,
        options: CallOptions,
    ) -> Result<ClientStreaming<Req, Resp>, Status> {
        let (requests, replies) = self.bidi_streaming(service, method, options).await?;
        Ok(ClientStreaming { requests, replies })
    }

    /// Starts a bidirectional call: returns the sink for requests and the stream of
    /// replies, to use in any order or from two tasks.
    ///
    /// # Errors
    ///
    /// As for [`client_streaming`](Self::client_streaming).
    pub async fn bidi_streaming<Req: Message, Resp: Message>(
        mut self,
        service: &str,
        method: &str,
        options: CallOptions,
    ) -> Result<(RequestSink<Req>, Streaming<Resp>), Status> {
        let deadline = options.deadline();
        self.push_request::<Req>(service, method, options, None)?;
        with_deadline(deadline, async {
            self.writer
                .flush()
                .await
                .map_err(|error| status_from_io(&error))
        })
        .await?;

        let replies = Streaming::new(self.reader, Side::Reply, deadline, self.counters, None);
        let requests = RequestSink::new(self.writer, deadline);
        Ok((requests, replies))
    }

    /// Makes a unary call as [`unary`](Self::unary) does, without a timer for the deadline,
    /// for a caller that already runs it under one.
    pub(crate) async fn unary_within<Req: Message, Resp: Message>(
        mut self,
        service: &str,
        method: &str,
        request: &Req,
        options: CallOptions,
    ) -> Result<Resp, Status> {
        let deadline = options.deadline();
        self.push_request(service, method, options, Some(request))?;

        // A server that rejects the call stops reading, so the write fails; its reply then
        // carries the reason.
        let sent = self.writer.finish().await;
        let write_status = match &sent {
            Ok(()) => None,
            Err(error) if is_stopped(error) => Some(status_from_io(error)),
            Err(error) => return Err(past_deadline_or(deadline, status_from_io(error))),
        };

        match self.read_unary_reply::<Resp>().await {
            Ok(reply) => Ok(reply),
            Err(status)
                if status.code() == Code::Unavailable || status.code() == Code::Cancelled =>
            {
                Err(past_deadline_or(deadline, write_status.unwrap_or(status)))
            }
            Err(status) => Err(status),
        }
    }

    async fn read_unary_reply<Resp: Message>(&mut self) -> Result<Resp, Status> {
        let mut body: Option<Bytes> = None;
        loop {
            match self.reader.next_frame().await {
                Ok(Some(Frame {
                    kind: FrameKind::Data,
                    body: data,
                })) => {
                    if body.replace(data).is_some() {
                        Counters::add(&self.counters.unexpected_frames);
                        return Err(Status::internal("unary reply has more than one message"));
                    }
                }
                Ok(Some(Frame {
                    kind: FrameKind::Trail,
                    body: trail,
                })) => {
                    self.reader.take_end_if_ready();
                    Trail::decode(&trail)?.into_result()?;
                    let Some(body) = body else {
                        return Err(Status::internal("unary reply has no message"));
                    };
                    trace!(len = body.len(), "reply received");
                    return Resp::decode(body).map_err(|status| Status::internal(status.message()));
                }
                Ok(Some(Frame {
                    kind: FrameKind::Head,
                    ..
                })) => {
                    Counters::add(&self.counters.unexpected_frames);
                    return Err(Status::internal("unexpected head frame in a reply"));
                }
                Ok(None) => return Err(Status::internal("the reply ended without a trail frame")),
                Err(ReadFailure::Frame(error)) => {
                    self.counters.count_frame_error(&error);
                    return Err(status_from_frame_error(&error));
                }
                Err(ReadFailure::Stream(error)) => return Err(status_from_io(&error)),
            }
        }
    }

    /// Queues the head, and the request message of a single-request call.
    fn push_request<Req: Message>(
        &mut self,
        service: &str,
        method: &str,
        options: CallOptions,
        request: Option<&Req>,
    ) -> Result<(), Status> {
        let (deadline, metadata, traceparent) = options.into_parts();
        let timeout_us = match deadline {
            None => None,
            Some(deadline) => {
                let remaining = deadline.saturating_duration_since(Instant::now());
                if remaining.is_zero() {
                    return Err(Status::deadline_exceeded(
                        "deadline passed before the call was sent",
                    ));
                }
                Some(u64::try_from(remaining.as_micros()).unwrap_or(u64::MAX))
            }
        };
        trace!(service, method, "call sent");
        let head = HeadFields {
            service,
            method,
            timeout_us,
            metadata: &metadata,
            traceparent: traceparent.as_deref(),
        };
        match request {
            Some(request) => self.writer.push_request(&head, request),
            None => self.writer.push_head(&head),
        }
    }

    fn into_reply_stream<Resp: Message>(self, deadline: Option<Instant>) -> Streaming<Resp> {
        Streaming::new(self.reader, Side::Reply, deadline, self.counters, None)
    }
}

impl fmt::Debug for CallStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallStream").finish_non_exhaustive()
    }
}

/// A client-streaming call in progress: send requests, then [`finish`](Self::finish) to
/// receive the reply.
///
/// Dropping it before `finish` resets the stream, and the server cancels the call.
pub struct ClientStreaming<Req, Resp> {
    requests: RequestSink<Req>,
    replies: Streaming<Resp>,
}

impl<Req: Message, Resp: Message> ClientStreaming<Req, Resp> {
    /// Sends one request message.
    ///
    /// # Errors
    ///
    /// The server's status when it ended the call early, for example because a frame was
    /// over its limit, and otherwise the errors of [`RequestSink::send`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe, as [`RequestSink::send`].
    pub async fn send(&mut self, request: &Req) -> Result<(), Status> {
        match self.requests.send(request).await {
            Ok(()) => Ok(()),
            Err(status) => Err(self.server_status_or(status).await),
        }
    }

    /// Ends the request stream and waits for the reply.
    ///
    /// # Errors
    ///
    /// The server's status, `DeadlineExceeded`, and transport and protocol failures.
    pub async fn finish(mut self) -> Result<Resp, Status> {
        if let Err(status) = self.requests.finish().await {
            return Err(self.server_status_or(status).await);
        }
        let reply = self.replies.message().await?;
        let Some(reply) = reply else {
            return Err(Status::internal("client-streaming reply has no message"));
        };
        match self.replies.message().await? {
            None => Ok(reply),
            Some(_) => Err(Status::internal(
                "client-streaming reply has more than one message",
            )),
        }
    }

    /// Returns the status in the server's reply when the server stopped reading, because
    /// that status gives the reason. Otherwise returns `local`.
    async fn server_status_or(&mut self, local: Status) -> Status {
        if !self.requests.stopped_by_server() {
            return local;
        }
        loop {
            match self.replies.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => return local,
                Err(status) => return status,
            }
        }
    }
}

impl<Req, Resp> fmt::Debug for ClientStreaming<Req, Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientStreaming").finish_non_exhaustive()
    }
}

/// Runs `future` until `deadline`, returning `DeadlineExceeded` if it passes first.
///
/// Returns a plain future rather than being an `async fn`, because an `async fn` keeps its
/// unstarted argument and the running future side by side, doubling every call's future.
/// The timer exists only when there is a deadline. It is polled after `future` and outside
/// tokio's cooperative budget, so a `future` that spends the budget on every poll cannot
/// keep it from firing.
pub(crate) fn with_deadline<T, F>(deadline: Option<Instant>, future: F) -> WithDeadline<F>
where
    F: Future<Output = Result<T, Status>>,
{
    WithDeadline {
        future,
        timer: deadline.map(|deadline| unconstrained(tokio::time::sleep_until(deadline))),
    }
}

pin_project_lite::pin_project! {
    /// The future of [`with_deadline`].
    pub(crate) struct WithDeadline<F> {
        #[pin]
        future: F,
        #[pin]
        timer: Option<Unconstrained<Sleep>>,
    }
}

impl<T, F> Future for WithDeadline<F>
where
    F: Future<Output = Result<T, Status>>,
{
    type Output = Result<T, Status>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(result) = this.future.poll(cx) {
            return Poll::Ready(result);
        }
        match this.timer.as_pin_mut().map(|timer| timer.poll(cx)) {
            Some(Poll::Ready(())) => {
                Poll::Ready(Err(Status::deadline_exceeded("call deadline exceeded")))
            }
            _ => Poll::Pending,
        }
    }
}

/// Reports a failure as `DeadlineExceeded` when the deadline has passed, since the server
/// resets calls at their deadline and that reset may arrive before the local timer fires.
fn past_deadline_or(deadline: Option<Instant>, status: Status) -> Status {
    match deadline {
        Some(deadline) if Instant::now() >= deadline => {
            Status::deadline_exceeded("call deadline exceeded")
        }
        _ => status,
    }
}

/// Treats a write to a stream the server stopped reading as sent, because the reply then
/// carries the reason.
fn ignore_stopped(error: &std::io::Error) -> Result<(), Status> {
    if is_stopped(error) {
        Ok(())
    } else {
        Err(status_from_io(error))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    async fn spend_budget_forever() -> Result<(), Status> {
        loop {
            tokio::task::consume_budget().await;
        }
    }

    /// A future that spends the task's whole cooperative budget on every poll must not keep
    /// the deadline's timer from firing.
    #[tokio::test]
    async fn deadline_fires_despite_spent_budget() {
        let deadline = Instant::now() + Duration::from_millis(50);
        let outcome = tokio::time::timeout(
            Duration::from_secs(10),
            with_deadline(Some(deadline), spend_budget_forever()),
        )
        .await
        .expect("the deadline never fired");
        assert_eq!(outcome.unwrap_err().code(), Code::DeadlineExceeded);
    }
}
