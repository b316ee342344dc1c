//! The seam under gossip: a socket that sends and receives whole datagrams.
//!
//! Gossip needs only this from the network. murmur implements it for a UDP socket and
//! for [`MemoryNetwork`](crate::MemoryNetwork); another carrier (the QUIC endpoint's
//! datagrams, say) only has to implement [`DatagramSocket`].

use std::io;
use std::net::SocketAddr;

use async_trait::async_trait;

/// Sends datagrams to addresses and receives datagrams with their sender's address.
///
/// Datagrams may be lost, duplicated or reordered; gossip copes with all three.
#[async_trait]
pub trait DatagramSocket: Send + Sync + 'static {
    /// The address this socket receives on.
    ///
    /// # Errors
    ///
    /// When the operating system cannot tell the address of the socket.
    fn local_addr(&self) -> io::Result<SocketAddr>;

    /// Sends one datagram to `to`.
    ///
    /// # Errors
    ///
    /// When the datagram cannot be handed to the network, for example because it is too
    /// large or no route leads to `to`. A datagram accepted here may still be lost.
    async fn send_to(&self, datagram: &[u8], to: SocketAddr) -> io::Result<()>;

    /// Receives one datagram into `buf` and returns its length and sender. A datagram
    /// longer than `buf` is truncated to `buf.len()` bytes.
    ///
    /// # Cancel safety
    ///
    /// Must be cancel safe: if the future is dropped before it completes, no datagram
    /// is lost.
    ///
    /// # Errors
    ///
    /// When the socket is broken and will not receive again. Transient conditions are
    /// retried inside, not returned.
    async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)>;
}

#[async_trait]
impl DatagramSocket for tokio::net::UdpSocket {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        tokio::net::UdpSocket::local_addr(self)
    }

    async fn send_to(&self, datagram: &[u8], to: SocketAddr) -> io::Result<()> {
        tokio::net::UdpSocket::send_to(self, datagram, to).await?;
        Ok(())
    }

    async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        loop {
            match tokio::net::UdpSocket::recv_from(self, buf).await {
                Ok(received) => return Ok(received),
                // An ICMP error for an earlier send to a member that is gone can surface
                // here; it says nothing about this socket.
                Err(error) if is_transient(&error) => {
                    tracing::debug!(%error, "transient UDP receive error");
                }
                Err(error) => return Err(error),
            }
        }
    }
}

fn is_transient(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::OutOfMemory
    )
}
