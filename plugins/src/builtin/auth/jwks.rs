//! Verification keys for `jwt-auth`: each pinned to one algorithm, indexed by key id, built
//! from consumers' credentials or from a JSON Web Key Set (a file, or a URL kept fresh by a
//! background thread).
//!
//! ```text
//! JwtAuth ── owns ──► KeySource ─┬─ Fixed(KeySet)            consumers' credentials, jwks_file
//!                                └─ Remote(RemoteJwks)        jwks_uri
//!                                        │ watch channel (last good KeySet)
//!                                        ▼
//!                                   refresher thread: fetch, parse, publish; every
//!                                   `jwks_refresh_interval`, or sooner when asked (unknown kid)
//! ```

use crate::context::Consumer;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// One verification key.
pub(super) struct VerifyKey {
    /// The only algorithm a token verified with this key may use.
    pub alg: Algorithm,
    pub key: DecodingKey,
    /// The plugin's claim checks with `algorithms = [alg]`.
    pub validation: Validation,
    /// The consumer that owns the key (credentials from consumers only).
    pub consumer: Option<Arc<Consumer>>,
}

/// Keys by key id (`kid`).
#[derive(Default)]
pub(super) struct KeySet {
    by_kid: HashMap<String, Arc<VerifyKey>>,
    /// The key, when the set holds exactly one: tokens without a `kid` use it.
    only: Option<Arc<VerifyKey>>,
    len: usize,
}

impl KeySet {
    /// Adds a key; `false` when its key id is already taken.
    pub fn insert(&mut self, kid: Option<String>, key: VerifyKey) -> bool {
        let key = Arc::new(key);
        if let Some(kid) = kid {
            if self.by_kid.contains_key(&kid) {
                return false;
            }
            self.by_kid.insert(kid, key.clone());
        }
        self.len += 1;
        self.only = (self.len == 1).then_some(key);
        true
    }

    /// The key for `kid`.
    pub fn get(&self, kid: &str) -> Option<&Arc<VerifyKey>> {
        self.by_kid.get(kid)
    }

    /// The single key of a one-key set.
    pub fn only(&self) -> Option<&Arc<VerifyKey>> {
        self.only.as_ref()
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The key for a token: by `kid`, or the only key when the token names none.
    pub fn for_token(&self, kid: Option<&str>) -> Option<&Arc<VerifyKey>> {
        match kid {
            Some(k) => self.get(k),
            None => self.only(),
        }
    }
}

/// `template` with the algorithm list set to `alg` alone.
pub(super) fn pinned(template: &Validation, alg: Algorithm) -> Validation {
    let mut v = template.clone();
    v.algorithms = vec![alg];
    v
}

/// A verification key from one JWK, with the algorithm it is pinned to: the JWK's `alg`, or
/// for a JWK without one, RS256 (RSA), ES256/ES384 (P-256/P-384), EdDSA (Ed25519) or HS256
/// (`oct`). Keys for encryption (`use: enc`) are not signature keys and are refused.
fn key_from_jwk(jwk: &Jwk) -> Result<(Algorithm, DecodingKey), String> {
    if jwk.common.public_key_use == Some(PublicKeyUse::Encryption) {
        return Err("an encryption key (`use: enc`)".into());
    }
    let default_alg = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => Algorithm::ES256,
            EllipticCurve::P384 => Algorithm::ES384,
            _ => return Err(format!("an unsupported curve {:?}", p.curve)),
        },
        AlgorithmParameters::OctetKeyPair(p) => match p.curve {
            EllipticCurve::Ed25519 => Algorithm::EdDSA,
            _ => return Err(format!("an unsupported curve {:?}", p.curve)),
        },
        AlgorithmParameters::OctetKey(_) => Algorithm::HS256,
    };
    let alg = match jwk.common.key_algorithm {
        Some(a) => Algorithm::from_str(&a.to_string())
            .map_err(|_| format!("an algorithm `{a}` that does not sign JWTs"))?,
        None => default_alg,
    };
    if alg.family() != default_alg.family() {
        return Err(format!("algorithm {alg:?} on a key of another type"));
    }
    if alg.family() == AlgorithmFamily::Ec && alg != default_alg {
        return Err(format!("algorithm {alg:?} on a key of another curve"));
    }
    let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("an unusable key ({e})"))?;
    Ok((alg, key))
}

