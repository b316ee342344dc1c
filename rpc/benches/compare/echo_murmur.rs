//! The murmur side: an echo service on a murmur-rpc endpoint, called with MessagePack
//! messages over QUIC with mutual TLS.

use std::net::SocketAddr;

use bytes::Bytes;
use murmur_rpc::{CallOptions, Endpoint, Identity, NodeId, Peer, ReplySink, RpcConfig, Trust};
use serde::{Deserialize, Serialize};

/// The cluster key both processes derive their certificate authority from. Fixed, because
/// the benchmark only ever talks to itself on loopback.
const CLUSTER_KEY: &[u8; 32] = b"murmur benchmark cluster key 32b";

/// The echo message: a byte string, encoded as a MessagePack `bin` through the `bytes` serde
/// support, so its encoding matches the protobuf `bytes` field tonic sends.
#[derive(Serialize, Deserialize)]
pub struct Echo {
    pub payload: Bytes,
}

/// The request for a server stream: how many messages of how many bytes.
#[derive(Serialize, Deserialize)]
pub struct StreamRequest {
    pub count: u32,
    pub size: u32,
}

/// Binds an endpoint on loopback, registers the echo and stream methods, and returns the
/// address line the client needs: the address and the node id.
pub fn serve() -> crate::Result<(Endpoint, String)> {
    let endpoint = bind()?;
    endpoint.router().unary(
        "bench",
        "echo",
        |_ctx, request: Echo| async move { Ok(request) },
    );
    endpoint.router().server_streaming(
        "bench",
        "stream",
        |_ctx, request: StreamRequest, mut sink: ReplySink<Echo>| async move {
            let message = Echo {
                payload: Bytes::from(vec![7u8; request.size as usize]),
            };
            for _ in 0..request.count {
                sink.send(&message).await?;
            }
            Ok(())
        },
    );
    let line = format!("{} {}", endpoint.local_addr()?, endpoint.node_id());
    Ok((endpoint, line))
}

/// A caller with its own endpoint and the server it calls.
pub struct Client {
    endpoint: Endpoint,
    peer: Peer,
}

impl Client {
    /// Binds a client endpoint; the connection opens on the first call.
    pub fn new(server_line: &str) -> crate::Result<Client> {
        let (addr, node_id) = server_line
            .split_once(' ')
            .ok_or("murmur server line is missing the node id")?;
        let addr: SocketAddr = addr.parse()?;
        let node_id: NodeId = node_id.parse()?;
        Ok(Client {
            endpoint: bind()?,
            peer: Peer::new(addr, node_id),
        })
    }

    pub async fn unary(&self, payload: &Bytes) -> crate::Result<()> {
        let request = Echo {
            payload: payload.clone(),
        };
        let reply: Echo = self
            .endpoint
            .call(self.peer, "bench", "echo", &request, CallOptions::new())
            .await?;
        check_len(reply.payload.len(), payload.len())
    }

    pub async fn stream(&self, count: u32, size: u32) -> crate::Result<u64> {
        let request = StreamRequest { count, size };
        let mut replies = self
            .endpoint
            .server_streaming::<StreamRequest, Echo>(
                self.peer,
                "bench",
                "stream",
                &request,
                CallOptions::new(),
            )
            .await?;
        let mut received = 0;
        while let Some(message) = replies.message().await? {
            check_len(message.payload.len(), size as usize)?;
            received += 1;
        }
        Ok(received)
    }
}

fn bind() -> crate::Result<Endpoint> {
    let trust = Trust::derived(CLUSTER_KEY)?;
    let identity = Identity::generate()?;
    let addr: SocketAddr = "127.0.0.1:0".parse()?;
    Ok(Endpoint::bind(
        addr,
        &identity,
        &trust,
        RpcConfig::default(),
    )?)
}

fn check_len(got: usize, expected: usize) -> crate::Result<()> {
    if got == expected {
        Ok(())
    } else {
        Err(format!("reply of {got} bytes, expected {expected}").into())
    }
}
