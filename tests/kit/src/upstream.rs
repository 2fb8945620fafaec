//! A real HTTP/1.1 upstream that answers with a JSON description of what it received.
//!
//! Paths with special meaning:
//! - `/status/{code}`: answers with that status;
//! - `/delay/{ms}`: answers after that many milliseconds;
//! - `/healthz`: 200 while healthy (see [`EchoUpstream::set_healthy`]), else 503.
//!
//! Anything else answers 200 with `{"node", "method", "uri", "headers", "body"}`.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A running echo upstream; stops (and closes its port) when dropped or stopped.
pub struct EchoUpstream {
    /// Its address.
    pub addr: SocketAddr,
    /// Its name, reported in every answer as `node`.
    pub name: String,
    healthy: Arc<AtomicBool>,
    hits: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

struct Shared {
    name: String,
    healthy: Arc<AtomicBool>,
    hits: Arc<AtomicUsize>,
}

async fn handle(
    req: Request<Incoming>,
    shared: Arc<Shared>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let path = req.uri().path().to_string();
    if path == "/healthz" {
        let ok = shared.healthy.load(Ordering::SeqCst);
        return Ok(Response::builder()
            .status(if ok { 200 } else { 503 })
            .body(Full::new(Bytes::from_static(b"ok")))
            .expect("response"));
    }
    shared.hits.fetch_add(1, Ordering::SeqCst);
    let mut status = 200;
    if let Some(code) = path.strip_prefix("/status/") {
        status = code.parse().unwrap_or(500);
    }
    if let Some(ms) = path.strip_prefix("/delay/") {
        let ms: u64 = ms.parse().unwrap_or(0);
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
    let method = req.method().to_string();
    let uri = req.uri().to_string();
    let mut headers = serde_json::Map::new();
    for (n, v) in req.headers() {
        let v = String::from_utf8_lossy(v.as_bytes()).to_string();
        match headers.get_mut(n.as_str()) {
            Some(serde_json::Value::String(prev)) => {
                *prev = format!("{prev}, {v}");
            }
            _ => {
                headers.insert(n.as_str().to_string(), serde_json::Value::String(v));
            }
        }
    }
    let body = req.into_body().collect().await?.to_bytes();
    let json = serde_json::json!({
        "node": shared.name,
        "method": method,
        "uri": uri,
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    });
    Ok(Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("x-upstream-node", shared.name.as_str())
        .body(Full::new(Bytes::from(json.to_string())))
        .expect("response"))
}

impl EchoUpstream {
    /// Starts an upstream on an ephemeral port.
    pub async fn start(name: &str) -> EchoUpstream {
        Self::start_on(name, 0).await
    }

    /// Starts an upstream on `port` (0 = ephemeral).
    pub async fn start_on(name: &str, port: u16) -> EchoUpstream {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("addr");
        let healthy = Arc::new(AtomicBool::new(true));
        let hits = Arc::new(AtomicUsize::new(0));
        let shared = Arc::new(Shared {
            name: name.to_string(),
            healthy: healthy.clone(),
            hits: hits.clone(),
        });
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    break;
                };
                let shared = shared.clone();
                conns.spawn(async move {
                    let svc = service_fn(move |req| handle(req, shared.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .with_upgrades()
                        .await;
                });
            }
        });
        EchoUpstream {
            addr,
            name: name.to_string(),
            healthy,
            hits,
            task,
        }
    }

    /// Makes `/healthz` answer 200 (true) or 503 (false).
    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::SeqCst);
    }

    /// Requests served, health checks excluded.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Stops serving: the port is closed and open connections are dropped.
    pub fn stop(self) {
        self.task.abort();
    }
}

impl Drop for EchoUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}
