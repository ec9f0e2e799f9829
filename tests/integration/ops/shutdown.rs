//! Shutdown of a server in this process.

use crate::common;

use common::{TestServer, WAIT, test_config};

// ---------------------------------------------------------------------------------------------
// Shutdown (in process)

#[tokio::test]
async fn shutdown_tells_sockets_to_reconnect_with_1001_and_checkpoints_the_wal() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.db");
    let mut config = test_config();
    config.server.db = db.to_str().unwrap().to_string();
    let s = TestServer::start_with(config).await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let room = s.room(&alice, &[&bob], None).await;
    let (mut a, _) = s.ws(&room, &alice, "").await;
    let (mut b, _) = s.ws(&room, &bob, "").await;
    a.say("before shutdown", "s1").await;
    assert!(
        std::fs::metadata(dir.path().join("chat.db-wal"))
            .unwrap()
            .len()
            > 0
    );

    let stopping = tokio::spawn(s.stop());
    assert_eq!(a.closed().await, Some(1001));
    assert_eq!(b.closed().await, Some(1001));
    tokio::time::timeout(WAIT, stopping).await.unwrap().unwrap();
    let wal = std::fs::metadata(dir.path().join("chat.db-wal")).map_or(0, |m| m.len());
    assert_eq!(wal, 0, "the WAL was not checkpointed");
    let conn = rusqlite::Connection::open(&db).unwrap();
    let content: String = conn
        .query_row("SELECT content FROM messages", [], |r| r.get(0))
        .unwrap();
    assert_eq!(content, "before shutdown");
}
