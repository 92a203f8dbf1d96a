//! The bus at run time: closures, handles, namespaces, wildcards, limits, metrics, background
//! emits and timeouts. These apps keep no macro registration (`only_module` of an empty module).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchboard::prelude::*;
use switchboard::{ErrorKind, ListenOptions};
use switchboard_tests::Log;

mod empty {}

fn app() -> App {
    App::builder()
        .only_module("events_runtime::empty")
        .build()
        .unwrap()
}

#[tokio::test]
async fn closures_stay_for_the_life_of_the_app_until_turned_off() {
    let app = app();
    let log = Log::default();
    // The handle is dropped at once: the listener stays, as in Nexios.
    let _ = app.events().on("ping", log.listener("ignored")).unwrap();
    let kept = app.events().on("ping", log.listener("kept")).unwrap();
    assert_eq!(app.events().listener_count("ping"), 2);
    assert_eq!(app.events().emit("ping", "1").await.listeners_executed, 2);
    assert!(kept.off());
    assert!(!kept.off(), "removed once");
    assert_eq!(app.events().emit("ping", "2").await.listeners_executed, 1);
    assert_eq!(log.take(), ["ignored 1", "kept 1", "ignored 2"]);
    assert_eq!(app.events().listener_count("ping"), 1);
}

#[tokio::test]
async fn a_drop_guard_removes_its_listener_when_dropped() {
    let app = app();
    let log = Log::default();
    let guard = app
        .events()
        .on("scoped", log.listener("a"))
        .unwrap()
        .drop_guard();
    assert_eq!(guard.handle().pattern(), "scoped");
    app.events().emit("scoped", "x").await;
    drop(guard);
    assert_eq!(app.events().emit("scoped", "y").await.listeners_executed, 0);
    assert_eq!(log.take(), ["a x"]);
    assert_eq!(app.events().listener_count("scoped"), 0);
}

#[tokio::test]
async fn closures_take_extractors_and_the_event_meta_like_macro_listeners() {
    #[derive(Clone)]
    struct Greeting(&'static str);
    let app = App::builder()
        .only_module("events_runtime::empty")
        .state(Greeting("hi"))
        .build()
        .unwrap();
    let log = Log::default();
    let l = log.clone();
    app.events()
        .on(
            "chat.*",
            move |meta: EventMeta,
                  message: Value,
                  State(greeting): State<Greeting>,
                  events: Events| {
                let log = l.clone();
                async move {
                    log.push(format!("{} {} {message}", greeting.0, meta.name));
                    assert!(events.has_listeners(&meta.name));
                }
            },
        )
        .unwrap();
    app.events().emit("chat.joined", "ada").await;
    app.events().emit("chat.left", "bob").await;
    assert_eq!(
        log.take(),
        [r#"hi chat.joined "ada""#, r#"hi chat.left "bob""#]
    );
}

/// An extractor of the app's own that cannot always build its value.
struct SessionUser;

impl switchboard::FromEventContext for SessionUser {
    fn from_event_context(
        _: &mut switchboard::EventContext<'_>,
    ) -> Result<Self, switchboard::Error> {
        Err(switchboard::Error::other("no user in this session"))
    }
}

#[tokio::test]
async fn an_extractor_of_the_apps_own_fails_its_listener_with_its_message() {
    let app = app();
    let log = Log::default();
    let l = log.clone();
    app.events()
        .on(
            "switchboard:listener.error",
            move |e: switchboard::ListenerFailed| {
                let l = l.clone();
                async move { l.push(format!("{} {}", e.kind, e.message)) }
            },
        )
        .unwrap();
    app.events()
        .on("needs.user", |_: SessionUser| async {})
        .unwrap();
    let report = app.events().emit("needs.user", ()).await;
    assert_eq!((report.listeners_executed, report.failed), (1, 1));
    assert_eq!(log.take(), ["payload no user in this session"]);
}

#[tokio::test]
async fn typed_closures_get_the_payload_and_zero_argument_closures_none() {
    #[derive(Clone, Serialize, Deserialize)]
    struct Joined {
        user: String,
    }
    let app = app();
    let log = Log::default();
    let (l1, l2) = (log.clone(), log.clone());
    let _typed = app
        .events()
        .on("user.joined", move |joined: Joined| {
            let log = l1.clone();
            async move { log.push(format!("typed {}", joined.user)) }
        })
        .unwrap();
    let _bare = app
        .events()
        .on("user.joined", move || {
            let log = l2.clone();
            async move { log.push("bare") }
        })
        .unwrap();
    app.events()
        .emit("user.joined", Joined { user: "ada".into() })
        .await;
    app.events()
        .emit("user.joined", json!({"user": "bob"}))
        .await;
    assert_eq!(log.take(), ["typed ada", "bare", "typed bob", "bare"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_time_once_listener_runs_exactly_once_under_concurrent_emits() {
    let app = app();
    let runs = Arc::new(AtomicUsize::new(0));
    let counter = runs.clone();
    let handle = app
        .events()
        .once("init", move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async {}
        })
        .unwrap();
    let barrier = Arc::new(tokio::sync::Barrier::new(50));
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (app, barrier) = (app.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                app.events().emit("init", ()).await.listeners_executed
            })
        })
        .collect();
    let mut executed = 0;
    for task in tasks {
        executed += task.await.unwrap();
    }
    assert_eq!((executed, runs.load(Ordering::SeqCst)), (1, 1));
    assert!(!handle.off(), "a once listener that ran is already gone");
}

#[tokio::test]
async fn priorities_and_registration_order_apply_to_closures() {
    let app = app();
    let log = Log::default();
    let _low = app
        .events()
        .on_with(
            "e",
            ListenOptions::new().priority(Priority::Low),
            log.listener("low"),
        )
        .unwrap();
    let _first = app.events().on("e", log.listener("first")).unwrap();
    let _high = app
        .events()
        .on_with(
            "e",
            ListenOptions::new().priority(Priority::High),
            log.listener("high"),
        )
        .unwrap();
    let _second = app.events().on("e", log.listener("second")).unwrap();
    app.events().emit("e", "").await;
    assert_eq!(log.take(), ["high ", "first ", "second ", "low "]);
}

#[tokio::test]
async fn a_hundred_listeners_all_run_and_max_listeners_refuses_the_next() {
    let app = app();
    let count = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    for _ in 0..100 {
        let count = count.clone();
        handles.push(
            app.events()
                .on("crowded", move || {
                    count.fetch_add(1, Ordering::SeqCst);
                    async {}
                })
                .unwrap(),
        );
    }
    let report = app.events().emit("crowded", ()).await;
    assert_eq!(report.listeners_executed, 100);
    assert_eq!(count.load(Ordering::SeqCst), 100);
    let error = app.events().on("crowded", || async {}).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::ListenerLimit);
    assert!(
        error.to_string().contains("max_listeners is 100"),
        "{error}"
    );
    // Another name is not affected, and a freed slot can be used again.
    let _other = app.events().on("quiet", || async {}).unwrap();
    assert!(handles.pop().unwrap().off());
    let _again = app.events().on("crowded", || async {}).unwrap();
}

