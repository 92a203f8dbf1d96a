//! Checks on the annotated item shared by every macro, the error collector they use, and the
//! arguments of the event attributes.

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, quote};
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Expr, FnArg, Ident, Item, ItemFn, Lit, LitStr, Signature, Token};

/// Collects independent mistakes so one compile reports them all.
#[derive(Default)]
pub(crate) struct Errors(Option<syn::Error>);

impl Errors {
    /// A mistake at `span`, in rustc's voice, with an optional `help` line.
    pub(crate) fn push(&mut self, span: Span, message: impl Into<String>, help: Option<&str>) {
        let mut message = message.into();
        if let Some(help) = help {
            message.push_str("\n= help: ");
            message.push_str(help);
        }
        self.push_error(syn::Error::new(span, message));
    }

    pub(crate) fn push_error(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(error),
            None => self.0 = Some(error),
        }
    }

    pub(crate) fn finish(self) -> Result<(), syn::Error> {
        self.0.map_or(Ok(()), Err)
    }

    /// The errors collected, or (where the caller knows there must be one) an error saying
    /// what could not be expanded: never a panic.
    pub(crate) fn into_error(self, what: &str) -> syn::Error {
        self.0
            .unwrap_or_else(|| syn::Error::new(Span::call_site(), format!("cannot expand {what}")))
    }
}

/// The span of the part `range` (in bytes of the value) of a string literal, or the whole
/// literal where that cannot be located (escapes, raw strings, an empty range, or a compiler
/// that cannot split a literal's span).
pub(crate) fn literal_span(lit: &LitStr, range: std::ops::Range<usize>) -> Span {
    let token = lit.token();
    let repr = token.to_string();
    let value = lit.value();
    let plain = repr.len() == value.len() + 2 && repr.starts_with('"') && !repr.contains('\\');
    if !plain || range.is_empty() {
        return lit.span();
    }
    token
        .subspan(range.start + 1..range.end + 1)
        .unwrap_or_else(|| lit.span())
}

/// What every macro requires of the annotated function.
pub(crate) struct Rules {
    /// `#[on]`, as messages name it.
    pub(crate) attribute: &'static str,
    /// `#[on("room.message")]`, as help lines show it.
    pub(crate) example: &'static str,
    /// Whether the function must be `async`.
    pub(crate) require_async: bool,
    /// What a receiver-free, generic-free function is called in help lines.
    pub(crate) what: &'static str,
}

/// Parses the annotated item as a function and checks what every macro requires of it.
/// `Err` carries the item unchanged (to re-emit) and the errors.
pub(crate) fn parse_fn(
    item: TokenStream,
    rules: &Rules,
    errors: &mut Errors,
) -> Result<ItemFn, TokenStream> {
    let item: Item = match syn::parse2(item.clone()) {
        Ok(item) => item,
        Err(e) => {
            errors.push_error(e);
            return Err(item);
        }
    };
    let func = match item {
        Item::Fn(func) => func,
        other => {
            errors.push(
                item_keyword_span(&other),
                format!("`{}` can only be applied to functions", rules.attribute),
                Some(&format!(
                    "`{}` registers {}: `{} async fn name(..) {{ .. }}`",
                    rules.attribute, rules.what, rules.example
                )),
            );
            return Err(other.into_token_stream());
        }
    };
    check_signature(&func.sig, rules, errors);
    Ok(func)
}

