//! Response compression: a Pingora downstream module that encodes response bodies with
//! Pingora's own encoders (gzip, brotli, zstd), as the `compression` plugin decided.
//!
//! Pingora's `ResponseCompression` module chooses the coding from the first token of
//! `Accept-Encoding` (no q-values) and compresses a fixed list of media types; the plugin's
//! contract (q-values, configured types and minimum length) needs its own decision, so this
//! module makes it and uses only Pingora's encoders. As a downstream module it runs after
//! the cache (stored responses stay uncompressed, hits are compressed per client), after the
//! `response_filter` hooks, and it finishes the encoded stream when the response ends.
//!
//! Brotli is encoded with the `brotli` crate directly: Pingora 0.9's brotli encoder ends a
//! body with a flush instead of finishing the stream (cloudflare/pingora#1013), and strict
//! decoders reject such bodies.
//!
//! A response is compressed when all hold: the plugin chose a coding the client accepts; the
//! response has a body and a status other than 204, 206 or 304; no `Content-Encoding` (other
//! than `identity`) and no `Content-Range`; no `Cache-Control: no-transform`; a
//! `Content-Type` the policy lists; a `Content-Length`, if any, of at least `min_length`.
//! Whenever the response is of that kind, `Vary: Accept-Encoding` is added, compressed or not.

use bytes::Bytes;
use gatehouse_plugins::cache_policy::{CompressRequest, CompressionPolicy, Encoding};
use gatehouse_plugins::RequestContext;
use http::header::{
    HeaderValue, ACCEPT_RANGES, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_RANGE,
    CONTENT_TYPE, ETAG, TRANSFER_ENCODING, VARY,
};
use pingora_core::modules::http::{HttpModule, HttpModuleBuilder, HttpModules, Module};
use pingora_core::protocols::http::compression::{Algorithm, Encode, COMPRESSION_ERROR};
use pingora_error::{OrErr, Result};
use pingora_http::ResponseHeader;
use pingora_proxy::Session;
use std::any::Any;
use std::io::Write;
use std::time::{Duration, Instant};

/// The per-request module: idle until [`configure`] hands it a decision.
#[derive(Default)]
pub struct CompressionModule {
    plan: Option<CompressRequest>,
    encoder: Option<Box<dyn Encode + Send + Sync>>,
}

struct Builder;

impl HttpModuleBuilder for Builder {
    fn init(&self) -> Module {
        Box::new(CompressionModule::default())
    }

    fn order(&self) -> i16 {
        // After other modules: encoding is the last transformation of the body.
        i16::MIN / 2
    }
}

/// Adds the compression module to the proxy's downstream modules
/// (`ProxyHttp::init_downstream_modules`).
pub fn init_modules(modules: &mut HttpModules) {
    modules.add_module(Box::new(Builder));
}

/// Hands the compression decision of the request in `ctx`, if any, to the module; called from
/// `response_filter`, before the module sees the response header.
pub fn configure(session: &mut Session, ctx: &RequestContext) {
    let Some(plan) = ctx.state::<CompressRequest>() else {
        return;
    };
    if let Some(m) = session
        .downstream_modules_ctx
        .get_mut::<CompressionModule>()
    {
        m.plan = Some(plan.clone());
    }
}

/// A brotli encoder that finishes its stream at the end of the body.
struct BrotliEncoder {
    writer: Option<brotli::CompressorWriter<Vec<u8>>>,
    total_in: usize,
    total_out: usize,
    duration: Duration,
}

impl BrotliEncoder {
    fn new(quality: u32) -> Self {
        BrotliEncoder {
            // 4KiB internal buffer, a 512KiB window (lgwin 19), as Pingora's own encoder.
            writer: Some(brotli::CompressorWriter::new(Vec::new(), 4096, quality, 19)),
            total_in: 0,
            total_out: 0,
            duration: Duration::ZERO,
        }
    }
}

impl Encode for BrotliEncoder {
    fn encode(&mut self, input: &[u8], end: bool) -> Result<Bytes> {
        let start = Instant::now();
        let Some(writer) = self.writer.as_mut() else {
            return Ok(Bytes::new());
        };
        self.total_in += input.len();
        writer
            .write_all(input)
            .or_err(COMPRESSION_ERROR, "while compressing brotli")?;
        let out = if end {
            // Finishing writes the last meta-block: the stream is complete.
            self.writer
                .take()
                .map(|w| w.into_inner())
                .unwrap_or_default()
        } else {
            std::mem::take(writer.get_mut())
        };
        self.total_out += out.len();
        self.duration += start.elapsed();
        Ok(out.into())
    }

    fn stat(&self) -> (&'static str, usize, usize, Duration) {
        ("brotli", self.total_in, self.total_out, self.duration)
    }
}

