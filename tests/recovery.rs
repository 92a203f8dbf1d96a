//! Recoverable groups: positions on every message, and a client that comes back with its last
//! position gets exactly what it missed, then the live messages, while others keep sending.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use switchboard::channel::{Position, Recovery};
use switchboard::prelude::*;
use switchboard::testing::{Received, TestClient, TestServer};

/// Joins `room` from the `since` query parameter, reports the join, then reads until closed.
#[ws_route("/rec/{room}")]
async fn rec(mut ws: WebSocket, room: String, channels: ChannelBox) -> Result<(), WsError> {
    let since =
        Position::from_query(&ws, &room).map_err(|e| WsError::close(4400, e.to_string()))?;
    ws.accept().await?;
    let joined = channels
        .add_channel_to_group_from(&ws.channel(), &room, since.as_ref())
        .await
        .map_err(|e| WsError::close(4404, e.to_string()))?;
    let recovery = match &joined.recovery {
        Recovery::Fresh => json!("fresh"),
        Recovery::Recovered(n) => json!({ "recovered": n }),
        Recovery::NotRecoverable(why) => json!({ "not_recoverable": format!("{why:?}") }),
        other => json!(format!("{other:?}")),
    };
    ws.send_json(&json!({ "joined": joined.position.to_string(), "recovery": recovery }))
        .await?;
    while ws.receive().await?.is_some() {}
    Ok(())
}

/// One socket in several recoverable groups (`?groups=a,b`), each joined from its own
/// position; each join answered with the framework's report (`Joined` serialised).
#[ws_route("/multi")]
async fn multi(mut ws: WebSocket, channels: ChannelBox) -> Result<(), WsError> {
    let groups = ws.query_param("groups").unwrap_or_default();
    let mut joins = Vec::new();
    for group in groups.split(',') {
        let since =
            Position::from_query(&ws, group).map_err(|e| WsError::close(4400, e.to_string()))?;
        joins.push((group.to_owned(), since));
    }
    ws.accept().await?;
    for (group, since) in joins {
        let joined = channels
            .add_channel_to_group_from(&ws.channel(), &group, since.as_ref())
            .await
            .map_err(|e| WsError::close(4404, e.to_string()))?;
        ws.send_json(&joined).await?;
    }
    while ws.receive().await?.is_some() {}
    Ok(())
}

/// A plain group, for comparison.
#[ws_route("/plain/{room}")]
async fn plain(mut ws: WebSocket, room: String, channels: ChannelBox) -> Result<(), WsError> {
    ws.accept().await?;
    channels.add_channel_to_group(&ws.channel(), &room).await?;
    ws.send_text("joined").await?;
    while ws.receive().await?.is_some() {}
    Ok(())
}

/// Joins `room` without a position, whether or not the broker can be reached (the member is
/// local at once); says `{"subscribed": ..}`.
#[ws_route("/late/{room}")]
async fn late(mut ws: WebSocket, room: String, channels: ChannelBox) -> Result<(), WsError> {
    ws.accept().await?;
    let joined = channels.add_channel_to_group(&ws.channel(), &room).await;
    ws.send_json(&json!({ "subscribed": joined.is_ok() }))
        .await?;
    while ws.receive().await?.is_some() {}
    Ok(())
}

fn app(entries: usize) -> App {
    App::builder()
        .only_module(module_path!())
        .recoverable_groups("room*")
        .history_limits(entries, 64 * 1024 * 1024)
        .build()
        .unwrap()
}

/// One message of a recoverable group, or the handler's join report.
#[derive(Debug)]
enum Got {
    Message {
        epoch: String,
        offset: u64,
        data: Value,
    },
    Joined {
        position: String,
        recovery: Value,
    },
}

async fn next(client: &mut TestClient) -> Got {
    let value: Value = client.recv_json().await;
    if let Some(position) = value.get("joined") {
        return Got::Joined {
            position: position.as_str().unwrap().to_owned(),
            recovery: value["recovery"].clone(),
        };
    }
    assert!(
        value["group"].is_string(),
        "an envelope names its group: {value}"
    );
    Got::Message {
        epoch: value["epoch"].as_str().expect("an envelope").to_owned(),
        offset: value["offset"].as_u64().unwrap(),
        data: value["data"].clone(),
    }
}

