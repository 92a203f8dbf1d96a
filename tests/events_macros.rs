//! Listeners registered with `#[on]` / `#[once]`: ordering, parameters, return types, failures.
//! Each module declares its own listeners and builds an app of only those (`only_module`).

use std::sync::{Arc, Mutex};

use switchboard::App;
use switchboard_tests::Log;

fn app_of(module: &str, log: &Log) -> App {
    App::builder()
        .only_module(module)
        .state(log.clone())
        .build()
        .expect("the registrations of this module are valid")
}

mod priorities {
    use super::*;
    use switchboard::prelude::*;

    #[on("job", priority = low)]
    fn low(State(log): State<Log>) {
        log.push("low");
    }
    #[on("job", priority = highest)]
    fn highest(State(log): State<Log>) {
        log.push("highest");
    }
    #[on("job")]
    fn normal(State(log): State<Log>) {
        log.push("normal");
    }
    #[on("job", priority = lowest)]
    async fn lowest(State(log): State<Log>) {
        log.push("lowest");
    }
    #[on("job", priority = high)]
    async fn high(State(log): State<Log>) {
        log.push("high");
    }

    #[tokio::test]
    async fn five_priorities_run_highest_to_lowest() {
        let log = Log::default();
        let app = app_of(module_path!(), &log);
        let report = app.events().emit("job", ()).await;
        assert_eq!(report.listeners_executed, 5);
        assert_eq!(report.failed, 0);
        assert_eq!(
            log.entries(),
            ["highest", "high", "normal", "low", "lowest"]
        );
    }
}

mod source_order {
    use super::*;
    use switchboard::prelude::*;

    #[on("tick")]
    fn first(State(log): State<Log>) {
        log.push("first");
    }
    #[on("tick")]
    async fn second(State(log): State<Log>) {
        log.push("second");
    }
    #[on("tick")]
    fn third(State(log): State<Log>) {
        log.push("third");
    }

    #[tokio::test]
    async fn same_priority_runs_in_source_order_every_time() {
        let log = Log::default();
        let app = app_of(module_path!(), &log);
        for _ in 0..3 {
            app.events().emit("tick", ()).await;
        }
        assert_eq!(log.entries().len(), 9);
        for chunk in log.entries().chunks(3) {
            assert_eq!(chunk, ["first", "second", "third"]);
        }
    }
}

mod once {
    use super::*;
    use switchboard::prelude::*;

    #[once("connection.init")]
    async fn init(State(log): State<Log>, meta: EventMeta) {
        log.push(format!("init {}", meta.id));
    }

