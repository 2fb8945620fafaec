//! The admin API: a separate listener (127.0.0.1 by default) serving health/readiness, the
//! live config, and REST CRUD over routes, services, upstreams, consumers, certificates and
//! global plugins. Every change goes through [`ConfigManager::apply`]: the same validation as the
//! file, saved to the file (with `config_source: etcd`, written to etcd for every node; see
//! docs/cluster.md), swapped atomically. See docs/operations.md and docs/admin-api.yaml.

pub mod resources;

use crate::config::{self, ConfigError};
use crate::reload::{ApplyError, ConfigManager};
use async_trait::async_trait;
use http::{Method, Response, StatusCode};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use resources::{Edit, EditError, COLLECTIONS};
use serde_json::{json, Value};
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// Largest request body the admin API reads.
const MAX_BODY: usize = 16 << 20;

/// The OpenAPI 3 description of this API, served at `/openapi.yaml`.
pub const OPENAPI: &str = include_str!("../../docs/admin-api.yaml");

/// The admin API application.
pub struct AdminApi {
    manager: Arc<ConfigManager>,
}

impl AdminApi {
    /// An API over `manager`'s config.
    pub fn new(manager: Arc<ConfigManager>) -> Self {
        AdminApi { manager }
    }
}

type Reply = (StatusCode, Value);

fn error(status: StatusCode, message: impl Into<String>) -> Reply {
    let message = message.into();
    (
        status,
        json!({ "error": message, "status": status.as_u16() }),
    )
}

fn edit_error(e: EditError) -> Reply {
    match e {
        EditError::NotFound(m) => error(StatusCode::NOT_FOUND, m),
        EditError::Conflict(m) => error(StatusCode::CONFLICT, m),
        EditError::Invalid(m) => error(StatusCode::BAD_REQUEST, m),
    }
}

fn apply_error(e: ApplyError) -> Reply {
    match e {
        ApplyError::Invalid(e) => error(StatusCode::BAD_REQUEST, e.to_string()),
        ApplyError::Persist(m) => error(StatusCode::CONFLICT, m),
    }
}

fn config_error(e: ConfigError) -> Reply {
    error(StatusCode::BAD_REQUEST, e.to_string())
}

fn parse_body(body: &[u8], yaml: bool) -> Result<Value, Reply> {
    if body.is_empty() {
        return Err(error(StatusCode::BAD_REQUEST, "a request body is needed"));
    }
    if yaml {
        serde_yaml::from_slice(body)
            .map_err(|e| error(StatusCode::BAD_REQUEST, format!("invalid YAML: {e}")))
    } else {
        serde_json::from_slice(body)
            .map_err(|e| error(StatusCode::BAD_REQUEST, format!("invalid JSON: {e}")))
    }
}

async fn read_body(session: &mut ServerSession) -> Result<Vec<u8>, Reply> {
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_BODY {
                    return Err(error(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "the request body is too large",
                    ));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    format!("cannot read the body: {e}"),
                ))
            }
        }
    }
}

impl AdminApi {
    fn authorize(&self, session: &ServerSession) -> Result<(), Reply> {
        let snapshot = self.manager.state().load();
        let Some(admin) = snapshot.config.admin.as_ref() else {
            return Err(error(StatusCode::FORBIDDEN, "the admin API is disabled"));
        };
        if !admin.allow.is_empty() {
            let ip = session
                .client_addr()
                .and_then(|a| a.as_inet())
                .map(|a| a.ip());
            let allowed = ip.is_some_and(|ip| {
                admin
                    .allow
                    .iter()
                    .filter_map(|a| crate::snapshot::parse_ip_or_net(a).ok())
                    .any(|net| net.contains(&ip))
            });
            if !allowed {
                return Err(error(
                    StatusCode::FORBIDDEN,
                    "this address may not use the admin API",
                ));
            }
        }
        let given = session
            .req_header()
            .headers
            .get("x-api-key")
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        let expected = admin.api_key.as_bytes();
        // Length is not secret; the bytes are compared in constant time.
        if given.is_empty() || given.len() != expected.len() || !bool::from(given.ct_eq(expected)) {
            return Err(error(
                StatusCode::UNAUTHORIZED,
                "a valid X-API-Key header is required",
            ));
        }
        Ok(())
    }

    /// Applies `edit` to the live config document. The read, the edit and the swap happen
    /// under the config manager's lock: concurrent changes apply one after the other.
    async fn change(&self, edit: impl FnOnce(&mut Value) -> Result<Edit, EditError>) -> Reply {
        let mut outcome = Edit::Changed;
        let applied = self
            .manager
            .apply_edit(
                |current| {
                    let mut doc = resources::to_document(current).map_err(edit_error)?;
                    outcome = edit(&mut doc).map_err(edit_error)?;
                    let mut config = resources::from_document(doc).map_err(config_error)?;
                    resources::restore_redacted(&mut config, current);
                    Ok::<_, Reply>(config)
                },
                true,
            )
            .await;
        match applied {
            Err(reply) => reply,
            Ok(Err(e)) => apply_error(e),
            Ok(Ok(())) => match outcome {
                Edit::Created => (StatusCode::CREATED, json!({ "result": "created" })),
                Edit::Changed => (StatusCode::OK, json!({ "result": "updated" })),
            },
        }
    }

