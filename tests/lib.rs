//! Helpers shared by the integration tests (each `[[test]]` target of this package uses them
//! as `switchboard_tests::..`). Every wait is bounded: a test that does not get what it waits
//! for fails with a message instead of hanging.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;

use serde_json::{Value, json};
use switchboard::testing::{Remote, in_ci};
use tokio::sync::mpsc;

/// How long a helper waits before it fails the test.
pub const WAIT: Duration = Duration::from_secs(10);

/// Where handlers and listeners report what they saw (given to the app as state).
#[derive(Debug, Clone)]
pub struct Reports(pub mpsc::UnboundedSender<Value>);

impl Reports {
    /// A reporter and the receiver a test reads with [`next`].
    pub fn channel() -> (Reports, mpsc::UnboundedReceiver<Value>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Reports(tx), rx)
    }

    /// Reports `value` (ignored once the test stopped listening).
    pub fn send(&self, value: Value) {
        let _ = self.0.send(value);
    }
}

/// The next report, within [`WAIT`].
pub async fn next(rx: &mut mpsc::UnboundedReceiver<Value>) -> Value {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("a report within the timeout")
        .expect("the reporter is alive")
}

/// A log listeners write to (given to the app as state, or captured by closures).
#[derive(Debug, Clone, Default)]
pub struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    /// Appends an entry.
    pub fn push(&self, entry: impl Into<String>) {
        self.0.lock().unwrap().push(entry.into());
    }

    /// The entries so far.
    pub fn entries(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    /// The entries so far, emptying the log.
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut self.0.lock().unwrap())
    }

    /// A listener closure that records `label` and the text it received.
    pub fn listener(
        &self,
        label: &'static str,
    ) -> impl Fn(Value) -> std::future::Ready<()> + Send + Sync + 'static {
        let log = self.clone();
        move |value: Value| {
            log.push(format!("{label} {}", value.as_str().unwrap_or("")));
            std::future::ready(())
        }
    }
}

/// Waits (bounded) until `check` holds; fails the test with `what` otherwise.
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..2000 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("{what}: not within 10 s");
}

/// Polls `check` (bounded) until it returns `expected`; returns the last answer (for the
/// test's own assertion to show).
pub async fn until<T, F>(expected: T, mut check: impl FnMut() -> F) -> T
where
    T: PartialEq + std::fmt::Debug,
    F: Future<Output = T>,
{
    for _ in 0..500 {
        let got = check().await;
        if got == expected {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    check().await
}

/// Every log line of this test process, at every level: a global `tracing` subscriber writing
/// to one buffer (installed by the first call; each test binary that greps logs uses it).
pub fn captured_logs() -> &'static CapturedLogs {
    static LOGS: std::sync::OnceLock<CapturedLogs> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let captured = CapturedLogs::default();
        let writer = captured.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .init();
        captured
    })
}

/// The buffer of [`captured_logs`].
#[derive(Debug, Clone, Default)]
pub struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl CapturedLogs {
    /// Every line so far.
    pub fn lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The lines holding every one of `parts`.
    pub fn matching(&self, parts: &[&str]) -> Vec<String> {
        self.lines()
            .into_iter()
            .filter(|line| parts.iter().all(|part| line.contains(part)))
            .collect()
    }
}

impl std::io::Write for CapturedLogs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// ChromeDriver on a free port, and the headless Chromium it drives (through WebDriver's HTTP
/// API); both killed when dropped.
#[derive(Debug)]
pub struct Browser {
    driver: std::process::Child,
    remote: Remote,
    session: String,
    profile: PathBuf,
}

impl Drop for Browser {
    fn drop(&mut self) {
        // ChromeDriver and Chromium are one process group of their own.
        let group = format!("-{}", self.driver.id());
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &group])
            .status();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

const CHROMIUM_INSTALL: &str =
    "install them (Debian or Ubuntu: `sudo apt-get install chromium chromium-driver`)";

