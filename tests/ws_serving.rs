//! Serving: HTTP routes beside WebSocket routes, connection-scoped listeners, keep-alive,
//! graceful shutdown, route conflicts, and `into_router` inside an axum app.

use std::time::Duration;

use switchboard::axum::routing::{get, post};
use switchboard::prelude::*;
use switchboard::testing::{Received, TestServer};
use switchboard::{ErrorKind, ListenOptions};
use switchboard_tests::{Reports, next};
use tokio::sync::mpsc;

mod http_routes {
    use super::*;
    use switchboard::axum::Json;

    /// Listens to `note` for as long as the connection lives, and forwards what it hears.
    #[ws_route("/notes")]
    async fn notes(mut ws: WebSocket) -> Result<(), WsError> {
        ws.accept().await?;
        let (tx, mut rx) = mpsc::unbounded_channel();
        ws.on("note", move |note: Value| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(note);
            }
        })
        .map_err(|e| WsError::close(1011, e.to_string()))?;
        ws.send_text("listening").await?;
        loop {
            tokio::select! {
                Some(note) = rx.recv() => ws.send_json(&note).await?,
                message = ws.receive() => if message?.is_none() { break },
            }
        }
        Ok(())
    }

    async fn post_note(events: Events, Json(body): Json<Value>) -> Json<Value> {
        let report = events.emit("note", body).await;
        Json(json!({ "listeners": report.listeners_executed }))
    }

    async fn stats(app: App, State(label): State<&'static str>) -> Json<Value> {
        Json(json!({ "connections": app.connection_count(), "label": label }))
    }

    fn app() -> App {
        App::builder()
            .only_module(module_path!())
            .state("from state")
            .max_listeners(1)
            .route("/notify", post(post_note))
            .route("/stats", get(stats))
            .fallback_router(
                switchboard::axum::Router::new().route("/legacy", get(|| async { "legacy" })),
            )
            .build()
            .unwrap()
    }

    #[tokio::test]
    async fn an_http_route_emits_an_event_that_websocket_handlers_hear() {
        let app = app();
        let server = TestServer::start(app.clone()).await;
        let mut first = server.connect("/notes").await;
        let mut second = server.connect("/notes").await;
        assert_eq!(first.recv_text().await, "listening");
        assert_eq!(second.recv_text().await, "listening");
        // Two connection-scoped listeners on one name, past `max_listeners(1)`: they do not count.
        assert_eq!(app.events().listener_count("note"), 2);

        let response = server.post_json("/notify", &json!({"text": "hello"})).await;
        assert_eq!(response.status, 200);
        assert_eq!(response.json::<Value>(), json!({"listeners": 2}));
        assert_eq!(first.recv_json::<Value>().await, json!({"text": "hello"}));
        assert_eq!(second.recv_json::<Value>().await, json!({"text": "hello"}));

        let stats = server.get("/stats").await.json::<Value>();
        assert_eq!(stats, json!({"connections": 2, "label": "from state"}));

        // A connection's listeners leave with it.
        first.close(1000, "").await;
        first.expect_close().await;
        let mut left = 2;
        for _ in 0..500 {
            left = app.events().listener_count("note");
            if left == 1 {
                break;
            }
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert_eq!(left, 1);
        assert_eq!(server.get("/legacy").await.body, "legacy");
        drop(second);
        server.shutdown().await;
    }

    #[test]
    fn a_run_time_listener_outside_a_connection_still_counts() {
        let app = app();
        let _first = app.events().on("note", || async {}).unwrap();
        let error = app
            .events()
            .on_with("note", ListenOptions::new(), || async {})
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::ListenerLimit);
    }
}

mod keepalive {
    use super::*;
    use switchboard::ws::Disconnected;

    #[ws_route("/reading")]
    async fn reading(mut ws: WebSocket) -> Result<(), WsError> {
        ws.accept().await?;
        while ws.receive().await?.is_some() {}
        Ok(())
    }

    /// Busy: does not read until released, then says so.
    #[ws_route("/busy")]
    async fn busy(mut ws: WebSocket, State(release): State<Release>) -> Result<(), WsError> {
        ws.accept().await?;
        release.0.notified().await;
        ws.send_text("still here").await?;
        while ws.receive().await?.is_some() {}
        Ok(())
    }

    #[derive(Clone)]
    struct Release(std::sync::Arc<tokio::sync::Notify>);

    #[on("ws.disconnected", namespace = "switchboard")]
    fn gone(event: Disconnected, State(reports): State<Reports>) {
        let _ = reports
            .0
            .send(json!({"code": event.code, "reason": event.reason}));
    }

    fn app() -> (App, mpsc::UnboundedReceiver<Value>, Release) {
        let (tx, rx) = mpsc::unbounded_channel();
        let release = Release(Default::default());
        let app = App::builder()
            .only_module(module_path!())
            .state(Reports(tx))
            .state(release.clone())
            .ping_interval(Duration::from_millis(30))
            .pong_timeout(Duration::from_millis(60))
            .build()
            .unwrap();
        (app, rx, release)
    }

