//! `/healthz` and `/metrics`.

use crate::common;

use std::collections::HashMap;

use common::TestServer;
use serde_json::json;

// ---------------------------------------------------------------------------------------------
// /healthz and /metrics

#[tokio::test]
async fn healthz_checks_the_database_and_fails_when_it_cannot_write_or_is_shutting_down() {
    let s = TestServer::start().await;
    let (status, body) = s.call("GET", "/healthz", None, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["database"], "ok");
    assert!(body["schema_version"].as_i64().unwrap() >= 1);

    // A database whose writer has stopped is not healthy.
    s.state.store.close().await.unwrap();
    let (status, body) = s.call("GET", "/healthz", None, None).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["database"], "database_error");

    let s = TestServer::start().await;
    s.state.lifecycle.begin_shutdown();
    let (status, body) = s.call("GET", "/healthz", None, None).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["database"], "shutting_down");
}

/// Parses the Prometheus text format into `name{labels}` → value, checking every line.
fn parse_metrics(text: &str) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for line in text.lines() {
        if line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
            continue;
        }
        let (name, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value {line:?}"));
        assert!(
            name.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_'),
            "bad name {line:?}"
        );
        out.insert(name.to_string(), value);
    }
    out
}

async fn scrape(s: &TestServer) -> HashMap<String, f64> {
    let res = s.http.get(s.url("/metrics")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let content_type = res.headers()["content-type"].to_str().unwrap().to_string();
    assert!(content_type.starts_with("text/plain; version=0.0.4"));
    parse_metrics(&res.text().await.unwrap())
}

#[tokio::test]
async fn metrics_count_sockets_rooms_messages_deliveries_latencies_and_rejections() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let room = s.room(&alice, &[&bob], None).await;
    let before = scrape(&s).await;

    let (mut a, _) = s.ws(&room, &alice, "").await;
    let (mut b, _) = s.ws(&room, &bob, "").await;
    a.next_of("presence").await;
    for i in 0..3 {
        a.say(&format!("hello {i}"), &format!("m{i}")).await;
        b.next_of("message").await;
    }
    let (status, _) = s
        .call(
            "POST",
            "/api/v1/login/",
            None,
            Some(json!({"username": "alice", "password": "wrong password"})),
        )
        .await;
    assert_eq!(status, 401);
    let after = scrape(&s).await;

    // Gauges belong to this server.
    assert_eq!(after["chat_websocket_connections"], 2.0);
    assert_eq!(after["chat_rooms_active"], 1.0);
    assert_eq!(after["chat_last_message_id"], 3.0);
    // Counters are process-wide (other tests run beside this one): check the growth.
    let grew = |name: &str| after[name] - before.get(name).copied().unwrap_or(0.0);
    assert!(grew("chat_messages_stored_total") >= 3.0);
    // 3 messages to 2 sockets, plus presence.
    assert!(grew("chat_deliveries_total") >= 6.0);
    assert!(grew("chat_send_seconds_count") >= 3.0);
    assert!(grew("chat_write_batch_seconds_count") >= 3.0);
    assert!(after["chat_send_seconds_bucket{le=\"+Inf\"}"] >= after["chat_send_seconds_count"]);
    assert!(grew("chat_rejected_requests_total{reason=\"invalid_credentials\"}") >= 1.0);
    assert!(after["chat_http_connections"] >= 1.0);

    drop((a, b));
}

#[tokio::test]
async fn with_a_metrics_token_only_its_holder_reads_metrics() {
    let mut config = common::test_config();
    config.metrics.token = Some("prometheus-scrape-token-1".into());
    let s = TestServer::start_with(config).await;
    let get = |auth: Option<&'static str>| {
        let mut req = s.http.get(s.url("/metrics"));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        async move { req.send().await.unwrap() }
    };
    for wrong in [
        None,
        Some("Bearer nope"),
        Some("Token prometheus-scrape-token-1"),
    ] {
        let res = get(wrong).await;
        assert_eq!(res.status(), 401, "{wrong:?}");
        let body: serde_json::Value = res.json().await.unwrap();
        assert_eq!(body["error"]["code"], "not_authenticated");
    }
    let res = get(Some("Bearer prometheus-scrape-token-1")).await;
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().contains("chat_uptime_seconds"));
    // The health check stays open to anyone: load balancers send no token.
    assert_eq!(
        s.http.get(s.url("/healthz")).send().await.unwrap().status(),
        200
    );
}

#[tokio::test]
async fn refused_websocket_upgrades_are_counted_by_reason() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let carol = s.user("carol").await;
    let room = s.room(&alice, &[&bob], None).await;
    let before = scrape(&s).await;
    let count = |m: &HashMap<String, f64>, reason: &str| {
        m[&format!("chat_websocket_refusals_total{{reason=\"{reason}\"}}")]
    };
    assert_eq!(s.ws_refusal("/ws/?token=nope").await.0, 401);
    assert_eq!(s.ws_refusal("/ws/").await.0, 401);
    let path = format!("/ws/chat/{room}/?token={}", carol.token);
    assert_eq!(s.ws_refusal(&path).await.0, 404);
    let evil = [("origin", "https://evil.example")];
    let path = format!("/ws/?token={}", alice.token);
    assert_eq!(s.ws_refused(&path, &evil).await, 403);
    // A plain GET of a socket's URL is refused too.
    let plain = s.http.get(s.url(&path)).send().await.unwrap();
    assert_eq!(plain.status(), 426);
    // An accepted socket counts nothing.
    let _ok = s.ws_all(&alice, "").await;
    let after = scrape(&s).await;
    for (reason, more) in [
        ("not_authenticated", 2.0),
        ("not_found", 1.0),
        ("forbidden", 1.0),
        ("upgrade_required", 1.0),
        ("rate_limited", 0.0),
    ] {
        assert_eq!(
            count(&after, reason) - count(&before, reason),
            more,
            "{reason}"
        );
    }
}
