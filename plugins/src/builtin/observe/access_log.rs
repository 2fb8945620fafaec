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
use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
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

/// The buffer a line is formatted in, and the most a thread keeps between lines.
const LINE_CAPACITY: usize = 512;
const LINE_CAPACITY_KEPT: usize = 16 << 10;

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

/// Writes `s` as a JSON string. Only ASCII needs escaping, so runs of other bytes are copied
/// whole (a UTF-8 sequence never contains an ASCII byte).
fn push_str(out: &mut String, s: &str) {
    out.push('"');
    let mut copied = 0;
    for (i, &byte) in s.as_bytes().iter().enumerate() {
        let escape = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[copied..i]);
        copied = i + 1;
        if escape.is_empty() {
            let _ = write!(out, "\\u{byte:04x}");
        } else {
            out.push_str(escape);
        }
    }
    out.push_str(&s[copied..]);
    out.push('"');
}

/// Writes a duration in milliseconds with three decimals (to the microsecond, rounded).
fn push_millis(out: &mut String, d: Duration) {
    let micros = (d.as_nanos() + 500) / 1000;
    push_number(out, micros / 1000);
    push_fraction(out, (micros % 1000) as u16);
}

/// Writes `.` and a number below 1000 as three digits.
fn push_fraction(out: &mut String, thousandths: u16) {
    out.push('.');
    for digit in [thousandths / 100, thousandths / 10 % 10, thousandths % 10] {
        out.push(char::from(b'0' + digit as u8));
    }
}

/// Writes an address as `Display` does (`192.0.2.1`, `2001:db8::1`); an IPv4 one without
/// the formatting machinery, which costs more than the rest of the line.
fn push_ip(out: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                push_number(out, octet);
            }
        }
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

fn push_number(out: &mut String, n: impl itoa::Integer) {
    out.push_str(itoa::Buffer::new().format(n));
}

/// Writes the current time in RFC 3339 with milliseconds (`2026-12-02T13:42:21.123Z`). The
/// calendar part changes once a second; each thread keeps it for the second it was made in.
fn push_time(out: &mut String, now: SystemTime) {
    /// `YYYY-MM-DDTHH:MM:SS`, and the Unix second it shows.
    struct SecondText {
        second: u64,
        text: String,
    }
    thread_local! {
        static SECOND: RefCell<SecondText> = const {
            RefCell::new(SecondText { second: u64::MAX, text: String::new() })
        };
    }
    let since_epoch = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    SECOND.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.second != since_epoch.as_secs() {
            let mut text = humantime::format_rfc3339_seconds(now).to_string();
            text.truncate(text.trim_end_matches('Z').len());
            *cached = SecondText {
                second: since_epoch.as_secs(),
                text,
            };
        }
        out.push_str(&cached.text);
    });
    push_fraction(out, since_epoch.subsec_millis() as u16);
    out.push('Z');
}

fn push_opt(out: &mut String, s: Option<&str>) {
    match s {
        Some(s) => push_str(out, s),
        None => out.push_str("null"),
    }
}

/// Formats the log line of a finished request (exposed for tests and custom sinks).
pub fn format_line(req: &RequestHeader, status: u16, ctx: &RequestContext) -> String {
    let mut line = String::with_capacity(384);
    write_line(&mut line, req, status, ctx);
    line
}

