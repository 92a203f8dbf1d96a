//! The one place that spells the path from generated code back to the runtime.

use proc_macro2::{Span, TokenStream};
use quote::quote_spanned;

/// `::switchboard::__private`: everything generated code names goes through it.
pub(crate) fn path() -> TokenStream {
    path_at(Span::call_site())
}

/// The same path carrying `span`, so that a type error in an expression built on it is
/// reported at `span` (the user's token) rather than at the attribute.
pub(crate) fn path_at(span: Span) -> TokenStream {
    quote_spanned!(span=> ::switchboard::__private)
}
