//! Cross-origin requests from browsers: the `cors.allowed_origins` allowlist for the REST API.
//!
//! - An allowlisted origin gets `Access-Control-Allow-Origin` (and its preflights are answered).
//! - Any other origin gets no CORS headers, so a browser never lets its page read a response.
//! - A request that changes something (not GET/HEAD/OPTIONS) from an origin that is neither
//!   allowlisted nor the server's own is refused with 403 before it reaches a handler: tokens
//!   travel in a header a foreign page cannot set, but signup and login need none, and a
//!   foreign page should not be able to drive them from its visitors' browsers.
//!
//! Requests without `Origin` (curl, apps, servers) are not cross-origin and pass untouched.
//! WebSocket upgrades check the same allowlist in `ws`.

use std::convert::Infallible;
use std::sync::Arc;

use warp::http::header::{self, HeaderMap, HeaderValue};
use warp::http::{Method, StatusCode};
use warp::{Filter, Rejection, Reply};

use crate::error::ApiError;

/// Methods and request headers an allowlisted page may use.
const ALLOW_METHODS: &str = "GET, POST, PATCH, DELETE";
const ALLOW_HEADERS: &str = "authorization, content-type";
/// Response headers an allowlisted page may read besides the simple ones.
const EXPOSE_HEADERS: &str = "retry-after, link";
/// How long a browser may cache a preflight answer, in seconds.
const MAX_AGE: &str = "600";

/// The allowlist, compared case-insensitively, and the scheme the server itself is reached
/// with.
#[derive(Clone)]
pub struct Cors {
    allowed: Arc<Vec<String>>,
    /// The server speaks TLS itself.
    tls: bool,
}

impl Cors {
    pub fn new(allowed_origins: &[String], tls: bool) -> Cors {
        Cors {
            allowed: Arc::new(
                allowed_origins
                    .iter()
                    .map(|o| o.to_ascii_lowercase())
                    .collect(),
            ),
            tls,
        }
    }

    fn allows(&self, origin: &str) -> bool {
        self.allowed.iter().any(|a| a.eq_ignore_ascii_case(origin))
    }

    /// Whether a page at `origin` may act on the server: it is allowlisted, or it is the
    /// server's own origin (scheme, host and port) for the request these headers came with.
    pub fn permits(&self, origin: &str, headers: &HeaderMap) -> bool {
        self.allows(origin)
            || same_origin(origin, header_str(headers, "host"), self.scheme(headers))
    }

