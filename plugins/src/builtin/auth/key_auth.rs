//! `key-auth`: authenticate a consumer by an API key sent in a header or a query parameter.

use super::credentials::{
    already_authenticated, bad_credential, challenge, consumer_credentials, hide_query_param,
    percent_decode, raw_query_param, unauthorized, REALM,
};
use crate::context::{Consumer, RequestContext};
use crate::factory::{BuildEnv, ConfigError, TypedFactory};
use crate::plugin::{Flow, Phases, Plugin};
use crate::response::PluginResponse;
use async_trait::async_trait;
use http::header::HeaderName;
use pingora_error::Result;
use pingora_http::RequestHeader;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// Config of `key-auth`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyAuthConfig {
    /// The request header carrying the key (default `apikey`); `null` to not look in headers.
    #[serde(default = "default_name")]
    pub header: Option<String>,
    /// The query parameter carrying the key (default `apikey`); `null` to not look in the
    /// query string.
    #[serde(default = "default_name")]
    pub query: Option<String>,
    /// Remove the key (header and query parameter) from the request sent upstream
    /// (default true).
    #[serde(default = "default_true")]
    pub hide_credentials: bool,
    /// When the request carries no key, continue without a consumer instead of answering 401,
    /// so that a later auth plugin (or `acl`) decides. A wrong key is still refused.
    #[serde(default)]
    pub optional: bool,
}

fn default_name() -> Option<String> {
    Some("apikey".to_string())
}

fn default_true() -> bool {
    true
}

/// A consumer's `key-auth` credential.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyCredential {
    key: String,
}

type KeyDigest = [u8; 32];

/// Hashes a [`KeyDigest`] by its first eight bytes. A SHA-256 output is already spread
/// evenly, so a keyed hash on top (the standard map's default) only costs time: only the
/// configured keys are inserted, and a lookup, whatever digest it brings, cannot lengthen
/// the table's probe sequences.
#[derive(Default)]
struct DigestPrefix(u64);

impl Hasher for DigestPrefix {
    fn write(&mut self, bytes: &[u8]) {
        if let Some(prefix) = bytes.first_chunk::<8>() {
            self.0 = u64::from_ne_bytes(*prefix);
        }
    }

    fn write_usize(&mut self, _array_length: usize) {}

    fn finish(&self) -> u64 {
        self.0
    }
}

type DigestIndex = HashMap<KeyDigest, usize, BuildHasherDefault<DigestPrefix>>;

/// The `key-auth` plugin.
pub struct KeyAuth {
    header: Option<HeaderName>,
    query: Option<String>,
    hide_credentials: bool,
    optional: bool,
    /// SHA-256 of each key → index into `consumers`. Looking keys up by digest means the
    /// time a lookup takes says nothing about which key prefixes exist.
    index: DigestIndex,
    consumers: Vec<(KeyDigest, Arc<Consumer>)>,
    missing: PluginResponse,
    invalid: PluginResponse,
}

/// Priority of `key-auth`.
pub const PRIORITY: i32 = 2500;

/// The factory for `key-auth`.
pub fn factory() -> impl crate::PluginFactory {
    TypedFactory::new("key-auth", PRIORITY, KeyAuth::new)
}

fn digest(key: &[u8]) -> KeyDigest {
    Sha256::digest(key).into()
}

impl KeyAuth {
    /// Builds the plugin from its config and the consumers' `key-auth` credentials.
    pub fn new(c: KeyAuthConfig, env: &BuildEnv<'_>) -> Result<Self, ConfigError> {
        let header = match c.header.as_deref() {
            Some(h) => Some(HeaderName::from_bytes(h.as_bytes()).map_err(|_| {
                ConfigError::at("header", format!("`{h}` is not a valid header name"))
            })?),
            None => None,
        };
        if c.query.as_deref() == Some("") {
            return Err(ConfigError::at(
                "query",
                "must not be empty (use null to disable)",
            ));
        }
        if header.is_none() && c.query.is_none() {
            return Err(ConfigError::whole(
                "`header` and `query` are both null: the key could never be found",
            ));
        }
        let mut index = DigestIndex::default();
        let mut consumers = Vec::new();
        let mut owner_of: HashMap<KeyDigest, String> = HashMap::new();
        for (consumer, cred) in consumer_credentials::<KeyCredential>(env, "key-auth")? {
            if cred.key.is_empty() {
                return Err(bad_credential(
                    &consumer.id,
                    "key-auth",
                    "needs a non-empty `key`",
                ));
            }
            let d = digest(cred.key.as_bytes());
            if let Some(other) = owner_of.insert(d, consumer.id.clone()) {
                return Err(ConfigError::whole(format!(
                    "consumers \"{other}\" and \"{}\" have the same key-auth key; keys must be unique",
                    consumer.id
                )));
            }
            index.insert(d, consumers.len());
            consumers.push((d, consumer));
        }
        let challenge = challenge(&format!("Key realm=\"{REALM}\""), "")?;
        Ok(KeyAuth {
            header,
            query: c.query,
            hide_credentials: c.hide_credentials,
            optional: c.optional,
            index,
            consumers,
            missing: unauthorized("missing API key", &challenge),
            invalid: unauthorized("invalid API key", &challenge),
        })
    }

