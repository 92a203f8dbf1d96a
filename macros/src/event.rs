//! `#[on("name", priority = .., namespace = "..")]` and `#[once(..)]`.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Expr, FnArg, Ident, ItemFn, Lit, LitStr, ReturnType, Type};

use switchboard_syntax::event_name as name;

use crate::handler::{self, Arg, Args, Errors, Rules};
use crate::private;

/// Which macro: the two differ only in `once`.
#[derive(Clone, Copy)]
pub(crate) enum Kind {
    On,
    Once,
}

impl Kind {
    fn attribute(self) -> &'static str {
        match self {
            Kind::On => "#[on]",
            Kind::Once => "#[once]",
        }
    }

    /// The attribute as a user writes it, for help lines.
    fn example(self) -> &'static str {
        match self {
            Kind::On => "#[on(\"room.message\")]",
            Kind::Once => "#[once(\"connection.init\")]",
        }
    }
}

const OPTIONS: &str = "valid options are `priority` and `namespace`";
const PRIORITIES: [&str; 5] = ["highest", "high", "normal", "low", "lowest"];

/// The event a listener names: a string literal (checked here), a path to a `const` name
/// (checked when the constant is evaluated, by a `const fn` of the runtime), or an event type
/// (its `Event::NAME`; the payload parameter must be that type).
enum Event {
    Literal(LitStr),
    Const(syn::Path),
    Type(syn::Path),
}

/// The validated attribute.
struct Listener {
    event: Event,
    namespace: Option<LitStr>,
    priority: Ident,
}

fn validate(args: Args, kind: Kind, errors: &mut Errors) -> Option<Listener> {
    let mut event = None;
    let mut namespace = None;
    let mut priority = None;
    let mut seen: Vec<Ident> = Vec::new();
    // A positional argument that is not a string was reported already: no "missing name".
    let mut positional = false;
    for arg in args.0 {
        match arg {
            Arg::Lit(Lit::Str(lit)) if event.is_none() && seen.is_empty() => {
                let value = lit.value();
                if let Err(e) = name::check(&value, name::Kind::Pattern) {
                    errors.push(
                        handler::literal_span(&lit, e.range.clone()),
                        e.message(&value),
                        Some(e.help()),
                    );
                }
                event = Some(Event::Literal(lit));
            }
            Arg::Lit(Lit::Str(lit)) => {
                errors.push(
                    lit.span(),
                    "unexpected second event name",
                    Some("one attribute registers one event; add another attribute for another event"),
                );
            }
            Arg::Lit(other) => {
                positional = true;
                errors.push(
                    other.span(),
                    "expected the event name as a string literal",
                    Some(&format!("write `{}`", kind.example())),
                );
            }
            Arg::Other(Expr::Path(p))
                if event.is_none() && seen.is_empty() && p.qself.is_none() =>
            {
                match const_path(p.path, errors) {
                    Some(event_path) => event = Some(event_path),
                    None => positional = true,
                }
            }
            Arg::Other(Expr::Path(p)) if event.is_some() => {
                errors.push(
                    p.span(),
                    "unexpected second event name",
                    Some("one attribute registers one event; add another attribute for another event"),
                );
            }
            Arg::Other(expr) => {
                positional = true;
                errors.push(
                    expr.span(),
                    "expected the event name as a string literal or a constant, or an option `key = value`",
                    Some(&format!("write `{}`; {OPTIONS}", kind.example())),
                );
            }
            Arg::Option { key, value } => {
                if seen.contains(&key) {
                    errors.push(key.span(), format!("duplicate option `{key}`"), None);
                    continue;
                }
                seen.push(key.clone());
                match key.to_string().as_str() {
                    "priority" => priority = priority_of(&value, errors),
                    "namespace" => namespace = namespace_of(&value, errors),
                    other => errors.push(
                        key.span(),
                        format!("unknown option `{other}`"),
                        Some(OPTIONS),
                    ),
                }
            }
        }
    }
    let Some(event) = event else {
        if !positional {
            errors.push(
                Span::call_site(),
                "missing event name",
                Some(&format!("write the event name first: `{}`", kind.example())),
            );
        }
        return None;
    };
    Some(Listener {
        event,
        namespace,
        priority: priority.unwrap_or_else(|| Ident::new("Normal", Span::call_site())),
    })
}

