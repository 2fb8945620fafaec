//! The admin API checked against its OpenAPI document (docs/admin-api.yaml), property-style:
//! the document is fetched from the running API (and must be the checked-in file), and every
//! operation it lists is exercised from the document itself: valid bodies generated from the
//! request schemas (their `example`s, else a minimal instance), bad variants (no key, wrong
//! key, empty and malformed bodies, wrong types, missing required properties, unknown
//! properties, unknown ids, methods a path does not take, unknown paths, oversized bodies,
//! an unwritable config file, a refused client address, a disabled API). Every answer must
//! have a status the document lists for that request, never a 5xx, a body valid against the
//! documented schema, the documented media type and required headers.
//!
//! The schema support covers the subset the document uses (`$ref` within the document,
//! `type`, `nullable`, `enum`, `properties`, `required`, `additionalProperties`, `items`,
//! `minItems`, `minLength`, `minimum`, `maximum`); a keyword outside it fails the test, so
//! the document cannot silently outgrow the checker.

mod support;

use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use support::{free_port, GatewayProcess};

const KEY: &str = "spec-test-key";
/// Methods tried on every path; those a path item does not list must answer as its
/// `x-other-methods` says.
const METHODS: [&str; 5] = ["get", "put", "post", "delete", "patch"];
/// Schema keywords the checker understands.
const KEYWORDS: [&str; 14] = [
    "$ref",
    "type",
    "nullable",
    "enum",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "minItems",
    "minLength",
    "minimum",
    "maximum",
    "description",
    "example",
];
/// One byte over the admin API's body limit (16 MiB).
const OVERSIZED: usize = (16 << 20) + 1;

// ---------------------------------------------------------------------------------------
// The document: `$ref` resolution, validation and generation for the schema subset.
// ---------------------------------------------------------------------------------------

struct Spec {
    doc: Value,
}

impl Spec {
    /// Follows `$ref`s (`#/...` JSON pointers into the document) until a value without one.
    fn resolve<'a>(&'a self, mut v: &'a Value) -> &'a Value {
        for _ in 0..32 {
            match v.get("$ref").and_then(Value::as_str) {
                Some(r) => {
                    let pointer = r
                        .strip_prefix('#')
                        .unwrap_or_else(|| panic!("only local $refs are supported: {r}"));
                    v = self
                        .doc
                        .pointer(pointer)
                        .unwrap_or_else(|| panic!("dangling $ref {r}"));
                }
                None => return v,
            }
        }
        panic!("$ref loop at {v}");
    }

    /// The errors of `v` against `schema`, each with the JSON path where it occurs.
    fn validate(&self, schema: &Value, v: &Value, at: &str, errors: &mut Vec<String>) {
        if schema.get("$ref").is_some() {
            return self.validate(self.resolve(schema), v, at, errors);
        }
        let Some(s) = schema.as_object() else {
            errors.push(format!("{at}: the schema is not an object: {schema}"));
            return;
        };
        for k in s.keys() {
            if !KEYWORDS.contains(&k.as_str()) {
                errors.push(format!(
                    "{at}: schema keyword `{k}` is not supported by this checker"
                ));
            }
        }
        let ty = s.get("type").and_then(Value::as_str);
        if v.is_null() {
            // OpenAPI 3.0: null is valid when `nullable`, or when no type is given.
            if let Some(ty) = ty.filter(|_| s.get("nullable") != Some(&Value::Bool(true))) {
                errors.push(format!("{at}: null where {ty} is required"));
            }
            return;
        }
        let type_ok = match ty {
            None => true,
            Some("object") => v.is_object(),
            Some("array") => v.is_array(),
            Some("string") => v.is_string(),
            Some("integer") => v.is_i64() || v.is_u64(),
            Some("number") => v.is_number(),
            Some("boolean") => v.is_boolean(),
            Some(other) => {
                errors.push(format!("{at}: unknown type `{other}` in the schema"));
                true
            }
        };
        if !type_ok {
            errors.push(format!("{at}: {v} is not of type {}", ty.unwrap_or("?")));
            return;
        }
        if let Some(options) = s.get("enum").and_then(Value::as_array) {
            if !options.contains(v) {
                errors.push(format!("{at}: {v} is not one of {options:?}"));
            }
        }
        if let (Some(min), Some(text)) = (s.get("minLength").and_then(Value::as_u64), v.as_str()) {
            if (text.chars().count() as u64) < min {
                errors.push(format!("{at}: {v} is shorter than {min}"));
            }
        }
        if let Some(n) = v.as_f64() {
            if let Some(min) = s.get("minimum").and_then(Value::as_f64) {
                if n < min {
                    errors.push(format!("{at}: {n} is below the minimum {min}"));
                }
            }
            if let Some(max) = s.get("maximum").and_then(Value::as_f64) {
                if n > max {
                    errors.push(format!("{at}: {n} is above the maximum {max}"));
                }
            }
        }
        if let Some(items) = v.as_array() {
            if let Some(min) = s.get("minItems").and_then(Value::as_u64) {
                if (items.len() as u64) < min {
                    errors.push(format!("{at}: fewer than {min} items"));
                }
            }
            if let Some(item_schema) = s.get("items") {
                for (i, item) in items.iter().enumerate() {
                    self.validate(item_schema, item, &format!("{at}[{i}]"), errors);
                }
            }
        }
        if let Some(obj) = v.as_object() {
            let props = s.get("properties").and_then(Value::as_object);
            for r in s
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let r = r.as_str().unwrap_or_default();
                if !obj.contains_key(r) {
                    errors.push(format!("{at}: required property `{r}` is missing"));
                }
            }
            for (k, value) in obj {
                let path = format!("{at}.{k}");
                match props.and_then(|p| p.get(k)) {
                    Some(p) => self.validate(p, value, &path, errors),
                    None => match s.get("additionalProperties") {
                        Some(Value::Bool(false)) => {
                            errors.push(format!("{at}: property `{k}` is not allowed"))
                        }
                        Some(extra) if extra.is_object() => {
                            self.validate(extra, value, &path, errors)
                        }
                        _ => {}
                    },
                }
            }
        }
    }

    /// A valid instance of `schema`: a fixture for a named component if the test has one,
    /// else the schema's `example`, else the first `enum` value, else a minimal instance
    /// (required properties only).
    fn instance(&self, schema: &Value, fixtures: &mut Fixtures) -> Value {
        if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
            let name = r.rsplit('/').next().unwrap_or_default();
            if let Some(v) = fixtures.take(name) {
                return v;
            }
            return self.instance(self.resolve(schema), fixtures);
        }
        if let Some(example) = schema.get("example") {
            return example.clone();
        }
        if let Some(first) = schema
            .get("enum")
            .and_then(Value::as_array)
            .and_then(|e| e.first())
        {
            return first.clone();
        }
        match schema.get("type").and_then(Value::as_str) {
            Some("object") => {
                let mut obj = Map::new();
                let props = schema.get("properties");
                for r in schema
                    .get("required")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let r = r.as_str().unwrap_or_default();
                    let p = props.and_then(|p| p.get(r)).cloned().unwrap_or(json!({}));
                    obj.insert(r.to_string(), self.instance(&p, fixtures));
                }
                Value::Object(obj)
            }
            Some("array") => {
                let n = schema.get("minItems").and_then(Value::as_u64).unwrap_or(0);
                let item = schema.get("items").cloned().unwrap_or(json!({}));
                Value::Array((0..n).map(|_| self.instance(&item, fixtures)).collect())
            }
            Some("string") => {
                let n = schema.get("minLength").and_then(Value::as_u64).unwrap_or(1);
                Value::String("x".repeat(n.max(1) as usize))
            }
            Some("integer") => json!(schema.get("minimum").and_then(Value::as_i64).unwrap_or(1)),
            Some("number") => json!(schema.get("minimum").and_then(Value::as_f64).unwrap_or(1.0)),
            Some("boolean") => json!(true),
            _ => json!({}),
        }
    }

    /// Values that `schema` refuses, with a label: another JSON type, a value outside the
    /// `enum`. None for a schema that takes anything.
    fn wrong_values(&self, schema: &Value) -> Vec<(String, Value)> {
        let s = self.resolve(schema);
        let mut out = Vec::new();
        let wrong_type = match s.get("type").and_then(Value::as_str) {
            Some("string") => Some(json!(42)),
            Some("integer") | Some("number") | Some("boolean") => Some(json!("not-a-value")),
            Some("array") => Some(json!("not-a-list")),
            Some("object") => Some(json!(["not-an-object"])),
            _ => None,
        };
        if let Some(v) = wrong_type {
            out.push(("wrong type".to_string(), v));
        }
        if s.get("enum").is_some() {
            out.push(("not in enum".to_string(), json!("not-in-the-enum")));
        }
        out
    }
}

