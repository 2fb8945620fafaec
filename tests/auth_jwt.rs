//! `jwt-auth` through a real gateway: RS256, ES256, EdDSA and HS256 tokens from consumers'
//! keys, forged and invalid tokens (alg none, key confusion, tampering, expiry, issuer,
//! audience), token places, and keys from a JWKS file and from a JWKS URL that rotates.
//!
//! Keys are generated when the test runs; tokens are signed here with OpenSSL.

mod support;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use openssl::bn::BigNumContext;
use openssl::ec::{EcGroup, EcKey};
use openssl::ecdsa::EcdsaSig;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::sign::Signer;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::bearer::{assert_refused, b64url, now, send, signing_input, with_bearer};
use support::{free_port, EchoUpstream, GatewayProcess};

const HS_SECRET: &str = "carol-shared-secret-0123456789abcdef";

/// A signing key and how it signs.
enum Key {
    Rsa(PKey<Private>),
    Ec(PKey<Private>),
    Ed(PKey<Private>),
    Hmac(Vec<u8>),
}

impl Key {
    fn rsa() -> Key {
        Key::Rsa(PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap())
    }

    fn ec() -> Key {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        Key::Ec(PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap())
    }

    fn public_pem(&self) -> String {
        let pem = match self {
            Key::Rsa(k) | Key::Ec(k) | Key::Ed(k) => k.public_key_to_pem().unwrap(),
            Key::Hmac(_) => panic!("no public key"),
        };
        String::from_utf8(pem).unwrap()
    }

    fn sign(&self, alg: &str, message: &[u8]) -> Vec<u8> {
        match self {
            Key::Rsa(k) => {
                let md = match alg {
                    "RS384" => MessageDigest::sha384(),
                    _ => MessageDigest::sha256(),
                };
                let mut s = Signer::new(md, k).unwrap();
                s.update(message).unwrap();
                s.sign_to_vec().unwrap()
            }
            Key::Ec(k) => {
                let mut s = Signer::new(MessageDigest::sha256(), k).unwrap();
                s.update(message).unwrap();
                let der = EcdsaSig::from_der(&s.sign_to_vec().unwrap()).unwrap();
                let mut raw = der.r().to_vec_padded(32).unwrap();
                raw.extend(der.s().to_vec_padded(32).unwrap());
                raw
            }
            Key::Ed(k) => Signer::new_without_digest(k)
                .unwrap()
                .sign_oneshot_to_vec(message)
                .unwrap(),
            Key::Hmac(secret) => {
                let pkey = PKey::hmac(secret).unwrap();
                let mut s = Signer::new(MessageDigest::sha256(), &pkey).unwrap();
                s.update(message).unwrap();
                s.sign_to_vec().unwrap()
            }
        }
    }

    /// The public key as a JWK with `kid`.
    fn jwk(&self, kid: &str) -> Value {
        match self {
            Key::Rsa(k) => {
                let rsa = k.rsa().unwrap();
                json!({"kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig",
                       "n": b64url(&rsa.n().to_vec()), "e": b64url(&rsa.e().to_vec())})
            }
            Key::Ec(k) => {
                let ec = k.ec_key().unwrap();
                let mut ctx = BigNumContext::new().unwrap();
                let (mut x, mut y) = (
                    openssl::bn::BigNum::new().unwrap(),
                    openssl::bn::BigNum::new().unwrap(),
                );
                ec.public_key()
                    .affine_coordinates(ec.group(), &mut x, &mut y, &mut ctx)
                    .unwrap();
                json!({"kty": "EC", "kid": kid, "crv": "P-256",
                       "x": b64url(&x.to_vec_padded(32).unwrap()), "y": b64url(&y.to_vec_padded(32).unwrap())})
            }
            _ => panic!("not used"),
        }
    }
}

/// A compact JWS with `header` and `claims`, signed by `key` with `header.alg`.
fn token(key: &Key, header: Value, claims: Value) -> String {
    let alg = header["alg"].as_str().unwrap_or("none").to_string();
    let input = signing_input(&header, &claims);
    let sig = key.sign(&alg, input.as_bytes());
    format!("{input}.{}", b64url(&sig))
}

