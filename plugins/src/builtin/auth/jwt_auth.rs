//! `jwt-auth`: authenticate a request by a signed JSON Web Token (RFC 7519), verified with a
//! consumer's key or a key from a JWKS.
//!
//! Every key is pinned to one algorithm: a token whose header names another algorithm is
//! refused before any signature check, which defeats `alg: none` and the HMAC-with-an-RSA-
//! public-key confusion.

use super::credentials::{
    already_authenticated, bad_credential, challenge, consumer_credentials, cookie,
    hide_query_param, query_param, remove_cookie, strip_scheme, unauthorized, Authenticated, REALM,
};
use super::jwks::{parse_jwks, pinned, KeySet, RemoteJwks, VerifyKey};
use super::jwt_claims::{decode_claims, Refusal};
use super::verified::VerifiedCache;
use crate::context::{Consumer, RequestContext};
use crate::factory::{BuildEnv, ConfigError, TypedFactory};
use crate::plugin::{Flow, Phases, Plugin};
use crate::response::PluginResponse;
use crate::units::Duration;
use async_trait::async_trait;
use http::header::{HeaderName, HeaderValue, AUTHORIZATION};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use pingora_error::Result;
use pingora_http::RequestHeader;
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

/// Config of `jwt-auth`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtAuthConfig {
    /// The header carrying the token (default `Authorization`, as `Bearer <token>`; in
    /// another header the `Bearer ` prefix is optional). `null`: not in a header.
    #[serde(default = "default_header")]
    pub header: Option<String>,
    /// A query parameter carrying the token (default: none).
    pub query: Option<String>,
    /// A cookie carrying the token (default: none).
    pub cookie: Option<String>,
    /// Accepted `iss` values (a string or a list); when set, `iss` is required.
    #[serde(default, deserialize_with = "one_or_many")]
    pub issuer: Option<Vec<String>>,
    /// Accepted `aud` values (a string or a list); when set, `aud` is required and must hold
    /// one of them. When not set, tokens carrying an `aud` are accepted.
    #[serde(default, deserialize_with = "one_or_many")]
    pub audience: Option<Vec<String>>,
    /// Clock skew allowed on `exp` and `nbf` (default `0s`).
    #[serde(default)]
    pub leeway: Duration,
    /// Claims every token must carry (default `[exp]`; the list replaces the default).
    #[serde(default = "default_required_claims")]
    pub required_claims: Vec<String>,
    /// Verify tokens with the keys of the JWKS at this URL instead of consumers' keys.
    pub jwks_uri: Option<String>,
    /// Verify tokens with the keys of this JWKS file instead of consumers' keys.
    pub jwks_file: Option<String>,
    /// How often the JWKS at `jwks_uri` is fetched again (default `5m`).
    #[serde(default = "default_refresh")]
    pub jwks_refresh_interval: Duration,
    /// With a JWKS: the claim whose value is a consumer id; the request then proceeds as that
    /// consumer (if it exists).
    pub consumer_claim: Option<String>,
    /// With consumers' keys: the claim naming the key (a credential's `key`) of a token that
    /// has no `kid` header (default `iss`).
    #[serde(default = "default_key_claim")]
    pub key_claim: String,
    /// Claims copied into headers of the request sent upstream (claim → header). Client-sent
    /// headers of these names are always removed.
    #[serde(default)]
    pub claims_to_headers: BTreeMap<String, String>,
    /// Remove the token (header, query parameter or cookie) from the request sent upstream
    /// (default false: upstreams often read the claims themselves).
    #[serde(default)]
    pub hide_credentials: bool,
    /// When the request carries no token, continue without a consumer instead of answering
    /// 401. An invalid token is still refused.
    #[serde(default)]
    pub optional: bool,
}

fn default_header() -> Option<String> {
    Some("Authorization".to_string())
}

fn default_required_claims() -> Vec<String> {
    vec!["exp".to_string()]
}

fn default_refresh() -> Duration {
    Duration::from_secs(300)
}

fn default_key_claim() -> String {
    "iss".to_string()
}

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    struct Visitor;
    impl<'de> serde::de::Visitor<'de> for Visitor {
        type Value = Option<Vec<String>>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a string or a list of strings")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(vec![v.to_string()]))
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut a: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(s) = a.next_element::<String>()? {
                out.push(s);
            }
            Ok(Some(out))
        }
    }
    d.deserialize_any(Visitor)
}

/// A consumer's `jwt-auth` credential.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JwtCredential {
    /// Matched against the token's `kid` (or the `key_claim` claim).
    key: String,
    #[serde(default = "default_algorithm")]
    algorithm: Algorithm,
    /// PEM text, or the path of a PEM file (RS*, PS*, ES*, EdDSA).
    public_key: Option<String>,
    /// The shared secret (HS*).
    secret: Option<String>,
    /// `secret` is base64-encoded.
    #[serde(default)]
    base64_secret: bool,
}

fn default_algorithm() -> Algorithm {
    Algorithm::HS256
}

/// Where the verification keys come from.
enum KeySource {
    /// Consumers' credentials or a JWKS file: fixed until the next config load.
    Fixed(KeySet),
    /// A JWKS URL, refreshed in the background.
    Remote(Box<RemoteJwks>),
}

/// Where the token was found.
#[derive(Clone, Copy)]
enum Place {
    Header,
    Query,
    Cookie,
}