/// Instances for named components whose documented examples point at files that only exist
/// on an operator's machine: certificates are made here (rcgen), once as files and once
/// inline, and handed out in turn.
struct Fixtures {
    by_schema: HashMap<String, (Vec<Value>, usize)>,
}

impl Fixtures {
    fn take(&mut self, name: &str) -> Option<Value> {
        let (values, next) = self.by_schema.get_mut(name)?;
        let v = values[*next % values.len()].clone();
        *next += 1;
        Some(v)
    }
}

fn certificate_fixtures(dir: &std::path::Path) -> Vec<Value> {
    let names = vec![
        "api.example.com".to_string(),
        "*.api.example.com".to_string(),
    ];
    let ck = rcgen::generate_simple_self_signed(names.clone()).expect("a self-signed certificate");
    let (cert, key) = (ck.cert.pem(), ck.key_pair.serialize_pem());
    let cert_path = dir.join("api.example.com.crt");
    let key_path = dir.join("api.example.com.key");
    std::fs::write(&cert_path, &cert).unwrap();
    std::fs::write(&key_path, &key).unwrap();
    vec![
        json!({"id": "api-example-com", "cert": cert_path, "key": key_path, "snis": names}),
        json!({"id": "api-example-com", "cert": cert, "key": key, "snis": names}),
    ]
}

// ---------------------------------------------------------------------------------------
// Requests and the checks every answer goes through.
// ---------------------------------------------------------------------------------------

struct Answer {
    status: u16,
    content_type: Option<String>,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

enum Body {
    None,
    Raw(&'static str, Vec<u8>),
}

impl Body {
    fn encoded(media: &str, v: &Value) -> Body {
        let media: &'static str = if media.contains("yaml") {
            "application/yaml"
        } else {
            "application/json"
        };
        let bytes = if media.contains("yaml") {
            serde_yaml::to_string(v).unwrap().into_bytes()
        } else {
            serde_json::to_vec(v).unwrap()
        };
        Body::Raw(media, bytes)
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Auth {
    Key,
    NoKey,
    WrongKey,
    EmptyKey,
}

struct Tester {
    spec: Spec,
    http: reqwest::Client,
    base: String,
    fixtures: Fixtures,
    failures: Vec<String>,
    requests: usize,
    fresh: usize,
    empty_key_tried: bool,
    /// (schema, property, bound) whose bad values were sent already.
    tried: std::collections::HashSet<String>,
    /// Where the gateway's config file lives, to make it unwritable.
    config_path: PathBuf,
}

impl Tester {
    fn fresh_id(&mut self, prefix: &str) -> String {
        self.fresh += 1;
        format!("{prefix}-{}", self.fresh)
    }

