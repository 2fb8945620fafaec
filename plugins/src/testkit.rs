//! Run a plugin's hooks against a synthetic request, without sockets, in milliseconds.
//!
//! ```
//! use gatehouse_plugins::testkit::{request, PluginHarness};
//! use gatehouse_plugins::{builtin, Flow};
//!
//! # tokio_test_block_on(async {
//! let mut h = PluginHarness::from_config(
//!     &builtin::mock::factory(),
//!     serde_json::json!({ "status": 418, "body": "teapot" }),
//! ).unwrap();
//! let flow = h.request(&mut request("GET", "/brew").build()).await.unwrap();
//! assert!(matches!(flow, Flow::Respond(r) if r.status == 418));
//! # });
//! # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
//! # }
//! ```

use crate::context::{Consumer, RequestContext};
use crate::factory::{BuildEnv, ConfigError, PluginFactory};
use crate::plugin::{Flow, Plugin};
use bytes::Bytes;
use pingora_error::Result;
use pingora_http::{RequestHeader, ResponseHeader};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// Builds a [`RequestHeader`] for tests.
pub struct RequestBuilder {
    req: RequestHeader,
}

/// Starts a request with `method` and `uri` (path and query).
///
/// # Panics
/// On a method or URI that is not valid: this is a test helper.
pub fn request(method: &str, uri: &str) -> RequestBuilder {
    RequestBuilder {
        req: RequestHeader::build(method, uri.as_bytes(), None)
            .unwrap_or_else(|e| panic!("bad test request {method} {uri}: {e}")),
    }
}

impl RequestBuilder {
    /// Appends a header.
    ///
    /// # Panics
    /// On an invalid header: this is a test helper.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.req
            .append_header(name.to_string(), value)
            .unwrap_or_else(|e| panic!("bad test header {name}: {e}"));
        self
    }

    /// The finished request.
    pub fn build(self) -> RequestHeader {
        self.req
    }
}

/// One plugin instance and the context of one request, to drive hook by hook.
pub struct PluginHarness {
    /// The plugin under test.
    pub plugin: Arc<dyn Plugin>,
    /// The request's context: set fields (client IP, path, consumer…) before calling hooks,
    /// assert on them after.
    pub ctx: RequestContext,
}

/// Options for building a plugin in the harness: consumers, upstream ids, base directory.
pub struct HarnessEnv {
    /// Consumers the plugin can see.
    pub consumers: Vec<Arc<Consumer>>,
    /// Upstream ids the plugin may refer to.
    pub upstream_ids: HashSet<String>,
    /// Base directory for relative paths (default: the current directory).
    pub base_dir: PathBuf,
    /// The scope the plugin is built in (default `route:test-route`).
    pub scope: String,
    /// Shared services (a fresh local store by default).
    pub services: crate::services::SharedServices,
}

impl Default for HarnessEnv {
    fn default() -> Self {
        HarnessEnv {
            consumers: Vec::new(),
            upstream_ids: HashSet::new(),
            base_dir: PathBuf::new(),
            scope: "route:test-route".to_string(),
            services: crate::services::SharedServices::new(),
        }
    }
}

impl PluginHarness {
    /// Wraps an existing plugin instance.
    pub fn new(plugin: Arc<dyn Plugin>) -> Self {
        let mut ctx = RequestContext::new();
        let addr: SocketAddr = ([127, 0, 0, 1], 40000).into();
        ctx.client_addr = Some(addr);
        ctx.client_ip = Some(addr.ip());
        ctx.route_id = Some(Arc::from("test-route"));
        PluginHarness { plugin, ctx }
    }

    /// Builds the plugin from `config` with no consumers or upstreams.
    pub fn from_config(
        factory: &dyn PluginFactory,
        config: serde_json::Value,
    ) -> Result<Self, ConfigError> {
        Self::from_config_with(factory, config, &HarnessEnv::default())
    }

    /// Builds the plugin from `config` with the given environment.
    pub fn from_config_with(
        factory: &dyn PluginFactory,
        config: serde_json::Value,
        env: &HarnessEnv,
    ) -> Result<Self, ConfigError> {
        let build_env = BuildEnv {
            consumers: &env.consumers,
            upstream_ids: &env.upstream_ids,
            base_dir: &env.base_dir,
            scope: &env.scope,
            services: &env.services,
        };
        Ok(Self::new(factory.build(&config, &build_env)?))
    }

    /// Runs `request_filter`. The context's `path` defaults to the request's path.
    pub async fn request(&mut self, req: &mut RequestHeader) -> Result<Flow> {
        if self.ctx.path.is_empty() {
            self.ctx.path = req.uri.path().to_string();
        }
        self.plugin.request_filter(req, &mut self.ctx).await
    }

    /// Runs `request_body_filter` on one chunk.
    pub async fn request_body(&mut self, body: &mut Option<Bytes>, end: bool) -> Result<Flow> {
        self.plugin
            .request_body_filter(body, end, &mut self.ctx)
            .await
    }

    /// Runs `upstream_peer`.
    pub async fn upstream_peer(&mut self, req: &RequestHeader) -> Result<()> {
        self.plugin.upstream_peer(req, &mut self.ctx).await
    }

    /// Runs `upstream_request_filter`.
    pub async fn upstream_request(&mut self, req: &mut RequestHeader) -> Result<()> {
        self.plugin
            .upstream_request_filter(req, &mut self.ctx)
            .await
    }

    /// Runs `response_filter`.
    pub async fn response(&mut self, resp: &mut ResponseHeader) -> Result<()> {
        self.plugin.response_filter(resp, &mut self.ctx).await
    }

    /// Runs `response_body_filter` on one chunk.
    pub fn response_body(&mut self, body: &mut Option<Bytes>, end: bool) -> Result<()> {
        self.plugin.response_body_filter(body, end, &mut self.ctx)
    }

    /// Runs `logging`.
    pub async fn logging(&mut self, req: &RequestHeader, status: u16) {
        self.plugin.logging(req, status, &mut self.ctx).await
    }
}
