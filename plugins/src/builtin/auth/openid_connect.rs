//! `openid-connect`: the gateway as an OAuth 2.0 resource server of an OpenID Connect
//! identity provider (IdP). Bearer access tokens are validated locally with the IdP's signing
//! keys (`mode: jwt`) or by asking its introspection endpoint (RFC 7662,
//! `mode: introspection`). Browser login flows are not part of it.
//!
//! ```text
//! OpenIdConnect ─┬─ Provider ─┬─ Fixed(Endpoints)           issuer + jwks_uri, introspection.endpoint
//!                │            └─ Discovered(Discovery)       discovery URL
//!                │                    │ watch channel (last good Endpoints)
//!                │                    ▼
//!                │              discovery thread: fetch the metadata document, build Endpoints;
//!                │              retried with backoff until it succeeds, then hourly
//!                │
//!                │  Endpoints ── issuer, RemoteJwks (jwks.rs: refreshed in the background and
//!                │               when a token names an unknown kid), introspection URL
//!                │
//!                └─ Introspector ── HTTP client, Basic client credentials,
//!                                   results cached by the SHA-256 of the token
//! ```
//!
//! Nothing here touches the network while a config loads: the discovery thread starts with
//! the first request (or at once when the plugin is built by a reload, inside a runtime).

use super::credentials::{
    already_authenticated, challenge, strip_scheme, unauthorized, Authenticated, REALM,
};
use super::jwks::{RemoteJwks, VerifyKey};
use super::jwt_claims::{decode_claims, Refusal};
use super::verified::VerifiedCache;
use crate::context::{Consumer, RequestContext};
use crate::factory::{BuildEnv, ConfigError, TypedFactory};
use crate::plugin::{Flow, Phases, Plugin};
use crate::response::PluginResponse;
use crate::units::Duration;
use async_trait::async_trait;
use base64::Engine as _;
use dashmap::DashMap;
use http::header::{HeaderName, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use pingora_error::Result;
use pingora_http::RequestHeader;
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration as StdDuration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// Config of `openid-connect`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenIdConnectConfig {
    /// The IdP's discovery document (`https://idp/.well-known/openid-configuration`); the
    /// issuer, JWKS URL and introspection endpoint are read from it.
    pub discovery: Option<String>,
    /// The issuer (`iss`) tokens must carry. Required with `jwks_uri`; with `discovery`, the
    /// document's issuer must be this one.
    pub issuer: Option<String>,
    /// The IdP's JWKS URL, instead of `discovery`.
    pub jwks_uri: Option<String>,
    /// How often the JWKS is fetched again (default `5m`).
    #[serde(default = "default_jwks_refresh")]
    pub jwks_refresh_interval: Duration,
    /// `jwt` (validate locally; the default) or `introspection` (the default when an
    /// `introspection` block is given).
    pub mode: Option<Mode>,
    /// Accepted `aud` values (a string or a list); when set, `aud` is required.
    #[serde(default)]
    pub audience: Option<StringList>,
    /// Scopes every token must grant (from `scope`, space-separated, or `scp`).
    #[serde(default)]
    pub required_scopes: Vec<String>,
    /// Clock skew allowed on `exp` and `nbf` (default `0s`).
    #[serde(default)]
    pub leeway: Duration,
    /// Signature algorithms accepted (default RS256, RS384, RS512, PS256, PS384, PS512,
    /// ES256, ES384). HS256/HS384/HS512 need `client_secret`.
    pub algorithms: Option<Vec<Algorithm>>,
    /// The client secret the IdP signs HS* tokens with.
    pub client_secret: Option<String>,
    /// Token introspection (RFC 7662) for opaque tokens.
    pub introspection: Option<IntrospectionConfig>,
    /// Claims copied into headers of the request sent upstream (claim → header). Client-sent
    /// headers of these names are always removed.
    #[serde(default)]
    pub claims_to_headers: BTreeMap<String, String>,
    /// A claim whose value is a consumer id: the request then proceeds as that consumer.
    pub consumer_claim: Option<String>,
    /// Remove `Authorization` from the request sent upstream (default false).
    #[serde(default)]
    pub hide_credentials: bool,
    /// When the request carries no bearer token, continue unauthenticated instead of
    /// answering 401. An invalid token is still refused.
    #[serde(default)]
    pub optional: bool,
}

/// How tokens are validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Signed JWTs, verified with the IdP's JWKS.
    Jwt,
    /// Any token, sent to the IdP's introspection endpoint.
    Introspection,
}

/// The `introspection` block.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntrospectionConfig {
    /// The introspection endpoint; with `discovery`, defaults to the document's
    /// `introspection_endpoint`.
    pub endpoint: Option<String>,
    /// The gateway's client id at the IdP.
    pub client_id: String,
    /// The gateway's client secret at the IdP.
    pub client_secret: String,
    /// How long an answer is reused (default `30s`; never beyond the token's `exp`; `0s`
    /// turns caching off).
    #[serde(default = "default_cache_ttl")]
    pub cache_ttl: Duration,
    /// How many answers are kept at most (default 10000).
    #[serde(default = "default_cache_size")]
    pub cache_size: usize,
    /// How long one introspection call may take (default `2s`).
    #[serde(default = "default_timeout")]
    pub timeout: Duration,
}

fn default_jwks_refresh() -> Duration {
    Duration::from_secs(300)
}

fn default_cache_ttl() -> Duration {
    Duration::from_secs(30)
}

fn default_cache_size() -> usize {
    10_000
}

fn default_timeout() -> Duration {
    Duration::from_secs(2)
}

fn default_algorithms() -> Vec<Algorithm> {
    vec![
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
        Algorithm::ES256,
        Algorithm::ES384,
    ]
}

/// One string or a list of strings.
#[derive(Debug, Clone)]
pub struct StringList(pub Vec<String>);

impl<'de> Deserialize<'de> for StringList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = StringList;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<StringList, E> {
                Ok(StringList(vec![v.to_owned()]))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<StringList, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<String>()? {
                    items.push(item);
                }
                Ok(StringList(items))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// Priority of `openid-connect`: before the other auth plugins.
pub const PRIORITY: i32 = 2540;

/// The longest token looked at; anything longer is refused unread.
const MAX_TOKEN_LEN: usize = 16 * 1024;
/// How long one discovery fetch may take.
const FETCH_TIMEOUT: StdDuration = StdDuration::from_secs(5);
/// The largest discovery document or introspection answer accepted.
const MAX_DOCUMENT_BYTES: usize = 256 * 1024;
/// How long a request waits for the first discovery fetch.
const REQUEST_WAIT: StdDuration = StdDuration::from_secs(5);
/// How often a discovery document that was fetched is fetched again.
const DISCOVERY_REFRESH: StdDuration = StdDuration::from_secs(3600);
/// The first retry after a failed discovery fetch; it doubles up to `MAX_RETRY`.
const FIRST_RETRY: StdDuration = StdDuration::from_secs(1);
const MAX_RETRY: StdDuration = StdDuration::from_secs(30);

/// The factory for `openid-connect`.
pub fn factory() -> impl crate::PluginFactory {
    super::jwt_crypto::install();
    TypedFactory::new("openid-connect", PRIORITY, OpenIdConnect::new)
}

/// What the plugin knows about the IdP once its endpoints are known.
struct Endpoints {
    /// The issuer tokens must name (`None` only in introspection mode without one).
    issuer: Option<String>,
    /// Signing keys (jwt mode).
    jwks: Option<RemoteJwks>,
    /// The introspection endpoint (introspection mode).
    introspection: Option<reqwest::Url>,
}

/// What is needed to turn a discovery document into [`Endpoints`].
struct Settings {
    mode: Mode,
    issuer: Option<String>,
    jwks_refresh: StdDuration,
    /// The claim checks of JWTs; the algorithm is pinned per key.
    template: Validation,
    introspection: Option<reqwest::Url>,
}

impl Endpoints {
    /// Endpoints from an issuer and the URLs given in config or discovered.
    fn new(
        issuer: Option<String>,
        jwks_uri: Option<&str>,
        introspection: Option<reqwest::Url>,
        s: &Settings,
    ) -> Result<Endpoints, String> {
        let jwks = match s.mode {
            Mode::Jwt => {
                let uri = jwks_uri.ok_or("no `jwks_uri`")?;
                http_url(uri).map_err(|e| format!("`jwks_uri` {e}"))?;
                Some(RemoteJwks::new(uri, s.jwks_refresh, s.template.clone()))
            }
            Mode::Introspection => None,
        };
        if s.mode == Mode::Introspection && introspection.is_none() {
            return Err("no `introspection_endpoint`".into());
        }
        Ok(Endpoints {
            issuer,
            jwks,
            introspection,
        })
    }
}

/// The parts of an OpenID Provider Metadata document (OpenID Connect Discovery 1.0 §3) used.
#[derive(Debug, Clone, PartialEq, Deserialize)]
struct Metadata {
    issuer: String,
    #[serde(default)]
    jwks_uri: Option<String>,
    #[serde(default)]
    introspection_endpoint: Option<String>,
}

fn parse_metadata(body: &[u8], s: &Settings) -> Result<Metadata, String> {
    let meta: Metadata = serde_json::from_slice(body)
        .map_err(|e| format!("not an OpenID Provider Metadata document ({e})"))?;
    if meta.issuer.is_empty() {
        return Err("the document's `issuer` is empty".into());
    }
    if let Some(expected) = &s.issuer {
        if *expected != meta.issuer {
            return Err(format!(
                "the document's issuer {:?} is not the configured {expected:?}",
                meta.issuer
            ));
        }
    }
    Ok(meta)
}

/// The endpoints a discovery document names (the configured introspection endpoint wins).
/// Call it inside a runtime, so that the JWKS refresher starts at once.
fn discovered_endpoints(meta: &Metadata, s: &Settings) -> Result<Endpoints, String> {
    let introspection = match (&s.introspection, &meta.introspection_endpoint) {
        (Some(configured), _) => Some(configured.clone()),
        (None, Some(found)) if s.mode == Mode::Introspection => {
            Some(http_url(found).map_err(|e| format!("`introspection_endpoint` {e}"))?)
        }
        _ => None,
    };
    Endpoints::new(
        Some(meta.issuer.clone()),
        meta.jwks_uri.as_deref(),
        introspection,
        s,
    )
}

/// What the discovery thread publishes.
#[derive(Clone, Default)]
struct Published {
    /// The endpoints of the last good document.
    endpoints: Option<Arc<Endpoints>>,
    /// Fetch attempts so far, so that waiters wake on failures too.
    attempts: u64,
}

/// The last discovery document fetched successfully from each URL, so that a plugin built by
/// a config reload starts with the IdP's endpoints instead of waiting for (or, with the IdP
/// down, failing) its first fetch.
fn last_good() -> &'static Mutex<HashMap<String, Arc<Vec<u8>>>> {
    static LAST_GOOD: std::sync::OnceLock<Mutex<HashMap<String, Arc<Vec<u8>>>>> =
        std::sync::OnceLock::new();
    LAST_GOOD.get_or_init(Default::default)
}

