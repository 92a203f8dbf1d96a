//! `#[ws_route("/path/{param}")]`.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Expr, FnArg, Ident, ItemFn, Lit, LitStr, Pat, ReturnType, Token, Type};

use switchboard_syntax::route_path::{self as path, Converter, Segment};

use crate::handler::{self, Errors, Rules};
use crate::private;

const ATTRIBUTE: &str = "#[ws_route]";
const EXAMPLE: &str = "#[ws_route(\"/chat/{room}\")]";

enum Arg {
    Lit(Lit),
    Option(Ident),
    Other(Expr),
}

impl Parse for Arg {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        if input.peek(Lit) {
            return Ok(Arg::Lit(input.parse()?));
        }
        if input.peek(Ident) && input.peek2(Token![=]) {
            let key = input.call(syn::ext::IdentExt::parse_any)?;
            input.parse::<Token![=]>()?;
            input.parse::<Expr>()?;
            return Ok(Arg::Option(key));
        }
        Ok(Arg::Other(input.parse()?))
    }
}

struct Args(Punctuated<Arg, Token![,]>);

impl Parse for Args {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        Ok(Args(Punctuated::parse_terminated(input)?))
    }
}

/// The validated route: its template and parsed segments.
struct Route {
    template: LitStr,
    axum_path: String,
    params: Vec<(String, Converter)>,
}

fn validate(args: Args, errors: &mut Errors) -> Option<Route> {
    let mut template = None;
    let mut positional = false;
    for arg in args.0 {
        match arg {
            Arg::Lit(Lit::Str(lit)) if template.is_none() => template = Some(lit),
            Arg::Lit(Lit::Str(lit)) => errors.push(
                lit.span(),
                "unexpected second route path",
                Some("one attribute registers one route"),
            ),
            Arg::Lit(other) => {
                positional = true;
                errors.push(
                    other.span(),
                    "expected the route path as a string literal",
                    Some(&format!("write `{EXAMPLE}`")),
                );
            }
            Arg::Other(expr) => {
                positional = true;
                errors.push(
                    expr.span(),
                    "expected the route path as a string literal",
                    Some(&format!("write `{EXAMPLE}`")),
                );
            }
            Arg::Option(key) => errors.push(
                key.span(),
                format!("unknown option `{key}`"),
                Some("`#[ws_route]` takes only the route path; settings go to `App::builder()`"),
            ),
        }
    }
    let Some(template) = template else {
        if !positional {
            errors.push(
                Span::call_site(),
                "missing route path",
                Some(&format!("write the path: `{EXAMPLE}`")),
            );
        }
        return None;
    };
    let value = template.value();
    match path::parse(&value) {
        Ok(segments) => {
            let params = segments
                .iter()
                .filter_map(|s| match s {
                    Segment::Param { name, converter } => Some(((*name).to_owned(), *converter)),
                    Segment::Static(_) => None,
                })
                .collect();
            Some(Route {
                axum_path: path::axum_path(&segments),
                params,
                template,
            })
        }
        Err(e) => {
            errors.push(handler::literal_span(&template, e.range), e.message, e.help);
            None
        }
    }
}

/// How the generated code obtains one argument of the handler.
enum Param<'a> {
    WebSocket,
    Path { name: String, ty: &'a Type },
    Extractor { ty: &'a Type },
}

fn is_websocket(ty: &Type) -> bool {
    match ty {
        Type::Path(p) if p.qself.is_none() => p
            .path
            .segments
            .last()
            .is_some_and(|s| s.ident == "WebSocket" && s.arguments.is_empty()),
        _ => false,
    }
}

fn classify<'a>(func: &'a ItemFn, route: &Route, errors: &mut Errors) -> Vec<Param<'a>> {
    let mut params = Vec::new();
    let mut websocket: Option<Span> = None;
    for input in &func.sig.inputs {
        let FnArg::Typed(typed) = input else {
            continue; // refused by the shared checks
        };
        let ty = &*typed.ty;
        if is_websocket(ty) {
            if websocket.is_some() {
                errors.push(
                    ty.span(),
                    "the handler takes a second `WebSocket`",
                    Some("a connection has one `WebSocket`: keep one parameter"),
                );
            }
            websocket = Some(ty.span());
            params.push(Param::WebSocket);
            continue;
        }
        let name = match &*typed.pat {
            Pat::Ident(ident) => Some(syn::ext::IdentExt::unraw(&ident.ident).to_string()),
            _ => None,
        };
        match name {
            Some(name) if route.params.iter().any(|(p, _)| *p == name) => {
                params.push(Param::Path { name, ty });
            }
            _ => params.push(Param::Extractor { ty }),
        }
    }
    if websocket.is_none() {
        errors.push(
            func.sig.ident.span(),
            "a WebSocket handler takes the connection as a `WebSocket` parameter",
            Some("add a parameter such as `mut ws: WebSocket`"),
        );
    }
    params
}

