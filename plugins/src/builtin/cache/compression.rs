//! `compression`: compress response bodies with gzip, brotli or zstd for clients that accept
//! it, honouring `Accept-Encoding` q-values.
//!
//! The plugin picks the coding per request (from the client's `Accept-Encoding` and the
//! configured `algorithms`) and leaves a [`CompressRequest`] in the context; the engine
//! decides per response (content type, length, an existing `Content-Encoding`) and encodes
//! the body on its way out, after the cache, so stored responses stay uncompressed.

use crate::cache_policy::{CompressRequest, CompressionPolicy, Encoding};
use crate::context::RequestContext;
use crate::factory::{ConfigError, TypedFactory};
use crate::plugin::{Flow, Phases, Plugin};
use crate::units::ByteSize;
use async_trait::async_trait;
use http::header::ACCEPT_ENCODING;
use http::Method;
use pingora_error::Result;
use pingora_http::RequestHeader;
use serde::Deserialize;
use std::sync::Arc;

/// Config of `compression`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompressionConfig {
    /// Codings offered, in the gateway's order of preference when the client weighs several
    /// alike: `br`, `gzip`, `zstd` (default `[br, gzip]`).
    pub algorithms: Option<Vec<String>>,
    /// Media types compressed: exact (`application/json`), a family (`text/*`) or `*`.
    pub types: Option<Vec<String>>,
    /// Responses whose `Content-Length` is below this are not compressed (default 256).
    pub min_length: Option<ByteSize>,
    /// Levels per coding.
    #[serde(default)]
    pub level: LevelConfig,
}

/// `level`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LevelConfig {
    /// gzip level, 1-9 (default 6).
    pub gzip: Option<u32>,
    /// Brotli quality, 1-11 (default 4).
    pub br: Option<u32>,
    /// Zstandard level, 1-19 (default 3).
    pub zstd: Option<u32>,
}

/// The media types compressed by default.
pub const DEFAULT_TYPES: &[&str] = &[
    "text/html",
    "text/plain",
    "text/css",
    "text/xml",
    "text/javascript",
    "text/csv",
    "application/json",
    "application/javascript",
    "application/xml",
    "application/xhtml+xml",
    "application/problem+json",
    "image/svg+xml",
];

const DEFAULT_MIN_LENGTH: u64 = 256;

/// The `compression` plugin.
pub struct Compression {
    policy: Arc<CompressionPolicy>,
    algorithms: Vec<Encoding>,
}

/// Priority of `compression`: it only records a choice, so its place barely matters; it runs
/// with the transforms.
pub const PRIORITY: i32 = 990;

/// The factory for `compression`.
pub fn factory() -> impl crate::PluginFactory {
    TypedFactory::new("compression", PRIORITY, |c: CompressionConfig, _env| {
        Compression::new(c)
    })
}

fn level(value: Option<u32>, default: u32, max: u32, key: &str) -> Result<u32, ConfigError> {
    match value {
        None => Ok(default),
        Some(v) if (1..=max).contains(&v) => Ok(v),
        Some(v) => Err(ConfigError::at(
            format!("level.{key}"),
            format!("{v} is out of range (1-{max})"),
        )),
    }
}

impl Compression {
    /// Builds the plugin from its config.
    pub fn new(c: CompressionConfig) -> Result<Self, ConfigError> {
        let algorithms = match &c.algorithms {
            None => vec![Encoding::Brotli, Encoding::Gzip],
            Some(list) if list.is_empty() => {
                return Err(ConfigError::at(
                    "algorithms",
                    "must name at least one of br, gzip, zstd",
                ))
            }
            Some(list) => {
                let mut out = Vec::with_capacity(list.len());
                for (i, a) in list.iter().enumerate() {
                    let e = Encoding::from_token(a.trim()).ok_or_else(|| {
                        ConfigError::at(
                            format!("algorithms[{i}]"),
                            format!("unknown coding `{a}`; expected br, gzip or zstd"),
                        )
                    })?;
                    if out.contains(&e) {
                        return Err(ConfigError::at(
                            format!("algorithms[{i}]"),
                            format!("`{a}` is listed twice"),
                        ));
                    }
                    out.push(e);
                }
                out
            }
        };
        let mut types = Vec::new();
        let mut type_prefixes = Vec::new();
        let mut any_type = false;
        let listed: Vec<String> = match &c.types {
            Some(t) if t.is_empty() => {
                return Err(ConfigError::at(
                    "types",
                    "must name at least one media type",
                ))
            }
            Some(t) => t.clone(),
            None => DEFAULT_TYPES.iter().map(|s| s.to_string()).collect(),
        };
        for (i, t) in listed.iter().enumerate() {
            let t = t.trim().to_ascii_lowercase();
            let bad = || {
                ConfigError::at(
                    format!("types[{i}]"),
                    format!(
                        "`{t}` is not a media type; expected e.g. `application/json`, `text/*` or `*`"
                    ),
                )
            };
            if t == "*" || t == "*/*" {
                any_type = true;
                continue;
            }
            let (main, sub) = t.split_once('/').ok_or_else(bad)?;
            let token = |s: &str| {
                !s.is_empty()
                    && s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
            };
            if !token(main) || !(sub == "*" || token(sub)) {
                return Err(bad());
            }
            if sub == "*" {
                type_prefixes.push(format!("{main}/"));
            } else {
                types.push(t);
            }
        }
        let policy = CompressionPolicy {
            types,
            type_prefixes,
            any_type,
            min_length: c.min_length.map_or(DEFAULT_MIN_LENGTH, ByteSize::bytes),
            gzip_level: level(c.level.gzip, 6, 9, "gzip")?,
            brotli_level: level(c.level.br, 4, 11, "br")?,
            zstd_level: level(c.level.zstd, 3, 19, "zstd")?,
        };
        Ok(Compression {
            policy: Arc::new(policy),
            algorithms,
        })
    }
}

