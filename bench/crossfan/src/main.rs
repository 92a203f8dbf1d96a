//! `crossfan`: the chat fan-out load of the shared harness (`wsfan fanout`: N members of one
//! room, S of them sending M messages each, every member counting what arrives), with the
//! members spread over several servers of one cluster. The senders connect to the first
//! `--url`; the other members go round-robin over all of them, so with two servers about half
//! of every message's deliveries cross from one server to the other through Redis.
//!
//! ```text
//! crossfan --url ws://127.0.0.1:8001/chat/r --url ws://127.0.0.1:8002/chat/r \
//!          --subscribers 1000 --senders 10 --messages 200 [--rate 0] [--size 64] \
//!          [--timeout 60] [--server-pid PID]... [--broker-pid PID] [--label NAME]
//! ```
//!
//! Prints one JSON line: expected, delivered, lost, extra, reordered (a sender's sequence
//! number went backwards), deliveries per second (first send to last receipt), latency
//! percentiles (receipt time minus the send time carried in the message; one process, one
//! clock), deliveries per server, and the servers' CPU time over the run.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

#[derive(Debug)]
struct Args {
    urls: Vec<String>,
    subscribers: usize,
    senders: usize,
    messages: u64,
    rate: f64,
    size: usize,
    timeout: f64,
    server_pids: Vec<u32>,
    /// The broker's processes (also counted with the servers): several for a Redis Cluster.
    broker_pids: Vec<u32>,
    label: String,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        urls: Vec::new(),
        subscribers: 1000,
        senders: 10,
        messages: 200,
        rate: 0.0,
        size: 64,
        timeout: 60.0,
        server_pids: Vec::new(),
        broker_pids: Vec::new(),
        label: String::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let number = |v: String| v.parse::<f64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--url" => args.urls.push(value()?),
            "--subscribers" => args.subscribers = number(value()?)? as usize,
            "--senders" => args.senders = number(value()?)? as usize,
            "--messages" => args.messages = number(value()?)? as u64,
            "--rate" => args.rate = number(value()?)?,
            "--size" => args.size = number(value()?)? as usize,
            "--timeout" => args.timeout = number(value()?)?,
            "--server-pid" => args.server_pids.push(number(value()?)? as u32),
            "--broker-pid" => {
                let pid = number(value()?)? as u32;
                args.server_pids.push(pid);
                args.broker_pids.push(pid);
            }
            "--label" => args.label = value()?,
            "-h" | "--help" => return Err(include_str!("main.rs").lines().take(12).collect::<Vec<_>>().join("\n")),
            other => return Err(format!("unknown flag {other} (see --help)")),
        }
    }
    if args.urls.is_empty() {
        return Err("give at least one --url".into());
    }
    if args.senders == 0 || args.senders > args.subscribers {
        return Err("--senders must be between 1 and --subscribers".into());
    }
    Ok(args)
}

/// Nanoseconds since the first call (one clock for senders and readers: one process).
fn now_ns() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// CPU time (user + system) of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return f64::NAN;
    };
    let Some(rest) = stat.rsplit(") ").next() else {
        return f64::NAN;
    };
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(f64::NAN);
    // After the command: state is field 0; utime and stime are fields 11 and 12.
    (ticks(11) + ticks(12)) / 100.0
}

/// The number after `"key":` in `text`.
fn number_after(text: &str, key: &str) -> Option<u64> {
    let at = text.find(key)? + key.len();
    let digits: &str = &text[at..];
    let end = digits.find(|c: char| !c.is_ascii_digit()).unwrap_or(digits.len());
    digits[..end].parse().ok()
}

#[derive(Default)]
struct ReaderStats {
    count: u64,
    latencies: Vec<u64>,
    reordered: u64,
    bad: u64,
    closed: bool,
}

