//! What the helpers that start servers of a test's own share: whether the binaries are
//! there, and what happens when they are not.

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::sync::Mutex;

/// Whether this runs in CI (`CI` set, and not `false` or `0`): there a missing server binary
/// fails the tests that need it instead of skipping them.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Whether every one of `binaries` runs (`BINARY --version`). When one does not: in CI a
/// panic saying what to install; elsewhere `false`, after one line on standard error per test
/// binary (written to the process's standard error directly: the test harness shows it even
/// for passing tests) saying which tests are skipped and how to install what they need.
pub(super) fn available(binaries: &[&str], install: &str) -> bool {
    let Some(missing) = binaries.iter().find(|binary| !runs(binary)) else {
        return true;
    };
    let needed = binaries.join(" and ");
    if in_ci() {
        panic!("CI is set and this test needs `{missing}` on the PATH: {install}");
    }
    static SAID: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    let mut said = SAID
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if said.get_or_insert_with(HashSet::new).insert(needed.clone()) {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "skipped the tests that need {needed}: {missing} is not on the PATH; {install} to run them"
        );
    }
    false
}

fn runs(binary: &str) -> bool {
    Command::new(binary)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}
