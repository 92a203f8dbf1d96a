//! Cluster mode: two apps (two servers) sharing one broker server of the test's own, with real
//! clients on both. One suite, run against each broker (Redis, NATS): groups spanning both,
//! groups on one only, `send_to` across, cluster events, cluster-wide membership, and a broker
//! that dies and comes back.

use std::time::Duration;

use switchboard::broker::{Broker, CLUSTER_DOWN, CLUSTER_UP, ClusterDown, ClusterUp, Nats, Redis};
use switchboard::prelude::*;
use switchboard::testing::{NatsServer, RedisCluster, RedisServer, TestClient, TestServer};
use switchboard::{ErrorKind, ws::ConnectionId};
use switchboard_tests::{eventually, until};
use tokio::sync::mpsc;

/// What listeners of the apps saw: `(event name, payload)`.
#[derive(Clone)]
struct Seen(mpsc::UnboundedSender<(String, Value)>);

/// `/room/{name}`: joins group `name`, says `{"joined": id}`, then sends every JSON message it
/// receives to the group (or, for `{"to": id, ..}`, to that channel).
#[ws_route("/room/{name}")]
async fn room(mut ws: WebSocket, name: String, channels: ChannelBox) -> Result<(), WsError> {
    ws.accept().await?;
    let channel = ws.channel();
    let joined = channels.add_channel_to_group(&channel, &name).await;
    ws.send_json(&json!({ "joined": channel.id(), "subscribed": joined.is_ok() }))
        .await?;
    while let Some(message) = ws.receive_json::<Value>().await? {
        if let Some(to) = message.get("to").and_then(Value::as_str) {
            let to: ConnectionId = to.parse().map_err(|_| WsError::close(4000, "bad id"))?;
            let _ = channels.send_to(to, &message).await;
        } else {
            let _ = channels.group_send(&name, &message).await;
        }
    }
    Ok(())
}

#[on("cluster.**")]
fn cluster_event(payload: Value, meta: EventMeta, State(seen): State<Seen>) {
    let _ = seen.0.send((meta.name.to_string(), payload));
}

#[on("switchboard:cluster.*")]
fn broker_event(payload: Value, meta: EventMeta, State(seen): State<Seen>) {
    let _ = seen.0.send((meta.name.to_string(), payload));
}

/// The broker's counters the suite reads, the same for every broker.
#[derive(Debug, Default)]
struct Counts {
    published: u64,
    publish_failures: u64,
    received: u64,
    own_skipped: u64,
    outages: u64,
}

/// A broker the suite runs against: its server (started for the test) and its client.
trait Kind: 'static {
    type Server: Send;
    type Broker: Broker + Clone;
    /// Whether a publish is answered by the broker server (Redis: yes; a NATS publish is
    /// fire-and-forget, so one written as the server dies is lost without being counted).
    const ANSWERED_PUBLISHES: bool;
    /// Whether the broker skips its own messages itself (NATS: the server never sends them).
    const SEES_OWN: bool;
    async fn start() -> Option<Self::Server>;
    fn url(server: &Self::Server) -> String;
    /// A URL where no server listens.
    fn nowhere() -> String;
    fn kill(server: &mut Self::Server);
    async fn resume(server: &mut Self::Server);
    /// A broker for `url`, with short timeouts and `ttl` for the membership.
    fn broker(url: &str, ttl: Option<Duration>) -> Self::Broker;
    fn counts(broker: &Self::Broker) -> Counts;
    fn node_id(broker: &Self::Broker) -> uuid::Uuid;
    fn is_connected(broker: &Self::Broker) -> bool;
    fn subscribed_groups(broker: &Self::Broker) -> Vec<String>;
}

struct RedisKind;

