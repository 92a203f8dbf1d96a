//! What operators ask a running app: liveness, readiness (and its drain at shutdown).

use std::time::Duration;

use serde_json::Value;
use switchboard::broker::Redis;
use switchboard::prelude::*;
use switchboard::testing::{RedisServer, TestServer};

#[ws_route("/ops/ws")]
async fn ws(mut ws: WebSocket) -> Result<(), WsError> {
    ws.accept().await?;
    while ws.receive().await?.is_some() {}
    Ok(())
}

fn builder() -> switchboard::Builder {
    App::builder()
        .only_module(module_path!())
        .health_route("/healthz")
        .ready_route("/readyz")
}

#[tokio::test]
async fn health_answers_and_readiness_follows_the_app() {
    let app = builder().build().unwrap();
    assert_eq!(app.readiness(), Err("not serving yet".to_owned()));
    let server = TestServer::start(app.clone()).await;
    let health = server.get("/healthz").await;
    assert_eq!(
        (health.status.as_u16(), health.body.as_str()),
        (200, "ok\n")
    );
    let _client = server.connect("/ops/ws").await;
    let ready = server.get("/readyz").await;
    assert_eq!(ready.status, 200);
    assert_eq!(
        ready.json::<Value>(),
        json!({"ready": true, "connections": 1})
    );
    drop(_client);
    server.shutdown().await;
    assert_eq!(
        app.readiness(),
        Err("draining: the server is shutting down".to_owned())
    );
}

#[tokio::test]
async fn during_the_drain_delay_readiness_is_503_and_new_websockets_are_refused() {
    let app = builder()
        .drain_delay(Duration::from_millis(800))
        .build()
        .unwrap();
    let server = TestServer::start(app.clone()).await;
    let mut open = server.connect("/ops/ws").await;
    server.shutdown_handle().trigger();

    // Still accepting, but not ready.
    let ready = server.get("/readyz").await;
    assert_eq!(ready.status, 503, "{}", ready.body);
    assert_eq!(
        ready.json::<Value>()["reason"],
        "draining: the server is shutting down"
    );
    assert_eq!(server.get("/healthz").await.status, 200);
    let refused = server.client("/ops/ws").connect().await.unwrap_err();
    assert_eq!(refused.status, 503);
    // The open connection is closed (1001) once the delay is over.
    assert_eq!(
        open.skip_to_close().await,
        Some((1001, "server shutting down".to_owned()))
    );
    server.shutdown().await;
}

#[tokio::test]
async fn readiness_is_503_while_the_broker_is_unreachable() {
    let Some(mut redis) = RedisServer::start().await else {
        return;
    };
    let broker = Redis::new(&redis.url())
        .unwrap()
        .timeout(Duration::from_millis(300))
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(100));
    let app = builder().broker(broker.clone()).build().unwrap();
    let server = TestServer::start(app.clone()).await;
    switchboard_tests::eventually("the broker connects", || broker.is_connected()).await;
    assert_eq!(server.get("/readyz").await.status, 200);

    redis.kill();
    switchboard_tests::eventually("the broker sees the outage", || !broker.is_connected()).await;
    let ready = server.get("/readyz").await;
    assert_eq!(ready.status, 503);
    let reason = ready.json::<Value>()["reason"].as_str().unwrap().to_owned();
    assert!(
        reason.starts_with("broker unreachable (redis redis+unix://"),
        "{reason}"
    );

    redis.resume().await;
    switchboard_tests::eventually("the broker is back", || broker.is_connected()).await;
    assert_eq!(server.get("/readyz").await.status, 200);
    server.shutdown().await;
}
