//! WebSocket routes: messages, path parameters and converters, query, extractors (Nexios'
//! routing cases among them).

use switchboard::prelude::*;
use switchboard::testing::{Received, TestServer};

async fn serve(module: &str) -> TestServer {
    TestServer::start(App::builder().only_module(module).build().unwrap()).await
}

/// The first message of a new connection to `path`, as JSON (the client is dropped after).
async fn first_json(server: &TestServer, path: &str) -> Value {
    server.connect(path).await.recv_json().await
}

mod messages {
    use super::*;

    #[ws_route("/echo/text")]
    async fn text(mut ws: WebSocket) -> Result<(), WsError> {
        ws.accept().await?;
        while let Some(text) = ws.receive_text().await? {
            ws.send_text(text).await?;
        }
        Ok(())
    }

    #[ws_route("/echo/json")]
    async fn json(mut ws: WebSocket) -> Result<(), WsError> {
        ws.accept().await?;
        while let Some(value) = ws.receive_json::<Value>().await? {
            ws.send_json(&json!({ "got": value })).await?;
        }
        Ok(())
    }

    #[ws_route("/echo/bytes")]
    async fn bytes(mut ws: WebSocket) -> Result<(), WsError> {
        ws.accept().await?;
        while let Some(bytes) = ws.receive_bytes().await? {
            let mut reversed = bytes.to_vec();
            reversed.reverse();
            ws.send_bytes(reversed).await?;
        }
        Ok(())
    }

    #[ws_route("/echo/stream")]
    async fn stream(mut ws: WebSocket) -> Result<(), WsError> {
        use futures_util::StreamExt;
        ws.accept().await?;
        let mut seen = 0;
        while let Some(message) = ws.next().await {
            seen += 1;
            match message? {
                Message::Text(text) => ws.send_text(format!("{seen}:{text}")).await?,
                Message::Binary(bytes) => {
                    ws.send_text(format!("{seen}:{} bytes", bytes.len()))
                        .await?
                }
            }
        }
        Ok(())
    }

    #[tokio::test]
    async fn text_echo_and_three_sequential_messages_on_one_connection() {
        let server = serve(module_path!()).await;
        let mut client = server.connect("/echo/text").await;
        for text in ["one", "two", "three"] {
            client.send_text(text).await;
            assert_eq!(client.recv_text().await, text);
        }
        drop(client);
        server.shutdown().await;
    }

    #[tokio::test]
    async fn json_round_trip_is_compact_and_keeps_non_ascii_unescaped() {
        let server = serve(module_path!()).await;
        let mut client = server.connect("/echo/json").await;
        client
            .send_json(&json!({"text": "héllo ✓", "n": [1, 2]}))
            .await;
        let reply = client.recv_text().await;
        assert_eq!(
            serde_json::from_str::<Value>(&reply).unwrap(),
            json!({"got": {"text": "héllo ✓", "n": [1, 2]}})
        );
        assert!(
            reply.contains("héllo ✓"),
            "non-ASCII is not escaped: {reply}"
        );
        assert!(!reply.contains(": "), "compact JSON: {reply}");
        drop(client);
        server.shutdown().await;
    }

    #[tokio::test]
    async fn bytes_round_trip() {
        let server = serve(module_path!()).await;
        let mut client = server.connect("/echo/bytes").await;
        client.send_bytes(vec![1u8, 2, 3]).await;
        assert_eq!(client.recv().await, Received::Binary(vec![3, 2, 1]));
        drop(client);
        server.shutdown().await;
    }

    #[tokio::test]
    async fn the_websocket_is_a_stream_of_messages() {
        let server = serve(module_path!()).await;
        let mut client = server.connect("/echo/stream").await;
        client.send_text("a").await;
        assert_eq!(client.recv_text().await, "1:a");
        client.send_bytes(vec![0u8; 5]).await;
        assert_eq!(client.recv_text().await, "2:5 bytes");
        drop(client);
        server.shutdown().await;
    }
}

mod path_params {
    use super::*;

    #[ws_route("/items/{id:int}")]
    async fn item(mut ws: WebSocket, id: u64) -> Result<(), WsError> {
        ws.accept().await?;
        ws.send_json(&json!({ "id": id })).await?;
        Ok(())
    }

    #[ws_route("/users/{user:uuid}/posts/{slug:slug}")]
    async fn post(mut ws: WebSocket, user: uuid::Uuid, slug: String) -> Result<(), WsError> {
        ws.accept().await?;
        ws.send_json(&json!({ "user": user.to_string(), "slug": slug }))
            .await?;
        Ok(())
    }

