//! Operational endpoints: `/healthz` for load balancers and supervisors, `/metrics` for
//! Prometheus, and `/api/v1/openapi.json`, the API description (see `openapi.json`), served
//! with this server's own limits and its emoji table filled in.

use std::time::Duration;

use serde_json::json;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::http::header::{CONTENT_TYPE, HeaderValue};
use warp::{Filter, Reply};

use sha2::Digest;

use crate::error::ApiError;
use crate::filters::with_state;
use crate::metrics::{METRICS, Snapshot, render};
use crate::state::{AppState, ClientAddr};

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
        .and(warp::ext::optional::<ClientAddr>())
        .and(warp::header::optional::<String>("authorization"))
        .and(with_state(state))
        .then(
            |addr: Option<ClientAddr>, authorization: Option<String>, state: AppState| async move {
                let token = state.config.metrics.token.as_deref();
                match metrics_access(token, addr, authorization.as_deref()) {
                    Ok(()) => metrics(state).await,
                    Err(e) => e.into_response(),
                }
            },
        )
        .map(Reply::into_response);
    let document = bytes::Bytes::from(served_document(&state.config));
    let openapi = warp::path!("api" / "v1" / "openapi.json")
        .and(warp::get())
        .map(move || openapi(document.clone()));
    health.or(metrics).unify().or(openapi).unify().boxed()
}

/// `GET /healthz`: 200 when the database answers a read and the writer commits; 503 while
/// shutting down, while writes fail for the storage (`storage_full`: the disk is full or
/// failing) or when the database does not answer in time.
async fn healthz(state: AppState) -> warp::reply::Response {
    if state.lifecycle.is_shutting_down() {
        return health_reply(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", None);
    }
    match tokio::time::timeout(HEALTH_TIMEOUT, state.store.health()).await {
        Ok(Ok(version)) => health_reply(StatusCode::OK, "ok", Some(version)),
        // Logged once per episode by the store.
        Ok(Err(e)) if e.is_storage_fault() => {
            let mut reply = health_reply(StatusCode::SERVICE_UNAVAILABLE, "storage_full", None);
            reply.headers_mut().insert(
                warp::http::header::RETRY_AFTER,
                HeaderValue::from(crate::error::STORAGE_RETRY_AFTER_SECS),
            );
            reply
        }
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

/// Who may read `/metrics`: with `metrics.token`, whoever sends it as a bearer token; without,
/// clients on this machine only.
fn metrics_access(
    token: Option<&str>,
    addr: Option<ClientAddr>,
    authorization: Option<&str>,
) -> Result<(), ApiError> {
    match token {
        Some(token) => {
            let given = authorization
                .and_then(|h| h.trim().split_once(' '))
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                .map(|(_, t)| t.trim());
            // Digests compared, so the time taken says nothing about the token.
            let digest = |t: &str| sha2::Sha256::digest(t.as_bytes());
            match given {
                Some(t) if digest(t) == digest(token) => Ok(()),
                _ => Err(ApiError::Unauthorized),
            }
        }
        None if addr.is_some_and(|a| a.0.ip().to_canonical().is_loopback()) => Ok(()),
        None => Err(ApiError::Forbidden(
            "/metrics is served to this machine only; set metrics.token to read it from elsewhere",
        )),
    }
}

/// `GET /metrics`: Prometheus text exposition.
async fn metrics(state: AppState) -> warp::reply::Response {
    let last_message_id = state.store.last_message_id().await.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "metrics: cannot read the last message id");
        0
    });
    let (uploads_stored, upload_bytes_stored) =
        state.store.upload_totals().await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "metrics: cannot count the uploads");
            (0, 0)
        });
    let pressure = state.store.pressure();
    let snapshot = Snapshot {
        websocket_connections: state.connections.total(),
        active_rooms: state.hub.active_rooms() as u64,
        last_message_id,
        uptime: state.lifecycle.uptime(),
        queued_reads: pressure.queued_reads,
        queued_writes: pressure.queued_writes,
        storage_failing: pressure.storage_failing,
        uploads_stored,
        upload_bytes_stored,
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

    #[test]
    fn metrics_are_for_this_machine_or_the_holder_of_the_token() {
        use super::{ClientAddr, metrics_access};
        let at = |a: &str| Some(ClientAddr(a.parse().unwrap()));
        for local in [
            "127.0.0.1:5000",
            "127.0.0.9:5000",
            "[::1]:5000",
            "[::ffff:127.0.0.1]:1",
        ] {
            assert!(metrics_access(None, at(local), None).is_ok(), "{local}");
        }
        for remote in [
            "192.168.1.5:5000",
            "[2001:db8::1]:5000",
            "[::ffff:10.0.0.1]:1",
        ] {
            let refused = metrics_access(None, at(remote), None).unwrap_err();
            assert_eq!(refused.status(), 403, "{remote}");
        }
        assert!(metrics_access(None, None, None).is_err());
        let token = Some("0123456789abcdef");
        let remote = at("192.168.1.5:5000");
        assert!(metrics_access(token, remote, Some("Bearer 0123456789abcdef")).is_ok());
        assert!(metrics_access(token, remote, Some("bearer  0123456789abcdef ")).is_ok());
        for wrong in [
            None,
            Some("Bearer 0123456789abcdeF"),
            Some("Token 0123456789abcdef"),
        ] {
            let refused = metrics_access(token, remote, wrong).unwrap_err();
            assert_eq!(refused.status(), 401, "{wrong:?}");
        }
        // With a token, even this machine needs it.
        assert!(metrics_access(token, at("127.0.0.1:1"), None).is_err());
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