#[tokio::test]
async fn max_listeners_is_configurable() {
    let app = App::builder()
        .only_module("events_runtime::empty")
        .max_listeners(2)
        .build()
        .unwrap();
    let _a = app.events().on("x", || async {}).unwrap();
    let _b = app.events().on("x", || async {}).unwrap();
    assert_eq!(
        app.events().on("x", || async {}).unwrap_err().kind(),
        ErrorKind::ListenerLimit
    );
}

#[tokio::test]
async fn invalid_names_are_errors() {
    let app = app();
    for bad in ["", "a b", "a..b", "chat.a**b", "***", "é"] {
        let error = app.events().on(bad, || async {}).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidName, "{bad:?}: {error}");
    }
    let error = app.events().namespace("").on("x", || async {}).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidName);
}

#[tokio::test]
async fn emitting_an_invalid_name_is_refused_the_same_way_by_emit_and_emit_cluster() {
    let app = app();
    let _all = app.events().on("**", || async {}).unwrap();
    for bad in ["", "a b", "a..b", "chat.*", "é"] {
        let report = app.events().emit(bad, ()).await;
        assert_eq!(report.listeners_executed, 0, "{bad:?}");
        let why = report.invalid_name.expect("refused");
        assert!(why.starts_with("invalid event name"), "{bad:?}: {why}");
        let cluster = app.events().emit_cluster(bad, ()).await;
        assert_eq!(cluster.local.invalid_name, Some(why), "{bad:?}");
        assert_eq!(
            (cluster.local.listeners_executed, cluster.published),
            (0, None)
        );
    }
    let fine = app.events().emit("chat.message", ()).await;
    assert_eq!((fine.listeners_executed, fine.invalid_name), (1, None));
}

#[tokio::test]
async fn remove_all_listeners_and_event_names() {
    let app = app();
    app.events().on("a", || async {}).unwrap();
    app.events().on("a", || async {}).unwrap();
    app.events().on("b.*", || async {}).unwrap();
    assert_eq!(app.events().event_names(), ["a", "b.*"]);
    assert_eq!(app.events().remove_all_listeners("a"), 2);
    assert_eq!(app.events().emit("a", ()).await.listeners_executed, 0);
    assert_eq!(app.events().remove_all_listeners("b.*"), 1);
    assert!(app.events().event_names().is_empty());
}