    /// The key the request carries: the header first, then the query parameter. `Err` when
    /// a key is there but unusable (not visible ASCII in a header, not UTF-8 in a query).
    fn find_key<'a>(&self, req: &'a RequestHeader) -> Option<Result<Cow<'a, str>, ()>> {
        if let Some(h) = &self.header {
            if let Some(v) = req.headers.get(h) {
                if !v.is_empty() {
                    return Some(v.to_str().map(Cow::Borrowed).map_err(|_| ()));
                }
            }
        }
        let name = self.query.as_deref()?;
        let raw = raw_query_param(req.uri.query()?, name)?;
        if raw.is_empty() {
            return None;
        }
        Some(percent_decode(raw).ok_or(()))
    }

    fn lookup(&self, key: &str) -> Option<&Arc<Consumer>> {
        let d = digest(key.as_bytes());
        let i = *self.index.get(&d)?;
        let (stored, consumer) = self.consumers.get(i)?;
        bool::from(stored.ct_eq(&d)).then_some(consumer)
    }

    fn hide(&self, req: &mut RequestHeader, ctx: &mut RequestContext) -> Result<()> {
        if let Some(h) = &self.header {
            req.remove_header(h);
        }
        if let Some(q) = &self.query {
            hide_query_param(req, ctx, q)?;
        }
        Ok(())
    }
}

#[async_trait]
impl Plugin for KeyAuth {
    fn name(&self) -> &str {
        "key-auth"
    }

    fn priority(&self) -> i32 {
        PRIORITY
    }

    fn phases(&self) -> Phases {
        Phases::REQUEST
    }