    #[tokio::test]
    async fn once_runs_on_the_first_emit_and_never_again() {
        let log = Log::default();
        let app = app_of(module_path!(), &log);
        let first = app.events().emit("connection.init", ()).await;
        let second = app.events().emit("connection.init", ()).await;
        let third = app.events().emit("connection.init", ()).await;
        assert_eq!(first.listeners_executed, 1);
        assert_eq!(second.listeners_executed, 0);
        assert_eq!(third.listeners_executed, 0);
        assert_eq!(log.entries(), [format!("init {}", first.event_id)]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn once_claimed_by_100_concurrent_emits_runs_exactly_once() {
        let log = Log::default();
        let app = app_of(module_path!(), &log);
        let barrier = Arc::new(tokio::sync::Barrier::new(100));
        let tasks: Vec<_> = (0..100)
            .map(|_| {
                let app = app.clone();
                let barrier = barrier.clone();
                tokio::spawn(async move {
                    barrier.wait().await;
                    app.events().emit("connection.init", ()).await
                })
            })
            .collect();
        let mut executed = 0;
        for task in tasks {
            executed += task.await.unwrap().listeners_executed;
        }
        assert_eq!(executed, 1);
        assert_eq!(log.entries().len(), 1);
    }

    #[tokio::test]
    async fn two_apps_share_nothing() {
        let (log_a, log_b) = (Log::default(), Log::default());
        let (a, b) = (
            app_of(module_path!(), &log_a),
            app_of(module_path!(), &log_b),
        );
        a.events().emit("connection.init", ()).await;
        a.events().emit("connection.init", ()).await;
        b.events().emit("connection.init", ()).await;
        assert_eq!(log_a.entries().len(), 1);
        assert_eq!(log_b.entries().len(), 1, "b's once is its own");
    }
}

mod namespaces {
    use super::*;
    use switchboard::prelude::*;

    #[on("message.received", namespace = "websocket")]
    fn received(msg: Value, State(log): State<Log>) {
        log.push(format!("websocket {}", msg["text"]));
    }

    #[on("login", namespace = "user:auth")]
    fn login(State(log): State<Log>, meta: EventMeta) {
        log.push(meta.name);
    }

    #[tokio::test]
    async fn a_namespace_view_and_the_full_name_reach_the_same_listener() {
        let log = Log::default();
        let app = app_of(module_path!(), &log);
        let ws = app.events().namespace("websocket");
        assert_eq!(
            ws.emit("message.received", json!({"text": 1}))
                .await
                .listeners_executed,
            1
        );
        let full = app
            .events()
            .emit("websocket:message.received", json!({"text": 2}))
            .await;
        assert_eq!(full.listeners_executed, 1);
        let outside = app
            .events()
            .emit("message.received", json!({"text": 3}))
            .await;
        assert_eq!(
            outside.listeners_executed, 0,
            "the bare name is another event"
        );
        assert_eq!(log.entries(), ["websocket 1", "websocket 2"]);
    }

    #[tokio::test]
    async fn nested_namespaces_join_with_colons() {
        let log = Log::default();
        let app = app_of(module_path!(), &log);
        let auth = app.events().namespace("user").namespace("auth");
        assert_eq!(auth.namespace_name(), Some("user:auth"));
        assert_eq!(auth.emit("login", ()).await.listeners_executed, 1);
        assert_eq!(log.entries(), ["user:auth:login"]);
    }
}

mod payloads {
    use super::*;
    use serde::{Deserialize, Serialize};
    use switchboard::prelude::*;

    /// Not `Deserialize`: only the very value can reach a listener.
    #[derive(Clone, Serialize)]
    pub(super) struct Live {
        pub(super) id: u32,
        #[serde(skip)]
        pub(super) handle: Arc<Mutex<u32>>,
    }

    #[derive(Clone, Serialize, Deserialize)]
    pub(super) struct Full {
        pub(super) room: String,
        pub(super) count: u32,
        pub(super) extra: bool,
    }

    #[derive(Deserialize)]
    struct RoomOnly {
        room: String,
    }

    #[derive(Clone, Deserialize)]
    struct Strict {
        #[allow(dead_code)]
        required: u64,
    }

    #[on("live")]
    async fn live(live: Live) {
        // Writes through the handle: the test sees it only if this is the emitted value itself.
        *live.handle.lock().unwrap() = live.id;
    }

    #[on("full", priority = high)]
    fn same_type(full: Full, State(log): State<Log>) {
        log.push(format!("same {} {} {}", full.room, full.count, full.extra));
    }

    #[on("full")]
    fn other_type(part: RoomOnly, State(log): State<Log>) {
        log.push(format!("part {}", part.room));
    }

    #[on("full", priority = low)]
    fn as_value(value: Value, State(log): State<Log>) {
        log.push(format!("value {}", value["count"]));
    }

    #[on("strict", priority = high)]
    fn strict(_strict: Strict) {}

    #[on("strict")]
    fn after_strict(State(log): State<Log>) {
        log.push("after strict");
    }

    #[on("no.payload")]
    fn nothing(State(log): State<Log>) {
        log.push("nothing");
    }

    #[tokio::test]
    async fn the_emitted_type_itself_reaches_its_listener_without_json() {
        let log = Log::default();
        let app = app_of(module_path!(), &log);
        let handle = Arc::new(Mutex::new(0));
        let report = app
            .events()
            .emit(
                "live",
                Live {
                    id: 42,
                    handle: handle.clone(),
                },
            )
            .await;
        assert_eq!((report.listeners_executed, report.failed), (1, 0));
        assert_eq!(
            *handle.lock().unwrap(),
            42,
            "the listener got the very value"
        );
    }

    #[tokio::test]
    async fn other_types_get_the_payload_through_json() {
        let log = Log::default();
        let app = app_of(module_path!(), &log);
        let full = Full {
            room: "lobby".into(),
            count: 3,
            extra: true,
        };
        let report = app.events().emit("full", full).await;
        assert_eq!((report.listeners_executed, report.failed), (3, 0));
        assert_eq!(
            log.entries(),
            ["same lobby 3 true", "part lobby", "value 3"]
        );

        // A JSON payload reaches a typed listener too.
        let report = app
            .events()
            .emit("full", json!({"room": "hall", "count": 1, "extra": false}))
            .await;
        assert_eq!(report.failed, 0);
        assert!(log.entries().contains(&"same hall 1 false".to_owned()));
    }

    #[tokio::test]
    async fn a_payload_that_does_not_fit_fails_that_listener_only() {
        let log = Log::default();
        let app = app_of(module_path!(), &log);
        let report = app.events().emit("strict", json!({"other": 1})).await;
        assert_eq!(report.listeners_executed, 2);
        assert_eq!(report.failed, 1);
        assert_eq!(log.entries(), ["after strict"]);
    }

    #[tokio::test]
    async fn a_listener_may_take_no_payload() {
        let log = Log::default();
        let app = app_of(module_path!(), &log);
        app.events().emit("no.payload", json!([1, 2, 3])).await;
        assert_eq!(log.entries(), ["nothing"]);
    }
}

mod failures {
    use super::*;
    use std::ops::ControlFlow;
    use switchboard::ListenerFailed;
    use switchboard::prelude::*;

    #[on("work", priority = highest)]
    async fn fails(State(log): State<Log>) -> Result<(), String> {
        log.push("fails");
        Err("disk full".into())
    }

    #[on("work", priority = high)]
    fn panics(State(log): State<Log>) {
        log.push("panics");
        panic!("listener bug");
    }

    #[on("work")]
    async fn with_anyhow(State(log): State<Log>) -> anyhow::Result<()> {
        log.push("anyhow");
        anyhow::bail!("wrapped failure")
    }

    #[on("work", priority = lowest)]
    async fn still_runs(State(log): State<Log>) {
        log.push("still runs");
    }

    #[on("listener.error", namespace = "switchboard")]
    fn central(error: ListenerFailed, State(log): State<Log>) {
        log.push(format!(
            "error {} {} {}",
            error.event, error.kind, error.message
        ));
    }

    #[tokio::test]
    async fn failing_and_panicking_listeners_do_not_stop_the_next_and_reach_the_error_event() {
        let log = Log::default();
        let app = app_of(module_path!(), &log);
        let report = app.events().emit("work", ()).await;
        assert_eq!(report.listeners_executed, 4);
        assert_eq!(report.failed, 3);
        assert!(!report.stopped);
        assert_eq!(
            log.entries(),
            [
                "fails",
                "error work error disk full",
                "panics",
                "error work panic panicked: listener bug",
                "anyhow",
                "error work error wrapped failure",
                "still runs",
            ]
        );
        let metrics = app.events().metrics("work").unwrap();
        assert_eq!(
            (metrics.emits, metrics.listeners_run, metrics.failures),
            (1, 4, 3)
        );
    }

    #[on("gate", priority = high)]
    fn gate(open: bool) -> ControlFlow<()> {
        if open {
            ControlFlow::Continue(())
        } else {
            ControlFlow::Break(())
        }
    }

    #[on("gate", priority = low)]
    fn behind_gate(State(log): State<Log>) {
        log.push("behind gate");
    }

    #[tokio::test]
    async fn a_stopped_propagation_skips_lower_priorities_and_is_reported() {
        let log = Log::default();
        let app = app_of(module_path!(), &log);
        let closed = app.events().emit("gate", false).await;
        assert!(closed.stopped);
        assert_eq!((closed.listeners_executed, closed.failed), (1, 0));
        let open = app.events().emit("gate", true).await;
        assert!(!open.stopped);
        assert_eq!(open.listeners_executed, 2);
        assert_eq!(log.entries(), ["behind gate"]);
    }
}

mod error_listener_fails {
    use super::*;
    use switchboard::prelude::*;

    #[on("boom")]
    fn boom() -> Result<(), &'static str> {
        Err("first")
    }

    #[on("listener.error", namespace = "switchboard")]
    fn broken_handler(State(log): State<Log>) -> Result<(), &'static str> {
        log.push("error handler ran");
        Err("the error handler fails too")
    }

