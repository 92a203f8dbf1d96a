//! Each example, started as the program a user runs (`target/debug/examples/NAME`, built by
//! `cargo test --workspace`) on a free port, and driven over real sockets.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use switchboard::testing::{Received, Remote};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A running example.
struct Example {
    child: Child,
    remote: Remote,
}

impl std::ops::Deref for Example {
    type Target = Remote;

    fn deref(&self) -> &Remote {
        &self.remote
    }
}

impl Example {
    /// Starts an example on a free port and waits for its `listening on http://ADDR` line.
    async fn start(name: &str) -> Example {
        Self::start_with(name, &[]).await
    }

    /// Starts an example with more environment variables.
    async fn start_with(name: &str, env: &[(&str, &str)]) -> Example {
        let binary = binary(name);
        let mut child = Command::new(&binary)
            .env("SWITCHBOARD_ADDR", "127.0.0.1:0")
            .env_remove("SWITCHBOARD_REDIS_URL")
            .env_remove("SWITCHBOARD_BROKER_URL")
            .env_remove("SWITCHBOARD_RECOVERY")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let addr = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.expect("read stdout") {
                if let Some(addr) = line.strip_prefix("listening on http://") {
                    return addr.parse().expect("an address");
                }
            }
            panic!("{name} ended without saying where it listens");
        })
        .await
        .expect("the example starts within 30 s");
        Example {
            child,
            remote: Remote::new(addr),
        }
    }

    /// Sends SIGTERM and waits for the example to exit.
    async fn terminate(mut self) -> ExitStatus {
        let pid = self.child.id().expect("still running");
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("the example exits within 30 s")
            .expect("wait for the example")
    }
}

/// The example's binary, checked to be newer than the sources it is built from.
fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary");
    let target = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>");
    let binary = target.join("examples").join(name);
    let built = std::fs::metadata(&binary)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| {
            panic!(
                "{} is missing: `cargo test --workspace` builds the examples (or run `cargo build -p switchboard-examples --examples`)",
                binary.display()
            )
        });
    // The sources this binary was built from, as cargo's dep-info file beside it lists them
    // (a change to another example's files does not make this one stale).
    let deps = std::fs::read_to_string(binary.with_extension("d")).unwrap_or_default();
    let newest = deps
        .split_once(": ")
        .map(|(_, sources)| sources)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|source| std::fs::metadata(source).and_then(|m| m.modified()).ok())
        .max()
        .unwrap_or(SystemTime::UNIX_EPOCH);
    assert!(
        built >= newest,
        "{} is older than its sources: rebuild with `cargo build -p switchboard-examples --examples` (`cargo test --workspace` does)",
        binary.display()
    );
    binary
}

async fn stats(example: &Example) -> Value {
    let response = example.get("/stats").await;
    assert_eq!(response.status, 200);
    response.json()
}

