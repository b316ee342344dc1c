//! Reading an agent's HTTP API: members, services, metrics, and calls through the
//! gateway. Every request has a short timeout, so a hung agent fails a check instead of
//! hanging the test.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

/// Timeout of one request to the API, calls excepted.
const API_TIMEOUT: Duration = Duration::from_secs(2);

/// One member as `/v1/nodes` lists it.
#[derive(Clone, Debug, Deserialize)]
pub struct NodeView {
    /// Its name.
    pub name: String,
    /// Its node id.
    pub id: String,
    /// `alive` or `draining`.
    pub status: String,
    /// Its life number, higher after each restart.
    pub generation: u64,
    /// Its RPC addresses.
    pub rpc: Vec<String>,
    /// The services it hosts.
    pub services: Vec<String>,
}

/// One provider of a service as `/v1/services` lists it.
#[derive(Clone, Debug, Deserialize)]
pub struct ProviderView {
    /// The member's name.
    pub node: String,
    /// The member's status.
    pub status: String,
}

/// The outcome of a call through the gateway.
#[derive(Clone, Debug)]
pub struct CallResult {
    /// The HTTP status.
    pub http: u16,
    /// The JSON body: the reply, or `{"code", "message"}` on error.
    pub body: Value,
}

impl CallResult {
    /// The status code name of an error reply, such as `INVALID_ARGUMENT`; `OK` on success.
    pub fn code(&self) -> &str {
        if self.http == 200 {
            return "OK";
        }
        self.body
            .get("code")
            .and_then(Value::as_str)
            .unwrap_or("NO_CODE")
    }
}

/// The HTTP client of this thread. Each thread gets its own, so that a thread that
/// entered a network namespace opens its sockets there.
pub fn client() -> reqwest::Client {
    thread_local! {
        static CLIENT: reqwest::Client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(1))
            .no_proxy()
            .build()
            .expect("a reqwest client builds");
    }
    CLIENT.with(Clone::clone)
}

/// The HTTP status of `/v1/health`, or `None` when the agent does not respond.
pub async fn health(url: &str) -> Option<u16> {
    let answer = client()
        .get(format!("{url}/v1/health"))
        .timeout(API_TIMEOUT)
        .send()
        .await
        .ok()?;
    Some(answer.status().as_u16())
}

/// `/v1/nodes`, or `None` when the agent does not respond.
pub async fn nodes(url: &str) -> Option<Vec<NodeView>> {
    get_json(url, "/v1/nodes").await
}

/// `/v1/services`, or `None` when the agent does not respond.
pub async fn services(url: &str) -> Option<BTreeMap<String, Vec<ProviderView>>> {
    get_json(url, "/v1/services").await
}

/// `/metrics` as text, or `None` when the agent does not respond.
pub async fn metrics(url: &str) -> Option<String> {
    let answer = client()
        .get(format!("{url}/metrics"))
        .timeout(API_TIMEOUT)
        .send()
        .await
        .ok()?;
    answer.text().await.ok()
}

/// The value of the metric line that starts with `series` (name and labels), or 0 when
/// there is no such line.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            let rest = line.strip_prefix(series)?;
            rest.trim().parse::<f64>().ok()
        })
        .unwrap_or(0.0)
}

/// The sum of every line of metric `name` (all label values).
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Calls `service.method` with `request` through the agent's gateway, with the headers
/// given (such as `x-murmur-timeout`). A transport failure to the agent itself comes back
/// as HTTP status 0.
pub async fn call(
    url: &str,
    service: &str,
    method: &str,
    request: &Value,
    headers: &[(&str, &str)],
) -> CallResult {
    let mut outgoing = client()
        .post(format!("{url}/v1/call/{service}/{method}"))
        .json(request)
        .timeout(Duration::from_secs(15));
    for (name, value) in headers {
        outgoing = outgoing.header(*name, *value);
    }
    let answer = match outgoing.send().await {
        Ok(answer) => answer,
        Err(error) => {
            return CallResult {
                http: 0,
                body: serde_json::json!({"code": "GATEWAY_UNREACHABLE", "message": error.to_string()}),
            };
        }
    };
    let http = answer.status().as_u16();
    let body = match answer.bytes().await {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned())),
        Err(error) => serde_json::json!({"code": "BODY_LOST", "message": error.to_string()}),
    };
    CallResult { http, body }
}

/// `Some(())` when every agent at `urls` lists exactly the members `names`, all alive.
pub async fn all_list_exactly(urls: &[String], names: &[&str]) -> Option<()> {
    for url in urls {
        let nodes = nodes(url).await?;
        let mut listed: Vec<&str> = nodes.iter().map(|node| node.name.as_str()).collect();
        listed.sort_unstable();
        let mut expected = names.to_vec();
        expected.sort_unstable();
        if listed != expected || nodes.iter().any(|node| node.status != "alive") {
            return None;
        }
    }
    Some(())
}

/// `Some(())` when no agent at `urls` lists member `name` nor routes `service` to it.
pub async fn none_lists(urls: &[String], name: &str, service: &str) -> Option<()> {
    for url in urls {
        let nodes = nodes(url).await?;
        if nodes.iter().any(|node| node.name == name) {
            return None;
        }
        let services = services(url).await?;
        let providers = services.get(service).map(Vec::as_slice).unwrap_or(&[]);
        if providers.iter().any(|provider| provider.node == name) {
            return None;
        }
    }
    Some(())
}

async fn get_json<T: serde::de::DeserializeOwned>(url: &str, path: &str) -> Option<T> {
    let answer = client()
        .get(format!("{url}{path}"))
        .timeout(API_TIMEOUT)
        .send()
        .await
        .ok()?;
    answer.json().await.ok()
}
