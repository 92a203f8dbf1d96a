//! Cluster-wide events: [`Events::emit_cluster`] sends an event to the other servers through
//! the broker, and the events other servers sent run here, one after another in arrival order,
//! in one task per app.

use std::sync::OnceLock;

use serde::Serialize;
use tokio::sync::mpsc;

use super::{ClusterEmitReport, Events, check_emitted};
use crate::{App, Error};

/// Cluster events from other servers waiting to run, at most.
const QUEUE: usize = 1024;

/// The queue of events from other servers, and the task that runs them (started with the
/// first).
#[derive(Debug, Default)]
pub(crate) struct Incoming {
    queue: OnceLock<mpsc::Sender<(String, serde_json::Value)>>,
}

impl Incoming {
    /// Queues an event sent by another server; `false`: dropped (not JSON, or the queue is
    /// full).
    pub(crate) fn deliver(&self, app: &App, name: &str, payload: &[u8]) -> bool {
        let payload: serde_json::Value = match serde_json::from_slice(payload) {
            Ok(payload) => payload,
            Err(e) => {
                tracing::warn!(
                    event = name,
                    "dropped a cluster event whose payload is not JSON: {e}"
                );
                return false;
            }
        };
        let queue = self.queue.get_or_init(|| start(app));
        match queue.try_send((name.to_owned(), payload)) {
            Ok(()) => true,
            Err(_) => {
                tracing::warn!(
                    event = name,
                    "dropped a cluster event: {QUEUE} are waiting to run"
                );
                false
            }
        }
    }
}

/// Starts the task that runs the events of the queue it returns, in order.
fn start(app: &App) -> mpsc::Sender<(String, serde_json::Value)> {
    let (queue, mut events) = mpsc::channel::<(String, serde_json::Value)>(QUEUE);
    let weak = app.downgrade();
    let runner = async move {
        while let Some((name, payload)) = events.recv().await {
            let Some(app) = weak.upgrade() else {
                return;
            };
            let _: super::EmitReport = app.events().emit(name.as_str(), payload).await;
        }
    };
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn(runner);
        }
        Err(_) => tracing::warn!("cluster events need a Tokio runtime"),
    }
    queue
}

impl Events {
    /// [`emit_cluster`](Self::emit_cluster) of a typed event (see [`Event`](crate::Event)).
    /// Other servers' listeners get it as JSON, so the type must also be `Deserialize`.
    pub async fn emit_cluster_event<E>(&self, event: E) -> ClusterEmitReport
    where
        E: crate::Event + serde::de::DeserializeOwned,
    {
        self.emit_cluster(E::NAME, event).await
    }

    /// Emits `name` on every server of the cluster: sends it to the other servers (their
    /// listeners get the payload as JSON and run in a task of theirs, one event after another
    /// in arrival order), then runs this server's listeners as [`emit`](Self::emit) does.
    /// Without a cluster broker it is `emit`. [`emit`](Self::emit) itself stays local.
    ///
    /// Delivery to other servers is at most once: an event sent while Redis is unreachable is
    /// lost for them (`published` is `Some(false)`; this server's listeners run all the same).
    /// A name that is not valid is refused as by `emit` (`local.invalid_name`), and is not
    /// sent.
    pub async fn emit_cluster<T>(&self, name: &str, payload: T) -> ClusterEmitReport
    where
        T: Serialize + Send + Sync + 'static,
    {
        let full = self.full_name(name);
        let broker = self.app().broker().clone();
        let (mut published, mut publish_error) = (None, None);
        if broker.is_clustered() && check_emitted(&full).is_ok() {
            let sent = match serde_json::to_vec(&payload) {
                Ok(json) => broker.publish_event(&full, &json).await,
                Err(e) => Err(Error::serialize(e)),
            };
            published = Some(sent.is_ok());
            publish_error = sent.err().map(|e| e.to_string());
        }
        let local = self.emit(name, payload).await;
        ClusterEmitReport {
            local,
            published,
            publish_error,
        }
    }
}
