//! The registrations the macros submit, and their checks: the records `#[ws_route]`, `#[on]`
//! and `#[once]` hand to `inventory`, filtered by module, sorted into a defined order
//! (inventory's is unspecified), and checked for conflicts (two routes the router could not
//! tell apart, an HTTP route in the way of a WebSocket route, a function registered twice for
//! one event). Every conflict is reported, each with its source locations.

use std::collections::{HashMap, HashSet};

use axum::routing::MethodRouter;
use switchboard_syntax::{event_name, route_path};

use crate::event::{EventContext, ListenerCall, Priority};
use crate::ws::handler::Route;
use crate::{App, Error, ErrorKind};

/// One WebSocket route, as registered by `#[ws_route]`.
#[doc(hidden)]
#[derive(Debug)]
pub struct RouteRegistration {
    /// What the handshake needs: the template, the converters, the handler.
    pub route: Route,
    /// The same path in axum's syntax: `/items/{id}`, `/files/{*rest}`.
    pub axum_path: &'static str,
    pub function: &'static str,
    pub module_path: &'static str,
    pub file: &'static str,
    pub line: u32,
}

inventory::collect!(RouteRegistration);

/// One listener function, as registered by `#[on]`/`#[once]`.
#[doc(hidden)]
#[derive(Debug)]
pub struct ListenerRegistration {
    /// The event name or pattern as written (without the namespace).
    pub event: &'static str,
    /// The `namespace = ".."` option, or `""`.
    pub namespace: &'static str,
    pub priority: Priority,
    pub once: bool,
    pub call: fn(&mut EventContext<'_>, bool) -> ListenerCall,
    pub function: &'static str,
    pub module_path: &'static str,
    pub file: &'static str,
    pub line: u32,
}

inventory::collect!(ListenerRegistration);

/// Checks, at compile time, an event name `#[on(PATH)]` takes from a constant: a name that is
/// not valid fails the build, with the reason.
#[doc(hidden)]
pub const fn assert_event_name(name: &str) {
    if let Err(e) = event_name::check(name, event_name::Kind::Pattern) {
        panic!("{}", e.summary());
    }
}

impl ListenerRegistration {
    /// The full event name: `namespace:event`, or `event`.
    pub(crate) fn full_name(&self) -> String {
        if self.namespace.is_empty() {
            self.event.to_owned()
        } else {
            format!("{}:{}", self.namespace, self.event)
        }
    }

    /// `module::function (file:line)`, as errors and logs name it.
    pub(crate) fn label(&self) -> String {
        format!(
            "{}::{} ({}:{})",
            self.module_path, self.function, self.file, self.line
        )
    }
}

/// Whether `module_path` is `prefix` or inside it.
fn in_module(module_path: &str, prefix: Option<&str>) -> bool {
    match prefix {
        None => true,
        Some(prefix) => {
            module_path == prefix
                || module_path
                    .strip_prefix(prefix)
                    .is_some_and(|rest| rest.starts_with("::"))
        }
    }
}

/// The listener registrations under `prefix`, sorted by (module path, file, line), with every
/// duplicate (the same function registered twice for the same event and priority) reported.
pub(crate) fn listeners(prefix: Option<&str>) -> Result<Vec<&'static ListenerRegistration>, Error> {
    let mut all: Vec<&'static ListenerRegistration> = inventory::iter::<ListenerRegistration>
        .into_iter()
        .filter(|r| in_module(r.module_path, prefix))
        .collect();
    all.sort_by_key(|r| (r.module_path, r.file, r.line, r.event, r.namespace));
    let mut seen: HashMap<(&str, &str, String, Priority), &ListenerRegistration> = HashMap::new();
    let mut problems = Vec::new();
    for r in &all {
        let key = (r.module_path, r.function, r.full_name(), r.priority);
        if let Some(first) = seen.insert(key, r) {
            problems.push(format!(
                "`{}::{}` is registered twice for event `{}` with priority {:?}: at {}:{} and at {}:{}",
                r.module_path,
                r.function,
                r.full_name(),
                r.priority,
                first.file,
                first.line,
                r.file,
                r.line
            ));
        }
    }
    finish(all, problems)
}

