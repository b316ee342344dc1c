//! The four call shapes over real QUIC on loopback, with typed and raw payloads.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::{cluster, init_logs, node, node_with, peer};
use murmur_rpc::{
    CallOptions, Code, Endpoint, Identity, Metadata, Raw, RpcConfig, Status, Streaming,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Order {
    id: u64,
    items: Vec<String>,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Receipt {
    id: u64,
    count: usize,
    caller: String,
    user: Option<String>,
}

#[tokio::test]
async fn unary_typed_call_round_trips() {
    init_logs();
    let trust = cluster();
    let server = node(&trust);
    let client = node(&trust);
    server
        .router()
        .unary("orders", "place", |ctx, order: Order| async move {
            Ok::<_, Status>(Receipt {
                id: order.id,
                count: order.items.len(),
                caller: ctx.peer().to_string(),
                user: ctx.metadata().get("x-user").map(str::to_string),
            })
        });

    let order = Order {
        id: 7,
        items: vec!["tea".into(), "cake".into()],
    };
    let options = CallOptions::new().metadata("x-user", "ann");
    let receipt: Receipt = client
        .call(peer(&server), "orders", "place", &order, options)
        .await
        .unwrap();

    assert_eq!(receipt.id, 7);
    assert_eq!(receipt.count, 2);
    assert_eq!(receipt.caller, client.node_id().to_string());
    assert_eq!(receipt.user.as_deref(), Some("ann"));
}

#[tokio::test]
async fn unary_raw_call_over_ipv6() {
    init_logs();
    let trust = cluster();
    let addr = "[::1]:0".parse().unwrap();
    let bind = |identity: &Identity| Endpoint::bind(addr, identity, &trust, RpcConfig::default());
    let (server, client) = match (
        bind(&Identity::generate().unwrap()),
        bind(&Identity::generate().unwrap()),
    ) {
        (Ok(server), Ok(client)) => (server, client),
        (Err(error), _) | (_, Err(error)) => {
            eprintln!("skipping: IPv6 loopback is not available here: {error}");
            return;
        }
    };
    server
        .router()
        .unary("echo", "reverse", |_ctx, request: Raw| async move {
            let mut bytes = request.0.to_vec();
            bytes.reverse();
            Ok::<_, Status>(Raw::from(bytes))
        });

    let reply: Raw = client
        .call(
            peer(&server),
            "echo",
            "reverse",
            &Raw(Bytes::from_static(b"\x00\x01\xff")),
            CallOptions::new(),
        )
        .await
        .unwrap();
    assert_eq!(&reply.0[..], b"\xff\x01\x00");
}

#[tokio::test]
async fn many_calls_share_one_connection() {
    init_logs();
    let trust = cluster();
    let server = node(&trust);
    let client = node(&trust);
    server
        .router()
        .unary("math", "double", |_ctx, n: u64| async move {
            Ok::<_, Status>(n * 2)
        });

    let target = peer(&server);
    let calls = (0..64u64).map(|n| {
        let client = client.clone();
        async move {
            client
                .call::<u64, u64>(target, "math", "double", &n, CallOptions::new())
                .await
        }
    });
    let replies = join_all(calls).await;
    for (n, reply) in replies.into_iter().enumerate() {
        assert_eq!(reply.unwrap(), 2 * n as u64);
    }
    assert_eq!(server.stats().calls_served, 64);
    assert_eq!(client.stats().connections_opened, 1);
    assert_eq!(server.stats().connections_accepted, 1);
}

#[tokio::test]
async fn handler_status_reaches_caller_with_metadata() {
    init_logs();
    let trust = cluster();
    let server = node(&trust);
    let client = node(&trust);
    server
        .router()
        .unary("orders", "get", |_ctx, id: u64| async move {
            let metadata: Metadata = [("retry-after", "5")].into_iter().collect();
            Err::<(), _>(Status::not_found(format!("no order {id}")).with_metadata(metadata))
        });

    let status = client
        .call::<u64, ()>(peer(&server), "orders", "get", &9, CallOptions::new())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(status.message(), "no order 9");
    assert_eq!(status.metadata().get("retry-after"), Some("5"));
}

#[tokio::test]
async fn unknown_method_is_unimplemented() {
    init_logs();
    let trust = cluster();
    let server = node(&trust);
    let client = node(&trust);

    let status = client
        .call::<u64, u64>(peer(&server), "nothing", "here", &1, CallOptions::new())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);
    assert!(status.message().contains("\"here\""), "{status}");
}

#[tokio::test]
async fn wrong_request_type_is_invalid_argument() {
    init_logs();
    let trust = cluster();
    let server = node(&trust);
    let client = node(&trust);
    server
        .router()
        .unary("orders", "place", |_ctx, order: Order| async move {
            Ok::<_, Status>(order.id)
        });

    let status = client
        .call::<String, u64>(
            peer(&server),
            "orders",
            "place",
            &"not an order".to_string(),
            CallOptions::new(),
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn server_stream_of_10000_messages_has_backpressure() {
    init_logs();
    let trust = cluster();
    let mut small_windows = RpcConfig::default();
    small_windows.stream_receive_window(64 * 1024);
    let server = node(&trust);
    let client = node_with(&trust, small_windows);

    let sent = Arc::new(AtomicUsize::new(0));
    let sent_by_handler = sent.clone();
    server
        .router()
        .server_streaming("feed", "numbers", move |_ctx, count: usize, mut sink| {
            let sent = sent_by_handler.clone();
            async move {
                for n in 0..count {
                    sink.send(&Raw::from(vec![(n % 251) as u8; 1024])).await?;
                    sent.fetch_add(1, Ordering::SeqCst);
                }
                Ok(())
            }
        });

    let mut replies: Streaming<Raw> = client
        .server_streaming(
            peer(&server),
            "feed",
            "numbers",
            &10_000usize,
            CallOptions::new(),
        )
        .await
        .unwrap();
    let first = replies.message().await.unwrap().unwrap();
    assert_eq!(first.0.len(), 1024);

    // The reader pauses; flow control must stop the handler long before it sends all.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent_while_paused = sent.load(Ordering::SeqCst);
    assert!(
        sent_while_paused < 1_000,
        "handler sent {sent_while_paused} of 10000 messages to a paused reader"
    );

    let mut received = 1;
    while let Some(message) = replies.message().await.unwrap() {
        assert_eq!(message.0[0], (received % 251) as u8);
        received += 1;
    }
    assert_eq!(received, 10_000);
    assert!(replies.trailers().is_some());
}

#[tokio::test]
async fn client_stream_sums_requests() {
    init_logs();
    let trust = cluster();
    let server = node(&trust);
    let client = node(&trust);
    server.router().client_streaming(
        "math",
        "sum",
        |_ctx, mut numbers: Streaming<u64>| async move {
            let mut total = 0;
            while let Some(n) = numbers.message().await? {
                total += n;
            }
            Ok::<_, Status>(total)
        },
    );

    let mut call = client
        .client_streaming::<u64, u64>(peer(&server), "math", "sum", CallOptions::new())
        .await
        .unwrap();
    for n in 1..=100 {
        call.send(&n).await.unwrap();
    }
    assert_eq!(call.finish().await.unwrap(), 5050);
}

#[tokio::test]
async fn bidi_stream_echoes_in_order() {
    init_logs();
    let trust = cluster();
    let server = node(&trust);
    let client = node(&trust);
    server.router().bidi_streaming(
        "chat",
        "shout",
        |_ctx, mut lines: Streaming<String>, mut sink| async move {
            while let Some(line) = lines.message().await? {
                sink.send(&line.to_uppercase()).await?;
            }
            Ok(())
        },
    );

    let (mut requests, mut replies) = client
        .bidi_streaming::<String, String>(peer(&server), "chat", "shout", CallOptions::new())
        .await
        .unwrap();
    for word in ["one", "two", "three"] {
        requests.send(&word.to_string()).await.unwrap();
        let echoed = replies.message().await.unwrap().unwrap();
        assert_eq!(echoed, word.to_uppercase());
    }
    requests.finish().await.unwrap();
    assert_eq!(replies.message().await.unwrap(), None);
}

#[tokio::test]
async fn bidi_handler_error_ends_reply_stream() {
    init_logs();
    let trust = cluster();
    let server = node(&trust);
    let client = node(&trust);
    server.router().bidi_streaming(
        "chat",
        "picky",
        |_ctx, mut lines: Streaming<String>, mut sink| async move {
            while let Some(line) = lines.message().await? {
                if line == "bad" {
                    return Err(Status::invalid_argument("bad line"));
                }
                sink.send(&line).await?;
            }
            Ok(())
        },
    );

    let (mut requests, mut replies) = client
        .bidi_streaming::<String, String>(peer(&server), "chat", "picky", CallOptions::new())
        .await
        .unwrap();
    requests.send(&"good".to_string()).await.unwrap();
    assert_eq!(replies.message().await.unwrap().as_deref(), Some("good"));
    requests.send(&"bad".to_string()).await.unwrap();
    let status = replies.message().await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(status.message(), "bad line");
}

#[tokio::test]
async fn endpoints_call_each_other_on_one_connection() {
    init_logs();
    let trust = cluster();
    let a = node(&trust);
    let b = node(&trust);
    for endpoint in [&a, &b] {
        endpoint
            .router()
            .unary("who", "am_i", |ctx, (): ()| async move {
                Ok::<_, Status>(ctx.peer().to_string())
            });
    }

    let seen_by_b: String = a
        .call(peer(&b), "who", "am_i", &(), CallOptions::new())
        .await
        .unwrap();
    let seen_by_a: String = b
        .call(peer(&a), "who", "am_i", &(), CallOptions::new())
        .await
        .unwrap();
    assert_eq!(seen_by_b, a.node_id().to_string());
    assert_eq!(seen_by_a, b.node_id().to_string());
    assert_eq!(a.stats().connections_opened, 1);
    assert_eq!(
        b.stats().connections_opened,
        0,
        "b reuses the connection a opened"
    );
}

/// Runs the futures as tasks and returns their outputs in order.
async fn join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut outputs = Vec::with_capacity(handles.len());
    for handle in handles {
        outputs.push(handle.await.unwrap());
    }
    outputs
}

#[tokio::test]
async fn any_method_handler_serves_unregistered_methods() {
    init_logs();
    let trust = cluster();
    let server = node(&trust);
    let client = node(&trust);
    server
        .router()
        .unary("proxy", murmur_rpc::ANY_METHOD, |ctx, (): ()| async move {
            Ok::<_, Status>(ctx.method().to_string())
        })
        .unary("proxy", "own", |_ctx, (): ()| async move {
            Ok::<_, Status>("own".to_string())
        });

    let forwarded: String = client
        .call(peer(&server), "proxy", "anything", &(), CallOptions::new())
        .await
        .unwrap();
    assert_eq!(forwarded, "anything");
    let own: String = client
        .call(peer(&server), "proxy", "own", &(), CallOptions::new())
        .await
        .unwrap();
    assert_eq!(own, "own");
}