fn encoder(e: Encoding, level: u32) -> Option<Box<dyn Encode + Send + Sync>> {
    match e {
        Encoding::Gzip => Algorithm::Gzip.compressor(level),
        Encoding::Brotli => Some(Box::new(BrotliEncoder::new(level))),
        Encoding::Zstd => Algorithm::Zstd.compressor(level),
    }
}

/// Whether `resp` is of the kind the policy compresses (see the module docs).
pub fn eligible(resp: &ResponseHeader, policy: &CompressionPolicy) -> bool {
    let h = &resp.headers;
    if matches!(resp.status.as_u16(), 204 | 206 | 304) || resp.status.is_informational() {
        return false;
    }
    let encoded = h
        .get(CONTENT_ENCODING)
        .is_some_and(|v| !v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"identity"));
    if encoded || h.contains_key(CONTENT_RANGE) {
        return false;
    }
    let no_transform = h.get_all(CACHE_CONTROL).iter().any(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .any(|d| d.trim_ascii().eq_ignore_ascii_case(b"no-transform"))
    });
    if no_transform {
        return false;
    }
    let typed = h
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| policy.compresses_type(ct));
    if !typed {
        return false;
    }
    let length = h
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    length.is_none_or(|n| n >= policy.min_length)
}

fn add_vary(resp: &mut ResponseHeader) -> Result<()> {
    let present = resp.headers.get_all(VARY).iter().any(|v| {
        v.as_bytes().split(|&b| b == b',').any(|n| {
            let n = n.trim_ascii();
            n == b"*" || n.eq_ignore_ascii_case(b"accept-encoding")
        })
    });
    if !present {
        resp.append_header(VARY, "Accept-Encoding")?;
    }
    Ok(())
}

/// A strong `ETag` is made weak: the encoded bytes are another representation (RFC 9110
/// §8.8.1). A malformed one is dropped.
fn weaken_etag(resp: &mut ResponseHeader) -> Result<()> {
    let Some(etag) = resp.headers.get(ETAG) else {
        return Ok(());
    };
    let bytes = etag.as_bytes();
    if bytes.starts_with(b"W/") {
        return Ok(());
    }
    if bytes.starts_with(b"\"") {
        let weak = HeaderValue::from_bytes(&[b"W/", bytes].concat()).map_err(|e| {
            pingora_error::Error::because(pingora_error::ErrorType::InternalError, "etag", e)
        })?;
        resp.insert_header(ETAG, weak)?;
    } else {
        resp.remove_header(&ETAG);
    }
    Ok(())
}

#[async_trait::async_trait]
impl HttpModule for CompressionModule {
    async fn response_header_filter(
        &mut self,
        resp: &mut ResponseHeader,
        end_of_stream: bool,
    ) -> Result<()> {
        if resp.status.is_informational() {
            // Not the final response: decide on the next header.
            return Ok(());
        }
        let Some(plan) = self.plan.take() else {
            return Ok(());
        };
        if !eligible(resp, &plan.policy) {
            return Ok(());
        }
        add_vary(resp)?;
        let Some(encoding) = plan.encoding else {
            return Ok(());
        };
        if end_of_stream {
            return Ok(());
        }
        let Some(encoder) = encoder(encoding, plan.policy.level(encoding)) else {
            return Ok(());
        };
        resp.insert_header(CONTENT_ENCODING, encoding.token())?;
        // The encoded length is not known ahead: stream it.
        resp.remove_header(&CONTENT_LENGTH);
        resp.remove_header(&ACCEPT_RANGES);
        resp.insert_header(TRANSFER_ENCODING, "chunked")?;
        weaken_etag(resp)?;
        self.encoder = Some(encoder);
        Ok(())
    }

    fn response_body_filter(
        &mut self,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
    ) -> Result<()> {
        let Some(encoder) = self.encoder.as_mut() else {
            return Ok(());
        };
        let input = body.as_deref().unwrap_or(&[]);
        let out = encoder.encode(input, end_of_stream)?;
        if end_of_stream {
            self.encoder = None;
        }
        *body = (!out.is_empty() || end_of_stream).then_some(out);
        Ok(())
    }

