//! A real HTTP/1.1 upstream whose answer per path is set by the test: status, headers, body
//! (with or without `Content-Length`), a delay; it answers conditional requests with 304 when
//! the validators match, counts requests per path and keeps the headers of the last one.
#![allow(dead_code)]

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// How the upstream answers one path.
#[derive(Clone, Debug)]
pub struct Script {
    /// Status (default 200).
    pub status: u16,
    /// Response headers, in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Bytes,
    /// Send the body in chunks without `Content-Length`.
    pub chunked: bool,
    /// Wait this long before answering.
    pub delay: Option<Duration>,
    /// Append the value of this request header to the body (for `Vary` tests).
    pub echo_header: Option<String>,
}

impl Default for Script {
    fn default() -> Self {
        Script {
            status: 200,
            headers: Vec::new(),
            body: Bytes::new(),
            chunked: false,
            delay: None,
            echo_header: None,
        }
    }
}

impl Script {
    /// A 200 with `body` and the given headers.
    pub fn ok(body: impl Into<Bytes>, headers: &[(&str, &str)]) -> Script {
        Script {
            body: body.into(),
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            ..Script::default()
        }
    }

    /// The same, with another status.
    pub fn status(mut self, status: u16) -> Script {
        self.status = status;
        self
    }

    /// The same, sent chunked.
    pub fn chunked(mut self) -> Script {
        self.chunked = true;
        self
    }

    /// The same, after `ms` milliseconds.
    pub fn delayed(mut self, ms: u64) -> Script {
        self.delay = Some(Duration::from_millis(ms));
        self
    }

    /// The same, with request header `name`'s value appended to the body.
    pub fn echo(mut self, name: &str) -> Script {
        self.echo_header = Some(name.to_string());
        self
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct State {
    scripts: HashMap<String, Script>,
    hits: HashMap<String, usize>,
    last: HashMap<String, Vec<(String, String)>>,
}

/// A running scripted upstream; stops when dropped or stopped.
pub struct ScriptedUpstream {
    /// Its address.
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

type Body = BoxBody<Bytes, Infallible>;

fn not_modified(script: &Script, req: &Request<Incoming>) -> bool {
    let inm = req
        .headers()
        .get("if-none-match")
        .and_then(|v| v.to_str().ok());
    if let (Some(inm), Some(etag)) = (inm, script.header("etag")) {
        let bare = |t: &str| t.trim().trim_start_matches("W/").to_string();
        return inm
            .split(',')
            .any(|t| bare(t) == bare(etag) || t.trim() == "*");
    }
    let ims = req
        .headers()
        .get("if-modified-since")
        .and_then(|v| v.to_str().ok());
    if let (Some(ims), Some(lm)) = (ims, script.header("last-modified")) {
        if let (Ok(ims), Ok(lm)) = (
            httpdate::parse_http_date(ims),
            httpdate::parse_http_date(lm),
        ) {
            return lm <= ims;
        }
    }
    false
}

async fn handle(
    req: Request<Incoming>,
    state: Arc<Mutex<State>>,
) -> Result<Response<Body>, hyper::Error> {
    let path = req.uri().path().to_string();
    let script = {
        let mut s = state.lock().unwrap();
        *s.hits.entry(path.clone()).or_default() += 1;
        let headers = req
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).to_string(),
                )
            })
            .collect();
        s.last.insert(path.clone(), headers);
        s.scripts.get(&path).cloned()
    };
    let Some(script) = script else {
        return Ok(Response::builder()
            .status(404)
            .body(Full::new(Bytes::from_static(b"no script")).boxed())
            .expect("response"));
    };
    if let Some(d) = script.delay {
        tokio::time::sleep(d).await;
    }
    let mut builder = Response::builder();
    for (n, v) in &script.headers {
        builder = builder.header(n.as_str(), v.as_str());
    }
    if not_modified(&script, &req) {
        let resp = builder
            .status(304)
            .body(Full::new(Bytes::new()).boxed())
            .expect("response");
        return Ok(resp);
    }
    let mut body = script.body.to_vec();
    if let Some(name) = &script.echo_header {
        if let Some(v) = req.headers().get(name.as_str()) {
            body.extend_from_slice(v.as_bytes());
        }
    }
    let body: Body = if script.chunked {
        let frames: Vec<Result<Frame<Bytes>, Infallible>> = body
            .chunks(1000)
            .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
            .collect();
        StreamBody::new(futures_util::stream::iter(frames)).boxed()
    } else {
        Full::new(Bytes::from(body)).boxed()
    };
    Ok(builder.status(script.status).body(body).expect("response"))
}

impl ScriptedUpstream {
    /// Starts an upstream on an ephemeral port with no scripts (every path answers 404).
    pub async fn start() -> ScriptedUpstream {
        Self::start_on(0).await
    }

    /// Starts an upstream on `port` (0 = ephemeral).
    pub async fn start_on(port: u16) -> ScriptedUpstream {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    break;
                };
                let state = shared.clone();
                conns.spawn(async move {
                    let svc = service_fn(move |req| handle(req, state.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        ScriptedUpstream { addr, state, task }
    }

    /// Sets how `path` is answered.
    pub fn set(&self, path: &str, script: Script) {
        self.state
            .lock()
            .unwrap()
            .scripts
            .insert(path.to_string(), script);
    }

    /// Requests received for `path`.
    pub fn hits(&self, path: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .hits
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    /// A header of the last request received for `path`.
    pub fn last_header(&self, path: &str, name: &str) -> Option<String> {
        self.state
            .lock()
            .unwrap()
            .last
            .get(path)?
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    }

    /// Stops serving: the port is closed and open connections are dropped.
    pub fn stop(self) {
        self.task.abort();
    }
}

impl Drop for ScriptedUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}
