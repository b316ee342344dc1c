//! The typed catalog: who is in the cluster and what each member serves, built from the
//! text key/values that members gossip, and the events between two catalogs.
//!
//! Everything here is pure: states in, catalog out; two catalogs in, events out. The
//! membership task feeds it chitchat's live states.
//!
//! Each member owns these keys:
//!
//! | key | value |
//! |---|---|
//! | `id` | the member's node id, as the RPC layer prints it |
//! | `rpc` | comma-separated RPC addresses, IPv6 in brackets: `127.0.0.1:7001,[::1]:7001` |
//! | `status` | `alive`, `draining` or `leaving` |
//! | `load` | in-flight calls over capacity, a decimal such as `0.25` |
//! | `svc:<name>` | one per hosted service, JSON: `{"v":"1.2.0","t":[tags],"m":{metadata},"f":[methods]}` |

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub(crate) const KEY_ID: &str = "id";
pub(crate) const KEY_RPC: &str = "rpc";
pub(crate) const KEY_STATUS: &str = "status";
pub(crate) const KEY_LOAD: &str = "load";
pub(crate) const SERVICE_PREFIX: &str = "svc:";

/// The stage of a member's life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Serving; routing may pick it.
    Alive,
    /// Finishing the calls it has, taking no new ones; routing skips it.
    Draining,
    /// About to stop; it is dropped from every catalog as soon as this is seen.
    Leaving,
}

impl Status {
    /// Returns the text gossiped for this status.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Alive => "alive",
            Status::Draining => "draining",
            Status::Leaving => "leaving",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A status text that is not `alive`, `draining` or `leaving`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid status {0:?}: expected alive, draining or leaving")]
pub struct InvalidStatus(pub String);

impl FromStr for Status {
    type Err = InvalidStatus;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "alive" => Ok(Status::Alive),
            "draining" => Ok(Status::Draining),
            "leaving" => Ok(Status::Leaving),
            other => Err(InvalidStatus(other.to_string())),
        }
    }
}

/// A service a member hosts, as advertised in gossip.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    /// The service name callers use, such as `orders`.
    pub name: String,
    /// The service's version, matched against callers' version requirements.
    pub version: semver::Version,
    /// Free-form labels callers can select on, such as `eu-west` or `canary`.
    pub tags: Vec<String>,
    /// Free-form key/values for callers and tools.
    pub metadata: BTreeMap<String, String>,
    /// The names of the methods it serves.
    pub methods: Vec<String>,
}

impl Service {
    /// Creates a service with no tags, metadata or methods.
    pub fn new(name: impl Into<String>, version: semver::Version) -> Self {
        Self {
            name: name.into(),
            version,
            tags: Vec::new(),
            metadata: BTreeMap::new(),
            methods: Vec::new(),
        }
    }

    /// Adds a tag.
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// Sets a metadata entry.
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Adds a method name.
    pub fn method(mut self, method: impl Into<String>) -> Self {
        self.methods.push(method.into());
        self
    }

    pub(crate) fn key(&self) -> String {
        format!("{SERVICE_PREFIX}{}", self.name)
    }

    pub(crate) fn encode(&self) -> String {
        let wire = ServiceWire {
            version: self.version.to_string(),
            tags: self.tags.clone(),
            metadata: self.metadata.clone(),
            methods: self.methods.clone(),
        };
        // Serializing strings, vectors and maps of strings cannot fail.
        serde_json::to_string(&wire).unwrap_or_default()
    }

    pub(crate) fn decode(name: &str, text: &str) -> Result<Self, String> {
        let wire: ServiceWire = serde_json::from_str(text).map_err(|error| error.to_string())?;
        let version = semver::Version::parse(&wire.version)
            .map_err(|error| format!("version {:?}: {error}", wire.version))?;
        Ok(Self {
            name: name.to_string(),
            version,
            tags: wire.tags,
            metadata: wire.metadata,
            methods: wire.methods,
        })
    }
}

#[derive(Serialize, Deserialize)]
struct ServiceWire {
    #[serde(rename = "v")]
    version: String,
    #[serde(rename = "t", default, skip_serializing_if = "Vec::is_empty")]
    tags: Vec<String>,
    #[serde(rename = "m", default, skip_serializing_if = "BTreeMap::is_empty")]
    metadata: BTreeMap<String, String>,
    #[serde(rename = "f", default, skip_serializing_if = "Vec::is_empty")]
    methods: Vec<String>,
}