    async fn send(&mut self, method: &str, path: &str, auth: Auth, body: Body) -> Answer {
        self.requests += 1;
        let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let mut req = self.http.request(m, format!("{}{path}", self.base));
        match auth {
            Auth::Key => req = req.header("x-api-key", KEY),
            Auth::WrongKey => req = req.header("x-api-key", "spec-test-kez"),
            Auth::EmptyKey => req = req.header("x-api-key", ""),
            Auth::NoKey => {}
        }
        if let Body::Raw(media, bytes) = body {
            req = req.header("content-type", media).body(bytes);
        }
        let r = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e:?}"));
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let content_type = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = r.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
        Answer {
            status,
            content_type,
            headers,
            body,
        }
    }

    /// Sends a keyed request with `body` and checks the answer.
    async fn send_checked(
        &mut self,
        what: &str,
        method: &str,
        path: &str,
        body: Body,
        responses: &Value,
        expect: &[u16],
    ) {
        let a = self.send(method, path, Auth::Key, body).await;
        self.check(
            &format!("{what}: {} {path}", method.to_uppercase()),
            responses,
            &a,
            expect,
        );
    }

    /// Checks `a` against the documented `responses` (a Responses object) and, when given,
    /// against the statuses this request must get.
    fn check(&mut self, what: &str, responses: &Value, a: &Answer, expect: &[u16]) {
        let mut errors = Vec::new();
        let body_text = String::from_utf8_lossy(&a.body);
        let body_text = &body_text[..body_text.len().min(300)];
        if a.status >= 500 {
            errors.push("a 5xx answer".to_string());
        }
        if !expect.is_empty() && !expect.contains(&a.status) {
            errors.push(format!("expected {expect:?}"));
        }
        let documented = responses
            .get(a.status.to_string())
            .or_else(|| responses.get("default"));
        match documented {
            None => errors.push(format!(
                "status {} is not documented for this request",
                a.status
            )),
            Some(doc) => {
                let doc = self.spec.resolve(doc);
                self.check_documented(doc, a, &mut errors);
            }
        }
        if !errors.is_empty() {
            self.failures.push(format!(
                "{what}: got {} {:?} {body_text}\n    {}",
                a.status,
                a.content_type,
                errors.join("\n    ")
            ));
        }
    }

    fn check_documented(&self, doc: &Value, a: &Answer, errors: &mut Vec<String>) {
        if a.status == 204 {
            for h in ["content-length", "content-type"] {
                if a.headers.contains_key(h) {
                    errors.push(format!("a 204 with a {h} header"));
                }
            }
        }
        for (name, h) in doc
            .get("headers")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            let h = self.spec.resolve(h);
            match a.headers.get(name).and_then(|v| v.to_str().ok()) {
                None if h.get("required") == Some(&Value::Bool(true)) => {
                    errors.push(format!("required header {name} is missing"))
                }
                None => {}
                Some(v) => {
                    if let Some(s) = h.get("schema") {
                        self.spec.validate(
                            s,
                            &Value::String(v.into()),
                            &format!("header {name}"),
                            errors,
                        );
                    }
                }
            }
        }
        let content = doc.get("content").and_then(Value::as_object);
        let Some(content) = content.filter(|c| !c.is_empty()) else {
            if !a.body.is_empty() {
                errors.push("a body where none is documented".into());
            }
            return;
        };
        let media = a
            .content_type
            .as_deref()
            .unwrap_or_default()
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        let Some(media_doc) = content.get(&media) else {
            errors.push(format!(
                "Content-Type {media:?} is not one of {:?}",
                content.keys().collect::<Vec<_>>()
            ));
            return;
        };
        let parsed: Result<Value, String> = if media.contains("yaml") {
            serde_yaml::from_slice(&a.body).map_err(|e| e.to_string())
        } else {
            serde_json::from_slice(&a.body).map_err(|e| e.to_string())
        };
        let value = match parsed {
            Ok(v) => v,
            Err(e) => {
                errors.push(format!("the body is not {media}: {e}"));
                return;
            }
        };
        if let Some(schema) = media_doc.get("schema") {
            self.spec.validate(schema, &value, "body", errors);
            if schema.get("$ref").and_then(Value::as_str) == Some("#/components/schemas/Error")
                && value["status"] != json!(a.status)
            {
                errors.push(format!(
                    "the error body's status {} differs from the HTTP status",
                    value["status"]
                ));
            }
        }
    }

    /// Sends a request with the key and without a body, and checks the answer against
    /// `responses` (and `expect`, when not empty).
    async fn call(
        &mut self,
        what: &str,
        method: &str,
        path: &str,
        responses: &Value,
        expect: &[u16],
    ) -> Answer {
        self.call_with(what, method, path, Auth::Key, Body::None, responses, expect)
            .await
    }

