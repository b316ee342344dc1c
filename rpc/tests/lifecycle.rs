//! Deadlines, cancellation, and connections that die, over real QUIC on loopback.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{PATIENCE, cluster, init_logs, node, node_with, peer};
use murmur_rpc::{
    CallOptions, Code, Context, Endpoint, Identity, Peer, RpcConfig, Status, Streaming, Trust,
};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// Sets its flag when dropped, so a test can see that a handler's future was dropped.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// What a handler that never finishes reports: that it started, that its context was
/// cancelled, and (through the flag) that its future was dropped.
struct Observed {
    started: mpsc::UnboundedReceiver<()>,
    cancelled: mpsc::UnboundedReceiver<()>,
    dropped: Arc<AtomicBool>,
}

/// Registers `hang/forever` (unary) and `hang/upload` (client streaming), whose handlers
/// never finish on their own.
fn serve_hanging(endpoint: &Endpoint) -> Observed {
    let (started_tx, started) = mpsc::unbounded_channel();
    let (cancelled_tx, cancelled) = mpsc::unbounded_channel();
    let dropped = Arc::new(AtomicBool::new(false));

    let watch = {
        let started_tx = started_tx.clone();
        let cancelled_tx = cancelled_tx.clone();
        let dropped = dropped.clone();
        move |ctx: &Context| {
            let cancelled_tx = cancelled_tx.clone();
            let token = ctx.cancellation_token();
            tokio::spawn(async move {
                token.cancelled().await;
                let _ = cancelled_tx.send(());
            });
            let _ = started_tx.send(());
            DropFlag(dropped.clone())
        }
    };

    let watch_unary = watch.clone();
    endpoint
        .router()
        .unary("hang", "forever", move |ctx, (): ()| {
            let guard = watch_unary(&ctx);
            async move {
                let _guard = guard;
                std::future::pending::<()>().await;
                Ok::<(), Status>(())
            }
        });
    endpoint.router().client_streaming(
        "hang",
        "upload",
        move |ctx, mut requests: Streaming<u64>| {
            let guard = watch(&ctx);
            async move {
                let _guard = guard;
                while requests.message().await?.is_some() {}
                std::future::pending::<()>().await;
                Ok::<(), Status>(())
            }
        },
    );
    Observed {
        started,
        cancelled,
        dropped,
    }
}

async fn within_patience<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, future)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

#[tokio::test]
async fn deadline_fails_call_promptly_and_cancels_handler() {
    init_logs();
    let trust = cluster();
    let server = node(&trust);
    let client = node(&trust);
    let mut observed = serve_hanging(&server);
    // Connect first, so the deadline measures the call and not the handshake.
    client.open_call(peer(&server)).await.unwrap();

    let timeout = Duration::from_millis(300);
    let start = Instant::now();
    let status = client
        .call::<(), ()>(
            peer(&server),
            "hang",
            "forever",
            &(),
            CallOptions::new().timeout(timeout),
        )
        .await
        .unwrap_err();
    let elapsed = start.elapsed();

    assert_eq!(status.code(), Code::DeadlineExceeded);
    assert!(elapsed >= timeout, "failed early, after {elapsed:?}");
    // The bound allows for a loaded machine; the timer itself fires within a millisecond.
    assert!(
        elapsed < timeout + Duration::from_millis(250),
        "failed late, after {elapsed:?}"
    );

    within_patience("handler start", observed.started.recv()).await;
    within_patience("handler cancellation", observed.cancelled.recv()).await;
    assert!(common::eventually(|| observed.dropped.load(Ordering::SeqCst)).await);
}

#[tokio::test]
async fn deadline_travels_as_time_remaining() {
    init_logs();
    let trust = cluster();
    let server = node(&trust);
    let client = node(&trust);
    server
        .router()
        .unary("time", "left", |ctx, (): ()| async move {
            Ok::<_, Status>(ctx.remaining().map(|left| left.as_millis() as u64))
        });

    let left: Option<u64> = client
        .call(
            peer(&server),
            "time",
            "left",
            &(),
            CallOptions::new().timeout(Duration::from_secs(5)),
        )
        .await
        .unwrap();
    let left = left.expect("the handler sees a deadline");
    assert!(left <= 5_000, "{left} ms left");
    assert!(left > 4_000, "{left} ms left");

    let none: Option<u64> = client
        .call(peer(&server), "time", "left", &(), CallOptions::new())
        .await
        .unwrap();
    assert_eq!(none, None);
}

