//! What operators ask a running app: liveness, readiness (and its drain at shutdown), and
//! metrics in the Prometheus text format whose numbers match what the test did.

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

#[ws_route("/ops/echo")]
async fn echo(mut ws: WebSocket) -> Result<(), WsError> {
    ws.accept().await?;
    while let Some(text) = ws.receive_text().await? {
        ws.send_text(text).await?;
    }
    Ok(())
}

#[ws_route("/ops/json")]
async fn json_only(mut ws: WebSocket) -> Result<(), WsError> {
    ws.accept().await?;
    while ws.receive_json::<Value>().await?.is_some() {}
    Ok(())
}

#[ws_route("/ops/feed")]
async fn feed(mut ws: WebSocket, channels: ChannelBox) -> Result<(), WsError> {
    ws.accept().await?;
    channels
        .add_channel_to_group(&ws.channel(), "ops-feed")
        .await?;
    ws.send_text("joined").await?;
    while ws.receive().await?.is_some() {}
    Ok(())
}

#[on("ops.event")]
async fn heard(payload: Value) -> Result<(), switchboard::Error> {
    if payload == "fail" {
        return Err(switchboard::Error::other("asked to fail"));
    }
    Ok(())
}

fn builder() -> switchboard::Builder {
    App::builder()
        .only_module(module_path!())
        .health_route("/healthz")
        .ready_route("/readyz")
        .metrics_route("/metrics")
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

/// A scrape, checked to be well-formed Prometheus text: every family has its `# HELP` and
/// `# TYPE` before its samples, every sample is `name{labels} value` of a declared family,
/// histogram buckets are cumulative and end with `+Inf` equal to `_count`. Returns
/// `series -> value`.
fn parse_prometheus(text: &str) -> std::collections::BTreeMap<String, f64> {
    let mut types = std::collections::HashMap::new();
    let mut helped = std::collections::HashSet::new();
    let mut samples = std::collections::BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP name text");
            assert!(!help.is_empty(), "{line}");
            helped.insert(name.to_owned());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(helped.contains(name), "HELP before TYPE: {line}");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            types.insert(name.to_owned(), kind.to_owned());
            continue;
        }
        assert!(!line.starts_with('#'), "unknown comment: {line}");
        let (series, value) = line.rsplit_once(' ').expect("series value");
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("a number: {line}"));
        let name = series.split('{').next().unwrap();
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "{line}"
        );
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix)
                    .filter(|base| types.get(*base).is_some_and(|k| k == "histogram"))
            })
            .unwrap_or(name);
        assert!(types.contains_key(family), "a declared family: {line}");
        if let Some(labels) = series.strip_prefix(name)
            && !labels.is_empty()
        {
            assert!(labels.starts_with('{') && labels.ends_with('}'), "{line}");
            for pair in labels[1..labels.len() - 1].split("\",") {
                let (key, value) = pair.split_once("=\"").expect("key=\"value\"");
                assert!(key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
                assert!(!value.contains('\n'));
            }
        }
        assert!(
            samples.insert(series.to_owned(), value).is_none(),
            "one sample per series: {line}"
        );
    }
    // Histograms: cumulative buckets, `+Inf` equal to the count.
    for (series, count) in samples.iter().filter(|(s, _)| s.contains("_count")) {
        let base = series.replace("_count", "_bucket");
        let labels = base.trim_end_matches('}');
        // In the order of their bounds (the map sorts them as text).
        let mut buckets: Vec<(f64, f64)> = samples
            .iter()
            .filter_map(|(s, v)| {
                let le = s.strip_prefix(labels)?.strip_prefix(",le=\"")?;
                let le = le.trim_end_matches("\"}");
                Some((
                    if le == "+Inf" {
                        f64::INFINITY
                    } else {
                        le.parse().ok()?
                    },
                    *v,
                ))
            })
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        assert!(buckets.len() > 1, "buckets of {series}");
        assert!(
            buckets.windows(2).all(|w| w[0].1 <= w[1].1),
            "cumulative: {series} {buckets:?}"
        );
        assert_eq!(
            buckets.last().unwrap(),
            &(f64::INFINITY, *count),
            "{series}"
        );
    }
    samples
}

