//! A real `redis-server` on a free port of 127.0.0.1, started and killed by the test.
//!
//! `scripts/test.sh` installs `redis-server` when it is missing; a test never skips for
//! its absence, it fails and says so.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A running `redis-server` with no persistence.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server on a port that was free a moment ago (bound on 127.0.0.1:0, then
    /// released), and waits until it answers PING.
    pub async fn start() -> RedisServer {
        for _ in 0..5 {
            let port = {
                let probe = TcpListener::bind("127.0.0.1:0").unwrap();
                probe.local_addr().unwrap().port()
            };
            let mut server = RedisServer { port, child: None };
            if server.launch().await {
                return server;
            }
        }
        panic!("redis-server did not start on any of 5 free ports");
    }

    /// A handle to send commands to the server on `port`, which it does not own.
    pub fn attach(port: u16) -> RedisServer {
        RedisServer { port, child: None }
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (by its PID) and waits until its port refuses connections.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for _ in 0..100 {
            if TcpStream::connect(("127.0.0.1", self.port)).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("redis-server on port {} did not stop", self.port);
    }

    /// Starts a fresh, empty server on the same port.
    pub async fn restart(&mut self) {
        assert!(
            self.launch().await,
            "redis-server did not restart on {}",
            self.port
        );
    }

    async fn launch(&mut self) -> bool {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--enable-debug-command", "local"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run redis-server ({e}); scripts/test.sh installs it \
                     (apt-get install -y redis-server)"
                )
            });
        self.child = Some(child);
        for _ in 0..250 {
            if self.try_command(&["PING"]).await.as_deref() == Some("+PONG\r\n") {
                return true;
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(_)) = child.try_wait() {
                    // It exited: most likely the port was taken meanwhile.
                    self.child = None;
                    return false;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        false
    }

    /// Sends one command and returns the raw RESP reply.
    pub async fn command(&self, args: &[&str]) -> String {
        self.try_command(args)
            .await
            .unwrap_or_else(|| panic!("redis-server on {} did not answer {args:?}", self.port))
    }

    async fn try_command(&self, args: &[&str]) -> Option<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).await.ok()?;
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut reply = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
                .await
                .ok()?
                .ok()?;
            if n == 0 {
                break;
            }
            reply.extend_from_slice(&buf[..n]);
            if complete(&reply) {
                break;
            }
        }
        Some(String::from_utf8_lossy(&reply).into_owned())
    }
}

/// Whether `reply` holds one whole RESP value (simple replies, bulk strings and flat arrays
/// of them, which is all these tests ask for).
fn complete(reply: &[u8]) -> bool {
    fn value(buf: &[u8]) -> Option<usize> {
        let end = buf.windows(2).position(|w| w == b"\r\n")?;
        let line = std::str::from_utf8(&buf[1..end]).ok()?;
        match buf.first()? {
            b'+' | b'-' | b':' => Some(end + 2),
            b'$' => {
                let len: i64 = line.parse().ok()?;
                if len < 0 {
                    return Some(end + 2);
                }
                let total = end + 2 + len as usize + 2;
                (buf.len() >= total).then_some(total)
            }
            b'*' => {
                let count: i64 = line.parse().ok()?;
                let mut at = end + 2;
                for _ in 0..count.max(0) {
                    at += value(buf.get(at..)?)?;
                }
                Some(at)
            }
            _ => None,
        }
    }
    value(reply).is_some()
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
