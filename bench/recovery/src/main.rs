//! `recovery`: how long a client that comes back on another server of a cluster takes to get
//! what it missed. Against two chat servers sharing one Redis (bench/recovery.sh):
//!
//! ```text
//! recovery --a ws://127.0.0.1:8001/chat/r --b ws://127.0.0.1:8002/chat/r [--missed 100] [--rounds 50]
//! ```
//!
//! Each round: a member on server A reads up to the live end and leaves; a sender on A sends
//! `missed` messages; the member comes back on server B with `?since=EPOCH:OFFSET` and reads
//! until it has all of them. Prints one JSON line: the time from the reconnect's start to the
//! last recovered message (p50, p99, max, in ms), and the messages recovered per round.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn arg(name: &str, default: Option<&str>) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .or_else(|| default.map(str::to_owned))
        .unwrap_or_else(|| panic!("{name} is required"))
}

async fn connect(url: &str) -> Socket {
    tokio_tungstenite::connect_async(url)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"))
        .0
}

async fn next_json(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("a message within 10 s")
            .expect("the connection is open")
            .expect("a frame");
        if let Message::Text(text) = message {
            return serde_json::from_str(text.as_str()).expect("JSON");
        }
    }
}

/// Reads until the join report; returns its position and the envelopes' last offset read.
async fn until_report(socket: &mut Socket) -> (String, u64, usize) {
    let mut last = 0;
    let mut envelopes = 0;
    loop {
        let value = next_json(socket).await;
        if let Some(position) = value.get("position").and_then(Value::as_str) {
            return (position.to_owned(), last, envelopes);
        }
        if let Some(offset) = value.get("offset").and_then(Value::as_u64) {
            last = offset;
            envelopes += 1;
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let (a, b) = (arg("--a", None), arg("--b", None));
    let missed: u64 = arg("--missed", Some("100")).parse().unwrap();
    let rounds: usize = arg("--rounds", Some("50")).parse().unwrap();
    let mut sender = connect(&a).await;
    until_report(&mut sender).await;
    let mut times = Vec::new();
    for round in 0..rounds {
        // The member joins on A and reads to the live end: its position.
        let mut member = connect(&a).await;
        let (position, _, _) = until_report(&mut member).await;
        let (epoch, offset) = position.rsplit_once(':').unwrap();
        let mut last: u64 = offset.parse().unwrap();
        drop(member);
        // What it misses: `missed` messages, each read back by the sender (so they are in
        // the stream before the member returns).
        for n in 0..missed {
            let text = json!({ "round": round, "n": n }).to_string();
            sender.send(Message::text(text)).await.unwrap();
        }
        let mut echoed = 0;
        while echoed < missed {
            if next_json(&mut sender).await.get("offset").is_some() {
                echoed += 1;
            }
        }
        // Back on B, from where it left.
        let started = Instant::now();
        let mut member = connect(&format!("{b}?since={epoch}:{last}")).await;
        let target = last + missed;
        while last < target {
            let value = next_json(&mut member).await;
            if let Some(offset) = value.get("offset").and_then(Value::as_u64) {
                assert_eq!(offset, last + 1, "no gap, no duplicate");
                last = offset;
            } else if value.get("recovery").and_then(Value::as_str) == Some("not_recoverable") {
                panic!("round {round}: not recoverable: {value}");
            }
        }
        times.push(started.elapsed());
        drop(member);
    }
    times.sort();
    let ms = |d: Duration| (d.as_secs_f64() * 1000.0 * 100.0).round() / 100.0;
    let pick = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    println!(
        "{}",
        json!({
            "rounds": rounds,
            "missed_per_round": missed,
            "recovery_ms_p50": ms(pick(0.5)),
            "recovery_ms_p99": ms(pick(0.99)),
            "recovery_ms_max": ms(*times.last().unwrap()),
        })
    );
}
