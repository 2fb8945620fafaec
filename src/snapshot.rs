//! Compiling a config into an immutable, ready-to-serve snapshot: every reference resolved,
//! every plugin built, routes compiled into the router. Nothing here runs per request.

use crate::chain::{Chain, Scoped};
use crate::config::error::join;
use crate::config::model::{Config, HeaderMatch, ListenerProtocol, PluginMap, Route};
use crate::config::ConfigError;
use crate::router::tree::{parse_pattern, Pattern};
use crate::router::{RouteKey, Router, Verdict};
use crate::tls::{Certificate, CertificateStore};
use crate::upstream::UpstreamPool;
use gatehouse_plugins::{BuildEnv, Consumer, PluginRegistry, SharedServices};
use http::{HeaderName, HeaderValue, Method};
use pingora_http::RequestHeader;
use regex::bytes::Regex;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

/// A route header predicate, compiled.
#[derive(Debug)]
enum HeaderPredicate {
    Equals(HeaderName, HeaderValue),
    Present(HeaderName, bool),
    Regex(HeaderName, Regex),
}

impl HeaderPredicate {
    fn holds(&self, req: &RequestHeader) -> bool {
        match self {
            HeaderPredicate::Equals(n, v) => req.headers.get_all(n).iter().any(|x| x == v),
            HeaderPredicate::Present(n, want) => req.headers.contains_key(n) == *want,
            HeaderPredicate::Regex(n, re) => req
                .headers
                .get_all(n)
                .iter()
                .any(|x| re.is_match(x.as_bytes())),
        }
    }
}

/// A route, ready to serve.
pub struct CompiledRoute {
    /// The route's id.
    pub id: Arc<str>,
    /// Its service's id.
    pub service_id: Option<Arc<str>>,
    /// Where its requests go (route's upstream, else the service's).
    pub upstream: Option<Arc<UpstreamPool>>,
    methods: Vec<Method>,
    headers: Vec<HeaderPredicate>,
    /// Forward only what follows a `/*` prefix.
    pub strip_prefix: bool,
    /// The merged plugin chain.
    pub chain: Chain,
}

impl CompiledRoute {
    /// How this route judges `req` (after the path matched).
    pub fn verdict(&self, req: &RequestHeader) -> Verdict {
        if !self.headers.iter().all(|h| h.holds(req)) {
            return Verdict::Reject;
        }
        if self.methods.is_empty()
            || self.methods.contains(&req.method)
            || (req.method == Method::HEAD && self.methods.contains(&Method::GET))
        {
            Verdict::Accept
        } else {
            Verdict::WrongMethod
        }
    }

    /// The methods this route takes (empty = any).
    pub fn methods(&self) -> &[Method] {
        &self.methods
    }
}

/// One compiled config.
pub struct Snapshot {
    /// The config it was compiled from.
    pub config: Arc<Config>,
    /// Routes, indexed by the router.
    pub routes: Vec<CompiledRoute>,
    /// The router.
    pub router: Router,
    /// Upstream pools by id.
    pub upstreams: HashMap<Arc<str>, Arc<UpstreamPool>>,
    /// Global plugins alone: the chain of requests that matched no route.
    pub global_chain: Chain,
    /// Consumers.
    pub consumers: Vec<Arc<Consumer>>,
    /// Plugins configured on consumers (`consumers[].plugins`), by consumer id. They join a
    /// request's chain once an auth plugin identified the consumer.
    pub consumer_plugins: HashMap<String, Vec<Scoped>>,
    /// The certificates of each https listener, by listener address.
    pub certificates: HashMap<String, Arc<CertificateStore>>,
    /// Each listener's keep-alive idle timeout in whole seconds (0: keep-alive off).
    pub keepalive: Vec<(std::net::SocketAddr, u64)>,
}

impl Snapshot {
    /// The keep-alive timeout (seconds; 0: off) of the listener a connection came in on,
    /// by the connection's local address: the listener bound to exactly it, else one bound
    /// to a wildcard address on its port.
    pub fn keepalive_for(&self, local: &std::net::SocketAddr) -> Option<u64> {
        self.keepalive
            .iter()
            .find(|(a, _)| a == local)
            .or_else(|| {
                self.keepalive
                    .iter()
                    .find(|(a, _)| a.port() == local.port() && a.ip().is_unspecified())
            })
            .map(|(_, secs)| *secs)
    }
}

