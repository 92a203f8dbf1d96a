//! Parameters that come from the app rather than from a message: [`State<T>`], and the
//! implementations that let [`App`] and friends be taken by listeners and handlers.

use std::any::type_name;
use std::convert::Infallible;
use std::ops::{Deref, DerefMut};

use axum::extract::{FromRef, FromRequestParts};
use http::StatusCode;
use http::request::Parts;

use crate::event::{EventContext, FromEventContext};
use crate::{App, ChannelBox, Error, ErrorKind, Events};

/// A value given to [`Builder::state`](crate::Builder::state), as a parameter of a listener or a
/// WebSocket handler (cloned for each use).
///
/// ```
/// # use switchboard::prelude::*;
/// #[derive(Clone)]
/// struct Greeting(&'static str);
///
/// #[on("user.joined")]
/// async fn greet(name: String, State(greeting): State<Greeting>) {
///     println!("{} {name}", greeting.0);
/// }
/// # fn main() {}
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct State<T>(pub T);

impl<T> Deref for State<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> DerefMut for State<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

impl<T: Clone + Send + Sync + 'static> State<T> {
    pub(crate) fn from_app(app: &App) -> Result<Self, Error> {
        app.state::<T>().cloned().map(State).ok_or_else(|| {
            Error::new(
                ErrorKind::Config,
                format!(
                    "no state of type `{}`: give one with `App::builder().state(..)`",
                    type_name::<T>()
                ),
            )
        })
    }
}

impl<T: Clone + Send + Sync + 'static> FromEventContext for State<T> {
    fn from_event_context(cx: &mut EventContext<'_>) -> Result<Self, Error> {
        Self::from_app(cx.app())
    }
}

impl FromEventContext for ChannelBox {
    fn from_event_context(cx: &mut EventContext<'_>) -> Result<Self, Error> {
        Ok(cx.app().channels())
    }
}

// As axum extractors: `App`, `Events` and `State<T>` in HTTP handlers and WebSocket handlers,
// for any router state the app can be had from.

impl<S> FromRequestParts<S> for App
where
    App: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Infallible;

    async fn from_request_parts(_parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Ok(App::from_ref(state))
    }
}

impl<S> FromRequestParts<S> for Events
where
    App: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Infallible;

    async fn from_request_parts(_parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Ok(App::from_ref(state).events())
    }
}

impl<S, T> FromRequestParts<S> for State<T>
where
    App: FromRef<S>,
    S: Send + Sync,
    T: Clone + Send + Sync + 'static,
{
    type Rejection = (StatusCode, String);

    async fn from_request_parts(_parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Self::from_app(&App::from_ref(state))
            .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
    }
}

impl<S> FromRequestParts<S> for ChannelBox
where
    App: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Infallible;

    async fn from_request_parts(_parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Ok(App::from_ref(state).channels())
    }
}