/// What the discovery thread starts with.
struct Pending {
    tx: watch::Sender<Published>,
    stop: mpsc::Receiver<()>,
    /// The document behind the initial endpoints, if any.
    current: Option<Metadata>,
}

struct DiscoveryControl {
    /// The thread's ends of the channels, until it starts.
    pending: Option<Pending>,
    /// Never sent on: dropping it (with the plugin) ends the thread's wait at once.
    _stop: mpsc::SyncSender<()>,
}

/// The discovery document, fetched by a background thread.
struct Discovery {
    url: Arc<str>,
    settings: Arc<Settings>,
    published: watch::Receiver<Published>,
    control: Mutex<DiscoveryControl>,
}

impl Discovery {
    fn new(url: &str, settings: Settings) -> Discovery {
        let body = last_good().lock().ok().and_then(|m| m.get(url).cloned());
        let initial = body
            .and_then(|b| parse_metadata(&b, &settings).ok())
            .and_then(|meta| {
                let endpoints = discovered_endpoints(&meta, &settings).ok()?;
                Some((meta, Arc::new(endpoints)))
            });
        let (current, endpoints) = initial.unzip();
        let (tx, rx) = watch::channel(Published {
            endpoints,
            attempts: 0,
        });
        let (stop, stop_rx) = mpsc::sync_channel(1);
        let discovery = Discovery {
            url: Arc::from(url),
            settings: Arc::new(settings),
            published: rx,
            control: Mutex::new(DiscoveryControl {
                pending: Some(Pending {
                    tx,
                    stop: stop_rx,
                    current,
                }),
                _stop: stop,
            }),
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            discovery.start();
        }
        discovery
    }

    /// Starts the discovery thread unless it runs already.
    fn start(&self) {
        let Ok(mut control) = self.control.lock() else {
            return;
        };
        let Some(pending) = control.pending.take() else {
            return;
        };
        let url = self.url.clone();
        let settings = self.settings.clone();
        let spawned = std::thread::Builder::new()
            .name("oidc-discovery".into())
            .spawn(move || discovery_loop(&url, &settings, pending));
        if let Err(e) = spawned {
            log::error!(
                "openid-connect: cannot start the discovery of {}: {e}",
                self.url
            );
        }
    }

    /// The endpoints, waiting for the first fetch if it is under way.
    async fn endpoints(&self) -> Option<Arc<Endpoints>> {
        {
            let published = self.published.borrow();
            if let (Some(e), true) = (&published.endpoints, published.attempts > 0) {
                return Some(e.clone());
            }
        }
        self.start();
        let mut rx = self.published.clone();
        let first = rx.borrow_and_update().clone();
        if first.endpoints.is_some() || first.attempts > 0 {
            // Endpoints from the last good document, or the first fetch failed.
            return first.endpoints;
        }
        let _ = tokio::time::timeout(REQUEST_WAIT, rx.changed()).await;
        let endpoints = rx.borrow().endpoints.clone();
        endpoints
    }
}

fn discovery_loop(url: &str, settings: &Settings, pending: Pending) {
    let Pending {
        tx,
        stop,
        mut current,
    } = pending;
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            log::error!("openid-connect: cannot start the discovery of {url}: {e}");
            return;
        }
    };
    let client = match reqwest::Client::builder().timeout(FETCH_TIMEOUT).build() {
        Ok(c) => c,
        Err(e) => {
            log::error!("openid-connect: cannot build an HTTP client for {url}: {e}");
            return;
        }
    };
    let mut retry = FIRST_RETRY;
    loop {
        let result = runtime
            .block_on(fetch_document(&client, url))
            .and_then(|body| {
                let meta = parse_metadata(&body, settings)?;
                if let Ok(mut m) = last_good().lock() {
                    m.insert(url.to_string(), Arc::new(body));
                }
                Ok(meta)
            })
            .and_then(|meta| {
                if current.as_ref() == Some(&meta) {
                    return Ok(None);
                }
                let endpoints =
                    runtime.block_on(async { discovered_endpoints(&meta, settings) })?;
                Ok(Some((meta, endpoints)))
            });
        let wait = match result {
            Ok(changed) => {
                tx.send_modify(|p| {
                    if let Some((meta, endpoints)) = changed {
                        log::info!("openid-connect: discovered {url}: issuer {:?}", meta.issuer);
                        p.endpoints = Some(Arc::new(endpoints));
                        current = Some(meta);
                    }
                    p.attempts += 1;
                });
                retry = FIRST_RETRY;
                DISCOVERY_REFRESH
            }
            Err(e) => {
                log::warn!(
                    "openid-connect: cannot use the discovery document at {url}: {e}; retrying in {}s",
                    retry.as_secs()
                );
                tx.send_modify(|p| p.attempts += 1);
                let wait = retry;
                retry = (retry * 2).min(MAX_RETRY);
                wait
            }
        };
        if tx.is_closed() {
            return;
        }
        match stop.recv_timeout(wait) {
            Ok(()) | Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
    }
}

async fn fetch_document(client: &reqwest::Client, url: &str) -> Result<Vec<u8>, String> {
    let resp = client
        .get(url)
        .header(ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| e.to_string())?;
    read_json_body(resp).await
}