pub(crate) fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    let rules = Rules {
        attribute: ATTRIBUTE,
        example: EXAMPLE,
        require_async: true,
        what: "a WebSocket handler",
    };
    let func = handler::parse_fn(item, &rules, &mut errors);
    let route = match syn::parse2::<Args>(args) {
        Ok(args) => validate(args, &mut errors),
        Err(e) => {
            errors.push_error(e);
            None
        }
    };
    let func = match func {
        Ok(func) => func,
        Err(item) => {
            return handler::with_errors(item, errors.into_error("the WebSocket route"));
        }
    };
    let params = route
        .as_ref()
        .map(|route| classify(&func, route, &mut errors));
    match (errors.finish(), route, params) {
        (Ok(()), Some(route), Some(params)) => generate(&route, &params, &func),
        (Err(error), ..) => handler::with_errors(func, error),
        (Ok(()), ..) => {
            handler::with_errors(func, Errors::default().into_error("the WebSocket route"))
        }
    }
}

fn generate(route: &Route, params: &[Param<'_>], func: &ItemFn) -> TokenStream {
    let private = private::path();
    let name = &func.sig.ident;
    let args: Vec<Ident> = (0..params.len())
        .map(|i| format_ident!("__arg{}", i))
        .collect();
    let (ws_binding, other_bindings) = bindings(params, &args);
    let ret_span = match &func.sig.output {
        ReturnType::Type(_, ty) => ty.span(),
        ReturnType::Default => name.span(),
    };
    let ret_private = private::path_at(ret_span);
    let callee = handler::respan(name, ret_span);
    let run = quote_spanned!(ret_span=> #ret_private::WsStart::run(#callee(#(#args),*)));
    let extractor_trait = extractor_trait(route, name.span());
    let registration = registration(route, name);
    let cfg = handler::cfg_attrs(func);
    quote_spanned! {name.span()=>
        #func

        #(#cfg)*
        #[doc(hidden)]
        #[allow(non_camel_case_types, unused_qualifications)]
        const _: () = {
            #extractor_trait

            #[allow(unused_mut, unused_variables)]
            fn __switchboard_route(
                __request: #private::WsRequest,
            ) -> #private::BoxFuture<#private::WsStart> {
                #[allow(unused_imports)]
                use #private::extractor_probe::{ProbeExtractor as _, ProbeNotExtractor as _};
                ::std::boxed::Box::pin(async move {
                    let (mut __parts, __app, __ws) = __request.into_parts();
                    let mut __ws = ::core::option::Option::Some(__ws);
                    #(#other_bindings)*
                    #(#ws_binding)*
                    #run
                })
            }

            #registration
        };
    }
}

/// How each argument is bound, in two groups: the `WebSocket` is moved into its argument after
/// every other argument is extracted (path parameters read it).
fn bindings(params: &[Param<'_>], args: &[Ident]) -> (Vec<TokenStream>, Vec<TokenStream>) {
    let mut ws = Vec::new();
    let mut others = Vec::new();
    for (param, arg) in params.iter().zip(args) {
        match param {
            Param::WebSocket => {
                ws.push(quote!(let #arg = __ws.take().expect("one WebSocket parameter");));
            }
            Param::Path { name, ty } => {
                let at = private::path_at(ty.span());
                others.push(quote_spanned! {ty.span()=>
                    let #arg: #ty = match #at::path_param::<#ty>(
                        __ws.as_ref().expect("the WebSocket is taken last"),
                        #name,
                    ) {
                        ::core::result::Result::Ok(value) => value,
                        ::core::result::Result::Err(rejection) => return rejection,
                    };
                });
            }
            Param::Extractor { ty } => {
                let at = private::path_at(ty.span());
                others.push(quote_spanned! {ty.span()=>
                    let #arg: #ty = match __SwitchboardExtractor::<#ty>::__switchboard_extract(
                        (&&#at::ExtractorProbe::<#ty>::new()).__switchboard_extractor_kind(),
                        &mut __parts,
                        &__app,
                    )
                    .await
                    {
                        ::core::result::Result::Ok(value) => value,
                        ::core::result::Result::Err(rejection) => return rejection,
                    };
                });
            }
        }
    }
    (ws, others)
}

/// A trait implemented only by the marker of extractors, whose diagnostic names the route's
/// path parameters: a parameter that is neither gets this message instead of axum's.
fn extractor_trait(route: &Route, span: Span) -> TokenStream {
    let private = private::path();
    let template = route.template.value();
    // `{` and `}` are format syntax in diagnostic attributes.
    let shown = template.replace('{', "{{").replace('}', "}}");
    let listed = if route.params.is_empty() {
        format!("`{shown}` has no path parameters")
    } else {
        let names: Vec<String> = route.params.iter().map(|(n, _)| format!("`{n}`")).collect();
        format!("the path parameters of `{shown}` are: {}", names.join(", "))
    };
    let message = format!("`{{T}}` is neither a path parameter of `{shown}` nor an extractor");
    // At the function's name: where "the trait is implemented for .." notes point.
    quote_spanned! {span=>
        #[diagnostic::on_unimplemented(
            message = #message,
            label = "not a path parameter, and not an extractor",
            note = #listed,
            note = "a parameter named like a path parameter is parsed from the path; any other is the `WebSocket`, or an extractor such as `App`, `Events`, `State<T>`, `Query<T>` or `HeaderMap` (any `FromRequestParts<App>`)"
        )]
        trait __SwitchboardExtractor<T>: ::core::marker::Sized {
            fn __switchboard_extract<'a>(
                self,
                parts: &'a mut #private::Parts,
                app: &'a #private::App,
            ) -> impl ::core::future::Future<
                Output = ::core::result::Result<T, #private::WsStart>,
            > + ::core::marker::Send + 'a;
        }

        // Implemented by the marker of extractors only: for another type the compiler
        // reports this trait itself, with the message above.
        impl<T: #private::FromRequestParts<#private::App>> __SwitchboardExtractor<T>
            for #private::extractor_probe::Extractor
        {
            fn __switchboard_extract<'a>(
                self,
                parts: &'a mut #private::Parts,
                app: &'a #private::App,
            ) -> impl ::core::future::Future<
                Output = ::core::result::Result<T, #private::WsStart>,
            > + ::core::marker::Send + 'a {
                #private::extract_parts::<T>(parts, app)
            }
        }
    }
}

/// The `inventory` record of the route.
fn registration(route: &Route, name: &Ident) -> TokenStream {
    let private = private::path();
    let template = &route.template;
    let axum_path = &route.axum_path;
    let converters = route.params.iter().map(|(name, converter)| {
        let variant = Ident::new(converter.variant(), Span::call_site());
        quote!((#name, #private::Converter::#variant))
    });
    let function = handler::display_name(name);
    // At the call site, so `line!()` is the attribute's line.
    quote! {
        #private::inventory::submit! {
            #private::RouteRegistration {
                route: #private::WsRoute {
                    path: #template,
                    params: &[#(#converters),*],
                    handler: __switchboard_route,
                },
                axum_path: #axum_path,
                function: #function,
                module_path: ::core::module_path!(),
                file: ::core::file!(),
                line: ::core::line!(),
            }
        }
    }
}
