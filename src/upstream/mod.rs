//! Upstream pools: nodes, balancing, health, and how to connect to a node.
//!
//! ```text
//! UpstreamPool ── Selector (pingora-load-balancing LoadBalancer<algorithm>)
//!      │              └── Backends (NodeDiscovery) ── Backend.ext: Arc<NodeState>
//!      ├── PeerTemplate (timeouts, TLS, HTTP/2) → HttpPeer per request
//!      └── health settings (active: run by HealthService; passive: NodeState::record)
//! ```

pub mod discovery;
pub mod health;
pub mod node;

use crate::config::model::{self, Balance, PassHost, Scheme};
use crate::config::ConfigError;
use discovery::{NodeDiscovery, NodeSpec};
use futures_util::FutureExt;
use node::NodeState;
use pingora_core::upstreams::peer::{HttpPeer, HttpUpstreamRequestPolicy};
use pingora_load_balancing::selection::{Consistent, Random, RoundRobin};
use pingora_load_balancing::{Backend, Backends, LoadBalancer};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What consistent hashing hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashOn {
    /// The client's IP.
    ClientIp,
    /// A request header's value.
    Header(http::HeaderName),
    /// A cookie's value.
    Cookie(String),
    /// The request path.
    Path,
}

impl HashOn {
    fn parse(s: &str) -> Result<HashOn, String> {
        let expected = "expected `client_ip`, `header:NAME`, `cookie:NAME` or `path`";
        match s {
            "client_ip" => Ok(HashOn::ClientIp),
            "path" => Ok(HashOn::Path),
            _ => {
                if let Some(h) = s.strip_prefix("header:") {
                    http::HeaderName::from_bytes(h.as_bytes())
                        .map(HashOn::Header)
                        .map_err(|_| format!("`{h}` is not a valid header name"))
                } else if let Some(c) = s.strip_prefix("cookie:").filter(|c| !c.is_empty()) {
                    Ok(HashOn::Cookie(c.to_string()))
                } else {
                    Err(format!("`{s}` is not a hash key; {expected}"))
                }
            }
        }
    }
}

enum Selector {
    RoundRobin(LoadBalancer<RoundRobin>),
    Random(LoadBalancer<Random>),
    Hash(LoadBalancer<Consistent>),
    /// Least-connections keeps a round-robin balancer for membership and health; the choice
    /// itself is made over the in-flight counts.
    LeastConn(LoadBalancer<RoundRobin>),
}

macro_rules! with_lb {
    ($sel:expr, $lb:ident => $body:expr) => {
        match $sel {
            Selector::RoundRobin($lb) => $body,
            Selector::Random($lb) => $body,
            Selector::Hash($lb) => $body,
            Selector::LeastConn($lb) => $body,
        }
    };
}

/// A node picked for one request.
pub struct Picked {
    /// The backend (address and weight).
    pub backend: Backend,
    /// The node's shared state.
    pub node: Arc<NodeState>,
}

/// One upstream: its nodes, how to pick one, and how to talk to it.
pub struct UpstreamPool {
    /// The upstream's id.
    pub id: Arc<str>,
    /// The config it was built from (a reload keeps the pool when this is unchanged).
    pub spec: model::Upstream,
    selector: Selector,
    /// The consistent-hash key.
    pub hash_on: HashOn,
    needs_dns: bool,
    peer_template: HttpPeer,
    /// Whether connections use TLS.
    pub tls: bool,
    sni: Option<String>,
    passive: Option<(u32, Duration)>,
    active_interval: Option<Duration>,
    created: Instant,
    next_check_ms: AtomicU64,
    next_dns_ms: AtomicU64,
    check_running: Arc<AtomicBool>,
}

fn load_ca(path: &Path) -> Result<Box<[openssl::x509::X509]>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certs = openssl::x509::X509::stack_from_pem(&pem)
        .map_err(|e| format!("{} is not a PEM certificate file: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no certificate", path.display()));
    }
    Ok(certs.into_boxed_slice())
}

