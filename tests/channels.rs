//! Channel groups: statuses, fan-out (sender included or excluded, in order, to many), cleanup
//! on every way a connection ends, slow consumers, expiry, history, `send_to`.

use std::time::Duration;

use switchboard::prelude::*;
use switchboard::testing::{Received, TestClient, TestServer};
use switchboard::{AddStatus, ErrorKind, PayloadType, RemoveStatus, SlowConsumer};
use switchboard_tests::{Reports, next};
use tokio::sync::mpsc;

/// Waits (bounded) until `groups()` is what the test expects.
async fn groups_become(app: &App, expected: &[(&str, usize)]) {
    let expected: Vec<(String, usize)> =
        expected.iter().map(|(g, n)| (g.to_string(), *n)).collect();
    for _ in 0..1000 {
        if app.channels().groups() == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(app.channels().groups(), expected);
}

mod slow {
    use super::*;
    use switchboard::ws::Disconnected;

    #[ws_route("/feed")]
    async fn feed(mut ws: WebSocket, channels: ChannelBox) -> Result<(), WsError> {
        ws.accept().await?;
        channels.add_channel_to_group(&ws.channel(), "feed").await?;
        ws.send_text("joined").await?;
        while ws.receive().await?.is_some() {}
        Ok(())
    }

    #[on("ws.disconnected", namespace = "switchboard")]
    fn gone(event: Disconnected, State(reports): State<Reports>) {
        let _ = reports
            .0
            .send(json!({"id": event.id, "code": event.code, "reason": event.reason}));
    }

    #[tokio::test]
    async fn a_client_that_stops_reading_is_closed_and_the_others_get_everything() {
        let (tx, mut reports) = mpsc::unbounded_channel();
        let app = App::builder()
            .only_module(module_path!())
            .state(Reports(tx))
            .outbound_queue_bytes(32 * 1024)
            .build()
            .unwrap();
        let server = TestServer::start(app.clone()).await;
        let mut healthy = server.connect("/feed").await;
        assert_eq!(healthy.recv_text().await, "joined");
        let mut stalled = server
            .client("/feed")
            .receive_buffer(4096)
            .connect()
            .await
            .unwrap();
        assert_eq!(stalled.recv_text().await, "joined");
        groups_become(&app, &[("feed", 2)]).await;

        // The healthy client reads everything concurrently; the stalled one reads nothing.
        const MESSAGES: usize = 4000;
        let reader = tokio::spawn(async move {
            let mut seen = 0;
            while seen < MESSAGES {
                let message: Value = healthy.recv_json().await;
                assert_eq!(message["seq"], seen, "in order, none lost");
                seen += 1;
            }
            healthy
        });
        let padding = "x".repeat(1000);
        let mut slow_closed = 0;
        for seq in 0..MESSAGES {
            let report = app
                .channels()
                .group_send("feed", &json!({"seq": seq, "pad": padding}))
                .await
                .unwrap();
            // Every member counted once: both until the stalled one is closed (that send
            // delivers to one and drops the other), then the healthy one alone.
            let members = if slow_closed == 0 { 2 } else { 1 };
            assert_eq!(report.delivered + report.dropped, members, "{report:?}");
            assert_eq!(report.dropped, report.slow_consumers_closed, "{report:?}");
            slow_closed += report.slow_consumers_closed;
            // Let the server's writers and the healthy reader run between sends.
            tokio::task::yield_now().await;
        }
        let mut healthy = reader.await.unwrap();
        assert_eq!(slow_closed, 1, "the stalled client was closed once");
        assert_eq!(app.channels().metrics().slow_consumers_closed, 1);
        // Reading again (within the close timeout), it gets what the socket already held and
        // then its close frame; what was still queued was dropped.
        assert_eq!(
            stalled.skip_to_close().await,
            Some((1008, "slow consumer: outbound queue full".to_owned()))
        );
        let gone = next(&mut reports).await;
        assert_eq!(gone["code"], 1008);
        assert_eq!(gone["reason"], "slow consumer: outbound queue full");
        groups_become(&app, &[("feed", 1)]).await;
        healthy.close(1000, "").await;
        drop((healthy, stalled));
        server.shutdown().await;
    }

    #[tokio::test]
    async fn with_the_drop_policy_a_slow_client_loses_messages_but_stays() {
        let (tx, _reports) = mpsc::unbounded_channel();
        let app = App::builder()
            .only_module(module_path!())
            .state(Reports(tx))
            .outbound_queue_bytes(16 * 1024)
            .slow_consumer(SlowConsumer::Drop)
            .build()
            .unwrap();
        let server = TestServer::start(app.clone()).await;
        let mut stalled = server
            .client("/feed")
            .receive_buffer(4096)
            .connect()
            .await
            .unwrap();
        assert_eq!(stalled.recv_text().await, "joined");
        groups_become(&app, &[("feed", 1)]).await;
        const SENT: u64 = 3000;
        let padding = "x".repeat(1000);
        for seq in 0..SENT {
            let report = app
                .channels()
                .group_send("feed", &json!({"seq": seq, "pad": padding}))
                .await
                .unwrap();
            // The stalled member stays and gets every new message; it skips old ones instead.
            assert_eq!((report.delivered, report.dropped), (1, 0), "{report:?}");
            assert_eq!(report.slow_consumers_closed, 0);
            if seq % 64 == 0 {
                tokio::task::yield_now().await;
            }
        }
        let skipped = app.channels().metrics().dropped_for_slow_consumers;
        assert!(skipped > 0, "some messages did not fit");
        // What the client gets, once it reads again: everything but what was skipped, in
        // order, the newest last.
        let mut received = Vec::new();
        while let Some(message) = stalled.recv_within(Duration::from_millis(500)).await {
            let Received::Text(text) = message else {
                panic!("{message:?}")
            };
            let value: Value = serde_json::from_str(&text).unwrap();
            received.push(value["seq"].as_u64().unwrap());
        }
        assert!(received.windows(2).all(|w| w[0] < w[1]), "in order");
        assert_eq!(received.last(), Some(&(SENT - 1)), "the newest arrives");
        assert_eq!(
            received.len() as u64 + skipped,
            SENT,
            "every message received or counted as skipped"
        );
        assert_eq!(
            app.channels().groups(),
            [("feed".to_owned(), 1)],
            "still a member"
        );
        drop(stalled);
        server.shutdown().await;
    }
}

mod backpressure {
    use super::*;
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message as Wire;

    /// Every message a client sends goes to its group: here, the sender alone.
    #[ws_route("/burst")]
    async fn burst(mut ws: WebSocket, channels: ChannelBox) -> Result<(), WsError> {
        ws.accept().await?;
        channels
            .add_channel_to_group(&ws.channel(), "burst")
            .await?;
        while let Some(message) = ws.receive_json::<Value>().await? {
            channels.group_send("burst", &message).await.ok();
        }
        Ok(())
    }

    #[tokio::test]
    async fn a_sender_faster_than_its_own_reader_is_slowed_down_not_dropped() {
        // The messages it sends and gets back far exceed its outbound bound: the server must
        // stop reading from it while its queue is backed up, instead of queueing (and then
        // closing it as a slow consumer).
        let app = App::builder()
            .only_module(module_path!())
            .outbound_queue_bytes(32 * 1024)
            .build()
            .unwrap();
        let server = TestServer::start(app.clone()).await;
        let client = server
            .client("/burst")
            .receive_buffer(4096)
            .connect()
            .await
            .unwrap();
        let (mut sink, mut stream) = client.into_stream().split();
        const MESSAGES: u64 = 3000;
        let padding = "x".repeat(500);
        let sender = tokio::spawn(async move {
            for seq in 0..MESSAGES {
                let text = json!({"seq": seq, "pad": padding}).to_string();
                sink.send(Wire::text(text)).await.unwrap();
            }
            sink
        });
        for seq in 0..MESSAGES {
            let message = tokio::time::timeout(Duration::from_secs(10), stream.next())
                .await
                .expect("a message within 10 s")
                .expect("the connection is open")
                .expect("no error");
            let Wire::Text(text) = message else {
                panic!("expected message {seq}, got {message:?}");
            };
            let value: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(value["seq"], seq);
            if seq % 100 == 0 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        let sink = sender.await.unwrap();
        assert_eq!(app.channels().metrics().slow_consumers_closed, 0);
        drop((sink, stream));
        server.shutdown().await;
    }
}

mod expiry {
    use super::*;

    #[ws_route("/expiring")]
    async fn expiring(mut ws: WebSocket, channels: ChannelBox) -> Result<(), WsError> {
        ws.accept().await?;
        let channel = ws.channel();
        channel.set_ttl(Some(Duration::from_millis(150)));
        channels.add_channel_to_group(&channel, "expiring").await?;
        ws.send_text("joined").await?;
        while let Some(text) = ws.receive_text().await? {
            ws.send_text(text).await?;
        }
        Ok(())
    }

    #[tokio::test]
    async fn an_idle_channel_expires_and_an_active_one_stays() {
        let app = App::builder()
            .only_module(module_path!())
            .expiry_sweep_interval(Duration::from_millis(20))
            .build()
            .unwrap();
        let server = TestServer::start(app.clone()).await;
        let mut idle = server.connect("/expiring").await;
        let mut active = server.connect("/expiring").await;
        assert_eq!(idle.recv_text().await, "joined");
        assert_eq!(active.recv_text().await, "joined");
        // The active client keeps talking for longer than the expiry.
        for i in 0..12 {
            active.send_text(format!("{i}")).await;
            assert_eq!(active.recv_text().await, format!("{i}"));
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
        assert_eq!(idle.expect_close().await, (1001, "channel expired".into()));
        groups_become(&app, &[("expiring", 1)]).await;
        assert_eq!(app.channels().metrics().expired, 1);
        drop((idle, active));
        server.shutdown().await;
    }
}

mod rooms {
    use super::*;

    /// Rooms: join `room_{room}` and report the status; messages: `{"to": group, "body": ..,
    /// "except_me": bool, "history": bool}` are group sends; `{"leave": group}` leaves.
    #[ws_route("/rooms/{room}")]
    async fn rooms(mut ws: WebSocket, room: String, app: App) -> Result<(), WsError> {
        ws.accept().await?;
        let channel = Channel::new(&ws);
        assert_eq!(
            channel.id(),
            ws.channel().id(),
            "one channel per connection"
        );
        let status = app
            .channels()
            .add_channel_to_group(&channel, format!("room_{room}"))
            .await?;
        ws.send_json(&json!({ "joined": format!("{status:?}"), "id": channel.id() }))
            .await?;
        while let Some(message) = ws.receive_json::<Value>().await? {
            if let Some(group) = message["leave"].as_str() {
                let status = app
                    .channels()
                    .remove_channel_from_group(&channel, group)
                    .await?;
                ws.send_json(&json!({ "left": format!("{status:?}") }))
                    .await?;
                continue;
            }
            if message["binary"] == true {
                channel.set_payload_type(PayloadType::Bytes);
                ws.send_json(&message["echo"]).await?;
                continue;
            }
            if message["panic"] == true {
                panic!("asked to panic");
            }
            if message["fail"] == true {
                return Err(WsError::close(4500, "asked to fail"));
            }
            let group = message["to"].as_str().unwrap_or_default().to_owned();
            let mut send = app.channels().group_send(group, &message["body"]);
            if message["except_me"] == true {
                send = send.except(&channel);
            }
            if message["history"] == true {
                send = send.save_history();
            }
            let report = send.await?;
            if message["report"] == true {
                ws.send_json(
                    &json!({ "delivered": report.delivered, "history_id": report.history_id }),
                )
                .await?;
            }
        }
        Ok(())
    }

    fn app(module: &str) -> App {
        App::builder().only_module(module).build().unwrap()
    }

    async fn join(server: &TestServer, room: &str) -> (TestClient, Value) {
        let mut client = server.connect(&format!("/rooms/{room}")).await;
        let joined: Value = client.recv_json().await;
        (client, joined)
    }

    #[tokio::test]
    async fn three_clients_in_two_rooms_are_isolated_and_the_sender_is_included() {
        let app = app(module_path!());
        let server = TestServer::start(app.clone()).await;
        let (mut a, joined_a) = join(&server, "red").await;
        let (mut b, joined_b) = join(&server, "red").await;
        let (mut c, _) = join(&server, "blue").await;
        assert_eq!(joined_a["joined"], "Added { group_created: true }");
        assert_eq!(joined_b["joined"], "Added { group_created: false }");
        assert_eq!(
            app.channels().groups(),
            [("room_blue".to_owned(), 1), ("room_red".to_owned(), 2)]
        );
        a.send_json(&json!({"to": "room_red", "body": {"text": "hi red ✓"}}))
            .await;
        assert_eq!(a.recv_json::<Value>().await, json!({"text": "hi red ✓"}));
        assert_eq!(b.recv_json::<Value>().await, json!({"text": "hi red ✓"}));
        c.send_json(&json!({"to": "room_blue", "body": "hi blue"}))
            .await;
        assert_eq!(c.recv_json::<Value>().await, json!("hi blue"));
        // Nothing from the other room reached c, and nothing from blue reached a.
        assert_eq!(c.recv_within(Duration::from_millis(50)).await, None);
        assert_eq!(a.recv_within(Duration::from_millis(50)).await, None);
        drop((a, b, c));
        server.shutdown().await;
    }

    #[tokio::test]
    async fn broadcast_from_excludes_the_sender() {
        let app = app(module_path!());
        let server = TestServer::start(app).await;
        let (mut a, _) = join(&server, "x").await;
        let (mut b, _) = join(&server, "x").await;
        a.send_json(&json!({"to": "room_x", "body": 1, "except_me": true, "report": true}))
            .await;
        assert_eq!(b.recv_json::<Value>().await, json!(1));
        assert_eq!(
            a.recv_json::<Value>().await,
            json!({"delivered": 1, "history_id": null})
        );
        drop((a, b));
        server.shutdown().await;
    }

    #[tokio::test]
    async fn two_hundred_members_each_receive_every_message_once_and_in_order() {
        let app = app(module_path!());
        let server = TestServer::start(app.clone()).await;
        let mut members = Vec::new();
        for _ in 0..200 {
            members.push(join(&server, "crowd").await.0);
        }
        groups_become(&app, &[("room_crowd", 200)]).await;
        for seq in 0..20 {
            members[0]
                .send_json(&json!({"to": "room_crowd", "body": {"seq": seq}}))
                .await;
        }
        for member in &mut members {
            for seq in 0..20 {
                assert_eq!(member.recv_json::<Value>().await, json!({"seq": seq}));
            }
        }
        for member in &mut members {
            assert_eq!(
                member.recv_within(Duration::from_millis(5)).await,
                None,
                "no duplicates"
            );
        }
        drop(members);
        server.shutdown().await;
    }

    #[tokio::test]
    async fn statuses_say_what_happened() {
        let app = app(module_path!());
        let server = TestServer::start(app.clone()).await;
        let (mut a, _) = join(&server, "s").await;
        a.send_json(&json!({"leave": "room_none"})).await;
        assert_eq!(a.recv_json::<Value>().await, json!({"left": "NoSuchGroup"}));
        let (mut b, _) = join(&server, "other").await;
        b.send_json(&json!({"leave": "room_s"})).await;
        assert_eq!(b.recv_json::<Value>().await, json!({"left": "NotAMember"}));
        let (mut c, _) = join(&server, "s").await;
        a.send_json(&json!({"leave": "room_s"})).await;
        assert_eq!(
            a.recv_json::<Value>().await,
            json!({"left": "Removed { group_removed: false }"})
        );
        c.send_json(&json!({"leave": "room_s"})).await;
        assert_eq!(
            c.recv_json::<Value>().await,
            json!({"left": "Removed { group_removed: true }"})
        );
        assert_eq!(app.channels().groups(), [("room_other".to_owned(), 1)]);
        drop((a, b, c));
        server.shutdown().await;
    }

    #[tokio::test]
    async fn statuses_from_code_and_bad_group_names() {
        let app = app(module_path!());
        let server = TestServer::start(app.clone()).await;
        let (client, joined) = join(&server, "api").await;
        let id: switchboard::ws::ConnectionId =
            serde_json::from_value(joined["id"].clone()).unwrap();
        let member = app.channels().members("room_api").pop().expect("a member");
        assert_eq!(member.id(), id);
        assert_eq!(
            app.channels()
                .add_channel_to_group(&member, "room_api")
                .await
                .unwrap(),
            AddStatus::AlreadyMember
        );
        assert_eq!(
            app.channels()
                .add_channel_to_group(&member, "second")
                .await
                .unwrap(),
            AddStatus::Added {
                group_created: true
            }
        );
        let mut groups = member.groups();
        groups.sort();
        assert_eq!(groups, ["room_api", "second"]);
        let error = app
            .channels()
            .add_channel_to_group(&member, "")
            .await
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidGroup);
        let error = app.channels().group_send("", &json!(1)).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidGroup);
        assert_eq!(
            app.channels()
                .remove_channel_from_group(&member, "second")
                .await
                .unwrap(),
            RemoveStatus::Removed {
                group_removed: true
            }
        );
        let report = app
            .channels()
            .group_send("nobody", &json!(1))
            .await
            .unwrap();
        assert_eq!(
            (report.delivered, report.dropped, report.published),
            (0, 0, None)
        );
        assert_eq!(app.channels().flush_groups().await, 1);
        assert!(app.channels().groups().is_empty());
        assert!(member.groups().is_empty());
        drop(client);
        server.shutdown().await;
    }

    #[tokio::test]
    async fn every_way_a_connection_ends_leaves_no_membership_behind() {
        let app = app(module_path!());
        let server = TestServer::start(app.clone()).await;
        let (mut closes, _) = join(&server, "end").await;
        let (mut fails, _) = join(&server, "end").await;
        let (mut panics, _) = join(&server, "end").await;
        let (vanishes, _) = join(&server, "end").await;
        let (mut stays, _) = join(&server, "end").await;
        groups_become(&app, &[("room_end", 5)]).await;

        closes.close(1000, "bye").await;
        assert_eq!(closes.expect_close().await.0, 1000);
        fails.send_json(&json!({"fail": true})).await;
        assert_eq!(fails.expect_close().await.0, 4500);
        panics.send_json(&json!({"panic": true})).await;
        assert_eq!(panics.expect_close().await.0, 1011);
        drop(vanishes); // the client goes away without a close frame
        groups_become(&app, &[("room_end", 1)]).await;

        stays.close(1000, "").await;
        stays.expect_close().await;
        groups_become(&app, &[]).await;
        server.shutdown().await;
    }

    #[tokio::test]
    async fn history_is_bounded_with_ids_and_timestamps() {
        let app = App::builder()
            .only_module(module_path!())
            .history_limits(3, 1024)
            .build()
            .unwrap();
        let server = TestServer::start(app.clone()).await;
        let (mut a, _) = join(&server, "h").await;
        for n in 0..5 {
            a.send_json(
                &json!({"to": "room_h", "body": {"n": n}, "history": true, "report": true}),
            )
            .await;
            assert_eq!(a.recv_json::<Value>().await, json!({"n": n}));
            assert_eq!(
                a.recv_json::<Value>().await,
                json!({"delivered": 1, "history_id": n + 1})
            );
        }
        a.send_json(&json!({"to": "room_h", "body": "not saved"}))
            .await;
        assert_eq!(a.recv_json::<Value>().await, json!("not saved"));
        let history = app.channels().history("room_h");
        let ids: Vec<u64> = history.iter().map(|e| e.id).collect();
        assert_eq!(ids, [3, 4, 5], "the newest three");
        let bodies: Vec<Value> = history.iter().map(|e| e.json()).collect();
        assert_eq!(bodies, [json!({"n": 2}), json!({"n": 3}), json!({"n": 4})]);
        assert!(history.windows(2).all(|w| w[0].timestamp <= w[1].timestamp));
        // The byte bound (1024): one large entry (1022 bytes of JSON) pushes the others out.
        let big = "y".repeat(1020);
        app.channels()
            .group_send("room_h", &big)
            .save_history()
            .await
            .unwrap();
        assert_eq!(a.recv_json::<Value>().await, json!(big));
        assert_eq!(app.channels().history("room_h").len(), 1);
        assert_eq!(app.channels().flush_history("room_h"), 1);
        assert!(app.channels().history("room_h").is_empty());
        drop(a);
        server.shutdown().await;
    }

    #[tokio::test]
    async fn send_to_reaches_one_channel_by_id_and_payload_types_choose_the_frame() {
        let app = app(module_path!());
        let server = TestServer::start(app.clone()).await;
        let (mut a, joined_a) = join(&server, "direct").await;
        let (mut b, joined_b) = join(&server, "direct").await;
        let id_b: switchboard::ws::ConnectionId =
            serde_json::from_value(joined_b["id"].clone()).unwrap();
        let report = app
            .channels()
            .send_to(id_b, &json!({"only": "b"}))
            .await
            .unwrap();
        assert_eq!(report.delivered, 1);
        assert_eq!(b.recv_json::<Value>().await, json!({"only": "b"}));
        assert_eq!(a.recv_within(Duration::from_millis(50)).await, None);
        let unknown: switchboard::ws::ConnectionId =
            "123e4567-e89b-12d3-a456-426614174000".parse().unwrap();
        assert_eq!(
            app.channels().send_to(unknown, &1).await.unwrap().delivered,
            0
        );

        let id_a: switchboard::ws::ConnectionId =
            serde_json::from_value(joined_a["id"].clone()).unwrap();
        let channel_a = app
            .channels()
            .members("room_direct")
            .into_iter()
            .find(|c| c.id() == id_a)
            .unwrap();
        channel_a.set_payload_type(PayloadType::Bytes);
        channel_a.set_data(String::from("user-42"));
        assert_eq!(
            channel_a.data::<String>().as_deref().map(String::as_str),
            Some("user-42")
        );
        assert_eq!(
            serde_json::to_value(&channel_a).unwrap(),
            json!(id_a.to_string())
        );
        app.channels()
            .group_send("room_direct", &json!({"n": 1}))
            .await
            .unwrap();
        assert_eq!(a.recv().await, Received::Binary(br#"{"n":1}"#.to_vec()));
        assert_eq!(b.recv().await, Received::Text(r#"{"n":1}"#.to_owned()));
        // A channel stands for its id, and an id for its channel.
        let report = app.channels().send_to(&channel_a, &2).await.unwrap();
        assert_eq!(report.delivered, 1);
        assert_eq!(a.recv().await, Received::Binary(b"2".to_vec()));
        let report = app
            .channels()
            .group_send("room_direct", &3)
            .except(id_a)
            .await
            .unwrap();
        assert_eq!(report.delivered, 1);
        assert_eq!(b.recv().await, Received::Text("3".to_owned()));
        // `send_json` follows the payload type, as group messages do.
        channel_a.send_json(&4).await.unwrap();
        assert_eq!(a.recv().await, Received::Binary(b"4".to_vec()));
        b.send_json(&json!({"binary": true, "echo": 5})).await;
        assert_eq!(b.recv().await, Received::Binary(b"5".to_vec()));
        assert_eq!(a.recv_within(Duration::from_millis(50)).await, None);
        assert_eq!(app.channels().close_all_connections(4000, "done"), 2);
        assert_eq!(a.expect_close().await, (4000, "done".into()));
        assert_eq!(b.expect_close().await, (4000, "done".into()));
        server.shutdown().await;
    }
}

mod bounded_joins {
    use switchboard::prelude::*;
    use switchboard::testing::TestServer;

    /// Joins the group each text message names; answers how it went.
    #[ws_route("/join")]
    async fn join(mut ws: WebSocket, channels: ChannelBox) -> Result<(), WsError> {
        ws.accept().await?;
        while let Some(group) = ws.receive_text().await? {
            let answer = match channels.add_channel_to_group(&ws.channel(), &group).await {
                Ok(status) => format!("ok {status:?}"),
                Err(e) => format!("err {:?} {e}", e.kind()),
            };
            ws.send_text(answer).await?;
        }
        Ok(())
    }

    #[tokio::test]
    async fn a_connection_joins_at_most_128_groups_by_default_and_names_are_bounded() {
        let app = App::builder().only_module(module_path!()).build().unwrap();
        let server = TestServer::start(app.clone()).await;
        let mut client = server.connect("/join").await;
        for n in 0..128 {
            client.send_text(format!("g{n}")).await;
            let answer = client.recv_text().await;
            assert!(answer.starts_with("ok Added"), "join {n}: {answer}");
        }
        client.send_text("g0").await;
        assert_eq!(client.recv_text().await, "ok AlreadyMember");
        client.send_text("one too many").await;
        let answer = client.recv_text().await;
        assert!(answer.starts_with("err Overloaded"), "{answer}");
        assert!(answer.contains("max_groups_per_connection"), "{answer}");
        assert!(answer.contains("`one too many`"), "{answer}");
        assert_eq!(
            app.internals().groups,
            128,
            "a refused join leaves no group"
        );
        // The limit is per connection: another one joins that group.
        let mut other = server.connect("/join").await;
        other.send_text("one too many").await;
        assert!(other.recv_text().await.starts_with("ok Added"));
        // Names: at most 255 bytes.
        other.send_text("n".repeat(255)).await;
        assert!(other.recv_text().await.starts_with("ok Added"));
        other.send_text("n".repeat(256)).await;
        let answer = other.recv_text().await;
        assert!(answer.starts_with("err InvalidGroup"), "{answer}");
        assert!(answer.contains("at most 255 bytes"), "{answer}");
        server.shutdown().await;
    }

    #[tokio::test]
    async fn the_limit_is_configurable() {
        let app = App::builder()
            .only_module(module_path!())
            .max_groups_per_connection(2)
            .build()
            .unwrap();
        let server = TestServer::start(app).await;
        let mut client = server.connect("/join").await;
        for (group, expected) in [
            ("a", "ok Added"),
            ("b", "ok Added"),
            ("c", "err Overloaded"),
        ] {
            client.send_text(group).await;
            let answer = client.recv_text().await;
            assert!(answer.starts_with(expected), "{group}: {answer}");
        }
        let zero = App::builder()
            .only_module(module_path!())
            .max_groups_per_connection(0)
            .build();
        assert!(zero.is_err_and(|e| e.to_string().contains("max_groups_per_connection")));
        server.shutdown().await;
    }
}
