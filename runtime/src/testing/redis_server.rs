//! A private `redis-server` for one test, on a Unix socket in a fresh folder (never the
//! machine's shared Redis), that the test can stop and start again to simulate an outage.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::TIMEOUT;

const INSTALL: &str = "install it (Debian or Ubuntu: `sudo apt-get install redis-server`; \
                       macOS: `brew install redis`)";

/// Whether this runs in CI (`CI` set, and not `false` or `0`): there a missing server binary
/// fails the tests that need it instead of skipping them.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// A `redis-server` process of a test's own, listening on a Unix socket only (`--port 0`),
/// without persistence. Stopped (and its folder removed) when dropped.
#[derive(Debug)]
pub struct RedisServer {
    dir: PathBuf,
    socket: PathBuf,
    child: Option<Child>,
}

/// Says once per test binary that the tests needing `redis-server` are skipped (written to the
/// process's standard error directly: the test harness shows it even for passing tests).
fn announce_skip() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "skipped the tests that need redis-server: it is not on the PATH; {INSTALL} to run them"
        );
    });
}

impl RedisServer {
    /// Starts one and waits until it answers `PING`.
    ///
    /// Returns `None` when `redis-server` is not installed (the test should return: it is
    /// skipped), after one line on standard error per test binary that says so and how to
    /// install it. In CI (see [`in_ci`]) a missing `redis-server` panics instead. Panics
    /// when it does not start.
    pub async fn start() -> Option<RedisServer> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        if !installed() {
            if in_ci() {
                panic!("CI is set and this test needs `redis-server` on the PATH: {INSTALL}");
            }
            announce_skip();
            return None;
        }
        let dir = std::env::temp_dir().join(format!(
            "switchboard-redis-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create a folder for redis-server");
        let socket = dir.join("redis.sock");
        let mut server = RedisServer {
            dir,
            socket,
            child: None,
        };
        server.resume().await;
        Some(server)
    }

    /// The URL to give `Redis::new`.
    pub fn url(&self) -> String {
        format!("redis+unix://{}", self.socket.display())
    }

    /// The socket it listens on.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Kills the process (as a crash would: no goodbye to clients) and waits for it to end.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the process again on the same socket (after [`kill`](Self::kill)), and waits
    /// until it answers. Data does not survive: it is a fresh, empty Redis.
    pub async fn resume(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self.socket);
        let child = Command::new("redis-server")
            .args(["--port", "0", "--unixsocket"])
            .arg(&self.socket)
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        while tokio::time::Instant::now() < deadline {
            if ping(&self.socket).await {
                return;
            }
            if let Some(child) = &mut self.child
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("redis-server exited at start ({status})");
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!(
            "redis-server did not answer on {} within {TIMEOUT:?}",
            self.socket.display()
        );
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn installed() -> bool {
    Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

async fn ping(socket: &Path) -> bool {
    let Ok(mut stream) = tokio::net::UnixStream::connect(socket).await else {
        return false;
    };
    if stream.write_all(b"PING\r\n").await.is_err() {
        return false;
    }
    let mut answer = [0u8; 7];
    matches!(
        tokio::time::timeout(TIMEOUT, stream.read_exact(&mut answer)).await,
        Ok(Ok(_))
    ) && &answer == b"+PONG\r\n"
}