impl UpstreamPool {
    /// Builds a pool from config; `at` is its key path (`upstreams[2]`) for errors. Nodes
    /// given as IPs are ready at once; host names are resolved by [`UpstreamPool::discover`].
    pub fn build(spec: &model::Upstream, at: &str, base_dir: &Path) -> Result<Self, ConfigError> {
        if spec.nodes.is_empty() {
            return Err(ConfigError::at(
                format!("{at}.nodes"),
                "an upstream needs at least one node",
            ));
        }
        let mut nodes = Vec::with_capacity(spec.nodes.len());
        for (i, n) in spec.nodes.iter().enumerate() {
            if n.weight == 0 {
                return Err(ConfigError::at(
                    format!("{at}.nodes[{i}].weight"),
                    "weight must be at least 1 (remove the node to send it no traffic)",
                ));
            }
            nodes.push(
                NodeSpec::parse(&n.address, n.weight)
                    .map_err(|m| ConfigError::at(format!("{at}.nodes[{i}].address"), m))?,
            );
        }
        let hash_on = match &spec.hash_on {
            Some(h) => HashOn::parse(h).map_err(|m| ConfigError::at(format!("{at}.hash_on"), m))?,
            None => HashOn::ClientIp,
        };
        if spec.hash_on.is_some() && spec.balance != Balance::ConsistentHash {
            return Err(ConfigError::at(
                format!("{at}.hash_on"),
                "only used with `balance: consistent_hash`",
            ));
        }
        match (spec.pass_host, &spec.upstream_host) {
            (PassHost::Rewrite, None) => {
                return Err(ConfigError::at(
                    format!("{at}.upstream_host"),
                    "required with `pass_host: rewrite`",
                ))
            }
            (PassHost::Pass | PassHost::Node, Some(_)) => {
                return Err(ConfigError::at(
                    format!("{at}.upstream_host"),
                    "only used with `pass_host: rewrite`",
                ))
            }
            _ => {}
        }
        let tls = spec.scheme == Scheme::Https;
        if spec.tls.is_some() && !tls {
            return Err(ConfigError::at(
                format!("{at}.tls"),
                "only used with `scheme: https`",
            ));
        }
        if spec.max_h2_streams == 0 {
            return Err(ConfigError::at(
                format!("{at}.max_h2_streams"),
                "must be at least 1",
            ));
        }
        if spec.dns_refresh.get() < Duration::from_secs(1) {
            return Err(ConfigError::at(
                format!("{at}.dns_refresh"),
                "must be at least 1s",
            ));
        }
        if let Some(p) = spec.health_check.as_ref().and_then(|h| h.passive.as_ref()) {
            if p.failures == 0 {
                return Err(ConfigError::at(
                    format!("{at}.health_check.passive.failures"),
                    "must be at least 1",
                ));
            }
        }
        let ca = match spec.tls.as_ref().and_then(|t| t.ca.as_ref()) {
            Some(ca) => {
                let path = if Path::new(ca).is_absolute() {
                    Path::new(ca).to_path_buf()
                } else {
                    base_dir.join(ca)
                };
                Some(Arc::new(
                    load_ca(&path).map_err(|m| ConfigError::at(format!("{at}.tls.ca"), m))?,
                ))
            }
            None => None,
        };
        // The name probes and TLS handshakes use when nothing more specific is configured.
        let default_host = spec
            .upstream_host
            .clone()
            .or_else(|| spec.tls.as_ref().and_then(|t| t.sni.clone()))
            .unwrap_or_else(|| nodes[0].host.clone());
        let discovery = NodeDiscovery::new(nodes);
        let needs_dns = discovery.needs_dns();
        let backends = Backends::new(Box::new(discovery));
        let mut selector = match spec.balance {
            Balance::RoundRobin => Selector::RoundRobin(LoadBalancer::from_backends(backends)),
            Balance::Random => Selector::Random(LoadBalancer::from_backends(backends)),
            Balance::ConsistentHash => Selector::Hash(LoadBalancer::from_backends(backends)),
            Balance::LeastConn => Selector::LeastConn(LoadBalancer::from_backends(backends)),
        };
        let mut active_interval = None;
        if let Some(active) = spec.health_check.as_ref().and_then(|h| h.active.as_ref()) {
            let hc = health::build_check(
                active,
                spec,
                &default_host,
                ca.clone(),
                &format!("{at}.health_check.active"),
            )?;
            with_lb!(&mut selector, lb => lb.set_health_check(hc));
            active_interval = Some(active.interval.get());
        }
        let passive = spec
            .health_check
            .as_ref()
            .and_then(|h| h.passive.as_ref())
            .map(|p| (p.failures, p.eject_for.get()));

        let mut peer = HttpPeer::new(SocketAddr::from(([127, 0, 0, 1], 1)), tls, String::new());
        let o = &mut peer.options;
        o.connection_timeout = Some(spec.timeouts.connect.get());
        o.total_connection_timeout = Some(spec.timeouts.connect.get() * 2);
        o.read_timeout = Some(spec.timeouts.read.get());
        o.write_timeout = Some(spec.timeouts.write.get());
        o.idle_timeout = Some(spec.timeouts.idle.get());
        // Pingora's default, named because the gateway relies on it: hop-by-hop headers are
        // removed before the proxy's upstream_request_filter (see proxy::forward).
        o.http_upstream_request_policy = HttpUpstreamRequestPolicy::standard();
        if spec.http2 {
            if tls {
                o.set_http_version(2, 1);
            } else {
                o.set_http_version(2, 2);
            }
            o.max_h2_streams = spec.max_h2_streams;
        }
        // Connections are pooled per upstream: one configured with other TLS settings (CA,
        // verification) must never be reused here just because the address matches.
        peer.group_key = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            spec.id.hash(&mut h);
            format!("{:?}", spec.tls).hash(&mut h);
            h.finish()
        };
        let mut sni = None;
        if let Some(t) = &spec.tls {
            o.verify_cert = t.verify;
            o.verify_hostname = t.verify;
            o.ca = ca;
            sni = t.sni.clone();
        }
        let pool = UpstreamPool {
            id: Arc::from(spec.id.as_str()),
            spec: spec.clone(),
            selector,
            hash_on,
            needs_dns,
            peer_template: peer,
            tls,
            sni,
            passive,
            active_interval,
            created: Instant::now(),
            next_check_ms: AtomicU64::new(0),
            next_dns_ms: AtomicU64::new(0),
            check_running: Arc::new(AtomicBool::new(false)),
        };
        if !needs_dns {
            // Static IPs: discovery completes without awaiting anything.
            let _ = with_lb!(&pool.selector, lb => lb.update().now_or_never());
        }
        Ok(pool)
    }

    /// Resolves node names and refreshes membership.
    pub async fn discover(&self) {
        if let Err(e) = with_lb!(&self.selector, lb => lb.update().await) {
            log::warn!("upstream {}: discovery failed: {e}", self.id);
        }
    }

    /// Whether node addresses include host names.
    pub fn needs_dns(&self) -> bool {
        self.needs_dns
    }

    /// Every known backend.
    pub fn backends(&self) -> Arc<std::collections::BTreeSet<Backend>> {
        with_lb!(&self.selector, lb => lb.backends().get_backend())
    }

    /// Whether active health checks currently hold `backend` healthy.
    pub fn is_healthy(&self, backend: &Backend) -> bool {
        with_lb!(&self.selector, lb => lb.backends().ready(backend))
    }

    /// Picks a healthy node, skipping `exclude` (nodes that already failed this request).
    /// `key` is the consistent-hash key (ignored by the other algorithms).
    pub fn select(&self, key: &[u8], exclude: &[SocketAddr]) -> Option<Picked> {
        let usable = |b: &Backend, healthy: bool| {
            healthy
                && !b.as_inet().is_some_and(|a| exclude.contains(a))
                && b.ext
                    .get::<Arc<NodeState>>()
                    .is_some_and(|n| !n.is_ejected())
        };
        let all = self.backends();
        let backend = match &self.selector {
            // One backend leaves nothing to choose: take it (if usable) without the
            // selector's walk, which builds a set of the backends it has seen on every call.
            _ if all.len() == 1 => all
                .first()
                .filter(|b| usable(b, self.is_healthy(b)))
                .cloned(),
            Selector::RoundRobin(lb) => lb.select_with(key, 256, usable),
            Selector::Random(lb) => lb.select_with(key, 256, usable),
            Selector::Hash(lb) => lb.select_with(key, 256, usable),
            Selector::LeastConn(_) => all
                .iter()
                .filter(|b| usable(b, self.is_healthy(b)))
                .min_by(|a, b| {
                    // Compare inflight/weight without division: a.in * b.w vs b.in * a.w.
                    let load =
                        |x: &Backend| x.ext.get::<Arc<NodeState>>().map_or(0, |n| n.inflight());
                    (load(a) * b.weight).cmp(&(load(b) * a.weight))
                })
                .cloned(),
        }?;
        let node = backend.ext.get::<Arc<NodeState>>()?.clone();
        Some(Picked { backend, node })
    }

    /// The peer to connect to for `picked`, sending `host` as `Host` (and SNI unless
    /// configured otherwise).
    pub fn peer(&self, picked: &Picked, host: &str) -> Box<HttpPeer> {
        let mut peer = self.peer_template.clone();
        peer._address = picked.backend.addr.clone();
        if self.tls {
            peer.sni = match &self.sni {
                Some(s) => s.clone(),
                None => host_without_port(host).to_string(),
            };
        }
        Box::new(peer)
    }

    /// The `Host` header to send upstream, given the client's.
    pub fn host_header<'a>(&'a self, client_host: &'a str, node: &'a NodeState) -> &'a str {
        match self.spec.pass_host {
            PassHost::Pass => client_host,
            PassHost::Node => &node.address,
            PassHost::Rewrite => self.spec.upstream_host.as_deref().unwrap_or(client_host),
        }
    }

    /// Feeds a request outcome to passive health checking.
    pub fn record_outcome(&self, node: &NodeState, ok: bool) {
        if let Some((threshold, eject_for)) = self.passive {
            node.record(ok, threshold, eject_for);
        }
    }

    /// Runs active health checks and DNS refreshes that are due; called periodically by the
    /// health service. Never runs two checks of one pool at once.
    pub fn tick(self: &Arc<Self>) {
        let now = u64::try_from(self.created.elapsed().as_millis()).unwrap_or(u64::MAX);
        if let Some(interval) = self.active_interval {
            let due = self.next_check_ms.load(Relaxed);
            if now >= due && !self.check_running.swap(true, Relaxed) {
                let ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
                self.next_check_ms.store(now.saturating_add(ms), Relaxed);
                let pool = self.clone();
                tokio::spawn(async move {
                    with_lb!(&pool.selector, lb => lb.backends().run_health_check(true).await);
                    pool.check_running.store(false, Relaxed);
                });
            }
        }
        if self.needs_dns {
            let due = self.next_dns_ms.load(Relaxed);
            if now >= due {
                let ms = u64::try_from(self.spec.dns_refresh.get().as_millis()).unwrap_or(30_000);
                self.next_dns_ms.store(now.saturating_add(ms), Relaxed);
                let pool = self.clone();
                tokio::spawn(async move { pool.discover().await });
            }
        }
    }
}

