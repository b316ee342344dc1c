//! Calling a service by name: pick a member from the catalog, call it, retry elsewhere
//! when that is safe.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use murmur_gossip::{Endpoint as CatalogEndpoint, Status as MemberStatus};
use murmur_rpc::{
    CallOptions, CallStream, ClientStreaming, Code, Context, Message, NodeId, Peer, RequestSink,
    Status, Streaming,
};
use semver::VersionReq;
use tokio::time::Instant;

use crate::hosting::is_idempotent;
use crate::node::Node;
use crate::routing::{Balancer, BalancerState, Candidate, Ejector, RetryBudget, backoff};

/// Retries pause at least this long before the first retry, doubling up to
/// [`BACKOFF_MAX`], with full jitter.
const BACKOFF_BASE: Duration = Duration::from_millis(5);
/// The maximum pause between two attempts.
const BACKOFF_MAX: Duration = Duration::from_millis(250);
/// The default number of attempts per call; see [`Client::max_attempts`].
const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// The default time limit for opening a call; see [`Client::connect_timeout`].
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Buffer of the in-memory pipe that carries calls to a service of the same node.
const LOCAL_PIPE_BYTES: usize = 256 * 1024;

/// Calls one service by name on whichever members host it. Cheap to clone; settings
/// chain: `node.client("orders").timeout(..).tag("eu")`.
#[derive(Clone)]
pub struct Client {
    node: Node,
    service: String,
    timeout: Option<Duration>,
    parent: Option<CallOptions>,
    metadata: Vec<(String, String)>,
    version: Option<VersionReq>,
    tags: Vec<String>,
    balancer: Balancer,
    idempotent: bool,
    max_attempts: u32,
    connect_timeout: Duration,
}

/// Routing memory shared by every client of one service on one node.
pub(crate) struct RouteState {
    balancer: Mutex<BalancerState>,
    ejector: Mutex<Ejector>,
    budget: Mutex<RetryBudget>,
    in_flight: Mutex<HashMap<String, usize>>,
    /// The last non-empty list of members for the service, and when it was seen.
    last_known: Mutex<Option<(Instant, Vec<CatalogEndpoint>)>>,
}

impl RouteState {
    pub(crate) fn new() -> Self {
        Self {
            balancer: Mutex::new(BalancerState::default()),
            ejector: Mutex::new(Ejector::default()),
            budget: Mutex::new(RetryBudget::default()),
            in_flight: Mutex::new(HashMap::new()),
            last_known: Mutex::new(None),
        }
    }

    /// Returns `current`, the catalog's members for the service before any client's
    /// filters, and remembers it when it is not empty. When it is empty, returns the last
    /// non-empty list if that is younger than [`STALE_ROUTES`].
    ///
    /// A node that was starved of CPU can see every peer's heartbeat as late and mark
    /// them all down for a moment; routing on what was known a moment ago rides that out.
    /// A service whose last member really died costs callers at most a connect timeout
    /// per attempt for that long.
    fn members_or_recent(&self, current: Vec<CatalogEndpoint>) -> Vec<CatalogEndpoint> {
        let now = Instant::now();
        let mut last_known = lock(&self.last_known);
        if !current.is_empty() {
            *last_known = Some((now, current.clone()));
            return current;
        }
        match &*last_known {
            Some((seen, members)) if now.duration_since(*seen) < STALE_ROUTES => members.clone(),
            _ => current,
        }
    }
}

/// How long a client keeps routing to the members it last knew when the catalog
/// suddenly lists none.
const STALE_ROUTES: Duration = Duration::from_secs(3);

/// The member chosen for one attempt.
struct Chosen {
    name: String,
    peer: Option<Peer>,
    service: murmur_gossip::Service,
}

/// How far an attempt got before it failed.
enum Failure {
    /// The call never reached the server: no connection, no stream, or refused before
    /// the server read it. Safe to retry anywhere.
    NotSent(Status),
    /// The server may have started on it.
    Sent(Status),
}

impl Client {
    pub(crate) fn new(node: Node, service: String) -> Self {
        Self {
            node,
            service,
            timeout: None,
            parent: None,
            metadata: Vec::new(),
            version: None,
            tags: Vec::new(),
            balancer: Balancer::default(),
            idempotent: false,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }

    /// The service this client calls.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// Fails each call with `DeadlineExceeded` after `timeout`, retries included.
    /// Default none, unless inherited with [`inherit`](Self::inherit).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Makes calls on behalf of the call `ctx` serves: they get no more time than it has
    /// left, and carry its trace context. A shorter [`timeout`](Self::timeout) still
    /// applies.
    pub fn inherit(mut self, ctx: &Context) -> Self {
        self.parent = Some(ctx.call_options());
        self
    }

    /// Sends a metadata entry with every call.
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.push((key.into(), value.into()));
        self
    }