    #[tokio::test]
    async fn a_client_that_stops_answering_pings_is_closed() {
        let (app, mut reports, _release) = app();
        let server = TestServer::start(app).await;
        // This client never reads, so it never answers a ping.
        let mut silent = server.connect("/reading").await;
        assert_eq!(
            next(&mut reports).await,
            json!({"code": 1011, "reason": "keepalive ping timeout"})
        );
        assert_eq!(
            silent.skip_to_close().await,
            Some((1011, "keepalive ping timeout".into()))
        );
        server.shutdown().await;
    }

    #[tokio::test]
    async fn a_client_that_answers_pings_stays() {
        let (app, mut reports, _release) = app();
        let server = TestServer::start(app).await;
        let mut lively = server.connect("/reading").await;
        // Reading answers the server's pings; several pong timeouts pass without a close.
        assert_eq!(lively.recv_within(Duration::from_millis(400)).await, None);
        lively.close(1000, "done").await;
        assert_eq!(lively.expect_close().await.0, 1000);
        assert_eq!(next(&mut reports).await["code"], 1000);
        server.shutdown().await;
    }

    #[tokio::test]
    async fn a_busy_handler_does_not_get_its_connection_closed() {
        let (app, _reports, release) = app();
        let server = TestServer::start(app).await;
        let mut client = server.connect("/busy").await;
        // Neither side reads for many pong timeouts: the server cannot tell a dead peer from
        // its own handler not reading, so it keeps the connection.
        tokio::time::sleep(Duration::from_millis(400)).await;
        release.0.notify_one();
        assert_eq!(client.recv().await, Received::Text("still here".into()));
        drop(client);
        server.shutdown().await;
    }
}

mod shutdown {
    use super::*;

    #[ws_route("/stay")]
    async fn stay(mut ws: WebSocket, State(reports): State<Reports>) -> Result<(), WsError> {
        ws.accept().await?;
        ws.send_text("in").await?;
        while ws.receive().await?.is_some() {}
        // The handler runs to its end before the server finishes shutting down.
        let _ = reports.0.send(json!({"handler": "done"}));
        Ok(())
    }

    #[tokio::test]
    async fn graceful_shutdown_sends_1001_to_every_open_client_and_waits_for_handlers() {
        let (tx, mut reports) = mpsc::unbounded_channel();
        let app = App::builder()
            .only_module(module_path!())
            .state(Reports(tx))
            .build()
            .unwrap();
        let server = TestServer::start(app).await;
        let mut clients = Vec::new();
        for _ in 0..5 {
            let mut client = server.connect("/stay").await;
            assert_eq!(client.recv_text().await, "in");
            clients.push(client);
        }
        let closes = tokio::spawn(async move {
            let mut codes = Vec::new();
            for client in &mut clients {
                codes.push(client.expect_close().await);
            }
            codes
        });
        server.shutdown().await;
        let codes = closes.await.unwrap();
        assert_eq!(codes, vec![(1001, "server shutting down".to_owned()); 5]);
        let mut done = 0;
        while let Ok(report) = reports.try_recv() {
            assert_eq!(report, json!({"handler": "done"}));
            done += 1;
        }
        assert_eq!(done, 5, "every handler finished before shutdown returned");
    }

    #[tokio::test]
    async fn into_router_serves_inside_an_axum_app_and_its_handle_closes_connections() {
        let (tx, _reports) = mpsc::unbounded_channel();
        let app = App::builder()
            .only_module(module_path!())
            .state(Reports(tx))
            .build()
            .unwrap();
        let (router, shutdown) = app.into_router();
        let router = router.route("/health", get(|| async { "ok" }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let served = tokio::spawn(async move {
            switchboard::axum::serve(listener, router).await.unwrap();
        });
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/stay"))
            .await
            .unwrap();
        use futures_util::StreamExt;
        let first = ws.next().await.unwrap().unwrap();
        assert_eq!(first.to_text().unwrap(), "in");
        let close = tokio::spawn(async move {
            loop {
                match ws.next().await {
                    Some(Ok(tokio_tungstenite::tungstenite::Message::Close(frame))) => {
                        return frame.map(|f| u16::from(f.code));
                    }
                    Some(Ok(_)) => {}
                    _ => return None,
                }
            }
        });
        shutdown.graceful().await;
        assert_eq!(close.await.unwrap(), Some(1001));
        served.abort();
    }
}

mod conflicts {
    use super::*;

    pub(crate) mod same_path {
        use super::*;

        #[ws_route("/dup")]
        async fn first(mut ws: WebSocket) -> Result<(), WsError> {
            ws.accept().await
        }

        #[ws_route("/dup")]
        async fn second(mut ws: WebSocket) -> Result<(), WsError> {
            ws.accept().await
        }
    }

    pub(crate) mod overlapping {
        use super::*;

        #[ws_route("/items/{id:int}")]
        async fn by_id(mut ws: WebSocket, id: u64) -> Result<(), WsError> {
            let _ = id;
            ws.accept().await
        }

        #[ws_route("/items/{name}")]
        async fn by_name(mut ws: WebSocket, name: String) -> Result<(), WsError> {
            let _ = name;
            ws.accept().await
        }
    }

    pub(crate) mod with_http {
        use super::*;

        #[ws_route("/live")]
        async fn live(mut ws: WebSocket) -> Result<(), WsError> {
            ws.accept().await?;
            ws.send_text("websocket").await
        }

        #[ws_route("/items/{name}")]
        async fn item(mut ws: WebSocket, name: String) -> Result<(), WsError> {
            let _ = name;
            ws.accept().await
        }
    }

    fn lines(message: &str) -> Vec<u32> {
        message
            .split("ws_serving.rs:")
            .skip(1)
            .map(|rest| {
                rest.split(|c: char| !c.is_ascii_digit())
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap()
            })
            .collect()
    }

    #[test]
    fn the_same_path_twice_is_a_startup_error_naming_both_places() {
        let error = App::builder()
            .only_module(format!("{}::same_path", module_path!()))
            .build()
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Registration);
        let message = error.to_string();
        assert!(message.contains("`/dup`"), "{message}");
        assert!(
            message.contains("first") && message.contains("second"),
            "{message}"
        );
        assert_eq!(lines(&message).len(), 2, "{message}");
    }

    #[test]
    fn patterns_the_router_cannot_tell_apart_are_an_error_not_a_panic() {
        let error = App::builder()
            .only_module(format!("{}::overlapping", module_path!()))
            .build()
            .unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains("/items/{id:int}") && message.contains("/items/{name}"),
            "{message}"
        );
        assert_eq!(lines(&message).len(), 2, "{message}");
    }

