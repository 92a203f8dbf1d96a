//! The handshake is decided by the handler before the upgrade response is sent: accept (with a
//! subprotocol and headers), refuse, or fail; plus origin and connection-cap refusals.

use switchboard::prelude::*;
use switchboard::testing::TestServer;

mod decisions {
    use super::*;

    #[ws_route("/protocol")]
    async fn protocol(mut ws: WebSocket) -> Result<(), WsError> {
        let offered: Vec<String> = ws.subprotocols().map(str::to_owned).collect();
        let chosen = if offered.iter().any(|p| p == "chat.v2") {
            "chat.v2"
        } else {
            "chat.v1"
        };
        ws.accept()
            .subprotocol(chosen)
            .header("x-chosen-by", "handler")
            .await?;
        ws.send_json(&json!({ "offered": offered })).await
    }

    #[ws_route("/members/{room}")]
    async fn members_only(mut ws: WebSocket, room: String) -> Result<(), WsError> {
        match room.as_str() {
            "closed" => ws.close(4003, "members only").await?,
            "busy" => ws.close(close_code::TRY_AGAIN_LATER, "try later").await?,
            "error" => return Err(WsError::close(4004, "no such room")),
            _ => {
                ws.accept().await?;
                ws.send_text(room).await?;
            }
        }
        Ok(())
    }

    #[ws_route("/forgetful")]
    async fn forgetful(_ws: WebSocket) {}

    #[ws_route("/failing")]
    async fn failing(_ws: WebSocket) -> Result<(), std::io::Error> {
        Err(std::io::Error::other("database down"))
    }

    #[ws_route("/panicking")]
    async fn panicking(_ws: WebSocket) {
        panic!("handler bug before accept");
    }

    #[ws_route("/early-read")]
    async fn early_read(mut ws: WebSocket) -> Result<(), WsError> {
        // Receiving before accepting is an error, not a hang: refuse with what it said.
        let error = ws.receive_text().await.unwrap_err();
        ws.close(4000, error.reason()).await
    }

    #[ws_route("/unoffered")]
    async fn unoffered(mut ws: WebSocket) -> Result<(), WsError> {
        ws.accept().subprotocol("not-offered").await
    }

    async fn serve() -> TestServer {
        TestServer::start(App::builder().only_module(module_path!()).build().unwrap()).await
    }

    #[tokio::test]
    async fn the_subprotocol_and_headers_chosen_by_accept_reach_the_client() {
        let server = serve().await;
        let mut client = server
            .client("/protocol")
            .subprotocols(&["chat.v1", "chat.v2"])
            .connect()
            .await
            .unwrap();
        assert_eq!(client.protocol(), Some("chat.v2"));
        assert_eq!(client.response_headers()["x-chosen-by"], "handler");
        assert_eq!(
            client.recv_json::<Value>().await,
            json!({"offered": ["chat.v1", "chat.v2"]})
        );
        drop(client);
        server.shutdown().await;
    }

    #[tokio::test]
    async fn closing_before_accept_refuses_the_handshake() {
        let server = serve().await;
        let refused = server
            .client("/members/closed")
            .connect()
            .await
            .unwrap_err();
        assert_eq!(
            (refused.status.as_u16(), refused.body.as_str()),
            (403, "members only")
        );
        let refused = server.client("/members/busy").connect().await.unwrap_err();
        assert_eq!(
            (refused.status.as_u16(), refused.body.as_str()),
            (503, "try later")
        );
        let refused = server.client("/members/error").connect().await.unwrap_err();
        assert_eq!(
            (refused.status.as_u16(), refused.body.as_str()),
            (403, "no such room")
        );
        let mut welcome = server.connect("/members/lobby").await;
        assert_eq!(welcome.recv_text().await, "lobby");
        drop(welcome);
        server.shutdown().await;
    }

    #[tokio::test]
    async fn a_handler_that_ends_or_panics_before_deciding_is_a_500() {
        let server = serve().await;
        for path in ["/forgetful", "/failing", "/panicking", "/unoffered"] {
            let refused = server.client(path).connect().await.unwrap_err();
            assert_eq!(refused.status, 500, "{path}");
        }
        // The server is still serving.
        let mut ok = server.connect("/members/still-up").await;
        assert_eq!(ok.recv_text().await, "still-up");
        drop(ok);
        server.shutdown().await;
    }

    #[tokio::test]
    async fn receiving_before_accept_is_an_error() {
        let server = serve().await;
        let refused = server.client("/early-read").connect().await.unwrap_err();
        assert_eq!(refused.status, 403);
        assert!(refused.body.contains("accept"), "{}", refused.body);
        server.shutdown().await;
    }
}

