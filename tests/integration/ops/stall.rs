//! The whole process frozen (SIGSTOP) under load for 20 seconds, then resumed: sockets go on,
//! and nothing acknowledged is lost.

use std::collections::BTreeSet;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use super::*;
use crate::common::TestServer;

/// How long the process is frozen: far past the socket idle timeout of the test's config.
const FROZEN: Duration = Duration::from_secs(20);

/// Reads every message event of a socket until `last` (sent once the senders stopped) has
/// been seen; returns the ids in the order they came, and whether the socket was closed.
async fn receive(
    mut ws: crate::common::Ws,
    mut last: watch::Receiver<Option<i64>>,
) -> (Vec<i64>, Option<String>) {
    let mut ids = Vec::new();
    loop {
        if let Some(last) = *last.borrow()
            && ids.last().is_some_and(|id| *id >= last)
        {
            return (ids, None);
        }
        let frame = tokio::select! {
            frame = ws.socket.next() => frame,
            _ = last.changed() => continue,
        };
        match frame {
            Some(Ok(WsMessage::Text(t))) => {
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                if v["type"] == "message" {
                    ids.push(v["message"]["id"].as_i64().unwrap());
                }
            }
            Some(Ok(WsMessage::Close(frame))) => return (ids, Some(format!("closed {frame:?}"))),
            Some(Ok(_)) => {}
            Some(Err(e)) => return (ids, Some(format!("error {e}"))),
            None => return (ids, Some("ended".into())),
        }
    }
}

/// Waits until `n` more messages were acknowledged.
async fn more_acks(acks: &mut mpsc::UnboundedReceiver<i64>, acked: &mut BTreeSet<i64>, n: usize) {
    let target = acked.len() + n;
    while acked.len() < target {
        let id = tokio::time::timeout(WAIT, acks.recv())
            .await
            .expect("the senders stalled")
            .expect("the senders stopped");
        acked.insert(id);
    }
}

#[tokio::test]
async fn a_process_frozen_for_20_seconds_under_load_goes_on_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.db");
    let config = dir.path().join("stall.toml");
    std::fs::write(
        &config,
        "[auth]\nargon2_memory_kib = 64\nargon2_iterations = 1\n\n\
         [limits]\nsend_rate_per_sec = 100000.0\nsend_burst = 100000\n\
         ws_ping_interval_secs = 1\nws_idle_timeout_secs = 3\n",
    )
    .unwrap();
    let server = Spawned::start(&db, &config);
    let client = TestServer::client_for(&server.addr.to_string());
    let alice = client.user("alice").await;
    let bob = client.user("bob").await;
    let room = client.room(&alice, &[&bob], None).await;

    // Bob follows the room on both kinds of socket.
    let (last_tx, last_rx) = watch::channel(None);
    let mut receivers = Vec::new();
    let (one_room, _) = client.ws(&room, &bob, "").await;
    let (all_rooms, _) = client.ws_all(&bob, "").await;
    for ws in [one_room, all_rooms] {
        receivers.push(tokio::spawn(receive(ws, last_rx.clone())));
    }

    // Alice sends over REST and over her socket until told to stop; acknowledged ids arrive
    // on `acks`.
    let (stop_tx, stop) = watch::channel(false);
    let (acks_tx, mut acks) = mpsc::unbounded_channel::<i64>();
    let rest = {
        let (client, room, token) = (
            TestServer::client_for(&server.addr.to_string()),
            room.clone(),
            alice.token.clone(),
        );
        let (acks, stop) = (acks_tx.clone(), stop.clone());
        tokio::spawn(async move {
            let path = format!("/api/v1/chat/{room}/");
            for k in 0..1_000_000 {
                if *stop.borrow() {
                    return Ok(());
                }
                let (status, m) = client
                    .post(&path, &token, json!({"content": format!("rest {k}")}))
                    .await;
                if status != 201 {
                    return Err(format!("{status}: {m}"));
                }
                let _ = acks.send(m["id"].as_i64().unwrap());
            }
            Ok(())
        })
    };
    let socket = {
        let (mut ws, _) = client.ws(&room, &alice, "").await;
        let (acks, stop) = (acks_tx.clone(), stop.clone());
        tokio::spawn(async move {
            for k in 0..1_000_000 {
                if *stop.borrow() {
                    return Ok(());
                }
                let client_id = format!("w{k}");
                ws.socket
                    .send(WsMessage::text(
                        json!({"action": "message", "content": client_id, "client_id": client_id})
                            .to_string(),
                    ))
                    .await
                    .map_err(|e| e.to_string())?;
                loop {
                    match ws.socket.next().await {
                        Some(Ok(WsMessage::Text(t))) => {
                            let v: Value = serde_json::from_str(t.as_str()).unwrap();
                            if v["type"] == "message" && v["message"]["client_id"] == client_id {
                                let _ = acks.send(v["message"]["id"].as_i64().unwrap());
                                break;
                            }
                        }
                        Some(Ok(_)) => {}
                        other => return Err(format!("alice's socket ended: {other:?}")),
                    }
                }
            }
            Ok(())
        })
    };
    drop(acks_tx);

    let mut acked = BTreeSet::new();
    more_acks(&mut acks, &mut acked, 200).await;
    server.signal("-STOP");
    tokio::time::sleep(FROZEN).await;
    server.signal("-CONT");
    // Under load again, after the stall.
    more_acks(&mut acks, &mut acked, 200).await;
    stop_tx.send(true).unwrap();
    rest.await.unwrap().unwrap();
    socket.await.unwrap().unwrap();
    while let Some(id) = acks.recv().await {
        acked.insert(id);
    }
    let last = *acked.last().unwrap();
    last_tx.send(Some(last)).unwrap();

    for receiver in receivers {
        let (ids, ended) = tokio::time::timeout(WAIT, receiver)
            .await
            .expect("a receiver did not get every message")
            .unwrap();
        // Each socket went on through the stall: it was neither closed nor dropped as idle.
        assert_eq!(ended, None, "after {} messages", ids.len());
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "out of order or repeated"
        );
        let seen: BTreeSet<i64> = ids.into_iter().collect();
        let missing: Vec<_> = acked.difference(&seen).collect();
        assert!(
            missing.is_empty(),
            "acknowledged but never delivered: {missing:?}"
        );
    }

    // And every acknowledged message is stored.
    let mut stored = BTreeSet::new();
    let mut after = 0;
    loop {
        let (status, page) = client
            .get(
                &format!("/api/v1/chat/{room}/?after={after}&limit=200"),
                &bob.token,
            )
            .await;
        assert_eq!(status, 200);
        for m in page["results"].as_array().unwrap() {
            after = m["id"].as_i64().unwrap();
            stored.insert(after);
        }
        if !page["has_more"].as_bool().unwrap() {
            break;
        }
    }
    assert_eq!(stored, acked);
}
