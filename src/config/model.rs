//! The config file's shape: one struct per object, keys as fixed in docs/config.md.
//!
//! Unknown keys are errors everywhere (`deny_unknown_fields`); the `server` section is
//! Pingora's own `ServerConf`, checked separately in [`super::load`].

use gatehouse_plugins::units::Duration;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Plugin name → that plugin's config.
pub type PluginMap = BTreeMap<String, serde_json::Value>;

/// The whole config file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Pingora's `ServerConf` keys, passed through.
    #[serde(default, skip_serializing_if = "serde_yaml::Value::is_null")]
    pub server: serde_yaml::Value,
    /// Where the gateway listens.
    #[serde(default)]
    pub listeners: Vec<Listener>,
    /// The admin API listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<Admin>,
    /// The Prometheus metrics listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Metrics>,
    /// Backend pools.
    #[serde(default)]
    pub upstreams: Vec<Upstream>,
    /// Plugins and an upstream shared by several routes.
    #[serde(default)]
    pub services: Vec<Service>,
    /// What requests go where.
    #[serde(default)]
    pub routes: Vec<Route>,
    /// API consumers and their credentials.
    #[serde(default)]
    pub consumers: Vec<ConsumerSpec>,
    /// Certificates served on every https listener, after the listener's own; editable
    /// through the admin API and swapped on reload like routes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<CertificateSpec>,
    /// Plugins run on every route.
    #[serde(default)]
    pub global_plugins: PluginMap,
    /// Where the shared sections come from: this file (the default) or etcd (a fleet; see
    /// [`crate::cluster`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_source: Option<crate::cluster::ConfigSource>,
}

/// `listeners[]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// A name for logs and metrics.
    pub name: String,
    /// `IP:port` to bind.
    pub address: String,
    /// `http` or `https`.
    #[serde(default)]
    pub protocol: ListenerProtocol,
    /// ALPN h2 on https; h2c (prior knowledge) on http.
    #[serde(default)]
    pub http2: bool,
    /// Certificates for an https listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ListenerTls>,
    /// How long an HTTP/1.1 client connection may sit idle between requests before the
    /// gateway closes it (default [`DEFAULT_KEEPALIVE_TIMEOUT`]); `0s` turns keep-alive off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keepalive_timeout: Option<Duration>,
}

/// `listeners[].keepalive_timeout` when not set.
pub const DEFAULT_KEEPALIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// `listeners[].protocol`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerProtocol {
    /// Plain HTTP.
    #[default]
    Http,
    /// HTTP over TLS.
    Https,
}

/// `listeners[].tls`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTls {
    /// Certificate/key pairs, picked by SNI; the first is the default. May be empty when
    /// top-level `certificates` exist.
    #[serde(default)]
    pub certificates: Vec<CertificatePair>,
}

/// One certificate and its key: each a PEM file path or inline PEM text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificatePair {
    /// PEM certificate chain: a file, or the PEM text itself.
    pub cert: String,
    /// PEM private key: a file, or the PEM text itself.
    pub key: String,
}

/// `certificates[]`: a certificate shared by every https listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateSpec {
    /// Unique id (the admin API's key).
    pub id: String,
    /// PEM certificate chain: a file, or the PEM text itself.
    pub cert: String,
    /// PEM private key: a file, or the PEM text itself.
    pub key: String,
    /// Host names it serves (`*.example.com` allowed); default: the certificate's DNS names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snis: Vec<String>,
}

impl CertificateSpec {
    /// The certificate and key as a pair.
    pub fn pair(&self) -> CertificatePair {
        CertificatePair {
            cert: self.cert.clone(),
            key: self.key.clone(),
        }
    }
}

/// `admin`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// `IP:port` of the admin API.
    pub address: String,
    /// Required in the `X-API-Key` header.
    pub api_key: String,
    /// Client addresses allowed to call the admin API (default: any that reaches it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
}

/// `metrics`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    /// `IP:port` serving `GET /metrics`.
    pub address: String,
}

/// `upstreams[]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// Unique id.
    pub id: String,
    /// The nodes.
    pub nodes: Vec<Node>,
    /// Balancing algorithm.
    #[serde(default)]
    pub balance: Balance,
    /// Key for `consistent_hash`: `client_ip`, `header:NAME`, `cookie:NAME`, `path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_on: Option<String>,
    /// Health checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// Timeouts to the nodes.
    #[serde(default)]
    pub timeouts: Timeouts,
    /// Tries on other nodes after a connect failure.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Which `Host` header to send.
    #[serde(default)]
    pub pass_host: PassHost,
    /// The `Host` for `pass_host: rewrite`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_host: Option<String>,
    /// `http` or `https`.
    #[serde(default)]
    pub scheme: Scheme,
    /// TLS to the nodes (with `scheme: https`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<UpstreamTls>,
    /// Speak HTTP/2 to the nodes: ALPN h2 over https, prior-knowledge h2c over http
    /// (needed for gRPC).
    #[serde(default)]
    pub http2: bool,
    /// Upper bound of concurrent HTTP/2 streams on one upstream connection.
    #[serde(default = "default_h2_streams")]
    pub max_h2_streams: usize,
    /// How often names in `nodes` are resolved again.
    #[serde(default = "default_dns_refresh")]
    pub dns_refresh: Duration,
}

fn default_retries() -> u32 {
    1
}

fn default_h2_streams() -> usize {
    100
}

fn default_dns_refresh() -> Duration {
    Duration::from_secs(30)
}

/// `upstreams[].nodes[]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    /// `IP:port` or `hostname:port`.
    pub address: String,
    /// Relative share of traffic.
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_weight() -> u32 {
    1
}