/// Reads until the join report; returns it with the messages before it (the recovered ones).
async fn until_joined(client: &mut TestClient) -> (String, Value, Vec<(String, u64, Value)>) {
    let mut before = Vec::new();
    loop {
        match next(client).await {
            Got::Joined { position, recovery } => return (position, recovery, before),
            Got::Message {
                epoch,
                offset,
                data,
            } => before.push((epoch, offset, data)),
        }
    }
}

#[tokio::test]
async fn members_get_envelopes_with_consecutive_offsets_and_plain_groups_stay_bare() {
    let app = app(100);
    let server = TestServer::start(app.clone()).await;
    let mut member = server.connect("/rec/room-a").await;
    let (position, recovery, _) = until_joined(&mut member).await;
    assert_eq!(recovery, "fresh");
    let epoch = position.split(':').next().unwrap().to_owned();
    assert_eq!(position, format!("{epoch}:0"), "a new stream starts at 0");
    let mut bare = server.connect("/plain/other").await;
    assert_eq!(bare.recv_text().await, "joined");
    for n in 0..3 {
        let report = app
            .channels()
            .group_send("room-a", &json!({ "n": n }))
            .await
            .unwrap();
        assert_eq!(report.position.as_ref().unwrap().offset, n + 1);
        let report = app
            .channels()
            .group_send("other", &json!({ "n": n }))
            .await
            .unwrap();
        assert_eq!(report.position, None);
    }
    for n in 0..3u64 {
        match next(&mut member).await {
            Got::Message {
                epoch: e,
                offset,
                data,
            } => {
                assert_eq!(
                    (e.as_str(), offset, data),
                    (epoch.as_str(), n + 1, json!({ "n": n }))
                );
            }
            Got::Joined { .. } => panic!("one join report"),
        }
        let value: Value = bare.recv_json().await;
        assert_eq!(
            value,
            json!({ "n": n }),
            "other groups get the bare payload"
        );
    }
    // The history holds the payloads, with their offsets as ids.
    let history = app.channels().history("room-a");
    let ids: Vec<u64> = history.iter().map(|e| e.id).collect();
    assert_eq!(ids, [1, 2, 3]);
    assert_eq!(history[0].json(), json!({ "n": 0 }));
    drop((member, bare));
    server.shutdown().await;
}