    fn response_done_filter(&mut self) -> Result<Option<Bytes>> {
        // The response ended without a body chunk marked as the last: finish the stream.
        match self.encoder.take() {
            Some(mut encoder) => Ok(Some(encoder.encode(&[], true)?)),
            None => Ok(None),
        }
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::sync::Arc;

    fn policy() -> Arc<CompressionPolicy> {
        Arc::new(CompressionPolicy {
            types: vec!["application/json".into()],
            type_prefixes: vec!["text/".into()],
            any_type: false,
            min_length: 100,
            gzip_level: 6,
            brotli_level: 4,
            zstd_level: 3,
        })
    }

    fn resp(status: u16, headers: &[(&str, &str)]) -> ResponseHeader {
        let mut r = ResponseHeader::build(status, None).unwrap();
        for (n, v) in headers {
            r.append_header(n.to_string(), *v).unwrap();
        }
        r
    }

    fn module(encoding: Option<Encoding>) -> CompressionModule {
        CompressionModule {
            plan: Some(CompressRequest {
                policy: policy(),
                encoding,
            }),
            encoder: None,
        }
    }

    #[test]
    fn eligibility() {
        let p = policy();
        let ok = |h: &[(&str, &str)]| eligible(&resp(200, h), &p);
        assert!(ok(&[
            ("content-type", "text/html"),
            ("content-length", "100")
        ]));
        assert!(
            ok(&[("content-type", "application/json")]),
            "unknown length"
        );
        assert!(!ok(&[
            ("content-type", "text/html"),
            ("content-length", "99")
        ]));
        assert!(!ok(&[("content-type", "image/png")]));
        assert!(!ok(&[]));
        assert!(!ok(&[
            ("content-type", "text/html"),
            ("content-encoding", "gzip")
        ]));
        assert!(ok(&[
            ("content-type", "text/html"),
            ("content-encoding", "identity")
        ]));
        assert!(!ok(&[
            ("content-type", "text/html"),
            ("cache-control", "public, no-transform")
        ]));
        assert!(!eligible(&resp(206, &[("content-type", "text/html")]), &p));
        assert!(!eligible(&resp(304, &[("content-type", "text/html")]), &p));
    }

    #[tokio::test]
    async fn gzip_stream_decodes_to_the_original() {
        let mut m = module(Some(Encoding::Gzip));
        let mut h = resp(
            200,
            &[
                ("content-type", "text/plain"),
                ("content-length", "6000"),
                ("etag", "\"v1\""),
                ("vary", "Origin"),
            ],
        );
        m.response_header_filter(&mut h, false).await.unwrap();
        assert_eq!(h.headers.get("content-encoding").unwrap(), "gzip");
        assert!(h.headers.get("content-length").is_none());
        assert_eq!(h.headers.get("etag").unwrap(), "W/\"v1\"");
        let vary: Vec<_> = h.headers.get_all("vary").iter().collect();
        assert_eq!(vary, ["Origin", "Accept-Encoding"]);
        let original: Vec<u8> = b"hello compression "
            .iter()
            .copied()
            .cycle()
            .take(6000)
            .collect();
        let mut wire = Vec::new();
        for (i, chunk) in original.chunks(1000).enumerate() {
            let mut body = Some(Bytes::copy_from_slice(chunk));
            m.response_body_filter(&mut body, false).unwrap();
            if let Some(b) = body {
                assert!(!b.is_empty(), "chunk {i}: no empty chunk is written");
                wire.extend_from_slice(&b);
            }
        }
        wire.extend_from_slice(&m.response_done_filter().unwrap().unwrap());
        assert!(m.response_done_filter().unwrap().is_none());
        let mut decoded = Vec::new();
        flate2::read::GzDecoder::new(&wire[..])
            .read_to_end(&mut decoded)
            .unwrap();
        assert_eq!(decoded, original);
        assert!(wire.len() < original.len() / 5);
    }

    #[test]
    fn brotli_streams_are_finished() {
        let original: Vec<u8> = b"brotli ".iter().copied().cycle().take(50_000).collect();
        let mut enc = BrotliEncoder::new(4);
        let mut wire = Vec::new();
        for chunk in original.chunks(7000) {
            wire.extend_from_slice(&enc.encode(chunk, false).unwrap());
        }
        wire.extend_from_slice(&enc.encode(&[], true).unwrap());
        assert!(enc.encode(b"late", true).unwrap().is_empty());
        let mut decoded = Vec::new();
        // The decoder fails on a stream without its last meta-block.
        brotli::Decompressor::new(&wire[..], 4096)
            .read_to_end(&mut decoded)
            .unwrap();
        assert_eq!(decoded, original);
    }

    #[tokio::test]
    async fn no_accepted_coding_still_varies() {
        let mut m = module(None);
        let mut h = resp(200, &[("content-type", "text/plain")]);
        m.response_header_filter(&mut h, false).await.unwrap();
        assert!(h.headers.get("content-encoding").is_none());
        assert_eq!(h.headers.get("vary").unwrap(), "Accept-Encoding");
        let mut body = Some(Bytes::from_static(b"as is"));
        m.response_body_filter(&mut body, true).unwrap();
        assert_eq!(body.unwrap(), "as is");
    }

    #[tokio::test]
    async fn untouched_when_not_eligible_or_unconfigured() {
        let mut m = module(Some(Encoding::Brotli));
        let mut h = resp(
            200,
            &[("content-type", "image/png"), ("content-length", "5000")],
        );
        m.response_header_filter(&mut h, false).await.unwrap();
        assert!(h.headers.get("vary").is_none());
        assert_eq!(h.headers.get("content-length").unwrap(), "5000");
        let mut idle = CompressionModule::default();
        let mut h = resp(200, &[("content-type", "text/plain")]);
        idle.response_header_filter(&mut h, false).await.unwrap();
        assert!(h.headers.get("vary").is_none());
    }
}