    #[ws_route("/price/{amount:float}")]
    async fn price(mut ws: WebSocket, amount: f64) -> Result<(), WsError> {
        ws.accept().await?;
        ws.send_json(&json!({ "amount": amount })).await?;
        Ok(())
    }

    #[ws_route("/files/{rest:path}")]
    async fn files(mut ws: WebSocket, rest: String) -> Result<(), WsError> {
        ws.accept().await?;
        ws.send_text(rest).await?;
        Ok(())
    }

    #[ws_route("/rooms/{room}")]
    async fn room(mut ws: WebSocket, room: String) -> Result<(), WsError> {
        ws.accept().await?;
        let params: Vec<String> = ws.path_params().map(|(k, v)| format!("{k}={v}")).collect();
        ws.send_json(&json!({ "room": room, "params": params, "path": ws.path() }))
            .await?;
        Ok(())
    }

    /// A plain `{port}` bound to a number: a value that does not parse is no match either.
    #[ws_route("/ports/{port}")]
    async fn port(mut ws: WebSocket, port: u16) -> Result<(), WsError> {
        ws.accept().await?;
        ws.send_json(&json!({ "port": port })).await?;
        Ok(())
    }

    #[tokio::test]
    async fn converters_parse_into_the_declared_types() {
        let server = serve(module_path!()).await;
        assert_eq!(first_json(&server, "/items/42").await, json!({"id": 42}));
        let user = "123e4567-e89b-12d3-a456-426614174000";
        assert_eq!(
            first_json(&server, &format!("/users/{user}/posts/hello-world_1")).await,
            json!({"user": user, "slug": "hello-world_1"})
        );
        assert_eq!(
            first_json(&server, "/price/3.5").await,
            json!({"amount": 3.5})
        );
        let mut c = server.connect("/files/a/b/c.txt").await;
        assert_eq!(c.recv_text().await, "a/b/c.txt");
        drop(c);
        assert_eq!(
            first_json(&server, "/ports/8080").await,
            json!({"port": 8080})
        );
        server.shutdown().await;
    }

    #[tokio::test]
    async fn a_value_that_fails_its_converter_or_type_is_a_404_without_upgrade() {
        let server = serve(module_path!()).await;
        for path in [
            "/items/abc",
            "/items/-1",
            "/users/not-a-uuid/posts/x",
            "/users/123e4567-e89b-12d3-a456-426614174000/posts/no%20spaces",
            "/price/1.",
            "/ports/99999",
            "/nowhere",
        ] {
            let refused = server.client(path).connect().await.unwrap_err();
            assert_eq!(refused.status, 404, "{path}");
        }
        server.shutdown().await;
    }

    #[tokio::test]
    async fn path_values_are_percent_decoded() {
        let server = serve(module_path!()).await;
        let mut c = server.connect("/rooms/caf%C3%A9%20au%20lait").await;
        assert_eq!(
            c.recv_json::<Value>().await,
            json!({"room": "café au lait", "params": ["room=café au lait"], "path": "/rooms/caf%C3%A9%20au%20lait"})
        );
        drop(c);
        server.shutdown().await;
    }
}

mod shared_suffix {
    use super::*;

    #[ws_route("/ws")]
    async fn root(mut ws: WebSocket) -> Result<(), WsError> {
        ws.accept().await?;
        ws.send_text("root").await
    }

    #[ws_route("/api/ws")]
    async fn api(mut ws: WebSocket) -> Result<(), WsError> {
        ws.accept().await?;
        ws.send_text("api").await
    }

    #[tokio::test]
    async fn two_routes_that_share_a_suffix_reach_their_own_handlers() {
        let server = serve(module_path!()).await;
        assert_eq!(server.connect("/ws").await.recv_text().await, "root");
        assert_eq!(server.connect("/api/ws").await.recv_text().await, "api");
        server.shutdown().await;
    }
}

mod extractors {
    use super::*;
    use serde::Deserialize;
    use std::collections::HashSet;
    use std::sync::Arc;
    use switchboard::axum::extract::{FromRequestParts, Query};
    use switchboard::axum::http::request::Parts;
    use switchboard::axum::http::{HeaderMap, StatusCode};

    #[derive(Deserialize)]
    struct Filter {
        topic: String,
        limit: Option<u32>,
    }

    #[ws_route("/query")]
    async fn query(mut ws: WebSocket, Query(filter): Query<Filter>) -> Result<(), WsError> {
        ws.accept().await?;
        let raw = ws.query().unwrap_or_default().to_owned();
        let topic = ws.query_param("topic");
        ws.send_json(&json!({
            "topic": filter.topic,
            "limit": filter.limit,
            "raw": raw,
            "param": topic,
        }))
        .await
    }

    /// Tokens known to the app, given as state.
    #[derive(Clone)]
    struct Tokens(Arc<HashSet<String>>);

