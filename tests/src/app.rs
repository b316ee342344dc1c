//! A small HTTP application that tests put behind an agent with `--service NAME=URL`,
//! the way a program in another language would serve through the sidecar.
//!
//! Methods, each `POST /{method}` with a JSON body:
//! - `add` takes `{"a": number, "b": number}` and returns `{"sum": a + b}`; any other
//!   shape gets HTTP 400 with `{"message": ...}`.
//! - `slow` takes `{"ms": n}`, sleeps n milliseconds, and returns `{"slept_ms": n, "app": label}`.
//! - `whoami` returns `{"app": label}`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use serde_json::{Value, json};

/// A running application; dropping it stops the server.
pub struct App {
    /// Its base URL, for `--service NAME=URL`.
    pub url: String,
    /// What it counted.
    pub state: Arc<AppState>,
    server: tokio::task::JoinHandle<()>,
}

/// Requests an application received, shared with the test.
#[derive(Debug)]
pub struct AppState {
    /// The label it returns in replies.
    pub label: String,
    /// Requests received, of any method.
    pub received: AtomicU64,
    /// Requests that completed.
    pub completed: AtomicU64,
    /// When each request arrived.
    pub arrivals: Mutex<Vec<Instant>>,
}

impl AppState {
    /// Arrivals at or after `instant`.
    pub fn arrivals_since(&self, instant: Instant) -> usize {
        self.arrivals
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .filter(|arrival| **arrival >= instant)
            .count()
    }
}

impl App {
    /// Starts an application on a free loopback port, on the current tokio runtime.
    pub async fn start(label: &str) -> App {
        let state = Arc::new(AppState {
            label: label.to_string(),
            received: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            arrivals: Mutex::new(Vec::new()),
        });
        let router = Router::new()
            .route("/add", post(add))
            .route("/slow", post(slow))
            .route("/whoami", post(whoami))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free TCP port on loopback");
        let addr: SocketAddr = listener
            .local_addr()
            .expect("bound listener has an address");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        App {
            url: format!("http://{addr}"),
            state,
            server,
        }
    }

    /// Requests received so far.
    pub fn received(&self) -> u64 {
        self.state.received.load(Ordering::Acquire)
    }

    /// Requests completed so far.
    pub fn completed(&self) -> u64 {
        self.state.completed.load(Ordering::Acquire)
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn arrive(state: &AppState) {
    state.received.fetch_add(1, Ordering::AcqRel);
    state
        .arrivals
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .push(Instant::now());
}

async fn add(
    State(state): State<Arc<AppState>>,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    arrive(&state);
    let a = body.get("a").and_then(Value::as_f64);
    let b = body.get("b").and_then(Value::as_f64);
    state.completed.fetch_add(1, Ordering::AcqRel);
    match (a, b) {
        (Some(a), Some(b)) => (StatusCode::OK, Json(json!({"sum": a + b}))),
        _ => (
            StatusCode::BAD_REQUEST,
            Json(
                json!({"message": format!("expected {{\"a\": number, \"b\": number}}, got {body}")}),
            ),
        ),
    }
}

async fn slow(State(state): State<Arc<AppState>>, Json(body): Json<Value>) -> Json<Value> {
    arrive(&state);
    let ms = body.get("ms").and_then(Value::as_u64).unwrap_or(2_000);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    state.completed.fetch_add(1, Ordering::AcqRel);
    Json(json!({"slept_ms": ms, "app": state.label}))
}

async fn whoami(State(state): State<Arc<AppState>>) -> Json<Value> {
    arrive(&state);
    state.completed.fetch_add(1, Ordering::AcqRel);
    Json(json!({"app": state.label}))
}