impl Kind for RedisKind {
    type Server = RedisServer;
    type Broker = Redis;
    const ANSWERED_PUBLISHES: bool = true;
    const SEES_OWN: bool = true;
    async fn start() -> Option<RedisServer> {
        RedisServer::start().await
    }
    fn url(server: &RedisServer) -> String {
        server.url()
    }
    fn nowhere() -> String {
        "redis+unix:///nonexistent/switchboard.sock".to_owned()
    }
    fn kill(server: &mut RedisServer) {
        server.kill();
    }
    async fn resume(server: &mut RedisServer) {
        server.resume().await;
    }
    fn broker(url: &str, ttl: Option<Duration>) -> Redis {
        let broker = Redis::new(url)
            .unwrap()
            .timeout(Duration::from_millis(500))
            .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200));
        match ttl {
            Some(ttl) => broker.membership_ttl(ttl),
            None => broker,
        }
    }
    fn counts(broker: &Redis) -> Counts {
        let m = broker.metrics();
        Counts {
            published: m.published,
            publish_failures: m.publish_failures,
            received: m.received,
            own_skipped: m.own_skipped,
            outages: m.outages,
        }
    }
    fn node_id(broker: &Redis) -> uuid::Uuid {
        broker.node_id()
    }
    fn is_connected(broker: &Redis) -> bool {
        broker.is_connected()
    }
    fn subscribed_groups(broker: &Redis) -> Vec<String> {
        broker.subscribed_groups()
    }
}

struct RedisClusterKind;

impl Kind for RedisClusterKind {
    type Server = RedisCluster;
    type Broker = Redis;
    const ANSWERED_PUBLISHES: bool = true;
    const SEES_OWN: bool = true;
    async fn start() -> Option<RedisCluster> {
        RedisCluster::start().await
    }
    fn url(server: &RedisCluster) -> String {
        server.url()
    }
    fn nowhere() -> String {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        format!("redis+cluster://127.0.0.1:{port}")
    }
    fn kill(server: &mut RedisCluster) {
        server.kill_all();
    }
    async fn resume(server: &mut RedisCluster) {
        server.resume_all().await;
    }
    fn broker(url: &str, ttl: Option<Duration>) -> Redis {
        RedisKind::broker(url, ttl)
    }
    fn counts(broker: &Redis) -> Counts {
        RedisKind::counts(broker)
    }
    fn node_id(broker: &Redis) -> uuid::Uuid {
        broker.node_id()
    }
    fn is_connected(broker: &Redis) -> bool {
        broker.is_connected()
    }
    fn subscribed_groups(broker: &Redis) -> Vec<String> {
        broker.subscribed_groups()
    }
}

struct NatsKind;

impl Kind for NatsKind {
    type Server = NatsServer;
    type Broker = Nats;
    const ANSWERED_PUBLISHES: bool = false;
    const SEES_OWN: bool = false;
    async fn start() -> Option<NatsServer> {
        NatsServer::start().await
    }
    fn url(server: &NatsServer) -> String {
        server.url()
    }
    fn nowhere() -> String {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        format!("nats://127.0.0.1:{port}")
    }
    fn kill(server: &mut NatsServer) {
        server.kill();
    }
    async fn resume(server: &mut NatsServer) {
        server.resume().await;
    }
    fn broker(url: &str, ttl: Option<Duration>) -> Nats {
        let broker = Nats::new(url)
            .unwrap()
            .timeout(Duration::from_millis(500))
            .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200));
        match ttl {
            Some(ttl) => broker.membership_ttl(ttl),
            None => broker,
        }
    }
    fn counts(broker: &Nats) -> Counts {
        let m = broker.metrics();
        Counts {
            published: m.published,
            publish_failures: m.publish_failures,
            received: m.received,
            own_skipped: m.own_skipped,
            outages: m.outages,
        }
    }
    fn node_id(broker: &Nats) -> uuid::Uuid {
        broker.node_id()
    }
    fn is_connected(broker: &Nats) -> bool {
        broker.is_connected()
    }
    fn subscribed_groups(broker: &Nats) -> Vec<String> {
        broker.subscribed_groups()
    }
}

struct Node<K: Kind> {
    app: App,
    broker: K::Broker,
    server: TestServer,
    seen: mpsc::UnboundedReceiver<(String, Value)>,
}

async fn node<K: Kind>(url: &str, ttl: Option<Duration>) -> Node<K> {
    let broker = K::broker(url, ttl);
    let (tx, seen) = mpsc::unbounded_channel();
    let app = App::builder()
        .only_module(module_path!())
        .state(Seen(tx))
        .broker(broker.clone())
        .build()
        .unwrap();
    let server = TestServer::start(app.clone()).await;
    Node {
        app,
        broker,
        server,
        seen,
    }
}

