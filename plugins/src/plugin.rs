//! The [`Plugin`] trait: what a plugin can do at each phase of a request.

use crate::context::RequestContext;
use crate::response::PluginResponse;
use async_trait::async_trait;
use bytes::Bytes;
use pingora_error::Result;
use pingora_http::{RequestHeader, ResponseHeader};

/// What the chain does after a request-phase hook.
#[derive(Debug)]
pub enum Flow {
    /// Go on to the next plugin, then to the upstream.
    Continue,
    /// Answer the request with this response. No later plugin's request hooks run and nothing
    /// is sent upstream; `response_filter` and `logging` still run.
    Respond(PluginResponse),
}

/// The set of phases a plugin takes part in.
///
/// The engine builds one list of plugins per phase at config load, so a plugin that declares
/// only the phases it implements costs nothing in the others. A hook that is implemented but
/// not declared here is never called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Phases(u8);

impl Phases {
    /// `request_filter`.
    pub const REQUEST: Phases = Phases(1);
    /// `request_body_filter`.
    pub const REQUEST_BODY: Phases = Phases(1 << 1);
    /// `upstream_peer`.
    pub const UPSTREAM_PEER: Phases = Phases(1 << 2);
    /// `upstream_request_filter`.
    pub const UPSTREAM_REQUEST: Phases = Phases(1 << 3);
    /// `response_filter`.
    pub const RESPONSE: Phases = Phases(1 << 4);
    /// `response_body_filter`.
    pub const RESPONSE_BODY: Phases = Phases(1 << 5);
    /// `logging`.
    pub const LOGGING: Phases = Phases(1 << 6);
    /// Every phase.
    pub const ALL: Phases = Phases(0x7f);

    /// Whether every phase of `other` is in `self`.
    pub const fn contains(self, other: Phases) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for Phases {
    type Output = Phases;
    fn bitor(self, rhs: Phases) -> Phases {
        Phases(self.0 | rhs.0)
    }
}

/// A compiled-in plugin.
///
/// One instance is built per scope (global, service, route, consumer) at each config load and
/// shared by all requests on that scope, so hooks take `&self`: keep counters in atomics or
/// locks, per-request data in the [`RequestContext`].
///
/// Hooks run in the chain's order: global plugins first, then the service's and the route's,
/// each group sorted by [`Plugin::priority`], highest first. Every hook has a no-op default.
/// An `Err` from a hook fails the request with a 500 (the error is logged, never shown to the
/// client); to refuse a request, return [`Flow::Respond`] with the status you mean.
#[async_trait]
pub trait Plugin: Send + Sync + 'static {
    /// The plugin's name, as written in config (`key-auth`).
    fn name(&self) -> &str;

    /// Order within a scope's chain: higher runs first. Cheap refusals (size, CORS, IP) run at
    /// 2800–9000, authentication at 2500–2600 and `acl` at 2400, traffic control at 1000–1100,
    /// transforms and answers below 1000, observability at the edges (`prometheus` and
    /// `request-id` first, `access-log` last). See docs/plugins.md for every built-in.
    fn priority(&self) -> i32;

    /// The phases whose hooks this plugin implements.
    fn phases(&self) -> Phases {
        Phases::ALL
    }

    /// Runs when the request's headers have arrived and its route is known.
    ///
    /// May change the request headers (they are what the upstream receives, unless a later
    /// phase changes them again). Return [`Flow::Respond`] to answer the request here.
    async fn request_filter(
        &self,
        _req: &mut RequestHeader,
        _ctx: &mut RequestContext,
    ) -> Result<Flow> {
        Ok(Flow::Continue)
    }

    /// Runs for each chunk of the request body on its way to the upstream; `body` may be
    /// changed or replaced. `end_of_stream` is true for the last call. Returning
    /// [`Flow::Respond`] aborts the upload and answers the request (e.g. 413).
    async fn request_body_filter(
        &self,
        _body: &mut Option<Bytes>,
        _end_of_stream: bool,
        _ctx: &mut RequestContext,
    ) -> Result<Flow> {
        Ok(Flow::Continue)
    }

    /// Runs before an upstream node is chosen (again on each retry). Set
    /// [`RequestContext::upstream_override`] to send the request to another upstream.
    async fn upstream_peer(&self, _req: &RequestHeader, _ctx: &mut RequestContext) -> Result<()> {
        Ok(())
    }

    /// Runs on the request about to be sent upstream, after the engine set the path, `Host`
    /// and `X-Forwarded-*` headers.
    async fn upstream_request_filter(
        &self,
        _upstream_req: &mut RequestHeader,
        _ctx: &mut RequestContext,
    ) -> Result<()> {
        Ok(())
    }

    /// Runs on the response headers before they go to the client: the upstream's response,
    /// or one that a plugin sent.
    async fn response_filter(
        &self,
        _resp: &mut ResponseHeader,
        _ctx: &mut RequestContext,
    ) -> Result<()> {
        Ok(())
    }

    /// Runs for each chunk of the response body; `body` may be changed. Synchronous: it is
    /// on the data path, keep it short.
    fn response_body_filter(
        &self,
        _body: &mut Option<Bytes>,
        _end_of_stream: bool,
        _ctx: &mut RequestContext,
    ) -> Result<()> {
        Ok(())
    }

    /// Runs once when the request is done, whatever happened to it. `status` is the status
    /// sent to the client (0 when none could be sent).
    async fn logging(&self, _req: &RequestHeader, _status: u16, _ctx: &mut RequestContext) {}
}
