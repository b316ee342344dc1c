//! The handler's view of its call ([`Context`]) and the options a caller sets on a call.

use std::sync::atomic::{AtomicBool, Ordering, fence};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::identity::NodeId;
use crate::metadata::Metadata;

/// Options for one outgoing call: deadline, metadata and trace context.
///
/// A deadline, once set, is only ever moved earlier. Options made by
/// [`Context::call_options`] therefore keep the incoming call's deadline, unless the handler
/// sets an earlier one.
///
/// ```
/// use std::time::Duration;
/// let options = murmur_rpc::CallOptions::new()
///     .timeout(Duration::from_millis(250))
///     .metadata("x-request-id", "42");
/// assert!(options.deadline().is_some());
/// ```
#[derive(Clone, Debug, Default)]
pub struct CallOptions {
    deadline: Option<Instant>,
    metadata: Metadata,
    traceparent: Option<String>,
}

impl CallOptions {
    /// Creates options with no deadline, metadata or trace context.
    pub fn new() -> CallOptions {
        CallOptions::default()
    }

    /// Sets the deadline to `timeout` from now, unless an earlier deadline is already set.
    pub fn timeout(self, timeout: Duration) -> CallOptions {
        self.deadline_at(Instant::now() + timeout)
    }

    /// Sets the deadline to `deadline`, unless an earlier deadline is already set.
    pub fn deadline_at(mut self, deadline: Instant) -> CallOptions {
        self.deadline = Some(match self.deadline {
            Some(current) => current.min(deadline),
            None => deadline,
        });
        self
    }

    /// Adds a metadata pair, replacing an earlier value for the same key.
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> CallOptions {
        self.metadata.insert(key, value);
        self
    }

    /// Replaces all metadata.
    pub fn with_metadata(mut self, metadata: Metadata) -> CallOptions {
        self.metadata = metadata;
        self
    }

    /// Sets the W3C `traceparent` sent to the server.
    pub fn traceparent(mut self, traceparent: impl Into<String>) -> CallOptions {
        self.traceparent = Some(traceparent.into());
        self
    }

    /// Returns the deadline, if one is set.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    pub(crate) fn into_parts(self) -> (Option<Instant>, Metadata, Option<String>) {
        (self.deadline, self.metadata, self.traceparent)
    }
}

/// The facts a handler gets about the call it serves.
///
/// Cloning is cheap, so a handler can hand the context to tasks it spawns; they can then
/// watch [`cancelled`](Self::cancelled).
#[derive(Clone, Debug)]
pub struct Context {
    inner: Arc<ContextInner>,
}

#[derive(Debug)]
struct ContextInner {
    peer: NodeId,
    service: String,
    method: String,
    metadata: Metadata,
    deadline: Option<Instant>,
    traceparent: Option<String>,
    /// Set when the call is cancelled. Every call has a context, but few handlers watch for
    /// cancellation, so the token, which allocates, is made on first use.
    cancelled: AtomicBool,
    token: OnceLock<CancellationToken>,
}

impl Context {
    pub(crate) fn new(
        peer: NodeId,
        service: String,
        method: String,
        metadata: Metadata,
        deadline: Option<Instant>,
        traceparent: Option<String>,
    ) -> Context {
        Context {
            inner: Arc::new(ContextInner {
                peer,
                service,
                method,
                metadata,
                deadline,
                traceparent,
                cancelled: AtomicBool::new(false),
                token: OnceLock::new(),
            }),
        }
    }

    /// Cancels the call: [`is_cancelled`](Self::is_cancelled) turns true and the token, if a
    /// handler took one, is cancelled.
    pub(crate) fn cancel(&self) {
        self.inner.cancelled.store(true, Ordering::SeqCst);
        // Pairs with the fence in `token`. Either that side reads the flag or this side reads
        // the token it made, so a token made at the same moment is cancelled too.
        fence(Ordering::SeqCst);
        if let Some(token) = self.inner.token.get() {
            token.cancel();
        }
    }

