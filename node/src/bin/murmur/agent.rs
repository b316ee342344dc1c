//! `murmur agent`: a node with the HTTP API, sidecar services, and the settings from
//! flags, environment variables and a TOML file, in that order of precedence.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use murmur::gossip::GossipConfig;
use murmur::{ClusterKey, Node};
use serde::Deserialize;

use crate::demo::DemoRole;
use crate::sidecar::{self, SidecarSpec};
use crate::{UsageError, http};

/// How long open HTTP requests may run after the node stopped.
const HTTP_GRACE: Duration = Duration::from_secs(5);

/// Default listen addresses of the agent.
pub const DEFAULT_GOSSIP: &str = "127.0.0.1:7946";
pub const DEFAULT_RPC: &str = "127.0.0.1:7947";
pub const DEFAULT_HTTP: &str = "127.0.0.1:7948";

#[derive(Args, Debug, Default)]
pub struct AgentArgs {
    /// TOML file with any of the settings below (keys as the flags, e.g. `cluster-key-file`).
    #[arg(long, env = "MURMUR_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Name of this node, unique in the cluster [default: the host name].
    #[arg(long, env = "MURMUR_NAME")]
    pub name: Option<String>,
    /// Directory for the node's key pair and generation counter [default: none, a new
    /// identity at each start].
    #[arg(long, env = "MURMUR_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// UDP address for gossip [default: 127.0.0.1:7946].
    #[arg(long, env = "MURMUR_GOSSIP_ADDR", value_name = "ADDR")]
    pub gossip: Option<SocketAddr>,
    /// UDP address for calls over QUIC [default: 127.0.0.1:7947].
    #[arg(long, env = "MURMUR_RPC_ADDR", value_name = "ADDR")]
    pub rpc: Option<SocketAddr>,
    /// TCP address of the HTTP API and dashboard [default: 127.0.0.1:7948].
    #[arg(long, env = "MURMUR_HTTP_ADDR", value_name = "ADDR")]
    pub http: Option<SocketAddr>,
    /// Gossip addresses of members to join, comma-separated (IP:PORT or HOST:PORT).
    #[arg(
        long,
        env = "MURMUR_JOIN",
        value_name = "ADDR,...",
        value_delimiter = ','
    )]
    pub join: Vec<String>,
    /// File holding the cluster key, 64 hex digits (make one with `murmur keygen`). The
    /// key itself can come from MURMUR_CLUSTER_KEY instead.
    #[arg(long, env = "MURMUR_CLUSTER_KEY_FILE", value_name = "FILE")]
    pub cluster_key_file: Option<PathBuf>,
    /// Run without a cluster key: anyone who reaches the node can join and call.
    #[arg(long, env = "MURMUR_DEV")]
    pub dev: bool,
    /// Advertise a local HTTP application as service NAME; calls of method M are
    /// forwarded as POST URL/M with a JSON body. Repeatable.
    #[arg(
        long = "service",
        env = "MURMUR_SERVICES",
        value_name = "NAME=URL",
        value_delimiter = ','
    )]
    pub services: Vec<SidecarSpec>,
    /// Gossip timing: `lan` (250 ms rounds) or `local` (100 ms rounds, for one machine).
    #[arg(long, env = "MURMUR_PROFILE", value_name = "PROFILE")]
    pub profile: Option<String>,
    /// How long a failed member is remembered before it is forgotten, such as 10s or 5m
    /// [default: 5m with the lan profile, 60s with local]. While remembered, members
    /// still gossip with it now and then; after that only the `--join` seeds reconnect
    /// the two sides of a healed partition.
    #[arg(
        long,
        env = "MURMUR_DEAD_MEMBER_RETENTION",
        value_name = "DURATION",
        value_parser = http::parse_duration
    )]
    pub dead_member_retention: Option<Duration>,
    /// Runs one of the demo's example services inside the agent.
    #[arg(long, hide = true)]
    pub demo_role: Option<DemoRole>,
}

/// The TOML file: the same settings as the flags.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileConfig {
    name: Option<String>,
    data_dir: Option<PathBuf>,
    gossip: Option<SocketAddr>,
    rpc: Option<SocketAddr>,
    http: Option<SocketAddr>,
    join: Option<Vec<String>>,
    cluster_key_file: Option<PathBuf>,
    dev: Option<bool>,
    service: Option<Vec<String>>,
    profile: Option<String>,
    dead_member_retention: Option<String>,
}

/// Settings after flags, environment and file were merged and checked.
pub struct Settings {
    pub name: String,
    pub data_dir: Option<PathBuf>,
    pub gossip: SocketAddr,
    pub rpc: SocketAddr,
    pub http: SocketAddr,
    pub join: Vec<String>,
    pub cluster_key: Option<ClusterKey>,
    pub services: Vec<SidecarSpec>,
    pub gossip_config: GossipConfig,
    pub demo_role: Option<DemoRole>,
}

