//! The route table: the one module that composes every feature's routes, with the policies
//! that apply to all of them (CORS, security headers, the access log, error replies).

use warp::http::HeaderValue;
use warp::http::header::HeaderMap;
use warp::{Filter, Reply};

use crate::error::recover;
use crate::state::AppState;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, without a token.
    Anyone,
    /// Any signed-in user.
    User,
    /// A member of the room in the path (a non-member gets 404, as for a room that does not
    /// exist).
    Member,
}

/// One route the server serves.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    pub method: &'static str,
    /// With parameters in braces, as in `openapi.json`; every route also answers without its
    /// trailing slash.
    pub path: &'static str,
    pub access: Access,
    /// Part of the API (in `openapi.json`); the web client's pages and assets are not.
    pub api: bool,
}

impl Route {
    /// The path's shape, as [`shape`] makes it.
    pub fn shape(&self) -> String {
        shape(self.path)
    }
}

/// A path template or a request path with its parameters written `{}`, without its trailing
/// slash and query: `/api/v1/chat/{room_id}/?after=0` is `/api/v1/chat/{}`.
pub fn shape(path: &str) -> String {
    let path = path.split('?').next().unwrap_or_default();
    path.trim_end_matches('/')
        .split('/')
        .skip(1)
        .map(|s| {
            if s.starts_with('{') {
                "/{}".to_string()
            } else {
                format!("/{s}")
            }
        })
        .collect()
}

const fn route(method: &'static str, path: &'static str, access: Access) -> Route {
    Route {
        method,
        path,
        access,
        api: true,
    }
}

/// Every route the server serves: the list the OpenAPI and authorization tests read, and a
/// unit test keeps in step with the `warp::path!` filters of the features.
pub const TABLE: &[Route] = &[
    route("POST", "/api/v1/signup/", Access::Anyone),
    route("POST", "/api/v1/login/", Access::Anyone),
    route("POST", "/api/v1/api-token-auth/", Access::Anyone),
    // Where the seed had it.
    route("POST", "/api-token-auth/", Access::Anyone),
    route("POST", "/api/v1/logout/", Access::User),
    route("GET", "/api/v1/tokens/", Access::User),
    route("DELETE", "/api/v1/tokens/", Access::User),
    route("DELETE", "/api/v1/tokens/{token_id}/", Access::User),
    route("GET", "/api/v1/me/", Access::User),
    route("GET", "/api/v1/bots/", Access::User),
    route("POST", "/api/v1/bots/", Access::User),
    route("POST", "/api/v1/bots/{bot_id}/token/", Access::User),
    route("DELETE", "/api/v1/bots/{bot_id}/", Access::User),
    route("GET", "/api/v1/users/", Access::User),
    route("GET", "/api/v1/chats/", Access::User),
    route("POST", "/api/v1/chats/", Access::User),
    route("GET", "/api/v1/chat/{room_id}/", Access::Member),
    route("POST", "/api/v1/chat/{room_id}/", Access::Member),
    route("PATCH", "/api/v1/chat/{room_id}/", Access::Member),
    route(
        "PUT",
        "/api/v1/chat/{room_id}/admins/{user_id}/",
        Access::Member,
    ),
    route("POST", "/api/v1/chat/{room_id}/members/", Access::Member),
    route(
        "DELETE",
        "/api/v1/chat/{room_id}/members/{user_id}/",
        Access::Member,
    ),
    route("GET", "/api/v1/chat/{room_id}/hooks/", Access::Member),
    route("POST", "/api/v1/chat/{room_id}/hooks/", Access::Member),
    route(
        "DELETE",
        "/api/v1/chat/{room_id}/hooks/{hook_id}/",
        Access::Member,
    ),
    // The secret in the path is the credential.
    route("POST", "/api/v1/hooks/{secret}/", Access::Anyone),
    route("POST", "/api/v1/uploads/", Access::User),
    // A member of a room the file was posted in (or its uploader until then); anyone else
    // gets 404.
    route("GET", "/api/v1/files/{file_id}/", Access::User),
    route(
        "GET",
        "/api/v1/files/{file_id}/thumbnail/{size}/",
        Access::User,
    ),
    route("GET", "/api/v1/mentions/", Access::User),
    route("GET", "/api/v1/search/", Access::User),
    route("PATCH", "/api/v1/messages/{message_id}/", Access::User),
    route("DELETE", "/api/v1/messages/{message_id}/", Access::User),
    route(
        "PUT",
        "/api/v1/messages/{message_id}/reactions/{emoji}/",
        Access::User,
    ),
    route(
        "DELETE",
        "/api/v1/messages/{message_id}/reactions/{emoji}/",
        Access::User,
    ),
    route(
        "PATCH",
        "/api/v1/messages/{message_id}/update/",
        Access::User,
    ),
    // The seed's path of the same read receipt.
    route(
        "PATCH",
        "/api/messages/v1/{message_id}/update/",
        Access::User,
    ),
    route("GET", "/api/v1/openapi.json", Access::Anyone),
    route("GET", "/ws/chat/{room_id}/", Access::Member),
    route("GET", "/ws/", Access::User),
    route("GET", "/healthz", Access::Anyone),
    route("GET", "/metrics", Access::Anyone),
    Route {
        method: "GET",
        path: "/assets/{file}",
        access: Access::Anyone,
        api: false,
    },
    // The seed's pages, redirected to the web client's views.
    Route {
        method: "GET",
        path: "/chats/",
        access: Access::Anyone,
        api: false,
    },
    Route {
        method: "GET",
        path: "/chat/{room_id}/",
        access: Access::Anyone,
        api: false,
    },
];

