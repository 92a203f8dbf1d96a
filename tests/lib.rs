//! Helpers shared by the integration tests (each `[[test]]` target of this package uses them
//! as `switchboard_tests::..`). Every wait is bounded: a test that does not get what it waits
//! for fails with a message instead of hanging.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
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
