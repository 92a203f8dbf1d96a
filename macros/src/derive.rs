//! `#[derive(Event)]` with `#[event("room.message")]` or `#[event("message", namespace = "chat")]`.

use proc_macro2::{Span, TokenStream};
use quote::quote_spanned;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Expr, Ident, Item, Lit, Token};

use switchboard_syntax::event_name as name;

use crate::handler::{self, Arg, Args, Errors};
use crate::private;

const EXAMPLE: &str = "#[event(\"room.message\")]";

pub(crate) fn expand(input: TokenStream) -> TokenStream {
    let (ident, generics, attrs) = match syn::parse2::<Item>(input) {
        Ok(Item::Struct(item)) => (item.ident, item.generics, item.attrs),
        Ok(Item::Enum(item)) => (item.ident, item.generics, item.attrs),
        Ok(Item::Union(item)) => (item.ident, item.generics, item.attrs),
        Ok(other) => {
            return syn::Error::new(
                other.span(),
                "`Event` derives on a struct, an enum or a union",
            )
            .to_compile_error();
        }
        Err(e) => return e.to_compile_error(),
    };
    let mut errors = Errors::default();
    if !generics.params.is_empty() {
        errors.push(
            generics.params.span(),
            "an event type cannot be generic",
            Some(
                "one type names one event: derive `Event` on a concrete type (a newtype around the generic one)",
            ),
        );
    }
    let attrs: Vec<_> = attrs
        .iter()
        .filter(|a| a.path().is_ident("event"))
        .collect();
    let full = match attrs.as_slice() {
        [] => {
            errors.push(
                ident.span(),
                format!("`{ident}` derives `Event` but names no event"),
                Some(&format!("write `{EXAMPLE}` under `#[derive(Event)]`")),
            );
            None
        }
        [attr, rest @ ..] => {
            for extra in rest {
                errors.push(
                    extra.path().span(),
                    "a second `#[event]` attribute",
                    Some("one type names one event"),
                );
            }
            match attr.parse_args::<Args>() {
                Ok(Args(args)) => full_name(args, attr.path().span(), &mut errors),
                Err(e) => {
                    errors.push_error(e);
                    None
                }
            }
        }
    };
    let private = private::path_at(ident.span());
    let error = errors.finish().err();
    // With an error, an impl all the same (as thiserror does), so the type's uses add no
    // "not an event type" of their own; the error says what to fix. A generic type gets
    // none (it could not be named without its parameters).
    let name = match (&error, full) {
        (None, Some(full)) => full,
        _ => "__invalid".to_owned(),
    };
    let fallback = generics.params.is_empty().then(|| {
        quote_spanned! {ident.span()=>
            impl #private::Event for #ident {
                const NAME: &'static ::core::primitive::str = #name;
            }
        }
    });
    let error = error.map(|e| e.to_compile_error());
    quote::quote!(#error #fallback)
}

/// The event's full name (`namespace:name` with a namespace), validated.
fn full_name(args: Punctuated<Arg, Token![,]>, span: Span, errors: &mut Errors) -> Option<String> {
    let mut event: Option<String> = None;
    let mut namespace: Option<String> = None;
    let mut seen: Vec<Ident> = Vec::new();
    // An argument that is not a name was reported already: no "missing event name".
    let mut reported = false;
    for arg in args {
        match arg {
            Arg::Lit(Lit::Str(lit)) if event.is_none() && seen.is_empty() => {
                let value = lit.value();
                match name::check(&value, name::Kind::Pattern) {
                    Ok(false) => {}
                    Ok(true) => errors.push(
                        lit.span(),
                        format!("`{value}` is a pattern: an event type names one event"),
                        Some("wildcards (`*`, `**`) are for listeners: write the exact name, such as `room.message`"),
                    ),
                    Err(e) => errors.push(
                        handler::literal_span(&lit, e.range.clone()),
                        e.message(&value),
                        Some(e.help()),
                    ),
                }
                event = Some(value);
            }
            Arg::Lit(Lit::Str(lit)) => errors.push(
                lit.span(),
                "unexpected second event name",
                Some("one type names one event"),
            ),
            Arg::Option { key, value } => {
                if seen.contains(&key) {
                    errors.push(key.span(), format!("duplicate option `{key}`"), None);
                    continue;
                }
                seen.push(key.clone());
                if key != "namespace" {
                    errors.push(
                        key.span(),
                        format!("unknown option `{key}`"),
                        Some("the only option is `namespace = \"..\"`"),
                    );
                    continue;
                }
                match value {
                    Expr::Lit(syn::ExprLit {
                        lit: Lit::Str(lit), ..
                    }) => {
                        let value = lit.value();
                        match name::check(&value, name::Kind::Namespace) {
                            Ok(_) => namespace = Some(value),
                            Err(e) => errors.push(
                                handler::literal_span(&lit, e.range.clone()),
                                e.message(&value),
                                Some(e.help()),
                            ),
                        }
                    }
                    other => errors.push(
                        other.span(),
                        "expected the namespace as a string literal",
                        Some("write `namespace = \"chat\"`"),
                    ),
                }
            }
            Arg::Lit(other) => {
                reported = true;
                errors.push(
                    other.span(),
                    "expected the event name as a string literal",
                    Some(&format!("write `{EXAMPLE}`")),
                );
            }
            Arg::Other(expr) => {
                reported = true;
                errors.push(
                    expr.span(),
                    "expected the event name as a string literal",
                    Some(&format!("write `{EXAMPLE}`")),
                );
            }
        }
    }
    let Some(event) = event else {
        if !reported {
            errors.push(
                span,
                "missing event name",
                Some(&format!("write the event name first: `{EXAMPLE}`")),
            );
        }
        return None;
    };
    Some(match namespace {
        Some(ns) => format!("{ns}:{event}"),
        None => event,
    })
}