fn valid_claims(sub: &str) -> Value {
    json!({"sub": sub, "exp": now() + 300, "iat": now(), "scope": ["read", "write"]})
}

struct Keys {
    alice: Key,
    bob: Key,
    carol: Key,
    dave: Key,
    jwks_file_key: Key,
    _dir: tempfile::TempDir,
    alice_pem_path: String,
    jwks_path: String,
}

fn keys() -> Keys {
    let dir = tempfile::tempdir().unwrap();
    let alice = Key::rsa();
    let alice_pem_path = dir.path().join("alice.pub.pem");
    std::fs::write(&alice_pem_path, alice.public_pem()).unwrap();
    let jwks_file_key = Key::ec();
    let jwks_path = dir.path().join("jwks.json");
    std::fs::write(
        &jwks_path,
        json!({"keys": [jwks_file_key.jwk("file-ec")]}).to_string(),
    )
    .unwrap();
    Keys {
        alice,
        bob: Key::ec(),
        carol: Key::Hmac(HS_SECRET.as_bytes().to_vec()),
        dave: Key::Ed(PKey::generate_ed25519().unwrap()),
        jwks_file_key,
        alice_pem_path: alice_pem_path.display().to_string(),
        jwks_path: jwks_path.display().to_string(),
        _dir: dir,
    }
}

/// `text` as an indented YAML literal block.
fn block(text: &str, indent: usize) -> String {
    let pad = " ".repeat(indent);
    text.lines()
        .map(|l| format!("{pad}{l}\n"))
        .collect::<String>()
}

