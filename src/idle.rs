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
//!
//! Pipelined requests (RFC 9112 §9.3.2: a client sends the next request before the answer to
//! the last one) are served in order: the proxy turns Pingora's pipelining on for each
//! session, and when a finished request leaves the next one's bytes behind, that session
//! starts at once instead of waiting on a connection that has nothing more to read.

use async_trait::async_trait;
use bytes::BytesMut;
use pingora_core::apps::HttpPersistentSettings;
use pingora_core::apps::{HttpServerApp, ReusedHttpStream, ServerApp};
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::{Stream, ALPN};
use pingora_core::server::ShutdownWatch;
use pingora_timeout::fast_timeout::fast_timeout;
use std::fmt::{self, Write as _};
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

/// Shards of the shutdown wake-up (see [`LeanKeepalive`]).
const WAKE_SHARDS: usize = 16;

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
    /// Wakes waiting connections at shutdown. Each connection waits on one shard, picked by
    /// its socket, so that threads serving different connections do not take one shared lock
    /// twice per request (registering and unregistering the wait).
    wake: [Notify; WAKE_SHARDS],
}

/// What a connection carries from one request's session to the next.
enum Carried {
    /// Before the first request: a new connection's keep-alive timeout and reuse limit.
    First {
        keepalive: Option<u64>,
        reuses: Option<u32>,
    },
    /// What the last session handed over, applied as it is to the next one, with the
    /// keep-alive timeout read from it for the wait.
    Settings {
        settings: HttpPersistentSettings,
        keepalive: Option<u64>,
    },
}

impl Carried {
    /// How long the connection may wait for the next request (see
    /// [`LeanKeepalive::wait_for_request`]).
    fn keepalive(&self) -> Option<u64> {
        match self {
            Carried::First { keepalive, .. } | Carried::Settings { keepalive, .. } => *keepalive,
        }
    }

    fn into_session(self, stream: Stream) -> ServerSession {
        let mut session = ServerSession::new_http1(stream);
        match self {
            Carried::First { keepalive, reuses } => {
                session.set_keepalive(keepalive);
                session.set_keepalive_reuses_remaining(reuses);
            }
            Carried::Settings { settings, .. } => settings.apply_to_session(&mut session),
        }
        session
    }
}

/// The next request of a connection.
enum Next {
    /// Wait on the connection, then start a session with what it carries.
    Wait(Stream, Carried),
    /// A session that already holds the start of its request (pipelined bytes), or one whose
    /// settings this build cannot read: it reads the connection itself.
    Ready(Box<ServerSession>),
}

impl Next {
    fn after(reused: ReusedHttpStream) -> Next {
        let (stream, settings) = reused.consume();
        let Some(settings) = settings else {
            let carried = Carried::First {
                keepalive: None,
                reuses: None,
            };
            return Next::Wait(stream, carried);
        };
        match SettingsView::of(&settings) {
            Some(view) if !view.pipelined => {
                let keepalive = view.keepalive;
                Next::Wait(
                    stream,
                    Carried::Settings {
                        settings,
                        keepalive,
                    },
                )
            }
            _ => {
                let mut session = ServerSession::new_http1(stream);
                settings.apply_to_session(&mut session);
                Next::Ready(Box::new(session))
            }
        }
    }
}