fn check_unique<'a>(
    kind: &str,
    section: &str,
    ids: impl Iterator<Item = &'a str>,
) -> Result<(), ConfigError> {
    let mut seen = HashSet::new();
    for (i, id) in ids.enumerate() {
        if id.is_empty() {
            return Err(ConfigError::at(
                format!("{section}[{i}].id"),
                format!("an id must not be empty ({kind})"),
            ));
        }
        if !seen.insert(id) {
            return Err(ConfigError::at(
                format!("{section}[{i}].id"),
                format!("duplicate {kind} id \"{id}\""),
            ));
        }
    }
    Ok(())
}

fn build_plugins(
    map: &PluginMap,
    at: &str,
    scope: &str,
    registry: &PluginRegistry,
    env: &BuildEnv<'_>,
) -> Result<Vec<Scoped>, ConfigError> {
    let env = &BuildEnv { scope, ..*env };
    let mut out = Vec::with_capacity(map.len());
    for (name, cfg) in map {
        let path = join(at, name);
        let factory = registry
            .get(name)
            .ok_or_else(|| ConfigError::at(&path, unknown_plugin(name, registry)))?;
        let plugin = factory
            .build(cfg, env)
            .map_err(|e| ConfigError::at(join(&path, &e.path), e.message))?;
        out.push(Scoped {
            name: name.clone(),
            plugin,
        });
    }
    Ok(out)
}

/// "unknown plugin" with the closest known name, or the list of names when none is close.
fn unknown_plugin(name: &str, registry: &PluginRegistry) -> String {
    fn distance(a: &str, b: &str) -> usize {
        let b: Vec<char> = b.chars().collect();
        let mut row: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut prev = row[0];
            row[0] = i + 1;
            for (j, cb) in b.iter().enumerate() {
                let cur = row[j + 1];
                row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
                prev = cur;
            }
        }
        row[b.len()]
    }
    let closest = registry
        .names()
        .map(|n| (distance(name, n), n))
        .min()
        .filter(|(d, _)| *d <= 2);
    match closest {
        Some((_, n)) => format!("unknown plugin \"{name}\" (did you mean \"{n}\"?)"),
        None => format!(
            "unknown plugin \"{name}\" (known plugins: {})",
            registry.names().collect::<Vec<_>>().join(", ")
        ),
    }
}

fn compile_header_match(h: &HeaderMatch, at: &str) -> Result<HeaderPredicate, ConfigError> {
    let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| {
        ConfigError::at(
            format!("{at}.name"),
            format!("`{}` is not a valid header name", h.name),
        )
    })?;
    match (&h.equals, h.present, &h.regex) {
        (Some(v), None, None) => HeaderValue::from_str(v)
            .map(|v| HeaderPredicate::Equals(name, v))
            .map_err(|_| ConfigError::at(format!("{at}.equals"), "not a valid header value")),
        (None, Some(p), None) => Ok(HeaderPredicate::Present(name, p)),
        (None, None, Some(r)) => Regex::new(r)
            .map(|re| HeaderPredicate::Regex(name, re))
            .map_err(|e| {
                ConfigError::at(
                    format!("{at}.regex"),
                    gatehouse_plugins::factory::regex_error(&e),
                )
            }),
        _ => Err(ConfigError::at(
            at,
            "set exactly one of `equals`, `present` or `regex`",
        )),
    }
}

fn compile_methods(route: &Route, at: &str) -> Result<Vec<Method>, ConfigError> {
    const KNOWN: [&str; 10] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE", "PURGE",
    ];
    route
        .methods
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let up = m.to_ascii_uppercase();
            if !KNOWN.contains(&up.as_str()) {
                return Err(ConfigError::at(
                    format!("{at}.methods[{i}]"),
                    format!("unknown method `{m}`; expected one of {}", KNOWN.join(", ")),
                ));
            }
            Method::from_bytes(up.as_bytes())
                .map_err(|_| ConfigError::at(format!("{at}.methods[{i}]"), "invalid method"))
        })
        .collect()
}

