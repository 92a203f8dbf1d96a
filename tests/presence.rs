//! Presence: rosters of who is in a group, counts of connections and distinct users, join and
//! leave events in order, and diffs pushed to members, coalesced and bounded.

use std::time::Duration;

use switchboard::channel::{MemberInfo, PresenceJoined, PresenceLeft, PresenceStats};
use switchboard::event::names;
use switchboard::prelude::*;
use switchboard::testing::{Received, TestClient, TestServer};
use switchboard_tests::{Log, eventually};

/// Joins `room`: as `?user=` (with `{"name": user}` as its data) when given, else as its
/// connection alone; `?ttl=MS` makes the channel expire after that long without activity.
#[ws_route("/p/{room}")]
async fn member(mut ws: WebSocket, room: String, channels: ChannelBox) -> Result<(), WsError> {
    let user = ws.query_param("user");
    let ttl = ws.query_param("ttl").and_then(|ms| ms.parse().ok());
    ws.accept().await?;
    let channel = ws.channel();
    if let Some(ms) = ttl {
        channel.set_ttl(Some(Duration::from_millis(ms)));
    }
    match user {
        Some(user) => {
            let info = MemberInfo::user(&user).with_data(json!({ "name": user }))?;
            channels
                .add_channel_to_group_as(&channel, &room, info)
                .await
                .map_err(|e| WsError::close(4400, e.to_string()))?;
        }
        None => {
            channels.add_channel_to_group(&channel, &room).await?;
        }
    }
    ws.send_text("joined").await?;
    while ws.receive().await?.is_some() {}
    Ok(())
}

fn app(window_ms: u64) -> App {
    App::builder()
        .only_module(module_path!())
        .presence_groups("room*")
        .presence_diffs("room*")
        .presence_window(Duration::from_millis(window_ms))
        .expiry_sweep_interval(Duration::from_millis(20))
        .build()
        .unwrap()
}

async fn join(server: &TestServer, path: &str) -> TestClient {
    let mut client = server.connect(path).await;
    assert_eq!(client.recv_text().await, "joined");
    client
}

/// The next presence message this client gets.
async fn next_diff(client: &mut TestClient) -> Value {
    let value: Value = client.recv_json().await;
    assert!(
        value.get("presence").is_some(),
        "a presence message: {value}"
    );
    value["presence"].clone()
}

fn users(list: &Value) -> Vec<Value> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|member| member["user"].clone())
        .collect()
}

/// Records `join USER` and `leave USER` as the events come.
fn record(app: &App) -> Log {
    let log = Log::default();
    // The payloads are typed: `PresenceJoined` and `PresenceLeft`.
    let joins = log.clone();
    let on_join = move |change: PresenceJoined| {
        assert_eq!(change.group, "room-a");
        joins.push(format!(
            "join {}",
            change.member.user.as_deref().unwrap_or("-")
        ));
        std::future::ready(())
    };
    app.events().on(names::PRESENCE_JOIN, on_join).unwrap();
    let leaves = log.clone();
    let on_leave = move |change: PresenceLeft| {
        assert_eq!(change.group, "room-a");
        leaves.push(format!(
            "leave {}",
            change.member.user.as_deref().unwrap_or("-")
        ));
        std::future::ready(())
    };
    app.events().on(names::PRESENCE_LEAVE, on_leave).unwrap();
    log
}

#[tokio::test]
async fn joins_leaves_and_expiry_are_events_in_order_and_diffs_to_members() {
    let app = app(30);
    let log = record(&app);
    let server = TestServer::start(app.clone()).await;
    let mut alice = join(&server, "/p/room-a?user=alice").await;
    let diff = next_diff(&mut alice).await;
    assert_eq!(diff["group"], "room-a");
    assert_eq!(
        users(&diff["joins"]),
        [json!("alice")],
        "her own join: {diff}"
    );
    let member = &diff["joins"][0];
    assert_eq!(member["data"], json!({ "name": "alice" }));
    assert!(member["channel"].is_string() && member["joined_at"].as_u64().unwrap() > 0);

    let bob = join(&server, "/p/room-a?user=bob").await;
    assert_eq!(users(&next_diff(&mut alice).await["joins"]), [json!("bob")]);
    drop(bob);
    let diff = next_diff(&mut alice).await;
    assert_eq!(
        (users(&diff["joins"]), users(&diff["leaves"])),
        (vec![], vec![json!("bob")])
    );

    // Expiry: carol's channel expires after 50 ms without activity.
    let carol = join(&server, "/p/room-a?user=carol&ttl=50").await;
    assert_eq!(
        users(&next_diff(&mut alice).await["joins"]),
        [json!("carol")]
    );
    let diff = next_diff(&mut alice).await;
    assert_eq!(users(&diff["leaves"]), [json!("carol")], "expired: {diff}");

    // A member that joins and leaves within one window is in no diff; the events still say
    // both, in order.
    let app_for_dave = app.clone();
    let dave = join(&server, "/p/room-a?user=dave").await;
    drop(dave);
    eventually("dave's leave", || {
        app_for_dave.channels().members("room-a").len() == 1
    })
    .await;
    assert_eq!(alice.recv_within(Duration::from_millis(150)).await, None);
    eventually("the events", || log.entries().len() == 7).await;
    assert_eq!(
        log.entries(),
        [
            "join alice",
            "join bob",
            "leave bob",
            "join carol",
            "leave carol",
            "join dave",
            "leave dave"
        ]
    );
    drop((alice, carol));
    server.shutdown().await;
}