/// The body of a 2xx answer, at most [`MAX_DOCUMENT_BYTES`].
async fn read_json_body(mut resp: reqwest::Response) -> Result<Vec<u8>, String> {
    if !resp.status().is_success() {
        return Err(format!("status {}", resp.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
            return Err(format!("an answer larger than {MAX_DOCUMENT_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Where the endpoints come from.
enum Provider {
    Fixed(Arc<Endpoints>),
    Discovered(Box<Discovery>),
}

/// One remembered introspection answer.
struct Cached {
    expires: Instant,
    /// The active token's claims; `None` for an inactive token.
    claims: Option<Arc<Map<String, Value>>>,
}

/// What introspection says of a token: its claims when active, `None` when not; or why the
/// IdP could not be asked.
type Answer = Result<Option<Arc<Map<String, Value>>>, String>;

/// Calls to the introspection endpoint and their cache.
struct Introspector {
    client: reqwest::Client,
    /// `Basic base64(client_id:client_secret)`, both form-encoded first (RFC 6749 §2.3.1).
    authorization: HeaderValue,
    cache_ttl: StdDuration,
    cache_size: usize,
    cache: DashMap<[u8; 32], Cached>,
    /// Calls under way, by token digest: concurrent requests with the same token wait for
    /// one answer instead of each asking the IdP.
    in_flight: DashMap<[u8; 32], Arc<tokio::sync::OnceCell<Answer>>>,
    /// When the cache was last swept of expired answers (ms since `epoch`).
    last_sweep: AtomicU64,
    epoch: Instant,
}

/// One caller's share of a call under way; the last one out, finished or cancelled, removes
/// the call (its answer, if any, is in the cache by then).
struct InFlight<'a> {
    calls: &'a DashMap<[u8; 32], Arc<tokio::sync::OnceCell<Answer>>>,
    digest: [u8; 32],
    answer: Arc<tokio::sync::OnceCell<Answer>>,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        // Two holders left: the map and this caller.
        self.calls.remove_if(&self.digest, |_, c| {
            Arc::ptr_eq(c, &self.answer) && Arc::strong_count(c) <= 2
        });
    }
}

impl Introspector {
    fn new(c: &IntrospectionConfig) -> Result<Introspector, ConfigError> {
        if c.client_id.is_empty() {
            return Err(ConfigError::at(
                "introspection.client_id",
                "must not be empty",
            ));
        }
        if c.client_secret.is_empty() {
            return Err(ConfigError::at(
                "introspection.client_secret",
                "must not be empty",
            ));
        }
        if c.timeout.get().is_zero() {
            return Err(ConfigError::at(
                "introspection.timeout",
                "must be more than 0s",
            ));
        }
        let credentials = format!(
            "{}:{}",
            form_encode(&c.client_id),
            form_encode(&c.client_secret)
        );
        let encoded = base64::engine::general_purpose::STANDARD.encode(credentials);
        let mut authorization = HeaderValue::from_str(&format!("Basic {encoded}"))
            .map_err(|_| ConfigError::at("introspection", "unusable client credentials"))?;
        authorization.set_sensitive(true);
        let client = reqwest::Client::builder()
            .timeout(c.timeout.get())
            .connect_timeout(c.timeout.get())
            .build()
            .map_err(|e| {
                ConfigError::at("introspection", format!("cannot build an HTTP client: {e}"))
            })?;
        Ok(Introspector {
            client,
            authorization,
            cache_ttl: c.cache_ttl.get(),
            cache_size: c.cache_size,
            cache: DashMap::new(),
            in_flight: DashMap::new(),
            last_sweep: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    /// The IdP's answer for `token`: its claims when active, `None` when not.
    async fn introspect(&self, endpoint: &reqwest::Url, token: &str) -> Answer {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut expired = false;
        if let Some(hit) = self.cache.get(&digest) {
            if hit.expires > Instant::now() {
                return Ok(hit.claims.clone());
            }
            expired = true;
        }
        if expired {
            self.cache.remove(&digest);
        }
        let call = InFlight {
            calls: &self.in_flight,
            digest,
            answer: self.in_flight.entry(digest).or_default().clone(),
        };
        // When the caller that asks is cancelled, one of the waiting ones asks instead.
        call.answer
            .get_or_init(|| self.ask(endpoint, token, digest))
            .await
            .clone()
    }

    /// Asks the IdP about `token` and remembers an answer it gave.
    async fn ask(&self, endpoint: &reqwest::Url, token: &str, digest: [u8; 32]) -> Answer {
        let asked = Instant::now();
        let claims = self.call(endpoint, token).await?;
        let active = claims.get("active").and_then(Value::as_bool) == Some(true);
        let claims = active.then(|| Arc::new(claims));
        let mut ttl = self.cache_ttl;
        if let Some(c) = &claims {
            let left = numeric(c.get("exp")).map(|exp| exp.saturating_sub(unix_now()));
            if let Some(left) = left {
                ttl = ttl.min(StdDuration::from_secs(left));
            }
        }
        if !ttl.is_zero() && self.cache_size > 0 {
            self.remember(
                digest,
                Cached {
                    expires: asked + ttl,
                    claims: claims.clone(),
                },
            );
        }
        Ok(claims)
    }

    fn remember(&self, digest: [u8; 32], entry: Cached) {
        if self.cache.len() >= self.cache_size {
            // Full: sweep expired answers (at most once a second), then make room.
            let now = Instant::now();
            let ms = now.duration_since(self.epoch).as_millis() as u64;
            let last = self.last_sweep.load(Ordering::Relaxed);
            if ms.saturating_sub(last) >= 1000
                && self
                    .last_sweep
                    .compare_exchange(last, ms, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                self.cache.retain(|_, e| e.expires > now);
            }
            while self.cache.len() >= self.cache_size {
                let victim = self.cache.iter().next().map(|e| *e.key());
                match victim {
                    Some(k) => {
                        self.cache.remove(&k);
                    }
                    None => break,
                }
            }
        }
        self.cache.insert(digest, entry);
    }

    /// One introspection request (RFC 7662 §2.1).
    async fn call(
        &self,
        endpoint: &reqwest::Url,
        token: &str,
    ) -> Result<Map<String, Value>, String> {
        let body = format!("token={}&token_type_hint=access_token", form_encode(token));
        let resp = self
            .client
            .post(endpoint.clone())
            .header(AUTHORIZATION, self.authorization.clone())
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(ACCEPT, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let body = read_json_body(resp).await?;
        serde_json::from_slice::<Map<String, Value>>(&body)
            .map_err(|e| format!("not a JSON object ({e})"))
    }
}

/// `s` in `application/x-www-form-urlencoded` form: unreserved characters as they are, a
/// space as `+`, every other byte as `%XX`.
fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => {
                const HEX: &[u8; 16] = b"0123456789ABCDEF";
                out.push('%');
                out.push(HEX[(b >> 4) as usize] as char);
                out.push(HEX[(b & 15) as usize] as char);
            }
        }
    }
    out
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A NumericDate claim (seconds, possibly fractional) as whole seconds.
fn numeric(v: Option<&Value>) -> Option<u64> {
    let v = v?;
    v.as_u64()
        .or_else(|| v.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
}

/// An `http://` or `https://` URL.
fn http_url(s: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(s).map_err(|e| format!("is not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("must be an http:// or https:// URL".into());
    }
    Ok(url)
}

/// Why a request could not be authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    Refused(Refusal),
    /// The IdP could not be asked (discovery, JWKS or introspection unavailable).
    Unavailable,
}

impl From<Refusal> for Failure {
    fn from(r: Refusal) -> Failure {
        Failure::Refused(r)
    }
}

/// The `openid-connect` plugin.
pub struct OpenIdConnect {
    mode: Mode,
    provider: Provider,
    /// Accepted signature algorithms (jwt mode).
    algorithms: Vec<Algorithm>,
    /// The client secret and the claim checks pinned to each accepted HS* algorithm.
    hmac: Option<(DecodingKey, Vec<(Algorithm, Validation)>)>,
    audience: Option<Vec<String>>,
    leeway: u64,
    required_scopes: Vec<String>,
    introspector: Option<Introspector>,
    claims_to_headers: Vec<(String, HeaderName)>,
    consumer_claim: Option<(String, HashMap<String, Arc<Consumer>>)>,
    hide_credentials: bool,
    optional: bool,
    missing: PluginResponse,
    invalid: PluginResponse,
    expired: PluginResponse,
    not_yet_valid: PluginResponse,
    claims_rejected: PluginResponse,
    insufficient_scope: PluginResponse,
    unavailable: PluginResponse,
    /// JWTs that passed every check recently (jwt mode).
    verified: VerifiedCache<Arc<VerifiedJwt>>,
}

/// A JWT that passed every check, with what its reuse depends on.
struct VerifiedJwt {
    claims: Arc<Map<String, Value>>,
    /// The IdP settings it was checked against: a refreshed discovery document makes the
    /// token go through the checks again.
    endpoints: Arc<Endpoints>,
    /// The JWKS key that verified it and the `kid` that found it (`None` for the client
    /// secret, which only a reload changes).
    key: Option<(Arc<VerifyKey>, Option<String>)>,
    /// `exp` (seconds since the epoch), checked again on every use.
    exp: Option<u64>,
}

/// A verified JWT's claims, and the JWKS key and `kid` that verified it (none for the client
/// secret).
type JwtProof = (Map<String, Value>, Option<(Arc<VerifyKey>, Option<String>)>);

/// Whether the JWKS key that verified `token` is still the one its `kid` finds.
async fn key_current(token: &VerifiedJwt) -> bool {
    let Some((key, kid)) = &token.key else {
        return true;
    };
    let Some(jwks) = &token.endpoints.jwks else {
        return false;
    };
    jwks.key(kid.as_deref())
        .await
        .is_some_and(|k| Arc::ptr_eq(&k, key))
}

/// How long a verified JWT is taken from the cache at most (never past its `exp`).
const VERIFIED_TTL: StdDuration = StdDuration::from_secs(60);
/// How many verified JWTs are kept per plugin instance.
const VERIFIED_MAX: usize = 4096;

/// The smallest HMAC key RFC 7518 §3.2 allows for `alg`.
fn min_secret_len(alg: Algorithm) -> usize {
    match alg {
        Algorithm::HS384 => 48,
        Algorithm::HS512 => 64,
        _ => 32,
    }
}

/// Whether `s` is a scope token (RFC 6749 §3.3): printable ASCII without space, `"`, `\`.
fn is_scope_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
}

/// The mode, checked against the keys that go with it, and the configured introspection
/// endpoint.
fn check_mode(
    c: &OpenIdConnectConfig,
    discovery: &Option<reqwest::Url>,
    jwks_uri: &Option<reqwest::Url>,
) -> Result<(Mode, Option<reqwest::Url>), ConfigError> {
    let mode = match (c.mode, &c.introspection) {
        (Some(m), _) => m,
        (None, Some(_)) => Mode::Introspection,
        (None, None) => Mode::Jwt,
    };
    if mode == Mode::Jwt {
        if c.introspection.is_some() {
            return Err(ConfigError::at(
                "introspection",
                "only used with `mode: introspection`",
            ));
        }
        return match (discovery, jwks_uri) {
            (Some(_), Some(_)) => Err(ConfigError::whole(
                "set either `discovery` or `jwks_uri`, not both",
            )),
            (None, None) => Err(ConfigError::whole(
                "set `discovery`, or `issuer` and `jwks_uri`",
            )),
            (None, Some(_)) if c.issuer.is_none() => {
                Err(ConfigError::at("issuer", "is required with `jwks_uri`"))
            }
            _ => Ok((mode, None)),
        };
    }
    let Some(intro) = &c.introspection else {
        return Err(ConfigError::at(
            "introspection",
            "is required with `mode: introspection`",
        ));
    };
    for (key, set) in [
        ("jwks_uri", c.jwks_uri.is_some()),
        ("algorithms", c.algorithms.is_some()),
        ("client_secret", c.client_secret.is_some()),
    ] {
        if set {
            return Err(ConfigError::at(key, "only used with `mode: jwt`"));
        }
    }
    let endpoint = intro
        .endpoint
        .as_deref()
        .map(|u| http_url(u).map_err(|e| ConfigError::at("introspection.endpoint", e)))
        .transpose()?;
    if endpoint.is_none() && discovery.is_none() {
        return Err(ConfigError::at(
            "introspection.endpoint",
            "is required unless `discovery` is set",
        ));
    }
    Ok((mode, endpoint))
}

/// The key for HS* tokens: `client_secret`, which goes with HS* in `algorithms` and is long
/// enough for each of them.
fn hmac_secret(secret: Option<&str>, hs: &[Algorithm]) -> Result<Option<DecodingKey>, ConfigError> {
    match (secret, hs.first()) {
        (None, None) => Ok(None),
        (None, Some(alg)) => Err(ConfigError::at(
            "algorithms",
            format!("{alg:?} tokens are signed with the client secret: set `client_secret`"),
        )),
        (Some(_), None) => Err(ConfigError::at(
            "client_secret",
            "only used for HS256, HS384 or HS512 tokens: list one in `algorithms`",
        )),
        (Some(s), Some(_)) => {
            if let Some(alg) = hs.iter().find(|a| s.len() < min_secret_len(**a)) {
                return Err(ConfigError::at(
                    "client_secret",
                    format!(
                        "is {} bytes; {alg:?} needs at least {} (RFC 7518)",
                        s.len(),
                        min_secret_len(*alg)
                    ),
                ));
            }
            Ok(Some(DecodingKey::from_secret(s.as_bytes())))
        }
    }
}

/// `claims_to_headers` with the header names checked.
fn claim_headers(map: &BTreeMap<String, String>) -> Result<Vec<(String, HeaderName)>, ConfigError> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for (claim, h) in map {
        let key = format!("claims_to_headers.{claim}");
        let name = HeaderName::from_bytes(h.as_bytes())
            .map_err(|_| ConfigError::at(&key, format!("`{h}` is not a valid header name")))?;
        if !seen.insert(name.clone()) {
            return Err(ConfigError::at(
                key,
                format!("header `{h}` is used for two claims"),
            ));
        }
        out.push((claim.clone(), name));
    }
    Ok(out)
}

impl OpenIdConnect {
    /// Builds the plugin from its config.
    pub fn new(c: OpenIdConnectConfig, env: &BuildEnv<'_>) -> Result<Self, ConfigError> {
        let discovery = c
            .discovery
            .as_deref()
            .map(|u| http_url(u).map_err(|e| ConfigError::at("discovery", e)))
            .transpose()?;
        let jwks_uri = c
            .jwks_uri
            .as_deref()
            .map(|u| http_url(u).map_err(|e| ConfigError::at("jwks_uri", e)))
            .transpose()?;
        if c.issuer.as_deref() == Some("") {
            return Err(ConfigError::at("issuer", "must not be empty"));
        }
        let (mode, introspection_endpoint) = check_mode(&c, &discovery, &jwks_uri)?;

        let audience = c.audience.map(|a| a.0);
        if let Some(a) = &audience {
            if a.is_empty() || a.iter().any(String::is_empty) {
                return Err(ConfigError::at(
                    "audience",
                    "must be a non-empty string or list of non-empty strings",
                ));
            }
        }
        for (i, s) in c.required_scopes.iter().enumerate() {
            if !is_scope_token(s) {
                return Err(ConfigError::at(
                    format!("required_scopes[{i}]"),
                    "must be a scope: printable ASCII without spaces, `\"` or `\\`",
                ));
            }
        }

        let algorithms = c.algorithms.clone().unwrap_or_else(default_algorithms);
        if algorithms.is_empty() {
            return Err(ConfigError::at("algorithms", "must not be empty"));
        }
        let hs: Vec<Algorithm> = algorithms
            .iter()
            .copied()
            .filter(|a| a.family() == AlgorithmFamily::Hmac)
            .collect();
        let secret = hmac_secret(c.client_secret.as_deref(), &hs)?;

        let mut template = Validation::new(Algorithm::RS256);
        template.leeway = c.leeway.get().as_secs();
        template.validate_exp = true;
        template.validate_nbf = true;
        template.validate_aud = audience.is_some();
        let mut required = vec!["exp", "iss"];
        if let Some(a) = &audience {
            template.set_audience(a);
            required.push("aud");
        }
        template.set_required_spec_claims(&required);
        let hmac = secret.map(|key| {
            let validations = hs
                .iter()
                .map(|alg| {
                    let mut v = template.clone();
                    v.algorithms = vec![*alg];
                    (*alg, v)
                })
                .collect();
            (key, validations)
        });

        let claims_to_headers = claim_headers(&c.claims_to_headers)?;
        let consumer_claim = match c.consumer_claim {
            Some(claim) if claim.is_empty() => {
                return Err(ConfigError::at("consumer_claim", "must not be empty"))
            }
            Some(claim) => {
                let by_id = env
                    .consumers
                    .iter()
                    .map(|c| (c.id.clone(), c.clone()))
                    .collect();
                Some((claim, by_id))
            }
            None => None,
        };

        let introspector = c
            .introspection
            .as_ref()
            .map(Introspector::new)
            .transpose()?;
        let settings = Settings {
            mode,
            issuer: c.issuer.clone(),
            jwks_refresh: c.jwks_refresh_interval.get(),
            template,
            introspection: introspection_endpoint.clone(),
        };
        if mode == Mode::Jwt && settings.jwks_refresh < StdDuration::from_secs(1) {
            return Err(ConfigError::at(
                "jwks_refresh_interval",
                "must be at least 1s",
            ));
        }
        let provider = match discovery {
            Some(url) => Provider::Discovered(Box::new(Discovery::new(url.as_str(), settings))),
            None => {
                let endpoints = Endpoints::new(
                    c.issuer.clone(),
                    jwks_uri.as_ref().map(reqwest::Url::as_str),
                    introspection_endpoint,
                    &settings,
                )
                .map_err(ConfigError::whole)?;
                Provider::Fixed(Arc::new(endpoints))
            }
        };

        let plain = challenge(&format!("Bearer realm=\"{REALM}\""), "")?;
        let bad = challenge(
            &format!("Bearer realm=\"{REALM}\", error=\"invalid_token\""),
            "",
        )?;
        let scope_challenge = challenge(
            &format!(
                "Bearer realm=\"{REALM}\", error=\"insufficient_scope\", scope=\"{}\"",
                c.required_scopes.join(" ")
            ),
            "required_scopes",
        )?;
        Ok(OpenIdConnect {
            mode,
            provider,
            algorithms,
            hmac,
            audience,
            leeway: c.leeway.get().as_secs(),
            required_scopes: c.required_scopes,
            introspector,
            claims_to_headers,
            consumer_claim,
            hide_credentials: c.hide_credentials,
            optional: c.optional,
            missing: unauthorized("missing token", &plain),
            invalid: unauthorized("invalid token", &bad),
            expired: unauthorized("token expired", &bad),
            not_yet_valid: unauthorized("token not yet valid", &bad),
            claims_rejected: unauthorized("token claims rejected", &bad),
            insufficient_scope: PluginResponse::error(403, "insufficient scope")
                .with_header(http::header::WWW_AUTHENTICATE, scope_challenge),
            unavailable: PluginResponse::error(503, "identity provider unavailable"),
            verified: VerifiedCache::new(VERIFIED_MAX),
        })
    }

    async fn endpoints(&self) -> Option<Arc<Endpoints>> {
        match &self.provider {
            Provider::Fixed(e) => Some(e.clone()),
            Provider::Discovered(d) => d.endpoints().await,
        }
    }

    /// The token's claims, once it is proven valid.
    async fn authenticate(&self, token: &str) -> Result<Arc<Map<String, Value>>, Failure> {
        if token.len() > MAX_TOKEN_LEN {
            log::debug!("openid-connect: token refused: longer than 16 KiB");
            return Err(Refusal::Invalid.into());
        }
        let Some(endpoints) = self.endpoints().await else {
            log::debug!("openid-connect: the discovery document is not available");
            return Err(Failure::Unavailable);
        };
        match self.mode {
            Mode::Jwt => self.verify_jwt_cached(endpoints, token).await,
            Mode::Introspection => self.introspect(&endpoints, token).await,
        }
    }

    /// Verifies a JWT, from the cache when it passed every check recently (and has not
    /// expired since, and its key and IdP settings are still the current ones).
    async fn verify_jwt_cached(
        &self,
        endpoints: Arc<Endpoints>,
        token: &str,
    ) -> Result<Arc<Map<String, Value>>, Failure> {
        let tag = self.verified.tag(&[token.as_bytes()]);
        if let Some(hit) = self.verified.get(&tag) {
            let now = jsonwebtoken::get_current_timestamp();
            let expired = hit
                .exp
                .is_some_and(|exp| exp < now.saturating_sub(self.leeway));
            if !expired && Arc::ptr_eq(&hit.endpoints, &endpoints) && key_current(&hit).await {
                return Ok(hit.claims.clone());
            }
            // Checked in full again, which gives the right refusal.
            self.verified.remove(&tag);
        }
        let (claims, key) = self.verify_jwt(&endpoints, token).await?;
        let exp = claims.get("exp").and_then(Value::as_u64);
        let claims = Arc::new(claims);
        let now = jsonwebtoken::get_current_timestamp();
        let ttl = exp.map_or(VERIFIED_TTL, |exp| {
            VERIFIED_TTL.min(StdDuration::from_secs(
                exp.saturating_add(self.leeway).saturating_sub(now),
            ))
        });
        let verified = VerifiedJwt {
            claims: claims.clone(),
            endpoints,
            key,
            exp,
        };
        self.verified
            .insert(tag, Arc::new(verified), Instant::now() + ttl);
        Ok(claims)
    }

    /// Verifies a JWT: the algorithm, its key, the signature, then the claims.
    async fn verify_jwt(&self, endpoints: &Endpoints, token: &str) -> Result<JwtProof, Failure> {
        let refuse = |r: Refusal, why: &dyn std::fmt::Display| {
            log::debug!("openid-connect: token refused: {why}");
            Failure::Refused(r)
        };
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| refuse(Refusal::Invalid, &format_args!("malformed ({e})")))?;
        if !self.algorithms.contains(&header.alg) {
            let why = format_args!("algorithm {:?} is not accepted", header.alg);
            return Err(refuse(Refusal::Invalid, &why));
        }
        let mut jwk: Option<Arc<VerifyKey>> = None;
        let (key, validation) = if header.alg.family() == AlgorithmFamily::Hmac {
            // Only ever the client secret: never a key from the (public) JWKS.
            let Some((key, validations)) = &self.hmac else {
                return Err(refuse(Refusal::Invalid, &"no client secret"));
            };
            let Some((_, v)) = validations.iter().find(|(a, _)| *a == header.alg) else {
                return Err(refuse(Refusal::Invalid, &"HMAC algorithm not accepted"));
            };
            (key, v)
        } else {
            let Some(jwks) = &endpoints.jwks else {
                return Err(refuse(Refusal::Invalid, &"no JWKS"));
            };
            let kid = header.kid.as_deref();
            let found = match jwks.key(kid).await {
                Some(k) => k,
                None if jwks.published.borrow().keys.is_none() => {
                    log::debug!("openid-connect: the JWKS could not be loaded");
                    return Err(Failure::Unavailable);
                }
                None => {
                    let why = format_args!("no key for kid {:?}", kid.unwrap_or(""));
                    return Err(refuse(Refusal::Invalid, &why));
                }
            };
            if found.alg != header.alg {
                let why = format_args!("alg {:?} is not its key's {:?}", header.alg, found.alg);
                return Err(refuse(Refusal::Invalid, &why));
            }
            let found = jwk.insert(found);
            (&found.key, &found.validation)
        };
        let claims = decode_claims(token, key, validation).map_err(|(r, e)| refuse(r, &e))?;
        let issuer = endpoints.issuer.as_deref();
        if issuer.is_none() || claims.get("iss").and_then(Value::as_str) != issuer {
            return Err(refuse(Refusal::Claims, &"wrong issuer"));
        }
        Ok((claims, jwk.map(|k| (k, header.kid))))
    }

    /// Asks the introspection endpoint (or the cache) about `token`, then checks its answer.
    async fn introspect(
        &self,
        endpoints: &Endpoints,
        token: &str,
    ) -> Result<Arc<Map<String, Value>>, Failure> {
        let (Some(introspector), Some(endpoint)) = (&self.introspector, &endpoints.introspection)
        else {
            return Err(Failure::Unavailable);
        };
        let claims = match introspector.introspect(endpoint, token).await {
            Ok(Some(claims)) => claims,
            Ok(None) => {
                log::debug!("openid-connect: token refused: inactive");
                return Err(Refusal::Invalid.into());
            }
            Err(e) => {
                log::warn!("openid-connect: introspection at {endpoint} failed: {e}");
                return Err(Failure::Unavailable);
            }
        };
        self.check_introspected(&claims, endpoints.issuer.as_deref())
            .map_err(|r| {
                log::debug!("openid-connect: introspected token refused: {r:?}");
                Failure::Refused(r)
            })?;
        Ok(claims)
    }

    /// The checks an active introspection answer still goes through: `exp` and `nbf` (with
    /// `leeway`), `iss` when the answer has one, `aud` when `audience` is set.
    fn check_introspected(
        &self,
        claims: &Map<String, Value>,
        issuer: Option<&str>,
    ) -> Result<(), Refusal> {
        let now = unix_now();
        if numeric(claims.get("exp")).is_some_and(|exp| exp.saturating_add(self.leeway) < now) {
            return Err(Refusal::Expired);
        }
        if numeric(claims.get("nbf")).is_some_and(|nbf| nbf > now.saturating_add(self.leeway)) {
            return Err(Refusal::NotYetValid);
        }
        if let (Some(expected), Some(iss)) = (issuer, claims.get("iss")) {
            if iss.as_str() != Some(expected) {
                return Err(Refusal::Claims);
            }
        }
        if let Some(accepted) = &self.audience {
            let ok = match claims.get("aud") {
                Some(Value::String(a)) => accepted.iter().any(|x| x == a),
                Some(Value::Array(list)) => list
                    .iter()
                    .filter_map(Value::as_str)
                    .any(|a| accepted.iter().any(|x| x == a)),
                _ => false,
            };
            if !ok {
                return Err(Refusal::Claims);
            }
        }
        Ok(())
    }

    /// Whether the token grants every required scope.
    fn has_scopes(&self, claims: &Map<String, Value>) -> bool {
        let granted = |wanted: &str, v: Option<&Value>| match v {
            Some(Value::String(s)) => s.split(' ').any(|g| g == wanted),
            Some(Value::Array(list)) => list.iter().any(|g| g.as_str() == Some(wanted)),
            _ => false,
        };
        self.required_scopes.iter().all(|wanted| {
            granted(wanted, claims.get("scope")) || granted(wanted, claims.get("scp"))
        })
    }

    fn refusal(&self, f: Failure) -> PluginResponse {
        match f {
            Failure::Refused(Refusal::Invalid) => self.invalid.clone(),
            Failure::Refused(Refusal::Expired) => self.expired.clone(),
            Failure::Refused(Refusal::NotYetValid) => self.not_yet_valid.clone(),
            Failure::Refused(Refusal::Claims) => self.claims_rejected.clone(),
            Failure::Unavailable => self.unavailable.clone(),
        }
    }
}

/// A claim as a header value: a string as it is, a list's items joined by `,`, anything else
/// as JSON. `None` for `null` and for text that cannot be a header value.
fn claim_header(v: &Value) -> Option<HeaderValue> {
    match v {
        Value::Null => None,
        Value::String(s) => HeaderValue::from_str(s).ok(),
        Value::Array(items) => {
            let mut text = String::new();
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    text.push(',');
                }
                match item {
                    Value::String(s) => text.push_str(s),
                    other => text.push_str(&other.to_string()),
                }
            }
            HeaderValue::from_str(&text).ok()
        }
        other => HeaderValue::from_str(&other.to_string()).ok(),
    }
}

#[async_trait]
impl Plugin for OpenIdConnect {
    fn name(&self) -> &str {
        "openid-connect"
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
        let token = req
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| strip_scheme(v, "Bearer"))
            .filter(|t| !t.is_empty());
        let Some(token) = token else {
            if self.optional {
                return Ok(Flow::Continue);
            }
            return Ok(Flow::Respond(self.missing.clone()));
        };
        let claims = match self.authenticate(token).await {
            Ok(c) => c,
            Err(f) => return Ok(Flow::Respond(self.refusal(f))),
        };
        if !self.has_scopes(&claims) {
            log::debug!("openid-connect: token lacks a required scope");
            return Ok(Flow::Respond(self.insufficient_scope.clone()));
        }
        let consumer = self
            .consumer_claim
            .as_ref()
            .and_then(|(claim, by_id)| by_id.get(claims.get(claim)?.as_str()?).cloned());
        match consumer {
            Some(c) => ctx.consumer = Some(c),
            None => ctx.set_state(Authenticated),
        }
        for (claim, h) in &self.claims_to_headers {
            if let Some(v) = claims.get(claim).and_then(claim_header) {
                req.insert_header(h.clone(), v)?;
            }
        }
        if self.hide_credentials {
            req.remove_header(&AUTHORIZATION);
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
    use std::sync::atomic::AtomicUsize;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const SECRET: &str = "0123456789abcdef0123456789abcdef";
    const ISSUER: &str = "https://idp.test";

    fn now() -> u64 {
        unix_now()
    }

    fn consumer(id: &str) -> Arc<Consumer> {
        Arc::new(Consumer {
            id: id.into(),
            groups: vec![],
            labels: Default::default(),
            credentials: Default::default(),
        })
    }

    fn env() -> HarnessEnv {
        HarnessEnv {
            consumers: vec![consumer("alice")],
            ..Default::default()
        }
    }

    /// A jwt-mode config whose JWKS URL refuses connections; HS256 tokens need no JWKS.
    fn hs_config() -> Value {
        json!({
            "issuer": ISSUER,
            "jwks_uri": "http://127.0.0.1:9/jwks",
            "algorithms": ["RS256", "HS256"],
            "client_secret": SECRET,
            "audience": "api",
            "required_scopes": ["read"],
            "claims_to_headers": {"sub": "x-user", "scope": "x-scope"},
            "consumer_claim": "sub",
        })
    }

    fn hs_token(claims: Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    }

    fn good_claims() -> Value {
        json!({"iss": ISSUER, "aud": "api", "sub": "alice", "exp": now() + 60, "scope": "read write"})
    }

    async fn run(
        config: Value,
        req: &mut RequestHeader,
    ) -> (PluginHarness, Option<PluginResponse>) {
        let mut h = PluginHarness::from_config_with(&factory(), config, &env()).unwrap();
        let resp = match h.request(req).await.unwrap() {
            Flow::Continue => None,
            Flow::Respond(r) => Some(r),
        };
        (h, resp)
    }

    /// Runs `request_filter` for a new request on the same plugin instance.
    async fn send(h: &mut PluginHarness, req: &mut RequestHeader) -> Flow {
        h.ctx = RequestContext::new();
        h.request(req).await.unwrap()
    }

    fn bearer(token: &str) -> RequestHeader {
        request("GET", "/")
            .header("authorization", &format!("Bearer {token}"))
            .header("x-user", "forged")
            .build()
    }

    fn body(r: &PluginResponse) -> Value {
        serde_json::from_slice(&r.body).unwrap()
    }

    #[tokio::test]
    async fn verified_jwts_are_cached_until_they_expire() {
        let env = env();
        let build_env = BuildEnv {
            consumers: &env.consumers,
            upstream_ids: &env.upstream_ids,
            base_dir: &env.base_dir,
            scope: &env.scope,
            services: &env.services,
        };
        let config: OpenIdConnectConfig = serde_json::from_value(hs_config()).unwrap();
        let plugin = OpenIdConnect::new(config, &build_env).unwrap();
        let token = hs_token(good_claims());
        let first = plugin.authenticate(&token).await.unwrap();
        let again = plugin.authenticate(&token).await.unwrap();
        assert!(
            Arc::ptr_eq(&first, &again),
            "the second use comes from the cache"
        );

        // Expired while cached: checked in full again, and refused as expired.
        let mut claims = good_claims();
        claims["exp"] = json!(now() - 10);
        let stale = hs_token(claims);
        let tag = plugin.verified.tag(&[stale.as_bytes()]);
        let endpoints = plugin.endpoints().await.unwrap();
        let cached = VerifiedJwt {
            claims: first.clone(),
            endpoints,
            key: None,
            exp: Some(now() - 10),
        };
        plugin.verified.insert(
            tag,
            Arc::new(cached),
            Instant::now() + StdDuration::from_secs(60),
        );
        assert_eq!(
            plugin.authenticate(&stale).await.err(),
            Some(Failure::Refused(Refusal::Expired))
        );
        assert!(plugin.verified.get(&tag).is_none(), "dropped");
    }

    #[tokio::test]
    async fn valid_hs_token_with_client_secret() {
        let mut req = bearer(&hs_token(good_claims()));
        let (h, resp) = run(hs_config(), &mut req).await;
        assert!(resp.is_none(), "{:?}", resp.map(|r| body(&r)));
        assert_eq!(h.ctx.consumer.as_ref().unwrap().id, "alice");
        assert_eq!(req.headers.get("x-user").unwrap(), "alice");
        assert_eq!(req.headers.get("x-scope").unwrap(), "read write");
        assert!(req.headers.get("authorization").is_some());
        // A subject that is no consumer: authenticated without one.
        let mut claims = good_claims();
        claims["sub"] = json!("stranger");
        let mut cfg = hs_config();
        cfg["hide_credentials"] = json!(true);
        let mut req = bearer(&hs_token(claims));
        let (h, resp) = run(cfg, &mut req).await;
        assert!(resp.is_none());
        assert!(h.ctx.consumer.is_none());
        assert!(already_authenticated(&h.ctx));
        assert!(req.headers.get("authorization").is_none());
    }

    #[tokio::test]
    async fn refusals() {
        let n = now();
        let none_token = format!(
            "{}.{}.",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(good_claims().to_string().as_bytes())
        );
        let with = |k: &str, v: Value| {
            let mut c = good_claims();
            c[k] = v;
            hs_token(c)
        };
        let without = |k: &str| {
            let mut c = good_claims();
            c.as_object_mut().unwrap().remove(k);
            hs_token(c)
        };
        let cases = [
            (with("exp", json!(n - 10)), "token expired"),
            (with("nbf", json!(n + 60)), "token not yet valid"),
            (
                with("iss", json!("https://evil.test")),
                "token claims rejected",
            ),
            (without("iss"), "token claims rejected"),
            (with("aud", json!("web")), "token claims rejected"),
            (without("aud"), "token claims rejected"),
            (without("exp"), "token claims rejected"),
            (none_token, "invalid token"),
            ("opaque-token".to_string(), "invalid token"),
            (
                encode(
                    &Header::new(Algorithm::HS256),
                    &good_claims(),
                    &EncodingKey::from_secret(b"another-secret-another-secret-123"),
                )
                .unwrap(),
                "invalid token",
            ),
        ];
        for (token, expect) in cases {
            let (h, resp) = run(hs_config(), &mut bearer(&token)).await;
            let resp = resp.unwrap_or_else(|| panic!("accepted {token}"));
            assert_eq!(resp.status, 401, "{token}");
            assert_eq!(
                body(&resp),
                json!({"error": expect, "status": 401}),
                "{token}"
            );
            assert_eq!(
                resp.header("www-authenticate").unwrap(),
                "Bearer realm=\"gatehouse\", error=\"invalid_token\""
            );
            assert!(!already_authenticated(&h.ctx));
        }
        // Leeway covers a recent expiry.
        let mut cfg = hs_config();
        cfg["leeway"] = json!("30s");
        let (_, resp) = run(cfg, &mut bearer(&with("exp", json!(n - 5)))).await;
        assert!(resp.is_none());
    }

    #[tokio::test]
    async fn hs256_needs_the_client_secret_configuration() {
        // Default algorithms: HS256 is not accepted, whatever the secret.
        let cfg = json!({"issuer": ISSUER, "jwks_uri": "http://127.0.0.1:9/jwks"});
        let (_, resp) = run(cfg, &mut bearer(&hs_token(good_claims()))).await;
        assert_eq!(body(&resp.unwrap())["error"], "invalid token");
    }

    #[tokio::test]
    async fn scopes_missing_token_and_optional() {
        let mut c = good_claims();
        c["scope"] = json!("write");
        let (h, resp) = run(hs_config(), &mut bearer(&hs_token(c))).await;
        let resp = resp.unwrap();
        assert_eq!(resp.status, 403);
        assert_eq!(
            body(&resp),
            json!({"error": "insufficient scope", "status": 403})
        );
        assert_eq!(
            resp.header("www-authenticate").unwrap(),
            "Bearer realm=\"gatehouse\", error=\"insufficient_scope\", scope=\"read\""
        );
        assert!(h.ctx.consumer.is_none());
        // `scp` as a list counts too.
        let mut c = good_claims();
        c.as_object_mut().unwrap().remove("scope");
        c["scp"] = json!(["write", "read"]);
        let (_, resp) = run(hs_config(), &mut bearer(&hs_token(c))).await;
        assert!(resp.is_none());
        // No token.
        let mut req = request("GET", "/")
            .header("authorization", "Basic x")
            .build();
        let (_, resp) = run(hs_config(), &mut req).await;
        let resp = resp.unwrap();
        assert_eq!(body(&resp)["error"], "missing token");
        assert_eq!(
            resp.header("www-authenticate").unwrap(),
            "Bearer realm=\"gatehouse\""
        );
        let mut cfg = hs_config();
        cfg["optional"] = json!(true);
        let mut req = request("GET", "/").header("x-user", "forged").build();
        let (h, resp) = run(cfg, &mut req).await;
        assert!(resp.is_none());
        assert!(!already_authenticated(&h.ctx));
        assert!(req.headers.get("x-user").is_none());
        // Already authenticated by an earlier plugin: stepped aside.
        let mut h = PluginHarness::from_config_with(&factory(), hs_config(), &env()).unwrap();
        h.ctx.consumer = Some(consumer("bob"));
        let flow = h.request(&mut bearer("garbage")).await.unwrap();
        assert!(matches!(flow, Flow::Continue));
    }

    #[tokio::test]
    async fn unreachable_jwks_is_unavailable_not_invalid() {
        let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"alg":"RS256","kid":"k1"}"#);
        let token = format!("{header}.e30.c2ln");
        let started = Instant::now();
        let (_, resp) = run(hs_config(), &mut bearer(&token)).await;
        let resp = resp.unwrap();
        assert_eq!(resp.status, 503);
        assert_eq!(
            body(&resp),
            json!({"error": "identity provider unavailable", "status": 503})
        );
        assert!(started.elapsed() < StdDuration::from_secs(5));
        // An algorithm not accepted is refused before any key is looked for.
        let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"alg":"ES384","kid":"k1"}"#);
        let (_, resp) = run(hs_config(), &mut bearer(&format!("{header}.e30.c2ln"))).await;
        assert_eq!(resp.unwrap().status, 401);
    }

    #[tokio::test]
    async fn unreachable_discovery_is_unavailable() {
        let cfg = json!({"discovery": "http://127.0.0.1:9/.well-known/openid-configuration"});
        let mut h = PluginHarness::from_config_with(&factory(), cfg, &env()).unwrap();
        for _ in 0..2 {
            let flow = h
                .request(&mut bearer(&hs_token(good_claims())))
                .await
                .unwrap();
            assert!(matches!(flow, Flow::Respond(r) if r.status == 503));
        }
    }

    #[tokio::test]
    async fn a_reload_starts_from_the_last_good_discovery_document() {
        let url = "http://127.0.0.1:9/last-good/.well-known/openid-configuration";
        let doc = json!({"issuer": ISSUER, "jwks_uri": "http://127.0.0.1:9/jwks"});
        last_good()
            .lock()
            .unwrap()
            .insert(url.to_string(), Arc::new(doc.to_string().into_bytes()));
        let mut cfg = hs_config();
        let fields = cfg.as_object_mut().unwrap();
        fields.remove("issuer");
        fields.remove("jwks_uri");
        fields.insert("discovery".into(), json!(url));
        let mut h = PluginHarness::from_config_with(&factory(), cfg, &env()).unwrap();
        // The IdP is down now; the endpoints of its last good document are still used.
        for _ in 0..3 {
            let flow = send(&mut h, &mut bearer(&hs_token(good_claims()))).await;
            assert!(matches!(flow, Flow::Continue), "{flow:?}");
        }
    }

    /// A one-route HTTP server answering every request with `answer`; counts requests and
    /// keeps the last request's head and body.
    async fn idp(answer: &'static str) -> (String, Arc<AtomicUsize>, Arc<Mutex<String>>) {
        idp_answering_after(answer, StdDuration::ZERO).await
    }

    /// An introspection endpoint that answers `answer` after `delay`, counting the calls.
    async fn idp_answering_after(
        answer: &'static str,
        delay: StdDuration,
    ) -> (String, Arc<AtomicUsize>, Arc<Mutex<String>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/introspect", listener.local_addr().unwrap());
        let calls = Arc::new(AtomicUsize::new(0));
        let last = Arc::new(Mutex::new(String::new()));
        let (c, l) = (calls.clone(), last.clone());
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                let l = l.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        let n = s.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            break;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        let text = String::from_utf8_lossy(&buf).to_string();
                        if let Some((head, rest)) = text.split_once("\r\n\r\n") {
                            let len = head
                                .lines()
                                .find_map(|h| {
                                    h.to_ascii_lowercase()
                                        .strip_prefix("content-length:")
                                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                                })
                                .unwrap_or(0);
                            if rest.len() >= len {
                                *l.lock().unwrap() = text.clone();
                                break;
                            }
                        }
                    }
                    tokio::time::sleep(delay).await;
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                        answer.len()
                    );
                    let _ = s.write_all(reply.as_bytes()).await;
                });
            }
        });
        (url, calls, last)
    }

    fn introspection_config(endpoint: &str) -> Value {
        json!({
            "introspection": {"endpoint": endpoint, "client_id": "gate way", "client_secret": "s3cr/t"},
            "issuer": ISSUER,
            "required_scopes": ["read"],
            "claims_to_headers": {"username": "x-user"},
        })
    }

    #[tokio::test]
    async fn concurrent_introspections_of_one_token_ask_once() {
        let (url, calls, _) = idp_answering_after(
            r#"{"active": true, "scope": "read", "exp": 99999999999}"#,
            StdDuration::from_millis(300),
        )
        .await;
        let introspector = Arc::new(
            Introspector::new(&IntrospectionConfig {
                endpoint: Some(url.clone()),
                client_id: "gateway".into(),
                client_secret: "secret".into(),
                cache_ttl: Duration::from_secs(30),
                cache_size: 100,
                timeout: Duration::from_secs(5),
            })
            .unwrap(),
        );
        let endpoint = reqwest::Url::parse(&url).unwrap();
        let mut callers = tokio::task::JoinSet::new();
        for _ in 0..20 {
            let (i, e) = (introspector.clone(), endpoint.clone());
            callers.spawn(async move { i.introspect(&e, "one-token").await });
        }
        while let Some(answer) = callers.join_next().await {
            let claims = answer.unwrap().unwrap().expect("active");
            assert_eq!(claims["scope"], "read");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1, "one call for 20 requests");
        assert!(introspector.in_flight.is_empty());

        // Callers that give up leave nothing behind.
        let gave_up = tokio::time::timeout(
            StdDuration::from_millis(50),
            introspector.introspect(&endpoint, "another-token"),
        )
        .await;
        assert!(gave_up.is_err());
        assert!(introspector.in_flight.is_empty());
        // A later caller asks again and gets the answer.
        let again = introspector.introspect(&endpoint, "another-token").await;
        assert!(again.unwrap().is_some());
    }

    #[tokio::test]
    async fn introspection_active_cached_and_checked() {
        let (url, calls, last) = idp(
            r#"{"active": true, "scope": "read", "username": "jdoe", "iss": "https://idp.test", "exp": 99999999999}"#,
        )
        .await;
        let mut h = PluginHarness::from_config_with(&factory(), introspection_config(&url), &env())
            .unwrap();
        for _ in 0..3 {
            let mut req = bearer("opaque+token/1");
            let flow = send(&mut h, &mut req).await;
            assert!(matches!(flow, Flow::Continue), "{flow:?}");
            assert_eq!(req.headers.get("x-user").unwrap(), "jdoe");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1, "answers are cached");
        let seen = last.lock().unwrap().clone();
        assert!(seen.starts_with("POST /introspect "), "{seen}");
        // base64("gate+way:s3cr%2Ft")
        assert!(
            seen.to_ascii_lowercase()
                .contains("authorization: basic z2f0zst3yxk6cznjciuyrnq="),
            "{seen}"
        );
        assert!(seen.ends_with("token=opaque%2Btoken%2F1&token_type_hint=access_token"));
        // Another token is another question.
        let flow = send(&mut h, &mut bearer("other")).await;
        assert!(matches!(flow, Flow::Continue));
        assert_eq!(calls.load(Ordering::SeqCst), 2);

        // The answer's issuer must be the configured one; its audience too when set.
        let mut cfg = introspection_config(&url);
        cfg["issuer"] = json!("https://other.test");
        let (_, resp) = run(cfg, &mut bearer("t")).await;
        assert_eq!(body(&resp.unwrap())["error"], "token claims rejected");
        let mut cfg = introspection_config(&url);
        cfg["audience"] = json!("api");
        let (_, resp) = run(cfg, &mut bearer("t")).await;
        assert_eq!(body(&resp.unwrap())["error"], "token claims rejected");
        let mut cfg = introspection_config(&url);
        cfg["required_scopes"] = json!(["write"]);
        let (_, resp) = run(cfg, &mut bearer("t")).await;
        assert_eq!(resp.unwrap().status, 403);
    }

    #[tokio::test]
    async fn introspection_inactive_expired_and_down() {
        let (url, calls, _) = idp(r#"{"active": false}"#).await;
        let mut h = PluginHarness::from_config_with(&factory(), introspection_config(&url), &env())
            .unwrap();
        for _ in 0..2 {
            let flow = send(&mut h, &mut bearer("revoked")).await;
            let Flow::Respond(resp) = flow else {
                panic!("accepted")
            };
            assert_eq!(body(&resp)["error"], "invalid token");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        let (url, calls, _) = idp(r#"{"active": true, "scope": "read", "exp": 1000}"#).await;
        let mut cfg = introspection_config(&url);
        cfg["introspection"]["cache_ttl"] = json!("0s");
        let mut h = PluginHarness::from_config_with(&factory(), cfg, &env()).unwrap();
        for _ in 0..2 {
            let flow = send(&mut h, &mut bearer("old")).await;
            assert!(matches!(flow, Flow::Respond(r) if body(&r)["error"] == "token expired"));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 2, "cache_ttl 0s: not cached");

        let (url, _, _) = idp("not json").await;
        let (_, resp) = run(introspection_config(&url), &mut bearer("t")).await;
        assert_eq!(resp.unwrap().status, 503);
        let (_, resp) = run(
            introspection_config("http://127.0.0.1:9/introspect"),
            &mut bearer("t"),
        )
        .await;
        let resp = resp.unwrap();
        assert_eq!(resp.status, 503);
        assert_eq!(body(&resp)["error"], "identity provider unavailable");
        assert!(resp.header("www-authenticate").is_none());
    }

    #[test]
    fn cache_is_bounded() {
        let cfg: IntrospectionConfig = serde_json::from_value(json!({
            "endpoint": "http://x/", "client_id": "a", "client_secret": "b", "cache_size": 3
        }))
        .unwrap();
        let i = Introspector::new(&cfg).unwrap();
        for n in 0..10u8 {
            let entry = Cached {
                expires: Instant::now() + StdDuration::from_secs(60),
                claims: None,
            };
            i.remember([n; 32], entry);
            assert!(i.cache.len() <= 3);
        }
        assert!(i.cache.contains_key(&[9; 32]));
    }

    #[test]
    fn encoding_and_scope_tokens() {
        assert_eq!(form_encode("a b+c/d~é"), "a+b%2Bc%2Fd%7E%C3%A9");
        assert!(is_scope_token("read:orders"));
        assert!(!is_scope_token("read orders"));
        assert!(!is_scope_token("a\"b"));
        assert!(!is_scope_token(""));
    }

    #[test]
    fn config_errors() {
        let intro = json!({"endpoint": "http://idp/i", "client_id": "c", "client_secret": "s"});
        let jwks = "http://idp/jwks";
        let cases = [
            (json!({}), "", "set `discovery`, or `issuer` and `jwks_uri`"),
            (
                json!({"jwks_uri": jwks}),
                "issuer",
                "required with `jwks_uri`",
            ),
            (
                json!({"discovery": "http://idp/d", "jwks_uri": jwks}),
                "",
                "not both",
            ),
            (json!({"discovery": "ftp://idp/d"}), "discovery", "http://"),
            (json!({"discovery": "nope"}), "discovery", "not a URL"),
            (
                json!({"issuer": "i", "jwks_uri": jwks, "algorithms": ["none"]}),
                "algorithms[0]",
                "unknown variant `none`",
            ),
            (
                json!({"issuer": "i", "jwks_uri": jwks, "algorithms": []}),
                "algorithms",
                "must not be empty",
            ),
            (
                json!({"issuer": "i", "jwks_uri": jwks, "algorithms": ["HS256"]}),
                "algorithms",
                "set `client_secret`",
            ),
            (
                json!({"issuer": "i", "jwks_uri": jwks, "client_secret": SECRET}),
                "client_secret",
                "list one in `algorithms`",
            ),
            (
                json!({"issuer": "i", "jwks_uri": jwks, "algorithms": ["HS512"], "client_secret": SECRET}),
                "client_secret",
                "HS512 needs at least 64",
            ),
            (
                json!({"issuer": "i", "jwks_uri": jwks, "required_scopes": ["a b"]}),
                "required_scopes[0]",
                "must be a scope",
            ),
            (
                json!({"issuer": "i", "jwks_uri": jwks, "audience": []}),
                "audience",
                "non-empty",
            ),
            (
                json!({"issuer": "i", "jwks_uri": jwks, "audience": 3}),
                "audience",
                "a string or a list of strings",
            ),
            (
                json!({"issuer": "i", "jwks_uri": jwks, "leeway": 5}),
                "leeway",
                "ambiguous",
            ),
            (
                json!({"issuer": "i", "jwks_uri": jwks, "claims_to_headers": {"a": "x-h", "b": "X-H"}}),
                "claims_to_headers.b",
                "two claims",
            ),
            (
                json!({"issuer": "i", "jwks_uri": jwks, "mode": "jwt", "introspection": intro}),
                "introspection",
                "only used with `mode: introspection`",
            ),
            (
                json!({"mode": "introspection"}),
                "introspection",
                "required with `mode: introspection`",
            ),
            (
                json!({"introspection": {"client_id": "c", "client_secret": "s"}}),
                "introspection.endpoint",
                "required unless `discovery`",
            ),
            (
                json!({"introspection": {"endpoint": "http://i/", "client_id": "c"}}),
                "introspection",
                "missing field `client_secret`",
            ),
            (
                json!({"introspection": intro, "jwks_uri": jwks}),
                "jwks_uri",
                "only used with `mode: jwt`",
            ),
            (
                json!({"introspection": {"endpoint": "http://i/", "client_id": "c", "client_secret": "s", "timeout": "0s"}}),
                "introspection.timeout",
                "more than 0s",
            ),
            (
                json!({"issuer": "i", "jwks_uri": jwks, "mode": "magic"}),
                "mode",
                "unknown variant `magic`",
            ),
            (
                json!({"issuer": "i", "jwks_uri": jwks, "scopes": ["a"]}),
                "scopes",
                "unknown field `scopes`",
            ),
        ];
        for (cfg, path, expect) in cases {
            let err = PluginHarness::from_config_with(&factory(), cfg.clone(), &env())
                .err()
                .unwrap_or_else(|| panic!("accepted {cfg}"));
            assert_eq!(err.path, path, "{cfg}: {err}");
            assert!(err.message.contains(expect), "{cfg}: {err}");
        }
        // A discovery URL is not fetched while the config loads.
        let started = Instant::now();
        let cfg = json!({"discovery": "http://10.255.255.1/.well-known/openid-configuration"});
        assert!(PluginHarness::from_config_with(&factory(), cfg, &env()).is_ok());
        assert!(started.elapsed() < StdDuration::from_secs(1));
    }
}