/// The hard case, many times over: ten senders keep sending while a client leaves and comes
/// back with its position; across all its connections it reads every offset once, in order,
/// and each sender's messages in that sender's order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_comes_back_gets_exactly_what_it_missed_while_others_send() {
    const SENDERS: u64 = 10;
    const RECONNECTS: usize = 25;
    let app = app(1_000_000);
    let server = TestServer::start(app.clone()).await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut senders = Vec::new();
    for sender in 0..SENDERS {
        let (app, stop) = (app.clone(), stop.clone());
        senders.push(tokio::spawn(async move {
            let mut seq = 0u64;
            while !stop.load(Ordering::Relaxed) {
                app.channels()
                    .group_send("room-busy", &json!({ "from": sender, "seq": seq }))
                    .await
                    .unwrap();
                seq += 1;
                if seq.is_multiple_of(8) {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            seq
        }));
    }

    let mut seen: Vec<(u64, Value)> = Vec::new();
    let mut client = server.connect("/rec/room-busy").await;
    let (position, recovery, live) = until_joined(&mut client).await;
    assert_eq!(recovery, "fresh");
    let epoch = position.split(':').next().unwrap().to_owned();
    let mut last = position.rsplit(':').next().unwrap().parse::<u64>().unwrap();
    // Live messages sent since the join may come before the handler's report.
    for (e, offset, data) in live {
        assert_eq!((e.as_str(), offset), (epoch.as_str(), last + 1));
        last = offset;
        seen.push((offset, data));
    }
    for round in 0..RECONNECTS {
        // Read a few live messages, then vanish without a close (as a dropped network does).
        for _ in 0..(5 + round % 7) {
            match next(&mut client).await {
                Got::Message {
                    epoch: e,
                    offset,
                    data,
                } => {
                    assert_eq!(e, epoch);
                    assert_eq!(offset, last + 1, "round {round}: no gap, no duplicate");
                    last = offset;
                    seen.push((offset, data));
                }
                Got::Joined { .. } => panic!("one join report per connection"),
            }
        }
        drop(client);
        tokio::time::sleep(Duration::from_millis(5 + (round % 4) as u64 * 5)).await;
        client = server
            .connect(&format!("/rec/room-busy?since={epoch}:{last}"))
            .await;
        // Before the handler's report come the recovered messages (up to the position it
        // reports) and any live ones sent since the join: one run of offsets either way.
        let (position, recovery, before) = until_joined(&mut client).await;
        let at_join = position.rsplit(':').next().unwrap().parse::<u64>().unwrap();
        assert_eq!(
            recovery,
            json!({ "recovered": at_join - last }),
            "round {round}"
        );
        for (e, offset, data) in before {
            assert_eq!(e, epoch);
            assert_eq!(offset, last + 1, "round {round}: no gap, no duplicate");
            last = offset;
            seen.push((offset, data));
        }
        assert!(
            last >= at_join,
            "round {round}: every missed message came first"
        );
    }
    stop.store(true, Ordering::Relaxed);
    let mut sent = Vec::new();
    for sender in senders {
        sent.push(sender.await.unwrap());
    }
    // Everything up to the end of the stream arrives live after the last reconnect.
    let end = app.channels().history("room-busy").last().unwrap().id;
    while last < end {
        match next(&mut client).await {
            Got::Message { offset, data, .. } => {
                assert_eq!(offset, last + 1);
                last = offset;
                seen.push((offset, data));
            }
            Got::Joined { .. } => panic!("one join report per connection"),
        }
    }
    // Every sender's messages from the first join on: in its order, none twice, none missing
    // (the client joined after the senders started: each sender's run starts where it was).
    let mut next_seq: Vec<Option<u64>> = vec![None; SENDERS as usize];
    for (_, data) in &seen {
        let from = data["from"].as_u64().unwrap() as usize;
        let seq = data["seq"].as_u64().unwrap();
        if let Some(expected) = next_seq[from] {
            assert_eq!(
                seq, expected,
                "sender {from}: in order, none lost or repeated"
            );
        }
        next_seq[from] = Some(seq + 1);
    }
    let next_seq: Vec<u64> = next_seq.into_iter().map(Option::unwrap).collect();
    assert_eq!(
        next_seq, sent,
        "the client saw every sender's messages to the end"
    );
    assert!(seen.len() > 1000, "a busy group: {} messages", seen.len());
    drop(client);
    server.shutdown().await;
}

#[tokio::test]
async fn a_position_that_cannot_be_served_says_why() {
    let app = app(5);
    let server = TestServer::start(app.clone()).await;
    let send = |n: u64| {
        let app = app.clone();
        async move {
            app.channels()
                .group_send("room-c", &json!({ "n": n }))
                .await
                .unwrap()
        }
    };
    let first = send(0).await.position.unwrap();
    for n in 1..10 {
        send(n).await;
    }
    let epoch = first.epoch.clone();
    let expect = |since: String, reason: &'static str| {
        let server = &server;
        async move {
            let mut client = server.connect(&format!("/rec/room-c?since={since}")).await;
            let (_, recovery, replayed) = until_joined(&mut client).await;
            assert_eq!(recovery, json!({ "not_recoverable": reason }), "{since}");
            assert!(replayed.is_empty());
        }
    };
    // Only the last 5 are kept: from offset 1, messages 2..5 are gone.
    expect(format!("{epoch}:1"), "TooFarBehind").await;
    expect(format!("{epoch}:99"), "Ahead").await;
    expect("other:1".to_owned(), "EpochChanged").await;
    // From offset 5, messages 6..10 are all there.
    let mut client = server
        .connect(&format!("/rec/room-c?since={epoch}:5"))
        .await;
    let (position, recovery, replayed) = until_joined(&mut client).await;
    assert_eq!(recovery, json!({ "recovered": 5 }));
    assert_eq!(position, format!("{epoch}:10"));
    let offsets: Vec<u64> = replayed.iter().map(|(_, o, _)| *o).collect();
    assert_eq!(offsets, [6, 7, 8, 9, 10]);
    drop(client);

    // A lost history is a new epoch: the old positions cannot be served.
    assert_eq!(app.channels().flush_history("room-c"), 5);
    let after = send(10).await.position.unwrap();
    assert_ne!(after.epoch, epoch);
    assert_eq!(after.offset, 1);
    expect(format!("{epoch}:10"), "EpochChanged").await;
    server.shutdown().await;
}

