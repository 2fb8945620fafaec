//! Config from etcd, for a fleet of gateways (`config_source: { type: etcd, ... }`).
//!
//! ```text
//!   each node's file (bootstrap)          etcd: <prefix>/config (one YAML document)
//!   server, listeners, admin, metrics,    upstreams, services, routes, consumers,
//!   config_source                         global_plugins
//!            └──────────────── merge ────────────────┘
//!                                │ ConfigManager (validate → compile → swap; the same path
//!                                ▼  as a file reload: a bad document is refused, the old kept)
//!                          live Snapshot
//!
//!   EtcdWatchService: list (GET, revision R) → apply → watch from R+1 → apply each PUT
//!                     on any error, cancellation or compaction: back off, list again, watch again
//!   admin API (any node): compare-and-swap PUT of <prefix>/config → every node's watch applies it
//!   `gatehouse etcd push -c FILE`: the same PUT from a file (GitOps)
//! ```
//!
//! The shared part of the config is one key, so that a change is atomic (a route and the
//! upstream it names arrive together, never one without the other), every node applies the
//! same revision of the whole document, and the admin API can write with one
//! compare-and-swap on the key's revision. Per-node settings (addresses, the admin key) stay in
//! each node's own file.

pub mod etcd;
pub mod push;
pub mod watch;

use crate::config::model::Config;
use crate::config::ConfigError;
use crate::snapshot::Snapshot;
use etcd::{Applied, EtcdSource};
use gatehouse_plugins::units::Duration;
use gatehouse_plugins::{PluginRegistry, SharedServices};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;

/// `config_source`: where the shared part of the config comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigSource {
    /// `file` (the default: everything comes from the config file) or `etcd`.
    #[serde(rename = "type", default)]
    pub kind: SourceKind,
    /// etcd client URLs (`http://10.0.0.1:2379`, or `https://` with `tls`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<String>,
    /// The key prefix; the document is stored at `<prefix>/config`.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// etcd user (with `password`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// etcd password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// TLS to etcd (with `https://` endpoints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<EtcdTls>,
    /// Longest wait for one etcd request (and for connecting).
    #[serde(default = "default_timeout")]
    pub timeout: Duration,
}

/// `config_source.type`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// The config file holds everything.
    #[default]
    File,
    /// The shared sections come from etcd.
    Etcd,
}

/// `config_source.tls`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdTls {
    /// PEM file of the CA that signed etcd's certificate (default: the system's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
    /// PEM client certificate, for etcd's `--client-cert-auth`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<String>,
    /// PEM key of `cert`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

fn default_prefix() -> String {
    "/gatehouse".to_string()
}

fn default_timeout() -> Duration {
    Duration::from_secs(2)
}

impl Default for ConfigSource {
    fn default() -> Self {
        ConfigSource {
            kind: SourceKind::File,
            endpoints: Vec::new(),
            prefix: default_prefix(),
            username: None,
            password: None,
            tls: None,
            timeout: default_timeout(),
        }
    }
}

impl ConfigSource {
    /// The etcd key holding the shared document.
    pub fn key(&self) -> String {
        format!("{}/config", self.prefix.trim_end_matches('/'))
    }

    /// Checks the settings; errors carry their key path under `config_source`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let at = |k: &str| format!("config_source.{k}");
        if self.kind == SourceKind::File {
            let etcd_only = [
                ("endpoints", !self.endpoints.is_empty()),
                ("username", self.username.is_some()),
                ("password", self.password.is_some()),
                ("tls", self.tls.is_some()),
            ];
            if let Some((k, _)) = etcd_only.iter().find(|(_, set)| *set) {
                return Err(ConfigError::at(
                    at(k),
                    "only used with `type: etcd`; remove it or set `type: etcd`",
                ));
            }
            return Ok(());
        }
        if self.endpoints.is_empty() {
            return Err(ConfigError::at(
                at("endpoints"),
                "needs at least one etcd URL, e.g. `[http://127.0.0.1:2379]`",
            ));
        }
        for (i, e) in self.endpoints.iter().enumerate() {
            let ok = e
                .strip_prefix("http://")
                .or_else(|| e.strip_prefix("https://"))
                .is_some_and(|rest| !rest.is_empty() && !rest.contains('/'));
            if !ok {
                return Err(ConfigError::at(
                    format!("config_source.endpoints[{i}]"),
                    format!("`{e}` is not an etcd URL; expected `http://HOST:PORT` or `https://HOST:PORT`"),
                ));
            }
            if self.tls.is_some() && e.starts_with("http://") {
                return Err(ConfigError::at(
                    format!("config_source.endpoints[{i}]"),
                    "`tls` is set: use an `https://` URL",
                ));
            }
        }
        if self.prefix.trim_end_matches('/').is_empty() {
            return Err(ConfigError::at(
                at("prefix"),
                "must not be empty, e.g. `/gatehouse`",
            ));
        }
        if self.username.is_some() != self.password.is_some() {
            return Err(ConfigError::at(
                at(if self.username.is_some() {
                    "password"
                } else {
                    "username"
                }),
                "`username` and `password` go together",
            ));
        }
        if let Some(tls) = &self.tls {
            if tls.cert.is_some() != tls.key.is_some() {
                return Err(ConfigError::at(
                    at(if tls.cert.is_some() {
                        "tls.key"
                    } else {
                        "tls.cert"
                    }),
                    "`cert` and `key` go together",
                ));
            }
        }
        if self.timeout.get().is_zero() {
            return Err(ConfigError::at(
                at("timeout"),
                "must be longer than 0, e.g. `2s`",
            ));
        }
        Ok(())
    }
}