/// One member of the cluster, as recorded in the catalog.
#[derive(Clone, Debug, PartialEq)]
pub struct Member {
    /// The member's name, unique in the cluster; a restart keeps it.
    pub name: String,
    /// The member's node id as its RPC layer prints it; empty if it advertises none.
    pub node_id: String,
    /// Its life number: higher after each restart, so an old life is never taken for
    /// the new one.
    pub generation: u64,
    /// The address it gossips at.
    pub gossip_addr: SocketAddr,
    /// The addresses its RPC endpoint listens on.
    pub rpc_addrs: Vec<SocketAddr>,
    /// The stage of its life.
    pub status: Status,
    /// In-flight calls over capacity: 0 idle, 1 full, above 1 overloaded.
    pub load: f64,
    /// The services it hosts, by name.
    pub services: BTreeMap<String, Arc<Service>>,
}

/// A member that hosts a given service: what routing picks from.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// The member.
    pub member: Arc<Member>,
    /// The service as that member advertises it.
    pub service: Arc<Service>,
}

/// Raw gossip state of one member, as read from chitchat.
pub(crate) struct MemberState<'a> {
    pub(crate) name: &'a str,
    pub(crate) generation: u64,
    pub(crate) gossip_addr: SocketAddr,
    pub(crate) values: Vec<(&'a str, &'a str)>,
}

/// A snapshot of the cluster: live members that are not leaving, one per name.
#[derive(Clone, Debug, Default)]
pub struct Catalog {
    members: BTreeMap<String, Arc<Member>>,
    /// Names of live members whose status is `leaving`, left out of `members`.
    leaving: std::collections::BTreeSet<String>,
}

/// A change between two catalogs.
#[derive(Clone, Debug)]
pub enum CatalogEvent {
    /// A member appeared, or came back in a new generation.
    NodeUp(Arc<Member>),
    /// A member failed, left, or was replaced by its next generation; carries its last
    /// known state.
    NodeDown(Arc<Member>),
    /// A member started hosting a service.
    ServiceUp {
        /// The member.
        member: Arc<Member>,
        /// The service.
        service: Arc<Service>,
    },
    /// A member stopped hosting a service.
    ServiceDown {
        /// The member.
        member: Arc<Member>,
        /// The service as last advertised.
        service: Arc<Service>,
    },
    /// A member's status, load, addresses or a service's details changed.
    Changed(Arc<Member>),
}

impl Catalog {
    /// Returns all members, by name.
    pub fn members(&self) -> impl Iterator<Item = &Arc<Member>> {
        self.members.values()
    }

    /// Returns the member named `name`.
    pub fn member(&self, name: &str) -> Option<&Arc<Member>> {
        self.members.get(name)
    }

    /// Returns whether `name` is a live member that announced it is leaving. Such a member
    /// is left out of the catalog as soon as the announcement arrives.
    pub fn is_leaving(&self, name: &str) -> bool {
        self.leaving.contains(name)
    }

    /// Returns how many members there are.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Returns whether there are no members. A started membership always lists itself.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Returns the members that serve `service` with status `alive`, by member name.
    /// Draining members are left out because they take no new calls.
    pub fn endpoints(&self, service: &str) -> Vec<Endpoint> {
        self.members
            .values()
            .filter(|member| member.status == Status::Alive)
            .filter_map(|member| {
                let service = member.services.get(service)?;
                Some(Endpoint {
                    member: member.clone(),
                    service: service.clone(),
                })
            })
            .collect()
    }

    /// Every service name with the members that host it, whatever their status.
    pub fn services(&self) -> BTreeMap<String, Vec<Endpoint>> {
        let mut services: BTreeMap<String, Vec<Endpoint>> = BTreeMap::new();
        for member in self.members.values() {
            for service in member.services.values() {
                services
                    .entry(service.name.clone())
                    .or_default()
                    .push(Endpoint {
                        member: member.clone(),
                        service: service.clone(),
                    });
            }
        }
        services
    }

