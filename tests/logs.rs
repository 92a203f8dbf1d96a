//! What an operator reads in the logs: start-up and shutdown at info, each connection's span
//! (route, path, id, peer) with its open, handshake decision and close (code) at debug,
//! handler failures at warn with the close code, slow consumers and rate limits at warn,
//! listener failures at error and bounded, each emit's span (event, id) at debug.
//!
//! Every line of this test binary goes to one buffer (a global subscriber at every level);
//! each test picks its own lines by route and event names no other test uses.

use std::time::Duration;

use switchboard::broker::Redis;
use switchboard::prelude::*;
use switchboard::testing::{RedisServer, TestServer};
use switchboard::ws::{InboundLimit, RateLimitAction};
use switchboard_tests::{captured_logs, eventually};

#[ws_route("/logs/echo")]
async fn echo(mut ws: WebSocket) -> Result<(), WsError> {
    ws.accept().await?;
    while let Some(text) = ws.receive_text().await? {
        ws.send_text(text).await?;
    }
    Ok(())
}

#[ws_route("/logs/refuse")]
async fn refuse(mut ws: WebSocket) -> Result<(), WsError> {
    ws.accept().await?;
    Err(WsError::close(4001, "not today"))
}

#[ws_route("/logs/feed")]
async fn feed(mut ws: WebSocket, channels: ChannelBox) -> Result<(), WsError> {
    ws.accept().await?;
    channels
        .add_channel_to_group(&ws.channel(), "logs-feed")
        .await?;
    ws.send_text("joined").await?;
    while ws.receive().await?.is_some() {}
    Ok(())
}

#[on("logs.fail")]
async fn fails() -> Result<(), switchboard::Error> {
    Err(switchboard::Error::other("listener broke"))
}

fn app() -> App {
    App::builder()
        .only_module(module_path!())
        .outbound_queue_bytes(16 * 1024)
        .route_inbound_limit(
            "/logs/echo",
            InboundLimit::new()
                .messages_per_second(1, 20)
                .on_exceed(RateLimitAction::Close),
        )
        .build()
        .unwrap()
}

#[tokio::test]
async fn start_up_and_shutdown_are_logged_at_info() {
    let logs = captured_logs();
    let server = TestServer::start(app()).await;
    let address = format!("address={}", server.addr());
    server.shutdown().await;
    let started = logs.matching(&[" INFO ", "listening", &address]);
    assert_eq!(started.len(), 1, "{:#?}", logs.lines());
    for field in [
        "ws_routes=3",
        "http_routes=0",
        "listeners=1",
        "broker=local",
    ] {
        assert!(started[0].contains(field), "{field}: {}", started[0]);
    }
    // This server's own lines (other tests' servers stop at the same time).
    let stopped = logs.matching(&[" INFO ", "shutdown: stopped accepting", &address]);
    assert_eq!(stopped.len(), 1, "{:#?}", logs.lines());
    let complete = logs.matching(&[" INFO ", "shutdown complete", &address]);
    assert_eq!(complete.len(), 1, "{:#?}", logs.lines());
}

#[tokio::test]
async fn a_connection_is_one_span_with_its_open_decision_and_close() {
    let logs = captured_logs();
    let server = TestServer::start(app()).await;
    let mut client = server.connect("/logs/echo").await;
    client.send_text("hi").await;
    assert_eq!(client.recv_text().await, "hi");
    client.close(1000, "bye").await;
    let _ = client.skip_to_close().await;
    eventually("the close is logged", || {
        !logs
            .matching(&["route=/logs/echo", "connection closed"])
            .is_empty()
    })
    .await;
    let span = "connection{route=/logs/echo path=/logs/echo id=";
    for what in [
        "handshake accepted",
        "connection opened",
        "connection closed",
    ] {
        let lines = logs.matching(&[" DEBUG ", span, what]);
        assert_eq!(lines.len(), 1, "{what}: {:#?}", logs.lines());
        assert!(lines[0].contains(" peer=127.0.0.1:"), "{}", lines[0]);
    }
    let closed = &logs.matching(&[span, "connection closed"])[0];
    assert!(closed.contains("code=1000") && closed.contains("by_client=true"));
    server.shutdown().await;
}

