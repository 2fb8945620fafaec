//! The Pingora `ProxyHttp` implementation: routing, the plugin chain at each phase, node
//! selection, and the gateway's own error responses.

pub mod forward;
pub mod respond;

use crate::chain::Chain;
use crate::router::path::normalize;
use crate::router::{host_key, Lookup};
use crate::snapshot::Snapshot;
use crate::state::LiveState;
use crate::upstream::node::InflightGuard;
use crate::upstream::{HashOn, UpstreamPool};
use async_trait::async_trait;
use bytes::Bytes;
use gatehouse_plugins::{Flow, RequestContext};
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorSource, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use smallvec::SmallVec;
use std::net::SocketAddr;
use std::sync::Arc;

/// The gateway's proxy logic; one instance serves every listener.
pub struct GatewayProxy {
    state: LiveState,
}

impl GatewayProxy {
    /// A proxy serving whatever snapshot `state` holds.
    pub fn new(state: LiveState) -> Self {
        GatewayProxy { state }
    }
}

/// Per-request state of the engine. Plugins see only [`RequestState::plugin`].
pub struct RequestState {
    snapshot: Option<Arc<Snapshot>>,
    route: Option<usize>,
    /// The context plugins share.
    pub plugin: RequestContext,
    pool: Option<Arc<UpstreamPool>>,
    inflight: Option<InflightGuard>,
    /// The nodes tried so far (one, unless the request was retried).
    tried: SmallVec<[SocketAddr; 2]>,
    /// Status to answer with when proxying fails (set where the reason is known).
    error_status: Option<(u16, &'static str)>,
    /// A response was already written (by a plugin or the engine).
    responded: bool,
    /// The client's `Host` (or `:authority`), shared with the request's own header.
    client_host: Option<http::HeaderValue>,
    /// The route's chain with the consumer's plugins joined in, once an auth plugin
    /// identified a consumer that has plugins of its own.
    consumer_chain: Option<Arc<Chain>>,
}

impl RequestState {
    /// The request's chain (the route's, the consumer-joined one, or the global chain of an
    /// unrouted request) and the plugin context, borrowed together: hooks read the chain
    /// while they change the context.
    fn chain_and_ctx(&mut self) -> (Option<&Chain>, &mut RequestContext) {
        let chain = match (&self.consumer_chain, &self.snapshot) {
            (Some(joined), _) => Some(&**joined),
            (None, Some(s)) => Some(match self.route {
                Some(r) => &s.routes[r].chain,
                None => &s.global_chain,
            }),
            (None, None) => None,
        };
        (chain, &mut self.plugin)
    }
}

async fn answer(
    session: &mut Session,
    ctx: &mut RequestState,
    resp: gatehouse_plugins::PluginResponse,
) -> Result<()> {
    ctx.responded = true;
    let (chain, plugin_ctx) = ctx.chain_and_ctx();
    let empty = Chain::default();
    respond::send(session, chain.unwrap_or(&empty), plugin_ctx, resp).await
}

/// Runs `chain`'s request hooks; the response of the first plugin that answers, if any.
async fn run_request_chain(
    chain: &Chain,
    session: &mut Session,
    ctx: &mut RequestContext,
) -> Result<Option<gatehouse_plugins::PluginResponse>> {
    for p in chain.request.iter() {
        if let Flow::Respond(resp) = p.request_filter(session.req_header_mut(), ctx).await? {
            return Ok(Some(resp));
        }
    }
    Ok(None)
}

/// Answers a request that matched no route: global plugins still run first (an auth or IP
/// check answers before the 404 does), then `fallback` is sent.
async fn answer_unrouted(
    session: &mut Session,
    ctx: &mut RequestState,
    snapshot: &Snapshot,
    fallback: gatehouse_plugins::PluginResponse,
) -> Result<()> {
    let resp = run_request_chain(&snapshot.global_chain, session, &mut ctx.plugin)
        .await?
        .unwrap_or(fallback);
    answer(session, ctx, resp).await
}

fn hash_key(pool: &UpstreamPool, req: &RequestHeader, ctx: &RequestContext) -> Vec<u8> {
    match &pool.hash_on {
        HashOn::ClientIp => ctx
            .client_ip
            .map(|ip| match ip {
                std::net::IpAddr::V4(v4) => v4.octets().to_vec(),
                std::net::IpAddr::V6(v6) => v6.octets().to_vec(),
            })
            .unwrap_or_default(),
        HashOn::Header(name) => req
            .headers
            .get(name)
            .map(|v| v.as_bytes().to_vec())
            .unwrap_or_default(),
        HashOn::Cookie(name) => req
            .headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|kv| kv.trim().split_once('='))
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_bytes().to_vec())
            .unwrap_or_default(),
        HashOn::Path => ctx.path.as_bytes().to_vec(),
    }
}

