//! A segment trie of path patterns for one host: static segments, one-segment parameters and
//! prefix (`/*`) patterns, walked in precedence order.

use std::collections::HashMap;
use std::sync::Arc;

/// One pattern of one route, stored at the trie node where the pattern ends.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Index of the route in the snapshot's route table.
    pub route: usize,
    /// Names of the pattern's parameters, in order.
    pub params: Arc<[Arc<str>]>,
    /// The route's priority (higher first among entries of one node).
    pub priority: i32,
    /// Whether the pattern ends in `/*`.
    pub prefix: bool,
}

#[derive(Debug, Default)]
struct Node {
    statics: HashMap<Box<str>, Node>,
    param: Option<Box<Node>>,
    exact: Vec<Entry>,
    prefix: Vec<Entry>,
}

/// A parsed path pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// A literal segment.
    Static(String),
    /// `{name}` or `:name`: any one non-empty segment.
    Param(String),
}

/// A path pattern: its segments and whether it ends in `/*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    /// The segments before any `/*`.
    pub segments: Vec<Segment>,
    /// Whether the pattern matches everything under its segments.
    pub prefix: bool,
}

/// Parses a pattern written in config. Errors say what is wrong with it.
pub fn parse_pattern(p: &str) -> Result<Pattern, String> {
    let Some(body) = p.strip_prefix('/') else {
        return Err(format!("`{p}` must start with `/`"));
    };
    let (body, prefix) = if body == "*" {
        ("", true)
    } else if let Some(b) = body.strip_suffix("/*") {
        (b, true)
    } else {
        (body, false)
    };
    let mut segments = Vec::new();
    if !(prefix && body.is_empty()) {
        let count = body.split('/').count();
        for (i, seg) in body.split('/').enumerate() {
            // Requests are normalised before matching, so a pattern that is not normal
            // could never match: refuse it instead of letting it sit dead.
            if (seg.is_empty() && i + 1 != count) || seg == "." || seg == ".." {
                return Err(format!(
                    "`{p}` is not a normalised path (no empty, `.` or `..` segments)"
                ));
            }
            let canonical = format!("/{seg}");
            if super::path::normalize(&canonical).ok().as_deref() != Some(canonical.as_str()) {
                return Err(format!(
                    "`{p}`: segment `{seg}` is not in normal form (requests are matched after \
                     decoding unreserved `%XX` escapes; write `%` escapes in upper case)"
                ));
            }
            if seg.contains('*') {
                return Err(format!(
                    "`{p}`: `*` is only allowed as the last segment (`/prefix/*`)"
                ));
            }
            let param = seg
                .strip_prefix('{')
                .and_then(|s| s.strip_suffix('}'))
                .or_else(|| seg.strip_prefix(':'));
            match param {
                Some(name)
                    if name.is_empty()
                        || !name.chars().all(|c| c.is_alphanumeric() || c == '_') =>
                {
                    return Err(format!(
                        "`{p}`: parameter names are letters, digits and `_` (`{{id}}` or `:id`)"
                    ))
                }
                Some(name) => {
                    if segments
                        .iter()
                        .any(|s| matches!(s, Segment::Param(n) if n == name))
                    {
                        return Err(format!("`{p}`: parameter `{name}` appears twice"));
                    }
                    segments.push(Segment::Param(name.to_string()));
                }
                None if seg.contains('{') || seg.contains('}') => {
                    return Err(format!(
                        "`{p}`: a parameter must be a whole segment (`/users/{{id}}`)"
                    ))
                }
                None => segments.push(Segment::Static(seg.to_string())),
            }
        }
    }
    Ok(Pattern { segments, prefix })
}

/// What a walk found for one candidate entry.
pub struct Candidate<'a, 'p> {
    /// The entry.
    pub entry: &'a Entry,
    /// Parameter values, in the entry's parameter order.
    pub values: &'a [&'p str],
    /// For prefix entries: what follows the prefix, without its leading `/` (`None` when
    /// nothing does).
    pub rest: Option<&'p str>,
}

/// The trie for one host.
#[derive(Debug, Default)]
pub struct PathTree {
    root: Node,
}

impl PathTree {
    /// Adds a pattern.
    pub fn insert(&mut self, pattern: &Pattern, entry: Entry) {
        let mut node = &mut self.root;
        for seg in &pattern.segments {
            node = match seg {
                Segment::Static(s) => node.statics.entry(s.as_str().into()).or_default(),
                Segment::Param(_) => node.param.get_or_insert_with(Default::default),
            };
        }
        let list = if pattern.prefix {
            &mut node.prefix
        } else {
            &mut node.exact
        };
        // Stable: equal priorities keep config order.
        let pos = list.partition_point(|e| e.priority >= entry.priority);
        list.insert(pos, entry);
    }

    /// Calls `visit` on every entry whose pattern matches `path` (normalised, starting with
    /// `/`), most specific first: static segments before parameters before prefixes, longer
    /// prefixes before shorter, then by priority. Stops when `visit` returns true, and
    /// returns whether it did.
    pub fn walk<'p>(
        &self,
        path: &'p str,
        visit: &mut dyn FnMut(Candidate<'_, 'p>) -> bool,
    ) -> bool {
        let mut values: Vec<&'p str> = Vec::new();
        walk_node(&self.root, path.get(1..), &mut values, visit)
    }

    /// Whether no pattern was inserted.
    pub fn is_empty(&self) -> bool {
        let r = &self.root;
        r.statics.is_empty() && r.param.is_none() && r.exact.is_empty() && r.prefix.is_empty()
    }
}

fn walk_node<'p>(
    node: &Node,
    rest: Option<&'p str>,
    values: &mut Vec<&'p str>,
    visit: &mut dyn FnMut(Candidate<'_, 'p>) -> bool,
) -> bool {
    let Some(rest) = rest else {
        for entry in node.exact.iter().chain(&node.prefix) {
            if visit(Candidate {
                entry,
                values,
                rest: None,
            }) {
                return true;
            }
        }
        return false;
    };
    let (seg, next) = match rest.find('/') {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    if let Some(child) = node.statics.get(seg) {
        if walk_node(child, next, values, visit) {
            return true;
        }
    }
    if let Some(child) = &node.param {
        if !seg.is_empty() {
            values.push(seg);
            if walk_node(child, next, values, visit) {
                return true;
            }
            values.pop();
        }
    }
    for entry in &node.prefix {
        if visit(Candidate {
            entry,
            values,
            rest: Some(rest),
        }) {
            return true;
        }
    }
    false
}