#[tokio::test]
async fn connections_of_one_user_count_as_one_user_and_listings_are_paged() {
    let app = App::builder()
        .only_module(module_path!())
        .presence_groups("room*")
        .presence_page_size(10)
        .build()
        .unwrap();
    let server = TestServer::start(app.clone()).await;
    let channels = app.channels();
    let mut clients = Vec::new();
    // alice twice, bob, and two members without a user.
    for path in ["?user=alice", "?user=alice", "?user=bob", "", ""] {
        clients.push(join(&server, &format!("/p/room-b{path}")).await);
    }
    assert_eq!(
        channels.presence_stats("room-b").await.unwrap(),
        stats(5, 4),
        "alice counts once; each member without a user counts as one"
    );
    // 25 members: pages of 10, 10 and 5, each member once.
    for n in 0..20 {
        clients.push(join(&server, &format!("/p/room-b?user=u{n}")).await);
    }
    let mut seen = Vec::new();
    let mut page = channels.presence("room-b").await.unwrap();
    let mut sizes = vec![page.members.len()];
    seen.extend(page.members.iter().map(|m| m.channel));
    while let Some(cursor) = page.next.clone() {
        page = channels.presence_after("room-b", &cursor).await.unwrap();
        sizes.push(page.members.len());
        seen.extend(page.members.iter().map(|m| m.channel));
    }
    assert_eq!(sizes, [10, 10, 5]);
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 25, "every member once");
    assert_eq!(
        channels.presence_stats("room-b").await.unwrap(),
        stats(25, 24)
    );
    let bad = channels
        .presence_after("room-b", "nonsense")
        .await
        .unwrap_err();
    assert!(bad.to_string().contains("not a presence cursor"), "{bad}");
    // Leaving updates the counts: one alice left, then the other.
    clients.remove(0);
    eventually("alice's first leave", || {
        channels.members("room-b").len() == 24
    })
    .await;
    assert_eq!(
        channels.presence_stats("room-b").await.unwrap(),
        stats(24, 24)
    );
    clients.remove(0);
    eventually("alice's second leave", || {
        channels.members("room-b").len() == 23
    })
    .await;
    assert_eq!(
        channels.presence_stats("room-b").await.unwrap(),
        stats(23, 23)
    );
    drop(clients);
    server.shutdown().await;
}

fn stats(connections: usize, users: usize) -> PresenceStats {
    let mut stats = PresenceStats::default();
    stats.connections = connections;
    stats.users = users;
    stats
}

