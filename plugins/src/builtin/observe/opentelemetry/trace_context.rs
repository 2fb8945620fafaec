//! W3C Trace Context (level 1): parsing `traceparent` and checking `tracestate`.
//!
//! ```text
//! traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01
//!              │  │                                │                └ flags (bit 0: sampled)
//!              │  │                                └ parent id: the caller's span, 16 hex
//!              │  └ trace id: 32 hex, not all zero
//!              └ version
//! tracestate:  vendor1=opaque,tenant@vendor2=value   (at most 32 members)
//! ```

/// The `traceparent` header's name.
pub const TRACEPARENT: &str = "traceparent";
/// The `tracestate` header's name.
pub const TRACESTATE: &str = "tracestate";

/// The `sampled` bit of the trace flags.
pub const FLAG_SAMPLED: u8 = 0x01;

/// The most list members a `tracestate` may have.
pub const MAX_TRACESTATE_MEMBERS: usize = 32;

/// A parsed `traceparent` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    /// The trace id; never all zero.
    pub trace_id: [u8; 16],
    /// The caller's span id; never all zero.
    pub parent_id: [u8; 8],
    /// The trace flags.
    pub flags: u8,
}

impl TraceParent {
    /// Whether the caller recorded its span (the `sampled` flag).
    pub fn sampled(&self) -> bool {
        self.flags & FLAG_SAMPLED != 0
    }
}

fn hex_value(b: u8) -> Option<u8> {
    // The specification allows lowercase hex only.
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

/// Decodes lowercase hex `src` (exactly twice `out`'s length) into `out`.
fn decode_hex(src: &[u8], out: &mut [u8]) -> Option<()> {
    if src.len() != out.len() * 2 {
        return None;
    }
    for (o, pair) in out.iter_mut().zip(src.chunks_exact(2)) {
        *o = (hex_value(pair[0])? << 4) | hex_value(pair[1])?;
    }
    Some(())
}

/// Parses one `traceparent` value; `None` when it is not valid.
///
/// Version `00` must be exactly 55 characters. A later version (not `ff`) is read as far as
/// the fields this version defines, as the specification asks, if what follows is separated
/// by `-`.
pub fn parse_traceparent(value: &[u8]) -> Option<TraceParent> {
    if value.len() < 55 || value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    let mut version = [0u8; 1];
    decode_hex(&value[..2], &mut version)?;
    match version[0] {
        0xff => return None,
        0x00 if value.len() != 55 => return None,
        _ if value.len() > 55 && value[55] != b'-' => return None,
        _ => {}
    }
    let mut trace_id = [0u8; 16];
    decode_hex(&value[3..35], &mut trace_id)?;
    let mut parent_id = [0u8; 8];
    decode_hex(&value[36..52], &mut parent_id)?;
    let mut flags = [0u8; 1];
    decode_hex(&value[53..55], &mut flags)?;
    if trace_id == [0; 16] || parent_id == [0; 8] {
        return None;
    }
    Some(TraceParent {
        trace_id,
        parent_id,
        flags: flags[0],
    })
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Writes `bytes` as lowercase hex into `out` (twice as long).
pub fn encode_hex(bytes: &[u8], out: &mut [u8]) {
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = HEX[usize::from(b >> 4)];
        pair[1] = HEX[usize::from(b & 0x0f)];
    }
}

/// `bytes` as a lowercase hex string.
pub fn to_hex(bytes: &[u8]) -> String {
    let mut out = vec![0u8; bytes.len() * 2];
    encode_hex(bytes, &mut out);
    // Hex digits are ASCII.
    String::from_utf8(out).unwrap_or_default()
}

/// A version-00 `traceparent` value, as 55 ASCII bytes.
pub fn format_traceparent(trace_id: &[u8; 16], span_id: &[u8; 8], sampled: bool) -> [u8; 55] {
    let mut out = [b'-'; 55];
    out[0] = b'0';
    out[1] = b'0';
    encode_hex(trace_id, &mut out[3..35]);
    encode_hex(span_id, &mut out[36..52]);
    out[53] = b'0';
    out[54] = if sampled { b'1' } else { b'0' };
    out
}

fn is_key_char(b: u8) -> bool {
    matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'*' | b'/')
}

/// A `tracestate` key: `vendor`, or `tenant@vendor` for multi-tenant systems.
fn valid_key(key: &[u8]) -> bool {
    match key.iter().position(|&b| b == b'@') {
        None => {
            key.len() <= 256
                && key.first().is_some_and(u8::is_ascii_lowercase)
                && key.iter().all(|&b| is_key_char(b))
        }
        Some(at) => {
            let (tenant, system) = (&key[..at], &key[at + 1..]);
            (1..=241).contains(&tenant.len())
                && tenant
                    .first()
                    .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                && tenant.iter().all(|&b| is_key_char(b))
                && (1..=14).contains(&system.len())
                && system.first().is_some_and(u8::is_ascii_lowercase)
                && system.iter().all(|&b| is_key_char(b))
        }
    }
}

