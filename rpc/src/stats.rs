//! Counters of calls and of bad input, readable while the endpoint runs.

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of an endpoint's or a router's counters, each counted since it was created.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Calls whose handler started.
    pub calls_served: u64,
    /// Calls rejected with `ResourceExhausted` because the in-flight limit was reached.
    pub calls_rejected_in_flight: u64,
    /// Calls whose handler was dropped because the caller cancelled.
    pub calls_cancelled: u64,
    /// Calls whose handler was dropped at the deadline.
    pub calls_deadline_exceeded: u64,
    /// Calls for a service or method that is not registered.
    pub calls_unimplemented: u64,
    /// Calls this endpoint made to other nodes.
    pub calls_made: u64,
    /// Frames with a kind byte that is not `Head`, `Data` or `Trail`.
    pub unknown_frame_kinds: u64,
    /// Frames over the frame limit or the head limit.
    pub oversized_frames: u64,
    /// Head frames whose body is not a valid MessagePack head.
    pub invalid_heads: u64,
    /// Requests that began with a `Data` frame instead of a `Head`.
    pub data_before_head: u64,
    /// Frames that appear where the protocol allows none: a second head, a trail in a
    /// request, data after a trail, or a second message in a unary request.
    pub unexpected_frames: u64,
    /// Streams that ended inside a frame.
    pub truncated_frames: u64,
    /// Incoming connections whose TLS handshake failed or whose peer had no node id.
    pub handshakes_rejected: u64,
    /// Connections this endpoint opened to other nodes.
    pub connections_opened: u64,
    /// Connections other nodes opened to this endpoint.
    pub connections_accepted: u64,
}

/// The live counters behind [`Stats`], shared by the router, the endpoint and every call.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) calls_served: AtomicU64,
    pub(crate) calls_rejected_in_flight: AtomicU64,
    pub(crate) calls_cancelled: AtomicU64,
    pub(crate) calls_deadline_exceeded: AtomicU64,
    pub(crate) calls_unimplemented: AtomicU64,
    pub(crate) calls_made: AtomicU64,
    pub(crate) unknown_frame_kinds: AtomicU64,
    pub(crate) oversized_frames: AtomicU64,
    pub(crate) invalid_heads: AtomicU64,
    pub(crate) data_before_head: AtomicU64,
    pub(crate) unexpected_frames: AtomicU64,
    pub(crate) truncated_frames: AtomicU64,
    pub(crate) handshakes_rejected: AtomicU64,
    pub(crate) connections_opened: AtomicU64,
    pub(crate) connections_accepted: AtomicU64,
    malformed_requests: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a framing error under its kind.
    pub(crate) fn count_frame_error(&self, error: &crate::FrameError) {
        use crate::FrameError;
        let counter = match error {
            FrameError::UnknownKind(_) => &self.unknown_frame_kinds,
            FrameError::FrameTooLarge { .. } | FrameError::HeadTooLarge { .. } => {
                &self.oversized_frames
            }
            FrameError::Truncated { .. } => &self.truncated_frames,
        };
        Counters::add(counter);
    }

    /// Counts a malformed request and returns whether to log it at `warn`: the 1st, 2nd,
    /// 4th, 8th and so on, so a hostile peer cannot flood the log.
    pub(crate) fn should_warn_malformed(&self) -> bool {
        let total = self.malformed_requests.fetch_add(1, Ordering::Relaxed) + 1;
        total.is_power_of_two()
    }

    pub(crate) fn snapshot(&self) -> Stats {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        Stats {
            calls_served: read(&self.calls_served),
            calls_rejected_in_flight: read(&self.calls_rejected_in_flight),
            calls_cancelled: read(&self.calls_cancelled),
            calls_deadline_exceeded: read(&self.calls_deadline_exceeded),
            calls_unimplemented: read(&self.calls_unimplemented),
            calls_made: read(&self.calls_made),
            unknown_frame_kinds: read(&self.unknown_frame_kinds),
            oversized_frames: read(&self.oversized_frames),
            invalid_heads: read(&self.invalid_heads),
            data_before_head: read(&self.data_before_head),
            unexpected_frames: read(&self.unexpected_frames),
            truncated_frames: read(&self.truncated_frames),
            handshakes_rejected: read(&self.handshakes_rejected),
            connections_opened: read(&self.connections_opened),
            connections_accepted: read(&self.connections_accepted),
        }
    }
}
