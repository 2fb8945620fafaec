//! `access-log`: one JSON line per request, to stdout or a file.
//!
//! Lines are formatted on the request path and appended to a shared in-memory buffer; a
//! writer thread per file takes the whole buffer every [`FLUSH_INTERVAL`] (or as soon as it
//! holds [`FLUSH_BYTES`]) and writes it with one system call. A request never waits for the
//! disk and never wakes another thread: handing each line over on its own would cost a
//! thread switch per request. When `buffer` lines are pending (a disk that does not keep
//! up), new lines are dropped and counted (`gatehouse_access_log_dropped_total`). Files are
//! opened for append; [`reopen_all`] (the gateway calls it on SIGUSR1) makes every writer
//! reopen its file, for logrotate.

use crate::context::RequestContext;
use crate::factory::{ConfigError, TypedFactory};
use crate::plugin::{Phases, Plugin};
use async_trait::async_trait;
use pingora_http::RequestHeader;
use serde::Deserialize;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, LazyLock, Mutex};
use std::time::{Duration, SystemTime};

/// Config of `access-log`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLogConfig {
    /// `-` for standard output (default), or a file path (appended to).
    #[serde(default = "default_path")]
    pub path: String,
    /// Fraction of requests logged, in (0, 1] (default 1: every request).
    #[serde(default = "default_sample")]
    pub sample: f64,
    /// Lines queued for the writer before new ones are dropped (default 16384).
    #[serde(default = "default_buffer")]
    pub buffer: usize,
}

fn default_path() -> String {
    "-".into()
}
fn default_sample() -> f64 {
    1.0
}
fn default_buffer() -> usize {
    16384
}

static REOPEN_GENERATION: AtomicU64 = AtomicU64::new(0);

/// Makes every access-log writer reopen its file (after logrotate moved it).
pub fn reopen_all() {
    REOPEN_GENERATION.fetch_add(1, Ordering::SeqCst);
}

static DROPPED: LazyLock<Option<prometheus::IntCounter>> = LazyLock::new(|| {
    prometheus::register_int_counter!(
        "gatehouse_access_log_dropped_total",
        "Access log lines dropped because the writer fell behind."
    )
    .ok()
});

/// How often the writer writes what is pending.
const FLUSH_INTERVAL: Duration = Duration::from_millis(100);
/// Pending bytes that make the writer write at once.
const FLUSH_BYTES: usize = 64 << 10;

/// Lines waiting for the writer.
#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    lines: usize,
}

/// One log destination: the pending lines, and its writer thread, started by the first line
/// (so it runs in the serving process, also when the gateway detaches with `-d` after
/// loading its config).
struct Sink {
    path: String,
    /// Most lines pending before new ones are dropped (`buffer`).
    capacity: usize,
    pending: Mutex<Pending>,
    /// Signalled when [`FLUSH_BYTES`] are pending.
    full: Condvar,
    started: std::sync::Once,
}

impl Sink {
    fn ensure_writer(self: &Arc<Self>) {
        self.started.call_once(|| {
            let sink = self.clone();
            if let Err(e) = std::thread::Builder::new()
                .name("access-log".into())
                .spawn(move || sink.writer_loop())
            {
                log::error!("access-log: cannot start the writer: {e}");
            }
        });
    }

    /// Queues `line`; false when `capacity` lines are pending already.
    fn push(&self, line: &str) -> bool {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if p.lines >= self.capacity {
            return false;
        }
        p.bytes.extend_from_slice(line.as_bytes());
        p.lines += 1;
        let wake = p.bytes.len() >= FLUSH_BYTES;
        drop(p);
        if wake {
            self.full.notify_one();
        }
        true
    }

