//! The route table: the one module that composes every feature's routes, with the policies
//! that apply to all of them (CORS, security headers, the access log, error replies).

use warp::http::HeaderValue;
use warp::http::header::HeaderMap;
use warp::{Filter, Reply};

use crate::error::recover;
use crate::state::AppState;

/// Headers on every response.
fn security_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    for (name, value) in [
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        ("cache-control", "no-store"),
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
        .or(crate::ws::routes(state))
        .unify()
        .or(crate::ops::routes(state))
        .unify()
        .or(crate::web::routes(state))
        .unify();
    let log = warp::log::custom(|info| {
        // The path only: a WebSocket token may travel in the query string.
        tracing::info!(
            target: "chat_server::access",
            method = %info.method(),
            path = info.path(),
            status = info.status().as_u16(),
            micros = info.elapsed().as_micros() as u64,
        );
    });
    let api = crate::cors::guard(&state.cors).or(api).unify();
    crate::cors::wrap(&state.cors, api.recover(recover).unify())
        .with(warp::reply::with::headers(security_headers()))
        // Only where a route set none: the web client's page brings its own policy.
        .with(warp::reply::with::default_header(
            "content-security-policy",
            "default-src 'none'; frame-ancestors 'none'",
        ))
        .with(log)
        .map(Reply::into_response)
}
