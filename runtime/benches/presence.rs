//! Presence at scale, in one process: what `presence_stats` and one page of `presence` cost in
//! a group of 10k and 100k members, and a join plus a leave of one member with info in such a
//! group (the roster, the user counts and the pending diff; the window's dispatch is not
//! part of it).
//!
//! The same two queries against a cluster's roster in Redis (a `redis-server` of the
//! benchmark's own, on a Unix socket; skipped without one): one round trip each, whatever the
//! group's size.
//!
//! `cargo bench -p switchboard --bench presence`.

use std::hint::black_box;

use serde_json::json;
use switchboard::__bench::Detached;
use switchboard::App;
use switchboard::broker::Redis;
use switchboard::channel::MemberInfo;
use switchboard::testing::RedisServer;

fn main() {
    divan::main();
}

mod none {}

const GROUP: &str = "room";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// An app whose presence group has `members` members (users `u0`.., two connections each).
fn roster(rt: &tokio::runtime::Runtime, members: usize) -> (App, Vec<Detached>) {
    group(rt, members, true)
}

/// An app whose group (a presence group or not) has `members` members.
fn group(rt: &tokio::runtime::Runtime, members: usize, presence: bool) -> (App, Vec<Detached>) {
    let mut builder = App::builder().only_module("presence::none");
    if presence {
        builder = builder.presence_groups(GROUP);
    }
    filled(rt, builder.build().unwrap(), members, presence)
}

fn filled(
    rt: &tokio::runtime::Runtime,
    app: App,
    members: usize,
    presence: bool,
) -> (App, Vec<Detached>) {
    let conns = rt.block_on(async {
        let mut conns = Vec::with_capacity(members);
        for n in 0..members {
            let conn = Detached::new(&app).await;
            if presence {
                let info = MemberInfo::user(format!("u{}", n / 2))
                    .with_data(json!({ "name": format!("user {}", n / 2) }))
                    .unwrap();
                app.channels()
                    .add_channel_to_group_as(&conn.channel, GROUP, info)
                    .await
                    .unwrap();
            } else {
                app.channels()
                    .add_channel_to_group(&conn.channel, GROUP)
                    .await
                    .unwrap();
            }
            conns.push(conn);
        }
        conns
    });
    (app, conns)
}

#[divan::bench(args = [10_000, 100_000], sample_count = 100)]
fn presence_stats(bencher: divan::Bencher<'_, '_>, members: usize) {
    let rt = runtime();
    let (app, _conns) = roster(&rt, members);
    let channels = app.channels();
    bencher.bench_local(|| {
        let stats = rt.block_on(channels.presence_stats(GROUP)).unwrap();
        assert_eq!(stats.connections, members);
        black_box(stats)
    });
}

/// The first page (1000 members, the default page size).
#[divan::bench(args = [10_000, 100_000], sample_count = 100)]
fn presence_page(bencher: divan::Bencher<'_, '_>, members: usize) {
    let rt = runtime();
    let (app, _conns) = roster(&rt, members);
    let channels = app.channels();
    bencher.bench_local(|| {
        let page = rt.block_on(channels.presence(GROUP)).unwrap();
        assert_eq!(page.members.len(), 1000);
        black_box(page)
    });
}

/// One member joins (with info) and leaves again.
#[divan::bench(args = [10_000, 100_000], sample_count = 100)]
fn join_and_leave(bencher: divan::Bencher<'_, '_>, members: usize) {
    let rt = runtime();
    let (app, _conns) = roster(&rt, members);
    let channels = app.channels();
    let one = rt.block_on(Detached::new(&app));
    bencher.bench_local(|| {
        rt.block_on(async {
            let info = MemberInfo::user("visitor");
            channels
                .add_channel_to_group_as(&one.channel, GROUP, info)
                .await
                .unwrap();
            channels
                .remove_channel_from_group(&one.channel, GROUP)
                .await
                .unwrap();
        });
    });
}

/// The same in a group without presence: what a join and a leave cost the group itself.
#[divan::bench(args = [10_000, 100_000], sample_count = 100)]
fn join_and_leave_plain(bencher: divan::Bencher<'_, '_>, members: usize) {
    let rt = runtime();
    let (app, _conns) = group(&rt, members, false);
    let channels = app.channels();
    let one = rt.block_on(Detached::new(&app));
    bencher.bench_local(|| {
        rt.block_on(async {
            channels
                .add_channel_to_group(&one.channel, GROUP)
                .await
                .unwrap();
            channels
                .remove_channel_from_group(&one.channel, GROUP)
                .await
                .unwrap();
        });
    });
}

/// A Redis of its own holding a presence group of `members` members, written there by
/// another server (in a runtime of its own, gone by then: its entries stay until their TTL),
/// and an app on that Redis with no member of its own, to query it: what is measured is
/// Redis's side and one round trip. `None` without `redis-server`.
fn cluster_roster(rt: &tokio::runtime::Runtime, members: usize) -> Option<(RedisServer, App)> {
    let redis = rt.block_on(RedisServer::start())?;
    let app = |redis: &RedisServer| {
        App::builder()
            .only_module("presence::none")
            .presence_groups(GROUP)
            .broker(Redis::new(&redis.url()).unwrap())
            .build()
            .unwrap()
    };
    let other = runtime();
    let (writer, conns) = filled(&other, app(&redis), members, true);
    other.block_on(async {
        while writer
            .channels()
            .presence_stats(GROUP)
            .await
            .unwrap()
            .connections
            < members
        {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    });
    // That server stops without a goodbye (its entries expire after the 30 s TTL).
    std::mem::forget((writer, conns));
    drop(other);
    let reader = app(&redis);
    Some((redis, reader))
}

#[divan::bench(args = [10_000, 100_000], sample_count = 100)]
fn cluster_presence_stats(bencher: divan::Bencher<'_, '_>, members: usize) {
    let rt = runtime();
    let Some((_redis, app)) = cluster_roster(&rt, members) else {
        return;
    };
    let channels = app.channels();
    bencher.bench_local(|| {
        let stats = rt.block_on(channels.presence_stats(GROUP)).unwrap();
        assert_eq!(stats.connections, members);
        black_box(stats)
    });
}

#[divan::bench(args = [10_000, 100_000], sample_count = 100)]
fn cluster_presence_page(bencher: divan::Bencher<'_, '_>, members: usize) {
    let rt = runtime();
    let Some((_redis, app)) = cluster_roster(&rt, members) else {
        return;
    };
    let channels = app.channels();
    bencher.bench_local(|| {
        let page = rt.block_on(channels.presence(GROUP)).unwrap();
        assert_eq!(page.members.len(), 1000);
        black_box(page)
    });
}
