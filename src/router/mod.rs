//! The compiled router: host table → path trie → route predicates.
//!
//! Precedence, most specific first:
//! 1. host: exact host, then wildcard hosts (`*.example.com`, longest suffix first), then
//!    routes without `hosts`;
//! 2. path: exact static segments, then `{param}` segments, then `/*` prefixes (longest
//!    first);
//! 3. among routes with the same pattern: higher `priority`, then the order in the config.
//!
//! The first candidate whose methods and header predicates hold wins. When some candidate
//! matched the path but none allowed the method, the answer is 405.

pub mod path;
pub mod tree;

use std::collections::HashMap;
use std::sync::Arc;
use tree::{Entry, PathTree, Pattern};

/// How a route's own predicates judged a request, for [`Router::lookup`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Method and headers hold: this route takes the request.
    Accept,
    /// Headers hold but the method is not among the route's.
    WrongMethod,
    /// A header predicate failed.
    Reject,
}

/// The winning route of a lookup.
#[derive(Debug)]
pub struct Found<'p> {
    /// Index of the route.
    pub route: usize,
    /// Named path parameters.
    pub params: Vec<(Arc<str>, String)>,
    /// For prefix patterns: the path after the prefix, without its leading `/`.
    pub rest: Option<&'p str>,
    /// Whether the matched pattern was a prefix pattern.
    pub prefix: bool,
}

/// The result of a lookup.
#[derive(Debug)]
pub enum Lookup<'p> {
    /// A route takes the request.
    Found(Found<'p>),
    /// Routes matched the path but not the method: their indexes (for `Allow`).
    MethodNotAllowed(Vec<usize>),
    /// No route matched.
    NotFound,
}

/// One route's place in the router.
pub struct RouteKey<'a> {
    /// Index in the route table.
    pub index: usize,
    /// Lower-cased hosts; empty = any.
    pub hosts: &'a [String],
    /// Parsed patterns.
    pub patterns: &'a [Pattern],
    /// Priority.
    pub priority: i32,
}

/// Routes compiled for matching.
#[derive(Debug, Default)]
pub struct Router {
    exact_hosts: HashMap<Box<str>, PathTree>,
    /// (suffix including the leading dot, tree), longest suffix first.
    wildcard_hosts: Vec<(Box<str>, PathTree)>,
    any_host: PathTree,
}

impl Router {
    /// Builds the router.
    pub fn build<'a>(routes: impl IntoIterator<Item = RouteKey<'a>>) -> Router {
        let mut r = Router::default();
        for key in routes {
            for pattern in key.patterns {
                let entry = Entry {
                    route: key.index,
                    params: pattern
                        .segments
                        .iter()
                        .filter_map(|s| match s {
                            tree::Segment::Param(n) => Some(Arc::from(n.as_str())),
                            tree::Segment::Static(_) => None,
                        })
                        .collect(),
                    priority: key.priority,
                    prefix: pattern.prefix,
                };
                if key.hosts.is_empty() {
                    r.any_host.insert(pattern, entry.clone());
                }
                for host in key.hosts {
                    let tree = if let Some(suffix) = host.strip_prefix('*') {
                        match r.wildcard_hosts.iter_mut().find(|(s, _)| &**s == suffix) {
                            Some((_, t)) => t,
                            None => {
                                r.wildcard_hosts.push((suffix.into(), PathTree::default()));
                                &mut r.wildcard_hosts.last_mut().expect("just pushed").1
                            }
                        }
                    } else {
                        r.exact_hosts.entry(host.as_str().into()).or_default()
                    };
                    tree.insert(pattern, entry.clone());
                }
            }
        }
        r.wildcard_hosts
            .sort_by_key(|w| std::cmp::Reverse(w.0.len()));
        r
    }

    /// Finds the route for `host` (lower-case, without port) and `path` (normalised).
    /// `check` applies a candidate route's method and header predicates.
    pub fn lookup<'p>(
        &self,
        host: &str,
        path: &'p str,
        check: &mut dyn FnMut(usize) -> Verdict,
    ) -> Lookup<'p> {
        let mut wrong_method: Vec<usize> = Vec::new();
        let trees = self
            .exact_hosts
            .get(host)
            .into_iter()
            .chain(
                self.wildcard_hosts
                    .iter()
                    .filter(|(suffix, _)| host.len() > suffix.len() && host.ends_with(&**suffix))
                    .map(|(_, t)| t),
            )
            .chain(std::iter::once(&self.any_host));
        for tree in trees {
            let mut found = None;
            tree.walk(path, &mut |c| match check(c.entry.route) {
                Verdict::Accept => {
                    found = Some(Found {
                        route: c.entry.route,
                        params: c
                            .entry
                            .params
                            .iter()
                            .cloned()
                            .zip(c.values.iter().map(|v| (*v).to_string()))
                            .collect(),
                        rest: c.rest,
                        prefix: c.entry.prefix,
                    });
                    true
                }
                Verdict::WrongMethod => {
                    wrong_method.push(c.entry.route);
                    false
                }
                Verdict::Reject => false,
            });
            if let Some(f) = found {
                return Lookup::Found(f);
            }
        }
        if wrong_method.is_empty() {
            Lookup::NotFound
        } else {
            Lookup::MethodNotAllowed(wrong_method)
        }
    }
}

