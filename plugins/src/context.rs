//! Per-request data that plugins share: the matched route, the client, the consumer that an
//! auth plugin identified, timings, and a typed slot per plugin for state carried across phases.

use smallvec::SmallVec;
use std::any::{Any, TypeId};
use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

/// An API consumer, as declared under `consumers` in the config.
///
/// Auth plugins index consumers by their credentials when they are built, and put the one
/// that a request proved to be into [`RequestContext::consumer`].
#[derive(Debug, Clone, PartialEq)]
pub struct Consumer {
    /// The consumer's id (`consumers[].id`).
    pub id: String,
    /// Groups the consumer belongs to (`consumers[].groups`), for `acl`.
    pub groups: Vec<String>,
    /// Free-form labels (`consumers[].labels`).
    pub labels: BTreeMap<String, String>,
    /// Credentials per auth plugin name (`consumers[].credentials`), each in that plugin's own
    /// shape, e.g. `key-auth: { key: ... }`.
    pub credentials: BTreeMap<String, serde_json::Value>,
}

impl Consumer {
    /// The credential this consumer holds for the auth plugin `plugin`, if any.
    pub fn credential(&self, plugin: &str) -> Option<&serde_json::Value> {
        self.credentials.get(plugin)
    }
}

/// Everything the engine and the plugins know about one request.
///
/// Created by the engine when the request arrives; passed to every hook of every plugin in
/// the route's chain, and dropped after `logging`.
#[derive(Debug)]
pub struct RequestContext {
    /// The matched route's id; `None` before routing or when no route matched.
    pub route_id: Option<Arc<str>>,
    /// The id of the service the matched route belongs to, if any.
    pub service_id: Option<Arc<str>>,
    /// The TCP peer of the downstream connection.
    pub client_addr: Option<SocketAddr>,
    /// The client's IP. The TCP peer's address unless a plugin (such as `ip-restriction` with
    /// `trusted_proxies`) established the real client behind a trusted proxy.
    pub client_ip: Option<IpAddr>,
    /// Whether the request arrived over TLS.
    pub tls: bool,
    /// The request path after normalisation (percent-decoding of unreserved characters,
    /// dot-segment removal, duplicate slashes merged): the path that routing matched.
    pub path: String,
    /// Values of the route's named path parameters (`/users/{id}`), in pattern order.
    pub path_params: Vec<(Arc<str>, String)>,
    /// The consumer an auth plugin identified.
    pub consumer: Option<Arc<Consumer>>,
    /// The request id (set by `request-id`), for logs and the upstream.
    pub request_id: Option<String>,
    /// When the request arrived.
    pub started: Instant,
    /// The id of the upstream the request goes to: the route's (or its service's), then
    /// the one actually used once a node was picked. `None` for routes without upstream.
    pub upstream_id: Option<Arc<str>>,
    /// The upstream id a plugin chose for this request instead of the route's own
    /// (traffic splitting, header-based routing). Set it in `request_filter` or
    /// `upstream_peer`; the id is checked against the config when the plugin is built.
    pub upstream_override: Option<Arc<str>>,
    /// The address of the upstream node the request was sent to (the last one, after
    /// retries).
    pub upstream_addr: Option<SocketAddr>,
    /// When the request was handed to the upstream (headers written).
    pub upstream_started: Option<Instant>,
    /// Time from handing the request to the upstream to its response headers.
    pub upstream_response_time: Option<std::time::Duration>,
    /// Request body bytes read from the client (set before `logging`).
    pub request_body_bytes: u64,
    /// Response body bytes sent to the client (set before `logging`).
    pub response_body_bytes: u64,
    /// Cache outcome for this request (`HIT`, `MISS`, …), when a cache plugin ran.
    pub cache_status: Option<&'static str>,
    /// The path to send upstream, when a plugin rewrote it (`proxy-rewrite`); includes the
    /// query string if one is to be sent.
    pub upstream_path: Option<String>,
    state: StateSlots,
}