    /// Calls only members whose version of the service matches, such as `^1.2`.
    /// Default any version.
    pub fn version(mut self, requirement: VersionReq) -> Self {
        self.version = Some(requirement);
        self
    }

    /// Calls only members whose service carries `tag`; several tags must all match.
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// How calls are spread over the members. Default [`Balancer::PowerOfTwo`].
    pub fn balancer(mut self, balancer: Balancer) -> Self {
        self.balancer = balancer;
        self
    }

    /// Treats every method as idempotent, so calls are retried on another member after
    /// any transport failure. Default off: only methods the service marks idempotent, and
    /// calls that never reached a server, are retried.
    pub fn idempotent(mut self, idempotent: bool) -> Self {
        self.idempotent = idempotent;
        self
    }

    /// Attempts per call, the first included. Default 3; 1 turns retries off.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// How long opening a call to one member may take, connecting included, before the
    /// client tries another. Default 1 s: a LAN handshake takes milliseconds, and a
    /// member that died without leaving sends nothing back until failure detection drops it.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Returns whether any member hosts the service, whatever its status, or did so within
    /// the last few seconds. `false` means the name is unknown to the cluster.
    pub fn is_known_service(&self) -> bool {
        if self.node.catalog().services().contains_key(&self.service) {
            return true;
        }
        let route = self.node.route(&self.service);
        !route.members_or_recent(Vec::new()).is_empty()
    }

    /// The members a call could go to now, by name.
    pub fn endpoints(&self) -> Vec<CatalogEndpoint> {
        self.node
            .catalog()
            .endpoints(&self.service)
            .into_iter()
            .filter(|endpoint| self.matches(endpoint))
            .collect()
    }

    /// Calls `method` with `request` and returns the reply.
    ///
    /// # Errors
    ///
    /// The server's [`Status`], or `Unavailable` when no member serves the service, or
    /// `DeadlineExceeded` when the timeout passes.
    pub async fn call<Req: Message, Resp: Message>(
        &self,
        method: &str,
        request: &Req,
    ) -> Result<Resp, Status> {
        self.call_keyed(method, None, request).await
    }

    /// Calls `method` with rendezvous `key`: with [`Balancer::Rendezvous`] the same key
    /// goes to the same member while it serves.
    ///
    /// # Errors
    ///
    /// As for [`call`](Self::call).
    pub async fn call_with_key<Req: Message, Resp: Message>(
        &self,
        method: &str,
        key: &[u8],
        request: &Req,
    ) -> Result<Resp, Status> {
        self.call_keyed(method, Some(key), request).await
    }

    /// Starts a server-streaming call. Retries happen only while opening the call.
    ///
    /// # Errors
    ///
    /// As for [`call`](Self::call), for the part before the replies.
    pub async fn server_streaming<Req: Message, Resp: Message>(
        &self,
        method: &str,
        request: &Req,
    ) -> Result<Streaming<Resp>, Status> {
        let (stream, options, _) = self.open(method, None).await?;
        stream
            .server_streaming(&self.service, method, request, options)
            .await
    }

    /// Starts a client-streaming call.
    ///
    /// # Errors
    ///
    /// As for [`call`](Self::call), for opening the call.
    pub async fn client_streaming<Req: Message, Resp: Message>(
        &self,
        method: &str,
    ) -> Result<ClientStreaming<Req, Resp>, Status> {
        let (stream, options, _) = self.open(method, None).await?;
        stream
            .client_streaming(&self.service, method, options)
            .await
    }

    /// Starts a bidirectional call.
    ///
    /// # Errors
    ///
    /// As for [`call`](Self::call), for opening the call.
    pub async fn bidi_streaming<Req: Message, Resp: Message>(
        &self,
        method: &str,
    ) -> Result<(RequestSink<Req>, Streaming<Resp>), Status> {
        let (stream, options, _) = self.open(method, None).await?;
        stream.bidi_streaming(&self.service, method, options).await
    }

    async fn call_keyed<Req: Message, Resp: Message>(
        &self,
        method: &str,
        key: Option<&[u8]>,
        request: &Req,
    ) -> Result<Resp, Status> {
        let started = Instant::now();
        let result = self.call_with_retries(method, key, request).await;
        let code = match &result {
            Ok(_) => Code::Ok,
            Err(status) => status.code(),
        };
        self.node
            .inner
            .metrics
            .record_call(&self.service, method, code, started.elapsed());
        result
    }

