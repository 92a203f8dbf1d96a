//! What operators ask a running app: is it alive, is it ready for traffic (health and
//! readiness routes for load balancers and orchestrators), its numbers (a Prometheus route,
//! or any exporter of the `metrics` facade), and a live admin page.
//!
//! Each is opt-in on the [`Builder`](crate::Builder) and served as an ordinary HTTP route of
//! the app, so the route checks (conflicts, paths) apply to it.

mod admin;
mod health;
mod metrics;

pub(crate) use admin::{Admin, AdminAuth, page_route as admin_page, socket_route as admin_socket};
pub(crate) use health::{health, ready};
#[cfg(feature = "metrics")]
pub(crate) use metrics::export as export_metrics;
pub(crate) use metrics::prometheus_route;
