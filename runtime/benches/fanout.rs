//! The hot path of a group message, without the kernel: `group_send` (encode once, append to
//! the group's ring, wake the members) and every member's writer taking the frame and writing
//! it (tungstenite framing into a socket that discards it). Also one frame through one writer.
//!
//! `cargo bench -p switchboard --bench fanout`. Divide a `group_send_delivered` time by the
//! number of members for the cost of one delivery.

use std::hint::black_box;

use serde_json::{Value, json};
use switchboard::__bench::Detached;
use switchboard::App;

fn main() {
    divan::main();
}

mod none {}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn payload() -> Value {
    json!({
        "room": "r1",
        "message": {"seq": 1, "sender": 0, "t": 1_234_567_890_u64, "pad": "x".repeat(64)}
    })
}

/// Waits until every member's writer has written `bytes` in all.
async fn written(members: &[Detached], bytes: usize) {
    while members.iter().map(Detached::written).sum::<usize>() < bytes {
        tokio::task::yield_now().await;
    }
}

#[divan::bench(args = [10, 1000])]
fn group_send_delivered(bencher: divan::Bencher<'_, '_>, members: usize) {
    fan_out(bencher, members, false);
}

/// The same to a recoverable group: each message saved in the history with its position and
/// sent in its envelope (the cost of positions).
#[divan::bench(args = [10, 1000])]
fn group_send_recoverable(bencher: divan::Bencher<'_, '_>, members: usize) {
    fan_out(bencher, members, true);
}

fn fan_out(bencher: divan::Bencher<'_, '_>, members: usize, recoverable: bool) {
    let rt = runtime();
    let mut builder = App::builder().only_module("fanout::none");
    if recoverable {
        builder = builder.recoverable_groups("room");
    }
    let app = builder.build().unwrap();
    let payload = payload();
    let conns: Vec<Detached> = rt.block_on(async {
        let mut conns = Vec::new();
        for _ in 0..members {
            let conn = Detached::new(&app).await;
            app.channels()
                .add_channel_to_group(&conn.channel, "room")
                .await
                .unwrap();
            conns.push(conn);
        }
        // One message first: the frame's size on the wire.
        app.channels().group_send("room", &payload).await.unwrap();
        while conns.iter().any(|conn| conn.written() == 0) {
            tokio::task::yield_now().await;
        }
        conns
    });
    // The first message's frames; an envelope is one byte longer per digit its offset gains
    // (the first offset is 1).
    let per_message = conns.iter().map(Detached::written).sum::<usize>();
    let mut expected = per_message;
    bencher.bench_local(|| {
        rt.block_on(async {
            let report = app.channels().group_send("room", black_box(&payload)).await;
            let report = black_box(report.unwrap());
            let longer = report
                .position
                .map_or(0, |p| p.offset.to_string().len() - 1);
            expected += per_message + members * longer;
            written(&conns, expected).await;
        });
    });
}

#[divan::bench]
fn one_frame_through_a_writer(bencher: divan::Bencher<'_, '_>) {
    let rt = runtime();
    let app = App::builder().only_module("fanout::none").build().unwrap();
    let payload = payload();
    let conn = rt.block_on(Detached::new(&app));
    rt.block_on(async {
        conn.channel.send_json(&payload).await.unwrap();
        while conn.written() == 0 {
            tokio::task::yield_now().await;
        }
    });
    let per_frame = conn.written();
    let mut expected = per_frame;
    bencher.bench_local(|| {
        expected += per_frame;
        rt.block_on(async {
            conn.channel.send_json(black_box(&payload)).await.unwrap();
            written(std::slice::from_ref(&conn), expected).await;
        });
    });
}
