//! WebSocket routes: the record `#[ws_route]` submits, the converters of path parameters, the
//! traits handler parameters go through, and turning the routes into an axum router without
//! letting axum panic on a conflict.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::fmt::Display;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;

use axum::Router;
use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use http::request::Parts;

use super::{WebSocket, WsError};
use crate::app::registry::in_module;
use crate::{App, Error, ErrorKind};

pub(crate) type BoxError = Box<dyn StdError + Send + Sync>;
type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Nexios' path converters: which values a `{name:converter}` segment accepts.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Converter {
    /// `{name}` or `{name:str}`: any non-empty segment.
    Str,
    /// `{name:int}`: digits.
    Int,
    /// `{name:float}`: digits, optionally a dot and digits.
    Float,
    /// `{name:path}`: the rest of the path, slashes included.
    Path,
    /// `{name:uuid}`: a lowercase hyphenated UUID.
    Uuid,
    /// `{name:slug}`: letters, digits, `-` and `_`.
    Slug,
}

impl Converter {
    /// Whether `value` (percent-decoded) matches.
    pub(crate) fn accepts(self, value: &str) -> bool {
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        match self {
            Converter::Str | Converter::Path => !value.is_empty(),
            Converter::Int => digits(value),
            Converter::Float => match value.split_once('.') {
                Some((whole, fraction)) => digits(whole) && digits(fraction),
                None => digits(value),
            },
            Converter::Slug => {
                !value.is_empty()
                    && value
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            }
            Converter::Uuid => {
                let groups: Vec<&str> = value.split('-').collect();
                groups.len() == 5
                    && groups.iter().zip([8, 4, 4, 4, 12]).all(|(g, len)| {
                        g.len() == len
                            && g.bytes()
                                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                    })
            }
        }
    }
}

/// One WebSocket route, as registered by `#[ws_route]`.
#[doc(hidden)]
#[derive(Debug)]
pub struct RouteRegistration {
    /// The path as written, converters included: `/items/{id:int}`.
    pub path: &'static str,
    /// The same path in axum's syntax: `/items/{id}`, `/files/{*rest}`.
    pub axum_path: &'static str,
    /// The converter of each path parameter.
    pub params: &'static [(&'static str, Converter)],
    pub handler: fn(WsRequest) -> BoxFuture<WsStart>,
    pub function: &'static str,
    pub module_path: &'static str,
    pub file: &'static str,
    pub line: u32,
}

inventory::collect!(RouteRegistration);

impl RouteRegistration {
    pub(crate) fn location(&self) -> String {
        format!("{}:{}", self.file, self.line)
    }
}

/// What the generated code gets to build the handler's arguments.
#[doc(hidden)]
#[derive(Debug)]
pub struct WsRequest {
    pub(crate) parts: Parts,
    pub(crate) app: App,
    pub(crate) ws: WebSocket,
}

impl WsRequest {
    pub fn into_parts(self) -> (Parts, App, WebSocket) {
        (self.parts, self.app, self.ws)
    }
}

/// The result of running a route's extractors: refused (the extractor's response), or the
/// handler's future.
#[doc(hidden)]
pub enum WsStart {
    Reject(Response),
    Run(BoxFuture<Result<(), HandlerFailure>>),
}

impl std::fmt::Debug for WsStart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WsStart::Reject(r) => f.debug_tuple("Reject").field(&r.status()).finish(),
            WsStart::Run(_) => f.write_str("Run(..)"),
        }
    }
}

impl WsStart {
    pub fn run<F, Kind>(handler: F) -> Self
    where
        F: Future + Send + 'static,
        F::Output: IntoHandlerResult<Kind>,
    {
        WsStart::Run(Box::pin(async move { handler.await.into_handler_result() }))
    }

    pub fn reject(response: impl IntoResponse) -> Self {
        WsStart::Reject(response.into_response())
    }
}

