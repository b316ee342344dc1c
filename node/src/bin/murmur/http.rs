//! The agent's HTTP API: the JSON gateway to calls, the catalog, health, metrics, a live
//! event stream and the dashboard.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::stream::Stream;
use murmur::gossip::{CatalogEvent, Member, WatchError};
use murmur::{Code, Node, Status};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Header with the call's timeout, such as `200ms` or `2s`.
pub const TIMEOUT_HEADER: &str = "x-murmur-timeout";
/// Header that marks a call idempotent (`true`), so it may be retried elsewhere.
pub const IDEMPOTENT_HEADER: &str = "x-murmur-idempotent";

/// One member, as `/v1/nodes` lists it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeView {
    pub name: String,
    pub id: String,
    pub status: String,
    pub generation: u64,
    pub gossip: String,
    pub rpc: Vec<String>,
    pub load: f64,
    pub services: Vec<String>,
}

/// One member hosting a service, as `/v1/services` lists it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProviderView {
    pub node: String,
    pub id: String,
    pub status: String,
    pub version: String,
    pub tags: Vec<String>,
    pub metadata: BTreeMap<String, String>,
    pub methods: Vec<String>,
    pub rpc: Vec<String>,
}

/// The body of every error response.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorView {
    pub code: String,
    pub message: String,
}

/// `/v1/health`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HealthView {
    pub status: String,
    pub name: String,
    pub gossip: String,
    pub draining: bool,
    pub serving: usize,
    pub members: usize,
}

/// A catalog event on `/v1/watch`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EventView {
    pub event: String,
    pub node: String,
    pub generation: u64,
    pub service: Option<String>,
    pub status: String,
}

/// Builds the agent's routes.
pub fn routes(node: Node) -> Router {
    Router::new()
        .route("/", get(dashboard))
        .route("/v1/nodes", get(nodes))
        .route("/v1/services", get(services))
        .route("/v1/health", get(health))
        .route("/v1/watch", get(watch))
        .route("/v1/call/{service}/{method}", post(call))
        .route("/metrics", get(metrics))
        .with_state(node)
}

/// Serves the API on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    node: Node,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, routes(node))
        .with_graceful_shutdown(shutdown)
        .await
}

pub fn node_view(member: &Member) -> NodeView {
    NodeView {
        name: member.name.clone(),
        id: member.node_id.clone(),
        status: member.status.to_string(),
        generation: member.generation,
        gossip: member.gossip_addr.to_string(),
        rpc: member.rpc_addrs.iter().map(ToString::to_string).collect(),
        load: member.load,
        services: member.services.keys().cloned().collect(),
    }
}

async fn nodes(State(node): State<Node>) -> Json<Vec<NodeView>> {
    let catalog = node.catalog();
    Json(catalog.members().map(|member| node_view(member)).collect())
}

async fn services(State(node): State<Node>) -> Json<BTreeMap<String, Vec<ProviderView>>> {
    let catalog = node.catalog();
    let services = catalog
        .services()
        .into_iter()
        .map(|(name, endpoints)| {
            let providers = endpoints
                .iter()
                .map(|endpoint| ProviderView {
                    node: endpoint.member.name.clone(),
                    id: endpoint.member.node_id.clone(),
                    status: endpoint.member.status.to_string(),
                    version: endpoint.service.version.to_string(),
                    tags: endpoint.service.tags.clone(),
                    metadata: endpoint.service.metadata.clone(),
                    methods: endpoint.service.methods.clone(),
                    rpc: endpoint
                        .member
                        .rpc_addrs
                        .iter()
                        .map(ToString::to_string)
                        .collect(),
                })
                .collect();
            (name, providers)
        })
        .collect();
    Json(services)
}

