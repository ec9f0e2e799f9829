//! The web client at `/`: how it is served, and end-to-end tests in a real headless Chromium.
//!
//! The browser tests skip, saying why, on a machine without Chromium and chromedriver;
//! `CHAT_BROWSER_TESTS=require` (set by `.ci/run`) turns that into a failure.
//! `CHAT_SCREENSHOTS=docs` also saves their screenshots to `docs/screenshots/`.

mod browser;
mod common;

use std::net::SocketAddr;

use browser::{Driver, Server, config, enter, log_in, sign_up, tab};
use common::TestServer;
use fantoccini::key::Key;
use serde_json::json;

const DESKTOP: (u32, u32) = (1280, 800);
const PHONE: (u32, u32) = (390, 844);

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

#[tokio::test]
async fn page_is_served_with_its_own_strict_csp_and_the_api_keeps_its_own() {
    let server = TestServer::start().await;
    let page = server.http.get(server.url("/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let headers = page.headers().clone();
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    let csp = headers["content-security-policy"].to_str().unwrap();
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
        "form-action 'none'",
        "base-uri 'none'",
        "manifest-src 'self'",
        "worker-src 'self'",
    ] {
        assert!(csp.contains(directive), "{directive} missing from {csp}");
    }
    assert!(!csp.contains("unsafe"), "{csp}");
    assert_eq!(headers.get_all("content-security-policy").iter().count(), 1);
    assert_eq!(headers["x-content-type-options"], "nosniff");
    let html = page.text().await.unwrap();
    // No inline script or style for the policy to have to allow.
    assert!(html.contains(r#"<script src="/assets/app.js" defer></script>"#));
    assert_eq!(html.matches("<script").count(), 1);
    assert!(!html.contains("<style") && !html.contains("style="));

    for (path, content_type) in [
        ("/assets/app.js", "text/javascript; charset=utf-8"),
        ("/assets/app.css", "text/css; charset=utf-8"),
        ("/assets/icon.svg", "image/svg+xml"),
    ] {
        let res = server.http.get(server.url(path)).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
        assert_eq!(res.headers()["content-type"], content_type, "{path}");
    }
    let script = server
        .http
        .get(server.url("/assets/app.js"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!script.contains("innerHTML") && !script.contains("insertAdjacentHTML"));

    let (status, body) = server.call("GET", "/assets/nothing.js", None, None).await;
    assert_eq!((status, &body["error"]["code"]), (404, &json!("not_found")));
    let api = server
        .http
        .get(server.url("/api/v1/me/"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        api.headers()["content-security-policy"],
        "default-src 'none'; frame-ancestors 'none'"
    );
}

/// The width and height a PNG's header gives.
fn png_size(png: &[u8]) -> (u32, u32) {
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "a PNG");
    let be = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().unwrap());
    (be(16), be(20))
}

#[tokio::test]
async fn the_client_is_installable_and_its_worker_is_versioned_by_what_it_serves() {
    let server = TestServer::start().await;
    let html = server
        .http
        .get(server.url("/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains(r#"<link rel="manifest" href="/assets/manifest.webmanifest">"#));

    let res = server
        .http
        .get(server.url("/assets/manifest.webmanifest"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/manifest+json");
    let manifest: serde_json::Value = res.json().await.expect("the manifest is JSON");
    assert_eq!(manifest["name"], "Chat");
    assert_eq!(manifest["short_name"], "Chat");
    assert_eq!(manifest["start_url"], "/");
    assert_eq!(manifest["display"], "standalone");
    // The light theme's colours; the page's theme-color meta tags give the dark one too.
    assert_eq!(manifest["background_color"], "#eef1f6");
    assert!(html.contains(r##"media="(prefers-color-scheme: dark)" content="#0d1117""##));
    let mut sizes = Vec::new();
    for icon in manifest["icons"].as_array().unwrap() {
        let src = icon["src"].as_str().unwrap();
        let res = server.http.get(server.url(src)).send().await.unwrap();
        assert_eq!(res.status(), 200, "{src}");
        assert_eq!(
            res.headers()["content-type"],
            icon["type"].as_str().unwrap()
        );
        let body = res.bytes().await.unwrap();
        if icon["type"] == "image/png" {
            let (w, h) = png_size(&body);
            assert_eq!(icon["sizes"], format!("{w}x{h}"), "{src}");
            sizes.push((w, icon["purpose"].as_str().unwrap().to_string()));
        }
    }
    for wanted in [(192, "any"), (512, "any"), (512, "maskable")] {
        assert!(
            sizes.contains(&(wanted.0, wanted.1.to_string())),
            "{wanted:?} in {sizes:?}"
        );
    }

    let res = server
        .http
        .get(server.url("/assets/sw.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    // Never from the browser's HTTP cache: an upgrade's worker is seen at the next check.
    assert_eq!(res.headers()["cache-control"], "no-store");
    // From /assets/, it may control the whole origin.
    assert_eq!(res.headers()["service-worker-allowed"], "/");
    let worker = res.text().await.unwrap();
    let version = worker
        .split("const VERSION = '")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .expect("sw.js names its version")
        .to_string();
    assert_eq!(version.len(), 16, "{version}");
    assert!(version.bytes().all(|b| b.is_ascii_hexdigit()), "{version}");
    // The shell it keeps is the page's own files; never the API, the sockets or the probes.
    for path in ["/api/", "/ws/", "/healthz", "/metrics"] {
        assert!(!worker.contains(&format!("'{path}")), "{path} in sw.js");
    }

    // A server serving another client (`[web] dir`) serves another worker, byte for byte.
    let client = browser::changed_client("\n// another build\n");
    let mut config = common::test_config();
    config.web.dir = Some(client.path().to_path_buf());
    let other = TestServer::start_with(config).await;
    let other_worker = other
        .http
        .get(other.url("/assets/sw.js"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_ne!(other_worker, worker);
    assert!(!other_worker.contains(&version));
    let script = other
        .http
        .get(other.url("/assets/app.js"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(script.ends_with("// another build\n"));
    // The same files, the same version: nothing to update.
    let again = TestServer::start().await;
    let same = again
        .http
        .get(again.url("/assets/sw.js"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(same, worker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_people_sign_up_chat_live_see_typing_and_reads_and_find_history_after_reload() {
    let Some(tools) = browser::tools(
        "two_people_sign_up_chat_live_see_typing_and_reads_and_find_history_after_reload",
    ) else {
        return;
    };
    let server = Server::start(config(None), any_port());
    let driver = Driver::start(&tools);
    let alice = driver.browser(DESKTOP.0, DESKTOP.1).await;
    let bob = driver.browser(DESKTOP.0, DESKTOP.1).await;

    alice.goto(&server.url("/")).await;
    alice.visible("#login-form").await;
    alice.screenshot("desktop-login").await;
    sign_up(&alice, &server, "alice", "Alice").await;
    sign_up(&bob, &server, "bob", "Bob").await;
    assert_eq!(
        alice
            .js(
                "return document.getElementById('me-name').textContent",
                vec![]
            )
            .await,
        "Alice"
    );

    // Alice starts a direct chat with Bob from the people list.
    alice.click("#new-chat").await;
    alice.click(".user-row[data-username='bob'] input").await;
    let label = alice
        .visible("#new-chat-submit")
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(label, "Message Bob");
    alice.screenshot("desktop-new-chat").await;
    alice.click("#new-chat-submit").await;
    let room = alice.room_id().await;
    alice.visible("#room-view").await;
    assert_eq!(
        alice
            .js(
                "return document.getElementById('room-name').textContent",
                vec![]
            )
            .await,
        "Bob"
    );

    // Enter sends.
    alice
        .type_into("#input", &format!("Hi Bob! Lunch at 12:30?{}", enter()))
        .await;
    alice.wait_message("Hi Bob! Lunch at 12:30?").await;
    alice
        .wait_for(
            "the message to be acknowledged",
            "const m = document.querySelector('#message-list .msg.mine'); \
             return m && m.dataset.id && m.dataset.status === 'sent';",
            vec![],
        )
        .await;

    // Bob's room list picks up the new room with the message and an unread badge.
    let item = format!("#rooms .room-item[data-room-id='{room}']");
    bob.wait_for(
        "an unread badge in Bob's room list",
        "const el = document.querySelector(arguments[0]); \
         return el && el.querySelector('.badge [aria-hidden]')?.textContent === '1' \
            && el.querySelector('.room-preview').textContent === 'Hi Bob! Lunch at 12:30?';",
        vec![json!(item)],
    )
    .await;
    bob.screenshot("desktop-unread").await;

    // Bob opens it: he sees the message, and Alice sees that he read it and is here.
    bob.click(&item).await;
    bob.wait_message("Hi Bob! Lunch at 12:30?").await;
    alice
        .wait_for(
            "Alice's message to show as read",
            "return document.querySelector('#message-list .msg.mine').dataset.status === 'read';",
            vec![],
        )
        .await;
    alice
        .wait_for(
            "Bob to show as online",
            "return document.getElementById('room-status').textContent === 'Online';",
            vec![],
        )
        .await;
    bob.gone(&format!("{item} .badge")).await;

    // Bob types: Alice sees it; he sends: she gets the message live and the indicator goes.
    bob.type_into("#input", "Sounds good").await;
    alice
        .wait_for(
            "the typing indicator",
            "return document.getElementById('typing').textContent === 'Bob is typing';",
            vec![],
        )
        .await;
    bob.type_into("#input", &format!(", see you there{}", enter()))
        .await;
    alice.wait_message("Sounds good, see you there").await;
    alice
        .wait_for(
            "the typing indicator to clear",
            "return document.getElementById('typing').textContent === '';",
            vec![],
        )
        .await;

    // User text is text: markup arrives as the characters typed, never as elements.
    let markup = r#"<img src=x onerror="window.pwned=1"><b>bold?</b>"#;
    alice
        .type_into("#input", &format!("{markup}{}", enter()))
        .await;
    bob.wait_message(markup).await;
    assert_eq!(
        bob.js(
            "return document.querySelectorAll('#message-list .text *').length === 0 \
                 && window.pwned === undefined;",
            vec![]
        )
        .await,
        true
    );

    // A longer exchange, for the screenshots.
    for (who, text) in [
        (&bob, "Should I book a table? It gets busy on Fridays."),
        (&alice, "Yes please, for three — Sam is joining us."),
        (&bob, "Done! Table by the window."),
    ] {
        who.type_into("#input", &format!("{text}{}", enter())).await;
        alice.wait_message(text).await;
        bob.wait_message(text).await;
    }
    alice.screenshot("desktop-chat").await;

    // The token never appears in the page's URL.
    let (url, token) = (
        alice.js("return location.href", vec![]).await,
        alice
            .js(
                "return JSON.parse(sessionStorage.getItem('chat.session')).token",
                vec![],
            )
            .await,
    );
    assert!(!url.as_str().unwrap().contains(token.as_str().unwrap()));

    // A reload keeps the session and the open room, and shows the history in order.
    let before = bob.message_texts().await;
    assert_eq!(before.len(), 6, "{before:?}");
    bob.client.refresh().await.unwrap();
    bob.wait_message("Done! Table by the window.").await;
    assert_eq!(bob.message_texts().await, before);

    alice.close().await;
    bob.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_survives_a_server_restart_and_resumes_with_what_it_missed() {
    let Some(tools) =
        browser::tools("page_survives_a_server_restart_and_resumes_with_what_it_missed")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.db");
    let server = Server::start(config(Some(&db)), any_port());
    let addr = server.addr;
    let (_, alice_token) = server.user("alice", "Alice").await;
    let (bob_id, bob_token) = server.user("bob", "Bob").await;
    let (status, room) = server
        .call(
            "POST",
            "/api/v1/chats/",
            Some(&alice_token),
            Some(json!({"members": [bob_id]})),
        )
        .await;
    assert_eq!(status, 201);
    let room = room["room_id"].as_str().unwrap().to_string();
    server
        .post_message(&room, &bob_token, "Before the restart")
        .await;

    let driver = Driver::start(&tools);
    let alice = driver.browser(DESKTOP.0, DESKTOP.1).await;
    log_in(&alice, &server, "alice").await;
    alice
        .click(&format!("#rooms .room-item[data-room-id='{room}']"))
        .await;
    alice.wait_message("Before the restart").await;
    alice
        .wait_for(
            "the room socket",
            "return document.getElementById('room-status').textContent !== 'Connecting…';",
            vec![],
        )
        .await;
    assert!(!alice.is_visible("#offline").await);

    // The server dies: the page says so, and keeps what Alice writes meanwhile.
    server.kill();
    alice.visible("#offline").await;
    alice
        .type_into("#input", &format!("Written while offline{}", enter()))
        .await;
    alice
        .wait_for(
            "the unsent message to show as pending",
            "const m = [...document.querySelectorAll('#message-list .msg.mine')].pop(); \
             return m && m.dataset.status === 'pending';",
            vec![],
        )
        .await;
    alice.screenshot("desktop-offline").await;

    // Bob posts through another server process on the same database while Alice's page
    // cannot connect, so the page can only learn of it by resuming with `since`.
    let side = Server::start(config(Some(&db)), any_port());
    side.post_message(&room, &bob_token, "Posted while you were away")
        .await;
    side.kill();

    // The server comes back on the same port and file.
    let server = Server::start(config(Some(&db)), addr);
    alice
        .wait_for_within(
            std::time::Duration::from_secs(40),
            "the page to reconnect",
            "return document.getElementById('offline').hidden;",
            vec![],
        )
        .await;
    alice.wait_message("Posted while you were away").await;
    alice
        .wait_for(
            "the queued message to be delivered",
            "const m = [...document.querySelectorAll('#message-list .msg.mine')].pop(); \
             return m && m.dataset.id && m.dataset.status !== 'pending';",
            vec![],
        )
        .await;
    assert_eq!(
        alice.message_texts().await,
        [
            "Before the restart",
            "Posted while you were away",
            "Written while offline"
        ]
    );

    // The server stored the queued message exactly once, and live delivery works again.
    let (_, history) = server
        .call(
            "GET",
            &format!("/api/v1/chat/{room}/"),
            Some(&bob_token),
            None,
        )
        .await;
    let texts = common::contents(&history);
    assert_eq!(
        texts,
        [
            "Written while offline",
            "Posted while you were away",
            "Before the restart"
        ]
    );
    server.post_message(&room, &bob_token, "Live again").await;
    alice.wait_message("Live again").await;
    alice.close().await;
}

/// Creates a room of `owner` with `members` through the API; returns its id.
async fn room(server: &Server, owner: &str, members: &[i64], name: Option<&str>) -> String {
    let (status, room) = server
        .call(
            "POST",
            "/api/v1/chats/",
            Some(owner),
            Some(json!({"members": members, "name": name})),
        )
        .await;
    assert_eq!(status, 201, "{room}");
    room["room_id"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn older_history_loads_as_you_scroll_up() {
    let Some(tools) = browser::tools("older_history_loads_as_you_scroll_up") else {
        return;
    };
    let mut config = config(None);
    config.limits.send_rate_per_sec = 10_000.0;
    config.limits.send_burst = 10_000;
    let server = Server::start(config, any_port());
    server.user("alice", "Alice").await;
    let (bob_id, bob_token) = server.user("bob", "Bob").await;
    let room = room(&server, &bob_token, &[bob_id - 1], None).await;
    for i in 1..=130 {
        server
            .post_message(&room, &bob_token, &format!("Message {i}"))
            .await;
    }

    let driver = Driver::start(&tools);
    let alice = driver.browser(DESKTOP.0, DESKTOP.1).await;
    log_in(&alice, &server, "alice").await;
    let item = format!("#rooms .room-item[data-room-id='{room}']");
    alice
        .wait_for(
            "the unread badge",
            "return document.querySelector(arguments[0] + ' .badge [aria-hidden]')?.textContent === '99+';",
            vec![json!(item)],
        )
        .await;
    alice.click(&item).await;
    alice.wait_message("Message 130").await;
    let first_page: Vec<String> = (81..=130).map(|i| format!("Message {i}")).collect();
    assert_eq!(alice.message_texts().await, first_page);
    assert!(alice.is_visible("#load-older").await);

    // Scrolling to the top fetches the page before, and keeps the reader where they were.
    let scroll_top = "const box = document.getElementById('messages'); box.scrollTop = 0; \
                      box.dispatchEvent(new Event('scroll')); return true;";
    alice.js(scroll_top, vec![]).await;
    alice
        .wait_for(
            "the second page",
            "return document.querySelectorAll('#message-list .msg').length === 100;",
            vec![],
        )
        .await;
    alice
        .wait_for(
            "the view to stay on the message that was at the top",
            "const box = document.getElementById('messages'); \
             const el = document.querySelector('#message-list .msg[data-id]:nth-child(52)'); \
             return box.scrollTop > 0 && el.textContent.startsWith('Message 81');",
            vec![],
        )
        .await;
    alice.js(scroll_top, vec![]).await;
    alice.visible("#history-start").await;
    let all: Vec<String> = (1..=130).map(|i| format!("Message {i}")).collect();
    assert_eq!(alice.message_texts().await, all);
    assert!(!alice.is_visible("#load-older").await);
    alice.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phone_width_shows_one_pane_at_a_time() {
    let Some(tools) = browser::tools("phone_width_shows_one_pane_at_a_time") else {
        return;
    };
    let server = Server::start(config(None), any_port());
    let (alice_id, alice_token) = server.user("alice", "Alice").await;
    let (bob_id, bob_token) = server.user("bob", "Bob").await;
    let (carol_id, carol_token) = server.user("carol", "Carol").await;
    let direct = room(&server, &bob_token, &[alice_id], None).await;
    server
        .post_message(&direct, &bob_token, "Did you get the photos?")
        .await;
    let group = room(
        &server,
        &alice_token,
        &[bob_id, carol_id],
        Some("Weekend trip"),
    )
    .await;
    for (token, text) in [
        (&alice_token, "Train leaves at 9:40 on Saturday."),
        (&bob_token, "I'll bring snacks."),
        (&carol_token, "Can someone lend me a sleeping bag?"),
        (&carol_token, "Mine has a broken zip."),
    ] {
        server.post_message(&group, token, text).await;
    }

    let driver = Driver::start(&tools);
    let alice = driver.phone(PHONE.0, PHONE.1).await;
    alice.goto(&server.url("/")).await;
    alice.visible("#login-form").await;
    assert_eq!(alice.js("return innerWidth", vec![]).await, PHONE.0);
    alice.screenshot("phone-login").await;

    // A taken username is reported on its field.
    alice.click("#to-signup").await;
    alice.type_into("#signup-username", "Alice").await;
    alice
        .type_into("#signup-password", "another-long-password")
        .await;
    alice.click("#signup-submit").await;
    alice
        .wait_for(
            "the username error",
            "const e = document.querySelector('.field-error[data-for=username]'); \
             return !e.hidden && e.textContent === 'This username is taken';",
            vec![],
        )
        .await;
    alice.click("#to-login").await;

    log_in(&alice, &server, "alice").await;
    alice
        .wait_for(
            "both rooms in the list",
            "return document.querySelectorAll('#rooms .room-item').length === 2;",
            vec![],
        )
        .await;
    assert!(!alice.is_visible("#room").await, "one pane at a time");
    alice.screenshot("phone-rooms").await;

    alice
        .click(&format!("#rooms .room-item[data-room-id='{group}']"))
        .await;
    alice.wait_message("Mine has a broken zip.").await;
    alice.gone("#sidebar").await;
    alice.visible("#back").await;
    // In a group, others' messages name their sender once per run of messages.
    let senders = alice
        .js(
            "return [...document.querySelectorAll('#message-list .sender')].map(e => e.textContent);",
            vec![],
        )
        .await;
    assert_eq!(senders, json!(["Bob", "Carol"]));
    assert_eq!(
        alice
            .js(
                "return document.documentElement.scrollWidth <= innerWidth;",
                vec![]
            )
            .await,
        true,
        "nothing wider than the screen"
    );
    alice.screenshot("phone-chat").await;

    alice.click("#back").await;
    alice.visible("#sidebar").await;
    assert!(!alice.is_visible("#room-view").await);
    assert_eq!(alice.js("return location.hash", vec![]).await, "");

    // Logging out revokes the token and forgets it.
    let token = alice
        .js(
            "return JSON.parse(sessionStorage.getItem('chat.session')).token",
            vec![],
        )
        .await;
    let token = token.as_str().unwrap().to_string();
    assert_eq!(
        server
            .call("GET", "/api/v1/me/", Some(&token), None)
            .await
            .0,
        200
    );
    alice.click("#logout").await;
    alice.visible("#login-form").await;
    assert_eq!(
        alice
            .js(
                "return sessionStorage.length + localStorage.length;",
                vec![]
            )
            .await,
        0
    );
    assert_eq!(
        server
            .call("GET", "/api/v1/me/", Some(&token), None)
            .await
            .0,
        401
    );
    alice.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyboard_alone_logs_in_starts_a_group_and_sends() {
    let Some(tools) = browser::tools("keyboard_alone_logs_in_starts_a_group_and_sends") else {
        return;
    };
    let server = Server::start(config(None), any_port());
    server.user("alice", "Alice").await;
    server.user("bob", "Bob").await;
    server.user("carol", "Carol").await;

    let driver = Driver::start(&tools);
    let alice = driver.browser(DESKTOP.0, DESKTOP.1).await;
    alice.goto(&server.url("/")).await;
    alice.visible("#login-form").await;
    let focused = "return document.activeElement.id || document.activeElement.value;";
    assert_eq!(alice.js(focused, vec![]).await, "login-username");
    alice
        .keys(&format!(
            "alice{}{}{}",
            tab(),
            browser::password("alice"),
            enter()
        ))
        .await;
    alice.visible("#sidebar").await;

    alice.keys(&tab()).await;
    assert_eq!(alice.js(focused, vec![]).await, "new-chat");
    alice.keys(&enter()).await;
    alice.visible(".user-row[data-username='carol']").await;
    assert_eq!(alice.js(focused, vec![]).await, "user-search");
    // Tab to each person and tick them with Space, then name the group and press Enter.
    for _ in 0..2 {
        alice.keys(&tab()).await;
        alice.keys(" ").await;
    }
    alice.keys(&tab()).await;
    assert_eq!(alice.js(focused, vec![]).await, "group-name");
    alice.keys(&format!("Project X{}", enter())).await;
    alice
        .wait_for(
            "the new group to open",
            "return document.getElementById('room-name').textContent === 'Project X';",
            vec![],
        )
        .await;
    assert_eq!(alice.js(focused, vec![]).await, "input");
    alice.keys(&format!("Hello team{}", enter())).await;
    alice
        .wait_for(
            "the message to be delivered",
            "const m = document.querySelector('#message-list .msg.mine'); \
             return m && m.dataset.id && m.textContent.includes('Hello team');",
            vec![],
        )
        .await;
    alice.close().await;
}

/// Someone put you in a conversation you want no part of: you leave it from its header, it
/// leaves your list, and the server no longer counts you in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_can_be_left_from_its_header() {
    let Some(tools) = browser::tools("a_conversation_can_be_left_from_its_header") else {
        return;
    };
    let server = Server::start(config(None), any_port());
    let (alice_id, alice_token) = server.user("alice", "Alice").await;
    let (_, bob_token) = server.user("bob", "Bob").await;
    let direct = room(&server, &bob_token, &[alice_id], None).await;
    let group = room(&server, &bob_token, &[alice_id], Some("Deals")).await;

    let driver = Driver::start(&tools);
    let alice = driver.browser(DESKTOP.0, DESKTOP.1).await;
    log_in(&alice, &server, "alice").await;
    for (room, title) in [(&direct, "Bob"), (&group, "Deals")] {
        let item = format!("#rooms .room-item[data-room-id='{room}']");
        alice.click(&item).await;
        alice
            .wait_for(
                "the conversation to open",
                "return document.getElementById('room-name').textContent === arguments[0];",
                vec![json!(title)],
            )
            .await;
        // The page asks first; the answer here is yes.
        alice
            .js("window.confirm = () => true; return true;", vec![])
            .await;
        alice.click("#leave").await;
        alice.gone(&item).await;
        let (status, _) = server
            .call(
                "GET",
                &format!("/api/v1/chat/{room}/"),
                Some(&alice_token),
                None,
            )
            .await;
        assert_eq!(status, 404, "alice is no longer in {title}");
    }
    // Bob still has both, now without her.
    let (_, rooms) = server
        .call("GET", "/api/v1/chats/", Some(&bob_token), None)
        .await;
    for room in rooms.as_array().unwrap() {
        assert_eq!(room["members"].as_array().unwrap().len(), 1, "{room}");
    }
    alice.close().await;
}

/// Alice fixes a typo and then takes a message back; Bob, with the room open, sees both at
/// once, and so does a reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_is_edited_and_deleted_and_the_other_side_sees_it_live() {
    let Some(tools) =
        browser::tools("a_message_is_edited_and_deleted_and_the_other_side_sees_it_live")
    else {
        return;
    };
    let server = Server::start(config(None), any_port());
    let (alice_id, _) = server.user("alice", "Alice").await;
    let (_, bob_token) = server.user("bob", "Bob").await;
    let room = room(&server, &bob_token, &[alice_id], None).await;
    let driver = Driver::start(&tools);
    let alice = driver.browser(DESKTOP.0, DESKTOP.1).await;
    let bob = driver.browser(DESKTOP.0, DESKTOP.1).await;
    log_in(&alice, &server, "alice").await;
    log_in(&bob, &server, "bob").await;
    let item = format!("#rooms .room-item[data-room-id='{room}']");
    alice.click(&item).await;
    bob.click(&item).await;

    alice
        .type_into("#input", &format!("Lunch at teh usual place?{}", enter()))
        .await;
    bob.wait_message("Lunch at teh usual place?").await;
    alice
        .wait_for(
            "the message to be acknowledged",
            "const m = document.querySelector('#message-list .msg.mine'); \
             return m && m.dataset.id && m.dataset.status !== 'pending';",
            vec![],
        )
        .await;

    // Edit: the text goes into the composer; Enter saves.
    alice.click("#message-list .msg.mine .edit").await;
    alice.visible("#editing").await;
    let draft = alice
        .js("return document.getElementById('input').value;", vec![])
        .await;
    assert_eq!(draft, "Lunch at teh usual place?");
    alice
        .js(
            "document.getElementById('input').value = ''; return true;",
            vec![],
        )
        .await;
    alice
        .type_into("#input", &format!("Lunch at the usual place?{}", enter()))
        .await;
    for browser in [&alice, &bob] {
        browser.wait_message("Lunch at the usual place?").await;
        browser
            .wait_for(
                "the edited mark",
                "return document.querySelector('#message-list .msg .edited') !== null;",
                vec![],
            )
            .await;
    }
    assert_eq!(bob.message_texts().await, ["Lunch at the usual place?"]);
    assert!(!alice.is_visible("#editing").await);

    // Delete, after saying yes to the page's question.
    alice
        .js("window.confirm = () => true; return true;", vec![])
        .await;
    alice.click("#message-list .msg.mine .delete").await;
    for browser in [&alice, &bob] {
        browser.wait_message("This message was deleted.").await;
    }
    bob.goto(&server.url(&format!("/#/c/{room}"))).await;
    bob.wait_message("This message was deleted.").await;
    assert_eq!(bob.message_texts().await, ["This message was deleted."]);
    alice.close().await;
    bob.close().await;
}

/// In a group, Bob mentions Alice: her list shows it, the message stands out, a hidden tab
/// notifies her; she replies to it, they react, and each sees the other's reply and reaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mentions_replies_and_reactions_between_two_browsers() {
    let Some(tools) = browser::tools("mentions_replies_and_reactions_between_two_browsers") else {
        return;
    };
    let server = Server::start(config(None), any_port());
    let (_, alice_token) = server.user("alice", "Alice").await;
    let (bob_id, bob_token) = server.user("bob", "Bob").await;
    let group = room(&server, &alice_token, &[bob_id], Some("Plans")).await;
    server
        .post_message(&group, &bob_token, "@alice can you check the plan?")
        .await;

    let driver = Driver::start(&tools);
    let alice = driver.browser(DESKTOP.0, DESKTOP.1).await;
    let bob = driver.browser(DESKTOP.0, DESKTOP.1).await;
    log_in(&alice, &server, "alice").await;
    log_in(&bob, &server, "bob").await;
    let item = format!("#rooms .room-item[data-room-id='{group}']");
    alice.visible(&format!("{item} .badge.mention")).await;
    alice.click(&item).await;
    bob.click(&item).await;
    alice.visible("#message-list .msg.mentions-me").await;

    // Alice's tab goes to the background, with notifications allowed: a new mention notifies.
    alice
        .js(
            "window.shown = []; \
             window.Notification = function (title, opts) { window.shown.push([title, opts.body]); }; \
             window.Notification.permission = 'granted'; \
             Object.defineProperty(document, 'hidden', { get: () => true }); return true;",
            vec![],
        )
        .await;
    bob.type_into("#input", &format!("@alice ping{}", enter()))
        .await;
    let shown = alice
        .wait_for(
            "a notification",
            "return window.shown.length ? window.shown : null;",
            vec![],
        )
        .await;
    assert_eq!(shown, json!([["Bob in Plans", "@alice ping"]]));

    // She replies to the first message; Bob sees the quote.
    alice.click("#message-list .msg.theirs .reply").await;
    alice.visible("#replying").await;
    alice
        .type_into("#input", &format!("Checked, looks good{}", enter()))
        .await;
    bob.wait_for(
        "the reply with its quote",
        "const q = [...document.querySelectorAll('#message-list .msg .quote-text')]; \
         return q.some(e => e.textContent === '@alice can you check the plan?');",
        vec![],
    )
    .await;

    // Bob reacts to her reply; Alice sees it and adds hers by clicking it.
    bob.click("#message-list .msg.theirs:last-of-type .react[data-emoji='\u{1F44D}']")
        .await;
    alice
        .wait_for(
            "bob's reaction",
            "const r = document.querySelector('#message-list .msg.mine .reaction'); \
             return r && r.textContent === '\u{1F44D} 1';",
            vec![],
        )
        .await;
    alice.click("#message-list .msg.mine .reaction").await;
    bob.wait_for(
        "two reactions",
        "const r = document.querySelector('#message-list .msg.theirs .reaction'); \
         return r && r.textContent === '\u{1F44D} 2';",
        vec![],
    )
    .await;
    bob.screenshot("desktop-reactions").await;
    // Any of the picker's emoji: Bob adds a rocket from it.
    bob.click("#message-list .msg.theirs:last-of-type .more-reactions")
        .await;
    bob.visible("#reaction-picker").await;
    bob.click("#reaction-picker .pick[data-emoji='\u{1F680}']")
        .await;
    alice
        .wait_for(
            "the rocket",
            "return [...document.querySelectorAll('#message-list .msg.mine .reaction')] \
             .some(r => r.textContent === '\u{1F680} 1');",
            vec![],
        )
        .await;
    assert!(
        !bob.is_visible("#reaction-picker").await,
        "the picker closes"
    );
    let (_, page) = server
        .call(
            "GET",
            &format!("/api/v1/chat/{group}/"),
            Some(&alice_token),
            None,
        )
        .await;
    let reply = &page["results"][0];
    assert_eq!(reply["content"], "Checked, looks good");
    assert_eq!(
        reply["reactions"],
        json!([
            {"emoji": "\u{1F44D}", "count": 2, "me": true},
            {"emoji": "\u{1F680}", "count": 1, "me": false},
        ])
    );
    assert_eq!(reply["reply_to"]["sender"], "bob");
    alice.close().await;
    bob.close().await;
}

/// Enter in the sidebar's search box searches the messages of your rooms; the hits are marked
/// and a result opens its conversation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_search_box_finds_messages_and_opens_their_conversation() {
    let Some(tools) = browser::tools("the_search_box_finds_messages_and_opens_their_conversation")
    else {
        return;
    };
    let server = Server::start(config(None), any_port());
    let (alice_id, _) = server.user("alice", "Alice").await;
    let (_, bob_token) = server.user("bob", "Bob").await;
    let (_, carol_token) = server.user("carol", "Carol").await;
    let ours = room(&server, &bob_token, &[alice_id], None).await;
    let theirs = room(&server, &carol_token, &[alice_id], Some("Elsewhere")).await;
    server
        .post_message(&ours, &bob_token, "The quarterly report is ready")
        .await;
    server
        .post_message(&theirs, &carol_token, "Reports are due Friday")
        .await;
    server.post_message(&ours, &bob_token, "Lunch?").await;

    let driver = Driver::start(&tools);
    let alice = driver.browser(DESKTOP.0, DESKTOP.1).await;
    log_in(&alice, &server, "alice").await;
    alice
        .type_into("#room-filter", &format!("report*{}", enter()))
        .await;
    alice
        .wait_for(
            "two results",
            "return document.querySelectorAll('#search-list .search-hit').length === 2;",
            vec![],
        )
        .await;
    alice.screenshot("desktop-search").await;
    let marked = alice
        .js(
            "return [...document.querySelectorAll('#search-list mark')].map(m => m.textContent);",
            vec![],
        )
        .await;
    assert_eq!(
        marked,
        json!(["Reports", "report"]),
        "newest first, hits marked"
    );
    alice
        .click(&format!("#search-list .search-hit[data-room-id='{ours}']"))
        .await;
    alice.wait_message("The quarterly report is ready").await;
    assert_eq!(alice.room_id().await, ours);
    alice.close().await;
}

/// Typing `@` suggests the room's members and Enter takes one; Up on an empty composer edits
/// your last message; a reply's quote scrolls to the message it answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mention_autocomplete_up_to_edit_and_quotes_that_lead_to_the_original() {
    let Some(tools) =
        browser::tools("mention_autocomplete_up_to_edit_and_quotes_that_lead_to_the_original")
    else {
        return;
    };
    let mut config = config(None);
    config.limits.send_rate_per_sec = 10_000.0;
    config.limits.send_burst = 10_000;
    let server = Server::start(config, any_port());
    let (_, alice_token) = server.user("alice", "Alice").await;
    let (bob_id, bob_token) = server.user("bob", "Bob").await;
    let (carol_id, _) = server.user("carol", "Carol").await;
    let group = room(&server, &alice_token, &[bob_id, carol_id], Some("Team")).await;
    let first = server
        .post_message(&group, &bob_token, "Where is the spec?")
        .await;
    // Enough later messages that the first is far up.
    for i in 0..120 {
        server
            .post_message(&group, &bob_token, &format!("filler {i}"))
            .await;
    }
    let (status, _) = server
        .call(
            "POST",
            &format!("/api/v1/chat/{group}/"),
            Some(&alice_token),
            Some(json!({"content": "Here it is", "reply_to": first["id"]})),
        )
        .await;
    assert_eq!(status, 201);

    let driver = Driver::start(&tools);
    let alice = driver.browser(DESKTOP.0, DESKTOP.1).await;
    log_in(&alice, &server, "alice").await;
    alice
        .click(&format!("#rooms .room-item[data-room-id='{group}']"))
        .await;
    alice.wait_message("Here it is").await;

    // @ca suggests Carol; Enter puts her name in, and the message mentions her.
    alice.type_into("#input", "thanks @ca").await;
    alice
        .visible("#mention-list .mention-option[data-username='carol']")
        .await;
    alice.keys(&enter()).await;
    let draft = alice
        .js("return document.getElementById('input').value;", vec![])
        .await;
    assert_eq!(draft, "thanks @carol ");
    alice.keys(&enter()).await;
    alice.wait_message("thanks @carol").await;
    let (_, page) = server
        .call(
            "GET",
            &format!("/api/v1/chat/{group}/?limit=1"),
            Some(&alice_token),
            None,
        )
        .await;
    assert_eq!(page["results"][0]["mentions"], json!([carol_id]));

    // Up on the empty composer edits it.
    alice.keys("\u{E013}").await;
    alice.visible("#editing").await;
    let draft = alice
        .js("return document.getElementById('input').value;", vec![])
        .await;
    assert_eq!(draft, "thanks @carol");

    alice.keys("\u{E00C}").await; // Escape
    // The quote of her reply leads to Bob's question, loading older history on the way.
    alice.click("#message-list .msg .quote").await;
    alice
        .wait_for(
            "the original in view",
            "const el = document.querySelector(`#message-list .msg[data-id='${arguments[0]}']`); \
             if (!el) return false; const r = el.getBoundingClientRect(); \
             const box = document.getElementById('messages').getBoundingClientRect(); \
             return r.top >= box.top && r.bottom <= box.bottom;",
            vec![first["id"].clone()],
        )
        .await;
    alice.close().await;
}

/// The room list follows the all-rooms socket: a message in a room that is not open moves it
/// to the top with its unread badge at once, without fetching the list again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_room_list_is_kept_current_by_the_all_rooms_socket() {
    let Some(tools) = browser::tools("the_room_list_is_kept_current_by_the_all_rooms_socket")
    else {
        return;
    };
    let server = Server::start(config(None), any_port());
    let (alice_id, _) = server.user("alice", "Alice").await;
    let (_, bob_token) = server.user("bob", "Bob").await;
    let (_, carol_token) = server.user("carol", "Carol").await;
    let with_bob = room(&server, &bob_token, &[alice_id], None).await;
    let with_carol = room(&server, &carol_token, &[alice_id], None).await;
    server.post_message(&with_bob, &bob_token, "hi").await;

    let driver = Driver::start(&tools);
    let alice = driver.browser(DESKTOP.0, DESKTOP.1).await;
    log_in(&alice, &server, "alice").await;
    alice
        .wait_for(
            "both rooms listed",
            "return document.querySelectorAll('#rooms .room-item').length === 2;",
            vec![],
        )
        .await;
    // From here on, count the page's fetches of the list.
    alice
        .js(
            "window.listFetches = 0; const f = window.fetch; \
             window.fetch = (url, opts) => { if (String(url).includes('/chats/')) window.listFetches += 1; \
             return f(url, opts); }; return true;",
            vec![],
        )
        .await;
    server
        .post_message(&with_carol, &carol_token, "are you there?")
        .await;
    let item = format!("#rooms .room-item[data-room-id='{with_carol}']");
    alice
        .wait_for(
            "carol's room on top with its badge",
            "const top = document.querySelector('#rooms .room-item'); \
             return top && top.dataset.roomId === arguments[0] \
               && top.querySelector('.badge [aria-hidden]')?.textContent === '1' \
               && top.textContent.includes('are you there?');",
            vec![json!(with_carol)],
        )
        .await;
    let fetches = alice.js("return window.listFetches;", vec![]).await;
    assert_eq!(fetches, json!(0), "the socket, not a fetch, brought it");
    alice.visible(&item).await;
    alice.close().await;
}

/// The seed's page links still lead somewhere: `/chat/<room_id>/` opens that conversation in
/// the web client, `/chats/` its room list with no conversation open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seeds_page_links_open_the_room_and_the_room_list() {
    let Some(tools) = browser::tools("the_seeds_page_links_open_the_room_and_the_room_list") else {
        return;
    };
    let server = Server::start(config(None), any_port());
    let (alice_id, _) = server.user("alice", "Alice").await;
    let (_, bob_token) = server.user("bob", "Bob").await;
    let room = room(&server, &bob_token, &[alice_id], None).await;
    server
        .post_message(&room, &bob_token, "Linked from the old page")
        .await;
    let driver = Driver::start(&tools);
    let alice = driver.browser(DESKTOP.0, DESKTOP.1).await;
    log_in(&alice, &server, "alice").await;

    alice.goto(&server.url(&format!("/chat/{room}/"))).await;
    alice.wait_message("Linked from the old page").await;
    let at = alice
        .js("return location.pathname + location.hash;", vec![])
        .await;
    assert_eq!(at, format!("/#/c/{room}"));

    alice.goto(&server.url("/chats/")).await;
    alice
        .wait_for(
            "the room list without an open conversation",
            "return location.pathname === '/' && location.hash === '' && \
             document.querySelector('#rooms .room-item') !== null;",
            vec![],
        )
        .await;
    alice.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bots_messages_are_marked_as_a_bots() {
    let Some(tools) = browser::tools("a_bots_messages_are_marked_as_a_bots") else {
        return;
    };
    let server = Server::start(config(None), any_port());
    let (alice_id, alice_token) = server.user("alice", "Alice").await;
    let (_, bob_token) = server.user("bob", "Bob").await;
    let group = room(&server, &bob_token, &[alice_id], Some("Builds")).await;
    let (status, hook) = server
        .call(
            "POST",
            &format!("/api/v1/chat/{group}/hooks/"),
            Some(&bob_token),
            Some(json!({"name": "CI"})),
        )
        .await;
    assert_eq!(status, 201, "{hook}");
    server
        .post_message(&group, &bob_token, "Kicking off a build")
        .await;
    let url = hook["url"].as_str().unwrap();
    let (status, _) = server
        .call(
            "POST",
            url,
            None,
            Some(json!({"content": "Build 7 passed"})),
        )
        .await;
    assert_eq!(status, 201);
    server.post_message(&group, &alice_token, "Nice").await;

    let driver = Driver::start(&tools);
    let alice = driver.browser(DESKTOP.0, DESKTOP.1).await;
    log_in(&alice, &server, "alice").await;
    alice
        .click(&format!("#rooms .room-item[data-room-id='{group}']"))
        .await;
    alice.wait_message("Build 7 passed").await;
    // The bot is named by its hook's name and marked; the person is not.
    let senders = alice
        .js(
            "return [...document.querySelectorAll('#message-list .sender')].map(e => \
             [e.firstChild.textContent, e.querySelector('.bot-badge')?.textContent ?? null]);",
            vec![],
        )
        .await;
    assert_eq!(senders, json!([["Bob", null], ["CI", "bot"]]));
    // A bot's message arriving live is marked too.
    server
        .call(
            "POST",
            url,
            None,
            Some(json!({"content": "Build 8 failed"})),
        )
        .await;
    alice.wait_message("Build 8 failed").await;
    let marked = alice
        .js(
            "return document.querySelectorAll('#message-list .bot-badge').length;",
            vec![],
        )
        .await;
    assert_eq!(marked, json!(2));
    alice.close().await;
}

#[tokio::test]
async fn the_connection_banner_tells_the_truth_after_a_short_blip_and_a_real_outage() {
    let Some(tools) = browser::tools(
        "the_connection_banner_tells_the_truth_after_a_short_blip_and_a_real_outage",
    ) else {
        return;
    };
    let server = Server::start(config(None), any_port());
    let (alice_id, _) = server.user("alice", "Alice").await;
    let (_, bob_token) = server.user("bob", "Bob").await;
    let group = room(&server, &bob_token, &[alice_id], Some("Blips")).await;
    server
        .post_message(&group, &bob_token, "Before the blip")
        .await;

    let driver = Driver::start(&tools);
    let alice = driver.browser(DESKTOP.0, DESKTOP.1).await;
    log_in(&alice, &server, "alice").await;
    alice
        .click(&format!("#rooms .room-item[data-room-id='{group}']"))
        .await;
    alice.wait_message("Before the blip").await;
    let banner_hidden = "return document.getElementById('offline').hidden;";
    alice
        .wait_for("the banner to be hidden", banner_hidden, vec![])
        .await;

    // A short blip: offline until the banner shows, back before anything failed.
    alice.set_offline(true).await;
    alice.visible("#offline").await;
    alice.set_offline(false).await;
    alice
        .wait_for(
            "the banner to go once the network is back",
            banner_hidden,
            vec![],
        )
        .await;
    // The socket really is fine: a message arrives live, and the banner stays away.
    server
        .post_message(&group, &bob_token, "After the blip")
        .await;
    alice.wait_message("After the blip").await;
    assert!(!alice.is_visible("#offline").await);

    // "Retry now" while still offline keeps saying so; the network's return clears it.
    alice.set_offline(true).await;
    alice.visible("#offline").await;
    alice.click("#retry").await;
    let text = alice
        .js(
            "return document.getElementById('offline-text').textContent;",
            vec![],
        )
        .await;
    assert!(
        text.as_str().unwrap().starts_with("You're offline."),
        "{text}"
    );
    alice.set_offline(false).await;
    alice
        .wait_for(
            "the banner to go after the second blip",
            banner_hidden,
            vec![],
        )
        .await;

    // A real outage: the server is gone, so the banner stays, though the network is up.
    server.kill();
    alice.visible("#offline").await;
    alice
        .wait_for(
            "the banner to say it is reconnecting",
            "return document.getElementById('offline-text').textContent.includes('Reconnecting');",
            vec![],
        )
        .await;
    alice.close().await;
}

/// axe-core's WCAG 2.1 A/AA rules find nothing serious or critical on any view, on a desktop
/// and on a phone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_view_passes_an_accessibility_audit_on_desktop_and_phone() {
    let Some(tools) =
        browser::tools("every_view_passes_an_accessibility_audit_on_desktop_and_phone")
    else {
        return;
    };
    let server = Server::start(config(None), any_port());
    let (alice_id, alice_token) = server.user("alice", "Alice").await;
    let (_, bob_token) = server.user("bob", "Bob").await;
    let group = room(&server, &bob_token, &[alice_id], Some("Audits")).await;
    server
        .post_message(&group, &bob_token, "The audit report is ready")
        .await;
    server
        .post_message(&group, &alice_token, "Thanks, reading it now")
        .await;
    let driver = Driver::start(&tools);
    for (device, phone) in [("desktop", false), ("phone", true)] {
        let page = if phone {
            driver.phone(PHONE.0, PHONE.1).await
        } else {
            driver.browser(DESKTOP.0, DESKTOP.1).await
        };
        page.goto(&server.url("/")).await;
        page.visible("#login-form").await;
        page.audit(&format!("{device} login")).await;
        page.click("#to-signup").await;
        page.visible("#signup-form").await;
        page.audit(&format!("{device} sign-up")).await;
        // The hints describe the fields; they are not part of their names.
        assert_eq!(page.computed_label("#signup-username").await, "Username");
        assert_eq!(page.computed_label("#signup-password").await, "Password");
        log_in(&page, &server, "alice").await;
        page.visible(&format!("#rooms .room-item[data-room-id='{group}']"))
            .await;
        page.audit(&format!("{device} room list")).await;
        // The notice of a new version, as an upgraded server makes it appear.
        page.js("document.getElementById('update').hidden = false;", vec![])
            .await;
        page.audit(&format!("{device} update notice")).await;
        page.js("document.getElementById('update').hidden = true;", vec![])
            .await;
        page.click("#new-chat").await;
        page.visible("#new-chat-dialog").await;
        page.wait_for(
            "the people list",
            "return document.querySelectorAll('#user-list li').length > 0;",
            vec![],
        )
        .await;
        page.audit(&format!("{device} new chat")).await;
        page.click("#new-chat-close").await;
        page.gone("#new-chat-dialog").await;
        page.click(&format!("#rooms .room-item[data-room-id='{group}']"))
            .await;
        page.wait_message("Thanks, reading it now").await;
        page.audit(&format!("{device} conversation")).await;
        if phone {
            page.click("#back").await;
            page.visible("#room-filter").await;
        }
        page.type_into("#room-filter", &format!("audit{}", enter()))
            .await;
        page.wait_for(
            "a search result",
            "return document.querySelectorAll('#search-list .search-hit').length === 1;",
            vec![],
        )
        .await;
        page.audit(&format!("{device} search")).await;
        page.close().await;
    }
}

/// On a phone: focus lands at the top of the chats after sign-up, on the room's name (not the
/// composer, which would pop the keyboard up) when a chat opens, and on the chat just left
/// after Back; a new message from someone else is announced once, and a tick turning to
/// "read" announces nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn focus_follows_the_user_and_new_messages_are_announced_once() {
    let Some(tools) = browser::tools("focus_follows_the_user_and_new_messages_are_announced_once")
    else {
        return;
    };
    let server = Server::start(config(None), any_port());
    let (_, bob_token) = server.user("bob", "Bob").await;
    let driver = Driver::start(&tools);
    let alice = driver.phone(PHONE.0, PHONE.1).await;
    sign_up(&alice, &server, "alice", "Alice").await;
    alice
        .wait_for(
            "focus on the chats heading after sign-up",
            "return document.activeElement?.id === 'chats-heading';",
            vec![],
        )
        .await;
    let (_, alice_login) = server
        .call(
            "POST",
            "/api/v1/login/",
            None,
            Some(json!({"username": "alice", "password": browser::password("alice")})),
        )
        .await;
    let alice_id = alice_login["user"]["id"].as_i64().unwrap();
    let group = room(&server, &bob_token, &[alice_id], Some("Focus")).await;
    let item = format!("#rooms .room-item[data-room-id='{group}']");
    alice.click(&item).await;
    alice.visible("#room-view").await;
    alice
        .wait_for(
            "focus on the room's name",
            "return document.activeElement?.id === 'room-name';",
            vec![],
        )
        .await;

    server.post_message(&group, &bob_token, "Hello there").await;
    alice.wait_message("Hello there").await;
    let announced =
        "return [...document.querySelectorAll('#announcer p')].map(p => p.textContent);";
    assert_eq!(
        alice.js(announced, vec![]).await,
        json!(["Bob: Hello there"])
    );

    // Alice answers; Bob reads it: the tick turns to "read", and nothing more is announced.
    alice.click("#input").await;
    alice
        .type_into("#input", &format!("Hi Bob{}", enter()))
        .await;
    alice
        .wait_for(
            "Alice's message to be stored",
            "const m = [...document.querySelectorAll('#message-list .msg.mine')].pop(); \
             return m && m.dataset.id;",
            vec![],
        )
        .await;
    let mine = alice
        .js(
            "return [...document.querySelectorAll('#message-list .msg.mine')].pop().dataset.id;",
            vec![],
        )
        .await;
    let (status, _) = server
        .call(
            "PATCH",
            &format!("/api/v1/messages/{}/update/", mine.as_str().unwrap()),
            Some(&bob_token),
            None,
        )
        .await;
    assert_eq!(status, 200);
    alice
        .wait_for(
            "the read tick",
            "return [...document.querySelectorAll('#message-list .msg.mine')].pop() \
             .dataset.status === 'read';",
            vec![],
        )
        .await;
    assert_eq!(
        alice.js(announced, vec![]).await,
        json!(["Bob: Hello there"])
    );

    // Back: focus returns to the chat just left.
    alice.click("#back").await;
    alice.visible("#rooms").await;
    alice
        .wait_for(
            "focus on the chat just left",
            "return document.activeElement?.dataset?.roomId === arguments[0];",
            vec![json!(group)],
        )
        .await;
    alice.close().await;
}

/// WebDriver's key codes for `keys`, pressed together (modifiers stay down to the end).
fn keys(keys: &[Key]) -> String {
    keys.iter().map(|k| char::from(*k)).collect()
}

/// The tab's icon carries the unread count and goes back to the plain icon once everything is
/// read; Alt+Shift+Down opens the next chat with unread messages, Alt+Up the previous chat,
/// Ctrl+K and / go to search, and Escape closes the search results.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tab_icon_counts_unread_and_shortcuts_move_between_chats() {
    let Some(tools) = browser::tools("the_tab_icon_counts_unread_and_shortcuts_move_between_chats")
    else {
        return;
    };
    let server = Server::start(config(None), any_port());
    let (alice_id, _) = server.user("alice", "Alice").await;
    let (_, bob_token) = server.user("bob", "Bob").await;
    let (_, carol_token) = server.user("carol", "Carol").await;
    let quiet = room(&server, &carol_token, &[alice_id], Some("Quiet")).await;
    server.post_message(&quiet, &carol_token, "Old news").await;
    let driver = Driver::start(&tools);
    let alice = driver.browser(DESKTOP.0, DESKTOP.1).await;
    log_in(&alice, &server, "alice").await;
    // Quiet's message is unread too: open it and read it, so only the new room will be unread.
    alice
        .click(&format!("#rooms .room-item[data-room-id='{quiet}']"))
        .await;
    alice.wait_message("Old news").await;
    alice
        .wait_for(
            "the plain icon once everything is read",
            "return document.getElementById('favicon').getAttribute('href') === '/assets/icon.svg';",
            vec![],
        )
        .await;
    // Bob writes in a new room while Alice reads Quiet: the icon gets its badge.
    let busy = room(&server, &bob_token, &[alice_id], Some("Busy")).await;
    server
        .post_message(&busy, &bob_token, "Are you there?")
        .await;
    alice
        .wait_for(
            "a badged icon",
            "return document.getElementById('favicon').getAttribute('href').startsWith('data:image/png');",
            vec![],
        )
        .await;
    assert_eq!(
        alice.js("return document.title;", vec![]).await,
        json!("(1) Chat")
    );

    // Alt+Shift+Down: the next chat with unread messages.
    alice.keys(&keys(&[Key::Alt, Key::Shift, Key::Down])).await;
    alice.wait_message("Are you there?").await;
    assert_eq!(alice.room_id().await, busy);
    alice
        .wait_for(
            "the plain icon again",
            "return document.getElementById('favicon').getAttribute('href') === '/assets/icon.svg';",
            vec![],
        )
        .await;
    // Alt+Down from the last chat goes round to the first; Busy is on top, Quiet below it.
    alice.keys(&keys(&[Key::Alt, Key::Down])).await;
    alice.wait_message("Old news").await;
    assert_eq!(alice.room_id().await, quiet);
    alice.keys(&keys(&[Key::Alt, Key::Up])).await;
    alice.wait_message("Are you there?").await;

    // Ctrl+K: search; Escape closes the results.
    alice.keys(&format!("{}k", keys(&[Key::Control]))).await;
    alice
        .wait_for(
            "the search box focused",
            "return document.activeElement?.id === 'room-filter';",
            vec![],
        )
        .await;
    alice.keys(&format!("news{}", enter())).await;
    alice.visible("#search-results").await;
    alice.click("#message-list").await;
    alice.keys(&keys(&[Key::Escape])).await;
    alice.gone("#search-results").await;
    alice.close().await;
}

/// Resolves, in the page, to the paths a service worker that controls the page has kept (one
/// cache, the shell), or to `null`.
const SHELL_KEPT: &str = "return navigator.serviceWorker.controller \
     ? caches.keys().then(keys => keys.length === 1 && caches.open(keys[0])) \
         .then(c => c && c.keys()) \
         .then(reqs => reqs && reqs.map(r => new URL(r.url).pathname).sort()) \
     : null;";

/// What the service worker keeps: the page's files, and nothing else.
const SHELL: [&str; 8] = [
    "/",
    "/assets/app.css",
    "/assets/app.js",
    "/assets/icon-192.png",
    "/assets/icon-512.png",
    "/assets/icon-maskable-512.png",
    "/assets/icon.svg",
    "/assets/manifest.webmanifest",
];

/// The open room's last message of mine is `text`, still waiting to be sent.
const LAST_MINE_PENDING: &str = "const m = [...document.querySelectorAll('#message-list .msg.mine')].pop(); \
     return !!m && m.dataset.status === 'pending' \
       && m.querySelector('.text').textContent === arguments[0];";

/// The open room's last message of mine is `text`, and the server has it.
const LAST_MINE_SENT: &str = "const m = [...document.querySelectorAll('#message-list .msg.mine')].pop(); \
     return !!m && !!m.dataset.id && m.dataset.status !== 'pending' \
       && m.querySelector('.text').textContent === arguments[0];";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_opens_from_its_cache_while_the_server_is_down_and_sends_the_queue_once() {
    let Some(tools) = browser::tools(
        "the_client_opens_from_its_cache_while_the_server_is_down_and_sends_the_queue_once",
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.db");
    let server = Server::start(config(Some(&db)), any_port());
    let addr = server.addr;
    let (alice_id, alice_token) = server.user("alice", "Alice").await;
    let (bob_id, bob_token) = server.user("bob", "Bob").await;
    let room = room(&server, &alice_token, &[bob_id], None).await;
    server
        .post_message(&room, &bob_token, "Kept for the road")
        .await;

    let driver = Driver::start(&tools);
    let alice = driver.browser(DESKTOP.0, DESKTOP.1).await;
    log_in(&alice, &server, "alice").await;
    // The manifest the page links is JSON, and every icon it names loads, of its type.
    let icons = alice
        .js(
            "return fetch(document.querySelector('link[rel=manifest]').href) \
             .then(r => r.json()) \
             .then(m => Promise.all(m.icons.map(i => fetch(i.src) \
               .then(r => r.ok && r.headers.get('content-type') === i.type)))) \
             .then(ok => ok.length >= 4 && ok.every(Boolean));",
            vec![],
        )
        .await;
    assert_eq!(icons, json!(true));
    // The worker controls the page and keeps exactly the shell: no API answer, ever.
    let kept = alice
        .wait_for(
            "the service worker to control the page and keep the shell",
            SHELL_KEPT,
            vec![],
        )
        .await;
    assert_eq!(kept, json!(SHELL));
    alice
        .click(&format!("#rooms .room-item[data-room-id='{room}']"))
        .await;
    alice.wait_message("Kept for the road").await;
    alice
        .wait_for(
            "the room socket",
            "return document.getElementById('room-status').textContent === '@bob';",
            vec![],
        )
        .await;
    assert_eq!(alice.js(SHELL_KEPT, vec![]).await, json!(SHELL));

    // The server goes away; a reload opens the client from the worker's cache, with the
    // room list and the conversation as they were.
    server.kill();
    alice.reload().await;
    alice
        .visible(&format!("#rooms .room-item[data-room-id='{room}']"))
        .await;
    alice.wait_message("Kept for the road").await;
    alice.visible("#offline").await;
    assert_eq!(alice.room_id().await, room);

    // What Alice writes now is queued, and stays queued across another reload.
    let queued = "Written with the server down";
    alice
        .type_into("#input", &format!("{queued}{}", enter()))
        .await;
    alice
        .wait_for(
            "the message to be queued",
            LAST_MINE_PENDING,
            vec![json!(queued)],
        )
        .await;
    alice.reload().await;
    alice
        .wait_for(
            "the queued message after a reload",
            LAST_MINE_PENDING,
            vec![json!(queued)],
        )
        .await;
    alice.wait_message("Kept for the road").await;
    alice
        .wait_for(
            "the banner to count the queued message",
            "return document.getElementById('offline-text').textContent \
               .includes('1 unsent message will be sent');",
            vec![],
        )
        .await;
    alice.screenshot("desktop-offline-reload").await;

    // The server comes back: the message goes out, and the server has it once.
    let server = Server::start(config(Some(&db)), addr);
    alice
        .wait_for_within(
            std::time::Duration::from_secs(40),
            "the queued message to be delivered",
            LAST_MINE_SENT,
            vec![json!(queued)],
        )
        .await;
    assert_eq!(
        history_texts(&server, &room, &bob_token).await,
        [queued, "Kept for the road"]
    );
    // Nothing is left queued to be sent again: a reload online shows it sent, once.
    alice.reload().await;
    alice
        .wait_for(
            "the room socket after the reload",
            "return document.getElementById('room-status').textContent === '@bob';",
            vec![],
        )
        .await;
    alice
        .wait_for("the sent message", LAST_MINE_SENT, vec![json!(queued)])
        .await;
    let left = alice
        .js(
            "return JSON.parse(sessionStorage.getItem(arguments[0])).pending.length;",
            vec![json!(format!("chat.cache.{alice_id}.room.{room}"))],
        )
        .await;
    assert_eq!(left, json!(0));
    assert_eq!(
        history_texts(&server, &room, &bob_token).await,
        [queued, "Kept for the road"]
    );
    assert_eq!(alice.message_texts().await, ["Kept for the road", queued]);

    // Logging out forgets everything kept.
    alice.click("#logout").await;
    alice.visible("#login-form").await;
    let left = alice
        .js(
            "return [sessionStorage, localStorage].flatMap(a => Object.keys(a)) \
             .filter(k => k.startsWith('chat.cache.') || k === 'chat.session');",
            vec![],
        )
        .await;
    assert_eq!(left, json!([]));
    alice.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_page_switches_to_the_client_an_upgraded_server_brings() {
    let Some(tools) =
        browser::tools("an_open_page_switches_to_the_client_an_upgraded_server_brings")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.db");
    let server = Server::start(config(Some(&db)), any_port());
    let addr = server.addr;
    let (_, alice_token) = server.user("alice", "Alice").await;
    let (bob_id, bob_token) = server.user("bob", "Bob").await;
    let room = room(&server, &alice_token, &[bob_id], None).await;
    server
        .post_message(&room, &bob_token, "Before the upgrade")
        .await;

    let driver = Driver::start(&tools);
    let alice = driver.browser(DESKTOP.0, DESKTOP.1).await;
    log_in(&alice, &server, "alice").await;
    alice
        .click(&format!("#rooms .room-item[data-room-id='{room}']"))
        .await;
    alice.wait_message("Before the upgrade").await;
    alice
        .wait_for("the shell to be kept", SHELL_KEPT, vec![])
        .await;
    let old_cache = alice.js("return caches.keys();", vec![]).await;
    // Gone with a reload: proof the page did reload.
    alice.js("window.oldClient = true;", vec![]).await;

    // The server is upgraded (here: serves a changed client from a directory). The open page
    // notices when it reconnects and reloads itself into the new client, in the same room.
    server.kill();
    let next = browser::changed_client("\ndocument.documentElement.dataset.client = 'next';\n");
    let server = Server::start(browser::with_web_dir(config(Some(&db)), next.path()), addr);
    alice
        .wait_for_within(
            std::time::Duration::from_secs(40),
            "the page to reload into the new client",
            "return document.documentElement.dataset.client === 'next' && !window.oldClient;",
            vec![],
        )
        .await;
    alice.wait_message("Before the upgrade").await;
    assert_eq!(alice.room_id().await, room);
    let new_cache = alice
        .wait_for(
            "the old version's files to be gone",
            "return caches.keys().then(k => k.length === 1 && k);",
            vec![],
        )
        .await;
    assert_ne!(new_cache, old_cache);

    // With a draft in the composer the page asks first instead of throwing it away.
    alice.type_into("#input", "A draft").await;
    server.kill();
    let third = browser::changed_client("\ndocument.documentElement.dataset.client = 'third';\n");
    let _server = Server::start(browser::with_web_dir(config(Some(&db)), third.path()), addr);
    alice
        .wait_for_within(
            std::time::Duration::from_secs(40),
            "the update notice",
            "return !document.getElementById('update').hidden;",
            vec![],
        )
        .await;
    assert_eq!(
        alice
            .js(
                "return [document.documentElement.dataset.client, \
                   document.getElementById('input').value];",
                vec![]
            )
            .await,
        json!(["next", "A draft"])
    );
    alice.screenshot("desktop-update").await;
    alice.click("#update-reload").await;
    alice
        .wait_for(
            "the third client",
            "return document.documentElement.dataset.client === 'third';",
            vec![],
        )
        .await;
    alice.wait_message("Before the upgrade").await;
    alice.close().await;
}

/// The contents of room `room`'s messages as the server has them, newest first.
async fn history_texts(server: &Server, room: &str, token: &str) -> Vec<String> {
    let (status, page) = server
        .call("GET", &format!("/api/v1/chat/{room}/"), Some(token), None)
        .await;
    assert_eq!(status, 200, "{page}");
    common::contents(&page)
        .into_iter()
        .map(String::from)
        .collect()
}

/// Waits until the title of tab `tab` (behind another) is `wanted`.
async fn wait_tab_title(page: &browser::Browser, tab: &str, wanted: &str) {
    let deadline = std::time::Instant::now() + browser::WAIT;
    loop {
        let title = page.tab_title(tab).await;
        if title == wanted {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the hidden tab's title is {title:?}, not {wanted:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Watches the title of tab `tab` for longer than two flashes: it must stay `wanted`.
async fn tab_title_stays(page: &browser::Browser, tab: &str, wanted: &str) {
    let until = std::time::Instant::now() + std::time::Duration::from_millis(2500);
    while std::time::Instant::now() < until {
        assert_eq!(page.tab_title(tab).await, wanted);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hidden_tab_flashes_its_title_for_new_messages_once_the_setting_is_on() {
    let Some(tools) =
        browser::tools("a_hidden_tab_flashes_its_title_for_new_messages_once_the_setting_is_on")
    else {
        return;
    };
    let server = Server::start(config(None), any_port());
    let (alice_id, _) = server.user("alice", "Alice").await;
    let (_, bob_token) = server.user("bob", "Bob").await;
    let room = room(&server, &bob_token, &[alice_id], None).await;
    let driver = Driver::start(&tools);
    let alice = driver.browser(DESKTOP.0, DESKTOP.1).await;
    log_in(&alice, &server, "alice").await;
    alice
        .visible(&format!("#rooms .room-item[data-room-id='{room}']"))
        .await;

    // Off by default: a checkbox with a name of its own.
    assert_eq!(
        alice.computed_label("#alerts").await,
        "Sound and flashing title for new messages while this tab is in the background"
    );
    assert_eq!(
        alice
            .js("return document.getElementById('alerts').checked;", vec![])
            .await,
        json!(false)
    );

    // Another tab in front hides this one. Off, a message only counts in the title.
    let page = alice.handle().await;
    let other = alice.new_tab().await;
    server
        .post_message(&room, &bob_token, "While the setting is off")
        .await;
    wait_tab_title(&alice, &page, "(1) Chat").await;
    tab_title_stays(&alice, &page, "(1) Chat").await;

    // On (and remembered across a reload) ...
    alice.switch_to(&page).await;
    alice.click("#alerts").await;
    assert_eq!(
        alice
            .js("return localStorage.getItem('chat.alerts');", vec![])
            .await,
        json!("on")
    );
    alice.reload().await;
    alice.visible("#alerts").await;
    assert_eq!(
        alice
            .js("return document.getElementById('alerts').checked;", vec![])
            .await,
        json!(true)
    );

    // ... a message while the tab is hidden flashes its title, on and off ...
    alice.switch_to(&other).await;
    server
        .post_message(&room, &bob_token, "While the setting is on")
        .await;
    wait_tab_title(&alice, &page, "New message from Bob").await;
    wait_tab_title(&alice, &page, "(2) Chat").await;
    wait_tab_title(&alice, &page, "New message from Bob").await;

    // ... until the tab is seen again.
    alice.switch_to(&page).await;
    alice
        .wait_for(
            "the flashing to stop",
            "return !document.hidden && document.title === '(2) Chat';",
            vec![],
        )
        .await;
    tab_title_stays(&alice, &page, "(2) Chat").await;
    alice.close().await;
}

/// Files in the browser: attached with the button, pasted and dropped; an image shows as its
/// thumbnail (fetched with the token in the header into a `blob:` URL) and opens in the
/// viewer; another file is a chip that downloads it; a message with a file sent while offline
/// goes out once when the connection is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_are_attached_shown_opened_and_downloaded_and_survive_going_offline() {
    let Some(tools) =
        browser::tools("files_are_attached_shown_opened_and_downloaded_and_survive_going_offline")
    else {
        return;
    };
    let server = Server::start(config(None), any_port());
    let (_, alice_token) = server.user("alice", "Alice").await;
    let (bob_id, bob_token) = server.user("bob", "Bob").await;
    let chat = room(&server, &alice_token, &[bob_id], None).await;
    let files = tempfile::tempdir().unwrap();
    let photo = files.path().join("photo.png");
    std::fs::write(&photo, common::png(400, 300)).unwrap();

    let driver = Driver::start(&tools);
    let alice = driver.browser(DESKTOP.0, DESKTOP.1).await;
    let bob = driver.browser(DESKTOP.0, DESKTOP.1).await;
    for (who, name) in [(&alice, "alice"), (&bob, "bob")] {
        log_in(who, &server, name).await;
        who.click(&format!("#rooms .room-item[data-room-id='{chat}']"))
            .await;
    }
    // The button's input takes the file; it waits beside the composer until sent.
    alice
        .visible("#file-input")
        .await
        .send_keys(photo.to_str().unwrap())
        .await
        .expect("pick a file");
    alice.visible("#attach-list .picked").await;
    alice.type_into("#input", "look at this").await;
    alice.keys(&enter()).await;
    alice.gone("#attach-list").await;
    // Bob sees the thumbnail, from a blob: URL, at its size.
    let thumb = bob
        .wait_for(
            "the thumbnail",
            "const img = document.querySelector('#message-list .att-thumb'); \
             return img && img.complete && img.naturalWidth > 0 && \
               [img.src.slice(0, 5), img.naturalWidth, img.naturalHeight, img.alt];",
            vec![],
        )
        .await;
    assert_eq!(thumb, json!(["blob:", 320, 240, "photo.png"]));
    bob.wait_message("look at this").await;
    bob.audit("a conversation with an image").await;
    // It opens in the viewer, at the preview's size, and Escape closes it.
    bob.click("#message-list .att-image").await;
    let shown = bob
        .wait_for(
            "the viewer's image",
            "const img = document.getElementById('viewer-image'); \
             return document.getElementById('viewer').open && img.complete && \
               img.naturalWidth > 0 && [img.naturalWidth, img.alt, \
               document.getElementById('viewer-title').textContent];",
            vec![],
        )
        .await;
    assert_eq!(shown, json!([400, "photo.png", "photo.png"]));
    bob.screenshot("desktop-image-viewer").await;
    bob.audit("the image viewer").await;
    bob.keys(&Key::Escape.to_string()).await;
    bob.wait_for(
        "the viewer closed",
        "return !document.getElementById('viewer').open;",
        vec![],
    )
    .await;

    // Pasted and dropped files join the list; one is taken back; a file alone is a message.
    alice
        .js(
            "const file = (name, text) => { const dt = new DataTransfer(); \
               dt.items.add(new File([text], name, {type: 'text/plain'})); return dt; }; \
             document.getElementById('input').dispatchEvent(new ClipboardEvent('paste', \
               {clipboardData: file('notes.txt', 'hello file'), bubbles: true, cancelable: true})); \
             document.getElementById('room-view').dispatchEvent(new DragEvent('drop', \
               {dataTransfer: file('other.txt', 'dropped'), bubbles: true, cancelable: true})); \
             return true;",
            vec![],
        )
        .await;
    let picked = alice
        .wait_for(
            "two files picked",
            "const names = [...document.querySelectorAll('#attach-list .picked .att-name')] \
               .map(e => e.textContent); return names.length === 2 && names;",
            vec![],
        )
        .await;
    assert_eq!(picked, json!(["notes.txt", "other.txt"]));
    alice.screenshot("desktop-files-picked").await;
    alice.click("#attach-list .picked:last-child .remove").await;
    alice
        .wait_for(
            "one file left",
            "return document.querySelectorAll('#attach-list .picked').length === 1;",
            vec![],
        )
        .await;
    alice.keys(&enter()).await;
    let chip = bob
        .wait_for(
            "the file's chip",
            "const chip = document.querySelector('#message-list button.att-file'); \
             return chip && [chip.querySelector('.att-name').textContent, \
               chip.querySelector('.att-size').textContent];",
            vec![],
        )
        .await;
    assert_eq!(chip, json!(["notes.txt", "10 B"]));
    // Clicking it downloads the bytes under their name.
    let downloads = tempfile::tempdir().unwrap();
    bob.cdp(
        "Browser.setDownloadBehavior",
        json!({"behavior": "allow", "downloadPath": downloads.path().to_str().unwrap()}),
    )
    .await;
    bob.click("#message-list button.att-file").await;
    let saved = downloads.path().join("notes.txt");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::fs::read(&saved).ok().as_deref() != Some(b"hello file".as_slice()) {
        assert!(
            std::time::Instant::now() < deadline,
            "notes.txt was not downloaded"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    alice.screenshot("desktop-files").await;

    // Offline: the message and its file wait, shown as sending; back online, they go out once.
    alice.set_offline(true).await;
    alice
        .visible("#file-input")
        .await
        .send_keys(photo.to_str().unwrap())
        .await
        .expect("pick a file");
    alice.type_into("#input", "sent while offline").await;
    alice.keys(&enter()).await;
    alice
        .wait_for(
            "the message waiting with its file",
            "const msg = document.querySelector('#message-list .msg[data-status=pending]'); \
             return msg && msg.querySelector('.att-image img') && msg.textContent.includes('sent while offline');",
            vec![],
        )
        .await;
    alice.set_offline(false).await;
    bob.wait_message("sent while offline").await;
    alice
        .wait_for(
            "alice's copy acknowledged",
            "return !document.querySelector('#message-list .msg[data-status=pending]');",
            vec![],
        )
        .await;
    let (_, page) = server
        .call(
            "GET",
            &format!("/api/v1/chat/{chat}/?limit=10"),
            Some(&bob_token),
            None,
        )
        .await;
    let offline: Vec<_> = page["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["content"] == "sent while offline")
        .collect();
    assert_eq!(offline.len(), 1, "{page}");
    assert_eq!(offline[0]["attachments"].as_array().unwrap().len(), 1);
    assert_eq!(offline[0]["attachments"][0]["filename"], "photo.png");
    alice.close().await;
    bob.close().await;
}