/// The `jwt-auth` plugin.
pub struct JwtAuth {
    header: Option<HeaderName>,
    query: Option<String>,
    cookie: Option<String>,
    required_claims: Vec<String>,
    claims_to_headers: Vec<(String, HeaderName)>,
    hide_credentials: bool,
    optional: bool,
    keys: KeySource,
    /// Consumers' keys: the claim naming the key of a token without `kid`.
    key_claim: Option<String>,
    /// JWKS: the claim naming the consumer, and the consumers by id.
    consumer_claim: Option<(String, HashMap<String, Arc<Consumer>>)>,
    /// Tokens whose signature and claims were checked recently.
    verified: VerifiedCache<Arc<VerifiedToken>>,
    missing: PluginResponse,
    invalid: PluginResponse,
    expired: PluginResponse,
    not_yet_valid: PluginResponse,
    claims_rejected: PluginResponse,
}

/// A token that passed every check: what a request carrying it again needs.
struct VerifiedToken {
    claims: Map<String, Value>,
    consumer: Option<Arc<Consumer>>,
    /// The key that verified it and the `kid` it was found by: with a JWKS URL the token is
    /// only taken from the cache while the published set still holds this very key.
    key: Arc<VerifyKey>,
    kid: Option<String>,
    /// `exp` (seconds since the epoch), checked again on every use.
    exp: Option<u64>,
}

impl VerifiedToken {
    /// Whether the token has expired by `now` (seconds since the epoch), as the full check
    /// would decide it.
    fn expired(&self, now: u64) -> bool {
        self.key.validation.validate_exp
            && self
                .exp
                .is_some_and(|exp| exp < now.saturating_sub(self.key.validation.leeway))
    }
}

/// How long a verified token is taken from the cache at most (never past its `exp`).
const VERIFIED_TTL: std::time::Duration = std::time::Duration::from_secs(60);
/// How many verified tokens are kept per plugin instance.
const VERIFIED_MAX: usize = 4096;

/// Priority of `jwt-auth`.
pub const PRIORITY: i32 = 2510;

/// The longest token looked at; anything longer is refused unparsed.
const MAX_TOKEN_LEN: usize = 16 * 1024;

/// The factory for `jwt-auth`.
pub fn factory() -> impl crate::PluginFactory {
    super::jwt_crypto::install();
    TypedFactory::new("jwt-auth", PRIORITY, JwtAuth::new)
}

fn header_name(key: &str, name: &str) -> Result<HeaderName, ConfigError> {
    HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| ConfigError::at(key, format!("`{name}` is not a valid header name")))
}

/// The smallest HMAC secret RFC 7518 allows for `alg`: the size of the hash output.
fn min_secret_len(alg: Algorithm) -> usize {
    match alg {
        Algorithm::HS384 => 48,
        Algorithm::HS512 => 64,
        _ => 32,
    }
}

/// The decoding key of one consumer credential.
fn credential_key(
    consumer: &str,
    cred: &JwtCredential,
    env: &BuildEnv<'_>,
) -> Result<DecodingKey, ConfigError> {
    let bad = |m: &str| bad_credential(consumer, "jwt-auth", m);
    let alg = cred.algorithm;
    let family = alg.family();
    if family == AlgorithmFamily::Hmac {
        return hmac_key(cred).map_err(|m| bad(&m));
    }
    if cred.secret.is_some() || cred.base64_secret {
        return Err(bad(&format!(
            "uses {alg:?}, which takes `public_key`, not `secret`"
        )));
    }
    let Some(source) = cred.public_key.as_deref() else {
        return Err(bad(&format!("needs `public_key` for {alg:?}")));
    };
    let pem: Cow<'_, str> = if source.contains("-----BEGIN") {
        Cow::Borrowed(source)
    } else {
        let path = env.resolve_path(source);
        Cow::Owned(std::fs::read_to_string(&path).map_err(|e| {
            bad(&format!(
                "`public_key`: cannot read {}: {e}",
                path.display()
            ))
        })?)
    };
    if pem.contains("PRIVATE KEY") {
        return Err(bad("`public_key` holds a private key; give the public key"));
    }
    let wrong = |_| bad(&format!("`public_key` is not a PEM public key for {alg:?}"));
    let pem = pem.as_bytes();
    if family == AlgorithmFamily::Rsa {
        return DecodingKey::from_rsa_pem(pem).map_err(wrong);
    }
    if family == AlgorithmFamily::Ed {
        return DecodingKey::from_ed_pem(pem).map_err(wrong);
    }
    let key = DecodingKey::from_ec_pem(pem).map_err(wrong)?;
    // An uncompressed point: 65 bytes on P-256, 97 on P-384.
    let expected = if alg == Algorithm::ES384 { 97 } else { 65 };
    if key.as_bytes().len() != expected {
        return Err(bad(&format!(
            "`public_key` is not on the curve {alg:?} uses"
        )));
    }
    Ok(key)
}

/// The key of an HS* credential: `secret`, long enough for the algorithm.
fn hmac_key(cred: &JwtCredential) -> Result<DecodingKey, String> {
    let alg = cred.algorithm;
    if cred.public_key.is_some() {
        return Err(format!(
            "uses {alg:?}, which takes `secret`, not `public_key`"
        ));
    }
    let Some(secret) = cred.secret.as_deref() else {
        return Err(format!("needs `secret` for {alg:?}"));
    };
    let key = if cred.base64_secret {
        DecodingKey::from_base64_secret(secret)
            .map_err(|_| "`secret` is not valid base64 (`base64_secret` is true)".to_string())?
    } else {
        DecodingKey::from_secret(secret.as_bytes())
    };
    let len = key.as_bytes().len();
    if len < min_secret_len(alg) {
        return Err(format!(
            "`secret` is {len} bytes; {alg:?} needs at least {} (RFC 7518)",
            min_secret_len(alg)
        ));
    }
    Ok(key)
}