    /// Sends a request and checks the answer against `responses`.
    #[allow(clippy::too_many_arguments)]
    async fn call_with(
        &mut self,
        what: &str,
        method: &str,
        path: &str,
        auth: Auth,
        body: Body,
        responses: &Value,
        expect: &[u16],
    ) -> Answer {
        let a = self.send(method, path, auth, body).await;
        self.check(
            &format!("{} {path} ({what})", method.to_uppercase()),
            responses,
            &a,
            expect,
        );
        a
    }
}

/// One operation of the document.
#[derive(Clone)]
struct Op {
    template: String,
    method: String,
    responses: Value,
    keyed: bool,
    /// Path parameters: (name, example).
    params: Vec<(String, Option<String>)>,
    /// (media type, schema) of the request body.
    body: Vec<(String, Value)>,
    body_required: bool,
}

impl Op {
    fn has(&self, status: u16) -> bool {
        self.responses.get(status.to_string()).is_some()
    }
}

fn fill(template: &str, values: &HashMap<String, String>) -> String {
    let mut path = template.to_string();
    for (k, v) in values {
        path = path.replace(&format!("{{{k}}}"), v);
    }
    path
}

fn operations(spec: &Spec) -> Vec<Op> {
    let global_security = spec.doc.get("security").cloned().unwrap_or(json!([]));
    let mut ops = Vec::new();
    for (template, item) in spec.doc["paths"].as_object().expect("paths") {
        let item_params = item.get("parameters").cloned().unwrap_or(json!([]));
        for method in METHODS {
            let Some(op) = item.get(method) else { continue };
            let mut params = Vec::new();
            for p in item_params.as_array().into_iter().flatten().chain(
                op.get("parameters")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten(),
            ) {
                let p = spec.resolve(p);
                if p["in"] == "path" {
                    let example = p.get("example").and_then(Value::as_str).map(str::to_string);
                    params.push((p["name"].as_str().unwrap().to_string(), example));
                }
            }
            let security = op.get("security").unwrap_or(&global_security);
            let (body, body_required) = match op.get("requestBody") {
                Some(rb) => {
                    let rb = spec.resolve(rb);
                    let content = rb["content"]
                        .as_object()
                        .expect("requestBody content")
                        .iter()
                        .map(|(m, c)| (m.clone(), c["schema"].clone()))
                        .collect();
                    (content, rb.get("required") == Some(&Value::Bool(true)))
                }
                None => (Vec::new(), false),
            };
            ops.push(Op {
                template: template.clone(),
                method: method.to_string(),
                responses: op["responses"].clone(),
                keyed: security.as_array().is_some_and(|s| !s.is_empty()),
                params,
                body,
                body_required,
            });
        }
    }
    ops
}

// ---------------------------------------------------------------------------------------
// The gateway, and a config file that cannot be written.
// ---------------------------------------------------------------------------------------

fn gateway_config(port: u16, admin_port: u16, allow: Option<&str>) -> String {
    let allow = allow
        .map(|a| format!(", allow: [\"{a}\"]"))
        .unwrap_or_default();
    // The upstream `users` is the one the documented route and service examples name; its
    // node is never contacted (no health checks, no traffic).
    format!(
        "listeners:\n  - {{ name: main, address: 127.0.0.1:{port} }}\n\
         admin: {{ address: 127.0.0.1:{admin_port}, api_key: {KEY}{allow} }}\n\
         upstreams:\n  - {{ id: users, nodes: [{{ address: \"127.0.0.1:9\" }}] }}\n\
         routes:\n  - {{ id: hello, paths: [/hello], upstream: users }}\n\
         consumers:\n  - {{ id: bob, groups: [staff] }}\n"
    )
}

/// While alive, the config path is a directory: nothing can write the file there, root
/// included, so every change must be refused (and nothing applied).
struct Unwritable {
    path: PathBuf,
    aside: PathBuf,
}

impl Unwritable {
    fn new(path: &std::path::Path) -> Unwritable {
        let aside = path.with_extension("aside");
        std::fs::rename(path, &aside).unwrap();
        std::fs::create_dir(path).unwrap();
        Unwritable {
            path: path.to_path_buf(),
            aside,
        }
    }
}

impl Drop for Unwritable {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.path);
        let _ = std::fs::rename(&self.aside, &self.path);
    }
}

// ---------------------------------------------------------------------------------------
// The scenarios, driven by the operations of the document.
// ---------------------------------------------------------------------------------------

impl Tester {
    /// Without a key, with a wrong or empty key: 401 (with WWW-Authenticate) for keyed
    /// operations.
    async fn auth_probes(&mut self, op: &Op, path: &str) {
        if !op.keyed {
            return;
        }
        // An empty key once (on the first keyed operation), a missing and a wrong one always.
        let mut probes = vec![("no key", Auth::NoKey), ("wrong key", Auth::WrongKey)];
        if !self.empty_key_tried {
            self.empty_key_tried = true;
            probes.push(("empty key", Auth::EmptyKey));
        }
        for (what, auth) in probes {
            let body = match op.body.first() {
                Some((media, schema)) => {
                    let v = self.spec.instance(schema, &mut self.fixtures);
                    Body::encoded(media, &v)
                }
                None => Body::None,
            };
            self.call_with(what, &op.method, path, auth, body, &op.responses, &[401])
                .await;
        }
    }