/// Parses a JWKS document (`{"keys": [...]}`). Keys that cannot be used are skipped (and
/// logged); a set left without any key is an error.
pub(super) fn parse_jwks(body: &[u8], template: &Validation) -> Result<KeySet, String> {
    #[derive(serde::Deserialize)]
    struct Raw {
        keys: Vec<serde_json::Value>,
    }
    let raw: Raw = serde_json::from_slice(body)
        .map_err(|e| format!("not a JWKS document ({e}); expected {{\"keys\": [...]}}"))?;
    let mut set = KeySet::default();
    for (i, value) in raw.keys.into_iter().enumerate() {
        let jwk: Jwk = match serde_json::from_value(value) {
            Ok(j) => j,
            Err(e) => {
                log::debug!("jwt-auth: JWKS key {i} skipped: not a supported JWK ({e})");
                continue;
            }
        };
        let kid = jwk.common.key_id.clone();
        match key_from_jwk(&jwk) {
            Ok((alg, key)) => {
                let added = set.insert(
                    kid.clone(),
                    VerifyKey {
                        alg,
                        key,
                        validation: pinned(template, alg),
                        consumer: None,
                    },
                );
                if !added {
                    log::debug!("jwt-auth: JWKS key {i} skipped: kid {kid:?} appears twice");
                }
            }
            Err(e) => log::debug!("jwt-auth: JWKS key {i} ({kid:?}) skipped: {e}"),
        }
    }
    if set.is_empty() {
        return Err("the JWKS holds no usable signature key".into());
    }
    Ok(set)
}

/// The last JWKS document fetched successfully from each URL, so that a plugin built by a
/// config reload starts with keys instead of waiting for its first fetch.
fn last_good() -> &'static Mutex<HashMap<String, Arc<Vec<u8>>>> {
    static LAST_GOOD: OnceLock<Mutex<HashMap<String, Arc<Vec<u8>>>>> = OnceLock::new();
    LAST_GOOD.get_or_init(Default::default)
}

/// How long one fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 1 << 20;
/// After a failed fetch, the next attempt comes this soon (or at the refresh interval if
/// that is shorter).
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(15);
/// A token with an unknown key id triggers a refresh at most this often.
const FORCED_REFRESH_EVERY: Duration = Duration::from_secs(30);
/// How long a request waits for the first fetch, or for a refresh it asked for.
const REQUEST_WAIT: Duration = Duration::from_secs(5);

/// What the refresher publishes.
#[derive(Clone, Default)]
pub(super) struct Published {
    /// The last good key set.
    pub(super) keys: Option<Arc<KeySet>>,
    /// Fetch attempts so far (successful or not), so that waiters wake on failures too.
    attempts: u64,
}

struct Control {
    /// The refresher's ends of the channels, until its thread starts.
    pending: Option<(watch::Sender<Published>, mpsc::Receiver<()>)>,
    wake: mpsc::SyncSender<()>,
    last_forced: Option<Instant>,
}

/// A JWKS fetched from a URL by a background thread, refreshed every `interval` and when a
/// token names a key id the set lacks (at most once per 30 s). The last good set is kept
/// when a fetch fails.
///
/// The thread starts with the first request (or when the plugin is built inside a running
/// runtime, as on a config reload), never during the initial config load: loading a config
/// must not wait on the network, and a daemonising server forks after loading.
pub(super) struct RemoteJwks {
    uri: Arc<str>,
    interval: Duration,
    template: Validation,
    pub(super) published: watch::Receiver<Published>,
    control: Mutex<Control>,
}

impl RemoteJwks {
    pub fn new(uri: &str, interval: Duration, template: Validation) -> Self {
        let initial = last_good()
            .lock()
            .ok()
            .and_then(|m| m.get(uri).cloned())
            .and_then(|body| parse_jwks(&body, &template).ok())
            .map(Arc::new);
        let (tx, rx) = watch::channel(Published {
            keys: initial,
            attempts: 0,
        });
        let (wake, wake_rx) = mpsc::sync_channel(1);
        let remote = RemoteJwks {
            uri: Arc::from(uri),
            interval,
            template,
            published: rx,
            control: Mutex::new(Control {
                pending: Some((tx, wake_rx)),
                wake,
                last_forced: None,
            }),
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            remote.start();
        }
        remote
    }

    /// Starts the refresher thread unless it runs already.
    fn start(&self) {
        let Ok(mut control) = self.control.lock() else {
            return;
        };
        let Some((tx, wake_rx)) = control.pending.take() else {
            return;
        };
        let uri = self.uri.clone();
        let interval = self.interval;
        let template = self.template.clone();
        let spawned = std::thread::Builder::new()
            .name("jwks-refresh".into())
            .spawn(move || refresh_loop(&uri, interval, &template, &tx, &wake_rx));
        if let Err(e) = spawned {
            log::error!(
                "jwt-auth: cannot start the JWKS refresher for {}: {e}",
                self.uri
            );
        }
    }

    /// Asks for a refresh unless one was asked for less than 30 s ago.
    fn force_refresh(&self) -> bool {
        let Ok(mut control) = self.control.lock() else {
            return false;
        };
        let now = Instant::now();
        if control
            .last_forced
            .is_some_and(|t| now.duration_since(t) < FORCED_REFRESH_EVERY)
        {
            return false;
        }
        control.last_forced = Some(now);
        let _ = control.wake.try_send(());
        true
    }