/// A q-value in thousandths (`q=0.5` is 500); `None` when it is not a valid one.
fn qvalue(s: &str) -> Option<u16> {
    let s = s.trim();
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut thousandths: u16 = 0;
    for (i, b) in frac.bytes().enumerate() {
        thousandths += u16::from(b - b'0') * [100, 10, 1][i];
    }
    match int {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// The coding among `offered` that the client's `Accept-Encoding` weighs highest (RFC 9110
/// §12.5.3), ties going to the earlier in `offered`. `None` when there is no header or it
/// accepts none of them (`q=0`, or not listed and no `*`).
pub fn choose(req: &RequestHeader, offered: &[Encoding]) -> Option<Encoding> {
    let mut weights: [Option<u16>; 3] = [None; 3];
    let mut star: Option<u16> = None;
    let mut seen = false;
    for value in req.headers.get_all(ACCEPT_ENCODING) {
        seen = true;
        let Ok(value) = value.to_str() else {
            continue;
        };
        for element in value.split(',') {
            let mut parts = element.split(';');
            let coding = parts.next().unwrap_or("").trim();
            if coding.is_empty() {
                continue;
            }
            let mut q = Some(1000);
            for param in parts {
                if let Some((k, v)) = param.split_once('=') {
                    if k.trim().eq_ignore_ascii_case("q") {
                        q = qvalue(v);
                    }
                }
            }
            // An element with an unreadable weight is ignored rather than guessed at.
            let Some(q) = q else {
                continue;
            };
            let slot = if coding == "*" {
                &mut star
            } else if coding.eq_ignore_ascii_case("x-gzip") {
                &mut weights[0]
            } else {
                match Encoding::from_token(coding) {
                    Some(Encoding::Gzip) => &mut weights[0],
                    Some(Encoding::Brotli) => &mut weights[1],
                    Some(Encoding::Zstd) => &mut weights[2],
                    None => continue,
                }
            };
            // The first mention of a coding counts.
            slot.get_or_insert(q);
        }
    }
    if !seen {
        return None;
    }
    let weight = |e: Encoding| {
        let explicit = match e {
            Encoding::Gzip => weights[0],
            Encoding::Brotli => weights[1],
            Encoding::Zstd => weights[2],
        };
        explicit.or(star).unwrap_or(0)
    };
    let mut best: Option<(Encoding, u16)> = None;
    for &e in offered {
        let w = weight(e);
        if w > 0 && best.is_none_or(|(_, bw)| w > bw) {
            best = Some((e, w));
        }
    }
    best.map(|(e, _)| e)
}

#[async_trait]
impl Plugin for Compression {
    fn name(&self) -> &str {
        "compression"
    }

    fn priority(&self) -> i32 {
        PRIORITY
    }

    fn phases(&self) -> Phases {
        Phases::REQUEST
    }

    async fn request_filter(
        &self,
        req: &mut RequestHeader,
        ctx: &mut RequestContext,
    ) -> Result<Flow> {
        let encoding = if req.method == Method::HEAD {
            None
        } else {
            choose(req, &self.algorithms)
        };
        ctx.set_state(CompressRequest {
            policy: self.policy.clone(),
            encoding,
        });
        Ok(Flow::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{request, PluginHarness};
    use serde_json::json;

    const ALL: [Encoding; 3] = [Encoding::Brotli, Encoding::Gzip, Encoding::Zstd];

    fn pick(ae: &str) -> Option<Encoding> {
        choose(
            &request("GET", "/").header("accept-encoding", ae).build(),
            &ALL,
        )
    }

    #[test]
    fn q_values_decide() {
        assert_eq!(pick("gzip"), Some(Encoding::Gzip));
        assert_eq!(
            pick("gzip, br"),
            Some(Encoding::Brotli),
            "a tie goes to our order"
        );
        assert_eq!(pick("br;q=0, gzip"), Some(Encoding::Gzip));
        assert_eq!(pick("br;q=0.5, gzip;q=0.8"), Some(Encoding::Gzip));
        assert_eq!(pick("gzip;q=0.001, zstd;Q=1.0"), Some(Encoding::Zstd));
        assert_eq!(pick("identity"), None);
        assert_eq!(pick("*"), Some(Encoding::Brotli));
        assert_eq!(pick("*;q=0.5, br;q=0"), Some(Encoding::Gzip));
        assert_eq!(pick("*;q=0"), None);
        assert_eq!(pick("deflate, x-gzip;q=0.3"), Some(Encoding::Gzip));
        assert_eq!(
            pick("gzip;q=2, br;q=0.1234"),
            None,
            "invalid weights are ignored"
        );
        assert_eq!(pick(""), None);
        assert_eq!(choose(&request("GET", "/").build(), &ALL), None);
        assert_eq!(
            choose(
                &request("GET", "/")
                    .header("accept-encoding", "br, gzip")
                    .build(),
                &[Encoding::Gzip]
            ),
            Some(Encoding::Gzip)
        );
    }

    #[test]
    fn qvalues_parse() {
        assert_eq!(qvalue("1"), Some(1000));
        assert_eq!(qvalue("1.000"), Some(1000));
        assert_eq!(qvalue("0.5"), Some(500));
        assert_eq!(qvalue("0.05"), Some(50));
        assert_eq!(qvalue("0"), Some(0));
        assert_eq!(qvalue("1.5"), None);
        assert_eq!(qvalue("0.1234"), None);
        assert_eq!(qvalue("x"), None);
    }

    #[tokio::test]
    async fn records_the_choice_and_the_policy() {
        let mut h = PluginHarness::from_config(
            &factory(),
            json!({"algorithms": ["gzip", "zstd"], "types": ["text/*", "application/json"], "min_length": "1KiB", "level": {"gzip": 9}}),
        )
        .unwrap();
        let mut req = request("GET", "/")
            .header("accept-encoding", "br, zstd")
            .build();
        assert!(matches!(h.request(&mut req).await.unwrap(), Flow::Continue));
        let state = h.ctx.take_state::<CompressRequest>().unwrap();
        assert_eq!(state.encoding, Some(Encoding::Zstd));
        assert_eq!(state.policy.min_length, 1024);
        assert_eq!(state.policy.gzip_level, 9);
        assert!(state.policy.compresses_type("text/anything"));
        assert!(!state.policy.compresses_type("image/png"));

        let mut head = request("HEAD", "/")
            .header("accept-encoding", "gzip")
            .build();
        h.request(&mut head).await.unwrap();
        assert_eq!(
            h.ctx.take_state::<CompressRequest>().unwrap().encoding,
            None
        );
    }

    #[tokio::test]
    async fn defaults() {
        let mut h = PluginHarness::from_config(&factory(), json!(null)).unwrap();
        let mut req = request("GET", "/")
            .header("accept-encoding", "gzip, zstd")
            .build();
        h.request(&mut req).await.unwrap();
        let state = h.ctx.take_state::<CompressRequest>().unwrap();
        assert_eq!(
            state.encoding,
            Some(Encoding::Gzip),
            "zstd is not offered by default"
        );
        assert_eq!(state.policy.min_length, 256);
        assert!(state
            .policy
            .compresses_type("application/json; charset=utf-8"));
        assert!(!state.policy.compresses_type("text/event-stream"));
        let any = PluginHarness::from_config(&factory(), json!({"types": ["*"]})).unwrap();
        drop(any);
    }

    #[test]
    fn bad_configs_name_the_key() {
        let cases = [
            (
                json!({"algorithms": ["deflate"]}),
                "algorithms[0]",
                "unknown coding",
            ),
            (
                json!({"algorithms": ["gzip", "GZIP"]}),
                "algorithms[1]",
                "twice",
            ),
            (json!({"algorithms": []}), "algorithms", "at least one"),
            (json!({"types": ["json"]}), "types[0]", "not a media type"),
            (json!({"types": ["text/"]}), "types[0]", "not a media type"),
            (json!({"types": []}), "types", "at least one"),
            (
                json!({"level": {"gzip": 10}}),
                "level.gzip",
                "out of range (1-9)",
            ),
            (
                json!({"level": {"br": 0}}),
                "level.br",
                "out of range (1-11)",
            ),
            (
                json!({"level": {"deflate": 1}}),
                "level.deflate",
                "unknown field",
            ),
            (json!({"min_length": "big"}), "min_length", "invalid size"),
        ];
        for (config, path, message) in cases {
            let e = PluginHarness::from_config(&factory(), config.clone())
                .err()
                .expect("refused");
            assert_eq!(e.path, path, "{config}: {e}");
            assert!(e.message.contains(message), "{config}: {e}");
        }
    }
}