fn compile_hosts(route: &Route, at: &str) -> Result<Vec<String>, ConfigError> {
    route
        .hosts
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let lower = h.to_ascii_lowercase();
            let name = lower.strip_prefix("*.").unwrap_or(&lower);
            let ok = !name.is_empty()
                && name.split('.').all(|l| {
                    !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                });
            if !ok {
                return Err(ConfigError::at(
                    format!("{at}.hosts[{i}]"),
                    format!("`{h}` is not a host name; expected e.g. `api.example.com` or `*.example.com`"),
                ));
            }
            Ok(lower)
        })
        .collect()
}

impl Snapshot {
    /// Checks and compiles `config`. Relative paths in it resolve against `base_dir`.
    /// Upstream pools whose config did not change are taken over from `previous`, with their
    /// health state.
    pub fn compile(
        config: Config,
        registry: &PluginRegistry,
        base_dir: &Path,
        previous: Option<&Snapshot>,
        services: &SharedServices,
    ) -> Result<Snapshot, ConfigError> {
        check_unique(
            "upstream",
            "upstreams",
            config.upstreams.iter().map(|u| u.id.as_str()),
        )?;
        check_unique(
            "service",
            "services",
            config.services.iter().map(|s| s.id.as_str()),
        )?;
        check_unique(
            "route",
            "routes",
            config.routes.iter().map(|r| r.id.as_str()),
        )?;
        check_unique(
            "consumer",
            "consumers",
            config.consumers.iter().map(|c| c.id.as_str()),
        )?;
        check_unique(
            "certificate",
            "certificates",
            config.certificates.iter().map(|c| c.id.as_str()),
        )?;
        let certificates = validate_listeners(&config, base_dir)?;
        let keepalive = config
            .listeners
            .iter()
            .filter_map(|l| {
                let addr = l.address.parse().ok()?;
                let timeout = l
                    .keepalive_timeout
                    .map_or(crate::config::model::DEFAULT_KEEPALIVE_TIMEOUT, |d| d.0);
                // Sub-second values round up: Pingora counts whole seconds, and 0 means off.
                let secs = timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0);
                Some((addr, secs))
            })
            .collect();

        // Upstreams.
        let mut upstreams = HashMap::new();
        for (i, u) in config.upstreams.iter().enumerate() {
            let reused = previous
                .and_then(|p| p.upstreams.get(u.id.as_str()))
                .filter(|p| p.spec == *u)
                .cloned();
            let pool = match reused {
                Some(p) => p,
                None => Arc::new(UpstreamPool::build(
                    u,
                    &format!("upstreams[{i}]"),
                    base_dir,
                )?),
            };
            upstreams.insert(pool.id.clone(), pool);
        }
        let upstream_ids: HashSet<String> = config.upstreams.iter().map(|u| u.id.clone()).collect();
        let find_upstream = |id: &str, at: String| {
            upstreams.get(id).cloned().ok_or_else(|| {
                ConfigError::at(
                    at,
                    format!(
                        "unknown upstream \"{id}\" (expected the id of an entry in `upstreams`)"
                    ),
                )
            })
        };

        // Consumers.
        let mut consumers = Vec::with_capacity(config.consumers.len());
        for (i, c) in config.consumers.iter().enumerate() {
            for name in c.credentials.keys() {
                if registry.get(name).is_none() {
                    return Err(ConfigError::at(
                        format!("consumers[{i}].credentials.{name}"),
                        format!("unknown plugin \"{name}\" (credentials are keyed by the auth plugin's name, e.g. `key-auth`)"),
                    ));
                }
            }
            consumers.push(Arc::new(Consumer {
                id: c.id.clone(),
                groups: c.groups.clone(),
                labels: c.labels.clone(),
                credentials: c.credentials.clone(),
            }));
        }
        let env = BuildEnv {
            consumers: &consumers,
            upstream_ids: &upstream_ids,
            base_dir,
            scope: "global",
            services,
        };