/// A broker server of the test's own and two servers using it (`None`: skipped, see
/// `RedisServer::start`).
async fn cluster<K: Kind>() -> Option<(K::Server, Node<K>, Node<K>)> {
    let server = K::start().await?;
    let a = node::<K>(&K::url(&server), None).await;
    let b = node::<K>(&K::url(&server), None).await;
    Some((server, a, b))
}

/// Connects to `/room/{group}` and waits for the join (and its subscription).
async fn join<K: Kind>(node: &Node<K>, group: &str) -> (TestClient, ConnectionId) {
    let mut client = node.server.connect(&format!("/room/{group}")).await;
    let hello: Value = client.recv_json().await;
    assert_eq!(hello["subscribed"], true, "{hello}");
    let id = hello["joined"].as_str().unwrap().parse().unwrap();
    (client, id)
}

/// Waits (bounded) for an event named `name` among what `node`'s listeners saw.
async fn wait_for_event<K: Kind>(node: &mut Node<K>, name: &str) -> Value {
    loop {
        let (seen, payload) = tokio::time::timeout(Duration::from_secs(10), node.seen.recv())
            .await
            .unwrap_or_else(|_| panic!("no `{name}` event within 10 s"))
            .unwrap();
        if seen == name {
            return payload;
        }
    }
}

async fn stop<K: Kind>(nodes: Vec<Node<K>>, clients: Vec<TestClient>) {
    drop(clients);
    for node in nodes {
        node.server.shutdown().await;
    }
}

async fn a_group_spanning_two_servers_gets_every_message_once_and_in_order<K: Kind>() {
    let Some((_server, a, b)) = cluster::<K>().await else {
        return;
    };
    let (mut a1, _) = join(&a, "room").await;
    let (mut a2, _) = join(&a, "room").await;
    let (mut b1, _) = join(&b, "room").await;
    let (mut b2, _) = join(&b, "room").await;

    // One sender on each server, interleaved.
    const MESSAGES: u64 = 200;
    for seq in 0..MESSAGES {
        a1.send_json(&json!({"from": "a", "seq": seq})).await;
        b2.send_json(&json!({"from": "b", "seq": seq})).await;
    }
    for client in [&mut a1, &mut a2, &mut b1, &mut b2] {
        let mut next = [0u64, 0u64];
        for _ in 0..2 * MESSAGES {
            let message: Value = client.recv_json().await;
            let sender = usize::from(message["from"] == "b");
            assert_eq!(message["seq"], next[sender], "per-sender order: {message}");
            next[sender] += 1;
        }
        assert_eq!(next, [MESSAGES, MESSAGES]);
        // Nothing more: no message arrives twice.
        assert!(
            client
                .recv_within(Duration::from_millis(100))
                .await
                .is_none()
        );
    }
    // Each server skipped its own publications and delivered the other's.
    assert_eq!(K::counts(&a.broker).received, MESSAGES);
    assert_eq!(K::counts(&b.broker).received, MESSAGES);
    // Redis sends a server its own publications, which it skips; NATS (`no_echo`) does not.
    let own = if K::SEES_OWN { MESSAGES } else { 0 };
    assert_eq!(K::counts(&a.broker).own_skipped, own);
    assert_eq!(K::counts(&a.broker).publish_failures, 0);
    stop(vec![a, b], vec![a1, a2, b1, b2]).await;
}

async fn a_group_on_one_server_does_not_reach_the_other<K: Kind>() {
    let Some((_server, a, b)) = cluster::<K>().await else {
        return;
    };
    let (mut solo, _) = join(&a, "solo").await;
    let (elsewhere, _) = join(&b, "elsewhere").await;
    assert_eq!(K::subscribed_groups(&a.broker), ["solo"]);
    assert_eq!(K::subscribed_groups(&b.broker), ["elsewhere"]);

    for seq in 0..50 {
        solo.send_json(&json!({ "seq": seq })).await;
    }
    for seq in 0..50 {
        assert_eq!(solo.recv_json::<Value>().await["seq"], seq);
    }
    // The other server was not subscribed, so the broker sent it nothing. (A member gets a
    // message before its publication ends: wait for the count.)
    eventually("50 publications", || K::counts(&a.broker).published == 50).await;
    assert_eq!(K::counts(&b.broker).received, 0);

    // The last member's leave drops the subscription.
    drop(solo);
    eventually("unsubscribed after the last member", || {
        K::subscribed_groups(&a.broker).is_empty()
    })
    .await;
    stop(vec![a, b], vec![elsewhere]).await;
}

