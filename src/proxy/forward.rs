//! The request as the upstream should see it: `X-Forwarded-*` and the consumer's identity.
//!
//! Hop-by-hop headers are Pingora's job, before the proxy's `upstream_request_filter` runs:
//! the peers use its standard request policy (see `upstream::UpstreamPool`), which removes
//! `Connection` and the headers it names, the standard hop-by-hop headers, and every upgrade
//! but WebSocket's, and refuses a `Connection` header that names `Host` or `X-Forwarded-*`.

use bytes::Bytes;
use http::header::HeaderValue;
use pingora_error::{Error, ErrorType, Result};
use pingora_http::RequestHeader;
use std::cell::RefCell;
use std::io::Write as _;
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

/// Tells the upstream who the authenticated consumer is (`X-Consumer-Id`, and
/// `X-Consumer-Groups` when it has groups). Values a client sent in these headers are always
/// removed first, so they cannot be forged.
pub fn set_consumer(
    req: &mut RequestHeader,
    consumer: Option<&gatehouse_plugins::Consumer>,
) -> Result<()> {
    // One pass over the names costs less than two lookups, and a client rarely sends these.
    let forged = req.headers.keys().any(|name| {
        let name = name.as_str();
        name.eq_ignore_ascii_case(X_CONSUMER_ID) || name.eq_ignore_ascii_case(X_CONSUMER_GROUPS)
    });
    if forged {
        req.remove_header(X_CONSUMER_ID);
        req.remove_header(X_CONSUMER_GROUPS);
    }
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
/// `X-Forwarded-Host` (`original_host`, the client's `Host` or `:authority`).
pub fn set_forwarded(
    req: &mut RequestHeader,
    peer: Option<IpAddr>,
    client: Option<IpAddr>,
    tls: bool,
    original_host: Option<&HeaderValue>,
) -> Result<()> {
    let peer_text = peer.map(address_value);
    if let Some(ip) = client {
        let text = match &peer_text {
            Some(text) if peer == Some(ip) => text.clone(),
            _ => address_value(ip),
        };
        req.insert_header(X_REAL_IP, text)?;
    }
    if let Some(ip) = peer_text {
        let mut previous = req
            .headers
            .get_all(X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .peekable();
        let xff = if previous.peek().is_none() {
            ip
        } else {
            let mut list = String::new();
            for p in previous {
                list.push_str(p);
                list.push_str(", ");
            }
            list.push_str(ip.to_str().unwrap_or_default());
            HeaderValue::try_from(list)
                .map_err(|e| Error::because(ErrorType::InvalidHTTPHeader, X_FORWARDED_FOR, e))?
        };
        req.insert_header(X_FORWARDED_FOR, xff)?;
    }
    let proto = HeaderValue::from_static(if tls { "https" } else { "http" });
    req.insert_header(X_FORWARDED_PROTO, proto)?;
    if let Some(h) = original_host {
        req.insert_header(X_FORWARDED_HOST, h.clone())?;
    }
    Ok(())
}

/// How many addresses each thread remembers the header text of (a power of two).
const RECENT_ADDRESSES: usize = 64;

thread_local! {
    /// The header text of addresses seen lately, in slots picked by a hash of the address.
    /// A keep-alive connection sends request after request from one address; remembering
    /// its text spares formatting and copying it (allocations) on each of them, and a clone
    /// of a remembered value only counts a reference.
    static RECENT_ADDRESS_TEXT: RefCell<[Option<(IpAddr, HeaderValue)>; RECENT_ADDRESSES]> =
        const { RefCell::new([const { None }; RECENT_ADDRESSES]) };
}

/// `ip` as a header value (`192.0.2.1`, `2001:db8::1`).
fn address_value(ip: IpAddr) -> HeaderValue {
    let slot = address_slot(ip);
    let remembered = RECENT_ADDRESS_TEXT.with_borrow(|recent| match &recent[slot] {
        Some((seen, text)) if *seen == ip => Some(text.clone()),
        _ => None,
    });
    if let Some(text) = remembered {
        return text;
    }
    let text = format_address(ip);
    RECENT_ADDRESS_TEXT.with_borrow_mut(|recent| recent[slot] = Some((ip, text.clone())));
    text
}

fn address_slot(ip: IpAddr) -> usize {
    let folded = match ip {
        IpAddr::V4(v4) => u64::from(v4.to_bits()),
        IpAddr::V6(v6) => {
            let bits = v6.to_bits();
            (bits as u64) ^ ((bits >> 64) as u64)
        }
    };
    // Fibonacci hashing: the top bits of the product mix every bit of the address.
    let mixed = folded.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (mixed >> (64 - RECENT_ADDRESSES.trailing_zeros())) as usize
}

/// Formats `ip` on the stack and copies it once into a header value.
fn format_address(ip: IpAddr) -> HeaderValue {
    // The longest text of an address, an IPv4-mapped IPv6 one, is 45 bytes.
    let mut text = [0u8; 48];
    let mut cursor = std::io::Cursor::new(&mut text[..]);
    let _ = write!(cursor, "{ip}");
    let len = usize::try_from(cursor.position()).unwrap_or(0);
    // An address's text is digits, hex letters, dots and colons: always a valid value.
    HeaderValue::from_maybe_shared(Bytes::copy_from_slice(&text[..len]))
        .unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forged_consumer_headers_removed() {
        let consumer = gatehouse_plugins::Consumer {
            id: "alice".into(),
            groups: vec!["staff".into(), "ops".into()],
            labels: Default::default(),
            credentials: Default::default(),
        };
        for sent in [None, Some("mallory")] {
            let mut r = RequestHeader::build("GET", b"/", None).unwrap();
            if let Some(forged) = sent {
                r.insert_header("x-consumer-id", forged).unwrap();
                r.insert_header("X-Consumer-Groups", "admin").unwrap();
            }
            set_consumer(&mut r, None).unwrap();
            assert!(r.headers.get("x-consumer-id").is_none());
            assert!(r.headers.get("x-consumer-groups").is_none());
            set_consumer(&mut r, Some(&consumer)).unwrap();
            assert_eq!(r.headers.get("x-consumer-id").unwrap(), "alice");
            assert_eq!(r.headers.get("x-consumer-groups").unwrap(), "staff,ops");
        }
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
            Some(&HeaderValue::from_static("api.example.com")),
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

    #[test]
    fn address_text_is_remembered_per_address() {
        let addresses: Vec<IpAddr> = (0..=255u8)
            .map(|i| IpAddr::from([10, 0, 0, i]))
            .chain((0..=255u16).map(|i| IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, i])))
            .chain(["::ffff:192.0.2.255".parse().unwrap()])
            .collect();
        // Twice over, so that remembered slots (and slots taken over by others) are read.
        for _ in 0..2 {
            for ip in &addresses {
                assert_eq!(address_value(*ip).to_str().unwrap(), ip.to_string());
            }
        }
    }
}