/// A `tracestate` value: 1 to 256 printable ASCII characters other than `,` and `=`, not
/// ending in a space.
fn valid_value(value: &[u8]) -> bool {
    (1..=256).contains(&value.len())
        && value
            .iter()
            .all(|&b| (0x20..=0x7e).contains(&b) && b != b',' && b != b'=')
        && value.last() != Some(&b' ')
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// Whether the `tracestate` header lines `values` (combined, as HTTP allows a list header to
/// be split) form a valid list: well-formed members, at most 32 of them, no key twice.
/// Empty members are allowed and ignored. No header at all is valid (an empty list).
pub fn tracestate_is_valid<'a>(values: impl Iterator<Item = &'a [u8]>) -> bool {
    let mut keys: [&[u8]; MAX_TRACESTATE_MEMBERS] = [&[]; MAX_TRACESTATE_MEMBERS];
    let mut n = 0;
    for line in values {
        for member in line.split(|&b| b == b',') {
            let member = trim_ows(member);
            if member.is_empty() {
                continue;
            }
            let Some(eq) = member.iter().position(|&b| b == b'=') else {
                return false;
            };
            let (key, value) = (&member[..eq], &member[eq + 1..]);
            if !valid_key(key) || !valid_value(value) {
                return false;
            }
            if n == MAX_TRACESTATE_MEMBERS || keys[..n].contains(&key) {
                return false;
            }
            keys[n] = key;
            n += 1;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_a_valid_traceparent() {
        let tp = parse_traceparent(VALID.as_bytes()).unwrap();
        assert_eq!(to_hex(&tp.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(to_hex(&tp.parent_id), "00f067aa0ba902b7");
        assert_eq!(tp.flags, 1);
        assert!(tp.sampled());
        let unsampled = VALID.replace("-01", "-00");
        assert!(!parse_traceparent(unsampled.as_bytes()).unwrap().sampled());
        // Unknown flag bits are kept in `flags` but only bit 0 means anything.
        let other = VALID.replace("-01", "-02");
        assert!(!parse_traceparent(other.as_bytes()).unwrap().sampled());
    }

    #[test]
    fn refuses_invalid_traceparents() {
        let bad = [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
        ];
        for b in bad {
            assert_eq!(parse_traceparent(b.as_bytes()), None, "{b:?}");
        }
    }

    #[test]
    fn later_versions_are_read_as_far_as_known() {
        let v1 = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert!(parse_traceparent(v1.as_bytes()).is_some());
        let extended = format!("{v1}-whatever-comes-next");
        let tp = parse_traceparent(extended.as_bytes()).unwrap();
        assert_eq!(to_hex(&tp.parent_id), "00f067aa0ba902b7");
    }

    #[test]
    fn formats_version_00() {
        let tp = parse_traceparent(VALID.as_bytes()).unwrap();
        let out = format_traceparent(&tp.trace_id, &tp.parent_id, true);
        assert_eq!(std::str::from_utf8(&out).unwrap(), VALID);
        let out = format_traceparent(&tp.trace_id, &[0xab; 8], false);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-abababababababab-00"
        );
    }

    fn ts(lines: &[&str]) -> bool {
        tracestate_is_valid(lines.iter().map(|l| l.as_bytes()))
    }

    #[test]
    fn tracestate_validation() {
        assert!(ts(&[]));
        assert!(ts(&["rojo=00f067aa0ba902b7"]));
        assert!(ts(&["rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"]));
        assert!(ts(&["rojo=1 , ,congo=2", "tenant@sys=x y"]));
        assert!(ts(&["a*/_-9=v"]));
        assert!(ts(&["0tenant@vendor=v"]));
        let many: Vec<String> = (0..32).map(|i| format!("k{i}=v")).collect();
        assert!(ts(&[&many.join(",")]));

        let too_many: Vec<String> = (0..33).map(|i| format!("k{i}=v")).collect();
        assert!(!ts(&[&too_many.join(",")]));
        assert!(!ts(&["novalue"]));
        assert!(!ts(&["Upper=v"]));
        assert!(!ts(&["9digit=v"]));
        assert!(!ts(&["k="]));
        assert!(!ts(&["k=a=b"]));
        // A space before the `,` is list whitespace, not part of the value.
        assert!(ts(&["k=inner space ,j=2"]));
        assert!(!ts(&["k=caf\u{e9}"]));
        assert!(!ts(&["k=1", "k=2"]));
        assert!(!ts(&["@vendor=v"]));
        assert!(!ts(&["tenant@=v"]));
        assert!(!ts(&["tenant@0vendor=v"]));
        assert!(!ts(&["tenant@vendorvendorvendor=v"]));
        let long_value = format!("k={}", "v".repeat(257));
        assert!(!ts(&[&long_value]));
    }
}