async fn a_member_who_joins_then_is_sent_to_at_once_gets_the_message<K: Kind>() {
    let Some((_server, a, b)) = cluster::<K>().await else {
        return;
    };
    let (mut sender, _) = join(&a, "fresh").await;
    for round in 0..20 {
        // `join` returns after the join (and its subscription) is confirmed.
        let group = format!("fresh{round}");
        let (mut listener, _) = join(&b, &group).await;
        let (mut talker, _) = join(&a, &group).await;
        talker.send_json(&json!({ "round": round })).await;
        assert_eq!(listener.recv_json::<Value>().await["round"], round);
        assert_eq!(talker.recv_json::<Value>().await["round"], round);
    }
    sender.send_json(&json!({"last": true})).await;
    assert_eq!(sender.recv_json::<Value>().await["last"], true);
    stop(vec![a, b], vec![sender]).await;
}

async fn send_to_reaches_a_channel_on_the_other_server<K: Kind>() {
    let Some((_server, a, b)) = cluster::<K>().await else {
        return;
    };
    let (mut on_a, _) = join(&a, "x").await;
    let (mut on_b, b_id) = join(&b, "y").await;
    on_a.send_json(&json!({ "to": b_id, "text": "psst" })).await;
    let got: Value = on_b.recv_json().await;
    assert_eq!(got["text"], "psst");
    // Only the addressee got it.
    assert!(on_a.recv_within(Duration::from_millis(100)).await.is_none());

    // From the app's side, too.
    let report = a
        .app
        .channels()
        .send_to(b_id, &json!({"n": 2}))
        .await
        .unwrap();
    assert_eq!(report.published, Some(true));
    assert_eq!(on_b.recv_json::<Value>().await["n"], 2);
    stop(vec![a, b], vec![on_a, on_b]).await;
}

