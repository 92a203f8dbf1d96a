//! `churn`: connection churn against a server that speaks the chat protocol of the shared
//! harness (a client of `/chat/{room}` joins the room; every JSON text it sends is broadcast to
//! the room). Each round, `--clients` clients (at most `--concurrency` at once) connect to one
//! of `--rooms` rooms, send one message and read one broadcast (or, with `--silent`, just
//! connect and close), then close. After each round: the server's RSS (`/proc/PID/status`),
//! and its `/stats` once it says nothing is left.
//!
//! ```text
//! churn --url ws://127.0.0.1:8000/chat --server-pid PID [--rounds 50] [--clients 2000]
//!       [--rooms 200] [--concurrency 300] [--silent] [--label NAME]
//! ```
//!
//! Prints one JSON line per round: round, connections so far, RSS in KiB, failed clients.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, Clone)]
struct Args {
    url: String,
    server_pid: u32,
    rounds: usize,
    clients: usize,
    rooms: usize,
    concurrency: usize,
    silent: bool,
    label: String,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        url: String::new(),
        server_pid: 0,
        rounds: 50,
        clients: 2000,
        rooms: 200,
        concurrency: 300,
        silent: false,
        label: String::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--silent" {
            args.silent = true;
            continue;
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = |v: &str| v.parse::<usize>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--url" => args.url = value,
            "--server-pid" => args.server_pid = number(&value)? as u32,
            "--rounds" => args.rounds = number(&value)?,
            "--clients" => args.clients = number(&value)?,
            "--rooms" => args.rooms = number(&value)?,
            "--concurrency" => args.concurrency = number(&value)?.max(1),
            "--label" => args.label = value,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if args.url.is_empty() || args.server_pid == 0 {
        return Err("--url and --server-pid are required".into());
    }
    Ok(args)
}

/// The server's resident memory, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// One client's life; `Err` says what went wrong.
async fn client(url: String, silent: bool) -> Result<(), String> {
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .map_err(|e| format!("connect: {e}"))?;
    if !silent {
        let text = json!({"seq": 0, "sender": 0, "t": 0}).to_string();
        ws.send(Message::text(text))
            .await
            .map_err(|e| format!("send: {e}"))?;
        loop {
            match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
                Ok(Some(Ok(Message::Text(_)))) => break,
                Ok(Some(Ok(_))) => continue,
                Ok(Some(Err(e))) => return Err(format!("read: {e}")),
                Ok(None) => return Err("closed before the broadcast".into()),
                Err(_) => return Err("no broadcast within 10 s".into()),
            }
        }
    }
    ws.close(None).await.map_err(|e| format!("close: {e}"))?;
    // Read to the end so the close handshake completes.
    while let Ok(Some(Ok(_))) = tokio::time::timeout(Duration::from_secs(5), ws.next()).await {}
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("churn: {e}");
            std::process::exit(2);
        }
    };
    let permits = Arc::new(Semaphore::new(args.concurrency));
    let failed = Arc::new(AtomicUsize::new(0));
    let mut total = 0usize;
    let start = Instant::now();
    for round in 1..=args.rounds {
        let mut tasks = Vec::with_capacity(args.clients);
        for i in 0..args.clients {
            let permit = permits.clone().acquire_owned().await.expect("semaphore");
            let url = format!("{}/r{}", args.url, (round * args.clients + i) % args.rooms);
            let failed = failed.clone();
            let silent = args.silent;
            tasks.push(tokio::spawn(async move {
                if let Err(e) = client(url, silent).await {
                    if failed.fetch_add(1, Ordering::Relaxed) < 5 {
                        eprintln!("churn: {e}");
                    }
                }
                drop(permit);
            }));
        }
        for task in tasks {
            let _ = task.await;
        }
        total += args.clients;
        // Let the server finish its close handshakes before reading its memory.
        tokio::time::sleep(Duration::from_millis(200)).await;
        println!(
            "{}",
            json!({
                "label": args.label,
                "round": round,
                "connections": total,
                "rss_kib": rss_kib(args.server_pid),
                "failed": failed.load(Ordering::Relaxed),
                "elapsed_s": start.elapsed().as_secs_f64(),
            })
        );
    }
}