async fn health(State(node): State<Node>) -> Response {
    let health = node.health();
    let gossip = match &health.gossip {
        murmur::gossip::Health::Healthy => "ok".to_string(),
        murmur::gossip::Health::Degraded(reason) => format!("degraded: {reason}"),
        murmur::gossip::Health::Failed(reason) => format!("failed: {reason}"),
    };
    let view = HealthView {
        status: if health.is_healthy() {
            "ok".into()
        } else if health.draining {
            "draining".into()
        } else {
            "unhealthy".into()
        },
        name: node.name().to_string(),
        gossip,
        draining: health.draining,
        serving: health.serving,
        members: node.catalog().len(),
    };
    let code = if health.is_healthy() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(view)).into_response()
}

async fn metrics(State(node): State<Node>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        node.metrics_text(),
    )
        .into_response()
}

async fn dashboard() -> Html<&'static str> {
    Html(include_str!("dashboard.html"))
}

async fn watch(State(node): State<Node>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let events = node.membership().watch();
    // The stream ends when the node starts shutting down, or the HTTP server's graceful
    // shutdown would wait on it forever.
    let stream = futures_util::stream::unfold((events, node), |(mut events, node)| async move {
        if node.is_draining() {
            return None;
        }
        let next = tokio::select! {
            next = events.next() => next,
            () = wait_for_drain(&node) => return None,
        };
        let event = match next {
            Ok(event) => {
                let view = event_view(&event);
                let data = serde_json::to_string(&view).unwrap_or_default();
                Event::default().event(&view.event).data(data)
            }
            Err(WatchError::Lagged { missed }) => Event::default()
                .event("lagged")
                .data(format!("{{\"missed\":{missed}}}")),
            Err(WatchError::Closed) => return None,
        };
        Some((Ok(event), (events, node)))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(10)))
}

