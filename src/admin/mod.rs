//! The admin API: a separate listener (127.0.0.1 by default) serving health/readiness, the
//! live config, and REST CRUD over routes, services, upstreams, consumers, certificates and
//! global plugins. Every change goes through [`ConfigManager::apply`]: the same validation as the
//! file, saved to the file (with `config_source: etcd`, written to etcd for every node; see
//! docs/cluster.md), swapped atomically. See docs/operations.md and docs/admin-api.yaml.

pub mod resources;

use crate::config::{self, ConfigError};
use crate::reload::{ApplyError, ConfigManager};
use async_trait::async_trait;
use bytes::Bytes;
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

    async fn change(&self, edit: impl FnOnce(&mut Value) -> Result<Edit, EditError>) -> Reply {
        let current = self.manager.state().load().config.clone();
        let mut doc = match resources::to_document(&current) {
            Ok(d) => d,
            Err(e) => return edit_error(e),
        };
        let outcome = match edit(&mut doc) {
            Ok(o) => o,
            Err(e) => return edit_error(e),
        };
        let mut config = match resources::from_document(doc) {
            Ok(c) => c,
            Err(e) => return config_error(e),
        };
        resources::restore_redacted(&mut config, &current);
        match self.manager.apply(config, true).await {
            Ok(()) => match outcome {
                Edit::Created => (StatusCode::CREATED, json!({ "result": "created" })),
                Edit::Changed => (StatusCode::OK, json!({ "result": "updated" })),
            },
            Err(e) => apply_error(e),
        }
    }

    async fn handle(&self, session: &mut ServerSession) -> Reply {
        let method = session.req_header().method.clone();
        let path = session.req_header().uri.path().to_string();
        let segments: Vec<&str> = path
            .trim_matches('/')
            .split('/')
            .filter(|s| !s.is_empty())
            .collect();
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
                let mut config = if yaml {
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
                resources::restore_redacted(&mut config, &snapshot.config);
                match self.manager.apply(config, true).await {
                    Ok(()) => (StatusCode::OK, json!({ "result": "updated" })),
                    Err(e) => apply_error(e),
                }
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
                let existed = snapshot.config.global_plugins.contains_key(&name);
                self.change(|doc| {
                    if !doc["global_plugins"].is_object() {
                        doc["global_plugins"] = json!({});
                    }
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
                if !snapshot.config.global_plugins.contains_key(*name) {
                    return error(
                        StatusCode::NOT_FOUND,
                        format!("no global plugin \"{name}\""),
                    );
                }
                let name = name.to_string();
                let reply = self
                    .change(|doc| {
                        if let Some(m) = doc["global_plugins"].as_object_mut() {
                            m.remove(&name);
                        }
                        Ok(Edit::Changed)
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
                    _ => error(
                        StatusCode::METHOD_NOT_ALLOWED,
                        "use GET or POST on a collection",
                    ),
                }
            }
            (m, [collection, id]) if COLLECTIONS.contains(collection) => {
                let (collection, id) = (collection.to_string(), id.to_string());
                match m {
                    Method::GET => match resources::to_document(&snapshot.config) {
                        Ok(mut doc) => match {
                            resources::redact(&mut doc);
                            resources::get(&mut doc, &collection, &id)
                        } {
                            Ok(v) => (StatusCode::OK, v),
                            Err(e) => edit_error(e),
                        },
                        Err(e) => edit_error(e),
                    },
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
                    _ => error(
                        StatusCode::METHOD_NOT_ALLOWED,
                        "use GET, PUT or DELETE on an object",
                    ),
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
        let is_spec = session.req_header().uri.path() == "/openapi.yaml";
        let (status, body) = self.handle(session).await;
        let (content_type, bytes) = match (&body, is_spec && status == StatusCode::OK) {
            (Value::String(s), true) => ("application/yaml", Bytes::from(s.clone()).to_vec()),
            (Value::Null, _) if status == StatusCode::NO_CONTENT => {
                ("application/json", Vec::new())
            }
            _ => (
                "application/json",
                serde_json::to_vec(&body).unwrap_or_default(),
            ),
        };
        let mut builder = Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, content_type)
            .header(http::header::CONTENT_LENGTH, bytes.len());
        if status == StatusCode::UNAUTHORIZED {
            builder = builder.header(http::header::WWW_AUTHENTICATE, "X-API-Key");
        }
        builder
            .body(bytes)
            .unwrap_or_else(|_| Response::new(Vec::new()))
    }
}