/// `upstreams[].balance`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// Weighted round robin.
    #[default]
    RoundRobin,
    /// Ketama consistent hashing on `hash_on`.
    ConsistentHash,
    /// Weighted random.
    Random,
    /// Fewest requests in flight (relative to weight).
    LeastConn,
}

/// `upstreams[].health_check`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// Probes run in the background.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<ActiveHealthCheck>,
    /// Ejection after failures seen on real traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passive: Option<PassiveHealthCheck>,
}

/// `health_check.active`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActiveHealthCheck {
    /// `http` (a GET to `path`) or `tcp` (a connect).
    #[serde(rename = "type", default)]
    pub kind: ProbeKind,
    /// Path probed by `http` checks.
    #[serde(default = "default_probe_path")]
    pub path: String,
    /// `Host` header (and TLS name) of `http` probes. Default: `upstream_host`, else
    /// `tls.sni`, else the first node's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Time between probes.
    #[serde(default = "default_probe_interval")]
    pub interval: Duration,
    /// Time a probe may take.
    #[serde(default = "default_probe_timeout")]
    pub timeout: Duration,
    /// Consecutive successes to mark a node healthy.
    #[serde(default = "default_threshold")]
    pub healthy: u32,
    /// Consecutive failures to mark a node unhealthy.
    #[serde(default = "default_threshold")]
    pub unhealthy: u32,
    /// Statuses that count as healthy.
    #[serde(default = "default_probe_statuses")]
    pub statuses: Vec<u16>,
}

fn default_probe_path() -> String {
    "/".into()
}
fn default_probe_interval() -> Duration {
    Duration::from_secs(5)
}
fn default_probe_timeout() -> Duration {
    Duration::from_secs(1)
}
fn default_threshold() -> u32 {
    2
}
fn default_probe_statuses() -> Vec<u16> {
    vec![200]
}

/// `health_check.active.type`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeKind {
    /// HTTP GET.
    #[default]
    Http,
    /// TCP connect.
    Tcp,
}

/// `health_check.passive`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PassiveHealthCheck {
    /// Consecutive failures (connect errors, timeouts, 502/503/504) that eject a node.
    #[serde(default = "default_passive_failures")]
    pub failures: u32,
    /// How long an ejected node gets no traffic.
    #[serde(default = "default_eject_for")]
    pub eject_for: Duration,
}

fn default_passive_failures() -> u32 {
    3
}
fn default_eject_for() -> Duration {
    Duration::from_secs(10)
}

/// `upstreams[].timeouts`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    /// TCP (and TLS) connect.
    #[serde(default = "default_connect_timeout")]
    pub connect: Duration,
    /// Between two reads from the node.
    #[serde(default = "default_rw_timeout")]
    pub read: Duration,
    /// Between two writes to the node.
    #[serde(default = "default_rw_timeout")]
    pub write: Duration,
    /// An idle pooled connection is closed after this.
    #[serde(default = "default_idle_timeout")]
    pub idle: Duration,
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(2)
}
fn default_rw_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_idle_timeout() -> Duration {
    Duration::from_secs(60)
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: default_connect_timeout(),
            read: default_rw_timeout(),
            write: default_rw_timeout(),
            idle: default_idle_timeout(),
        }
    }
}

/// `upstreams[].pass_host`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PassHost {
    /// The client's `Host`.
    #[default]
    Pass,
    /// The node's address (`host:port` as written in `nodes`).
    Node,
    /// `upstream_host`.
    Rewrite,
}

/// `upstreams[].scheme`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// Plain HTTP.
    #[default]
    Http,
    /// HTTP over TLS.
    Https,
}

/// `upstreams[].tls`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    /// SNI to send (default: the `Host` sent upstream).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    /// Verify the node's certificate and name.
    #[serde(default = "default_true")]
    pub verify: bool,
    /// PEM file of CA certificates to verify against (default: the system's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
}

fn default_true() -> bool {
    true
}

/// `services[]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// Unique id.
    pub id: String,
    /// The upstream of the service's routes (a route's own `upstream` wins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// Plugins for every route of the service.
    #[serde(default)]
    pub plugins: PluginMap,
}

/// `routes[]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Unique id.
    pub id: String,
    /// Hosts (exact or `*.example.com`); empty = any.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Path patterns: `/a` exact, `/a/*` prefix, `{name}` or `:name` one segment.
    pub paths: Vec<String>,
    /// Methods; empty = any.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Header predicates, all of which must hold.
    #[serde(default)]
    pub headers: Vec<HeaderMatch>,
    /// Higher wins among equally specific matches.
    #[serde(default)]
    pub priority: i32,
    /// The service this route belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The upstream (overrides the service's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// For `/a/*` paths: forward only what follows the prefix.
    #[serde(default)]
    pub strip_prefix: bool,
    /// Plugins of this route.
    #[serde(default)]
    pub plugins: PluginMap,
}

/// `routes[].headers[]`: exactly one of `equals`, `present`, `regex`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatch {
    /// Header name.
    pub name: String,
    /// The value must be exactly this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<String>,
    /// The header must be present (`true`) or absent (`false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub present: Option<bool>,
    /// The value must match this regex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

/// `consumers[]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerSpec {
    /// Unique id.
    pub id: String,
    /// Groups, for `acl`.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Free-form labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Credentials per auth plugin.
    #[serde(default)]
    pub credentials: BTreeMap<String, serde_json::Value>,
    /// Plugins applied to this consumer's requests.
    #[serde(default)]
    pub plugins: PluginMap,
}
