//! The real `sluice` binary as a child process, for tests of signals and exit codes.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Starts `sluice run -c config` on 127.0.0.1:0 and returns it with its bound (http,
/// monitor) addresses, read from its `listening` log line.
pub fn spawn(config: &Path) -> (Child, SocketAddr, SocketAddr) {
    let args = ["--http", "127.0.0.1:0", "--monitor", "127.0.0.1:0"];
    let logs = ["--log-format", "json", "--log-level", "info"];
    spawn_with(config, &[&args[..], &logs[..]].concat(), false)
}

/// Starts `sluice run -c config <args>` and waits for its `listening` log line, which must
/// be JSON (from the config or `args`). With `only_json`, any other line before it fails
/// the test; else such lines are skipped.
pub fn spawn_with(
    config: &Path,
    args: &[&str],
    only_json: bool,
) -> (Child, SocketAddr, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["run", "-c"])
        .arg(config)
        .args(args)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let (http, monitor) = loop {
        let line = lines
            .next()
            .expect("gateway exited before listening")
            .unwrap();
        let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else {
            assert!(!only_json, "expected JSON log lines, got: {line}");
            continue;
        };
        if event["message"] == "listening" {
            break (
                event["http"].as_str().unwrap().parse().unwrap(),
                event["monitor"].as_str().unwrap().parse().unwrap(),
            );
        }
    };
    // Keep draining stderr so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, http, monitor)
}

/// Sends `SIG<name>` to the child, by its PID.
pub fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
}
