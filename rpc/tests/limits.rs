//! Frame, head, in-flight and stream limits over real QUIC on loopback: every shape gets
//! `ResourceExhausted` at once, and the connection goes on.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{PATIENCE, cluster, init_logs, node, node_with, peer};
use murmur_rpc::{CallOptions, Code, Endpoint, Raw, RpcConfig, Status, Streaming};
use tokio::sync::Semaphore;
use tokio::time::Instant;

const MIB: usize = 1024 * 1024;

fn config_with_frame_limit(bytes: usize) -> RpcConfig {
    let mut config = RpcConfig::default();
    config.max_frame_size(bytes as u32);
    config
}

fn raw(len: usize) -> Raw {
    Raw(Bytes::from(vec![0xab; len]))
}

fn serve_echo(endpoint: &Endpoint) {
    endpoint
        .router()
        .unary("echo", "raw", |_ctx, payload: Raw| async move {
            Ok::<_, Status>(payload)
        });
}

async fn echo(client: &Endpoint, server: &Endpoint, len: usize) -> Result<Raw, Status> {
    client
        .call(peer(server), "echo", "raw", &raw(len), CallOptions::new())
        .await
}

#[tokio::test]
async fn oversized_request_is_rejected_by_server_and_connection_goes_on() {
    init_logs();
    let trust = cluster();
    let server = node_with(&trust, config_with_frame_limit(MIB));
    let client = node_with(&trust, config_with_frame_limit(8 * MIB));
    serve_echo(&server);
    assert_eq!(echo(&client, &server, 10).await.unwrap().0.len(), 10);

    let status = echo(&client, &server, 2 * MIB).await.unwrap_err();

    assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
    assert_eq!(
        status.message(),
        "frame of 2097152 bytes exceeds the 1048576-byte limit"
    );
    assert_eq!(server.stats().oversized_frames, 1);
    assert_eq!(echo(&client, &server, 10).await.unwrap().0.len(), 10);
    assert_eq!(client.stats().connections_opened, 1);
}

#[tokio::test]
async fn oversized_request_fails_locally_before_sending() {
    init_logs();
    let trust = cluster();
    let server = node(&trust);
    let client = node(&trust);
    serve_echo(&server);

    let status = echo(&client, &server, 9 * MIB).await.unwrap_err();

    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(
        status.message(),
        "frame of 9437184 bytes exceeds the 4194304-byte limit"
    );
    assert_eq!(server.stats().calls_served, 0);
}

#[tokio::test]
async fn oversized_reply_is_rejected_by_caller() {
    init_logs();
    let trust = cluster();
    let server = node_with(&trust, config_with_frame_limit(8 * MIB));
    let client = node_with(&trust, config_with_frame_limit(MIB));
    server
        .router()
        .unary("big", "reply", |_ctx, len: usize| async move {
            Ok::<_, Status>(raw(len))
        });

    let status = client
        .call::<usize, Raw>(
            peer(&server),
            "big",
            "reply",
            &(2 * MIB),
            CallOptions::new(),
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
    assert!(
        status.message().contains("exceeds the 1048576-byte limit"),
        "{status}"
    );

    let small: Raw = client
        .call(peer(&server), "big", "reply", &16usize, CallOptions::new())
        .await
        .unwrap();
    assert_eq!(small.0.len(), 16);
}

#[tokio::test]
async fn oversized_head_is_rejected_by_server() {
    init_logs();
    let trust = cluster();
    let server = node(&trust);
    let mut large_heads = RpcConfig::default();
    large_heads.max_head_size(MIB as u32);
    let client = node_with(&trust, large_heads);
    serve_echo(&server);

    let options = CallOptions::new().metadata("x-blob", "x".repeat(100 * 1024));
    let status = client
        .call::<Raw, Raw>(peer(&server), "echo", "raw", &raw(1), options)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
    assert!(status.message().starts_with("head of "), "{status}");
    assert!(
        status.message().ends_with("exceeds the 65536-byte limit"),
        "{status}"
    );
    assert_eq!(echo(&client, &server, 1).await.unwrap().0.len(), 1);
}

#[tokio::test]
async fn oversized_client_stream_message_is_rejected_by_server() {
    init_logs();
    let trust = cluster();
    let server = node_with(&trust, config_with_frame_limit(MIB));
    let client = node_with(&trust, config_with_frame_limit(8 * MIB));
    server.router().client_streaming(
        "sink",
        "count",
        |_ctx, mut parts: Streaming<Raw>| async move {
            let mut count = 0u64;
            while parts.message().await?.is_some() {
                count += 1;
            }
            Ok::<_, Status>(count)
        },
    );

    let mut call = client
        .client_streaming::<Raw, u64>(peer(&server), "sink", "count", CallOptions::new())
        .await
        .unwrap();
    call.send(&raw(10)).await.unwrap();
    let sent = call.send(&raw(2 * MIB)).await;
    let status = match sent {
        Err(status) => status,
        Ok(()) => call.finish().await.unwrap_err(),
    };
    assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
    assert_eq!(
        status.message(),
        "frame of 2097152 bytes exceeds the 1048576-byte limit"
    );
}

#[tokio::test]
async fn oversized_server_stream_messages_are_rejected_on_both_sides() {
    init_logs();
    let trust = cluster();
    let server = node_with(&trust, config_with_frame_limit(2 * MIB));
    let client = node_with(&trust, config_with_frame_limit(MIB));
    server.router().server_streaming(
        "feed",
        "sizes",
        |_ctx, sizes: Vec<usize>, mut sink| async move {
            for size in sizes {
                sink.send(&raw(size)).await?;
            }
            Ok(())
        },
    );

    // Over the caller's limit: the caller rejects the frame.
    let mut replies: Streaming<Raw> = client
        .server_streaming(
            peer(&server),
            "feed",
            "sizes",
            &vec![10, MIB + 1],
            CallOptions::new(),
        )
        .await
        .unwrap();
    assert_eq!(replies.message().await.unwrap().unwrap().0.len(), 10);
    let status = replies.message().await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status}");

    // Over the server's own limit: the handler's send fails and the trail reports it.
    let mut replies: Streaming<Raw> = client
        .server_streaming(
            peer(&server),
            "feed",
            "sizes",
            &vec![3 * MIB],
            CallOptions::new(),
        )
        .await
        .unwrap();
    let status = replies.message().await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
    assert_eq!(
        status.message(),
        "frame of 3145728 bytes exceeds the 2097152-byte limit"
    );
}

