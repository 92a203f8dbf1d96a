//! The live admin page: its token, the state its WebSocket pushes (without secrets), and the
//! page itself in headless Chromium (driven through ChromeDriver): it loads, shows the
//! connections a test opened, follows them as they close, and is saved as a screenshot.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use switchboard::broker::Redis;
use switchboard::prelude::*;
use switchboard::testing::TestServer;
use switchboard_tests::Browser;

const TOKEN: &str = "admin-t0ken";

#[ws_route("/admin-test/room/{name}")]
async fn room(mut ws: WebSocket, name: String, channels: ChannelBox) -> Result<(), WsError> {
    ws.accept().await?;
    // Without a reachable broker the join is an error, and the member is added here anyway.
    let _ = channels.add_channel_to_group(&ws.channel(), &name).await;
    ws.send_text("joined").await?;
    while ws.receive().await?.is_some() {}
    Ok(())
}

#[on("admin.test")]
fn heard() {}

fn app() -> App {
    App::builder()
        .only_module(module_path!())
        .admin_route("/admin", TOKEN)
        .build()
        .unwrap()
}

#[tokio::test]
async fn the_page_and_its_socket_need_the_token() {
    let server = TestServer::start(app()).await;
    assert_eq!(server.get("/admin").await.status, 401);
    assert_eq!(server.get("/admin?token=wrong").await.status, 401);
    let page = server.get(&format!("/admin?token={TOKEN}")).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Switchboard admin"));
    assert_eq!(page.headers["cache-control"], "no-store");
    // The token moves to a cookie the page's WebSocket carries.
    let cookie = page.headers["set-cookie"].to_str().unwrap();
    assert_eq!(
        cookie,
        format!("switchboard_admin={TOKEN}; Path=/admin; HttpOnly; SameSite=Strict")
    );
    let refused = server.client("/admin/ws").connect().await.unwrap_err();
    assert_eq!(refused.status, 401);
    let with_cookie = server
        .client("/admin/ws")
        .header("cookie", &format!("theme=dark; switchboard_admin={TOKEN}"))
        .connect()
        .await;
    assert!(with_cookie.is_ok(), "the cookie is enough");
    let bad_cookie = server
        .client("/admin/ws")
        .header("cookie", "switchboard_admin=guess")
        .connect()
        .await
        .unwrap_err();
    assert_eq!(bad_cookie.status, 401);
    drop(with_cookie);
    let twice = App::builder()
        .only_module(module_path!())
        .admin_route("/admin", TOKEN)
        .admin_route("/other", TOKEN)
        .build()
        .unwrap_err();
    assert!(
        twice.to_string().contains("admin_route is given twice"),
        "{twice}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn the_socket_pushes_the_state_without_secrets() {
    // A broker whose password must not reach the page (nothing listens on port 1).
    let broker = Redis::new("redis://app:hunter22@127.0.0.1:1/")
        .unwrap()
        .timeout(Duration::from_millis(200));
    let app = App::builder()
        .only_module(module_path!())
        .admin_route("/admin", TOKEN)
        .broker(broker)
        .build()
        .unwrap();
    let server = TestServer::start(app.clone()).await;
    let mut members = Vec::new();
    for name in ["big", "big", "big", "small"] {
        let mut client = server.connect(&format!("/admin-test/room/{name}")).await;
        assert_eq!(client.recv_text().await, "joined");
        members.push(client);
    }
    app.events().emit("admin.test", json!({})).await;
    let mut admin = server
        .client(&format!("/admin/ws?token={TOKEN}"))
        .connect()
        .await
        .unwrap();
    admin.send_json(&json!({"search": "bi"})).await;
    let state: Value = loop {
        let state: Value = admin.recv_json().await;
        if state["matching_groups"] == 1 {
            break state;
        }
    };
    let text = state.to_string();
    assert!(!text.contains("hunter22"), "{text}");
    assert_eq!(
        state["broker"]["name"],
        "redis redis://app:***@127.0.0.1:1/"
    );
    assert_eq!(state["broker"]["up"], false);
    assert_eq!(state["admin_viewers"], 1);
    assert!(
        state["listeners"]
            .as_array()
            .unwrap()
            .contains(&json!(["admin.test", 1]))
    );
    drop(members);
    drop(admin);
    server.shutdown().await;
}

#[tokio::test]
async fn the_page_in_chromium_follows_connections_as_they_open_and_close() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let server = TestServer::start(app()).await;
    let url = format!("http://{}/admin?token={TOKEN}", server.addr());
    browser.command("url", json!({ "url": url })).await;
    browser.until_text("status", "live").await;
    browser.until_text("connections", "0").await;
    // The token left the address bar: the socket authenticated with the page's cookie.
    let search = browser
        .command(
            "execute/sync",
            json!({"script": "return location.search;", "args": []}),
        )
        .await;
    assert_eq!(search, "");

    let mut clients = Vec::new();
    for name in ["lobby", "lobby", "kitchen"] {
        let mut client = server.connect(&format!("/admin-test/room/{name}")).await;
        assert_eq!(client.recv_text().await, "joined");
        clients.push(client);
    }
    browser.until_text("connections", "3").await;
    browser.until_text("groups", "2").await;
    let top = browser.text_of("top-groups").await;
    assert!(top.starts_with("lobby2"), "largest first: {top}");

    // The screenshot, kept with the test's build output.
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    browser.screenshot(&dir.join("admin-page.png")).await;

    for mut client in clients {
        client.close(1000, "bye").await;
        let _ = client.skip_to_close().await;
    }
    browser.until_text("connections", "0").await;
    browser.until_text("groups", "0").await;
    drop(browser);
    server.shutdown().await;
}

/// Requests from the operators' proxy, which sets `x-operator`.
struct Operator;

impl switchboard::axum::extract::FromRequestParts<App> for Operator {
    type Rejection = switchboard::axum::http::StatusCode;

    async fn from_request_parts(
        parts: &mut switchboard::axum::http::request::Parts,
        _: &App,
    ) -> Result<Self, Self::Rejection> {
        match parts.headers.get("x-operator") {
            Some(_) => Ok(Operator),
            None => Err(switchboard::axum::http::StatusCode::UNAUTHORIZED),
        }
    }
}

#[tokio::test]
async fn an_extractor_of_the_app_can_guard_the_page_instead_of_a_token() {
    let app = App::builder()
        .only_module(module_path!())
        .admin_route_with::<Operator>("/ops/admin")
        .build()
        .unwrap();
    let server = TestServer::start(app).await;
    assert_eq!(server.get("/ops/admin").await.status, 401);
    let refused = server.client("/ops/admin/ws").connect().await.unwrap_err();
    assert_eq!(refused.status, 401);
    let mut admin = server
        .client("/ops/admin/ws")
        .header("x-operator", "alice")
        .connect()
        .await
        .unwrap();
    let state: Value = admin.recv_json().await;
    assert_eq!(state["connections"], 0);
    drop(admin);
    server.shutdown().await;
}
