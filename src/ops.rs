//! Operational endpoints: `/healthz` for load balancers and supervisors, `/metrics` for
//! Prometheus, and `/api/v1/openapi.json`, the API description (see `openapi.json`).

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
    let openapi = warp::path!("api" / "v1" / "openapi.json")
        .and(warp::get())
        .map(openapi);
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

/// `GET /api/v1/openapi.json`: the OpenAPI 3.1 document.
fn openapi() -> warp::reply::Response {
    let mut response = OPENAPI.into_response();
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
}