#[tokio::test]
async fn namespace_views_register_and_emit_inside_their_namespace() {
    let app = app();
    let log = Log::default();
    let ws = app.events().namespace("websocket");
    let _h = ws.on("message.received", log.listener("ns")).unwrap();
    assert_eq!(app.events().listener_count("websocket:message.received"), 1);
    ws.emit("message.received", "view").await;
    app.events()
        .emit("websocket:message.received", "full")
        .await;
    app.events().emit("message.received", "bare").await;
    assert_eq!(log.take(), ["ns view", "ns full"]);
}

#[tokio::test]
async fn wildcards_match_whole_segments_with_matching_delimiters() {
    let app = app();
    let log = Log::default();
    let _one = app.events().on("chat.*", log.listener("one")).unwrap();
    let _ns = app.events().on("websocket:**", log.listener("ns")).unwrap();
    for name in [
        "chat.message",
        "chat.message.edit",
        "chat:message",
        "websocket",
        "websocket:message.received",
        "websocket.message",
    ] {
        app.events().emit(name, name).await;
    }
    assert_eq!(
        log.take(),
        [
            "one chat.message",
            "ns websocket",
            "ns websocket:message.received"
        ]
    );
    let _all = app.events().on("**", log.listener("all")).unwrap();
    app.events().emit("anything.at:all", "x").await;
    assert_eq!(log.take(), ["all x"]);
}

#[tokio::test]
async fn wildcard_and_exact_listeners_interleave_and_each_runs_once() {
    let app = app();
    let log = Log::default();
    let _w1 = app
        .events()
        .on("room.*", log.listener("wild normal"))
        .unwrap();
    let _e1 = app
        .events()
        .on_with(
            "room.message",
            ListenOptions::new().priority(Priority::High),
            log.listener("exact high"),
        )
        .unwrap();
    let _e2 = app
        .events()
        .on("room.message", log.listener("exact normal"))
        .unwrap();
    let _w2 = app
        .events()
        .on_with(
            "**",
            ListenOptions::new().priority(Priority::Highest),
            log.listener("all highest"),
        )
        .unwrap();
    let report = app.events().emit("room.message", "m").await;
    assert_eq!(report.listeners_executed, 4);
    assert_eq!(
        log.take(),
        [
            "all highest m",
            "exact high m",
            "wild normal m",
            "exact normal m"
        ]
    );
}

#[tokio::test]
async fn wildcards_added_or_removed_later_apply_to_names_already_emitted() {
    let app = app();
    let log = Log::default();
    assert_eq!(
        app.events().emit("late.name", "1").await.listeners_executed,
        0
    );
    let wild = app.events().on("late.*", log.listener("wild")).unwrap();
    assert_eq!(
        app.events().emit("late.name", "2").await.listeners_executed,
        1
    );
    let _exact = app.events().on("late.name", log.listener("exact")).unwrap();
    assert_eq!(
        app.events().emit("late.name", "3").await.listeners_executed,
        2
    );
    assert!(wild.off());
    assert_eq!(
        app.events().emit("late.name", "4").await.listeners_executed,
        1
    );
    assert_eq!(log.take(), ["wild 2", "wild 3", "exact 3", "exact 4"]);
}

#[tokio::test]
async fn emitting_a_name_without_listeners_runs_nothing() {
    let app = app();
    let report = app.events().emit("nobody.listens", json!({"x": 1})).await;
    assert_eq!((report.listeners_executed, report.failed), (0, 0));
    assert!(!report.stopped && !report.disabled);
    let next = app.events().emit("nobody.listens", ()).await;
    assert!(next.event_id > report.event_id, "ids increase");
}

#[tokio::test]
async fn disabled_events_run_nothing_until_enabled() {
    let app = app();
    let log = Log::default();
    let _h = app.events().on("maintenance", log.listener("ran")).unwrap();
    app.events().disable("maintenance").unwrap();
    assert!(!app.events().is_enabled("maintenance"));
    let report = app.events().emit("maintenance", "off").await;
    assert!(report.disabled);
    assert_eq!(report.listeners_executed, 0);
    app.events().enable("maintenance").unwrap();
    assert!(app.events().is_enabled("maintenance"));
    let report = app.events().emit("maintenance", "on").await;
    assert!(!report.disabled);
    assert_eq!(log.take(), ["ran on"]);
    // Names are checked: an invalid one is an error, not a disabled name that emit would
    // then report as disabled rather than invalid.
    let error = app.events().disable("main tenance").unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidName);
    assert!(
        app.events().disable("chat.*").is_err(),
        "patterns are not names"
    );
    let report = app.events().emit("main tenance", ()).await;
    assert!(!report.disabled && report.invalid_name.is_some());
}