    async fn call_with_retries<Req: Message, Resp: Message>(
        &self,
        method: &str,
        key: Option<&[u8]>,
        request: &Req,
    ) -> Result<Resp, Status> {
        let deadline = self.deadline();
        let route = self.node.route(&self.service);
        lock(&route.budget).deposit();
        let mut tried = HashSet::new();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let chosen = self.choose(&route, key, &tried)?;
            let idempotent = self.idempotent || is_idempotent(&chosen.service, method);
            let failure = match self
                .attempt::<Req, Resp>(&route, &chosen, method, request, deadline)
                .await
            {
                Ok(reply) => return Ok(reply),
                Err(failure) => failure,
            };
            let (status, retryable) = match failure {
                Failure::NotSent(status) => (status, true),
                Failure::Sent(status) => {
                    let retryable = idempotent && retryable_after_sending(status.code());
                    (status, retryable)
                }
            };
            if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                return Err(deadline_exceeded(attempt, &status));
            }
            if !retryable || attempt >= self.max_attempts {
                return Err(status);
            }
            if !lock(&route.budget).try_withdraw(Instant::now().into_std()) {
                tracing::debug!(service = %self.service, method, "retry budget spent");
                return Err(status);
            }
            tracing::debug!(service = %self.service, method, peer = %chosen.name, error = %status, attempt, "retrying on another member");
            tried.insert(chosen.name);
            let pause = backoff(attempt, BACKOFF_BASE, BACKOFF_MAX, &mut rand::rng());
            match deadline {
                Some(deadline) => {
                    tokio::time::sleep_until(deadline.min(Instant::now() + pause)).await
                }
                None => tokio::time::sleep(pause).await,
            }
        }
    }

    async fn attempt<Req: Message, Resp: Message>(
        &self,
        route: &RouteState,
        chosen: &Chosen,
        method: &str,
        request: &Req,
        deadline: Option<Instant>,
    ) -> Result<Resp, Failure> {
        let options = self.call_options(deadline);
        let stream = match self.open_stream(chosen, deadline).await {
            Ok(stream) => stream,
            Err(status) => {
                self.record_transport(route, chosen, &status);
                return Err(Failure::NotSent(status));
            }
        };

        let _in_flight = InFlightCount::enter(route, &chosen.name);
        match stream.unary(&self.service, method, request, options).await {
            Ok(reply) => {
                lock(&route.ejector).record_success(&chosen.name);
                Ok(reply)
            }
            Err(status) if status.is_unprocessed() => {
                lock(&route.ejector).record_success(&chosen.name);
                Err(Failure::NotSent(status))
            }
            Err(status) => {
                self.record_transport(route, chosen, &status);
                Err(Failure::Sent(status))
            }
        }
    }

    /// Opens a stream to the best member, retrying on others while opening fails.
    async fn open(
        &self,
        method: &str,
        key: Option<&[u8]>,
    ) -> Result<(CallStream, CallOptions, String), Status> {
        let deadline = self.deadline();
        let route = self.node.route(&self.service);
        let mut tried = HashSet::new();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let chosen = self.choose(&route, key, &tried)?;
            match self.open_stream(&chosen, deadline).await {
                Ok(stream) => {
                    return Ok((stream, self.call_options(deadline), chosen.name));
                }
                Err(status) => {
                    self.record_transport(&route, &chosen, &status);
                    if attempt >= self.max_attempts {
                        return Err(status);
                    }
                    tracing::debug!(service = %self.service, method, peer = %chosen.name, error = %status, "opening failed; trying another member");
                    tried.insert(chosen.name);
                }
            }
        }
    }

    /// Opens a stream to the chosen member within the connect timeout, so that a member
    /// that vanished without a word costs one timeout and not the whole deadline. The
    /// call's deadline cuts the wait shorter when it comes first.
    async fn open_stream(
        &self,
        chosen: &Chosen,
        deadline: Option<Instant>,
    ) -> Result<CallStream, Status> {
        let Some(peer) = chosen.peer else {
            return Ok(self.local_stream());
        };
        let connect_by = Instant::now() + self.connect_timeout;
        let limit = deadline.map_or(connect_by, |deadline| deadline.min(connect_by));
        let opening = self.node.endpoint().open_call(peer);
        match tokio::time::timeout_at(limit, opening).await {
            Ok(result) => result,
            Err(_) if limit < connect_by => Err(Status::deadline_exceeded(format!(
                "call deadline passed while connecting to {} at {}",
                chosen.name, peer.addr
            ))),
            Err(_) => Err(Status::unavailable(format!(
                "connecting to {} at {} timed out after {:?}",
                chosen.name, peer.addr, self.connect_timeout
            ))),
        }
    }

    /// A call to a service this node hosts, over an in-memory pipe instead of QUIC.
    fn local_stream(&self) -> CallStream {
        let (client_side, server_side) = tokio::io::duplex(LOCAL_PIPE_BYTES);
        let (server_read, server_write) = tokio::io::split(server_side);
        let (client_read, client_write) = tokio::io::split(client_side);
        let router = self.node.endpoint().router().clone();
        let caller = self.node.node_id();
        tokio::spawn(async move {
            router.serve_stream(caller, server_read, server_write).await;
        });
        CallStream::new(client_read, client_write, &self.node.inner.rpc_config)
    }

    /// Counts a failure toward ejecting the member only when the path to it failed. A
    /// status the member itself sent back is the application's reply, never a reason to
    /// eject it.
    fn record_transport(&self, route: &RouteState, chosen: &Chosen, status: &Status) {
        if status.from_peer() || !is_transport_failure(status.code()) {
            lock(&route.ejector).record_success(&chosen.name);
            return;
        }
        if lock(&route.ejector).record_failure(&chosen.name, Instant::now().into_std()) {
            tracing::warn!(service = %self.service, peer = %chosen.name, error = %status, "ejecting a member that keeps failing");
        }
    }

    fn choose(
        &self,
        route: &RouteState,
        key: Option<&[u8]>,
        tried: &HashSet<String>,
    ) -> Result<Chosen, Status> {
        let now = Instant::now().into_std();
        let recent = route.members_or_recent(self.node.catalog().endpoints(&self.service));
        let mut endpoints: Vec<CatalogEndpoint> = recent
            .into_iter()
            .filter(|endpoint| self.matches(endpoint))
            .collect();
        let total = endpoints.len();
        {
            let ejector = lock(&route.ejector);
            let healthy: Vec<CatalogEndpoint> = endpoints
                .iter()
                .filter(|endpoint| !ejector.is_ejected(&endpoint.member.name, now))
                .cloned()
                .collect();
            // With every member ejected, calling one beats failing outright.
            if !healthy.is_empty() {
                endpoints = healthy;
            }
        }
        let untried: Vec<CatalogEndpoint> = endpoints
            .iter()
            .filter(|endpoint| !tried.contains(&endpoint.member.name))
            .cloned()
            .collect();
        if !untried.is_empty() {
            endpoints = untried;
        }
        if endpoints.is_empty() {
            return self
                .hosted_here()
                .ok_or_else(|| Status::unavailable(self.no_member_message(total)));
        }

        let candidates: Vec<Candidate> = {
            let in_flight = lock(&route.in_flight);
            endpoints
                .iter()
                .map(|endpoint| Candidate {
                    name: endpoint.member.name.clone(),
                    node_id: endpoint.member.node_id.clone(),
                    gossiped_load: endpoint.member.load,
                    in_flight: in_flight.get(&endpoint.member.name).copied().unwrap_or(0),
                })
                .collect()
        };
        let index = {
            let mut state = lock(&route.balancer);
            self.balancer
                .pick(&candidates, key, &mut state, &mut rand::rng())
                .unwrap_or(0)
        };
        let endpoint = &endpoints[index];
        let member = &endpoint.member;
        let peer = if member.name == self.node.name()
            && member.node_id == self.node.node_id().to_string()
        {
            None
        } else {
            let node_id: NodeId = member.node_id.parse().map_err(|error| {
                Status::unavailable(format!(
                    "member {} advertises an invalid node id: {error}",
                    member.name
                ))
            })?;
            let addr = member.rpc_addrs.first().copied().ok_or_else(|| {
                Status::unavailable(format!("member {} advertises no RPC address", member.name))
            })?;
            Some(Peer::new(addr, node_id))
        };
        Ok(Chosen {
            name: member.name.clone(),
            peer,
            service: (*endpoint.service).clone(),
        })
    }

    /// This node itself, when it hosts the service with a matching version and tags but
    /// its catalog does not list it yet (gossip lists it within a round).
    fn hosted_here(&self) -> Option<Chosen> {
        if self.node.is_draining() {
            return None;
        }
        let service = self.node.hosted().get(&self.service).cloned()?;
        let version_matches = self
            .version
            .as_ref()
            .is_none_or(|requirement| requirement.matches(&service.version));
        let tags_match = self.tags.iter().all(|tag| service.tags.contains(tag));
        (version_matches && tags_match).then(|| Chosen {
            name: self.node.name().to_string(),
            peer: None,
            service,
        })
    }

    fn matches(&self, endpoint: &CatalogEndpoint) -> bool {
        endpoint.member.status == MemberStatus::Alive
            && self
                .version
                .as_ref()
                .is_none_or(|requirement| requirement.matches(&endpoint.service.version))
            && self
                .tags
                .iter()
                .all(|tag| endpoint.service.tags.contains(tag))
    }

    fn no_member_message(&self, matching: usize) -> String {
        let mut message = format!("no alive member serves {}", self.service);
        if let Some(version) = &self.version {
            message.push_str(&format!(" at version {version}"));
        }
        if !self.tags.is_empty() {
            message.push_str(&format!(" with tags {}", self.tags.join(",")));
        }
        if matching > 0 {
            message.push_str(&format!(
                " ({matching} matching members are ejected or tried)"
            ));
        }
        message
    }

    fn deadline(&self) -> Option<Instant> {
        // A timeout too large to add to the clock means no deadline at all.
        let own = self
            .timeout
            .and_then(|timeout| Instant::now().checked_add(timeout));
        let inherited = self.parent.as_ref().and_then(CallOptions::deadline);
        match (own, inherited) {
            (Some(own), Some(inherited)) => Some(own.min(inherited)),
            (own, inherited) => own.or(inherited),
        }
    }

    fn call_options(&self, deadline: Option<Instant>) -> CallOptions {
        let mut options = match &self.parent {
            Some(parent) => parent.clone(),
            None => CallOptions::new().traceparent(new_traceparent()),
        };
        if let Some(deadline) = deadline {
            options = options.deadline_at(deadline);
        }
        for (key, value) in &self.metadata {
            options = options.metadata(key.clone(), value.clone());
        }
        options
    }
}