fn check_signature(sig: &Signature, rules: &Rules, errors: &mut Errors) {
    if rules.require_async && sig.asyncness.is_none() {
        errors.push(
            sig.fn_token.span,
            "the `async` keyword is missing from the function declaration",
            Some(&format!("{} is an `async fn`", rules.what)),
        );
    }
    if let Some(unsafety) = &sig.unsafety {
        errors.push(
            unsafety.span,
            format!("`{}` cannot be applied to an `unsafe fn`", rules.attribute),
            None,
        );
    }
    if let Some(abi) = &sig.abi {
        errors.push(
            abi.span(),
            format!(
                "`{}` cannot be applied to an `extern` function",
                rules.attribute
            ),
            None,
        );
    }
    if let Some(variadic) = &sig.variadic {
        errors.push(
            variadic.span(),
            "variadic functions are not supported",
            None,
        );
    }
    if !sig.generics.params.is_empty() {
        errors.push(
            sig.generics.span(),
            format!("{} cannot be generic", rules.what),
            Some("use concrete types: the framework calls the function through a registration made at compile time"),
        );
    }
    for input in &sig.inputs {
        if let FnArg::Typed(typed) = input {
            check_param_type(&typed.ty, rules, errors);
        }
        if let FnArg::Receiver(receiver) = input {
            errors.push(
                receiver.self_token.span,
                format!("`{}` cannot be applied to a method that takes `self`", rules.attribute),
                Some(&format!(
                    "{} is a free function; take what it needs as parameters, such as `App` or `State<T>`",
                    rules.what
                )),
            );
        }
    }
}

/// Parameter types the framework cannot supply: generic ones and borrowed ones.
fn check_param_type(ty: &syn::Type, rules: &Rules, errors: &mut Errors) {
    match ty {
        syn::Type::ImplTrait(t) => errors.push(
            t.impl_token.span,
            format!("{} cannot take an `impl Trait` parameter", rules.what),
            Some("an `impl Trait` parameter is generic: use a concrete type"),
        ),
        syn::Type::Reference(r) => errors.push(
            r.and_token.span,
            format!("{} takes its parameters by value", rules.what),
            Some(
                "the framework builds each argument and hands it over: take the owned type (`String`, `Value`, `App`, ..)",
            ),
        ),
        syn::Type::Paren(p) => check_param_type(&p.elem, rules, errors),
        syn::Type::Group(g) => check_param_type(&g.elem, rules, errors),
        _ => {}
    }
}

/// The `#[cfg]` attributes of the function, to put on what is generated for it: a function
/// that is compiled out takes its registration with it.
pub(crate) fn cfg_attrs(func: &ItemFn) -> Vec<&syn::Attribute> {
    func.attrs
        .iter()
        .filter(|a| a.path().is_ident("cfg"))
        .collect()
}

/// `name` carrying `span` (raw identifiers such as `r#match` stay raw).
pub(crate) fn respan(name: &syn::Ident, span: Span) -> syn::Ident {
    let mut name = name.clone();
    name.set_span(span);
    name
}

/// The function's name as registrations and messages show it (`match` for `r#match`).
pub(crate) fn display_name(name: &syn::Ident) -> String {
    syn::ext::IdentExt::unraw(name).to_string()
}

/// The keyword that names what kind of item this is (`struct`, `enum`, ..): the smallest token
/// to blame for "not a function".
fn item_keyword_span(item: &Item) -> Span {
    match item {
        Item::Struct(i) => i.struct_token.span,
        Item::Enum(i) => i.enum_token.span,
        Item::Union(i) => i.union_token.span,
        Item::Trait(i) => i.trait_token.span,
        Item::Impl(i) => i.impl_token.span,
        Item::Mod(i) => i.mod_token.span,
        Item::Const(i) => i.const_token.span,
        Item::Static(i) => i.static_token.span,
        Item::Type(i) => i.type_token.span,
        Item::Use(i) => i.use_token.span,
        other => other.span(),
    }
}

/// The function unchanged, plus the errors: what the macro emits when validation fails, so the
/// IDE keeps seeing the function and no second, spurious error appears.
pub(crate) fn with_errors(item: impl ToTokens, error: syn::Error) -> TokenStream {
    let error = error.into_compile_error();
    quote! {
        #item
        #error
    }
}

/// One argument of an attribute as written (`#[on(..)]`, `#[event(..)]`): a literal (the
/// event name), `key = value`, or anything else (reported by the caller).
pub(crate) enum Arg {
    Lit(Lit),
    Option { key: Ident, value: Expr },
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
            let value = input.parse()?;
            return Ok(Arg::Option { key, value });
        }
        Ok(Arg::Other(input.parse()?))
    }
}

pub(crate) struct Args(pub(crate) Punctuated<Arg, Token![,]>);

impl Parse for Args {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        Ok(Args(Punctuated::parse_terminated(input)?))
    }
}
