//! What an idle connection keeps on the heap, counted by this test binary's allocator: a
//! guard for the memory per connection of issue 17 (BENCHMARKS.md measures RSS with the
//! harness; this catches a regression of the framework's own share without a benchmark run).
//!
//! The clients are raw TCP sockets after a hand-written upgrade, so what they allocate (a
//! socket registration each) is small next to the server's share and counted against the
//! budget too.

use std::alloc::System;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};
use switchboard::prelude::*;
use switchboard::testing::TestServer;
use switchboard_tests::WAIT;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[global_allocator]
static ALLOCATOR: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// The tests here measure one process's heap: one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

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

/// Messages `/sink` has read.
static SUNK: AtomicUsize = AtomicUsize::new(0);

/// Reads and counts messages.
#[ws_route("/sink")]
async fn sink(mut ws: WebSocket) -> Result<(), WsError> {
    ws.accept().await?;
    while ws.receive().await?.is_some() {
        SUNK.fetch_add(1, Ordering::SeqCst);
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

/// The framework's share of an idle connection's heap, with the handler above, in a debug
/// build (`cargo test`'s; futures are larger than in release). Before issue 17's memory work,
/// with a 4 KiB read buffer per connection (tungstenite's, as every WebSocket server on
/// tungstenite keeps, axum's included): 8,600 bytes. Holding the handler's future once and
/// boxing the session's opening and closing: 8,048. The close lane boxed, the session captured
/// once, the request's header map boxed until asked for: 7,728. A 512-byte read buffer, the
/// connection read through a buffer of the worker thread: 4,144.
const BUDGET: isize = 4_400;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_keeps_at_most_its_budget_on_the_heap() {
    const CONNECTIONS: usize = 200;
    const WARM: usize = 8;
    let _alone = ONE_AT_A_TIME.lock().await;
    let app = App::builder().only_module(module_path!()).build().unwrap();
    let server = TestServer::start(app.clone()).await;
    // A few connections first: what the first of anything allocates (tables, pools, the
    // worker threads' read buffers) is not a connection's.
    let mut first = Vec::new();
    for _ in 0..WARM {
        first.push(connect(&server, "/room/warm").await);
    }
    wait_for(&app, WARM).await;
    let before = live();
    let clients = open(&server, CONNECTIONS).await;
    wait_for(&app, CONNECTIONS + WARM).await;
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
    wait_for(&app, WARM).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after_first = live();
    const ROUNDS: isize = 5;
    for _ in 0..ROUNDS {
        let clients = open(&server, CONNECTIONS).await;
        wait_for(&app, CONNECTIONS + WARM).await;
        drop(clients);
        wait_for(&app, WARM).await;
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

/// A client frame: binary, final, masked with a zero mask.
fn client_frame(payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x82];
    match payload.len() {
        len @ 0..126 => frame.push(0x80 | len as u8),
        len => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&u16::try_from(len).unwrap().to_be_bytes());
        }
    }
    frame.extend_from_slice(&[0; 4]);
    frame.extend_from_slice(payload);
    frame
}

/// What a connection may keep after a burst more than before it: tungstenite's read buffer
/// grows to 2 KiB (`bytes` doubles a buffer whose unread part is longer than its read part
/// rather than move it; with a 4 KiB buffer it grows to 8 KiB). The bytes read ahead of
/// tungstenite (up to 16 KiB per read) are not kept.
const GROWN_AFTER_BURST: isize = 2_048;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_has_read_a_burst_keeps_nothing_of_it() {
    const CONNECTIONS: usize = 300;
    let _alone = ONE_AT_A_TIME.lock().await;
    let app = App::builder().only_module(module_path!()).build().unwrap();
    let server = TestServer::start(app.clone()).await;
    // A first few connections read a burst first: what the first reads of anything allocate
    // (a worker thread's read buffer) is not a connection's.
    let mut first = open_sinks(&app, &server, 20).await;
    burst(&mut first).await;
    let before = live();
    let mut clients = open_sinks(&app, &server, CONNECTIONS).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle = (live() - before) / CONNECTIONS as isize;
    burst(&mut clients).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let per_connection = (live() - before) / CONNECTIONS as isize;
    eprintln!("a connection keeps {idle} bytes idle, {per_connection} after a burst");
    assert!(
        per_connection <= idle + GROWN_AFTER_BURST,
        "after a burst, a connection keeps {per_connection} bytes, {idle} before it"
    );
    drop((first, clients));
    server.shutdown().await;
}

/// Opens `count` more connections to `/sink`.
async fn open_sinks(app: &App, server: &TestServer, count: usize) -> Vec<TcpStream> {
    let open = app.connection_count();
    let mut clients = Vec::with_capacity(count);
    for _ in 0..count {
        clients.push(connect(server, "/sink").await);
    }
    wait_for(app, open + count).await;
    clients
}

/// Each client sends 40 KB in one write: more than a worker thread's buffer (16 KiB) reads at
/// once, in messages that each fit the 512-byte read buffer. Returns once all are read.
async fn burst(clients: &mut [TcpStream]) {
    const MESSAGES: usize = 200;
    let burst: Vec<u8> = (0..MESSAGES)
        .flat_map(|_| client_frame(&[7; 200]))
        .collect();
    let target = SUNK.load(Ordering::SeqCst) + clients.len() * MESSAGES;
    for client in clients.iter_mut() {
        client.write_all(&burst).await.unwrap();
    }
    tokio::time::timeout(WAIT, async {
        while SUNK.load(Ordering::SeqCst) < target {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("every message read");
}