    /// Builds a catalog from live members' states.
    ///
    /// `generations` remembers the highest generation seen for each name across calls:
    /// a state of a lower generation is an old life and is ignored even if it is the
    /// only one left. A member whose state lacks `status` has not arrived whole yet and
    /// is left out, as is one whose status is `leaving`. `on_invalid` hears of each value
    /// that could not be read; the rest of that member is kept.
    pub(crate) fn build<'a>(
        states: impl IntoIterator<Item = MemberState<'a>>,
        generations: &mut HashMap<String, u64>,
        on_invalid: &mut dyn FnMut(&str, &str, String),
    ) -> Catalog {
        let states: Vec<MemberState<'a>> = states.into_iter().collect();
        for state in &states {
            let highest = generations.entry(state.name.to_string()).or_insert(0);
            *highest = (*highest).max(state.generation);
        }

        let mut members = BTreeMap::new();
        let mut leaving = std::collections::BTreeSet::new();
        for state in states {
            if generations.get(state.name) != Some(&state.generation) {
                continue;
            }
            let Some(member) = decode_member(&state, on_invalid) else {
                continue;
            };
            if member.status == Status::Leaving {
                leaving.insert(member.name);
            } else {
                members.insert(member.name.clone(), Arc::new(member));
            }
        }
        Catalog { members, leaving }
    }

    /// The events that turn `self` into `next`, in order: for each member by name,
    /// departures before arrivals, and a member's services go down before it and come
    /// up after it.
    pub fn diff(&self, next: &Catalog) -> Vec<CatalogEvent> {
        let mut events = Vec::new();
        for (name, old) in &self.members {
            match next.members.get(name) {
                None => node_down(old, &mut events),
                Some(new) if new.generation != old.generation => {
                    node_down(old, &mut events);
                    node_up(new, &mut events);
                }
                Some(new) => member_changes(old, new, &mut events),
            }
        }
        for (name, new) in &next.members {
            if !self.members.contains_key(name) {
                node_up(new, &mut events);
            }
        }
        events
    }
}

fn node_up(member: &Arc<Member>, events: &mut Vec<CatalogEvent>) {
    events.push(CatalogEvent::NodeUp(member.clone()));
    for service in member.services.values() {
        events.push(CatalogEvent::ServiceUp {
            member: member.clone(),
            service: service.clone(),
        });
    }
}

fn node_down(member: &Arc<Member>, events: &mut Vec<CatalogEvent>) {
    for service in member.services.values() {
        events.push(CatalogEvent::ServiceDown {
            member: member.clone(),
            service: service.clone(),
        });
    }
    events.push(CatalogEvent::NodeDown(member.clone()));
}

fn member_changes(old: &Arc<Member>, new: &Arc<Member>, events: &mut Vec<CatalogEvent>) {
    let mut changed = old.node_id != new.node_id
        || old.rpc_addrs != new.rpc_addrs
        || old.status != new.status
        || old.load != new.load
        || old.gossip_addr != new.gossip_addr;
    for (name, service) in &old.services {
        match new.services.get(name) {
            None => events.push(CatalogEvent::ServiceDown {
                member: new.clone(),
                service: service.clone(),
            }),
            Some(current) if current != service => changed = true,
            Some(_) => {}
        }
    }
    for (name, service) in &new.services {
        if !old.services.contains_key(name) {
            events.push(CatalogEvent::ServiceUp {
                member: new.clone(),
                service: service.clone(),
            });
        }
    }
    if changed {
        events.push(CatalogEvent::Changed(new.clone()));
    }
}

fn decode_member(
    state: &MemberState<'_>,
    on_invalid: &mut dyn FnMut(&str, &str, String),
) -> Option<Member> {
    let mut member = Member {
        name: state.name.to_string(),
        node_id: String::new(),
        generation: state.generation,
        gossip_addr: state.gossip_addr,
        rpc_addrs: Vec::new(),
        status: Status::Alive,
        load: 0.0,
        services: BTreeMap::new(),
    };
    let mut has_status = false;
    for (key, value) in &state.values {
        let result = match *key {
            KEY_ID => {
                member.node_id = value.to_string();
                Ok(())
            }
            KEY_RPC => parse_addrs(value).map(|addrs| member.rpc_addrs = addrs),
            KEY_STATUS => value
                .parse::<Status>()
                .map(|status| {
                    member.status = status;
                    has_status = true;
                })
                .map_err(|error| error.to_string()),
            KEY_LOAD => parse_load(value).map(|load| member.load = load),
            other => match other.strip_prefix(SERVICE_PREFIX) {
                Some(name) => Service::decode(name, value).map(|service| {
                    member.services.insert(name.to_string(), Arc::new(service));
                }),
                // Keys this version does not know are left for newer versions.
                None => Ok(()),
            },
        };
        if let Err(error) = result {
            on_invalid(state.name, key, error);
        }
    }
    has_status.then_some(member)
}