    fn writer_loop(&self) {
        let mut generation = REOPEN_GENERATION.load(Ordering::SeqCst);
        let mut out = open_logged(&self.path);
        // Two buffers swapped in turn: the requests fill one while this thread writes the
        // other, and neither is reallocated once grown.
        let mut batch = Vec::new();
        loop {
            {
                let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
                if p.bytes.len() < FLUSH_BYTES {
                    p = self
                        .full
                        .wait_timeout(p, FLUSH_INTERVAL)
                        .map(|(p, _)| p)
                        .unwrap_or_else(|e| e.into_inner().0);
                }
                std::mem::swap(&mut p.bytes, &mut batch);
                p.lines = 0;
            }
            let now = REOPEN_GENERATION.load(Ordering::SeqCst);
            if now != generation {
                generation = now;
                out = open_logged(&self.path);
            }
            if let (Some(o), false) = (out.as_mut(), batch.is_empty()) {
                if let Err(e) = o.write_all(&batch).and_then(|()| o.flush()) {
                    log::warn!("access-log: cannot write {}: {e}", self.path);
                }
            }
            batch.clear();
        }
    }
}

type SinkKey = (String, usize);

/// Writers by path, shared by every plugin instance and kept across reloads.
static SINKS: LazyLock<Mutex<HashMap<SinkKey, Arc<Sink>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

fn open(path: &str) -> std::io::Result<Box<dyn Write + Send>> {
    if path == "-" {
        return Ok(Box::new(std::io::stdout()));
    }
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    Ok(Box::new(f))
}

fn open_logged(path: &str) -> Option<Box<dyn Write + Send>> {
    open(path)
        .map_err(|e| log::error!("access-log: cannot open {path}: {e}"))
        .ok()
}

fn sink(path: &str, buffer: usize) -> Result<Arc<Sink>, ConfigError> {
    let mut sinks = SINKS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(s) = sinks.get(&(path.to_string(), buffer)) {
        return Ok(s.clone());
    }
    // Fail at config load, not silently later, if the file cannot be opened.
    open(path).map_err(|e| ConfigError::at("path", format!("cannot open {path}: {e}")))?;
    let s = Arc::new(Sink {
        path: path.to_string(),
        capacity: buffer,
        pending: Mutex::new(Pending::default()),
        full: Condvar::new(),
        started: std::sync::Once::new(),
    });
    sinks.insert((path.to_string(), buffer), s.clone());
    Ok(s)
}

/// The `access-log` plugin.
pub struct AccessLog {
    sink: Arc<Sink>,
    /// Keep a request when `hash < threshold` (u64 scale).
    threshold: u64,
    counter: AtomicU64,
}

/// Priority of `access-log`: its only hook is `logging`, which sees the finished request.
pub const PRIORITY: i32 = 400;

/// The factory for `access-log`.
pub fn factory() -> impl crate::PluginFactory {
    TypedFactory::new("access-log", PRIORITY, |c: AccessLogConfig, _env| {
        if !(c.sample > 0.0 && c.sample <= 1.0) {
            return Err(ConfigError::at(
                "sample",
                "expected a fraction in (0, 1], e.g. 0.1",
            ));
        }
        if c.buffer == 0 {
            return Err(ConfigError::at("buffer", "must be at least 1"));
        }
        Ok(AccessLog {
            sink: sink(&c.path, c.buffer)?,
            threshold: if c.sample >= 1.0 {
                u64::MAX
            } else {
                (c.sample * u64::MAX as f64) as u64
            },
            counter: AtomicU64::new(0),
        })
    })
}

fn push_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn push_opt(out: &mut String, s: Option<&str>) {
    match s {
        Some(s) => push_str(out, s),
        None => out.push_str("null"),
    }
}