    /// The key for a token naming `kid` (or none).
    pub async fn key(&self, kid: Option<&str>) -> Option<Arc<VerifyKey>> {
        self.start();
        let mut rx = self.published.clone();
        let first = rx.borrow_and_update().clone();
        let waited = first.keys.is_none() && first.attempts == 0;
        let keys = if waited {
            // The first fetch is under way: wait for it rather than ask for another.
            let _ = tokio::time::timeout(REQUEST_WAIT, rx.changed()).await;
            rx.borrow_and_update().keys.clone()
        } else {
            first.keys
        };
        if let Some(k) = keys.as_ref().and_then(|s| s.for_token(kid)) {
            return Some(k.clone());
        }
        if waited || !self.force_refresh() {
            return None;
        }
        let _ = tokio::time::timeout(REQUEST_WAIT, rx.changed()).await;
        let keys = rx.borrow().keys.clone();
        keys.and_then(|s| s.for_token(kid).cloned())
    }
}

fn refresh_loop(
    uri: &str,
    interval: Duration,
    template: &Validation,
    tx: &watch::Sender<Published>,
    wake: &mpsc::Receiver<()>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            log::error!("jwt-auth: cannot start the JWKS refresher for {uri}: {e}");
            return;
        }
    };
    let client = match reqwest::Client::builder().timeout(FETCH_TIMEOUT).build() {
        Ok(c) => c,
        Err(e) => {
            log::error!("jwt-auth: cannot build an HTTP client for {uri}: {e}");
            return;
        }
    };
    loop {
        let result = runtime
            .block_on(fetch(&client, uri))
            .and_then(|body| parse_jwks(&body, template).map(|set| (body, set)));
        let ok = match result {
            Ok((body, set)) => {
                if let Ok(mut m) = last_good().lock() {
                    m.insert(uri.to_string(), Arc::new(body));
                }
                tx.send_modify(|p| {
                    p.keys = Some(Arc::new(set));
                    p.attempts += 1;
                });
                true
            }
            Err(e) => {
                log::warn!(
                    "jwt-auth: cannot load the JWKS from {uri}: {e}; keeping the last good key set"
                );
                tx.send_modify(|p| p.attempts += 1);
                false
            }
        };
        if tx.is_closed() {
            return;
        }
        let wait = if ok {
            interval
        } else {
            interval.min(RETRY_AFTER_FAILURE)
        };
        match wake.recv_timeout(wait) {
            Ok(()) | Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
    }
}

async fn fetch(client: &reqwest::Client, uri: &str) -> Result<Vec<u8>, String> {
    let mut resp = client
        .get(uri)
        .header("accept", "application/json, application/jwk-set+json")
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("status {}", resp.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > MAX_JWKS_BYTES {
            return Err(format!(
                "the document is larger than {MAX_JWKS_BYTES} bytes"
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn template() -> Validation {
        Validation::new(Algorithm::HS256)
    }

    #[test]
    fn jwks_keys_are_pinned_and_unusable_ones_skipped() {
        let doc = json!({"keys": [
            {"kty": "oct", "kid": "h", "k": "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI"},
            {"kty": "oct", "kid": "h512", "alg": "HS512", "k": "c2VjcmV0"},
            {"kty": "oct", "kid": "enc", "use": "enc", "k": "c2VjcmV0"},
            {"kty": "RSA", "kid": "wrong-alg", "alg": "ES256", "n": "AQAB", "e": "AQAB"},
            {"kty": "weird", "kid": "w"},
            {"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
        ]});
        let set = parse_jwks(doc.to_string().as_bytes(), &template()).unwrap();
        assert_eq!(set.get("h").unwrap().alg, Algorithm::HS256);
        assert_eq!(set.get("h512").unwrap().alg, Algorithm::HS512);
        assert_eq!(
            set.get("h512").unwrap().validation.algorithms,
            vec![Algorithm::HS512]
        );
        assert_eq!(set.get("ed").unwrap().alg, Algorithm::EdDSA);
        assert!(set.get("enc").is_none());
        assert!(set.get("wrong-alg").is_none());
        assert!(set.get("w").is_none());
        assert!(set.only().is_none());
    }

    #[test]
    fn one_key_sets_serve_tokens_without_kid() {
        let doc = json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]});
        let set = parse_jwks(doc.to_string().as_bytes(), &template()).unwrap();
        assert!(set.for_token(None).is_some());
        assert!(set.for_token(Some("x")).is_none());
        assert!(parse_jwks(b"{\"keys\": []}", &template()).is_err());
        assert!(parse_jwks(b"[]", &template())
            .err()
            .unwrap()
            .contains("not a JWKS"));
    }

    #[tokio::test]
    async fn unreachable_uri_gives_no_key_without_blocking_long() {
        // Port 9 (discard) on loopback refuses connections.
        let remote = RemoteJwks::new(
            "http://127.0.0.1:9/jwks",
            Duration::from_secs(60),
            template(),
        );
        let started = Instant::now();
        // The first request waits for the first fetch only.
        assert!(remote.key(Some("k")).await.is_none());
        // The next asks for one refresh; later ones within 30 s answer at once.
        assert!(remote.key(Some("k")).await.is_none());
        assert!(remote.key(Some("k")).await.is_none());
        assert!(!remote.force_refresh());
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
