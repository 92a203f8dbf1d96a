//! Parameters that come from the app rather than from a message: [`State<T>`], and the
//! implementations that let [`App`] and friends be taken by listeners and handlers.

use std::any::type_name;
use std::ops::{Deref, DerefMut};

use crate::event::{EventContext, FromEventContext};
use crate::{App, Error, ErrorKind};

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