    /// Bodies the operation must refuse with 400: none, malformed, another type, a missing
    /// required or unknown property, a property of the wrong type or outside its enum, a
    /// property bound to a path parameter with another value. `valid` is a valid body.
    async fn bad_bodies(&mut self, op: &Op, path: &str, valid: &Value, bound: &[String]) {
        let responses = op.responses.clone();
        if op.body_required {
            self.call("no body", &op.method, path, &responses, &[400])
                .await;
        }
        for (media, _) in op.body.clone() {
            let malformed: &[u8] = if media.contains("yaml") {
                b"id: [unclosed\n  - : :"
            } else {
                b"{\"id\": "
            };
            let body = Body::Raw(
                if media.contains("yaml") {
                    "application/yaml"
                } else {
                    "application/json"
                },
                malformed.to_vec(),
            );
            self.call_with(
                &format!("malformed {media}"),
                &op.method,
                path,
                Auth::Key,
                body,
                &responses,
                &[400],
            )
            .await;
        }
        let Some((_, schema)) = op
            .body
            .iter()
            .find(|(m, _)| m == "application/json")
            .cloned()
        else {
            return;
        };
        let mut variants: Vec<(String, Value)> = Vec::new();
        for (label, v) in self.spec.wrong_values(&schema) {
            variants.push((format!("body: {label}"), v));
        }
        let s = self.spec.resolve(&schema).clone();
        if let (Some(obj), Some(props)) = (
            valid.as_object(),
            s.get("properties").and_then(Value::as_object),
        ) {
            for r in s
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let r = r.as_str().unwrap();
                if bound.iter().any(|b| b == r) {
                    continue;
                }
                let mut v = obj.clone();
                v.remove(r);
                variants.push((format!("without required `{r}`"), Value::Object(v)));
            }
            for (name, p) in props {
                // Each property's bad values once per schema (POST and PUT share them), but
                // again where the property is bound to a path parameter.
                let schema_name = schema.get("$ref").and_then(Value::as_str).unwrap_or("");
                let seen = format!("{schema_name}|{name}|{}", bound.contains(name));
                if !schema_name.is_empty() && !self.tried.insert(seen) {
                    continue;
                }
                for (label, wrong) in self.spec.wrong_values(p) {
                    let mut v = obj.clone();
                    v.insert(name.clone(), wrong);
                    variants.push((format!("`{name}`: {label}"), Value::Object(v)));
                }
            }
            if s.get("additionalProperties") == Some(&Value::Bool(false)) {
                let mut v = obj.clone();
                v.insert("no_such_property".into(), json!(1));
                variants.push(("an unknown property".into(), Value::Object(v)));
            }
            for b in bound {
                if props.contains_key(b) {
                    let mut v = obj.clone();
                    v.insert(b.clone(), json!("differs-from-the-url"));
                    variants.push((format!("`{b}` differs from the URL's"), Value::Object(v)));
                }
            }
        }
        for (what, v) in variants {
            self.call_with(
                &what,
                &op.method,
                path,
                Auth::Key,
                Body::encoded("application/json", &v),
                &responses,
                &[400],
            )
            .await;
        }
    }

    fn op<'a>(ops: &'a [Op], template: &str, method: &str) -> Option<&'a Op> {
        ops.iter()
            .find(|o| o.template == template && o.method == method)
    }

    /// A valid body for `op` in `media`: the fixture, example or minimal instance of its
    /// schema, with properties named like a path parameter set to that parameter's value.
    fn valid_body(&mut self, op: &Op, media: &str, values: &HashMap<String, String>) -> Value {
        let schema = op
            .body
            .iter()
            .find(|(m, _)| m == media)
            .map(|(_, s)| s.clone())
            .unwrap();
        let mut v = self.spec.instance(&schema, &mut self.fixtures);
        if let Some(obj) = v.as_object_mut() {
            for (k, val) in values {
                if obj.contains_key(k) || self.spec.resolve(&schema)["properties"].get(k).is_some()
                {
                    obj.insert(k.clone(), json!(val));
                }
            }
        }
        v
    }

    /// The object paths (with parameters): unknown ids, create, replace, read back, round
    /// trip, refused changes with an unwritable file, delete.
    async fn object_path(&mut self, ops: &[Op], template: &str) {
        let any = ops.iter().find(|o| o.template == template).unwrap().clone();
        let mut values = HashMap::new();
        let mut unknown = HashMap::new();
        for (name, example) in &any.params {
            let v = match example {
                Some(e) => e.clone(),
                None => self.fresh_id("spec"),
            };
            values.insert(name.clone(), v);
            unknown.insert(name.clone(), self.fresh_id("no-such"));
        }
        let bound: Vec<String> = any.params.iter().map(|(n, _)| n.clone()).collect();
        let path = fill(template, &values);
        let unknown_path = fill(template, &unknown);
        let get = Self::op(ops, template, "get").cloned();
        let put = Self::op(ops, template, "put").cloned();
        let delete = Self::op(ops, template, "delete").cloned();

        for op in [&get, &put, &delete].into_iter().flatten() {
            self.auth_probes(op, &path).await;
        }
        if let Some(op) = &get {
            self.call("unknown id", "get", &unknown_path, &op.responses, &[404])
                .await;
        }
        if let Some(op) = &delete {
            self.call("unknown id", "delete", &unknown_path, &op.responses, &[404])
                .await;
        }
        let Some(put) = put else {
            return;
        };
        let valid = self.valid_body(&put, "application/json", &values);
        self.bad_bodies(&put, &path, &valid, &bound).await;
        // Start from nothing under this id: an example name may exist already, and a bad body
        // that was wrongly accepted (reported above) must not turn the next 201 into a 200.
        if let (Some(_), Some(delete)) = (&get, &delete) {
            let a = self.send("get", &path, Auth::Key, Body::None).await;
            if a.status == 200 {
                self.call("clean up", "delete", &path, &delete.responses, &[204])
                    .await;
            }
        }
        let medias: Vec<String> = put.body.iter().map(|(m, _)| m.clone()).collect();
        for (i, media) in medias.iter().enumerate() {
            let body = self.valid_body(&put, media, &values);
            let expect: &[u16] = if i == 0 { &[201] } else { &[200] };
            self.call_with(
                &format!("valid {media}"),
                "put",
                &path,
                Auth::Key,
                Body::encoded(media, &body),
                &put.responses,
                expect,
            )
            .await;
        }
        if let Some(get) = &get {
            let a = self
                .call("existing", "get", &path, &get.responses, &[200])
                .await;
            // What GET shows can be sent back as it is.
            if a.status == 200 {
                let shown = a.json();
                self.call_with(
                    "round trip of GET",
                    "put",
                    &path,
                    Auth::Key,
                    Body::encoded("application/json", &shown),
                    &put.responses,
                    &[200],
                )
                .await;
            }
        }
        {
            let _lock = Unwritable::new(&self.config_path);
            if put.has(409) {
                let body = self.valid_body(&put, "application/json", &values);
                self.call_with(
                    "config file unwritable",
                    "put",
                    &path,
                    Auth::Key,
                    Body::encoded("application/json", &body),
                    &put.responses,
                    &[409],
                )
                .await;
            }
            if let Some(delete) = delete.as_ref().filter(|d| d.has(409)) {
                self.call(
                    "config file unwritable",
                    "delete",
                    &path,
                    &delete.responses,
                    &[409],
                )
                .await;
            }
        }
        if let Some(delete) = &delete {
            self.call("existing", "delete", &path, &delete.responses, &[204])
                .await;
            if let Some(get) = &get {
                self.call("deleted", "get", &path, &get.responses, &[404])
                    .await;
            }
        }
    }

    /// The paths without parameters: collections (GET lists, POST creates with the id of the
    /// object path below), whole documents (GET, PUT round trip and example), actions (POST
    /// without a body).
    async fn plain_path(&mut self, ops: &[Op], template: &str) {
        let get = Self::op(ops, template, "get").cloned();
        let put = Self::op(ops, template, "put").cloned();
        let post = Self::op(ops, template, "post").cloned();
        for op in [&get, &put, &post].into_iter().flatten() {
            self.auth_probes(op, template).await;
        }
        let mut shown = None;
        if let Some(get) = &get {
            let a = self
                .call("valid", "get", template, &get.responses, &[200])
                .await;
            if a.status == 200
                && a.content_type
                    .as_deref()
                    .is_some_and(|c| c.contains("json"))
            {
                shown = Some(a.json());
            }
        }
        if let Some(put) = &put {
            // The documented example, if any, then what GET showed, in every media type.
            let schema = put.body[0].1.clone();
            let example = self.spec.resolve(&schema).get("example").cloned();
            if let Some(example) = &example {
                self.bad_bodies(put, template, example, &[]).await;
                self.call_with(
                    "documented example",
                    "put",
                    template,
                    Auth::Key,
                    Body::encoded("application/json", example),
                    &put.responses,
                    &[200],
                )
                .await;
            } else if let Some(shown) = &shown {
                self.bad_bodies(put, template, shown, &[]).await;
            }
            if let Some(shown) = &shown {
                for (media, _) in put.body.clone() {
                    self.call_with(
                        &format!("round trip of GET as {media}"),
                        "put",
                        template,
                        Auth::Key,
                        Body::encoded(&media, shown),
                        &put.responses,
                        &[200],
                    )
                    .await;
                }
                let _lock = Unwritable::new(&self.config_path);
                if put.has(409) {
                    self.call_with(
                        "config file unwritable",
                        "put",
                        template,
                        Auth::Key,
                        Body::encoded("application/json", shown),
                        &put.responses,
                        &[409],
                    )
                    .await;
                }
            }
        }
        if let Some(post) = &post {
            if post.body.is_empty() {
                // An action.
                self.call("valid", "post", template, &post.responses, &[200])
                    .await;
                let _lock = Unwritable::new(&self.config_path);
                self.call(
                    "config file unreadable",
                    "post",
                    template,
                    &post.responses,
                    &[],
                )
                .await;
                return;
            }
            // A collection: the new object's id is the parameter of the object path below.
            let child = ops
                .iter()
                .find(|o| {
                    o.template.starts_with(&format!("{template}/{{"))
                        && o.template.matches('/').count() == template.matches('/').count() + 1
                })
                .cloned();
            let child_params: Vec<String> = child
                .as_ref()
                .map(|c| c.params.iter().map(|(n, _)| n.clone()).collect())
                .unwrap_or_default();
            let mut values = HashMap::new();
            for n in &child_params {
                values.insert(n.clone(), self.fresh_id("spec"));
            }
            let valid = self.valid_body(post, "application/json", &values);
            self.bad_bodies(post, template, &valid, &[]).await;
            for (media, _) in post.body.clone() {
                for n in &child_params {
                    values.insert(n.clone(), self.fresh_id("spec"));
                }
                let body = self.valid_body(post, &media, &values);
                self.call_with(
                    &format!("valid {media}"),
                    "post",
                    template,
                    Auth::Key,
                    Body::encoded(&media, &body),
                    &post.responses,
                    &[201],
                )
                .await;
                if post.has(409) {
                    self.call_with(
                        "same id again",
                        "post",
                        template,
                        Auth::Key,
                        Body::encoded(&media, &body),
                        &post.responses,
                        &[409],
                    )
                    .await;
                }
                if let Some(child) = &child {
                    let path = fill(&child.template, &values);
                    if let Some(g) = Self::op(ops, &child.template, "get") {
                        let responses = g.responses.clone();
                        self.call("created by POST", "get", &path, &responses, &[200])
                            .await;
                    }
                    if let Some(d) = Self::op(ops, &child.template, "delete") {
                        let responses = d.responses.clone();
                        self.call("created by POST", "delete", &path, &responses, &[204])
                            .await;
                    }
                }
            }
            if post.has(409) {
                for n in &child_params {
                    values.insert(n.clone(), self.fresh_id("spec"));
                }
                let body = self.valid_body(post, "application/json", &values);
                let _lock = Unwritable::new(&self.config_path);
                self.call_with(
                    "config file unwritable",
                    "post",
                    template,
                    Auth::Key,
                    Body::encoded("application/json", &body),
                    &post.responses,
                    &[409],
                )
                .await;
            }
        }
    }

    /// Methods a path item does not list: what its `x-other-methods` documents (never 5xx).
    async fn other_methods(&mut self, template: &str, item: &Value) {
        let responses = item
            .get("x-other-methods")
            .cloned()
            .unwrap_or_else(|| panic!("{template}: no x-other-methods"));
        let path = template.replace(['{', '}'], "");
        let mut keyless_tried = false;
        // `Allow` names exactly the methods the path item lists (HEAD with GET).
        let mut listed: Vec<String> = METHODS
            .iter()
            .filter(|m| item.get(**m).is_some())
            .map(|m| m.to_uppercase())
            .collect();
        if listed.iter().any(|m| m == "GET") {
            listed.push("HEAD".into());
        }
        listed.sort();
        for m in METHODS {
            if item.get(m).is_some() {
                continue;
            }
            let a = self
                .call("method not listed", m, &path, &responses, &[405])
                .await;
            let mut allow: Vec<String> = a
                .headers
                .get("allow")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .split(',')
                .map(|m| m.trim().to_string())
                .filter(|m| !m.is_empty())
                .collect();
            allow.sort();
            if allow != listed {
                self.failures.push(format!(
                    "{} {path}: Allow {allow:?}, but the document lists {listed:?}",
                    m.to_uppercase()
                ));
            }
            if !keyless_tried {
                keyless_tried = true;
                self.call_with(
                    "method not listed, no key",
                    m,
                    &path,
                    Auth::NoKey,
                    Body::None,
                    &responses,
                    &[401],
                )
                .await;
            }
        }
    }

    /// Paths the document does not list answer as `x-unknown-paths` says: each listed path
    /// with extra segments, under an unknown prefix, or in upper case (in turn), with each
    /// method in turn.
    async fn unknown_paths(&mut self, templates: &[String]) {
        let responses = self.spec.doc["x-unknown-paths"]["responses"].clone();
        assert!(responses.is_object(), "x-unknown-paths.responses");
        let mut paths = vec!["/".to_string(), "/spec-unknown".to_string()];
        for (i, t) in templates.iter().enumerate() {
            let p = t.replace(['{', '}'], "");
            paths.push(match i % 3 {
                0 => format!("{p}/spec-extra/spec-extra"),
                1 => format!("/spec-unknown{p}"),
                _ => p.to_uppercase(),
            });
        }
        for (i, p) in paths.iter().enumerate() {
            let m = METHODS[i % METHODS.len()];
            self.call("unknown path", m, p, &responses, &[404]).await;
            self.call_with(
                "unknown path, no key",
                m,
                p,
                Auth::NoKey,
                Body::None,
                &responses,
                &[401],
            )
            .await;
        }
    }

    /// What the document says of secrets: `admin.api_key` and inline private keys are shown
    /// as `<redacted>`, and a document sent back with `<redacted>` keeps the live secret; a
    /// new certificate cannot be given `<redacted>`.
    async fn redaction(&mut self, ops: &[Op]) {
        let op = |t: &str, m: &str| {
            Self::op(ops, t, m)
                .unwrap_or_else(|| panic!("{} {t} is not in the document", m.to_uppercase()))
                .responses
                .clone()
        };
        let config = self
            .call("secrets", "get", "/config", &op("/config", "get"), &[200])
            .await
            .json();
        if config["admin"]["api_key"] != "<redacted>" {
            self.failures.push(format!(
                "GET /config shows admin.api_key {}",
                config["admin"]["api_key"]
            ));
        }
        let mut inline = self.fixtures.by_schema["Certificate"].0[1].clone();
        inline["id"] = json!("redacted-key");
        let (get, put, delete) = (
            op("/certificates/{id}", "get"),
            op("/certificates/{id}", "put"),
            op("/certificates/{id}", "delete"),
        );
        let path = "/certificates/redacted-key";
        let body = Body::encoded("application/json", &inline);
        self.call_with("inline key", "put", path, Auth::Key, body, &put, &[201])
            .await;
        let shown = self
            .call("inline key", "get", path, &get, &[200])
            .await
            .json();
        let listed = self
            .call(
                "inline key",
                "get",
                "/certificates",
                &op("/certificates", "get"),
                &[200],
            )
            .await
            .json();
        let in_list = listed
            .as_array()
            .and_then(|l| l.iter().find(|c| c["id"] == "redacted-key"))
            .cloned()
            .unwrap_or_default();
        for (what, v) in [("GET", &shown), ("the list", &in_list)] {
            if v["key"] != "<redacted>" || v["cert"] != inline["cert"] {
                self.failures.push(format!(
                    "{what} of a certificate with an inline key shows key {} and cert {}",
                    v["key"], v["cert"]
                ));
            }
        }
        let body = Body::encoded("application/json", &shown);
        self.call_with(
            "sent back with <redacted>",
            "put",
            path,
            Auth::Key,
            body,
            &put,
            &[200],
        )
        .await;
        let mut elsewhere = shown.clone();
        elsewhere["id"] = json!("redacted-key-2");
        let body = Body::encoded("application/json", &elsewhere);
        let other = "/certificates/redacted-key-2";
        self.call_with(
            "new id with <redacted>",
            "put",
            other,
            Auth::Key,
            body,
            &put,
            &[400],
        )
        .await;
        self.call("inline key", "delete", path, &delete, &[204])
            .await;
    }

    /// A body over 16 MiB: 413 on every keyed operation that takes a body, and on a GET.
    async fn oversized(&mut self, ops: &[Op]) {
        let big = vec![b' '; OVERSIZED];
        let mut done_get = false;
        for op in ops.iter().filter(|o| o.keyed) {
            if op.body.is_empty() && (op.method != "get" || done_get) {
                continue;
            }
            done_get |= op.method == "get";
            let path = op.template.replace(['{', '}'], "");
            self.call_with(
                "body over 16 MiB",
                &op.method,
                &path,
                Auth::Key,
                Body::Raw("application/json", big.clone()),
                &op.responses,
                &[413],
            )
            .await;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_api_does_what_its_openapi_document_says() {
    let started = Instant::now();
    let port = free_port();
    let admin_port = free_port();
    let gw = GatewayProcess::start(&gateway_config(port, admin_port, None), port);
    support::gateway::wait_for_tcp(admin_port).await;
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let base = format!("http://127.0.0.1:{admin_port}");

    // The document the API serves is the checked-in one.
    let served = http
        .get(format!("{base}/openapi.yaml"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let checked_in =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/admin-api.yaml"))
            .unwrap();
    assert!(
        served == checked_in,
        "GET /openapi.yaml differs from docs/admin-api.yaml (rebuild the gateway?)"
    );
    let doc: Value = serde_yaml::from_str(&served).expect("the document is YAML");
    assert_eq!(doc["openapi"], "3.0.3");

    let cert_dir = tempfile::tempdir().unwrap();
    let mut fixtures = HashMap::new();
    fixtures.insert(
        "Certificate".to_string(),
        (certificate_fixtures(cert_dir.path()), 0),
    );
    let mut t = Tester {
        spec: Spec { doc },
        http,
        base,
        fixtures: Fixtures {
            by_schema: fixtures,
        },
        failures: Vec::new(),
        requests: 0,
        fresh: 0,
        empty_key_tried: false,
        tried: Default::default(),
        config_path: gw.config_path.clone(),
    };

    // Every example in the document is valid against its own schema.
    let mut errors = Vec::new();
    for (name, schema) in t.spec.doc["components"]["schemas"].as_object().unwrap() {
        if let Some(example) = schema.get("example") {
            t.spec
                .validate(schema, example, &format!("example of {name}"), &mut errors);
        }
    }
    assert!(errors.is_empty(), "{errors:#?}");

    let ops = operations(&t.spec);
    let templates: Vec<String> = t.spec.doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert!(ops.len() >= 20, "only {} operations", ops.len());
    for template in &templates {
        if template.contains('{') {
            t.object_path(&ops, template).await;
        } else {
            t.plain_path(&ops, template).await;
        }
        let item = t.spec.doc["paths"][template].clone();
        t.other_methods(template, &item).await;
    }
    t.unknown_paths(&templates).await;
    t.redaction(&ops).await;
    t.oversized(&ops).await;

    // HEAD is GET without the body.
    for op in ops.iter().filter(|op| op.method == "get") {
        let path = op.template.replace(['{', '}'], "");
        let get = t.send("get", &path, Auth::Key, Body::None).await;
        let head = t.send("head", &path, Auth::Key, Body::None).await;
        if head.status != get.status || !head.body.is_empty() {
            t.failures.push(format!(
                "HEAD {path}: {} with {} body bytes; GET gave {}",
                head.status,
                head.body.len(),
                get.status
            ));
        }
    }

    // Ids are percent-decoded path segments.
    let consumers = t.spec.doc["paths"]["/consumers"]["post"]["responses"].clone();
    let consumer = t.spec.doc["paths"]["/consumers/{id}"].clone();
    t.send_checked(
        "id with a space",
        "post",
        "/consumers",
        Body::Raw("application/json", br#"{"id": "a b"}"#.to_vec()),
        &consumers,
        &[201],
    )
    .await;
    for (method, expect) in [("get", 200), ("delete", 204), ("get", 404)] {
        t.send_checked(
            "percent-encoded id",
            method,
            "/consumers/a%20b",
            Body::None,
            &consumer[method]["responses"],
            &[expect],
        )
        .await;
    }
    // The admin section removed by a change: every keyed operation answers 403, the
    // others still answer.
    let mut config = t.send("get", "/config", Auth::Key, Body::None).await.json();
    config.as_object_mut().unwrap().remove("admin");
    let put_config = Tester::op(&ops, "/config", "put")
        .unwrap()
        .responses
        .clone();
    t.call_with(
        "without the admin section",
        "put",
        "/config",
        Auth::Key,
        Body::encoded("application/json", &config),
        &put_config,
        &[200],
    )
    .await;
    for op in &ops {
        let path = op.template.replace(['{', '}'], "");
        let expect: &[u16] = if op.keyed { &[403] } else { &[200] };
        t.call(
            "admin API disabled",
            &op.method,
            &path,
            &op.responses,
            expect,
        )
        .await;
    }
    drop(gw);

    // A client outside `admin.allow`: 403 on every keyed operation, the others answer.
    let port = free_port();
    let admin_port = free_port();
    let gw = GatewayProcess::start(
        &gateway_config(port, admin_port, Some("192.0.2.0/24")),
        port,
    );
    support::gateway::wait_for_tcp(admin_port).await;
    t.base = format!("http://127.0.0.1:{admin_port}");
    t.config_path = gw.config_path.clone();
    let mut keyless_tried = false;
    for op in &ops {
        let path = op.template.replace(['{', '}'], "");
        let expect: &[u16] = if op.keyed { &[403] } else { &[200] };
        t.call(
            "client not in admin.allow",
            &op.method,
            &path,
            &op.responses,
            expect,
        )
        .await;
        if op.keyed && !keyless_tried {
            keyless_tried = true;
            t.call_with(
                "client not in admin.allow, no key",
                &op.method,
                &path,
                Auth::NoKey,
                Body::None,
                &op.responses,
                &[403],
            )
            .await;
        }
    }
    drop(gw);

    eprintln!(
        "{} operations, {} requests in {:?}",
        ops.len(),
        t.requests,
        started.elapsed()
    );
    assert!(
        t.failures.is_empty(),
        "{} of {} answers disagree with docs/admin-api.yaml:\n{}",
        t.failures.len(),
        t.requests,
        t.failures.join("\n")
    );
}
