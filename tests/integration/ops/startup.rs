//! Startup on a database that cannot be served as it is: each is a clear error, a non-zero
//! exit, and the file is left exactly as it was.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::*;

/// Starts the binary on `db` and expects it to refuse: its exit code and stderr.
async fn refused(db: &Path, as_user: Option<u32>) -> (i32, String) {
    refused_with(Path::new(BIN), db, as_user).await
}

async fn refused_with(bin: &Path, db: &Path, as_user: Option<u32>) -> (i32, String) {
    let mut command = Command::new(bin);
    command
        .args(["--port", "0", "--db"])
        .arg(db)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(uid) = as_user {
        command.uid(uid).gid(uid);
    }
    let child = command.spawn().unwrap();
    let pid = child.id();
    let waited = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap());
    let Ok(out) = tokio::time::timeout(Duration::from_secs(30), waited).await else {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
        panic!(
            "the server started on {} instead of refusing it",
            db.display()
        );
    };
    let out = out.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code().unwrap_or(-1), stderr)
}

/// Every file in `dir` but the server's lock file, with its bytes.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            !e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".lock")
        })
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

/// A database with the server's schema and some rows in it, closed, with nothing beside it
/// (one connection in rollback-journal mode, so no `-wal` or `-shm` is left behind to vanish
/// while a test compares the directory).
async fn a_database(dir: &Path) -> std::path::PathBuf {
    let db = dir.join("chat.db");
    let mut conn = rusqlite::Connection::open(&db).unwrap();
    chat_server::store::migrate(&mut conn).unwrap();
    for i in 0..200 {
        conn.execute(
            "INSERT INTO users (username, username_key, password_hash, date_joined) \
             VALUES (?1, ?1, ?2, 0)",
            rusqlite::params![format!("u{i}"), "x".repeat(2000)],
        )
        .unwrap();
    }
    drop(conn);
    db
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_refused_and_left_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.db");
    let bytes: Vec<u8> = (0..100_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&db, &bytes).unwrap();
    let before = snapshot(dir.path());
    let (code, stderr) = refused(&db, None).await;
    assert_ne!(code, 0);
    assert!(stderr.contains("is not a SQLite database"), "{stderr}");
    assert_eq!(snapshot(dir.path()), before);
}

#[tokio::test]
async fn a_truncated_database_is_refused_and_left_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let db = a_database(dir.path()).await;
    let len = std::fs::metadata(&db).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&db)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let before = snapshot(dir.path());
    let (code, stderr) = refused(&db, None).await;
    assert_ne!(code, 0);
    assert!(stderr.contains("it was truncated"), "{stderr}");
    assert_eq!(snapshot(dir.path()), before);
}

#[tokio::test]
async fn a_database_from_a_newer_release_is_refused_and_left_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let db = a_database(dir.path()).await;
    let known = {
        let conn = rusqlite::Connection::open(&db).unwrap();
        let known: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        conn.pragma_update(None, "user_version", known + 1).unwrap();
        known
    };
    let before = snapshot(dir.path());
    let (code, stderr) = refused(&db, None).await;
    assert_ne!(code, 0);
    let newer = known + 1;
    assert!(
        stderr.contains(&format!(
            "has schema version {newer}, newer than this chat-server's {known}"
        )),
        "{stderr}"
    );
    assert_eq!(snapshot(dir.path()), before);
    // The operator's commands refuse it too.
    let (ok, _, stderr) = admin(&["user", "list", "--db", db.to_str().unwrap()], None);
    assert!(!ok);
    assert!(stderr.contains("newer than this chat-server's"), "{stderr}");
    assert_eq!(snapshot(dir.path()), before);
}

/// This process's user id, from `/proc`.
fn euid() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().nth(2).unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_directory_the_server_cannot_write_to_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let locked = dir.path().join("locked");
    std::fs::create_dir(&locked).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o555)).unwrap();
    // Root writes anywhere: the server then runs as `nobody`, from a copy of the binary it may
    // execute wherever the checkout is.
    let as_user = (euid() == 0).then_some(65_534);
    let (code, stderr) = if as_user.is_some() {
        let bin = dir.path().join("chat-server");
        std::fs::copy(BIN, &bin).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        refused_with(&bin, &locked.join("chat.db"), as_user).await
    } else {
        refused(&locked.join("chat.db"), None).await
    };
    assert_ne!(code, 0);
    assert!(stderr.contains("cannot create files in"), "{stderr}");
    assert!(stderr.contains("must be writable"), "{stderr}");
    assert_eq!(std::fs::read_dir(&locked).unwrap().count(), 0);
}

#[tokio::test]
async fn a_database_already_served_by_another_process_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.db");
    let config = quick_config(dir.path());
    let first = Spawned::start(&db, &config);
    let (code, stderr) = refused(&db, None).await;
    assert_ne!(code, 0);
    assert!(
        stderr.contains(&format!(
            "is already served by another chat-server process (pid {})",
            first.pid
        )),
        "{stderr}"
    );
    // The first one serves on, undisturbed.
    let health = reqwest::get(format!("http://{}/healthz", first.addr))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    // Once it has stopped, the database is free.
    first.terminate();
    assert!(first.exit_status(WAIT).await.success());
    let second = Spawned::start(&db, &config);
    let health = reqwest::get(format!("http://{}/healthz", second.addr))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}