/// Two thousand clients join within a few windows: each member gets a few messages, not two
/// thousand; a window with more changes than `presence_max_diff` carries the counts.
#[tokio::test]
async fn a_reconnect_storm_is_a_bounded_number_of_diff_messages() {
    const CLIENTS: usize = 2000;
    let window = Duration::from_millis(100);
    let app = App::builder()
        .only_module(module_path!())
        .presence_groups("room*")
        .presence_diffs("room*")
        .presence_window(window)
        .presence_max_diff(50)
        .build()
        .unwrap();
    let server = TestServer::start(app.clone()).await;
    let mut watcher = join(&server, "/p/room-c?user=watcher").await;
    assert_eq!(
        users(&next_diff(&mut watcher).await["joins"]),
        [json!("watcher")]
    );
    let started = std::time::Instant::now();
    let mut clients = Vec::with_capacity(CLIENTS);
    for n in 0..CLIENTS {
        clients.push(server.connect(&format!("/p/room-c?user=s{n}")).await);
    }
    eventually("every join", || {
        app.channels().members("room-c").len() == CLIENTS + 1
    })
    .await;
    let storm = started.elapsed();
    // Read what the watcher got until a window passes without a message.
    let mut messages = Vec::new();
    while let Some(received) = watcher.recv_within(window * 3).await {
        let Received::Text(text) = received else {
            panic!("text frames only: {received:?}")
        };
        let value: Value = serde_json::from_str(&text).unwrap();
        messages.push(value["presence"].clone());
    }
    let windows = (storm.as_millis() / window.as_millis()) as usize + 2;
    assert!(
        !messages.is_empty() && messages.len() <= windows,
        "{} messages for {CLIENTS} joins in {storm:?} (at most one per window: {windows})",
        messages.len()
    );
    // Followed as a client would: a reset gives the counts, a diff adds and takes; the
    // result is the room as it is.
    let mut known = 1; // the watcher
    for message in &messages {
        if message["reset"] == true {
            known = message["connections"].as_u64().unwrap() as usize;
        } else {
            let joins = message["joins"].as_array().unwrap().len();
            let leaves = message["leaves"].as_array().unwrap().len();
            assert!(
                joins + leaves <= 50,
                "a diff carries at most presence_max_diff changes"
            );
            known = known + joins - leaves;
        }
    }
    assert_eq!(known, CLIENTS + 1, "{} messages", messages.len());
    assert_eq!(
        app.channels().presence_stats("room-c").await.unwrap(),
        stats(CLIENTS + 1, CLIENTS + 1)
    );
    // And the storm of leaves, likewise.
    drop(clients);
    eventually("every leave", || {
        app.channels().members("room-c").len() == 1
    })
    .await;
    let mut leaves = 0;
    while let Some(received) = watcher.recv_within(window * 3).await {
        let Received::Text(text) = received else {
            panic!("text frames only")
        };
        leaves += 1;
        assert!(text.contains("\"presence\""), "{text}");
    }
    assert!(
        leaves >= 1 && leaves <= windows,
        "{leaves} messages for {CLIENTS} leaves"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn member_info_and_presence_need_a_presence_group_and_are_bounded() {
    let app = App::builder()
        .only_module(module_path!())
        .presence_groups("room*")
        .max_member_info(64)
        .build()
        .unwrap();
    let server = TestServer::start(app.clone()).await;
    let mut client = join(&server, "/p/other").await; // no user: a plain join works anywhere
    drop(client.recv_within(Duration::from_millis(10)).await);
    let channels = app.channels();
    let e = channels.presence("other").await.unwrap_err();
    assert!(e.to_string().contains("`other` keeps no presence"), "{e}");
    let e = channels.presence_stats("other").await.unwrap_err();
    assert!(e.to_string().contains("Builder::presence_groups"), "{e}");
    let mut refused = server.connect("/p/other?user=alice").await;
    let closed = refused.recv().await;
    assert!(
        matches!(&closed, Received::Close(_, reason) if reason.contains("keeps no presence")),
        "{closed:?}"
    );
    let long = "x".repeat(100);
    let mut refused = server.connect(&format!("/p/room-d?user={long}")).await;
    let closed = refused.recv().await;
    assert!(
        matches!(&closed, Received::Close(_, reason) if reason.contains("more than the 64")),
        "{closed:?}"
    );
    assert_eq!(
        channels.presence_stats("room-d").await.unwrap(),
        stats(0, 0)
    );

    for (builder, problem) in [
        (
            App::builder().presence_groups("a*b*"),
            "presence_groups: group pattern",
        ),
        (
            App::builder().presence_diffs("room*"),
            "presence_groups names none",
        ),
        (
            App::builder()
                .presence_groups("r")
                .presence_window(Duration::ZERO),
            "presence_window must be more than zero",
        ),
    ] {
        let e = builder.only_module(module_path!()).build().unwrap_err();
        assert!(e.to_string().contains(problem), "{e}");
    }
    drop((client, refused));
    server.shutdown().await;
}

/// Presence across two servers sharing one broker (Redis, NATS), and a server that dies
/// without a goodbye.
mod cluster {
    use super::*;
    use switchboard::broker::{Broker, Nats, Redis};
    use switchboard::testing::{NatsServer, RedisCluster, RedisServer};

    /// Makes an app on the broker at a URL, with a membership TTL.
    type Make = fn(&str, Duration) -> App;

    fn redis_app(url: &str, ttl: Duration) -> App {
        app(Redis::new(url)
            .unwrap()
            .membership_ttl(ttl)
            .timeout(Duration::from_millis(500))
            .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200)))
    }

    fn nats_app(url: &str, ttl: Duration) -> App {
        app(Nats::new(url)
            .unwrap()
            .membership_ttl(ttl)
            .timeout(Duration::from_millis(500))
            .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200)))
    }

    fn app(broker: impl Broker) -> App {
        App::builder()
            .only_module("presence")
            .presence_groups("room*")
            .presence_diffs("room*")
            .presence_window(Duration::from_millis(30))
            .broker(broker)
            .build()
            .unwrap()
    }

    /// Reads presence messages until the joins and leaves seen (by user) are `joins` and
    /// `leaves`.
    async fn until_seen(client: &mut TestClient, joins: &[&str], leaves: &[&str]) {
        let (mut seen_joins, mut seen_leaves) = (Vec::new(), Vec::new());
        while seen_joins.len() < joins.len() || seen_leaves.len() < leaves.len() {
            let diff = next_diff(client).await;
            seen_joins.extend(users(&diff["joins"]));
            seen_leaves.extend(users(&diff["leaves"]));
        }
        assert_eq!(
            (seen_joins, seen_leaves),
            (
                joins.iter().map(|u| json!(u)).collect::<Vec<_>>(),
                leaves.iter().map(|u| json!(u)).collect::<Vec<_>>()
            )
        );
    }

    /// How a server of its own thread ends.
    enum End {
        /// Its runtime is dropped with everything in it: no leave is sent (a crash).
        Crash,
        /// A graceful shutdown, then its runtime is dropped at once (a process that exits).
        Graceful,
    }

    /// A server on a runtime and a thread of its own, with `user` in `room-a`.
    struct OtherServer {
        joined: tokio::sync::oneshot::Receiver<()>,
        stop: tokio::sync::oneshot::Sender<()>,
        thread: std::thread::JoinHandle<()>,
    }

    impl OtherServer {
        fn start(
            make: Make,
            url: String,
            ttl: Duration,
            user: &'static str,
            end: End,
        ) -> OtherServer {
            let (joined_tx, joined) = tokio::sync::oneshot::channel();
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let thread = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async move {
                    let server = TestServer::start(make(&url, ttl)).await;
                    let mut client = join(&server, &format!("/p/room-a?user={user}")).await;
                    let _ = joined_tx.send(());
                    let _ = stopped.await;
                    match end {
                        End::Crash => std::mem::forget((client, server)),
                        End::Graceful => {
                            let reader = tokio::spawn(async move {
                                while !matches!(
                                    client.recv().await,
                                    Received::Close(..) | Received::Ended
                                ) {}
                            });
                            server.shutdown().await;
                            let _ = reader.await;
                        }
                    }
                });
                drop(runtime);
            });
            OtherServer {
                joined,
                stop,
                thread,
            }
        }

        /// Waits until its user joined.
        async fn joined(&mut self) {
            (&mut self.joined).await.unwrap();
        }

        /// Ends it as it was told, and waits for its thread.
        fn end(self) {
            self.stop.send(()).unwrap();
            self.thread.join().unwrap();
        }
    }

    async fn stats_become(app: &App, want: PresenceStats) {
        let mut got = PresenceStats::default();
        for _ in 0..400 {
            got = app.channels().presence_stats("room-a").await.unwrap();
            if got == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("presence stats stayed {got:?}, expected {want:?}");
    }

    #[tokio::test]
    async fn presence_spans_two_servers_and_a_dead_server_leaves_within_the_bound() {
        let Some(redis) = RedisServer::start().await else {
            return;
        };
        presence_spans_two_servers(redis.url(), redis_app).await;
    }

    #[tokio::test]
    async fn presence_spans_two_servers_and_a_dead_server_leaves_within_the_bound_on_nats() {
        let Some(nats) = NatsServer::start().await else {
            return;
        };
        presence_spans_two_servers(nats.url(), nats_app).await;
    }

    #[tokio::test]
    async fn presence_spans_two_servers_and_a_dead_server_leaves_within_the_bound_on_a_redis_cluster()
     {
        let Some(cluster) = RedisCluster::start().await else {
            return;
        };
        presence_spans_two_servers(cluster.url(), redis_app).await;
    }

    async fn presence_spans_two_servers(url: String, make: Make) {
        let ttl = Duration::from_millis(450);
        let (a, b) = (make(&url, ttl), make(&url, ttl));
        let log = record(&a);
        let (server_a, server_b) = (
            TestServer::start(a.clone()).await,
            TestServer::start(b.clone()).await,
        );
        let mut alice = join(&server_a, "/p/room-a?user=alice").await;
        until_seen(&mut alice, &["alice"], &[]).await;
        // Bob, twice, on the other server: his joins reach alice's server as a diff.
        let bob1 = join(&server_b, "/p/room-a?user=bob").await;
        let bob2 = join(&server_b, "/p/room-a?user=bob").await;
        until_seen(&mut alice, &["bob", "bob"], &[]).await;
        stats_become(&a, stats(3, 2)).await;
        assert_eq!(
            b.channels().presence_stats("room-a").await.unwrap(),
            stats(3, 2)
        );
        let page = a.channels().presence("room-a").await.unwrap();
        let mut listed: Vec<String> = page
            .members
            .iter()
            .map(|m| m.user.clone().unwrap())
            .collect();
        listed.sort();
        assert_eq!(
            (listed, page.next),
            (vec!["alice".into(), "bob".into(), "bob".into()], None)
        );
        drop(bob2);
        until_seen(&mut alice, &[], &["bob"]).await;
        stats_become(&a, stats(2, 2)).await;

        // Carol's server dies: its runtime stops with everything in it (no leave is sent).
        let mut carol = OtherServer::start(make, url.clone(), ttl, "carol", End::Crash);
        carol.joined().await;
        until_seen(&mut alice, &["carol"], &[]).await;
        stats_become(&a, stats(3, 3)).await;
        carol.end();
        let died = std::time::Instant::now();
        // The live servers sweep it out once its entry expires (Redis), or announce its
        // members gone once its heartbeat expires (NATS): within the TTL and a third (the
        // refresh period), and its leave reaches the members like any other.
        until_seen(&mut alice, &[], &["carol"]).await;
        let gone_after = died.elapsed();
        // The bound: the TTL and a third (the refresh period), and a window; twice the TTL
        // leaves room for a busy machine.
        assert!(
            gone_after < ttl * 2,
            "carol left presence {gone_after:?} after her server died (TTL {ttl:?})"
        );
        assert_eq!(
            a.channels().presence_stats("room-a").await.unwrap(),
            stats(2, 2)
        );
        eventually("the events on alice's server", || log.entries().len() == 6).await;
        assert_eq!(
            log.entries(),
            [
                "join alice",
                "join bob",
                "join bob",
                "leave bob",
                "join carol",
                "leave carol"
            ]
        );
        // Dave's server shuts down gracefully with dave still there, and its process ends
        // at once (its runtime is dropped as soon as the shutdown returns): its last leaves
        // are in the broker, and on their way to the others, before the shutdown completes.
        let mut dave = OtherServer::start(make, url.clone(), ttl, "dave", End::Graceful);
        dave.joined().await;
        until_seen(&mut alice, &["dave"], &[]).await;
        stats_become(&a, stats(3, 3)).await;
        dave.end();
        assert_eq!(
            a.channels().presence_stats("room-a").await.unwrap(),
            stats(2, 2)
        );
        until_seen(&mut alice, &[], &["dave"]).await;
        drop((alice, bob1));
        server_a.shutdown().await;
    }

    /// Redis restarts empty: each server rewrites its members, the roster is whole again,
    /// and the members the rewrite found missing are announced again as joins.
    #[tokio::test]
    async fn a_redis_restart_rebuilds_the_roster_and_announces_it_again() {
        let Some(mut redis) = RedisServer::start().await else {
            return;
        };
        let ttl = Duration::from_millis(450);
        let (a, b) = (redis_app(&redis.url(), ttl), redis_app(&redis.url(), ttl));
        let (server_a, server_b) = (
            TestServer::start(a.clone()).await,
            TestServer::start(b.clone()).await,
        );
        let mut alice = join(&server_a, "/p/room-a?user=alice").await;
        until_seen(&mut alice, &["alice"], &[]).await;
        let bob = join(&server_b, "/p/room-a?user=bob").await;
        until_seen(&mut alice, &["bob"], &[]).await;
        stats_become(&a, stats(2, 2)).await;
        redis.resume().await;
        // Bob's server rewrites him into the empty Redis and tells the others again.
        until_seen(&mut alice, &["bob"], &[]).await;
        stats_become(&a, stats(2, 2)).await;
        let page = a.channels().presence("room-a").await.unwrap();
        assert_eq!(page.members.len(), 2);
        drop((alice, bob));
        server_a.shutdown().await;
        server_b.shutdown().await;
    }
}
