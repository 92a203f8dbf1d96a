//! A private `redis-server` for one test, on a Unix socket in a fresh folder (never the
//! machine's shared Redis), that the test can stop and start again to simulate an outage.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::TIMEOUT;

const INSTALL: &str = "install it (Debian or Ubuntu: `sudo apt-get install redis-server`; \
                       macOS: `brew install redis`)";

/// A `redis-server` process of a test's own, listening on a Unix socket (`--port 0`: no plain
/// TCP), without persistence; with [`RedisServer::options`], also TLS on a free loopback port,
/// a password and ACL users. Stopped (and its folder removed) when dropped.
#[derive(Debug)]
pub struct RedisServer {
    dir: PathBuf,
    socket: PathBuf,
    options: RedisServerOptions,
    /// The TLS port, when TLS is on (kept across a restart).
    tls_port: Option<u16>,
    child: Option<Child>,
}

/// How to start a [`RedisServer`]: `RedisServer::options().password("..").start()`.
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct RedisServerOptions {
    password: Option<String>,
    users: Vec<(String, String)>,
    tls: Option<(PathBuf, PathBuf)>,
}

impl RedisServerOptions {
    /// Every client must authenticate with this password (`requirepass`).
    pub fn password(mut self, password: &str) -> Self {
        self.password = Some(password.to_owned());
        self
    }

    /// An ACL user with every permission, authenticated by `password`.
    pub fn user(mut self, name: &str, password: &str) -> Self {
        self.users.push((name.to_owned(), password.to_owned()));
        self
    }

    /// Also listens with TLS on a free loopback port (see [`RedisServer::tls_url`]), with this
    /// certificate chain and key (PEM files). Clients need no certificate of their own.
    pub fn tls(mut self, cert_file: impl Into<PathBuf>, key_file: impl Into<PathBuf>) -> Self {
        self.tls = Some((cert_file.into(), key_file.into()));
        self
    }

    /// Starts the server, as [`RedisServer::start`] does.
    pub async fn start(self) -> Option<RedisServer> {
        RedisServer::start_with(self).await
    }
}

impl RedisServer {
    /// Starts one and waits until it answers `PING`.
    ///
    /// Returns `None` when `redis-server` is not installed (the test should return: it is
    /// skipped), after one line on standard error per test binary that says so and how to
    /// install it. In CI (see [`in_ci`](super::in_ci)) a missing `redis-server` panics instead. Panics
    /// when it does not start.
    pub async fn start() -> Option<RedisServer> {
        Self::start_with(RedisServerOptions::default()).await
    }

    /// Options for a server with a password, ACL users or TLS.
    pub fn options() -> RedisServerOptions {
        RedisServerOptions::default()
    }

    async fn start_with(options: RedisServerOptions) -> Option<RedisServer> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        if !super::servers::available(&["redis-server"], INSTALL) {
            return None;
        }
        let dir = std::env::temp_dir().join(format!(
            "switchboard-redis-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create a folder for redis-server");
        let socket = dir.join("redis.sock");
        let tls_port = options.tls.is_some().then(free_port);
        let mut server = RedisServer {
            dir,
            socket,
            options,
            tls_port,
            child: None,
        };
        server.resume().await;
        Some(server)
    }

    /// The URL to give `Redis::new` (the Unix socket, without credentials).
    pub fn url(&self) -> String {
        format!("redis+unix://{}", self.socket.display())
    }

    /// The TLS address, `rediss://127.0.0.1:PORT/` (without credentials), when started with
    /// [`RedisServerOptions::tls`].
    pub fn tls_url(&self) -> Option<String> {
        self.tls_port
            .map(|port| format!("rediss://127.0.0.1:{port}/"))
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
        let mut command = Command::new("redis-server");
        command
            .args(["--port", "0", "--unixsocket"])
            .arg(&self.socket)
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(&self.dir);
        if let Some(password) = &self.options.password {
            command.arg("--requirepass").arg(password);
        }
        for (name, password) in &self.options.users {
            command
                .args(["--user", name, "on"])
                .arg(format!(">{password}"))
                .args(["~*", "&*", "+@all"]);
        }
        if let (Some((cert, key)), Some(port)) = (&self.options.tls, self.tls_port) {
            command
                .args(["--bind", "127.0.0.1", "--tls-port", &port.to_string()])
                .arg("--tls-cert-file")
                .arg(cert)
                .arg("--tls-key-file")
                .arg(key)
                .args(["--tls-auth-clients", "no"]);
        }
        let child = command
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

/// A loopback port nobody listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
}

async fn ping(socket: &Path) -> bool {
    let Ok(mut stream) = tokio::net::UnixStream::connect(socket).await else {
        return false;
    };
    if stream.write_all(b"PING\r\n").await.is_err() {
        return false;
    }
    // A server with a password answers `-NOAUTH ..`: it is up all the same.
    let mut answer = [0u8; 7];
    matches!(
        tokio::time::timeout(TIMEOUT, stream.read_exact(&mut answer)).await,
        Ok(Ok(_))
    ) && (&answer == b"+PONG\r\n" || answer.starts_with(b"-NOAUTH"))
}
