//! The request as the upstream should see it: path, `Host`, `X-Forwarded-*`, no hop-by-hop
//! headers.

use http::header::{self, HeaderName, HeaderValue};
use pingora_error::Result;
use pingora_http::RequestHeader;
use std::net::IpAddr;

// Headers this module adds are named by their usual spelling, for lookups (which ignore case)
// and inserts alike: Pingora keeps a `&'static str` name as written (for the wire) without
// copying it, where a `HeaderName` outside its short list of standard names is copied on
// every insert.
const X_FORWARDED_FOR: &str = "X-Forwarded-For";
const X_FORWARDED_PROTO: &str = "X-Forwarded-Proto";
const X_FORWARDED_HOST: &str = "X-Forwarded-Host";
const X_REAL_IP: &str = "X-Real-IP";
const X_CONSUMER_ID: &str = "X-Consumer-Id";
const X_CONSUMER_GROUPS: &str = "X-Consumer-Groups";
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Removes hop-by-hop headers (RFC 9110 §7.6.1): `Connection` and the headers it names,
/// `Keep-Alive`, `Proxy-Connection`, and `TE` other than `trailers` (which gRPC needs).
/// An upgrade request keeps `Connection: upgrade` and `Upgrade`.
pub fn strip_hop_by_hop(req: &mut RequestHeader, is_upgrade: bool) {
    let named: Vec<HeaderName> = req
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .filter(|n| !(is_upgrade && n == header::UPGRADE))
        .collect();
    for n in named {
        req.remove_header(&n);
    }
    if !is_upgrade {
        req.remove_header(&header::CONNECTION);
        req.remove_header(&header::UPGRADE);
    }
    req.remove_header(&KEEP_ALIVE);
    req.remove_header(&PROXY_CONNECTION);
    let te_trailers = req
        .headers
        .get(header::TE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        });
    req.remove_header(&header::TE);
    if te_trailers {
        let _ = req.insert_header(header::TE, "trailers");
    }
}

/// Tells the upstream who the authenticated consumer is (`X-Consumer-Id`, and
/// `X-Consumer-Groups` when it has groups). Values a client sent in these headers are always
/// removed first, so they cannot be forged.
pub fn set_consumer(
    req: &mut RequestHeader,
    consumer: Option<&gatehouse_plugins::Consumer>,
) -> Result<()> {
    req.remove_header(X_CONSUMER_ID);
    req.remove_header(X_CONSUMER_GROUPS);
    if let Some(c) = consumer {
        req.insert_header(X_CONSUMER_ID, c.id.as_str())?;
        if !c.groups.is_empty() {
            req.insert_header(X_CONSUMER_GROUPS, c.groups.join(","))?;
        }
    }
    Ok(())
}

/// Sets `X-Forwarded-For` (appending the TCP peer, the hop this gateway saw), `X-Real-IP`
/// (the client as established, e.g. behind trusted proxies), `X-Forwarded-Proto` and
/// `X-Forwarded-Host`.
pub fn set_forwarded(
    req: &mut RequestHeader,
    peer: Option<IpAddr>,
    client: Option<IpAddr>,
    tls: bool,
    original_host: Option<&str>,
) -> Result<()> {
    // One formatted address serves both headers in the common case (client = TCP peer).
    let peer_text = peer.map(|ip| ip.to_string());
    if let Some(ip) = client {
        match (&peer_text, peer == Some(ip)) {
            (Some(text), true) => req.insert_header(X_REAL_IP, text.as_str())?,
            _ => req.insert_header(X_REAL_IP, ip.to_string())?,
        };
    }
    if let Some(ip) = peer_text {
        let previous = req
            .headers
            .get_all(X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty());
        let mut xff = String::new();
        for p in previous {
            xff.push_str(p);
            xff.push_str(", ");
        }
        if xff.is_empty() {
            xff = ip;
        } else {
            xff.push_str(&ip);
        }
        req.insert_header(X_FORWARDED_FOR, xff)?;
    }
    let proto = HeaderValue::from_static(if tls { "https" } else { "http" });
    req.insert_header(X_FORWARDED_PROTO, proto)?;
    if let Some(h) = original_host {
        req.insert_header(X_FORWARDED_HOST, h)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_removed() {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        r.insert_header("connection", "keep-alive, x-secret")
            .unwrap();
        r.insert_header("x-secret", "1").unwrap();
        r.insert_header("keep-alive", "timeout=5").unwrap();
        r.insert_header("te", "trailers, deflate").unwrap();
        r.insert_header("x-kept", "1").unwrap();
        strip_hop_by_hop(&mut r, false);
        assert!(r.headers.get("connection").is_none());
        assert!(r.headers.get("x-secret").is_none());
        assert!(r.headers.get("keep-alive").is_none());
        assert_eq!(r.headers.get("te").unwrap(), "trailers");
        assert_eq!(r.headers.get("x-kept").unwrap(), "1");
    }

    #[test]
    fn upgrade_kept() {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        r.insert_header("connection", "Upgrade").unwrap();
        r.insert_header("upgrade", "websocket").unwrap();
        strip_hop_by_hop(&mut r, true);
        assert_eq!(r.headers.get("upgrade").unwrap(), "websocket");
        assert_eq!(r.headers.get("connection").unwrap(), "Upgrade");
    }

    #[test]
    fn forwarded_for_appends() {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        r.insert_header("x-forwarded-for", "10.0.0.1").unwrap();
        set_forwarded(
            &mut r,
            Some([127, 0, 0, 1].into()),
            Some([127, 0, 0, 1].into()),
            true,
            Some("api.example.com"),
        )
        .unwrap();
        assert_eq!(
            r.headers.get("x-forwarded-for").unwrap(),
            "10.0.0.1, 127.0.0.1"
        );
        assert_eq!(r.headers.get("x-real-ip").unwrap(), "127.0.0.1");
        assert_eq!(r.headers.get("x-forwarded-proto").unwrap(), "https");
        assert_eq!(
            r.headers.get("x-forwarded-host").unwrap(),
            "api.example.com"
        );
    }
}