#[tokio::test]
async fn nested_call_inherits_remaining_deadline() {
    init_logs();
    let trust = cluster();
    let front = node(&trust);
    let back = node(&trust);
    let client = node(&trust);
    back.router()
        .unary("time", "left", |ctx, (): ()| async move {
            Ok::<_, Status>(ctx.remaining().map(|left| left.as_millis() as u64))
        });
    let back_peer = peer(&back);
    let front_endpoint = front.clone();
    front.router().unary("time", "forward", move |ctx, (): ()| {
        let front = front_endpoint.clone();
        async move {
            // Asks for a minute, but the caller's 2 s must win.
            let options = ctx.call_options().timeout(Duration::from_secs(60));
            front
                .call::<(), Option<u64>>(back_peer, "time", "left", &(), options)
                .await
        }
    });

    let left: Option<u64> = client
        .call(
            peer(&front),
            "time",
            "forward",
            &(),
            CallOptions::new().timeout(Duration::from_secs(2)),
        )
        .await
        .unwrap();
    let left = left.expect("the nested call has a deadline");
    assert!(left <= 2_000, "{left} ms left");
}

#[tokio::test]
async fn dropping_unary_call_cancels_handler() {
    init_logs();
    let trust = cluster();
    let server = node(&trust);
    let client = node(&trust);
    let mut observed = serve_hanging(&server);

    let target = peer(&server);
    let call = tokio::spawn(async move {
        client
            .call::<(), ()>(target, "hang", "forever", &(), CallOptions::new())
            .await
    });
    within_patience("handler start", observed.started.recv()).await;
    call.abort();

    within_patience("handler cancellation", observed.cancelled.recv()).await;
    assert!(common::eventually(|| observed.dropped.load(Ordering::SeqCst)).await);
    assert!(common::eventually(|| server.stats().calls_cancelled == 1).await);
}

#[tokio::test]
async fn dropping_client_stream_cancels_handler() {
    init_logs();
    let trust = cluster();
    let server = node(&trust);
    let client = node(&trust);
    let mut observed = serve_hanging(&server);

    let mut call = client
        .client_streaming::<u64, ()>(peer(&server), "hang", "upload", CallOptions::new())
        .await
        .unwrap();
    call.send(&1).await.unwrap();
    within_patience("handler start", observed.started.recv()).await;
    drop(call);

    within_patience("handler cancellation", observed.cancelled.recv()).await;
    assert!(common::eventually(|| observed.dropped.load(Ordering::SeqCst)).await);
}

/// A node on its own runtime and thread, so a test can kill it without it sending anything,
/// as `kill -9` would.
struct KillableNode {
    peer: Peer,
    kill: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl KillableNode {
    fn start(
        addr: SocketAddr,
        identity: Identity,
        trust: Trust,
        config: RpcConfig,
    ) -> KillableNode {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (kill_tx, kill_rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            let endpoint = runtime.block_on(async {
                let endpoint = Endpoint::bind(addr, &identity, &trust, config).unwrap();
                serve_echo(&endpoint);
                serve_hanging(&endpoint);
                endpoint
            });
            ready_tx.send(peer(&endpoint)).unwrap();
            let _ = kill_rx.recv();
            // Stop the runtime first, so dropping the endpoint can send no close frames.
            runtime.shutdown_background();
            drop(endpoint);
        });
        KillableNode {
            peer: ready_rx.recv().unwrap(),
            kill: Some(kill_tx),
            thread: Some(thread),
        }
    }

    fn kill(&mut self) {
        drop(self.kill.take());
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }
}

impl Drop for KillableNode {
    fn drop(&mut self) {
        self.kill();
    }
}

fn serve_echo(endpoint: &Endpoint) {
    endpoint
        .router()
        .unary("echo", "text", |_ctx, text: String| async move {
            Ok::<_, Status>(text)
        });
}

async fn echo(client: &Endpoint, target: Peer) -> Result<String, Status> {
    client
        .call(
            target,
            "echo",
            "text",
            &"hi".to_string(),
            CallOptions::new().timeout(Duration::from_secs(1)),
        )
        .await
}

