//! Attribute macros for [Switchboard](https://docs.rs/switchboard): `#[ws_route]`, `#[on]` and
//! `#[once]`.
//!
//! Use them through `switchboard` (`use switchboard::prelude::*;`), which re-exports them; the
//! code they generate names only `::switchboard::__private`.
//!
//! Each macro checks what it can at compile time (every mistake is a spanned error), emits the
//! function unchanged, and registers it with one `inventory::submit!` of a constant record that
//! `App::from_registry()` collects at startup.

mod derive;
mod event;
mod handler;
mod private;
mod route;

use proc_macro::TokenStream;

/// Registers an `async fn` (or a plain `fn`) as a listener of an event.
///
/// ```text
/// #[on("room.message")]
/// async fn broadcast(msg: RoomMessage, app: App) -> Result<(), switchboard::Error> { .. }
///
/// #[on("message.received", namespace = "websocket", priority = high)]
/// fn log(msg: serde_json::Value) { .. }
/// ```
///
/// The name may be a pattern: `*` matches one segment, `**` any number (`chat.*`,
/// `websocket:**`). It may be an event type (`#[on(RoomMessage)]`, a type that derives
/// `Event`): the listener hears the type's event, and its payload parameter must be that
/// type (a compile error on the parameter otherwise). A path is taken for a constant when its
/// last segment is in SCREAMING_SNAKE_CASE and for a type when it is in UpperCamelCase, as
/// Rust names them. It may also be a path to a `const` holding the name, named in
/// SCREAMING_SNAKE_CASE (`#[on(names::WS_ERROR)]`, `#[on(ROOM_MESSAGE)]`): the constant is
/// checked at compile time by the same rules. Options: `priority = highest | high | normal | low | lowest` (default
/// `normal`) and `namespace = "ns"` (the listener hears `ns:name`).
///
/// Parameters are the payload (the emitted type itself, any `DeserializeOwned` type, or
/// `serde_json::Value`) and context extractors (`App`, `Events`, `ChannelBox`, `State<T>`,
/// `EventMeta`), in any order. The return type is `()`, `Result<(), E>` with `E: Display`,
/// `ControlFlow<()>` (`Break` stops lower priorities) or `Result<ControlFlow<()>, E>`.
#[proc_macro_attribute]
pub fn on(args: TokenStream, item: TokenStream) -> TokenStream {
    event::expand(event::Kind::On, args.into(), item.into()).into()
}

/// Registers an `async fn` (or a plain `fn`) as a listener that runs at most once per app, even
/// when many tasks emit at the same moment. Takes the same arguments as [`macro@on`].
///
/// ```text
/// #[once("connection.init")]
/// async fn welcome(init: ConnInit) { .. }
/// ```
#[proc_macro_attribute]
pub fn once(args: TokenStream, item: TokenStream) -> TokenStream {
    event::expand(event::Kind::Once, args.into(), item.into()).into()
}

/// Derives `switchboard::Event` for a payload type: the type names its event.
///
/// ```text
/// #[derive(Event, Clone, Serialize, Deserialize)]
/// #[event("room.message")]                 // or #[event("message", namespace = "chat")]
/// struct RoomMessage { room: String, text: String }
///
/// app.events().emit_event(RoomMessage { .. }).await;
///
/// #[on(RoomMessage)]
/// async fn log(msg: RoomMessage) { .. }
/// ```
///
/// The name is checked as `#[on]` checks one, and must name one event (no wildcard); the type
/// must not be generic, and must be `Serialize + Clone + Send + Sync + 'static`.
#[proc_macro_derive(Event, attributes(event))]
pub fn derive_event(item: TokenStream) -> TokenStream {
    derive::expand(item.into()).into()
}

/// Registers an `async fn` as the handler of a WebSocket route.
///
/// ```text
/// #[ws_route("/chat/{room}")]
/// async fn chat_room(mut ws: WebSocket, room: String, app: App) -> Result<(), WsError> {
///     ws.accept().await?;
///     ..
/// }
/// ```
///
/// The path has static segments and parameters: `{name}`, or with one of Nexios' converters
/// `{name:int|float|str|path|uuid|slug}` (`path` takes the rest of the path, slashes included,
/// and must come last). A value that does not match its converter, or does not parse into the
/// parameter's type, is no match: 404, before any upgrade.
///
/// Parameters: the connection (`WebSocket`, exactly once); parameters named like a path
/// parameter, parsed with `FromStr`; and extractors (`App`, `Events`, `State<T>`, `Query<T>`,
/// `HeaderMap`, your own `FromRequestParts<App>` types), which run before the upgrade (a
/// rejection is their HTTP response). The return type is `()` or `Result<(), E>`.
#[proc_macro_attribute]
pub fn ws_route(args: TokenStream, item: TokenStream) -> TokenStream {
    route::expand(args.into(), item.into()).into()
}