#[tokio::test]
async fn metrics_count_emits_runs_and_failures() {
    let app = app();
    let _ok = app.events().on("metered", || async {}).unwrap();
    let _bad = app
        .events()
        .on("metered", || async { Err::<(), _>("no") })
        .unwrap();
    for _ in 0..3 {
        app.events().emit("metered", ()).await;
    }
    let metrics = app.events().metrics("metered").unwrap();
    assert_eq!(
        (metrics.emits, metrics.listeners_run, metrics.failures),
        (3, 6, 3)
    );
    assert!(metrics.enabled);
    assert!(
        app.events()
            .all_metrics()
            .iter()
            .any(|(name, m)| name == "metered" && m.emits == 3)
    );
}

#[tokio::test]
async fn metrics_outlive_the_listeners_of_a_name() {
    let app = app();
    app.events().once("setup", || async {}).unwrap();
    let handle = app.events().on("tick", || async {}).unwrap();
    app.events().emit("setup", ()).await;
    app.events().emit("setup", ()).await;
    app.events().emit("tick", ()).await;
    assert!(handle.off());
    app.events().emit("tick", ()).await;
    let setup = app
        .events()
        .metrics("setup")
        .expect("kept after the once listener ran");
    assert_eq!((setup.emits, setup.listeners_run), (2, 1));
    let tick = app
        .events()
        .metrics("tick")
        .expect("kept after the listener was removed");
    assert_eq!((tick.emits, tick.listeners_run), (2, 1));
    assert!(
        app.events()
            .all_metrics()
            .iter()
            .any(|(name, m)| name == "setup" && m.emits == 2)
    );
}

#[tokio::test]
async fn spawn_emit_returns_at_once_and_is_bounded() {
    let app = App::builder()
        .only_module("events_runtime::empty")
        .max_background_emits(1)
        .build()
        .unwrap();
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    let _slow = app
        .events()
        .on("slow", move |n: u32| {
            let mut release = release_rx.clone();
            let done = done_tx.clone();
            async move {
                let _ = release.wait_for(|go| *go).await;
                let _ = done.send(n);
            }
        })
        .unwrap();
    app.events().spawn_emit("slow", 1u32).unwrap();
    let error = app.events().spawn_emit("slow", 2u32).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Overloaded);
    release_tx.send(true).unwrap();
    assert_eq!(done_rx.recv().await, Some(1));
    // The permit is back once the first emit finished.
    tokio::task::yield_now().await;
    let mut accepted = false;
    for _ in 0..100 {
        if app.events().spawn_emit("slow", 3u32).is_ok() {
            accepted = true;
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(accepted);
    assert_eq!(done_rx.recv().await, Some(3));
}

#[tokio::test(start_paused = true)]
async fn a_listener_past_its_timeout_is_abandoned_and_counted() {
    let app = App::builder()
        .only_module("events_runtime::empty")
        .listener_timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    let log = Log::default();
    let _slow = app
        .events()
        .on("t", || async {
            tokio::time::sleep(Duration::from_secs(3600)).await
        })
        .unwrap();
    let _next = app.events().on("t", log.listener("next")).unwrap();
    let report = app.events().emit("t", "ran").await;
    assert_eq!(
        (report.failed, report.timed_out, report.listeners_executed),
        (1, 1, 2)
    );
    assert_eq!(log.take(), ["next ran"]);
}

#[tokio::test]
async fn failures_of_closures_reach_the_error_event() {
    let app = app();
    let log = Log::default();
    let l = log.clone();
    let _errors = app
        .events()
        .on(
            "switchboard:listener.error",
            move |e: switchboard::ListenerFailed| {
                let l = l.clone();
                async move { l.push(format!("{} {} {}", e.event, e.kind, e.message)) }
            },
        )
        .unwrap();
    let _bad = app
        .events()
        .on("job", |n: u32| async move {
            if n > 1 {
                Err(format!("{n} is too many"))
            } else {
                Ok(())
            }
        })
        .unwrap();
    app.events().emit("job", 1u32).await;
    app.events().emit("job", 5u32).await;
    app.events().emit("job", "not a number").await;
    let entries = log.take();
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert_eq!(entries[0], "job error 5 is too many");
    assert!(entries[1].starts_with("job payload "), "{}", entries[1]);
}