/// The etcd settings of `config`, if its source is etcd (checked).
pub fn etcd_source(config: &Config) -> Result<Option<ConfigSource>, ConfigError> {
    match &config.config_source {
        None => Ok(None),
        Some(s) => {
            s.validate()?;
            Ok((s.kind == SourceKind::Etcd).then(|| s.clone()))
        }
    }
}

/// Sections each node keeps in its own file.
pub const NODE_SECTIONS: [&str; 5] = ["server", "listeners", "admin", "metrics", "config_source"];
/// Sections stored in etcd.
pub const SHARED_SECTIONS: [&str; 6] = [
    "upstreams",
    "services",
    "routes",
    "consumers",
    "global_plugins",
    "certificates",
];

fn node_sections_set(c: &Config) -> Vec<&'static str> {
    let set = [
        !c.server.is_null(),
        !c.listeners.is_empty(),
        c.admin.is_some(),
        c.metrics.is_some(),
        c.config_source.is_some(),
    ];
    NODE_SECTIONS
        .iter()
        .zip(set)
        .filter_map(|(n, s)| s.then_some(*n))
        .collect()
}

fn shared_sections_set(c: &Config) -> Vec<&'static str> {
    let set = [
        !c.upstreams.is_empty(),
        !c.services.is_empty(),
        !c.routes.is_empty(),
        !c.consumers.is_empty(),
        !c.global_plugins.is_empty(),
        !c.certificates.is_empty(),
    ];
    SHARED_SECTIONS
        .iter()
        .zip(set)
        .filter_map(|(n, s)| s.then_some(*n))
        .collect()
}

/// Checks a node's file in etcd mode: the shared sections must not be in it (they would be
/// silently replaced by etcd's).
pub fn check_bootstrap(config: &Config) -> Result<(), ConfigError> {
    match shared_sections_set(config).first() {
        None => Ok(()),
        Some(k) => Err(ConfigError::at(
            *k,
            "comes from etcd when `config_source.type` is etcd: remove it from this file \
             and store it in etcd (`gatehouse etcd push -c FILE`)",
        )),
    }
}

/// Parses the shared document stored in etcd: the config format, with only the shared
/// sections.
pub fn parse_shared(text: &str) -> Result<Config, ConfigError> {
    let config = crate::config::parse_yaml(text)?;
    match node_sections_set(&config).first() {
        None => Ok(config),
        Some(k) => Err(ConfigError::at(
            *k,
            "is set in each node's own config file, not in etcd; remove it from the etcd document",
        )),
    }
}

/// The shared sections of `config` as the YAML document stored in etcd.
pub fn shared_yaml(config: &Config) -> Result<String, String> {
    let mut doc =
        serde_yaml::to_value(config).map_err(|e| format!("cannot serialise the config: {e}"))?;
    if let Some(map) = doc.as_mapping_mut() {
        for k in NODE_SECTIONS {
            map.remove(k);
        }
    }
    serde_yaml::to_string(&doc).map_err(|e| format!("cannot serialise the config: {e}"))
}

/// The node's sections of `node` with the shared sections of `shared`.
pub fn merge(node: &Config, shared: Config) -> Config {
    Config {
        server: node.server.clone(),
        listeners: node.listeners.clone(),
        admin: node.admin.clone(),
        metrics: node.metrics.clone(),
        config_source: node.config_source.clone(),
        ..shared
    }
}