async fn wait_for_drain(node: &Node) {
    while !node.is_draining() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub fn event_view(event: &CatalogEvent) -> EventView {
    let (kind, member, service) = match event {
        CatalogEvent::NodeUp(member) => ("node_up", member, None),
        CatalogEvent::NodeDown(member) => ("node_down", member, None),
        CatalogEvent::ServiceUp { member, service } => {
            ("service_up", member, Some(service.name.clone()))
        }
        CatalogEvent::ServiceDown { member, service } => {
            ("service_down", member, Some(service.name.clone()))
        }
        CatalogEvent::Changed(member) => ("changed", member, None),
    };
    EventView {
        event: kind.to_string(),
        node: member.name.clone(),
        generation: member.generation,
        service,
        status: member.status.to_string(),
    }
}

async fn call(
    State(node): State<Node>,
    Path((service, method)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(origin) = foreign_origin(&headers) {
        tracing::warn!(
            origin,
            service,
            method,
            "rejected a call from a web page of another origin"
        );
        let status = Status::new(
            murmur::Code::PermissionDenied,
            format!(
                "calls from web pages of origin {origin} are not allowed; only local pages may call"
            ),
        );
        return error_response(&status);
    }
    match gateway_call(&node, &service, &method, &headers, &body).await {
        Ok(reply) => Json(reply).into_response(),
        Err(status) => error_response(&status),
    }
}

async fn gateway_call(
    node: &Node,
    service: &str,
    method: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Value, Status> {
    let request: Value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(body).map_err(|error| {
            Status::invalid_argument(format!("request body is not valid JSON: {error}"))
        })?
    };
    let mut client = node.client(service);
    if let Some(value) = headers.get(TIMEOUT_HEADER) {
        let text = value.to_str().unwrap_or("");
        let timeout = parse_duration(text).map_err(|error| {
            Status::invalid_argument(format!("invalid {TIMEOUT_HEADER} header: {error}"))
        })?;
        client = client.timeout(timeout);
    }
    if let Some(value) = headers.get(IDEMPOTENT_HEADER) {
        let idempotent = match value.to_str().unwrap_or("") {
            "true" | "1" => true,
            "false" | "0" => false,
            other => {
                return Err(Status::invalid_argument(format!(
                    "invalid {IDEMPOTENT_HEADER} header {other:?}: expected true or false"
                )));
            }
        };
        client = client.idempotent(idempotent);
    }
    let catalog = node.catalog();
    if !client.is_known_service() {
        let known: Vec<String> = catalog.services().into_keys().collect();
        return Err(Status::not_found(format!(
            "unknown service {service:?}: no member hosts it (known: {})",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        )));
    }
    client.call::<Value, Value>(method, &request).await
}

/// Returns the `Origin` header of a request sent by a browser page that is not served
/// from this machine. Browsers add `Origin` to cross-site POSTs, so this stops a web
/// page from calling into the cluster through the agent; other clients send none.
fn foreign_origin(headers: &HeaderMap) -> Option<String> {
    let origin = headers.get(header::ORIGIN)?.to_str().unwrap_or("invalid");
    let host = origin
        .split_once("://")
        .map_or(origin, |(_, rest)| rest)
        .trim_end_matches('/');
    let host = host.rsplit_once(':').map_or(host, |(name, port)| {
        if port.chars().all(|c| c.is_ascii_digit()) {
            name
        } else {
            host
        }
    });
    let local = matches!(host, "localhost" | "127.0.0.1" | "[::1]");
    (!local).then(|| origin.to_string())
}

/// Maps a call status code to the HTTP status, as gRPC gateways do.
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn error_response(status: &Status) -> Response {
    let view = ErrorView {
        code: status.code().as_str().to_string(),
        message: status.message().to_string(),
    };
    (http_status(status.code()), Json(view)).into_response()
}

/// Parses a duration such as `250ms`, `1.5s`, `2m` or `100us`.
/// The longest timeout accepted: a day.
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("{text:?} has no unit: expected for example 200ms, 1.5s or 2m"))?;
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| {
        format!("{text:?} does not start with a number: expected for example 200ms")
    })?;
    let seconds = match unit {
        "us" | "µs" => value / 1_000_000.0,
        "ms" => value / 1_000.0,
        "s" => value,
        "m" => value * 60.0,
        other => {
            return Err(format!(
                "{text:?} has unknown unit {other:?}: expected us, ms, s or m"
            ));
        }
    };
    let duration =
        Duration::try_from_secs_f64(seconds).map_err(|error| format!("{text:?}: {error}"))?;
    if duration > MAX_TIMEOUT {
        return Err(format!("{text:?} is longer than the maximum of 24h"));
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("200ms"), Ok(Duration::from_millis(200)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1_500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("100us"), Ok(Duration::from_micros(100)));
        assert!(parse_duration("200").unwrap_err().contains("no unit"));
        assert!(parse_duration("5h").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("ms").unwrap_err().contains("number"));
        assert!(
            parse_duration("10000000000000000000s")
                .unwrap_err()
                .contains("maximum")
        );
    }

    #[test]
    fn only_local_origins_may_call() {
        let mut headers = HeaderMap::new();
        assert_eq!(foreign_origin(&headers), None);
        for local in [
            "http://localhost:7948",
            "http://127.0.0.1:7948",
            "http://[::1]:80",
        ] {
            headers.insert(header::ORIGIN, local.parse().unwrap());
            assert_eq!(foreign_origin(&headers), None, "{local}");
        }
        headers.insert(header::ORIGIN, "https://evil.example".parse().unwrap());
        assert_eq!(
            foreign_origin(&headers).as_deref(),
            Some("https://evil.example")
        );
        headers.insert(header::ORIGIN, "null".parse().unwrap());
        assert_eq!(foreign_origin(&headers).as_deref(), Some("null"));
    }

    #[test]
    fn codes_map_to_http_statuses() {
        assert_eq!(http_status(Code::InvalidArgument), StatusCode::BAD_REQUEST);
        assert_eq!(
            http_status(Code::DeadlineExceeded),
            StatusCode::GATEWAY_TIMEOUT
        );
        assert_eq!(
            http_status(Code::Unavailable),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(http_status(Code::NotFound), StatusCode::NOT_FOUND);
    }
}