/// A socket in two recoverable groups comes back with a position for each (`since` once per
/// group): it gets each group's missed messages, each group's join report, and a position
/// named for another group does not apply.
#[tokio::test]
async fn one_socket_resumes_each_of_its_groups_from_its_own_position() {
    let app = app(100);
    let server = TestServer::start(app.clone()).await;
    let send = |group: &'static str, n: u64| {
        let app = app.clone();
        async move {
            let report = app.channels().group_send(group, &json!({ "n": n })).await;
            report.unwrap().position.unwrap()
        }
    };
    let mut client = server.connect("/multi?groups=room-m1,room-m2").await;
    for group in ["room-m1", "room-m2"] {
        let report: Value = client.recv_json().await;
        assert_eq!(report["group"], group);
        assert_eq!(
            (&report["recovery"], &report["reason"]),
            (&json!("fresh"), &Value::Null)
        );
    }
    let m1 = send("room-m1", 0).await;
    let m2 = send("room-m2", 0).await;
    for (group, position) in [("room-m1", &m1), ("room-m2", &m2)] {
        let got: Value = client.recv_json().await;
        let want =
            json!({ "group": group, "epoch": position.epoch, "offset": 1, "data": { "n": 0 } });
        assert_eq!(got, want);
    }
    drop(client);
    // Missed: two in room-m1, one in room-m2, interleaved.
    send("room-m1", 1).await;
    send("room-m2", 1).await;
    send("room-m1", 2).await;
    let (e1, e2) = (&m1.epoch, &m2.epoch);
    let mut client = server
        .connect(&format!(
            "/multi?groups=room-m1,room-m2&since=room-m2:{e2}:1&since=room-m1:{e1}:1"
        ))
        .await;
    let mut frames = Vec::new();
    for _ in 0..5 {
        frames.push(client.recv_json::<Value>().await);
    }
    assert_eq!(
        frames,
        [
            json!({ "group": "room-m1", "epoch": e1, "offset": 2, "data": { "n": 1 } }),
            json!({ "group": "room-m1", "epoch": e1, "offset": 3, "data": { "n": 2 } }),
            json!({ "group": "room-m1", "position": format!("{e1}:3"), "recovery": "recovered", "reason": null }),
            json!({ "group": "room-m2", "epoch": e2, "offset": 2, "data": { "n": 1 } }),
            json!({ "group": "room-m2", "position": format!("{e2}:2"), "recovery": "recovered", "reason": null }),
        ]
    );
    drop(client);
    // A position of another epoch: the report says why, for that group alone.
    let mut client = server
        .connect(&format!(
            "/multi?groups=room-m1,room-m2&since=room-m1:{e1}:3&since=room-m2:gone:1"
        ))
        .await;
    let report: Value = client.recv_json().await;
    assert_eq!(
        report["recovery"], "recovered",
        "nothing missed in room-m1: {report}"
    );
    assert_eq!(report["position"], format!("{e1}:3"));
    let report: Value = client.recv_json().await;
    assert_eq!(
        report,
        json!({ "group": "room-m2", "position": format!("{e2}:2"), "recovery": "not_recoverable",
                "reason": "the group's history was lost since (new epoch)" })
    );
    drop(client);
    // A position named for another group does not apply; one without a group does.
    let mut client = server
        .connect(&format!("/rec/room-m1?since=room-m2:{e2}:1"))
        .await;
    let (_, recovery, replayed) = until_joined(&mut client).await;
    assert_eq!((recovery, replayed.len()), (json!("fresh"), 0));
    let mut client = server.connect(&format!("/rec/room-m1?since={e1}:2")).await;
    let (_, recovery, replayed) = until_joined(&mut client).await;
    assert_eq!((recovery, replayed.len()), (json!({ "recovered": 1 }), 1));
    server.shutdown().await;
}

