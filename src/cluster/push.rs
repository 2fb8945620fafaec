//! `gatehouse etcd push -c FILE`: validates a config file and stores its shared sections in
//! etcd, where every node of the fleet picks them up (for GitOps: run it from CI on merge).

use super::etcd::{self, Written};
use super::{merge, shared_yaml, ConfigSource, SourceKind, NODE_SECTIONS};
use crate::config::model::{Config, Listener};
use crate::snapshot::Snapshot;
use gatehouse_plugins::{PluginRegistry, SharedServices};
use std::path::{Path, PathBuf};

/// Arguments of `gatehouse etcd push`.
#[derive(clap::Args, Debug, Clone)]
pub struct PushArgs {
    /// The config file whose shared sections (upstreams, services, routes, consumers,
    /// global_plugins) are pushed; its other sections are left out.
    #[arg(short = 'c', long = "conf")]
    pub conf: PathBuf,
    /// etcd URLs, comma-separated (default: the file's `config_source.endpoints`).
    #[arg(long, value_delimiter = ',')]
    pub endpoints: Vec<String>,
    /// Key prefix (default: the file's `config_source.prefix`, else `/gatehouse`).
    #[arg(long)]
    pub prefix: Option<String>,
    /// etcd user.
    #[arg(long)]
    pub username: Option<String>,
    /// etcd password.
    #[arg(long)]
    pub password: Option<String>,
    /// PEM CA file for `https://` endpoints.
    #[arg(long)]
    pub cacert: Option<String>,
    /// PEM client certificate.
    #[arg(long)]
    pub cert: Option<String>,
    /// PEM key of `--cert`.
    #[arg(long)]
    pub key: Option<String>,
}

/// The etcd settings: the file's `config_source` (if etcd), with the flags on top.
fn settings(args: &PushArgs, config: &Config) -> Result<ConfigSource, String> {
    let mut s = match &config.config_source {
        Some(s) if s.kind == SourceKind::Etcd => s.clone(),
        _ => ConfigSource::default(),
    };
    s.kind = SourceKind::Etcd;
    if !args.endpoints.is_empty() {
        s.endpoints = args.endpoints.clone();
    }
    if s.endpoints.is_empty() {
        return Err(format!(
            "no etcd endpoints: pass --endpoints http://HOST:2379 or set `config_source` in {}",
            args.conf.display()
        ));
    }
    if let Some(p) = &args.prefix {
        s.prefix = p.clone();
    }
    if args.username.is_some() {
        s.username = args.username.clone();
    }
    if args.password.is_some() {
        s.password = args.password.clone();
    }
    if args.cacert.is_some() || args.cert.is_some() || args.key.is_some() {
        s.tls = Some(super::EtcdTls {
            ca: args.cacert.clone(),
            cert: args.cert.clone(),
            key: args.key.clone(),
        });
    }
    s.validate()
        .map_err(|e| e.to_string().replace("config_source.", "--"))?;
    Ok(s)
}

/// Runs `gatehouse etcd push`; the line to print on success.
pub fn run(args: &PushArgs, registry: &PluginRegistry) -> Result<String, String> {
    let file = crate::config::load_file(&args.conf).map_err(|e| e.to_string())?;
    let s = settings(args, &file)?;
    let left_out: Vec<&str> = {
        let doc = serde_yaml::to_value(&file).unwrap_or_default();
        NODE_SECTIONS
            .iter()
            .copied()
            .filter(|k| {
                doc.get(k)
                    .is_some_and(|v| !v.is_null() && v.as_sequence().is_none_or(|q| !q.is_empty()))
            })
            .collect()
    };
    // Only the shared sections, checked as a node would check them (with a stand-in listener:
    // each node brings its own).
    let shared = merge(&Config::default(), file);
    let node = Config {
        listeners: vec![Listener {
            name: "check".into(),
            address: "127.0.0.1:1".into(),
            protocol: Default::default(),
            http2: false,
            tls: None,
            keepalive_timeout: None,
        }],
        ..Config::default()
    };
    Snapshot::compile(
        merge(&node, shared.clone()),
        registry,
        Path::new("."),
        None,
        &SharedServices::new(),
    )
    .map_err(|e| e.in_file(&args.conf).to_string())?;
    let text = shared_yaml(&shared)?;
    let key = s.key();
    let current = etcd::fetch_blocking(&s)?;
    let note = if left_out.is_empty() {
        String::new()
    } else {
        format!(
            " (left out, as each node keeps its own: {})",
            left_out.join(", ")
        )
    };
    if current.value.as_deref() == Some(text.as_str()) {
        return Ok(format!(
            "{key} is unchanged (revision {}){note}",
            current.mod_revision
        ));
    }
    match etcd::put_blocking(&s, &text, Some(current.mod_revision))? {
        Written::Ok(revision) => Ok(format!(
            "pushed {} to etcd {key} (revision {revision}){note}",
            args.conf.display()
        )),
        Written::Conflict { actual } => Err(format!(
            "{key} changed while pushing (now revision {actual}); run the push again"
        )),
    }
}