/// How a handler failed: the close code and reason to send (from the [`WsError`] found in the
/// error, or 1011 "internal error"), and the error's message for logs and the error event.
#[doc(hidden)]
#[derive(Debug)]
pub struct HandlerFailure {
    pub(crate) code: u16,
    pub(crate) reason: String,
    pub(crate) message: String,
}

impl HandlerFailure {
    fn new(error: &(dyn StdError + 'static), message: String) -> Self {
        match WsError::find(error) {
            Some(ws) => Self {
                code: ws.code(),
                reason: ws.reason().to_owned(),
                message,
            },
            None => Self::internal(message),
        }
    }

    fn internal(message: String) -> Self {
        Self {
            code: super::close_code::INTERNAL_ERROR,
            reason: "internal error".to_owned(),
            message,
        }
    }
}

/// The return types a WebSocket handler may have: `()`, or `Result<(), E>` where `E` is any
/// error type, `Box<dyn Error + Send + Sync>`, `anyhow::Error` (feature `anyhow`, on by
/// default), `String` or `&'static str`.
///
/// An `Err` closes the connection with the code and reason of the [`WsError`] found in the
/// error or its `source()` chain, or with 1011 "internal error".
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a valid WebSocket handler return type",
    label = "not a valid WebSocket handler return type",
    note = "a WebSocket handler returns `()` or `Result<(), E>` where `E` is an error type (such as `WsError`), `Box<dyn Error + Send + Sync>`, `anyhow::Error`, `String` or `&'static str`"
)]
pub trait IntoHandlerResult<Kind> {
    #[doc(hidden)]
    fn into_handler_result(self) -> Result<(), HandlerFailure>;
}

/// One marker per kind of handler error, so the impls of [`IntoHandlerResult`] do not overlap.
#[doc(hidden)]
#[allow(unreachable_pub)]
pub mod error_kind {
    #[derive(Debug)]
    pub struct Unit;
    #[derive(Debug)]
    pub struct StdError;
    #[derive(Debug)]
    pub struct Boxed;
    #[derive(Debug)]
    pub struct Text;
    #[derive(Debug)]
    pub struct Anyhow;
}

impl IntoHandlerResult<error_kind::Unit> for () {
    fn into_handler_result(self) -> Result<(), HandlerFailure> {
        Ok(())
    }
}

impl<E: StdError + Send + Sync + 'static> IntoHandlerResult<error_kind::StdError>
    for Result<(), E>
{
    fn into_handler_result(self) -> Result<(), HandlerFailure> {
        self.map_err(|e| HandlerFailure::new(&e, e.to_string()))
    }
}

impl IntoHandlerResult<error_kind::Boxed> for Result<(), BoxError> {
    fn into_handler_result(self) -> Result<(), HandlerFailure> {
        self.map_err(|e| HandlerFailure::new(&*e, e.to_string()))
    }
}

impl IntoHandlerResult<error_kind::Text> for Result<(), String> {
    fn into_handler_result(self) -> Result<(), HandlerFailure> {
        self.map_err(HandlerFailure::internal)
    }
}

impl IntoHandlerResult<error_kind::Text> for Result<(), &'static str> {
    fn into_handler_result(self) -> Result<(), HandlerFailure> {
        self.map_err(|e| HandlerFailure::internal(e.to_owned()))
    }
}

/// `anyhow::Error` is reached through its `Deref` (its conversion into `Box<dyn Error>` hides
/// the error it wraps from the `source()` chain).
#[cfg(feature = "anyhow")]
impl IntoHandlerResult<error_kind::Anyhow> for Result<(), anyhow::Error> {
    fn into_handler_result(self) -> Result<(), HandlerFailure> {
        self.map_err(|e| HandlerFailure::new(&*e, format!("{e:#}")))
    }
}

/// A type a path parameter can be parsed into: any `FromStr` type whose error displays.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be parsed from a path segment",
    label = "not a path parameter type",
    note = "a path parameter is parsed with `FromStr`: use `String`, an integer, `uuid::Uuid`, or a type of yours that implements `FromStr`"
)]
pub trait PathParam: Sized + Send + 'static {
    #[doc(hidden)]
    fn parse_param(value: &str) -> Result<Self, String>;
}