/// A path to a `const` holding the event name (its last segment in SCREAMING_SNAKE_CASE, as
/// Rust names constants), or to an event type (in UpperCamelCase, as Rust names types).
fn const_path(path: syn::Path, errors: &mut Errors) -> Option<Event> {
    let last = path.segments.last()?;
    let name = syn::ext::IdentExt::unraw(&last.ident).to_string();
    let upper = name.chars().any(|c| c.is_ascii_uppercase());
    let lower = name.chars().any(char::is_lowercase);
    if upper && !lower && last.arguments.is_empty() {
        return Some(Event::Const(path));
    }
    if name.starts_with(|c: char| c.is_ascii_uppercase()) && lower {
        return Some(Event::Type(path));
    }
    errors.push(
        last.ident.span(),
        format!("`{name}` is neither a constant nor a type name"),
        Some(
            "write the event name as a string literal, a path to a `const` of type `&str` named in SCREAMING_SNAKE_CASE (`#[on(names::WS_ERROR)]`), or an event type (`#[on(RoomMessage)]`)",
        ),
    );
    None
}

fn priority_of(value: &Expr, errors: &mut Errors) -> Option<Ident> {
    let help = "expected one of `highest`, `high`, `normal`, `low`, `lowest`";
    let ident = match value {
        Expr::Path(p) if p.qself.is_none() => p.path.get_ident(),
        _ => None,
    };
    match ident {
        Some(ident) if PRIORITIES.contains(&ident.to_string().as_str()) => {
            let name = ident.to_string();
            let variant = format!("{}{}", name[..1].to_uppercase(), &name[1..]);
            Some(Ident::new(&variant, ident.span()))
        }
        Some(ident) => {
            errors.push(
                ident.span(),
                format!("invalid priority `{ident}`"),
                Some(help),
            );
            None
        }
        None => {
            errors.push(value.span(), "invalid priority", Some(help));
            None
        }
    }
}

fn namespace_of(value: &Expr, errors: &mut Errors) -> Option<LitStr> {
    match value {
        Expr::Lit(syn::ExprLit {
            lit: Lit::Str(lit), ..
        }) => {
            let value = lit.value();
            match name::check(&value, name::Kind::Namespace) {
                Ok(_) => return Some(lit.clone()),
                Err(e) => errors.push(
                    handler::literal_span(lit, e.range.clone()),
                    e.message(&value),
                    Some(e.help()),
                ),
            }
            None
        }
        other => {
            errors.push(
                other.span(),
                "expected the namespace as a string literal",
                Some("write `namespace = \"websocket\"`"),
            );
            None
        }
    }
}

pub(crate) fn expand(kind: Kind, args: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    let rules = Rules {
        attribute: kind.attribute(),
        example: kind.example(),
        require_async: false,
        what: "a listener",
    };
    let func = handler::parse_fn(item, &rules, &mut errors);
    let listener = match syn::parse2::<Args>(args) {
        Ok(args) => validate(args, kind, &mut errors),
        Err(e) => {
            errors.push_error(e);
            None
        }
    };
    let func = match func {
        Ok(func) => func,
        Err(item) => {
            return handler::with_errors(item, errors.into_error("the listener"));
        }
    };
    match (errors.finish(), listener) {
        (Ok(()), Some(listener)) => generate(kind, &listener, &func),
        (Err(error), _) => handler::with_errors(func, error),
        (Ok(()), None) => handler::with_errors(func, Errors::default().into_error("the listener")),
    }
}