/// Registers `gate/wait`, whose calls hold until the returned semaphore gets a permit.
fn serve_gated(endpoint: &Endpoint) -> Arc<Semaphore> {
    let gate = Arc::new(Semaphore::new(0));
    let handler_gate = gate.clone();
    endpoint
        .router()
        .unary("gate", "wait", move |_ctx, (): ()| {
            let gate = handler_gate.clone();
            async move {
                let permit = gate
                    .acquire()
                    .await
                    .map_err(|_| Status::internal("gate closed"))?;
                permit.forget();
                Ok::<_, Status>(())
            }
        });
    gate
}

fn spawn_gated_call(
    client: &Endpoint,
    server: &Endpoint,
) -> tokio::task::JoinHandle<Result<(), Status>> {
    let client = client.clone();
    let target = peer(server);
    tokio::spawn(async move {
        client
            .call::<(), ()>(target, "gate", "wait", &(), CallOptions::new())
            .await
    })
}

#[tokio::test]
async fn call_past_in_flight_limit_fails_at_once() {
    init_logs();
    let trust = cluster();
    let mut two_calls = RpcConfig::default();
    two_calls.max_in_flight_calls(2);
    let server = node_with(&trust, two_calls);
    let client = node(&trust);
    let gate = serve_gated(&server);

    let first = spawn_gated_call(&client, &server);
    let second = spawn_gated_call(&client, &server);
    assert!(common::eventually(|| server.stats().calls_served == 2).await);

    let start = Instant::now();
    let status = client
        .call::<(), ()>(peer(&server), "gate", "wait", &(), CallOptions::new())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
    assert!(status.message().contains("2 calls"), "{status}");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "took {:?}",
        start.elapsed()
    );
    assert_eq!(server.stats().calls_rejected_in_flight, 1);

    gate.add_permits(2);
    first.await.unwrap().unwrap();
    second.await.unwrap().unwrap();
    let third = spawn_gated_call(&client, &server);
    gate.add_permits(1);
    tokio::time::timeout(PATIENCE, third)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

/// A slot comes back however a call ends: at its deadline and when its caller goes away,
/// not only when the handler finishes.
#[tokio::test]
async fn slot_returns_after_deadline_and_cancel() {
    init_logs();
    let trust = cluster();
    let mut one_call = RpcConfig::default();
    one_call.max_in_flight_calls(1);
    let server = node_with(&trust, one_call);
    let client = node(&trust);
    let gate = serve_gated(&server);

    let timed_out = client
        .call::<(), ()>(
            peer(&server),
            "gate",
            "wait",
            &(),
            CallOptions::new().timeout(Duration::from_millis(100)),
        )
        .await
        .unwrap_err();
    assert_eq!(timed_out.code(), Code::DeadlineExceeded, "{timed_out}");
    // The server drops the handler at its deadline, or earlier when the caller's reset
    // arrives first. It counts the call once either way.
    let dropped = || {
        let stats = server.stats();
        stats.calls_deadline_exceeded + stats.calls_cancelled
    };
    assert!(common::eventually(|| dropped() == 1).await);

    let abandoned = spawn_gated_call(&client, &server);
    assert!(common::eventually(|| server.stats().calls_served == 2).await);
    abandoned.abort();
    assert!(common::eventually(|| dropped() == 2).await);

    let last = spawn_gated_call(&client, &server);
    gate.add_permits(1);
    tokio::time::timeout(PATIENCE, last)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(server.stats().calls_rejected_in_flight, 0);
}

#[tokio::test]
async fn call_past_stream_limit_fails_at_once() {
    init_logs();
    let trust = cluster();
    let mut two_streams = RpcConfig::default();
    two_streams.max_concurrent_streams(2);
    let server = node_with(&trust, two_streams);
    let client = node(&trust);
    let gate = serve_gated(&server);

    let first = spawn_gated_call(&client, &server);
    let second = spawn_gated_call(&client, &server);
    assert!(common::eventually(|| server.stats().calls_served == 2).await);

    let start = Instant::now();
    let status = client
        .call::<(), ()>(peer(&server), "gate", "wait", &(), CallOptions::new())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "took {:?}",
        start.elapsed()
    );

    gate.add_permits(2);
    first.await.unwrap().unwrap();
    second.await.unwrap().unwrap();
}