    /// A user's own extractor, reaching the app's state.
    struct User(String);

    impl FromRequestParts<App> for User {
        type Rejection = (StatusCode, &'static str);

        async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
            let State(tokens) = State::<Tokens>::from_request_parts(parts, app)
                .await
                .map_err(|_| (StatusCode::INTERNAL_SERVER_ERROR, "no tokens"))?;
            let token = parts
                .headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .ok_or((StatusCode::UNAUTHORIZED, "missing token"))?;
            if tokens.0.contains(token) {
                Ok(User(format!("user-{token}")))
            } else {
                Err((StatusCode::UNAUTHORIZED, "unknown token"))
            }
        }
    }

    #[ws_route("/private/{room}")]
    async fn private(
        user: User,
        mut ws: WebSocket,
        headers: HeaderMap,
        room: String,
        State(tokens): State<Tokens>,
        events: Events,
        app: App,
    ) -> Result<(), WsError> {
        ws.accept().await?;
        let agent = headers
            .get("x-agent")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        ws.send_json(&json!({
            "user": user.0,
            "room": room,
            "agent": agent,
            "tokens": tokens.0.len(),
            "same_app": events.listener_count("none") == app.events().listener_count("none"),
            "id": ws.id().to_string(),
            "client_known": ws.client().is_some(),
            "header_seen": ws.headers().contains_key("x-agent"),
        }))
        .await
    }

    fn app() -> App {
        let tokens: HashSet<String> = ["secret".to_owned()].into();
        App::builder()
            .only_module(module_path!())
            .state(Tokens(Arc::new(tokens)))
            .build()
            .unwrap()
    }

    #[tokio::test]
    async fn query_parameters_reach_the_handler() {
        let server = TestServer::start(app()).await;
        let mut c = server.connect("/query?topic=rust%20news&limit=5").await;
        assert_eq!(
            c.recv_json::<Value>().await,
            json!({"topic": "rust news", "limit": 5, "raw": "topic=rust%20news&limit=5", "param": "rust news"})
        );
        drop(c);
        server.shutdown().await;
    }

    #[tokio::test]
    async fn an_extractor_rejection_is_its_response_and_the_handler_never_runs() {
        let server = TestServer::start(app()).await;
        let refused = server.client("/query?limit=5").connect().await.unwrap_err();
        assert_eq!(refused.status, 400);
        let refused = server.client("/private/lobby").connect().await.unwrap_err();
        assert_eq!(
            (refused.status.as_u16(), refused.body.as_str()),
            (401, "missing token")
        );
        let refused = server
            .client("/private/lobby")
            .header("authorization", "Bearer wrong")
            .connect()
            .await
            .unwrap_err();
        assert_eq!(
            (refused.status.as_u16(), refused.body.as_str()),
            (401, "unknown token")
        );
        server.shutdown().await;
    }

    #[tokio::test]
    async fn user_extractors_state_headers_and_context_reach_the_handler() {
        let server = TestServer::start(app()).await;
        let mut c = server
            .client("/private/lobby")
            .header("authorization", "Bearer secret")
            .header("x-agent", "tests")
            .connect()
            .await
            .unwrap();
        let reply: Value = c.recv_json().await;
        assert_eq!(reply["user"], "user-secret");
        assert_eq!(reply["room"], "lobby");
        assert_eq!(reply["agent"], "tests");
        assert_eq!(reply["tokens"], 1);
        assert_eq!(reply["same_app"], true);
        assert_eq!(reply["client_known"], true);
        assert_eq!(reply["header_seen"], true);
        assert!(reply["id"].as_str().unwrap().parse::<uuid::Uuid>().is_ok());
        drop(c);
        server.shutdown().await;
    }
}

mod not_upgrade {
    use super::*;

    #[ws_route("/socket")]
    async fn socket(mut ws: WebSocket) -> Result<(), WsError> {
        ws.accept().await
    }

    #[tokio::test]
    async fn a_plain_get_is_told_to_upgrade() {
        let server = serve(module_path!()).await;
        let response = server.get("/socket").await;
        assert_eq!(response.status, 426);
        assert_eq!(response.headers["upgrade"], "websocket");
        let response = server.get("/missing").await;
        assert_eq!(response.status, 404);
        server.shutdown().await;
    }

    #[tokio::test]
    async fn a_client_finishing_its_receive_after_a_close_sees_one_close_frame() {
        let server = serve(module_path!()).await;
        let mut client = server.connect("/socket").await;
        assert_eq!(client.expect_close().await, (1000, String::new()));
        assert_eq!(client.recv().await, Received::Ended);
        drop(client);
        server.shutdown().await;
    }
}