    #[tokio::test]
    async fn a_failing_error_listener_is_logged_not_re_emitted() {
        let log = Log::default();
        let app = app_of(module_path!(), &log);
        let report = app.events().emit("boom", ()).await;
        assert_eq!(report.failed, 1);
        assert_eq!(log.entries(), ["error handler ran"], "ran once, no loop");
    }
}

mod context {
    use super::*;
    use switchboard::prelude::*;

    #[on("ctx")]
    async fn context(meta: EventMeta, events: Events, app: App, State(log): State<Log>) {
        log.push(format!("{} {}", meta.name, meta.id));
        // Listeners can emit in turn, through either handle.
        events.emit("ctx.nested", ()).await;
        app.events().emit("ctx.nested", ()).await;
    }

    #[on("ctx.nested")]
    fn nested(State(log): State<Log>) {
        log.push("nested");
    }

    #[tokio::test]
    async fn context_extractors_see_the_event_and_the_app() {
        let log = Log::default();
        let app = app_of(module_path!(), &log);
        let report = app.events().emit("ctx", ()).await;
        assert_eq!(
            log.entries(),
            [
                format!("ctx {}", report.event_id),
                "nested".into(),
                "nested".into()
            ]
        );
    }

    #[tokio::test]
    async fn missing_state_fails_the_listener_with_a_message() {
        let app = App::builder().only_module(module_path!()).build().unwrap();
        let report = app.events().emit("ctx.nested", ()).await;
        assert_eq!(report.failed, 1);
    }
}

