//! The protocol over an in-memory `tokio::io::duplex` pipe instead of QUIC, the way another
//! transport such as a libp2p stream would carry it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use murmur_rpc::{
    CallOptions, CallStream, Code, FrameDecoder, FrameKind, NodeId, Raw, Router, RpcConfig, Status,
    Streaming, Trail, encode_frame,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CALLER: NodeId = NodeId::from_bytes([42; 32]);

fn router() -> Router {
    let router = Router::new(RpcConfig::default());
    router
        .unary("echo", "upper", |_ctx, text: String| async move {
            Ok::<_, Status>(text.to_uppercase())
        })
        .unary("echo", "raw", |_ctx, payload: Raw| async move {
            Ok::<_, Status>(payload)
        })
        .unary("who", "called", |ctx, (): ()| async move {
            Ok::<_, Status>(ctx.peer())
        })
        .unary("fail", "always", |_ctx, (): ()| async move {
            Err::<(), _>(Status::new(Code::FailedPrecondition, "not ready"))
        })
        .server_streaming("count", "to", |_ctx, n: u32, mut sink| async move {
            for i in 1..=n {
                sink.send(&i).await?;
            }
            Ok(())
        })
        .client_streaming(
            "count",
            "sum",
            |_ctx, mut items: Streaming<u32>| async move {
                let mut total = 0;
                while let Some(item) = items.message().await? {
                    total += item;
                }
                Ok::<_, Status>(total)
            },
        )
        .bidi_streaming(
            "count",
            "double",
            |_ctx, mut items: Streaming<u32>, mut sink| async move {
                while let Some(item) = items.message().await? {
                    sink.send(&(item * 2)).await?;
                }
                Ok(())
            },
        );
    router
}

/// Connects a caller to `router` through an in-memory pipe.
fn connect(router: &Router) -> CallStream {
    let (caller_side, server_side) = tokio::io::duplex(4096);
    let (server_read, server_write) = tokio::io::split(server_side);
    let router = router.clone();
    tokio::spawn(async move { router.serve_stream(CALLER, server_read, server_write).await });
    let (caller_read, caller_write) = tokio::io::split(caller_side);
    CallStream::new(caller_read, caller_write, &RpcConfig::default())
}

#[tokio::test]
async fn unary_typed_and_raw_calls() {
    let router = router();
    let upper: String = connect(&router)
        .unary("echo", "upper", &"quiet".to_string(), CallOptions::new())
        .await
        .unwrap();
    assert_eq!(upper, "QUIET");

    let raw: Raw = connect(&router)
        .unary(
            "echo",
            "raw",
            &Raw(Bytes::from_static(b"\x00\x01")),
            CallOptions::new(),
        )
        .await
        .unwrap();
    assert_eq!(&raw.0[..], b"\x00\x01");
}

#[tokio::test]
async fn handler_sees_transport_peer() {
    let router = router();
    let peer: NodeId = connect(&router)
        .unary("who", "called", &(), CallOptions::new())
        .await
        .unwrap();
    assert_eq!(peer, CALLER);
}

#[tokio::test]
async fn handler_status_reaches_caller() {
    let status = connect(&router())
        .unary::<(), ()>("fail", "always", &(), CallOptions::new())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(status.message(), "not ready");
}

#[tokio::test]
async fn server_streaming_call() {
    let mut numbers: Streaming<u32> = connect(&router())
        .server_streaming("count", "to", &500u32, CallOptions::new())
        .await
        .unwrap();
    let mut expected = 1;
    while let Some(n) = numbers.message().await.unwrap() {
        assert_eq!(n, expected);
        expected += 1;
    }
    assert_eq!(expected, 501);
}

#[tokio::test]
async fn client_streaming_call() {
    let mut call = connect(&router())
        .client_streaming::<u32, u32>("count", "sum", CallOptions::new())
        .await
        .unwrap();
    for n in 1..=10 {
        call.send(&n).await.unwrap();
    }
    assert_eq!(call.finish().await.unwrap(), 55);
}

#[tokio::test]
async fn bidi_streaming_call() {
    let (mut requests, mut replies) = connect(&router())
        .bidi_streaming::<u32, u32>("count", "double", CallOptions::new())
        .await
        .unwrap();
    for n in [1, 2, 3] {
        requests.send(&n).await.unwrap();
        assert_eq!(replies.message().await.unwrap(), Some(n * 2));
    }
    requests.finish().await.unwrap();
    assert_eq!(replies.message().await.unwrap(), None);
}