impl<A: HttpServerApp> LeanKeepalive<A> {
    /// Wraps `inner`.
    pub fn new(inner: A) -> Self {
        LeanKeepalive {
            inner: Arc::new(inner),
            closing: AtomicBool::new(false),
            wake: std::array::from_fn(|_| Notify::new()),
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
        let shard = stream.id() as usize % WAKE_SHARDS;
        let shutdown = self.wake[shard].notified();
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

/// What the loop needs from a finished session's [`HttpPersistentSettings`]: the keep-alive
/// timeout to wait with, and whether the session left bytes of the next request behind (a
/// pipelined request, to be parsed before the connection is read again).
///
/// Pingora keeps these fields private (no getters), so they are read from the settings'
/// `Debug` output, on the stack, stopping before the pipelined bytes themselves are
/// formatted. The unit tests pin this to the Pingora version in use; were the output to
/// change, [`SettingsView::of`] answers `None` and every session waits inside Pingora
/// (correct, with more memory per idle connection) and the tests fail.
#[derive(Debug, PartialEq)]
struct SettingsView {
    keepalive: Option<u64>,
    pipelined: bool,
}

/// Reads the `Debug` output of [`HttpPersistentSettings`] as it is written, up to the variant
/// of its `pipelined_prefix` field, keeping nothing but the answers. A derived `Debug` writes
/// each field's name as one piece and a value in pieces (`Some`, `(`, `60`, `)`).
#[derive(Default)]
struct DebugReader {
    field: DebugField,
    /// `Some(timeout)` once the keep-alive field's value was read.
    keepalive: Option<Option<u64>>,
    pipelined: Option<bool>,
}

#[derive(Default)]
enum DebugField {
    #[default]
    Other,
    Keepalive,
    Pipelined,
}

impl fmt::Write for DebugReader {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        match s {
            "keepalive_timeout" => self.field = DebugField::Keepalive,
            "keepalive_reuses_remaining" => self.field = DebugField::Other,
            "pipelined_prefix" => self.field = DebugField::Pipelined,
            // Punctuation (`: `, `(`, `, `), and the values of fields not read.
            _ => match self.field {
                DebugField::Other => {}
                DebugField::Keepalive => match s {
                    "None" => self.keepalive = Some(None),
                    digits if digits.starts_with(|c: char| c.is_ascii_digit()) => {
                        self.keepalive = digits.parse().ok().map(Some);
                    }
                    _ => {}
                },
                DebugField::Pipelined => {
                    if s.starts_with(['S', 'N']) {
                        self.pipelined = Some(s.starts_with("Some"));
                        // Stop formatting: the rest (the bytes themselves) is not needed.
                        return Err(fmt::Error);
                    }
                }
            },
        }
        Ok(())
    }
}

impl SettingsView {
    fn of(settings: &HttpPersistentSettings) -> Option<SettingsView> {
        let mut reader = DebugReader::default();
        // The early stop surfaces as an error here; what was read is what counts.
        let _ = write!(reader, "{settings:?}");
        Some(SettingsView {
            keepalive: reader.keepalive?,
            pipelined: reader.pipelined?,
        })
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
        let first = Carried::First {
            keepalive: (!*shutdown.borrow()).then_some(FIRST_REQUEST_KEEPALIVE),
            reuses: self
                .inner
                .server_options()
                .and_then(|o| o.keepalive_request_limit),
        };
        let mut next = Next::Wait(stream, first);
        loop {
            let session = match next {
                Next::Ready(session) => *session,
                Next::Wait(mut stream, carried) => {
                    let head = self
                        .wait_for_request(&mut stream, carried.keepalive())
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
        for shard in &self.wake {
            shard.notify_waiters();
        }
        self.inner.http_cleanup().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings_of_a_finished_request(keepalive: Option<u64>) -> HttpPersistentSettings {
        let (connection, _client) = tokio::io::duplex(64);
        let mut session = ServerSession::new_http1(Box::new(connection));
        session.set_keepalive(keepalive);
        session.set_keepalive_reuses_remaining(Some(7));
        HttpPersistentSettings::for_session(&session)
    }

    fn view(keepalive: Option<u64>, pipelined: bool) -> Option<SettingsView> {
        Some(SettingsView {
            keepalive,
            pipelined,
        })
    }

    #[test]
    fn keepalive_and_pipelined_bytes_are_read_from_the_persistent_settings() {
        for keepalive in [Some(75), Some(0), None, Some(u64::MAX)] {
            let mut settings = settings_of_a_finished_request(keepalive);
            assert_eq!(SettingsView::of(&settings), view(keepalive, false));
            settings.set_user_context(Box::new("context"));
            assert_eq!(SettingsView::of(&settings), view(keepalive, false));
            settings.set_pipelined_prefix(BytesMut::from(&b"GET /next HTTP/1.1\r\n"[..]));
            assert_eq!(SettingsView::of(&settings), view(keepalive, true));
        }
    }

    #[test]
    fn carried_settings_reach_the_next_session() {
        let mut settings = settings_of_a_finished_request(Some(75));
        settings.set_user_context(Box::new("context"));
        let carried = Carried::Settings {
            settings,
            keepalive: Some(75),
        };
        assert_eq!(carried.keepalive(), Some(75));
        let (connection, _client) = tokio::io::duplex(64);
        let mut session = carried.into_session(Box::new(connection));
        assert_eq!(session.get_keepalive(), Some(75));
        // One reuse was spent on the request that handed the settings over.
        assert_eq!(session.get_keepalive_reuses_remaining(), Some(6));
        assert!(session.take_connection_user_context().is_some());
    }
}