/// The client's `Host` as text; empty when it sent none.
fn client_host_text(ctx: &RequestState) -> &str {
    ctx.client_host
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

fn is_gateway_failure(status: u16) -> bool {
    matches!(status, 502..=504)
}

impl GatewayProxy {
    /// Runs the route's request hooks. When an auth plugin identifies a consumer that has
    /// plugins of its own, the rest of the request runs the route's chain with those joined
    /// in (see [`Chain::with_consumer`]); plugins that already ran are not run again.
    async fn run_route_chain(
        &self,
        snapshot: &Snapshot,
        route: &crate::snapshot::CompiledRoute,
        session: &mut Session,
        ctx: &mut RequestState,
    ) -> Result<Option<gatehouse_plugins::PluginResponse>> {
        let chain = &route.chain;
        for (i, p) in chain.request.iter().enumerate() {
            let had_consumer = ctx.plugin.consumer.is_some();
            if let Flow::Respond(resp) = p
                .request_filter(session.req_header_mut(), &mut ctx.plugin)
                .await?
            {
                return Ok(Some(resp));
            }
            if had_consumer || snapshot.consumer_plugins.is_empty() {
                continue;
            }
            let Some(own) = ctx
                .plugin
                .consumer
                .as_ref()
                .and_then(|c| snapshot.consumer_plugins.get(&c.id))
            else {
                continue;
            };
            let joined = Arc::new(chain.with_consumer(own));
            ctx.consumer_chain = Some(joined.clone());
            let ran = &chain.request[..=i];
            for q in joined.request.iter() {
                if ran.iter().any(|r| r.name() == q.name()) {
                    continue;
                }
                if let Flow::Respond(resp) = q
                    .request_filter(session.req_header_mut(), &mut ctx.plugin)
                    .await?
                {
                    return Ok(Some(resp));
                }
            }
            return Ok(None);
        }
        Ok(None)
    }
}

#[async_trait]
impl ProxyHttp for GatewayProxy {
    type CTX = RequestState;

    fn new_ctx(&self) -> RequestState {
        RequestState {
            snapshot: None,
            route: None,
            plugin: RequestContext::new(),
            pool: None,
            inflight: None,
            tried: SmallVec::new(),
            error_status: None,
            responded: false,
            client_host: None,
            consumer_chain: None,
        }
    }

    fn init_downstream_modules(&self, modules: &mut pingora_core::modules::http::HttpModules) {
        crate::compress::init_modules(modules);
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestState) -> Result<bool> {
        // Pipelined requests are answered in order on every HTTP/1 connection, the ones the
        // lean keep-alive loop serves and the ones Pingora's own loop serves (plain listeners
        // with `http2: true`) alike: this is the one place that turns it on. A no-op on HTTP/2.
        session.downstream_session.set_pipelining_enabled(true);
        let snapshot = self.state.load();
        ctx.snapshot = Some(snapshot.clone());
        // The listener's idle limit for the wait before the next request, where the request
        // left keep-alive on (HTTP/1.1 without `Connection: close`).
        if session.get_keepalive().is_some() {
            let local = session.server_addr().and_then(|a| a.as_inet());
            if let Some(secs) = local.and_then(|a| snapshot.keepalive_for(a)) {
                session.set_keepalive((secs > 0).then_some(secs));
            }
        }
        let client = session.client_addr().and_then(|a| a.as_inet()).copied();
        ctx.plugin.client_addr = client;
        ctx.plugin.client_ip = client.map(|a| a.ip());
        ctx.plugin.tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());

        let req = session.req_header();
        let client_host = match req.uri.authority() {
            Some(a) => http::HeaderValue::from_str(a.as_str()).ok(),
            None => req.headers.get(http::header::HOST).cloned(),
        }
        .filter(|v| !v.is_empty());
        let authority = client_host
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let host = host_key(authority);
        let path = match normalize(req.uri.path()) {
            Ok(p) => p,
            Err(e) => {
                answer(session, ctx, respond::error(400, e.message())).await?;
                return Ok(true);
            }
        };
        let path_changed = path != req.uri.path();
        let lookup = snapshot
            .router
            .lookup(&host, &path, &mut |i| snapshot.routes[i].verdict(req));
        match lookup {
            Lookup::Found(found) => {
                let route = &snapshot.routes[found.route];
                ctx.route = Some(found.route);
                ctx.plugin.route_id = Some(route.id.clone());
                ctx.plugin.service_id = route.service_id.clone();
                ctx.plugin.upstream_id = route.upstream.as_ref().map(|u| u.id.clone());
                ctx.plugin.path_params = found.params;
                let query = req.uri.query();
                let upstream_path = if route.strip_prefix {
                    Some(found.rest.unwrap_or("")).map(|rest| format!("/{rest}"))
                } else if path_changed {
                    Some(path.to_string())
                } else {
                    None
                };
                ctx.plugin.upstream_path = upstream_path.map(|mut p| {
                    if let Some(q) = query {
                        p.push('?');
                        p.push_str(q);
                    }
                    p
                });
                ctx.plugin.path = path.into_owned();
            }
            Lookup::MethodNotAllowed(routes) => {
                let mut allow: Vec<&str> = routes
                    .iter()
                    .flat_map(|&i| snapshot.routes[i].methods().iter().map(|m| m.as_str()))
                    .collect();
                if allow.contains(&"GET") {
                    allow.push("HEAD");
                }
                allow.sort_unstable();
                allow.dedup();
                ctx.plugin.path = path.into_owned();
                let resp = respond::error(405, "method not allowed")
                    .try_with_header("allow", &allow.join(", "))
                    .unwrap_or_else(|_| respond::error(405, "method not allowed"));
                answer_unrouted(session, ctx, &snapshot, resp).await?;
                return Ok(true);
            }
            Lookup::NotFound => {
                ctx.plugin.path = path.into_owned();
                let resp = respond::error(404, "no route matches the request");
                answer_unrouted(session, ctx, &snapshot, resp).await?;
                return Ok(true);
            }
        }

        ctx.client_host = client_host;
        let Some(route_idx) = ctx.route else {
            return Ok(false);
        };
        let route = &snapshot.routes[route_idx];
        if let Some(resp) = self.run_route_chain(&snapshot, route, session, ctx).await? {
            answer(session, ctx, resp).await?;
            return Ok(true);
        }
        if route.upstream.is_none() && ctx.plugin.upstream_override.is_none() {
            answer(
                session,
                ctx,
                respond::error(500, "the route has no upstream and no plugin answered"),
            )
            .await?;
            return Ok(true);
        }
        Ok(false)
    }

    async fn request_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestState,
    ) -> Result<()> {
        let (Some(chain), plugin_ctx) = ctx.chain_and_ctx() else {
            return Ok(());
        };
        let mut answered = None;
        for p in chain.request_body.iter() {
            if let Flow::Respond(resp) = p
                .request_body_filter(body, end_of_stream, plugin_ctx)
                .await?
            {
                answered = Some(resp);
                break;
            }
        }
        let Some(resp) = answered else {
            return Ok(());
        };
        let status = resp.status;
        // The rest of the upload is not read: the connection cannot be reused.
        session.set_keepalive(None);
        answer(session, ctx, resp).await?;
        Error::e_explain(ErrorType::HTTPStatus(status), "answered by a plugin")
    }

    // The cache hooks: `proxy-cache` left its decision in the context; crate::cache acts on it.

    fn request_cache_filter(&self, session: &mut Session, ctx: &mut RequestState) -> Result<()> {
        crate::cache::request_cache_filter(session, &mut ctx.plugin);
        Ok(())
    }

    fn cache_key_callback(
        &self,
        _session: &Session,
        ctx: &mut RequestState,
    ) -> Result<pingora_cache::CacheKey> {
        crate::cache::cache_key(&mut ctx.plugin)
    }

    fn is_purge(&self, _session: &Session, ctx: &RequestState) -> bool {
        crate::cache::is_purge(&ctx.plugin)
    }

    async fn cache_hit_filter(
        &self,
        _session: &mut Session,
        _meta: &pingora_cache::CacheMeta,
        _hit_handler: &mut pingora_cache::HitHandler,
        is_fresh: bool,
        ctx: &mut RequestState,
    ) -> Result<Option<pingora_cache::ForcedFreshness>> {
        Ok(crate::cache::cache_hit_filter(&mut ctx.plugin, is_fresh))
    }

    fn response_cache_filter(
        &self,
        session: &Session,
        resp: &ResponseHeader,
        ctx: &mut RequestState,
    ) -> Result<pingora_cache::RespCacheable> {
        Ok(crate::cache::response_cache_filter(
            session,
            resp,
            &ctx.plugin,
        ))
    }

    fn cache_vary_filter(
        &self,
        meta: &pingora_cache::CacheMeta,
        _ctx: &mut RequestState,
        req: &RequestHeader,
    ) -> Option<pingora_cache::key::HashBinary> {
        crate::cache::variance(meta, req)
    }

    fn should_serve_stale(
        &self,
        _session: &mut Session,
        _ctx: &mut RequestState,
        error: Option<&Error>,
    ) -> bool {
        crate::cache::should_serve_stale(error)
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut RequestState,
    ) -> Result<Box<HttpPeer>> {
        if let (Some(chain), plugin_ctx) = ctx.chain_and_ctx() {
            for p in chain.upstream_peer.iter() {
                p.upstream_peer(session.req_header(), plugin_ctx).await?;
            }
        }
        let snapshot = ctx
            .snapshot
            .clone()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no snapshot"))?;
        let route = ctx
            .route
            .map(|r| &snapshot.routes[r])
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no route"))?;
        let pool = match &ctx.plugin.upstream_override {
            Some(id) => snapshot.upstreams.get(id).cloned(),
            None => route.upstream.clone(),
        };
        let Some(pool) = pool else {
            ctx.error_status = Some((500, "the route has no upstream"));
            return Error::e_explain(ErrorType::HTTPStatus(500), "no upstream");
        };
        let key = if matches!(
            pool.spec.balance,
            crate::config::model::Balance::ConsistentHash
        ) {
            hash_key(&pool, session.req_header(), &ctx.plugin)
        } else {
            Vec::new()
        };
        // A retry prefers another node; with none left, the same node is tried again (a
        // pooled connection that turned out dead is worth one fresh attempt).
        let picked = pool.select(&key, &ctx.tried).or_else(|| {
            (!ctx.tried.is_empty())
                .then(|| pool.select(&key, &[]))
                .flatten()
        });
        let Some(picked) = picked else {
            ctx.error_status = Some((503, "no healthy upstream node"));
            return Error::e_explain(ErrorType::HTTPStatus(503), "no healthy upstream node");
        };
        let host = client_host_text(ctx);
        let peer = pool.peer(&picked, pool.host_header(host, &picked.node));
        if let Some(a) = picked.backend.addr.as_inet() {
            ctx.tried.push(*a);
            ctx.plugin.upstream_addr = Some(*a);
        }
        ctx.inflight = Some(InflightGuard::new(picked.node));
        ctx.plugin.upstream_id = Some(pool.id.clone());
        ctx.pool = Some(pool);
        Ok(peer)
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestState,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let (Some(pool), Some(guard)) = (&ctx.pool, ctx.inflight.take()) {
            pool.record_outcome(&guard.0, false);
            let attempts = u32::try_from(ctx.tried.len()).unwrap_or(u32::MAX);
            if attempts <= pool.spec.retries {
                e.set_retry(true);
            }
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestState,
    ) -> Result<()> {
        if let Some(p) = &ctx.plugin.upstream_path {
            let uri = p
                .parse::<http::Uri>()
                .map_err(|e| Error::because(ErrorType::InternalError, "rewritten path", e))?;
            upstream_request.set_uri(uri);
        }
        // Hop-by-hop headers are already gone: see `forward`.
        if let (Some(pool), Some(guard)) = (&ctx.pool, &ctx.inflight) {
            let host = pool.host_header(client_host_text(ctx), &guard.0);
            let sent = upstream_request.headers.get(http::header::HOST);
            // The client's `Host`, passed on as it is, is already in the copied request.
            if !host.is_empty() && sent.is_none_or(|v| v.as_bytes() != host.as_bytes()) {
                upstream_request.insert_header(http::header::HOST, host)?;
            }
        }
        forward::set_forwarded(
            upstream_request,
            ctx.plugin.client_addr.map(|a| a.ip()),
            ctx.plugin.client_ip,
            ctx.plugin.tls,
            ctx.client_host.as_ref(),
        )?;
        forward::set_consumer(upstream_request, ctx.plugin.consumer.as_deref())?;
        ctx.plugin.upstream_started = Some(std::time::Instant::now());
        if let (Some(chain), plugin_ctx) = ctx.chain_and_ctx() {
            for p in chain.upstream_request.iter() {
                p.upstream_request_filter(upstream_request, plugin_ctx)
                    .await?;
            }
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestState,
    ) -> Result<()> {
        crate::cache::response_filter(session, upstream_response, &mut ctx.plugin);
        crate::compress::configure(session, &ctx.plugin);
        ctx.plugin.upstream_response_time = ctx.plugin.upstream_started.map(|t| t.elapsed());
        if let (Some(pool), Some(guard)) = (&ctx.pool, &ctx.inflight) {
            pool.record_outcome(
                &guard.0,
                !is_gateway_failure(upstream_response.status.as_u16()),
            );
        }
        if let (Some(chain), plugin_ctx) = ctx.chain_and_ctx() {
            for p in chain.response.iter() {
                p.response_filter(upstream_response, plugin_ctx).await?;
            }
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestState,
    ) -> Result<Option<std::time::Duration>> {
        if let (Some(chain), plugin_ctx) = ctx.chain_and_ctx() {
            for p in chain.response_body.iter() {
                p.response_body_filter(body, end_of_stream, plugin_ctx)?;
            }
        }
        Ok(None)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestState,
    ) -> FailToProxy {
        let (status, message) = if ctx.responded {
            (0, "")
        } else if let Some(s) = ctx.error_status {
            s
        } else {
            match (e.esource(), e.etype()) {
                (_, ErrorType::HTTPStatus(code)) => (*code, "request failed"),
                (
                    ErrorSource::Upstream,
                    ErrorType::ConnectTimedout
                    | ErrorType::ReadTimedout
                    | ErrorType::WriteTimedout
                    | ErrorType::TLSHandshakeTimedout,
                ) => (504, "the upstream timed out"),
                (ErrorSource::Upstream, _) => (502, "the upstream failed"),
                (
                    ErrorSource::Downstream,
                    ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed,
                ) => (0, ""),
                (ErrorSource::Downstream, ErrorType::ReadTimedout) => (408, "request timeout"),
                (ErrorSource::Downstream, _) => (400, "bad request"),
                _ => (500, "internal error"),
            }
        };
        if let (Some(pool), Some(guard)) = (&ctx.pool, &ctx.inflight) {
            if e.esource() == &ErrorSource::Upstream {
                pool.record_outcome(&guard.0, false);
            }
        }
        if status > 0 && session.response_written().is_none() {
            // The connection is not reused after a failure: say so, so that a client does not
            // send its next request into a closing connection.
            session.set_keepalive(None);
            let resp = respond::error(status, message);
            if let Err(err) = answer(session, ctx, resp).await {
                log::debug!("could not send the error response: {err}");
            }
        }
        FailToProxy {
            error_code: status,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut RequestState) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        ctx.plugin.response_body_bytes = session.body_bytes_sent() as u64;
        ctx.plugin.request_body_bytes = session.body_bytes_read() as u64;
        if let (Some(chain), plugin_ctx) = ctx.chain_and_ctx() {
            for p in chain.logging.iter() {
                p.logging(session.req_header(), status, plugin_ctx).await;
            }
        }
        crate::cache::record(&ctx.plugin);
        ctx.inflight = None;
    }
}