async fn scrape(server: &TestServer) -> std::collections::BTreeMap<String, f64> {
    let response = server.get("/metrics").await;
    assert_eq!(response.status, 200);
    let content_type = response.headers[switchboard::axum::http::header::CONTENT_TYPE]
        .to_str()
        .unwrap();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    parse_prometheus(&response.body)
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text_and_count_what_happened() {
    let app = builder().build().unwrap();
    let server = TestServer::start(app.clone()).await;

    // 3 connections on /ops/echo, 2 messages each, echoed.
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut client = server.connect("/ops/echo").await;
        for text in ["hello", "metrics!"] {
            client.send_text(text).await;
            assert_eq!(client.recv_text().await, text);
        }
        clients.push(client);
    }
    // One on /ops/json that sends what is not JSON: closed with 1007.
    let mut bad = server.connect("/ops/json").await;
    bad.send_text("{not json").await;
    assert_eq!(bad.skip_to_close().await.map(|(code, _)| code), Some(1007));
    // Events: 3 of a registered name (one fails), 2 nobody listens to.
    for payload in [json!("ok"), json!("ok"), json!("fail")] {
        app.events().emit("ops.event", payload).await;
    }
    for _ in 0..2 {
        app.events().emit("ops.nobody", json!({})).await;
    }

    let m = scrape(&server).await;
    assert_eq!(m["switchboard_connections"], 3.0);
    assert_eq!(m["switchboard_connections_total{route=\"/ops/echo\"}"], 3.0);
    assert_eq!(m["switchboard_connections_total{route=\"/ops/json\"}"], 1.0);
    assert_eq!(m["switchboard_disconnects_total{code=\"1007\"}"], 1.0);
    assert_eq!(m["switchboard_messages_received_total"], 7.0);
    assert_eq!(
        m["switchboard_received_bytes_total"],
        (3 * (5 + 8) + 9) as f64
    );
    assert_eq!(m["switchboard_messages_sent_total"], 6.0);
    assert_eq!(m["switchboard_sent_bytes_total"], (3 * (5 + 8)) as f64);
    assert_eq!(m["switchboard_emits_total{event=\"ops.event\"}"], 3.0);
    assert_eq!(
        m["switchboard_listener_failures_total{event=\"ops.event\"}"],
        1.0
    );
    assert_eq!(m["switchboard_emits_total{event=\"(other)\"}"], 2.0);
    assert_eq!(
        m["switchboard_emit_duration_seconds_count{event=\"ops.event\"}"],
        3.0
    );
    assert_eq!(m["switchboard_broker_up"], 1.0);
    assert_eq!(m["switchboard_broker_queue_depth"], 0.0);

    // Closing the echo clients: counted by code, and their traffic stays in the totals.
    for mut client in clients {
        client.close(1000, "done").await;
        let _ = client.skip_to_close().await;
    }
    switchboard_tests::eventually("the closes are counted", || app.connection_count() == 0).await;
    let m = scrape(&server).await;
    assert_eq!(m["switchboard_connections"], 0.0);
    assert_eq!(m["switchboard_disconnects_total{code=\"1000\"}"], 3.0);
    assert_eq!(m["switchboard_messages_received_total"], 7.0);
    assert_eq!(m["switchboard_messages_sent_total"], 6.0);
    server.shutdown().await;
}

#[tokio::test]
async fn group_metrics_count_sends_deliveries_and_a_slow_consumer() {
    let app = builder().outbound_queue_bytes(16 * 1024).build().unwrap();
    let server = TestServer::start(app.clone()).await;
    let mut reader = server.connect("/ops/feed").await;
    assert_eq!(reader.recv_text().await, "joined");
    let mut stalled = server
        .client("/ops/feed")
        .receive_buffer(4096)
        .connect()
        .await
        .unwrap();
    assert_eq!(stalled.recv_text().await, "joined");
    let m = scrape(&server).await;
    assert_eq!(m["switchboard_groups"], 1.0);
    assert_eq!(m["switchboard_group_members"], 2.0);

    // Far more than the stalled client's queue holds; the reader reads everything.
    let padding = "x".repeat(1000);
    let (mut sends, mut delivered, mut dropped) = (0u64, 0u64, 0u64);
    let reading = tokio::spawn(async move {
        loop {
            let message: Value = reader.recv_json().await;
            if message["last"] == true {
                return reader;
            }
        }
    });
    // Until the stalled member is closed, then one more.
    for seq in 0..20_000 {
        let last = app.channels().metrics().slow_consumers_closed == 1;
        let report = app
            .channels()
            .group_send(
                "ops-feed",
                &json!({"seq": seq, "pad": padding, "last": last}),
            )
            .await
            .unwrap();
        sends += 1;
        delivered += report.delivered as u64;
        dropped += report.dropped as u64;
        if last {
            break;
        }
        tokio::task::yield_now().await;
    }
    let reader = reading.await.unwrap();
    assert_eq!(app.channels().metrics().slow_consumers_closed, 1);
    let m = scrape(&server).await;
    assert_eq!(m["switchboard_group_sends_total"], sends as f64);
    assert_eq!(m["switchboard_deliveries_total"], delivered as f64);
    assert_eq!(m["switchboard_slow_consumer_closes_total"], 1.0);
    assert_eq!(
        m["switchboard_dropped_total{reason=\"slow_consumer_closed\"}"],
        dropped as f64
    );
    assert!(dropped >= 1);
    assert!(m["switchboard_messages_sent_total"] >= sends as f64 + 2.0);
    drop(stalled.skip_to_close().await);
    drop(reader);
    server.shutdown().await;
}

