//! Typed events: a type names its event (`#[derive(Event)]`), `emit_event` needs no name,
//! `#[on(Type)]` listeners take that type; strings keep working beside them; the framework's
//! own events are typed.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchboard::App;
use switchboard::event::names;
use switchboard_tests::{Log, eventually};

fn app_of(module: &str, log: &Log) -> App {
    App::builder()
        .only_module(module)
        .state(log.clone())
        .build()
        .expect("the registrations of this module are valid")
}

mod emit_and_listen {
    use super::*;
    use switchboard::prelude::*;

    #[derive(Event, Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[event("room.message")]
    struct RoomMessage {
        room: String,
        text: String,
    }

    /// Serialisable only: reaches typed listeners as the value itself.
    #[derive(Event, Clone, Serialize)]
    #[event("sent", namespace = "chat")]
    struct Sent {
        id: u64,
        #[serde(skip)]
        handle: std::sync::Arc<u8>,
    }

    #[on(RoomMessage)]
    fn typed(msg: RoomMessage, State(log): State<Log>) {
        log.push(format!("typed {} {}", msg.room, msg.text));
    }

    #[on("room.message")]
    fn by_name(msg: Value, State(log): State<Log>) {
        log.push(format!("by name {}", msg["text"].as_str().unwrap_or("?")));
    }

    #[on(Sent)]
    async fn sent(sent: Sent, State(log): State<Log>) {
        log.push(format!("sent {} {}", sent.id, sent.handle));
    }

    #[on(Sent, namespace = "outer")]
    fn sent_in_view(sent: Sent, State(log): State<Log>) {
        log.push(format!("outer sent {}", sent.id));
    }

    fn message(text: &str) -> RoomMessage {
        RoomMessage {
            room: "lobby".into(),
            text: text.into(),
        }
    }

    #[tokio::test]
    async fn a_typed_emit_reaches_typed_and_string_listeners_and_strings_reach_typed_ones() {
        let log = Log::default();
        let app = app_of(module_path!(), &log);
        let events = app.events();
        let report = events.emit_event(message("hi")).await;
        assert_eq!((report.listeners_executed, report.failed), (2, 0));
        assert_eq!(log.take(), ["typed lobby hi", "by name hi"]);
        // By name, with a value that deserializes into the type: the typed listener runs.
        let report = events
            .emit("room.message", json!({ "room": "lobby", "text": "json" }))
            .await;
        assert_eq!((report.listeners_executed, report.failed), (2, 0));
        assert_eq!(log.take(), ["typed lobby json", "by name json"]);
        // A value that does not fit is that listener's failure, not the others'.
        let report = events
            .emit("room.message", json!({ "text": "no room" }))
            .await;
        assert_eq!((report.listeners_executed, report.failed), (2, 1));
        assert_eq!(log.take(), ["by name no room"]);
    }

    #[tokio::test]
    async fn a_namespaced_type_and_views_name_the_event_as_strings_would() {
        let log = Log::default();
        let app = app_of(module_path!(), &log);
        let events = app.events();
        assert_eq!(<Sent as Event>::NAME, "chat:sent");
        let sent = || Sent {
            id: 7,
            handle: std::sync::Arc::new(1),
        };
        assert_eq!(events.emit_event(sent()).await.listeners_executed, 1);
        assert_eq!(log.take(), ["sent 7 1"]);
        // Through a namespace view, the view's namespace comes first (as for `emit`).
        assert_eq!(
            events
                .namespace("outer")
                .emit_event(sent())
                .await
                .listeners_executed,
            1
        );
        assert_eq!(log.take(), ["outer sent 7"]);
        // The same event by name reaches it too.
        assert_eq!(
            events
                .namespace("chat")
                .emit("sent", sent())
                .await
                .listeners_executed,
            1
        );
        assert_eq!(log.take(), ["sent 7 1"]);
    }