async fn cluster_events_run_on_every_server_and_emit_stays_local<K: Kind>() {
    let Some((_server, mut a, mut b)) = cluster::<K>().await else {
        return;
    };
    // Both are connected (and subscribed to the events channel) once they answer a join.
    let (ca, _) = join(&a, "g").await;
    let (cb, _) = join(&b, "g").await;

    let report = a
        .app
        .events()
        .emit_cluster("cluster.deploy", json!({ "version": 7 }))
        .await;
    assert_eq!(report.published, Some(true));
    assert_eq!(report.local.listeners_executed, 1);
    assert_eq!(wait_for_event(&mut a, "cluster.deploy").await["version"], 7);
    assert_eq!(wait_for_event(&mut b, "cluster.deploy").await["version"], 7);

    // A plain emit runs on its own server only; then another cluster event, which B sees next.
    a.app.events().emit("cluster.local", json!({})).await;
    assert_eq!(wait_for_event(&mut a, "cluster.local").await, json!({}));
    a.app.events().emit_cluster("cluster.after", json!(1)).await;
    let (name, _) = tokio::time::timeout(Duration::from_secs(10), b.seen.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(name, "cluster.after", "B must not have seen cluster.local");

    // Order holds across many.
    for n in 0..100 {
        b.app.events().emit_cluster("cluster.tick", json!(n)).await;
    }
    for n in 0..100 {
        assert_eq!(wait_for_event(&mut a, "cluster.tick").await, json!(n));
    }

    let bad = a.app.events().emit_cluster("bad name", json!(1)).await;
    assert!(bad.local.invalid_name.is_some());
    assert_eq!(bad.published, None, "an invalid name is not sent");
    stop(vec![a, b], vec![ca, cb]).await;
}

fn sorted(mut ids: Vec<ConnectionId>) -> Vec<ConnectionId> {
    ids.sort();
    ids
}

async fn cluster_membership_counts_every_server_and_forgets_dead_ones<K: Kind>() {
    let Some(server) = K::start().await else {
        return;
    };
    let ttl = Duration::from_millis(300);
    let a = node::<K>(&K::url(&server), Some(ttl)).await;
    let b = node::<K>(&K::url(&server), Some(ttl)).await;
    let (a1, id1) = join(&a, "lobby").await;
    let (b1, id2) = join(&b, "lobby").await;
    let (b2, id3) = join(&b, "side").await;

    let channels = a.app.channels();
    let lobby = || async { sorted(channels.cluster_members("lobby").await.unwrap()) };
    let expected = sorted(vec![id1, id2]);
    assert_eq!(until(expected.clone(), lobby).await, expected);
    assert_eq!(
        channels.cluster_groups().await.unwrap(),
        [("lobby".to_owned(), 2), ("side".to_owned(), 1)]
    );
    assert_eq!(
        b.app.channels().cluster_members("side").await.unwrap(),
        [id3]
    );
    // The local answers stay local.
    assert_eq!(channels.groups(), [("lobby".to_owned(), 1)]);

    // Live servers refresh their entries: still there after several TTLs.
    tokio::time::sleep(ttl * 4).await;
    assert_eq!(lobby().await, expected);

    // A leave shows up.
    drop(b1);
    assert_eq!(until(vec![id1], lobby).await, [id1]);
    drop(b2);
    let groups = || async { channels.cluster_groups().await.unwrap() };
    let only_lobby = vec![("lobby".to_owned(), 1)];
    assert_eq!(until(only_lobby.clone(), groups).await, only_lobby);

    // A server that dies (its runtime stops with everything in it: no leave, no cleanup)
    // drops out: with Redis once its entries expire, with NATS once it stops answering.
    let (joined_tx, joined) = tokio::sync::oneshot::channel();
    let (die_tx, die) = tokio::sync::oneshot::channel::<()>();
    let url = K::url(&server);
    let doomed = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let broker = K::broker(&url, Some(ttl));
            let (tx, _seen) = mpsc::unbounded_channel();
            let app = App::builder()
                .only_module(module_path!())
                .state(Seen(tx))
                .broker(broker)
                .build()
                .unwrap();
            let server = TestServer::start(app).await;
            let mut client = server.connect("/room/doomed").await;
            let hello: Value = client.recv_json().await;
            let _ = joined_tx.send(hello["joined"].as_str().unwrap().to_owned());
            let _ = die.await;
            // Nothing of this runtime runs after `block_on` returns.
            std::mem::forget((client, server));
        });
        drop(runtime);
    });
    let doomed_id: ConnectionId = joined.await.unwrap().parse().unwrap();
    let doomed_members = || async { channels.cluster_members("doomed").await.unwrap() };
    assert_eq!(until(vec![doomed_id], doomed_members).await, [doomed_id]);
    die_tx.send(()).unwrap();
    doomed.join().unwrap();
    // Nobody removes its entries.
    assert_eq!(until(vec![], doomed_members).await, []);
    assert_eq!(groups().await, only_lobby);
    stop(vec![a, b], vec![a1]).await;
}

