//! `basic-auth`: authenticate a consumer by user name and password (RFC 7617), checked
//! against an argon2 or bcrypt hash.

use super::credentials::{
    already_authenticated, bad_credential, challenge, consumer_credentials, strip_scheme,
    unauthorized,
};
use super::verified::VerifiedCache;
use crate::context::{Consumer, RequestContext};
use crate::factory::{BuildEnv, ConfigError, TypedFactory};
use crate::plugin::{Flow, Phases, Plugin};
use crate::response::PluginResponse;
use argon2::{PasswordHash, PasswordVerifier};
use async_trait::async_trait;
use base64::Engine;
use http::header::AUTHORIZATION;
use pingora_error::{Error, ErrorType, Result};
use pingora_http::RequestHeader;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Config of `basic-auth`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuthConfig {
    /// The realm named in the `WWW-Authenticate` challenge (default `gatehouse`).
    #[serde(default = "default_realm")]
    pub realm: String,
    /// Remove the `Authorization` header from the request sent upstream (default true).
    #[serde(default = "default_true")]
    pub hide_credentials: bool,
    /// When the request carries no Basic credentials, continue without a consumer instead of
    /// answering 401. Wrong credentials are still refused.
    #[serde(default)]
    pub optional: bool,
}

fn default_realm() -> String {
    super::credentials::REALM.to_string()
}

fn default_true() -> bool {
    true
}

/// A consumer's `basic-auth` credential.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BasicCredential {
    username: String,
    password_hash: String,
}

/// A password hash in one of the accepted formats, checked when the config is loaded.
#[derive(Debug)]
enum StoredHash {
    /// An argon2 PHC string (`$argon2id$v=19$m=...,t=...,p=...$salt$hash`).
    Argon2(String),
    /// A bcrypt hash (`$2b$`, `$2a$` or `$2y$`).
    Bcrypt(String),
}

impl StoredHash {
    fn parse(s: &str) -> Result<Self, String> {
        if s.starts_with("$argon2") {
            let hash = PasswordHash::new(s)
                .map_err(|e| format!("is not a valid argon2 PHC string ({e})"))?;
            if !matches!(hash.algorithm.as_str(), "argon2id" | "argon2i" | "argon2d") {
                return Err(format!("names an unknown algorithm `{}`", hash.algorithm));
            }
            argon2::Params::try_from(&hash)
                .map_err(|e| format!("has invalid argon2 parameters ({e})"))?;
            if hash.hash.is_none() || hash.salt.is_none() {
                return Err("lacks the salt or the hash part".into());
            }
            Ok(StoredHash::Argon2(s.to_string()))
        } else if ["$2a$", "$2b$", "$2y$"].iter().any(|p| s.starts_with(p)) {
            s.parse::<bcrypt::HashParts>()
                .map_err(|e| format!("is not a valid bcrypt hash ({e})"))?;
            Ok(StoredHash::Bcrypt(s.to_string()))
        } else {
            Err("must be an argon2 PHC string ($argon2id$...) or a bcrypt hash ($2b$...)".into())
        }
    }

    /// Whether `password` matches. CPU-heavy by design: call it off the async runtime.
    fn verify(&self, password: &[u8]) -> bool {
        match self {
            StoredHash::Argon2(s) => PasswordHash::new(s).is_ok_and(|h| {
                argon2::Argon2::default()
                    .verify_password(password, &h)
                    .is_ok()
            }),
            StoredHash::Bcrypt(s) => bcrypt::verify(password, s).unwrap_or(false),
        }
    }
}

/// How long a successful verification is remembered.
const CACHE_TTL: Duration = Duration::from_secs(60);
/// How many successful verifications are remembered at most.
const CACHE_MAX: usize = 4096;

/// The `basic-auth` plugin.
pub struct BasicAuth {
    hide_credentials: bool,
    optional: bool,
    users: HashMap<String, usize>,
    entries: Vec<(Arc<Consumer>, Arc<StoredHash>)>,
    /// Recently verified `user:password` pairs → the index of their entry.
    cache: VerifiedCache<usize>,
    /// Bounds how many password hashes are computed at once, so that a flood of wrong
    /// passwords cannot take every blocking thread.
    slots: Arc<Semaphore>,
    missing: PluginResponse,
    invalid: PluginResponse,
}