#[diagnostic::do_not_recommend]
impl<T> PathParam for T
where
    T: FromStr + Send + 'static,
    T::Err: Display,
{
    fn parse_param(value: &str) -> Result<Self, String> {
        value.parse().map_err(|e: T::Err| e.to_string())
    }
}

/// Parses path parameter `name` of the request; a value that does not parse is no match (404).
#[doc(hidden)]
#[allow(clippy::result_large_err)] // the error is the response, built once per refusal
pub fn path_param<T: PathParam>(ws: &WebSocket, name: &str) -> Result<T, WsStart> {
    let value = ws
        .path_param(name)
        .ok_or_else(|| WsStart::reject(not_found()))?;
    T::parse_param(value).map_err(|_| WsStart::reject(not_found()))
}

/// Tells, at the macro's call site, whether a handler parameter's type is an axum extractor,
/// so that a type that is not gets our diagnostic (which lists the route's path parameters)
/// rather than axum's.
#[doc(hidden)]
pub struct ExtractorProbe<T>(std::marker::PhantomData<fn() -> T>);

impl<T> ExtractorProbe<T> {
    #[allow(clippy::new_without_default)]
    pub const fn new() -> Self {
        Self(std::marker::PhantomData)
    }
}

impl<T> std::fmt::Debug for ExtractorProbe<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ExtractorProbe")
    }
}

#[doc(hidden)]
#[allow(unreachable_pub, missing_debug_implementations)]
pub mod extractor_probe {
    use super::{App, ExtractorProbe, FromRequestParts};

    /// The parameter's type is an extractor.
    pub struct Extractor;
    /// It is not: no impl of the generated trait exists for this marker, so the compiler
    /// reports that trait's message.
    pub struct NotExtractor;

    pub trait ProbeExtractor {
        fn __switchboard_extractor_kind(&self) -> Extractor {
            Extractor
        }
    }
    impl<T: FromRequestParts<App>> ProbeExtractor for &ExtractorProbe<T> {}

    pub trait ProbeNotExtractor {
        fn __switchboard_extractor_kind(&self) -> NotExtractor {
            NotExtractor
        }
    }
    impl<T> ProbeNotExtractor for ExtractorProbe<T> {}
}

/// Runs an axum extractor; a rejection is its response.
// Not an `async fn`: the future must not capture `T` (which need not outlive `'a`).
#[doc(hidden)]
#[allow(clippy::manual_async_fn)]
pub fn extract_parts<'a, T>(
    parts: &'a mut Parts,
    app: &'a App,
) -> impl Future<Output = Result<T, WsStart>> + Send + 'a
where
    T: FromRequestParts<App>,
{
    async move {
        T::from_request_parts(parts, app)
            .await
            .map_err(WsStart::reject)
    }
}

pub(crate) fn not_found() -> Response {
    (http::StatusCode::NOT_FOUND, "not found").into_response()
}

/// An HTTP route given to the builder (checked against the WebSocket routes).
pub(crate) struct HttpRoute {
    pub(crate) path: String,
    pub(crate) method_router: MethodRouter<App>,
}