async fn an_outage_keeps_local_delivery_and_cross_server_delivery_resumes<K: Kind>() {
    let Some(mut server) = K::start().await else {
        return;
    };
    let mut a = node::<K>(&K::url(&server), None).await;
    let mut b = node::<K>(&K::url(&server), None).await;
    let (mut a1, _) = join(&a, "room").await;
    let (mut a2, _) = join(&a, "room").await;
    let (mut b1, _) = join(&b, "room").await;
    a1.send_json(&json!({ "n": 0 })).await;
    for client in [&mut a1, &mut a2, &mut b1] {
        assert_eq!(client.recv_json::<Value>().await["n"], 0);
    }

    K::kill(&mut server);
    if K::ANSWERED_PUBLISHES {
        // Sent before the broker noticed: queued for publishing, or refused at once; either
        // way the failure is counted, never silently dropped.
        let unnoticed = a
            .app
            .channels()
            .group_send("room", &json!({ "n": "unnoticed" }))
            .await
            .unwrap();
        assert_eq!(unnoticed.delivered, 2);
        eventually("the failed publish is counted", || {
            K::counts(&a.broker).publish_failures >= 1
        })
        .await;
        for client in [&mut a1, &mut a2] {
            assert_eq!(client.recv_json::<Value>().await["n"], "unnoticed");
        }
    }
    let down = wait_for_event(&mut a, CLUSTER_DOWN).await;
    assert_eq!(down["node"], json!(K::node_id(&a.broker)));
    // The payload is the typed event's (`#[on(ClusterDown)]` listeners get it).
    let typed: ClusterDown = serde_json::from_value(down).unwrap();
    assert_eq!(json!(typed.node), json!(K::node_id(&a.broker)));
    wait_for_event(&mut b, CLUSTER_DOWN).await;
    assert!(!K::is_connected(&a.broker));

    // Local delivery goes on; the failed publish is reported and counted.
    a1.send_json(&json!({ "n": 1 })).await;
    assert_eq!(a1.recv_json::<Value>().await["n"], 1);
    assert_eq!(a2.recv_json::<Value>().await["n"], 1);
    let report = a
        .app
        .channels()
        .group_send("room", &json!({ "n": 2 }))
        .await
        .unwrap();
    assert_eq!(report.delivered, 2);
    assert_eq!(report.published, Some(false));
    let error = report.publish_error.unwrap();
    assert!(error.contains("unreachable"), "{error}");
    let counted = u64::from(K::ANSWERED_PUBLISHES);
    assert!(a.app.channels().metrics().publish_failures > counted);
    assert!(K::counts(&a.broker).publish_failures >= 2 + counted);
    for client in [&mut a1, &mut a2] {
        assert_eq!(client.recv_json::<Value>().await["n"], 2);
    }
    // A join during the outage to a new group: a local member at once, and an error saying
    // why; a join to a subscribed group is fine (it is resubscribed when the broker is back).
    let mut late = a.server.connect("/room/late").await;
    assert_eq!(late.recv_json::<Value>().await["subscribed"], false);
    let (mut a3, _) = join(&a, "room").await;
    // B got nothing of this (at most once across an outage).
    assert!(b1.recv_within(Duration::from_millis(100)).await.is_none());

    K::resume(&mut server).await;
    let up = wait_for_event(&mut a, CLUSTER_UP).await;
    assert_eq!(up["resubscribed"], 2);
    let typed: ClusterUp = serde_json::from_value(up).unwrap();
    assert_eq!(typed.resubscribed, 2);
    wait_for_event(&mut b, CLUSTER_UP).await;
    assert_eq!(K::subscribed_groups(&a.broker), ["late", "room"]);
    assert_eq!(K::subscribed_groups(&b.broker), ["room"]);

    // Across servers again, both ways, without restarting either app.
    a2.send_json(&json!({ "n": 3 })).await;
    b1.send_json(&json!({ "n": 4 })).await;
    for client in [&mut a1, &mut a2, &mut a3, &mut b1] {
        let mut got = vec![
            client.recv_json::<Value>().await["n"].clone(),
            client.recv_json::<Value>().await["n"].clone(),
        ];
        got.sort_by_key(|n| n.as_u64());
        assert_eq!(got, [json!(3), json!(4)]);
    }
    // The group joined during the outage reaches the other server too.
    let (mut b_late, _) = join(&b, "late").await;
    late.send_json(&json!({ "n": 5 })).await;
    assert_eq!(b_late.recv_json::<Value>().await["n"], 5);
    assert_eq!(late.recv_json::<Value>().await["n"], 5);
    assert_eq!(K::counts(&a.broker).outages, 1);
    stop(vec![a, b], vec![a1, a2, a3, b1, late, b_late]).await;
}

async fn an_unreachable_broker_fails_fast_and_is_reported<K: Kind>() {
    // An address nothing listens on.
    let broker = K::broker(&K::nowhere(), None);
    let (tx, seen) = mpsc::unbounded_channel();
    let app = App::builder()
        .only_module(module_path!())
        .state(Seen(tx))
        .broker(broker.clone())
        .build()
        .unwrap();
    let server = TestServer::start(app.clone()).await;
    let mut node = Node::<K> {
        app,
        broker,
        server,
        seen,
    };
    let down = wait_for_event(&mut node, CLUSTER_DOWN).await;
    assert!(
        down["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{down}"
    );
    let mut client = node.server.connect("/room/r").await;
    let hello: Value = client.recv_json().await;
    assert_eq!(hello["subscribed"], false);
    let error = node.app.channels().cluster_groups().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Broker);
    let report = node
        .app
        .channels()
        .group_send("r", &json!(1))
        .await
        .unwrap();
    assert_eq!((report.delivered, report.published), (1, Some(false)));
    assert_eq!(client.recv_json::<Value>().await, json!(1));
    drop(client);
    node.server.shutdown().await;
}