/// Calls until a call succeeds, and returns how long that took.
async fn time_until_reachable(client: &Endpoint, target: Peer) -> Duration {
    let start = Instant::now();
    loop {
        match echo(client, target).await {
            Ok(_) => return start.elapsed(),
            Err(status) => {
                assert!(
                    start.elapsed() < PATIENCE,
                    "never reachable again: {status}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

async fn bind_with_retry(addr: SocketAddr, dir: &Path, trust: &Trust) -> Endpoint {
    let identity = Identity::load_or_generate(dir).unwrap();
    let start = Instant::now();
    loop {
        match Endpoint::bind(addr, &identity, trust, RpcConfig::default()) {
            Ok(endpoint) => return endpoint,
            Err(error) if start.elapsed() < PATIENCE => {
                eprintln!("rebinding {addr}: {error}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(error) => panic!("failed to rebind {addr}: {error}"),
        }
    }
}

#[tokio::test]
async fn killed_peer_restarted_on_same_port_is_reachable_within_2s() {
    init_logs();
    let trust = cluster();
    let dir = tempfile::tempdir().unwrap();
    let client = node(&trust);
    let mut server = KillableNode::start(
        common::loopback_v4(),
        Identity::load_or_generate(dir.path()).unwrap(),
        trust.clone(),
        RpcConfig::default(),
    );
    let target = server.peer;
    assert_eq!(echo(&client, target).await.unwrap(), "hi");

    // A call left pending on the old connection must fail once the connection is known dead.
    let pending_client = client.clone();
    let pending = tokio::spawn(async move {
        pending_client
            .call::<(), ()>(target, "hang", "forever", &(), CallOptions::new())
            .await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;

    server.kill();
    let restarted = bind_with_retry(target.addr, dir.path(), &trust).await;
    serve_echo(&restarted);

    let took = time_until_reachable(&client, target).await;
    assert!(
        took < Duration::from_secs(2),
        "reachable again only after {took:?}"
    );

    let pending = within_patience("the pending call to fail", pending)
        .await
        .unwrap();
    let status = pending.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status}");
    assert_eq!(client.stats().connections_opened, 2);
}

#[tokio::test]
async fn closed_peer_restarted_on_same_port_is_reachable() {
    init_logs();
    let trust = cluster();
    let dir = tempfile::tempdir().unwrap();
    let client = node(&trust);
    let identity = Identity::load_or_generate(dir.path()).unwrap();
    let server = Endpoint::bind(
        common::loopback_v4(),
        &identity,
        &trust,
        RpcConfig::default(),
    )
    .unwrap();
    serve_echo(&server);
    let target = peer(&server);
    assert_eq!(echo(&client, target).await.unwrap(), "hi");

    server.close().await;
    drop(server);
    let restarted = bind_with_retry(target.addr, dir.path(), &trust).await;
    serve_echo(&restarted);

    let took = time_until_reachable(&client, target).await;
    assert!(
        took < Duration::from_secs(2),
        "reachable again only after {took:?}"
    );
}

#[tokio::test]
async fn killed_peer_fails_pending_call_by_idle_timeout() {
    init_logs();
    let trust = cluster();
    let mut quick = RpcConfig::default();
    quick
        .idle_timeout(Duration::from_millis(800))
        .keep_alive_interval(Some(Duration::from_millis(200)));
    let client = node_with(&trust, quick.clone());
    let mut server = KillableNode::start(
        common::loopback_v4(),
        Identity::generate().unwrap(),
        trust.clone(),
        quick,
    );
    let target = server.peer;
    assert_eq!(echo(&client, target).await.unwrap(), "hi");

    let pending_client = client.clone();
    let pending = tokio::spawn(async move {
        pending_client
            .call::<(), ()>(target, "hang", "forever", &(), CallOptions::new())
            .await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let killed = Instant::now();
    server.kill();

    let status = within_patience("the pending call to fail", pending)
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status}");
    assert!(
        killed.elapsed() < Duration::from_secs(5),
        "took {:?}",
        killed.elapsed()
    );
}

#[tokio::test]
async fn idle_connection_times_out_and_next_call_reconnects() {
    init_logs();
    let trust = cluster();
    let mut idle = RpcConfig::default();
    idle.idle_timeout(Duration::from_millis(300))
        .keep_alive_interval(None);
    let server = node_with(&trust, idle.clone());
    let client = node_with(&trust, idle);
    serve_echo(&server);
    let target = peer(&server);

    assert_eq!(echo(&client, target).await.unwrap(), "hi");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(echo(&client, target).await.unwrap(), "hi");
    assert_eq!(client.stats().connections_opened, 2);
}

#[tokio::test]
async fn closing_endpoint_fails_pending_calls_at_once() {
    init_logs();
    let trust = cluster();
    let server = node(&trust);
    let client = node(&trust);
    let mut observed = serve_hanging(&server);

    let target = peer(&server);
    let caller = client.clone();
    let pending = tokio::spawn(async move {
        caller
            .call::<(), ()>(target, "hang", "forever", &(), CallOptions::new())
            .await
    });
    within_patience("handler start", observed.started.recv()).await;
    let (closed_tx, closed_rx) = oneshot::channel();
    let server_to_close = server.clone();
    tokio::spawn(async move {
        server_to_close.close().await;
        let _ = closed_tx.send(());
    });

    let status = within_patience("the pending call to fail", pending)
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status}");
    within_patience("the endpoint to close", closed_rx)
        .await
        .unwrap();
}