#[tokio::test]
async fn bad_positions_and_groups_are_refused_with_a_reason() {
    let app = app(10);
    let server = TestServer::start(app.clone()).await;
    // Refused before the handshake is accepted: 403 with the reason.
    let refused = server
        .client("/rec/room-d?since=nonsense")
        .connect()
        .await
        .unwrap_err();
    assert_eq!(refused.status, 403);
    assert!(
        refused.body.contains("expected EPOCH:OFFSET"),
        "{}",
        refused.body
    );
    // A group that is not recoverable.
    let mut client = server.connect("/rec/lobby").await;
    match client.recv().await {
        Received::Close(code, reason) => {
            assert_eq!(code, 4404);
            assert!(reason.contains("not a recoverable group"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    let bad = App::builder()
        .only_module(module_path!())
        .recoverable_groups("a*b*")
        .build()
        .unwrap_err();
    assert!(
        bad.to_string()
            .contains("recoverable_groups: group pattern `a*b*`"),
        "{bad}"
    );
    server.shutdown().await;
}

/// Histories of recoverable groups do not outlive their use: a group whose members are gone
/// forgets its history once the entries age out; a group with members keeps its epoch even
/// when no message is in the history.
#[tokio::test]
async fn recoverable_histories_are_kept_while_used_and_forgotten_after() {
    let app = App::builder()
        .only_module(module_path!())
        .recoverable_groups("room*")
        .history_max_age(Duration::from_millis(150))
        .expiry_sweep_interval(Duration::from_millis(20))
        .build()
        .unwrap();
    let server = TestServer::start(app.clone()).await;

    // A member that hears nothing for longer than the age bound keeps its epoch.
    let mut quiet = server.connect("/rec/room-quiet").await;
    let (position, _, _) = until_joined(&mut quiet).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let report = app
        .channels()
        .group_send("room-quiet", &json!("later"))
        .await
        .unwrap();
    assert_eq!(
        report.position.unwrap().to_string(),
        position.replace(":0", ":1")
    );

    // Churn: 200 connections, each in a group of its own, one message each.
    for n in 0..200 {
        let mut client = server.connect(&format!("/rec/room-{n}")).await;
        let _ = until_joined(&mut client).await;
        app.channels()
            .group_send(format!("room-{n}"), &json!(n))
            .await
            .unwrap();
        client.close(1000, "bye").await;
        let _ = client.skip_to_close().await;
    }
    drop(quiet);
    switchboard_tests::eventually("every history is forgotten", || {
        let internals = app.internals();
        internals.histories == 0 && internals.groups == 0
    })
    .await;
    server.shutdown().await;
}

mod cluster {
    use super::*;
    use switchboard::broker::{Broker, Nats, Redis};
    use switchboard::testing::{NatsServer, RedisCluster, RedisServer};

    fn redis_node(url: &str) -> App {
        node(
            Redis::new(url)
                .unwrap()
                .prefix("recovery")
                .timeout(Duration::from_millis(500))
                .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200)),
        )
    }

    fn nats_node(url: &str) -> App {
        node(
            Nats::new(url)
                .unwrap()
                .prefix("recovery")
                .timeout(Duration::from_millis(500))
                .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200)),
        )
    }

    fn node(broker: impl Broker) -> App {
        node_keeping(broker, 1_000_000)
    }

    /// A node whose recoverable groups keep `entries` messages.
    fn node_keeping(broker: impl Broker, entries: usize) -> App {
        App::builder()
            .only_module("recovery")
            .recoverable_groups("room*")
            .history_limits(entries, 64 * 1024 * 1024)
            .broker(broker)
            .build()
            .unwrap()
    }

    /// Two servers share one Redis; ten senders on both keep sending while a client hops
    /// from one server to the other with its position: every offset once, in order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_recovers_on_the_other_server_of_the_cluster() {
        let Some(redis) = RedisServer::start().await else {
            return;
        };
        recovers_on_the_other_server(redis_node(&redis.url()), redis_node(&redis.url())).await;
    }

    /// The same on a Redis Cluster: the group's stream, its offsets and its shard channel
    /// are in one slot.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_recovers_on_the_other_server_of_the_cluster_on_a_redis_cluster() {
        let Some(cluster) = RedisCluster::start().await else {
            return;
        };
        recovers_on_the_other_server(redis_node(&cluster.url()), redis_node(&cluster.url())).await;
    }

    /// The same on NATS: the group's stream is a JetStream stream.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_recovers_on_the_other_server_of_the_cluster_on_nats() {
        let Some(nats) = NatsServer::start().await else {
            return;
        };
        recovers_on_the_other_server(nats_node(&nats.url()), nats_node(&nats.url())).await;
    }

    async fn recovers_on_the_other_server(a: App, b: App) {
        let servers = [
            TestServer::start(a.clone()).await,
            TestServer::start(b.clone()).await,
        ];
        let mut client = servers[0].connect("/rec/room-x").await;
        let (position, recovery, live) = until_joined(&mut client).await;
        assert_eq!(recovery, "fresh");
        let epoch = position.split(':').next().unwrap().to_owned();
        let mut last = position.rsplit(':').next().unwrap().parse::<u64>().unwrap();
        assert!(live.is_empty());

        let stop = Arc::new(AtomicBool::new(false));
        let mut senders = Vec::new();
        for sender in 0..10u64 {
            let (app, stop) = (
                if sender % 2 == 0 {
                    a.clone()
                } else {
                    b.clone()
                },
                stop.clone(),
            );
            senders.push(tokio::spawn(async move {
                let mut seq = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let report = app
                        .channels()
                        .group_send("room-x", &json!({ "from": sender, "seq": seq }))
                        .await
                        .unwrap();
                    assert_eq!(report.published, Some(true), "{report:?}");
                    seq += 1;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }));
        }
        let mut offsets = 0;
        for round in 0..12 {
            for _ in 0..5 {
                match next(&mut client).await {
                    Got::Message {
                        epoch: e, offset, ..
                    } => {
                        assert_eq!(
                            (e.as_str(), offset),
                            (epoch.as_str(), last + 1),
                            "round {round}"
                        );
                        last = offset;
                        offsets += 1;
                    }
                    Got::Joined { .. } => panic!("one join report per connection"),
                }
            }
            drop(client);
            tokio::time::sleep(Duration::from_millis(20)).await;
            // The other server this time.
            client = servers[(round + 1) % 2]
                .connect(&format!("/rec/room-x?since={epoch}:{last}"))
                .await;
            let (position, recovery, before) = until_joined(&mut client).await;
            let at_join = position.rsplit(':').next().unwrap().parse::<u64>().unwrap();
            assert!(
                recovery.get("recovered").is_some(),
                "round {round}: {recovery} at {position}, from {last}"
            );
            for (e, offset, _) in before {
                assert_eq!(
                    (e.as_str(), offset),
                    (epoch.as_str(), last + 1),
                    "round {round}"
                );
                last = offset;
                offsets += 1;
            }
            assert!(
                last >= at_join,
                "round {round}: the recovered messages came first"
            );
        }
        stop.store(true, Ordering::Relaxed);
        for sender in senders {
            sender.await.unwrap();
        }
        assert!(offsets > 60, "{offsets} messages seen");
        drop(client);
        for server in servers {
            server.shutdown().await;
        }
    }

    #[tokio::test]
    async fn a_lost_stream_is_a_new_epoch() {
        let Some(mut redis) = RedisServer::start().await else {
            return;
        };
        let a = redis_node(&redis.url());
        let server = TestServer::start(a.clone()).await;
        let mut client = server.connect("/rec/room-y").await;
        let (position, _, _) = until_joined(&mut client).await;
        a.channels().group_send("room-y", &json!(1)).await.unwrap();
        let Got::Message { offset, .. } = next(&mut client).await else {
            panic!("a message");
        };
        assert_eq!(offset, 1);
        drop(client);
        // Redis restarts empty: the stream and its epoch are gone.
        redis.kill();
        redis.resume().await;
        switchboard_tests::eventually("reconnected", || a.readiness().is_ok()).await;
        let epoch = position.split(':').next().unwrap();
        let mut client = server
            .connect(&format!("/rec/room-y?since={epoch}:1"))
            .await;
        let (_, recovery, _) = until_joined(&mut client).await;
        assert_eq!(recovery, json!({ "not_recoverable": "EpochChanged" }));
        drop(client);
        server.shutdown().await;
    }

    /// NATS keeps a stream on disk: after a NATS restart the epoch is the same, the servers
    /// follow the stream again, and a client that left before the restart recovers what was
    /// sent after it.
    #[tokio::test]
    async fn a_nats_restart_keeps_the_stream_and_its_epoch() {
        let Some(mut nats) = NatsServer::start().await else {
            return;
        };
        let a = nats_node(&nats.url());
        let server = TestServer::start(a.clone()).await;
        let mut stays = server.connect("/rec/room-z").await;
        let (position, _, _) = until_joined(&mut stays).await;
        let epoch = position.split(':').next().unwrap().to_owned();
        a.channels().group_send("room-z", &json!(1)).await.unwrap();
        assert!(matches!(
            next(&mut stays).await,
            Got::Message { offset: 1, .. }
        ));
        nats.kill();
        nats.resume().await;
        switchboard_tests::eventually("reconnected", || a.readiness().is_ok()).await;
        // Sent after the restart: the member that stayed gets it from the stream, in order.
        let report = a.channels().group_send("room-z", &json!(2)).await.unwrap();
        assert_eq!(report.published, Some(true), "{report:?}");
        match next(&mut stays).await {
            Got::Message {
                epoch: e, offset, ..
            } => assert_eq!((e.as_str(), offset), (epoch.as_str(), 2)),
            other => panic!("{other:?}"),
        }
        // A client that saw offset 1 recovers offset 2.
        let mut back = server
            .connect(&format!("/rec/room-z?since={epoch}:1"))
            .await;
        let (_, recovery, missed) = until_joined(&mut back).await;
        assert_eq!(recovery, json!({ "recovered": 1 }));
        assert_eq!(missed.len(), 1);
        assert_eq!(missed[0].1, 2);
        drop((stays, back));
        server.shutdown().await;
    }

    /// A burst of 2,000 messages from ten senders, twenty times what the history keeps (100):
    /// live members on both servers get every one, in the stream's order (live delivery
    /// never depends on what the stream still holds).
    async fn a_burst_reaches_every_live_member(make: impl Fn() -> App) {
        let (a, b) = (make(), make());
        let servers = [
            TestServer::start(a.clone()).await,
            TestServer::start(b.clone()).await,
        ];
        let mut members = Vec::new();
        for server in &servers {
            let mut client = server.connect("/rec/room-burst").await;
            until_joined(&mut client).await;
            members.push(client);
        }
        // Senders on both servers: two connections to the broker publish at once.
        let mut senders = Vec::new();
        for sender in 0..10u64 {
            let app = if sender % 2 == 0 {
                a.clone()
            } else {
                b.clone()
            };
            senders.push(tokio::spawn(async move {
                for seq in 0..200u64 {
                    let report = app
                        .channels()
                        .group_send("room-burst", &json!({ "from": sender, "seq": seq }))
                        .await
                        .unwrap();
                    assert_eq!(report.published, Some(true), "{report:?}");
                }
            }));
        }
        for sender in senders {
            sender.await.unwrap();
        }
        for member in &mut members {
            let mut next_seq = [0u64; 10];
            let mut last = None;
            for i in 0..2000 {
                let Got::Message { offset, data, .. } = next(member).await else {
                    panic!("message {i}: a message");
                };
                if let Some(last) = last {
                    assert_eq!(offset, last + 1, "message {i}: consecutive offsets");
                }
                last = Some(offset);
                let from = usize::try_from(data["from"].as_u64().unwrap()).unwrap();
                assert_eq!(data["seq"], next_seq[from], "per-sender order");
                next_seq[from] += 1;
            }
            assert_eq!(next_seq, [200; 10]);
        }
        drop(members);
        for server in servers {
            server.shutdown().await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_longer_than_the_history_reaches_every_live_member() {
        let Some(redis) = RedisServer::start().await else {
            return;
        };
        let broker = || {
            Redis::new(&redis.url())
                .unwrap()
                .prefix("burst")
                .timeout(Duration::from_millis(500))
        };
        a_burst_reaches_every_live_member(|| node_keeping(broker(), 100)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_longer_than_the_history_reaches_every_live_member_on_a_redis_cluster() {
        let Some(cluster) = RedisCluster::start().await else {
            return;
        };
        let broker = || {
            Redis::new(&cluster.url())
                .unwrap()
                .prefix("burst")
                .timeout(Duration::from_millis(500))
        };
        a_burst_reaches_every_live_member(|| node_keeping(broker(), 100)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_longer_than_the_history_reaches_every_live_member_on_nats() {
        let Some(nats) = NatsServer::start().await else {
            return;
        };
        let broker = || {
            Nats::new(&nats.url())
                .unwrap()
                .prefix("burst")
                .timeout(Duration::from_millis(500))
        };
        a_burst_reaches_every_live_member(|| node_keeping(broker(), 100)).await;
    }

    /// A member that joined a recoverable group while NATS was unreachable is local at once;
    /// once NATS is back its server follows the group's stream, so messages sent on the other
    /// server reach it, with their positions.
    #[tokio::test]
    async fn a_recoverable_group_joined_while_nats_was_down_is_followed_once_it_is_back() {
        let Some(mut nats) = NatsServer::start().await else {
            return;
        };
        let (a, b) = (nats_node(&nats.url()), nats_node(&nats.url()));
        let (server_a, server_b) = (
            TestServer::start(a.clone()).await,
            TestServer::start(b.clone()).await,
        );
        let mut on_b = server_b.connect("/rec/room-late").await;
        until_joined(&mut on_b).await;
        nats.kill();
        switchboard_tests::eventually("a sees NATS down", || a.readiness().is_err()).await;
        let mut on_a = server_a.connect("/late/room-late").await;
        assert_eq!(on_a.recv_json::<Value>().await["subscribed"], false);
        nats.resume().await;
        switchboard_tests::eventually("a is back", || a.readiness().is_ok()).await;
        switchboard_tests::eventually("b is back", || b.readiness().is_ok()).await;
        let report = b
            .channels()
            .group_send("room-late", &json!({ "n": 1 }))
            .await
            .unwrap();
        assert_eq!(report.published, Some(true), "{report:?}");
        for member in [&mut on_b, &mut on_a] {
            match next(member).await {
                Got::Message { offset, data, .. } => {
                    assert_eq!(data["n"], 1);
                    assert!(offset >= 1);
                }
                other => panic!("{other:?}"),
            }
        }
        drop((on_a, on_b));
        server_a.shutdown().await;
        server_b.shutdown().await;
    }

    /// What a server remembers of a recoverable group's stream goes when the group's last
    /// member there leaves: 50 groups joined and left leave nothing behind, the group still
    /// joined stays.
    #[tokio::test]
    async fn a_server_forgets_the_streams_of_groups_it_no_longer_has() {
        let Some(nats) = NatsServer::start().await else {
            return;
        };
        let broker = Nats::new(&nats.url())
            .unwrap()
            .prefix("forget")
            .timeout(Duration::from_millis(500));
        let app = node(broker.clone());
        let server = TestServer::start(app.clone()).await;
        let mut keep = server.connect("/rec/room-keep").await;
        until_joined(&mut keep).await;
        for n in 0..50 {
            let mut client = server.connect(&format!("/rec/room-f{n}")).await;
            until_joined(&mut client).await;
            app.channels()
                .group_send(&format!("room-f{n}"), &json!(n))
                .await
                .unwrap();
            assert!(matches!(
                next(&mut client).await,
                Got::Message { offset: 1, .. }
            ));
            drop(client);
        }
        // Only the group that still has a member here is remembered.
        switchboard_tests::eventually("the left groups' streams forgotten", || {
            broker.metrics().streams == 1 && broker.subscribed_groups() == ["room-keep"]
        })
        .await;
        drop(keep);
        server.shutdown().await;
    }
}
