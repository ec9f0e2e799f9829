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
const EXPOSE_HEADERS: &str = "retry-after";
/// How long a browser may cache a preflight answer, in seconds.
const MAX_AGE: &str = "600";

/// The allowlist, compared case-insensitively.
#[derive(Clone)]
pub struct Cors {
    allowed: Arc<Vec<String>>,
}

impl Cors {
    pub fn new(allowed_origins: &[String]) -> Cors {
        Cors {
            allowed: Arc::new(
                allowed_origins
                    .iter()
                    .map(|o| o.to_ascii_lowercase())
                    .collect(),
            ),
        }
    }

    fn allows(&self, origin: &str) -> bool {
        self.allowed.iter().any(|a| a.eq_ignore_ascii_case(origin))
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

/// Whether `origin` (`scheme://host[:port]`) names the host the request was sent to.
fn same_origin(origin: &str, host: Option<&str>) -> bool {
    let origin_host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    matches!((origin_host, host), (Some(o), Some(h)) if o.eq_ignore_ascii_case(h))
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
        .and(optional_header("host"))
        .and(optional_header("access-control-request-method"))
        .and_then(
            move |method: Method,
                  origin: Option<String>,
                  host: Option<String>,
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
                    if writes && !allowed && !same_origin(&origin, host.as_deref()) {
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
    fn same_origin_compares_host_and_port() {
        assert!(same_origin("http://a:8000", Some("a:8000")));
        assert!(same_origin("https://A:8000", Some("a:8000")));
        assert!(!same_origin("http://a:8001", Some("a:8000")));
        assert!(!same_origin("http://evil.example", Some("a:8000")));
        assert!(!same_origin("null", Some("a:8000")));
        assert!(!same_origin("http://a:8000", None));
    }

    #[test]
    fn only_allowlisted_origins_are_decorated() {
        let cors = Cors::new(&["https://Chat.example".to_string()]);
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
        Cors::new(&[]).decorate(Some("https://chat.example"), &mut h);
        assert!(h.is_empty());
    }
}
