//! Idle HTTP/1 keep-alive connections that hold little memory.
//!
//! Pingora serves the requests of an HTTP/1 connection in a loop whose future is sized for
//! the HTTP/2 branch it may take, and each request inside a boxed future sized for the whole
//! proxy; the wait for the next request's head happens inside the latter. An idle keep-alive
//! connection therefore holds both allocations and a session. [`LeanKeepalive`] runs the
//! HTTP/1 loop itself and waits for the start of each request on the bare connection, with
//! the same keep-alive timeout and shutdown behaviour; the bytes read are handed to the
//! session, which parses them before it reads from the connection. This holds for HTTP/1
//! over TLS too. Listeners are built without a socket read buffer (see `server.rs`), so a
//! waiting connection holds no read buffer of gatehouse's or Pingora's.

use async_trait::async_trait;
use bytes::BytesMut;
use pingora_core::apps::{HttpServerApp, ReusedHttpStream, ServerApp};
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::{Stream, ALPN};
use pingora_core::server::ShutdownWatch;
use pingora_timeout::fast_timeout::fast_timeout;
use std::any::Any;
use std::future::poll_fn;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::Notify;

/// The keep-alive timeout Pingora gives the first request of a connection, in seconds.
const FIRST_REQUEST_KEEPALIVE: u64 = 60;

/// The most a waiting connection reads before handing the request to the app: the size of
/// the buffer Pingora reads a request's head into.
const FIRST_READ: usize = 4096;

/// How long a request may take to start when its session has keep-alive off: Pingora's
/// default read timeout.
const NO_KEEPALIVE_WAIT: Duration = Duration::from_secs(60);

/// Serves an HTTP app's HTTP/1 connections, plain or over TLS, waiting for each request
/// without holding the app's per-request state. HTTP/2 (h2c or ALPN `h2`) and custom
/// protocols go to the app unchanged.
pub struct LeanKeepalive<A> {
    inner: Arc<A>,
    /// Set when the service shuts down: waiting connections close.
    closing: AtomicBool,
    wake: Notify,
}

/// What a connection carries from one request's session to the next (nothing, by default).
#[derive(Default)]
struct Carried {
    keepalive: Option<u64>,
    reuses: Option<u32>,
    context: Option<Box<dyn Any + Send + Sync>>,
}

impl Carried {
    fn into_session(self, stream: Stream) -> ServerSession {
        let mut session = ServerSession::new_http1(stream);
        session.set_keepalive(self.keepalive);
        session.set_keepalive_reuses_remaining(self.reuses);
        session.set_connection_user_context(self.context);
        session
    }
}

/// The next request of a connection.
enum Next {
    /// Wait on the connection, then start a session with what it carries.
    Wait(Stream, Carried),
    /// A session that may already hold the request (pipelined bytes): serve it at once.
    Ready(Box<ServerSession>),
}

impl Next {
    fn after(reused: ReusedHttpStream) -> Next {
        let (stream, settings) = reused.consume();
        let Some(settings) = settings else {
            return Next::Wait(stream, Carried::default());
        };
        let mut session = ServerSession::new_http1(stream);
        // The settings are opaque: apply them, then read them back.
        settings.apply_to_session(&mut session);
        if session.pipelining_enabled() {
            return Next::Ready(Box::new(session));
        }
        let carried = Carried {
            keepalive: session.get_keepalive(),
            reuses: session.get_keepalive_reuses_remaining(),
            context: session.take_connection_user_context(),
        };
        match session {
            ServerSession::H1(http1) => Next::Wait(http1.into_inner(), carried),
            other => Next::Ready(Box::new(other)),
        }
    }
}

impl<A: HttpServerApp> LeanKeepalive<A> {
    /// Wraps `inner`.
    pub fn new(inner: A) -> Self {
        LeanKeepalive {
            inner: Arc::new(inner),
            closing: AtomicBool::new(false),
            wake: Notify::new(),
        }
    }

    /// Whether this loop serves `stream`: HTTP/1, plain (on a service without h2c) or over
    /// TLS (when ALPN did not pick HTTP/2 or a custom protocol).
    fn serves(&self, stream: &Stream) -> bool {
        let options = self.inner.server_options();
        if options.is_some_and(|o| o.force_custom) {
            return false;
        }
        let tls = stream.get_ssl_digest().is_some();
        (tls || !options.is_some_and(|o| o.h2c))
            && matches!(stream.selected_alpn_proto(), None | Some(ALPN::H1))
    }

    /// Waits for the start of the next request and returns the bytes read. `None` when the
    /// connection should close instead: the client closed it or it failed, the wait timed
    /// out, or the service is shutting down.
    async fn wait_for_request(
        &self,
        stream: &mut Stream,
        keepalive: Option<u64>,
    ) -> Option<BytesMut> {
        let shutdown = self.wake.notified();
        if self.closing.load(Ordering::Acquire) {
            return None;
        }
        let first_read = poll_fn(|cx| poll_first_read(stream, cx));
        let ready = async {
            let limit = match keepalive {
                Some(0) => return first_read.await.ok(),
                Some(secs) => Duration::from_secs(secs),
                None => NO_KEEPALIVE_WAIT,
            };
            fast_timeout(limit, first_read)
                .await
                .ok()
                .and_then(Result::ok)
        };
        tokio::select! {
            biased;
            head = ready => head,
            () = shutdown => None,
        }
    }
}

/// Reads what the connection has, once it has something, into a new buffer sized like the
/// one Pingora would have read the request's head into. The scratch space lives on the
/// stack for the length of one poll, so a waiting connection holds no buffer.
fn poll_first_read(stream: &mut Stream, cx: &mut Context<'_>) -> Poll<io::Result<BytesMut>> {
    let mut scratch = [MaybeUninit::<u8>::uninit(); FIRST_READ];
    let mut read = ReadBuf::uninit(&mut scratch);
    ready!(Pin::new(stream).poll_read(cx, &mut read))?;
    let filled = read.filled();
    if filled.is_empty() {
        return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
    }
    let mut head = BytesMut::with_capacity(FIRST_READ);
    head.extend_from_slice(filled);
    Poll::Ready(Ok(head))
}

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> ServerApp for LeanKeepalive<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        if !self.serves(&stream) {
            return ServerApp::process_new(&self.inner, stream, shutdown).await;
        }
        let first = Carried {
            keepalive: (!*shutdown.borrow()).then_some(FIRST_REQUEST_KEEPALIVE),
            reuses: self
                .inner
                .server_options()
                .and_then(|o| o.keepalive_request_limit),
            ..Carried::default()
        };
        let mut next = Next::Wait(stream, first);
        loop {
            let session = match next {
                Next::Ready(session) => *session,
                Next::Wait(mut stream, carried) => {
                    let head = self
                        .wait_for_request(&mut stream, carried.keepalive)
                        .await?;
                    let mut session = carried.into_session(stream);
                    // The session parses these bytes before it reads from the connection.
                    session.set_pipelined_prefix(head);
                    session
                }
            };
            next = Next::after(self.inner.process_new_http(session, shutdown).await?);
        }
    }

    async fn cleanup(&self) {
        self.closing.store(true, Ordering::Release);
        self.wake.notify_waiters();
        self.inner.http_cleanup().await;
    }
}
