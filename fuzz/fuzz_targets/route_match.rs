//! Route matching as a request sees it: the path goes through the router axum uses, each
//! captured value is percent-decoded (as axum's `RawPathParams` does) and given to its
//! converter. Nothing panics, and what a converter accepts has the form it promises.
#![no_main]

use libfuzzer_sys::fuzz_target;
use percent_encoding::percent_decode_str;
use switchboard_syntax::route_path::{Converter, Segment, axum_path, parse};

const TEMPLATES: &[&str] = &[
    "/chat/{room}",
    "/items/{id:int}",
    "/prices/{value:float}",
    "/users/{id:uuid}/posts/{post:slug}",
    "/files/{rest:path}",
    "/a/{x}/b",
];

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    let mut router = matchit::Router::new();
    let mut converters = Vec::new();
    for template in TEMPLATES {
        let segments = parse(template).expect("the templates are valid");
        router
            .insert(axum_path(&segments), converters.len())
            .expect("the templates do not conflict");
        converters.push(
            segments
                .into_iter()
                .filter_map(|s| match s {
                    Segment::Param { name, converter } => Some((name, converter)),
                    Segment::Static(_) => None,
                })
                .collect::<Vec<_>>(),
        );
    }
    let Ok(matched) = router.at(path) else {
        return;
    };
    for (name, raw) in matched.params.iter() {
        let Some((_, converter)) = converters[*matched.value].iter().find(|(n, _)| *n == name)
        else {
            panic!("{name} is not a parameter of the route matched");
        };
        // A value that is not UTF-8 once decoded is refused by axum (400) before converters.
        let Ok(value) = percent_decode_str(raw).decode_utf8() else {
            continue;
        };
        if !converter.accepts(&value) {
            continue;
        }
        match converter {
            Converter::Int => assert!(value.bytes().all(|b| b.is_ascii_digit()), "{value:?}"),
            Converter::Float => assert!(value.parse::<f64>().is_ok(), "{value:?}"),
            Converter::Uuid => {
                assert_eq!(value.len(), 36, "{value:?}");
                assert_eq!(value.matches('-').count(), 4, "{value:?}");
            }
            Converter::Slug => assert!(
                value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "{value:?}"
            ),
            Converter::Str | Converter::Path => assert!(!value.is_empty()),
        }
    }
});