impl AgentArgs {
    /// Merges flags and environment (already in `self`) over the TOML file, and checks
    /// everything a user could get wrong.
    pub fn settings(self) -> Result<Settings, UsageError> {
        let file = match &self.config {
            Some(path) => read_config(path)?,
            None => FileConfig::default(),
        };
        let name = self.name.or(file.name).unwrap_or_else(host_name);
        let valid_name = !name.is_empty()
            && name.len() <= murmur::gossip::MAX_NAME_BYTES
            && name
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'));
        if !valid_name {
            return Err(UsageError(format!(
                "invalid name {name:?}: expected 1 to {} ASCII letters, digits, '.', '_' or '-'",
                murmur::gossip::MAX_NAME_BYTES
            )));
        }
        let dev = self.dev || file.dev.unwrap_or(false);
        let key_file = self.cluster_key_file.or(file.cluster_key_file);
        let cluster_key = cluster_key(key_file.as_deref(), dev)?;

        let mut services = self.services;
        if services.is_empty() {
            for text in file.service.unwrap_or_default() {
                services.push(text.parse().map_err(UsageError)?);
            }
        }
        let profile = self
            .profile
            .or(file.profile)
            .unwrap_or_else(|| "lan".into());
        let mut gossip_config = match profile.as_str() {
            "lan" => GossipConfig::new(&name),
            "local" => GossipConfig::local(&name),
            other => {
                return Err(UsageError(format!(
                    "invalid profile {other:?}: expected lan or local"
                )));
            }
        };
        let retention = match (self.dead_member_retention, file.dead_member_retention) {
            (Some(retention), _) => Some(retention),
            (None, Some(text)) => Some(http::parse_duration(&text).map_err(|error| {
                UsageError(format!(
                    "invalid dead-member-retention in the config file: {error}"
                ))
            })?),
            (None, None) => None,
        };
        if let Some(retention) = retention {
            gossip_config = gossip_config.dead_member_retention(retention);
        }
        let join = if self.join.is_empty() {
            file.join.unwrap_or_default()
        } else {
            self.join
        };
        for seed in &join {
            let port = seed.rsplit_once(':').map(|(_, port)| port.parse::<u16>());
            if !matches!(port, Some(Ok(port)) if port != 0) {
                return Err(UsageError(format!(
                    "invalid --join address {seed:?}: expected IP:PORT, [IPv6]:PORT or HOST:PORT, such as 127.0.0.1:7946"
                )));
            }
        }
        Ok(Settings {
            name,
            data_dir: self.data_dir.or(file.data_dir),
            gossip: self
                .gossip
                .or(file.gossip)
                .unwrap_or_else(|| parse_default(DEFAULT_GOSSIP)),
            rpc: self
                .rpc
                .or(file.rpc)
                .unwrap_or_else(|| parse_default(DEFAULT_RPC)),
            http: self
                .http
                .or(file.http)
                .unwrap_or_else(|| parse_default(DEFAULT_HTTP)),
            join,
            cluster_key,
            services,
            gossip_config,
            demo_role: self.demo_role,
        })
    }
}

fn parse_default(text: &str) -> SocketAddr {
    // The defaults are literals above, valid addresses.
    text.parse()
        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
}

fn read_config(path: &Path) -> Result<FileConfig, UsageError> {
    let text = std::fs::read_to_string(path).map_err(|error| {
        UsageError(format!(
            "failed to read config file {}: {error}",
            path.display()
        ))
    })?;
    toml::from_str(&text).map_err(|error| {
        UsageError(format!(
            "invalid config file {}: {}",
            path.display(),
            error.to_string().trim()
        ))
    })
}

fn cluster_key(file: Option<&Path>, dev: bool) -> Result<Option<ClusterKey>, UsageError> {
    if let Some(path) = file {
        return ClusterKey::read_file(path)
            .map(Some)
            .map_err(|error| UsageError(error.to_string()));
    }
    if let Ok(text) = std::env::var("MURMUR_CLUSTER_KEY") {
        return ClusterKey::parse(&text, "MURMUR_CLUSTER_KEY")
            .map(Some)
            .map_err(|error| UsageError(error.to_string()));
    }
    if dev {
        return Ok(None);
    }
    Err(UsageError(
        "no cluster key: pass --cluster-key-file FILE (make one with `murmur keygen > FILE`), set MURMUR_CLUSTER_KEY, or pass --dev for open development mode".into(),
    ))
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "murmur".to_string())
}

