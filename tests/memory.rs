//! What an idle connection keeps on the heap, counted by this test binary's allocator: a
//! guard for the memory per connection of issue 17 (BENCHMARKS.md measures RSS with the
//! harness; this catches a regression of the framework's own share without a benchmark run).
//!
//! The clients are raw TCP sockets after a hand-written upgrade, so what they allocate (a
//! socket registration each) is small next to the server's share and counted against the
//! budget too.

use std::alloc::System;
use std::time::Duration;

use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};
use switchboard::prelude::*;
use switchboard::testing::TestServer;
use switchboard_tests::WAIT;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[global_allocator]
static ALLOCATOR: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Bytes allocated and not freed, by anything in this process.
fn live() -> isize {
    let stats = ALLOCATOR.stats();
    // (A realloc's growth or shrink is counted in these two already.)
    stats.bytes_allocated as isize - stats.bytes_deallocated as isize
}

/// The chat example's shape: accept, join the room's group, read until the client leaves.
#[ws_route("/room/{room}")]
async fn room(mut ws: WebSocket, room: String, app: App) -> Result<(), WsError> {
    ws.accept().await?;
    let channel = ws.channel();
    app.channels()
        .add_channel_to_group(&channel, format!("room_{room}"))
        .await?;
    while let Some(message) = ws.receive_text().await? {
        let _ = app
            .channels()
            .group_send(format!("room_{room}"), &message)
            .await;
    }
    Ok(())
}

/// Opens a WebSocket on a raw socket: the upgrade request, then the 101's head.
async fn connect(server: &TestServer, path: &str) -> TcpStream {
    let mut tcp = TcpStream::connect(server.addr()).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(tcp.read(&mut byte).await.unwrap(), 1, "the 101 arrives");
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{head:?}");
    tcp
}

/// The framework's share of an idle connection's heap, with the handler above and a 4 KiB
/// read buffer (tungstenite's, allocated by every WebSocket server on tungstenite, axum's
/// included), in a debug build (`cargo test`'s; futures are larger than in release). Before
/// issue 17's memory work: 8,600 bytes. Holding the handler's future once and boxing the
/// session's opening and closing: 8,048. The close lane boxed, the session captured once,
/// the request's header map boxed until asked for: 7,728.
const BUDGET: isize = 7_900;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_keeps_at_most_its_budget_on_the_heap() {
    const CONNECTIONS: usize = 200;
    let app = App::builder().only_module(module_path!()).build().unwrap();
    let server = TestServer::start(app.clone()).await;
    // One connection first: what the first of anything allocates (tables, pools) is not a
    // connection's.
    let first = connect(&server, "/room/warm").await;
    wait_for(&app, 1).await;
    let before = live();
    let clients = open(&server, CONNECTIONS).await;
    wait_for(&app, CONNECTIONS + 1).await;
    // Every handler is in its receive loop, every writer waits.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let per_connection = (live() - before) / CONNECTIONS as isize;
    eprintln!("an idle connection keeps {per_connection} bytes on the heap (budget {BUDGET})");
    assert!(
        per_connection <= BUDGET,
        "an idle connection keeps {per_connection} bytes, over the budget of {BUDGET}"
    );
    // And gives them back when they go: once tables have grown to hold them (capacity kept),
    // more rounds of as many connections leave nothing behind (what deferred reclamation
    // holds for a while aside).
    drop(clients);
    wait_for(&app, 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after_first = live();
    const ROUNDS: isize = 5;
    for _ in 0..ROUNDS {
        let clients = open(&server, CONNECTIONS).await;
        wait_for(&app, CONNECTIONS + 1).await;
        drop(clients);
        wait_for(&app, 1).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let left = (live() - after_first) / (ROUNDS * CONNECTIONS as isize);
    assert!(
        left < 64,
        "{left} bytes per closed connection are still held"
    );
    drop(first);
    server.shutdown().await;
}

async fn open(server: &TestServer, connections: usize) -> Vec<TcpStream> {
    let mut clients = Vec::with_capacity(connections);
    for i in 0..connections {
        clients.push(connect(server, &format!("/room/{}", i % 10)).await);
    }
    clients
}

async fn wait_for(app: &App, connections: usize) {
    tokio::time::timeout(WAIT, async {
        while app.connection_count() != connections {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{} connections, not {connections}", app.connection_count()));
}
