//! Request path normalisation, applied before route matching so that `/admin/../secret`,
//! `//admin` or `/%61dmin` cannot dodge the plugins of the route they really address.

use std::borrow::Cow;

/// Why a request path was refused (the client gets a 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// Not an origin-form path (does not start with `/`).
    NotAbsolute,
    /// A `%` not followed by two hex digits.
    BadPercentEncoding,
    /// An encoded `/`, `\` or NUL: upstreams disagree on what these mean, so they are refused
    /// rather than guessed at.
    EncodedSeparator,
}

impl PathError {
    /// A short explanation for the client.
    pub fn message(self) -> &'static str {
        match self {
            PathError::NotAbsolute => "the request path must start with /",
            PathError::BadPercentEncoding => "malformed percent-encoding in the request path",
            PathError::EncodedSeparator => "encoded '/', '\\' or NUL in the request path",
        }
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn needs_work(path: &str) -> bool {
    let b = path.as_bytes();
    b.contains(&b'%') || b.windows(2).any(|w| w == b"//" || w == b"/.")
}

/// Normalises `path` (the path part of the URI, without the query):
/// - `%XX` of an unreserved character is decoded (`%61` → `a`), other escapes are kept with
///   upper-case hex; an encoded `/`, `\` or NUL is refused;
/// - runs of `/` become one;
/// - `.` and `..` segments are removed (`..` never climbs above `/`).
///
/// Returns the input unchanged (no allocation) when it is already normal.
pub fn normalize(path: &str) -> Result<Cow<'_, str>, PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if !needs_work(path) {
        return Ok(Cow::Borrowed(path));
    }
    // 1. Percent-decoding of unreserved characters.
    let bytes = path.as_bytes();
    let mut decoded = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let (Some(h), Some(l)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            ) else {
                return Err(PathError::BadPercentEncoding);
            };
            let v = h * 16 + l;
            if v == b'/' || v == b'\\' || v == 0 {
                return Err(PathError::EncodedSeparator);
            }
            if is_unreserved(v) {
                decoded.push(v as char);
            } else {
                decoded.push('%');
                decoded.push(char::from(b"0123456789ABCDEF"[usize::from(h)]));
                decoded.push(char::from(b"0123456789ABCDEF"[usize::from(l)]));
            }
            i += 3;
        } else {
            // Multi-byte UTF-8 is copied byte-run by byte-run through char boundaries.
            let ch_len = path[i..].chars().next().map_or(1, char::len_utf8);
            decoded.push_str(&path[i..i + ch_len]);
            i += ch_len;
        }
    }
    // 2. Segments: drop empty ones and `.`, resolve `..`.
    let trailing_slash = decoded.ends_with('/');
    let mut segments: Vec<&str> = Vec::new();
    let mut last_was_dot = false;
    for seg in decoded.split('/') {
        last_was_dot = false;
        match seg {
            "" => {}
            "." => last_was_dot = true,
            ".." => {
                segments.pop();
                last_was_dot = true;
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() || ((trailing_slash || last_was_dot) && !segments.is_empty()) {
        out.push('/');
    }
    Ok(Cow::Owned(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(p: &str) -> String {
        normalize(p).unwrap().into_owned()
    }

    #[test]
    fn normal_paths_are_borrowed() {
        assert!(matches!(normalize("/users/42").unwrap(), Cow::Borrowed(_)));
        assert!(matches!(normalize("/").unwrap(), Cow::Borrowed(_)));
    }

    #[test]
    fn dot_segments_and_slashes() {
        assert_eq!(n("/admin/../secret"), "/secret");
        assert_eq!(n("/a/./b"), "/a/b");
        assert_eq!(n("//admin"), "/admin");
        assert_eq!(n("/a//b///c"), "/a/b/c");
        assert_eq!(n("/../../etc/passwd"), "/etc/passwd");
        assert_eq!(n("/a/b/.."), "/a/");
        assert_eq!(n("/a/b/"), "/a/b/");
        assert_eq!(n("/.."), "/");
    }

    #[test]
    fn percent_decoding_of_unreserved_only() {
        assert_eq!(n("/%61dmin"), "/admin");
        assert_eq!(n("/%2e%2e/secret"), "/secret");
        assert_eq!(n("/a%20b"), "/a%20b");
        assert_eq!(n("/a%3fb"), "/a%3Fb");
    }

    #[test]
    fn refusals() {
        assert_eq!(normalize("/a%2fb"), Err(PathError::EncodedSeparator));
        assert_eq!(normalize("/a%5Cb"), Err(PathError::EncodedSeparator));
        assert_eq!(normalize("/a%00"), Err(PathError::EncodedSeparator));
        assert_eq!(normalize("/a%zz"), Err(PathError::BadPercentEncoding));
        assert_eq!(normalize("/a%4"), Err(PathError::BadPercentEncoding));
        assert_eq!(normalize("*"), Err(PathError::NotAbsolute));
    }
}
