//! `openid-connect` through a real gateway against a real identity provider stand-in on
//! loopback: discovery, a JWKS with keys generated when the test runs (and rotated while it
//! runs), and an RFC 7662 introspection endpoint that checks the gateway's client
//! credentials and counts its calls. Tokens are signed here with OpenSSL.

mod support;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::{Padding, Rsa};
use openssl::sign::{RsaPssSaltlen, Signer};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::bearer::{assert_refused, b64url, now, send, signing_input, with_bearer};
use support::{free_port, EchoUpstream, GatewayProcess};

const CLIENT_ID: &str = "gatehouse";
const CLIENT_SECRET: &str = "introspection-secret";
const HS_SECRET: &str = "the-client-secret-0123456789abcdef";
const AUDIENCE: &str = "orders-api";

/// An RSA signing key, published with `alg` (RS256 or PS256).
struct RsaKey {
    key: PKey<Private>,
    kid: String,
    alg: &'static str,
}

impl RsaKey {
    fn new(kid: &str, alg: &'static str) -> RsaKey {
        RsaKey {
            key: PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap(),
            kid: kid.to_string(),
            alg,
        }
    }

    fn jwk(&self) -> Value {
        let rsa = self.key.rsa().unwrap();
        json!({"kty": "RSA", "use": "sig", "kid": self.kid, "alg": self.alg,
               "n": b64url(&rsa.n().to_vec()), "e": b64url(&rsa.e().to_vec())})
    }

    /// A token signed with this key, naming its kid and alg.
    fn token(&self, claims: &Value) -> String {
        self.token_with(
            json!({"alg": self.alg, "typ": "JWT", "kid": self.kid}),
            claims,
        )
    }

    fn token_with(&self, header: Value, claims: &Value) -> String {
        let input = signing_input(&header, claims);
        let mut s = Signer::new(MessageDigest::sha256(), &self.key).unwrap();
        if self.alg == "PS256" {
            s.set_rsa_padding(Padding::PKCS1_PSS).unwrap();
            s.set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH).unwrap();
        }
        s.update(input.as_bytes()).unwrap();
        format!("{input}.{}", b64url(&s.sign_to_vec().unwrap()))
    }
}

fn hs256_token(secret: &[u8], claims: &Value) -> String {
    let input = signing_input(&json!({"alg": "HS256", "typ": "JWT"}), claims);
    let key = PKey::hmac(secret).unwrap();
    let mut s = Signer::new(MessageDigest::sha256(), &key).unwrap();
    s.update(input.as_bytes()).unwrap();
    format!("{input}.{}", b64url(&s.sign_to_vec().unwrap()))
}

