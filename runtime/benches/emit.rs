//! The cost of `emit`, against a direct call of the same listener through a boxed future.
//!
//! `cargo bench -p switchboard --bench emit`. Listeners here finish without suspending, so each
//! future is polled once (`now_or_never`): neither side pays for a runtime.

use std::future::Future;
use std::hint::black_box;
use std::pin::Pin;

use futures_util::FutureExt;
use switchboard::{App, ListenerHandle};

fn main() {
    divan::main();
}

mod none {}

fn app() -> App {
    App::builder().only_module("emit::none").build().unwrap()
}

fn listen(app: &App, name: &str) -> ListenerHandle {
    app.events()
        .on(name, |n: u64| async move {
            black_box(n);
        })
        .unwrap()
}

/// The baseline: the listener's body behind a boxed future, called directly.
#[divan::bench]
fn direct_boxed_call(bencher: divan::Bencher<'_, '_>) {
    type Boxed = Box<dyn Fn(u64) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;
    let listener: Boxed = Box::new(|n: u64| {
        Box::pin(async move {
            black_box(n);
        })
    });
    bencher.bench_local(|| listener(black_box(7)).now_or_never().unwrap());
}

#[divan::bench(args = [0, 1, 10])]
fn emit_to_listeners(bencher: divan::Bencher<'_, '_>, listeners: usize) {
    let app = app();
    let _handles: Vec<_> = (0..listeners)
        .map(|_| listen(&app, "bench.event"))
        .collect();
    let events = app.events();
    bencher.bench_local(|| {
        events
            .emit(black_box("bench.event"), black_box(7u64))
            .now_or_never()
            .unwrap()
    });
}

/// One listener, with 10,000 other names registered: should cost what the plain case costs.
#[divan::bench]
fn emit_one_listener_among_10k_names(bencher: divan::Bencher<'_, '_>) {
    let app = app();
    let _others: Vec<_> = (0..10_000)
        .map(|i| listen(&app, &format!("other.event{i}")))
        .collect();
    let _mine = listen(&app, "bench.event");
    let events = app.events();
    bencher.bench_local(|| {
        events
            .emit(black_box("bench.event"), black_box(7u64))
            .now_or_never()
            .unwrap()
    });
}

/// One listener, with 1,000 wildcard patterns registered (none matching).
#[divan::bench]
fn emit_one_listener_among_1k_wildcards(bencher: divan::Bencher<'_, '_>) {
    let app = app();
    let _patterns: Vec<_> = (0..1_000)
        .map(|i| listen(&app, &format!("other{i}.*")))
        .collect();
    let _mine = listen(&app, "bench.event");
    let events = app.events();
    bencher.bench_local(|| {
        events
            .emit(black_box("bench.event"), black_box(7u64))
            .now_or_never()
            .unwrap()
    });
}

/// A name matched by one of 1,000 wildcard patterns (the matching list is cached per name).
#[divan::bench]
fn emit_through_a_wildcard_among_1k(bencher: divan::Bencher<'_, '_>) {
    let app = app();
    let _patterns: Vec<_> = (0..1_000)
        .map(|i| listen(&app, &format!("other{i}.*")))
        .collect();
    let _mine = listen(&app, "bench.*");
    let events = app.events();
    bencher.bench_local(|| {
        events
            .emit(black_box("bench.event"), black_box(7u64))
            .now_or_never()
            .unwrap()
    });
}

/// A typed event: the type names it.
#[derive(switchboard::Event, Clone, serde::Serialize, serde::Deserialize)]
#[event("bench.typed")]
struct Tick(u64);

fn listen_typed(app: &App) -> ListenerHandle {
    app.events()
        .on("bench.typed", |tick: Tick| async move {
            black_box(tick.0);
        })
        .unwrap()
}

/// `emit_event(Tick(7))` to listeners of `Tick`...
#[divan::bench(args = [1, 10])]
fn emit_event_typed(bencher: divan::Bencher<'_, '_>, listeners: usize) {
    let app = app();
    let _handles: Vec<_> = (0..listeners).map(|_| listen_typed(&app)).collect();
    let events = app.events();
    bencher.bench_local(|| {
        events
            .emit_event(black_box(Tick(7)))
            .now_or_never()
            .unwrap()
    });
}

/// ...against `emit("bench.typed", Tick(7))` to the same listeners.
#[divan::bench(args = [1, 10])]
fn emit_typed_by_name(bencher: divan::Bencher<'_, '_>, listeners: usize) {
    let app = app();
    let _handles: Vec<_> = (0..listeners).map(|_| listen_typed(&app)).collect();
    let events = app.events();
    bencher.bench_local(|| {
        events
            .emit(black_box("bench.typed"), black_box(Tick(7)))
            .now_or_never()
            .unwrap()
    });
}