fn generate(kind: Kind, listener: &Listener, func: &ItemFn) -> TokenStream {
    let private = private::path();
    let name = &func.sig.ident;
    let args: Vec<Ident> = (0..func.sig.inputs.len())
        .map(|i| format_ident!("__arg{}", i))
        .collect();
    let extract = func
        .sig
        .inputs
        .iter()
        .zip(&args)
        .filter_map(|(input, arg)| match input {
            FnArg::Typed(pat) => Some(extract(&pat.ty, arg, &listener.event)),
            // Refused by validation.
            FnArg::Receiver(_) => None,
        });
    // Spanned at the return type, so an invalid one is reported there (once).
    let ret_span = match &func.sig.output {
        ReturnType::Type(_, ty) => ty.span(),
        ReturnType::Default => name.span(),
    };
    let ret_private = private::path_at(ret_span);
    let callee = handler::respan(name, ret_span);
    let call = quote_spanned!(ret_span=> #callee(#(#args),*));
    let run = if func.sig.asyncness.is_some() {
        quote_spanned!(ret_span=> #ret_private::ListenerCall::pending(#call))
    } else {
        quote_spanned!(ret_span=> #ret_private::ListenerCall::done(#call))
    };
    let registration = registration(kind, listener, name);
    let cfg = handler::cfg_attrs(func);
    let check_const = match &listener.event {
        Event::Const(path) => {
            let at = private::path_at(path.span());
            quote_spanned! {path.span()=>
                const __SWITCHBOARD_EVENT: &str = #path;
                const _: () = #at::assert_event_name(__SWITCHBOARD_EVENT);
            }
        }
        Event::Type(path) => {
            let at = private::path_at(path.span());
            quote_spanned! {path.span()=>
                const __SWITCHBOARD_EVENT: &str = <#path as #at::Event>::NAME;
                const _: () = #at::assert_exact_event_name(__SWITCHBOARD_EVENT);
            }
        }
        Event::Literal(_) => quote!(),
    };
    quote_spanned! {name.span()=>
        #func

        #(#cfg)*
        #[doc(hidden)]
        #[allow(non_upper_case_globals, unused_qualifications, clippy::unit_arg)]
        const _: () = {
            #[allow(unused_imports)]
            use #private::probe::{ProbeCloned as _, ProbeContext as _, ProbeJson as _, ProbeTyped as _};

            #[allow(unused_variables)]
            fn __switchboard_listener(
                __cx: &mut #private::EventContext<'_>,
                __may_move: bool,
            ) -> #private::ListenerCall {
                #(#extract)*
                #run
            }

            #check_const
            #registration
        };
    }
}

/// Binds one argument: the probe picks how its type is taken (context extractor, the emitted
/// value, JSON), spanned at the type so a type that fits none is reported there. For a typed
/// event, the payload must be the event's type: checked at the parameter.
fn extract(ty: &Type, arg: &Ident, event: &Event) -> TokenStream {
    let private = private::path_at(ty.span());
    let typed = match event {
        Event::Type(path) => quote_spanned! {ty.span()=>
            #private::check_payload::<#path, #ty, _>(
                &(&&&&#private::Probe::<#ty>::new()).__switchboard_kind(),
            );
        },
        _ => quote!(),
    };
    quote_spanned! {ty.span()=>
        #typed
        let #arg: #ty = match #private::extract(
            (&&&&#private::Probe::<#ty>::new()).__switchboard_kind(),
            __cx,
            __may_move,
        ) {
            ::core::result::Result::Ok(value) => value,
            ::core::result::Result::Err(error) => {
                return #private::ListenerCall::payload_error(error);
            }
        };
    }
}

/// The `inventory` record of the listener.
fn registration(kind: Kind, listener: &Listener, name: &Ident) -> TokenStream {
    let private = private::path();
    let event = match &listener.event {
        Event::Literal(lit) => quote!(#lit),
        Event::Const(_) | Event::Type(_) => quote!(__SWITCHBOARD_EVENT),
    };
    let namespace = listener
        .namespace
        .as_ref()
        .map_or_else(|| quote!(""), |ns| quote!(#ns));
    let priority = &listener.priority;
    let once = matches!(kind, Kind::Once);
    let function = handler::display_name(name);
    // At the call site, so `line!()` is the attribute's line: two attributes on one function
    // are two places.
    quote! {
        #private::inventory::submit! {
            #private::ListenerRegistration {
                event: #event,
                namespace: #namespace,
                priority: #private::Priority::#priority,
                once: #once,
                call: __switchboard_listener,
                function: #function,
                module_path: ::core::module_path!(),
                file: ::core::file!(),
                line: ::core::line!(),
            }
        }
    }
}
