//! Which web pages may open a WebSocket: by default only the server's own (same origin), as
//! Phoenix and Centrifugo do. A browser sends its cookies with a cross-site handshake, so an
//! app that authenticates with a cookie could otherwise be driven by any site its users visit.

use http::HeaderValue;

/// The origins a browser may connect from (see `Builder::allowed_origins`).
#[derive(Debug, Clone, Default)]
pub(crate) enum Origins {
    /// The `Origin`'s host and port are the request's `Host` (the default).
    #[default]
    Same,
    /// These origins (`https://*.example.com` matches any subdomain).
    Listed(Vec<String>),
    /// Any origin.
    Any,
}

impl Origins {
    /// `Ok` when a request with this `Origin` and `Host` may connect; else why not. A request
    /// without `Origin` (not a browser) always may.
    pub(crate) fn check(
        &self,
        origin: Option<&HeaderValue>,
        host: Option<&HeaderValue>,
    ) -> Result<(), String> {
        let Some(origin) = origin else {
            return Ok(());
        };
        let origin = origin.to_str().unwrap_or("").trim();
        let allowed = match self {
            Origins::Any => true,
            Origins::Listed(list) => list.iter().any(|pattern| matches(pattern, origin)),
            Origins::Same => same_origin(origin, host.and_then(|h| h.to_str().ok())),
        };
        if allowed {
            return Ok(());
        }
        let host = host.and_then(|h| h.to_str().ok()).unwrap_or("(none)");
        Err(match self {
            Origins::Listed(_) => format!(
                "origin {origin:?} is not in allowed_origins; add it to Builder::allowed_origins"
            ),
            _ => format!(
                "origin {origin:?} is not this server's (Host {host:?}); allow it with \
                 Builder::allowed_origins([..]) or Builder::allow_any_origin()"
            ),
        })
    }
}

/// `scheme://host[:port]` of an `Origin`, the port made explicit.
fn split(origin: &str) -> Option<(&str, &str, u16)> {
    let (scheme, authority) = origin.split_once("://")?;
    let default = match scheme.to_ascii_lowercase().as_str() {
        "http" | "ws" => 80,
        "https" | "wss" => 443,
        _ => return None,
    };
    let (host, port) = host_port(authority, default)?;
    Some((scheme, host, port))
}

/// `host[:port]` (IPv6 in brackets), the port defaulting to `default`.
fn host_port(authority: &str, default: u16) -> Option<(&str, u16)> {
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => (host, port.parse().ok()?),
        _ => (authority, default),
    };
    (!host.is_empty()).then_some((host, port))
}

fn same_origin(origin: &str, host: Option<&str>) -> bool {
    let (Some((scheme, origin_host, origin_port)), Some(host)) = (split(origin), host) else {
        return false;
    };
    let default = if scheme.eq_ignore_ascii_case("https") || scheme.eq_ignore_ascii_case("wss") {
        443
    } else {
        80
    };
    host_port(host.trim(), default)
        .is_some_and(|(host, port)| host.eq_ignore_ascii_case(origin_host) && port == origin_port)
}

/// An allowed origin: exactly (ignoring case), or `scheme://*.domain[:port]` for any
/// subdomain of `domain`.
fn matches(pattern: &str, origin: &str) -> bool {
    if pattern.eq_ignore_ascii_case(origin) {
        return true;
    }
    let (Some((p_scheme, p_host, p_port)), Some((scheme, host, port))) =
        (split(pattern), split(origin))
    else {
        return false;
    };
    let Some(domain) = p_host.strip_prefix("*.") else {
        return false;
    };
    let host = host.to_ascii_lowercase();
    p_scheme.eq_ignore_ascii_case(scheme)
        && p_port == port
        && host.len() > domain.len() + 1
        && host.ends_with(&format!(".{}", domain.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(origins: &Origins, origin: Option<&str>, host: &str) -> bool {
        let origin = origin.map(|o| HeaderValue::from_str(o).unwrap());
        let host = HeaderValue::from_str(host).unwrap();
        origins.check(origin.as_ref(), Some(&host)).is_ok()
    }

    #[test]
    fn the_default_is_the_same_origin() {
        let same = Origins::default();
        assert!(
            check(&same, None, "example.com"),
            "no Origin: not a browser"
        );
        assert!(check(
            &same,
            Some("http://127.0.0.1:8000"),
            "127.0.0.1:8000"
        ));
        assert!(check(&same, Some("https://Example.com"), "example.com"));
        assert!(check(&same, Some("https://example.com"), "example.com:443"));
        assert!(check(&same, Some("http://[::1]:8000"), "[::1]:8000"));
        assert!(!check(&same, Some("https://evil.com"), "example.com"));
        assert!(!check(
            &same,
            Some("http://example.com:8001"),
            "example.com:8000"
        ));
        assert!(!check(
            &same,
            Some("http://example.com"),
            "example.com:8000"
        ));
        assert!(!check(
            &same,
            Some("https://example.com.evil.com"),
            "example.com"
        ));
        assert!(!check(&same, Some("null"), "example.com"));
        assert!(!check(&same, Some(""), "example.com"));
    }

    #[test]
    fn listed_origins_and_subdomain_patterns() {
        let listed = Origins::Listed(vec![
            "https://chat.example.com".into(),
            "https://*.example.org".into(),
        ]);
        assert!(check(&listed, Some("https://chat.example.com"), "x"));
        assert!(check(&listed, Some("HTTPS://CHAT.EXAMPLE.COM"), "x"));
        assert!(check(&listed, Some("https://a.example.org"), "x"));
        assert!(check(&listed, Some("https://a.b.example.org"), "x"));
        assert!(!check(&listed, Some("https://example.org"), "x"));
        assert!(!check(&listed, Some("https://evilexample.org"), "x"));
        assert!(!check(&listed, Some("http://a.example.org"), "x"));
        assert!(!check(&listed, Some("https://a.example.org:8443"), "x"));
        assert!(
            !check(&listed, Some("https://evil.com"), "evil.com"),
            "not same-origin"
        );
    }

    #[test]
    fn any_origin() {
        assert!(check(
            &Origins::Any,
            Some("https://evil.com"),
            "example.com"
        ));
    }
}