    async fn handle(&self, session: &mut ServerSession) -> Reply {
        let method = match &session.req_header().method {
            // HEAD is answered as GET; the body is left out when the answer is written.
            m if *m == Method::HEAD => Method::GET,
            m => m.clone(),
        };
        let path = session.req_header().uri.path().to_string();
        let segments = match segments(&path) {
            Ok(s) => s,
            Err(reply) => return reply,
        };
        let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
        match (&method, segments.as_slice()) {
            (&Method::GET, ["healthz"]) => return (StatusCode::OK, json!({ "status": "ok" })),
            (&Method::GET, ["readyz"]) => {
                let snapshot = self.manager.state().load();
                return (
                    StatusCode::OK,
                    json!({ "status": "ready", "routes": snapshot.routes.len(), "upstreams": snapshot.upstreams.len() }),
                );
            }
            (&Method::GET, ["openapi.yaml"]) => {
                return (StatusCode::OK, Value::String(OPENAPI.to_string()))
            }
            _ => {}
        }
        if let Err(reply) = self.authorize(session) {
            return reply;
        }
        match allowed_methods(&segments) {
            None => {
                return error(
                    StatusCode::NOT_FOUND,
                    format!("no admin resource at {path}"),
                )
            }
            Some(allowed) if !allowed.split(", ").any(|m| m == method.as_str()) => {
                return error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    format!("{path} takes {allowed}"),
                )
            }
            Some(_) => {}
        }
        let yaml = session
            .req_header()
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("yaml"));
        let body = match read_body(session).await {
            Ok(b) => b,
            Err(reply) => return reply,
        };
        let snapshot = self.manager.state().load();
        match (method, segments.as_slice()) {
            (Method::GET, ["config"]) => match resources::to_document(&snapshot.config) {
                Ok(mut doc) => {
                    resources::redact(&mut doc);
                    (StatusCode::OK, doc)
                }
                Err(e) => edit_error(e),
            },
            (Method::PUT, ["config"]) => {
                let config = if yaml {
                    match std::str::from_utf8(&body)
                        .map_err(|_| ConfigError::at("", "the body is not UTF-8"))
                        .and_then(config::parse_yaml)
                    {
                        Ok(c) => c,
                        Err(e) => return config_error(e),
                    }
                } else {
                    let doc = match parse_body(&body, false) {
                        Ok(d) => d,
                        Err(r) => return r,
                    };
                    match resources::from_document(doc) {
                        Ok(c) => c,
                        Err(e) => return config_error(e),
                    }
                };
                let doc = match resources::to_document(&config) {
                    Ok(d) => d,
                    Err(e) => return edit_error(e),
                };
                self.change(|live| {
                    *live = doc;
                    Ok(Edit::Changed)
                })
                .await
            }
            (Method::POST, ["reload"]) => match self.manager.reload_file("admin API").await {
                Ok(()) => (StatusCode::OK, json!({ "result": "reloaded" })),
                Err(e) => config_error(e),
            },
            (Method::GET, ["global_plugins"]) => {
                (StatusCode::OK, json!(snapshot.config.global_plugins))
            }
            (Method::PUT, ["global_plugins"]) => {
                let map = match parse_body(&body, yaml) {
                    Ok(v) if v.is_object() => v,
                    Ok(_) => {
                        return error(StatusCode::BAD_REQUEST, "global_plugins must be an object")
                    }
                    Err(r) => return r,
                };
                self.change(|doc| {
                    doc["global_plugins"] = map;
                    Ok(Edit::Changed)
                })
                .await
            }
            (Method::GET, ["global_plugins", name]) => {
                match snapshot.config.global_plugins.get(*name) {
                    Some(v) => (StatusCode::OK, v.clone()),
                    None => error(
                        StatusCode::NOT_FOUND,
                        format!("no global plugin \"{name}\""),
                    ),
                }
            }
            (Method::PUT, ["global_plugins", name]) => {
                let cfg = match parse_body(&body, yaml) {
                    Ok(v) => v,
                    Err(r) => return r,
                };
                let name = name.to_string();
                self.change(|doc| {
                    if !doc["global_plugins"].is_object() {
                        doc["global_plugins"] = json!({});
                    }
                    let existed = doc["global_plugins"].get(&name).is_some();
                    doc["global_plugins"][&name] = cfg;
                    Ok(if existed {
                        Edit::Changed
                    } else {
                        Edit::Created
                    })
                })
                .await
            }
            (Method::DELETE, ["global_plugins", name]) => {
                let name = name.to_string();
                let reply = self
                    .change(|doc| {
                        doc.get_mut("global_plugins")
                            .and_then(Value::as_object_mut)
                            .and_then(|m| m.remove(&name))
                            .map(|_| Edit::Changed)
                            .ok_or_else(|| {
                                EditError::NotFound(format!("no global plugin \"{name}\""))
                            })
                    })
                    .await;
                no_content(reply)
            }
            (m, [collection]) if COLLECTIONS.contains(collection) => {
                let collection = collection.to_string();
                match m {
                    Method::GET => match resources::to_document(&snapshot.config) {
                        Ok(mut doc) => {
                            resources::redact(&mut doc);
                            (
                                StatusCode::OK,
                                doc.get(&collection).cloned().unwrap_or(json!([])),
                            )
                        }
                        Err(e) => edit_error(e),
                    },
                    Method::POST => {
                        let obj = match parse_body(&body, yaml) {
                            Ok(v) => v,
                            Err(r) => return r,
                        };
                        self.change(|doc| {
                            resources::post(doc, &collection, obj).map(|_| Edit::Created)
                        })
                        .await
                    }
                    _ => error(StatusCode::METHOD_NOT_ALLOWED, "use GET or POST"),
                }
            }
            (m, [collection, id]) if COLLECTIONS.contains(collection) => {
                let (collection, id) = (collection.to_string(), id.to_string());
                match m {
                    Method::GET => {
                        let found = resources::to_document(&snapshot.config).and_then(|mut doc| {
                            resources::redact(&mut doc);
                            resources::get(&mut doc, &collection, &id)
                        });
                        match found {
                            Ok(v) => (StatusCode::OK, v),
                            Err(e) => edit_error(e),
                        }
                    }
                    Method::PUT => {
                        let obj = match parse_body(&body, yaml) {
                            Ok(v) => v,
                            Err(r) => return r,
                        };
                        self.change(|doc| resources::put(doc, &collection, &id, obj))
                            .await
                    }
                    Method::DELETE => no_content(
                        self.change(|doc| resources::delete(doc, &collection, &id))
                            .await,
                    ),
                    _ => error(StatusCode::METHOD_NOT_ALLOWED, "use GET, PUT or DELETE"),
                }
            }
            _ => error(
                StatusCode::NOT_FOUND,
                format!("no admin resource at {path}"),
            ),
        }
    }
}

