//! Operational endpoints: `/healthz` for load balancers and supervisors, `/metrics` for
//! Prometheus, and `/api/v1/openapi.json`, the API description (see `openapi.json`), served
//! with this server's own limits and its emoji table filled in.

use std::time::Duration;

use serde_json::json;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::http::header::{CONTENT_TYPE, HeaderValue};
use warp::{Filter, Reply};

use crate::filters::with_state;
use crate::metrics::{METRICS, Snapshot, render};
use crate::state::AppState;

/// The OpenAPI 3.1 description of the REST API.
pub const OPENAPI: &str = include_str!("../openapi.json");

/// A database that takes longer than this to answer is reported unhealthy.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

pub fn routes(state: &AppState) -> BoxedFilter<(warp::reply::Response,)> {
    let health = warp::path!("healthz")
        .and(warp::get())
        .and(with_state(state))
        .then(healthz)
        .map(Reply::into_response);
    let metrics = warp::path!("metrics")
        .and(warp::get())
        .and(with_state(state))
        .then(metrics)
        .map(Reply::into_response);
    let document = bytes::Bytes::from(served_document(&state.config));
    let openapi = warp::path!("api" / "v1" / "openapi.json")
        .and(warp::get())
        .map(move || openapi(document.clone()));
    health.or(metrics).unify().or(openapi).unify().boxed()
}

/// `GET /healthz`: 200 when the database answers a read and the writer commits; 503 while
/// shutting down or when the database does not answer in time.
async fn healthz(state: AppState) -> warp::reply::Response {
    if state.lifecycle.is_shutting_down() {
        return health_reply(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", None);
    }
    match tokio::time::timeout(HEALTH_TIMEOUT, state.store.health()).await {
        Ok(Ok(version)) => health_reply(StatusCode::OK, "ok", Some(version)),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "health check failed");
            health_reply(StatusCode::SERVICE_UNAVAILABLE, "database_error", None)
        }
        Err(_) => health_reply(StatusCode::SERVICE_UNAVAILABLE, "database_timeout", None),
    }
}

fn health_reply(status: StatusCode, what: &str, schema: Option<i64>) -> warp::reply::Response {
    let ok = status == StatusCode::OK;
    let body = json!({
        "status": if ok { "ok" } else { "unavailable" },
        "database": what,
        "schema_version": schema,
    });
    warp::reply::with_status(warp::reply::json(&body), status).into_response()
}

/// `GET /metrics`: Prometheus text exposition.
async fn metrics(state: AppState) -> warp::reply::Response {
    let last_message_id = state.store.last_message_id().await.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "metrics: cannot read the last message id");
        0
    });
    let snapshot = Snapshot {
        websocket_connections: state.connections.total(),
        active_rooms: state.hub.active_rooms() as u64,
        last_message_id,
        uptime: state.lifecycle.uptime(),
    };
    let mut response = render(&METRICS, &snapshot).into_response();
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// Every emoji of the emoji table, in each of its skin tones, as the server stores it.
pub fn stored_emoji() -> impl Iterator<Item = &'static str> {
    emojis::iter()
        .flat_map(|e| match e.skin_tones() {
            Some(tones) => tones.collect(),
            None => vec![e],
        })
        .map(emojis::Emoji::as_str)
}

/// Every spelling a reaction's `emoji` may take: each stored emoji, and the same without its
/// variation selectors where the table knows it so.
pub fn reaction_emoji() -> Vec<String> {
    let mut all = Vec::new();
    for emoji in stored_emoji() {
        all.push(emoji.to_string());
        let bare = crate::chat::unqualified(emoji);
        if bare != emoji && crate::chat::one_emoji(&bare).is_ok_and(|e| e == emoji) {
            all.push(bare);
        }
    }
    all
}

/// The document as this server serves it: `openapi.json` with the configured longest
/// message as the content's `maxLength`, and the reaction path's `emoji` as the exact list
/// the server accepts, so the document is the contract a generated client can trust.
pub fn served_document(config: &crate::config::Config) -> String {
    let mut doc: serde_json::Value = serde_json::from_str(OPENAPI).expect("openapi.json is JSON");
    let schemas = &mut doc["components"]["schemas"];
    for name in [
        "PostMessageRequest",
        "EditMessageRequest",
        "HookPostRequest",
    ] {
        schemas[name]["properties"]["content"]["maxLength"] =
            json!(config.limits.max_message_chars);
    }
    let reactions = &mut doc["paths"]["/api/v1/messages/{message_id}/reactions/{emoji}/"];
    if let Some(params) = reactions["parameters"].as_array_mut() {
        for param in params.iter_mut().filter(|p| p["name"] == "emoji") {
            param["schema"]["enum"] = json!(reaction_emoji());
        }
    }
    doc.to_string()
}

/// `GET /api/v1/openapi.json`: the OpenAPI 3.1 document.
fn openapi(document: bytes::Bytes) -> warp::reply::Response {
    let mut response = warp::reply::Response::new(document.into());
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_openapi_document_is_json_for_openapi_3_1() {
        let doc: serde_json::Value = serde_json::from_str(super::OPENAPI).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        assert!(doc["paths"].as_object().is_some_and(|p| !p.is_empty()));
    }

    /// Every emoji the served document lists is one a reaction accepts, spelled as stored.
    #[test]
    fn the_served_emoji_list_is_what_reactions_accept() {
        let listed = super::reaction_emoji();
        assert!(listed.len() > 3000, "{}", listed.len());
        for emoji in &listed {
            let stored = crate::chat::one_emoji(emoji).unwrap();
            assert!(super::stored_emoji().any(|e| e == stored), "{emoji}");
        }
        for text in ["0", "a", "👍👍", "👍x", ""] {
            assert!(crate::chat::one_emoji(text).is_err(), "{text}");
            assert!(!listed.iter().any(|e| e == text), "{text}");
        }
        let mut config = crate::config::Config::default();
        config.limits.max_message_chars = 123;
        let doc: serde_json::Value =
            serde_json::from_str(&super::served_document(&config)).unwrap();
        let post = &doc["components"]["schemas"]["PostMessageRequest"]["properties"]["content"];
        assert_eq!(post["maxLength"], 123);
        let path = &doc["paths"]["/api/v1/messages/{message_id}/reactions/{emoji}/"];
        let emoji = path["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "emoji")
            .unwrap();
        assert_eq!(
            emoji["schema"]["enum"].as_array().unwrap().len(),
            listed.len()
        );
    }
}