fn installed(binary: &str) -> bool {
    std::process::Command::new(binary)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Browser {
    /// `None` when Chromium or ChromeDriver is missing (outside CI: the test is skipped).
    pub async fn start() -> Option<Browser> {
        if !(installed("chromium") && installed("chromedriver")) {
            if in_ci() {
                panic!(
                    "CI is set and this test needs chromium and chromedriver: {CHROMIUM_INSTALL}"
                );
            }
            let test = std::thread::current().name().unwrap_or("a test").to_owned();
            eprintln!(
                "skipped {test} (it runs in Chromium): chromium or chromedriver is not on the PATH; {CHROMIUM_INSTALL} to run it"
            );
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        use std::os::unix::process::CommandExt as _;
        let driver = std::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start chromedriver");
        let profile = std::env::temp_dir().join(format!("switchboard-chromium-{port}"));
        let mut browser = Browser {
            driver,
            remote: Remote::new(SocketAddr::from(([127, 0, 0, 1], port))),
            session: String::new(),
            profile,
        };
        eventually("chromedriver answers", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        })
        .await;
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1200,900",
        ]
        .map(str::to_owned)
        .into_iter()
        .chain([format!("--user-data-dir={}", browser.profile.display())])
        .collect::<Vec<_>>();
        let created = browser
            .remote
            .post_json(
                "/session",
                &json!({"capabilities": {"alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {"binary": chromium(), "args": args}
                }}}),
            )
            .await;
        assert_eq!(created.status, 200, "a browser session: {}", created.body);
        let created: Value = created.json();
        browser.session = created["value"]["sessionId"].as_str().unwrap().to_owned();
        Some(browser)
    }

    /// Runs a WebDriver command of the session (`url`, `execute/sync`, ..): its `value`.
    pub async fn command(&self, path: &str, body: Value) -> Value {
        let path = format!("/session/{}/{path}", self.session);
        let response = self.remote.post_json(&path, &body).await;
        assert_eq!(response.status, 200, "{path}: {}", response.body);
        response.json::<Value>()["value"].take()
    }

    /// The text of the element with this id (empty when there is none).
    pub async fn text_of(&self, id: &str) -> String {
        let script =
            format!("const e = document.getElementById('{id}'); return e ? e.textContent : null;");
        let value = self
            .command("execute/sync", json!({"script": script, "args": []}))
            .await;
        value.as_str().unwrap_or_default().to_owned()
    }

    /// Waits (bounded) until the element `id` reads `expected`.
    pub async fn until_text(&self, id: &str, expected: &str) {
        let mut last = String::new();
        for _ in 0..150 {
            last = self.text_of(id).await;
            if last == expected {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("#{id} reads {last:?}, not {expected:?}, after 15 s");
    }

    /// Waits (bounded) until the element `id`'s text holds `part`.
    pub async fn until_contains(&self, id: &str, part: &str) -> String {
        let mut last = String::new();
        for _ in 0..150 {
            last = self.text_of(id).await;
            if last.contains(part) {
                return last;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("#{id} reads {last:?}, without {part:?}, after 15 s");
    }

    /// Saves a screenshot of the page as a PNG file.
    pub async fn screenshot(&self, file: &std::path::Path) {
        use base64::Engine as _;
        let png = self
            .remote
            .get(&format!("/session/{}/screenshot", self.session))
            .await;
        assert_eq!(png.status, 200, "a screenshot: {}", png.body);
        let png: Value = png.json();
        let png = base64::engine::general_purpose::STANDARD
            .decode(png["value"].as_str().expect("base64"))
            .expect("base64");
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        std::fs::write(file, &png).expect("write the screenshot");
    }
}

/// The Chromium binary (Debian's is `/usr/bin/chromium`).
fn chromium() -> String {
    let which = std::process::Command::new("sh")
        .args(["-c", "command -v chromium"])
        .output()
        .expect("sh");
    String::from_utf8_lossy(&which.stdout).trim().to_owned()
}
