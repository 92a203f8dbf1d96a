//! The browser client's unit tests (`client/switchboard.test.js`, Node's built-in test runner
//! against a fake WebSocket), run by `cargo test` when `node` is installed.

use std::process::Command;

#[test]
fn the_browser_client_passes_its_node_tests() {
    let installed = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success());
    if !installed {
        assert!(
            !switchboard::testing::in_ci(),
            "CI is set and this test needs `node` (Debian: `sudo apt-get install nodejs`)"
        );
        eprintln!(
            "skipped the browser client's tests: node is not on the PATH; install Node.js 18 or later to run them"
        );
        return;
    }
    let client = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../client");
    let out = Command::new("node")
        .arg("--test")
        .arg(".")
        .current_dir(&client)
        .output()
        .expect("run node --test");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "node --test failed:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let passed = report
        .lines()
        .find_map(|line| line.strip_prefix("# pass "))
        .and_then(|n| n.trim().parse::<u32>().ok());
    assert!(
        passed.is_some_and(|n| n >= 7),
        "the client's tests ran: {report}"
    );
}