/// Loads the config at start from the file at `path` and, when its `config_source` is etcd,
/// the shared sections from etcd (an absent key gives none: the node starts with no routes
/// and takes them from the first write). Returns the compiled snapshot and the etcd source.
pub fn load_startup(
    path: &Path,
    registry: &PluginRegistry,
    services: &SharedServices,
) -> Result<(Snapshot, Option<Arc<EtcdSource>>), ConfigError> {
    let config = crate::config::load_file(path)?;
    let Some(settings) = etcd_source(&config).map_err(|e| e.in_file(path))? else {
        let snapshot = Snapshot::compile(config, registry, Path::new("."), None, services)
            .map_err(|e| e.in_file(path))?;
        return Ok((snapshot, None));
    };
    check_bootstrap(&config).map_err(|e| e.in_file(path))?;
    let key = settings.key();
    let fetched = etcd::fetch_blocking(&settings)
        .map_err(|e| ConfigError::at("config_source", e).in_file(path))?;
    let at_etcd = |e: ConfigError| e.in_file(format!("etcd {key}"));
    let (shared, applied) = match &fetched.value {
        Some(text) => {
            log::info!("config from etcd {key} (revision {})", fetched.mod_revision);
            let applied = Applied {
                revision: fetched.mod_revision,
                hash: crate::reload::content_hash(text.as_bytes()),
            };
            (parse_shared(text).map_err(at_etcd)?, applied)
        }
        None => {
            log::warn!(
                "etcd has no {key} yet: starting with no routes; write one with \
                 `gatehouse etcd push` or the admin API"
            );
            (Config::default(), Applied::default())
        }
    };
    let snapshot = Snapshot::compile(
        merge(&config, shared),
        registry,
        Path::new("."),
        None,
        services,
    )
    .map_err(|e| {
        if SHARED_SECTIONS.iter().any(|s| e.path.starts_with(s)) {
            at_etcd(e)
        } else {
            e.in_file(path)
        }
    })?;
    Ok((snapshot, Some(EtcdSource::new(settings, applied))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_yaml;

    fn source(yaml: &str) -> Result<Option<ConfigSource>, ConfigError> {
        etcd_source(&parse_yaml(yaml)?)
    }

    #[test]
    fn file_is_the_default_and_etcd_settings_are_checked() {
        assert_eq!(source("listeners: []\n").unwrap(), None);
        assert_eq!(source("config_source: { type: file }\n").unwrap(), None);
        let s = source("config_source: { type: etcd, endpoints: [http://127.0.0.1:2379] }\n")
            .unwrap()
            .unwrap();
        assert_eq!(s.key(), "/gatehouse/config");
        assert_eq!(s.timeout.get(), std::time::Duration::from_secs(2));
        let s =
            source("config_source: { type: etcd, endpoints: [http://a:1], prefix: /fleet/eu/ }\n")
                .unwrap()
                .unwrap();
        assert_eq!(s.key(), "/fleet/eu/config");

        let err = |yaml: &str| source(yaml).unwrap_err();
        let e = err("config_source: { type: etcd }\n");
        assert_eq!(e.path, "config_source.endpoints");
        let e = err("config_source: { type: etcd, endpoints: [127.0.0.1:2379] }\n");
        assert_eq!(e.path, "config_source.endpoints[0]");
        assert!(e.message.contains("http://HOST:PORT"), "{}", e.message);
        let e = err("config_source: { type: file, endpoints: [http://a:1] }\n");
        assert_eq!(e.path, "config_source.endpoints");
        let e = err("config_source: { type: etcd, endpoints: [http://a:1], username: u }\n");
        assert_eq!(e.path, "config_source.password");
        let e = err("config_source: { type: etcd, endpoints: [http://a:1], tls: { ca: x } }\n");
        assert_eq!(e.path, "config_source.endpoints[0]");
        let e = err("config_source: { type: etcd, endpoints: [https://a:1], tls: { cert: x } }\n");
        assert_eq!(e.path, "config_source.tls.key");
        let e = err("config_source: { type: etcd, endpoints: [http://a:1], prefix: / }\n");
        assert_eq!(e.path, "config_source.prefix");
        let e = err("config_source: { type: consul }\n");
        assert_eq!(e.path, "config_source.type");
        let e = err("config_source: { type: etcd, endpoint: [http://a:1] }\n");
        assert_eq!(e.path, "config_source.endpoint");
    }

    #[test]
    fn sections_are_split_between_the_node_and_etcd() {
        let node = parse_yaml(
            "listeners: [{ name: main, address: 127.0.0.1:8080 }]\n\
             config_source: { type: etcd, endpoints: [http://a:1] }\n",
        )
        .unwrap();
        check_bootstrap(&node).unwrap();
        let with_routes = parse_yaml(
            "config_source: { type: etcd, endpoints: [http://a:1] }\n\
             routes: [{ id: r, paths: [/] }]\n",
        )
        .unwrap();
        let e = check_bootstrap(&with_routes).unwrap_err();
        assert_eq!(e.path, "routes");
        assert!(e.message.contains("gatehouse etcd push"), "{}", e.message);

        let shared = parse_shared("routes: [{ id: r, paths: [/] }]\n").unwrap();
        let e = parse_shared("listeners: [{ name: x, address: 127.0.0.1:1 }]\n").unwrap_err();
        assert_eq!(e.path, "listeners");
        assert!(
            e.message.contains("each node's own config file"),
            "{}",
            e.message
        );

        let merged = merge(&node, shared);
        assert_eq!(merged.listeners.len(), 1);
        assert_eq!(merged.routes.len(), 1);
        assert!(merged.config_source.is_some());

        let text = shared_yaml(&merged).unwrap();
        assert!(
            !text.contains("listeners") && !text.contains("config_source"),
            "{text}"
        );
        assert_eq!(parse_shared(&text).unwrap().routes, merged.routes);
    }
}
