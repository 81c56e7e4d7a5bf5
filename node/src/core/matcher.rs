//! Route matching: which route of a table a request belongs to, and the path it is sent upstream with.
//!
//! Precedence is fixed so that the order of routes in a file rarely matters: a route naming the
//! request's host beats a host-less one, then the longest `path_prefix` wins, then the earlier route.
//! A prefix matches on segment boundaries: `/api` matches `/api` and `/api/x`, never `/apiary`
//! (a prefix ending in `/` matches anything under it).

use http::Method;

use super::table::{RouteSpec, RoutingTable, StripPrefix};

#[derive(Debug, Clone)]
pub struct RouteMatcher {
    /// Routes in precedence order, each with the index of its route in the source table.
    entries: Vec<Entry>,
}

#[derive(Debug, Clone)]
struct Entry {
    route_index: usize,
    host: Option<HostPattern>,
    prefix: String,
    methods: Option<Vec<Method>>,
    strip: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Exact(String),
    /// `*.example.com` stored as `.example.com`.
    Suffix(String),
}

impl HostPattern {
    fn parse(s: &str) -> HostPattern {
        let s = s.to_ascii_lowercase();
        match s.strip_prefix('*') {
            Some(rest) => HostPattern::Suffix(rest.to_string()),
            None => HostPattern::Exact(s),
        }
    }

    fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(h) => h.eq_ignore_ascii_case(host),
            HostPattern::Suffix(sfx) => {
                host.len() > sfx.len()
                    && host.as_bytes()[host.len() - sfx.len()..].eq_ignore_ascii_case(sfx.as_bytes())
            }
        }
    }
}

/// The outcome of matching: which route, and the path to send upstream.
#[derive(Debug, PartialEq, Eq)]
pub struct RouteMatch {
    pub route_index: usize,
    /// `None` when the path is sent unchanged.
    pub rewritten_path: Option<String>,
}

impl RouteMatcher {
    pub fn new(table: &RoutingTable) -> RouteMatcher {
        let mut entries: Vec<Entry> =
            table.routes.iter().enumerate().map(|(i, r)| Entry::from_spec(i, r)).collect();
        // Stable sort keeps file order as the last tie-breaker.
        entries.sort_by(|a, b| {
            b.host.is_some().cmp(&a.host.is_some()).then(b.prefix.len().cmp(&a.prefix.len()))
        });
        RouteMatcher { entries }
    }

    /// `host` is the request's authority without port; `path` the URI path.
    pub fn find(&self, host: Option<&str>, method: &Method, path: &str) -> Option<RouteMatch> {
        let e = self.entries.iter().find(|e| e.matches(host, method, path))?;
        let rewritten_path = e.strip.as_deref().and_then(|p| strip(path, p));
        Some(RouteMatch { route_index: e.route_index, rewritten_path })
    }
}

impl Entry {
    fn from_spec(route_index: usize, r: &RouteSpec) -> Entry {
        let strip = match &r.strip_prefix {
            Some(StripPrefix::Matched(true)) => Some(r.path_prefix.clone()),
            Some(StripPrefix::Given(p)) => Some(p.clone()),
            _ => None,
        };
        Entry {
            route_index,
            host: r.host.as_deref().map(HostPattern::parse),
            prefix: r.path_prefix.clone(),
            methods: r.methods.as_ref().map(|ms| {
                ms.iter().filter_map(|m| Method::from_bytes(m.to_ascii_uppercase().as_bytes()).ok()).collect()
            }),
            strip,
        }
    }

    fn matches(&self, host: Option<&str>, method: &Method, path: &str) -> bool {
        if let Some(pattern) = &self.host {
            match host {
                Some(h) if pattern.matches(h) => {}
                _ => return false,
            }
        }
        if let Some(ms) = &self.methods {
            if !ms.contains(method) {
                return false;
            }
        }
        prefix_matches(&self.prefix, path)
    }
}

fn prefix_matches(prefix: &str, path: &str) -> bool {
    if !path.starts_with(prefix) {
        return false;
    }
    prefix.ends_with('/') || path.len() == prefix.len() || path.as_bytes()[prefix.len()] == b'/'
}

/// Remove `prefix` from `path` on a segment boundary; the result always starts with '/'.
fn strip(path: &str, prefix: &str) -> Option<String> {
    let trimmed = prefix.trim_end_matches('/');
    if trimmed.is_empty() || !prefix_matches(trimmed, path) {
        return None;
    }
    let rest = &path[trimmed.len()..];
    Some(if rest.is_empty() { "/".to_string() } else { rest.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::table::parse_json;

    fn matcher(routes: &str) -> (RoutingTable, RouteMatcher) {
        let text = format!(
            r#"{{"services": {{"s": {{"endpoints": {{"us": ["http://127.0.0.1:1"]}}}}}}, "routes": {routes}}}"#
        );
        let t = parse_json(&text).expect("valid table");
        let m = RouteMatcher::new(&t);
        (t, m)
    }

    fn name<'a>(
        t: &'a RoutingTable,
        m: &RouteMatcher,
        host: Option<&str>,
        method: Method,
        path: &str,
    ) -> Option<&'a str> {
        m.find(host, &method, path).map(|r| t.routes[r.route_index].name.as_str())
    }

    #[test]
    fn longest_prefix_wins_regardless_of_order() {
        let (t, m) = matcher(
            r#"[{"name":"root","path_prefix":"/","service":"s"},{"name":"api","path_prefix":"/api","service":"s"}]"#,
        );
        assert_eq!(name(&t, &m, None, Method::GET, "/api/users"), Some("api"));
        assert_eq!(name(&t, &m, None, Method::GET, "/api"), Some("api"));
        assert_eq!(name(&t, &m, None, Method::GET, "/apiary"), Some("root"));
        assert_eq!(name(&t, &m, None, Method::GET, "/"), Some("root"));
    }

    #[test]
    fn host_and_method_narrow_a_match() {
        let (t, m) = matcher(
            r#"[{"name":"any","path_prefix":"/x","service":"s"},
                {"name":"h","path_prefix":"/","host":"*.example.com","service":"s"},
                {"name":"w","path_prefix":"/w","methods":["POST"],"service":"s"}]"#,
        );
        assert_eq!(name(&t, &m, Some("a.EXAMPLE.com"), Method::GET, "/x"), Some("h"));
        assert_eq!(name(&t, &m, Some("example.com"), Method::GET, "/x"), Some("any"));
        assert_eq!(name(&t, &m, None, Method::GET, "/w"), None);
        assert_eq!(name(&t, &m, None, Method::POST, "/w/1"), Some("w"));
    }

    #[test]
    fn no_route_is_none() {
        let (t, m) = matcher(r#"[{"name":"api","path_prefix":"/api","service":"s"}]"#);
        assert_eq!(name(&t, &m, None, Method::GET, "/other"), None);
    }

    #[test]
    fn strip_prefix_keeps_a_leading_slash() {
        let (_, m) = matcher(r#"[{"name":"api","path_prefix":"/api/","strip_prefix":true,"service":"s"}]"#);
        let r = m.find(None, &Method::GET, "/api/users").expect("match");
        assert_eq!(r.rewritten_path.as_deref(), Some("/users"));
        let r = m.find(None, &Method::GET, "/api/").expect("match");
        assert_eq!(r.rewritten_path.as_deref(), Some("/"));
    }
}
