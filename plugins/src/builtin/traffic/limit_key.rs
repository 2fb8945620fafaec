//! The `key` option of `rate-limit` and `limit-conn`: which requests share one budget.
//!
//! A key is one of `consumer`, `ip`, `route`, `header:NAME`, or a list of them (the budget
//! is then per combination). `consumer` without an identified consumer, and `header:NAME`
//! without that header, count against the client's IP instead, so that leaving out a
//! credential or a header never escapes the limit nor lands in a bucket shared by everyone.

use crate::context::RequestContext;
use crate::factory::ConfigError;
use http::header::HeaderName;
use pingora_http::RequestHeader;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::fmt::{self, Write};

/// `key` as written in config: one key name or a list of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyConfig {
    names: Vec<String>,
    list: bool,
}

impl Default for KeyConfig {
    fn default() -> Self {
        KeyConfig {
            names: vec!["ip".to_string()],
            list: false,
        }
    }
}

const EXPECTED: &str = "`consumer`, `ip`, `route` or `header:NAME`";

impl<'de> Deserialize<'de> for KeyConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = KeyConfig;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "{EXPECTED}, or a list of these")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<KeyConfig, E> {
                Ok(KeyConfig {
                    names: vec![v.to_string()],
                    list: false,
                })
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<KeyConfig, A::Error> {
                let mut names = Vec::new();
                while let Some(n) = seq.next_element::<String>()? {
                    names.push(n);
                }
                Ok(KeyConfig { names, list: true })
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Consumer,
    Ip,
    Route,
    Header(HeaderName),
}

/// A compiled `key`: writes a request's budget key.
#[derive(Debug, Clone)]
pub struct LimitKey {
    prefix: String,
    parts: Box<[Part]>,
}

/// Header values longer than this are replaced by their SHA-256 in the key, so that a
/// client cannot make the store hold large keys.
const MAX_VALUE_IN_KEY: usize = 64;

impl LimitKey {
    /// Compiles `c`; errors name `path` (the option's key path, e.g. `key`).
    pub fn compile(c: &KeyConfig, path: &str) -> Result<Self, ConfigError> {
        if c.names.is_empty() {
            return Err(ConfigError::at(
                path,
                format!("the list is empty; expected one or more of {EXPECTED}"),
            ));
        }
        let mut parts = Vec::with_capacity(c.names.len());
        for (i, name) in c.names.iter().enumerate() {
            let at = if c.list {
                format!("{path}[{i}]")
            } else {
                path.to_string()
            };
            let part = match name.as_str() {
                "consumer" => Part::Consumer,
                "ip" => Part::Ip,
                "route" => Part::Route,
                other => match other.strip_prefix("header:") {
                    Some(h) => {
                        Part::Header(HeaderName::from_bytes(h.trim().as_bytes()).map_err(|_| {
                            ConfigError::at(&at, format!("`{h}` is not a valid header name"))
                        })?)
                    }
                    None => {
                        return Err(ConfigError::at(
                            &at,
                            format!("unknown key `{other}`; expected {EXPECTED}"),
                        ))
                    }
                },
            };
            if parts.contains(&part) {
                return Err(ConfigError::at(&at, format!("`{name}` is listed twice")));
            }
            parts.push(part);
        }
        Ok(LimitKey {
            prefix: String::new(),
            parts: parts.into(),
        })
    }

    /// Prefixes every key with `prefix`: the plugin's scope and limit, so that counters of
    /// different routes or limits never mix, and the same config finds its counters again
    /// after a reload.
    pub fn with_prefix(mut self, prefix: String) -> Self {
        self.prefix = prefix;
        self
    }

    /// Appends the request's key to `out`. Parts are separated by a newline, which cannot
    /// occur in a header value, and tagged (`c=`, `ip=`, `r=`, `h=`) so that a consumer id
    /// never collides with an IP or a header value.
    pub fn write(&self, req: &RequestHeader, ctx: &RequestContext, out: &mut String) {
        for (i, part) in self.parts.iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            match part {
                Part::Consumer => match &ctx.consumer {
                    Some(c) => {
                        out.push_str("c=");
                        out.push_str(&c.id);
                    }
                    None => write_ip(ctx, out),
                },
                Part::Ip => write_ip(ctx, out),
                Part::Route => {
                    out.push_str("r=");
                    out.push_str(ctx.route_id.as_deref().unwrap_or(""));
                }
                Part::Header(name) => match req.headers.get(name) {
                    Some(v) => {
                        out.push_str("h=");
                        let bytes = v.as_bytes();
                        if bytes.len() > MAX_VALUE_IN_KEY {
                            out.push('#');
                            for b in Sha256::digest(bytes) {
                                let _ = write!(out, "{b:02x}");
                            }
                        } else {
                            out.push_str(&String::from_utf8_lossy(bytes));
                        }
                    }
                    None => write_ip(ctx, out),
                },
            }
        }
    }

