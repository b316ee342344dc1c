//! Describing a service to host: its name, version, labels and methods.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use murmur_gossip::Service;
use murmur_rpc::{Context, Message, ReplySink, Router, Status, Streaming};

use crate::node::InFlight;

/// The metadata key under which a service lists its idempotent methods, comma-separated.
/// Clients retry those on another member after any transport failure.
pub const IDEMPOTENT_METADATA_KEY: &str = "murmur.idempotent";

type Registration = Box<dyn FnOnce(&Router, &str, &Arc<InFlight>) + Send>;

/// A service to host with [`Node::host`](crate::Node::host): a name, a version, tags,
/// metadata and methods.
///
/// ```
/// # use murmur::{ServiceDef, Status};
/// # use serde::{Deserialize, Serialize};
/// #[derive(Serialize, Deserialize)]
/// struct Reserve { sku: String, count: u32 }
///
/// let inventory = ServiceDef::new("inventory", murmur::semver::Version::new(1, 2, 0))
///     .tag("eu")
///     .unary("reserve", |_ctx, request: Reserve| async move {
///         Ok::<_, Status>(request.count)
///     })
///     .idempotent();
/// ```
pub struct ServiceDef {
    description: Service,
    idempotent: Vec<String>,
    registrations: Vec<Registration>,
}

impl ServiceDef {
    /// A service called `name` at `version`, with no methods yet.
    pub fn new(name: impl Into<String>, version: semver::Version) -> Self {
        Self {
            description: Service::new(name, version),
            idempotent: Vec::new(),
            registrations: Vec::new(),
        }
    }

    /// The service's name.
    pub fn name(&self) -> &str {
        &self.description.name
    }

    /// Adds a tag callers can select on.
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.description.tags.push(tag.into());
        self
    }

    /// Sets a metadata entry other members see in the catalog.
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.description.metadata.insert(key.into(), value.into());
        self
    }

    /// Marks the method added last as idempotent: safe to run twice, so clients retry it
    /// on another member after any transport failure, not only when it never arrived.
    pub fn idempotent(mut self) -> Self {
        if let Some(method) = self.description.methods.last() {
            self.idempotent.push(method.clone());
        }
        self
    }

    /// Adds a unary method: one request in, one reply out.
    pub fn unary<Req, Resp, F, Fut>(self, method: &str, handler: F) -> Self
    where
        Req: Message,
        Resp: Message,
        F: Fn(Context, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, Status>> + Send + 'static,
    {
        self.add(method, move |router, service, method, in_flight| {
            let handler = Arc::new(handler);
            router.unary(service, method, move |ctx, request: Req| {
                let guard = in_flight.enter();
                let reply = handler(ctx, request);
                async move {
                    let _guard = guard;
                    reply.await
                }
            });
        })
    }

    /// Adds a server-streaming method: one request in, replies out through the sink.
    pub fn server_streaming<Req, Resp, F, Fut>(self, method: &str, handler: F) -> Self
    where
        Req: Message,
        Resp: Message,
        F: Fn(Context, Req, ReplySink<Resp>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), Status>> + Send + 'static,
    {
        self.add(method, move |router, service, method, in_flight| {
            let handler = Arc::new(handler);
            router.server_streaming(service, method, move |ctx, request: Req, sink| {
                let guard = in_flight.enter();
                let done = handler(ctx, request, sink);
                async move {
                    let _guard = guard;
                    done.await
                }
            });
        })
    }

    /// Adds a client-streaming method: requests in, one reply out.
    pub fn client_streaming<Req, Resp, F, Fut>(self, method: &str, handler: F) -> Self
    where
        Req: Message,
        Resp: Message,
        F: Fn(Context, Streaming<Req>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, Status>> + Send + 'static,
    {
        self.add(method, move |router, service, method, in_flight| {
            let handler = Arc::new(handler);
            router.client_streaming(service, method, move |ctx, requests: Streaming<Req>| {
                let guard = in_flight.enter();
                let reply = handler(ctx, requests);
                async move {
                    let _guard = guard;
                    reply.await
                }
            });
        })
    }

    /// Adds a bidirectional method: requests in and replies out, interleaved.
    pub fn bidi_streaming<Req, Resp, F, Fut>(self, method: &str, handler: F) -> Self
    where
        Req: Message,
        Resp: Message,
        F: Fn(Context, Streaming<Req>, ReplySink<Resp>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), Status>> + Send + 'static,
    {
        self.add(method, move |router, service, method, in_flight| {
            let handler = Arc::new(handler);
            router.bidi_streaming(
                service,
                method,
                move |ctx, requests: Streaming<Req>, sink| {
                    let guard = in_flight.enter();
                    let done = handler(ctx, requests, sink);
                    async move {
                        let _guard = guard;
                        done.await
                    }
                },
            );
        })
    }

    fn add(
        mut self,
        method: &str,
        register: impl FnOnce(&Router, &str, &str, Arc<InFlight>) + Send + 'static,
    ) -> Self {
        let method_name = method.to_string();
        self.description.methods.push(method_name.clone());
        self.registrations
            .push(Box::new(move |router, service, in_flight| {
                register(router, service, &method_name, in_flight.clone())
            }));
        self
    }

    /// The description gossip advertises.
    pub(crate) fn describe(&self) -> Service {
        let mut description = self.description.clone();
        if !self.idempotent.is_empty() {
            description.metadata.insert(
                IDEMPOTENT_METADATA_KEY.to_string(),
                self.idempotent.join(","),
            );
        }
        description
    }

    pub(crate) fn register(self, router: &Router, in_flight: &Arc<InFlight>) {
        let name = self.description.name.clone();
        for registration in self.registrations {
            registration(router, &name, in_flight);
        }
    }

    /// The metadata as it will be advertised, idempotent methods included.
    pub fn advertised_metadata(&self) -> BTreeMap<String, String> {
        self.describe().metadata
    }
}

/// Whether `method` of the advertised `service` is marked idempotent.
pub(crate) fn is_idempotent(service: &Service, method: &str) -> bool {
    service
        .metadata
        .get(IDEMPOTENT_METADATA_KEY)
        .is_some_and(|list| list.split(',').any(|name| name == method))
}
