//! The README's walk-through, run as written: its shell block, with `curl` and `jq`, against a
//! real server (the address put in for `localhost:8000`, `curl -s` made to fail on an error
//! status, the interactive `websocat` step left out).

use std::process::Command;

use crate::common::TestServer;

/// The first ```sh block after the heading `heading`.
fn block_after(heading: &str) -> String {
    let readme = include_str!("../../README.md");
    let section = &readme[readme.find(heading).expect("the section")..];
    let start = section.find("```sh\n").expect("its shell block") + "```sh\n".len();
    let end = start + section[start..].find("```").expect("the block's end");
    section[start..end].to_string()
}

/// The first ```sh block after the walk-through's heading.
fn walk_through() -> String {
    block_after("## A walk-through with curl")
}

/// The walk-through as a script for `s`: the interactive socket step left out, the address
/// put in, and `curl` made to fail on an error status.
fn walk_through_script(s: &TestServer) -> String {
    let mut lines = walk_through()
        .lines()
        .map(str::to_string)
        .collect::<Vec<_>>();
    // The socket step is interactive: its command and the frame typed into it.
    let socket = lines
        .iter()
        .position(|l| l.starts_with("websocat "))
        .expect("the websocat step");
    lines.drain(socket..socket + 2);
    let mut script = String::from("set -euo pipefail\n");
    for line in lines {
        script.push_str(&for_test(&line, s));
        script.push('\n');
    }
    script
}

fn for_test(line: &str, s: &TestServer) -> String {
    line.replace("localhost:8000", &s.addr.to_string())
        .replace("curl -s ", "curl -sSf ")
}

/// Runs `script` with bash, off the async workers.
async fn bash(script: String) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        Command::new("bash")
            .arg("-c")
            .arg(&script)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn have(tool: &str) -> bool {
    Command::new(tool).arg("--version").output().is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_walk_through_runs_as_written() {
    if !have("curl") || !have("jq") {
        eprintln!("skipped: the walk-through needs curl and jq on the PATH");
        return;
    }
    let s = TestServer::start().await;
    let out = bash(walk_through_script(&s)).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the walk-through failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    // What it did is in the database: two users, one room, the edit, the reaction and the
    // reply, and the deletion.
    let (_, login) = s
        .call(
            "POST",
            "/api/v1/login/",
            None,
            Some(serde_json::json!({"username": "bob", "password": "builder-4242"})),
        )
        .await;
    let bob = login["token"].as_str().unwrap().to_string();
    let (_, rooms) = s.get("/api/v1/chats/", &bob).await;
    let room = rooms[0]["room_id"].as_str().unwrap().to_string();
    let (_, history) = s.get(&format!("/api/v1/chat/{room}/?after=0"), &bob).await;
    let shown: Vec<(String, bool)> = history["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["content"].as_str().unwrap().to_string(),
                m["deleted"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        shown,
        [
            ("Hi Bob!".to_string(), false),
            (String::new(), true),
            ("@bob 12:30?".to_string(), false),
        ]
    );
    assert_eq!(history["results"][2]["mentions"], serde_json::json!([2]));
    // The search at the end, the script's last output, finds nothing: the message with
    // "lunch" in it was deleted.
    // (curl prints each answer without a newline: the output is a stream of JSON values.)
    let answers: Vec<serde_json::Value> = serde_json::Deserializer::from_str(&stdout)
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap();
    let search = answers.last().unwrap();
    assert_eq!(search["results"], serde_json::json!([]), "{stdout}");
    s.stop().await;
}

/// The README's example bot, run as written for two rounds (the loop bounded, the pause
/// dropped): it answers each message that mentions it once, quoting it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_example_bot_answers_each_mention_once() {
    if !have("curl") || !have("jq") {
        eprintln!("skipped: the example bot needs curl and jq on the PATH");
        return;
    }
    let readme = include_str!("../../README.md");
    let section = &readme[readme.find("## Bots").expect("the bots section")..];
    let start = section.find("```sh\nAPI=").expect("the bot's shell block") + "```sh\n".len();
    let end = start + section[start..].find("```").expect("the block's end");
    let bot_script = section[start..end].to_string();

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.db");
    let mut config = crate::common::test_config();
    config.server.db = db.to_str().unwrap().to_string();
    let s = TestServer::start_with(config).await;
    let out = Command::new(env!("CARGO_BIN_EXE_chat-server"))
        .args(["bot", "create", "helper", "--db", db.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let token = stdout.trim().rsplit(' ').next().unwrap().to_string();
    let (_, me) = s.get("/api/v1/me/", &token).await;
    let bot = crate::common::TestUser {
        id: me["id"].as_i64().unwrap(),
        username: "helper".into(),
        token: token.clone(),
    };
    let alice = s.user("alice").await;
    let room = s.room(&alice, &[&bot], Some("help")).await;
    let path = format!("/api/v1/chat/{room}/");
    for text in ["@helper hi", "no mention", "@helper again"] {
        s.post(&path, &alice.token, serde_json::json!({"content": text}))
            .await;
    }

    let script = format!(
        "set -euo pipefail\nBOT={token}\n{}",
        bot_script
            .replace("localhost:8000", &s.addr.to_string())
            .replace("curl -s ", "curl -sSf ")
            .replace("while true; do", "for _ in 1 2; do")
            .replace("; sleep 2", "")
    );
    let out = bash(script).await;
    assert!(
        out.status.success(),
        "the bot failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, page) = s.get(&format!("{path}?after=0"), &alice.token).await;
    let replies: Vec<(&str, &str)> = page["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["sender"] == "helper")
        .map(|m| {
            (
                m["content"].as_str().unwrap(),
                m["reply_to"]["excerpt"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        replies,
        [
            ("Hello @alice!", "@helper hi"),
            ("Hello @alice!", "@helper again")
        ]
    );
}

/// The README's files example, run as written after the walk-through (whose `$TOKEN` and
/// `$ROOM` it uses) in a directory holding a `cat.jpg`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_files_example_runs_as_written() {
    if !have("curl") || !have("jq") {
        eprintln!("skipped: the example needs curl and jq on the PATH");
        return;
    }
    let s = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let photo = crate::common::jpeg_with_exif(1600, 1200, "GPS somewhere");
    std::fs::write(dir.path().join("cat.jpg"), &photo).unwrap();
    let mut script = format!("cd '{}'\n", dir.path().display());
    script.push_str(&walk_through_script(&s));
    for line in block_after("## Files and images").lines() {
        script.push_str(&for_test(line, &s));
        script.push('\n');
    }
    let out = bash(script).await;
    assert!(
        out.status.success(),
        "the example failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    // The download is the file uploaded, byte for byte; the thumbnail is 320 px wide.
    assert_eq!(std::fs::read(dir.path().join("cat.jpg")).unwrap(), photo);
    let small = image::open(dir.path().join("small.jpg")).unwrap();
    assert_eq!((small.width(), small.height()), (320, 240));
    s.stop().await;
}
