//! Malformed streams sent to a real endpoint: each kind ends its own stream with a status,
//! is counted, and leaves the connection and other calls alone.

use bytes::BytesMut;

use crate::frame::{FrameDecoder, FrameKind, encode_frame};
use crate::{
    CallOptions, Code, Endpoint, Identity, Peer, RpcConfig, Stats, Status, Streaming, Trust,
};

fn endpoint(trust: &Trust) -> Endpoint {
    let addr = "127.0.0.1:0".parse().unwrap();
    Endpoint::bind(
        addr,
        &Identity::generate().unwrap(),
        trust,
        RpcConfig::default(),
    )
    .unwrap()
}

fn serve(endpoint: &Endpoint) {
    endpoint
        .router()
        .unary("echo", "text", |_ctx, text: String| async move {
            Ok::<_, Status>(text)
        });
    endpoint.router().client_streaming(
        "echo",
        "count",
        |_ctx, mut items: Streaming<String>| async move {
            let mut count = 0u64;
            while items.message().await?.is_some() {
                count += 1;
            }
            Ok::<_, Status>(count)
        },
    );
}

/// Sends `bytes` as a whole request stream on the pooled connection and returns the status
/// in the server's trail.
async fn send_raw(client: &Endpoint, server: Peer, bytes: &[u8]) -> Status {
    let connection = client.connection(server).await.unwrap();
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    // The server may stop reading before all bytes arrive; its trail still follows.
    let _ = send.write_all(bytes).await;
    let _ = send.finish();

    let reply = recv.read_to_end(1 << 20).await.unwrap();
    let mut buf = BytesMut::from(&reply[..]);
    let decoder = FrameDecoder::new(1 << 20, 1 << 20);
    let frame = decoder
        .decode_eof(&mut buf)
        .unwrap()
        .expect("a trail frame");
    assert_eq!(frame.kind, FrameKind::Trail);
    assert_eq!(
        decoder.decode_eof(&mut buf).unwrap(),
        None,
        "nothing after the trail"
    );
    crate::Trail::decode(&frame.body)
        .unwrap()
        .into_result()
        .expect_err("malformed request must fail")
}

fn frame(kind: FrameKind, body: &[u8]) -> BytesMut {
    let mut buf = BytesMut::new();
    encode_frame(kind, body, &mut buf);
    buf
}

fn head(service: &str, method: &str) -> BytesMut {
    let body = rmp_serde::to_vec_named(&crate::Head::new(service, method)).unwrap();
    frame(FrameKind::Head, &body)
}

/// Runs one malformed request beside a good call on the same connection, checks the code
/// and the good call, and returns the server's counters.
async fn check_rejected(bytes: &[u8], expected: Code) -> Stats {
    let trust = Trust::derived(b"bad input test cluster key bytes").unwrap();
    let server = endpoint(&trust);
    let client = endpoint(&trust);
    serve(&server);
    let target = server.peer().unwrap();

    let good_client = client.clone();
    let good = tokio::spawn(async move {
        good_client
            .call::<String, String>(target, "echo", "text", &"ok".into(), CallOptions::new())
            .await
    });
    let status = send_raw(&client, target, bytes).await;
    assert_eq!(status.code(), expected, "{status}");
    assert_eq!(good.await.unwrap().unwrap(), "ok");

    let after: String = client
        .call(
            target,
            "echo",
            "text",
            &"after".to_string(),
            CallOptions::new(),
        )
        .await
        .unwrap();
    assert_eq!(after, "after");
    assert_eq!(
        client.stats().connections_opened,
        1,
        "the connection survived"
    );
    server.stats()
}

#[tokio::test]
async fn unknown_frame_kind_is_invalid_argument() {
    let stats = check_rejected(&[0, 0, 0, 1, 0x09, 0], Code::InvalidArgument).await;
    assert_eq!(stats.unknown_frame_kinds, 1);
}

#[tokio::test]
async fn head_that_is_not_msgpack_is_invalid_argument() {
    let bytes = frame(FrameKind::Head, &[0xc1, 0xff, 0x00]);
    let stats = check_rejected(&bytes, Code::InvalidArgument).await;
    assert_eq!(stats.invalid_heads, 1);
}

#[tokio::test]
async fn head_without_method_is_invalid_argument() {
    let body = rmp_serde::to_vec_named(
        &[("service", "echo")]
            .into_iter()
            .collect::<std::collections::BTreeMap<_, _>>(),
    )
    .unwrap();
    let stats = check_rejected(&frame(FrameKind::Head, &body), Code::InvalidArgument).await;
    assert_eq!(stats.invalid_heads, 1);
}

#[tokio::test]
async fn data_before_head_is_invalid_argument() {
    let bytes = frame(FrameKind::Data, b"\xa2hi");
    let stats = check_rejected(&bytes, Code::InvalidArgument).await;
    assert_eq!(stats.data_before_head, 1);
}

#[tokio::test]
async fn truncated_head_is_invalid_argument() {
    let whole = head("echo", "text");
    let stats = check_rejected(&whole[..whole.len() - 3], Code::InvalidArgument).await;
    assert_eq!(stats.truncated_frames, 1);
}

#[tokio::test]
async fn truncated_data_after_head_is_invalid_argument() {
    let mut bytes = head("echo", "text");
    let data = frame(FrameKind::Data, b"\xa5hello");
    bytes.extend_from_slice(&data[..data.len() - 2]);
    let stats = check_rejected(&bytes, Code::InvalidArgument).await;
    assert_eq!(stats.truncated_frames, 1);
}

#[tokio::test]
async fn unknown_frame_kind_mid_stream_is_invalid_argument() {
    let mut bytes = head("echo", "count");
    bytes.extend_from_slice(&frame(FrameKind::Data, b"\xa1a"));
    bytes.extend_from_slice(&[0, 0, 0, 0, 0x7f]);
    let stats = check_rejected(&bytes, Code::InvalidArgument).await;
    assert_eq!(stats.unknown_frame_kinds, 1);
}

#[tokio::test]
async fn trail_in_request_is_invalid_argument() {
    let mut bytes = head("echo", "count");
    bytes.extend_from_slice(&frame(FrameKind::Trail, b"\x80"));
    let stats = check_rejected(&bytes, Code::InvalidArgument).await;
    assert_eq!(stats.unexpected_frames, 1);
}

#[tokio::test]
async fn second_message_in_unary_request_is_invalid_argument() {
    let mut bytes = head("echo", "text");
    bytes.extend_from_slice(&frame(FrameKind::Data, b"\xa1a"));
    bytes.extend_from_slice(&frame(FrameKind::Data, b"\xa1b"));
    let stats = check_rejected(&bytes, Code::InvalidArgument).await;
    assert_eq!(stats.unexpected_frames, 1);
}

#[tokio::test]
async fn oversized_frame_header_is_resource_exhausted() {
    let mut bytes = head("echo", "text");
    bytes.extend_from_slice(&[0x7f, 0, 0, 0, FrameKind::Data.as_u8()]);
    let stats = check_rejected(&bytes, Code::ResourceExhausted).await;
    assert_eq!(stats.oversized_frames, 1);
}