/// The WebSocket routes under `prefix`, sorted, with every conflict reported (the same path
/// twice, or two patterns the router could not tell apart), and the HTTP routes checked against
/// them; then the router.
pub(crate) fn router(
    prefix: Option<&str>,
    http: Vec<HttpRoute>,
) -> Result<(Router<App>, Vec<&'static RouteRegistration>), Error> {
    let mut routes: Vec<&'static RouteRegistration> = inventory::iter::<RouteRegistration>
        .into_iter()
        .filter(|r| in_module(r.module_path, prefix))
        .collect();
    routes.sort_by_key(|r| (r.module_path, r.file, r.line));

    let mut matcher = matchit::Router::new();
    let mut owners: HashMap<String, String> = HashMap::new();
    let mut problems = Vec::new();
    let describe = |r: &RouteRegistration| {
        format!(
            "WebSocket route `{}` (`{}::{}` at {})",
            r.path,
            r.module_path,
            r.function,
            r.location()
        )
    };
    for r in &routes {
        match matcher.insert(r.axum_path, ()) {
            Ok(()) => {
                owners.insert(r.axum_path.to_owned(), describe(r));
            }
            Err(e) => problems.push(conflict(&describe(r), &e, &owners)),
        }
    }
    // An HTTP route may share the exact path of a WebSocket route: GET is the handshake, other
    // methods go to the HTTP route. Any other overlap is a conflict.
    let mut shared: HashMap<String, MethodRouter<App>> = HashMap::new();
    let mut own = Vec::new();
    let mut http_paths = std::collections::HashSet::new();
    for h in http {
        if let Some(problem) = http_path_problem(&h.path) {
            problems.push(format!("HTTP route `{}`: {problem}", h.path));
            continue;
        }
        if !http_paths.insert(h.path.clone()) {
            problems.push(format!(
                "HTTP route `{}` is given twice: give one method router with all its methods",
                h.path
            ));
            continue;
        }
        if routes.iter().any(|r| r.axum_path == h.path) {
            shared.insert(h.path, h.method_router);
            continue;
        }
        match matcher.insert(h.path.as_str(), ()) {
            Ok(()) => {
                owners.insert(h.path.clone(), format!("HTTP route `{}`", h.path));
                own.push(h);
            }
            Err(e) => problems.push(conflict(&format!("HTTP route `{}`", h.path), &e, &owners)),
        }
    }
    if !problems.is_empty() {
        return Err(Error::new(ErrorKind::Registration, problems.join("; ")));
    }

    let mut router = Router::new();
    for r in &routes {
        let route: &'static RouteRegistration = r;
        let mut method_router = axum::routing::get(
            move |axum::extract::State(app): axum::extract::State<App>,
                  request: axum::extract::Request| {
                super::handshake::handle(route, app, request)
            },
        );
        if let Some(http) = shared.remove(route.axum_path) {
            method_router = method_router.fallback(http);
        }
        router = router.route(route.axum_path, method_router);
    }
    for h in own {
        router = router.route(&h.path, h.method_router);
    }
    Ok((router, routes))
}

fn conflict(what: &str, error: &matchit::InsertError, owners: &HashMap<String, String>) -> String {
    match error {
        matchit::InsertError::Conflict { with } => {
            let other = owners
                .get(with)
                .cloned()
                .unwrap_or_else(|| format!("route `{with}`"));
            format!("{what} conflicts with {other}")
        }
        other => format!("{what}: {other}"),
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
    None
}

#[cfg(test)]
mod tests {
    use super::Converter;

    #[test]
    fn converters_follow_nexios() {
        assert!(Converter::Int.accepts("42"));
        assert!(!Converter::Int.accepts("-1"));
        assert!(!Converter::Int.accepts("abc"));
        assert!(!Converter::Int.accepts(""));
        assert!(Converter::Float.accepts("3.14"));
        assert!(Converter::Float.accepts("3"));
        assert!(!Converter::Float.accepts("3."));
        assert!(!Converter::Float.accepts(".5"));
        assert!(Converter::Slug.accepts("hello-world_2"));
        assert!(!Converter::Slug.accepts("hello world"));
        assert!(Converter::Uuid.accepts("123e4567-e89b-12d3-a456-426614174000"));
        assert!(!Converter::Uuid.accepts("123E4567-E89B-12D3-A456-426614174000"));
        assert!(!Converter::Uuid.accepts("not-a-uuid"));
        assert!(Converter::Path.accepts("a/b/c"));
        assert!(Converter::Str.accepts("anything at all"));
        assert!(!Converter::Str.accepts(""));
    }
}
