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

#[test]
fn a_zero_interval_or_timeout_stops_startup_instead_of_breaking_every_socket() {
    let dir = tempfile::tempdir().unwrap();
    for (option, says) in [
        ("ws_ping_interval_secs = 0", "ws_ping_interval_secs"),
        ("ws_write_timeout_secs = 0", "ws_write_timeout_secs"),
        ("ws_idle_timeout_secs = 10", "ws_idle_timeout_secs"),
        (
            "header_read_timeout_secs = 99999999999999",
            "header_read_timeout_secs",
        ),
        ("typing_per_sec = nan", "typing_per_sec"),
    ] {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, format!("[limits]\n{option}\n")).unwrap();
        let (code, stderr) = run(&["--config", path.to_str().unwrap(), "--db", ":memory:"]);
        assert_eq!(code, 2, "{option}: {stderr}");
        assert!(stderr.contains(says), "{option}: {stderr}");
        assert!(!stderr.contains("panicked"), "{option}: {stderr}");
    }
}