fn no_content(reply: Reply) -> Reply {
    if reply.0 == StatusCode::OK {
        (StatusCode::NO_CONTENT, Value::Null)
    } else {
        reply
    }
}

#[async_trait]
impl ServeHttp for AdminApi {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_string();
        let head = session.req_header().method == Method::HEAD;
        let (status, body) = self.handle(session).await;
        let resource = segments(&path).unwrap_or_default();
        let resource: Vec<&str> = resource.iter().map(String::as_str).collect();
        let is_spec = resource == ["openapi.yaml"] && status == StatusCode::OK;
        let mut builder = Response::builder().status(status);
        if status == StatusCode::UNAUTHORIZED {
            builder = builder.header(http::header::WWW_AUTHENTICATE, "X-API-Key");
        }
        if status == StatusCode::METHOD_NOT_ALLOWED {
            if let Some(allowed) = allowed_methods(&resource) {
                builder = builder.header(http::header::ALLOW, allowed);
            }
        }
        // A 204 has neither a body nor a Content-Length (RFC 9110 §8.6).
        if status == StatusCode::NO_CONTENT {
            return builder
                .body(Vec::new())
                .unwrap_or_else(|_| Response::new(Vec::new()));
        }
        let (content_type, bytes) = match body {
            Value::String(s) if is_spec => ("application/yaml", s.into_bytes()),
            other => (
                "application/json",
                serde_json::to_vec(&other).unwrap_or_default(),
            ),
        };
        builder = builder
            .header(http::header::CONTENT_TYPE, content_type)
            .header(http::header::CONTENT_LENGTH, bytes.len());
        builder
            .body(if head { Vec::new() } else { bytes })
            .unwrap_or_else(|_| Response::new(Vec::new()))
    }
}

/// The path's segments, percent-decoded (`/consumers/a%20b` is the consumer `a b`).
fn segments(path: &str) -> Result<Vec<String>, Reply> {
    path.split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(|d| d.into_owned())
                .map_err(|_| error(StatusCode::BAD_REQUEST, "the path is not UTF-8"))
        })
        .collect()
}

/// The methods a resource takes (for dispatch and the `Allow` header); `None`: no such
/// resource.
fn allowed_methods(segments: &[&str]) -> Option<&'static str> {
    Some(match segments {
        ["healthz"] | ["readyz"] | ["openapi.yaml"] => "GET, HEAD",
        ["config"] | ["global_plugins"] => "GET, HEAD, PUT",
        ["reload"] => "POST",
        ["global_plugins", _] => "GET, HEAD, PUT, DELETE",
        [c] if COLLECTIONS.contains(c) => "GET, HEAD, POST",
        [c, _] if COLLECTIONS.contains(c) => "GET, HEAD, PUT, DELETE",
        _ => return None,
    })
}