/// Priority of `basic-auth`.
pub const PRIORITY: i32 = 2520;

/// The factory for `basic-auth`.
pub fn factory() -> impl crate::PluginFactory {
    TypedFactory::new("basic-auth", PRIORITY, BasicAuth::new)
}

impl BasicAuth {
    /// Builds the plugin from its config and the consumers' `basic-auth` credentials.
    pub fn new(c: BasicAuthConfig, env: &BuildEnv<'_>) -> Result<Self, ConfigError> {
        if c.realm.is_empty() || c.realm.contains(['"', '\\']) {
            return Err(ConfigError::at(
                "realm",
                "must be a non-empty string without `\"` or `\\`",
            ));
        }
        let challenge = challenge(
            &format!("Basic realm=\"{}\", charset=\"UTF-8\"", c.realm),
            "realm",
        )?;
        let mut users = HashMap::new();
        let mut entries = Vec::new();
        for (consumer, cred) in consumer_credentials::<BasicCredential>(env, "basic-auth")? {
            if cred.username.is_empty() || cred.username.contains(':') {
                return Err(bad_credential(
                    &consumer.id,
                    "basic-auth",
                    "needs a non-empty `username` without `:`",
                ));
            }
            let hash = StoredHash::parse(&cred.password_hash).map_err(|e| {
                bad_credential(&consumer.id, "basic-auth", &format!("`password_hash` {e}"))
            })?;
            if let Some(&other) = users.get(&cred.username) {
                let (other, _): &(Arc<Consumer>, _) = &entries[other];
                return Err(ConfigError::whole(format!(
                    "consumers \"{}\" and \"{}\" have the same basic-auth username \"{}\"; usernames must be unique",
                    other.id, consumer.id, cred.username
                )));
            }
            users.insert(cred.username, entries.len());
            entries.push((consumer, Arc::new(hash)));
        }
        let parallel = std::thread::available_parallelism().map_or(2, |n| n.get());
        Ok(BasicAuth {
            hide_credentials: c.hide_credentials,
            optional: c.optional,
            users,
            entries,
            cache: VerifiedCache::new(CACHE_MAX),
            slots: Arc::new(Semaphore::new(parallel.max(2))),
            missing: unauthorized("missing credentials", &challenge),
            invalid: unauthorized("invalid credentials", &challenge),
        })
    }

    /// Checks `password` against `hash` on a blocking thread.
    async fn verify(&self, hash: Arc<StoredHash>, password: &str) -> Result<bool> {
        let permit = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| Error::because(ErrorType::InternalError, "password check slot", e))?;
        let password = password.as_bytes().to_vec();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            hash.verify(&password)
        })
        .await
        .map_err(|e| Error::because(ErrorType::InternalError, "password check", e))
    }

    /// The consumer that `user:password` proves to be, if any.
    async fn authenticate(&self, user: &str, password: &str) -> Result<Option<Arc<Consumer>>> {
        let tag = self.cache.tag(&[user.as_bytes(), password.as_bytes()]);
        if let Some(i) = self.cache.get(&tag) {
            return Ok(self.entries.get(i).map(|(c, _)| c.clone()));
        }
        match self.users.get(user) {
            Some(&i) => {
                let Some((consumer, hash)) = self.entries.get(i) else {
                    return Ok(None);
                };
                if self.verify(hash.clone(), password).await? {
                    self.cache.insert(tag, i, Instant::now() + CACHE_TTL);
                    return Ok(Some(consumer.clone()));
                }
                Ok(None)
            }
            None => {
                // An unknown user costs as much as a wrong password: check against a real
                // hash and ignore the result.
                if let Some((_, hash)) = self.entries.first() {
                    let _ = self.verify(hash.clone(), password).await?;
                }
                Ok(None)
            }
        }
    }
}

/// `user:password` from an `Authorization: Basic ...` value; `Err` when it is malformed.
fn decode_basic(encoded: &str) -> Result<(String, String), ()> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| ())?;
    let text = String::from_utf8(bytes).map_err(|_| ())?;
    let (user, password) = text.split_once(':').ok_or(())?;
    if user.is_empty() {
        return Err(());
    }
    Ok((user.to_string(), password.to_string()))
}