impl JwtAuth {
    /// Builds the plugin from its config and the consumers' `jwt-auth` credentials.
    pub fn new(c: JwtAuthConfig, env: &BuildEnv<'_>) -> Result<Self, ConfigError> {
        let header = c
            .header
            .as_deref()
            .map(|h| header_name("header", h))
            .transpose()?;
        for (key, v) in [("query", &c.query), ("cookie", &c.cookie)] {
            if v.as_deref() == Some("") {
                return Err(ConfigError::at(key, "must not be empty"));
            }
        }
        if header.is_none() && c.query.is_none() && c.cookie.is_none() {
            return Err(ConfigError::whole(
                "no place to look for the token: set `header`, `query` or `cookie`",
            ));
        }
        for (key, list) in [("issuer", &c.issuer), ("audience", &c.audience)] {
            if let Some(l) = list {
                if l.is_empty() || l.iter().any(String::is_empty) {
                    return Err(ConfigError::at(
                        key,
                        "must be a non-empty string or list of non-empty strings",
                    ));
                }
            }
        }
        if let Some(i) = c.required_claims.iter().position(String::is_empty) {
            return Err(ConfigError::at(
                format!("required_claims[{i}]"),
                "must not be empty",
            ));
        }
        let mut required_claims = c.required_claims.clone();
        for (set, claim) in [(c.issuer.is_some(), "iss"), (c.audience.is_some(), "aud")] {
            if set && !required_claims.iter().any(|r| r == claim) {
                required_claims.push(claim.to_string());
            }
        }
        let mut claims_to_headers = Vec::new();
        let mut seen = HashSet::new();
        for (claim, h) in &c.claims_to_headers {
            let name = header_name(&format!("claims_to_headers.{claim}"), h)?;
            if !seen.insert(name.clone()) {
                return Err(ConfigError::at(
                    format!("claims_to_headers.{claim}"),
                    format!("header `{h}` is used for two claims"),
                ));
            }
            claims_to_headers.push((claim.clone(), name));
        }

        let mut template = Validation::new(Algorithm::HS256);
        template.leeway = c.leeway.get().as_secs();
        template.validate_exp = true;
        template.validate_nbf = true;
        template.required_spec_claims = HashSet::new();
        template.validate_aud = c.audience.is_some();
        if let Some(a) = &c.audience {
            template.set_audience(a);
        }
        if let Some(i) = &c.issuer {
            template.set_issuer(i);
        }

        let jwks = match (&c.jwks_uri, &c.jwks_file) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::whole(
                    "set either `jwks_uri` or `jwks_file`, not both",
                ))
            }
            (Some(uri), None) => {
                let parsed = reqwest::Url::parse(uri)
                    .map_err(|e| ConfigError::at("jwks_uri", format!("not a URL ({e})")))?;
                if !matches!(parsed.scheme(), "http" | "https") {
                    return Err(ConfigError::at(
                        "jwks_uri",
                        "must be an http:// or https:// URL",
                    ));
                }
                if c.jwks_refresh_interval.get() < std::time::Duration::from_secs(1) {
                    return Err(ConfigError::at(
                        "jwks_refresh_interval",
                        "must be at least 1s",
                    ));
                }
                Some(KeySource::Remote(Box::new(RemoteJwks::new(
                    uri,
                    c.jwks_refresh_interval.get(),
                    template.clone(),
                ))))
            }
            (None, Some(file)) => {
                let path = env.resolve_path(file);
                let body = std::fs::read(&path).map_err(|e| {
                    ConfigError::at("jwks_file", format!("cannot read {}: {e}", path.display()))
                })?;
                let set = parse_jwks(&body, &template).map_err(|e| {
                    ConfigError::at("jwks_file", format!("{}: {e}", path.display()))
                })?;
                Some(KeySource::Fixed(set))
            }
            (None, None) => None,
        };

        let (keys, key_claim, consumer_claim) = match jwks {
            Some(source) => {
                let consumer_claim = c.consumer_claim.map(|claim| {
                    let by_id = env
                        .consumers
                        .iter()
                        .map(|c| (c.id.clone(), c.clone()))
                        .collect();
                    (claim, by_id)
                });
                (source, None, consumer_claim)
            }
            None => {
                if c.consumer_claim.is_some() {
                    return Err(ConfigError::at(
                        "consumer_claim",
                        "only used with `jwks_uri` or `jwks_file` (with consumers' keys the key names the consumer)",
                    ));
                }
                let mut set = KeySet::default();
                for (consumer, cred) in consumer_credentials::<JwtCredential>(env, "jwt-auth")? {
                    if cred.key.is_empty() {
                        return Err(bad_credential(
                            &consumer.id,
                            "jwt-auth",
                            "needs a non-empty `key`",
                        ));
                    }
                    let key = credential_key(&consumer.id, &cred, env)?;
                    let kid = cred.key.clone();
                    let added = set.insert(
                        Some(kid.clone()),
                        VerifyKey {
                            alg: cred.algorithm,
                            key,
                            validation: pinned(&template, cred.algorithm),
                            consumer: Some(consumer.clone()),
                        },
                    );
                    if !added {
                        return Err(ConfigError::whole(format!(
                            "consumer \"{}\": jwt-auth key \"{kid}\" is already another consumer's; keys must be unique",
                            consumer.id
                        )));
                    }
                }
                (KeySource::Fixed(set), Some(c.key_claim), None)
            }
        };

        let plain = challenge(&format!("Bearer realm=\"{REALM}\""), "")?;
        let bad = challenge(
            &format!("Bearer realm=\"{REALM}\", error=\"invalid_token\""),
            "",
        )?;
        Ok(JwtAuth {
            header,
            query: c.query,
            cookie: c.cookie,
            required_claims,
            claims_to_headers,
            hide_credentials: c.hide_credentials,
            optional: c.optional,
            keys,
            key_claim,
            consumer_claim,
            verified: VerifiedCache::new(VERIFIED_MAX),
            missing: unauthorized("missing token", &plain),
            invalid: unauthorized("invalid token", &bad),
            expired: unauthorized("token expired", &bad),
            not_yet_valid: unauthorized("token not yet valid", &bad),
            claims_rejected: unauthorized("token claims rejected", &bad),
        })
    }

    /// The token and where it was: the header first, then the query, then the cookie.
    fn find_token<'a>(&self, req: &'a RequestHeader) -> Option<(Cow<'a, str>, Place)> {
        if let Some(h) = &self.header {
            if let Some(v) = req.headers.get(h).and_then(|v| v.to_str().ok()) {
                let token = match strip_scheme(v, "Bearer") {
                    Some(t) => Some(t),
                    // Outside `Authorization` the scheme is optional.
                    None if *h != AUTHORIZATION && !v.trim().contains(' ') => Some(v.trim()),
                    None => None,
                };
                if let Some(t) = token.filter(|t| !t.is_empty()) {
                    return Some((Cow::Borrowed(t), Place::Header));
                }
            }
        }
        if let Some(q) = &self.query {
            if let Some(t) = req.uri.query().and_then(|query| query_param(query, q)) {
                if !t.is_empty() {
                    return Some((t, Place::Query));
                }
            }
        }
        if let Some(name) = &self.cookie {
            if let Some(t) = cookie(req, name).filter(|t| !t.is_empty()) {
                return Some((Cow::Borrowed(t), Place::Cookie));
            }
        }
        None
    }

    /// The key a token names: its `kid`, or for consumers' keys the `key_claim` claim.
    async fn key_for(&self, token: &str, kid: Option<&str>) -> Option<Arc<VerifyKey>> {
        match &self.keys {
            KeySource::Remote(remote) => remote.key(kid).await,
            KeySource::Fixed(set) => match (kid, &self.key_claim) {
                (Some(kid), _) => set.get(kid).cloned(),
                (None, Some(claim)) => {
                    let unverified =
                        jsonwebtoken::dangerous::insecure_decode::<Map<String, Value>>(token)
                            .ok()?;
                    set.get(unverified.claims.get(claim)?.as_str()?).cloned()
                }
                (None, None) => set.only().cloned(),
            },
        }
    }

    /// Verifies `token`, from the cache when it passed every check recently (and has not
    /// expired since, and its key is still the one published).
    async fn verify(&self, token: &str) -> Result<Arc<VerifiedToken>, Refusal> {
        if token.len() > MAX_TOKEN_LEN {
            log::debug!("jwt-auth: token refused: longer than 16 KiB");
            return Err(Refusal::Invalid);
        }
        let tag = self.verified.tag(&[token.as_bytes()]);
        if let Some(hit) = self.verified.get(&tag) {
            if !hit.expired(jsonwebtoken::get_current_timestamp()) && self.key_current(&hit).await {
                return Ok(hit);
            }
            // Checked in full again, which gives the right refusal.
            self.verified.remove(&tag);
        }
        let verified = Arc::new(self.verify_in_full(token).await?);
        let now = jsonwebtoken::get_current_timestamp();
        let ttl = match verified.exp {
            Some(exp) => VERIFIED_TTL.min(std::time::Duration::from_secs(
                exp.saturating_add(verified.key.validation.leeway)
                    .saturating_sub(now),
            )),
            None => VERIFIED_TTL,
        };
        self.verified
            .insert(tag, verified.clone(), Instant::now() + ttl);
        Ok(verified)
    }

    /// Whether the key that verified `token` is still the one its `kid` finds.
    async fn key_current(&self, token: &VerifiedToken) -> bool {
        match &self.keys {
            // Fixed for the life of this instance: a reload builds a new one, cache included.
            KeySource::Fixed(_) => true,
            KeySource::Remote(remote) => remote
                .key(token.kid.as_deref())
                .await
                .is_some_and(|k| Arc::ptr_eq(&k, &token.key)),
        }
    }

    /// Verifies `token`: its key, the pinned algorithm, the signature, then the claims.
    async fn verify_in_full(&self, token: &str) -> Result<VerifiedToken, Refusal> {
        let refuse = |r: Refusal, why: &dyn std::fmt::Display| {
            log::debug!("jwt-auth: token refused: {why}");
            r
        };
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| refuse(Refusal::Invalid, &format_args!("malformed header ({e})")))?;
        let Some(key) = self.key_for(token, header.kid.as_deref()).await else {
            let kid = header.kid.as_deref().unwrap_or("");
            return Err(refuse(
                Refusal::Invalid,
                &format_args!("no key for kid {kid:?}"),
            ));
        };
        if header.alg != key.alg {
            let why = format_args!("alg {:?} is not its key's {:?}", header.alg, key.alg);
            return Err(refuse(Refusal::Invalid, &why));
        }
        let claims =
            decode_claims(token, &key.key, &key.validation).map_err(|(r, e)| refuse(r, &e))?;
        if let Some(c) = self
            .required_claims
            .iter()
            .find(|c| claims.get(c.as_str()).is_none_or(Value::is_null))
        {
            return Err(refuse(
                Refusal::Claims,
                &format_args!("claim {c:?} missing"),
            ));
        }
        let consumer = key.consumer.clone().or_else(|| {
            let (claim, by_id) = self.consumer_claim.as_ref()?;
            by_id.get(claims.get(claim)?.as_str()?).cloned()
        });
        let exp = claims.get("exp").and_then(Value::as_u64);
        Ok(VerifiedToken {
            claims,
            consumer,
            key,
            kid: header.kid,
            exp,
        })
    }

    fn refusal(&self, r: Refusal) -> PluginResponse {
        match r {
            Refusal::Invalid => self.invalid.clone(),
            Refusal::Expired => self.expired.clone(),
            Refusal::NotYetValid => self.not_yet_valid.clone(),
            Refusal::Claims => self.claims_rejected.clone(),
        }
    }

    fn hide(&self, req: &mut RequestHeader, ctx: &mut RequestContext, place: Place) -> Result<()> {
        match (place, &self.header, &self.query, &self.cookie) {
            (Place::Header, Some(h), _, _) => {
                req.remove_header(h);
            }
            (Place::Query, _, Some(q), _) => hide_query_param(req, ctx, q)?,
            (Place::Cookie, _, _, Some(c)) => remove_cookie(req, c)?,
            _ => {}
        }
        Ok(())
    }
}