        // Plugins per scope.
        let mut consumer_plugins = HashMap::new();
        for (i, c) in config.consumers.iter().enumerate() {
            if !c.plugins.is_empty() {
                let plugins = build_plugins(
                    &c.plugins,
                    &format!("consumers[{i}].plugins"),
                    &format!("consumer:{}", c.id),
                    registry,
                    &env,
                )?;
                consumer_plugins.insert(c.id.clone(), plugins);
            }
        }
        let global = build_plugins(
            &config.global_plugins,
            "global_plugins",
            "global",
            registry,
            &env,
        )?;
        let mut services = HashMap::new();
        for (i, s) in config.services.iter().enumerate() {
            let at = format!("services[{i}]");
            let upstream = s
                .upstream
                .as_deref()
                .map(|u| find_upstream(u, format!("{at}.upstream")))
                .transpose()?;
            let plugins = build_plugins(
                &s.plugins,
                &format!("{at}.plugins"),
                &format!("service:{}", s.id),
                registry,
                &env,
            )?;
            services.insert(
                s.id.as_str(),
                (Arc::<str>::from(s.id.as_str()), upstream, plugins),
            );
        }

        // Routes.
        let mut routes = Vec::with_capacity(config.routes.len());
        let mut keys: Vec<(Vec<String>, Vec<Pattern>, i32)> =
            Vec::with_capacity(config.routes.len());
        for (i, r) in config.routes.iter().enumerate() {
            let at = format!("routes[{i}]");
            if r.paths.is_empty() {
                return Err(ConfigError::at(
                    format!("{at}.paths"),
                    "a route needs at least one path",
                ));
            }
            let patterns = r
                .paths
                .iter()
                .enumerate()
                .map(|(j, p)| {
                    parse_pattern(p).map_err(|m| ConfigError::at(format!("{at}.paths[{j}]"), m))
                })
                .collect::<Result<Vec<_>, _>>()?;
            if r.strip_prefix && !patterns.iter().all(|p| p.prefix) {
                return Err(ConfigError::at(
                    format!("{at}.strip_prefix"),
                    "only applies to prefix paths (`/prefix/*`); every path of the route must be one",
                ));
            }
            let service = r
                .service
                .as_deref()
                .map(|s| {
                    services.get(s).ok_or_else(|| {
                        ConfigError::at(
                            format!("{at}.service"),
                            format!("unknown service \"{s}\" (expected the id of an entry in `services`)"),
                        )
                    })
                })
                .transpose()?;
            let upstream = match &r.upstream {
                Some(u) => Some(find_upstream(u, format!("{at}.upstream"))?),
                None => service.and_then(|s| s.1.clone()),
            };
            let route_plugins = build_plugins(
                &r.plugins,
                &format!("{at}.plugins"),
                &format!("route:{}", r.id),
                registry,
                &env,
            )?;
            let chain = Chain::merge(&global, service.map_or(&[][..], |s| &s.2), &route_plugins);
            let headers = r
                .headers
                .iter()
                .enumerate()
                .map(|(j, h)| compile_header_match(h, &format!("{at}.headers[{j}]")))
                .collect::<Result<Vec<_>, _>>()?;
            keys.push((compile_hosts(r, &at)?, patterns, r.priority));
            routes.push(CompiledRoute {
                id: Arc::from(r.id.as_str()),
                service_id: service.map(|s| s.0.clone()),
                upstream,
                methods: compile_methods(r, &at)?,
                headers,
                strip_prefix: r.strip_prefix,
                chain,
            });
        }
        let router =
            Router::build(
                keys.iter()
                    .enumerate()
                    .map(|(i, (hosts, patterns, prio))| RouteKey {
                        index: i,
                        hosts,
                        patterns,
                        priority: *prio,
                    }),
            );
        let global_chain = Chain::merge(&global, &[], &[]);
        Ok(Snapshot {
            config: Arc::new(config),
            routes,
            router,
            upstreams,
            global_chain,
            consumers,
            consumer_plugins,
            certificates,
            keepalive,
        })
    }

    /// Resolves the host names of upstream nodes (bounded by `timeout` in all).
    pub async fn resolve(&self, timeout: std::time::Duration) {
        let pending = self
            .upstreams
            .values()
            .filter(|p| p.needs_dns())
            .map(|p| p.discover());
        let _ = tokio::time::timeout(timeout, futures_util::future::join_all(pending)).await;
    }
}

/// Parses `10.0.0.0/8`, `::1/128` or a bare address (a /32 or /128 network).
pub fn parse_ip_or_net(s: &str) -> Result<ipnet::IpNet, String> {
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("`{s}` is not an IP address or CIDR range"))
}