/// The suite, once per broker: `cluster redis::` and `cluster nats::` name the tests.
macro_rules! suite {
    ($module:ident, $kind:ty) => {
        mod $module {
            use super::*;

            #[tokio::test]
            async fn a_group_spanning_two_servers_gets_every_message_once_and_in_order() {
                super::a_group_spanning_two_servers_gets_every_message_once_and_in_order::<$kind>()
                    .await;
            }

            #[tokio::test]
            async fn a_group_on_one_server_does_not_reach_the_other() {
                super::a_group_on_one_server_does_not_reach_the_other::<$kind>().await;
            }

            #[tokio::test]
            async fn a_member_who_joins_then_is_sent_to_at_once_gets_the_message() {
                super::a_member_who_joins_then_is_sent_to_at_once_gets_the_message::<$kind>().await;
            }

            #[tokio::test]
            async fn send_to_reaches_a_channel_on_the_other_server() {
                super::send_to_reaches_a_channel_on_the_other_server::<$kind>().await;
            }

            #[tokio::test]
            async fn cluster_events_run_on_every_server_and_emit_stays_local() {
                super::cluster_events_run_on_every_server_and_emit_stays_local::<$kind>().await;
            }

            #[tokio::test]
            async fn cluster_membership_counts_every_server_and_forgets_dead_ones() {
                super::cluster_membership_counts_every_server_and_forgets_dead_ones::<$kind>()
                    .await;
            }

            #[tokio::test]
            async fn an_outage_keeps_local_delivery_and_cross_server_delivery_resumes() {
                super::an_outage_keeps_local_delivery_and_cross_server_delivery_resumes::<$kind>()
                    .await;
            }

            #[tokio::test]
            async fn an_unreachable_broker_fails_fast_and_is_reported() {
                super::an_unreachable_broker_fails_fast_and_is_reported::<$kind>().await;
            }
        }
    };
}

suite!(redis, RedisKind);
suite!(redis_cluster, RedisClusterKind);
suite!(nats, NatsKind);

/// Faults only a Redis Cluster has: one shard of three dies, a group's slot moves.
mod redis_cluster_faults {
    use super::*;

    /// Two group names whose slots are on different shards.
    fn groups_on_two_shards(cluster: &RedisCluster) -> (String, usize, String, usize) {
        let shard = |group: &str| cluster.shard_of(cluster.keyslot(&format!("{{{group}}}")));
        let first = "room0".to_owned();
        let first_shard = shard(&first);
        for n in 1..100 {
            let other = format!("room{n}");
            let other_shard = shard(&other);
            if other_shard != first_shard {
                return (first, first_shard, other, other_shard);
            }
        }
        panic!("every group on one shard");
    }

    /// Sends from `from` until `to` gets a message (the first ones may be lost while a
    /// subscription moves), then checks that 20 more arrive in order.
    async fn crosses(from: &mut TestClient, to: &mut TestClient, tag: &str) {
        let mut reached = false;
        for attempt in 0..100 {
            from.send_json(&json!({ "probe": tag, "attempt": attempt }))
                .await;
            if to.recv_within(Duration::from_millis(100)).await.is_some() {
                reached = true;
                break;
            }
        }
        assert!(reached, "{tag}: nothing crossed");
        // Drain probes still on their way, then an ordered run.
        while to.recv_within(Duration::from_millis(100)).await.is_some() {}
        while from.recv_within(Duration::from_millis(50)).await.is_some() {}
        for seq in 0..20 {
            from.send_json(&json!({ "run": tag, "seq": seq })).await;
        }
        for seq in 0..20 {
            assert_eq!(to.recv_json::<Value>().await["seq"], seq, "{tag}");
        }
    }