/// A recorder of the `metrics` facade that keeps the last value of each counter and gauge.
#[derive(Default)]
struct Recorded(std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<String, f64>>>);

struct Handle(
    String,
    std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<String, f64>>>,
);

impl metrics::CounterFn for Handle {
    fn increment(&self, value: u64) {
        *self.1.lock().unwrap().entry(self.0.clone()).or_default() += value as f64;
    }
    fn absolute(&self, value: u64) {
        self.1.lock().unwrap().insert(self.0.clone(), value as f64);
    }
}

impl metrics::GaugeFn for Handle {
    fn increment(&self, value: f64) {
        *self.1.lock().unwrap().entry(self.0.clone()).or_default() += value;
    }
    fn decrement(&self, value: f64) {
        *self.1.lock().unwrap().entry(self.0.clone()).or_default() -= value;
    }
    fn set(&self, value: f64) {
        self.1.lock().unwrap().insert(self.0.clone(), value);
    }
}

impl metrics::Recorder for Recorded {
    fn describe_counter(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_gauge(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn register_counter(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        metrics::Counter::from_arc(std::sync::Arc::new(Handle(series(key), self.0.clone())))
    }
    fn register_gauge(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        metrics::Gauge::from_arc(std::sync::Arc::new(Handle(series(key), self.0.clone())))
    }
    fn register_histogram(
        &self,
        _: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        metrics::Histogram::noop()
    }
}

/// `name{k="v",..}`, as the Prometheus route writes it.
fn series(key: &metrics::Key) -> String {
    let labels: Vec<String> = key
        .labels()
        .map(|l| format!("{}=\"{}\"", l.key(), l.value()))
        .collect();
    if labels.is_empty() {
        key.name().to_owned()
    } else {
        format!("{}{{{}}}", key.name(), labels.join(","))
    }
}

#[tokio::test]
async fn the_metrics_facade_gets_the_same_counters_as_the_prometheus_route() {
    let app = builder().build().unwrap();
    let server = TestServer::start(app.clone()).await;
    let mut client = server.connect("/ops/echo").await;
    client.send_text("hello").await;
    assert_eq!(client.recv_text().await, "hello");
    app.events().emit("ops.event", json!("ok")).await;

    let recorder = Recorded::default();
    metrics::with_local_recorder(&recorder, || app.record_metrics());
    let recorded = recorder.0.lock().unwrap().clone();
    let scraped = scrape(&server).await;
    for (series, value) in &recorded {
        assert_eq!(scraped.get(series), Some(value), "{series}");
    }
    for series in [
        "switchboard_connections",
        "switchboard_connections_total{route=\"/ops/echo\"}",
        "switchboard_messages_received_total",
        "switchboard_messages_sent_total",
        "switchboard_emits_total{event=\"ops.event\"}",
        "switchboard_broker_up",
    ] {
        assert_eq!(recorded.get(series), Some(&1.0), "{series}: {recorded:#?}");
    }
    drop(client);
    server.shutdown().await;
}

#[tokio::test]
async fn export_metrics_feeds_the_global_recorder_while_the_app_is_served() {
    let recorded = Recorded::default();
    let values = recorded.0.clone();
    metrics::set_global_recorder(recorded).expect("the only global recorder of this binary");
    let app = builder()
        .export_metrics(Duration::from_millis(20))
        .build()
        .unwrap();
    let server = TestServer::start(app.clone()).await;
    let mut client = server.connect("/ops/echo").await;
    client.send_text("hi").await;
    assert_eq!(client.recv_text().await, "hi");
    switchboard_tests::eventually("the export records the connection and its messages", || {
        let values = values.lock().unwrap();
        values.get("switchboard_connections") == Some(&1.0)
            && values.get("switchboard_messages_sent_total") == Some(&1.0)
    })
    .await;
    drop(client);
    server.shutdown().await;
}