/// Loads the shared `certificates` and each https listener's own, and builds each https
/// listener's store.
fn load_certificates(
    config: &Config,
    base_dir: &Path,
) -> Result<HashMap<String, Arc<CertificateStore>>, ConfigError> {
    let mut shared = Vec::with_capacity(config.certificates.len());
    for (j, c) in config.certificates.iter().enumerate() {
        let at = format!("certificates[{j}]");
        for (k, name) in c.snis.iter().enumerate() {
            let plain = name.strip_prefix("*.").unwrap_or(name);
            if plain.is_empty() || !plain.split('.').all(valid_label) {
                return Err(ConfigError::at(
                    format!("{at}.snis[{k}]"),
                    format!("`{name}` is not a host name; expected e.g. `api.example.com` or `*.example.com`"),
                ));
            }
        }
        let cert =
            Certificate::load(&c.pair(), &c.snis, base_dir).map_err(|m| ConfigError::at(at, m))?;
        shared.push(Arc::new(cert));
    }
    let mut stores = HashMap::new();
    for (i, l) in config.listeners.iter().enumerate() {
        let at = format!("listeners[{i}]");
        match (l.protocol, &l.tls) {
            (ListenerProtocol::Http, Some(_)) => {
                return Err(ConfigError::at(
                    format!("{at}.tls"),
                    "only used with `protocol: https`",
                ))
            }
            (ListenerProtocol::Http, None) => continue,
            (ListenerProtocol::Https, tls) => {
                let own = tls
                    .as_ref()
                    .map(|t| t.certificates.as_slice())
                    .unwrap_or_default();
                let mut certs = Vec::with_capacity(own.len() + shared.len());
                for (j, pair) in own.iter().enumerate() {
                    let cert = Certificate::load(pair, &[], base_dir)
                        .map_err(|m| ConfigError::at(format!("{at}.tls.certificates[{j}]"), m))?;
                    certs.push(Arc::new(cert));
                }
                certs.extend(shared.iter().cloned());
                let store = CertificateStore::new(certs).ok_or_else(|| {
                    ConfigError::at(
                        format!("{at}.tls.certificates"),
                        "an https listener needs a certificate: list one here or in the \
                         top-level `certificates`",
                    )
                })?;
                stores.insert(l.address.clone(), Arc::new(store));
            }
        }
    }
    Ok(stores)
}

fn valid_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 63
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn validate_listeners(
    config: &Config,
    base_dir: &Path,
) -> Result<HashMap<String, Arc<CertificateStore>>, ConfigError> {
    if config.listeners.is_empty() {
        return Err(ConfigError::at(
            "listeners",
            "at least one listener is needed",
        ));
    }
    let mut names = HashSet::new();
    let mut addrs = HashSet::new();
    for (i, l) in config.listeners.iter().enumerate() {
        let at = format!("listeners[{i}]");
        if !names.insert(l.name.as_str()) {
            return Err(ConfigError::at(
                format!("{at}.name"),
                format!("duplicate listener name \"{}\"", l.name),
            ));
        }
        if l.address.parse::<std::net::SocketAddr>().is_err() {
            return Err(ConfigError::at(
                format!("{at}.address"),
                format!(
                    "`{}` is not an address; expected `IP:port`, e.g. `0.0.0.0:8080`",
                    l.address
                ),
            ));
        }
        if !addrs.insert(l.address.as_str()) {
            return Err(ConfigError::at(
                format!("{at}.address"),
                format!("address {} is used by two listeners", l.address),
            ));
        }
    }
    if let Some(admin) = &config.admin {
        if admin.api_key.is_empty() {
            return Err(ConfigError::at("admin.api_key", "must not be empty"));
        }
        for (i, a) in admin.allow.iter().enumerate() {
            parse_ip_or_net(a).map_err(|m| ConfigError::at(format!("admin.allow[{i}]"), m))?;
        }
    }
    for (key, addr) in [
        ("admin.address", config.admin.as_ref().map(|a| &a.address)),
        (
            "metrics.address",
            config.metrics.as_ref().map(|m| &m.address),
        ),
    ] {
        if let Some(a) = addr {
            if a.parse::<std::net::SocketAddr>().is_err() {
                return Err(ConfigError::at(
                    key,
                    format!("`{a}` is not an address; expected `IP:port`"),
                ));
            }
        }
    }
    load_certificates(config, base_dir)
}