/// The methods the route table serves at `path` (a request path), in table order.
pub fn allowed_methods(path: &str) -> Vec<&'static str> {
    let path = path
        .split('?')
        .next()
        .unwrap_or_default()
        .trim_end_matches('/');
    let asked: Vec<&str> = path.split('/').skip(1).collect();
    let mut methods = Vec::new();
    for route in TABLE {
        let template: Vec<&str> = route
            .path
            .trim_end_matches('/')
            .split('/')
            .skip(1)
            .collect();
        let matches = template.len() == asked.len()
            && template.iter().zip(&asked).all(|(t, a)| {
                if t.starts_with('{') {
                    !a.is_empty()
                } else {
                    t == a
                }
            });
        if matches && !methods.contains(&route.method) {
            methods.push(route.method);
        }
    }
    methods
}

/// A 405 names the methods that would have worked (RFC 9110, section 15.5.6).
fn with_allow(path: &str, mut response: warp::reply::Response) -> warp::reply::Response {
    if response.status() == warp::http::StatusCode::METHOD_NOT_ALLOWED {
        let methods = allowed_methods(path).join(", ");
        if let Ok(value) = HeaderValue::from_str(&methods) {
            response
                .headers_mut()
                .insert(warp::http::header::ALLOW, value);
        }
    }
    response
}

/// Headers on every response.
fn security_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    for (name, value) in [
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    h
}