fn config(port: u16, upstream: &EchoUpstream, keys: &Keys, jwks_url: &str) -> String {
    format!(
        r#"listeners:
  - {{ name: main, address: 127.0.0.1:{port} }}
upstreams:
  - id: echo
    nodes: [{{ address: "{addr}" }}]
routes:
  - id: jwt
    paths: [/jwt/*]
    upstream: echo
    plugins:
      jwt-auth:
        claims_to_headers: {{ sub: X-User, scope: X-Scope }}
  - id: strict
    paths: [/strict]
    upstream: echo
    plugins:
      jwt-auth: {{ issuer: "https://idp.test", audience: [api, api2], leeway: 2s }}
  - id: places
    paths: [/places]
    upstream: echo
    plugins:
      jwt-auth: {{ header: null, query: jwt, cookie: session, hide_credentials: true }}
  - id: jwks-file
    paths: [/jwks-file]
    upstream: echo
    plugins:
      jwt-auth: {{ jwks_file: "{jwks_file}", consumer_claim: sub }}
  - id: jwks-or-key
    paths: [/jwks-or-key]
    upstream: echo
    plugins:
      jwt-auth: {{ jwks_file: "{jwks_file}", optional: true }}
      key-auth: {{}}
  - id: jwks-url
    paths: [/jwks-url]
    upstream: echo
    plugins:
      jwt-auth: {{ jwks_uri: "{jwks_url}", jwks_refresh_interval: 1s }}
consumers:
  - id: alice
    groups: [partners]
    credentials:
      jwt-auth: {{ key: alice-rsa, algorithm: RS256, public_key: "{alice_pem}" }}
  - id: bob
    credentials:
      jwt-auth:
        key: bob-ec
        algorithm: ES256
        public_key: |
{bob_pem}  - id: carol
    credentials:
      jwt-auth: {{ key: carol-hs, algorithm: HS256, secret: "{HS_SECRET}" }}
  - id: dave
    credentials:
      jwt-auth: {{ key: dave-ed, algorithm: EdDSA, public_key: "{dave_pem}" }}
"#,
        addr = upstream.addr,
        jwks_file = keys.jwks_path,
        alice_pem = keys.alice_pem_path,
        bob_pem = block(&keys.bob.public_pem(), 10),
        dave_pem = keys.dave.public_pem().replace('\n', "\\n"),
    )
}

/// A JWKS server whose document the test can change; counts fetches.
struct JwksServer {
    url: String,
    doc: Arc<Mutex<(u16, String)>>,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    async fn start(doc: Value) -> JwksServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks", listener.local_addr().unwrap());
        let doc = Arc::new(Mutex::new((200, doc.to_string())));
        let hits = Arc::new(AtomicUsize::new(0));
        let (d, h) = (doc.clone(), hits.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    break;
                };
                let (d, h) = (d.clone(), h.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |_req: Request<hyper::body::Incoming>| {
                        h.fetch_add(1, Ordering::SeqCst);
                        let (status, body) = d.lock().unwrap().clone();
                        async move {
                            Ok::<_, hyper::Error>(
                                Response::builder()
                                    .status(status)
                                    .header("content-type", "application/json")
                                    .body(Full::new(Bytes::from(body)))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        JwksServer {
            url,
            doc,
            hits,
            task,
        }
    }

    fn serve(&self, status: u16, doc: Value) {
        *self.doc.lock().unwrap() = (status, doc.to_string());
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Setup {
    keys: Keys,
    up: EchoUpstream,
    jwks: JwksServer,
    port: u16,
    _gw: GatewayProcess,
    rotated: Key,
}

async fn setup() -> Setup {
    let keys = keys();
    let up = EchoUpstream::start("echo").await;
    let first = Key::rsa();
    let jwks = JwksServer::start(json!({"keys": [first.jwk("url-1")]})).await;
    let port = free_port();
    let gw = GatewayProcess::start(&config(port, &up, &keys, &jwks.url), port);
    Setup {
        keys,
        up,
        jwks,
        port,
        _gw: gw,
        rotated: first,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn good_tokens_of_every_key_type() {
    let s = setup().await;
    let k = &s.keys;
    for (key, alg, kid, who) in [
        (&k.alice, "RS256", "alice-rsa", "alice"),
        (&k.bob, "ES256", "bob-ec", "bob"),
        (&k.carol, "HS256", "carol-hs", "carol"),
        (&k.dave, "EdDSA", "dave-ed", "dave"),
    ] {
        let t = token(
            key,
            json!({"alg": alg, "typ": "JWT", "kid": kid}),
            valid_claims(who),
        );
        let r = send(
            s.port,
            "/jwt/x",
            &[
                ("authorization", &format!("Bearer {t}")),
                ("x-user", "forged"),
                ("x-consumer-id", "root"),
            ],
        )
        .await;
        assert_eq!(r.status, 200, "{alg}: {:?}", r.body);
        assert_eq!(r.upstream_header("x-consumer-id"), Some(who), "{alg}");
        assert_eq!(r.upstream_header("x-user"), Some(who), "{alg}");
        assert_eq!(r.upstream_header("x-scope"), Some("read,write"), "{alg}");
        // The token is forwarded unless hide_credentials is set.
        assert_eq!(
            r.upstream_header("authorization"),
            Some(format!("Bearer {t}").as_str())
        );
    }
    assert_eq!(
        send(s.port, "/jwt/x", &[])
            .await
            .upstream_header("x-consumer-groups"),
        None
    );
    let t = token(
        &k.alice,
        json!({"alg": "RS256", "kid": "alice-rsa"}),
        valid_claims("alice"),
    );
    let r = with_bearer(s.port, "/jwt/x", &t).await;
    assert_eq!(r.upstream_header("x-consumer-groups"), Some("partners"));
    // No kid: the `iss` claim names the key.
    let mut claims = valid_claims("carol");
    claims["iss"] = json!("carol-hs");
    let t = token(&k.carol, json!({"alg": "HS256"}), claims);
    let r = with_bearer(s.port, "/jwt/x", &t).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.upstream_header("x-consumer-id"), Some("carol"));
    // Issuer and audience (one of several) as configured.
    let mut claims = valid_claims("bob");
    claims["iss"] = json!("https://idp.test");
    claims["aud"] = json!(["other", "api2"]);
    let t = token(&k.bob, json!({"alg": "ES256", "kid": "bob-ec"}), claims);
    let r = with_bearer(s.port, "/strict", &t).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.upstream_header("x-consumer-id"), Some("bob"));
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_and_invalid_tokens_are_refused() {
    let s = setup().await;
    let k = &s.keys;
    let port = s.port;
    let rs = |claims: Value| {
        token(
            &k.alice,
            json!({"alg": "RS256", "kid": "alice-rsa"}),
            claims,
        )
    };
    let good = rs(valid_claims("alice"));

    // alg: none, with and without a signature part.
    let unsigned = format!(
        "{}.{}.",
        b64url(
            json!({"alg": "none", "kid": "alice-rsa"})
                .to_string()
                .as_bytes()
        ),
        b64url(valid_claims("alice").to_string().as_bytes())
    );
    assert_refused(
        &with_bearer(port, "/jwt/x", &unsigned).await,
        "invalid token",
        "alg none",
    );
    let none_sig = format!("{unsigned}{}", good.rsplit('.').next().unwrap());
    assert_refused(
        &with_bearer(port, "/jwt/x", &none_sig).await,
        "invalid token",
        "alg none, signed",
    );

    // Key confusion: HS256 with alice's RSA public key (the PEM text) as the HMAC secret.
    let confused = token(
        &Key::Hmac(k.alice.public_pem().into_bytes()),
        json!({"alg": "HS256", "kid": "alice-rsa"}),
        valid_claims("alice"),
    );
    assert_refused(
        &with_bearer(port, "/jwt/x", &confused).await,
        "invalid token",
        "key confusion",
    );
    // The right key type, the wrong algorithm for the key (RS384 on an RS256 key).
    let rs384 = token(
        &k.alice,
        json!({"alg": "RS384", "kid": "alice-rsa"}),
        valid_claims("alice"),
    );
    assert_refused(
        &with_bearer(port, "/jwt/x", &rs384).await,
        "invalid token",
        "alg mismatch",
    );
    // Signed by another RSA key.
    let stranger = token(
        &Key::rsa(),
        json!({"alg": "RS256", "kid": "alice-rsa"}),
        valid_claims("alice"),
    );
    assert_refused(
        &with_bearer(port, "/jwt/x", &stranger).await,
        "invalid token",
        "foreign key",
    );
    // Unknown kid.
    let unknown = token(
        &k.alice,
        json!({"alg": "RS256", "kid": "nobody"}),
        valid_claims("alice"),
    );
    assert_refused(
        &with_bearer(port, "/jwt/x", &unknown).await,
        "invalid token",
        "unknown kid",
    );
    // Tampered payload: alice's signature over a payload claiming bob.
    let parts: Vec<&str> = good.split('.').collect();
    let mut claims = valid_claims("alice");
    claims["sub"] = json!("admin");
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64url(claims.to_string().as_bytes()),
        parts[2]
    );
    assert_refused(
        &with_bearer(port, "/jwt/x", &tampered).await,
        "invalid token",
        "tampered",
    );
    assert_refused(
        &with_bearer(port, "/jwt/x", "abc.def").await,
        "invalid token",
        "garbage",
    );

    // Time.
    let expired = rs(json!({"sub": "alice", "exp": now() - 60}));
    assert_refused(
        &with_bearer(port, "/jwt/x", &expired).await,
        "token expired",
        "expired",
    );
    let early = rs(json!({"sub": "alice", "exp": now() + 300, "nbf": now() + 120}));
    assert_refused(
        &with_bearer(port, "/jwt/x", &early).await,
        "token not yet valid",
        "nbf",
    );
    let no_exp = rs(json!({"sub": "alice"}));
    assert_refused(
        &with_bearer(port, "/jwt/x", &no_exp).await,
        "token claims rejected",
        "no exp",
    );
    // Within the strict route's 2 s leeway an expiry 1 s ago passes the time check, then
    // fails on the missing issuer.
    let mut c = json!({"sub": "alice", "exp": now() - 1, "aud": "api"});
    assert_refused(
        &with_bearer(port, "/strict", &rs(c.clone())).await,
        "token claims rejected",
        "no iss",
    );
    // Issuer and audience.
    c["iss"] = json!("https://evil.test");
    assert_refused(
        &with_bearer(port, "/strict", &rs(c.clone())).await,
        "token claims rejected",
        "wrong iss",
    );
    c["iss"] = json!("https://idp.test");
    c["aud"] = json!("web");
    assert_refused(
        &with_bearer(port, "/strict", &rs(c.clone())).await,
        "token claims rejected",
        "wrong aud",
    );
    c.as_object_mut().unwrap().remove("aud");
    assert_refused(
        &with_bearer(port, "/strict", &rs(c.clone())).await,
        "token claims rejected",
        "no aud",
    );
    c["aud"] = json!("api");
    c["exp"] = json!(now() + 60);
    assert_eq!(with_bearer(port, "/strict", &rs(c)).await.status, 200);

    // Missing, or in a place this route does not look: no error code in the challenge.
    for (path, headers) in [
        (format!("/jwt/x?jwt={good}"), vec![]),
        (
            "/jwt/x".to_string(),
            vec![("cookie", format!("session={good}"))],
        ),
        (
            "/jwt/x".to_string(),
            vec![("authorization", format!("Basic {good}"))],
        ),
        (
            "/places".to_string(),
            vec![("authorization", format!("Bearer {good}"))],
        ),
    ] {
        let h: Vec<(&str, &str)> = headers.iter().map(|(a, b)| (*a, b.as_str())).collect();
        let r = send(port, &path, &h).await;
        assert_eq!(r.status, 401, "{path}");
        assert_eq!(r.body, json!({"error": "missing token", "status": 401}));
        assert_eq!(r.challenge, "Bearer realm=\"gatehouse\"");
    }
    assert_eq!(
        s.up.hits(),
        1,
        "only the one good token reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_in_query_and_cookie_are_hidden() {
    let s = setup().await;
    let t = token(
        &s.keys.carol,
        json!({"alg": "HS256", "kid": "carol-hs"}),
        valid_claims("carol"),
    );
    let r = send(s.port, &format!("/places?a=1&jwt={t}&b=2"), &[]).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["uri"], "/places?a=1&b=2");
    assert_eq!(r.upstream_header("x-consumer-id"), Some("carol"));
    let r = send(
        s.port,
        "/places",
        &[("cookie", &format!("theme=dark; session={t}; lang=en"))],
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.upstream_header("cookie"), Some("theme=dark; lang=en"));
    assert_eq!(r.upstream_header("x-consumer-id"), Some("carol"));
}

#[tokio::test(flavor = "multi_thread")]
async fn jwks_file_keys_and_consumer_claim() {
    let s = setup().await;
    let k = &s.keys;
    let t = token(
        &k.jwks_file_key,
        json!({"alg": "ES256", "kid": "file-ec"}),
        valid_claims("alice"),
    );
    let r = with_bearer(s.port, "/jwks-file", &t).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.upstream_header("x-consumer-id"), Some("alice"));
    // A valid token whose subject is not a consumer: through, without a consumer.
    let t = token(
        &k.jwks_file_key,
        json!({"alg": "ES256", "kid": "file-ec"}),
        valid_claims("someone"),
    );
    let r = send(
        s.port,
        "/jwks-file",
        &[
            ("authorization", &format!("Bearer {t}")),
            ("x-consumer-id", "alice"),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.upstream_header("x-consumer-id"), None);
    // Authenticated without a consumer still counts: the key-auth after it steps aside.
    let r = with_bearer(s.port, "/jwks-or-key", &t).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = send(s.port, "/jwks-or-key", &[]).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.body["error"], "missing API key");
    // Consumers' keys do not count on a JWKS route.
    let t = token(
        &k.alice,
        json!({"alg": "RS256", "kid": "alice-rsa"}),
        valid_claims("alice"),
    );
    assert_refused(
        &with_bearer(s.port, "/jwks-file", &t).await,
        "invalid token",
        "consumer key on JWKS route",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn jwks_url_rotation_and_last_good_set() {
    let s = setup().await;
    let port = s.port;
    let first = &s.rotated;
    let t1 = token(
        first,
        json!({"alg": "RS256", "kid": "url-1"}),
        valid_claims("svc"),
    );
    // The first request waits for the first fetch.
    let r = with_bearer(port, "/jwks-url", &t1).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.upstream_header("x-consumer-id"), None);
    assert_eq!(s.jwks.hits(), 1);

    // Rotation: the IdP now publishes only a new key. A token naming it makes the gateway
    // fetch the set again at once.
    let second = Key::ec();
    s.jwks.serve(200, json!({"keys": [second.jwk("url-2")]}));
    let t2 = token(
        &second,
        json!({"alg": "ES256", "kid": "url-2"}),
        valid_claims("svc"),
    );
    let r = with_bearer(port, "/jwks-url", &t2).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    // The retired key is gone, and unknown kids do not make the gateway hammer the IdP.
    let fetched = s.jwks.hits();
    for i in 0..5 {
        let junk = token(
            first,
            json!({"alg": "RS256", "kid": format!("junk-{i}")}),
            valid_claims("x"),
        );
        assert_refused(
            &with_bearer(port, "/jwks-url", &junk).await,
            "invalid token",
            "junk kid",
        );
    }
    assert_refused(
        &with_bearer(port, "/jwks-url", &t1).await,
        "invalid token",
        "retired key",
    );
    assert!(s.jwks.hits() <= fetched + 1, "{} fetches", s.jwks.hits());

    // The IdP fails: the periodic refresh (every 1 s here) keeps the last good set.
    s.jwks.serve(500, json!({"error": "down"}));
    let before = s.jwks.hits();
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert!(s.jwks.hits() > before, "the set is fetched periodically");
    assert_eq!(with_bearer(port, "/jwks-url", &t2).await.status, 200);
}

#[test]
fn key_config_errors_name_the_consumer() {
    let rsa = Key::rsa();
    let private_pem = match &rsa {
        Key::Rsa(k) => String::from_utf8(k.private_key_to_pem_pkcs8().unwrap()).unwrap(),
        _ => unreachable!(),
    };
    let dir = tempfile::tempdir().unwrap();
    let private_path = dir.path().join("private.pem");
    std::fs::write(&private_path, private_pem).unwrap();
    let route = "routes:\n  - { id: r, paths: [/], plugins: { jwt-auth: {}, mock: {} } }\n";
    for (cred, expected) in [
        (
            format!("{{ key: k, algorithm: RS256, public_key: \"{}\" }}", private_path.display()),
            "consumer \"a\": jwt-auth credential `public_key` holds a private key; give the public key".to_string(),
        ),
        (
            "{ key: k, algorithm: HS256, secret: short }".to_string(),
            "consumer \"a\": jwt-auth credential `secret` is 5 bytes; HS256 needs at least 32 (RFC 7518)".to_string(),
        ),
        (
            "{ key: k, algorithm: none, secret: x }".to_string(),
            "consumer \"a\": jwt-auth credential `algorithm`: unknown variant `none`, expected one of `HS256`, `HS384`, `HS512`, `ES256`, `ES384`, `RS256`, `RS384`, `RS512`, `PS256`, `PS384`, `PS512`, `EdDSA`".to_string(),
        ),
        (
            "{ key: k, algorithm: ES256, public_key: /nonexistent/k.pem }".to_string(),
            "consumer \"a\": jwt-auth credential `public_key`: cannot read /nonexistent/k.pem: No such file or directory (os error 2)".to_string(),
        ),
    ] {
        let yaml = format!(
            "listeners:\n  - {{ name: main, address: 127.0.0.1:8080 }}\n{route}consumers:\n  - {{ id: a, credentials: {{ jwt-auth: {cred} }} }}\n"
        );
        let (ok, out) = support::check_config(&yaml);
        assert!(!ok, "{yaml}");
        assert_eq!(out, format!("gatehouse: DIR/bad.yaml: routes[0].plugins.jwt-auth: {expected}"));
    }
    // A JWKS URL is not fetched while the config loads: an unreachable one loads fine.
    let yaml = "listeners:\n  - { name: main, address: 127.0.0.1:8080 }\nroutes:\n  - { id: r, paths: [/], plugins: { jwt-auth: { jwks_uri: \"http://10.255.255.1/jwks\" }, mock: {} } }\n";
    let started = std::time::Instant::now();
    let (ok, out) = support::check_config(yaml);
    assert!(ok, "{out}");
    assert!(started.elapsed() < Duration::from_secs(3));
}
