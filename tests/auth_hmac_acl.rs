//! `hmac-auth` and `acl` through a real gateway: signed requests (headers, date, body
//! digest) accepted and tampered ones refused; consumers allowed and denied by id and group.

mod support;

use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::sign::Signer;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use support::{client, free_port, EchoUpstream, GatewayProcess};

const ALICE_SECRET: &str = "alice-hmac-secret";

fn config(port: u16, upstream: &EchoUpstream) -> String {
    format!(
        r#"listeners:
  - {{ name: main, address: 127.0.0.1:{port} }}
upstreams:
  - id: echo
    nodes: [{{ address: "{addr}" }}]
routes:
  - id: hmac
    paths: [/hmac/*]
    upstream: echo
    plugins:
      hmac-auth: {{}}
  - id: upload
    paths: [/upload]
    methods: [POST]
    upstream: echo
    plugins:
      hmac-auth: {{ validate_request_body: true, max_body: 1KiB, algorithms: [hmac-sha1, hmac-sha256] }}
  - id: xdate
    paths: [/xdate]
    upstream: echo
    plugins:
      hmac-auth: {{ enforce_headers: ["@request-target", x-date], hide_credentials: false, clock_skew: 30s }}
  - id: partners
    paths: [/partners]
    upstream: echo
    plugins:
      key-auth: {{}}
      acl: {{ allow_groups: [partners], deny_consumers: [bob] }}
  - id: acl-only
    paths: [/acl-only]
    upstream: echo
    plugins:
      acl: {{ allow_consumers: [alice] }}
  - id: maybe
    paths: [/maybe]
    upstream: echo
    plugins:
      key-auth: {{ optional: true }}
      acl: {{ deny_groups: [blocked] }}
consumers:
  - id: alice
    groups: [partners]
    credentials:
      hmac-auth: {{ key_id: alice-key, secret: {ALICE_SECRET} }}
      key-auth: {{ key: alice-api-key }}
  - id: bob
    groups: [partners]
    credentials:
      hmac-auth: {{ key_id: bob-key, secret: bob-hmac-secret }}
      key-auth: {{ key: bob-api-key }}
  - id: carol
    credentials:
      key-auth: {{ key: carol-api-key }}
  - id: eve
    groups: [blocked]
    credentials:
      key-auth: {{ key: eve-api-key }}
"#,
        addr = upstream.addr
    )
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
fn http_date(t: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = t.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][days.rem_euclid(7) as usize];
    // Days since 1970-01-01 to a civil date.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{weekday}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
        MONTHS[(month - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn hmac_b64(md: MessageDigest, secret: &str, message: &str) -> String {
    let key = PKey::hmac(secret.as_bytes()).unwrap();
    let mut s = Signer::new(md, &key).unwrap();
    s.update(message.as_bytes()).unwrap();
    openssl::base64::encode_block(&s.sign_to_vec().unwrap())
}

/// A request to sign: method, path and query, headers (name, value) in signing order.
struct Signed {
    method: &'static str,
    target: String,
    headers: Vec<(String, String)>,
    signed: Vec<String>,
    key_id: String,
    secret: String,
    algorithm: &'static str,
}

impl Signed {
    fn new(method: &'static str, target: &str) -> Signed {
        Signed {
            method,
            target: target.to_string(),
            headers: vec![("date".into(), http_date(SystemTime::now()))],
            signed: vec!["@request-target".into(), "date".into()],
            key_id: "alice-key".into(),
            secret: ALICE_SECRET.into(),
            algorithm: "hmac-sha256",
        }
    }

    fn header(mut self, name: &str, value: &str, sign: bool) -> Signed {
        self.headers.retain(|(n, _)| n != name);
        self.headers.push((name.to_string(), value.to_string()));
        if sign && !self.signed.iter().any(|s| s == name) {
            self.signed.push(name.to_string());
        }
        self
    }

    fn signing_string(&self) -> String {
        self.signed
            .iter()
            .map(|name| {
                if name == "@request-target" || name == "(request-target)" {
                    format!("{name}: {} {}", self.method.to_lowercase(), self.target)
                } else {
                    let v = &self.headers.iter().find(|(n, _)| n == name).unwrap().1;
                    format!("{name}: {v}")
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn authorization(&self) -> String {
        let md = match self.algorithm {
            "hmac-sha1" => MessageDigest::sha1(),
            "hmac-sha512" => MessageDigest::sha512(),
            _ => MessageDigest::sha256(),
        };
        format!(
            "Signature keyId=\"{}\",algorithm=\"{}\",headers=\"{}\",signature=\"{}\"",
            self.key_id,
            self.algorithm,
            self.signed.join(" "),
            hmac_b64(md, &self.secret, &self.signing_string())
        )
    }

    /// Sends it, with the signature computed now; `tamper` may change the request after
    /// signing.
    async fn send_with(
        &self,
        port: u16,
        body: Option<&'static str>,
        tamper: impl FnOnce(&mut Vec<(String, String)>, &mut String),
    ) -> (u16, Value) {
        let auth = self.authorization();
        let mut headers = self.headers.clone();
        headers.push(("authorization".into(), auth));
        let mut target = self.target.clone();
        tamper(&mut headers, &mut target);
        let method = reqwest::Method::from_bytes(self.method.as_bytes()).unwrap();
        let mut req = client().request(method, format!("http://127.0.0.1:{port}{target}"));
        for (n, v) in &headers {
            req = req.header(n, v);
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        let r = req.send().await.expect("request");
        let status = r.status().as_u16();
        let challenge = r
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_string());
        let mut body: Value = r.json().await.unwrap_or(Value::Null);
        if let Some(c) = challenge {
            body["challenge"] = json!(c);
        }
        (status, body)
    }

    async fn send(&self, port: u16) -> (u16, Value) {
        self.send_with(port, None, |_, _| {}).await
    }
}

fn sha256_digest(body: &[u8]) -> String {
    let d = openssl::sha::sha256(body);
    format!("sha-256=:{}:", openssl::base64::encode_block(&d))
}

fn refused(r: &(u16, Value), error: &str) {
    assert_eq!(r.0, 401, "{:?}", r.1);
    assert_eq!(r.1["error"], error, "{:?}", r.1);
    assert_eq!(r.1["status"], 401);
    assert_eq!(
        r.1["challenge"],
        "Signature realm=\"gatehouse\",headers=\"@request-target date\""
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn hmac_signed_requests_pass_and_tampered_ones_do_not() {
    let up = EchoUpstream::start("echo").await;
    let port = free_port();
    let _gw = GatewayProcess::start(&config(port, &up), port);

    let good = Signed::new("GET", "/hmac/orders?id=7&x=a%20b").header("x-custom", "v1", true);
    let (status, body) = good
        .send_with(port, None, |h, _| {
            h.push(("x-consumer-id".into(), "bob".into()));
        })
        .await;
    assert_eq!(status, 200, "{body:?}");
    assert_eq!(body["headers"]["x-consumer-id"], "alice");
    assert_eq!(body["headers"]["x-consumer-groups"], "partners");
    assert!(body["headers"].get("authorization").is_none());
    assert_eq!(body["uri"], "/hmac/orders?id=7&x=a%20b");
    // hmac-sha512 is allowed by default too; `(request-target)` is accepted as a name.
    let mut s512 = Signed::new("DELETE", "/hmac/x");
    s512.algorithm = "hmac-sha512";
    assert_eq!(s512.send(port).await.0, 200);
    let mut cavage = Signed::new("GET", "/hmac/c");
    cavage.signed[0] = "(request-target)".into();
    let (status, body) = cavage
        .send_with(port, None, |h, _| {
            let auth = &mut h.last_mut().unwrap().1;
            *auth = auth.replace("signature=", "created=\"1\", signature=");
        })
        .await;
    assert_eq!(status, 200, "{body:?}");
    let hits = up.hits();
    assert_eq!(hits, 3);

    // Tampering after signing.
    refused(
        &good
            .send_with(port, None, |_, t| *t = "/hmac/orders?id=8&x=a%20b".into())
            .await,
        "invalid signature",
    );
    refused(
        &good
            .send_with(port, None, |h, _| h[1].1 = "v2".into())
            .await,
        "invalid signature",
    );
    refused(
        &good
            .send_with(port, None, |h, _| h.remove(1).1.clear())
            .await,
        "invalid signature",
    );
    // Another method, same path.
    let mut post = Signed::new("GET", "/hmac/x");
    post.method = "POST";
    let auth_for_get = Signed::new("GET", "/hmac/x").authorization();
    let r = post
        .send_with(port, None, |h, _| {
            h.retain(|(n, _)| n != "authorization");
            h.push(("authorization".into(), auth_for_get));
        })
        .await;
    refused(&r, "invalid signature");
    // Wrong secret, unknown key id.
    let mut wrong = Signed::new("GET", "/hmac/x");
    wrong.secret = "guess".into();
    refused(&wrong.send(port).await, "invalid signature");
    let mut unknown = Signed::new("GET", "/hmac/x");
    unknown.key_id = "nobody".into();
    refused(&unknown.send(port).await, "invalid signature");
    // Dates outside the skew (either side), or missing from the signature.
    for offset in [-600i64, 600] {
        let t = if offset < 0 {
            SystemTime::now() - Duration::from_secs(600)
        } else {
            SystemTime::now() + Duration::from_secs(600)
        };
        let s = Signed::new("GET", "/hmac/x").header("date", &http_date(t), true);
        refused(
            &s.send(port).await,
            "date missing or outside the allowed clock skew",
        );
    }
    let mut undated = Signed::new("GET", "/hmac/x");
    undated.signed.retain(|n| n != "date");
    refused(
        &undated.send(port).await,
        "signature does not cover the required headers",
    );
    // Algorithms not allowed on this route, and malformed authorizations.
    let mut sha1 = Signed::new("GET", "/hmac/x");
    sha1.algorithm = "hmac-sha1";
    refused(&sha1.send(port).await, "signature algorithm not allowed");
    for auth in [
        "Signature keyId=\"alice-key\"",
        "Signature keyId=alice-key,algorithm=hmac-sha256,signature=abc",
        "Signature keyId=\"alice-key\",algorithm=\"hmac-md5\",headers=\"@request-target date\",signature=\"YQ==\"",
    ] {
        let r = client()
            .get(format!("http://127.0.0.1:{port}/hmac/x"))
            .header("authorization", auth)
            .header("date", http_date(SystemTime::now()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{auth}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], "invalid signature", "{auth}");
    }
    let r = client()
        .get(format!("http://127.0.0.1:{port}/hmac/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers().get("www-authenticate").unwrap(),
        "Signature realm=\"gatehouse\",headers=\"@request-target date\""
    );
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"error": "missing signature", "status": 401})
    );
    assert_eq!(up.hits(), hits, "no refused request reached the upstream");
}

#[tokio::test(flavor = "multi_thread")]
async fn hmac_x_date_route_keeps_the_authorization() {
    let up = EchoUpstream::start("echo").await;
    let port = free_port();
    let _gw = GatewayProcess::start(&config(port, &up), port);
    let mut s = Signed::new("GET", "/xdate").header("x-date", &http_date(SystemTime::now()), true);
    s.signed.retain(|n| n != "date");
    s.headers.retain(|(n, _)| n != "date");
    let (status, body) = s.send(port).await;
    assert_eq!(status, 200, "{body:?}");
    assert!(body["headers"]["authorization"]
        .as_str()
        .unwrap()
        .starts_with("Signature keyId=\"alice-key\""));
    // A fresh unsigned Date does not stand in for a stale signed X-Date.
    let stale = http_date(SystemTime::now() - Duration::from_secs(120));
    let mut s = Signed::new("GET", "/xdate").header("x-date", &stale, true);
    s.signed.retain(|n| n != "date");
    let (status, body) = s.send(port).await;
    assert_eq!(status, 401);
    assert_eq!(
        body["error"],
        "date missing or outside the allowed clock skew"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn hmac_body_digest() {
    let up = EchoUpstream::start("echo").await;
    let port = free_port();
    let _gw = GatewayProcess::start(&config(port, &up), port);
    let body = "{\"order\": 42}";
    let mut s = Signed::new("POST", "/upload").header(
        "content-digest",
        &sha256_digest(body.as_bytes()),
        true,
    );
    s.algorithm = "hmac-sha1";
    let (status, echoed) = s.send_with(port, Some(body), |_, _| {}).await;
    assert_eq!(status, 200, "{echoed:?}");
    assert_eq!(echoed["body"], body);
    assert_eq!(echoed["headers"]["x-consumer-id"], "alice");

    // Another body under the same signed digest.
    let (status, r) = s.send_with(port, Some("{\"order\": 43}"), |_, _| {}).await;
    assert_eq!(status, 401, "{r:?}");
    assert_eq!(r["error"], "body digest does not match");
    // The digest header present but not signed.
    let unsigned = Signed::new("POST", "/upload").header(
        "content-digest",
        &sha256_digest(body.as_bytes()),
        false,
    );
    let (status, r) = unsigned.send_with(port, Some(body), |_, _| {}).await;
    assert_eq!(status, 401);
    assert_eq!(r["error"], "signature does not cover the required headers");
    // A body without any digest.
    let (status, r) = Signed::new("POST", "/upload")
        .send_with(port, Some(body), |_, _| {})
        .await;
    assert_eq!(status, 401);
    assert_eq!(r["error"], "missing body digest");
    // No body, no digest: fine. `Digest` (RFC 3230) works as well as `Content-Digest`.
    assert_eq!(Signed::new("POST", "/upload").send(port).await.0, 200);
    let d = openssl::base64::encode_block(&openssl::sha::sha256(b"abc"));
    let legacy = Signed::new("POST", "/upload").header("digest", &format!("SHA-256={d}"), true);
    let (status, r) = legacy.send_with(port, Some("abc"), |_, _| {}).await;
    assert_eq!((status, r["body"].as_str()), (200, Some("abc")));

    // Over max_body (1 KiB): declared, and streamed in chunks without a length.
    let big = "x".repeat(2048);
    let leaked: &'static str = Box::leak(big.clone().into_boxed_str());
    let s = Signed::new("POST", "/upload").header(
        "content-digest",
        &sha256_digest(big.as_bytes()),
        true,
    );
    let (status, r) = s.send_with(port, Some(leaked), |_, _| {}).await;
    assert_eq!(
        (status, r["error"].as_str()),
        (413, Some("request body too large"))
    );
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut head = format!(
        "POST /upload HTTP/1.1\r\nhost: gw\r\ntransfer-encoding: chunked\r\nconnection: close\r\nauthorization: {}\r\n",
        s.authorization()
    );
    for (n, v) in &s.headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    let mut answer = Vec::new();
    for _ in 0..4 {
        if stream
            .write_all(format!("200\r\n{}\r\n", &big[..512]).as_bytes())
            .is_err()
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = stream.write_all(b"0\r\n\r\n");
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("request body too large"), "{answer}");
}

#[tokio::test(flavor = "multi_thread")]
async fn acl_by_group_and_consumer() {
    let up = EchoUpstream::start("echo").await;
    let port = free_port();
    let _gw = GatewayProcess::start(&config(port, &up), port);
    let get = |path: &'static str, key: Option<&'static str>| async move {
        let mut req = client().get(format!("http://127.0.0.1:{port}{path}"));
        if let Some(k) = key {
            req = req.header("apikey", k);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let challenge = r.headers().get("www-authenticate").is_some();
        (status, challenge, r.json::<Value>().await.unwrap())
    };
    let (s, _, b) = get("/partners", Some("alice-api-key")).await;
    assert_eq!(s, 200);
    assert_eq!(b["headers"]["x-consumer-id"], "alice");
    // bob is a partner but denied by id; carol is in no allowed group.
    for key in ["bob-api-key", "carol-api-key"] {
        let (s, challenge, b) = get("/partners", Some(key)).await;
        assert_eq!((s, challenge), (403, false), "{key}");
        assert_eq!(b, json!({"error": "forbidden", "status": 403}));
    }
    // No key: key-auth answers before acl runs.
    let (s, _, b) = get("/partners", None).await;
    assert_eq!((s, b["error"].as_str()), (401, Some("missing API key")));
    // acl without an auth plugin: nobody is identified.
    let (s, challenge, b) = get("/acl-only", Some("alice-api-key")).await;
    assert_eq!((s, challenge), (401, true));
    assert_eq!(
        b,
        json!({"error": "authentication required", "status": 401})
    );
    // Optional auth then acl: an anonymous request is refused by acl, a blocked group by 403.
    assert_eq!(get("/maybe", None).await.0, 401);
    assert_eq!(get("/maybe", Some("carol-api-key")).await.0, 200);
    assert_eq!(get("/maybe", Some("eve-api-key")).await.0, 403);
    assert_eq!(get("/maybe", Some("wrong")).await.0, 401);
    assert_eq!(up.hits(), 2);
}

#[test]
fn config_errors() {
    let base = "listeners:\n  - { name: main, address: 127.0.0.1:8080 }\n";
    for (rest, expected) in [
        (
            "routes:\n  - { id: r, paths: [/], plugins: { acl: { allow_consumers: [alicee] }, mock: {} } }\nconsumers:\n  - { id: alice }\n",
            "routes[0].plugins.acl.allow_consumers[0]: unknown consumer \"alicee\" (expected the id of an entry in `consumers`)",
        ),
        (
            "routes:\n  - { id: r, paths: [/], plugins: { acl: {}, mock: {} } }\n",
            "routes[0].plugins.acl: set at least one of `allow_consumers`, `allow_groups`, `deny_consumers`, `deny_groups`",
        ),
        (
            "routes:\n  - { id: r, paths: [/], plugins: { hmac-auth: { algorithms: [hmac-md5] }, mock: {} } }\n",
            "routes[0].plugins.hmac-auth.algorithms[0]: unknown variant `hmac-md5`, expected one of `hmac-sha1`, `hmac-sha256`, `hmac-sha384`, `hmac-sha512`",
        ),
        (
            "routes:\n  - { id: r, paths: [/], plugins: { hmac-auth: {}, mock: {} } }\nconsumers:\n  - { id: a, credentials: { hmac-auth: { key_id: k, secret: s } } }\n  - { id: b, credentials: { hmac-auth: { key_id: k, secret: t } } }\n",
            "routes[0].plugins.hmac-auth: consumers \"a\" and \"b\" have the same hmac-auth key_id \"k\"; key ids must be unique",
        ),
    ] {
        let (ok, out) = support::check_config(&format!("{base}{rest}"));
        assert!(!ok, "{rest}");
        assert_eq!(out, format!("gatehouse: DIR/bad.yaml: {expected}"));
    }
}
