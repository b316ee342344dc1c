//! Limits and timers of an endpoint.

use std::time::Duration;

/// Limits and timers for an [`Endpoint`](crate::Endpoint) and a [`Router`](crate::Router).
///
/// The defaults suit a cluster on one LAN. Every setter returns `&mut Self` so calls chain:
///
/// ```
/// use std::time::Duration;
/// let mut config = murmur_rpc::RpcConfig::default();
/// config
///     .max_frame_size(1 << 20)
///     .idle_timeout(Duration::from_secs(20));
/// ```
#[derive(Clone, Debug)]
pub struct RpcConfig {
    pub(crate) max_frame_size: u32,
    pub(crate) max_head_size: u32,
    pub(crate) max_concurrent_streams: u32,
    pub(crate) max_in_flight_calls: usize,
    pub(crate) stream_receive_window: u32,
    pub(crate) connection_receive_window: u32,
    pub(crate) idle_timeout: Duration,
    pub(crate) keep_alive_interval: Option<Duration>,
}

impl Default for RpcConfig {
    fn default() -> RpcConfig {
        RpcConfig {
            max_frame_size: 4 * 1024 * 1024,
            max_head_size: 64 * 1024,
            max_concurrent_streams: 1024,
            max_in_flight_calls: 4096,
            stream_receive_window: 1024 * 1024,
            connection_receive_window: 16 * 1024 * 1024,
            idle_timeout: Duration::from_secs(10),
            keep_alive_interval: Some(Duration::from_secs(3)),
        }
    }
}

impl RpcConfig {
    /// Sets the largest frame body accepted or sent, in bytes. Default: 4 MiB (4 194 304).
    ///
    /// One message must fit in one frame, so this is also the largest message. A receiver
    /// buffers up to this much per stream before it hands a message on, so memory per
    /// connection grows up to `max_frame_size × max_concurrent_streams` in the worst case.
    /// A larger frame is refused with `ResourceExhausted` on the stream that carried it.
    /// Raise it for bulk payloads; lower it to bound memory under hostile peers.
    pub fn max_frame_size(&mut self, bytes: u32) -> &mut Self {
        self.max_frame_size = bytes;
        self
    }

    /// Sets the largest `Head` frame body accepted or sent, in bytes. Default: 64 KiB.
    ///
    /// The head carries service and method names, metadata and trace context. A small limit
    /// stops a peer from making the server buffer large heads for calls that may never run.
    /// The effective limit is the smaller of this and the frame limit.
    pub fn max_head_size(&mut self, bytes: u32) -> &mut Self {
        self.max_head_size = bytes;
        self
    }

    /// Sets how many calls a peer may have open at once on one connection. Default: 1024.
    ///
    /// This is QUIC's limit on concurrent bidirectional streams, granted to each peer. A
    /// caller that would exceed the peer's grant gets `ResourceExhausted` at once instead of
    /// waiting for a stream. Each open stream may buffer up to `stream_receive_window` in
    /// QUIC and up to `max_frame_size` in the frame reader, so raising this raises worst-case
    /// memory per connection.
    pub fn max_concurrent_streams(&mut self, streams: u32) -> &mut Self {
        self.max_concurrent_streams = streams;
        self
    }

    /// Sets how many calls this node serves at once, over all peers and connections
    /// together. Default: 4096.
    ///
    /// A call that arrives past the limit fails at once with `ResourceExhausted` and its
    /// handler never runs. Raise it for many slow calls (long polls, streams); lower it
    /// to shed load earlier and keep latency of the calls already running.
    pub fn max_in_flight_calls(&mut self, calls: usize) -> &mut Self {
        self.max_in_flight_calls = calls;
        self
    }

    /// Sets how many bytes a peer may send on one stream before the receiver reads them.
    /// Default: 1 MiB.
    ///
    /// QUIC flow control: a slow reader stops the sender after this many unread bytes, which
    /// is what gives streams backpressure. One stream's throughput is bounded by about
    /// `window / round-trip time`; 1 MiB allows about 8 Gbit/s at 1 ms.
    pub fn stream_receive_window(&mut self, bytes: u32) -> &mut Self {
        self.stream_receive_window = bytes;
        self
    }

    /// Sets how many unread bytes a peer may have in flight on one connection, over all its
    /// streams together. Default: 16 MiB.
    ///
    /// This caps what QUIC buffers per connection however many streams are open. Too small
    /// and many concurrent calls share too little bandwidth; too large and a peer can make
    /// this node hold that much memory per connection.
    pub fn connection_receive_window(&mut self, bytes: u32) -> &mut Self {
        self.connection_receive_window = bytes;
        self
    }

    /// Sets how long a connection may be silent before it is closed. Default: 10 s.
    ///
    /// Both ends propose a value and QUIC uses the smaller. With keep-alives on, only a dead
    /// or cut-off peer goes silent, so this is how long calls to a peer that vanished
    /// without a trace wait before they fail with `Unavailable`. Shorter detects death
    /// faster; too short closes connections over brief network stalls.
    pub fn idle_timeout(&mut self, timeout: Duration) -> &mut Self {
        self.idle_timeout = timeout;
        self
    }

    /// Sets how often an otherwise idle connection sends a keep-alive packet, or `None` to
    /// send none. Default: 3 s.
    ///
    /// Must be shorter than the idle timeout to keep idle connections open. More frequent
    /// keep-alives cost a packet per interval per connection.
    pub fn keep_alive_interval(&mut self, interval: Option<Duration>) -> &mut Self {
        self.keep_alive_interval = interval;
        self
    }

    pub(crate) fn effective_head_limit(&self) -> u32 {
        self.max_head_size.min(self.max_frame_size)
    }
}
