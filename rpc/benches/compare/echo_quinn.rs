//! The ceiling: a raw quinn echo with one bidirectional stream per request and no framing
//! beyond a 4-byte length, on the same transport settings as murmur.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use quinn::{IdleTimeout, TransportConfig, VarInt};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::certs::Certs;

/// The largest request or reply the echo reads, in bytes.
const MAX_MESSAGE: usize = 1 << 20;

/// The transport settings of murmur-rpc's `RpcConfig::default()`, repeated here because
/// murmur builds its `TransportConfig` privately. The report prints this text.
pub const TRANSPORT_SETTINGS: &str = "max_concurrent_bidi_streams 1024, \
    max_concurrent_uni_streams 0, stream_receive_window 1 MiB, receive_window 16 MiB, \
    max_idle_timeout 10 s, keep_alive_interval 3 s, other settings quinn 0.11 defaults";

fn transport() -> Arc<TransportConfig> {
    let mut transport = TransportConfig::default();
    let idle = IdleTimeout::try_from(Duration::from_secs(10)).expect("10 s fits QUIC's limit");
    transport
        .max_concurrent_bidi_streams(VarInt::from_u32(1024))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .stream_receive_window(VarInt::from_u32(1024 * 1024))
        .receive_window(VarInt::from_u32(16 * 1024 * 1024))
        .max_idle_timeout(Some(idle))
        .keep_alive_interval(Some(Duration::from_secs(3)));
    Arc::new(transport)
}

/// Serves the echo on loopback and returns the endpoint and its address line.
pub fn serve(certs: &Certs) -> crate::Result<(quinn::Endpoint, String)> {
    let cert = CertificateDer::from(certs.cert_der.clone());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certs.key_der.clone()));
    let mut config = quinn::ServerConfig::with_single_cert(vec![cert], key)?;
    config.transport_config(transport());
    let endpoint = quinn::Endpoint::server(config, "127.0.0.1:0".parse()?)?;
    let line = endpoint.local_addr()?.to_string();

    let accepting = endpoint.clone();
    tokio::spawn(async move {
        while let Some(incoming) = accepting.accept().await {
            tokio::spawn(async move {
                let Ok(connection) = incoming.await else {
                    return;
                };
                while let Ok((send, recv)) = connection.accept_bi().await {
                    tokio::spawn(serve_stream(send, recv));
                }
            });
        }
    });
    Ok((endpoint, line))
}

/// Echoes one request, or replies to a stream request (a zero length followed by a count and
/// a size) with that many length-prefixed messages.
async fn serve_stream(mut send: quinn::SendStream, mut recv: quinn::RecvStream) {
    let Ok(request) = recv.read_to_end(MAX_MESSAGE + 8).await else {
        return;
    };
    if request.len() == 12 && request[..4] == [0, 0, 0, 0] {
        let count = u32::from_be_bytes([request[4], request[5], request[6], request[7]]);
        let size = u32::from_be_bytes([request[8], request[9], request[10], request[11]]);
        let message = framed(&vec![7u8; size as usize]);
        for _ in 0..count {
            if send.write_chunk(message.clone()).await.is_err() {
                return;
            }
        }
    } else if send.write_chunk(Bytes::from(request)).await.is_err() {
        return;
    }
    let _ = send.finish();
}

fn framed(payload: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(4 + payload.len());
    buf.put_u32(payload.len() as u32);
    buf.put_slice(payload);
    buf.freeze()
}

/// A caller with one client endpoint and one connection, reused by every call.
pub struct Client {
    connection: quinn::Connection,
    _endpoint: quinn::Endpoint,
}

impl Client {
    pub async fn connect(server_line: &str, certs: &Certs) -> crate::Result<Client> {
        let addr: SocketAddr = server_line.parse()?;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(certs.cert_der.clone()))?;
        let mut config = quinn::ClientConfig::with_root_certificates(Arc::new(roots))?;
        config.transport_config(transport());
        let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
        endpoint.set_default_client_config(config);
        let connection = endpoint.connect(addr, "localhost")?.await?;
        Ok(Client {
            connection,
            _endpoint: endpoint,
        })
    }

    pub async fn unary(&self, payload: &Bytes) -> crate::Result<()> {
        let (mut send, mut recv) = self.connection.open_bi().await?;
        send.write_chunk(framed(payload)).await?;
        send.finish()?;
        let reply = recv.read_to_end(MAX_MESSAGE + 4).await?;
        if reply.len() != payload.len() + 4 {
            return Err(format!(
                "reply of {} bytes, expected {}",
                reply.len(),
                payload.len() + 4
            )
            .into());
        }
        Ok(())
    }

    pub async fn stream(&self, count: u32, size: u32) -> crate::Result<u64> {
        let (mut send, mut recv) = self.connection.open_bi().await?;
        let mut request = BytesMut::with_capacity(12);
        request.put_u32(0);
        request.put_u32(count);
        request.put_u32(size);
        send.write_chunk(request.freeze()).await?;
        send.finish()?;

        // Counts messages by their length prefixes as chunks arrive.
        let message_len = 4 + u64::from(size);
        let mut bytes = 0u64;
        while let Some(chunk) = recv.read_chunk(usize::MAX, true).await? {
            bytes += chunk.bytes.len() as u64;
        }
        if bytes % message_len != 0 {
            return Err(format!("stream of {bytes} bytes is not whole messages").into());
        }
        Ok(bytes / message_len)
    }
}
