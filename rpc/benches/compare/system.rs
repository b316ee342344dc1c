//! The four systems under comparison, their server processes and their clients.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use bytes::Bytes;

use crate::certs::Certs;
use crate::{echo_murmur, echo_quinn, echo_tonic};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum System {
    Murmur,
    TonicTls,
    TonicPlain,
    Quinn,
}

impl System {
    pub const ALL: [System; 4] = [
        System::Murmur,
        System::TonicTls,
        System::TonicPlain,
        System::Quinn,
    ];

    /// Returns the name used in the `--serve` argument and in the ratio keys.
    pub fn key(self) -> &'static str {
        match self {
            System::Murmur => "murmur",
            System::TonicTls => "tonic_tls",
            System::TonicPlain => "tonic_plain",
            System::Quinn => "quinn",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            System::Murmur => "murmur (QUIC, mTLS, MessagePack)",
            System::TonicTls => "tonic, TLS (HTTP/2, rustls)",
            System::TonicPlain => "tonic, plain (HTTP/2)",
            System::Quinn => "raw quinn echo",
        }
    }

    pub fn from_key(key: &str) -> Option<System> {
        System::ALL.into_iter().find(|system| system.key() == key)
    }

    /// Starts this system's server inside the current process and returns the line the
    /// client needs to reach it. The returned guard keeps the server alive.
    pub async fn serve(self, certs: &Certs) -> crate::Result<(Box<dyn Send>, String)> {
        match self {
            System::Murmur => {
                let (endpoint, line) = echo_murmur::serve()?;
                Ok((Box::new(endpoint), line))
            }
            System::TonicTls => Ok((Box::new(()), echo_tonic::serve(Some(certs)).await?)),
            System::TonicPlain => Ok((Box::new(()), echo_tonic::serve(None).await?)),
            System::Quinn => {
                let (endpoint, line) = echo_quinn::serve(certs)?;
                Ok((Box::new(endpoint), line))
            }
        }
    }

    /// Opens a client to the server at `line`, with its connection ready.
    pub async fn connect(self, line: &str, certs: &Certs) -> crate::Result<Client> {
        Ok(match self {
            System::Murmur => Client::Murmur(echo_murmur::Client::new(line)?),
            System::TonicTls => {
                Client::Tonic(echo_tonic::Client::connect(line, Some(certs)).await?)
            }
            System::TonicPlain => Client::Tonic(echo_tonic::Client::connect(line, None).await?),
            System::Quinn => Client::Quinn(echo_quinn::Client::connect(line, certs).await?),
        })
    }
}

pub enum Client {
    Murmur(echo_murmur::Client),
    Tonic(echo_tonic::Client),
    Quinn(echo_quinn::Client),
}

impl Client {
    pub async fn unary(&self, payload: &Bytes) -> crate::Result<()> {
        match self {
            Client::Murmur(client) => client.unary(payload).await,
            Client::Tonic(client) => client.unary(payload).await,
            Client::Quinn(client) => client.unary(payload).await,
        }
    }

    pub async fn stream(&self, count: u32, size: u32) -> crate::Result<u64> {
        match self {
            Client::Murmur(client) => client.stream(count, size).await,
            Client::Tonic(client) => client.stream(count, size).await,
            Client::Quinn(client) => client.stream(count, size).await,
        }
    }
}

/// A server running in a child process: this benchmark's executable started again with
/// `--serve`. The child exits when its standard input closes, so it cannot outlive the
/// benchmark.
pub struct ServerProcess {
    child: Child,
    pub line: String,
}

impl ServerProcess {
    pub fn start(system: System, cert_dir: &Path) -> crate::Result<ServerProcess> {
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .arg("--serve")
            .arg(system.key())
            .arg(cert_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("server has no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let line = line.trim().to_string();
        if line.is_empty() {
            return Err(format!(
                "{} server exited before it printed its address",
                system.key()
            )
            .into());
        }
        Ok(ServerProcess { child, line })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}
