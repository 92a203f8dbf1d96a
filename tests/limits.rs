//! One client cannot take the server: inbound rate limits (pause or close), connection limits
//! per address and per second, and timeouts on what a client or a handler holds open.

use std::time::Duration;

use futures_util::future::join_all;
use switchboard::prelude::*;
use switchboard::testing::{Received, TestClient, TestServer};
use switchboard::ws::{InboundLimit, RateLimitAction};
use switchboard_tests::eventually;
use tokio::io::AsyncReadExt;

/// Echoes every text message.
#[ws_route("/echo")]
async fn echo(mut ws: WebSocket) -> Result<(), WsError> {
    ws.accept().await?;
    while let Some(text) = ws.receive_text().await? {
        ws.send_text(text).await?;
    }
    Ok(())
}

/// Echoes too (another route, for per-route limits).
#[ws_route("/strict")]
async fn strict(mut ws: WebSocket) -> Result<(), WsError> {
    ws.accept().await?;
    while let Some(text) = ws.receive_text().await? {
        ws.send_text(text).await?;
    }
    Ok(())
}

/// Never accepts nor refuses.
#[ws_route("/undecided")]
async fn undecided(_ws: WebSocket) -> Result<(), WsError> {
    std::future::pending::<()>().await;
    Ok(())
}

/// A room: every text message goes to the room's members.
#[ws_route("/room/{name}")]
async fn room(mut ws: WebSocket, name: String, channels: ChannelBox) -> Result<(), WsError> {
    ws.accept().await?;
    channels.add_channel_to_group(&ws.channel(), &name).await?;
    ws.send_text("joined").await?;
    while let Some(text) = ws.receive_text().await? {
        channels.group_send(&name, &text).await?;
    }
    Ok(())
}

fn builder() -> switchboard::Builder {
    App::builder().only_module(module_path!())
}

#[tokio::test]
async fn a_client_past_its_limit_is_paused_and_loses_nothing() {
    let app = builder()
        .inbound_limit(InboundLimit::new().messages_per_second(50, 5))
        .build()
        .unwrap();
    let server = TestServer::start(app.clone()).await;
    let mut client = server.connect("/echo").await;
    for n in 0..20 {
        client.send_text(n.to_string()).await;
    }
    for n in 0..20 {
        assert_eq!(
            client.recv_text().await,
            n.to_string(),
            "in order, none lost"
        );
    }
    let metrics = app.connection_metrics();
    assert!(metrics.rate_limit_pauses > 0, "{metrics:?}");
    assert_eq!(metrics.rate_limit_closes, 0);
    drop(client);
    server.shutdown().await;
}

#[tokio::test]
async fn a_route_of_its_own_limit_closes_with_1008_and_the_others_are_untouched() {
    let strict_limit = InboundLimit::new()
        .messages_per_second(1, 3)
        .on_exceed(RateLimitAction::Close);
    let app = builder()
        .route_inbound_limit("/strict", strict_limit)
        .build()
        .unwrap();
    let server = TestServer::start(app.clone()).await;
    let mut strict = server.connect("/strict").await;
    for n in 0..10 {
        strict.send_text(n.to_string()).await;
    }
    assert_eq!(
        strict.skip_to_close().await,
        Some((1008, "rate limit exceeded".to_owned()))
    );
    assert_eq!(app.connection_metrics().rate_limit_closes, 1);
    let mut free = server.connect("/echo").await;
    for n in 0..10 {
        free.send_text(n.to_string()).await;
    }
    for n in 0..10 {
        assert_eq!(free.recv_text().await, n.to_string());
    }
    let unknown = builder()
        .route_inbound_limit("/nope", strict_limit)
        .build()
        .unwrap_err();
    assert!(unknown.to_string().contains("/nope"), "{unknown}");
    drop((strict, free));
    server.shutdown().await;
}

#[tokio::test]
async fn connections_per_address_are_bounded_and_a_trusted_proxy_names_the_client() {
    let app = builder().max_connections_per_address(2).build().unwrap();
    let server = TestServer::start(app.clone()).await;
    let a = server.connect("/echo").await;
    let b = server.connect("/echo").await;
    let refused = server.client("/echo").connect().await.unwrap_err();
    assert_eq!(refused.status, 429);
    // A header from a peer that is not a trusted proxy changes nothing.
    let refused = server
        .client("/echo")
        .header("x-forwarded-for", "10.0.0.9")
        .connect()
        .await
        .unwrap_err();
    assert_eq!(refused.status, 429);
    assert_eq!(app.connection_metrics().refused_per_address, 2);
    drop(a);
    let _c = until_accepted(&server, "/echo", &[]).await;
    drop((b, _c));
    server.shutdown().await;

    let app = builder()
        .max_connections_per_address(1)
        .trusted_proxies(["127.0.0.1".parse().unwrap()])
        .build()
        .unwrap();
    let server = TestServer::start(app.clone()).await;
    let through = |client: &str| {
        server
            .client("/echo")
            .header("x-forwarded-for", &format!("{client}, 127.0.0.1"))
            .connect()
    };
    let first = through("10.0.0.1").await.unwrap();
    assert_eq!(through("10.0.0.1").await.unwrap_err().status, 429);
    let other = through("10.0.0.2").await.unwrap();
    drop((first, other));
    server.shutdown().await;
}

