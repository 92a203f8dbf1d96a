//! Deterministic workloads for instruction counts: `bench/icount.sh` runs this binary under
//! valgrind's callgrind, collecting only inside [`measured`] (the iterations, not the set-up),
//! and divides by the iterations. A noisy machine cannot blur an instruction count.
//!
//! `icount WORKLOAD ITERATIONS`, the workloads:
//!
//! - `group_send_10`, `group_send_1000`: one `group_send` to a group of 10 (1000) members whose
//!   writers run as in a served app (tungstenite framing into sockets that discard the bytes),
//!   until every member has written the message;
//! - `group_burst_100`: 50 `group_send`s to a group of 100 members back to back, then the
//!   writers write them (each takes the whole burst from the ring and writes it at once, as
//!   under load), counted per delivery in `bench/icount.sh` (5,000 per iteration);
//! - `emit_1`: one `emit` to one listener that finishes without suspending;
//! - `read_burst_100`: the server reads 100 of the harness's chat messages from a client that
//!   sent them at once (each read of the connection returns all it is asked for: 16 KiB, the
//!   transport's read);
//! - `read_one_100`: the same, each read returning one message (a client sending at a pace).
//!
//! Run without arguments (as `cargo bench` does), it prints its usage and exits.

use std::hint::black_box;

use futures_util::FutureExt;
use serde_json::json;
use switchboard::__bench::{Detached, Reading};
use switchboard::App;

mod none {}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with("--"))
        .collect();
    let [workload, iterations] = args.as_slice() else {
        eprintln!(
            "usage: icount group_send_10|group_send_1000|group_burst_100|emit_1|read_burst_100|read_one_100 ITERATIONS (bench/icount.sh runs it under callgrind)"
        );
        return;
    };
    let iterations: usize = iterations.parse().expect("ITERATIONS is a number");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let app = App::builder().only_module("icount::none").build().unwrap();
    // The clock stands still: the timer wheel's work would otherwise follow the wall clock
    // (and valgrind's pace), not the code.
    runtime.block_on(async { tokio::time::pause() });
    match workload.as_str() {
        "group_send_10" => group_send(&runtime, &app, 10, iterations),
        "group_send_1000" => group_send(&runtime, &app, 1000, iterations),
        "group_burst_100" => group_burst(&runtime, &app, 100, 50, iterations),
        "emit_1" => emit(&app, iterations),
        "read_burst_100" => read(&runtime, &app, 100, 64 * 1024, iterations),
        "read_one_100" => read(&runtime, &app, 100, client_frame().len(), iterations),
        other => panic!("unknown workload `{other}`"),
    }
}

/// Runs `work`: the only code whose instructions are counted (`--toggle-collect`).
#[inline(never)]
fn measured<R>(work: impl FnOnce() -> R) -> R {
    work()
}

fn group_send(runtime: &tokio::runtime::Runtime, app: &App, members: usize, iterations: usize) {
    let conns = runtime.block_on(members_of(app, members));
    let payload = message();
    // One send first, outside the count: the first frame allocates the writers' buffers.
    runtime.block_on(send_and_write(app, &conns, &payload));
    measured(|| {
        runtime.block_on(async {
            for _ in 0..iterations {
                send_and_write(app, &conns, &payload).await;
            }
        })
    });
    black_box(conns);
}

/// `burst` group sends in a row before any writer runs (the runtime has one thread), then
/// the writers write them.
fn group_burst(
    runtime: &tokio::runtime::Runtime,
    app: &App,
    members: usize,
    burst: usize,
    iterations: usize,
) {
    let conns = runtime.block_on(members_of(app, members));
    let payload = message();
    let send_burst = || async {
        let before = conns[0].written();
        for _ in 0..burst {
            let report = app.channels().group_send("room", &payload).await.unwrap();
            assert_eq!(report.delivered, members);
        }
        while conns.iter().any(|c| c.written() <= before) {
            tokio::task::yield_now().await;
        }
    };
    runtime.block_on(send_burst());
    measured(|| {
        runtime.block_on(async {
            for _ in 0..iterations {
                send_burst().await;
            }
        })
    });
    black_box(conns);
}

/// The server reads `messages` client frames, arriving at most `chunk` bytes per read.
fn read(
    runtime: &tokio::runtime::Runtime,
    app: &App,
    messages: usize,
    chunk: usize,
    iterations: usize,
) {
    let input: Vec<u8> = (0..messages).flat_map(|_| client_frame()).collect();
    let reading = runtime.block_on(Reading::new(app, input, chunk));
    // Once outside the count: the first read allocates the buffers.
    assert_eq!(reading.read_all().0, messages);
    measured(|| {
        runtime.block_on(async {
            for _ in 0..iterations {
                reading.rewind();
                black_box(reading.read_all());
            }
        })
    });
}

/// What the harness's clients send: their chat message as a masked text frame.
fn client_frame() -> Vec<u8> {
    let text = serde_json::to_vec(&message()["message"]).unwrap();
    let mask = [0x12, 0x34, 0x56, 0x78];
    let mut frame = vec![0x81, 0x80 | u8::try_from(text.len()).unwrap()];
    frame.extend_from_slice(&mask);
    frame.extend(text.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// The harness's chat message: a room and a 64-byte padded message.
fn message() -> serde_json::Value {
    json!({
        "room": "r1",
        "message": {"seq": 1, "sender": 0, "t": 1_234_567_890_u64, "pad": "x".repeat(64)}
    })
}

/// Sends once and waits until every member's writer has written the frame.
async fn send_and_write(app: &App, conns: &[Detached], payload: &serde_json::Value) {
    let before = conns[0].written();
    let report = app.channels().group_send("room", payload).await.unwrap();
    assert_eq!(report.delivered, conns.len());
    while conns.iter().any(|c| c.written() <= before) {
        tokio::task::yield_now().await;
    }
}

async fn members_of(app: &App, members: usize) -> Vec<Detached> {
    let mut conns = Vec::with_capacity(members);
    for _ in 0..members {
        let conn = Detached::new(app).await;
        app.channels()
            .add_channel_to_group(&conn.channel, "room")
            .await
            .unwrap();
        conns.push(conn);
    }
    conns
}

fn emit(app: &App, iterations: usize) {
    let _handle = app
        .events()
        .on("bench.event", |n: u64| async move {
            black_box(n);
        })
        .unwrap();
    let events = app.events();
    let emit_once = || {
        let report = events
            .emit(black_box("bench.event"), black_box(7u64))
            .now_or_never()
            .unwrap();
        assert_eq!(report.listeners_executed, 1);
    };
    emit_once();
    measured(|| (0..iterations).for_each(|_| emit_once()));
}
