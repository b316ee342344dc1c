//! The gRPC side: a tonic echo service over HTTP/2, with or without TLS.
//!
//! The service is written by hand against tonic's `Grpc` server and client with prost
//! derives, so the benchmark needs no `protoc`. It is what tonic-build would generate for:
//!
//! ```proto
//! service Echo {
//!   rpc Unary(EchoMessage) returns (EchoMessage);
//!   rpc Stream(StreamRequest) returns (stream EchoMessage);
//! }
//! message EchoMessage { bytes payload = 1; }
//! message StreamRequest { uint32 count = 1; uint32 size = 2; }
//! ```

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_core::Stream;
use tonic::codegen::{BoxFuture, Service, http};
use tonic::server::{Grpc, NamedService, ServerStreamingService, UnaryService};
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Server, ServerTlsConfig};
use tonic_prost::ProstCodec;

use crate::certs::Certs;

const UNARY_PATH: &str = "/bench.Echo/Unary";
const STREAM_PATH: &str = "/bench.Echo/Stream";

#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoMessage {
    #[prost(bytes = "bytes", tag = "1")]
    pub payload: Bytes,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct StreamRequest {
    #[prost(uint32, tag = "1")]
    pub count: u32,
    #[prost(uint32, tag = "2")]
    pub size: u32,
}

/// Starts the server on loopback, with TLS when `certs` is given, and returns the address
/// line.
pub async fn serve(certs: Option<&Certs>) -> crate::Result<String> {
    // `serve_with_incoming` ignores the builder's TCP_NODELAY default, so set it on the
    // listener as `Server::serve` would; without it Nagle's algorithm adds about 40 ms.
    let incoming = TcpIncoming::bind("127.0.0.1:0".parse()?)?.with_nodelay(Some(true));
    let line = incoming.local_addr()?.to_string();
    let mut builder = Server::builder();
    if let Some(certs) = certs {
        let identity = tonic::transport::Identity::from_pem(&certs.cert_pem, &certs.key_pem);
        builder = builder.tls_config(ServerTlsConfig::new().identity(identity))?;
    }
    let router = builder.add_service(EchoService);
    tokio::spawn(async move {
        if let Err(error) = router.serve_with_incoming(incoming).await {
            eprintln!("tonic server failed: {error}");
        }
    });
    Ok(line)
}

#[derive(Clone)]
struct EchoService;

impl NamedService for EchoService {
    const NAME: &'static str = "bench.Echo";
}

impl<B> Service<http::Request<B>> for EchoService
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        match request.uri().path() {
            UNARY_PATH => Box::pin(async move {
                let mut grpc = Grpc::new(ProstCodec::<EchoMessage, EchoMessage>::default());
                Ok(grpc.unary(UnaryEcho, request).await)
            }),
            STREAM_PATH => Box::pin(async move {
                let mut grpc = Grpc::new(ProstCodec::<EchoMessage, StreamRequest>::default());
                Ok(grpc.server_streaming(StreamEcho, request).await)
            }),
            _ => Box::pin(
                async move { Ok(tonic::Status::unimplemented("no such method").into_http()) },
            ),
        }
    }
}

struct UnaryEcho;

impl UnaryService<EchoMessage> for UnaryEcho {
    type Response = EchoMessage;
    type Future = BoxFuture<tonic::Response<EchoMessage>, tonic::Status>;

    fn call(&mut self, request: tonic::Request<EchoMessage>) -> Self::Future {
        Box::pin(async move { Ok(tonic::Response::new(request.into_inner())) })
    }
}

struct StreamEcho;

impl ServerStreamingService<StreamRequest> for StreamEcho {
    type Response = EchoMessage;
    type ResponseStream = Repeat;
    type Future = BoxFuture<tonic::Response<Repeat>, tonic::Status>;

    fn call(&mut self, request: tonic::Request<StreamRequest>) -> Self::Future {
        let request = request.into_inner();
        Box::pin(async move {
            Ok(tonic::Response::new(Repeat {
                left: request.count,
                message: EchoMessage {
                    payload: Bytes::from(vec![7u8; request.size as usize]),
                },
            }))
        })
    }
}

/// A stream of `left` copies of one message, with no channel in between.
struct Repeat {
    left: u32,
    message: EchoMessage,
}

impl Stream for Repeat {
    type Item = Result<EchoMessage, tonic::Status>;

    fn poll_next(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        self.left -= 1;
        Poll::Ready(Some(Ok(self.message.clone())))
    }
}

/// A caller on one HTTP/2 connection, shared by every call as tonic's `Channel` is meant to
/// be.
pub struct Client {
    grpc: tonic::client::Grpc<Channel>,
}

impl Client {
    pub async fn connect(server_line: &str, certs: Option<&Certs>) -> crate::Result<Client> {
        let scheme = if certs.is_some() { "https" } else { "http" };
        let mut endpoint = Channel::from_shared(format!("{scheme}://{server_line}"))?;
        if let Some(certs) = certs {
            let tls = ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&certs.cert_pem))
                .domain_name("localhost");
            endpoint = endpoint.tls_config(tls)?;
        }
        let channel = endpoint.connect().await?;
        Ok(Client {
            grpc: tonic::client::Grpc::new(channel),
        })
    }

    pub async fn unary(&self, payload: &Bytes) -> crate::Result<()> {
        let mut grpc = self.grpc.clone();
        grpc.ready().await?;
        let request = tonic::Request::new(EchoMessage {
            payload: payload.clone(),
        });
        let path = http::uri::PathAndQuery::from_static(UNARY_PATH);
        let codec = ProstCodec::<EchoMessage, EchoMessage>::default();
        let reply = grpc.unary(request, path, codec).await?.into_inner();
        if reply.payload.len() != payload.len() {
            return Err(format!(
                "reply of {} bytes, expected {}",
                reply.payload.len(),
                payload.len()
            )
            .into());
        }
        Ok(())
    }

    pub async fn stream(&self, count: u32, size: u32) -> crate::Result<u64> {
        let mut grpc = self.grpc.clone();
        grpc.ready().await?;
        let request = tonic::Request::new(StreamRequest { count, size });
        let path = http::uri::PathAndQuery::from_static(STREAM_PATH);
        let codec = ProstCodec::<StreamRequest, EchoMessage>::default();
        let mut replies = grpc
            .server_streaming(request, path, codec)
            .await?
            .into_inner();
        let mut received = 0;
        while let Some(message) = replies.message().await? {
            if message.payload.len() != size as usize {
                return Err("stream message of the wrong size".into());
            }
            received += 1;
        }
        Ok(received)
    }
}
