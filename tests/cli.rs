//! The binary's startup: bad configuration is a clear error with a non-zero exit, not a panic.

use std::process::Command;

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_chat-server"))
        .args(args)
        .output()
        .expect("run chat-server");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn an_unknown_config_key_stops_startup_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[server]\nprot = 8000\n").unwrap();
    let (code, stderr) = run(&["--config", path.to_str().unwrap(), "--db", ":memory:"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("unknown field") && stderr.contains("prot"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_bad_value_or_missing_file_stops_startup_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[limits]\nmax_message_chars = 0\n").unwrap();
    let (code, stderr) = run(&["--config", path.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(stderr.contains("max_message_chars"), "{stderr}");

    let (code, stderr) = run(&["--config", "/nonexistent/chat.toml"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("cannot read config file"), "{stderr}");

    let (code, stderr) = run(&["--port", "eighty"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("--port"), "{stderr}");
}