/// A claim as a header value: strings as they are, lists joined with `,`, other values as
/// JSON. `None` when the text cannot be a header value.
fn claim_header_value(v: &Value) -> Option<HeaderValue> {
    let text: Cow<'_, str> = match v {
        Value::String(s) => Cow::Borrowed(s),
        Value::Null => return None,
        Value::Array(items) => Cow::Owned(
            items
                .iter()
                .map(|i| match i {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join(","),
        ),
        other => Cow::Owned(other.to_string()),
    };
    HeaderValue::from_str(&text).ok()
}

#[async_trait]
impl Plugin for JwtAuth {
    fn name(&self) -> &str {
        "jwt-auth"
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
        // The claim headers are the gateway's to set: a client never gets to send them.
        for (_, h) in &self.claims_to_headers {
            req.remove_header(h);
        }
        if already_authenticated(ctx) {
            return Ok(Flow::Continue);
        }
        let Some((token, place)) = self.find_token(req) else {
            if self.optional {
                return Ok(Flow::Continue);
            }
            return Ok(Flow::Respond(self.missing.clone()));
        };
        let verified = match self.verify(&token).await {
            Ok(v) => v,
            Err(r) => return Ok(Flow::Respond(self.refusal(r))),
        };
        match &verified.consumer {
            Some(c) => ctx.consumer = Some(c.clone()),
            None => ctx.set_state(Authenticated),
        }
        for (claim, h) in &self.claims_to_headers {
            if let Some(v) = verified.claims.get(claim).and_then(claim_header_value) {
                req.insert_header(h.clone(), v)?;
            }
        }
        if self.hide_credentials {
            self.hide(req, ctx, place)?;
        }
        Ok(Flow::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{request, HarnessEnv, PluginHarness};
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;
    use std::io::Write;
    use std::process::{Command, Stdio};

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn now() -> i64 {
        jsonwebtoken::get_current_timestamp() as i64
    }

    fn consumer(id: &str, creds: serde_json::Value) -> Arc<Consumer> {
        Arc::new(Consumer {
            id: id.into(),
            groups: vec![],
            labels: Default::default(),
            credentials: creds.as_object().unwrap().clone().into_iter().collect(),
        })
    }

    /// A private and a public PEM key made by the `openssl` command.
    fn openssl_keypair(args: &[&str]) -> (String, String) {
        let private = Command::new("openssl")
            .arg("genpkey")
            .args(args)
            .output()
            .unwrap();
        assert!(private.status.success());
        let mut child = Command::new("openssl")
            .args(["pkey", "-pubout"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(&private.stdout)
            .unwrap();
        let public = child.wait_with_output().unwrap();
        (
            String::from_utf8(private.stdout).unwrap(),
            String::from_utf8(public.stdout).unwrap(),
        )
    }

    fn hs_token(kid: Option<&str>, claims: serde_json::Value) -> String {
        let mut h = Header::new(Algorithm::HS256);
        h.kid = kid.map(str::to_string);
        encode(&h, &claims, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
    }

    fn env() -> HarnessEnv {
        HarnessEnv {
            consumers: vec![consumer(
                "alice",
                json!({"jwt-auth": {"key": "alice-kid", "algorithm": "HS256", "secret": SECRET}}),
            )],
            ..Default::default()
        }
    }

    async fn run(
        config: serde_json::Value,
        env: &HarnessEnv,
        req: &mut RequestHeader,
    ) -> (PluginHarness, Option<PluginResponse>) {
        let mut h = PluginHarness::from_config_with(&factory(), config, env).unwrap();
        let flow = h.request(req).await.unwrap();
        let resp = match flow {
            Flow::Continue => None,
            Flow::Respond(r) => Some(r),
        };
        (h, resp)
    }

    fn bearer(t: &str) -> String {
        format!("Bearer {t}")
    }

    fn body(r: &PluginResponse) -> String {
        String::from_utf8(r.body.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn valid_token_sets_consumer_and_claim_headers() {
        let t = hs_token(
            Some("alice-kid"),
            json!({"exp": now() + 60, "sub": "u1", "roles": ["a", "b"]}),
        );
        let mut req = request("GET", "/")
            .header("authorization", &bearer(&t))
            .header("x-user", "forged")
            .build();
        let cfg = json!({"claims_to_headers": {"sub": "x-user", "roles": "x-roles"}});
        let (h, resp) = run(cfg, &env(), &mut req).await;
        assert!(resp.is_none());
        assert_eq!(h.ctx.consumer.as_ref().unwrap().id, "alice");
        assert_eq!(req.headers.get("x-user").unwrap(), "u1");
        assert_eq!(req.headers.get("x-roles").unwrap(), "a,b");
        // Not hidden by default.
        assert!(req.headers.get("authorization").is_some());
    }

    #[tokio::test]
    async fn verified_tokens_are_cached_until_they_expire() {
        let env = env();
        let build_env = BuildEnv {
            consumers: &env.consumers,
            upstream_ids: &env.upstream_ids,
            base_dir: &env.base_dir,
            scope: &env.scope,
            services: &env.services,
        };
        let config: JwtAuthConfig = serde_json::from_value(json!({})).unwrap();
        let plugin = JwtAuth::new(config, &build_env).unwrap();
        let t = hs_token(Some("alice-kid"), json!({"exp": now() + 60}));
        let first = plugin.verify(&t).await.ok().unwrap();
        let again = plugin.verify(&t).await.ok().unwrap();
        assert!(
            Arc::ptr_eq(&first, &again),
            "the second use comes from the cache"
        );
        assert_eq!(first.consumer.as_ref().unwrap().id, "alice");

        // A token that expires while cached is checked in full again, and refused as expired.
        let stale = hs_token(Some("alice-kid"), json!({"exp": now() - 10}));
        let tag = plugin.verified.tag(&[stale.as_bytes()]);
        let cached = VerifiedToken {
            claims: Map::new(),
            consumer: None,
            key: first.key.clone(),
            kid: Some("alice-kid".into()),
            exp: Some(now() as u64 - 10),
        };
        plugin.verified.insert(
            tag,
            Arc::new(cached),
            Instant::now() + std::time::Duration::from_secs(60),
        );
        assert_eq!(plugin.verify(&stale).await.err(), Some(Refusal::Expired));
        assert_eq!(plugin.verified.get(&tag).map(|_| ()), None, "dropped");

        // Refusals are never kept.
        let at = t.rfind('.').unwrap() + 5;
        let flipped = if &t[at..=at] == "A" { "B" } else { "A" };
        let forged = format!("{}{flipped}{}", &t[..at], &t[at + 1..]);
        for _ in 0..2 {
            assert_eq!(plugin.verify(&forged).await.err(), Some(Refusal::Invalid));
        }
        assert_eq!(plugin.verified.len(), 1);
    }

    #[tokio::test]
    async fn refusals_by_category() {
        let n = now();
        let cases = [
            (
                hs_token(Some("alice-kid"), json!({"exp": n - 10})),
                "token expired",
            ),
            (
                hs_token(Some("alice-kid"), json!({"exp": n + 60, "nbf": n + 30})),
                "token not yet valid",
            ),
            (
                hs_token(Some("alice-kid"), json!({"sub": "no-exp"})),
                "token claims rejected",
            ),
            (
                hs_token(Some("alice-kid"), json!({"exp": n + 60, "iss": "evil"})),
                "token claims rejected",
            ),
            (
                hs_token(
                    Some("alice-kid"),
                    json!({"exp": n + 60, "iss": "idp", "aud": "other"}),
                ),
                "token claims rejected",
            ),
            (
                hs_token(Some("alice-kid"), json!({"exp": n + 60, "iss": "idp"})),
                "token claims rejected",
            ),
            (
                hs_token(
                    Some("bob-kid"),
                    json!({"exp": n + 60, "iss": "idp", "aud": "api"}),
                ),
                "invalid token",
            ),
            ("not.a.token".to_string(), "invalid token"),
            // alg: none, unsigned.
            (
                format!(
                    "eyJhbGciOiJub25lIiwia2lkIjoiYWxpY2Uta2lkIn0.{}.",
                    "eyJleHAiOjk5OTk5OTk5OTl9"
                ),
                "invalid token",
            ),
        ];
        for (token, expect) in cases {
            let mut req = request("GET", "/")
                .header("authorization", &bearer(&token))
                .build();
            let (h, resp) = run(
                json!({"issuer": "idp", "audience": ["api"]}),
                &env(),
                &mut req,
            )
            .await;
            let resp = resp.unwrap_or_else(|| panic!("accepted {token}"));
            assert_eq!(resp.status, 401);
            assert!(body(&resp).contains(expect), "{token}: {}", body(&resp));
            assert_eq!(
                resp.header("www-authenticate").unwrap(),
                "Bearer realm=\"gatehouse\", error=\"invalid_token\""
            );
            assert!(h.ctx.consumer.is_none());
        }
        // Tampered payload: the signature no longer matches.
        let t = hs_token(Some("alice-kid"), json!({"exp": n + 60, "sub": "a"}));
        let parts: Vec<&str> = t.split('.').collect();
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            hs_token(None, json!({"exp": n + 60, "sub": "b"}))
                .split('.')
                .nth(1)
                .unwrap(),
            parts[2]
        );
        let mut req = request("GET", "/")
            .header("authorization", &bearer(&forged))
            .build();
        let (_, resp) = run(json!({}), &env(), &mut req).await;
        assert!(body(&resp.unwrap()).contains("invalid token"));
    }

    #[tokio::test]
    async fn leeway_allows_recent_expiry() {
        let t = hs_token(Some("alice-kid"), json!({"exp": now() - 5}));
        let mut req = request("GET", "/")
            .header("authorization", &bearer(&t))
            .build();
        let (_, resp) = run(json!({"leeway": "30s"}), &env(), &mut req).await;
        assert!(resp.is_none());
    }

    #[tokio::test]
    async fn token_places_and_hiding() {
        let t = hs_token(Some("alice-kid"), json!({"exp": now() + 60}));
        // Query, when configured; hidden on request.
        let mut req = request("GET", &format!("/p?a=1&jwt={t}")).build();
        let (h, resp) = run(
            json!({"query": "jwt", "hide_credentials": true}),
            &env(),
            &mut req,
        )
        .await;
        assert!(resp.is_none());
        assert_eq!(h.ctx.upstream_path.as_deref(), Some("/p?a=1"));
        // Not in the query when only the header is configured.
        let mut req = request("GET", &format!("/p?jwt={t}")).build();
        let (_, resp) = run(json!({}), &env(), &mut req).await;
        let resp = resp.unwrap();
        assert!(body(&resp).contains("missing token"));
        assert_eq!(
            resp.header("www-authenticate").unwrap(),
            "Bearer realm=\"gatehouse\""
        );
        // Cookie.
        let mut req = request("GET", "/")
            .header("cookie", &format!("a=b; session={t}"))
            .build();
        let (h, resp) = run(
            json!({"cookie": "session", "hide_credentials": true}),
            &env(),
            &mut req,
        )
        .await;
        assert!(resp.is_none());
        assert_eq!(h.ctx.consumer.as_ref().unwrap().id, "alice");
        assert_eq!(req.headers.get("cookie").unwrap(), "a=b");
        // Another header, with or without the scheme.
        let mut req = request("GET", "/").header("x-token", &t).build();
        let (_, resp) = run(json!({"header": "x-token"}), &env(), &mut req).await;
        assert!(resp.is_none());
        // Another scheme in Authorization is not a token.
        let mut req = request("GET", "/")
            .header("authorization", "Basic abc")
            .build();
        let (_, resp) = run(json!({"optional": true}), &env(), &mut req).await;
        assert!(resp.is_none());
    }

    #[tokio::test]
    async fn key_claim_finds_the_key_of_a_token_without_kid() {
        let t = hs_token(None, json!({"exp": now() + 60, "iss": "alice-kid"}));
        let mut req = request("GET", "/")
            .header("authorization", &bearer(&t))
            .build();
        let (h, resp) = run(json!({}), &env(), &mut req).await;
        assert!(resp.is_none());
        assert_eq!(h.ctx.consumer.as_ref().unwrap().id, "alice");
        let t = hs_token(None, json!({"exp": now() + 60}));
        let mut req = request("GET", "/")
            .header("authorization", &bearer(&t))
            .build();
        let (_, resp) = run(json!({}), &env(), &mut req).await;
        assert!(body(&resp.unwrap()).contains("invalid token"));
    }

    #[tokio::test]
    async fn algorithm_is_pinned_by_the_key() {
        let (rsa_private, rsa_public) =
            openssl_keypair(&["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]);
        let (ec_private, ec_public) =
            openssl_keypair(&["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]);
        let env = HarnessEnv {
            consumers: vec![
                consumer(
                    "rsa",
                    json!({"jwt-auth": {"key": "r", "algorithm": "RS256", "public_key": rsa_public}}),
                ),
                consumer(
                    "ec",
                    json!({"jwt-auth": {"key": "e", "algorithm": "ES256", "public_key": ec_public}}),
                ),
            ],
            ..Default::default()
        };
        let claims = json!({"exp": now() + 60});
        let sign = |alg: Algorithm, kid: &str, key: &EncodingKey| {
            let mut h = Header::new(alg);
            h.kid = Some(kid.into());
            encode(&h, &claims, key).unwrap()
        };
        let good_rs = sign(
            Algorithm::RS256,
            "r",
            &EncodingKey::from_rsa_pem(rsa_private.as_bytes()).unwrap(),
        );
        let good_es = sign(
            Algorithm::ES256,
            "e",
            &EncodingKey::from_ec_pem(ec_private.as_bytes()).unwrap(),
        );
        // The RSA public key used as an HMAC secret: the classic confusion.
        let confused = sign(
            Algorithm::HS256,
            "r",
            &EncodingKey::from_secret(rsa_public.as_bytes()),
        );
        let rs384 = sign(
            Algorithm::RS384,
            "r",
            &EncodingKey::from_rsa_pem(rsa_private.as_bytes()).unwrap(),
        );
        for (token, ok, who) in [
            (good_rs, true, "rsa"),
            (good_es, true, "ec"),
            (confused, false, ""),
            (rs384, false, ""),
        ] {
            let mut req = request("GET", "/")
                .header("authorization", &bearer(&token))
                .build();
            let (h, resp) = run(json!({}), &env, &mut req).await;
            assert_eq!(resp.is_none(), ok, "{token}");
            if ok {
                assert_eq!(h.ctx.consumer.as_ref().unwrap().id, who);
            }
        }
        // Keys that do not fit their algorithm are config errors.
        for (cred, expect) in [
            (
                json!({"key": "k", "algorithm": "ES384", "public_key": ec_public}),
                "not on the curve",
            ),
            (
                json!({"key": "k", "algorithm": "ES256", "public_key": rsa_public}),
                "not a PEM public key for ES256",
            ),
            (
                json!({"key": "k", "algorithm": "RS256", "public_key": rsa_private}),
                "holds a private key",
            ),
            (
                json!({"key": "k", "algorithm": "RS256", "secret": SECRET}),
                "takes `public_key`",
            ),
            (
                json!({"key": "k", "algorithm": "HS256", "secret": "short"}),
                "needs at least 32",
            ),
            (
                json!({"key": "k", "algorithm": "HS512", "public_key": rsa_public}),
                "takes `secret`",
            ),
            (
                json!({"key": "k", "algorithm": "none", "secret": SECRET}),
                "unknown variant `none`",
            ),
            (
                json!({"key": "k", "algorithm": "RS256", "public_key": "/nonexistent.pem"}),
                "cannot read /nonexistent.pem",
            ),
        ] {
            let env = HarnessEnv {
                consumers: vec![consumer("c", json!({"jwt-auth": cred}))],
                ..Default::default()
            };
            let err = PluginHarness::from_config_with(&factory(), json!({}), &env)
                .err()
                .unwrap();
            assert!(
                err.message
                    .starts_with("consumer \"c\": jwt-auth credential"),
                "{err}"
            );
            assert!(err.message.contains(expect), "{err}");
        }
    }

    #[tokio::test]
    async fn jwks_file_with_consumer_claim() {
        let dir = std::env::temp_dir().join(format!("jwks-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let k = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, SECRET);
        std::fs::write(
            dir.join("jwks.json"),
            json!({"keys": [{"kty": "oct", "kid": "k1", "alg": "HS256", "k": k}]}).to_string(),
        )
        .unwrap();
        let env = HarnessEnv {
            base_dir: dir.clone(),
            ..env()
        };
        let cfg = json!({"jwks_file": "jwks.json", "consumer_claim": "sub"});
        let t = hs_token(Some("k1"), json!({"exp": now() + 60, "sub": "alice"}));
        let mut req = request("GET", "/")
            .header("authorization", &bearer(&t))
            .build();
        let (h, resp) = run(cfg.clone(), &env, &mut req).await;
        assert!(resp.is_none());
        assert_eq!(h.ctx.consumer.as_ref().unwrap().id, "alice");
        // A valid token whose subject is no consumer proceeds without one.
        let t = hs_token(Some("k1"), json!({"exp": now() + 60, "sub": "stranger"}));
        let mut req = request("GET", "/")
            .header("authorization", &bearer(&t))
            .build();
        let (h, resp) = run(cfg.clone(), &env, &mut req).await;
        assert!(resp.is_none());
        assert!(h.ctx.consumer.is_none());
        assert!(super::super::credentials::already_authenticated(&h.ctx));
        // Consumers' keys are not used in JWKS mode.
        let t = hs_token(Some("alice-kid"), json!({"exp": now() + 60}));
        let mut req = request("GET", "/")
            .header("authorization", &bearer(&t))
            .build();
        let (_, resp) = run(cfg, &env, &mut req).await;
        assert_eq!(resp.unwrap().status, 401);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn config_errors() {
        let cases = [
            (
                json!({"consumer_claim": "sub"}),
                "consumer_claim",
                "only used with",
            ),
            (
                json!({"jwks_uri": "http://x/", "jwks_file": "f"}),
                "",
                "not both",
            ),
            (json!({"jwks_uri": "ftp://x/"}), "jwks_uri", "http://"),
            (json!({"jwks_uri": "nope"}), "jwks_uri", "not a URL"),
            (
                json!({"jwks_file": "/nonexistent.json"}),
                "jwks_file",
                "cannot read",
            ),
            (json!({"header": null}), "", "no place to look"),
            (json!({"issuer": []}), "issuer", "non-empty"),
            (
                json!({"issuer": 5}),
                "issuer",
                "a string or a list of strings",
            ),
            (json!({"leeway": 5}), "leeway", "ambiguous"),
            (
                json!({"claims_to_headers": {"sub": "bad header"}}),
                "claims_to_headers.sub",
                "not a valid header name",
            ),
            (
                json!({"claims_to_headers": {"a": "x-h", "b": "X-H"}}),
                "claims_to_headers.b",
                "two claims",
            ),
        ];
        for (cfg, path, expect) in cases {
            let err = PluginHarness::from_config_with(&factory(), cfg.clone(), &env())
                .err()
                .unwrap_or_else(|| panic!("{cfg}"));
            assert_eq!(err.path, path, "{cfg}: {err}");
            assert!(err.message.contains(expect), "{cfg}: {err}");
        }
        let dup = HarnessEnv {
            consumers: vec![
                consumer("a", json!({"jwt-auth": {"key": "k", "secret": SECRET}})),
                consumer("b", json!({"jwt-auth": {"key": "k", "secret": SECRET}})),
            ],
            ..Default::default()
        };
        let err = PluginHarness::from_config_with(&factory(), json!({}), &dup)
            .err()
            .unwrap();
        assert!(err.message.contains("already another consumer's"), "{err}");
    }
}
