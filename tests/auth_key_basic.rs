//! `key-auth` and `basic-auth` through a real gateway and a real upstream: who gets in, what
//! the client is told when refused, and what the upstream receives (never the credential,
//! always the gateway's `X-Consumer-Id`).

mod support;

use serde_json::Value;
use support::{client, free_port, EchoUpstream, GatewayProcess};

/// `alice-password`, argon2id with small parameters (the parameters live in the string).
const ALICE_HASH: &str =
    "$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHRzYWx0$Nuw+/rQ2PtwAeuGab46qtoHbabapeWB7j6f0OtKTsRI";
/// `bob-password`, bcrypt cost 4.
const BOB_HASH: &str = "$2b$04$WD6KPCzBQH8J7XPqnJ0MEut0WPpxBv1JF5OhnF0TwPHt.Ut.XHiB6";

fn config(port: u16, upstream: &EchoUpstream) -> String {
    format!(
        r#"listeners:
  - {{ name: main, address: 127.0.0.1:{port} }}
upstreams:
  - id: echo
    nodes: [{{ address: "{addr}" }}]
routes:
  - id: key
    paths: [/key/*]
    upstream: echo
    plugins:
      key-auth: {{}}
  - id: key-custom
    paths: [/custom/*]
    upstream: echo
    strip_prefix: true
    plugins:
      key-auth: {{ header: x-api-key, query: token }}
  - id: key-kept
    paths: [/kept]
    upstream: echo
    plugins:
      key-auth: {{ hide_credentials: false, query: null }}
  - id: basic
    paths: [/basic/*]
    upstream: echo
    plugins:
      basic-auth: {{ realm: staff }}
  - id: basic-kept
    paths: [/basic-kept]
    upstream: echo
    plugins:
      basic-auth: {{ hide_credentials: false }}
  - id: either
    paths: [/either]
    upstream: echo
    plugins:
      basic-auth: {{ optional: true }}
      key-auth: {{}}
consumers:
  - id: alice
    groups: [partners, staff]
    credentials:
      key-auth: {{ key: alice-secret-key }}
      basic-auth: {{ username: alice, password_hash: "{ALICE_HASH}" }}
  - id: bob
    credentials:
      key-auth: {{ key: "bob key/+&=" }}
      basic-auth: {{ username: bob, password_hash: "{BOB_HASH}" }}
"#,
        addr = upstream.addr
    )
}

struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Reply {
    /// A header the upstream received (for proxied requests).
    fn upstream_header(&self, name: &str) -> Option<&str> {
        self.body["headers"][name].as_str()
    }

    fn upstream_uri(&self) -> &str {
        self.body["uri"].as_str().unwrap_or("")
    }

    fn challenge(&self) -> &str {
        self.headers
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap())
            .unwrap_or("")
    }
}

async fn send(port: u16, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = client().get(format!("http://127.0.0.1:{port}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.expect("request");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Reply {
        status,
        headers,
        body,
    }
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        openssl::base64::encode_block(format!("{user}:{password}").as_bytes())
    )
}

fn assert_refused(r: &Reply, message: &str, challenge: &str) {
    assert_eq!(r.status, 401, "{:?}", r.body);
    assert_eq!(
        r.body,
        serde_json::json!({"error": message, "status": 401}),
        "body"
    );
    assert_eq!(
        r.headers.get("content-type").unwrap(),
        "application/json",
        "content-type"
    );
    assert_eq!(r.challenge(), challenge);
}

#[tokio::test(flavor = "multi_thread")]
async fn key_auth_good_keys_reach_the_upstream_without_the_key() {
    let up = EchoUpstream::start("echo").await;
    let port = free_port();
    let _gw = GatewayProcess::start(&config(port, &up), port);

    // Header; a client-sent X-Consumer-Id is replaced by the gateway's.
    let r = send(
        port,
        "/key/a?x=1",
        &[("apikey", "alice-secret-key"), ("x-consumer-id", "admin")],
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.upstream_header("x-consumer-id"), Some("alice"));
    assert_eq!(
        r.upstream_header("x-consumer-groups"),
        Some("partners,staff")
    );
    assert_eq!(r.upstream_header("apikey"), None);
    assert_eq!(r.upstream_uri(), "/key/a?x=1");

    // Query parameter, percent-encoded; removed, the other parameters kept in order.
    let r = send(port, "/key/a?b=2&apikey=bob%20key%2F%2B%26%3D&a=1", &[]).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.upstream_header("x-consumer-id"), Some("bob"));
    assert_eq!(r.upstream_uri(), "/key/a?b=2&a=1");
    assert_eq!(r.upstream_header("x-consumer-groups"), None);

    // Custom header and query names, on a route that strips its prefix.
    let r = send(port, "/custom/x?token=alice-secret-key&keep=yes", &[]).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.upstream_uri(), "/x?keep=yes");
    assert_eq!(r.upstream_header("x-consumer-id"), Some("alice"));
    let r = send(port, "/custom/y", &[("x-api-key", "alice-secret-key")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.upstream_header("x-api-key"), None);
    assert_eq!(r.upstream_uri(), "/y");

    // hide_credentials: false keeps the key for the upstream.
    let r = send(port, "/kept", &[("apikey", "alice-secret-key")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.upstream_header("apikey"), Some("alice-secret-key"));
    assert_eq!(up.hits(), 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn key_auth_refusals() {
    let up = EchoUpstream::start("echo").await;
    let port = free_port();
    let _gw = GatewayProcess::start(&config(port, &up), port);
    let challenge = "Key realm=\"gatehouse\"";

    assert_refused(
        &send(port, "/key/a", &[]).await,
        "missing API key",
        challenge,
    );
    assert_refused(
        &send(port, "/key/a", &[("x-consumer-id", "alice")]).await,
        "missing API key",
        challenge,
    );
    assert_refused(
        &send(port, "/key/a", &[("apikey", "alice-secret-kez")]).await,
        "invalid API key",
        challenge,
    );
    // A prefix of a real key is just a wrong key.
    assert_refused(
        &send(port, "/key/a?apikey=alice", &[]).await,
        "invalid API key",
        challenge,
    );
    // The key in a place this route does not look.
    assert_refused(
        &send(port, "/custom/a", &[("apikey", "alice-secret-key")]).await,
        "missing API key",
        challenge,
    );
    assert_refused(
        &send(port, "/kept?apikey=alice-secret-key", &[]).await,
        "missing API key",
        challenge,
    );
    // Keys are case-sensitive.
    assert_refused(
        &send(port, "/key/a", &[("apikey", "ALICE-SECRET-KEY")]).await,
        "invalid API key",
        challenge,
    );
    assert_eq!(up.hits(), 0, "no refused request reached the upstream");
}

#[tokio::test(flavor = "multi_thread")]
async fn basic_auth_users_and_refusals() {
    let up = EchoUpstream::start("echo").await;
    let port = free_port();
    let _gw = GatewayProcess::start(&config(port, &up), port);
    let challenge = "Basic realm=\"staff\", charset=\"UTF-8\"";

    // argon2id, twice (the second is served from the verification cache).
    for _ in 0..2 {
        let r = send(
            port,
            "/basic/x",
            &[
                ("authorization", &basic("alice", "alice-password")),
                ("x-consumer-id", "bob"),
            ],
        )
        .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        assert_eq!(r.upstream_header("x-consumer-id"), Some("alice"));
        assert_eq!(r.upstream_header("authorization"), None);
    }
    // bcrypt; the scheme is case-insensitive.
    let b = basic("bob", "bob-password").replace("Basic", "basic");
    let r = send(port, "/basic/x", &[("authorization", &b)]).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.upstream_header("x-consumer-id"), Some("bob"));
    // hide_credentials: false.
    let r = send(
        port,
        "/basic-kept",
        &[("authorization", &basic("bob", "bob-password"))],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.upstream_header("authorization"),
        Some(basic("bob", "bob-password").as_str())
    );
    assert_eq!(up.hits(), 4);

    for auth in [
        basic("alice", "bob-password"),
        basic("bob", "alice-password"),
        basic("mallory", "alice-password"),
        basic("alice", ""),
        "Basic not-base64!".to_string(),
        format!("Basic {}", openssl::base64::encode_block(b"alice")),
    ] {
        let r = send(port, "/basic/x", &[("authorization", &auth)]).await;
        assert_refused(&r, "invalid credentials", challenge);
    }
    assert_refused(
        &send(port, "/basic/x", &[]).await,
        "missing credentials",
        challenge,
    );
    assert_refused(
        &send(port, "/basic/x", &[("authorization", "Bearer abc")]).await,
        "missing credentials",
        challenge,
    );
    // The default realm.
    let r = send(port, "/basic-kept", &[]).await;
    assert_eq!(
        r.challenge(),
        "Basic realm=\"gatehouse\", charset=\"UTF-8\""
    );
    assert_eq!(up.hits(), 4, "no refused request reached the upstream");
}

#[tokio::test(flavor = "multi_thread")]
async fn optional_basic_auth_falls_through_to_key_auth() {
    let up = EchoUpstream::start("echo").await;
    let port = free_port();
    let _gw = GatewayProcess::start(&config(port, &up), port);

    // Either credential works.
    let r = send(
        port,
        "/either",
        &[("authorization", &basic("bob", "bob-password"))],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.upstream_header("x-consumer-id"), Some("bob"));
    let r = send(port, "/either", &[("apikey", "alice-secret-key")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.upstream_header("x-consumer-id"), Some("alice"));
    // Basic authenticated first: key-auth steps aside and leaves its header alone.
    let r = send(
        port,
        "/either",
        &[
            ("authorization", &basic("bob", "bob-password")),
            ("apikey", "alice-secret-key"),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.upstream_header("x-consumer-id"), Some("bob"));
    // Nothing: the last plugin refuses. A wrong password is refused even with a good key.
    assert_refused(
        &send(port, "/either", &[]).await,
        "missing API key",
        "Key realm=\"gatehouse\"",
    );
    let r = send(
        port,
        "/either",
        &[
            ("authorization", &basic("bob", "wrong")),
            ("apikey", "alice-secret-key"),
        ],
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.body["error"], "invalid credentials");
}

#[test]
fn bad_credentials_are_config_errors() {
    for (consumers, expected) in [
        (
            "  - { id: a, credentials: { key-auth: { key: same } } }\n  - { id: b, credentials: { key-auth: { key: same } } }\n",
            "consumers \"a\" and \"b\" have the same key-auth key; keys must be unique",
        ),
        (
            "  - { id: a, credentials: { key-auth: { secret: x } } }\n",
            "consumer \"a\": key-auth credential: unknown field `secret`, expected `key`",
        ),
        (
            "  - { id: a, credentials: { basic-auth: { username: a, password_hash: plain } } }\n",
            "consumer \"a\": basic-auth credential `password_hash` must be an argon2 PHC string ($argon2id$...) or a bcrypt hash ($2b$...)",
        ),
        (
            "  - { id: a, credentials: { basic-auth: { password_hash: plain } } }\n",
            "consumer \"a\": basic-auth credential needs `username`",
        ),
    ] {
        let plugin = if expected.contains("basic-auth") {
            "basic-auth"
        } else {
            "key-auth"
        };
        let yaml = format!(
            "listeners:\n  - {{ name: main, address: 127.0.0.1:8080 }}\nroutes:\n  - {{ id: r, paths: [/], plugins: {{ {plugin}: {{}}, mock: {{}} }} }}\nconsumers:\n{consumers}"
        );
        let (ok, out) = support::check_config(&yaml);
        assert!(!ok, "{yaml}");
        assert_eq!(
            out,
            format!("gatehouse: DIR/bad.yaml: routes[0].plugins.{plugin}: {expected}"),
        );
    }
}