#[cfg(test)]
mod tests {
    //! Every input gives working code or a spanned error, never a panic: thousands of token
    //! streams made by mutating valid attributes and functions go through each macro.

    use std::panic::{AssertUnwindSafe, catch_unwind};
    use std::str::FromStr;

    use proc_macro2::{Delimiter, Group, Literal, TokenStream, TokenTree};

    /// A small deterministic generator (xorshift), so a failure is reproducible.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    const ARGS: &[&str] = &[
        r#""room.message""#,
        r#""room.message", priority = high, namespace = "ns""#,
        r#""chat.*""#,
        r#"ROOM_MESSAGE"#,
        r#"names::WS_ERROR, priority = lowest"#,
        r#""/chat/{room}""#,
        r#""/items/{id:int}/{rest:path}""#,
        r#""/""#,
    ];

    const ITEMS: &[&str] = &[
        "async fn f(msg: Value, app: App) -> Result<(), String> { Ok(()) }",
        "pub(crate) fn r#match(State(s): State<Config>) {}",
        "async fn chat(mut ws: WebSocket, room: String, app: App) -> Result<(), WsError> { ws.accept().await }",
        "#[doc = \"x\"] async fn r#type(mut ws: WebSocket, r#type: u32) where u32: Copy {}",
        "struct NotAFunction;",
    ];

    /// Tokens a mutation may insert: odd literals, punctuation, keywords, groups.
    fn atom(rng: &mut Rng) -> TokenTree {
        const LITERALS: &[&str] = &[
            "",
            " ",
            "a b",
            "é",
            "é.ü",
            "{",
            "}",
            "{x:",
            "{x:int",
            "{:int}",
            "/{a}/{a}",
            "**",
            "***",
            "a.**b",
            ".",
            "::",
            "a..b",
            "\\",
            "\"",
            "r#match",
            "/x/{rest:path}/y",
            "/items/{id:nope}",
            "\u{0}",
            "\u{3000}",
        ];
        match rng.below(6) {
            0 => {
                let text = LITERALS[rng.below(LITERALS.len())];
                TokenTree::Literal(Literal::string(text))
            }
            1 => TokenTree::Literal(Literal::string(&"a".repeat(rng.below(5000)))),
            2 => TokenTree::Literal(Literal::u32_unsuffixed(rng.below(1000) as u32)),
            3 => {
                let source = [
                    "=", ",", "::", "#", "&", "*", "->", "!", "'a", "..", ";", "<", ">",
                ];
                TokenStream::from_str(source[rng.below(source.len())])
                    .expect("valid tokens")
                    .into_iter()
                    .next()
                    .expect("one token")
            }
            4 => {
                let words = [
                    "fn",
                    "async",
                    "pub",
                    "self",
                    "Self",
                    "impl",
                    "dyn",
                    "where",
                    "mut",
                    "r#fn",
                    "priority",
                    "namespace",
                    "high",
                    "WebSocket",
                    "App",
                    "T",
                    "unsafe",
                    "extern",
                ];
                TokenStream::from_str(words[rng.below(words.len())])
                    .expect("valid tokens")
                    .into_iter()
                    .next()
                    .expect("one token")
            }
            _ => {
                let delimiters = [Delimiter::Parenthesis, Delimiter::Brace, Delimiter::Bracket];
                let inner: TokenStream = (0..rng.below(3)).map(|_| atom(rng)).collect();
                TokenTree::Group(Group::new(delimiters[rng.below(3)], inner))
            }
        }
    }

    /// `tokens` with a few random mutations, recursing into groups.
    fn mutate(tokens: TokenStream, rng: &mut Rng, depth: usize) -> TokenStream {
        let mut trees: Vec<TokenTree> = tokens.into_iter().collect();
        for _ in 0..=rng.below(3) {
            let at = rng.below(trees.len() + 1);
            match rng.below(5) {
                0 if at < trees.len() => {
                    trees.remove(at);
                }
                1 if at < trees.len() => {
                    let copy = trees[at].clone();
                    trees.insert(at, copy);
                }
                2 if at < trees.len() && depth < 3 => {
                    if let TokenTree::Group(group) = &trees[at] {
                        let inner = mutate(group.stream(), rng, depth + 1);
                        trees[at] = TokenTree::Group(Group::new(group.delimiter(), inner));
                    }
                }
                3 if at < trees.len() => trees[at] = atom(rng),
                _ => trees.insert(at, atom(rng)),
            }
        }
        trees.into_iter().collect()
    }

    fn expands_without_panicking(expand: impl Fn(TokenStream, TokenStream) -> TokenStream) {
        let mut rng = Rng(0x5eed_cafe_f00d_d00d);
        let mut errors = 0;
        const CASES: usize = 6000;
        for case in 0..CASES {
            let args = TokenStream::from_str(ARGS[rng.below(ARGS.len())]).expect("valid");
            let item = TokenStream::from_str(ITEMS[rng.below(ITEMS.len())]).expect("valid");
            let (args, item) = match rng.below(3) {
                0 => (mutate(args, &mut rng, 0), item),
                1 => (args, mutate(item, &mut rng, 0)),
                _ => (mutate(args, &mut rng, 0), mutate(item, &mut rng, 0)),
            };
            let shown = format!("args `{args}`, item `{item}`");
            let output = catch_unwind(AssertUnwindSafe(|| expand(args, item)))
                .unwrap_or_else(|_| panic!("case {case} panicked: {shown}"));
            if output.to_string().contains("compile_error") {
                errors += 1;
            }
        }
        assert!(errors > CASES / 2, "most mutations are mistakes: {errors}");
    }

    #[test]
    fn on_never_panics() {
        expands_without_panicking(|args, item| {
            crate::event::expand(crate::event::Kind::On, args, item)
        });
    }

    #[test]
    fn once_never_panics() {
        expands_without_panicking(|args, item| {
            crate::event::expand(crate::event::Kind::Once, args, item)
        });
    }

    #[test]
    fn ws_route_never_panics() {
        expands_without_panicking(crate::route::expand);
    }

    #[test]
    fn known_mistakes_are_errors() {
        let cases: &[(&str, &str)] = &[
            (r#""""#, "fn f() {}"),
            (r#""a b""#, "fn f() {}"),
            (r#""é""#, "fn f() {}"),
            (r#""room.message""#, "struct S;"),
            (r#""room.message""#, "fn f(self) {}"),
            (r#""room.message""#, "fn f<T>(t: T) {}"),
            (r#""room.message""#, "fn f(x: impl Clone) {}"),
            (r#""room.message""#, "fn f(x: &str) {}"),
            (r#"room_message"#, "fn f() {}"),
            (r#"ROOM, OTHER"#, "fn f() {}"),
            (r#""a", priority = "high""#, "fn f() {}"),
            (r#""a", colour = blue"#, "fn f() {}"),
        ];
        for (args, item) in cases {
            let output = crate::event::expand(
                crate::event::Kind::On,
                TokenStream::from_str(args).expect("valid"),
                TokenStream::from_str(item).expect("valid"),
            );
            assert!(
                output.to_string().contains("compile_error"),
                "#[on({args})] {item}: {output}"
            );
        }
        for item in [
            "struct S;",
            "#[event(\"\")] struct S;",
            "#[event(\"a.*\")] struct S;",
            "#[event(\"a\", \"b\")] struct S;",
            "#[event(\"a\")] struct S<T>(T);",
            "#[event(\"a\", namespace = 1)] struct S;",
            "#[event(\"a\")] fn f() {}",
        ] {
            let output = crate::derive::expand(TokenStream::from_str(item).expect("valid"));
            assert!(
                output.to_string().contains("compile_error"),
                "#[derive(Event)] {item}: {output}"
            );
        }
        for (args, item) in [
            (r#""chat""#, "async fn f(mut ws: WebSocket) {}"),
            (r#""/{a}/{a}""#, "async fn f(mut ws: WebSocket) {}"),
            (r#""/x""#, "fn f(mut ws: WebSocket) {}"),
            (r#""/x""#, "async fn f() {}"),
            (r#""/x""#, "async fn f(a: WebSocket, b: WebSocket) {}"),
        ] {
            let output = crate::route::expand(
                TokenStream::from_str(args).expect("valid"),
                TokenStream::from_str(item).expect("valid"),
            );
            assert!(
                output.to_string().contains("compile_error"),
                "#[ws_route({args})] {item}: {output}"
            );
        }
    }
}