/// Polls `/stats` (bounded) until it shows `expected`.
async fn stats_become(example: &Example, expected: Value) {
    let mut last = Value::Null;
    for _ in 0..500 {
        last = stats(example).await;
        if last == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(last, expected);
}

#[tokio::test]
async fn chat_rooms_are_isolated_and_every_member_gets_every_message_in_order() {
    let chat = Example::start("chat").await;
    let mut red_a = chat.connect("/chat/red").await;
    let mut red_b = chat.connect("/chat/red").await;
    let mut blue = chat.connect("/chat/blue").await;
    stats_become(
        &chat,
        json!({"connections": 3, "groups": {"chat_red": 2, "chat_blue": 1}}),
    )
    .await;

    for seq in 0..50 {
        red_a
            .send_json(&json!({"seq": seq, "text": "héllo ✓"}))
            .await;
    }
    for member in [&mut red_a, &mut red_b] {
        for seq in 0..50 {
            let text = member.recv_text().await;
            assert!(text.contains("héllo ✓"), "non-ASCII is not escaped: {text}");
            assert_eq!(
                serde_json::from_str::<Value>(&text).unwrap(),
                json!({"room": "red", "message": {"seq": seq, "text": "héllo ✓"}})
            );
        }
    }
    blue.send_json(&json!("only blue")).await;
    assert_eq!(
        blue.recv_json::<Value>().await,
        json!({"room": "blue", "message": "only blue"})
    );
    assert_eq!(red_a.recv_within(Duration::from_millis(100)).await, None);
    assert_eq!(red_b.recv_within(Duration::from_millis(1)).await, None);

    // Room names are percent-decoded.
    let mut cafe = chat.connect("/chat/caf%C3%A9").await;
    cafe.send_json(&json!(1)).await;
    assert_eq!(
        cafe.recv_json::<Value>().await,
        json!({"room": "café", "message": 1})
    );
    stats_become(
        &chat,
        json!({"connections": 4, "groups": {"chat_red": 2, "chat_blue": 1, "chat_café": 1}}),
    )
    .await;

    // A closed connection leaves its group; an empty group disappears.
    blue.close(1000, "bye").await;
    assert_eq!(blue.expect_close().await.0, 1000);
    drop(cafe);
    stats_become(&chat, json!({"connections": 2, "groups": {"chat_red": 2}})).await;
    drop((red_a, red_b));
    assert!(chat.terminate().await.success());
}

/// A client with a name is in the room's roster: it gets the roster when it joins, then the
/// diffs as others come and go; `GET /rooms/{room}/who` answers the same; clients without a
/// name (the harness's) are in the room, not in the roster, and get no presence messages.
#[tokio::test]
async fn chat_shows_who_is_in_the_room_and_keeps_it_current() {
    let chat = Example::start("chat").await;
    let mut anonymous = chat.connect("/chat/green").await;
    let mut alice = chat.connect("/chat/green?name=alice").await;
    let roster: Value = alice.recv_json().await;
    let names = |members: &Value| -> Vec<String> {
        members
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["data"]["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(roster["roster"]["group"], "who_green");
    assert_eq!(names(&roster["roster"]["members"]), ["alice"]);
    let diff: Value = alice.recv_json().await;
    assert_eq!(names(&diff["presence"]["joins"]), ["alice"], "{diff}");
    let mut bob = chat.connect("/chat/green?name=bob").await;
    let roster: Value = bob.recv_json().await;
    let mut listed = names(&roster["roster"]["members"]);
    listed.sort();
    assert_eq!(listed, ["alice", "bob"]);
    let diff: Value = alice.recv_json().await;
    assert_eq!(names(&diff["presence"]["joins"]), ["bob"], "{diff}");
    let who: Value = chat.get("/rooms/green/who").await.json();
    assert_eq!(
        (&who["connections"], &who["users"]),
        (&json!(2), &json!(2)),
        "{who}"
    );
    drop(bob);
    let diff: Value = alice.recv_json().await;
    assert_eq!(names(&diff["presence"]["leaves"]), ["bob"], "{diff}");
    // Messages still reach everyone in the room, the unnamed too; presence reached no one
    // without a name.
    alice.send_json(&json!("hi")).await;
    assert_eq!(
        anonymous.recv_json::<Value>().await,
        json!({"room": "green", "message": "hi"})
    );
    assert_eq!(
        alice.recv_json::<Value>().await,
        json!({"room": "green", "message": "hi"})
    );
    // A name too long for member info is refused with the reason.
    let long = "x".repeat(2000);
    let mut refused = chat.connect(&format!("/chat/green?name={long}")).await;
    match refused.recv().await {
        Received::Close(4400, reason) => assert!(reason.contains("member info"), "{reason}"),
        other => panic!("{other:?}"),
    }
    drop((anonymous, alice, refused));
    assert!(chat.terminate().await.success());
}

#[tokio::test]
async fn two_chat_servers_sharing_a_redis_carry_a_room_between_them() {
    let Some(redis) = switchboard::testing::RedisServer::start().await else {
        return;
    };
    two_chat_servers_carry_a_room_between_them(("SWITCHBOARD_REDIS_URL", &redis.url())).await;
}

#[tokio::test]
async fn two_chat_servers_sharing_a_nats_carry_a_room_between_them() {
    let Some(nats) = switchboard::testing::NatsServer::start().await else {
        return;
    };
    two_chat_servers_carry_a_room_between_them(("SWITCHBOARD_BROKER_URL", &nats.url())).await;
}

#[tokio::test]
async fn two_chat_servers_sharing_a_redis_cluster_carry_a_room_between_them() {
    let Some(cluster) = switchboard::testing::RedisCluster::start().await else {
        return;
    };
    two_chat_servers_carry_a_room_between_them(("SWITCHBOARD_BROKER_URL", &cluster.url())).await;
}

/// Two chat servers given the broker `variable` names: recoverable rooms across both, one
/// order for every member, the cluster's groups.
async fn two_chat_servers_carry_a_room_between_them(variable: (&str, &str)) {
    let env = [variable];
    let one = Example::start_with("chat", &env).await;
    let two = Example::start_with("chat", &env).await;
    // In a cluster the rooms are recoverable by default: each join is answered with its
    // report.
    let mut alice = one.connect("/chat/lobby").await;
    let mut bob = two.connect("/chat/lobby").await;
    let mut carol = two.connect("/chat/elsewhere").await;
    for (member, group) in [
        (&mut alice, "chat_lobby"),
        (&mut bob, "chat_lobby"),
        (&mut carol, "chat_elsewhere"),
    ] {
        let report: Value = member.recv_json().await;
        assert_eq!(
            (&report["group"], &report["recovery"]),
            (&json!(group), &json!("fresh"))
        );
    }
    // Each server counts its own members; the cluster view counts both servers'.
    stats_become(&one, json!({"connections": 1, "groups": {"chat_lobby": 1}})).await;
    let mut cluster = Value::Null;
    for _ in 0..500 {
        cluster = one.get("/cluster").await.json();
        if cluster == json!({"groups": {"chat_elsewhere": 1, "chat_lobby": 2}}) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        cluster,
        json!({"groups": {"chat_elsewhere": 1, "chat_lobby": 2}})
    );

    alice.send_json(&json!("hi bob")).await;
    bob.send_json(&json!("hi alice")).await;
    // Both get both, in the room stream's one order, with its offsets.
    let mut seen = Vec::new();
    for member in [&mut alice, &mut bob] {
        let got = [
            member.recv_json::<Value>().await,
            member.recv_json::<Value>().await,
        ];
        let offsets: Vec<&Value> = got.iter().map(|m| &m["offset"]).collect();
        assert_eq!(offsets, [&json!(1), &json!(2)], "{got:?}");
        let data: Vec<Value> = got.iter().map(|m| m["data"].clone()).collect();
        seen.push(data.clone());
        let mut sorted = data;
        sorted.sort_by_key(Value::to_string);
        assert_eq!(
            sorted,
            [
                json!({"room": "lobby", "message": "hi alice"}),
                json!({"room": "lobby", "message": "hi bob"}),
            ]
        );
    }
    assert_eq!(seen[0], seen[1], "one order for every member");
    assert_eq!(carol.recv_within(Duration::from_millis(100)).await, None);
    drop((alice, bob, carol));
    assert!(one.terminate().await.success());
    assert!(two.terminate().await.success());
}

#[tokio::test]
async fn chat_refuses_bad_input_per_connection_and_the_room_carries_on() {
    let chat = Example::start("chat").await;
    let mut calm = chat.connect("/chat/lobby").await;
    let mut broken = chat.connect("/chat/lobby").await;
    broken.send_text("{not json").await;
    let (code, reason) = broken.expect_close().await;
    assert_eq!(code, 1007);
    assert!(reason.starts_with("invalid JSON"), "{reason}");
    let mut binary = chat.connect("/chat/lobby").await;
    binary.send_bytes(vec![0u8, 1, 2]).await;
    assert_eq!(binary.expect_close().await.0, 1003);
    let mut huge = chat.connect("/chat/lobby").await;
    huge.send_json(&json!({"text": "x".repeat(70 * 1024)}))
        .await;
    assert_eq!(huge.expect_close().await.0, 1009);
    // Nothing of that was broadcast; the room still works.
    calm.send_json(&json!("still here")).await;
    assert_eq!(
        calm.recv_json::<Value>().await,
        json!({"room": "lobby", "message": "still here"})
    );
    drop((broken, binary, huge));
    stats_become(
        &chat,
        json!({"connections": 1, "groups": {"chat_lobby": 1}}),
    )
    .await;
    drop(calm);
    assert!(chat.terminate().await.success());
}

#[tokio::test]
async fn chat_serves_its_page_and_shuts_down_gracefully_with_1001() {
    let chat = Example::start("chat").await;
    let page = chat.get("/").await;
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("/client/switchboard.js"),
        "a page that chats through the client"
    );
    let mut a = chat.connect("/chat/x").await;
    let mut b = chat.connect("/chat/y").await;
    stats_become(
        &chat,
        json!({"connections": 2, "groups": {"chat_x": 1, "chat_y": 1}}),
    )
    .await;
    let closes = tokio::spawn(async move { (a.expect_close().await, b.expect_close().await) });
    let status = chat.terminate().await;
    assert!(status.success(), "exits cleanly on SIGTERM: {status}");
    let (a, b) = closes.await.unwrap();
    assert_eq!(a, (1001, "server shutting down".into()));
    assert_eq!(b, (1001, "server shutting down".into()));
}

#[tokio::test]
async fn notifications_posted_over_http_reach_every_websocket_subscriber() {
    let example = Example::start("notifications").await;
    let mut first = example.connect("/notifications").await;
    let mut second = example.connect("/notifications").await;
    // Joining happens after the handshake: wait until both are members.
    let mut delivered = false;
    for _ in 0..200 {
        let response = example
            .post_json("/notifications", &json!({"probe": true}))
            .await;
        assert_eq!(
            response.json::<Value>(),
            json!({"listeners": 1, "failed": 0})
        );
        let a = first.recv_within(Duration::from_millis(20)).await;
        let b = second.recv_within(Duration::from_millis(20)).await;
        if a.is_some() && b.is_some() {
            delivered = true;
            break;
        }
    }
    assert!(delivered, "both subscribers joined");
    let response = example
        .post_json("/notifications", &json!({"text": "deploy finished"}))
        .await;
    assert_eq!(response.status, 200);
    for client in [&mut first, &mut second] {
        loop {
            let message: Value = client.recv_json().await;
            if message != json!({"probe": true}) {
                assert_eq!(message, json!({"text": "deploy finished"}));
                break;
            }
        }
    }
    drop((first, second));
    assert!(example.terminate().await.success());
}

#[tokio::test]
async fn namespaced_events_reach_namespace_listeners() {
    let example = Example::start("namespaced").await;
    let mut client = example.connect("/ws").await;
    client.send_text("hello").await;
    assert_eq!(
        client.recv_json::<Value>().await,
        json!({"echo": "hello", "event": "websocket:message.received"})
    );
    client.send_text("again").await;
    assert_eq!(client.recv_json::<Value>().await["echo"], "again");
    let events: Value = example.get("/events").await.json();
    // `connected` and two `message.received`, seen by `websocket:**`.
    assert_eq!(events, json!({"seen": 3, "messages": 2}));
    drop(client);
    assert!(example.terminate().await.success());
}

#[tokio::test]
async fn welcome_greets_the_first_connection_once_and_connections_hear_who_joins() {
    let example = Example::start("welcome").await;
    let mut first = example.connect("/ws").await;
    assert_eq!(first.recv_json::<Value>().await, json!({"type": "welcome"}));
    let mut second = example.connect("/ws").await;
    let joined: Value = first.recv_json().await;
    assert_eq!(joined["type"], "joined");
    // The second connection is not welcomed (once per app) and hears of no one before it.
    assert_eq!(second.recv_within(Duration::from_millis(100)).await, None);
    // When the first leaves, its connection-scoped listener goes with it.
    first.close(1000, "").await;
    first.expect_close().await;
    let mut third = example.connect("/ws").await;
    let joined: Value = second.recv_json().await;
    assert_eq!(joined["type"], "joined");
    assert_eq!(third.recv_within(Duration::from_millis(100)).await, None);
    drop((second, third));
    assert!(example.terminate().await.success());
}

#[tokio::test]
async fn errors_reach_one_central_listener() {
    let example = Example::start("errors").await;
    let mut client = example.connect("/orders").await;
    client
        .send_json(&json!({"item": "tea", "quantity": 2}))
        .await;
    assert_eq!(
        client.recv_json::<Value>().await,
        json!({"accepted": "tea", "quantity": 2})
    );
    client
        .send_json(&json!({"item": "tea", "quantity": 0}))
        .await;
    assert_eq!(
        client.expect_close().await,
        (4422, "no quantity for tea".into())
    );
    let mut client = example.connect("/orders").await;
    client.send_text("{broken").await;
    assert_eq!(client.expect_close().await.0, 1007);
    let mut recorded = Value::Null;
    for _ in 0..200 {
        recorded = example.get("/errors").await.json();
        if recorded.as_array().is_some_and(|a| a.len() == 2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let recorded = recorded.as_array().expect("a list").clone();
    assert_eq!(recorded.len(), 2, "{recorded:?}");
    assert_eq!(recorded[0]["path"], "/orders");
    assert_eq!(recorded[0]["code"], 4422);
    assert_eq!(recorded[1]["code"], 1007);
    assert!(
        recorded[1]["message"]
            .as_str()
            .unwrap()
            .contains("invalid JSON")
    );
    assert!(matches!(
        client.recv().await,
        Received::Ended | Received::Close(..)
    ));
    assert!(example.terminate().await.success());
}

/// Runs an example that must fail to start: returns its standard error, checked to be one
/// line, after checking it exited with code 1.
async fn fails_to_start(name: &str, env: &[(&str, &str)]) -> String {
    let binary = binary(name);
    let run = Command::new(&binary)
        .env_remove("SWITCHBOARD_REDIS_URL")
        .env_remove("SWITCHBOARD_BROKER_URL")
        .env_remove("SWITCHBOARD_REDIS_CA")
        .env_remove("SWITCHBOARD_RECOVERY")
        .env_remove("SWITCHBOARD_MAX_CONNECTIONS")
        .env_remove("RUST_LOG")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the example ends within 30 s")
        .expect("run the example");
    let stderr = String::from_utf8(output.stderr).expect("UTF-8");
    assert_eq!(output.status.code(), Some(1), "{env:?}: {stderr}");
    assert!(output.stdout.is_empty(), "{env:?}: nothing on stdout");
    assert_eq!(stderr.lines().count(), 1, "{env:?}: one line: {stderr}");
    assert!(!stderr.contains("Error {"), "no Debug dump: {stderr}");
    stderr.trim_end().to_owned()
}

#[tokio::test]
async fn a_bad_address_ends_with_one_line_naming_the_setting() {
    for value in [
        "nonsense",
        "",
        "http://127.0.0.1:8123",
        "127.0.0.1",
        "[::1:80",
    ] {
        let line = fails_to_start("chat", &[("SWITCHBOARD_ADDR", value)]).await;
        assert_eq!(
            line,
            format!("error: SWITCHBOARD_ADDR={value}: expected HOST:PORT such as 127.0.0.1:8000")
        );
    }
    // Every example goes through the same start.
    let line = fails_to_start("welcome", &[("SWITCHBOARD_ADDR", "http://x")]).await;
    assert_eq!(
        line,
        "error: SWITCHBOARD_ADDR=http://x: expected HOST:PORT such as 127.0.0.1:8000"
    );
}

#[tokio::test]
async fn a_port_in_use_ends_with_one_line_naming_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let line = fails_to_start("chat", &[("SWITCHBOARD_ADDR", &addr)]).await;
    assert!(
        line.starts_with(&format!("error: SWITCHBOARD_ADDR={addr}: cannot listen on")),
        "{line}"
    );
    assert!(
        line.to_lowercase().contains("address already in use"),
        "{line}"
    );
}

#[tokio::test]
async fn a_bad_redis_setting_ends_with_one_line_naming_it() {
    let env = [
        ("SWITCHBOARD_ADDR", "127.0.0.1:0"),
        ("SWITCHBOARD_REDIS_URL", "http://user:hunter22@x"),
    ];
    let line = fails_to_start("chat", &env).await;
    assert!(
        line.starts_with("error: SWITCHBOARD_REDIS_URL=http://user:***@x: invalid Redis URL"),
        "{line}"
    );
    assert!(line.contains("expected redis://HOST[:PORT][/DB]"), "{line}");
    assert!(!line.contains("hunter22"), "{line}");

    let env = [
        ("SWITCHBOARD_ADDR", "127.0.0.1:0"),
        ("SWITCHBOARD_REDIS_URL", "rediss://127.0.0.1:1/"),
        ("SWITCHBOARD_REDIS_CA", "/nonexistent/ca.pem"),
    ];
    let line = fails_to_start("chat", &env).await;
    assert!(
        line.starts_with("error: SWITCHBOARD_REDIS_CA=/nonexistent/ca.pem: cannot read"),
        "{line}"
    );
}

#[tokio::test]
async fn a_bad_broker_url_ends_with_one_line_naming_it() {
    let cases = [
        (
            vec![("SWITCHBOARD_BROKER_URL", "http://user:hunter22@x")],
            "error: SWITCHBOARD_BROKER_URL=http://user:***@x: unknown broker: the URL must start \
             with redis://, rediss://, redis+unix://, redis+cluster://, nats:// or tls://",
        ),
        (
            vec![("SWITCHBOARD_BROKER_URL", "nats://a:1,,nats://b:2")],
            "error: SWITCHBOARD_BROKER_URL=nats://a:1,,nats://b:2: invalid NATS URL",
        ),
        (
            vec![
                ("SWITCHBOARD_BROKER_URL", "nats://127.0.0.1:1"),
                ("SWITCHBOARD_REDIS_URL", "redis://127.0.0.1:1"),
            ],
            "error: both SWITCHBOARD_BROKER_URL and SWITCHBOARD_REDIS_URL are set",
        ),
    ];
    for (vars, expected) in cases {
        let mut env = vec![("SWITCHBOARD_ADDR", "127.0.0.1:0")];
        env.extend(vars);
        let line = fails_to_start("chat", &env).await;
        assert!(line.starts_with(expected), "{line}");
        assert!(!line.contains("hunter22"), "{line}");
    }
}

#[tokio::test]
async fn a_bad_connection_cap_ends_with_one_line() {
    for value in ["0", "many", "-1"] {
        let env = [
            ("SWITCHBOARD_ADDR", "127.0.0.1:0"),
            ("SWITCHBOARD_MAX_CONNECTIONS", value),
        ];
        let line = fails_to_start("chat", &env).await;
        assert_eq!(
            line,
            format!(
                "error: SWITCHBOARD_MAX_CONNECTIONS={value}: expected a positive number of connections"
            )
        );
    }
}

/// `SWITCHBOARD_MAX_CONNECTIONS` caps the connections: past it, handshakes get 503.
#[tokio::test]
async fn the_connection_cap_is_a_setting() {
    let chat = Example::start_with("chat", &[("SWITCHBOARD_MAX_CONNECTIONS", "2")]).await;
    let first = chat.connect("/chat/capped").await;
    let second = chat.connect("/chat/capped").await;
    let refused = chat.client("/chat/capped").connect().await.unwrap_err();
    assert_eq!(refused.status, 503);
    drop((first, second));
    assert!(chat.terminate().await.success());
}

#[tokio::test]
async fn a_bad_recovery_setting_ends_with_one_line() {
    let env = [
        ("SWITCHBOARD_ADDR", "127.0.0.1:0"),
        ("SWITCHBOARD_RECOVERY", "yes"),
    ];
    let line = fails_to_start("chat", &env).await;
    assert_eq!(
        line,
        "error: SWITCHBOARD_RECOVERY=yes: expected 1 (on) or 0 (off)"
    );
}

#[tokio::test]
async fn every_example_says_what_to_connect_to_at_its_root() {
    for (name, connect_to) in [
        ("notifications", "/notifications"),
        ("namespaced", "/ws"),
        ("welcome", "/ws"),
        ("errors", "/orders"),
    ] {
        let example = Example::start(name).await;
        let root = example.get("/").await;
        assert_eq!(root.status, 200, "{name}");
        assert_eq!(example.get("/healthz").await.status, 200, "{name}");
        assert_eq!(example.get("/readyz").await.status, 200, "{name}");
        let client = example.get("/client/switchboard.js").await;
        assert_eq!(client.status, 200, "{name}");
        assert!(client.body.contains("export class Switchboard"), "{name}");
        let metrics = example.get("/metrics").await;
        assert_eq!(metrics.status, 200, "{name}");
        assert!(
            metrics.body.contains("\nswitchboard_connections 0\n"),
            "{name}"
        );
        assert!(
            root.body.starts_with(name) && root.body.contains(connect_to),
            "{name}: {}",
            root.body
        );
        let status = example.terminate().await;
        assert!(status.success(), "{name}: {status}");
    }
}

/// Runs a script in the page; its return value.
async fn run_script(browser: &switchboard_tests::Browser, script: &str) -> Value {
    browser
        .command("execute/sync", json!({ "script": script, "args": [] }))
        .await
}

#[tokio::test]
async fn the_chat_page_reconnects_by_itself_after_a_server_restart() {
    let Some(browser) = switchboard_tests::Browser::start().await else {
        return;
    };
    // A fixed port: the restarted server is at the same address.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let chat = Example::start_with("chat", &[("SWITCHBOARD_ADDR", &addr)]).await;
    browser
        .command("url", json!({ "url": format!("http://{addr}/") }))
        .await;
    run_script(
        &browser,
        "document.querySelector('#join button').click(); return true;",
    )
    .await;
    browser.until_text("status", "connected").await;

    let mut bob = chat.connect("/chat/lobby").await;
    bob.send_json(&json!({"name": "bob", "text": "hello"}))
        .await;
    browser.until_contains("log", "bob: hello").await;
    // The page's own message comes back marked as its own.
    run_script(
        &browser,
        "document.querySelector('#say input').value = 'hi from the page';
         document.querySelector('#say button').click(); return true;",
    )
    .await;
    browser
        .until_contains("log", "guest: hi from the page")
        .await;
    let own = run_script(
        &browser,
        "return document.querySelector('#log p.own')?.textContent;",
    )
    .await;
    assert!(
        own.as_str().unwrap().ends_with("guest: hi from the page"),
        "{own}"
    );
    // Messages of another shape are shown as text, never as `undefined` or markup.
    bob.send_json(&Value::Null).await;
    bob.send_json(&json!({"name": 5, "text": {"b": "<b>x</b>"}}))
        .await;
    let log = browser.until_contains("log", "<b>x</b>").await;
    assert!(log.contains("(a message of another shape)"), "{log}");
    assert!(
        !log.contains("undefined") && !log.contains("[object Object]"),
        "{log}"
    );
    let bold = run_script(
        &browser,
        "return document.querySelectorAll('#log b').length;",
    )
    .await;
    assert_eq!(bold, 0, "no markup from the network");

    // The server restarts: the page says so, reconnects by itself, and chats again.
    drop(bob);
    let status = chat.terminate().await;
    assert!(status.success());
    browser.until_contains("status", "reconnecting").await;
    let chat = Example::start_with("chat", &[("SWITCHBOARD_ADDR", &addr)]).await;
    browser.until_text("status", "connected").await;
    let mut bob = chat.connect("/chat/lobby").await;
    bob.send_json(&json!({"name": "bob", "text": "back again"}))
        .await;
    browser.until_contains("log", "bob: back again").await;
    let sendable = run_script(
        &browser,
        "return !document.querySelector('#say button').disabled;",
    )
    .await;
    assert_eq!(sendable, true, "Send works after the reconnect");
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    browser
        .screenshot(&dir.join("chat-page-after-restart.png"))
        .await;

    // Switching rooms: the old room's late close never greys out the new room's Send.
    for room in ["kitchen", "garden", "lobby", "attic"] {
        run_script(
            &browser,
            &format!(
                "document.querySelector('#join input[name=room]').value = '{room}';
                 document.querySelector('#join button').click(); return true;"
            ),
        )
        .await;
        browser.until_text("status", "connected").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let sendable = run_script(
            &browser,
            "return !document.querySelector('#say button').disabled;",
        )
        .await;
        assert_eq!(sendable, true, "{room}: Send stays enabled");
    }
    drop(bob);
    let status = chat.terminate().await;
    assert!(status.success());
}

/// A free loopback port.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Opens the chat page of `addr` in `browser` and joins `lobby` as `name`.
async fn join_lobby(browser: &switchboard_tests::Browser, addr: &str, name: &str) {
    browser
        .command("url", json!({ "url": format!("http://{addr}/") }))
        .await;
    run_script(
        browser,
        &format!(
            "document.querySelector('#join input[name=name]').value = '{name}';
             document.querySelector('#join button').click(); return true;"
        ),
    )
    .await;
    browser.until_text("status", "connected").await;
}

/// Says `text` from the page.
async fn say(browser: &switchboard_tests::Browser, text: &str) {
    run_script(
        browser,
        &format!(
            "document.querySelector('#say input').value = '{text}';
             document.querySelector('#say button').click(); return true;"
        ),
    )
    .await;
}

/// Two pages chat through two servers sharing one Redis; one server restarts while the pages
/// are open; its page reconnects by itself, and what the other page said meanwhile appears
/// in it once, recovered from the room's stream.
#[tokio::test]
async fn two_pages_on_a_cluster_recover_what_was_said_while_a_server_restarted() {
    let Some(redis) = switchboard::testing::RedisServer::start().await else {
        return;
    };
    let Some(alice) = switchboard_tests::Browser::start().await else {
        return;
    };
    let Some(bob) = switchboard_tests::Browser::start().await else {
        return;
    };
    let url = redis.url();
    let (one_addr, two_addr) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let env = |addr: &str| {
        [
            ("SWITCHBOARD_REDIS_URL", url.clone()),
            ("SWITCHBOARD_ADDR", addr.to_owned()),
        ]
    };
    let start = |addr: String| {
        let env = env(&addr);
        async move {
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            Example::start_with("chat", &env).await
        }
    };
    let one = start(one_addr.clone()).await;
    let two = start(two_addr.clone()).await;
    join_lobby(&alice, &one_addr, "alice").await;
    join_lobby(&bob, &two_addr, "bob").await;
    // Who is in the room, across the two servers.
    alice.until_text("who", "In the room: alice, bob").await;
    bob.until_text("who", "In the room: alice, bob").await;
    say(&alice, "hello bob").await;
    bob.until_contains("log", "alice: hello bob").await;
    say(&bob, "hello alice").await;
    alice.until_contains("log", "bob: hello alice").await;

    // Bob's server restarts; Alice speaks while it is down.
    assert!(two.terminate().await.success());
    bob.until_contains("status", "reconnecting").await;
    alice.until_text("who", "In the room: alice").await;
    say(&alice, "said during the restart").await;
    alice
        .until_contains("log", "alice: said during the restart")
        .await;
    let two = start(two_addr.clone()).await;
    bob.until_text("status", "connected").await;
    alice.until_text("who", "In the room: alice, bob").await;
    let log = bob.until_contains("log", "said during the restart").await;
    assert_eq!(
        log.matches("said during the restart").count(),
        1,
        "recovered once: {log}"
    );
    assert!(!log.contains("could not be recovered"), "{log}");
    // And the room goes on.
    say(&bob, "back").await;
    alice.until_contains("log", "bob: back").await;
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    alice.screenshot(&dir.join("cluster-chat-alice.png")).await;
    bob.screenshot(&dir.join("cluster-chat-bob.png")).await;
    assert_eq!(
        bob.until_contains("log", "back")
            .await
            .matches("said during the restart")
            .count(),
        1
    );
    drop((alice, bob));
    assert!(one.terminate().await.success());
    assert!(two.terminate().await.success());
}
