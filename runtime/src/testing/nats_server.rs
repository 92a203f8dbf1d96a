//! A private `nats-server` for one test, with JetStream, on a free loopback port and a store
//! folder of its own (never the machine's shared NATS), that the test can stop and start
//! again to simulate an outage.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::AsyncReadExt;

use super::TIMEOUT;

const INSTALL: &str = "install it (Debian or Ubuntu: `sudo apt-get install nats-server`; \
                       macOS: `brew install nats-server`)";

/// A `nats-server` process of a test's own, with JetStream (its streams kept in a folder of
/// its own, so they survive [`resume`](NatsServer::resume)). Stopped (and its folder removed)
/// when dropped.
#[derive(Debug)]
pub struct NatsServer {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl NatsServer {
    /// Starts one and waits until it greets a client.
    ///
    /// Returns `None` when `nats-server` is not installed (the test should return: it is
    /// skipped), after one line on standard error per test binary that says so and how to
    /// install it. In CI (see [`in_ci`](super::in_ci)) a missing `nats-server` panics instead. Panics when
    /// it does not start.
    pub async fn start() -> Option<NatsServer> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        if !super::servers::available(&["nats-server"], INSTALL) {
            return None;
        }
        let dir = std::env::temp_dir().join(format!(
            "switchboard-nats-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create a folder for nats-server");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free loopback port")
            .port();
        let mut server = NatsServer {
            dir,
            port,
            child: None,
        };
        server.resume().await;
        Some(server)
    }

    /// The URL to give `Nats::new`: `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the process (as a crash would: no goodbye to clients) and waits for it to end.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the process again on the same port (after [`kill`](Self::kill)), and waits
    /// until it greets a client. Its JetStream streams are still there.
    pub async fn resume(&mut self) {
        self.kill();
        let child = Command::new("nats-server")
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.dir.join("store"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        while tokio::time::Instant::now() < deadline {
            if greets(self.port).await {
                return;
            }
            if let Some(child) = &mut self.child
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("nats-server exited at start ({status})");
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!(
            "nats-server did not greet a client on port {} within {TIMEOUT:?}",
            self.port
        );
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether a server on `port` sends its `INFO` greeting.
async fn greets(port: u16) -> bool {
    let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    let mut greeting = [0u8; 4];
    matches!(
        tokio::time::timeout(TIMEOUT, stream.read_exact(&mut greeting)).await,
        Ok(Ok(_)) if &greeting == b"INFO"
    )
}