fn host_without_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |i| &host[1..i]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_addresses() {
        assert!(NodeSpec::parse("127.0.0.1:80", 1).unwrap().socket.is_some());
        assert!(NodeSpec::parse("[::1]:80", 1).unwrap().socket.is_some());
        let n = NodeSpec::parse("users-2.internal:9001", 1).unwrap();
        assert_eq!((n.host.as_str(), n.port), ("users-2.internal", 9001));
        assert!(NodeSpec::parse("127.0.0.1", 1).is_err());
        assert!(NodeSpec::parse("bad host:80", 1).is_err());
        assert!(NodeSpec::parse("h:99999", 1).is_err());
    }

    fn pool(yaml: &str) -> UpstreamPool {
        let spec: model::Upstream = serde_yaml::from_str(yaml).unwrap();
        UpstreamPool::build(&spec, "upstreams[0]", Path::new(".")).unwrap()
    }

    fn picked(pool: &UpstreamPool, exclude: &[SocketAddr]) -> Option<String> {
        pool.select(b"key", exclude)
            .map(|p| p.backend.addr.to_string())
    }

    #[test]
    fn one_node_is_picked_unless_excluded() {
        for balance in ["round_robin", "random", "consistent_hash", "least_conn"] {
            let one = pool(&format!(
                "{{ id: u, balance: {balance}, nodes: [{{ address: \"127.0.0.1:9001\" }}] }}"
            ));
            assert_eq!(
                picked(&one, &[]).as_deref(),
                Some("127.0.0.1:9001"),
                "{balance}"
            );
            let tried = ["127.0.0.1:9001".parse().unwrap()];
            assert_eq!(picked(&one, &tried), None, "{balance}");

            let two = pool(&format!(
                "{{ id: u, balance: {balance}, nodes: [{{ address: \"127.0.0.1:9001\" }}, {{ address: \"127.0.0.1:9002\" }}] }}"
            ));
            assert!(picked(&two, &[]).is_some(), "{balance}");
            assert_eq!(
                picked(&two, &tried).as_deref(),
                Some("127.0.0.1:9002"),
                "{balance}"
            );
        }
    }

    #[test]
    fn hash_keys() {
        assert_eq!(HashOn::parse("client_ip").unwrap(), HashOn::ClientIp);
        assert!(matches!(
            HashOn::parse("header:X-User").unwrap(),
            HashOn::Header(_)
        ));
        assert_eq!(
            HashOn::parse("cookie:sid").unwrap(),
            HashOn::Cookie("sid".into())
        );
        assert!(HashOn::parse("body").is_err());
    }
}
