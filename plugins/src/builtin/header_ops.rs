//! `{set, add, remove}` header edits, shared by `headers` and `proxy-rewrite`, validated once
//! at build time.

use crate::factory::ConfigError;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use pingora_http::{RequestHeader, ResponseHeader};
use serde::Deserialize;
use std::collections::BTreeMap;

/// The config shape: `set` and `add` are maps of header → value, `remove` a list of names.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderEditsConfig {
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    #[serde(default)]
    pub add: BTreeMap<String, String>,
    #[serde(default)]
    pub remove: Vec<String>,
}

/// Header edits with names and values checked and converted.
#[derive(Debug, Default)]
pub struct HeaderEdits {
    set: Vec<(WireName, HeaderValue)>,
    add: Vec<(WireName, HeaderValue)>,
    remove: Vec<HeaderName>,
}

/// A checked header name as configured, which is how it is written on the wire. Pingora takes
/// it as is; a `HeaderName` would be copied into a new buffer on every insert.
#[derive(Debug)]
struct WireName(Bytes);

impl WireName {
    fn new(path: &str, n: &str) -> Result<Self, ConfigError> {
        name(path, n)?;
        let spelled = Bytes::copy_from_slice(n.as_bytes());
        // The first clone of a `Bytes` made from a buffer allocates its shared counter: do it
        // here, so that the per-request clones only count references.
        drop(spelled.clone());
        Ok(WireName(spelled))
    }
}

fn name(path: &str, n: &str) -> Result<HeaderName, ConfigError> {
    HeaderName::from_bytes(n.as_bytes())
        .map_err(|_| ConfigError::at(path, format!("`{n}` is not a valid header name")))
}

fn value(path: &str, v: &str) -> Result<HeaderValue, ConfigError> {
    HeaderValue::from_str(v).map_err(|_| {
        ConfigError::at(
            path,
            "not a valid header value (control characters are not allowed)",
        )
    })
}

impl HeaderEdits {
    /// Checks a config; `prefix` is the key path of the config (for errors).
    pub fn compile(cfg: &HeaderEditsConfig, prefix: &str) -> Result<Self, ConfigError> {
        let pairs = |map: &BTreeMap<String, String>, key: &str| {
            map.iter()
                .map(|(n, v)| {
                    let path = format!("{prefix}.{key}.{n}");
                    Ok((WireName::new(&path, n)?, value(&path, v)?))
                })
                .collect::<Result<Vec<_>, ConfigError>>()
        };
        Ok(HeaderEdits {
            set: pairs(&cfg.set, "set")?,
            add: pairs(&cfg.add, "add")?,
            remove: cfg
                .remove
                .iter()
                .enumerate()
                .map(|(i, n)| name(&format!("{prefix}.remove[{i}]"), n))
                .collect::<Result<_, _>>()?,
        })
    }

    /// Applies the edits to a request: remove, then set, then add.
    pub fn apply_request(&self, req: &mut RequestHeader) -> pingora_error::Result<()> {
        for n in &self.remove {
            req.remove_header(n);
        }
        for (n, v) in &self.set {
            req.insert_header(n.0.clone(), v.clone())?;
        }
        for (n, v) in &self.add {
            req.append_header(n.0.clone(), v.clone())?;
        }
        Ok(())
    }

    /// Applies the edits to a response: remove, then set, then add.
    pub fn apply_response(&self, resp: &mut ResponseHeader) -> pingora_error::Result<()> {
        for n in &self.remove {
            resp.remove_header(n);
        }
        for (n, v) in &self.set {
            resp.insert_header(n.0.clone(), v.clone())?;
        }
        for (n, v) in &self.add {
            resp.append_header(n.0.clone(), v.clone())?;
        }
        Ok(())
    }
}