/// The identity provider stand-in.
struct Idp {
    base: String,
    jwks: Arc<Mutex<Value>>,
    /// Opaque tokens the introspection endpoint knows, with their answers.
    tokens: Arc<Mutex<HashMap<String, Value>>>,
    discovery_hits: Arc<AtomicUsize>,
    jwks_hits: Arc<AtomicUsize>,
    introspection_hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct IdpState {
    base: String,
    jwks: Arc<Mutex<Value>>,
    tokens: Arc<Mutex<HashMap<String, Value>>>,
    discovery_hits: Arc<AtomicUsize>,
    jwks_hits: Arc<AtomicUsize>,
    introspection_hits: Arc<AtomicUsize>,
}

fn json_response(status: u16, body: &Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

async fn idp_handle(
    req: Request<Incoming>,
    s: IdpState,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let path = req.uri().path().to_string();
    match (req.method().as_str(), path.as_str()) {
        ("GET", "/.well-known/openid-configuration") => {
            s.discovery_hits.fetch_add(1, Ordering::SeqCst);
            Ok(json_response(
                200,
                &json!({
                    "issuer": s.base,
                    "authorization_endpoint": format!("{}/authorize", s.base),
                    "token_endpoint": format!("{}/token", s.base),
                    "jwks_uri": format!("{}/jwks", s.base),
                    "introspection_endpoint": format!("{}/introspect", s.base),
                    "id_token_signing_alg_values_supported": ["RS256", "PS256"],
                }),
            ))
        }
        ("GET", "/jwks") => {
            s.jwks_hits.fetch_add(1, Ordering::SeqCst);
            let doc = s.jwks.lock().unwrap().clone();
            Ok(json_response(200, &doc))
        }
        ("POST", "/introspect") => {
            s.introspection_hits.fetch_add(1, Ordering::SeqCst);
            let expected = format!(
                "Basic {}",
                openssl::base64::encode_block(format!("{CLIENT_ID}:{CLIENT_SECRET}").as_bytes())
            );
            let authorized = req
                .headers()
                .get("authorization")
                .is_some_and(|v| v.as_bytes() == expected.as_bytes());
            let form_ok = req
                .headers()
                .get("content-type")
                .is_some_and(|v| v == "application/x-www-form-urlencoded");
            let body = req.into_body().collect().await?.to_bytes();
            if !authorized {
                return Ok(json_response(401, &json!({"error": "invalid_client"})));
            }
            if !form_ok {
                return Ok(json_response(400, &json!({"error": "invalid_request"})));
            }
            let body = String::from_utf8_lossy(&body).to_string();
            let token = body
                .split('&')
                .find_map(|kv| kv.strip_prefix("token="))
                .unwrap_or_default();
            let answer = s
                .tokens
                .lock()
                .unwrap()
                .get(token)
                .cloned()
                .unwrap_or(json!({"active": false}));
            Ok(json_response(200, &answer))
        }
        _ => Ok(json_response(404, &json!({"error": "not found"}))),
    }
}

impl Idp {
    async fn start(keys: &[&RsaKey]) -> Idp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let state = IdpState {
            base: base.clone(),
            jwks: Arc::new(Mutex::new(
                json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()}),
            )),
            tokens: Arc::new(Mutex::new(HashMap::new())),
            discovery_hits: Arc::new(AtomicUsize::new(0)),
            jwks_hits: Arc::new(AtomicUsize::new(0)),
            introspection_hits: Arc::new(AtomicUsize::new(0)),
        };
        let s = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    break;
                };
                let s = s.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| idp_handle(req, s.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Idp {
            base,
            jwks: state.jwks,
            tokens: state.tokens,
            discovery_hits: state.discovery_hits,
            jwks_hits: state.jwks_hits,
            introspection_hits: state.introspection_hits,
            task,
        }
    }

    fn publish(&self, keys: &[&RsaKey]) {
        *self.jwks.lock().unwrap() =
            json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()});
    }

    fn know(&self, token: &str, answer: Value) {
        self.tokens
            .lock()
            .unwrap()
            .insert(token.to_string(), answer);
    }

    fn discovery_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.base)
    }

    fn hits(counter: &AtomicUsize) -> usize {
        counter.load(Ordering::SeqCst)
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn config(port: u16, upstream: &EchoUpstream, idp: &Idp, closed_port: u16) -> String {
    format!(
        r#"listeners:
  - {{ name: main, address: 127.0.0.1:{port} }}
upstreams:
  - id: echo
    nodes: [{{ address: "{addr}" }}]
routes:
  - id: api
    paths: [/api/*]
    upstream: echo
    plugins:
      openid-connect:
        discovery: "{discovery}"
        audience: {AUDIENCE}
        required_scopes: [read]
        claims_to_headers: {{ sub: X-User, scope: X-Scope }}
        consumer_claim: sub
  - id: admin
    paths: [/admin]
    upstream: echo
    plugins:
      openid-connect:
        discovery: "{discovery}"
        audience: [other-api, {AUDIENCE}]
        required_scopes: [read, admin]
  - id: hs
    paths: [/hs]
    upstream: echo
    plugins:
      openid-connect:
        issuer: "{base}"
        jwks_uri: "{base}/jwks"
        algorithms: [RS256, HS256]
        client_secret: "{HS_SECRET}"
  - id: rotate
    paths: [/rotate]
    upstream: echo
    plugins:
      openid-connect: {{ issuer: "{base}", jwks_uri: "{base}/jwks", jwks_refresh_interval: 1h }}
  - id: either
    paths: [/either]
    upstream: echo
    plugins:
      openid-connect: {{ discovery: "{discovery}", optional: true }}
      key-auth: {{}}
  - id: opaque
    paths: [/opaque]
    upstream: echo
    plugins:
      openid-connect:
        issuer: "{base}"
        required_scopes: [read]
        claims_to_headers: {{ username: X-User }}
        hide_credentials: true
        introspection:
          endpoint: "{base}/introspect"
          client_id: {CLIENT_ID}
          client_secret: {CLIENT_SECRET}
  - id: opaque-discovered
    paths: [/opaque-discovered]
    upstream: echo
    plugins:
      openid-connect:
        discovery: "{discovery}"
        mode: introspection
        introspection: {{ client_id: {CLIENT_ID}, client_secret: {CLIENT_SECRET}, cache_ttl: 0s }}
  - id: opaque-wrong-client
    paths: [/opaque-wrong-client]
    upstream: echo
    plugins:
      openid-connect:
        introspection: {{ endpoint: "{base}/introspect", client_id: {CLIENT_ID}, client_secret: wrong }}
  - id: opaque-down
    paths: [/opaque-down]
    upstream: echo
    plugins:
      openid-connect:
        introspection:
          endpoint: "http://127.0.0.1:{closed_port}/introspect"
          client_id: {CLIENT_ID}
          client_secret: {CLIENT_SECRET}
          timeout: 500ms
consumers:
  - id: alice
    groups: [staff]
    credentials:
      key-auth: {{ key: alice-key }}
"#,
        addr = upstream.addr,
        base = idp.base,
        discovery = idp.discovery_url(),
    )
}

struct Setup {
    idp: Idp,
    up: EchoUpstream,
    port: u16,
    key: RsaKey,
    _gw: GatewayProcess,
}

async fn setup() -> Setup {
    let key = RsaKey::new("key-1", "RS256");
    let idp = Idp::start(&[&key]).await;
    let up = EchoUpstream::start("echo").await;
    let port = free_port();
    let closed_port = free_port();
    let gw = GatewayProcess::start(&config(port, &up, &idp, closed_port), port);
    Setup {
        idp,
        up,
        port,
        key,
        _gw: gw,
    }
}

impl Setup {
    fn claims(&self, sub: &str, scope: &str) -> Value {
        json!({"iss": self.idp.base, "aud": AUDIENCE, "sub": sub, "scope": scope,
               "exp": now() + 300, "iat": now(), "client_id": "web"})
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn jwt_access_tokens() {
    let s = setup().await;
    let port = s.port;
    let good = s.key.token(&s.claims("alice", "read write"));

    // Valid: the upstream receives the request with the claims and the consumer.
    let r = send(
        port,
        "/api/orders",
        &[
            ("authorization", &format!("Bearer {good}")),
            ("x-user", "forged"),
            ("x-consumer-id", "root"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["uri"], "/api/orders");
    assert_eq!(r.upstream_header("x-user"), Some("alice"));
    assert_eq!(r.upstream_header("x-scope"), Some("read write"));
    assert_eq!(r.upstream_header("x-consumer-id"), Some("alice"));
    assert_eq!(r.upstream_header("x-consumer-groups"), Some("staff"));
    assert_eq!(
        r.upstream_header("authorization"),
        Some(format!("Bearer {good}").as_str())
    );
    // A subject that is no consumer: through, without a consumer.
    let bob = s.key.token(&s.claims("bob", "read"));
    let r = with_bearer(port, "/api/orders", &bob).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.upstream_header("x-user"), Some("bob"));
    assert_eq!(r.upstream_header("x-consumer-id"), None);
    // Discovery and the JWKS were fetched once for all of this.
    assert_eq!(Idp::hits(&s.idp.discovery_hits), 1);

    // Missing token.
    for headers in [vec![], vec![("authorization", "Basic YWxpY2U6eA==")]] {
        let r = send(port, "/api/orders", &headers).await;
        assert_eq!(r.status, 401);
        assert_eq!(r.body, json!({"error": "missing token", "status": 401}));
        assert_eq!(r.challenge, "Bearer realm=\"gatehouse\"");
    }

    // Refusals.
    let with = |k: &str, v: Value| {
        let mut c = s.claims("alice", "read");
        c[k] = v;
        s.key.token(&c)
    };
    assert_refused(
        &with_bearer(port, "/api/x", &with("exp", json!(now() - 60))).await,
        "token expired",
        "expired",
    );
    assert_refused(
        &with_bearer(port, "/api/x", &with("iss", json!("https://evil.test"))).await,
        "token claims rejected",
        "wrong issuer",
    );
    assert_refused(
        &with_bearer(port, "/api/x", &with("aud", json!("billing-api"))).await,
        "token claims rejected",
        "wrong audience",
    );
    let unsigned = format!(
        "{}.",
        signing_input(
            &json!({"alg": "none", "kid": "key-1"}),
            &s.claims("alice", "read")
        )
    );
    assert_refused(
        &with_bearer(port, "/api/x", &unsigned).await,
        "invalid token",
        "alg none",
    );
    // HS256, signed with the RSA key's public half as the secret, or with any secret: this
    // route accepts no HMAC algorithm.
    let public_pem = s.key.key.public_key_to_pem().unwrap();
    for secret in [public_pem.as_slice(), HS_SECRET.as_bytes()] {
        let t = hs256_token(secret, &s.claims("alice", "read"));
        assert_refused(
            &with_bearer(port, "/api/x", &t).await,
            "invalid token",
            "HS256",
        );
    }
    // A key of the JWKS used with another algorithm than the one it is published for.
    let rs384 = s.key.token_with(
        json!({"alg": "RS384", "kid": "key-1"}),
        &s.claims("alice", "read"),
    );
    assert_refused(
        &with_bearer(port, "/api/x", &rs384).await,
        "invalid token",
        "RS384",
    );
    assert_refused(
        &with_bearer(port, "/api/x", "opaque-alice").await,
        "invalid token",
        "opaque",
    );

    // Authenticated, but without the scopes this route requires: 403 (RFC 6750 §3.1).
    let r = with_bearer(port, "/admin", &good).await;
    assert_eq!(r.status, 403, "{:?}", r.body);
    assert_eq!(
        r.body,
        json!({"error": "insufficient scope", "status": 403})
    );
    assert_eq!(
        r.challenge,
        "Bearer realm=\"gatehouse\", error=\"insufficient_scope\", scope=\"read admin\""
    );
    let admin = s.key.token(&s.claims("alice", "read admin"));
    assert_eq!(with_bearer(port, "/admin", &admin).await.status, 200);
    let upstream_hits = s.up.hits();

    // HS256 where it is configured: signed with the client secret.
    let t = hs256_token(HS_SECRET.as_bytes(), &s.claims("svc", "read"));
    let r = with_bearer(port, "/hs", &t).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let t = hs256_token(
        b"not-the-client-secret-0123456789ab",
        &s.claims("svc", "read"),
    );
    assert_refused(
        &with_bearer(port, "/hs", &t).await,
        "invalid token",
        "HS256 forged",
    );
    assert_eq!(with_bearer(port, "/hs", &good).await.status, 200);

    // With `optional`, a request without a token is left to key-auth; a bearer token is
    // still checked by openid-connect, and key-auth steps aside.
    let r = send(port, "/either", &[("apikey", "alice-key")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.upstream_header("x-consumer-id"), Some("alice"));
    let r = send(port, "/either", &[]).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.body["error"], "missing API key");
    let r = with_bearer(port, "/either", &good).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_refused(
        &with_bearer(port, "/either", &unsigned).await,
        "invalid token",
        "optional, bad token",
    );
    assert_eq!(s.up.hits(), upstream_hits + 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn key_rotation_is_picked_up() {
    let s = setup().await;
    let port = s.port;
    let t1 = s.key.token(&s.claims("svc", "read"));
    assert_eq!(with_bearer(port, "/rotate", &t1).await.status, 200);
    let fetched = Idp::hits(&s.idp.jwks_hits);

    // The IdP rotates to a new key (PS256). A token naming it is unknown to the gateway,
    // which fetches the JWKS again at once and accepts it.
    let second = RsaKey::new("key-2", "PS256");
    s.idp.publish(&[&second]);
    let t2 = second.token(&s.claims("svc", "read"));
    let r = with_bearer(port, "/rotate", &t2).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(Idp::hits(&s.idp.jwks_hits), fetched + 1);
    // The retired key is gone; unknown key ids do not make the gateway hammer the IdP.
    assert_refused(
        &with_bearer(port, "/rotate", &t1).await,
        "invalid token",
        "retired",
    );
    for i in 0..5 {
        let junk = second.token_with(
            json!({"alg": "PS256", "kid": format!("junk-{i}")}),
            &s.claims("svc", "read"),
        );
        assert_refused(
            &with_bearer(port, "/rotate", &junk).await,
            "invalid token",
            "junk kid",
        );
    }
    assert_eq!(Idp::hits(&s.idp.jwks_hits), fetched + 1);
    // The RSA key published for PS256 does not verify an RS256 signature.
    let rs = second.token_with(
        json!({"alg": "RS256", "kid": "key-2"}),
        &s.claims("svc", "read"),
    );
    assert_refused(
        &with_bearer(port, "/rotate", &rs).await,
        "invalid token",
        "RS256 on PS256 key",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn opaque_tokens_by_introspection() {
    let s = setup().await;
    let port = s.port;
    let idp = &s.idp;
    idp.know(
        "opaque-alice",
        json!({"active": true, "scope": "read write", "sub": "alice", "username": "alice",
               "client_id": "web", "token_type": "Bearer", "iss": idp.base, "exp": now() + 300}),
    );
    idp.know(
        "opaque-write-only",
        json!({"active": true, "scope": "write", "username": "bob", "exp": now() + 300}),
    );
    idp.know(
        "opaque-other-issuer",
        json!({"active": true, "scope": "read", "iss": "https://evil.test", "exp": now() + 300}),
    );
    idp.know("opaque-revoked", json!({"active": false}));

    // Active: through, with claims; asked once, then answered from the cache.
    for _ in 0..3 {
        let r = send(
            port,
            "/opaque",
            &[
                ("authorization", "Bearer opaque-alice"),
                ("x-user", "forged"),
            ],
        )
        .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        assert_eq!(r.upstream_header("x-user"), Some("alice"));
        assert_eq!(r.upstream_header("authorization"), None, "hide_credentials");
        assert_eq!(r.upstream_header("x-consumer-id"), None);
    }
    assert_eq!(Idp::hits(&idp.introspection_hits), 1);

    // Inactive: 401, and also remembered.
    for _ in 0..2 {
        assert_refused(
            &with_bearer(port, "/opaque", "opaque-revoked").await,
            "invalid token",
            "inactive",
        );
    }
    assert_refused(
        &with_bearer(port, "/opaque", "never-issued").await,
        "invalid token",
        "unknown",
    );
    assert_eq!(Idp::hits(&idp.introspection_hits), 3);
    assert_refused(
        &with_bearer(port, "/opaque", "opaque-other-issuer").await,
        "token claims rejected",
        "issuer",
    );
    let r = with_bearer(port, "/opaque", "opaque-write-only").await;
    assert_eq!(r.status, 403);
    assert_eq!(
        r.challenge,
        "Bearer realm=\"gatehouse\", error=\"insufficient_scope\", scope=\"read\""
    );
    let r = send(port, "/opaque", &[]).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.challenge, "Bearer realm=\"gatehouse\"");

    // The endpoint found by discovery; `cache_ttl: 0s` asks every time.
    let before = Idp::hits(&idp.introspection_hits);
    for _ in 0..2 {
        let r = with_bearer(port, "/opaque-discovered", "opaque-alice").await;
        assert_eq!(r.status, 200, "{:?}", r.body);
    }
    assert_eq!(Idp::hits(&idp.introspection_hits), before + 2);

    // The IdP refuses the gateway's client credentials, or cannot be reached: 503.
    let unavailable = json!({"error": "identity provider unavailable", "status": 503});
    let r = with_bearer(port, "/opaque-wrong-client", "opaque-alice").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.body, unavailable);
    let started = Instant::now();
    let r = with_bearer(port, "/opaque-down", "opaque-alice").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.body, unavailable);
    assert_eq!(r.challenge, "");
    assert!(started.elapsed() < Duration::from_secs(2));
    // Failures are not remembered.
    let before = Idp::hits(&idp.introspection_hits);
    assert_eq!(
        with_bearer(port, "/opaque-wrong-client", "opaque-alice")
            .await
            .status,
        503
    );
    assert_eq!(Idp::hits(&idp.introspection_hits), before + 1);
}

#[test]
fn config_errors_and_no_network_at_load() {
    let route = |plugin: &str| {
        format!(
            "listeners:\n  - {{ name: main, address: 127.0.0.1:8080 }}\nroutes:\n  - {{ id: r, paths: [/], plugins: {{ openid-connect: {plugin}, mock: {{}} }} }}\n"
        )
    };
    for (plugin, expected) in [
        (
            "{ issuer: i, jwks_uri: \"http://idp/jwks\", algorithms: [RS256, none] }",
            "routes[0].plugins.openid-connect.algorithms[1]: unknown variant `none`",
        ),
        (
            "{ issuer: i, jwks_uri: \"http://idp/jwks\", algorithms: [HS256] }",
            "routes[0].plugins.openid-connect.algorithms: HS256 tokens are signed with the client secret: set `client_secret`",
        ),
        (
            "{ jwks_uri: \"http://idp/jwks\" }",
            "routes[0].plugins.openid-connect.issuer: is required with `jwks_uri`",
        ),
        (
            "{ introspection: { endpoint: \"http://idp/i\", client_id: c } }",
            "routes[0].plugins.openid-connect.introspection: missing field `client_secret`",
        ),
    ] {
        let (ok, out) = support::check_config(&route(plugin));
        assert!(!ok, "{plugin}");
        assert!(out.starts_with(&format!("gatehouse: DIR/bad.yaml: {expected}")), "{out}");
    }
    // An unreachable IdP does not slow a config load down.
    let started = Instant::now();
    let (ok, out) = support::check_config(&route(
        "{ discovery: \"http://10.255.255.1/.well-known/openid-configuration\" }",
    ));
    assert!(ok, "{out}");
    assert!(started.elapsed() < Duration::from_secs(3));
}
