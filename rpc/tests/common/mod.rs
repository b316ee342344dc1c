//! Helpers shared by the endpoint tests: nodes on loopback and a few handlers.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use murmur_rpc::{Endpoint, Identity, Peer, RpcConfig, Trust};

/// A cluster key for tests; every node built with [`cluster`] shares it.
pub const CLUSTER_KEY: &[u8] = b"murmur test cluster key, 32 byte";

/// Bounds for waits that a healthy run finishes far sooner; generous for a busy 2-core box.
pub const PATIENCE: Duration = Duration::from_secs(10);

pub fn cluster() -> Trust {
    Trust::derived(CLUSTER_KEY).unwrap()
}

pub fn loopback_v4() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// Binds an endpoint on 127.0.0.1 with a fresh identity.
pub fn node(trust: &Trust) -> Endpoint {
    node_with(trust, RpcConfig::default())
}

pub fn node_with(trust: &Trust, config: RpcConfig) -> Endpoint {
    Endpoint::bind(loopback_v4(), &Identity::generate().unwrap(), trust, config).unwrap()
}

pub fn peer(endpoint: &Endpoint) -> Peer {
    endpoint.peer().unwrap()
}

/// Installs a log subscriber for the test binary when `RUST_LOG` is set.
pub fn init_logs() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// Polls `condition` every 10 ms until it is true or [`PATIENCE`] runs out.
pub async fn eventually(mut condition: impl FnMut() -> bool) -> bool {
    let start = tokio::time::Instant::now();
    while start.elapsed() < PATIENCE {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    condition()
}