    fn token(&self) -> &CancellationToken {
        let token = self.inner.token.get_or_init(CancellationToken::new);
        fence(Ordering::SeqCst);
        if self.inner.cancelled.load(Ordering::SeqCst) {
            token.cancel();
        }
        token
    }

    /// Returns the node id of the caller, proven by its TLS certificate.
    pub fn peer(&self) -> NodeId {
        self.inner.peer
    }

    /// Returns the service name the caller asked for.
    pub fn service(&self) -> &str {
        &self.inner.service
    }

    /// Returns the method name the caller asked for.
    pub fn method(&self) -> &str {
        &self.inner.method
    }

    /// Returns the caller's metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.inner.metadata
    }

    /// Returns the call's deadline on this node's clock, if the caller set one.
    pub fn deadline(&self) -> Option<Instant> {
        self.inner.deadline
    }

    /// Returns the time left until the deadline: `None` without a deadline, zero once past.
    pub fn remaining(&self) -> Option<Duration> {
        self.inner
            .deadline
            .map(|deadline| deadline.saturating_duration_since(Instant::now()))
    }

    /// Returns the caller's W3C `traceparent`, if it sent one.
    pub fn traceparent(&self) -> Option<&str> {
        self.inner.traceparent.as_deref()
    }

    /// Returns whether the call was cancelled: the caller went away or the deadline passed.
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancelled.load(Ordering::SeqCst)
            || self
                .inner
                .token
                .get()
                .is_some_and(CancellationToken::is_cancelled)
    }

    /// Waits until the call is cancelled.
    ///
    /// The server also drops the handler's future on cancellation, so only tasks the handler
    /// spawned need this.
    pub async fn cancelled(&self) {
        self.token().cancelled().await
    }

    /// Returns a token that is cancelled with the call, for tasks that outlive the handler.
    pub fn cancellation_token(&self) -> CancellationToken {
        self.token().clone()
    }

    /// Returns options for a call made on behalf of this one: they carry this call's
    /// deadline and trace context, so the callee gets no more time than is left here.
    pub fn call_options(&self) -> CallOptions {
        CallOptions {
            deadline: self.inner.deadline,
            metadata: Metadata::new(),
            traceparent: self.inner.traceparent.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> Context {
        Context::new(
            NodeId::from_bytes([0; 32]),
            "s".into(),
            "m".into(),
            Metadata::new(),
            None,
            None,
        )
    }

    #[tokio::test]
    async fn tokens_before_and_after_cancel() {
        let context = context();
        let early = context.cancellation_token();
        assert!(!context.is_cancelled());
        assert!(!early.is_cancelled());
        context.cancel();
        assert!(context.is_cancelled());
        assert!(early.is_cancelled());
        assert!(context.cancellation_token().is_cancelled());
        context.cancelled().await;

        let late = self::context();
        late.cancel();
        assert!(late.cancellation_token().is_cancelled());
    }

    #[test]
    fn token_cancel_cancels_context() {
        let context = context();
        context.cancellation_token().cancel();
        assert!(context.is_cancelled());
    }

    #[test]
    fn token_made_while_cancelling() {
        for _ in 0..200 {
            let context = context();
            let watcher = context.clone();
            let taker = std::thread::spawn(move || watcher.cancellation_token());
            context.cancel();
            assert!(taker.join().unwrap().is_cancelled());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn inherited_deadline_is_never_extended() {
        let deadline = Instant::now() + Duration::from_millis(100);
        let context = Context::new(
            NodeId::from_bytes([0; 32]),
            "s".into(),
            "m".into(),
            Metadata::new(),
            Some(deadline),
            Some("trace".into()),
        );

        let longer = context.call_options().timeout(Duration::from_secs(5));
        assert_eq!(longer.deadline(), Some(deadline));

        let shorter = context.call_options().timeout(Duration::from_millis(10));
        assert_eq!(
            shorter.deadline(),
            Some(Instant::now() + Duration::from_millis(10))
        );
        assert_eq!(
            context.call_options().into_parts().2.as_deref(),
            Some("trace")
        );
    }
}
