//! What a WebSocket handler is to the framework: the route it serves, how the generated code
//! builds its arguments (path parameters, extractors, the `WebSocket`), and the return types it
//! may have.

use std::error::Error as StdError;
use std::fmt::Display;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;

use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use http::request::Parts;
pub use switchboard_syntax::route_path::Converter;

use super::{WebSocket, WsError};
use crate::App;

pub(crate) type BoxError = Box<dyn StdError + Send + Sync>;
pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A WebSocket route as the handshake needs it: the template, the converter of each path
/// parameter, and the generated entry point of the handler.
#[doc(hidden)]
#[derive(Debug)]
pub struct Route {
    /// The path as written, converters included: `/items/{id:int}`.
    pub path: &'static str,
    /// The converter of each path parameter.
    pub params: &'static [(&'static str, Converter)],
    pub handler: fn(WsRequest) -> BoxFuture<WsStart>,
}

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
        // A map, not `async move { handler.await.into_handler_result() }`: an async block holds
        // the handler's future twice (captured, and being awaited), doubling what every
        // connection keeps for its life (840 bytes instead of 416 for the chat example's).
        // (A function pointer: the future's type does not name `Kind`, which need not be
        // `'static`.)
        let finish: fn(F::Output) -> Result<(), HandlerFailure> =
            IntoHandlerResult::into_handler_result;
        WsStart::Run(Box::pin(handler.map(finish)))
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

    pub(crate) fn internal(message: String) -> Self {
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