#[tokio::test]
async fn a_handler_failure_is_a_warning_with_its_close_code() {
    let logs = captured_logs();
    let server = TestServer::start(app()).await;
    let mut client = server.connect("/logs/refuse").await;
    assert_eq!(
        client.skip_to_close().await,
        Some((4001, "not today".to_owned()))
    );
    eventually("the failure is logged", || {
        !logs
            .matching(&["path=/logs/refuse", "handler failed"])
            .is_empty()
    })
    .await;
    let failed = logs.matching(&[" WARN ", "path=/logs/refuse", "handler failed: "]);
    assert_eq!(failed.len(), 1, "{failed:#?}");
    assert!(failed[0].contains("code=4001"), "{}", failed[0]);
    server.shutdown().await;
}

#[tokio::test]
async fn listener_failures_are_errors_a_few_a_second_with_the_rest_counted() {
    let logs = captured_logs();
    let app = app();
    for _ in 0..200 {
        let report = app.events().emit("logs.fail", json!({})).await;
        assert_eq!(report.failed, 1);
    }
    let failed = logs.matching(&[" ERROR ", "event=\"logs.fail\"", "listener failed"]);
    assert!(
        (1..=10).contains(&failed.len()),
        "at most 10 lines in a second, not one per failure: {}",
        failed.len()
    );
    // Every line is inside the emit's span, which names the event and its id.
    assert!(
        failed
            .iter()
            .all(|l| l.contains("emit{event=logs.fail id="))
    );
    // A second later, the next line says how many were left out.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    app.events().emit("logs.fail", json!({})).await;
    let last = logs.matching(&[" ERROR ", "event=\"logs.fail\"", "listener failed"]);
    let skipped = last.last().unwrap();
    assert!(
        skipped.contains(&format!("skipped={}", 200 - failed.len())),
        "{skipped}"
    );
}

#[tokio::test]
async fn slow_consumers_and_rate_limits_are_warnings() {
    let logs = captured_logs();
    let app = app();
    let server = TestServer::start(app.clone()).await;

    // A member that reads nothing while the group is sent far more than its queue holds.
    let mut stalled = server
        .client("/logs/feed")
        .receive_buffer(4096)
        .connect()
        .await
        .unwrap();
    assert_eq!(stalled.recv_text().await, "joined");
    let padding = "x".repeat(1000);
    for seq in 0..4000 {
        let report = app
            .channels()
            .group_send("logs-feed", &json!({"seq": seq, "pad": padding}))
            .await
            .unwrap();
        if report.slow_consumers_closed == 1 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(app.channels().metrics().slow_consumers_closed, 1);
    let slow = logs.matching(&[" WARN ", "slow consumer closed"]);
    assert_eq!(slow.len(), 1, "{slow:#?}");
    assert!(slow[0].contains("code=1008"), "{}", slow[0]);
    drop(stalled);

    // A client past its inbound limit (burst of 20, then 1 a second), closed with 1008.
    let mut flooder = server.connect("/logs/echo").await;
    for n in 0..40 {
        flooder.send_text(n.to_string()).await;
    }
    assert_eq!(
        flooder.skip_to_close().await,
        Some((1008, "rate limit exceeded".to_owned()))
    );
    let limited = logs.matching(&[" WARN ", "client closed: past its inbound limit"]);
    assert_eq!(limited.len(), 1, "{limited:#?}");
    assert!(limited[0].contains("code=1008"), "{}", limited[0]);
    server.shutdown().await;
}

#[tokio::test]
async fn a_broker_outage_and_its_recovery_are_warnings() {
    let logs = captured_logs();
    let Some(mut redis) = RedisServer::start().await else {
        return;
    };
    let broker = Redis::new(&redis.url())
        .unwrap()
        .prefix("logs-outage")
        .timeout(Duration::from_millis(300))
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(100));
    let app = App::builder()
        .only_module(module_path!())
        .broker(broker.clone())
        .build()
        .unwrap();
    let server = TestServer::start(app).await;
    eventually("connected", || broker.is_connected()).await;
    let url = redis.url();
    redis.kill();
    eventually("the outage is logged", || {
        !logs
            .matching(&[" WARN ", "Redis connection lost", &url])
            .is_empty()
    })
    .await;
    redis.resume().await;
    eventually("the recovery is logged", || {
        !logs
            .matching(&[" WARN ", "Redis connection back", &url])
            .is_empty()
    })
    .await;
    server.shutdown().await;
}