    #[tokio::test]
    async fn spawned_and_cluster_typed_emits() {
        let log = Log::default();
        let app = app_of(module_path!(), &log);
        let events = app.events();
        events.spawn_emit_event(message("spawned")).unwrap();
        eventually("the spawned emit", || log.entries().len() == 2).await;
        assert_eq!(log.take(), ["typed lobby spawned", "by name spawned"]);
        // Without a cluster broker, `emit_cluster_event` is the local emit.
        let report = events.emit_cluster_event(message("cluster")).await;
        assert_eq!(report.local.listeners_executed, 2);
        assert_eq!(report.published, None);
        assert_eq!(log.take(), ["typed lobby cluster", "by name cluster"]);
    }
}

/// The framework's own events, typed: `#[on(Disconnected)] fn f(e: Disconnected)`.
mod framework_events {
    use super::*;
    use switchboard::prelude::*;
    use switchboard::testing::TestServer;
    use switchboard::ws::{Connected, Disconnected};

    #[ws_route("/typed")]
    async fn route(mut ws: WebSocket) -> Result<(), WsError> {
        ws.accept().await?;
        while ws.receive().await?.is_some() {}
        Ok(())
    }

    #[on(Connected)]
    fn opened(e: Connected, State(log): State<Log>) {
        log.push(format!("connected {}", e.path));
    }

    #[on(Disconnected)]
    async fn closed(e: Disconnected, State(log): State<Log>) {
        log.push(format!("disconnected {}", e.code));
    }

    #[tokio::test]
    async fn connection_events_are_typed() {
        assert_eq!(<Connected as Event>::NAME, names::WS_CONNECTED);
        assert_eq!(<Disconnected as Event>::NAME, names::WS_DISCONNECTED);
        assert_eq!(
            <switchboard::ListenerFailed as Event>::NAME,
            names::LISTENER_ERROR
        );
        assert_eq!(
            <switchboard::channel::PresenceJoined as Event>::NAME,
            names::PRESENCE_JOIN
        );
        let log = Log::default();
        let app = app_of(module_path!(), &log);
        let server = TestServer::start(app).await;
        let mut client = server.connect("/typed").await;
        eventually("connected", || log.entries().len() == 1).await;
        client.close(1000, "bye").await;
        eventually("disconnected", || log.entries().len() == 2).await;
        assert_eq!(log.entries(), ["connected /typed", "disconnected 1000"]);
        tokio::time::sleep(Duration::from_millis(1)).await;
        server.shutdown().await;
    }
}

/// `#[once(Type)]`, and the typed `ListenerFailed`.
mod once_and_failures {
    use super::*;
    use switchboard::ListenerFailed;
    use switchboard::prelude::*;

    #[derive(Event, Clone, Serialize, Deserialize)]
    #[event("connection.init")]
    struct Init {
        id: u64,
    }

    #[once(Init)]
    fn first(init: Init, State(log): State<Log>) {
        log.push(format!("first init {}", init.id));
    }

    #[on(Init)]
    fn failing(init: Init) -> Result<(), String> {
        Err(format!("init {} refused", init.id))
    }

    #[on(ListenerFailed)]
    fn failed(e: ListenerFailed, State(log): State<Log>) {
        log.push(format!("failed {} {}", e.event, e.message));
    }

    #[tokio::test]
    async fn once_runs_once_and_failures_arrive_typed() {
        let log = Log::default();
        let app = app_of(module_path!(), &log);
        for id in 1..=2 {
            app.events().emit_event(Init { id }).await;
        }
        eventually("both failures", || log.entries().len() == 3).await;
        let entries = log.entries();
        assert_eq!(entries[0], "first init 1");
        assert_eq!(entries.iter().filter(|e| e.starts_with("first")).count(), 1);
        assert!(
            entries[1..]
                .iter()
                .all(|e| e.starts_with("failed connection.init")),
            "{entries:?}"
        );
        assert!(entries[1].contains("init 1 refused"), "{entries:?}");
    }
}