/// Counts this node's calls in flight to one member while alive.
struct InFlightCount<'a> {
    route: &'a RouteState,
    name: String,
}

impl<'a> InFlightCount<'a> {
    fn enter(route: &'a RouteState, name: &str) -> Self {
        *lock(&route.in_flight).entry(name.to_string()).or_default() += 1;
        Self {
            route,
            name: name.to_string(),
        }
    }
}

impl Drop for InFlightCount<'_> {
    fn drop(&mut self) {
        let mut in_flight = lock(&self.route.in_flight);
        if let Some(count) = in_flight.get_mut(&self.name) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                in_flight.remove(&self.name);
            }
        }
    }
}

/// The status a call gets when its deadline passes between attempts.
fn deadline_exceeded(attempts: u32, last: &Status) -> Status {
    let attempts = if attempts == 1 {
        "1 attempt".to_string()
    } else {
        format!("{attempts} attempts")
    };
    if last.code() == Code::DeadlineExceeded {
        return last.clone();
    }
    Status::deadline_exceeded(format!(
        "call deadline passed after {attempts}; last error: {last}"
    ))
}

/// Codes that mean the path to the member failed, when this side produced them.
fn is_transport_failure(code: Code) -> bool {
    matches!(code, Code::Unavailable | Code::Unauthenticated)
}

/// Codes worth trying again on another member when the method is idempotent.
fn retryable_after_sending(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable | Code::ResourceExhausted | Code::Aborted | Code::Cancelled
    )
}

/// A fresh W3C `traceparent`: version 00, random trace and span ids, sampled.
fn new_traceparent() -> String {
    let trace: u128 = rand::random();
    let span: u64 = rand::random();
    format!("00-{trace:032x}-{span:016x}-01")
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // No code path panics while holding these locks; a poisoned one is still usable.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_has_the_w3c_shape() {
        let traceparent = new_traceparent();
        let parts: Vec<&str> = traceparent.split('-').collect();
        assert_eq!(parts.len(), 4);
        assert_eq!(parts[0], "00");
        assert_eq!(parts[1].len(), 32);
        assert_eq!(parts[2].len(), 16);
        assert_eq!(parts[3], "01");
    }

    #[test]
    fn application_errors_are_not_transport_failures() {
        assert!(!is_transport_failure(Code::NotFound));
        assert!(!is_transport_failure(Code::InvalidArgument));
        assert!(is_transport_failure(Code::Unavailable));
        assert!(!retryable_after_sending(Code::NotFound));
        assert!(!retryable_after_sending(Code::DeadlineExceeded));
    }
}