/// Formats RPC addresses as gossiped: comma-separated, IPv6 in brackets.
pub(crate) fn format_addrs(addrs: &[SocketAddr]) -> String {
    addrs
        .iter()
        .map(SocketAddr::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn parse_addrs(text: &str) -> Result<Vec<SocketAddr>, String> {
    if text.is_empty() {
        return Ok(Vec::new());
    }
    text.split(',')
        .map(|part| {
            part.parse::<SocketAddr>()
                .map_err(|_| format!("invalid address {part:?}: expected IP:PORT or [IPv6]:PORT"))
        })
        .collect()
}

fn parse_load(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(load) if load.is_finite() && load >= 0.0 => Ok(load),
        _ => Err(format!(
            "invalid load {text:?}: expected a non-negative decimal"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gossip(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn state<'a>(name: &'a str, generation: u64, values: &[(&'a str, &'a str)]) -> MemberState<'a> {
        MemberState {
            name,
            generation,
            gossip_addr: gossip(7000),
            values: values.to_vec(),
        }
    }

    fn build(states: Vec<MemberState<'_>>, generations: &mut HashMap<String, u64>) -> Catalog {
        Catalog::build(states, generations, &mut |name, key, error| {
            panic!("unexpected invalid value {name} {key}: {error}")
        })
    }

    const ORDERS: &str = r#"{"v":"1.2.0","t":["eu"],"f":["get","put"]}"#;

    #[test]
    fn decodes_every_key() {
        let catalog = build(
            vec![state(
                "a",
                1,
                &[
                    ("id", "abc"),
                    ("rpc", "127.0.0.1:9000,[::1]:9000"),
                    ("status", "alive"),
                    ("load", "0.5"),
                    ("svc:orders", ORDERS),
                ],
            )],
            &mut HashMap::new(),
        );
        let member = catalog.member("a").unwrap();
        assert_eq!(member.node_id, "abc");
        assert_eq!(
            member.rpc_addrs,
            vec![
                "127.0.0.1:9000".parse().unwrap(),
                "[::1]:9000".parse().unwrap()
            ]
        );
        assert_eq!(member.load, 0.5);
        let orders = &member.services["orders"];
        assert_eq!(orders.version, semver::Version::new(1, 2, 0));
        assert_eq!(orders.tags, vec!["eu"]);
        assert_eq!(orders.methods, vec!["get", "put"]);
    }

    #[test]
    fn service_encoding_roundtrips() {
        let service = Service::new("orders", semver::Version::new(2, 0, 1))
            .tag("canary")
            .metadata("owner", "team-a")
            .method("reserve");
        let decoded = Service::decode("orders", &service.encode()).unwrap();
        assert_eq!(decoded, service);
    }

    #[test]
    fn endpoints_skip_draining_and_leaving() {
        let catalog = build(
            vec![
                state("a", 1, &[("status", "alive"), ("svc:orders", ORDERS)]),
                state("b", 1, &[("status", "draining"), ("svc:orders", ORDERS)]),
                state("c", 1, &[("status", "leaving"), ("svc:orders", ORDERS)]),
                state("d", 1, &[("status", "alive")]),
            ],
            &mut HashMap::new(),
        );
        let names: Vec<String> = catalog
            .endpoints("orders")
            .iter()
            .map(|endpoint| endpoint.member.name.clone())
            .collect();
        assert_eq!(names, vec!["a"]);
        assert!(catalog.member("c").is_none());
        assert!(catalog.is_leaving("c"));
        assert!(!catalog.is_leaving("a"));
        assert_eq!(catalog.len(), 3);
    }

    #[test]
    fn member_without_status_is_not_listed_yet() {
        let catalog = build(vec![state("a", 1, &[("id", "x")])], &mut HashMap::new());
        assert!(catalog.is_empty());
    }

    #[test]
    fn newest_generation_wins_and_old_never_returns() {
        let mut generations = HashMap::new();
        let both = build(
            vec![
                state("a", 5, &[("status", "alive"), ("id", "old")]),
                state("a", 9, &[("status", "alive"), ("id", "new")]),
            ],
            &mut generations,
        );
        assert_eq!(both.len(), 1);
        assert_eq!(both.member("a").unwrap().node_id, "new");

        let old_only = build(
            vec![state("a", 5, &[("status", "alive"), ("id", "old")])],
            &mut generations,
        );
        assert!(old_only.member("a").is_none());
    }

    #[test]
    fn invalid_values_are_reported_and_the_rest_kept() {
        let mut invalid = Vec::new();
        let catalog = Catalog::build(
            vec![state(
                "a",
                1,
                &[
                    ("status", "alive"),
                    ("rpc", "not-an-address"),
                    ("load", "-3"),
                    ("svc:bad", "{"),
                    ("svc:orders", ORDERS),
                ],
            )],
            &mut HashMap::new(),
            &mut |_, key, error| invalid.push((key.to_string(), error)),
        );
        let keys: Vec<&str> = invalid.iter().map(|(key, _)| key.as_str()).collect();
        assert_eq!(keys, vec!["rpc", "load", "svc:bad"]);
        assert!(invalid[0].1.contains("not-an-address"));
        let member = catalog.member("a").unwrap();
        assert!(member.services.contains_key("orders"));
        assert!(member.rpc_addrs.is_empty());
    }

    fn kinds(events: &[CatalogEvent]) -> Vec<String> {
        events
            .iter()
            .map(|event| match event {
                CatalogEvent::NodeUp(member) => format!("up {}", member.name),
                CatalogEvent::NodeDown(member) => format!("down {}", member.name),
                CatalogEvent::ServiceUp { member, service } => {
                    format!("service up {} {}", member.name, service.name)
                }
                CatalogEvent::ServiceDown { member, service } => {
                    format!("service down {} {}", member.name, service.name)
                }
                CatalogEvent::Changed(member) => format!("changed {}", member.name),
            })
            .collect()
    }

    #[test]
    fn diff_reports_arrivals_departures_and_changes() {
        let mut generations = HashMap::new();
        let before = build(
            vec![
                state("a", 1, &[("status", "alive"), ("svc:orders", ORDERS)]),
                state("b", 1, &[("status", "alive")]),
            ],
            &mut generations,
        );
        let after = build(
            vec![
                state("a", 1, &[("status", "draining"), ("svc:stock", ORDERS)]),
                state("c", 1, &[("status", "alive"), ("svc:orders", ORDERS)]),
            ],
            &mut generations,
        );
        assert_eq!(
            kinds(&before.diff(&after)),
            vec![
                "service down a orders",
                "service up a stock",
                "changed a",
                "down b",
                "up c",
                "service up c orders",
            ]
        );
        assert!(after.diff(&after).is_empty());
    }

    #[test]
    fn restart_is_down_then_up() {
        let mut generations = HashMap::new();
        let before = build(
            vec![state("a", 1, &[("status", "alive")])],
            &mut generations,
        );
        let after = build(
            vec![
                state("a", 1, &[("status", "alive")]),
                state("a", 2, &[("status", "alive")]),
            ],
            &mut generations,
        );
        assert_eq!(kinds(&before.diff(&after)), vec!["down a", "up a"]);
    }

    #[test]
    fn leaving_member_goes_down_at_once() {
        let mut generations = HashMap::new();
        let before = build(
            vec![state("a", 1, &[("status", "alive")])],
            &mut generations,
        );
        let after = build(
            vec![state("a", 1, &[("status", "leaving")])],
            &mut generations,
        );
        assert_eq!(kinds(&before.diff(&after)), vec!["down a"]);
    }

    #[test]
    fn status_parses_and_rejects() {
        assert_eq!("draining".parse::<Status>(), Ok(Status::Draining));
        assert_eq!(
            "asleep".parse::<Status>().unwrap_err().to_string(),
            "invalid status \"asleep\": expected alive, draining or leaving"
        );
    }
}