mod origins {
    use super::*;

    #[ws_route("/guarded")]
    async fn guarded(mut ws: WebSocket) -> Result<(), WsError> {
        ws.accept().await?;
        ws.send_text("welcome").await
    }

    #[tokio::test]
    async fn origins_outside_the_allow_list_are_refused_with_403() {
        let app = App::builder()
            .only_module(module_path!())
            .allowed_origins(["https://chat.example.com"])
            .build()
            .unwrap();
        let server = TestServer::start(app).await;
        let refused = server
            .client("/guarded")
            .header("origin", "https://evil.example.com")
            .connect()
            .await
            .unwrap_err();
        assert_eq!(refused.status, 403);
        let mut allowed = server
            .client("/guarded")
            .header("origin", "https://chat.example.com")
            .connect()
            .await
            .unwrap();
        assert_eq!(allowed.recv_text().await, "welcome");
        drop(allowed);
        // A client that sends no Origin (not a browser) is let through.
        let mut plain = server.connect("/guarded").await;
        assert_eq!(plain.recv_text().await, "welcome");
        drop(plain);
        server.shutdown().await;
    }

    #[tokio::test]
    async fn by_default_only_pages_of_the_server_itself_may_connect() {
        let app = App::builder().only_module(module_path!()).build().unwrap();
        let server = TestServer::start(app).await;
        // Cross-site WebSocket hijacking: another site's page, with the user's cookie.
        let refused = server
            .client("/guarded")
            .header("origin", "https://evil.example.com")
            .header("cookie", "session=secret")
            .connect()
            .await
            .unwrap_err();
        assert_eq!(refused.status, 403);
        // The server's own page (the test client's Host is the server's address).
        let own = format!("http://{}", server.addr());
        let mut same = server
            .client("/guarded")
            .header("origin", &own)
            .header("cookie", "session=secret")
            .connect()
            .await
            .unwrap();
        assert_eq!(same.recv_text().await, "welcome");
        drop(same);
        // The same host on another port is another origin.
        let other_port = format!("http://127.0.0.1:{}", server.addr().port() + 1);
        let refused = server
            .client("/guarded")
            .header("origin", &other_port)
            .connect()
            .await
            .unwrap_err();
        assert_eq!(refused.status, 403);
        // No Origin: not a browser.
        let mut plain = server.connect("/guarded").await;
        assert_eq!(plain.recv_text().await, "welcome");
        drop(plain);
        server.shutdown().await;
    }

    #[tokio::test]
    async fn other_origins_are_accepted_when_configured() {
        for builder in [
            App::builder().allowed_origins(["https://*.example.com"]),
            App::builder().allow_any_origin(),
        ] {
            let app = builder.only_module(module_path!()).build().unwrap();
            let server = TestServer::start(app).await;
            let mut client = server
                .client("/guarded")
                .header("origin", "https://chat.example.com")
                .header("cookie", "session=secret")
                .connect()
                .await
                .unwrap();
            assert_eq!(client.recv_text().await, "welcome");
            drop(client);
            server.shutdown().await;
        }
    }
}

mod capacity {
    use super::*;

    #[ws_route("/hold")]
    async fn hold(mut ws: WebSocket) -> Result<(), WsError> {
        ws.accept().await?;
        ws.send_text("in").await?;
        while ws.receive().await?.is_some() {}
        Ok(())
    }

    #[tokio::test]
    async fn connections_past_the_cap_are_refused_with_503_until_one_leaves() {
        let app = App::builder()
            .only_module(module_path!())
            .max_connections(2)
            .build()
            .unwrap();
        let server = TestServer::start(app.clone()).await;
        let mut first = server.connect("/hold").await;
        let mut second = server.connect("/hold").await;
        assert_eq!(first.recv_text().await, "in");
        assert_eq!(second.recv_text().await, "in");
        assert_eq!(app.connection_count(), 2);
        let refused = server.client("/hold").connect().await.unwrap_err();
        assert_eq!(refused.status, 503);
        first.close(1000, "leaving").await;
        assert_eq!(first.expect_close().await.0, 1000);
        // The place is given back once the first connection is gone.
        let mut third = None;
        for _ in 0..200 {
            if let Ok(client) = server.client("/hold").connect().await {
                third = Some(client);
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let mut third = third.expect("a place after the first connection left");
        assert_eq!(third.recv_text().await, "in");
        drop((second, third));
        server.shutdown().await;
    }
}
