//! The server side: handlers registered per service and method, and serving one call's
//! stream.

use std::fmt;
use std::future::{Future, poll_fn};
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::task::Poll;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;
use tokio::task::unconstrained;
use tokio::time::Instant;
use tracing::{Instrument, debug, trace, trace_span, warn};

use crate::HashMap;
use crate::config::RpcConfig;
use crate::context::Context;
use crate::frame::{Frame, FrameKind};
use crate::identity::NodeId;
use crate::message::Message;
use crate::stats::{Counters, Stats};
use crate::status::Status;
use crate::stream::{
    FrameReader, FrameWriter, ReadFailure, RecvHalf, SendHalf, status_from_frame_error, stream_code,
};
use crate::streaming::{ReplySink, ReturnedWriter, Side, Streaming};
use crate::wire::{Head, Trail, kind_name};

/// The method name that registers a fallback: its handler serves every method of the
/// service that has no handler of its own, and reads the method asked for from
/// [`Context::method`]. A sidecar that forwards any method uses it.
pub const ANY_METHOD: &str = "*";

type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Handlers by service name, then by method name.
type Services = HashMap<String, HashMap<String, Arc<dyn Handler>>>;

/// The handlers a node serves, by service and method.
///
/// Handlers can be added and removed while the node serves; a call looks its handler up
/// when its head arrives. Registering a method again replaces its handler. Cloning is cheap
/// and every clone shares the handlers, the limits and the counters.
///
/// ```
/// use murmur_rpc::{Router, RpcConfig, Status};
///
/// let router = Router::new(RpcConfig::default());
/// router.unary("greeter", "hello", |_ctx, name: String| async move {
///     Ok::<_, Status>(format!("hello, {name}"))
/// });
/// assert_eq!(router.methods("greeter"), vec!["hello".to_string()]);
/// ```
#[derive(Clone)]
pub struct Router {
    inner: Arc<RouterInner>,
}

struct RouterInner {
    services: RwLock<Services>,
    config: RpcConfig,
    counters: Arc<Counters>,
    in_flight: InFlight,
}

impl Router {
    /// Creates a router with no handlers, enforcing `config`'s frame and in-flight limits.
    pub fn new(config: RpcConfig) -> Router {
        Router::with_counters(config, Arc::new(Counters::default()))
    }

    pub(crate) fn with_counters(config: RpcConfig, counters: Arc<Counters>) -> Router {
        let in_flight = InFlight::new(config.max_in_flight_calls);
        Router {
            inner: Arc::new(RouterInner {
                services: RwLock::new(HashMap::default()),
                config,
                counters,
                in_flight,
            }),
        }
    }