async fn connect(url: &str) -> Result<Ws, String> {
    let host = url
        .strip_prefix("ws://")
        .and_then(|rest| rest.split('/').next())
        .ok_or_else(|| format!("not a ws:// URL: {url}"))?;
    let stream = TcpStream::connect(host).await.map_err(|e| format!("connect {host}: {e}"))?;
    stream.set_nodelay(true).ok();
    let config = WebSocketConfig::default().read_buffer_size(16 * 1024);
    let (ws, _) = tokio_tungstenite::client_async_with_config(url, MaybeTlsStream::Plain(stream), Some(config))
        .await
        .map_err(|e| format!("handshake with {url}: {e}"))?;
    Ok(ws)
}

async fn read(
    mut stream: futures_util::stream::SplitStream<Ws>,
    delivered: Arc<AtomicU64>,
    last_receipt: Arc<AtomicU64>,
    senders: usize,
    mut stop: watch::Receiver<bool>,
) -> ReaderStats {
    let mut stats = ReaderStats::default();
    let mut last_seq = vec![None::<u64>; senders];
    loop {
        let message = tokio::select! {
            biased;
            _ = stop.changed() => break,
            message = stream.next() => message,
        };
        match message {
            Some(Ok(Message::Text(text))) => {
                let now = now_ns();
                let inner = text.find("\"message\"").map_or(text.as_str(), |at| &text[at..]);
                let parsed = (
                    number_after(inner, "\"t\":"),
                    number_after(inner, "\"seq\":"),
                    number_after(inner, "\"sender\":"),
                );
                let (Some(t), Some(seq), Some(sender)) = parsed else {
                    stats.bad += 1;
                    continue;
                };
                stats.count += 1;
                delivered.fetch_add(1, Ordering::Relaxed);
                last_receipt.fetch_max(now, Ordering::Relaxed);
                stats.latencies.push(now.saturating_sub(t));
                if let Some(last) = last_seq.get_mut(sender as usize) {
                    if last.is_some_and(|l| seq < l) {
                        stats.reordered += 1;
                    } else {
                        *last = Some(seq);
                    }
                }
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => {
                stats.closed = true;
                break;
            }
        }
    }
    stats
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let at = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[at.min(sorted.len() - 1)] as f64 / 1e6
}

async fn run(args: Args) -> Result<serde_json::Value, String> {
    now_ns();
    // Senders on the first server; everyone else round-robin over all of them.
    let url_of = |i: usize| {
        if i < args.senders {
            0
        } else {
            (i - args.senders) % args.urls.len()
        }
    };
    let permits = Arc::new(Semaphore::new(64));
    let mut connecting = Vec::new();
    for i in 0..args.subscribers {
        let url = args.urls[url_of(i)].clone();
        let permits = permits.clone();
        connecting.push(tokio::spawn(async move {
            let _permit = permits.acquire_owned().await.expect("open semaphore");
            connect(&url).await
        }));
    }
    let mut sockets = Vec::new();
    for task in connecting {
        sockets.push(task.await.map_err(|e| e.to_string())??);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let delivered = Arc::new(AtomicU64::new(0));
    let last_receipt = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop) = watch::channel(false);
    let mut readers = Vec::new();
    let mut sinks = Vec::new();
    for (i, ws) in sockets.into_iter().enumerate() {
        let (sink, stream) = ws.split();
        readers.push((
            url_of(i),
            tokio::spawn(read(stream, delivered.clone(), last_receipt.clone(), args.senders, stop.clone())),
        ));
        if i < args.senders {
            sinks.push(sink);
        }
    }

    let cpu_before: Vec<f64> = args.server_pids.iter().map(|&p| cpu_seconds(p)).collect();
    let broker_cpu = || args.broker_pids.iter().map(|&p| cpu_seconds(p)).sum::<f64>();
    let broker_before = broker_cpu();
    let first_send = now_ns();
    let pad = "x".repeat(args.size);
    let messages = args.messages;
    let rate = args.rate;
    let mut sending = Vec::new();
    for (sender, mut sink) in sinks.into_iter().enumerate() {
        let pad = pad.clone();
        sending.push(tokio::spawn(async move {
            let start = tokio::time::Instant::now();
            for seq in 0..messages {
                if rate > 0.0 {
                    tokio::time::sleep_until(start + Duration::from_secs_f64(seq as f64 / rate)).await;
                }
                let text = format!(
                    "{{\"seq\":{seq},\"sender\":{sender},\"t\":{},\"pad\":\"{pad}\"}}",
                    now_ns()
                );
                if sink.send(Message::text(text)).await.is_err() {
                    return Err(format!("sender {sender} failed at message {seq}"));
                }
            }
            Ok(sink)
        }));
    }

    let expected = args.messages * args.senders as u64 * args.subscribers as u64;
    let deadline = Instant::now() + Duration::from_secs_f64(args.timeout);
    let mut last_count = 0;
    let mut last_change = Instant::now();
    let end = loop {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let now = delivered.load(Ordering::Relaxed);
        if now >= expected {
            break "complete";
        }
        if now != last_count {
            last_count = now;
            last_change = Instant::now();
        }
        if Instant::now() > deadline {
            break "timeout";
        }
        if last_change.elapsed() > Duration::from_secs(5) && sending.iter().all(|s| s.is_finished()) {
            break "stalled";
        }
    };
    let cpu_after: Vec<f64> = args.server_pids.iter().map(|&p| cpu_seconds(p)).collect();
    let broker_cpu = (!args.broker_pids.is_empty()).then(|| broker_cpu() - broker_before);
    let _ = stop_tx.send(true);
    let mut send_errors = Vec::new();
    let mut keep = Vec::new();
    for task in sending {
        match task.await.map_err(|e| e.to_string())? {
            Ok(sink) => keep.push(sink),
            Err(e) => send_errors.push(e),
        }
    }
    let mut latencies = Vec::new();
    let (mut total, mut reordered, mut bad, mut closed) = (0, 0, 0, 0);
    let mut per_server = vec![0u64; args.urls.len()];
    for (server, reader) in readers {
        let stats = reader.await.map_err(|e| e.to_string())?;
        total += stats.count;
        per_server[server] += stats.count;
        reordered += stats.reordered;
        bad += stats.bad;
        closed += u64::from(stats.closed);
        latencies.extend(stats.latencies);
    }
    drop(keep);
    latencies.sort_unstable();
    let elapsed = (last_receipt.load(Ordering::Relaxed).saturating_sub(first_send)) as f64 / 1e9;
    let server_cpu: f64 = cpu_before.iter().zip(&cpu_after).map(|(a, b)| b - a).sum();
    Ok(json!({
        "label": args.label,
        "servers": args.urls.len(),
        "subscribers": args.subscribers,
        "senders": args.senders,
        "messages": args.messages,
        "rate": args.rate,
        "expected": expected,
        "delivered": total.min(expected),
        "lost": expected.saturating_sub(total),
        "extra": total.saturating_sub(expected),
        "reordered": reordered,
        "bad_frames": bad,
        "closed_early": closed,
        "send_errors": send_errors,
        "end_reason": end,
        "elapsed_s": elapsed,
        "deliveries_per_sec": if elapsed > 0.0 { total as f64 / elapsed } else { 0.0 },
        "deliveries_per_server": per_server,
        "lat_ms": {
            "p50": percentile(&latencies, 50.0),
            "p90": percentile(&latencies, 90.0),
            "p99": percentile(&latencies, 99.0),
            "max": percentile(&latencies, 100.0),
        },
        "server_cpu_s": server_cpu,
        "server_cpu_us_per_delivery": if total > 0 { server_cpu * 1e6 / total as f64 } else { f64::NAN },
        // Broker CPU per message sent (each crosses the broker once per server it reaches).
        "broker_cpu_us_per_message": broker_cpu.map(|cpu| cpu * 1e6 / (args.senders as u64 * args.messages) as f64),
    }))
}

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    match runtime.block_on(run(args)) {
        Ok(report) => println!("{report}"),
        Err(e) => {
            println!("{}", json!({ "error": e }));
            std::process::exit(1);
        }
    }
}