/// Formats the log line of a finished request (exposed for tests and custom sinks).
pub fn format_line(req: &RequestHeader, status: u16, ctx: &RequestContext) -> String {
    let mut l = String::with_capacity(384);
    // Timestamps, addresses and numbers need no JSON escaping: they are written in place.
    let _ = write!(
        l,
        "{{\"time\":\"{}\"",
        humantime::format_rfc3339_millis(SystemTime::now())
    );
    l.push_str(",\"request_id\":");
    push_opt(&mut l, ctx.request_id.as_deref());
    l.push_str(",\"client\":");
    match ctx.client_ip {
        Some(ip) => {
            let _ = write!(l, "\"{ip}\"");
        }
        None => l.push_str("null"),
    }
    l.push_str(",\"method\":");
    push_str(&mut l, req.method.as_str());
    l.push_str(",\"host\":");
    let host = req.uri.authority().map(|a| a.as_str()).or_else(|| {
        req.headers
            .get(http::header::HOST)
            .and_then(|v| v.to_str().ok())
    });
    push_opt(&mut l, host);
    l.push_str(",\"uri\":");
    push_str(&mut l, req.uri.path_and_query().map_or("/", |p| p.as_str()));
    let _ = write!(
        l,
        ",\"status\":{status},\"bytes_received\":{},\"bytes_sent\":{},\"duration_ms\":{:.3}",
        ctx.request_body_bytes,
        ctx.response_body_bytes,
        ctx.started.elapsed().as_secs_f64() * 1000.0
    );
    l.push_str(",\"upstream_ms\":");
    match ctx.upstream_response_time {
        Some(t) => {
            let _ = write!(l, "{:.3}", t.as_secs_f64() * 1000.0);
        }
        None => l.push_str("null"),
    }
    l.push_str(",\"upstream\":");
    match ctx.upstream_addr {
        Some(a) => {
            let _ = write!(l, "\"{a}\"");
        }
        None => l.push_str("null"),
    }
    l.push_str(",\"route\":");
    push_opt(&mut l, ctx.route_id.as_deref());
    l.push_str(",\"service\":");
    push_opt(&mut l, ctx.service_id.as_deref());
    l.push_str(",\"consumer\":");
    push_opt(&mut l, ctx.consumer.as_ref().map(|c| c.id.as_str()));
    l.push_str(",\"cache\":");
    push_opt(&mut l, ctx.cache_status);
    l.push_str(",\"trace_id\":");
    match ctx.state::<super::opentelemetry::TraceIds>() {
        Some(t) => push_str(&mut l, &t.trace_id_hex()),
        None => l.push_str("null"),
    }
    l.push_str("}\n");
    l
}

#[async_trait]
impl Plugin for AccessLog {
    fn name(&self) -> &str {
        "access-log"
    }

    fn priority(&self) -> i32 {
        PRIORITY
    }

    fn phases(&self) -> Phases {
        Phases::LOGGING
    }

    async fn logging(&self, req: &RequestHeader, status: u16, ctx: &mut RequestContext) {
        if self.threshold != u64::MAX {
            // A cheap, well-spread sequence (SplitMix64 of a counter) decides the sample.
            let mut z = self
                .counter
                .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            if (z ^ (z >> 31)) >= self.threshold {
                return;
            }
        }
        self.sink.ensure_writer();
        let line = format_line(req, status, ctx);
        if !self.sink.push(&line) {
            if let Some(d) = DROPPED.as_ref() {
                d.inc();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::request;

    #[test]
    fn lines_are_json() {
        let req = request("GET", "/a?b=c").header("host", "h.test").build();
        let mut ctx = RequestContext::new();
        ctx.route_id = Some(Arc::from("r1"));
        ctx.request_id = Some("id-\"1\"\n".into());
        let line = format_line(&req, 200, &ctx);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["uri"], "/a?b=c");
        assert_eq!(v["host"], "h.test");
        assert_eq!(v["route"], "r1");
        assert_eq!(v["status"], 200);
        assert_eq!(v["request_id"], "id-\"1\"\n");
        assert!(v["consumer"].is_null());
        assert!(v["client"].is_null());
        assert!(line.ends_with('\n'));

        ctx.client_ip = Some("2001:db8::1".parse().unwrap());
        ctx.upstream_addr = Some("127.0.0.1:8080".parse().unwrap());
        let v: serde_json::Value = serde_json::from_str(&format_line(&req, 502, &ctx)).unwrap();
        assert_eq!(v["client"], "2001:db8::1");
        assert_eq!(v["upstream"], "127.0.0.1:8080");
        assert_eq!(v["status"], 502);
        let time = v["time"].as_str().unwrap();
        assert!(humantime::parse_rfc3339(time).is_ok(), "{time}");
    }
}