    /// Registers a unary handler: one request in, one reply out.
    pub fn unary<Req, Resp, F, Fut>(&self, service: &str, method: &str, handler: F) -> &Router
    where
        Req: Message,
        Resp: Message,
        F: Fn(Context, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, Status>> + Send + 'static,
    {
        self.insert(service, method, UnaryHandler::new(handler))
    }

    /// Registers a server-streaming handler: one request in, any number of replies out
    /// through the [`ReplySink`].
    pub fn server_streaming<Req, Resp, F, Fut>(
        &self,
        service: &str,
        method: &str,
        handler: F,
    ) -> &Router
    where
        Req: Message,
        Resp: Message,
        F: Fn(Context, Req, ReplySink<Resp>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), Status>> + Send + 'static,
    {
        self.insert(service, method, ServerStreamingHandler::new(handler))
    }

    /// Registers a client-streaming handler: any number of requests in, one reply out.
    pub fn client_streaming<Req, Resp, F, Fut>(
        &self,
        service: &str,
        method: &str,
        handler: F,
    ) -> &Router
    where
        Req: Message,
        Resp: Message,
        F: Fn(Context, Streaming<Req>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, Status>> + Send + 'static,
    {
        self.insert(service, method, ClientStreamingHandler::new(handler))
    }

    /// Registers a bidirectional handler: requests in and replies out, interleaved as the
    /// handler likes.
    pub fn bidi_streaming<Req, Resp, F, Fut>(
        &self,
        service: &str,
        method: &str,
        handler: F,
    ) -> &Router
    where
        Req: Message,
        Resp: Message,
        F: Fn(Context, Streaming<Req>, ReplySink<Resp>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), Status>> + Send + 'static,
    {
        self.insert(service, method, BidiStreamingHandler::new(handler))
    }

    /// Removes a service and all its methods, and returns whether it was registered. Calls
    /// already running go on.
    pub fn remove_service(&self, service: &str) -> bool {
        self.write_services().remove(service).is_some()
    }

    /// Returns the names of the registered services, sorted.
    pub fn services(&self) -> Vec<String> {
        let mut names: Vec<String> = self.read_services().keys().cloned().collect();
        names.sort();
        names
    }

    /// Returns the method names of a service, sorted; empty for an unknown service.
    pub fn methods(&self, service: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .read_services()
            .get(service)
            .map(|methods| methods.keys().cloned().collect())
            .unwrap_or_default();
        names.sort();
        names
    }

    pub(crate) fn config(&self) -> &RpcConfig {
        &self.inner.config
    }

    /// Returns a snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.inner.counters.snapshot()
    }

    /// Serves one call that arrives on a transport other than the endpoint's QUIC
    /// connections, such as a libp2p stream. `peer` is the caller's node id as that
    /// transport authenticated it.
    ///
    /// Returns when the reply is written and `writer` shut down. Such transports cannot
    /// reset a stream, so a caller that goes away is noticed only when a write fails.
    pub async fn serve_stream<R, W>(&self, peer: NodeId, reader: R, writer: W)
    where
        R: AsyncRead + Send + 'static,
        W: AsyncWrite + Send + 'static,
    {
        let config = &self.inner.config;
        let reader = FrameReader::new(RecvHalf::Io(Box::pin(reader)), config);
        let writer = FrameWriter::new(SendHalf::Io(Box::pin(writer)), config);
        self.clone()
            .serve(peer, reader, writer, std::future::pending())
            .await;
    }

    /// Serves one call: reads its head, finds its handler and runs it until it finishes,
    /// the deadline passes, or `stopped` resolves because the caller went away.
    ///
    /// Takes the router by value, so the future owns all it needs and can be spawned as it
    /// is. Every call allocates this future, so the rejections, which need more state, are
    /// boxed and the future contains only what a served call needs.
    pub(crate) async fn serve(
        self,
        peer: NodeId,
        mut reader: FrameReader,
        writer: FrameWriter,
        stopped: impl Future<Output = ()> + Send,
    ) {
        let received = Instant::now();
        let head = match self.read_head(&mut reader).await {
            Ok(Some(head)) => head,
            Ok(None) => return,
            Err(status) => {
                Box::pin(self.reject_malformed(peer, reader, writer, status)).await;
                return;
            }
        };
        let Some(_slot) = self.inner.in_flight.try_take() else {
            Box::pin(self.reject_over_limit(writer)).await;
            return;
        };
        let Some(handler) = self.handler(&head.service, &head.method) else {
            Box::pin(self.reject_unknown_method(&head, writer)).await;
            return;
        };

        Counters::add(&self.inner.counters.calls_served);
        let deadline = head.timeout().map(|timeout| received + timeout);
        let span =
            trace_span!("call", peer = %peer, service = %head.service, method = %head.method);
        span.in_scope(|| trace!(timeout = ?head.timeout(), "call started"));
        let context = Context::new(
            peer,
            head.service,
            head.method,
            head.metadata,
            deadline,
            head.traceparent,
        );
        let call = ServerCall {
            reader,
            writer,
            counters: self.inner.counters.clone(),
            context: context.clone(),
        };
        let call_context = context.clone();
        let mut handler = handler.call(context, call).instrument(span.clone());

        // Most handlers finish on their first poll: the request has arrived and the reply
        // fits the flow-control window. Only a handler that waits gets a timer for its
        // deadline and a watch on the caller.
        if poll_fn(|cx| Poll::Ready(Pin::new(&mut handler).poll(cx)))
            .await
            .is_ready()
        {
            span.in_scope(|| trace!("call finished"));
            return;
        }
        Box::pin(
            self.wait_for(handler, deadline, stopped, call_context)
                .instrument(span),
        )
        .await;
    }

    /// Runs a handler that did not finish at once until it does, or drops it on deadline or
    /// cancellation.
    async fn wait_for(
        &self,
        handler: impl Future<Output = ()>,
        deadline: Option<Instant>,
        stopped: impl Future<Output = ()>,
        context: Context,
    ) {
        // Outside tokio's cooperative budget, because the handler is polled first and one
        // that spends the budget on every poll would otherwise keep the timer from firing.
        let deadline_passed = async {
            match deadline {
                Some(deadline) => unconstrained(tokio::time::sleep_until(deadline)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            () = handler => trace!("call finished"),
            () = stopped => {
                context.cancel();
                Counters::add(&self.inner.counters.calls_cancelled);
                debug!("caller cancelled the call, handler dropped");
            }
            () = deadline_passed => {
                context.cancel();
                Counters::add(&self.inner.counters.calls_deadline_exceeded);
                debug!("deadline passed, handler dropped");
            }
        }
    }

    /// Ends a call whose head was malformed, logging it as the peer's fault.
    async fn reject_malformed(
        &self,
        peer: NodeId,
        mut reader: FrameReader,
        mut writer: FrameWriter,
        status: Status,
    ) {
        if self.inner.counters.should_warn_malformed() {
            warn!(peer = %peer, error = %status, "peer sent a malformed request");
        } else {
            debug!(peer = %peer, error = %status, "peer sent a malformed request");
        }
        reader.stop(stream_code::PROTOCOL_ERROR);
        reject(&mut writer, status).await;
    }

    /// Ends a call with `ResourceExhausted` because every in-flight slot is taken.
    async fn reject_over_limit(&self, mut writer: FrameWriter) {
        Counters::add(&self.inner.counters.calls_rejected_in_flight);
        let limit = self.inner.config.max_in_flight_calls;
        let status = Status::resource_exhausted(format!(
            "node is serving {limit} calls, its in-flight limit"
        ))
        .mark_unprocessed();
        debug!(limit, "rejected a call over the in-flight limit");
        reject(&mut writer, status).await;
    }

    /// Ends a call with `Unimplemented` because no handler serves its method.
    async fn reject_unknown_method(&self, head: &Head, mut writer: FrameWriter) {
        Counters::add(&self.inner.counters.calls_unimplemented);
        let status = Status::unimplemented(format!(
            "no method {:?} in service {:?} on this node",
            head.method, head.service
        ))
        .mark_unprocessed();
        debug!(
            service = %head.service,
            method = %head.method,
            "rejected a call to an unknown method"
        );
        reject(&mut writer, status).await;
    }

    /// Reads the head frame; `None` when the stream ended before any frame.
    ///
    /// NOTE: there is no timeout for the head, so a peer that opens a stream and sends
    /// nothing holds one of its `max_concurrent_streams` until the connection closes.
    async fn read_head(&self, reader: &mut FrameReader) -> Result<Option<Head>, Status> {
        let counters = &self.inner.counters;
        let frame = match reader.next_frame().await {
            Ok(Some(frame)) => frame,
            Ok(None) => return Ok(None),
            Err(ReadFailure::Frame(error)) => {
                counters.count_frame_error(&error);
                return Err(status_from_frame_error(&error));
            }
            Err(ReadFailure::Stream(error)) => {
                debug!(error = %error, "request stream failed before its head");
                return Ok(None);
            }
        };

        match frame.kind {
            FrameKind::Head => Head::decode(&frame.body).map(Some).inspect_err(|_| {
                Counters::add(&counters.invalid_heads);
            }),
            FrameKind::Data => {
                Counters::add(&counters.data_before_head);
                Err(Status::invalid_argument("data frame before the head frame"))
            }
            FrameKind::Trail => {
                Counters::add(&counters.unexpected_frames);
                Err(Status::invalid_argument("trail frame in a request"))
            }
        }
    }

    fn handler(&self, service: &str, method: &str) -> Option<Arc<dyn Handler>> {
        let services = self.read_services();
        let methods = services.get(service)?;
        methods
            .get(method)
            .or_else(|| methods.get(ANY_METHOD))
            .cloned()
    }

    fn insert(&self, service: &str, method: &str, handler: impl Handler) -> &Router {
        self.write_services()
            .entry(service.to_string())
            .or_default()
            .insert(method.to_string(), Arc::new(handler));
        self
    }

    fn read_services(&self) -> std::sync::RwLockReadGuard<'_, Services> {
        // A panic while holding the lock cannot leave the map half-changed: every change is
        // one insert or remove call. So a poisoned lock is safe to keep using.
        self.inner
            .services
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write_services(&self) -> std::sync::RwLockWriteGuard<'_, Services> {
        self.inner
            .services
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Router")
            .field("services", &self.services())
            .finish_non_exhaustive()
    }
}

/// The number of calls being served, kept under a limit. A call that finds every slot
/// taken is rejected at once, never queued, so a counter does what a semaphore would at a
/// fraction of the cost.
struct InFlight {
    count: AtomicUsize,
    limit: usize,
}

impl InFlight {
    fn new(limit: usize) -> InFlight {
        InFlight {
            count: AtomicUsize::new(0),
            limit,
        }
    }

    /// Takes a slot, or returns `None` when all `limit` are taken.
    fn try_take(&self) -> Option<InFlightSlot<'_>> {
        self.count
            .fetch_update(Ordering::Acquire, Ordering::Relaxed, |count| {
                (count < self.limit).then_some(count + 1)
            })
            .ok()
            .map(|_| InFlightSlot(self))
    }
}

/// One call's slot, given back when dropped.
struct InFlightSlot<'a>(&'a InFlight);