    #[tokio::test]
    async fn a_dead_shard_stops_only_its_groups_and_they_resume() {
        let Some(mut cluster) = RedisCluster::start().await else {
            return;
        };
        let url = cluster.url();
        let mut a = node::<RedisClusterKind>(&url, None).await;
        let b = node::<RedisClusterKind>(&url, None).await;
        let (doomed, doomed_shard, spared, _) = groups_on_two_shards(&cluster);
        let (mut a_doomed, _) = join(&a, &doomed).await;
        let (mut b_doomed, _) = join(&b, &doomed).await;
        let (mut a_spared, _) = join(&a, &spared).await;
        let (mut b_spared, _) = join(&b, &spared).await;
        crosses(&mut a_doomed, &mut b_doomed, "before").await;

        cluster.kill(doomed_shard);
        let down = wait_for_event(&mut a, CLUSTER_DOWN).await;
        assert_eq!(down["shard"], cluster.address(doomed_shard), "{down}");
        let typed: ClusterDown = serde_json::from_value(down.clone()).unwrap();
        assert_eq!(typed.shard, Some(cluster.address(doomed_shard)));
        let error = down["error"].as_str().unwrap();
        assert!(error.contains("unreachable"), "{error}");
        // The connection as a whole is up: the other shards serve.
        assert!(a.broker.is_connected());
        // The spared group keeps crossing servers.
        while a_doomed
            .recv_within(Duration::from_millis(50))
            .await
            .is_some()
        {}
        crosses(&mut a_spared, &mut b_spared, "spared").await;
        // The doomed group: local delivery, a failed publish that says why.
        let report = a
            .app
            .channels()
            .group_send(&doomed, &json!({ "n": "local only" }))
            .await
            .unwrap();
        assert_eq!(report.delivered, 1);
        assert_eq!(report.published, Some(false));
        assert!(
            report
                .publish_error
                .as_deref()
                .unwrap()
                .contains("unreachable"),
            "{report:?}"
        );
        assert_eq!(a_doomed.recv_json::<Value>().await["n"], "local only");
        assert!(
            b_doomed
                .recv_within(Duration::from_millis(100))
                .await
                .is_none()
        );

        cluster.resume(doomed_shard).await;
        let up = wait_for_event(&mut a, CLUSTER_UP).await;
        assert_eq!(up["shard"], cluster.address(doomed_shard), "{up}");
        let typed: ClusterUp = serde_json::from_value(up.clone()).unwrap();
        assert_eq!(typed.shard, Some(cluster.address(doomed_shard)));
        assert_eq!(typed.resubscribed, 1, "the doomed group, subscribed again");
        crosses(&mut a_doomed, &mut b_doomed, "after").await;
        stop(vec![a, b], vec![a_doomed, b_doomed, a_spared, b_spared]).await;
    }

    #[tokio::test]
    async fn a_group_whose_slot_moves_keeps_crossing_servers() {
        let Some(cluster) = RedisCluster::start().await else {
            return;
        };
        let url = cluster.url();
        let a = node::<RedisClusterKind>(&url, None).await;
        let b = node::<RedisClusterKind>(&url, None).await;
        let (mut on_a, _) = join(&a, "moving").await;
        let (mut on_b, _) = join(&b, "moving").await;
        crosses(&mut on_a, &mut on_b, "before").await;
        let slot = cluster.keyslot("{moving}");
        let from = cluster.shard_of(slot);
        cluster.move_slot(slot, (from + 1) % 3);
        assert_eq!(cluster.shard_of(slot), (from + 1) % 3);
        // Redis unsubscribed the servers from the moved slot's channel; they follow it.
        crosses(&mut on_a, &mut on_b, "a to b after").await;
        crosses(&mut on_b, &mut on_a, "b to a after").await;
        stop(vec![a, b], vec![on_a, on_b]).await;
    }
}

/// Run on its own (usually without `SWITCHBOARD_REDIS_URL`), and as the child of
/// `the_broker_comes_from_the_environment_only_when_asked` (with it set to something that is
/// not a URL): a plain build never reads the variable; `broker_from_env` does.
#[test]
fn child_builds_with_the_variable_it_was_given() {
    let plain = App::builder().only_module("cluster::nothing").build();
    assert!(plain.is_ok(), "a plain build never reads the environment");
    let from_env = App::builder()
        .only_module("cluster::nothing")
        .broker_from_env()
        .build();
    match std::env::var("SWITCHBOARD_REDIS_URL").as_deref() {
        Ok("not a url") => {
            let e = from_env.expect_err("the variable is read");
            assert_eq!(e.kind(), ErrorKind::Config);
            assert!(e.to_string().contains("invalid Redis URL"), "{e}");
        }
        _ => assert!(from_env.is_ok()),
    }
}

#[test]
fn the_broker_comes_from_the_environment_only_when_asked() {
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_builds_with_the_variable_it_was_given",
            "--test-threads=1",
        ])
        .env("SWITCHBOARD_REDIS_URL", "not a url")
        .env_remove("SWITCHBOARD_BROKER_URL")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&child.stdout);
    assert!(child.status.success(), "{stdout}");
    assert!(stdout.contains("1 passed"), "{stdout}");
}
