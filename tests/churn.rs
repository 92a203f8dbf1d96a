//! Connections come and go by the thousand, through joins, group sends, history, expiry,
//! connection-scoped listeners and every way a connection ends; afterwards every internal
//! table of the app is back to its size before (`App::internals`, feature `testing`).

use std::time::Duration;

use futures_util::future::join_all;
use switchboard::prelude::*;
use switchboard::testing::{Internals, TestClient, TestServer};
use switchboard_tests::until;

/// Rooms the churning clients spread over.
const ROOMS: usize = 20;

/// A client joins `room_{room}`, listens (for the connection's life) to a name of its room and
/// to a name of its own, answers `{"joined": id}`, then does what each message says.
#[ws_route("/churn/{room}")]
async fn churn(mut ws: WebSocket, room: usize, app: App) -> Result<(), WsError> {
    ws.accept().await?;
    let channel = ws.channel();
    let group = format!("room_{room}");
    app.channels()
        .add_channel_to_group(&channel, &group)
        .await?;
    let id = channel.id();
    ws.on(&format!("room.{room}.ping"), || async {})?;
    ws.on(&format!("conn.{}", id.as_uuid().simple()), || async {})?;
    ws.send_json(&json!({ "joined": id })).await?;
    while let Some(message) = ws.receive_json::<Value>().await? {
        match message["do"].as_str().unwrap_or_default() {
            "send" => {
                let mut send = app.channels().group_send(&group, &message["body"]);
                if message["history"] == true {
                    send = send.save_history();
                }
                send.await?;
            }
            "also-join" => {
                let other = format!("room_{}", (room + 1) % ROOMS);
                app.channels().add_channel_to_group(&channel, other).await?;
            }
            "expire" => channel.set_ttl(Some(Duration::from_millis(30))),
            "fail" => return Err(WsError::close(4400, "asked to fail")),
            "panic" => panic!("asked to panic"),
            "close" => ws.close(4000, "asked to close").await?,
            "emit" => {
                app.events().emit(&format!("room.{room}.ping"), ()).await;
            }
            _ => {}
        }
    }
    Ok(())
}

/// Refuses every handshake: a connection that never opens.
#[ws_route("/refused")]
async fn refused(mut ws: WebSocket) -> Result<(), WsError> {
    ws.close(4003, "no").await
}

fn app() -> App {
    App::builder()
        .only_module(module_path!())
        .history_limits(10, 64 * 1024)
        .history_max_age(Duration::from_millis(100))
        .expiry_sweep_interval(Duration::from_millis(20))
        .close_timeout(Duration::from_millis(300))
        .ping_interval(Duration::from_millis(50))
        .pong_timeout(Duration::from_millis(100))
        .build()
        .unwrap()
}

/// How one client's connection ends.
#[derive(Debug, Clone, Copy)]
enum Ending {
    /// The client sends a close frame.
    ClientCloses,
    /// The client's TCP connection just goes away.
    ClientVanishes,
    /// The handler returns an error.
    HandlerFails,
    /// The handler panics.
    HandlerPanics,
    /// The handler closes the connection.
    ServerCloses,
    /// The channel expires.
    Expires,
    /// The client stops answering (no pong): keep-alive closes it.
    Unresponsive,
}

const ENDINGS: [Ending; 7] = [
    Ending::ClientCloses,
    Ending::ClientVanishes,
    Ending::HandlerFails,
    Ending::HandlerPanics,
    Ending::ServerCloses,
    Ending::Expires,
    Ending::Unresponsive,
];

/// One client's life: join, send (some with history), maybe join a second group, emit to its
/// room's listeners, read what it was sent, and end as `ending` says.
async fn one_client(server: &TestServer, n: usize) {
    let room = n % ROOMS;
    let mut client: TestClient = server.connect(&format!("/churn/{room}")).await;
    if n.is_multiple_of(3) {
        client.send_json(&json!({"do": "also-join"})).await;
    }
    client
        .send_json(&json!({"do": "send", "body": n, "history": n.is_multiple_of(2)}))
        .await;
    client.send_json(&json!({"do": "emit"})).await;
    match ENDINGS[n % ENDINGS.len()] {
        Ending::ClientCloses => client.close(1000, "bye").await,
        Ending::ClientVanishes => drop(client),
        Ending::HandlerFails => {
            client.send_json(&json!({"do": "fail"})).await;
            client.skip_to_close().await;
        }
        Ending::HandlerPanics => {
            client.send_json(&json!({"do": "panic"})).await;
            client.skip_to_close().await;
        }
        Ending::ServerCloses => {
            client.send_json(&json!({"do": "close"})).await;
            client.skip_to_close().await;
        }
        Ending::Expires => {
            client.send_json(&json!({"do": "expire"})).await;
            client.skip_to_close().await;
        }
        Ending::Unresponsive => {
            // Holds the connection without reading: pings go unanswered.
            tokio::time::sleep(Duration::from_millis(400)).await;
            drop(client);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_connections_leave_every_internal_table_as_they_found_it() {
    let app = app();
    let server = TestServer::start(app.clone()).await;
    let quiet = |app: &App| {
        let i = app.internals();
        i.connections == 0 && i.tasks == 0 && i.histories == 0
    };
    // A first round so that whatever is created once (and kept) exists before the baseline.
    join_all((0..ROOMS).map(|n| one_client(&server, n))).await;
    until(true, || async { quiet(&app) }).await;
    let before: Internals = app.internals();
    assert_eq!(before.groups, 0, "{before:?}");

    for wave in 0..20 {
        join_all((0..100).map(|i| one_client(&server, wave * 100 + i))).await;
        for _ in 0..5 {
            // Handshakes that are refused never get a connection.
            assert!(server.client("/refused").connect().await.is_err());
        }
    }
    // The group table frees a removed group (and its ring) once no thread can still be reading
    // it, in batches of 32 per thread (papaya's epoch-based reclamation): a bounded number of
    // rings may wait for that, so rings are compared with that slack, the rest exactly. A leak
    // of one per connection would be 2,000.
    let settled = |mut i: Internals| {
        if i.rings <= before.rings + RECLAIM_SLACK {
            i.rings = 0;
        }
        i
    };
    let after = until(settled(before.clone()), || async {
        settled(app.internals())
    })
    .await;
    assert_eq!(after, settled(before.clone()), "2,000 connections later");
    assert!(app.internals().rings <= before.rings + RECLAIM_SLACK);
    server.shutdown().await;
}

/// Rings of removed groups that may wait for the group table's deferred reclamation.
const RECLAIM_SLACK: usize = 4 * 32;
