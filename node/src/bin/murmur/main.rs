//! `murmur`: the agent that runs a node for programs in any language, the command line
//! that talks to it, and a demo cluster.
//!
//! Exit codes: 0 on success, 2 for bad input (an unknown flag, an invalid address, key
//! or JSON body, an unknown service), 1 for any other failure.

mod agent;
mod cli;
mod demo;
mod http;
mod sidecar;

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// murmur: a service network with no registry server.
#[derive(Parser, Debug)]
#[command(name = "murmur", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a node with the HTTP API, dashboard and sidecar services.
    Agent(agent::AgentArgs),
    /// Call SERVICE's METHOD through the local agent, with an optional JSON request.
    Call {
        /// The service name.
        service: String,
        /// The method name.
        method: String,
        /// The request as JSON [default: null].
        json: Option<String>,
        /// Give up after this long, such as 200ms or 2s.
        #[arg(long, value_name = "DURATION")]
        timeout: Option<String>,
        /// The method is safe to run twice, so the call may be retried on another node.
        #[arg(long)]
        idempotent: bool,
        #[command(flatten)]
        target: Target,
    },
    /// List the services in the cluster and the nodes that host them.
    Services {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// List the members of the cluster.
    Nodes {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Print membership and service changes as they happen.
    Watch {
        /// Print one JSON object per event.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Show whether the local agent is healthy; exits 1 if it is not.
    Health {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Print a fresh random cluster key (64 hex digits).
    Keygen,
    /// Run a small cluster on this machine, break it, and watch it heal.
    Demo(demo::DemoArgs),
}

/// The agent the command line talks to.
#[derive(clap::Args, Debug)]
struct Target {
    /// The agent's HTTP address.
    #[arg(long, env = "MURMUR_HTTP_ADDR", value_name = "ADDR", default_value = agent::DEFAULT_HTTP)]
    http: SocketAddr,
}

/// Bad input from the user; exits with code 2.
#[derive(Debug)]
pub struct UsageError(pub String);

/// The ways a command can fail.
#[derive(Debug)]
pub enum Failure {
    Usage(UsageError),
    Other(anyhow::Error),
}

impl From<UsageError> for Failure {
    fn from(error: UsageError) -> Self {
        Failure::Usage(error)
    }
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        Failure::Other(error)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.command);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: failed to start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(UsageError(message))) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
        Err(Failure::Other(error)) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> Result<(), Failure> {
    match command {
        Command::Agent(args) => {
            let settings = args.settings()?;
            agent::run(settings).await?;
            Ok(())
        }
        Command::Call {
            service,
            method,
            json,
            timeout,
            idempotent,
            target,
        } => {
            cli::call(
                target.http,
                &service,
                &method,
                json.as_deref(),
                timeout.as_deref(),
                idempotent,
            )
            .await
        }
        Command::Services { json, target } => cli::services(target.http, json).await,
        Command::Nodes { json, target } => cli::nodes(target.http, json).await,
        Command::Watch { json, target } => cli::watch(target.http, json).await,
        Command::Health { json, target } => cli::health(target.http, json).await,
        Command::Keygen => {
            cli::keygen();
            Ok(())
        }
        Command::Demo(args) => demo::run(args).await,
    }
}

/// Logs to stderr; `RUST_LOG` overrides the level. The agent logs `info` and up, the
/// command line and the demo only warnings.
fn init_logging(command: &Command) {
    let default = match command {
        Command::Agent(_) => "info",
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