mod duplicates {
    use switchboard::prelude::*;

    #[on("twice")]
    #[on("twice")]
    fn registered_twice() {}

    #[test]
    fn the_same_function_twice_for_one_event_is_a_startup_error_naming_both_places() {
        let error = App::builder()
            .only_module(module_path!())
            .build()
            .expect_err("duplicate registration");
        assert_eq!(error.kind(), switchboard::ErrorKind::Registration);
        let message = error.to_string();
        assert!(message.contains("registered_twice"), "{message}");
        let lines: Vec<u32> = message
            .split("events_macros.rs:")
            .skip(1)
            .map(|rest| {
                rest.split(|c: char| !c.is_ascii_digit())
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap()
            })
            .collect();
        assert_eq!(lines.len(), 2, "{message} should name both attributes");
        assert_eq!(lines[0] + 1, lines[1], "{message}: the two attribute lines");
    }
}

mod constants {
    use super::*;
    use switchboard::ListenerFailed;
    use switchboard::event::names;
    use switchboard::prelude::*;

    pub(crate) const ROOM_JOINED: &str = "room.joined";

    #[on(ROOM_JOINED)]
    fn joined(who: String, State(log): State<Log>) {
        log.push(format!("joined {who}"));
    }

    #[on(self::ROOM_JOINED, namespace = "chat")]
    fn joined_in_chat(who: String, State(log): State<Log>) {
        log.push(format!("chat joined {who}"));
    }

    #[on(names::LISTENER_ERROR)]
    fn failed(failure: ListenerFailed, State(log): State<Log>) {
        log.push(format!("failed {}", failure.event));
    }

    #[on("boom")]
    fn boom() -> Result<(), String> {
        Err("boom".into())
    }

    #[tokio::test]
    async fn constants_name_events_and_the_frameworks_own_names_can_be_listened_to() {
        let log = Log::default();
        let app = app_of(module_path!(), &log);
        assert_eq!(
            app.events()
                .emit(ROOM_JOINED, "ada")
                .await
                .listeners_executed,
            1
        );
        app.events().emit("chat:room.joined", "bob").await;
        app.events().emit("boom", ()).await;
        assert_eq!(
            log.entries(),
            ["joined ada", "chat joined bob", "failed boom"]
        );
    }
}