/// Appends the log line of a finished request to `l`.
fn write_line(l: &mut String, req: &RequestHeader, status: u16, ctx: &RequestContext) {
    // Timestamps, addresses and numbers need no JSON escaping: they are written in place.
    l.push_str("{\"time\":\"");
    push_time(l, SystemTime::now());
    l.push('"');
    l.push_str(",\"request_id\":");
    push_opt(l, ctx.request_id.as_deref());
    l.push_str(",\"client\":");
    match ctx.client_ip {
        Some(ip) => {
            l.push('"');
            push_ip(l, ip);
            l.push('"');
        }
        None => l.push_str("null"),
    }
    l.push_str(",\"method\":");
    push_str(l, req.method.as_str());
    l.push_str(",\"host\":");
    let host = req.uri.authority().map(|a| a.as_str()).or_else(|| {
        req.headers
            .get(http::header::HOST)
            .and_then(|v| v.to_str().ok())
    });
    push_opt(l, host);
    l.push_str(",\"uri\":");
    push_str(l, req.uri.path_and_query().map_or("/", |p| p.as_str()));
    l.push_str(",\"status\":");
    push_number(l, status);
    l.push_str(",\"bytes_received\":");
    push_number(l, ctx.request_body_bytes);
    l.push_str(",\"bytes_sent\":");
    push_number(l, ctx.response_body_bytes);
    l.push_str(",\"duration_ms\":");
    push_millis(l, ctx.started.elapsed());
    l.push_str(",\"upstream_ms\":");
    match ctx.upstream_response_time {
        Some(t) => push_millis(l, t),
        None => l.push_str("null"),
    }
    l.push_str(",\"upstream\":");
    match ctx.upstream_addr {
        Some(SocketAddr::V4(a)) => {
            l.push('"');
            push_ip(l, IpAddr::V4(*a.ip()));
            l.push(':');
            push_number(l, a.port());
            l.push('"');
        }
        Some(a) => {
            let _ = write!(l, "\"{a}\"");
        }
        None => l.push_str("null"),
    }
    l.push_str(",\"route\":");
    push_opt(l, ctx.route_id.as_deref());
    l.push_str(",\"service\":");
    push_opt(l, ctx.service_id.as_deref());
    l.push_str(",\"consumer\":");
    push_opt(l, ctx.consumer.as_ref().map(|c| c.id.as_str()));
    l.push_str(",\"cache\":");
    push_opt(l, ctx.cache_status);
    l.push_str(",\"trace_id\":");
    match ctx.state::<super::opentelemetry::TraceIds>() {
        Some(t) => push_str(l, &t.trace_id_hex()),
        None => l.push_str("null"),
    }
    l.push_str("}\n");
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
        thread_local! {
            /// Each thread formats its lines in one buffer, kept between requests.
            static LINE: RefCell<String> = RefCell::new(String::with_capacity(LINE_CAPACITY));
        }
        let pushed = LINE.with(|cell| {
            let mut line = cell.borrow_mut();
            line.clear();
            write_line(&mut line, req, status, ctx);
            let pushed = self.sink.push(&line);
            if line.capacity() > LINE_CAPACITY_KEPT {
                // A very long line (a long URI) does not keep its buffer.
                *line = String::with_capacity(LINE_CAPACITY);
            }
            pushed
        });
        if !pushed {
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

        ctx.client_ip = Some("192.0.2.7".parse().unwrap());
        ctx.upstream_addr = Some("[2001:db8::2]:443".parse().unwrap());
        let v: serde_json::Value = serde_json::from_str(&format_line(&req, 200, &ctx)).unwrap();
        assert_eq!(v["client"], "192.0.2.7");
        assert_eq!(v["upstream"], "[2001:db8::2]:443");
    }

    #[test]
    fn fields_are_written_as_json_expects_them() {
        let text = |f: &dyn Fn(&mut String)| {
            let mut out = String::new();
            f(&mut out);
            out
        };
        let millis = |d| text(&|o| push_millis(o, d));
        assert_eq!(millis(Duration::ZERO), "0.000");
        assert_eq!(millis(Duration::from_micros(1_234_567)), "1234.567");
        assert_eq!(millis(Duration::from_nanos(1_499)), "0.001");
        assert_eq!(millis(Duration::from_nanos(999_500)), "1.000");

        for ip in [
            "0.0.0.0",
            "192.0.2.255",
            "10.20.3.4",
            "2001:db8::1",
            "::ffff:192.0.2.1",
        ] {
            let parsed: IpAddr = ip.parse().unwrap();
            assert_eq!(text(&|o| push_ip(o, parsed)), ip);
        }

        let quoted = |s| text(&|o| push_str(o, s));
        assert_eq!(quoted("plain/ü→"), "\"plain/ü→\"");
        assert_eq!(quoted("a\"b\\c\n\u{1}é\t"), "\"a\\\"b\\\\c\\n\\u0001é\\t\"");
        let v: serde_json::Value = serde_json::from_str(&quoted("x\u{1f}\r\"y")).unwrap();
        assert_eq!(v, "x\u{1f}\r\"y");

        // The cached calendar part is right across seconds, and matches humantime's own text.
        for t in [
            1_700_000_000_123u64,
            1_700_000_000_999,
            1_700_000_001_000,
            951_782_400_007,
        ] {
            let now = SystemTime::UNIX_EPOCH + Duration::from_millis(t);
            let expected = humantime::format_rfc3339_millis(now).to_string();
            assert_eq!(text(&|o| push_time(o, now)), expected);
        }
    }
}