/// The host of a `Host` header or `:authority`, lower-cased, without port. Borrowed when it
/// is already lower-case.
pub fn host_key(authority: &str) -> std::borrow::Cow<'_, str> {
    let host = if authority.starts_with('[') {
        // IPv6 literal: keep the brackets, drop the port.
        authority.find(']').map_or(authority, |i| &authority[..=i])
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    let host = host.trim_end_matches('.');
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(host.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(host)
    }
}

#[cfg(test)]
mod tests {
    use super::tree::parse_pattern;
    use super::*;

    fn router(routes: &[(&[&str], &[&str], i32)]) -> Router {
        let parsed: Vec<(Vec<String>, Vec<Pattern>, i32)> = routes
            .iter()
            .map(|(h, p, prio)| {
                (
                    h.iter().map(|s| s.to_string()).collect(),
                    p.iter().map(|s| parse_pattern(s).unwrap()).collect(),
                    *prio,
                )
            })
            .collect();
        Router::build(parsed.iter().enumerate().map(|(i, (h, p, prio))| RouteKey {
            index: i,
            hosts: h,
            patterns: p,
            priority: *prio,
        }))
    }

    fn find(r: &Router, host: &str, path: &str) -> Option<usize> {
        match r.lookup(host, path, &mut |_| Verdict::Accept) {
            Lookup::Found(f) => Some(f.route),
            _ => None,
        }
    }

    #[test]
    fn precedence_exact_param_prefix() {
        let r = router(&[
            (&[], &["/users/*"], 0),
            (&[], &["/users/{id}"], 0),
            (&[], &["/users/me"], 0),
            (&[], &["/*"], 0),
            (&[], &["/users/{id}/posts/*"], 0),
        ]);
        assert_eq!(find(&r, "h", "/users/me"), Some(2));
        assert_eq!(find(&r, "h", "/users/42"), Some(1));
        assert_eq!(find(&r, "h", "/users/42/x"), Some(0));
        assert_eq!(find(&r, "h", "/users/42/posts/7"), Some(4));
        assert_eq!(find(&r, "h", "/users"), Some(0));
        assert_eq!(find(&r, "h", "/other"), Some(3));
    }

    #[test]
    fn hosts_exact_then_wildcard_then_any() {
        let r = router(&[
            (&[], &["/a"], 0),
            (&["*.example.com"], &["/a"], 0),
            (&["api.example.com"], &["/a"], 0),
            (&["*.b.example.com"], &["/a"], 0),
        ]);
        assert_eq!(find(&r, "api.example.com", "/a"), Some(2));
        assert_eq!(find(&r, "x.example.com", "/a"), Some(1));
        assert_eq!(find(&r, "x.b.example.com", "/a"), Some(3));
        assert_eq!(find(&r, "example.com", "/a"), Some(0));
        assert_eq!(find(&r, "other", "/a"), Some(0));
    }

    #[test]
    fn priority_breaks_ties_and_params_are_captured() {
        let r = router(&[(&[], &["/p/{x}"], 1), (&[], &["/p/:y"], 5)]);
        match r.lookup("h", "/p/v", &mut |_| Verdict::Accept) {
            Lookup::Found(f) => {
                assert_eq!(f.route, 1);
                assert_eq!(&*f.params[0].0, "y");
                assert_eq!(f.params[0].1, "v");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn method_mismatch_is_reported() {
        let r = router(&[(&[], &["/a"], 0)]);
        assert!(matches!(
            r.lookup("h", "/a", &mut |_| Verdict::WrongMethod),
            Lookup::MethodNotAllowed(v) if v == vec![0]
        ));
        assert!(matches!(
            r.lookup("h", "/b", &mut |_| Verdict::Accept),
            Lookup::NotFound
        ));
    }

    #[test]
    fn prefix_rest() {
        let r = router(&[(&[], &["/api/*"], 0)]);
        match r.lookup("h", "/api/x/y", &mut |_| Verdict::Accept) {
            Lookup::Found(f) => assert_eq!(f.rest, Some("x/y")),
            other => panic!("{other:?}"),
        }
        match r.lookup("h", "/api", &mut |_| Verdict::Accept) {
            Lookup::Found(f) => assert_eq!(f.rest, None),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_patterns() {
        assert!(parse_pattern("users").is_err());
        assert!(parse_pattern("/a/*/b").is_err());
        assert!(parse_pattern("/a/{}").is_err());
        assert!(parse_pattern("/a/x{id}").is_err());
        assert!(parse_pattern("/a/{id}/{id}").is_err());
        assert!(parse_pattern("//a").is_err());
        assert!(parse_pattern("/a/./b").is_err());
        assert!(parse_pattern("/%61").is_err());
        assert!(parse_pattern("/a%2fb").is_err());
        assert!(parse_pattern("/a%3Fb").is_ok());
        assert!(parse_pattern("/a/").is_ok());
    }

    #[test]
    fn host_keys() {
        assert_eq!(host_key("API.Example.com:8080"), "api.example.com");
        assert_eq!(host_key("[::1]:80"), "[::1]");
        assert_eq!(host_key("a.com."), "a.com");
    }
}
