//! Brokers reached securely: Redis over TLS (a CA made for the test, and the platform's trust
//! store refusing a server it does not know), ACL users and passwords (a wrong one is a clear
//! error, not a hang), and no secret in any log line this test binary writes.
//!
//! Every log line of the process, at every level, goes to one buffer (a global subscriber);
//! each test greps all of it for every secret the tests use once it is done.

use std::path::PathBuf;
use std::time::Duration;

use switchboard::broker::Redis;
use switchboard::prelude::*;
use switchboard::testing::{RedisServer, TestClient, TestServer};
use switchboard_tests::{CapturedLogs, captured_logs};

/// The password of the ACL user `app` on every server of these tests.
const SECRET: &str = "s3cret-Pa55word";
/// A password that is not the right one (and must not be printed either).
const WRONG: &str = "wr0ng-Pa55word";

#[ws_route("/room/{name}")]
async fn room(mut ws: WebSocket, name: String, channels: ChannelBox) -> Result<(), WsError> {
    ws.accept().await?;
    let joined = channels.add_channel_to_group(&ws.channel(), &name).await;
    let error = joined.as_ref().err().map(ToString::to_string);
    ws.send_json(&json!({ "subscribed": joined.is_ok(), "error": error }))
        .await?;
    while let Some(message) = ws.receive_json::<Value>().await? {
        let _ = channels.group_send(&name, &message).await;
    }
    Ok(())
}

fn logs() -> &'static CapturedLogs {
    captured_logs()
}

/// Fails when any captured line holds a secret; returns the lines.
fn assert_no_secret_logged() -> String {
    let lines = logs().lines();
    for line in &lines {
        for secret in [SECRET, WRONG] {
            assert!(!line.contains(secret), "a log line holds a secret: {line}");
        }
    }
    lines.join("\n")
}

/// A CA made for this test, a certificate it signed for `127.0.0.1`, and their files.
struct TestCa {
    ca_pem: String,
    cert_file: PathBuf,
    key_file: PathBuf,
    dir: PathBuf,
}

impl Drop for TestCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn test_ca(name: &str) -> TestCa {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "switchboard test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate().unwrap();
    let mut server_params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    server_params
        .subject_alt_names
        .push(SanType::IpAddress([127, 0, 0, 1].into()));
    let server_cert = server_params.signed_by(&server_key, &issuer).unwrap();