    async fn request_filter(
        &self,
        req: &mut RequestHeader,
        ctx: &mut RequestContext,
    ) -> Result<Flow> {
        if already_authenticated(ctx) {
            // An auth plugin earlier in the chain already identified the consumer.
            return Ok(Flow::Continue);
        }
        let consumer = match self.find_key(req) {
            None if self.optional => return Ok(Flow::Continue),
            None => return Ok(Flow::Respond(self.missing.clone())),
            Some(Err(())) => None,
            Some(Ok(key)) => self.lookup(&key).cloned(),
        };
        let Some(consumer) = consumer else {
            return Ok(Flow::Respond(self.invalid.clone()));
        };
        ctx.consumer = Some(consumer);
        if self.hide_credentials {
            self.hide(req, ctx)?;
        }
        Ok(Flow::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{request, HarnessEnv, PluginHarness};
    use serde_json::json;

    pub(crate) fn consumer(id: &str, creds: serde_json::Value) -> Arc<Consumer> {
        let credentials = creds
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Arc::new(Consumer {
            id: id.into(),
            groups: vec!["g".into()],
            labels: Default::default(),
            credentials,
        })
    }

    fn env() -> HarnessEnv {
        HarnessEnv {
            consumers: vec![
                consumer("alice", json!({"key-auth": {"key": "alice-key"}})),
                consumer("bob", json!({"key-auth": {"key": "bob key+"}})),
                consumer("carol", json!({"basic-auth": {}})),
            ],
            ..Default::default()
        }
    }

    fn harness(config: serde_json::Value) -> PluginHarness {
        PluginHarness::from_config_with(&factory(), config, &env()).unwrap()
    }

    fn status(flow: Flow) -> Option<(u16, String, String)> {
        match flow {
            Flow::Continue => None,
            Flow::Respond(r) => Some((
                r.status,
                r.header("www-authenticate")
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_string(),
                String::from_utf8(r.body.to_vec()).unwrap(),
            )),
        }
    }

    #[tokio::test]
    async fn header_key_authenticates_and_is_hidden() {
        let mut h = harness(json!({}));
        let mut req = request("GET", "/x").header("apikey", "alice-key").build();
        assert!(status(h.request(&mut req).await.unwrap()).is_none());
        assert_eq!(h.ctx.consumer.as_ref().unwrap().id, "alice");
        assert!(req.headers.get("apikey").is_none());
        assert_eq!(h.ctx.upstream_path, None);
    }

    #[tokio::test]
    async fn query_key_is_decoded_and_removed_keeping_other_params() {
        let mut h = harness(json!({}));
        let mut req = request("GET", "/x?a=1&apikey=bob%20key%2B&b=2").build();
        assert!(status(h.request(&mut req).await.unwrap()).is_none());
        assert_eq!(h.ctx.consumer.as_ref().unwrap().id, "bob");
        assert_eq!(h.ctx.upstream_path.as_deref(), Some("/x?a=1&b=2"));
        assert_eq!(req.uri.to_string(), "/x?a=1&b=2");
    }

    #[tokio::test]
    async fn query_removal_respects_an_earlier_path_rewrite() {
        let mut h = harness(json!({}));
        h.ctx.upstream_path = Some("/stripped?apikey=alice-key".into());
        let mut req = request("GET", "/api/stripped?apikey=alice-key").build();
        assert!(status(h.request(&mut req).await.unwrap()).is_none());
        assert_eq!(h.ctx.upstream_path.as_deref(), Some("/stripped"));
    }

    #[tokio::test]
    async fn credentials_kept_when_not_hiding() {
        let mut h = harness(json!({"hide_credentials": false, "header": "x-key"}));
        let mut req = request("GET", "/x").header("x-key", "alice-key").build();
        assert!(status(h.request(&mut req).await.unwrap()).is_none());
        assert_eq!(req.headers.get("x-key").unwrap(), "alice-key");
    }

    #[tokio::test]
    async fn missing_and_wrong_keys_are_refused() {
        let mut h = harness(json!({}));
        let (s, challenge, body) =
            status(h.request(&mut request("GET", "/x").build()).await.unwrap()).unwrap();
        assert_eq!(s, 401);
        assert_eq!(challenge, "Key realm=\"gatehouse\"");
        assert_eq!(body, r#"{"error":"missing API key","status":401}"#);
        let mut h = harness(json!({}));
        let mut req = request("GET", "/x").header("apikey", "alice-kez").build();
        let (s, _, body) = status(h.request(&mut req).await.unwrap()).unwrap();
        assert_eq!(s, 401);
        assert!(body.contains("invalid API key"));
        assert!(h.ctx.consumer.is_none());
        // Only the configured places count.
        let mut h = harness(json!({"query": null}));
        let mut req = request("GET", "/x?apikey=alice-key").build();
        let (_, _, body) = status(h.request(&mut req).await.unwrap()).unwrap();
        assert!(body.contains("missing API key"));
    }

    #[tokio::test]
    async fn optional_lets_keyless_requests_through_but_not_wrong_keys() {
        let mut h = harness(json!({"optional": true}));
        assert!(status(h.request(&mut request("GET", "/").build()).await.unwrap()).is_none());
        assert!(h.ctx.consumer.is_none());
        let mut h = harness(json!({"optional": true}));
        let mut req = request("GET", "/").header("apikey", "nope").build();
        assert_eq!(status(h.request(&mut req).await.unwrap()).unwrap().0, 401);
    }

    #[tokio::test]
    async fn steps_aside_when_already_authenticated() {
        let mut h = harness(json!({}));
        h.ctx.consumer = Some(consumer("zed", json!({})));
        assert!(status(h.request(&mut request("GET", "/").build()).await.unwrap()).is_none());
        assert_eq!(h.ctx.consumer.as_ref().unwrap().id, "zed");
        let mut h = harness(json!({}));
        h.ctx.set_state(super::super::credentials::Authenticated);
        assert!(status(h.request(&mut request("GET", "/").build()).await.unwrap()).is_none());
        assert!(h.ctx.consumer.is_none());
    }

    #[test]
    fn config_errors() {
        let dup = HarnessEnv {
            consumers: vec![
                consumer("a", json!({"key-auth": {"key": "same"}})),
                consumer("b", json!({"key-auth": {"key": "same"}})),
            ],
            ..Default::default()
        };
        let err = PluginHarness::from_config_with(&factory(), json!({}), &dup)
            .err()
            .unwrap();
        assert!(err.message.contains("same key-auth key"), "{err}");
        let bad = HarnessEnv {
            consumers: vec![consumer("alice", json!({"key-auth": {"kee": "x"}}))],
            ..Default::default()
        };
        let err = PluginHarness::from_config_with(&factory(), json!({}), &bad)
            .err()
            .unwrap();
        assert!(
            err.message
                .starts_with("consumer \"alice\": key-auth credential"),
            "{err}"
        );
        let missing = HarnessEnv {
            consumers: vec![consumer("alice", json!({"key-auth": {}}))],
            ..Default::default()
        };
        let err = PluginHarness::from_config_with(&factory(), json!({}), &missing)
            .err()
            .unwrap();
        assert_eq!(
            err.message,
            "consumer \"alice\": key-auth credential needs `key`"
        );
        let err = PluginHarness::from_config(&factory(), json!({"header": "bad header"}))
            .err()
            .unwrap();
        assert_eq!(err.path, "header");
        let err = PluginHarness::from_config(&factory(), json!({"header": null, "query": null}))
            .err()
            .unwrap();
        assert!(err.message.contains("both null"));
        let err = PluginHarness::from_config(&factory(), json!({"hide": true}))
            .err()
            .unwrap();
        assert!(err.message.contains("unknown field"));
    }
}