impl RequestContext {
    /// A context for a request that has just arrived.
    pub fn new() -> Self {
        RequestContext {
            route_id: None,
            service_id: None,
            client_addr: None,
            client_ip: None,
            tls: false,
            path: String::new(),
            path_params: Vec::new(),
            consumer: None,
            request_id: None,
            started: Instant::now(),
            upstream_id: None,
            upstream_override: None,
            upstream_path: None,
            upstream_addr: None,
            upstream_started: None,
            upstream_response_time: None,
            request_body_bytes: 0,
            response_body_bytes: 0,
            cache_status: None,
            state: StateSlots::default(),
        }
    }

    /// The value of the named path parameter `name`, if the route's pattern has one.
    pub fn path_param(&self, name: &str) -> Option<&str> {
        self.path_params
            .iter()
            .find(|(n, _)| &**n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Stores a plugin's per-request state. One value per type: use a type private to the
    /// plugin so that two plugins never collide.
    pub fn set_state<T: Clone + Send + Sync + 'static>(&mut self, value: T) {
        self.state.insert(value);
    }

    /// The state of type `T` stored earlier in this request, if any.
    pub fn state<T: Clone + Send + Sync + 'static>(&self) -> Option<&T> {
        self.state.get::<T>()
    }

    /// Mutable access to the state of type `T`, if any.
    pub fn state_mut<T: Clone + Send + Sync + 'static>(&mut self) -> Option<&mut T> {
        self.state.get_mut::<T>()
    }

    /// Removes and returns the state of type `T`.
    pub fn take_state<T: Clone + Send + Sync + 'static>(&mut self) -> Option<T> {
        self.state.remove::<T>()
    }
}

/// Plugins' per-request state, one value per type. A request carries a few values at most,
/// so they sit in a short inline list found by type id: no map to allocate and hash into.
#[derive(Default)]
struct StateSlots(SmallVec<[(TypeId, Box<dyn Any + Send + Sync>); 4]>);

impl StateSlots {
    fn position<T: 'static>(&self) -> Option<usize> {
        let id = TypeId::of::<T>();
        self.0.iter().position(|(t, _)| *t == id)
    }

    fn insert<T: Send + Sync + 'static>(&mut self, value: T) {
        match self.position::<T>() {
            Some(i) => self.0[i].1 = Box::new(value),
            None => self.0.push((TypeId::of::<T>(), Box::new(value))),
        }
    }

    fn get<T: 'static>(&self) -> Option<&T> {
        self.0[self.position::<T>()?].1.downcast_ref()
    }

    fn get_mut<T: 'static>(&mut self) -> Option<&mut T> {
        let i = self.position::<T>()?;
        self.0[i].1.downcast_mut()
    }

    fn remove<T: 'static>(&mut self) -> Option<T> {
        let i = self.position::<T>()?;
        self.0.remove(i).1.downcast().ok().map(|value| *value)
    }
}

impl fmt::Debug for StateSlots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateSlots")
            .field("values", &self.0.len())
            .finish()
    }
}

impl Default for RequestContext {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, PartialEq)]
    struct Quota(u32);
    #[derive(Clone, Debug, PartialEq)]
    struct Label(&'static str);

    #[test]
    fn state_is_kept_per_type() {
        let mut ctx = RequestContext::new();
        assert_eq!(ctx.state::<Quota>(), None);
        ctx.set_state(Quota(3));
        ctx.set_state(Label("a"));
        ctx.set_state(Quota(4));
        assert_eq!(ctx.state::<Quota>(), Some(&Quota(4)));
        assert_eq!(ctx.state::<Label>(), Some(&Label("a")));
        if let Some(q) = ctx.state_mut::<Quota>() {
            q.0 += 1;
        }
        assert_eq!(ctx.take_state::<Quota>(), Some(Quota(5)));
        assert_eq!(ctx.state::<Quota>(), None);
        assert_eq!(ctx.state::<Label>(), Some(&Label("a")));
        // More values than the inline slots hold.
        ctx.set_state(1u8);
        ctx.set_state(2u16);
        ctx.set_state(3u32);
        ctx.set_state(4u64);
        ctx.set_state(String::from("five"));
        assert_eq!(ctx.state::<u8>(), Some(&1));
        assert_eq!(ctx.state::<u64>(), Some(&4));
        assert_eq!(ctx.state::<String>().map(String::as_str), Some("five"));
        assert_eq!(ctx.state::<Label>(), Some(&Label("a")));
    }
}