impl Drop for InFlightSlot<'_> {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::Release);
    }
}

/// Ends a call with `status` before any handler ran.
async fn reject(writer: &mut FrameWriter, status: Status) {
    writer.push_trail(&Trail::from(status));
    if let Err(error) = writer.finish().await {
        debug!(error = %error, "failed to send the rejection");
    }
}

/// One call's stream, handed to the handler adapter.
struct ServerCall {
    reader: FrameReader,
    writer: FrameWriter,
    counters: Arc<Counters>,
    /// The handler's context, to cancel when the caller goes away.
    context: Context,
}

impl ServerCall {
    /// Reads the single request message of a unary or server-streaming call, which must be
    /// followed by the end of the stream.
    async fn single_request(&mut self) -> Result<Bytes, Status> {
        let first = self.next_request_frame().await?;
        let Some(body) = first else {
            return Err(Status::invalid_argument("request ended without a message"));
        };
        match self.next_request_frame().await? {
            None => Ok(body),
            Some(_) => {
                Counters::add(&self.counters.unexpected_frames);
                Err(Status::invalid_argument(
                    "request for a single-message method has more than one message",
                ))
            }
        }
    }

    async fn next_request_frame(&mut self) -> Result<Option<Bytes>, Status> {
        match self.reader.next_frame().await {
            Ok(Some(Frame {
                kind: FrameKind::Data,
                body,
            })) => Ok(Some(body)),
            Ok(Some(frame)) => {
                Counters::add(&self.counters.unexpected_frames);
                Err(Status::invalid_argument(format!(
                    "unexpected {} frame in a request",
                    kind_name(frame.kind)
                )))
            }
            Ok(None) => Ok(None),
            Err(ReadFailure::Frame(error)) => {
                self.counters.count_frame_error(&error);
                Err(status_from_frame_error(&error))
            }
            Err(ReadFailure::Stream(error)) => {
                // The caller reset the stream or the connection is gone: the call is abandoned.
                self.context.cancel();
                Err(crate::stream::status_from_io(&error))
            }
        }
    }