#[tokio::test]
async fn deadline_fails_call_and_drops_handler() {
    let router = Router::new(RpcConfig::default());
    let dropped = Arc::new(AtomicBool::new(false));
    let handler_dropped = dropped.clone();
    router.unary("slow", "sleep", move |_ctx, (): ()| {
        let guard = DropFlag(handler_dropped.clone());
        async move {
            let _guard = guard;
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok::<_, Status>(())
        }
    });
    assert_dropped_at_deadline(&router, "sleep", &dropped).await;
}

/// A handler that spends the task's whole cooperative budget on every poll still ends at
/// its deadline: the server's timer does not wait for budget.
#[tokio::test]
async fn deadline_drops_budget_spending_handler() {
    let router = Router::new(RpcConfig::default());
    let dropped = Arc::new(AtomicBool::new(false));
    let handler_dropped = dropped.clone();
    router.unary("slow", "spin", move |_ctx, (): ()| {
        let guard = DropFlag(handler_dropped.clone());
        async move {
            let _guard = guard;
            spend_budget_forever().await
        }
    });
    assert_dropped_at_deadline(&router, "spin", &dropped).await;
}

async fn spend_budget_forever() -> Result<(), Status> {
    loop {
        tokio::task::consume_budget().await;
    }
}

/// Calls `slow/<method>` with a 100 ms deadline, then waits up to 10 s for the handler to
/// be dropped and checks the router counted the deadline.
async fn assert_dropped_at_deadline(router: &Router, method: &str, dropped: &AtomicBool) {
    let status = connect(router)
        .unary::<(), ()>(
            "slow",
            method,
            &(),
            CallOptions::new().timeout(Duration::from_millis(100)),
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded);

    let start = tokio::time::Instant::now();
    while !dropped.load(Ordering::SeqCst) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "handler never dropped"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(router.stats().calls_deadline_exceeded, 1);
}

struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Writes raw bytes to a router as a whole request and returns the trail's status.
async fn send_raw(router: &Router, bytes: &[u8]) -> Status {
    let (mut caller_side, server_side) = tokio::io::duplex(1 << 16);
    let (server_read, server_write) = tokio::io::split(server_side);
    let router = router.clone();
    let server =
        tokio::spawn(async move { router.serve_stream(CALLER, server_read, server_write).await });

    caller_side.write_all(bytes).await.unwrap();
    caller_side.shutdown().await.unwrap();
    let mut reply = Vec::new();
    caller_side.read_to_end(&mut reply).await.unwrap();
    server.await.unwrap();

    let mut buf = BytesMut::from(&reply[..]);
    let frame = FrameDecoder::new(1 << 20, 1 << 20)
        .decode_eof(&mut buf)
        .unwrap()
        .expect("a trail frame");
    assert_eq!(frame.kind, FrameKind::Trail);
    Trail::decode(&frame.body)
        .unwrap()
        .into_result()
        .unwrap_err()
}

#[tokio::test]
async fn bad_bytes_end_the_stream_with_a_status() {
    let router = router();

    let status = send_raw(&router, &[0, 0, 0, 0, 0x66]).await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(status.message(), "unknown frame kind 0x66");

    let mut data_first = BytesMut::new();
    encode_frame(FrameKind::Data, b"\xc0", &mut data_first);
    let status = send_raw(&router, &data_first).await;
    assert_eq!(status.code(), Code::InvalidArgument);

    let mut bad_head = BytesMut::new();
    encode_frame(FrameKind::Head, b"\xc1", &mut bad_head);
    let status = send_raw(&router, &bad_head).await;
    assert_eq!(status.code(), Code::InvalidArgument);

    let status = send_raw(&router, &[0, 0, 0, 9, 1, 0x80]).await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("stream ended inside a frame"),
        "{status}"
    );

    let stats = router.stats();
    assert_eq!(stats.unknown_frame_kinds, 1);
    assert_eq!(stats.data_before_head, 1);
    assert_eq!(stats.invalid_heads, 1);
    assert_eq!(stats.truncated_frames, 1);
}
