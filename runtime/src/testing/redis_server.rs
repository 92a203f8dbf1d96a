//! A private `redis-server` for one test, on a Unix socket in a fresh folder (never the
//! machine's shared Redis), that the test can stop and start again to simulate an outage.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::TIMEOUT;

/// Set to `1` to let tests that need `redis-server` pass without running when it is not
/// installed (they print that they were skipped). Without it, they fail and say how to
/// install it.
pub const SKIP_VARIABLE: &str = "SWITCHBOARD_SKIP_REDIS_TESTS";

/// A `redis-server` process of a test's own, listening on a Unix socket only (`--port 0`),
/// without persistence. Stopped (and its folder removed) when dropped.
#[derive(Debug)]
pub struct RedisServer {
    dir: PathBuf,
    socket: PathBuf,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts one and waits until it answers `PING`.
    ///
    /// Returns `None` when `redis-server` is not installed and [`SKIP_VARIABLE`] is `1` (the
    /// test should return). Panics when it is not installed otherwise, saying how to install
    /// it, and when it does not start.
    pub async fn start() -> Option<RedisServer> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        if !installed() {
            if std::env::var(SKIP_VARIABLE).is_ok_and(|v| v == "1") {
                eprintln!("skipped: redis-server is not installed and {SKIP_VARIABLE}=1");
                return None;
            }
            panic!(
                "this test needs `redis-server` on the PATH: install it (Debian or Ubuntu: \
                 `sudo apt-get install redis-server`; macOS: `brew install redis`), or set \
                 {SKIP_VARIABLE}=1 to skip the tests that need it"
            );
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