    fn into_streaming<T: Message>(self) -> (Streaming<T>, FrameWriter, Arc<OnceLock<Status>>) {
        let failure = Arc::new(OnceLock::new());
        let streaming = Streaming::new(
            self.reader,
            Side::Request,
            None,
            self.counters,
            Some(failure.clone()),
        )
        .cancel_on_loss(self.context);
        (streaming, self.writer, failure)
    }
}

/// Sends a single reply message and the success trail, or the failure trail, and ends the
/// stream.
async fn finish_unary<M: Message>(writer: &mut FrameWriter, outcome: Result<M, Status>) {
    let trail = match outcome.and_then(|reply| writer.push_message(&reply)) {
        Ok(()) => Trail::ok(),
        Err(status) => Trail::from(status),
    };
    writer.push_trail(&trail);
    if let Err(error) = writer.finish().await {
        debug!(error = %error, "failed to send the reply");
    }
}

/// Waits for the handler's [`ReplySink`] to come back, then ends the stream with the
/// handler's status, or with the failure that ended the sink or the request stream.
async fn finish_streaming(
    returned: oneshot::Receiver<ReturnedWriter>,
    outcome: Result<(), Status>,
    request_failure: Option<&OnceLock<Status>>,
) {
    let Ok(ReturnedWriter {
        mut writer,
        failure,
    }) = returned.await
    else {
        return;
    };
    let request_failure = request_failure.and_then(|failure| failure.get().cloned());
    let trail = match failure.or(request_failure) {
        Some(status) => Trail::from(status),
        None => outcome.map_or_else(Trail::from, |()| Trail::ok()),
    };
    writer.push_trail(&trail);
    if let Err(error) = writer.finish().await {
        debug!(error = %error, "failed to send the trail");
    }
}

/// A handler of any shape, with its types erased so one map can hold them all.
trait Handler: Send + Sync + 'static {
    fn call(&self, context: Context, call: ServerCall) -> BoxFuture;
}

