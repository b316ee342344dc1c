//! The commands that talk to a local agent's HTTP API.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use futures_util::StreamExt;
use murmur::ClusterKey;
use serde_json::Value;

use crate::http::{
    ErrorView, EventView, HealthView, IDEMPOTENT_HEADER, NodeView, ProviderView, TIMEOUT_HEADER,
    parse_duration,
};
use crate::{Failure, UsageError};

/// Codes that mean the request itself was wrong, and exit with 2 like a usage error.
const BAD_INPUT_CODES: [&str; 5] = [
    "INVALID_ARGUMENT",
    "NOT_FOUND",
    "UNIMPLEMENTED",
    "OUT_OF_RANGE",
    "FAILED_PRECONDITION",
];

fn base(http: SocketAddr) -> String {
    format!("http://{http}")
}

fn client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .build()
        .context("failed to build the HTTP client")
}

async fn get_json<T: serde::de::DeserializeOwned>(
    http: SocketAddr,
    path: &str,
) -> Result<T, Failure> {
    let url = format!("{}{path}", base(http));
    let answer = client()?
        .get(&url)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .map_err(|error| unreachable_agent(http, &error))?;
    let text = answer
        .text()
        .await
        .with_context(|| format!("failed to read the answer from {url}"))?;
    Ok(serde_json::from_str(&text)
        .with_context(|| format!("the agent at {http} sent an answer this version cannot read"))?)
}

fn unreachable_agent(http: SocketAddr, error: &reqwest::Error) -> Failure {
    Failure::Other(anyhow::anyhow!(
        "cannot reach the agent at {http} ({error}); start one with `murmur agent` or point to it with --http or MURMUR_HTTP_ADDR"
    ))
}

/// `murmur nodes`.
pub async fn nodes(http: SocketAddr, json: bool) -> Result<(), Failure> {
    let nodes: Vec<NodeView> = get_json(http, "/v1/nodes").await?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&nodes).unwrap_or_default()
        );
        return Ok(());
    }
    let rows = nodes
        .iter()
        .map(|node| {
            vec![
                node.name.clone(),
                node.status.clone(),
                node.gossip.clone(),
                node.rpc.join(","),
                format!("{:.2}", node.load),
                node.services.join(","),
                short_id(&node.id),
            ]
        })
        .collect();
    print_table(
        &["NAME", "STATUS", "GOSSIP", "RPC", "LOAD", "SERVICES", "ID"],
        rows,
    );
    Ok(())
}

/// `murmur services`.
pub async fn services(http: SocketAddr, json: bool) -> Result<(), Failure> {
    let services: BTreeMap<String, Vec<ProviderView>> = get_json(http, "/v1/services").await?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&services).unwrap_or_default()
        );
        return Ok(());
    }
    let mut rows = Vec::new();
    for (name, providers) in &services {
        for provider in providers {
            rows.push(vec![
                name.clone(),
                provider.node.clone(),
                provider.status.clone(),
                provider.version.clone(),
                provider.tags.join(","),
                provider.methods.join(","),
            ]);
        }
    }
    print_table(
        &["SERVICE", "NODE", "STATUS", "VERSION", "TAGS", "METHODS"],
        rows,
    );
    Ok(())
}

/// `murmur call`.
pub async fn call(
    http: SocketAddr,
    service: &str,
    method: &str,
    body: Option<&str>,
    timeout: Option<&str>,
    idempotent: bool,
) -> Result<(), Failure> {
    let request: Value = match body {
        Some(text) => serde_json::from_str(text)
            .map_err(|error| UsageError(format!("invalid JSON request {text:?}: {error}")))?,
        None => Value::Null,
    };
    let mut url = reqwest::Url::parse(&format!("{}/v1/call", base(http)))
        .map_err(|error| UsageError(format!("invalid agent address {http}: {error}")))?;
    url.path_segments_mut()
        .map_err(|()| UsageError(format!("invalid agent address {http}")))?
        .push(service)
        .push(method);
    let mut outgoing = client()?.post(url).json(&request);
    let mut wait = Duration::from_secs(60);
    if let Some(text) = timeout {
        let parsed = parse_duration(text)
            .map_err(|error| UsageError(format!("invalid --timeout: {error}")))?;
        wait = parsed + Duration::from_secs(5);
        outgoing = outgoing.header(TIMEOUT_HEADER, text);
    }
    if idempotent {
        outgoing = outgoing.header(IDEMPOTENT_HEADER, "true");
    }
    let answer = outgoing
        .timeout(wait)
        .send()
        .await
        .map_err(|error| unreachable_agent(http, &error))?;
    let ok = answer.status().is_success();
    let text = answer
        .text()
        .await
        .context("failed to read the agent's response")?;
    if ok {
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        println!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
        return Ok(());
    }
    let error: ErrorView = serde_json::from_str(&text)
        .map_err(|_| Failure::Other(anyhow::anyhow!("the agent returned an error: {text}")))?;
    let line = format!("{}: {}", error.code, error.message);
    if BAD_INPUT_CODES.contains(&error.code.as_str()) {
        Err(Failure::Usage(UsageError(line)))
    } else {
        Err(Failure::Other(anyhow::anyhow!(line)))
    }
}

/// `murmur health`.
pub async fn health(http: SocketAddr, json: bool) -> Result<(), Failure> {
    let health: HealthView = get_json(http, "/v1/health").await?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&health).unwrap_or_default()
        );
    } else {
        println!(
            "{}: {} (gossip {}, {} members, {} calls being served{})",
            health.name,
            health.status,
            health.gossip,
            health.members,
            health.serving,
            if health.draining { ", draining" } else { "" }
        );
    }
    if health.status == "ok" {
        Ok(())
    } else {
        Err(Failure::Other(anyhow::anyhow!(
            "agent is {}",
            health.status
        )))
    }
}

/// `murmur watch`: prints catalog events as they happen, until interrupted or the agent
/// stops.
pub async fn watch(http: SocketAddr, json: bool) -> Result<(), Failure> {
    let answer = client()?
        .get(format!("{}/v1/watch", base(http)))
        .send()
        .await
        .map_err(|error| unreachable_agent(http, &error))?;
    let mut body = answer.bytes_stream();
    let mut buffer = String::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.context("the event stream from the agent broke")?;
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let record: String = buffer.drain(..end + 2).collect();
            print_event(&record, json);
        }
    }
    Ok(())
}

fn print_event(record: &str, json: bool) {
    let Some(data) = record
        .lines()
        .find_map(|line| line.strip_prefix("data:").map(str::trim))
    else {
        return;
    };
    if json {
        println!("{data}");
        return;
    }
    match serde_json::from_str::<EventView>(data) {
        Ok(event) => {
            let service = event
                .service
                .map(|service| format!(" {service}"))
                .unwrap_or_default();
            println!(
                "{:<13} {}{} (generation {}, {})",
                event.event, event.node, service, event.generation, event.status
            );
        }
        Err(_) => println!("{data}"),
    }
    let _ = std::io::stdout().flush();
}

/// `murmur keygen`.
pub fn keygen() {
    println!("{}", ClusterKey::generate().to_hex());
}

fn short_id(id: &str) -> String {
    id.chars().take(12).collect()
}

/// Prints rows under headers, each column as wide as its widest cell.
pub fn print_table(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = headers.iter().map(|header| header.len()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(headers.iter().map(|header| header.to_string()).collect());
    for row in rows {
        line(row);
    }
}
