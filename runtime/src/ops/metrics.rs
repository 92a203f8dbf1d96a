//! The app's numbers, read when asked (a scrape, an export): what the layers already count,
//! never a counter shared by connections on the message path. Connections count their own
//! traffic, a group send adds its deliveries once, an emit adds to its name's counters under
//! the lock it already takes.
//!
//! [`Snapshot`] gathers them; [`render`] writes the Prometheus text format (served by
//! `Builder::metrics_route`); `App::record_metrics` (feature `metrics`) hands them to the
//! `metrics` facade.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use crate::App;
use crate::conn::TrafficCounts;
use crate::event::bus::{DURATION_BUCKETS, EventSeries};

/// The label value of the series that sums every event name the app did not register.
pub(crate) const OTHER_EVENTS: &str = "(other)";

/// Everything the metrics report, at one moment.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    pub(crate) connections: usize,
    pub(crate) opened: Vec<(&'static str, u64)>,
    pub(crate) closed: Vec<(String, u64)>,
    pub(crate) refused: Vec<(&'static str, u64)>,
    pub(crate) traffic: TrafficCounts,
    pub(crate) groups: usize,
    pub(crate) group_members: usize,
    pub(crate) group_sends: u64,
    pub(crate) deliveries: u64,
    pub(crate) dropped: Vec<(&'static str, u64)>,
    pub(crate) slow_consumer_closes: u64,
    pub(crate) events: Vec<EventSeries>,
    pub(crate) broker_up: bool,
    pub(crate) broker_publish_failures: u64,
    pub(crate) broker_queue_depth: usize,
}

impl Snapshot {
    pub(crate) fn of(app: &App) -> Snapshot {
        let ws = app.connection_metrics();
        let counters = &app.ws().conn.counters;
        let channels = app.groups().metrics();
        let broker = app.broker().stats();
        use crate::conn::lock;
        Snapshot {
            connections: ws.open,
            opened: lock(&counters.opened)
                .iter()
                .map(|(route, n)| (*route, *n))
                .collect(),
            closed: lock(&counters.closed)
                .iter()
                .map(|(label, n)| (label.to_string(), *n))
                .collect(),
            refused: vec![
                ("max_connections", ws.refused_full),
                ("per_address", ws.refused_per_address),
                ("connection_rate", ws.refused_rate),
                ("handshake_timeout", ws.handshake_timeouts),
            ],
            traffic: app.connections().traffic(),
            groups: channels.groups,
            group_members: channels.group_members,
            group_sends: channels.group_sends,
            deliveries: channels.deliveries,
            dropped: vec![
                ("slow_consumer_closed", channels.dropped_for_closed),
                ("slow_consumer_skipped", channels.dropped_for_slow_consumers),
                // The broker's count includes the sends it refused at once, which the channel
                // layer also counts (a broker without counters of its own reports 0).
                (
                    "broker_publish",
                    channels.publish_failures.max(broker.publish_failures),
                ),
                ("cluster_events", broker.events_dropped),
            ],
            slow_consumer_closes: channels.slow_consumers_closed,
            events: app.bus().series(),
            broker_up: app.broker().is_up(),
            broker_publish_failures: broker.publish_failures,
            broker_queue_depth: broker.queue_depth,
        }
    }
}

/// One sample: a metric name, its labels, its value.
struct Sample {
    name: &'static str,
    labels: Vec<(&'static str, String)>,
    value: Value,
}

#[derive(Clone, Copy)]
enum Value {
    Int(u64),
    Float(f64),
}

/// Counters stay monotonic across scrapes even where a sum can shrink (the `(other)` event
/// series loses a name when its connection-scoped listeners go): each counter is reported as
/// the largest value it has had.
#[derive(Debug, Default)]
pub(crate) struct Monotonic {
    last: Mutex<HashMap<String, f64>>,
}

impl Monotonic {
    fn at_least(&self, key: String, value: f64) -> f64 {
        let mut last = crate::conn::lock(&self.last);
        let kept = last.entry(key).or_insert(value);
        if value > *kept {
            *kept = value;
        }
        *kept
    }
}

/// The HELP text and type of every metric, in the order they are written.
const METRICS: &[(&str, &str, &str)] = &[
    (
        "switchboard_connections",
        "gauge",
        "Open WebSocket connections.",
    ),
    (
        "switchboard_connections_total",
        "counter",
        "WebSocket connections opened, by route template.",
    ),
    (
        "switchboard_disconnects_total",
        "counter",
        "WebSocket connections closed, by close code.",
    ),
    (
        "switchboard_refused_total",
        "counter",
        "WebSocket handshakes refused by a limit, by limit.",
    ),
    (
        "switchboard_messages_received_total",
        "counter",
        "Data messages received from clients.",
    ),
    (
        "switchboard_received_bytes_total",
        "counter",
        "Payload bytes of the data messages received from clients.",
    ),
    (
        "switchboard_messages_sent_total",
        "counter",
        "Data messages written to clients.",
    ),
    (
        "switchboard_sent_bytes_total",
        "counter",
        "Payload bytes of the data messages written to clients.",
    ),
    (
        "switchboard_groups",
        "gauge",
        "Groups with members on this server.",
    ),
    (
        "switchboard_group_members",
        "gauge",
        "Group memberships on this server.",
    ),
    (
        "switchboard_group_sends_total",
        "counter",
        "Group sends made on this server.",
    ),
    (
        "switchboard_deliveries_total",
        "counter",
        "Messages queued for local members by group sends and send_to.",
    ),
    (
        "switchboard_dropped_total",
        "counter",
        "Messages that did not reach a member or another server, by reason.",
    ),
    (
        "switchboard_slow_consumer_closes_total",
        "counter",
        "Connections closed because their outbound queue was full.",
    ),
    (
        "switchboard_emits_total",
        "counter",
        "Events emitted, by event name (names without a registered listener as (other)).",
    ),
    (
        "switchboard_listener_failures_total",
        "counter",
        "Listener runs that failed, by event name.",
    ),
    (
        "switchboard_emit_duration_seconds",
        "histogram",
        "Time an emit spent running its listeners, by event name.",
    ),
    (
        "switchboard_broker_up",
        "gauge",
        "Whether the broker reaches the other servers (1 for a single process).",
    ),
    (
        "switchboard_broker_publish_failures_total",
        "counter",
        "Messages the broker failed to publish to other servers.",
    ),
    (
        "switchboard_broker_queue_depth",
        "gauge",
        "Messages waiting for the broker to publish them.",
    ),
];

impl Snapshot {
    /// Every sample, in the order of [`METRICS`].
    fn samples(&self) -> Vec<Sample> {
        let mut out = Vec::new();
        let mut push = |name: &'static str, labels: Vec<(&'static str, String)>, value: Value| {
            out.push(Sample {
                name,
                labels,
                value,
            });
        };
        let int = |n: u64| Value::Int(n);
        let count = |n: usize| Value::Int(n as u64);
        push("switchboard_connections", vec![], count(self.connections));
        for (route, n) in &self.opened {
            let labels = vec![("route", (*route).to_owned())];
            push("switchboard_connections_total", labels, int(*n));
        }
        for (code, n) in &self.closed {
            let labels = vec![("code", code.clone())];
            push("switchboard_disconnects_total", labels, int(*n));
        }
        for (limit, n) in &self.refused {
            let labels = vec![("limit", (*limit).to_owned())];
            push("switchboard_refused_total", labels, int(*n));
        }
        let t = self.traffic;
        push(
            "switchboard_messages_received_total",
            vec![],
            int(t.received),
        );
        push(
            "switchboard_received_bytes_total",
            vec![],
            int(t.received_bytes),
        );
        push("switchboard_messages_sent_total", vec![], int(t.sent));
        push("switchboard_sent_bytes_total", vec![], int(t.sent_bytes));
        push("switchboard_groups", vec![], count(self.groups));
        push(
            "switchboard_group_members",
            vec![],
            count(self.group_members),
        );
        push(
            "switchboard_group_sends_total",
            vec![],
            int(self.group_sends),
        );
        push("switchboard_deliveries_total", vec![], int(self.deliveries));
        for (reason, n) in &self.dropped {
            let labels = vec![("reason", (*reason).to_owned())];
            push("switchboard_dropped_total", labels, int(*n));
        }
        let slow = int(self.slow_consumer_closes);
        push("switchboard_slow_consumer_closes_total", vec![], slow);
        let event_label = |e: &EventSeries| e.name.clone().unwrap_or_else(|| OTHER_EVENTS.into());
        for e in &self.events {
            let labels = vec![("event", event_label(e))];
            push("switchboard_emits_total", labels, int(e.emits));
        }
        for e in &self.events {
            let labels = vec![("event", event_label(e))];
            push(
                "switchboard_listener_failures_total",
                labels,
                int(e.failures),
            );
        }
        for e in &self.events {
            let mut cumulative = 0;
            for (i, n) in e.durations.iter().enumerate() {
                cumulative += n;
                let le = match DURATION_BUCKETS.get(i) {
                    Some(nanos) => format!("{}", Duration::from_nanos(*nanos).as_secs_f64()),
                    None => "+Inf".to_owned(),
                };
                let labels = vec![("event", event_label(e)), ("le", le)];
                push(
                    "switchboard_emit_duration_seconds_bucket",
                    labels,
                    int(cumulative),
                );
            }
            let labels = vec![("event", event_label(e))];
            let sum = Value::Float(e.time.as_secs_f64());
            push("switchboard_emit_duration_seconds_sum", labels.clone(), sum);
            push(
                "switchboard_emit_duration_seconds_count",
                labels,
                int(cumulative),
            );
        }
        push(
            "switchboard_broker_up",
            vec![],
            int(u64::from(self.broker_up)),
        );
        let failures = int(self.broker_publish_failures);
        push(
            "switchboard_broker_publish_failures_total",
            vec![],
            failures,
        );
        let depth = count(self.broker_queue_depth);
        push("switchboard_broker_queue_depth", vec![], depth);
        out
    }
}

/// The snapshot in the Prometheus text exposition format (version 0.0.4).
pub(crate) fn render(snapshot: &Snapshot, monotonic: &Monotonic) -> String {
    let mut text = String::with_capacity(8 * 1024);
    let samples = snapshot.samples();
    for (name, kind, help) in METRICS {
        let _ = writeln!(text, "# HELP {name} {help}");
        let _ = writeln!(text, "# TYPE {name} {kind}");
        let family = samples.iter().filter(|s| {
            s.name == *name
                || (*kind == "histogram"
                    && s.name
                        .strip_prefix(name)
                        .is_some_and(|rest| ["_bucket", "_sum", "_count"].contains(&rest)))
        });
        for sample in family {
            let mut series = sample.name.to_owned();
            if !sample.labels.is_empty() {
                series.push('{');
                for (i, (key, value)) in sample.labels.iter().enumerate() {
                    if i > 0 {
                        series.push(',');
                    }
                    let _ = write!(series, "{key}=\"{}\"", escape(value));
                }
                series.push('}');
            }
            let value = match sample.value {
                Value::Int(n) => n as f64,
                Value::Float(x) => x,
            };
            let value = if *kind == "gauge" {
                value
            } else {
                monotonic.at_least(series.clone(), value)
            };
            let _ = writeln!(text, "{series} {value}");
        }
    }
    text
}

/// A label value as the text format wants it: `\`, `"` and newlines escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The handler of `Builder::metrics_route`: the app's metrics as Prometheus text.
pub(crate) fn prometheus_route() -> axum::routing::MethodRouter<App> {
    use std::sync::Arc;

    let monotonic = Arc::new(Monotonic::default());
    axum::routing::get(move |app: App| {
        let monotonic = monotonic.clone();
        async move {
            let text = render(&Snapshot::of(&app), &monotonic);
            (
                [(
                    http::header::CONTENT_TYPE,
                    "text/plain; version=0.0.4; charset=utf-8",
                )],
                text,
            )
        }
    })
}

/// Records the app's metrics into the facade every `every`, until the app is gone.
#[cfg(feature = "metrics")]
pub(crate) async fn export(app: crate::app::WeakApp, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        match app.upgrade() {
            Some(app) => app.record_metrics(),
            None => return,
        }
    }
}

#[cfg(feature = "metrics")]
impl App {
    /// Hands the app's numbers to the `metrics` facade's recorder (cargo feature `metrics`):
    /// counters as absolute values, gauges as their current value, under the names the
    /// Prometheus route uses. Call it on a timer, or before your exporter renders; the
    /// emit-duration histogram is served by [`Builder::metrics_route`](crate::Builder) only
    /// (the facade takes samples, not bucket counts).
    pub fn record_metrics(&self) {
        let snapshot = Snapshot::of(self);
        for sample in snapshot.samples() {
            let kind = METRICS
                .iter()
                .find(|(name, ..)| *name == sample.name)
                .map(|(_, kind, _)| *kind);
            let labels: Vec<::metrics::Label> = sample
                .labels
                .iter()
                .map(|(key, value)| ::metrics::Label::new(*key, value.clone()))
                .collect();
            match (kind, sample.value) {
                (Some("counter"), Value::Int(n)) => {
                    ::metrics::counter!(sample.name, labels).absolute(n);
                }
                (Some("gauge"), Value::Int(n)) => {
                    ::metrics::gauge!(sample.name, labels).set(n as f64);
                }
                // Histogram series, served by the Prometheus route only.
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn a_counter_never_goes_back() {
        let monotonic = Monotonic::default();
        assert_eq!(monotonic.at_least("x".into(), 5.0), 5.0);
        assert_eq!(monotonic.at_least("x".into(), 3.0), 5.0);
        assert_eq!(monotonic.at_least("x".into(), 7.0), 7.0);
    }
}