/// Runs the agent until SIGTERM or Ctrl-C, then drains and stops.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    raise_file_limit();
    // HTTP binds first: failing after joining would look like a crash to the others.
    let listener = tokio::net::TcpListener::bind(settings.http)
        .await
        .with_context(|| format!("failed to listen for HTTP on {}", settings.http))?;
    let mut builder = Node::builder()
        .name(&settings.name)
        .gossip_addr(settings.gossip)
        .rpc_addr(settings.rpc)
        .join(settings.join.clone())
        .gossip_config(settings.gossip_config.clone());
    if let Some(dir) = &settings.data_dir {
        builder = builder.data_dir(dir);
    }
    if let Some(key) = &settings.cluster_key {
        builder = builder.cluster_key(key.clone());
    }
    let node = builder.start().await.context("failed to start the node")?;

    let http_client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .build()
        .context("failed to build the HTTP client for sidecar services")?;
    for spec in &settings.services {
        node.host(sidecar::service(spec, http_client.clone()))
            .await
            .with_context(|| format!("failed to host sidecar service {spec}"))?;
    }
    if let Some(role) = settings.demo_role {
        crate::demo::host_role(&node, role).await?;
    }
    tracing::info!(
        name = %node.name(),
        node_id = %node.node_id(),
        gossip = %node.gossip_addr(),
        rpc = %node.rpc_addr(),
        http = %settings.http,
        "agent ready"
    );

    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let mut server = tokio::spawn(http::serve(listener, node.clone(), async move {
        let _ = http_stopped.await;
    }));
    wait_for_signal().await;
    tracing::info!("stop requested; draining");
    node.shutdown().await;
    let _ = stop_http.send(());
    // Requests still open get a few seconds to finish; then the process exits anyway.
    match tokio::time::timeout(HTTP_GRACE, &mut server).await {
        Ok(Ok(result)) => result.context("HTTP server failed")?,
        Ok(Err(error)) => return Err(anyhow::anyhow!("HTTP server task failed: {error}")),
        Err(_) => {
            tracing::warn!(grace = ?HTTP_GRACE, "HTTP requests still open after the grace period; closing them");
            server.abort();
        }
    }
    Ok(())
}

/// Raises the soft limit on open files to the hard limit, as gossip keeps one loopback
/// socket per peer heard from in the last minute and the default soft limit is often
/// 1 024.
fn raise_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed by reference,
    // which lives for the whole call.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                tracing::debug!("failed to raise the open file limit");
            }
        }
    }
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot watch SIGTERM; only Ctrl-C stops the agent");
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Command {
        #[command(flatten)]
        agent: AgentArgs,
    }

    fn settings(args: &[&str]) -> Result<Settings, String> {
        let command = Command::try_parse_from(["agent", "--dev"].iter().chain(args))
            .map_err(|error| error.to_string())?;
        command
            .agent
            .settings()
            .map_err(|UsageError(message)| message)
    }

    fn retention(settings: &Settings) -> String {
        let config = format!("{:?}", settings.gossip_config);
        let start = config
            .find("dead_member_retention: ")
            .expect("the config's Debug output names the field");
        config[start..]
            .split(',')
            .next()
            .unwrap_or_default()
            .to_string()
    }

    #[test]
    fn dead_member_retention_flag_sets_gossip() {
        let settings = settings(&["--profile", "local", "--dead-member-retention", "10s"]).unwrap();
        assert_eq!(retention(&settings), "dead_member_retention: 10s");
    }

    #[test]
    fn dead_member_retention_defaults_to_profile() {
        let settings = settings(&["--profile", "local"]).unwrap();
        assert_eq!(retention(&settings), "dead_member_retention: 60s");
    }

    #[test]
    fn dead_member_retention_from_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, "dead-member-retention = \"1.5s\"\n").unwrap();
        let settings = settings(&["--config", path.to_str().unwrap()]).unwrap();
        assert_eq!(retention(&settings), "dead_member_retention: 1.5s");
    }

    #[test]
    fn dead_member_retention_rejects_missing_unit() {
        let error = settings(&["--dead-member-retention", "10"]).err().unwrap();
        assert!(error.contains("\"10\" has no unit"), "{error}");
    }

    #[test]
    fn join_without_port_is_rejected() {
        for bad in ["127.0.0.1", "seed.example:", "seed:0", "seed:port"] {
            let error = settings(&["--join", bad]).err().unwrap();
            assert!(error.contains("invalid --join address"), "{bad}: {error}");
        }
        let good = settings(&["--join", "127.0.0.1:7946,[::1]:7946,seed.internal:7946"]).unwrap();
        assert_eq!(good.join.len(), 3);
    }

    #[test]
    fn invalid_names_are_rejected() {
        for bad in ["bad name", "", "x".repeat(65).as_str()] {
            let error = settings(&["--name", bad]).err().unwrap();
            assert!(error.contains("invalid name"), "{bad:?}: {error}");
        }
    }

    #[test]
    fn config_file_errors_name_the_file_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, "colour = \"blue\"\n").unwrap();
        let error = settings(&["--config", path.to_str().unwrap()])
            .err()
            .unwrap();
        assert!(error.contains("agent.toml"), "{error}");
        assert!(error.contains("colour"), "{error}");

        std::fs::write(&path, "name = [\n").unwrap();
        let error = settings(&["--config", path.to_str().unwrap()])
            .err()
            .unwrap();
        assert!(error.contains("invalid config file"), "{error}");

        let missing = dir.path().join("missing.toml");
        let error = settings(&["--config", missing.to_str().unwrap()])
            .err()
            .unwrap();
        assert!(error.contains("failed to read config file"), "{error}");
    }
}