struct UnaryHandler<F, Req, Resp> {
    function: Arc<F>,
    _types: PhantomData<fn(Req) -> Resp>,
}

impl<F, Req, Resp> UnaryHandler<F, Req, Resp> {
    fn new(function: F) -> Self {
        UnaryHandler {
            function: Arc::new(function),
            _types: PhantomData,
        }
    }
}

impl<F, Fut, Req, Resp> Handler for UnaryHandler<F, Req, Resp>
where
    Req: Message,
    Resp: Message,
    F: Fn(Context, Req) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Resp, Status>> + Send + 'static,
{
    fn call(&self, context: Context, mut call: ServerCall) -> BoxFuture {
        let function = self.function.clone();
        Box::pin(async move {
            let outcome = match call.single_request().await.and_then(Req::decode) {
                Ok(request) => function(context, request).await,
                Err(status) => {
                    call.reader.stop(stream_code::PROTOCOL_ERROR);
                    Err(status)
                }
            };
            finish_unary(&mut call.writer, outcome).await;
        })
    }
}

struct ServerStreamingHandler<F, Req, Resp> {
    function: Arc<F>,
    _types: PhantomData<fn(Req) -> Resp>,
}

impl<F, Req, Resp> ServerStreamingHandler<F, Req, Resp> {
    fn new(function: F) -> Self {
        ServerStreamingHandler {
            function: Arc::new(function),
            _types: PhantomData,
        }
    }
}

impl<F, Fut, Req, Resp> Handler for ServerStreamingHandler<F, Req, Resp>
where
    Req: Message,
    Resp: Message,
    F: Fn(Context, Req, ReplySink<Resp>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), Status>> + Send + 'static,
{
    fn call(&self, context: Context, mut call: ServerCall) -> BoxFuture {
        let function = self.function.clone();
        Box::pin(async move {
            let request = match call.single_request().await.and_then(Req::decode) {
                Ok(request) => request,
                Err(status) => {
                    call.reader.stop(stream_code::PROTOCOL_ERROR);
                    reject(&mut call.writer, status).await;
                    return;
                }
            };
            let (home, returned) = oneshot::channel();
            let sink = ReplySink::new(call.writer, home);
            let outcome = function(context, request, sink).await;
            finish_streaming(returned, outcome, None).await;
        })
    }
}

struct ClientStreamingHandler<F, Req, Resp> {
    function: Arc<F>,
    _types: PhantomData<fn(Req) -> Resp>,
}

impl<F, Req, Resp> ClientStreamingHandler<F, Req, Resp> {
    fn new(function: F) -> Self {
        ClientStreamingHandler {
            function: Arc::new(function),
            _types: PhantomData,
        }
    }
}

impl<F, Fut, Req, Resp> Handler for ClientStreamingHandler<F, Req, Resp>
where
    Req: Message,
    Resp: Message,
    F: Fn(Context, Streaming<Req>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Resp, Status>> + Send + 'static,
{
    fn call(&self, context: Context, call: ServerCall) -> BoxFuture {
        let function = self.function.clone();
        Box::pin(async move {
            let (requests, mut writer, failure) = call.into_streaming::<Req>();
            let mut outcome = function(context, requests).await;
            if let Some(status) = failure.get() {
                outcome = Err(status.clone());
            }
            finish_unary(&mut writer, outcome).await;
        })
    }
}

struct BidiStreamingHandler<F, Req, Resp> {
    function: Arc<F>,
    _types: PhantomData<fn(Req) -> Resp>,
}

impl<F, Req, Resp> BidiStreamingHandler<F, Req, Resp> {
    fn new(function: F) -> Self {
        BidiStreamingHandler {
            function: Arc::new(function),
            _types: PhantomData,
        }
    }
}

impl<F, Fut, Req, Resp> Handler for BidiStreamingHandler<F, Req, Resp>
where
    Req: Message,
    Resp: Message,
    F: Fn(Context, Streaming<Req>, ReplySink<Resp>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), Status>> + Send + 'static,
{
    fn call(&self, context: Context, call: ServerCall) -> BoxFuture {
        let function = self.function.clone();
        Box::pin(async move {
            let (requests, writer, failure) = call.into_streaming::<Req>();
            let (home, returned) = oneshot::channel();
            let sink = ReplySink::new(writer, home);
            let outcome = function(context, requests, sink).await;
            finish_streaming(returned, outcome, Some(&failure)).await;
        })
    }
}