    let dir = std::env::temp_dir().join(format!("switchboard-tls-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert_file = dir.join("server.pem");
    let key_file = dir.join("server.key");
    std::fs::write(&cert_file, server_cert.pem()).unwrap();
    std::fs::write(&key_file, server_key.serialize_pem()).unwrap();
    TestCa {
        ca_pem: ca_cert.pem(),
        cert_file,
        key_file,
        dir,
    }
}

async fn serve(broker: Redis) -> TestServer {
    let app = App::builder()
        .only_module(module_path!())
        .broker(broker)
        .build()
        .unwrap();
    TestServer::start(app).await
}

fn broker(url: &str) -> Redis {
    Redis::new(url)
        .unwrap()
        .timeout(Duration::from_millis(500))
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
}

/// Joins `group` and returns the client with the handler's report of the join.
async fn join(server: &TestServer, group: &str) -> (TestClient, Value) {
    let mut client = server.connect(&format!("/room/{group}")).await;
    let joined: Value = client.recv_json().await;
    (client, joined)
}

/// A message sent on one server reaches the group's member on the other.
async fn assert_spans(a: &TestServer, b: &TestServer) {
    let (mut on_a, joined) = join(a, "lobby").await;
    assert_eq!(joined["subscribed"], true, "{joined}");
    let (mut on_b, joined) = join(b, "lobby").await;
    assert_eq!(joined["subscribed"], true, "{joined}");
    on_a.send_json(&json!({"text": "across"})).await;
    let got: Value = on_b.recv_json().await;
    assert_eq!(got["text"], "across");
    let echoed: Value = on_a.recv_json().await;
    assert_eq!(echoed["text"], "across");
}

#[tokio::test]
async fn tls_with_a_private_ca_and_an_acl_user() {
    logs();
    let ca = test_ca("private-ca");
    let Some(redis) = RedisServer::options()
        .tls(&ca.cert_file, &ca.key_file)
        .user("app", SECRET)
        .start()
        .await
    else {
        return;
    };
    let url = redis.tls_url().unwrap();
    // Credentials in the URL on one server, given apart on the other.
    let with_url = broker(&url.replace("rediss://", &format!("rediss://app:{SECRET}@")))
        .tls_root_ca(ca.ca_pem.clone())
        .unwrap();
    assert!(!format!("{with_url:?}").contains(SECRET));
    let apart = broker(&url)
        .user("app")
        .password(SECRET)
        .tls_root_ca(ca.ca_pem.as_bytes())
        .unwrap();
    let a = serve(with_url.clone()).await;
    let b = serve(apart.clone()).await;
    assert_spans(&a, &b).await;
    assert!(with_url.is_connected() && apart.is_connected());
    a.shutdown().await;
    b.shutdown().await;
    assert_no_secret_logged();
}

#[tokio::test]
async fn the_platform_trust_store_refuses_a_server_it_does_not_know() {
    logs();
    let ca = test_ca("unknown-ca");
    let Some(redis) = RedisServer::options()
        .tls(&ca.cert_file, &ca.key_file)
        .user("app", SECRET)
        .start()
        .await
    else {
        return;
    };
    // No `tls_root_ca`: the test CA is in no platform store, so the certificate is refused.
    let url = redis.tls_url().unwrap();
    let refused = broker(&url).user("app").password(SECRET);
    let server = serve(refused.clone()).await;
    let (client, joined) = join(&server, "lobby").await;
    assert_eq!(joined["subscribed"], false, "{joined}");
    let error = joined["error"].as_str().unwrap();
    assert!(
        error.contains("certificate") || error.contains("no connection within"),
        "the join fails with the TLS error: {error}"
    );
    assert!(!refused.is_connected());
    drop(client);
    server.shutdown().await;
    let logged = assert_no_secret_logged();
    assert!(
        logged
            .lines()
            .any(|l| l.contains(&url) && l.contains("Redis")),
        "the failure is logged with the server's address"
    );
}

#[tokio::test]
async fn a_wrong_password_is_a_clear_error_not_a_hang() {
    logs();
    let Some(redis) = RedisServer::options().user("app", SECRET).start().await else {
        return;
    };
    let url = format!("{}?user=app&pass={WRONG}", redis.url());
    let wrong = broker(&url);
    let printed = format!("{wrong:?}");
    assert!(
        printed.contains("pass=***") && !printed.contains(WRONG),
        "{printed}"
    );
    let server = serve(wrong.clone()).await;
    let started = tokio::time::Instant::now();
    let (client, joined) = join(&server, "lobby").await;
    assert_eq!(joined["subscribed"], false, "{joined}");
    let error = joined["error"].as_str().unwrap();
    assert!(error.contains("authentication failed"), "{error}");
    assert!(
        error.contains("pass=***"),
        "the error names the server: {error}"
    );
    assert!(started.elapsed() < Duration::from_secs(5), "not a hang");
    drop(client);
    server.shutdown().await;

    // The right password, from the URL's query on one server and apart on the other.
    let a = serve(broker(&format!("{}?user=app&pass={SECRET}", redis.url()))).await;
    let b = serve(broker(&redis.url()).user("app").password(SECRET)).await;
    assert_spans(&a, &b).await;
    a.shutdown().await;
    b.shutdown().await;

    let logged = assert_no_secret_logged();
    assert!(
        logged
            .lines()
            .any(|l| l.contains("authentication failed") && l.contains("pass=***")),
        "the refusal is logged, with the URL redacted: {logged}"
    );
}

#[tokio::test]
async fn requirepass_servers_take_a_password_alone() {
    logs();
    let Some(redis) = RedisServer::options().password(SECRET).start().await else {
        return;
    };
    let a = serve(broker(&redis.url()).password(SECRET)).await;
    let b = serve(broker(&format!("{}?pass={SECRET}", redis.url()))).await;
    assert_spans(&a, &b).await;
    a.shutdown().await;
    b.shutdown().await;

    // Without a password: refused, with Redis's reason.
    let none = serve(broker(&redis.url())).await;
    let (client, joined) = join(&none, "lobby").await;
    assert_eq!(joined["subscribed"], false, "{joined}");
    let error = joined["error"].as_str().unwrap();
    assert!(
        error.contains("NOAUTH") || error.contains("Authentication"),
        "{error}"
    );
    drop(client);
    none.shutdown().await;
    assert_no_secret_logged();
}