/// An HTTP route given to the builder (checked against the WebSocket routes).
pub(crate) struct HttpRoute {
    pub(crate) path: String,
    pub(crate) method_router: MethodRouter<App>,
}

/// The routes of an app, checked: nothing in them overlaps.
pub(crate) struct Routes {
    /// The WebSocket routes, sorted by source location.
    pub(crate) ws: Vec<&'static RouteRegistration>,
    /// HTTP routes on the exact path of a WebSocket route (by that path): GET is the
    /// handshake, every other method goes to them.
    pub(crate) shared: HashMap<String, MethodRouter<App>>,
    /// The other HTTP routes.
    pub(crate) http: Vec<HttpRoute>,
}

/// The WebSocket routes under `prefix` and the HTTP routes given to the builder, with every
/// conflict reported (the same path twice, or two patterns the router could not tell apart).
pub(crate) fn routes(prefix: Option<&str>, http: Vec<HttpRoute>) -> Result<Routes, Error> {
    let mut ws: Vec<&'static RouteRegistration> = inventory::iter::<RouteRegistration>
        .into_iter()
        .filter(|r| in_module(r.module_path, prefix))
        .collect();
    ws.sort_by_key(|r| (r.module_path, r.file, r.line));
    let mut checker = Overlaps::default();
    for r in &ws {
        let what = format!(
            "WebSocket route `{}` (`{}::{}` at {}:{})",
            r.route.path, r.module_path, r.function, r.file, r.line
        );
        checker.insert(r.axum_path, what);
    }
    let mut routes = Routes {
        ws,
        shared: HashMap::new(),
        http: Vec::new(),
    };
    let mut http_paths = HashSet::new();
    for h in http {
        let what = format!("HTTP route `{}`", h.path);
        if let Some(problem) = http_path_problem(&h.path) {
            checker.problems.push(format!("{what}: {problem}"));
        } else if !http_paths.insert(h.path.clone()) {
            checker.problems.push(format!(
                "{what} is given twice: give one method router with all its methods"
            ));
        } else if routes.ws.iter().any(|r| r.axum_path == h.path) {
            routes.shared.insert(h.path, h.method_router);
        } else if checker.insert(&h.path, what) {
            routes.http.push(h);
        }
    }
    finish(routes, checker.problems)
}

/// Paths the router could not tell apart, found by inserting them into the router axum uses
/// (axum itself panics on them).
#[derive(Default)]
struct Overlaps {
    matcher: matchit::Router<()>,
    /// Who holds each path, for the messages.
    owners: HashMap<String, String>,
    problems: Vec<String>,
}

impl Overlaps {
    /// Adds `path` for `what`; `false` (and a problem) if it conflicts with one added before.
    fn insert(&mut self, path: &str, what: String) -> bool {
        match self.matcher.insert(path, ()) {
            Ok(()) => {
                self.owners.insert(path.to_owned(), what);
                true
            }
            Err(matchit::InsertError::Conflict { with }) => {
                let other = self
                    .owners
                    .get(&with)
                    .cloned()
                    .unwrap_or_else(|| format!("route `{with}`"));
                self.problems.push(format!("{what} conflicts with {other}"));
                false
            }
            Err(other) => {
                self.problems.push(format!("{what}: {other}"));
                false
            }
        }
    }
}

/// What axum would panic on in an HTTP route's path.
fn http_path_problem(path: &str) -> Option<&'static str> {
    if !path.starts_with('/') {
        return Some("paths must start with `/`");
    }
    if path.split('/').any(|s| s.starts_with(':')) {
        return Some("captures are written `{name}`, not `:name`");
    }
    // The router would panic on too many (found by fuzzing).
    if path.matches('{').count() > route_path::MAX_PARAMS {
        return Some("more than 16 captures");
    }
    None
}

fn finish<T>(checked: T, problems: Vec<String>) -> Result<T, Error> {
    if problems.is_empty() {
        Ok(checked)
    } else {
        Err(Error::new(ErrorKind::Registration, problems.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::in_module;

    #[test]
    fn module_prefix_matches_whole_segments() {
        assert!(in_module("app::chat", Some("app::chat")));
        assert!(in_module("app::chat::inner", Some("app::chat")));
        assert!(!in_module("app::chatter", Some("app::chat")));
        assert!(in_module("anything", None));
    }
}