    /// The request's key as a new string.
    pub fn key(&self, req: &RequestHeader, ctx: &RequestContext) -> String {
        let mut s = String::with_capacity(48 + self.prefix.len());
        s.push_str(&self.prefix);
        self.write(req, ctx, &mut s);
        s
    }
}

fn write_ip(ctx: &RequestContext, out: &mut String) {
    out.push_str("ip=");
    match ctx.client_ip {
        Some(ip) => {
            let _ = write!(out, "{ip}");
        }
        None => out.push('-'),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::Consumer;
    use crate::testkit::request;
    use std::sync::Arc;

    fn compile(v: serde_json::Value) -> Result<LimitKey, ConfigError> {
        let c: KeyConfig = crate::factory::parse_config(&v)?;
        LimitKey::compile(&c, "key")
    }

    fn ctx() -> RequestContext {
        let mut ctx = RequestContext::new();
        ctx.client_ip = Some([10, 0, 0, 7].into());
        ctx.route_id = Some(Arc::from("r1"));
        ctx
    }

    #[test]
    fn single_and_combined_keys() {
        let req = request("GET", "/").header("x-tenant", "acme").build();
        let mut c = ctx();
        assert_eq!(compile("ip".into()).unwrap().key(&req, &c), "ip=10.0.0.7");
        assert_eq!(compile("route".into()).unwrap().key(&req, &c), "r=r1");
        assert_eq!(
            compile("header:X-Tenant".into()).unwrap().key(&req, &c),
            "h=acme"
        );
        c.consumer = Some(Arc::new(Consumer {
            id: "alice".into(),
            groups: vec![],
            labels: Default::default(),
            credentials: Default::default(),
        }));
        assert_eq!(
            compile(serde_json::json!(["consumer", "route", "header:x-tenant"]))
                .unwrap()
                .key(&req, &c),
            "c=alice\nr=r1\nh=acme"
        );
    }

    #[test]
    fn missing_consumer_or_header_falls_back_to_ip() {
        let req = request("GET", "/").build();
        let c = ctx();
        assert_eq!(
            compile("consumer".into()).unwrap().key(&req, &c),
            "ip=10.0.0.7"
        );
        assert_eq!(
            compile("header:x-tenant".into()).unwrap().key(&req, &c),
            "ip=10.0.0.7"
        );
        let mut no_ip = ctx();
        no_ip.client_ip = None;
        assert_eq!(compile("ip".into()).unwrap().key(&req, &no_ip), "ip=-");
    }

    #[test]
    fn long_header_values_are_hashed() {
        let long = "x".repeat(500);
        let req = request("GET", "/").header("x-tenant", &long).build();
        let key = compile("header:x-tenant".into()).unwrap().key(&req, &ctx());
        assert!(key.starts_with("h=#"));
        assert_eq!(key.len(), 3 + 64);
    }

    #[test]
    fn default_is_ip() {
        let k = LimitKey::compile(&KeyConfig::default(), "key").unwrap();
        assert_eq!(k.key(&request("GET", "/").build(), &ctx()), "ip=10.0.0.7");
    }

    #[test]
    fn bad_keys_are_refused_with_their_path() {
        let e = compile("user".into()).unwrap_err();
        assert_eq!(e.path, "key");
        assert_eq!(
            e.message,
            "unknown key `user`; expected `consumer`, `ip`, `route` or `header:NAME`"
        );
        let e = compile(serde_json::json!(["ip", "header:bad name"])).unwrap_err();
        assert_eq!(e.path, "key[1]");
        assert_eq!(e.message, "`bad name` is not a valid header name");
        let e = compile(serde_json::json!(["ip", "ip"])).unwrap_err();
        assert_eq!(e.path, "key[1]");
        assert!(e.message.contains("listed twice"));
        let e = compile(serde_json::json!([])).unwrap_err();
        assert!(e.message.contains("empty"));
        let e = compile(serde_json::json!(5)).unwrap_err();
        assert!(e.message.contains("or a list of these"), "{}", e.message);
    }
}