    /// The scheme a request reached the server with: `https` if the server speaks TLS, or if a
    /// TLS-terminating proxy in front says so in `X-Forwarded-Proto`. Trusting that header is
    /// safe here: it only widens the same-origin check to the scheme the page itself shows,
    /// and a browser page cannot set it on a WebSocket, nor cross-origin without a preflight
    /// (which only allowlisted origins pass).
    fn scheme(&self, headers: &HeaderMap) -> &'static str {
        let forwarded = header_str(headers, "x-forwarded-proto")
            .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"));
        if self.tls || forwarded {
            "https"
        } else {
            "http"
        }
    }

    /// Adds the CORS headers a response to `origin` carries.
    fn decorate(&self, origin: Option<&str>, headers: &mut HeaderMap) {
        if self.allowed.is_empty() {
            return;
        }
        // Answers differ by origin: caches must not share them.
        headers.append(header::VARY, HeaderValue::from_static("origin"));
        if let Some(origin) = origin.filter(|o| self.allows(o))
            && let Ok(value) = HeaderValue::from_str(origin)
        {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
            headers.insert(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static(EXPOSE_HEADERS),
            );
        }
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Whether `origin` (`scheme://host[:port]`) is the origin of a request sent to `host` with
/// `scheme`: the same scheme, host and port (a default port may be left out on either side).
fn same_origin(origin: &str, host: Option<&str>, scheme: &str) -> bool {
    let Some(host) = host else {
        return false;
    };
    let origin = origin.to_ascii_lowercase();
    let Some(origin_host) = origin
        .strip_prefix(scheme)
        .and_then(|rest| rest.strip_prefix("://"))
    else {
        return false;
    };
    let default_port = if scheme == "https" { ":443" } else { ":80" };
    let host = host.to_ascii_lowercase();
    let bare = |h: &str| h.strip_suffix(default_port).unwrap_or(h).to_string();
    bare(origin_host) == bare(&host)
}

/// A header's value if present and readable as text; a malformed one counts as absent.
fn optional_header(
    name: &'static str,
) -> impl Filter<Extract = (Option<String>,), Error = Infallible> + Clone {
    warp::header::optional::<String>(name)
        .or(warp::any().map(|| None))
        .unify()
}

/// Filter: answers preflights (`OPTIONS` with `Origin` and `Access-Control-Request-Method`)
/// and refuses cross-origin writes from pages not on the allowlist. Everything else is left to
/// the routes (a not-found rejection, so it never changes which error another route reports).
pub fn guard(
    cors: &Cors,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone + use<> {
    let cors = cors.clone();
    warp::method()
        .and(optional_header("origin"))
        .and(warp::header::headers_cloned())
        .and(optional_header("access-control-request-method"))
        .and_then(
            move |method: Method,
                  origin: Option<String>,
                  headers: HeaderMap,
                  request_method: Option<String>| {
                let cors = cors.clone();
                async move {
                    let Some(origin) = origin else {
                        return Err(warp::reject::not_found());
                    };
                    let allowed = cors.allows(&origin);
                    let preflight = method == Method::OPTIONS && request_method.is_some();
                    if preflight {
                        if !allowed {
                            return Ok(forbidden());
                        }
                        let mut response = StatusCode::NO_CONTENT.into_response();
                        let h = response.headers_mut();
                        for (name, value) in [
                            (header::ACCESS_CONTROL_ALLOW_METHODS, ALLOW_METHODS),
                            (header::ACCESS_CONTROL_ALLOW_HEADERS, ALLOW_HEADERS),
                            (header::ACCESS_CONTROL_MAX_AGE, MAX_AGE),
                        ] {
                            h.insert(name, HeaderValue::from_static(value));
                        }
                        return Ok(response);
                    }
                    let writes = !matches!(method, Method::GET | Method::HEAD | Method::OPTIONS);
                    if writes && !cors.permits(&origin, &headers) {
                        return Ok(forbidden());
                    }
                    Err(warp::reject::not_found())
                }
            },
        )
}

fn forbidden() -> warp::reply::Response {
    ApiError::Forbidden("cross-origin requests from this origin are not allowed").into_response()
}

/// Wraps the whole API: adds the CORS headers of an allowlisted origin to every response.
pub fn wrap<F>(
    cors: &Cors,
    api: F,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Infallible> + Clone + use<F>
where
    F: Filter<Extract = (warp::reply::Response,), Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
{
    let cors = cors.clone();
    optional_header("origin").and(api).map(
        move |origin: Option<String>, mut response: warp::reply::Response| {
            cors.decorate(origin.as_deref(), response.headers_mut());
            response
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_origin_compares_scheme_host_and_port() {
        assert!(same_origin("http://a:8000", Some("a:8000"), "http"));
        assert!(same_origin("HTTP://A:8000", Some("a:8000"), "http"));
        assert!(same_origin("https://a:8000", Some("a:8000"), "https"));
        assert!(!same_origin("https://a:8000", Some("a:8000"), "http"));
        assert!(!same_origin("http://a:8000", Some("a:8000"), "https"));
        assert!(!same_origin("http://a:8001", Some("a:8000"), "http"));
        assert!(!same_origin("http://evil.example", Some("a:8000"), "http"));
        assert!(!same_origin("null", Some("a:8000"), "http"));
        assert!(!same_origin("http://a:8000", None, "http"));
        // Default ports may be written or left out.
        assert!(same_origin(
            "https://chat.example",
            Some("chat.example:443"),
            "https"
        ));
        assert!(same_origin(
            "http://chat.example:80",
            Some("chat.example"),
            "http"
        ));
        assert!(!same_origin(
            "https://chat.example",
            Some("chat.example:80"),
            "https"
        ));
    }

    #[test]
    fn the_own_scheme_is_https_over_tls_or_behind_a_proxy_that_says_so() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, HeaderValue::from_static(v));
            }
            h
        };
        let plain = Cors::new(&[], false);
        let tls = Cors::new(&[], true);
        let host = headers(&[("host", "chat.example")]);
        assert!(plain.permits("http://chat.example", &host));
        assert!(!plain.permits("https://chat.example", &host));
        assert!(tls.permits("https://chat.example", &host));
        assert!(!tls.permits("http://chat.example", &host));
        let proxied = headers(&[("host", "chat.example"), ("x-forwarded-proto", "https")]);
        assert!(plain.permits("https://chat.example", &proxied));
        assert!(!plain.permits("http://evil.example", &proxied));
    }

    #[test]
    fn only_allowlisted_origins_are_decorated() {
        let cors = Cors::new(&["https://Chat.example".to_string()], false);
        let mut h = HeaderMap::new();
        cors.decorate(Some("https://chat.example"), &mut h);
        assert_eq!(
            h[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://chat.example"
        );
        let mut h = HeaderMap::new();
        cors.decorate(Some("https://evil.example"), &mut h);
        assert!(!h.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
        assert_eq!(h[header::VARY], "origin");
        let mut h = HeaderMap::new();
        Cors::new(&[], false).decorate(Some("https://chat.example"), &mut h);
        assert!(h.is_empty());
    }
}