#[async_trait]
impl Plugin for BasicAuth {
    fn name(&self) -> &str {
        "basic-auth"
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
            return Ok(Flow::Continue);
        }
        let encoded = req
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| strip_scheme(v, "Basic"));
        let Some(encoded) = encoded else {
            if self.optional {
                return Ok(Flow::Continue);
            }
            return Ok(Flow::Respond(self.missing.clone()));
        };
        let Ok((user, password)) = decode_basic(encoded) else {
            return Ok(Flow::Respond(self.invalid.clone()));
        };
        match self.authenticate(&user, &password).await? {
            Some(consumer) => {
                ctx.consumer = Some(consumer);
                if self.hide_credentials {
                    req.remove_header(&AUTHORIZATION);
                }
                Ok(Flow::Continue)
            }
            None => Ok(Flow::Respond(self.invalid.clone())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{request, HarnessEnv, PluginHarness};
    use argon2::password_hash::{PasswordHasher, SaltString};
    use serde_json::json;

    fn consumer(id: &str, creds: serde_json::Value) -> Arc<Consumer> {
        Arc::new(Consumer {
            id: id.into(),
            groups: vec![],
            labels: Default::default(),
            credentials: creds.as_object().unwrap().clone().into_iter().collect(),
        })
    }

    /// A cheap argon2id hash (the parameters are stored in the PHC string).
    pub(crate) fn argon2_hash(password: &str) -> String {
        let params = argon2::Params::new(64, 1, 1, None).unwrap();
        let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let salt = SaltString::from_b64("c2FsdHNhbHRzYWx0").unwrap();
        a.hash_password(password.as_bytes(), &salt)
            .unwrap()
            .to_string()
    }

    fn env() -> HarnessEnv {
        HarnessEnv {
            consumers: vec![
                consumer(
                    "alice",
                    json!({"basic-auth": {"username": "alice", "password_hash": argon2_hash("wonderland")}}),
                ),
                consumer(
                    "bob",
                    json!({"basic-auth": {"username": "bob", "password_hash": bcrypt::hash("builder", 4).unwrap()}}),
                ),
            ],
            ..Default::default()
        }
    }

    fn basic(user: &str, pass: &str) -> String {
        let raw = format!("{user}:{pass}");
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }

    async fn run(
        h: &mut PluginHarness,
        auth: Option<&str>,
    ) -> (Option<PluginResponse>, RequestHeader) {
        let mut b = request("GET", "/");
        if let Some(a) = auth {
            b = b.header("authorization", a);
        }
        let mut req = b.build();
        let flow = h.request(&mut req).await.unwrap();
        match flow {
            Flow::Continue => (None, req),
            Flow::Respond(r) => (Some(r), req),
        }
    }

    #[tokio::test]
    async fn argon2_and_bcrypt_users_authenticate() {
        let mut h = PluginHarness::from_config_with(&factory(), json!({}), &env()).unwrap();
        let (resp, req) = run(&mut h, Some(&basic("alice", "wonderland"))).await;
        assert!(resp.is_none());
        assert_eq!(h.ctx.consumer.as_ref().unwrap().id, "alice");
        assert!(req.headers.get("authorization").is_none());
        let mut h =
            PluginHarness::from_config_with(&factory(), json!({"hide_credentials": false}), &env())
                .unwrap();
        let (resp, req) = run(&mut h, Some(&basic("bob", "builder"))).await;
        assert!(resp.is_none());
        assert_eq!(h.ctx.consumer.as_ref().unwrap().id, "bob");
        assert!(req.headers.get("authorization").is_some());
    }

    #[tokio::test]
    async fn wrong_unknown_malformed_and_missing_are_refused() {
        let mut h =
            PluginHarness::from_config_with(&factory(), json!({"realm": "api"}), &env()).unwrap();
        for auth in [
            basic("alice", "wonderlanD"),
            basic("mallory", "wonderland"),
            "Basic !!!".to_string(),
            basic("", "x"),
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode("nocolon")
            ),
        ] {
            let (resp, _) = run(&mut h, Some(&auth)).await;
            let resp = resp.unwrap();
            assert_eq!(resp.status, 401, "{auth}");
            assert!(std::str::from_utf8(&resp.body)
                .unwrap()
                .contains("invalid credentials"));
            assert!(h.ctx.consumer.is_none());
        }
        let (resp, _) = run(&mut h, Some("Bearer abc")).await;
        let resp = resp.unwrap();
        assert!(std::str::from_utf8(&resp.body)
            .unwrap()
            .contains("missing credentials"));
        assert_eq!(
            resp.header("www-authenticate").unwrap(),
            "Basic realm=\"api\", charset=\"UTF-8\""
        );
        let (resp, _) = run(&mut h, None).await;
        assert_eq!(resp.unwrap().status, 401);
    }

    #[tokio::test]
    async fn successful_checks_are_cached_and_failures_are_not() {
        let consumers = env().consumers;
        let plugin = BasicAuth::new(
            crate::factory::parse_config(&json!({})).unwrap(),
            &crate::factory::BuildEnv {
                consumers: &consumers,
                upstream_ids: &Default::default(),
                base_dir: std::path::Path::new("."),
                scope: "route:test",
                services: &crate::services::SharedServices::new(),
            },
        )
        .unwrap();
        assert!(plugin
            .authenticate("alice", "wonderland")
            .await
            .unwrap()
            .is_some());
        let tag = plugin.cache.tag(&[b"alice", b"wonderland"]);
        assert_eq!(plugin.cache.get(&tag), Some(0));
        assert!(plugin
            .authenticate("alice", "nope")
            .await
            .unwrap()
            .is_none());
        assert_eq!(
            plugin.cache.get(&plugin.cache.tag(&[b"alice", b"nope"])),
            None
        );
        assert_eq!(plugin.cache.len(), 1);
    }

    #[tokio::test]
    async fn optional_passes_requests_without_basic_credentials() {
        let mut h =
            PluginHarness::from_config_with(&factory(), json!({"optional": true}), &env()).unwrap();
        let (resp, _) = run(&mut h, None).await;
        assert!(resp.is_none());
        assert!(h.ctx.consumer.is_none());
        let (resp, _) = run(&mut h, Some(&basic("alice", "bad"))).await;
        assert_eq!(resp.unwrap().status, 401);
    }

    #[test]
    fn bad_hashes_and_duplicates_are_config_errors() {
        for (hash, expect) in [
            ("plain", "must be an argon2 PHC string"),
            ("$argon2id$v=19$m=zz", "invalid argon2 parameters"),
            ("$argon2id$v=19$$$", "not a valid argon2 PHC string"),
            ("$2b$04$short", "not a valid bcrypt hash"),
        ] {
            let env = HarnessEnv {
                consumers: vec![consumer(
                    "alice",
                    json!({"basic-auth": {"username": "alice", "password_hash": hash}}),
                )],
                ..Default::default()
            };
            let err = PluginHarness::from_config_with(&factory(), json!({}), &env)
                .err()
                .unwrap();
            assert!(
                err.message
                    .starts_with("consumer \"alice\": basic-auth credential `password_hash`"),
                "{err}"
            );
            assert!(err.message.contains(expect), "{err}");
        }
        let h = argon2_hash("x");
        let env = HarnessEnv {
            consumers: vec![
                consumer(
                    "a",
                    json!({"basic-auth": {"username": "same", "password_hash": h}}),
                ),
                consumer(
                    "b",
                    json!({"basic-auth": {"username": "same", "password_hash": h}}),
                ),
            ],
            ..Default::default()
        };
        let err = PluginHarness::from_config_with(&factory(), json!({}), &env)
            .err()
            .unwrap();
        assert!(err.message.contains("same basic-auth username"), "{err}");
        let err = PluginHarness::from_config(&factory(), json!({"realm": "a\"b"}))
            .err()
            .unwrap();
        assert_eq!(err.path, "realm");
    }

    /// Prints hashes for fixtures: `cargo test -p gatehouse-plugins print_fixture_hashes -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn print_fixture_hashes() {
        println!("{}", argon2_hash("alice-password"));
        println!("{}", bcrypt::hash("bob-password", 4).unwrap());
    }
}