/// The whole HTTP surface of the server.
pub fn routes(
    state: &AppState,
) -> impl Filter<Extract = (warp::reply::Response,), Error = std::convert::Infallible> + Clone + use<>
{
    let api = crate::auth::routes(state)
        .or(crate::users::routes(state))
        .unify()
        .or(crate::rooms::routes(state))
        .unify()
        .or(crate::messages::routes(state))
        .unify()
        .or(crate::hooks::routes(state))
        .unify()
        .or(crate::uploads::routes(state))
        .unify()
        .or(crate::bots::routes(state))
        .unify()
        .or(crate::ws::routes(state))
        .unify()
        .or(crate::ops::routes(state))
        .unify()
        .or(crate::web::routes(state))
        .unify();
    let log = warp::log::custom(|info| {
        // The path only: a WebSocket token may travel in the query string. A hook's secret
        // is its path, so it is left out.
        let path = info.path();
        let path = if path.starts_with("/api/v1/hooks/") {
            "/api/v1/hooks/<secret>/"
        } else {
            path
        };
        tracing::info!(
            target: "chat_server::access",
            method = %info.method(),
            path,
            status = info.status().as_u16(),
            micros = info.elapsed().as_micros() as u64,
        );
    });
    let api = crate::cors::guard(&state.cors).or(api).unify();
    // The full path is read before the routes consume it, for the `Allow` of a 405.
    let answered = warp::path::full()
        .and(api.recover(recover).unify())
        .map(|path: warp::path::FullPath, response| with_allow(path.as_str(), response));
    crate::cors::wrap(&state.cors, answered)
        .with(warp::reply::with::headers(security_headers()))
        // Nothing is cached, except where a route says otherwise (a file's bytes).
        .with(warp::reply::with::default_header(
            "cache-control",
            "no-store",
        ))
        // Only where a route set none: the web client's page brings its own policy.
        .with(warp::reply::with::default_header(
            "content-security-policy",
            "default-src 'none'; frame-ancestors 'none'",
        ))
        .with(log)
        .map(Reply::into_response)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::{Path, PathBuf};

    use super::*;

    /// Every `warp::path!` route in `src/`, as (method, shape).
    fn routes_in_source() -> BTreeSet<(String, String)> {
        fn files(dir: &Path, out: &mut Vec<PathBuf>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    files(&path, out);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    out.push(path);
                }
            }
        }
        let mut sources = Vec::new();
        files(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut sources,
        );
        let mut routes = BTreeSet::new();
        let marker = concat!("path", "!(");
        for file in sources {
            let text = std::fs::read_to_string(&file).unwrap();
            let mut rest = text.as_str();
            while let Some(at) = rest.find(marker) {
                rest = &rest[at + marker.len()..];
                let close = rest.find(')').unwrap();
                let path: String = rest[..close]
                    .split('/')
                    .map(|segment| match segment.trim().strip_prefix('"') {
                        Some(literal) => format!("/{}", literal.trim_end_matches('"')),
                        None => "/{}".to_string(),
                    })
                    .collect();
                // The method filter that follows, before the next route.
                let scope = &rest[..rest.find(marker).unwrap_or(rest.len())];
                let method = ["get", "post", "put", "patch", "delete"]
                    .into_iter()
                    .filter_map(|m| scope.find(&format!("warp::{m}()")).map(|i| (i, m)))
                    .min()
                    .map_or("any", |(_, m)| m);
                routes.insert((method.to_uppercase(), path));
            }
        }
        routes
    }

    #[test]
    fn the_methods_of_a_path_are_those_the_table_serves_there() {
        assert_eq!(allowed_methods("/api/v1/me/"), ["GET"]);
        assert_eq!(
            allowed_methods("/api/v1/chat/abc"),
            ["GET", "POST", "PATCH"]
        );
        assert_eq!(
            allowed_methods("/api/v1/messages/7/reactions/%F0%9F%91%8D/?x=1"),
            ["PUT", "DELETE"]
        );
        assert_eq!(allowed_methods("/api/v1/tokens/"), ["GET", "DELETE"]);
        assert!(allowed_methods("/api/v1/nope/").is_empty());
        assert!(allowed_methods("/api/v1/chat//").is_empty());
    }

    #[test]
    fn the_table_lists_exactly_the_routes_the_features_serve() {
        let table: BTreeSet<_> = TABLE
            .iter()
            .map(|r| (r.method.to_string(), r.shape()))
            .collect();
        assert_eq!(table.len(), TABLE.len(), "a route is listed twice");
        assert_eq!(routes_in_source(), table);
    }
}