    #[tokio::test]
    async fn an_http_route_may_share_a_websocket_path_and_gets_the_other_methods() {
        let app = App::builder()
            .only_module(format!("{}::with_http", module_path!()))
            .route("/live", post(|| async { "http" }))
            .build()
            .unwrap();
        let server = TestServer::start(app).await;
        let response = server.post_json("/live", &json!({})).await;
        assert_eq!(
            (response.status.as_u16(), response.body.as_str()),
            (200, "http")
        );
        let mut client = server.connect("/live").await;
        assert_eq!(client.recv_text().await, "websocket");
        drop(client);
        server.shutdown().await;
    }

    #[test]
    fn overlapping_http_routes_are_errors() {
        let error = App::builder()
            .only_module(format!("{}::with_http", module_path!()))
            .route("/items/{id}", get(|| async { "http" }))
            .build()
            .unwrap_err();
        let message = error.to_string();
        assert!(message.contains("HTTP route `/items/{id}`"), "{message}");
        assert!(
            message.contains("WebSocket route `/items/{name}`"),
            "{message}"
        );
        let error = App::builder()
            .only_module(format!("{}::with_http", module_path!()))
            .route("/twice", get(|| async { "a" }))
            .route("/twice", post(|| async { "b" }))
            .build()
            .unwrap_err();
        assert!(error.to_string().contains("given twice"), "{error}");
        let error = App::builder()
            .only_module(format!("{}::with_http", module_path!()))
            .route("no-slash", get(|| async { "http" }))
            .build()
            .unwrap_err();
        assert!(error.to_string().contains("must start with `/`"), "{error}");
        // The router panics past 25 captures (found by fuzzing): an error here.
        let many: String = (0..30).map(|i| format!("/{{p{i}}}")).collect();
        let error = App::builder()
            .only_module(format!("{}::with_http", module_path!()))
            .route(&many, get(|| async { "http" }))
            .build()
            .unwrap_err();
        assert!(
            error.to_string().contains("more than 16 captures"),
            "{error}"
        );
    }

    mod properties {
        use proptest::prelude::*;
        use switchboard::App;
        use switchboard::axum::Router;
        use switchboard::axum::routing::get;

        /// Paths of one to four segments: static words, captures, catch-alls.
        fn path() -> impl Strategy<Value = String> {
            proptest::collection::vec(
                prop::sample::select(&["a", "b", "{x}", "{y}", "{*rest}", "{*tail}"][..]),
                1..=4,
            )
            .prop_map(|segments| format!("/{}", segments.join("/")))
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            /// The builder refuses a set of routes exactly when axum would panic on it: the
            /// brute force is to build the axum router itself.
            #[test]
            fn conflicts_are_found_exactly_where_axum_would_panic(
                paths in proptest::collection::btree_set(path(), 1..=4),
            ) {
                let mut builder = App::builder().only_module("ws_serving::conflicts::nothing");
                for p in &paths {
                    builder = builder.route(p, get(|| async {}));
                }
                let refused = builder.build().is_err();
                let panicked = std::panic::catch_unwind(|| {
                    let mut router: Router = Router::new();
                    for p in &paths {
                        router = router.route(p, get(|| async {}));
                    }
                    router
                })
                .is_err();
                prop_assert_eq!(refused, panicked, "{:?}", paths);
            }
        }
    }
}