/// Connects, retrying while the server still counts a connection that just closed.
async fn until_accepted(server: &TestServer, path: &str, headers: &[(&str, &str)]) -> TestClient {
    for _ in 0..200 {
        let mut request = server.client(path);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        if let Ok(client) = request.connect().await {
            return client;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{path}: still refused");
}

#[tokio::test]
async fn new_connections_past_the_rate_are_refused_with_retry_after() {
    let app = builder()
        .max_new_connections_per_second(1, 2)
        .build()
        .unwrap();
    let server = TestServer::start(app.clone()).await;
    let a = server.connect("/echo").await;
    let b = server.connect("/echo").await;
    let refused = server.client("/echo").connect().await.unwrap_err();
    assert_eq!(refused.status, 503);
    assert_eq!(refused.headers["retry-after"], "1");
    assert_eq!(app.connection_metrics().refused_rate, 1);
    drop((a, b));
    server.shutdown().await;
}

#[tokio::test]
async fn a_handler_that_never_decides_gets_503_after_the_handshake_timeout() {
    let app = builder()
        .handshake_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let server = TestServer::start(app.clone()).await;
    let refused = server.client("/undecided").connect().await.unwrap_err();
    assert_eq!(refused.status, 503);
    assert_eq!(app.connection_metrics().handshake_timeouts, 1);
    assert_eq!(app.internals().reserved, 0, "its place is given back");
    server.shutdown().await;
}

#[tokio::test]
async fn a_connection_that_never_sends_its_request_is_closed() {
    let app = builder()
        .request_head_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let server = TestServer::start(app).await;
    for partial in [&b""[..], b"GET /echo HTTP/1.1\r\nHost: x\r\n"] {
        let mut tcp = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut tcp, partial)
            .await
            .unwrap();
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut rest)).await;
        assert!(read.is_ok(), "the server closed the connection");
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_client_does_not_keep_another_room_from_its_messages() {
    let app = builder()
        .inbound_limit(InboundLimit::new().messages_per_second(200, 100))
        .build()
        .unwrap();
    let server = TestServer::start(app.clone()).await;
    // A 1,000-member room, every member reading what it gets.
    let members: Vec<TestClient> = join_all((0..1000).map(|_| async {
        let mut member = server.connect("/room/big").await;
        assert_eq!(member.recv_text().await, "joined");
        member
    }))
    .await;
    let readers: Vec<_> = members
        .into_iter()
        .map(|mut member| {
            tokio::spawn(async move {
                while member.recv_within(Duration::from_secs(30)).await.is_some() {}
            })
        })
        .collect();
    // The flooder sends into it as fast as it can, and never stops on its own.
    let mut flooder = server.connect("/room/big").await;
    assert_eq!(flooder.recv_text().await, "joined");
    let flood = tokio::spawn(async move {
        let mut n = 0u64;
        loop {
            flooder.send_text(format!("flood {n}")).await;
            n += 1;
        }
    });
    // Once it is past its limit (paused), ten clients of a small room talk: each gets every
    // message of the room.
    eventually("the flooder is paused", || {
        app.connection_metrics().rate_limit_pauses > 0
    })
    .await;
    let small: Vec<TestClient> = join_all((0..10).map(|_| async {
        let mut client = server.connect("/room/small").await;
        assert_eq!(client.recv_text().await, "joined");
        client
    }))
    .await;
    let received = join_all(
        small
            .into_iter()
            .enumerate()
            .map(|(i, mut client)| async move {
                for n in 0..20 {
                    client.send_text(format!("{i}:{n}")).await;
                }
                let mut got = 0;
                while got < 10 * 20 {
                    match client.recv().await {
                        Received::Text(_) => got += 1,
                        other => panic!("{other:?}"),
                    }
                }
                got
            }),
    )
    .await;
    assert_eq!(received, vec![200; 10]);
    flood.abort();
    for reader in readers {
        reader.abort();
    }
    server.shutdown_handle().trigger();
}
